//! `modelfleet-dev demo`: a local fleet scaling with its load, shown as a live table.
//!
//! Starts the control plane, a real node (containerd, the kubelet and kube-proxy) with the
//! images `make images` built, Prometheus and the operator; applies the example
//! ModelDeployment (pointed at the demo model, sized for a laptop);
//! ramps load up and back down while printing desired/ready replicas, queue depth,
//! tokens/s and p99 time to first token; then keeps the fleet up until Ctrl-C.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use modelfleet_contract::{metrics, ports};
use modelfleet_e2e::fleet::{self, EndpointFollower, Fleet, FleetOptions, ModelDeploymentStatus};
use modelfleet_e2e::tools;
use modelfleet_loadgen::{
    Arrival, LiveSnapshot, LoadConfig, LoadGenerator, Prompt, RequestSettings, StopAfter, Target,
};
use tokio_util::sync::CancellationToken;

const NAMESPACE: &str = "demo";
const TABLE_EVERY: Duration = Duration::from_secs(2);
/// Tokens/s is averaged over this long: requests finish in bursts.
const RATE_WINDOW: Duration = Duration::from_secs(10);

/// One stretch of the load ramp.
struct Phase {
    name: &'static str,
    /// Closed-loop clients; 0 is no load.
    clients: usize,
    /// Ends `hold` after this first holds for the status (given min and max), or after
    /// `longest`.
    done: fn(&ModelDeploymentStatus, i32, i32) -> bool,
    hold: Duration,
    longest: Duration,
}

const RAMP: [Phase; 4] = [
    Phase {
        name: "warm-up",
        clients: 0,
        done: |s, min, _| s.ready_replicas == min && s.replicas == min,
        hold: Duration::ZERO,
        longest: Duration::from_secs(300),
    },
    Phase {
        name: "light",
        clients: 2,
        done: |_, _, _| true,
        hold: Duration::from_secs(20),
        longest: Duration::from_secs(20),
    },
    Phase {
        name: "heavy",
        clients: 24,
        // Stay a while at full size: the load spreads over the new pods.
        done: |s, _, max| s.ready_replicas == max,
        hold: Duration::from_secs(30),
        longest: Duration::from_secs(300),
    },
    Phase {
        name: "idle",
        clients: 0,
        done: |s, min, _| s.desired_replicas == min && s.replicas == min,
        hold: Duration::ZERO,
        longest: Duration::from_secs(300),
    },
];

pub async fn run() -> anyhow::Result<()> {
    eprintln!(
        "[demo] starting etcd, kube-apiserver, controller-manager, scheduler, a real node \
         (containerd, kubelet, kube-proxy) with the engine image, Prometheus and the operator …"
    );
    let fleet = Fleet::start(FleetOptions::default())
        .await
        .context("starting the local fleet")?;
    let outcome = tokio::select! {
        outcome = show(&fleet) => outcome,
        _ = tokio::signal::ctrl_c() => Ok(()),
    };
    if outcome.is_ok() {
        println!();
        println!("The fleet keeps running. In another terminal:");
        println!(
            "  export KUBECONFIG={}",
            fleet.cluster().kubeconfig_path().display()
        );
        let kubectl =
            tools::tool("kubectl").map_or_else(|_| "kubectl".into(), |p| p.display().to_string());
        println!("  {kubectl} get md,pods -n {NAMESPACE} -o wide");
        println!("  {kubectl} describe md -n {NAMESPACE} smollm2");
        println!("Operator log: {}", fleet.operator_log().display());
        println!("Press Ctrl-C to stop and remove everything.");
        tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?;
    }
    eprintln!("[demo] stopping: engines, Prometheus, operator, control plane …");
    fleet.shutdown().await;
    eprintln!("[demo] stopped; nothing is left running.");
    outcome
}

async fn show(fleet: &Fleet) -> anyhow::Result<()> {
    fleet.cluster().create_namespace(NAMESPACE).await?;
    let mut md = fleet.example(NAMESPACE)?;
    // The example's defaults suit a GPU; on a laptop's CPU a smaller batch makes a queue form
    // with a handful of clients, and short windows let the demo scale within minutes.
    md.spec.engine.max_num_seqs = 4;
    md.spec.engine.extra_args = vec!["--threads".into(), "1".into()];
    md.spec.autoscaling.window = "10s".into();
    md.spec.autoscaling.scale_down_stabilization = "30s".into();
    let (min, max) = (md.spec.replicas.min, md.spec.replicas.max);
    println!(
        "[demo] applying examples/modeldeployment.yaml as {NAMESPACE}/smollm2: source {}, \
         maxNumSeqs 4, replicas {min}..{max}, targetQueueDepth {}, window 10s, \
         scaleDownStabilization 30s",
        md.spec.model.source, md.spec.autoscaling.target_queue_depth
    );
    fleet::apply(&fleet.client(), &md).await?;

    let started = Instant::now();
    print_header();
    for phase in &RAMP {
        run_phase(fleet, phase, (min, max), started).await?;
    }
    println!("[demo] the fleet scaled up under load and back down to {min} once it ended.");
    Ok(())
}

