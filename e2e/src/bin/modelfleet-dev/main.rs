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
use modelfleet_e2e::images::Image;
use modelfleet_e2e::kwok::{Kwok, SimulatedNode};
use modelfleet_e2e::real_node::{RealNode, RealNodeOptions};
use modelfleet_e2e::{Cluster, ClusterOptions, tools};

#[derive(Parser)]
#[command(name = "modelfleet-dev", about = "Developer tools for ModelFleet")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A local fleet (control plane, a real node running engine pods, Prometheus, the
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
        /// Simulated GPU nodes (kwok): pods bound to them are reported running, nothing runs.
        #[arg(long, default_value_t = 0)]
        gpu_nodes: u32,
        /// GPUs each simulated node offers.
        #[arg(long, default_value_t = 8)]
        gpus_per_node: u32,
        /// Also a real node (containerd, kubelet, kube-proxy) with the engine and operator
        /// images, where pods really run.
        #[arg(long)]
        real_node: bool,
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
                    real_node,
                    kubeconfig_out,
                },
        } => cluster_up(gpu_nodes, gpus_per_node, real_node, kubeconfig_out).await,
    }
}

async fn cluster_up(
    gpu_nodes: u32,
    gpus_per_node: u32,
    real_node: bool,
    kubeconfig_out: Option<PathBuf>,
) -> anyhow::Result<()> {
    eprintln!("starting etcd, kube-apiserver, kube-controller-manager and kube-scheduler …");
    let options = if real_node {
        ClusterOptions::full().with_own_service_range()?
    } else {
        ClusterOptions::full()
    };
    let cluster = Cluster::start(options)
        .await
        .context("starting the control plane")?;
    let kwok = if gpu_nodes > 0 {
        eprintln!("starting kwok with {gpu_nodes} simulated GPU nodes …");
        let mut kwok = Kwok::start(&cluster).await.context("starting kwok")?;
        for i in 1..=gpu_nodes {
            let spec = SimulatedNode::gpu_node(&format!("sim-gpu-node-{i}"), gpus_per_node);
            kwok.add_node(&spec, Duration::from_secs(60)).await?;
        }
        Some(kwok)
    } else {
        None
    };
    let node = if real_node {
        eprintln!("starting a real node (containerd, kubelet, kube-proxy) …");
        Some(
            RealNode::start(
                &cluster,
                RealNodeOptions {
                    images: vec![Image::Engine, Image::Operator],
                    ..RealNodeOptions::new("node-1")
                },
            )
            .await
            .context("starting the real node")?,
        )
    } else {
        None
    };
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
    if let Some(node) = node {
        node.shutdown().await;
    }
    drop(kwok);
    cluster.stop();
    eprintln!("stopped.");
    Ok(())
}
