//! The weight fetcher over real sockets: a hub-like HTTP server started here on 127.0.0.1
//! (listing, resolve with ETags and ranges, a corrupted file, a missing file, a transfer cut
//! short), plain HTTPS-style trees with a manifest, local directories, and a real
//! S3-compatible server (versitygw, provisioned by `make tools`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use clap::Parser;
use futures::StreamExt;
use modelfleet_fetch::marker::{COMPLETE_MARKER, IN_PROGRESS_MARKER, read_complete};
use modelfleet_fetch::{FetchArgs, FetchError, FetchSummary, fetch, is_complete};
use sha2::{Digest, Sha256};

type TestResult = Result<(), Box<dyn std::error::Error>>;

// ---------------------------------------------------------------------------------------------
// A small HTTP server: fixed responses by path, ranges, request log, cut-short transfers.

#[derive(Clone)]
struct Served {
    body: Vec<u8>,
    headers: Vec<(&'static str, String)>,
}

#[derive(Debug, Clone)]
struct Logged {
    path: String,
    range: Option<String>,
    authorization: Option<String>,
}

#[derive(Default)]
struct ServerState {
    files: Mutex<HashMap<String, Served>>,
    /// Path → bytes after which the next response for it is cut off (once).
    cut_after: Mutex<HashMap<String, usize>>,
    log: Mutex<Vec<Logged>>,
}

struct TestServer {
    addr: SocketAddr,
    state: Arc<ServerState>,
}

impl TestServer {
    async fn start() -> Result<Self, std::io::Error> {
        let state = Arc::new(ServerState::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = axum::Router::new()
            .fallback(serve_path)
            .with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, state })
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn put(&self, path: &str, body: Vec<u8>, headers: Vec<(&'static str, String)>) {
        lock(&self.state.files).insert(path.to_string(), Served { body, headers });
    }

    fn remove(&self, path: &str) {
        lock(&self.state.files).remove(path);
    }

    fn cut_next_response(&self, path: &str, after: usize) {
        lock(&self.state.cut_after).insert(path.to_string(), after);
    }

    fn requests(&self) -> Vec<Logged> {
        lock(&self.state.log).clone()
    }

    fn requests_for(&self, path: &str) -> Vec<Logged> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn serve_path(State(state): State<Arc<ServerState>>, request: Request) -> Response {
    let path = request.uri().path().to_string();
    let range = request
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    lock(&state.log).push(Logged {
        path: path.clone(),
        range: range.clone(),
        authorization,
    });
    let Some(served) = lock(&state.files).get(&path).cloned() else {
        return (
            StatusCode::NOT_FOUND,
            [("x-error-message", "Entry not found")],
            "not found",
        )
            .into_response();
    };
    let len = served.body.len();
    let start = match range.as_deref().map(parse_range) {
        None => None,
        Some(Some(start)) if start < len => Some(start),
        Some(_) => return StatusCode::RANGE_NOT_SATISFIABLE.into_response(),
    };
    let from = start.unwrap_or(0);
    let mut headers = HeaderMap::new();
    for (name, value) in &served.headers {
        if let Ok(value) = value.parse() {
            headers.insert(*name, value);
        }
    }
    headers.insert(header::ACCEPT_RANGES, "bytes".parse().expect("static"));
    headers.insert(header::CONTENT_LENGTH, (len - from).into());
    let status = match start {
        Some(start) => {
            let value = format!("bytes {start}-{}/{len}", len - 1);
            headers.insert(header::CONTENT_RANGE, value.parse().expect("ascii"));
            StatusCode::PARTIAL_CONTENT
        }
        None => StatusCode::OK,
    };
    let rest = served.body[from..].to_vec();
    let cut = lock(&state.cut_after).remove(&path);
    let body = match cut {
        // Send part of the body slowly, then drop the connection mid-transfer.
        Some(after) => {
            let first = rest[..after.min(rest.len())].to_vec();
            let stream = futures::stream::iter([Ok::<_, std::io::Error>(first)]).chain(
                futures::stream::once(async {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Err(std::io::Error::other("connection cut by the test server"))
                }),
            );
            Body::from_stream(stream)
        }
        None => Body::from(rest),
    };
    (status, headers, body).into_response()
}

/// `bytes=N-` → N.
fn parse_range(value: &str) -> Option<usize> {
    value
        .strip_prefix("bytes=")?
        .strip_suffix('-')?
        .parse()
        .ok()
}

// ---------------------------------------------------------------------------------------------
// A hub-like repository on the test server.

struct HubFile {
    name: &'static str,
    body: Vec<u8>,
    /// Stored in LFS: the listing and the resolve response carry its sha256.
    lfs: bool,
    /// What the server sends instead of `body` (same length), to corrupt a transfer.
    served: Option<Vec<u8>>,
}

fn file(name: &'static str, body: Vec<u8>) -> HubFile {
    HubFile {
        name,
        body,
        lfs: false,
        served: None,
    }
}

fn lfs(name: &'static str, body: Vec<u8>) -> HubFile {
    HubFile {
        lfs: true,
        ..file(name, body)
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Deterministic bytes that differ by `seed`.
fn bytes(len: usize, seed: u8) -> Vec<u8> {
    let mut state = u64::from(seed).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// The git blob id of `content`, as git and the hub compute it.
fn git_blob_id(content: &[u8]) -> String {
    let mut hasher = sha1::Sha1::new();
    hasher.update(format!("blob {}\0", content.len()).as_bytes());
    hasher.update(content);
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The commit the test hub resolves `revision` to: itself if it is a commit id, else a
/// commit id derived from the name.
fn commit_of(revision: &str) -> String {
    if revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit()) {
        revision.to_string()
    } else {
        git_blob_id(revision.as_bytes())
    }
}

/// Where a file of `revision` is downloaded from: the commit the revision resolves to.
fn resolve_path(repo: &str, revision: &str, name: &str) -> String {
    format!("/{repo}/resolve/{}/{name}", commit_of(revision))
}

/// Serves `files` as `repo` at `revision`: the listing API (resolving the revision to its
/// commit) and `resolve/` downloads at that commit.
fn publish(server: &TestServer, repo: &str, revision: &str, files: &[HubFile]) {
    let siblings: Vec<serde_json::Value> = files
        .iter()
        .map(|f| {
            let mut entry = serde_json::json!({ "rfilename": f.name, "size": f.body.len() });
            if f.lfs {
                let pointer = format!(
                    "version https://git-lfs.github.com/spec/v1\noid sha256:{}\nsize {}\n",
                    sha256_hex(&f.body),
                    f.body.len()
                );
                entry["blobId"] = git_blob_id(pointer.as_bytes()).into();
                entry["lfs"] = serde_json::json!({
                    "sha256": sha256_hex(&f.body),
                    "size": f.body.len(),
                    "pointerSize": pointer.len()
                });
            } else {
                entry["blobId"] = git_blob_id(&f.body).into();
            }
            entry
        })
        .collect();
    let listing =
        serde_json::json!({ "id": repo, "sha": commit_of(revision), "siblings": siblings });
    server.put(
        &format!("/api/models/{repo}/revision/{revision}"),
        listing.to_string().into_bytes(),
        vec![("content-type", "application/json".into())],
    );
    for f in files {
        let headers = if f.lfs {
            let etag = format!("\"{}\"", sha256_hex(&f.body));
            vec![("x-linked-etag", etag.clone()), ("etag", etag)]
        } else {
            // The git blob id, as the hub sends for small files: not a sha256.
            vec![("etag", format!("\"{}\"", git_blob_id(&f.body)))]
        };
        let body = f.served.clone().unwrap_or_else(|| f.body.clone());
        server.put(&resolve_path(repo, revision, f.name), body, headers);
    }
}

fn tiny_model() -> Vec<HubFile> {
    vec![
        file(
            "config.json",
            br#"{"model_type":"llama","hidden_size":64}"#.to_vec(),
        ),
        file("tokenizer.json", bytes(5_000, 1)),
        file("tokenizer_config.json", bytes(700, 2)),
        lfs("model.safetensors", bytes(3 << 20, 3)),
        file("README.md", b"# tiny".to_vec()),
        lfs("pytorch_model.bin", bytes(1000, 4)),
    ]
}

const FETCHED_BY_DEFAULT: [&str; 4] = [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
];

// ---------------------------------------------------------------------------------------------
// Running the fetcher as the command line would.

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    fetch: FetchArgs,
}

fn args(source: &str, revision: &str, dest: &Path, extra: &[&str]) -> FetchArgs {
    let dest = dest.display().to_string();
    let mut argv = vec![
        "fetch",
        "--source",
        source,
        "--revision",
        revision,
        "--dest",
        &dest,
    ];
    argv.extend_from_slice(extra);
    Cli::try_parse_from(&argv)
        .unwrap_or_else(|e| panic!("{argv:?} is not a valid command line: {e}"))
        .fetch
}

fn hub_args(server: &TestServer, revision: &str, dest: &Path, extra: &[&str]) -> FetchArgs {
    let endpoint = server.url();
    let mut all = vec!["--hf-endpoint", endpoint.as_str()];
    if !extra.contains(&"--retries") {
        // Failures show at once unless a test asks for retries.
        all.extend(["--retries", "0"]);
    }
    all.extend_from_slice(extra);
    args("hf://acme/tiny", revision, dest, &all)
}

fn assert_same_files(dest: &Path, files: &[HubFile], names: &[&str]) -> TestResult {
    for name in names {
        let expected = files
            .iter()
            .find(|f| f.name == *name)
            .ok_or_else(|| format!("no test file {name}"))?;
        let actual = std::fs::read(dest.join(name))?;
        assert!(actual == expected.body, "{name}: content differs");
    }
    Ok(())
}

fn leftovers(dest: &Path) -> Result<Vec<String>, std::io::Error> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dest)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.ends_with(".modelfleet-partial") {
            names.push(name);
        }
    }
    Ok(names)
}

// ---------------------------------------------------------------------------------------------
// hf://

#[tokio::test]
async fn hub_fetch_takes_the_default_files_verified_and_marks_the_fetch_complete() -> TestResult {
    let server = TestServer::start().await?;
    let files = tiny_model();
    publish(&server, "acme/tiny", "c0ffee", &files);
    let dest = tempfile::tempdir()?;

    let summary = fetch(&hub_args(
        &server,
        "c0ffee",
        dest.path(),
        &["--hf-token", "hf_test"],
    ))
    .await?;

    assert_eq!(summary.fetched, FETCHED_BY_DEFAULT);
    assert_eq!(summary.skipped, Vec::<String>::new());
    let requests = server.requests();
    assert_eq!(requests.len(), 1 + FETCHED_BY_DEFAULT.len(), "{requests:?}");
    assert!(
        requests
            .iter()
            .all(|r| r.authorization.as_deref() == Some("Bearer hf_test")),
        "{requests:?}"
    );
    assert_same_files(dest.path(), &files, &FETCHED_BY_DEFAULT)?;
    assert!(!dest.path().join("README.md").exists());
    assert!(!dest.path().join("pytorch_model.bin").exists());
    assert!(is_complete(dest.path(), "hf://acme/tiny", "c0ffee"));
    assert!(!is_complete(dest.path(), "hf://acme/tiny", "other"));
    assert!(!dest.path().join(IN_PROGRESS_MARKER).exists());
    let marker = read_complete(dest.path()).ok_or("no complete marker")?;
    let model = marker
        .files
        .iter()
        .find(|f| f.path == "model.safetensors")
        .ok_or("model not in the marker")?;
    assert_eq!(model.size, 3 << 20);
    assert_eq!(
        model.sha256.as_deref(),
        Some(sha256_hex(&files[3].body).as_str())
    );
    assert_eq!(leftovers(dest.path())?, Vec::<String>::new());
    Ok(())
}

#[tokio::test]
async fn hub_include_globs_pick_the_files() -> TestResult {
    let server = TestServer::start().await?;
    let files = tiny_model();
    publish(&server, "acme/tiny", "main", &files);
    let dest = tempfile::tempdir()?;

    let summary = fetch(&hub_args(
        &server,
        "main",
        dest.path(),
        &["--include", "*.md", "--include", "config.json"],
    ))
    .await?;

    assert_eq!(summary.fetched, ["README.md", "config.json"]);
    assert!(!dest.path().join("model.safetensors").exists());
    Ok(())
}

#[tokio::test]
async fn rerun_of_a_complete_fetch_makes_no_request() -> TestResult {
    let server = TestServer::start().await?;
    publish(&server, "acme/tiny", "c0ffee", &tiny_model());
    let dest = tempfile::tempdir()?;
    fetch(&hub_args(&server, "c0ffee", dest.path(), &[])).await?;
    let before = server.requests().len();

    let summary = fetch(&hub_args(&server, "c0ffee", dest.path(), &[])).await?;

    assert!(summary.already_complete);
    assert_eq!(summary.fetched, Vec::<String>::new());
    assert_eq!(summary.skipped, FETCHED_BY_DEFAULT);
    assert_eq!(server.requests().len(), before, "{:?}", server.requests());
    Ok(())
}

#[tokio::test]
async fn a_missing_file_fails_naming_it_and_a_rerun_fetches_only_what_is_missing() -> TestResult {
    let server = TestServer::start().await?;
    let mut files = tiny_model();
    files.push(lfs("model-extra.safetensors", bytes(1000, 9)));
    publish(&server, "acme/tiny", "c0ffee", &files);
    let extra = resolve_path("acme/tiny", "c0ffee", "model-extra.safetensors");
    server.remove(&extra);
    let dest = tempfile::tempdir()?;

    // One file at a time, in listing order: the others are in place when the last one fails.
    let error = fetch(&hub_args(&server, "c0ffee", dest.path(), &["--jobs", "1"]))
        .await
        .expect_err("a listed file the server does not have");

    let message = error.to_string();
    assert!(matches!(error, FetchError::File { .. }), "{message}");
    for part in [
        "hf://acme/tiny",
        "model-extra.safetensors",
        "not found",
        &extra,
    ] {
        assert!(
            message.contains(part),
            "{message:?} should contain {part:?}"
        );
    }
    assert!(!dest.path().join("model-extra.safetensors").exists());
    assert!(!dest.path().join(COMPLETE_MARKER).exists());
    assert!(!is_complete(dest.path(), "hf://acme/tiny", "c0ffee"));

    publish(&server, "acme/tiny", "c0ffee", &files);
    let before = server.requests().len();
    let summary = fetch(&hub_args(&server, "c0ffee", dest.path(), &[])).await?;

    assert_eq!(summary.fetched, ["model-extra.safetensors"]);
    assert_eq!(summary.skipped, FETCHED_BY_DEFAULT);
    let downloads: Vec<_> = server.requests()[before..]
        .iter()
        .filter(|r| r.path.contains("/resolve/"))
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(downloads, [extra]);
    assert!(is_complete(dest.path(), "hf://acme/tiny", "c0ffee"));
    Ok(())
}

#[tokio::test]
async fn an_interrupted_transfer_resumes_with_a_range_request() -> TestResult {
    let server = TestServer::start().await?;
    let files = tiny_model();
    publish(&server, "acme/tiny", "c0ffee", &files);
    let model = resolve_path("acme/tiny", "c0ffee", "model.safetensors");
    server.cut_next_response(&model, 1 << 20);
    let dest = tempfile::tempdir()?;

    let error = fetch(&hub_args(&server, "c0ffee", dest.path(), &[]))
        .await
        .expect_err("the transfer was cut and no retry was allowed");
    let message = error.to_string();
    assert!(message.contains("model.safetensors"), "{message}");
    assert!(message.contains("transfer failed"), "{message}");
    let partial = dest.path().join("model.safetensors.modelfleet-partial");
    let kept = std::fs::metadata(&partial)?.len();
    assert!(
        kept > 0 && kept <= 1 << 20,
        "partial download has {kept} bytes"
    );
    assert!(!dest.path().join("model.safetensors").exists());

    let summary = fetch(&hub_args(&server, "c0ffee", dest.path(), &[])).await?;

    let model_requests = server.requests_for(&model);
    assert_eq!(model_requests.len(), 2, "{model_requests:?}");
    assert_eq!(model_requests[0].range, None);
    assert_eq!(model_requests[1].range, Some(format!("bytes={kept}-")));
    assert!(summary.fetched.contains(&"model.safetensors".to_string()));
    // The resumed run moved only the rest of the model (plus the small files it redid).
    let small: u64 = files
        .iter()
        .filter(|f| FETCHED_BY_DEFAULT.contains(&f.name) && f.name != "model.safetensors")
        .map(|f| f.body.len() as u64)
        .sum();
    assert!(summary.bytes <= (3 << 20) - kept + small, "{summary:?}");
    assert_same_files(dest.path(), &files, &FETCHED_BY_DEFAULT)?;
    assert!(!partial.exists());
    assert!(is_complete(dest.path(), "hf://acme/tiny", "c0ffee"));
    Ok(())
}

#[tokio::test]
async fn a_partial_download_that_has_every_byte_is_verified_without_a_request() -> TestResult {
    let server = TestServer::start().await?;
    let files = tiny_model();
    publish(&server, "acme/tiny", "c0ffee", &files);
    let model = resolve_path("acme/tiny", "c0ffee", "model.safetensors");
    let partial_of = |dest: &Path, body: &[u8]| -> TestResult {
        std::fs::write(dest.join("model.safetensors.modelfleet-partial"), body)?;
        marker_in_progress(dest, "hf://acme/tiny", "c0ffee")
    };

    // What a run leaves when it stops between the last byte and the rename.
    let dest = tempfile::tempdir()?;
    partial_of(dest.path(), &files[3].body)?;
    let summary = fetch(&hub_args(&server, "c0ffee", dest.path(), &[])).await?;
    assert!(
        server.requests_for(&model).is_empty(),
        "{:?}",
        server.requests()
    );
    assert_eq!(summary.fetched, FETCHED_BY_DEFAULT);
    assert_same_files(dest.path(), &files, &FETCHED_BY_DEFAULT)?;
    assert_eq!(leftovers(dest.path())?, Vec::<String>::new());

    // The right length but other bytes: the checksum catches it and the file is fetched anew.
    let dest = tempfile::tempdir()?;
    partial_of(dest.path(), &vec![0; files[3].body.len()])?;
    fetch(&hub_args(&server, "c0ffee", dest.path(), &[])).await?;
    let requests = server.requests_for(&model);
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].range, None);
    assert_same_files(dest.path(), &files, &FETCHED_BY_DEFAULT)?;
    Ok(())
}

