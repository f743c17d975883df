use std::path::PathBuf;

/// Why a model could not be loaded. Every variant names the file, and the tensor where
/// there is one, so a user knows what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a model: {reason}")]
    NotAModel { path: PathBuf, reason: String },
    #[error("{path}: invalid config: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error(
        "{path}: unsupported architecture '{architecture}' (supported: {})",
        super::arch::supported_names()
    )]
    UnsupportedArchitecture { path: PathBuf, architecture: String },
    #[error("{path}: tensor '{tensor}' is missing")]
    MissingTensor { path: PathBuf, tensor: String },
    #[error("{path}: tensor '{tensor}' has shape {actual:?}, expected {expected:?}")]
    WrongShape {
        path: PathBuf,
        tensor: String,
        actual: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("{path}: tensor '{tensor}' has unsupported dtype {dtype}")]
    UnsupportedDtype {
        path: PathBuf,
        tensor: String,
        dtype: String,
    },
    #[error("{path}: malformed GGUF: {reason}")]
    Gguf { path: PathBuf, reason: String },
    #[error("{path}: placing tensor '{tensor}' on the device: {source}")]
    Placement {
        path: PathBuf,
        tensor: String,
        #[source]
        source: crate::backend::BackendError,
    },
    #[error(transparent)]
    Backend(#[from] crate::backend::BackendError),
    #[error("could not tokenize the text: {0}")]
    Encode(String),
    #[error("{path}: tokenizer: {reason}")]
    Tokenizer { path: PathBuf, reason: String },
}

impl ModelError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
