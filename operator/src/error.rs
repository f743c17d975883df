//! The operator's one error type.

use std::time::Duration;

/// Everything that can go wrong inside the operator library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the Kubernetes API failed.
    #[error("Kubernetes API call failed while {action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },

    /// The ModelDeployment holds a value the schema let through but the operator cannot use.
    #[error("invalid ModelDeployment {object}: {reason}")]
    InvalidSpec { object: String, reason: String },

    /// Objects with the names of the ModelDeployment's children belong to someone else.
    #[error("ModelDeployment {object} leaves alone what is not its own: {reason}")]
    NotOwned { object: String, reason: String },

    /// An object the API server returned lacks a field it always sets.
    #[error("object from the API server is missing {what}")]
    MissingField { what: &'static str },

    /// Serialising an object for a patch failed.
    #[error("serialising {what}: {source}")]
    Serialize {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },

    /// Rendering the CRD as YAML failed.
    #[error("rendering the CRD as YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),

    /// Registering or encoding a Prometheus metric failed.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),

    /// The telemetry HTTP server could not bind or serve.
    #[error("telemetry server on {addr}: {source}")]
    Telemetry {
        addr: String,
        #[source]
        source: std::io::Error,
    },

    /// The Prometheus URL the autoscaler was given cannot be used.
    #[error("Prometheus URL {url:?}: {reason}")]
    Prometheus { url: String, reason: String },

    /// This process held the leader lease and could not renew it in time.
    #[error("lost the leader lease {lease} (not renewed within {deadline:?})")]
    LeadershipLost { lease: String, deadline: Duration },
}

impl From<modelfleet_contract::prometheus::InvalidUrl> for Error {
    fn from(e: modelfleet_contract::prometheus::InvalidUrl) -> Self {
        Error::Prometheus {
            url: e.url,
            reason: e.reason,
        }
    }
}

impl Error {
    /// Wraps a kube error with what the operator was doing.
    pub fn kube(action: impl Into<String>, source: kube::Error) -> Self {
        Self::Kube {
            action: action.into(),
            source,
        }
    }

    /// Every value [`Self::metric_label`] returns, so the error counter can export each at 0.
    pub const METRIC_LABELS: &[&str] = &[
        "kube",
        "invalid_spec",
        "not_owned",
        "missing_field",
        "serialize",
        "yaml",
        "metrics",
        "telemetry",
        "leadership_lost",
        "prometheus",
    ];

    /// A short, bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube { .. } => "kube",
            Self::InvalidSpec { .. } => "invalid_spec",
            Self::NotOwned { .. } => "not_owned",
            Self::MissingField { .. } => "missing_field",
            Self::Serialize { .. } => "serialize",
            Self::Yaml(_) => "yaml",
            Self::Metrics(_) => "metrics",
            Self::Telemetry { .. } => "telemetry",
            Self::LeadershipLost { .. } => "leadership_lost",
            Self::Prometheus { .. } => "prometheus",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_label_is_listed() {
        let errors = [
            Error::kube("x", kube::Error::LinesCodecMaxLineLengthExceeded),
            Error::InvalidSpec {
                object: "o".into(),
                reason: "r".into(),
            },
            Error::NotOwned {
                object: "o".into(),
                reason: "r".into(),
            },
            Error::MissingField { what: "w" },
            Error::Telemetry {
                addr: "a".into(),
                source: std::io::Error::other("e"),
            },
            Error::LeadershipLost {
                lease: "l".into(),
                deadline: Duration::from_secs(1),
            },
            Error::Prometheus {
                url: "u".into(),
                reason: "r".into(),
            },
        ];
        for error in &errors {
            assert!(
                Error::METRIC_LABELS.contains(&error.metric_label()),
                "{}",
                error.metric_label()
            );
        }
    }
}
