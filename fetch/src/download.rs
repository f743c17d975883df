//! Downloading one file, whatever its source: into `<file>.modelfleet-partial` beside its final
//! name, resuming a partial one from where it stopped, hashing as bytes arrive, verifying size
//! and sha256, then renaming into place. A file whose final name exists is never half written.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use super::error::{FetchError, FileFailure};
use super::http::HttpClient;
use super::local;
use super::marker::{MarkedFile, PARTIAL_SUFFIX};
use super::plan::{Location, RemoteFile, git_blob_hasher, hex, safe_relative_path};
use super::progress::Progress;
use super::s3::S3Store;

const WRITE_BUFFER: usize = 1 << 20;

/// A transfer under way: the body from byte `start`, and what the response says of the file.
pub struct Opened {
    /// Where the body starts: the offset asked for, or 0 when the source sent it all.
    pub start: u64,
    /// The whole file's size, where the response gives it.
    pub total: Option<u64>,
    /// The file's sha256, where the response gives it.
    pub sha256: Option<String>,
    pub body: BoxStream<'static, Result<Bytes, FileFailure>>,
}

/// What reads files for one source.
#[derive(Debug)]
pub enum Transport {
    Http(HttpClient),
    Local,
    S3(S3Store),
}

impl Transport {
    async fn open(&self, file: &RemoteFile, offset: u64) -> Result<Opened, FileFailure> {
        match (self, &file.location) {
            (Self::Http(client), Location::Url(url)) => client.open(url, offset).await,
            (Self::Local, Location::Local(path)) => local::open(path, offset).await,
            (Self::S3(store), Location::Object { key, etag }) => {
                store.open(key, etag.as_deref(), offset).await
            }
            (_, location) => Err(FileFailure::Transfer(format!(
                "this source cannot read {location:?}"
            ))),
        }
    }
}

/// How one file ended up in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Downloaded (or finished downloading) now; `bytes` moved in this run.
    Fetched { bytes: u64 },
    /// Already in place and verified as far as the source allows.
    Skipped,
}

/// Settings shared by every file of one fetch.
pub struct Downloader<'a> {
    pub transport: &'a Transport,
    pub uri: &'a str,
    pub dest: &'a Path,
    /// Further attempts after a retriable failure; each resumes from what is on disk.
    pub retries: u32,
}

pub fn partial_path(target: &Path) -> PathBuf {
    let mut name = target.as_os_str().to_os_string();
    name.push(PARTIAL_SUFFIX);
    PathBuf::from(name)
}

/// Delay before retry `attempt` (1-based): 0.5 s doubling, at most 8 s.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(500u64 << attempt.saturating_sub(1).min(4))
}

