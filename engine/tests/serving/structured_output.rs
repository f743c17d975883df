//! Structured output over real HTTP with the demo model: whatever the schema, the output
//! parses and validates against it (checked by an independent validator, the `jsonschema`
//! crate); regexes, Lark grammars and choices hold too; a constrained row of a mixed batch
//! leaves the other rows alone; a grammar that cannot be compiled is a 400 naming its field.

use serde_json::{Value, json};

use crate::support::{Server, post_json, post_sse};

/// Schemas of the kinds clients send: objects with required fields, enums, arrays with
/// bounds, nesting, unions, patterns, constants. Strings are bounded, so a small model
/// cannot run past `max_tokens` inside one.
fn schemas() -> Vec<(&'static str, Value)> {
    vec![
        (
            "Describe a person as JSON.",
            json!({"type": "object", "properties": {
                "name": {"type": "string", "maxLength": 20},
                "age": {"type": "integer", "minimum": 0, "maximum": 150}},
                "required": ["name", "age"], "additionalProperties": false}),
        ),
        (
            "What colour is the sky?",
            json!({"type": "object", "properties": {"colour": {"enum": ["red", "green", "blue"]}},
                "required": ["colour"], "additionalProperties": false}),
        ),
        (
            "List a few small numbers.",
            json!({"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 9},
                "minItems": 2, "maxItems": 4}),
        ),
        ("Is water wet?", json!({"type": "boolean"})),
        (
            "Where is Paris?",
            json!({"type": "object", "properties": {
                "city": {"type": "string", "maxLength": 15},
                "location": {"type": "object", "properties": {
                    "country": {"type": "string", "maxLength": 15},
                    "population_millions": {"type": "integer", "minimum": 0, "maximum": 40}},
                    "required": ["country", "population_millions"],
                    "additionalProperties": false}},
                "required": ["city", "location"], "additionalProperties": false}),
        ),
        (
            "Give me a number or a short word.",
            json!({"anyOf": [{"type": "integer", "minimum": 0, "maximum": 10},
                {"type": "string", "maxLength": 5}]}),
        ),
        (
            "Make up a product code.",
            json!({"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"}),
        ),
        (
            "Count something.",
            json!({"type": "object", "properties": {"ok": {"const": true},
                "count": {"type": "integer", "minimum": 0, "maximum": 99},
                "tags": {"type": "array", "items": {"type": "string", "maxLength": 8},
                    "maxItems": 3}},
                "required": ["ok", "count", "tags"], "additionalProperties": false}),
        ),
    ]
}

fn chat(question: &str, extra: Value) -> Value {
    let mut body = json!({
        "messages": [{"role": "user", "content": question}],
        "max_tokens": 160, "temperature": 0,
    });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    body
}

