//! `modelfleet-engine fetch`: the pod's init container. It puts a model's files, at a pinned
//! revision, into a directory before `serve` starts.
//!
//! Sources: `file:///path`, `https://host/path` (see [`https`] for the manifest),
//! `hf://org/name` (see [`hub`]), `s3://bucket/prefix` (see [`s3`]), `pvc://claim/path` (see
//! [`local`]).
//!
//! A run lists the source's files, then downloads them in parallel, each to a temporary name
//! beside its final one, resuming partial downloads, verifying size and sha256 where the
//! source gives them, and renaming into place. It writes `.modelfleet-fetch-complete` (source,
//! revision and files) last; [`marker::is_complete`] is the check for `serve` and probes. A
//! re-run of a complete fetch does nothing; a re-run of an interrupted one keeps what is done;
//! a run for another revision re-fetches every file it cannot prove identical by checksum.

pub mod download;
pub mod error;
pub mod http;
pub mod https;
pub mod hub;
pub mod local;
pub mod marker;
pub mod plan;
pub mod progress;
pub mod s3;
pub mod source;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use futures::{StreamExt, TryStreamExt};

pub use error::{FetchError, FileFailure};
pub use marker::is_complete;
pub use source::Source;

use download::{Downloader, Outcome, Transport, partial_path};
use marker::{CompleteMarker, FetchIdentity};
use plan::{DEFAULT_HUB_INCLUDE, RemoteFile, included, safe_relative_path};
use progress::human_bytes;

/// `modelfleet-engine fetch`.
#[derive(Debug, Clone, clap::Args)]
pub struct FetchArgs {
    /// Where the model is: file:///path, https://host/path, hf://org/name, s3://bucket/prefix
    /// or pvc://claim/path.
    #[arg(long)]
    pub source: String,
    /// The model's pinned revision: a hub commit, branch or tag; the manifest's `revision`
    /// for https://; a label recorded in the completion marker for the other sources.
    #[arg(long)]
    pub revision: String,
    /// Directory to put the files in (created if missing).
    #[arg(long)]
    pub dest: PathBuf,
    /// Only files matching these globs (repeatable; `*` stays within a directory, `**`
    /// crosses them). Default for hf://: config.json, generation_config.json,
    /// tokenizer*.json, *.safetensors, *.safetensors.index.json, *.gguf; for the other
    /// sources: every file.
    #[arg(long = "include", value_name = "GLOB")]
    pub include: Vec<String>,
    /// For https:// without a manifest: the files to fetch, relative to the source URL.
    #[arg(long, value_delimiter = ',', value_name = "PATH")]
    pub files: Vec<String>,
    /// Files downloaded at once.
    #[arg(long, default_value_t = 4)]
    pub jobs: usize,
    /// Further attempts after a failed transfer; each resumes where the last one stopped.
    #[arg(long, default_value_t = 3)]
    pub retries: u32,
    /// Base URL of the Hugging Face hub for hf:// sources.
    #[arg(long, env = "HF_ENDPOINT", default_value = "https://huggingface.co")]
    pub hf_endpoint: String,
    /// Token for gated or private hub repositories.
    #[arg(long, env = "HF_TOKEN", hide_env_values = true)]
    pub hf_token: Option<String>,
    /// Endpoint of an S3-compatible server (path-style requests).
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub s3_endpoint: Option<String>,
    #[arg(long, env = "AWS_REGION")]
    pub s3_region: Option<String>,
    #[arg(long, env = "AWS_ACCESS_KEY_ID", hide_env_values = true)]
    pub s3_access_key_id: Option<String>,
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<String>,
    #[arg(long, env = "AWS_SESSION_TOKEN", hide_env_values = true)]
    pub s3_session_token: Option<String>,
    /// Allow a plain http:// S3 endpoint (a local S3-compatible server).
    #[arg(long)]
    pub s3_allow_http: bool,
    /// Where the pod mounts claims for pvc:// sources: pvc://claim/path reads
    /// `<root>/claim/path`.
    #[arg(long, default_value = "/mnt/pvc")]
    pub pvc_root: PathBuf,
}

