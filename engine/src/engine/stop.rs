//! A request's output text and the decision to stop, one token at a time.
//!
//! Stop strings may span tokens and must not leak into the stream, so text that could be
//! the start of a stop string is held back until it is known not to be one (at most the
//! longest stop string minus one character).

use crate::detokenizer::{Decode, DecodeError, IncrementalDetokenizer};

use super::request::{FinishReason, StopParams};

/// What one new token did to the output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenOutcome {
    /// Text now safe to send.
    pub text: String,
    pub finish: Option<FinishReason>,
}

#[derive(Debug, Clone)]
pub struct OutputText {
    detokenizer: IncrementalDetokenizer,
    params: StopParams,
    /// Bytes of text to withhold while it might begin a stop string.
    hold_back: usize,
    text: String,
    /// Bytes of `text` already sent.
    sent: usize,
    num_tokens: usize,
}

impl OutputText {
    pub fn new(prompt: &[u32], params: StopParams) -> Self {
        let hold_back = params
            .stop
            .iter()
            .map(|s| s.len().saturating_sub(1))
            .max()
            .unwrap_or(0);
        OutputText {
            detokenizer: IncrementalDetokenizer::new(prompt),
            params,
            hold_back,
            text: String::new(),
            sent: 0,
            num_tokens: 0,
        }
    }

    /// The full text so far (stop string excluded once matched).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Takes the token the sampler picked and says what to send and whether to stop.
    pub fn push(
        &mut self,
        decoder: &dyn Decode,
        token: u32,
        eos_token_ids: &[u32],
    ) -> Result<TokenOutcome, DecodeError> {
        self.num_tokens += 1;
        let finish = if !self.params.ignore_eos && eos_token_ids.contains(&token) {
            Some(FinishReason::EndOfSequence)
        } else if self.params.stop_token_ids.contains(&token) {
            Some(FinishReason::StopToken(token))
        } else {
            let searched_from = self.text.len().saturating_sub(self.hold_back);
            self.text.push_str(&self.detokenizer.push(decoder, token)?);
            self.find_stop_string(searched_from)
        };
        let finish = finish.or_else(|| {
            (self.num_tokens >= self.params.max_tokens).then_some(FinishReason::Length)
        });
        let safe_end = if finish.is_some() {
            self.text.len()
        } else {
            floor_char_boundary(&self.text, self.text.len().saturating_sub(self.hold_back))
        };
        let text = if safe_end > self.sent {
            let t = self.text[self.sent..safe_end].to_owned();
            self.sent = safe_end;
            t
        } else {
            String::new()
        };
        Ok(TokenOutcome { text, finish })
    }

    /// Finds the earliest stop string starting at or after `from` (stop strings that
    /// ended before were already checked), and cuts the text before it.
    fn find_stop_string(&mut self, from: usize) -> Option<FinishReason> {
        let from = floor_char_boundary(&self.text, from);
        let (position, stop) = self
            .params
            .stop
            .iter()
            .filter_map(|s| self.text[from..].find(s.as_str()).map(|i| (from + i, s)))
            .min_by_key(|&(i, _)| i)?;
        let stop = stop.clone();
        self.text.truncate(position);
        self.sent = self.sent.min(position);
        Some(FinishReason::StopString(stop))
    }
}

/// The largest char boundary of `s` at or below `index`.
fn floor_char_boundary(s: &str, index: usize) -> usize {
    let mut i = index.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One character per token: token `i` is the i-th character of the alphabet below.
    struct Chars;

    const ALPHABET: &str = "abcdefgh é.";

    impl Decode for Chars {
        fn decode(&self, ids: &[u32]) -> Result<String, DecodeError> {
            ids.iter()
                .map(|&i| {
                    ALPHABET
                        .chars()
                        .nth(i as usize)
                        .ok_or(DecodeError(format!("token {i}")))
                })
                .collect()
        }
    }

    fn ids(text: &str) -> Vec<u32> {
        text.chars()
            .map(|c| ALPHABET.chars().position(|a| a == c).expect("in alphabet") as u32)
            .collect()
    }

    fn run(params: StopParams, output: &str, eos: &[u32]) -> (Vec<String>, Option<FinishReason>) {
        let mut out = OutputText::new(&ids("ab"), params);
        let mut deltas = Vec::new();
        for t in ids(output) {
            let outcome = out.push(&Chars, t, eos).expect("known token");
            deltas.push(outcome.text);
            if outcome.finish.is_some() {
                return (deltas, outcome.finish);
            }
        }
        (deltas, None)
    }

    fn params(max_tokens: usize, stop: &[&str]) -> StopParams {
        StopParams {
            max_tokens,
            stop: stop.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn max_tokens_ends_with_length() {
        let (deltas, finish) = run(params(3, &[]), "abcdef", &[]);
        assert_eq!(deltas, vec!["a", "b", "c"]);
        assert_eq!(finish, Some(FinishReason::Length));
    }

    #[test]
    fn eos_ends_without_text_unless_ignored() {
        let eos = ids(".");
        let (deltas, finish) = run(params(10, &[]), "ab.cd", &eos);
        assert_eq!(deltas.concat(), "ab");
        assert_eq!(finish, Some(FinishReason::EndOfSequence));
        let ignoring = StopParams {
            ignore_eos: true,
            ..params(4, &[])
        };
        let (deltas, finish) = run(ignoring, "ab.cd", &eos);
        assert_eq!(deltas.concat(), "ab.c");
        assert_eq!(finish, Some(FinishReason::Length));
    }

    #[test]
    fn stop_token_ids_end_generation() {
        let stop = StopParams {
            stop_token_ids: ids("d"),
            ..params(10, &[])
        };
        let (deltas, finish) = run(stop, "abcde", &[]);
        assert_eq!(deltas.concat(), "abc");
        assert_eq!(finish, Some(FinishReason::StopToken(ids("d")[0])));
    }

    #[test]
    fn stop_string_across_tokens_is_cut_and_never_streamed() {
        let (deltas, finish) = run(params(20, &["cde"]), "abcdefg", &[]);
        assert_eq!(finish, Some(FinishReason::StopString("cde".into())));
        assert_eq!(deltas.concat(), "ab");
        // Text is held back only while it could still start the stop string.
        assert_eq!(deltas, vec!["", "", "a", "b", ""]);
    }

    #[test]
    fn held_back_text_that_is_not_a_stop_string_is_sent_later_and_at_the_end() {
        let (deltas, finish) = run(params(6, &["cx"]), "acbcad", &[]);
        assert_eq!(finish, Some(FinishReason::Length));
        assert_eq!(deltas.concat(), "acbcad");
    }

    #[test]
    fn the_earliest_stop_string_wins() {
        let (deltas, finish) = run(params(20, &["ef", "d"]), "abcdef", &[]);
        assert_eq!(finish, Some(FinishReason::StopString("d".into())));
        assert_eq!(deltas.concat(), "abc");
    }

    #[test]
    fn multi_byte_text_is_held_back_on_char_boundaries() {
        let (deltas, finish) = run(params(4, &["éé"]), "aébé", &[]);
        assert_eq!(finish, Some(FinishReason::Length));
        assert_eq!(deltas.concat(), "aébé");
    }
}