fn content(response: &Value) -> &str {
    response["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("no content: {response}"))
}

fn assert_valid(schema: &Value, text: &str) {
    let instance: Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"));
    let validator = jsonschema::validator_for(schema).expect("the schema is valid");
    let errors: Vec<String> = validator
        .iter_errors(&instance)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{text} breaks {schema}: {errors:?}");
}

#[tokio::test]
async fn json_schema_output_always_validates_whole_and_streamed() {
    let server = Server::ready(&[]).await;
    for (question, schema) in schemas() {
        let body = chat(
            question,
            json!({"response_format": {"type": "json_schema",
                "json_schema": {"name": "answer", "schema": schema, "strict": true}}}),
        );
        let (code, _, response) = post_json(&server, "/v1/chat/completions", &body).await;
        assert_eq!(code, 200, "{response}");
        assert_eq!(
            response["choices"][0]["finish_reason"], "stop",
            "the grammar completes and the output ends: {response}"
        );
        let text = content(&response);
        assert_valid(&schema, text);

        // vLLM's field, streamed: the deltas add up to a valid document as well.
        let mut streamed = chat(question, json!({"guided_json": schema, "stream": true}));
        streamed["temperature"] = json!(0.9);
        streamed["seed"] = json!(3);
        let mut text = String::new();
        for payload in post_sse(&server, "/v1/chat/completions", &streamed).await {
            if payload == "[DONE]" {
                break;
            }
            let chunk: Value = serde_json::from_str(&payload).expect("JSON chunk");
            text.push_str(
                chunk["choices"][0]["delta"]["content"]
                    .as_str()
                    .unwrap_or(""),
            );
        }
        assert_valid(&schema, &text);
    }
    let structured = modelfleet_contract::metrics::series(
        modelfleet_contract::metrics::REQUEST_FEATURES,
        &[(modelfleet_contract::metrics::FEATURE, "structured_output")],
    );
    assert_eq!(
        server.metric(&structured).await,
        2.0 * schemas().len() as f64
    );
}

#[tokio::test]
async fn json_mode_regexes_grammars_and_choices_hold() {
    let server = Server::ready(&[]).await;
    let (code, _, response) = post_json(
        &server,
        "/v1/chat/completions",
        &chat(
            "Describe a cat in JSON with a name and an age.",
            json!({"response_format": {"type": "json_object"}}),
        ),
    )
    .await;
    assert_eq!(code, 200, "{response}");
    let object: Value = serde_json::from_str(content(&response))
        .unwrap_or_else(|e| panic!("JSON mode gives JSON ({e}): {response}"));
    assert!(object.is_object(), "{object}");

    let (_, _, response) = post_json(
        &server,
        "/v1/completions",
        &json!({"prompt": "Call me at", "max_tokens": 20, "temperature": 0,
            "guided_regex": "[0-9]{3}-[0-9]{4}"}),
    )
    .await;
    let text = response["choices"][0]["text"].as_str().expect("text");
    assert!(
        text.len() == 8
            && text.chars().enumerate().all(|(i, c)| if i == 3 {
                c == '-'
            } else {
                c.is_ascii_digit()
            }),
        "{text:?}"
    );

    let (_, _, response) = post_json(
        &server,
        "/v1/chat/completions",
        &chat(
            "What is 3 plus 4?",
            json!({"guided_grammar": "start: \"The answer is \" NUMBER \".\"\nNUMBER: /[0-9]{1,3}/"}),
        ),
    )
    .await;
    let text = content(&response);
    let number = text
        .strip_prefix("The answer is ")
        .and_then(|t| t.strip_suffix('.'))
        .unwrap_or_else(|| panic!("{text:?}"));
    assert!(number.parse::<u32>().is_ok(), "{text:?}");

    for body in [
        chat("Is the sky blue?", json!({"guided_choice": ["yes", "no"]})),
        chat(
            "Is the sky blue?",
            json!({"structured_outputs": {"choice": ["yes", "no"]}}),
        ),
    ] {
        let (_, _, response) = post_json(&server, "/v1/chat/completions", &body).await;
        assert!(["yes", "no"].contains(&content(&response)), "{response}");
    }
}

#[tokio::test]
async fn constrained_choices_leave_the_other_rows_of_the_batch_alone() {
    let server = Server::ready(&[]).await;
    let free = json!({"prompt": "The capital of France is", "max_tokens": 16,
        "temperature": 0, "ignore_eos": true});
    let (_, _, alone) = post_json(&server, "/v1/completions", &free).await;
    let schema = json!({"type": "object", "properties": {
        "answer": {"enum": ["Paris", "Lyon", "Nice"]},
        "sure": {"type": "boolean"}}, "required": ["answer", "sure"],
        "additionalProperties": false});
    let constrained = chat(
        "What is the capital of France?",
        json!({"n": 3, "temperature": 1.0, "seed": 5, "guided_json": schema}),
    );
    // Both in flight at once: their rows share engine steps.
    let (batched, constrained) = tokio::join!(
        post_json(&server, "/v1/completions", &free),
        post_json(&server, "/v1/chat/completions", &constrained),
    );
    assert_eq!(batched.2["choices"][0]["text"], alone["choices"][0]["text"]);
    let choices = constrained.2["choices"].as_array().expect("choices");
    assert_eq!(choices.len(), 3);
    for choice in choices {
        assert_valid(
            &schema,
            choice["message"]["content"].as_str().expect("text"),
        );
    }
}

#[tokio::test]
async fn grammars_that_cannot_compile_are_refused_naming_the_field() {
    let server = Server::ready(&[]).await;
    for (extra, param) in [
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x",
                "schema": {"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}}}}),
            "response_format",
        ),
        (
            json!({"guided_json": {"type": "integer", "minimum": 5, "maximum": 1}}),
            "guided_json",
        ),
        (json!({"guided_regex": "(unclosed"}), "guided_regex"),
        (
            json!({"guided_grammar": "start: undefined_rule"}),
            "guided_grammar",
        ),
        (json!({"guided_choice": []}), "guided_choice"),
        (
            json!({"guided_regex": "a", "guided_choice": ["b"]}),
            "guided_choice",
        ),
    ] {
        let body = chat("Hi", extra.clone());
        let (code, _, response) = post_json(&server, "/v1/chat/completions", &body).await;
        assert_eq!(code, 400, "{extra}: {response}");
        assert_eq!(response["error"]["type"], "invalid_request_error");
        assert_eq!(response["error"]["param"], param, "{extra}: {response}");
    }
}
