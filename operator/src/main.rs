//! `modelfleet-operator`: runs the controller, or prints the CRD.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use modelfleet_operator::autoscaler::AutoscalerConfig;
use modelfleet_operator::controller::ControllerConfig;
use modelfleet_operator::crdgen;
use modelfleet_operator::kube_client::counted_client;
use modelfleet_operator::leader::LeaseConfig;
use modelfleet_operator::metrics::Metrics;
use modelfleet_operator::operator::{OperatorConfig, run};
use modelfleet_operator::telemetry::{LogFormat, init_tracing};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "modelfleet-operator",
    version,
    about = "Reconciles ModelDeployments into fleets of inference engines"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller.
    Run(RunArgs),
    /// Print the ModelDeployment CRD, or write it into a directory.
    Crdgen {
        /// Write `<dir>/modelfleet.dev_modeldeployments.yaml` instead of printing.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "MODELFLEET_WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Address of the /metrics, /healthz and /readyz server.
    #[arg(long, default_value = "0.0.0.0:8080")]
    telemetry_addr: SocketAddr,
    /// Reconcile only while holding the leader lease (run more than one replica safely).
    #[arg(long)]
    leader_elect: bool,
    /// Name of the leader lease.
    #[arg(long, default_value = "modelfleet-operator")]
    lease_name: String,
    /// Namespace of the leader lease (the operator's own namespace in a cluster).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Seconds a lease lasts without renewal.
    #[arg(long, default_value_t = 15)]
    lease_duration_seconds: u64,
    /// Seconds the leader keeps trying to renew before it stops leading.
    #[arg(long, default_value_t = 10)]
    renew_deadline_seconds: u64,
    /// Seconds between lease attempts.
    #[arg(long, default_value_t = 2)]
    retry_period_seconds: u64,
    /// This process's identity in the lease and in events (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Base URL of the Prometheus that scrapes the engine pods (e.g.
    /// http://prometheus.monitoring:9090). Without it the queue-depth autoscaler is off and
    /// each ModelDeployment keeps the size its status records.
    #[arg(long, env = "MODELFLEET_PROMETHEUS_URL")]
    prometheus_url: Option<String>,
    /// How often the autoscaler reads every ModelDeployment's queue depth (e.g. 15s).
    #[arg(long, env = "MODELFLEET_AUTOSCALE_INTERVAL", default_value = "15s", value_parser = parse_duration)]
    autoscale_interval: Duration,
    /// The image engine pods run when a ModelDeployment leaves spec.engine.image unset (the
    /// Helm chart passes its engine.image value).
    #[arg(long, env = "MODELFLEET_ENGINE_IMAGE", default_value = modelfleet_operator::api::DEFAULT_ENGINE_IMAGE)]
    engine_image: String,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crdgen { out_dir: None } => print!("{}", crdgen::crd_yaml()?),
        Command::Crdgen { out_dir: Some(dir) } => {
            let path = dir.join(crdgen::CRD_FILE);
            std::fs::write(&path, crdgen::crd_yaml()?)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Command::Run(args) => run_operator(args).await?,
    }
    Ok(())
}

async fn run_operator(args: RunArgs) -> anyhow::Result<()> {
    init_tracing(args.log_format);
    anyhow::ensure!(
        args.retry_period_seconds < args.renew_deadline_seconds
            && args.renew_deadline_seconds < args.lease_duration_seconds,
        "need --retry-period-seconds < --renew-deadline-seconds < --lease-duration-seconds, \
         or a leader could lose the lease before it notices"
    );
    let identity = args
        .identity
        .unwrap_or_else(|| format!("modelfleet-operator-{}", std::process::id()));
    let leader_election = args.leader_elect.then(|| LeaseConfig {
        lease_duration: Duration::from_secs(args.lease_duration_seconds),
        renew_deadline: Duration::from_secs(args.renew_deadline_seconds),
        retry_period: Duration::from_secs(args.retry_period_seconds),
        ..LeaseConfig::new(&args.lease_namespace, &args.lease_name, &identity)
    });
    let autoscaler = args.prometheus_url.map(|url| AutoscalerConfig {
        prometheus_url: url,
        interval: args.autoscale_interval,
    });
    if autoscaler.is_none() {
        tracing::warn!(
            "no --prometheus-url: the queue-depth autoscaler is off (ScalingActive=False, NoPrometheus)"
        );
    }
    let config = OperatorConfig {
        controller: ControllerConfig {
            namespace: args.namespace,
            identity,
            autoscaler,
            engine_image: args.engine_image,
        },
        leader_election,
        telemetry_addr: Some(args.telemetry_addr),
    };
    let metrics = Metrics::new()?;
    let kube_config = kube::Config::infer()
        .await
        .context("finding the Kubernetes API (kubeconfig or in-cluster)")?;
    let client = counted_client(kube_config, &metrics)
        .context("connecting to the Kubernetes API (kubeconfig or in-cluster)")?;
    let shutdown = CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            wait_for_signal().await;
            tracing::info!("shutting down");
            shutdown.cancel();
        }
    });
    run(client, config, metrics, shutdown).await?;
    Ok(())
}

/// A Go-style duration of at least one millisecond.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let parsed: Duration = text
        .parse::<kube::core::Duration>()
        .map_err(|e| e.to_string())?
        .into();
    if parsed < Duration::from_millis(1) {
        return Err("must be at least 1ms".into());
    }
    Ok(parsed)
}

/// SIGTERM (Kubernetes stopping the pod) or Ctrl-C.
async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            let _ = ctrl_c.await;
            return;
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
