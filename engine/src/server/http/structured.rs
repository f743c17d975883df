//! Structured output as the OpenAI API and vLLM ask for it: `response_format` (`json_object`,
//! `json_schema`), vLLM's `guided_json`, `guided_regex`, `guided_grammar` (Lark),
//! `guided_choice`, and its newer `structured_outputs` object with the same four. At most one
//! may be given; each becomes a llguidance grammar, compiled against the model.

use llguidance::api::TopLevelGrammar;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::sampling::CompiledGrammar;
use crate::server::error::ApiError;
use crate::server::model::ServingModel;

/// The structured-output fields of a request body.
#[derive(Debug, Default, Deserialize)]
pub struct StructuredFields {
    pub response_format: Option<ResponseFormat>,
    pub guided_json: Option<Value>,
    pub guided_regex: Option<String>,
    pub guided_grammar: Option<String>,
    pub guided_choice: Option<Vec<String>>,
    pub structured_outputs: Option<StructuredOutputs>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema { json_schema: JsonSchemaFormat },
}

#[derive(Debug, Deserialize)]
pub struct JsonSchemaFormat {
    #[allow(dead_code)] // OpenAI requires it; it names the schema, nothing more.
    pub name: Option<String>,
    pub schema: Option<Value>,
    /// Output always follows the schema exactly, strict or not.
    #[allow(dead_code)]
    pub strict: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StructuredOutputs {
    pub json: Option<Value>,
    pub regex: Option<String>,
    pub grammar: Option<String>,
    pub choice: Option<Vec<String>>,
}

/// One grammar a request asked for, before it is compiled.
#[derive(Debug, Clone, PartialEq)]
enum Wanted {
    Json(Value),
    Regex(String),
    Lark(String),
    Choice(Vec<String>),
}

impl StructuredFields {
    /// The grammar the request asked for, compiled against `model`, if any; two at once, or
    /// one the library cannot compile, is refused naming the field.
    pub fn compile(self, model: &ServingModel) -> Result<Option<CompiledGrammar>, ApiError> {
        let Some((param, wanted)) = self.wanted()? else {
            return Ok(None);
        };
        let source = format!("{param}: {wanted:?}");
        let grammar = wanted.grammar(param)?;
        model.compile_grammar(grammar, source, param).map(Some)
    }

