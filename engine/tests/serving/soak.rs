//! The soak (`make soak`, not part of `make test`): one engine under a bounded run of mixed
//! clients (valid requests on both APIs, invalid ones, cancelled streams, slow readers and
//! clients that never read), then the checks that nothing leaked: every KV block and every
//! slot back, nothing queued or running, and resident memory flat. The figures are printed.
//!
//! `SOAK_SECONDS` sets the length of the run (default 120).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use modelfleet_contract::metrics::{
    self, KV_CACHE_USAGE_RATIO as KV_USAGE, OUTCOME, QUEUE_DEPTH, REQUESTS,
    RUNNING_REQUESTS as RUNNING, SLOTS_IN_USE,
};
use modelfleet_proto::v1 as pb;
use modelfleet_proto::v1::generation_client::GenerationClient;
use serde_json::json;
use tonic::transport::Endpoint;

use crate::support::{JsonBody as _, Server, collect_stream, greedy_request, http_client};

/// The KV cache: 64 blocks of 16 tokens.
const NUM_BLOCKS: usize = 64;

/// Longest any one soak request may take before it counts as hung.
const REQUEST_DEADLINE: Duration = Duration::from_secs(90);

/// Client-side outcomes, by client kind and outcome.
#[derive(Default, Clone)]
struct Tally(Arc<Mutex<BTreeMap<String, u64>>>);

impl Tally {
    fn count(&self, kind: &str, outcome: &str) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(format!("{kind}: {outcome}"))
            .or_default() += 1;
    }

    fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

fn grpc_outcome(status: &tonic::Status) -> &'static str {
    match status.code() {
        tonic::Code::ResourceExhausted => "refused (busy)",
        tonic::Code::InvalidArgument => "invalid",
        _ => "UNEXPECTED",
    }
}

fn http_outcome(status: u16) -> &'static str {
    match status {
        200 => "served",
        400 => "invalid",
        429 => "refused (busy)",
        _ => "UNEXPECTED",
    }
}

/// Resident memory of `pid` in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Whether clients of `kind` run: all of them, unless `SOAK_CLIENTS` (comma-separated kinds)
/// picks some, to find which one a leak comes from.
fn chosen(kind: &str) -> bool {
    std::env::var("SOAK_CLIENTS").map_or(true, |kinds| kinds.split(',').any(|k| k.trim() == kind))
}

/// Runs `one` until `until`, each call within the request deadline, `pause` between
/// calls (if its kind is chosen).
fn worker<F, Fut>(
    kind: &'static str,
    until: Instant,
    tally: Tally,
    pause: Duration,
    mut one: F,
) -> tokio::task::JoinHandle<()>
where
    F: FnMut(u64) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = &'static str> + Send,
{
    let chosen = chosen(kind);
    tokio::spawn(async move {
        let mut i = 0;
        while chosen && Instant::now() < until {
            tokio::time::sleep(pause).await;
            i += 1;
            let outcome = tokio::time::timeout(REQUEST_DEADLINE, one(i))
                .await
                .unwrap_or("HUNG");
            tally.count(kind, outcome);
        }
    })
}

