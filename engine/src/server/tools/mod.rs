//! Tool calling on the chat API: the tools a request offers go to the model through its chat
//! template (each family's template carries its own tool syntax), and the calls come back
//! out of the generated text, parsed in that family's syntax (one module per family), as
//! OpenAI's `message.tool_calls`.
//!
//! `tool_choice: "required"` or a named function forces a call: the output is constrained
//! (structured output) to `{"name": …, "arguments": …}` for one of the offered functions, so
//! it is always a valid call whatever the model.

mod hermes;
mod llama3;
mod mistral;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::error::ApiError;

/// A tool a request offers (OpenAI's `tools[]`): only functions exist.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ToolDef {
    #[serde(rename = "type")]
    pub kind: ToolKind,
    pub function: FunctionDef,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ToolKind {
    Function,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct FunctionDef {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// OpenAI's `tool_choice`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum ToolChoice {
    Mode(ChoiceMode),
    Named {
        #[serde(rename = "type")]
        kind: ToolKind,
        function: NamedFunction,
    },
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ChoiceMode {
    None,
    Auto,
    Required,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct NamedFunction {
    pub name: String,
}

/// How a template writes tool calls, found in its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolSyntax {
    /// Qwen2.5 and Hermes-style: `<tool_call>{"name": …, "arguments": …}</tool_call>`.
    Hermes,
    /// Llama 3.1 / 3.2: a bare `{"name": …, "parameters": …}`, maybe after `<|python_tag|>`.
    Llama3,
    /// Mistral: `[TOOL_CALLS][{"name": …, "arguments": …}, …]`.
    Mistral,
}

impl ToolSyntax {
    /// The syntax a chat template teaches its model, if it has one.
    pub fn of_template(source: &str) -> Option<ToolSyntax> {
        if source.contains("<tool_call>") {
            Some(ToolSyntax::Hermes)
        } else if source.contains("[TOOL_CALLS]") {
            Some(ToolSyntax::Mistral)
        } else if source.contains("ipython") && source.contains("\"parameters\"") {
            Some(ToolSyntax::Llama3)
        } else {
            None
        }
    }
}

/// What a request's `tools` and `tool_choice` ask of the output.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolMode {
    /// No tools, or `tool_choice: "none"`: plain text.
    Off,
    /// The model may call a tool, in its template's syntax (`None`: it has none, so its
    /// output is text).
    Auto(Option<ToolSyntax>),
    /// The output is one call of one of these functions, as JSON (the grammar's `schema`).
    Forced { schema: Value },
}

/// One call, as `message.tool_calls[]` gives it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: CalledFunction,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CalledFunction {
    pub name: String,
    /// JSON text, as OpenAI's API gives it.
    pub arguments: String,
}

impl ToolCall {
    fn new(name: String, arguments: &Value) -> Self {
        ToolCall {
            id: format!("call_{:024x}", rand::random::<u128>() >> 32),
            kind: "function",
            function: CalledFunction {
                name,
                arguments: arguments.to_string(),
            },
        }
    }
}

/// The tool mode of a request, or why its `tools` / `tool_choice` cannot be honoured.
pub fn mode(
    tools: &[ToolDef],
    choice: Option<&ToolChoice>,
    syntax: Option<ToolSyntax>,
) -> Result<ToolMode, ApiError> {
    let call = |tool: &ToolDef| {
        let parameters = tool
            .function
            .parameters
            .clone()
            .unwrap_or_else(|| json!({"type": "object"}));
        json!({"type": "object", "properties": {
            "name": {"const": tool.function.name}, "arguments": parameters},
            "required": ["name", "arguments"], "additionalProperties": false})
    };
    match choice {
        _ if tools.is_empty()
            && choice.is_some_and(|c| *c != ToolChoice::Mode(ChoiceMode::None)) =>
        {
            Err(ApiError::invalid(
                "tool_choice needs tools to choose from",
                "tool_choice",
            ))
        }
        _ if tools.is_empty() => Ok(ToolMode::Off),
        Some(ToolChoice::Mode(ChoiceMode::None)) => Ok(ToolMode::Off),
        None | Some(ToolChoice::Mode(ChoiceMode::Auto)) => Ok(ToolMode::Auto(syntax)),
        Some(ToolChoice::Mode(ChoiceMode::Required)) => Ok(ToolMode::Forced {
            schema: json!({"anyOf": tools.iter().map(call).collect::<Vec<_>>()}),
        }),
        Some(ToolChoice::Named { function, .. }) => {
            let tool = tools
                .iter()
                .find(|t| t.function.name == function.name)
                .ok_or_else(|| {
                    ApiError::invalid(
                        format!(
                            "tool_choice names `{}`, which is not among the tools",
                            function.name
                        ),
                        "tool_choice",
                    )
                })?;
            Ok(ToolMode::Forced { schema: call(tool) })
        }
    }
}

/// What a finished output says: text, calls, or both (text before the calls).
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub content: Option<String>,
    pub tool_calls: Vec<ToolCall>,
}