/// What a fetch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchSummary {
    /// The destination already held a complete fetch of this source and revision.
    pub already_complete: bool,
    /// Files downloaded in this run.
    pub fetched: Vec<String>,
    /// Files that were already in place.
    pub skipped: Vec<String>,
    /// Bytes downloaded in this run.
    pub bytes: u64,
    /// The commit a hub revision resolved to, which every file was downloaded at.
    pub commit: Option<String>,
}

/// Runs a fetch to completion on its own runtime (for `main`).
pub fn run(args: FetchArgs) -> Result<FetchSummary, FetchError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.jobs.clamp(1, 4))
        .enable_all()
        .build()
        .map_err(FetchError::Runtime)?;
    runtime.block_on(fetch(&args))
}

/// Fetches `args.source` at `args.revision` into `args.dest`.
pub async fn fetch(args: &FetchArgs) -> Result<FetchSummary, FetchError> {
    let uri = args.source.as_str();
    let source = Source::parse(uri)?;
    let dest = args.dest.as_path();
    std::fs::create_dir_all(dest).map_err(|e| FetchError::destination(dest, e))?;
    let identity = FetchIdentity {
        source: args.source.clone(),
        revision: args.revision.clone(),
    };

    let previous_complete = marker::read_complete(dest);
    if let Some(done) = &previous_complete
        && done.identity == identity
        && done.files_present(dest)
    {
        eprintln!(
            "fetch: {} already holds {uri} at revision {} ({} files); nothing to do",
            dest.display(),
            args.revision,
            done.files.len()
        );
        return Ok(FetchSummary {
            already_complete: true,
            skipped: done.files.iter().map(|f| f.path.clone()).collect(),
            commit: done.commit.clone(),
            ..FetchSummary::default()
        });
    }

    let Plan {
        transport,
        files,
        commit,
    } = plan(args, &source).await?;
    eprintln!(
        "fetch: {uri} at revision {}{}: {} files{} into {}",
        args.revision,
        commit
            .as_ref()
            .map_or_else(String::new, |c| format!(" (commit {c})")),
        files.len(),
        match files.iter().map(|f| f.size).sum::<Option<u64>>() {
            Some(total) => format!(", {}", human_bytes(total)),
            None => String::new(),
        },
        dest.display()
    );

    // From here on the destination changes: it is no longer a complete fetch of anything.
    marker::remove_if_present(&dest.join(marker::COMPLETE_MARKER))?;
    let previous = marker::read_in_progress(dest)
        .or_else(|| previous_complete.as_ref().map(|m| m.identity.clone()));
    if previous.as_ref() != Some(&identity) {
        forget_other_revision(dest, &files, previous_complete.as_ref())?;
    }
    marker::write_in_progress(dest, &identity)?;

    let started = Instant::now();
    let downloader = Downloader {
        transport: &transport,
        uri,
        dest,
        retries: args.retries,
    };
    let results: Vec<_> = futures::stream::iter(files.iter().map(|f| downloader.fetch(f)))
        .buffer_unordered(args.jobs.max(1))
        .try_collect()
        .await?;

    let mut summary = FetchSummary {
        commit: commit.clone(),
        ..FetchSummary::default()
    };
    let mut marked = Vec::with_capacity(results.len());
    for (outcome, file) in results {
        match outcome {
            Outcome::Fetched { bytes } => {
                summary.bytes += bytes;
                summary.fetched.push(file.path.clone());
            }
            Outcome::Skipped => summary.skipped.push(file.path.clone()),
        }
        marked.push(file);
    }
    marked.sort_by(|a, b| a.path.cmp(&b.path));
    summary.fetched.sort();
    summary.skipped.sort();
    marker::write_complete(
        dest,
        &CompleteMarker {
            identity,
            commit,
            files: marked,
        },
    )?;
    eprintln!(
        "fetch: complete: {} fetched ({}), {} already in place, in {:.1}s",
        summary.fetched.len(),
        human_bytes(summary.bytes),
        summary.skipped.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(summary)
}

/// What a fetch will do: read these files through this transport.
struct Plan {
    transport: Transport,
    files: Vec<RemoteFile>,
    /// The commit a hub revision resolved to.
    commit: Option<String>,
}

/// The transport for `source` and the files to fetch, filtered and checked.
async fn plan(args: &FetchArgs, source: &Source) -> Result<Plan, FetchError> {
    let uri = args.source.as_str();
    // The hub token goes to the hub only, never to an arbitrary https:// host.
    let http = |token: Option<String>, denied_hint| {
        http::HttpClient::new(token, denied_hint).map_err(|reason| FetchError::InvalidSource {
            uri: uri.to_string(),
            reason: format!("cannot set up HTTP: {reason}"),
        })
    };
    let mut include = args.include.clone();
    let mut commit = None;
    let (transport, files) = match source {
        Source::File { path } => (Transport::Local, local::list(uri, path)?),
        Source::Pvc { claim, path } => {
            let root = args.pvc_root.join(claim).join(path);
            (Transport::Local, local::list(uri, &root)?)
        }
        Source::Http { base } => {
            let client = http(None, "")?;
            let files = if args.files.is_empty() {
                https::list(&client, uri, base, &args.revision).await?
            } else {
                https::files_from_list(&args.files, base)
            };
            (Transport::Http(client), files)
        }
        Source::Hub { repo } => {
            if include.is_empty() {
                include = DEFAULT_HUB_INCLUDE.iter().map(|s| s.to_string()).collect();
            }
            let hint = match args.hf_token {
                Some(_) => " (the token in HF_TOKEN does not grant access)",
                None => " (for a gated or private repository, set HF_TOKEN)",
            };
            let client = http(args.hf_token.clone(), hint)?;
            let listing = hub::list(&client, uri, &args.hf_endpoint, repo, &args.revision).await?;
            commit = Some(listing.commit);
            (Transport::Http(client), listing.files)
        }
        Source::S3 { bucket, prefix } => {
            let store = s3::S3Store::new(
                uri,
                bucket,
                &s3::S3Options {
                    endpoint: args.s3_endpoint.clone(),
                    region: args.s3_region.clone(),
                    access_key_id: args.s3_access_key_id.clone(),
                    secret_access_key: args.s3_secret_access_key.clone(),
                    session_token: args.s3_session_token.clone(),
                    allow_http: args.s3_allow_http,
                },
            )?;
            let files = store.list(uri, prefix).await?;
            (Transport::S3(store), files)
        }
    };
    let files: Vec<RemoteFile> = files
        .into_iter()
        .filter(|f| included(&f.path, &include))
        .collect();
    if let Some(bad) = files.iter().find(|f| safe_relative_path(&f.path).is_none()) {
        return Err(FetchError::UnsafePath {
            uri: uri.to_string(),
            path: bad.path.clone(),
        });
    }
    let mut seen = HashSet::new();
    if let Some(twice) = files.iter().find(|f| !seen.insert(f.path.as_str())) {
        return Err(FetchError::Listing {
            uri: uri.to_string(),
            reason: format!("'{}' is listed more than once", twice.path),
        });
    }
    if files.is_empty() {
        return Err(FetchError::NoFiles {
            uri: uri.to_string(),
            patterns: if include.is_empty() {
                "every file".to_string()
            } else {
                include.join(", ")
            },
        });
    }
    Ok(Plan {
        transport,
        files,
        commit,
    })
}

/// Before fetching a new source or revision: drops partial downloads, files whose content
/// cannot be checked by checksum (the same name may hold other bytes now), and files the
/// previous complete fetch had that the new one does not.
fn forget_other_revision(
    dest: &Path,
    files: &[RemoteFile],
    previous: Option<&CompleteMarker>,
) -> Result<(), FetchError> {
    let mut wanted = HashSet::new();
    for file in files {
        let Some(relative) = safe_relative_path(&file.path) else {
            continue;
        };
        let target = dest.join(&relative);
        marker::remove_if_present(&partial_path(&target))?;
        if file.sha256.is_none() {
            marker::remove_if_present(&target)?;
        }
        wanted.insert(file.path.as_str());
    }
    for old in previous.map(|m| m.files.as_slice()).unwrap_or_default() {
        if !wanted.contains(old.path.as_str())
            && let Some(relative) = safe_relative_path(&old.path)
        {
            marker::remove_if_present(&dest.join(relative))?;
        }
    }
    Ok(())
}
