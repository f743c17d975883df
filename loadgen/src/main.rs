//! `modelfleet-loadgen`: streaming load against one engine or a fleet, with a report.
//!
//! Exit status: 0 when the run happened (whatever its requests' outcomes), 2 on invalid
//! flags, 1 when no request reached an engine at all.

use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgAction, Parser, ValueEnum};
use tokio_util::sync::CancellationToken;

use modelfleet_loadgen::{
    Arrival, LoadConfig, LoadGenerator, Prompt, RequestSettings, StopAfter, Target, parse_duration,
};

/// Sends streaming generation requests to ModelFleet engines and reports throughput, time to
/// first token, inter-token and end-to-end latency percentiles, and failures by kind.
#[derive(Debug, Parser)]
#[command(name = "modelfleet-loadgen", version)]
struct Args {
    /// An engine to load: grpc://host:port, http://host:port (OpenAI completions), or
    /// http://host:port/v1/chat/completions. Repeat for a fleet; requests go round-robin.
    #[arg(long = "target", value_name = "URL", required = true)]
    targets: Vec<String>,
    /// Closed loop: this many clients, each sending its next request when the previous one
    /// is done (the default, with 1 client).
    #[arg(long, conflicts_with = "rate")]
    concurrency: Option<usize>,
    /// Open loop: requests arrive as a Poisson process at this many per second.
    #[arg(long, value_name = "PER_SECOND")]
    rate: Option<f64>,
    /// Stop issuing requests after this long (500ms, 30s, 2m); requests in flight finish.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Stop after this many requests. With neither this nor --duration: 100 requests.
    #[arg(long)]
    requests: Option<u64>,
    /// Prompts of this many words of filler text, different for each request.
    #[arg(long, default_value_t = 32)]
    prompt_words: usize,
    /// This prompt text for every request instead of filler words.
    #[arg(long, conflicts_with = "prompt_words")]
    prompt: Option<String>,
    /// Tokens to generate per request.
    #[arg(long, default_value_t = 64)]
    max_tokens: u32,
    /// Keep generating past end-of-sequence tokens so every request produces --max-tokens.
    #[arg(long, default_value_t = true, action = ArgAction::Set, value_name = "BOOL")]
    ignore_eos: bool,
    /// The served model name (empty: the engine's only model).
    #[arg(long, default_value = "")]
    model: String,
    /// Sampling temperature (default: the engine's, greedy).
    #[arg(long)]
    temperature: Option<f32>,
    /// Fail a request that has not finished after this long.
    #[arg(long, value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Seeds the filler prompts and the Poisson arrivals.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Report format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Print running figures to stderr every second.
    #[arg(long)]
    progress: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

impl Args {
    fn config(&self) -> LoadConfig {
        let arrival = match self.rate {
            Some(rate) => Arrival::Poisson {
                rate,
                seed: self.seed,
            },
            None => Arrival::Closed {
                concurrency: self.concurrency.unwrap_or(1),
            },
        };
        let stop = match (self.requests, self.duration) {
            (None, None) => StopAfter {
                requests: Some(100),
                duration: None,
            },
            (requests, duration) => StopAfter { requests, duration },
        };
        LoadConfig {
            arrival,
            stop,
            request: RequestSettings {
                model: self.model.clone(),
                prompt: match &self.prompt {
                    Some(text) => Prompt::Text(text.clone()),
                    None => Prompt::Words(self.prompt_words),
                },
                max_tokens: self.max_tokens,
                ignore_eos: self.ignore_eos,
                temperature: self.temperature,
                timeout: self.timeout,
            },
            seed: self.seed,
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let generator = match args
        .targets
        .iter()
        .map(|t| t.parse::<Target>())
        .collect::<Result<Vec<_>, _>>()
        .and_then(|targets| LoadGenerator::new(args.config(), targets))
    {
        Ok(generator) => generator,
        Err(error) => {
            eprintln!("modelfleet-loadgen: {error}");
            return ExitCode::from(2);
        }
    };
    match run(generator, &args) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("modelfleet-loadgen: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(generator: LoadGenerator, args: &Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new()?;
    let report = runtime.block_on(async {
        let cancel = CancellationToken::new();
        // Ctrl-C ends the run early; the report covers the requests finished by then.
        let on_interrupt = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                on_interrupt.cancel();
            }
        });
        if args.progress {
            let live = generator.live();
            let done = cancel.child_token();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                tick.tick().await;
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        () = done.cancelled() => break,
                    }
                    let s = live.snapshot();
                    eprintln!(
                        "{:>6.1} s  {} ok  {} failed  {} in flight  {:.1} tokens/s  recent TTFT p99 {}",
                        s.elapsed_secs,
                        s.ok,
                        s.failed(),
                        s.in_flight,
                        s.output_tokens_per_sec(),
                        s.recent_ttft_p99_ms
                            .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.1} ms")),
                    );
                }
            });
        }
        generator.run(cancel).await
    })?;
    match args.format {
        Format::Text => print!("{}", report.to_text()),
        Format::Json => println!("{}", report.to_json()),
    }
    if report.requests.total == report.requests.unreachable {
        eprintln!(
            "modelfleet-loadgen: no request reached an engine; check that the targets are \
             up and their addresses ({})",
            report.targets.join(", ")
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
