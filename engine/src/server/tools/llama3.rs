//! Llama 3.1 / 3.2's calls: the whole answer is `{"name": …, "parameters": …}` (calls
//! separated by `;` when there are several), maybe after `<|python_tag|>`.

use serde_json::Value;

use super::name_and_arguments;

const PYTHON_TAG: &str = "<|python_tag|>";

/// Every call, if the output is calls (no text comes before them in this syntax).
pub fn parse(text: &str) -> Option<(String, Vec<(String, Value)>)> {
    let body = text.trim();
    let body = body.strip_prefix(PYTHON_TAG).unwrap_or(body).trim();
    if !body.starts_with('{') {
        return None;
    }
    let mut calls = Vec::new();
    for part in serde_json::Deserializer::from_str(body).into_iter::<Value>() {
        let call = part.ok()?;
        calls.push(
            name_and_arguments(&call, "parameters")
                .or_else(|| name_and_arguments(&call, "arguments"))?,
        );
    }
    Some((String::new(), calls))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_answer_is_a_call() {
        let (_, calls) =
            parse("{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}")
                .expect("call");
        assert_eq!(
            calls,
            [(
                "get_weather".to_string(),
                serde_json::json!({"city": "Paris"})
            )]
        );
        let (_, calls) =
            parse("<|python_tag|>{\"name\": \"f\", \"parameters\": {}}").expect("call");
        assert_eq!(calls[0].0, "f");
        assert!(parse("The weather is fine.").is_none());
    }
}
