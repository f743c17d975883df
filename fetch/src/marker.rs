//! The files the fetcher keeps beside a model in its destination:
//!
//! - `.modelfleet-fetch-complete` is written last, once every file is in place and verified.
//!   It names the source and revision and lists the files. `serve` and probes read it to tell a
//!   complete fetch from a partial one (see [`is_complete`]).
//! - `.modelfleet-fetch-in-progress` names the source and revision a run is fetching. A later
//!   run for the same pair may trust the files that run already renamed into place; a run for
//!   another revision re-fetches whatever it cannot prove identical by checksum.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::FetchError;

pub const COMPLETE_MARKER: &str = ".modelfleet-fetch-complete";
pub const IN_PROGRESS_MARKER: &str = ".modelfleet-fetch-in-progress";
/// Suffix of a download that is not yet verified and renamed into place.
pub const PARTIAL_SUFFIX: &str = ".modelfleet-partial";

/// The pair a destination's files belong to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchIdentity {
    pub source: String,
    pub revision: String,
}

/// What `.modelfleet-fetch-complete` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompleteMarker {
    #[serde(flatten)]
    pub identity: FetchIdentity,
    /// The commit a hub revision resolved to (a branch or tag names one only for a while).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    pub files: Vec<MarkedFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkedFile {
    pub path: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

impl CompleteMarker {
    /// Whether every listed file is in `dest` with its recorded size.
    pub fn files_present(&self, dest: &Path) -> bool {
        self.files.iter().all(|f| {
            super::plan::safe_relative_path(&f.path)
                .and_then(|p| std::fs::metadata(dest.join(p)).ok())
                .is_some_and(|m| m.is_file() && m.len() == f.size)
        })
    }
}

/// The complete marker in `dest`, if there is a readable one.
pub fn read_complete(dest: &Path) -> Option<CompleteMarker> {
    let text = std::fs::read(dest.join(COMPLETE_MARKER)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// The identity a previous, unfinished run recorded in `dest`.
pub fn read_in_progress(dest: &Path) -> Option<FetchIdentity> {
    let text = std::fs::read(dest.join(IN_PROGRESS_MARKER)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Whether `dest` holds a complete fetch of `source` at `revision`: the check `serve` and
/// probes can make before loading.
pub fn is_complete(dest: &Path, source: &str, revision: &str) -> bool {
    read_complete(dest).is_some_and(|m| {
        m.identity.source == source && m.identity.revision == revision && m.files_present(dest)
    })
}

pub fn write_in_progress(dest: &Path, identity: &FetchIdentity) -> Result<(), FetchError> {
    write_atomically(dest, IN_PROGRESS_MARKER, identity)
}

pub fn write_complete(dest: &Path, marker: &CompleteMarker) -> Result<(), FetchError> {
    write_atomically(dest, COMPLETE_MARKER, marker)?;
    remove_if_present(&dest.join(IN_PROGRESS_MARKER))
}

pub fn remove_if_present(path: &Path) -> Result<(), FetchError> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(FetchError::destination(path, error))
        }
        _ => Ok(()),
    }
}

fn write_atomically(dest: &Path, name: &str, value: &impl Serialize) -> Result<(), FetchError> {
    let path = dest.join(name);
    let tmp = dest.join(format!("{name}.tmp"));
    let mut text = serde_json::to_vec_pretty(value).map_err(|e| {
        FetchError::destination(
            &path,
            std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        )
    })?;
    text.push(b'\n');
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&text)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|e| FetchError::destination(&path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(revision: &str) -> FetchIdentity {
        FetchIdentity {
            source: "hf://org/model".into(),
            revision: revision.into(),
        }
    }

    #[test]
    fn complete_only_for_the_same_source_revision_and_files()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("config.json"), b"{}")?;
        let marker = CompleteMarker {
            identity: identity("abc"),
            commit: None,
            files: vec![MarkedFile {
                path: "config.json".into(),
                size: 2,
                sha256: None,
            }],
        };
        assert!(!is_complete(dir.path(), "hf://org/model", "abc"));
        write_in_progress(dir.path(), &identity("abc"))?;
        assert_eq!(read_in_progress(dir.path()), Some(identity("abc")));
        write_complete(dir.path(), &marker)?;
        assert_eq!(read_in_progress(dir.path()), None);
        assert!(is_complete(dir.path(), "hf://org/model", "abc"));
        assert!(!is_complete(dir.path(), "hf://org/model", "def"));
        assert!(!is_complete(dir.path(), "hf://org/other", "abc"));
        std::fs::write(dir.path().join("config.json"), b"{ }")?;
        assert!(!is_complete(dir.path(), "hf://org/model", "abc"));
        Ok(())
    }
}