    fn wanted(self) -> Result<Option<(&'static str, Wanted)>, ApiError> {
        let mut found: Vec<(&'static str, Wanted)> = Vec::new();
        match self.response_format {
            None | Some(ResponseFormat::Text) => {}
            Some(ResponseFormat::JsonObject) => {
                found.push(("response_format", Wanted::Json(json!({"type": "object"}))));
            }
            Some(ResponseFormat::JsonSchema { json_schema }) => {
                let schema = json_schema.schema.ok_or_else(|| {
                    ApiError::invalid(
                        "`response_format.json_schema.schema` is required",
                        "response_format",
                    )
                })?;
                found.push(("response_format", Wanted::Json(schema)));
            }
        }
        if let Some(schema) = self.guided_json {
            found.push((
                "guided_json",
                Wanted::Json(schema_value(schema, "guided_json")?),
            ));
        }
        found.extend(
            self.guided_regex
                .map(|r| ("guided_regex", Wanted::Regex(r))),
        );
        found.extend(
            self.guided_grammar
                .map(|g| ("guided_grammar", Wanted::Lark(g))),
        );
        found.extend(
            self.guided_choice
                .map(|c| ("guided_choice", Wanted::Choice(c))),
        );
        if let Some(outputs) = self.structured_outputs {
            let param = "structured_outputs";
            if let Some(schema) = outputs.json {
                found.push((param, Wanted::Json(schema_value(schema, param)?)));
            }
            found.extend(outputs.regex.map(|r| (param, Wanted::Regex(r))));
            found.extend(outputs.grammar.map(|g| (param, Wanted::Lark(g))));
            found.extend(outputs.choice.map(|c| (param, Wanted::Choice(c))));
        }
        let mut found = found.into_iter();
        let first = found.next();
        if let Some((param, _)) = found.next() {
            return Err(ApiError::invalid(
                format!(
                    "`{param}` asks for a second output structure; give one of response_format, \
                     guided_json, guided_regex, guided_grammar, guided_choice, structured_outputs"
                ),
                param,
            ));
        }
        Ok(first)
    }
}

/// A schema given as an object or as a string holding one.
fn schema_value(schema: Value, param: &'static str) -> Result<Value, ApiError> {
    match schema {
        Value::String(text) => serde_json::from_str(&text)
            .map_err(|e| ApiError::invalid(format!("`{param}` is not a JSON schema: {e}"), param)),
        other => Ok(other),
    }
}

impl Wanted {
    fn grammar(self, param: &'static str) -> Result<TopLevelGrammar, ApiError> {
        Ok(match self {
            Wanted::Json(schema) => TopLevelGrammar::from_json_schema(compact(schema)),
            Wanted::Regex(regex) => TopLevelGrammar::from_regex(&regex),
            Wanted::Lark(lark) => TopLevelGrammar::from_lark(lark),
            Wanted::Choice(choices) => {
                if choices.is_empty() {
                    return Err(ApiError::invalid(
                        format!("`{param}` needs at least one choice"),
                        param,
                    ));
                }
                let literals: Vec<String> = choices
                    .iter()
                    .map(|c| Value::String(c.clone()).to_string())
                    .collect();
                TopLevelGrammar::from_lark(format!("start: {}", literals.join(" | ")))
            }
        })
    }
}

/// JSON written as `json.dumps` writes it (`", "` and `": "`, no other whitespace), unless
/// the schema says otherwise (`x-guidance`): free whitespace lets a model pad its output
/// until `max_tokens` runs out.
pub fn compact(mut schema: Value) -> Value {
    if let Value::Object(fields) = &mut schema
        && !fields.contains_key("x-guidance")
    {
        fields.insert(
            "x-guidance".into(),
            json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "}),
        );
    }
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(body: Value) -> StructuredFields {
        serde_json::from_value(body).expect("parses")
    }

    fn param_of(error: ApiError) -> Option<&'static str> {
        match error {
            ApiError::InvalidArgument { param, .. } => param,
            other => panic!("expected an invalid argument, got {other:?}"),
        }
    }

    #[test]
    fn each_field_asks_for_its_grammar() {
        let cases = [
            (
                json!({"response_format": {"type": "json_object"}}),
                "response_format",
            ),
            (
                json!({"response_format": {"type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"type": "integer"}, "strict": true}}}),
                "response_format",
            ),
            (
                json!({"guided_json": "{\"type\": \"string\"}"}),
                "guided_json",
            ),
            (json!({"guided_regex": "[ab]+"}), "guided_regex"),
            (json!({"guided_grammar": "start: \"x\""}), "guided_grammar"),
            (json!({"guided_choice": ["yes", "no"]}), "guided_choice"),
            (
                json!({"structured_outputs": {"regex": "a"}}),
                "structured_outputs",
            ),
        ];
        for (body, param) in cases {
            let (found, _) = fields(body.clone()).wanted().expect("one").expect("asked");
            assert_eq!(found, param, "{body}");
        }
        assert!(
            fields(json!({"response_format": {"type": "text"}}))
                .wanted()
                .expect("fine")
                .is_none()
        );
    }

    #[test]
    fn two_structures_or_a_schema_that_is_not_json_are_refused_by_name() {
        let two = fields(json!({"guided_regex": "a", "guided_choice": ["b"]}));
        assert_eq!(
            param_of(two.wanted().expect_err("two")),
            Some("guided_choice")
        );
        let bad = fields(json!({"guided_json": "{not json"}));
        assert_eq!(
            param_of(bad.wanted().expect_err("bad")),
            Some("guided_json")
        );
        let missing =
            fields(json!({"response_format": {"type": "json_schema", "json_schema": {}}}));
        assert_eq!(
            param_of(missing.wanted().expect_err("no schema")),
            Some("response_format")
        );
    }

    #[test]
    fn json_is_compact_unless_the_schema_says_otherwise() {
        let schema = compact(json!({"type": "object"}));
        assert_eq!(schema["x-guidance"]["whitespace_flexible"], false);
        let own = compact(json!({"type": "object", "x-guidance": {"lenient": true}}));
        assert_eq!(own["x-guidance"], json!({"lenient": true}));
    }
}
