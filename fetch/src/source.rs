//! A model's source as written in a ModelDeployment (`spec.model.source`), parsed.

use std::path::PathBuf;

use super::error::FetchError;

/// Where a model's files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `file:///path`: a directory (every file under it) or a single file.
    File { path: PathBuf },
    /// `https://host/path` (or `http://`): files under a base URL, listed by
    /// `<base>/modelfleet-manifest.json` or by `--files`.
    Http { base: String },
    /// `hf://org/name`: a repository on a Hugging Face hub.
    Hub { repo: String },
    /// `s3://bucket/prefix`: every object under the prefix.
    S3 { bucket: String, prefix: String },
    /// `pvc://claim/path`: a PersistentVolumeClaim the pod mounts at `<pvc root>/<claim>`.
    Pvc { claim: String, path: String },
}

impl Source {
    pub fn parse(uri: &str) -> Result<Self, FetchError> {
        let invalid = |reason: &str| FetchError::InvalidSource {
            uri: uri.to_string(),
            reason: reason.to_string(),
        };
        let Some((scheme, rest)) = uri.split_once("://") else {
            return Err(invalid(
                "expected file://, https://, hf://, s3:// or pvc:// followed by a location",
            ));
        };
        match scheme {
            "file" => {
                if !rest.starts_with('/') {
                    return Err(invalid("file:// needs an absolute path (file:///path)"));
                }
                Ok(Self::File {
                    path: PathBuf::from(rest),
                })
            }
            "https" | "http" => {
                let host = rest.split('/').next().unwrap_or_default();
                if host.is_empty() {
                    return Err(invalid("no host in the URL"));
                }
                Ok(Self::Http {
                    base: uri.trim_end_matches('/').to_string(),
                })
            }
            "hf" => {
                let repo = rest.trim_matches('/');
                let parts: Vec<&str> = repo.split('/').collect();
                if parts.len() != 2 || parts.iter().any(|p| !valid_name(p)) {
                    return Err(invalid("expected hf://org/name"));
                }
                Ok(Self::Hub {
                    repo: repo.to_string(),
                })
            }
            "s3" => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(invalid("expected s3://bucket/prefix"));
                }
                Ok(Self::S3 {
                    bucket: bucket.to_string(),
                    prefix: prefix.trim_matches('/').to_string(),
                })
            }
            "pvc" => {
                let (claim, path) = rest.split_once('/').unwrap_or((rest, ""));
                if !valid_name(claim) {
                    return Err(invalid("expected pvc://claim/path"));
                }
                let path = path.trim_matches('/');
                if !path.is_empty() && super::plan::safe_relative_path(path).is_none() {
                    return Err(invalid("the path inside the claim must not contain '..'"));
                }
                Ok(Self::Pvc {
                    claim: claim.to_string(),
                    path: path.to_string(),
                })
            }
            _ => Err(invalid(
                "unsupported scheme: expected file://, https://, hf://, s3:// or pvc://",
            )),
        }
    }
}

/// A hub org/name or a claim name: letters, digits, `-`, `_`, `.`, not `.` or `..`.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_scheme() {
        assert_eq!(
            Source::parse("file:///models/llama").ok(),
            Some(Source::File {
                path: "/models/llama".into()
            })
        );
        assert_eq!(
            Source::parse("https://models.example/llama/").ok(),
            Some(Source::Http {
                base: "https://models.example/llama".into()
            })
        );
        assert_eq!(
            Source::parse("hf://HuggingFaceTB/SmolLM2-135M").ok(),
            Some(Source::Hub {
                repo: "HuggingFaceTB/SmolLM2-135M".into()
            })
        );
        assert_eq!(
            Source::parse("s3://weights/llama/8b/").ok(),
            Some(Source::S3 {
                bucket: "weights".into(),
                prefix: "llama/8b".into()
            })
        );
        assert_eq!(
            Source::parse("s3://weights").ok(),
            Some(Source::S3 {
                bucket: "weights".into(),
                prefix: String::new()
            })
        );
        assert_eq!(
            Source::parse("pvc://models/llama").ok(),
            Some(Source::Pvc {
                claim: "models".into(),
                path: "llama".into()
            })
        );
    }

    #[test]
    fn rejects_malformed_sources_with_the_reason() {
        for bad in [
            "models/llama",
            "file://relative",
            "hf://just-a-name",
            "hf://org/name/extra",
            "hf://../x",
            "s3:///prefix",
            "pvc://claim/../etc",
            "ftp://host/x",
            "https:///x",
        ] {
            let error = Source::parse(bad).expect_err(bad).to_string();
            assert!(error.contains(bad), "{error}");
        }
    }
}