#[tokio::test]
async fn a_cut_transfer_is_retried_and_resumed_within_one_run() -> TestResult {
    let server = TestServer::start().await?;
    let files = tiny_model();
    publish(&server, "acme/tiny", "c0ffee", &files);
    let model = resolve_path("acme/tiny", "c0ffee", "model.safetensors");
    server.cut_next_response(&model, 1 << 20);
    let dest = tempfile::tempdir()?;

    fetch(&hub_args(
        &server,
        "c0ffee",
        dest.path(),
        &["--retries", "2"],
    ))
    .await?;

    let model_requests = server.requests_for(&model);
    assert_eq!(model_requests.len(), 2, "{model_requests:?}");
    let resumed_at = model_requests[1]
        .range
        .as_deref()
        .and_then(parse_range)
        .ok_or("the retry did not ask for a range")?;
    assert!(resumed_at > 0);
    assert_same_files(dest.path(), &files, &FETCHED_BY_DEFAULT)?;
    Ok(())
}

#[tokio::test]
async fn a_checksum_mismatch_fails_clearly_and_leaves_no_file() -> TestResult {
    let server = TestServer::start().await?;
    let mut files = tiny_model();
    let mut corrupted = files[3].body.clone();
    corrupted[1000] ^= 0xff;
    files[3].served = Some(corrupted.clone());
    publish(&server, "acme/tiny", "c0ffee", &files);
    let dest = tempfile::tempdir()?;

    let error = fetch(&hub_args(&server, "c0ffee", dest.path(), &[]))
        .await
        .expect_err("the served bytes do not match the listed sha256");

    let message = error.to_string();
    for part in [
        "hf://acme/tiny",
        "model.safetensors",
        "checksum mismatch",
        &sha256_hex(&files[3].body),
        &sha256_hex(&corrupted),
    ] {
        assert!(
            message.contains(part),
            "{message:?} should contain {part:?}"
        );
    }
    assert!(!dest.path().join("model.safetensors").exists());
    assert_eq!(leftovers(dest.path())?, Vec::<String>::new());
    assert!(!dest.path().join(COMPLETE_MARKER).exists());
    Ok(())
}

