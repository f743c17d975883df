//! `hf://org/name`: a repository on a Hugging Face hub (or any server with its layout).
//!
//! - listing: `GET {endpoint}/api/models/{org}/{name}/revision/{revision}?blobs=true`, whose
//!   `siblings` give each file's name, size and, for LFS files, sha256;
//! - download: `GET {endpoint}/{org}/{name}/resolve/{revision}/{file}`, whose `X-Linked-Etag`
//!   or `ETag` is the sha256 for LFS files.

use serde::Deserialize;

use super::error::FetchError;
use super::http::{HttpClient, error_chain};
use super::plan::{Location, RemoteFile, encode_path, encode_segment, is_sha256_hex};

#[derive(Debug, Deserialize)]
pub struct RepoInfo {
    /// The commit the revision resolved to.
    #[serde(default)]
    pub sha: Option<String>,
    #[serde(default)]
    pub siblings: Vec<Sibling>,
}

#[derive(Debug, Deserialize)]
pub struct Sibling {
    pub rfilename: String,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub lfs: Option<LfsInfo>,
}

#[derive(Debug, Deserialize)]
pub struct LfsInfo {
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub size: Option<u64>,
}

pub fn revision_url(endpoint: &str, repo: &str, revision: &str) -> String {
    format!(
        "{}/api/models/{repo}/revision/{}?blobs=true",
        endpoint.trim_end_matches('/'),
        encode_segment(revision)
    )
}

pub fn resolve_url(endpoint: &str, repo: &str, revision: &str, file: &str) -> String {
    format!(
        "{}/{repo}/resolve/{}/{}",
        endpoint.trim_end_matches('/'),
        encode_segment(revision),
        encode_path(file)
    )
}

/// The files of a listing, with the sizes and checksums it gives.
pub fn files_from_listing(
    info: RepoInfo,
    endpoint: &str,
    repo: &str,
    revision: &str,
) -> Vec<RemoteFile> {
    info.siblings
        .into_iter()
        .map(|sibling| {
            let lfs = sibling.lfs.as_ref();
            let sha256 = lfs
                .and_then(|l| l.sha256.as_deref())
                .filter(|s| is_sha256_hex(s))
                .map(str::to_ascii_lowercase);
            let size = lfs.and_then(|l| l.size).or(sibling.size);
            RemoteFile {
                location: Location::Url(resolve_url(endpoint, repo, revision, &sibling.rfilename)),
                path: sibling.rfilename,
                size,
                sha256,
            }
        })
        .collect()
}

/// Lists `repo` at `revision`.
pub async fn list(
    client: &HttpClient,
    uri: &str,
    endpoint: &str,
    repo: &str,
    revision: &str,
) -> Result<Vec<RemoteFile>, FetchError> {
    let url = revision_url(endpoint, repo, revision);
    let listing = |reason: String| FetchError::Listing {
        uri: uri.to_string(),
        reason,
    };
    let response = client
        .get(&url)
        .send()
        .await
        .map_err(|e| listing(format!("{url}: {}", error_chain(&e))))?;
    let status = response.status();
    if !status.is_success() {
        // The hub says which of repository and revision is missing in X-Error-Message.
        let detail = response
            .headers()
            .get("x-error-message")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let detail = match detail {
            Some(d) => format!("HTTP {}: {d}", status.as_u16()),
            None => format!("HTTP {} from {url}", status.as_u16()),
        };
        return Err(match status.as_u16() {
            404 => FetchError::UnknownRevision {
                uri: uri.to_string(),
                revision: revision.to_string(),
                detail,
            },
            401 | 403 => listing(format!(
                "access denied ({detail}); for a gated or private repository set HF_TOKEN"
            )),
            _ => listing(detail),
        });
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| listing(format!("{url}: {}", error_chain(&e))))?;
    let info: RepoInfo = serde_json::from_slice(&body)
        .map_err(|e| listing(format!("{url}: unreadable listing: {e}")))?;
    if let Some(commit) = &info.sha
        && commit != revision
    {
        eprintln!("fetch: {uri} revision {revision} is commit {commit}");
    }
    Ok(files_from_listing(info, endpoint, repo, revision))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_follow_the_hub_layout() {
        assert_eq!(
            revision_url("https://hub.example/", "org/m", "refs/pr/1"),
            "https://hub.example/api/models/org/m/revision/refs%2Fpr%2F1?blobs=true"
        );
        assert_eq!(
            resolve_url(
                "https://hub.example",
                "org/m",
                "main",
                "onnx/model file.onnx"
            ),
            "https://hub.example/org/m/resolve/main/onnx/model%20file.onnx"
        );
    }

    #[test]
    fn listing_gives_sizes_and_lfs_checksums() -> Result<(), serde_json::Error> {
        let sha = "ab".repeat(32);
        let info: RepoInfo = serde_json::from_str(&format!(
            r#"{{"sha":"c0ffee","siblings":[
                {{"rfilename":"config.json","size":700}},
                {{"rfilename":"model.safetensors","size":1000,"lfs":{{"sha256":"{sha}","size":1000}}}},
                {{"rfilename":"README.md"}}
            ]}}"#
        ))?;
        let files = files_from_listing(info, "http://h", "org/m", "c0ffee");
        assert_eq!(files.len(), 3);
        assert_eq!(files[0].path, "config.json");
        assert_eq!(files[0].size, Some(700));
        assert_eq!(files[0].sha256, None);
        assert_eq!(files[1].sha256.as_deref(), Some(sha.as_str()));
        assert_eq!(
            files[1].location,
            Location::Url("http://h/org/m/resolve/c0ffee/model.safetensors".into())
        );
        assert_eq!(files[2].size, None);
        Ok(())
    }
}
