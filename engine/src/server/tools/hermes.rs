//! Qwen2.5's (Hermes-style) calls: `<tool_call>\n{"name": …, "arguments": …}\n</tool_call>`,
//! one block per call, after any text.

use serde_json::Value;

use super::name_and_arguments;

const OPEN: &str = "<tool_call>";
const CLOSE: &str = "</tool_call>";

/// The text before the first call and every call, if there is one.
pub fn parse(text: &str) -> Option<(String, Vec<(String, Value)>)> {
    let start = text.find(OPEN)?;
    let mut calls = Vec::new();
    let mut rest = &text[start..];
    while let Some(open) = rest.find(OPEN) {
        let body = &rest[open + OPEN.len()..];
        // The last block may lack its closing tag when the output ended there.
        let end = body.find(CLOSE).unwrap_or(body.len());
        let call: Value = serde_json::from_str(body[..end].trim()).ok()?;
        calls.push(name_and_arguments(&call, "arguments")?);
        rest = &body[(end + CLOSE.len()).min(body.len())..];
    }
    Some((text[..start].to_string(), calls))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_calls_and_the_text_before_them_is_content() {
        let text = "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>";
        let (before, calls) = parse(text).expect("calls");
        assert_eq!(before, "Let me check.\n");
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].0, "get_weather");
        assert_eq!(calls[0].1["city"], "Paris");
        assert!(parse("no calls").is_none());
        assert!(parse("<tool_call>\n{not json}\n</tool_call>").is_none());
    }
}