impl Downloader<'_> {
    /// Puts `file` in place under the destination.
    ///
    /// Files already in place are trusted as far as the caller has made that safe (see
    /// `super::fetch`): a wrong size is re-fetched, and a known sha256 is checked.
    pub async fn fetch(&self, file: &RemoteFile) -> Result<(Outcome, MarkedFile), FetchError> {
        let error = |failure| FetchError::File {
            uri: self.uri.to_string(),
            file: file.path.clone(),
            failure,
        };
        let relative = safe_relative_path(&file.path).ok_or_else(|| FetchError::UnsafePath {
            uri: self.uri.to_string(),
            path: file.path.clone(),
        })?;
        let target = self.dest.join(relative);
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| FetchError::destination(parent, e))?;
        }
        if let Some(marked) = self.existing(file, &target).await.map_err(error)? {
            eprintln!("fetch: {} already complete, skipped", file.path);
            return Ok((Outcome::Skipped, marked));
        }
        let partial = partial_path(&target);
        let mut attempt = 0;
        let transferred = loop {
            match self.transfer(file, &partial).await {
                Ok(done) => break done,
                Err(failure) if failure.is_retriable() && attempt < self.retries => {
                    attempt += 1;
                    let delay = backoff(attempt);
                    eprintln!(
                        "fetch: {}: {failure}; retrying in {:.1}s (attempt {attempt} of {})",
                        file.path,
                        delay.as_secs_f64(),
                        self.retries
                    );
                    tokio::time::sleep(delay).await;
                }
                Err(failure) => return Err(error(failure)),
            }
        };
        tokio::fs::rename(&partial, &target)
            .await
            .map_err(|e| error(FileFailure::io(&target, e)))?;
        Ok((
            Outcome::Fetched {
                bytes: transferred.moved,
            },
            MarkedFile {
                path: file.path.clone(),
                size: transferred.size,
                sha256: Some(transferred.sha256),
            },
        ))
    }

    /// The file already at `target`, if it is the one wanted.
    async fn existing(
        &self,
        file: &RemoteFile,
        target: &Path,
    ) -> Result<Option<MarkedFile>, FileFailure> {
        let len = match tokio::fs::metadata(target).await {
            Ok(meta) if meta.is_file() => meta.len(),
            _ => return Ok(None),
        };
        let wanted = file.size.is_none_or(|size| size == len)
            && match (&file.sha256, &file.git_blob_sha1) {
                (Some(expected), _) => hash_prefix(target, len).await?.0 == *expected,
                (None, Some(expected)) => git_blob_id(target, len).await? == *expected,
                (None, None) => true,
            };
        if !wanted {
            remove_if_present(target).await?;
            return Ok(None);
        }
        Ok(Some(MarkedFile {
            path: file.path.clone(),
            size: len,
            sha256: file.sha256.clone(),
        }))
    }

    /// One attempt at getting the whole of `file` into `partial`, verified.
    async fn transfer(
        &self,
        file: &RemoteFile,
        partial: &Path,
    ) -> Result<Transferred, FileFailure> {
        let mut offset = match tokio::fs::metadata(partial).await {
            Ok(meta) => meta.len(),
            Err(_) => 0,
        };
        if file.size.is_some_and(|size| offset > size) {
            offset = 0;
        }
        // Every byte arrived but the run stopped before renaming: verify without a request.
        if offset > 0 && file.size == Some(offset) {
            let (actual, _) = hash_prefix(partial, offset).await?;
            let blob_matches = match &file.git_blob_sha1 {
                Some(expected) => git_blob_id(partial, offset).await? == *expected,
                None => true,
            };
            match &file.sha256 {
                Some(expected) if *expected != actual => offset = 0,
                _ if !blob_matches => offset = 0,
                _ => {
                    return Ok(Transferred {
                        size: offset,
                        sha256: actual,
                        moved: 0,
                    });
                }
            }
        }
        let mut opened = match self.transport.open(file, offset).await {
            // The partial is at least as long as the file the server now has: start over.
            Err(FileFailure::HttpStatus { status: 416, .. }) if offset > 0 => {
                offset = 0;
                self.transport.open(file, 0).await?
            }
            other => other?,
        };
        if opened.start != offset {
            if opened.start != 0 {
                return Err(FileFailure::Transfer(format!(
                    "asked for bytes from {offset}, got bytes from {}",
                    opened.start
                )));
            }
            // The source ignored the range and sent the whole file.
            offset = 0;
        }
        let expected_size = file.size.or(opened.total);
        let expected_sha = file.sha256.clone().or_else(|| opened.sha256.clone());

        let (_, mut hasher) = if offset > 0 {
            hash_prefix(partial, offset).await?
        } else {
            (String::new(), Sha256::new())
        };
        let io = |e| FileFailure::io(partial, e);
        let mut out = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(partial)
            .await
            .map_err(io)?;
        out.set_len(offset).await.map_err(io)?;
        out.seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(io)?;
        let mut out = tokio::io::BufWriter::with_capacity(WRITE_BUFFER, out);

        let mut progress = Progress::new(&file.path, expected_size, offset);
        let mut written = offset;
        while let Some(chunk) = opened.body.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(failure) => {
                    // Keep what arrived: the next attempt resumes after it.
                    out.flush().await.map_err(io)?;
                    return Err(failure);
                }
            };
            let len = chunk.len() as u64;
            if let Some(size) = expected_size
                && written + len > size
            {
                drop(out);
                remove_if_present(partial).await?;
                return Err(FileFailure::Size {
                    expected: size,
                    actual: written + len,
                });
            }
            out.write_all(&chunk).await.map_err(io)?;
            hasher.update(&chunk);
            written += len;
            progress.advance(len);
        }
        out.flush().await.map_err(io)?;
        out.get_ref().sync_all().await.map_err(io)?;
        drop(out);

        if let Some(size) = expected_size
            && written < size
        {
            return Err(FileFailure::Transfer(format!(
                "the transfer ended after {written} of {size} bytes"
            )));
        }
        let actual = hex(&hasher.finalize());
        if let Some(expected) = expected_sha
            && expected != actual
        {
            remove_if_present(partial).await?;
            return Err(FileFailure::Checksum { expected, actual });
        }
        if let Some(expected) = &file.git_blob_sha1 {
            // Plain files are small (configs, tokenizers): hashing them again costs little.
            let actual = git_blob_id(partial, written).await?;
            if *expected != actual {
                remove_if_present(partial).await?;
                return Err(FileFailure::GitBlob {
                    expected: expected.clone(),
                    actual,
                });
            }
        }
        progress.finish();
        Ok(Transferred {
            size: written,
            sha256: actual,
            moved: written - offset,
        })
    }
}

