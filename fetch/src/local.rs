//! `file:///path` and `pvc://claim/path`: files already on a filesystem the pod can read.
//!
//! A `pvc://claim/path` source is read from `<pvc root>/<claim>/<path>`: the operator mounts
//! the claim read-only at `<pvc root>/<claim>` in the fetch container (`--pvc-root`, default
//! `/mnt/pvc`), and the fetcher copies and verifies the files like any other source.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::download::Opened;
use super::error::{FetchError, FileFailure};
use super::marker::{COMPLETE_MARKER, IN_PROGRESS_MARKER, PARTIAL_SUFFIX};
use super::plan::{Location, RemoteFile};

const CHUNK: usize = 1 << 20;
/// Deep enough for any model layout, shallow enough to stop a symlink loop.
const MAX_DEPTH: usize = 16;

/// Every file under `root` (or `root` itself if it is a file), sorted by path.
pub fn list(uri: &str, root: &Path) -> Result<Vec<RemoteFile>, FetchError> {
    let listing = |reason: String| FetchError::Listing {
        uri: uri.to_string(),
        reason,
    };
    let meta = std::fs::metadata(root).map_err(|e| listing(format!("{}: {e}", root.display())))?;
    if meta.is_file() {
        let name = root
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| listing(format!("{}: not a UTF-8 file name", root.display())))?;
        return Ok(vec![local_file(
            name.to_string(),
            root.to_path_buf(),
            meta.len(),
        )]);
    }
    let mut files = Vec::new();
    walk(root, "", 0, &mut files).map_err(listing)?;
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

fn walk(dir: &Path, prefix: &str, depth: usize, out: &mut Vec<RemoteFile>) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!(
            "{}: nested deeper than {MAX_DEPTH} directories",
            dir.display()
        ));
    }
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            return Err(format!("{}: not a UTF-8 file name", path.display()));
        };
        // A source that is itself a fetch destination: its bookkeeping is not model data.
        if name.starts_with(COMPLETE_MARKER)
            || name.starts_with(IN_PROGRESS_MARKER)
            || name.ends_with(PARTIAL_SUFFIX)
        {
            continue;
        }
        let relative = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        // Follows symlinks: a hub cache's snapshot links its files to blobs.
        let meta = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if meta.is_dir() {
            walk(&path, &relative, depth + 1, out)?;
        } else if meta.is_file() {
            out.push(local_file(relative, path, meta.len()));
        }
    }
    Ok(())
}

fn local_file(path: String, at: PathBuf, size: u64) -> RemoteFile {
    RemoteFile {
        path,
        size: Some(size),
        sha256: None,
        git_blob_sha1: None,
        location: Location::Local(at),
    }
}

/// Reads `path` from byte `offset`.
pub async fn open(path: &Path, offset: u64) -> Result<Opened, FileFailure> {
    let io = |e| FileFailure::io(path, e);
    let mut file = match tokio::fs::File::open(path).await {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(FileFailure::NotFound {
                location: path.display().to_string(),
            });
        }
        other => other.map_err(io)?,
    };
    let total = file.metadata().await.map_err(io)?.len();
    let start = offset.min(total);
    file.seek(std::io::SeekFrom::Start(start))
        .await
        .map_err(io)?;
    let owned = path.to_path_buf();
    let body = futures::stream::try_unfold(file, move |mut file| {
        let path = owned.clone();
        async move {
            let mut buf = vec![0; CHUNK];
            let n = file
                .read(&mut buf)
                .await
                .map_err(|e| FileFailure::io(path, e))?;
            if n == 0 {
                return Ok(None);
            }
            buf.truncate(n);
            Ok(Some((Bytes::from(buf), file)))
        }
    })
    .boxed();
    Ok(Opened {
        start,
        total: Some(total),
        sha256: None,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_a_tree_without_fetch_bookkeeping() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir(dir.path().join("sub"))?;
        std::fs::write(dir.path().join("config.json"), b"{}")?;
        std::fs::write(dir.path().join("sub/a.bin"), b"abc")?;
        std::fs::write(dir.path().join(COMPLETE_MARKER), b"{}")?;
        std::fs::write(dir.path().join(format!("b.bin{PARTIAL_SUFFIX}")), b"x")?;
        let files = list("file:///x", dir.path())?;
        let names: Vec<_> = files.iter().map(|f| (f.path.as_str(), f.size)).collect();
        assert_eq!(names, [("config.json", Some(2)), ("sub/a.bin", Some(3))]);

        let single = list("file:///x", &dir.path().join("sub/a.bin"))?;
        assert_eq!(single[0].path, "a.bin");
        assert!(list("file:///x", &dir.path().join("missing")).is_err());
        Ok(())
    }
}
