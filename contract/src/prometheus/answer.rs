//! An instant query's answer (`/api/v1/query`), read into samples.

use std::collections::BTreeMap;

use serde::Deserialize;

/// One series of an instant-query answer (a scalar answer is one unlabelled sample).
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The sum of the samples' values; `None` when there are none (the query matched nothing).
pub fn sum(samples: &[Sample]) -> Option<f64> {
    (!samples.is_empty()).then(|| samples.iter().map(|s| s.value).sum())
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data {
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct Series {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    /// `[unix seconds, "value"]`.
    value: (f64, String),
}

/// The samples of an instant-query answer (vector or scalar) that came with HTTP `status`.
/// An error says what was wrong: Prometheus's own message, or what the body was instead.
pub fn parse_answer(status: u16, body: &[u8]) -> Result<Vec<Sample>, String> {
    let success = (200..300).contains(&status);
    let answer: Answer = serde_json::from_slice(body).map_err(|e| {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        format!("HTTP {status}, not a Prometheus API answer ({e}): {text}")
    })?;
    if answer.status != "success" || !success {
        return Err(format!(
            "HTTP {status}: {}",
            answer.error.unwrap_or_else(|| answer.status.clone())
        ));
    }
    let data = answer.data.ok_or("the answer has no data")?;
    let number = |text: &str| {
        text.parse::<f64>()
            .map_err(|e| format!("value {text:?} is not a number: {e}"))
    };
    match data.result_type.as_str() {
        "vector" => {
            let series: Vec<Series> =
                serde_json::from_value(data.result).map_err(|e| format!("bad vector: {e}"))?;
            series
                .into_iter()
                .map(|s| {
                    Ok(Sample {
                        value: number(&s.value.1)?,
                        labels: s.metric,
                    })
                })
                .collect()
        }
        "scalar" => {
            let (_, value): (f64, String) =
                serde_json::from_value(data.result).map_err(|e| format!("bad scalar: {e}"))?;
            Ok(vec![Sample {
                labels: BTreeMap::new(),
                value: number(&value)?,
            }])
        }
        other => Err(format!(
            "a {other} answer where an instant vector was expected"
        )),
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters (a query in a URL).
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(status: u16, body: &[u8]) -> Result<Option<f64>, String> {
        parse_answer(status, body).map(|s| sum(&s))
    }

    #[test]
    fn a_vector_answer_has_one_sample_per_series_and_sums_them() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{},"value":[1700000000.1,"12"]},{"metric":{"a":"b"},"value":[1700000000.1,"0.5"]}]}}"#;
        let samples = parse_answer(200, body).expect("parses");
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[1].labels.get("a").map(String::as_str), Some("b"));
        assert_eq!(sum(&samples), Some(12.5));
    }

    #[test]
    fn an_empty_vector_is_no_value() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(value(200, body), Ok(None));
    }

    #[test]
    fn a_scalar_answer_is_one_unlabelled_sample() {
        let body =
            br#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"3"]}}"#;
        let samples = parse_answer(200, body).expect("parses");
        assert_eq!(
            samples,
            vec![Sample {
                labels: BTreeMap::new(),
                value: 3.0
            }]
        );
    }

    #[test]
    fn prometheus_special_values_are_numbers() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{},"value":[1,"NaN"]},{"metric":{},"value":[1,"+Inf"]}]}}"#;
        let samples = parse_answer(200, body).expect("parses");
        assert!(samples[0].value.is_nan());
        assert_eq!(samples[1].value, f64::INFINITY);
    }

    #[test]
    fn an_error_answer_carries_prometheus_message() {
        let body = br#"{"status":"error","errorType":"bad_data","error":"parse error at char 4"}"#;
        let err = parse_answer(400, body).expect_err("an error");
        assert!(err.contains("parse error at char 4"), "{err}");
        assert!(err.contains("400"), "{err}");
    }

    #[test]
    fn a_success_body_under_an_error_status_is_an_error() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert!(parse_answer(503, body).is_err());
    }

    #[test]
    fn something_else_than_prometheus_is_an_error() {
        let err = parse_answer(200, b"<html>login</html>").expect_err("not JSON");
        assert!(err.contains("not a Prometheus API answer"), "{err}");
    }

    #[test]
    fn a_matrix_is_not_an_instant_answer() {
        let body = br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        let err = parse_answer(200, body).expect_err("a matrix");
        assert!(err.contains("matrix"), "{err}");
    }

    #[test]
    fn a_value_that_is_no_number_is_an_error() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{},"value":[1,"twelve"]}]}}"#;
        let err = parse_answer(200, body).expect_err("not a number");
        assert!(err.contains("twelve"), "{err}");
    }

    #[test]
    fn queries_are_percent_encoded() {
        assert_eq!(
            percent_encode(r#"sum(x{a="b c"}[1m])"#),
            "sum%28x%7Ba%3D%22b%20c%22%7D%5B1m%5D%29"
        );
    }
}
