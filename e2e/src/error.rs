use std::path::PathBuf;

/// Everything that can go wrong while running a local control plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{name} is not provisioned in {looked_in}; run `make tools` first")]
    ToolMissing { name: String, looked_in: PathBuf },

    #[error("could not start {name} ({program}): {source}")]
    Spawn {
        name: String,
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{name} exited during start-up ({status}); last lines of its log:\n{log_tail}")]
    ComponentExited {
        name: String,
        status: String,
        log_tail: String,
    },

    #[error("{what} was not ready after {seconds}s; last lines of the logs:\n{log_tail}")]
    NotReady {
        what: String,
        seconds: u64,
        log_tail: String,
    },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("making certificates: {0}")]
    Pki(#[from] rcgen::Error),

    #[error("writing a kubeconfig: {0}")]
    Kubeconfig(String),

    #[error("Prometheus: {0}")]
    Prometheus(String),

    #[error("talking to the apiserver: {0}")]
    Kube(#[from] kube::Error),

    #[error("{0}")]
    Harness(String),
}

impl Error {
    pub(crate) fn io(context: &str, source: std::io::Error) -> Self {
        Self::Io {
            context: context.to_string(),
            source,
        }
    }

    pub(crate) fn pki(source: rcgen::Error) -> Self {
        Self::Pki(source)
    }
}
