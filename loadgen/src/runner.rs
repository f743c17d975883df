//! Drives a run: issues requests by the arrival schedule, spreads them over the targets
//! round-robin, records each one, and builds the report.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::config::{Arrival, LoadConfig};
use super::error::LoadgenError;
use super::live::LiveStats;
use super::prompt::prompt_text;
use super::record::{Completion, Failure, Outcome, RequestRecord, TokenTimer};
use super::report::Report;
use super::schedule::PoissonSchedule;
use super::target::{Client, Target, TargetSet};

/// After a request that found no engine to connect to, a closed-loop client waits this long
/// before its next one instead of spinning on refused connections.
const UNREACHABLE_PAUSE: Duration = Duration::from_millis(100);

/// A load run, ready to start. Create it, take [`LoadGenerator::live`] if something should
/// watch the run and [`LoadGenerator::targets`] if its targets will change, then
/// [`LoadGenerator::run`] it.
#[derive(Debug)]
pub struct LoadGenerator {
    config: LoadConfig,
    initial_targets: Vec<Target>,
    targets: TargetSet,
    live: Arc<LiveStats>,
}

impl LoadGenerator {
    /// Checks the settings; connects nothing yet.
    pub fn new(config: LoadConfig, targets: Vec<Target>) -> Result<Self, LoadgenError> {
        config.validate()?;
        if targets.is_empty() {
            return Err(LoadgenError::NoTargets);
        }
        Ok(Self {
            config,
            targets: TargetSet::new(targets.clone()),
            initial_targets: targets,
            live: Arc::new(LiveStats::new()),
        })
    }

    /// The run's targets, shared: replace them while it runs to follow a fleet's pods.
    pub fn targets(&self) -> TargetSet {
        self.targets.clone()
    }

    /// The running figures of this run, shared.
    pub fn live(&self) -> Arc<LiveStats> {
        Arc::clone(&self.live)
    }

