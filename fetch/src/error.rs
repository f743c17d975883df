//! The fetcher's one error type. Every message names the source, and the file where one is
//! involved, so an init container's last log line says what failed and where.

use std::path::PathBuf;

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("source '{uri}': {reason}")]
    InvalidSource { uri: String, reason: String },

    #[error("source '{uri}': revision '{revision}' not found ({detail})")]
    UnknownRevision {
        uri: String,
        revision: String,
        detail: String,
    },

    #[error("source '{uri}': listing files failed: {reason}")]
    Listing { uri: String, reason: String },

    #[error("source '{uri}': manifest {url}: {reason}")]
    Manifest {
        uri: String,
        url: String,
        reason: String,
    },

    #[error("source '{uri}': no files to fetch (include patterns: {patterns})")]
    NoFiles { uri: String, patterns: String },

    #[error("source '{uri}': refusing file path '{path}' (absolute, '..', or empty components)")]
    UnsafePath { uri: String, path: String },

    #[error("source '{uri}': file '{file}': {failure}")]
    File {
        uri: String,
        file: String,
        failure: FileFailure,
    },

    #[error("destination {}: {error}", path.display())]
    Destination {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },

    #[error("could not start the fetcher's runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// Why one file could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FileFailure {
    #[error("not found at {location}")]
    NotFound { location: String },

    #[error("access denied (HTTP {status}) at {url}{hint}")]
    Denied {
        status: u16,
        url: String,
        hint: &'static str,
    },

    #[error("HTTP {status} from {url}")]
    HttpStatus { status: u16, url: String },

    #[error("transfer failed: {0}")]
    Transfer(String),

    #[error("the object changed while it was being fetched ({0}); fetch again")]
    Changed(String),

    #[error(
        "checksum mismatch: expected sha256 {expected}, got {actual}; the download was removed"
    )]
    Checksum { expected: String, actual: String },

    #[error(
        "checksum mismatch: expected git blob {expected}, got {actual}; the download was removed"
    )]
    GitBlob { expected: String, actual: String },

    #[error("size mismatch: expected {expected} bytes, got {actual}; the download was removed")]
    Size { expected: u64, actual: u64 },

    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
}

impl FileFailure {
    /// Whether another attempt (resuming from what is on disk) may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Transfer(_) => true,
            Self::HttpStatus { status, .. } => *status == 429 || *status >= 500,
            Self::NotFound { .. }
            | Self::Denied { .. }
            | Self::Changed(_)
            | Self::Checksum { .. }
            | Self::GitBlob { .. }
            | Self::Size { .. }
            | Self::Io { .. } => false,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            error,
        }
    }
}

impl FetchError {
    pub(crate) fn destination(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        Self::Destination {
            path: path.into(),
            error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_errors_name_source_file_and_reason() {
        let error = FetchError::File {
            uri: "hf://org/model".into(),
            file: "model.safetensors".into(),
            failure: FileFailure::Checksum {
                expected: "aa".into(),
                actual: "bb".into(),
            },
        };
        let message = error.to_string();
        assert!(message.contains("hf://org/model"), "{message}");
        assert!(message.contains("model.safetensors"), "{message}");
        assert!(message.contains("checksum mismatch"), "{message}");
    }

    #[test]
    fn only_transient_failures_are_retried() {
        assert!(FileFailure::Transfer("reset".into()).is_retriable());
        let status = |status| FileFailure::HttpStatus {
            status,
            url: String::new(),
        };
        assert!(status(503).is_retriable());
        assert!(status(429).is_retriable());
        assert!(!status(400).is_retriable());
        assert!(
            !FileFailure::NotFound {
                location: String::new()
            }
            .is_retriable()
        );
        assert!(
            !FileFailure::Checksum {
                expected: String::new(),
                actual: String::new()
            }
            .is_retriable()
        );
    }
}
