//! Rendering chat messages into a prompt with the model's own Jinja template (from
//! `tokenizer_config.json` or the GGUF metadata), as `transformers`' `apply_chat_template`
//! renders it: the same environment (blocks trimmed, loop controls), the same helpers
//! (`raise_exception`, `strftime_now`) and the same variables (`messages`, `bos_token`,
//! `eos_token`, `add_generation_prompt`, `tools` when the request offers some, and no
//! `documents`).

use minijinja::{Environment, Error, ErrorKind, Value, context};
use serde::Serialize;

use super::error::ApiError;
use super::tools::ToolSyntax;

const TEMPLATE_NAME: &str = "chat";

/// One message of a conversation. Fields a message lacks are left out, not `none`, as
/// templates test for them with `is defined` and `in`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
    /// An assistant's calls, as templates print them: `{id, type, function: {name,
    /// arguments}}` with the arguments as an object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<serde_json::Value>>,
    /// A tool's answer: the call it answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The local date and time `strftime_now` formats (templates print today's date in the
/// system prompt, as Llama 3.2's does).
pub type Clock = fn() -> chrono::NaiveDateTime;

fn local_now() -> chrono::NaiveDateTime {
    chrono::Local::now().naive_local()
}

pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
    tool_syntax: Option<ToolSyntax>,
}

impl ChatTemplate {
    /// Compiles `source`; a template that does not parse is reported at load, not per request.
    pub fn new(source: String, bos_token: String, eos_token: String) -> Result<Self, Error> {
        Self::with_clock(source, bos_token, eos_token, local_now)
    }

    /// As [`new`](Self::new), with `strftime_now` reading `clock`.
    pub fn with_clock(
        source: String,
        bos_token: String,
        eos_token: String,
        clock: Clock,
    ) -> Result<Self, Error> {
        let mut env = Environment::new();
        // transformers renders with Jinja's trim_blocks and lstrip_blocks: the newline after a
        // block tag and the indentation before one are not part of the prompt.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        // Templates written for Python's Jinja call str methods (`.strip()`, `.startswith()`).
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        // ... and `raise_exception` to refuse conversations they cannot render.
        env.add_function("raise_exception", |message: String| -> Result<(), Error> {
            Err(Error::new(ErrorKind::InvalidOperation, message))
        });
        // ... and transformers' `tojson`, which writes JSON as Python's json.dumps does.
        env.add_filter("tojson", python_tojson);
        env.add_function(
            "strftime_now",
            move |format: String| -> Result<String, Error> {
                let items: Vec<_> = chrono::format::StrftimeItems::new(&format).collect();
                if items.contains(&chrono::format::Item::Error) {
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        format!("strftime_now: invalid format {format:?}"),
                    ));
                }
                Ok(clock().format_with_items(items.into_iter()).to_string())
            },
        );
        let tool_syntax = ToolSyntax::of_template(&source);
        env.add_template_owned(TEMPLATE_NAME, source)?;
        Ok(ChatTemplate {
            env,
            bos_token,
            eos_token,
            tool_syntax,
        })
    }

    /// How this template has its model write tool calls, if it does.
    pub fn tool_syntax(&self) -> Option<ToolSyntax> {
        self.tool_syntax
    }

    /// The prompt for `messages`, ending with the assistant's turn opened.
    pub fn render(&self, messages: &[ChatMessage]) -> Result<String, ApiError> {
        self.render_with_tools(messages, None)
    }

    /// As [`render`](Self::render), offering `tools` (OpenAI's `tools` list) to the model in
    /// its template's own syntax.
    pub fn render_with_tools(
        &self,
        messages: &[ChatMessage],
        tools: Option<&serde_json::Value>,
    ) -> Result<String, ApiError> {
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| ApiError::Internal(format!("the chat template is missing: {e}")))?;
        template
            .render(context! {
                messages => messages,
                add_generation_prompt => true,
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
                // Passed as none, not left undefined: templates test `tools is not none`.
                tools => tools.map_or(Value::from(()), Value::from_serialize),
                documents => Value::from(()),
            })
            .map_err(|e| {
                ApiError::invalid(
                    format!("the model's chat template cannot render these messages: {e}"),
                    "messages",
                )
            })
    }
}

/// `tojson` as transformers defines it for templates: Python's `json.dumps` with
/// `ensure_ascii=False` (`", "` and `": "` between items, or `indent` spaces per level, and
/// no HTML escaping, unlike Jinja's own). Keys come out sorted: the engine's JSON values
/// keep no insertion order.
fn python_tojson(value: &Value, kwargs: minijinja::value::Kwargs) -> Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    for ignored in ["ensure_ascii", "sort_keys", "separators"] {
        let _: Option<Value> = kwargs.get(ignored)?;
    }
    kwargs.assert_all_used()?;
    let json = serde_json::to_value(value)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    let mut out = Vec::new();
    let written = match indent {
        Some(width) => {
            let spaces = " ".repeat(width);
            let formatter = serde_json::ser::PrettyFormatter::with_indent(spaces.as_bytes());
            serde::Serialize::serialize(
                &json,
                &mut serde_json::Serializer::with_formatter(&mut out, formatter),
            )
        }
        None => serde::Serialize::serialize(
            &json,
            &mut serde_json::Serializer::with_formatter(&mut out, PythonSeparators),
        ),
    };
    written.map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    Ok(Value::from_safe_string(
        String::from_utf8_lossy(&out).into_owned(),
    ))
}

