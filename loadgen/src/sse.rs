//! Server-sent events from the OpenAI-compatible streaming API: the byte stream is cut into
//! events (`data:` lines up to a blank line), and each event's JSON into a [`StreamChunk`].

use serde::Deserialize;

/// Cuts a byte stream into the `data` of complete events. Bytes may arrive split anywhere,
/// including inside a line or a UTF-8 character.
#[derive(Debug, Default)]
pub struct SseDecoder {
    line: Vec<u8>,
    data: Option<String>,
}

impl SseDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; returns the data of every event these bytes completed.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut events = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                let mut line = std::mem::take(&mut self.line);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.end_line(&line, &mut events);
            } else {
                self.line.push(b);
            }
        }
        events
    }

    /// The stream ended: an event not closed by a blank line still counts.
    pub fn finish(&mut self) -> Option<String> {
        let mut events = Vec::new();
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.end_line(&line, &mut events);
        }
        self.data.take().or_else(|| events.pop())
    }

    fn end_line(&mut self, line: &[u8], events: &mut Vec<String>) {
        if line.is_empty() {
            if let Some(data) = self.data.take() {
                events.push(data);
            }
            return;
        }
        let line = String::from_utf8_lossy(line);
        // Comments (`: keep-alive`) and other fields (`event:`, `id:`, `retry:`) carry no data.
        let Some(value) = line.strip_prefix("data:") else {
            return;
        };
        let value = value.strip_prefix(' ').unwrap_or(value);
        match &mut self.data {
            // Several data lines in one event join with newlines.
            Some(data) => {
                data.push('\n');
                data.push_str(value);
            }
            None => self.data = Some(value.to_owned()),
        }
    }
}

/// One streamed event, understood.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamChunk {
    /// `data: [DONE]`: the stream is complete.
    Done,
    /// Text produced since the previous chunk (`choices[0].text` for completions,
    /// `choices[0].delta.content` for chat), and whatever the chunk says about the end.
    Delta {
        text: String,
        finish_reason: Option<String>,
        completion_tokens: Option<u64>,
        prompt_tokens: Option<u64>,
    },
    /// An error object sent in the stream.
    Error(String),
}

#[derive(Deserialize)]
struct ChunkJson {
    #[serde(default)]
    choices: Vec<ChoiceJson>,
    usage: Option<UsageJson>,
    error: Option<ErrorJson>,
}

#[derive(Deserialize)]
struct ChoiceJson {
    text: Option<String>,
    delta: Option<DeltaJson>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct DeltaJson {
    content: Option<String>,
}

#[derive(Deserialize)]
struct UsageJson {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct ErrorJson {
    message: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// Understands one event's data.
pub fn parse_chunk(data: &str) -> Result<StreamChunk, String> {
    if data.trim() == "[DONE]" {
        return Ok(StreamChunk::Done);
    }
    let chunk: ChunkJson = serde_json::from_str(data)
        .map_err(|e| format!("unreadable stream chunk ({e}): {}", truncate(data, 200)))?;
    if let Some(error) = chunk.error {
        let message = error.message.unwrap_or_default();
        return Ok(StreamChunk::Error(match error.kind {
            Some(kind) => format!("{kind}: {message}"),
            None => message,
        }));
    }
    let choice = chunk.choices.into_iter().next();
    let (text, finish_reason) = match choice {
        Some(c) => (
            c.text
                .or_else(|| c.delta.and_then(|d| d.content))
                .unwrap_or_default(),
            c.finish_reason,
        ),
        None => (String::new(), None),
    };
    Ok(StreamChunk::Delta {
        text,
        finish_reason,
        completion_tokens: chunk.usage.as_ref().and_then(|u| u.completion_tokens),
        prompt_tokens: chunk.usage.as_ref().and_then(|u| u.prompt_tokens),
    })
}

/// At most `max` bytes of `text`, cut at a character boundary.
pub fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_pushes_and_crlf_lines() {
        let mut d = SseDecoder::new();
        assert!(d.push(b"data: {\"a\"").is_empty());
        assert!(d.push(b":1}\r\n").is_empty());
        assert_eq!(d.push(b"\r\ndata: [DO"), vec!["{\"a\":1}".to_owned()]);
        assert_eq!(d.push(b"NE]\n\n"), vec!["[DONE]".to_owned()]);
        assert_eq!(d.finish(), None);
    }

    #[test]
    fn comments_and_other_fields_are_skipped_and_data_lines_join() {
        let mut d = SseDecoder::new();
        let events = d.push(b": keep-alive\n\nevent: message\nid: 3\ndata:x\ndata: y\n\ndata: z\n");
        assert_eq!(events, vec!["x\ny".to_owned()]);
        // The last event lacks its blank line; the end of the stream closes it.
        assert_eq!(d.finish(), Some("z".to_owned()));
    }

    #[test]
    fn a_character_split_between_pushes_survives() {
        let mut d = SseDecoder::new();
        let bytes = "data: {\"t\":\"é\"}\n\n".as_bytes();
        let split = bytes.iter().position(|&b| b == 0xC3).expect("é") + 1;
        assert!(d.push(&bytes[..split]).is_empty());
        assert_eq!(d.push(&bytes[split..]), vec!["{\"t\":\"é\"}".to_owned()]);
    }

    #[test]
    fn completion_chat_usage_done_and_error_chunks() {
        let completion = r#"{"id":"c1","object":"text_completion","choices":[{"index":0,"text":" Paris","finish_reason":null}]}"#;
        assert_eq!(
            parse_chunk(completion),
            Ok(StreamChunk::Delta {
                text: " Paris".into(),
                finish_reason: None,
                completion_tokens: None,
                prompt_tokens: None,
            })
        );
        let chat = r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"},"finish_reason":"length"}]}"#;
        assert_eq!(
            parse_chunk(chat),
            Ok(StreamChunk::Delta {
                text: "Hi".into(),
                finish_reason: Some("length".into()),
                completion_tokens: None,
                prompt_tokens: None,
            })
        );
        let usage = r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":16,"total_tokens":21}}"#;
        assert_eq!(
            parse_chunk(usage),
            Ok(StreamChunk::Delta {
                text: String::new(),
                finish_reason: None,
                completion_tokens: Some(16),
                prompt_tokens: Some(5),
            })
        );
        assert_eq!(parse_chunk("[DONE]"), Ok(StreamChunk::Done));
        let error = r#"{"error":{"message":"queue full","type":"overloaded","code":429}}"#;
        assert_eq!(
            parse_chunk(error),
            Ok(StreamChunk::Error("overloaded: queue full".into()))
        );
        assert!(parse_chunk("not json").is_err());
    }

    #[test]
    fn truncation_respects_character_boundaries() {
        assert_eq!(truncate("abc", 10), "abc");
        assert_eq!(truncate("aé", 2), "a");
    }
}