impl ToolMode {
    /// Reads `text`, the whole output, as this mode expects it.
    pub fn parse(&self, text: &str) -> Parsed {
        let plain = || Parsed {
            content: Some(text.to_string()),
            tool_calls: Vec::new(),
        };
        let calls = match self {
            ToolMode::Off | ToolMode::Auto(None) => return plain(),
            ToolMode::Forced { .. } => serde_json::from_str::<Value>(text)
                .ok()
                .and_then(|call| name_and_arguments(&call, "arguments"))
                .map(|call| (String::new(), vec![call])),
            ToolMode::Auto(Some(ToolSyntax::Hermes)) => hermes::parse(text),
            ToolMode::Auto(Some(ToolSyntax::Llama3)) => llama3::parse(text),
            ToolMode::Auto(Some(ToolSyntax::Mistral)) => mistral::parse(text),
        };
        match calls {
            Some((before, calls)) if !calls.is_empty() => Parsed {
                content: (!before.trim().is_empty()).then(|| before.trim().to_string()),
                tool_calls: calls
                    .into_iter()
                    .map(|(name, arguments)| ToolCall::new(name, &arguments))
                    .collect(),
            },
            _ => plain(),
        }
    }

    /// Whether the output may hold calls (and so is read whole before it is sent).
    pub fn reads_calls(&self) -> bool {
        !matches!(self, ToolMode::Off | ToolMode::Auto(None))
    }
}

/// `(name, arguments)` of a call object whose arguments are under `key`.
fn name_and_arguments(call: &Value, key: &str) -> Option<(String, Value)> {
    let name = call.get("name")?.as_str()?.to_string();
    let arguments = call.get(key).cloned().unwrap_or_else(|| json!({}));
    // Some models write the arguments as a JSON string.
    let arguments = match arguments {
        Value::String(text) => serde_json::from_str(&text).unwrap_or(Value::String(text)),
        other => other,
    };
    Some((name, arguments))
}

/// An assistant message's calls as templates print them: arguments as an object (OpenAI's
/// API sends them as JSON text).
pub fn calls_for_template(calls: &[Value]) -> Result<Vec<Value>, ApiError> {
    calls
        .iter()
        .map(|call| {
            let mut call = call.clone();
            if let Some(arguments) = call.pointer_mut("/function/arguments")
                && let Value::String(text) = arguments
            {
                *arguments = serde_json::from_str(text).map_err(|e| {
                    ApiError::invalid(
                        format!("a tool call's arguments are not JSON: {e}"),
                        "messages",
                    )
                })?;
            }
            Ok(call)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools() -> Vec<ToolDef> {
        serde_json::from_value(json!([
            {"type": "function", "function": {"name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
            {"type": "function", "function": {"name": "get_time"}}
        ]))
        .expect("tools")
    }

    #[test]
    fn tool_choice_decides_the_mode() {
        let t = tools();
        assert_eq!(
            mode(&t, None, Some(ToolSyntax::Hermes)).expect("ok"),
            ToolMode::Auto(Some(ToolSyntax::Hermes))
        );
        assert_eq!(mode(&[], None, None).expect("ok"), ToolMode::Off);
        let none = ToolChoice::Mode(ChoiceMode::None);
        assert_eq!(mode(&t, Some(&none), None).expect("ok"), ToolMode::Off);
        let named: ToolChoice =
            serde_json::from_value(json!({"type": "function", "function": {"name": "get_time"}}))
                .expect("parses");
        let ToolMode::Forced { schema } = mode(&t, Some(&named), None).expect("ok") else {
            panic!("forced");
        };
        assert_eq!(schema["properties"]["name"]["const"], "get_time");
        let unknown: ToolChoice =
            serde_json::from_value(json!({"type": "function", "function": {"name": "nope"}}))
                .expect("parses");
        assert!(mode(&t, Some(&unknown), None).is_err());
        let required = ToolChoice::Mode(ChoiceMode::Required);
        assert!(mode(&[], Some(&required), None).is_err());
    }

    #[test]
    fn a_forced_call_is_read_as_json() {
        let parsed = ToolMode::Forced { schema: json!({}) }
            .parse(r#"{"name": "get_weather", "arguments": {"city": "Paris"}}"#);
        assert_eq!(parsed.content, None);
        assert_eq!(parsed.tool_calls[0].function.name, "get_weather");
        assert_eq!(
            parsed.tool_calls[0].function.arguments,
            r#"{"city":"Paris"}"#
        );
    }

    #[test]
    fn text_without_a_call_stays_text_and_syntax_is_found_in_templates() {
        let parsed = ToolMode::Auto(Some(ToolSyntax::Hermes)).parse("It is sunny.");
        assert_eq!(parsed.content.as_deref(), Some("It is sunny."));
        assert!(parsed.tool_calls.is_empty());
        assert_eq!(
            ToolSyntax::of_template("{{ '<tool_call>' }}"),
            Some(ToolSyntax::Hermes)
        );
        assert_eq!(ToolSyntax::of_template("{{ messages }}"), None);
    }

    #[test]
    fn template_calls_get_their_arguments_as_objects() {
        let calls = calls_for_template(&[json!({"id": "a", "type": "function",
            "function": {"name": "f", "arguments": "{\"x\": 1}"}})])
        .expect("JSON");
        assert_eq!(calls[0]["function"]["arguments"]["x"], 1);
        assert!(calls_for_template(&[json!({"function": {"arguments": "{"}})]).is_err());
    }
}