    /// Runs until the stop condition or `cancel`, and reports. Requests in flight when a stop
    /// condition is reached are waited for; those in flight at cancellation are dropped.
    pub async fn run(self, cancel: CancellationToken) -> Result<Report, LoadgenError> {
        // rustls needs one process-wide crypto provider; the workspace builds ring. A provider
        // already installed (by the embedding program, or an earlier run) is fine.
        let _already_installed = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .user_agent(concat!("modelfleet-loadgen/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| LoadgenError::HttpClient(e.to_string()))?;
        let mut clients = HashMap::new();
        for target in &self.initial_targets {
            clients.insert(target.clone(), Client::new(target, &http)?);
        }
        let start = Instant::now();
        self.live.mark_started(start);
        let run = Arc::new(Run {
            targets: self.targets.clone(),
            http,
            clients: Mutex::new(clients),
            seen: Mutex::new(self.initial_targets.clone()),
            config: self.config.clone(),
            live: Arc::clone(&self.live),
            issued: AtomicU64::new(0),
            deadline: self.config.stop.duration.map(|d| start + d),
            cancel: cancel.clone(),
        });
        let records = match self.config.arrival {
            Arrival::Closed { concurrency } => closed_loop(&run, concurrency).await,
            Arrival::Poisson { rate, seed } => poisson(&run, start, rate, seed).await,
        };
        let seen = run.seen.lock().map(|s| s.clone()).unwrap_or_default();
        Ok(Report::from_records(
            self.config.arrival,
            &seen,
            &records,
            start.elapsed(),
            cancel.is_cancelled(),
        ))
    }
}

/// Runs `config` against `targets` until its stop condition or `cancel`.
pub async fn run(
    config: LoadConfig,
    targets: Vec<Target>,
    cancel: CancellationToken,
) -> Result<Report, LoadgenError> {
    LoadGenerator::new(config, targets)?.run(cancel).await
}

/// What every request task of one run shares.
struct Run {
    targets: TargetSet,
    http: reqwest::Client,
    /// One connection per target ever used, kept while the run lasts.
    clients: Mutex<HashMap<Target, Client>>,
    /// Every target requests were sent to, in the order first used (for the report).
    seen: Mutex<Vec<Target>>,
    config: LoadConfig,
    live: Arc<LiveStats>,
    issued: AtomicU64,
    deadline: Option<Instant>,
    cancel: CancellationToken,
}

impl Run {
    /// The index of the next request, or `None` once the run should issue no more.
    fn claim(&self) -> Option<u64> {
        if self.cancel.is_cancelled() || self.deadline.is_some_and(|d| Instant::now() >= d) {
            return None;
        }
        let index = self.issued.fetch_add(1, Ordering::Relaxed);
        match self.config.stop.requests {
            Some(limit) if index >= limit => None,
            _ => Some(index),
        }
    }

    /// The connection to `target`, made on first use.
    fn client(&self, target: &Target) -> Result<Client, Failure> {
        let mut clients = self
            .clients
            .lock()
            .map_err(|_| Failure::new(Outcome::Error, "the connection table is poisoned"))?;
        if let Some(client) = clients.get(target) {
            return Ok(client.clone());
        }
        let client = Client::new(target, &self.http)
            .map_err(|e| Failure::new(Outcome::Error, e.to_string()))?;
        clients.insert(target.clone(), client.clone());
        if let Ok(mut seen) = self.seen.lock() {
            seen.push(target.clone());
        }
        Ok(client)
    }

    /// Sends request `index` to its target (round-robin over the current targets) and
    /// records how it went.
    async fn one(&self, index: u64) -> RequestRecord {
        let settings = &self.config.request;
        let prompt = prompt_text(&settings.prompt, self.config.seed, index);
        let _in_flight = self.live.request_started();
        let mut timer = TokenTimer::new(Instant::now());
        let targets = self.targets.current();
        let Some(target) = targets.get((index % targets.len().max(1) as u64) as usize) else {
            let record = timer.into_record(
                "(no target)".to_owned(),
                Instant::now(),
                Err(Failure::unreachable("no targets to send to")),
            );
            self.live.request_finished(&record);
            return record;
        };
        let result = match self.client(target) {
            Ok(client) => self.send(&client, prompt, &mut timer).await,
            Err(failure) => Err(failure),
        };
        let record = timer.into_record(target.to_string(), Instant::now(), result);
        self.live.request_finished(&record);
        record
    }

    async fn send(
        &self,
        client: &Client,
        prompt: String,
        timer: &mut TokenTimer,
    ) -> Result<Completion, Failure> {
        let settings = &self.config.request;
        let send = client.send(prompt, settings, timer);
        match settings.timeout {
            Some(limit) => tokio::time::timeout(limit, send).await.unwrap_or_else(|_| {
                Err(Failure::new(
                    Outcome::Error,
                    format!("no complete response within {limit:?}"),
                ))
            }),
            None => send.await,
        }
    }
}

/// `concurrency` clients, each sending its next request when the previous one is done.
async fn closed_loop(run: &Arc<Run>, concurrency: usize) -> Vec<RequestRecord> {
    let mut clients = JoinSet::new();
    for _ in 0..concurrency {
        let run = Arc::clone(run);
        clients.spawn(async move {
            let mut records = Vec::new();
            while let Some(index) = run.claim() {
                tokio::select! {
                    record = run.one(index) => {
                        let unreachable = !record.reached_server;
                        records.push(record);
                        if unreachable {
                            tokio::select! {
                                () = tokio::time::sleep(UNREACHABLE_PAUSE) => {}
                                () = run.cancel.cancelled() => break,
                            }
                        }
                    }
                    () = run.cancel.cancelled() => break,
                }
            }
            records
        });
    }
    let mut records = Vec::new();
    while let Some(joined) = clients.join_next().await {
        match joined {
            Ok(mut some) => records.append(&mut some),
            Err(e) => {
                tracing::error!(error = %e, "a load client task failed; its requests are not counted")
            }
        }
    }
    records
}

/// Requests arriving as a Poisson process, each in its own task, however many are in flight.
async fn poisson(run: &Arc<Run>, start: Instant, rate: f64, seed: u64) -> Vec<RequestRecord> {
    let mut schedule = PoissonSchedule::new(rate, seed);
    let mut in_flight = JoinSet::new();
    let mut records = Vec::new();
    loop {
        let at = start + schedule.next_arrival();
        if run.deadline.is_some_and(|d| at >= d) {
            break;
        }
        tokio::select! {
            () = tokio::time::sleep_until(at.into()) => {}
            () = run.cancel.cancelled() => break,
        }
        let Some(index) = run.claim() else { break };
        let task_run = Arc::clone(run);
        in_flight.spawn(async move { task_run.one(index).await });
        while let Some(joined) = in_flight.try_join_next() {
            collect(joined, &mut records);
        }
    }
    loop {
        tokio::select! {
            joined = in_flight.join_next() => match joined {
                Some(joined) => collect(joined, &mut records),
                None => break,
            },
            () = run.cancel.cancelled() => {
                in_flight.abort_all();
                while let Some(joined) = in_flight.join_next().await {
                    if let Ok(record) = joined {
                        records.push(record);
                    }
                }
                break;
            }
        }
    }
    records
}

fn collect(
    joined: Result<RequestRecord, tokio::task::JoinError>,
    records: &mut Vec<RequestRecord>,
) {
    match joined {
        Ok(record) => records.push(record),
        Err(e) => tracing::error!(error = %e, "a request task failed; it is not counted"),
    }
}
