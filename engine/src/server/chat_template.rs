//! Rendering chat messages into a prompt with the model's own Jinja template (from
//! `tokenizer_config.json` or the GGUF metadata), as `transformers`' `apply_chat_template`
//! renders it: the same environment (blocks trimmed, loop controls), the same helpers
//! (`raise_exception`, `strftime_now`) and the same variables (`messages`, `bos_token`,
//! `eos_token`, `add_generation_prompt`, and no `tools` or `documents`).

use minijinja::{Environment, Error, ErrorKind, Value, context};
use serde::Serialize;

use super::error::ApiError;

const TEMPLATE_NAME: &str = "chat";

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
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
        env.add_template_owned(TEMPLATE_NAME, source)?;
        Ok(ChatTemplate {
            env,
            bos_token,
            eos_token,
        })
    }

    /// The prompt for `messages`, ending with the assistant's turn opened.
    pub fn render(&self, messages: &[ChatMessage]) -> Result<String, ApiError> {
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
                tools => Value::from(()),
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

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are helpful.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] | trim + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    fn user(text: &str) -> ChatMessage {
        ChatMessage {
            role: "user".into(),
            content: text.into(),
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