/// Python's default separators: `", "` and `": "`.
struct PythonSeparators;

impl serde_json::ser::Formatter for PythonSeparators {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        writer.write_all(b": ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are helpful.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] | trim + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    fn user(text: &str) -> ChatMessage {
        ChatMessage {
            role: "user".into(),
            content: text.into(),
            ..Default::default()
        }
    }

    #[test]
    fn renders_chatml_with_a_default_system_turn() {
        let template = ChatTemplate::new(CHATML.into(), String::new(), "<|im_end|>".into())
            .expect("template parses");
        assert_eq!(
            template.render(&[user(" Hi ")]).expect("renders"),
            "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn tojson_writes_json_as_python_does() {
        let source = "{{ x | tojson }}|{{ x | tojson(indent=2) }}";
        let template =
            ChatTemplate::new(source.into(), String::new(), String::new()).expect("parses");
        let env = &template.env;
        let rendered = env
            .render_str(
                source,
                context! { x => serde_json::json!({"b": [1, 2], "a": "it's é"}) },
            )
            .expect("renders");
        assert_eq!(
            rendered,
            "{\"a\": \"it's é\", \"b\": [1, 2]}|{\n  \"a\": \"it's é\",\n  \"b\": [\n    1,\n    2\n  ]\n}"
        );
    }

    #[test]
    fn python_string_methods_and_special_tokens_work() {
        let source = "{{ bos_token }}{% for m in messages %}{% if m.content.startswith('x') %}{{ m.content.upper() }}{% endif %}{% endfor %}";
        let template =
            ChatTemplate::new(source.into(), "<s>".into(), "</s>".into()).expect("parses");
        assert_eq!(
            template.render(&[user("xy"), user("no")]).expect("renders"),
            "<s>XY"
        );
    }

    #[test]
    fn raise_exception_becomes_a_clear_invalid_argument() {
        let source = "{% if messages[0].role != 'user' %}{{ raise_exception('the first message must be the user') }}{% endif %}";
        let template =
            ChatTemplate::new(source.into(), String::new(), String::new()).expect("parses");
        let error = template
            .render(&[ChatMessage {
                role: "assistant".into(),
                content: "hi".into(),
                ..Default::default()
            }])
            .expect_err("refused");
        assert!(
            error
                .to_string()
                .contains("the first message must be the user"),
            "{error}"
        );
        assert!(matches!(
            error,
            ApiError::InvalidArgument {
                param: Some("messages"),
                ..
            }
        ));
    }

    fn render_one(source: &str) -> String {
        ChatTemplate::new(source.into(), "<s>".into(), "</s>".into())
            .expect("parses")
            .render(&[user("hi")])
            .expect("renders")
    }

    #[test]
    fn block_tags_take_their_newline_and_indentation_as_jinja_does_in_transformers() {
        // Jinja with trim_blocks and lstrip_blocks renders this as "X\n".
        assert_eq!(render_one("  {% if true %}\nX\n  {% endif %}\n"), "X\n");
    }

    #[test]
    fn tools_and_documents_are_none_not_undefined() {
        assert_eq!(
            render_one(
                "{% if tools is not none %}T{% endif %}{% if documents is none %}D{% endif %}"
            ),
            "D"
        );
    }

    #[test]
    fn strftime_now_formats_the_clock() {
        fn day() -> chrono::NaiveDateTime {
            chrono::NaiveDate::from_ymd_opt(2024, 2, 29)
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .expect("a date")
        }
        let template = ChatTemplate::with_clock(
            "{{ strftime_now('%d %b %Y') }}".into(),
            String::new(),
            String::new(),
            day,
        )
        .expect("parses");
        assert_eq!(
            template.render(&[user("hi")]).expect("renders"),
            "29 Feb 2024"
        );
    }

    #[test]
    fn loop_controls_work() {
        assert_eq!(
            render_one(
                "{% for m in messages %}{% if loop.first %}{% continue %}{% endif %}x{% endfor %}{% for i in range(3) %}{{ i }}{% break %}{% endfor %}"
            ),
            "0"
        );
    }

    #[test]
    fn a_template_that_does_not_parse_fails_at_load() {
        assert!(ChatTemplate::new("{% for %}".into(), String::new(), String::new()).is_err());
    }
}