struct Transferred {
    size: u64,
    sha256: String,
    moved: u64,
}

/// The sha256 of the first `len` bytes of `path` (hex, and the hasher to carry on with).
async fn hash_prefix(path: &Path, len: u64) -> Result<(String, Sha256), FileFailure> {
    let owned = path.to_path_buf();
    let hashed = tokio::task::spawn_blocking(move || -> std::io::Result<(String, Sha256)> {
        use std::io::Read;
        let mut file = std::fs::File::open(&owned)?.take(len);
        let mut hasher = Sha256::new();
        let mut buf = vec![0; WRITE_BUFFER];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok((hex(&hasher.clone().finalize()), hasher))
    })
    .await
    .map_err(|e| FileFailure::Transfer(format!("hashing {}: {e}", path.display())))?;
    hashed.map_err(|e| FileFailure::io(path, e))
}

/// The git blob id of the first `len` bytes of `path`.
async fn git_blob_id(path: &Path, len: u64) -> Result<String, FileFailure> {
    let owned = path.to_path_buf();
    let hashed = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
        use sha1::Digest;
        use std::io::Read;
        let mut file = std::fs::File::open(&owned)?.take(len);
        let mut hasher = git_blob_hasher(len);
        let mut buf = vec![0; WRITE_BUFFER];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(hex(&hasher.finalize()))
    })
    .await
    .map_err(|e| FileFailure::Transfer(format!("hashing {}: {e}", path.display())))?;
    hashed.map_err(|e| FileFailure::io(path, e))
}

async fn remove_if_present(path: &Path) -> Result<(), FileFailure> {
    match tokio::fs::remove_file(path).await {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(FileFailure::io(path, e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_cap() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(5), Duration::from_secs(8));
        assert_eq!(backoff(50), Duration::from_secs(8));
    }

    #[tokio::test]
    async fn git_blob_ids_match_what_git_computes() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("f");
        std::fs::write(&path, b"hello world\n")?;
        // `printf 'hello world\n' | git hash-object --stdin`
        assert_eq!(
            git_blob_id(&path, 12).await?,
            "3b18e512dba79e4c8300dd08aeb37f8e728b8dad"
        );
        Ok(())
    }

    #[test]
    fn partial_names_sit_beside_the_final_name() {
        assert_eq!(
            partial_path(Path::new("/d/sub/model.safetensors")),
            PathBuf::from("/d/sub/model.safetensors.modelfleet-partial")
        );
    }
}
