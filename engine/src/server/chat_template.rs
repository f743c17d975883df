//! Rendering chat messages into a prompt with the model's own Jinja template (from
//! `tokenizer_config.json` or the GGUF metadata), as `transformers` does.

use minijinja::{Environment, Error, ErrorKind, context};
use serde::Serialize;

use super::error::ApiError;

const TEMPLATE_NAME: &str = "chat";

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    /// Compiles `source`; a template that does not parse is reported at load, not per request.
    pub fn new(source: String, bos_token: String, eos_token: String) -> Result<Self, Error> {
        let mut env = Environment::new();
        // Templates written for Python's Jinja call str methods (`.strip()`, `.startswith()`).
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        // ... and `raise_exception` to refuse conversations they cannot render.
        env.add_function("raise_exception", |message: String| -> Result<(), Error> {
            Err(Error::new(ErrorKind::InvalidOperation, message))
        });
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

    #[test]
    fn a_template_that_does_not_parse_fails_at_load() {
        assert!(ChatTemplate::new("{% for %}".into(), String::new(), String::new()).is_err());
    }
}