#[tokio::test]
async fn an_unknown_revision_fails_naming_it() -> TestResult {
    let server = TestServer::start().await?;
    publish(&server, "acme/tiny", "c0ffee", &tiny_model());
    let dest = tempfile::tempdir()?;

    let error = fetch(&hub_args(&server, "deadbeef", dest.path(), &[]))
        .await
        .expect_err("no such revision");

    let message = error.to_string();
    assert!(
        matches!(error, FetchError::UnknownRevision { .. }),
        "{message}"
    );
    assert!(message.contains("deadbeef"), "{message}");
    assert!(message.contains("hf://acme/tiny"), "{message}");
    assert!(message.contains("404"), "{message}");
    Ok(())
}

#[tokio::test]
async fn a_branch_is_downloaded_at_the_commit_it_resolves_to_and_the_commit_recorded() -> TestResult
{
    let server = TestServer::start().await?;
    let files = tiny_model();
    publish(&server, "acme/tiny", "main", &files);
    // The branch moves on after it was listed: what `resolve/main/` serves now differs.
    for f in &files {
        let mut moved = f.body.clone();
        moved.reverse();
        server.put(
            &format!("/acme/tiny/resolve/main/{}", f.name),
            moved,
            Vec::new(),
        );
    }
    let dest = tempfile::tempdir()?;

    let summary = fetch(&hub_args(&server, "main", dest.path(), &[])).await?;

    let commit = commit_of("main");
    assert_eq!(summary.commit.as_deref(), Some(commit.as_str()));
    assert_same_files(dest.path(), &files, &FETCHED_BY_DEFAULT)?;
    let downloads: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/resolve/"))
        .collect();
    assert!(!downloads.is_empty());
    for request in &downloads {
        assert!(
            request
                .path
                .starts_with(&format!("/acme/tiny/resolve/{commit}/")),
            "downloaded from {}",
            request.path
        );
    }
    let marker = read_complete(dest.path()).ok_or("no complete marker")?;
    assert_eq!(marker.identity.revision, "main");
    assert_eq!(marker.commit.as_deref(), Some(commit.as_str()));
    let text = std::fs::read_to_string(dest.path().join(COMPLETE_MARKER))?;
    assert!(text.contains(&commit), "{text}");
    Ok(())
}

