//! `modelfleet-loadgen`'s library: load against one engine or a fleet of them.
//!
//! A run sends streaming generation requests to one or more targets (gRPC `Generate` or the
//! OpenAI-compatible HTTP API, round-robin), either closed-loop (N clients back to back) or
//! open-loop (Poisson arrivals at a rate), records each request (time to first token,
//! inter-token gaps, end-to-end time, output tokens, outcome), and reports throughput,
//! latency percentiles and failures by kind. Running figures can be read while it runs:
//!
//! ```no_run
//! # async fn example() -> Result<(), modelfleet_loadgen::LoadgenError> {
//! use modelfleet_loadgen::{Arrival, LoadConfig, LoadGenerator, RequestSettings, StopAfter};
//! use tokio_util::sync::CancellationToken;
//!
//! let config = LoadConfig {
//!     arrival: Arrival::Closed { concurrency: 4 },
//!     stop: StopAfter { requests: Some(100), duration: None },
//!     request: RequestSettings::default(),
//!     seed: 0,
//! };
//! let targets = vec!["grpc://10.0.0.5:50051".parse()?, "http://10.0.0.6:8000".parse()?];
//! let generator = LoadGenerator::new(config, targets)?;
//! let live = generator.live();
//! let run = tokio::spawn(generator.run(CancellationToken::new()));
//! println!("{} done so far", live.snapshot().done());
//! let report = run.await.expect("the run task")?;
//! println!("{}", report.to_text());
//! # Ok(()) }
//! ```

mod config;
mod error;
mod grpc;
mod http;
mod live;
mod percentile;
mod prompt;
mod record;
mod report;
mod runner;
mod schedule;
mod sse;
mod target;

pub use config::{Arrival, LoadConfig, Prompt, RequestSettings, StopAfter, parse_duration};
pub use error::LoadgenError;
pub use live::{LiveSnapshot, LiveStats, RECENT_TTFT_WINDOW};
pub use percentile::{LatencySummary, quantile};
pub use prompt::prompt_text;
pub use record::{Outcome, RequestRecord};
pub use report::{ErrorSample, Latencies, Report, RequestCounts, TargetCounts, Throughput};
pub use runner::{LoadGenerator, run};
pub use schedule::PoissonSchedule;
pub use sse::{SseDecoder, StreamChunk, parse_chunk};
pub use target::{HttpApi, Target, TargetSet};
