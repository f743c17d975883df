//! Log-probabilities in the two shapes the OpenAI API has for them: the chat API's list of
//! `{token, logprob, bytes, top_logprobs}` and the completions API's parallel arrays
//! (`tokens`, `token_logprobs`, `top_logprobs`, `text_offset`).

use serde::Serialize;
use serde_json::{Map, Value};

use crate::sampling::{PositionLogprobs, TokenLogprob};

/// What JSON can hold for a token the model rules out (vLLM reports the same).
const MOST_UNLIKELY: f32 = -9999.0;

/// Renders a token id as text.
pub type TokenText<'a> = &'a dyn Fn(u32) -> String;

fn finite(logprob: f32) -> f32 {
    if logprob.is_finite() {
        logprob
    } else {
        MOST_UNLIKELY
    }
}

/// An f32 as JSON with the digits it is printed with elsewhere in the response (widening
/// it to f64 first would print the widening's digits, so the same value would read two
/// ways).
fn json_number(value: f32) -> Value {
    value
        .to_string()
        .parse::<f64>()
        .map_or(Value::Null, Value::from)
}

/// `choices[].logprobs` of a chat completion (and of each streamed chunk).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatLogprobs {
    pub content: Vec<ChatTokenLogprob>,
    pub refusal: Option<()>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatTokenLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
    pub top_logprobs: Vec<ChatTopLogprob>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatTopLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
}

impl ChatLogprobs {
    pub fn new<'a>(
        positions: impl IntoIterator<Item = &'a PositionLogprobs>,
        text: TokenText,
    ) -> Self {
        let top = |t: &TokenLogprob| {
            let token = text(t.token);
            ChatTopLogprob {
                bytes: token.as_bytes().to_vec(),
                token,
                logprob: finite(t.logprob),
            }
        };
        ChatLogprobs {
            content: positions
                .into_iter()
                .map(|p| {
                    let chosen = top(&p.chosen);
                    ChatTokenLogprob {
                        token: chosen.token,
                        logprob: chosen.logprob,
                        bytes: chosen.bytes,
                        top_logprobs: p.top.iter().map(top).collect(),
                    }
                })
                .collect(),
            refusal: None,
        }
    }
}

/// `choices[].logprobs` of a completion: one entry per token, prompt tokens first when
/// the prompt is echoed (its first token has no log-probability: nothing precedes it).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CompletionLogprobs {
    pub tokens: Vec<String>,
    pub token_logprobs: Vec<Option<f32>>,
    /// The most likely tokens at each position and the chosen one, by text.
    pub top_logprobs: Vec<Option<Map<String, Value>>>,
    /// Where each token's text starts in the choice's text, in characters.
    pub text_offset: Vec<usize>,
    /// Where the next token's text starts.
    #[serde(skip)]
    next_offset: usize,
}

impl CompletionLogprobs {
    /// Empty, for tokens whose text starts at character `offset` of the choice's text.
    pub fn starting_at(offset: usize) -> Self {
        CompletionLogprobs {
            next_offset: offset,
            ..Default::default()
        }
    }

    /// Appends a prompt token (`position` is `None` for the first, which has no
    /// log-probability).
    pub fn push_prompt(
        &mut self,
        token: u32,
        position: Option<&PositionLogprobs>,
        text: TokenText,
    ) {
        match position {
            Some(p) => self.push(p, text),
            None => self.push_entry(text(token), None, None),
        }
    }

    /// Appends a token with its log-probabilities.
    pub fn push(&mut self, position: &PositionLogprobs, text: TokenText) {
        let mut top = Map::new();
        for t in position.top.iter().chain([&position.chosen]) {
            top.insert(text(t.token), json_number(finite(t.logprob)));
        }
        self.push_entry(
            text(position.chosen.token),
            Some(finite(position.chosen.logprob)),
            Some(top),
        );
    }

    fn push_entry(&mut self, token: String, logprob: Option<f32>, top: Option<Map<String, Value>>) {
        self.text_offset.push(self.next_offset);
        self.next_offset += token.chars().count();
        self.tokens.push(token);
        self.token_logprobs.push(logprob);
        self.top_logprobs.push(top);
    }

    /// Moves out what was appended so far (one streamed chunk's worth), keeping the offset.
    pub fn take(&mut self) -> Self {
        let next_offset = self.next_offset;
        let taken = std::mem::take(self);
        self.next_offset = next_offset;
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn position(token: u32, logprob: f32, top: &[(u32, f32)]) -> PositionLogprobs {
        PositionLogprobs {
            chosen: TokenLogprob { token, logprob },
            top: top
                .iter()
                .map(|&(token, logprob)| TokenLogprob { token, logprob })
                .collect(),
        }
    }

    fn text(id: u32) -> String {
        ["a", "bb", "ccc", "é"][id as usize].to_string()
    }

    #[test]
    fn completion_logprobs_list_the_prompt_first_with_offsets_in_characters() {
        let mut lp = CompletionLogprobs::starting_at(0);
        lp.push_prompt(3, None, &text);
        lp.push_prompt(1, Some(&position(1, -0.5, &[(2, -0.1)])), &text);
        lp.push(&position(0, f32::NEG_INFINITY, &[]), &text);
        assert_eq!(lp.tokens, ["é", "bb", "a"]);
        assert_eq!(lp.text_offset, [0, 1, 3]);
        assert_eq!(lp.token_logprobs, [None, Some(-0.5), Some(MOST_UNLIKELY)]);
        let top = lp.top_logprobs[1].as_ref().expect("scored");
        assert_eq!(top.len(), 2, "the alternatives and the chosen token");
        assert_eq!(top["ccc"].to_string(), "-0.1");
        let first = lp.take();
        assert_eq!(first.tokens.len(), 3);
        assert!(lp.tokens.is_empty());
        lp.push_prompt(0, None, &text);
        assert_eq!(lp.text_offset, [4], "offsets carry on after a take");
    }

    #[test]
    fn chat_logprobs_carry_the_bytes_of_each_token() {
        let lp = ChatLogprobs::new([&position(3, -1.0, &[(3, -1.0), (0, -2.0)])], &text);
        assert_eq!(lp.content[0].token, "é");
        assert_eq!(lp.content[0].bytes, "é".as_bytes());
        assert_eq!(lp.content[0].top_logprobs.len(), 2);
        assert_eq!(lp.content[0].top_logprobs[1].token, "a");
    }
}