async fn run_phase(
    fleet: &Fleet,
    phase: &Phase,
    (min, max): (i32, i32),
    started: Instant,
) -> anyhow::Result<()> {
    let cancel = CancellationToken::new();
    let load = if phase.clients > 0 {
        let generator = load_generator(fleet, phase.clients).await?;
        let live = generator.live();
        let _follower = EndpointFollower::start(
            fleet.client(),
            NAMESPACE.into(),
            "smollm2".into(),
            generator.targets(),
            grpc_target,
            cancel.clone(),
        );
        let run = tokio::spawn(generator.run(cancel.clone()));
        Some((live, run, _follower))
    } else {
        None
    };
    let phase_start = Instant::now();
    let mut done_since: Option<Instant> = None;
    let mut recent: VecDeque<(Instant, LiveSnapshot)> = VecDeque::new();
    loop {
        let status = fleet::model_deployments(&fleet.client(), NAMESPACE)
            .get("smollm2")
            .await?
            .status
            .unwrap_or_default();
        let live = load
            .as_ref()
            .map(|(live, _, _)| (Instant::now(), live.snapshot()));
        if let Some(now) = live {
            recent.push_back(now);
            while recent
                .front()
                .is_some_and(|(at, _)| now.0.duration_since(*at) > RATE_WINDOW)
            {
                recent.pop_front();
            }
        }
        let queue = fleet
            .prometheus()
            .query_value(&format!(
                "sum({}{{{}=\"{NAMESPACE}\"}})",
                metrics::QUEUE_DEPTH,
                metrics::NAMESPACE
            ))
            .await
            .ok()
            .flatten();
        print_row(
            started,
            phase,
            &status,
            queue,
            recent.front(),
            live.as_ref(),
        );
        if (phase.done)(&status, min, max) {
            done_since.get_or_insert_with(Instant::now);
        }
        let held = done_since.is_some_and(|since| since.elapsed() >= phase.hold);
        if held || phase_start.elapsed() > phase.longest {
            break;
        }
        tokio::time::sleep(TABLE_EVERY).await;
    }
    cancel.cancel();
    if let Some((_, run, _)) = load {
        let _ = run.await;
    }
    Ok(())
}

async fn load_generator(fleet: &Fleet, clients: usize) -> anyhow::Result<LoadGenerator> {
    let endpoints = fleet::ready_endpoints(&fleet.client(), NAMESPACE, "smollm2").await?;
    let targets: Vec<Target> = endpoints.iter().map(|a| grpc_target(a)).collect();
    anyhow::ensure!(!targets.is_empty(), "no ready engine to send load to");
    Ok(LoadGenerator::new(
        LoadConfig {
            arrival: Arrival::Closed {
                concurrency: clients,
            },
            stop: StopAfter::default(),
            request: RequestSettings {
                model: String::new(),
                prompt: Prompt::Words(24),
                max_tokens: 48,
                ignore_eos: true,
                temperature: None,
                timeout: Some(Duration::from_secs(120)),
            },
            seed: 1,
        },
        targets,
    )?)
}

fn grpc_target(address: &str) -> Target {
    Target::grpc(format!("{address}:{}", ports::GRPC.number))
}

fn print_header() {
    println!(
        "{:>6}  {:<8} {:>7}  {:>7} {:>5}  {:>5}  {:>8}  {:>10}  {:>6}",
        "time", "phase", "clients", "desired", "ready", "queue", "tokens/s", "ttft p99", "failed"
    );
}

fn print_row(
    started: Instant,
    phase: &Phase,
    status: &ModelDeploymentStatus,
    queue: Option<f64>,
    oldest_recent: Option<&(Instant, LiveSnapshot)>,
    live: Option<&(Instant, LiveSnapshot)>,
) {
    let tokens_per_sec = match (oldest_recent, live) {
        (Some((then, before)), Some((now, after))) => {
            tokens_between(before, after, now.duration_since(*then))
        }
        _ => 0.0,
    };
    let ttft = live
        .and_then(|(_, s)| s.recent_ttft_p99_ms)
        .map_or_else(|| "-".to_string(), |ms| format!("{ms:.0} ms"));
    println!(
        "{:>5.0}s  {:<8} {:>7}  {:>7} {:>5}  {:>5}  {:>8.1}  {:>10}  {:>6}",
        started.elapsed().as_secs_f64(),
        phase.name,
        phase.clients,
        status.desired_replicas,
        status.ready_replicas,
        queue.map_or_else(|| "-".into(), |q| format!("{q:.0}")),
        tokens_per_sec,
        ttft,
        live.map_or(0, |(_, s)| s.failed()),
    );
}

/// Output tokens per second between two snapshots of one run.
fn tokens_between(before: &LiveSnapshot, after: &LiveSnapshot, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        return 0.0;
    }
    after.output_tokens.saturating_sub(before.output_tokens) as f64 / secs
}
