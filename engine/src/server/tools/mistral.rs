//! Mistral's calls: `[TOOL_CALLS][{"name": …, "arguments": …}, …]`, after any text.

use serde_json::Value;

use super::name_and_arguments;

const MARKER: &str = "[TOOL_CALLS]";

/// The text before the calls and every call, if there are any.
pub fn parse(text: &str) -> Option<(String, Vec<(String, Value)>)> {
    let start = text.find(MARKER)?;
    let body = text[start + MARKER.len()..].trim();
    // The list may be followed by text the model went on with; read just the list.
    let list: Value = serde_json::Deserializer::from_str(body)
        .into_iter::<Value>()
        .next()?
        .ok()?;
    let calls = match list {
        Value::Array(calls) => calls,
        call @ Value::Object(_) => vec![call],
        _ => return None,
    };
    let calls = calls
        .iter()
        .map(|call| name_and_arguments(call, "arguments"))
        .collect::<Option<Vec<_>>>()?;
    Some((text[..start].to_string(), calls))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_after_the_marker_is_the_calls() {
        let (before, calls) = parse(
            "[TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}, \"id\": \"abcdefghi\"}]",
        )
        .expect("calls");
        assert_eq!(before, "");
        assert_eq!(calls[0].1["city"], "Paris");
        assert!(parse("[TOOL_CALLS] nonsense").is_none());
        assert!(parse("plain text").is_none());
    }
}
