//! Which top-level fields each OpenAI endpoint takes, in one table, so a field the engine
//! cannot honour is refused by name instead of silently ignored. A client that asks for
//! JSON mode, tools or logit biases and gets plain text back has a bug it cannot see; a 400
//! naming the field tells it at once.
//!
//! A field is one of: honoured (parsed by the endpoint's request types, which check its
//! value), or not supported, in which case it is still accepted at the value that asks for
//! nothing (`null`, `[]`, `{"type": "text"}`, …), as clients often send such defaults.
//! Anything else, a misspelt field included, is refused.

use serde_json::Value;

use crate::server::error::ApiError;

/// Which endpoint a body was sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Completions,
    ChatCompletions,
}

/// Fields both endpoints honour (OpenAI's and vLLM's sampling extensions), plus `user`, an
/// end-user id OpenAI keeps for abuse monitoring, which asks nothing of the engine.
const SHARED: &[&str] = &[
    "model",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repetition_penalty",
    "frequency_penalty",
    "presence_penalty",
    "seed",
    "n",
    "stop",
    "stop_token_ids",
    "ignore_eos",
    "stream",
    "stream_options",
    "max_tokens",
    "user",
    // Structured output (`structured.rs`).
    "response_format",
    "guided_json",
    "guided_regex",
    "guided_grammar",
    "guided_choice",
    "structured_outputs",
];

const COMPLETIONS: &[&str] = &["prompt", "echo", "best_of", "suffix", "logprobs"];

const CHAT_COMPLETIONS: &[&str] = &[
    "messages",
    "max_completion_tokens",
    "logprobs",
    "top_logprobs",
    // Tool calling (`server/tools`).
    "tools",
    "tool_choice",
    "parallel_tool_calls",
];

/// Whether a value of an unsupported field asks for nothing.
type AsksNothing = fn(&Value) -> bool;

/// Fields of OpenAI's API the engine cannot honour, each with the values that ask for
/// nothing and so may pass.
const UNSUPPORTED: &[(&str, AsksNothing)] = &[
    ("tools", is_empty),
    ("tool_choice", |v| v == "none"),
    ("parallel_tool_calls", |_| false),
    ("functions", is_empty),
    ("function_call", |v| v == "none"),
    ("logit_bias", is_empty),
    ("audio", |_| false),
    ("modalities", |v| *v == serde_json::json!(["text"])),
    ("prediction", |_| false),
    ("store", |v| v == false),
    ("metadata", is_empty),
    ("service_tier", |v| v == "auto" || v == "default"),
    ("reasoning_effort", |_| false),
    ("web_search_options", |_| false),
];

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Array(items) => items.is_empty(),
        Value::Object(fields) => fields.is_empty(),
        _ => false,
    }
}

/// The first field of `body` that `endpoint` cannot honour, as an invalid-argument error
/// naming it.
pub fn refuse_unsupported(body: &Value, endpoint: Endpoint) -> Result<(), ApiError> {
    let Value::Object(fields) = body else {
        return Ok(()); // the request types report a body that is not an object
    };
    let own = match endpoint {
        Endpoint::Completions => COMPLETIONS,
        Endpoint::ChatCompletions => CHAT_COMPLETIONS,
    };
    for (name, value) in fields {
        if SHARED.contains(&name.as_str()) || own.contains(&name.as_str()) {
            continue;
        }
        let Some((param, asks_nothing)) = UNSUPPORTED.iter().find(|(known, _)| known == name)
        else {
            return Err(ApiError::InvalidArgument {
                message: format!(
                    "unknown field `{name}`: {} does not take it",
                    endpoint.path()
                ),
                param: None,
            });
        };
        if !value.is_null() && !asks_nothing(value) {
            return Err(ApiError::invalid(
                format!("`{param}` is not supported by this engine; remove it from the request"),
                param,
            ));
        }
    }
    Ok(())
}

impl Endpoint {
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Completions => "/v1/completions",
            Endpoint::ChatCompletions => "/v1/chat/completions",
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn refused_param(body: Value, endpoint: Endpoint) -> Option<&'static str> {
        match refuse_unsupported(&body, endpoint) {
            Err(ApiError::InvalidArgument { param, .. }) => param,
            other => panic!("expected a refusal of {body}, got {other:?}"),
        }
    }

    #[test]
    fn unsupported_fields_are_refused_by_name_on_both_endpoints() {
        for (body, param) in [
            (json!({"tools": [{"type": "function"}]}), "tools"),
            (json!({"tool_choice": "auto"}), "tool_choice"),
        ] {
            assert_eq!(refused_param(body, Endpoint::Completions), Some(param));
        }
        for endpoint in [Endpoint::Completions, Endpoint::ChatCompletions] {
            for (body, param) in [
                (json!({"logit_bias": {"50256": -100}}), "logit_bias"),
                (json!({"store": true}), "store"),
            ] {
                assert_eq!(refused_param(body, endpoint), Some(param));
            }
        }
    }

    #[test]
    fn values_that_ask_for_nothing_pass() {
        for body in [
            json!({"response_format": {"type": "text"}, "tools": [], "tool_choice": "none"}),
            json!({"logit_bias": {}, "store": false, "metadata": null, "user": "u-1"}),
            json!({"modalities": ["text"], "parallel_tool_calls": null}),
        ] {
            assert_eq!(
                refuse_unsupported(&body, Endpoint::ChatCompletions),
                Ok(()),
                "{body}"
            );
        }
    }

    #[test]
    fn each_endpoint_takes_only_its_own_fields() {
        let chat_only = json!({"messages": [], "max_completion_tokens": 3});
        assert!(refuse_unsupported(&chat_only, Endpoint::ChatCompletions).is_ok());
        let error = refuse_unsupported(&json!({"messages": []}), Endpoint::Completions)
            .expect_err("unknown");
        assert!(error.to_string().contains("`messages`"), "{error}");
        assert!(refuse_unsupported(&json!({"prompt": "x"}), Endpoint::ChatCompletions).is_err());
        let typo = refuse_unsupported(&json!({"max_token": 3}), Endpoint::Completions)
            .expect_err("misspelt");
        assert!(
            typo.to_string().contains("unknown field `max_token`"),
            "{typo}"
        );
    }
}
