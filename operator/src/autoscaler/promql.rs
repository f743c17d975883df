//! The PromQL the autoscaler asks, built as plain text.

use std::time::Duration;

// The engine metric the autoscaler reads (requests waiting to be scheduled, per pod) and
// the series labels Prometheus's relabelling puts on every engine pod's samples.
use modelfleet_contract::metrics::{
    MODEL_DEPLOYMENT as MODEL_DEPLOYMENT_LABEL, NAMESPACE as NAMESPACE_LABEL,
    QUEUE_DEPTH as QUEUE_DEPTH_METRIC,
};

/// Waiting requests of one ModelDeployment: each pod's queue depth averaged over `window`,
/// summed over its pods, e.g.
/// `sum(avg_over_time(modelfleet_engine_queue_depth{namespace="ml",modeldeployment="chat"}[1m]))`.
pub fn queue_depth(namespace: &str, name: &str, window: Duration) -> String {
    format!(
        "sum(avg_over_time({QUEUE_DEPTH_METRIC}{{{NAMESPACE_LABEL}=\"{}\",{MODEL_DEPLOYMENT_LABEL}=\"{}\"}}[{}]))",
        escape_label_value(namespace),
        escape_label_value(name),
        range(window),
    )
}

/// A label value as a PromQL double-quoted string body: backslash, quote and line breaks
/// escaped, so no value can end the string early.
pub fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out
}

/// A range selector duration in whole milliseconds (PromQL accepts `1500ms`), at least 1 ms.
fn range(window: Duration) -> String {
    let ms = window.as_millis().max(1);
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_sums_the_window_average_of_one_model_deployment() {
        assert_eq!(
            queue_depth("ml", "chat", Duration::from_secs(60)),
            "sum(avg_over_time(modelfleet_engine_queue_depth{namespace=\"ml\",modeldeployment=\"chat\"}[60s]))"
        );
    }

    #[test]
    fn sub_second_windows_use_milliseconds() {
        assert!(queue_depth("a", "b", Duration::from_millis(1500)).ends_with("[1500ms]))"));
        assert!(queue_depth("a", "b", Duration::ZERO).ends_with("[1ms]))"));
    }

    #[test]
    fn label_values_cannot_break_out_of_their_string() {
        assert_eq!(escape_label_value(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label_value("x\ny"), "x\\ny");
        let q = queue_depth("ns\"}) or vector(1000) #", "n", Duration::from_secs(5));
        assert!(
            q.contains(r#"namespace="ns\"}) or vector(1000) #""#),
            "the injected text stays inside the label value: {q}"
        );
    }
}
