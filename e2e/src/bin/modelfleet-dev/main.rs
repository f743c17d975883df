//! `modelfleet-dev`: developer tools around the local control plane.
//!
//! `modelfleet-dev cluster up` starts etcd, kube-apiserver, kube-controller-manager and
//! kube-scheduler in the foreground, prints how to reach them, and tears everything down on
//! Ctrl-C. `modelfleet-dev demo` runs a whole local fleet and shows it scaling with load.

mod demo;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use modelfleet_e2e::nodes::{self, FakeNodeSpec};
use modelfleet_e2e::{Cluster, ClusterOptions, tools};

#[derive(Parser)]
#[command(name = "modelfleet-dev", about = "Developer tools for ModelFleet")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A local fleet (control plane, fake GPU nodes running engines, Prometheus, the
    /// operator) scaling up and down with a load ramp, shown as a live table.
    Demo,
    /// A local Kubernetes control plane.
    Cluster {
        #[command(subcommand)]
        action: ClusterAction,
    },
}

#[derive(Subcommand)]
enum ClusterAction {
    /// Start the control plane in the foreground until Ctrl-C.
    Up {
        /// Fake GPU nodes to register (no pods run on them: they have no kubelet).
        #[arg(long, default_value_t = 0)]
        gpu_nodes: u32,
        /// GPUs each fake node offers.
        #[arg(long, default_value_t = 8)]
        gpus_per_node: u32,
        /// Also copy the kubeconfig here.
        #[arg(long)]
        kubeconfig_out: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The demo's table is the output; its components' logs stay quiet unless RUST_LOG asks.
    let default_filter = match cli.command {
        Command::Demo => "warn,kube_client::client::builder=off",
        // The readiness poll's refused attempts are expected; keep them out of sight.
        Command::Cluster { .. } => "info,kube_client::client::builder=off",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Demo => demo::run().await,
        Command::Cluster {
            action:
                ClusterAction::Up {
                    gpu_nodes,
                    gpus_per_node,
                    kubeconfig_out,
                },
        } => cluster_up(gpu_nodes, gpus_per_node, kubeconfig_out).await,
    }
}

async fn cluster_up(
    gpu_nodes: u32,
    gpus_per_node: u32,
    kubeconfig_out: Option<PathBuf>,
) -> anyhow::Result<()> {
    eprintln!("starting etcd, kube-apiserver, kube-controller-manager and kube-scheduler …");
    let cluster = Cluster::start(ClusterOptions::full())
        .await
        .context("starting the control plane")?;
    let mut fake_nodes = Vec::new();
    for i in 1..=gpu_nodes {
        let spec = FakeNodeSpec::gpu_node(&format!("gpu-node-{i}"), gpus_per_node);
        fake_nodes.push(nodes::register(cluster.client(), &spec).await?);
        nodes::wait_schedulable(cluster.client(), &spec.name, Duration::from_secs(60)).await?;
    }
    let kubeconfig = match kubeconfig_out {
        Some(path) => {
            std::fs::copy(cluster.kubeconfig_path(), &path)
                .with_context(|| format!("copying the kubeconfig to {}", path.display()))?;
            std::fs::canonicalize(&path)?
        }
        None => cluster.kubeconfig_path().to_path_buf(),
    };
    let kubectl =
        tools::tool("kubectl").map_or_else(|_| "kubectl".into(), |p| p.display().to_string());
    println!();
    println!("Local control plane is up at {}", cluster.server_url());
    println!("  kubeconfig: {}", kubeconfig.display());
    println!("  logs:       {}/logs", cluster.dir().display());
    println!();
    println!("Try:");
    println!("  export KUBECONFIG={}", kubeconfig.display());
    println!("  {kubectl} get nodes,namespaces");
    println!("  {kubectl} apply -f examples/modeldeployment.yaml");
    println!();
    println!("Press Ctrl-C to stop and remove everything.");

    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    eprintln!("stopping the control plane …");
    drop(fake_nodes);
    cluster.stop();
    eprintln!("stopped.");
    Ok(())
}
