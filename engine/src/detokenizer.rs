//! Incremental detokenisation: token ids in, text deltas out, one token at a time.
//!
//! Decoding tokens one by one is wrong in two ways: a multi-byte UTF-8 character may be
//! split over several byte-level tokens (decoding a lone piece gives U+FFFD), and some
//! decoders render a token differently depending on its neighbours (leading spaces). So,
//! like vLLM and TGI, we decode a short window twice — with and without the new tokens —
//! and emit only the difference, holding back while the text ends in an incomplete
//! character.

/// Anything that turns token ids into text (the model's tokenizer).
pub trait Decode {
    fn decode(&self, ids: &[u32]) -> Result<String, DecodeError>;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("could not decode tokens: {0}")]
pub struct DecodeError(pub String);

/// How many prompt tokens to keep as left context for the first output tokens.
const PROMPT_CONTEXT: usize = 5;

/// Per-request decoding state.
#[derive(Debug, Clone)]
pub struct IncrementalDetokenizer {
    tokens: Vec<u32>,
    /// Start of the window decoded for context.
    prefix_offset: usize,
    /// End of the text already emitted.
    read_offset: usize,
}

impl IncrementalDetokenizer {
    /// Starts after `prompt`, whose last tokens serve as context only (never emitted).
    pub fn new(prompt: &[u32]) -> Self {
        let context = &prompt[prompt.len().saturating_sub(PROMPT_CONTEXT)..];
        IncrementalDetokenizer {
            tokens: context.to_vec(),
            prefix_offset: 0,
            read_offset: context.len(),
        }
    }

    /// Adds one token and returns the text it completes (possibly empty, when it ends
    /// inside a multi-byte character that a later token finishes).
    pub fn push(&mut self, decoder: &dyn Decode, token: u32) -> Result<String, DecodeError> {
        self.tokens.push(token);
        let prefix_text = decoder.decode(&self.tokens[self.prefix_offset..self.read_offset])?;
        let new_text = decoder.decode(&self.tokens[self.prefix_offset..])?;
        if new_text.len() <= prefix_text.len() || new_text.ends_with('\u{FFFD}') {
            return Ok(String::new());
        }
        let delta = match new_text.get(prefix_text.len()..) {
            Some(delta) if new_text.starts_with(&prefix_text) => delta.to_owned(),
            // The window re-rendered differently; emit what is new past the common prefix.
            _ => {
                let common = prefix_text
                    .char_indices()
                    .zip(new_text.chars())
                    .take_while(|((_, a), b)| a == b)
                    .last()
                    .map_or(0, |((i, c), _)| i + c.len_utf8());
                new_text[common..].to_owned()
            }
        };
        self.prefix_offset = self.read_offset;
        self.read_offset = self.tokens.len();
        Ok(delta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A byte-level vocabulary: each token stands for a fixed byte string, and decoding
    /// concatenates the bytes and replaces invalid UTF-8, exactly as byte-level BPE does.
    struct Bytes(Vec<Vec<u8>>);

    impl Decode for Bytes {
        fn decode(&self, ids: &[u32]) -> Result<String, DecodeError> {
            let mut bytes = Vec::new();
            for &id in ids {
                let piece = self
                    .0
                    .get(id as usize)
                    .ok_or(DecodeError(format!("token {id}")))?;
                bytes.extend_from_slice(piece);
            }
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        }
    }

    fn vocab() -> Bytes {
        let euro = "€".as_bytes(); // three bytes
        Bytes(vec![
            b"Hello".to_vec(),
            b" world".to_vec(),
            euro[..1].to_vec(),
            euro[1..2].to_vec(),
            euro[2..].to_vec(),
            "é".as_bytes().to_vec(),
            b"!".to_vec(),
        ])
    }

    fn stream(prompt: &[u32], output: &[u32]) -> Vec<String> {
        let v = vocab();
        let mut d = IncrementalDetokenizer::new(prompt);
        output
            .iter()
            .map(|&t| d.push(&v, t).expect("known token"))
            .collect()
    }

    #[test]
    fn whole_tokens_come_out_as_they_arrive() {
        assert_eq!(stream(&[0], &[1, 6]), vec![" world", "!"]);
    }

    #[test]
    fn a_character_split_over_tokens_comes_out_once_complete() {
        let deltas = stream(&[0], &[1, 2, 3, 4, 6]);
        assert_eq!(deltas, vec![" world", "", "", "€", "!"]);
        assert_eq!(deltas.concat(), " world€!");
    }

    #[test]
    fn concatenated_deltas_equal_decoding_the_whole_output() {
        let output = [5, 2, 3, 4, 1, 5, 6, 2, 3, 4];
        let expected = vocab().decode(&output).expect("known tokens");
        assert_eq!(stream(&[0, 1, 0], &output).concat(), expected);
    }

    #[test]
    fn the_prompt_is_never_emitted() {
        assert_eq!(stream(&[0, 1, 6, 0, 1, 6, 0], &[6]).concat(), "!");
    }

    #[test]
    fn unknown_tokens_are_an_error() {
        let mut d = IncrementalDetokenizer::new(&[0]);
        assert!(d.push(&vocab(), 99).is_err());
    }
}