#[tokio::test]
async fn a_plain_file_corrupted_in_transit_fails_its_git_blob_check() -> TestResult {
    let server = TestServer::start().await?;
    let mut files = tiny_model();
    let config = &mut files[0];
    assert!(!config.lfs);
    let mut corrupted = config.body.clone();
    corrupted[2] ^= 0x20;
    config.served = Some(corrupted.clone());
    let expected = git_blob_id(&config.body);
    publish(&server, "acme/tiny", "c0ffee", &files);
    let dest = tempfile::tempdir()?;

    let error = fetch(&hub_args(&server, "c0ffee", dest.path(), &[]))
        .await
        .expect_err("a corrupted plain file");

    let message = error.to_string();
    for part in [
        "config.json",
        "expected git blob",
        &expected,
        &git_blob_id(&corrupted),
    ] {
        assert!(
            message.contains(part),
            "{message:?} should contain {part:?}"
        );
    }
    assert!(!dest.path().join("config.json").exists());
    assert!(!dest.path().join(COMPLETE_MARKER).exists());
    Ok(())
}

#[tokio::test]
async fn a_new_revision_refetches_what_changed_and_drops_what_is_gone() -> TestResult {
    let server = TestServer::start().await?;
    let model = bytes(3 << 20, 3);
    let r1 = vec![
        file(
            "config.json",
            br#"{"hidden_size":64,"rope_theta":1}"#.to_vec(),
        ),
        lfs("model.safetensors", model.clone()),
        lfs("old.safetensors", bytes(100, 5)),
    ];
    // Same name, same size, other bytes, and no checksum in the listing: only the revision
    // says it changed.
    let r2 = vec![
        file(
            "config.json",
            br#"{"hidden_size":64,"rope_theta":2}"#.to_vec(),
        ),
        lfs("model.safetensors", model),
    ];
    publish(&server, "acme/tiny", "r1", &r1);
    publish(&server, "acme/tiny", "r2", &r2);
    let dest = tempfile::tempdir()?;
    fetch(&hub_args(&server, "r1", dest.path(), &[])).await?;

    let summary = fetch(&hub_args(&server, "r2", dest.path(), &[])).await?;

    assert_eq!(summary.fetched, ["config.json"]);
    assert_eq!(summary.skipped, ["model.safetensors"]);
    assert_same_files(dest.path(), &r2, &["config.json", "model.safetensors"])?;
    assert!(!dest.path().join("old.safetensors").exists());
    assert!(
        server
            .requests_for(&resolve_path("acme/tiny", "r2", "model.safetensors"))
            .is_empty()
    );
    assert!(is_complete(dest.path(), "hf://acme/tiny", "r2"));
    assert!(!is_complete(dest.path(), "hf://acme/tiny", "r1"));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// https:// (here over plain http on the loopback)

#[tokio::test]
async fn http_manifest_lists_files_with_sizes_and_checksums() -> TestResult {
    let server = TestServer::start().await?;
    let config = br#"{"model_type":"qwen2"}"#.to_vec();
    let weights = bytes(1 << 20, 7);
    let manifest = serde_json::json!({
        "revision": "2026-11-01",
        "files": [
            { "path": "config.json", "size": config.len(), "sha256": sha256_hex(&config) },
            { "path": "weights/model.safetensors", "size": weights.len(), "sha256": sha256_hex(&weights) },
        ]
    });
    server.put(
        "/models/tiny/modelfleet-manifest.json",
        manifest.to_string().into_bytes(),
        vec![],
    );
    server.put("/models/tiny/config.json", config.clone(), vec![]);
    server.put(
        "/models/tiny/weights/model.safetensors",
        weights.clone(),
        vec![],
    );
    let source = format!("{}/models/tiny", server.url());
    let dest = tempfile::tempdir()?;

    let summary = fetch(&args(&source, "2026-11-01", dest.path(), &[])).await?;

    assert_eq!(
        summary.fetched,
        ["config.json", "weights/model.safetensors"]
    );
    assert_eq!(std::fs::read(dest.path().join("config.json"))?, config);
    assert_eq!(
        std::fs::read(dest.path().join("weights/model.safetensors"))?,
        weights
    );
    assert!(is_complete(dest.path(), &source, "2026-11-01"));

    // The manifest pins its revision: another one is refused, naming both.
    let other = tempfile::tempdir()?;
    let error = fetch(&args(&source, "2026-12-01", other.path(), &[]))
        .await
        .expect_err("the manifest is at another revision");
    let message = error.to_string();
    assert!(
        matches!(error, FetchError::UnknownRevision { .. }),
        "{message}"
    );
    assert!(
        message.contains("2026-11-01") && message.contains("2026-12-01"),
        "{message}"
    );

    // A manifest naming one path twice would have two downloads write one file.
    let twice =
        serde_json::json!({ "files": [{ "path": "config.json" }, { "path": "config.json" }] });
    server.put(
        "/models/twice/modelfleet-manifest.json",
        twice.to_string().into_bytes(),
        vec![],
    );
    let source = format!("{}/models/twice", server.url());
    let error = fetch(&args(&source, "v1", tempfile::tempdir()?.path(), &[]))
        .await
        .expect_err("a path listed twice");
    assert!(
        error
            .to_string()
            .contains("'config.json' is listed more than once"),
        "{error}"
    );
    Ok(())
}

#[tokio::test]
async fn http_file_list_without_a_manifest() -> TestResult {
    let server = TestServer::start().await?;
    let model = bytes(10_000, 8);
    server.put("/m/model.gguf", model.clone(), vec![]);
    let source = format!("{}/m", server.url());
    let dest = tempfile::tempdir()?;

    let summary = fetch(&args(
        &source,
        "v1",
        dest.path(),
        &["--files", "model.gguf"],
    ))
    .await?;

    assert_eq!(summary.fetched, ["model.gguf"]);
    assert_eq!(std::fs::read(dest.path().join("model.gguf"))?, model);
    assert!(
        server
            .requests_for("/m/modelfleet-manifest.json")
            .is_empty()
    );

    let error = fetch(&args(&source, "v1", tempfile::tempdir()?.path(), &[]))
        .await
        .expect_err("no manifest and no --files");
    assert!(error.to_string().contains("--files"), "{error}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// file:// and pvc://

#[tokio::test]
async fn local_directory_file_and_claim_sources_are_copied() -> TestResult {
    let source = tempfile::tempdir()?;
    let model_dir = source.path().join("models/tiny");
    std::fs::create_dir_all(model_dir.join("sub"))?;
    let weights = bytes(2 << 20, 11);
    std::fs::write(model_dir.join("config.json"), b"{}")?;
    std::fs::write(model_dir.join("sub/model.safetensors"), &weights)?;

    let dest = tempfile::tempdir()?;
    let uri = format!("file://{}", model_dir.display());
    let summary = fetch(&args(&uri, "v1", dest.path(), &[])).await?;
    assert_eq!(summary.fetched, ["config.json", "sub/model.safetensors"]);
    assert_eq!(
        std::fs::read(dest.path().join("sub/model.safetensors"))?,
        weights
    );
    assert!(is_complete(dest.path(), &uri, "v1"));

    let single = tempfile::tempdir()?;
    let uri = format!(
        "file://{}",
        model_dir.join("sub/model.safetensors").display()
    );
    let summary = fetch(&args(&uri, "v1", single.path(), &[])).await?;
    assert_eq!(summary.fetched, ["model.safetensors"]);

    // pvc://claim/path reads <pvc root>/claim/path.
    let claim_dest = tempfile::tempdir()?;
    let root = source.path().display().to_string();
    let summary = fetch(&args(
        "pvc://models/tiny",
        "v1",
        claim_dest.path(),
        &["--pvc-root", &root],
    ))
    .await?;
    assert_eq!(summary.fetched, ["config.json", "sub/model.safetensors"]);

    let error = fetch(&args(
        "pvc://absent/tiny",
        "v1",
        tempfile::tempdir()?.path(),
        &["--pvc-root", &root],
    ))
    .await
    .expect_err("no such claim directory");
    assert!(error.to_string().contains("pvc://absent/tiny"), "{error}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// s3:// against a real S3-compatible server

/// versitygw over a temporary directory, on a free loopback port; stopped on drop.
struct S3Server {
    child: Child,
    endpoint: String,
    _root: tempfile::TempDir,
}

const S3_ACCESS_KEY: &str = "modelfleet-test";
const S3_SECRET_KEY: &str = "modelfleet-test-secret";

impl S3Server {
    fn binary() -> Result<PathBuf, String> {
        let bin_dir = std::env::var_os("MODELFLEET_TOOLS_BIN")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("MODELFLEET_CACHE").map(|c| PathBuf::from(c).join("bin")))
            .or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/modelfleet/bin"))
            })
            .ok_or("neither MODELFLEET_TOOLS_BIN, MODELFLEET_CACHE nor HOME is set")?;
        let binary = bin_dir.join("versitygw");
        if binary.is_file() {
            Ok(binary)
        } else {
            Err(format!(
                "the S3-compatible test server is not provisioned: {} does not exist; run `make tools` (or `scripts/tools.sh s3`)",
                binary.display()
            ))
        }
    }

    async fn start(buckets: &[&str]) -> Result<Self, Box<dyn std::error::Error>> {
        let binary = Self::binary()?;
        modelfleet_fetch::http::install_crypto_provider();
        let root = tempfile::tempdir()?;
        let data = root.path().join("data");
        let sidecar = root.path().join("meta");
        for dir in [&data, &sidecar] {
            std::fs::create_dir_all(dir)?;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new(&binary)
            .args(["--port", &format!("127.0.0.1:{port}")])
            .args([
                "--access",
                S3_ACCESS_KEY,
                "--secret",
                S3_SECRET_KEY,
                "--quiet",
            ])
            .arg("posix")
            .arg("--sidecar")
            .arg(&sidecar)
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", binary.display()))?;
        let server = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            _root: root,
        };
        let mut up = false;
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if !up {
            return Err(format!("versitygw did not listen on 127.0.0.1:{port} within 10 s").into());
        }
        for bucket in buckets {
            server.create_bucket(bucket).await?;
        }
        Ok(server)
    }

    fn store(&self, bucket: &str) -> Result<object_store::aws::AmazonS3, object_store::Error> {
        object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_bucket_name(bucket)
            .with_access_key_id(S3_ACCESS_KEY)
            .with_secret_access_key(S3_SECRET_KEY)
            .build()
    }

    /// CreateBucket through the S3 API (object_store has no call for it): a signed PUT.
    async fn create_bucket(&self, bucket: &str) -> TestResult {
        use object_store::signer::Signer;
        let store = self.store(bucket)?;
        let url = store
            .signed_url(
                reqwest::Method::PUT,
                &object_store::path::Path::from(""),
                Duration::from_secs(60),
            )
            .await?;
        let response = reqwest::Client::new().put(url).send().await?;
        if !response.status().is_success() {
            return Err(format!(
                "CreateBucket {bucket}: HTTP {}: {}",
                response.status(),
                response.text().await.unwrap_or_default()
            )
            .into());
        }
        Ok(())
    }

    fn args(&self, uri: &str, revision: &str, dest: &Path) -> FetchArgs {
        args(
            uri,
            revision,
            dest,
            &[
                "--s3-endpoint",
                &self.endpoint,
                "--s3-region",
                "us-east-1",
                "--s3-access-key-id",
                S3_ACCESS_KEY,
                "--s3-secret-access-key",
                S3_SECRET_KEY,
                "--s3-allow-http",
                "--retries",
                "0",
            ],
        )
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn s3_prefix_is_fetched_from_a_real_s3_server() -> TestResult {
    use object_store::ObjectStoreExt;
    let s3 = S3Server::start(&["weights"]).await?;
    let store = s3.store("weights")?;
    let config = br#"{"model_type":"mistral"}"#.to_vec();
    let model = bytes(3 << 20, 13);
    let objects = [
        ("llama/tiny/config.json", config.clone()),
        ("llama/tiny/model.safetensors", model.clone()),
        ("llama/tiny/extra/tokenizer.json", bytes(4000, 14)),
        ("llama/other/config.json", b"{}".to_vec()),
    ];
    for (key, body) in &objects {
        store
            .put(&object_store::path::Path::from(*key), body.clone().into())
            .await?;
    }
    let dest = tempfile::tempdir()?;
    let uri = "s3://weights/llama/tiny";

    let summary = fetch(&s3.args(uri, "v1", dest.path())).await?;

    assert_eq!(
        summary.fetched,
        ["config.json", "extra/tokenizer.json", "model.safetensors"]
    );
    assert_eq!(std::fs::read(dest.path().join("config.json"))?, config);
    assert_eq!(std::fs::read(dest.path().join("model.safetensors"))?, model);
    assert!(!dest.path().join("other").exists());
    assert!(is_complete(dest.path(), uri, "v1"));
    let again: FetchSummary = fetch(&s3.args(uri, "v1", dest.path())).await?;
    assert!(again.already_complete);

    // A partial download left by an interrupted run is resumed with a ranged read.
    let resumed = tempfile::tempdir()?;
    std::fs::write(
        resumed.path().join("model.safetensors.modelfleet-partial"),
        &model[..1 << 20],
    )?;
    marker_in_progress(resumed.path(), uri, "v1")?;
    let summary = fetch(&s3.args(uri, "v1", resumed.path())).await?;
    assert_eq!(
        std::fs::read(resumed.path().join("model.safetensors"))?,
        model
    );
    let others = (config.len() + 4000) as u64;
    assert_eq!(summary.bytes, (model.len() - (1 << 20)) as u64 + others);

    let error = fetch(&s3.args("s3://weights/absent", "v1", tempfile::tempdir()?.path()))
        .await
        .expect_err("nothing under the prefix");
    assert!(matches!(error, FetchError::NoFiles { .. }), "{error}");
    assert!(error.to_string().contains("s3://weights/absent"), "{error}");
    Ok(())
}

/// What an interrupted run of the same source and revision leaves behind.
fn marker_in_progress(dest: &Path, source: &str, revision: &str) -> TestResult {
    let text = serde_json::json!({ "source": source, "revision": revision });
    std::fs::write(dest.join(IN_PROGRESS_MARKER), text.to_string())?;
    Ok(())
}
