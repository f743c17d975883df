//! Tool calling over real HTTP with the demo model: a forced call (a named function, or
//! `required`) is always a valid call of an offered function, whole and streamed; tool
//! results are accepted in the history; `auto` on a template without tool syntax is text; a
//! choice the request cannot make is refused naming `tool_choice`.

use serde_json::{Value, json};

use crate::support::{Server, post_json, post_sse};

fn weather() -> Value {
    json!({"type": "function", "function": {"name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "maxLength": 20},
            "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"], "additionalProperties": false}}})
}

fn time() -> Value {
    json!({"type": "function", "function": {"name": "get_time",
        "parameters": {"type": "object", "properties": {
            "timezone": {"type": "string", "maxLength": 10}},
            "required": ["timezone"], "additionalProperties": false}}})
}

fn ask(extra: Value) -> Value {
    let mut body = json!({
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "tools": [weather(), time()], "max_tokens": 80, "temperature": 0,
    });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    body
}

fn assert_valid_call(call: &Value, tools: &[Value]) {
    assert_eq!(call["type"], "function");
    assert!(
        call["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("call_")),
        "{call}"
    );
    let name = call["function"]["name"].as_str().expect("name");
    let tool = tools
        .iter()
        .find(|t| t["function"]["name"] == name)
        .unwrap_or_else(|| panic!("{name} was not offered"));
    let arguments: Value = serde_json::from_str(
        call["function"]["arguments"]
            .as_str()
            .expect("arguments are JSON text"),
    )
    .expect("arguments parse");
    let validator =
        jsonschema::validator_for(&tool["function"]["parameters"]).expect("valid schema");
    assert!(validator.is_valid(&arguments), "{arguments} for {name}");
}

#[tokio::test]
async fn forced_calls_are_valid_calls_of_an_offered_function() {
    let server = Server::ready(&[]).await;
    let named =
        ask(json!({"tool_choice": {"type": "function", "function": {"name": "get_weather"}}}));
    let (code, _, response) = post_json(&server, "/v1/chat/completions", &named).await;
    assert_eq!(code, 200, "{response}");
    let choice = &response["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{response}");
    assert!(choice["message"]["content"].is_null(), "{response}");
    let calls = choice["message"]["tool_calls"].as_array().expect("calls");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    assert_valid_call(&calls[0], &[weather()]);

    let required = ask(json!({"tool_choice": "required", "temperature": 1.0, "seed": 2, "n": 3}));
    let (code, _, response) = post_json(&server, "/v1/chat/completions", &required).await;
    assert_eq!(code, 200, "{response}");
    for choice in response["choices"].as_array().expect("choices") {
        let calls = choice["message"]["tool_calls"].as_array().expect("calls");
        assert_valid_call(&calls[0], &[weather(), time()]);
    }

    // Streamed: the call arrives as a delta with the choice's last chunk.
    let mut streamed = named.clone();
    streamed["stream"] = json!(true);
    let mut calls = Vec::new();
    let mut reasons = Vec::new();
    for payload in post_sse(&server, "/v1/chat/completions", &streamed).await {
        if payload == "[DONE]" {
            break;
        }
        let chunk: Value = serde_json::from_str(&payload).expect("chunk");
        let choice = &chunk["choices"][0];
        calls.extend(
            choice["delta"]["tool_calls"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        );
        reasons.extend(choice["finish_reason"].as_str().map(str::to_string));
    }
    assert_eq!(reasons, ["tool_calls"]);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["index"], 0);
    assert_valid_call(&calls[0], &[weather()]);
}

#[tokio::test]
async fn tool_results_in_the_history_are_accepted_and_auto_without_syntax_is_text() {
    let server = Server::ready(&[]).await;
    let history = json!({
        "messages": [
            {"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\", \"unit\": \"celsius\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"temperature\": 21}"}
        ],
        "tools": [weather()], "max_tokens": 12, "temperature": 0,
    });
    let (code, _, response) = post_json(&server, "/v1/chat/completions", &history).await;
    assert_eq!(code, 200, "{response}");
    // The demo model's template has no tool syntax: `auto` leaves its answer as text.
    let message = &response["choices"][0]["message"];
    assert!(
        message["content"].as_str().is_some_and(|t| !t.is_empty()),
        "{response}"
    );
    assert!(message.get("tool_calls").is_none(), "{response}");
}

#[tokio::test]
async fn choices_the_request_cannot_make_are_refused_by_name() {
    let server = Server::ready(&[]).await;
    let cases = [
        (
            ask(json!({"tool_choice": {"type": "function", "function": {"name": "nope"}}})),
            "tool_choice",
        ),
        (
            json!({"messages": [{"role": "user", "content": "Hi"}], "tool_choice": "required"}),
            "tool_choice",
        ),
        (
            ask(json!({"tool_choice": "required", "guided_regex": "a"})),
            "tool_choice",
        ),
        (
            json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
                "function": {"name": "f", "arguments": "{not json"}}]}]}),
            "messages",
        ),
    ];
    for (body, param) in cases {
        let (code, _, response) = post_json(&server, "/v1/chat/completions", &body).await;
        assert_eq!(code, 400, "{body}: {response}");
        assert_eq!(response["error"]["param"], param, "{body}: {response}");
    }
}