#[tokio::test]
#[ignore = "the soak runs with `make soak`"]
async fn soak_mixed_clients_leave_no_blocks_slots_or_memory_behind() {
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    // Fewer slots than clients, so some requests are refused as busy too.
    let server = Server::ready(&[
        "--max-num-seqs",
        "4",
        "--max-queued-requests",
        "2",
        "--num-blocks",
        &NUM_BLOCKS.to_string(),
        "--write-timeout-seconds",
        "3",
    ])
    .await;
    let pid = server.pid();
    let rss_start = rss_mib(pid);
    println!("soak: {seconds}s against one engine, pid {pid}");
    let channel = server.channel().await;
    // The KV cache is allocated up front but its pages are mapped only when first written:
    // fill every block once, so that resident memory from here on measures leaks, not
    // first touches.
    let fill: Vec<_> = (0..6)
        .map(|i| {
            let mut client = GenerationClient::new(channel.clone());
            let prompt = format!("Fill {i}: {}", "many words ".repeat(70));
            tokio::spawn(async move {
                let stream = client.generate(greedy_request(&prompt, 16, true)).await?;
                collect_stream(stream.into_inner()).await
            })
        })
        .collect();
    for request in fill {
        request.await.expect("task").expect("fill request");
    }
    let rss_filled = rss_mib(pid);
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let tally = Tally::default();
    let grpc_url = format!("http://127.0.0.1:{}", server.grpc_port);
    let mut workers = Vec::new();

    // Valid streaming requests on gRPC, read to the end.
    for w in 0..2 {
        let client = GenerationClient::new(channel.clone());
        workers.push(worker(
            "grpc valid",
            until,
            tally.clone(),
            Duration::ZERO,
            move |i| {
                let mut client = client.clone();
                async move {
                    let request =
                        greedy_request(&format!("Story {w}-{i}:"), 8 + (i % 24) as u32, true);
                    match client.generate(request).await {
                        Ok(stream) => match collect_stream(stream.into_inner()).await {
                            Ok(_) => "served",
                            Err(_) => "UNEXPECTED",
                        },
                        Err(status) => grpc_outcome(&status),
                    }
                }
            },
        ));
    }
    // Valid HTTP requests: completions and chat, whole and streamed.
    let http_url = server.http_url("");
    workers.push(worker(
        "http valid",
        until,
        tally.clone(),
        Duration::ZERO,
        move |i| {
            let base = http_url.clone();
            async move {
                let (path, body) = if i % 2 == 0 {
                    (
                        "/v1/completions",
                        json!({"prompt": format!("Item {i}:"), "max_tokens": 12,
                                           "stream": i % 4 == 0}),
                    )
                } else {
                    (
                        "/v1/chat/completions",
                        json!({"messages": [{"role": "user",
                    "content": format!("Say {i}")}], "max_tokens": 12, "stream": i % 4 == 1}),
                    )
                };
                match http_client()
                    .post(format!("{base}{path}"))
                    .json_body(&body)
                    .send()
                    .await
                {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        match response.text().await {
                            Ok(text) if status != 200 || !text.contains("\"error\"") => {
                                http_outcome(status)
                            }
                            _ => "UNEXPECTED",
                        }
                    }
                    Err(_) => "UNEXPECTED",
                }
            }
        },
    ));
    // Invalid requests of every kind.
    let http_url = server.http_url("");
    let client = GenerationClient::new(channel.clone());
    workers.push(worker(
        "invalid",
        until,
        tally.clone(),
        Duration::from_millis(20),
        move |i| {
            let base = http_url.clone();
            let mut client = client.clone();
            async move {
                match i % 5 {
                    0 => {
                        let mut request = greedy_request("Hello", 4, false);
                        request.sampling = Some(pb::SamplingParams {
                            top_p: Some(7.0),
                            ..pb::SamplingParams::default()
                        });
                        client
                            .generate(request)
                            .await
                            .map_or_else(|s| grpc_outcome(&s), |_| "UNEXPECTED")
                    }
                    1 => client
                        .generate(greedy_request(&"word ".repeat(9000), 4, false))
                        .await
                        .map_or_else(|s| grpc_outcome(&s), |_| "UNEXPECTED"),
                    n => {
                        let body = match n {
                            2 => "{not json".to_string(),
                            3 => json!({"prompt": "x", "logit_bias": {"42": 100}}).to_string(),
                            _ => json!({"prompt": "x", "temperature": "hot"}).to_string(),
                        };
                        match http_client()
                            .post(format!("{base}/v1/completions"))
                            .header("content-type", "application/json")
                            .body(body)
                            .send()
                            .await
                        {
                            Ok(response) => http_outcome(response.status().as_u16()),
                            Err(_) => "UNEXPECTED",
                        }
                    }
                }
            }
        },
    ));
    // Streams cancelled after a few tokens.
    let client = GenerationClient::new(channel.clone());
    workers.push(worker(
        "cancelled",
        until,
        tally.clone(),
        Duration::ZERO,
        move |i| {
            let mut client = client.clone();
            async move {
                match client
                    .generate(greedy_request(&format!("Tale {i}:"), 500, true))
                    .await
                {
                    Ok(stream) => {
                        let mut stream = stream.into_inner();
                        for _ in 0..(1 + i % 4) {
                            if stream.message().await.is_err() {
                                return "UNEXPECTED";
                            }
                        }
                        "cancelled"
                    }
                    Err(status) => grpc_outcome(&status),
                }
            }
        },
    ));
    // A slow reader: a message every 200 ms, to the end.
    let client = GenerationClient::new(channel.clone());
    workers.push(worker(
        "slow reader",
        until,
        tally.clone(),
        Duration::ZERO,
        move |i| {
            let mut client = client.clone();
            async move {
                match client
                    .generate(greedy_request(&format!("Poem {i}:"), 16, true))
                    .await
                {
                    Ok(stream) => {
                        let mut stream = stream.into_inner();
                        loop {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            match stream.message().await {
                                Ok(Some(_)) => {}
                                Ok(None) => return "served",
                                Err(_) => return "UNEXPECTED",
                            }
                        }
                    }
                    Err(status) => grpc_outcome(&status),
                }
            }
        },
    ));
    // A client that never reads, on a connection with a small window, and gives up later.
    workers.push(worker(
        "never reads",
        until,
        tally.clone(),
        Duration::ZERO,
        move |i| {
            let url = grpc_url.clone();
            async move {
                let Ok(endpoint) = Endpoint::from_shared(url) else {
                    return "UNEXPECTED";
                };
                let Ok(channel) = endpoint.initial_stream_window_size(256).connect().await else {
                    return "UNEXPECTED";
                };
                let request = greedy_request(&format!("Saga {i}:"), 900, true);
                match GenerationClient::new(channel).generate(request).await {
                    Ok(stream) => {
                        tokio::time::sleep(Duration::from_secs(6)).await;
                        drop(stream);
                        "abandoned"
                    }
                    Err(status) => grpc_outcome(&status),
                }
            }
        },
    ));
    // Tokenize, admitted like the rest.
    let client = GenerationClient::new(channel.clone());
    workers.push(worker(
        "tokenize",
        until,
        tally.clone(),
        Duration::from_millis(20),
        move |i| {
            let mut client = client.clone();
            async move {
                let request = pb::TokenizeRequest {
                    text: format!("Count {i} tokens"),
                };
                match client.tokenize(request).await {
                    Ok(_) => "served",
                    Err(status) => grpc_outcome(&status),
                }
            }
        },
    ));

    // Resident memory while it runs; the first quarter is warm-up.
    let mut rss_series = Vec::new();
    let mut rss_warm = None;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(5)).await;
        rss_series.push(rss_mib(pid));
        if rss_warm.is_none() && started.elapsed() >= Duration::from_secs(seconds / 4) {
            rss_warm = rss_series.last().copied();
        }
    }
    for w in workers {
        w.await.expect("worker");
    }
    // Nothing left behind once the clients are gone.
    server.wait_metric(SLOTS_IN_USE, |v| v == 0.0).await;
    server.wait_metric(KV_USAGE, |v| v == 0.0).await;
    server.wait_metric(RUNNING, |v| v == 0.0).await;
    server.wait_metric(QUEUE_DEPTH, |v| v == 0.0).await;
    let rss_end = rss_mib(pid);
    let rss_warm = rss_warm.unwrap_or(rss_start);
    let rss_peak = rss_series.iter().copied().fold(rss_end, f64::max);

    let outcomes = tally.snapshot();
    println!("soak: after {seconds}s:");
    for (what, n) in &outcomes {
        println!("  {what:<32} {n:>7}");
    }
    for outcome in [
        "stop",
        "length",
        "cancelled",
        "rejected",
        "invalid",
        "unavailable",
        "failed",
    ] {
        let series = metrics::series(REQUESTS, &[(OUTCOME, outcome)]);
        println!("  server {outcome:<25} {:>7}", server.metric(&series).await);
    }
    println!(
        "  after: slots in use {}, KV cache usage {}, running {}, queue depth {}",
        server.metric(SLOTS_IN_USE).await,
        server.metric(KV_USAGE).await,
        server.metric(RUNNING).await,
        server.metric(QUEUE_DEPTH).await
    );
    println!(
        "  RSS MiB: start {rss_start:.1}, KV cache filled {rss_filled:.1}, warm {rss_warm:.1}, \
         peak {rss_peak:.1}, end {rss_end:.1} \
         (samples every 5s: {})",
        rss_series
            .iter()
            .map(|v| format!("{v:.0}"))
            .collect::<Vec<_>>()
            .join(" ")
    );

    let unexpected: Vec<_> = outcomes
        .iter()
        .filter(|(what, _)| what.ends_with("UNEXPECTED") || what.ends_with("HUNG"))
        .collect();
    assert!(unexpected.is_empty(), "unexpected outcomes: {unexpected:?}");
    for kind in ["grpc valid", "http valid", "slow reader", "tokenize"] {
        assert!(
            !chosen(kind)
                || outcomes
                    .get(&format!("{kind}: served"))
                    .is_some_and(|&n| n > 0),
            "no {kind} request was served: {outcomes:?}"
        );
    }
    // Flat: after warm-up, memory does not keep growing with the requests served.
    assert!(
        rss_end <= rss_warm * 1.05 + 8.0,
        "resident memory grew from {rss_warm:.1} MiB to {rss_end:.1} MiB"
    );
}
