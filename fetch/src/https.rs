//! `https://host/path`: files under a base URL, named by a manifest or by `--files`.
//!
//! The manifest is `<base>/modelfleet-manifest.json`:
//!
//! ```json
//! {
//!   "revision": "2024-06-01",
//!   "files": [
//!     { "path": "config.json", "size": 700, "sha256": "<64 hex>" },
//!     { "path": "model.safetensors", "size": 269060552, "sha256": "<64 hex>" }
//!   ]
//! }
//! ```
//!
//! `revision` is optional; when present it must equal `--revision`, so a pin cannot silently
//! fetch other weights. `size` and `sha256` are optional per file and verified when given.
//! Each file is downloaded from `<base>/<path>`. With `--files a,b`, no manifest is read and
//! sizes come from the responses.

use serde::Deserialize;

use super::error::FetchError;
use super::http::{HttpClient, error_chain};
use super::plan::{Location, RemoteFile, encode_path, is_sha256_hex};

pub const MANIFEST_NAME: &str = "modelfleet-manifest.json";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    #[serde(default)]
    pub revision: Option<String>,
    pub files: Vec<ManifestFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    pub path: String,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub sha256: Option<String>,
}

pub fn file_url(base: &str, path: &str) -> String {
    format!("{base}/{}", encode_path(path))
}

/// Why a manifest cannot be used.
#[derive(Debug, PartialEq, Eq)]
pub enum ManifestProblem {
    /// The manifest pins another revision.
    OtherRevision(String),
    Invalid(String),
}

/// The files a manifest names, or why it cannot be used for `revision`.
pub fn files_from_manifest(
    manifest: Manifest,
    base: &str,
    revision: &str,
) -> Result<Vec<RemoteFile>, ManifestProblem> {
    if let Some(pinned) = manifest.revision
        && pinned != revision
    {
        return Err(ManifestProblem::OtherRevision(pinned));
    }
    manifest
        .files
        .into_iter()
        .map(|f| {
            let sha256 = match f.sha256 {
                Some(s) if is_sha256_hex(&s) => Some(s.to_ascii_lowercase()),
                Some(s) => {
                    return Err(ManifestProblem::Invalid(format!(
                        "'{}': sha256 '{s}' is not 64 hex digits",
                        f.path
                    )));
                }
                None => None,
            };
            Ok(RemoteFile {
                location: Location::Url(file_url(base, &f.path)),
                path: f.path,
                size: f.size,
                sha256,
                git_blob_sha1: None,
            })
        })
        .collect()
}

/// The files named on the command line, sizes and checksums unknown until they are fetched.
pub fn files_from_list(names: &[String], base: &str) -> Vec<RemoteFile> {
    names
        .iter()
        .map(|name| RemoteFile {
            path: name.clone(),
            size: None,
            sha256: None,
            git_blob_sha1: None,
            location: Location::Url(file_url(base, name)),
        })
        .collect()
}

/// Reads and checks `<base>/modelfleet-manifest.json`.
pub async fn list(
    client: &HttpClient,
    uri: &str,
    base: &str,
    revision: &str,
) -> Result<Vec<RemoteFile>, FetchError> {
    let url = format!("{base}/{MANIFEST_NAME}");
    let manifest_error = |reason: String| FetchError::Manifest {
        uri: uri.to_string(),
        url: url.clone(),
        reason,
    };
    let response = client
        .get(&url)
        .send()
        .await
        .map_err(|e| manifest_error(error_chain(&e)))?;
    let status = response.status();
    if !status.is_success() {
        return Err(manifest_error(format!(
            "HTTP {}{}",
            status.as_u16(),
            if status.as_u16() == 404 {
                " (publish a manifest there, or name the files with --files)"
            } else {
                ""
            }
        )));
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| manifest_error(error_chain(&e)))?;
    let manifest: Manifest =
        serde_json::from_slice(&body).map_err(|e| manifest_error(e.to_string()))?;
    files_from_manifest(manifest, base, revision).map_err(|problem| match problem {
        ManifestProblem::OtherRevision(pinned) => FetchError::UnknownRevision {
            uri: uri.to_string(),
            revision: revision.to_string(),
            detail: format!("{url} is at revision '{pinned}'"),
        },
        ManifestProblem::Invalid(reason) => manifest_error(reason),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(text: &str) -> Result<Manifest, serde_json::Error> {
        serde_json::from_str(text)
    }

    #[test]
    fn manifest_files_with_sizes_and_checksums() -> Result<(), Box<dyn std::error::Error>> {
        let sha = "AB".repeat(32);
        let m = manifest(&format!(
            r#"{{"revision":"r1","files":[{{"path":"config.json","size":2,"sha256":"{sha}"}},{{"path":"tokenizer.json"}}]}}"#
        ))?;
        let files = files_from_manifest(m, "https://h/m", "r1").map_err(|p| format!("{p:?}"))?;
        assert_eq!(files[0].sha256, Some("ab".repeat(32)));
        assert_eq!(files[0].size, Some(2));
        assert_eq!(
            files[1].location,
            Location::Url("https://h/m/tokenizer.json".into())
        );
        Ok(())
    }

    #[test]
    fn manifest_pinned_to_another_revision_or_with_bad_checksums_is_refused()
    -> Result<(), serde_json::Error> {
        let m = manifest(r#"{"revision":"r1","files":[]}"#)?;
        assert_eq!(
            files_from_manifest(m, "https://h", "r2").err(),
            Some(ManifestProblem::OtherRevision("r1".into()))
        );
        let m = manifest(r#"{"files":[{"path":"a","sha256":"xyz"}]}"#)?;
        assert!(files_from_manifest(m, "https://h", "r2").is_err());
        assert!(manifest(r#"{"files":[],"extra":1}"#).is_err());
        Ok(())
    }
}
