//! `hf://org/name`: a repository on a Hugging Face hub (or any server with its layout).
//!
//! - listing: `GET {endpoint}/api/models/{org}/{name}/revision/{revision}?blobs=true`, whose
//!   `sha` is the commit the revision resolves to and whose `siblings` give each file's
//!   name, size, git blob id and, for LFS files, sha256;
//! - download: `GET {endpoint}/{org}/{name}/resolve/{commit}/{file}`, at the commit the
//!   listing resolved (a branch may move between listing and download), whose
//!   `X-Linked-Etag` or `ETag` is the sha256 for LFS files.
//!
//! Every file is verified: LFS files by their sha256, the others by their git blob id.

use serde::Deserialize;

use super::error::FetchError;
use super::http::{HttpClient, error_chain};
use super::plan::{
    Location, RemoteFile, encode_path, encode_segment, is_git_object_id, is_sha256_hex,
};

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
    /// The git blob id: of the content for plain files, of the pointer for LFS files.
    #[serde(default, rename = "blobId")]
    pub blob_id: Option<String>,
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

/// The files of a listing at `commit`, with the sizes and checksums it gives.
pub fn files_from_listing(
    info: RepoInfo,
    endpoint: &str,
    repo: &str,
    commit: &str,
) -> Vec<RemoteFile> {
    info.siblings
        .into_iter()
        .map(|sibling| {
            let lfs = sibling.lfs.as_ref();
            let sha256 = lfs
                .and_then(|l| l.sha256.as_deref())
                .filter(|s| is_sha256_hex(s))
                .map(str::to_ascii_lowercase);
            // An LFS file's blob id is its pointer's, not its content's.
            let git_blob_sha1 = match lfs {
                Some(_) => None,
                None => sibling
                    .blob_id
                    .as_deref()
                    .filter(|id| is_git_object_id(id))
                    .map(str::to_ascii_lowercase),
            };
            let size = lfs.and_then(|l| l.size).or(sibling.size);
            RemoteFile {
                location: Location::Url(resolve_url(endpoint, repo, commit, &sibling.rfilename)),
                path: sibling.rfilename,
                size,
                sha256,
                git_blob_sha1,
            }
        })
        .collect()
}

/// A repository's files at one commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The commit the revision resolved to; every file is downloaded at it.
    pub commit: String,
    pub files: Vec<RemoteFile>,
}

/// Lists `repo` at `revision`.
pub async fn list(
    client: &HttpClient,
    uri: &str,
    endpoint: &str,
    repo: &str,
    revision: &str,
) -> Result<Listing, FetchError> {
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
    let commit = resolved_commit(info.sha.as_deref(), revision).map_err(listing)?;
    if commit != revision {
        eprintln!("fetch: {uri} revision {revision} is commit {commit}");
    }
    Ok(Listing {
        files: files_from_listing(info, endpoint, repo, &commit),
        commit,
    })
}

/// The commit a listing for `revision` says it resolved to. A revision that is itself a
/// commit must resolve to itself; a listing without a commit pins nothing, so only a
/// commit may be fetched from it.
pub fn resolved_commit(listed: Option<&str>, revision: &str) -> Result<String, String> {
    match listed {
        Some(commit) if is_git_object_id(commit) => {
            if is_git_object_id(revision) && !commit.eq_ignore_ascii_case(revision) {
                return Err(format!(
                    "the hub resolved commit {revision} to another commit, {commit}"
                ));
            }
            Ok(commit.to_ascii_lowercase())
        }
        Some(other) => Err(format!(
            "the listing's commit '{other}' is not a git commit id"
        )),
        None if is_git_object_id(revision) => Ok(revision.to_ascii_lowercase()),
        None => Err(format!(
            "the listing does not say which commit revision '{revision}' is; pin a commit"
        )),
    }
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
    fn listing_gives_sizes_and_checksums_for_lfs_and_plain_files() -> Result<(), serde_json::Error>
    {
        let sha = "ab".repeat(32);
        let blob = "cd".repeat(20);
        let pointer = "ef".repeat(20);
        let info: RepoInfo = serde_json::from_str(&format!(
            r#"{{"sha":"c0ffee","siblings":[
                {{"rfilename":"config.json","size":700,"blobId":"{blob}"}},
                {{"rfilename":"model.safetensors","size":134,"blobId":"{pointer}",
                  "lfs":{{"sha256":"{sha}","size":1000}}}},
                {{"rfilename":"README.md"}}
            ]}}"#
        ))?;
        let files = files_from_listing(info, "http://h", "org/m", "c0ffee");
        assert_eq!(files.len(), 3);
        assert_eq!(files[0].path, "config.json");
        assert_eq!(files[0].size, Some(700));
        assert_eq!(files[0].sha256, None);
        assert_eq!(files[0].git_blob_sha1.as_deref(), Some(blob.as_str()));
        assert_eq!(files[1].sha256.as_deref(), Some(sha.as_str()));
        assert_eq!(files[1].size, Some(1000));
        assert_eq!(
            files[1].git_blob_sha1, None,
            "a pointer's blob id is not the content's"
        );
        assert_eq!(
            files[1].location,
            Location::Url("http://h/org/m/resolve/c0ffee/model.safetensors".into())
        );
        assert_eq!(files[2].size, None);
        Ok(())
    }

    #[test]
    fn a_revision_resolves_to_the_listings_commit() {
        let commit = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(resolved_commit(Some(commit), "main"), Ok(commit.into()));
        assert_eq!(resolved_commit(Some(commit), commit), Ok(commit.into()));
        assert_eq!(resolved_commit(None, commit), Ok(commit.into()));
        assert!(resolved_commit(None, "main").is_err());
        assert!(resolved_commit(Some("c0ffee"), "main").is_err());
        let other = "f".repeat(40);
        assert!(resolved_commit(Some(commit), &other).is_err());
    }
}
