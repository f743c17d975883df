//! `make bench-operator`: the operator at fleet sizes, measured. For each N: a control plane,
//! kwok's simulated nodes, N ModelDeployments across N/10 namespaces, a real Prometheus
//! scraping a synthetic queue-depth series for every one of them, and the operator's own
//! binary autoscaling from it. Reported (figures, not a test): the time until every
//! ModelDeployment is Ready, reconcile duration p50/p99 from the operator's histogram, API
//! requests per reconcile (the operator counts its own), its RSS and CPU, the autoscaler's
//! tick duration, and the reaction time from a queue-depth step in Prometheus to the new
//! replica count on the Deployment.
//!
//! Usage: modelfleet-bench-operator [--counts 100,1000,5000] [--out FILE.md]

mod exporter;
mod figures;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::Client;
use kube::api::{Api, ListParams};
use modelfleet_e2e::fleet::{self, demo_model_deployment};
use modelfleet_e2e::kwok::{Kwok, SimulatedNode};
use modelfleet_e2e::prometheus::{Prometheus, PrometheusOptions, StaticTarget};
use modelfleet_e2e::{Cluster, ClusterOptions};
use modelfleet_operator::api::ModelDeployment;

use exporter::SyntheticQueues;
use figures::{Figures, OperatorSample, Run};

/// How often the operator's autoscaler ticks and Prometheus scrapes, as in a small cluster.
const AUTOSCALE_INTERVAL: Duration = Duration::from_secs(5);
const SCRAPE_INTERVAL: Duration = Duration::from_secs(5);
/// ModelDeployments per namespace.
const PER_NAMESPACE: usize = 10;
/// Pods a simulated node takes.
const PODS_PER_NODE: usize = 110;
/// ModelDeployments created at once.
const CONCURRENT_CREATES: usize = 32;
/// Requests per second the controller-manager and scheduler may make: their defaults would
/// make the benchmark measure them, not the operator.
const COMPONENT_QPS: u32 = 400;
/// How long steady state is watched after everything is Ready.
const STEADY: Duration = Duration::from_secs(60);
/// Queue-depth steps whose reactions are timed.
const REACTIONS: usize = 3;

#[derive(Parser)]
struct Args {
    /// Fleet sizes to run, in order.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,5000")]
    counts: Vec<usize>,
    /// Where to write the Markdown report (also printed).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut runs = Vec::new();
    for &count in &args.counts {
        eprintln!("[bench-operator] {count} ModelDeployments");
        match run(count).await {
            Ok(run) => {
                eprintln!("{}", run.summary());
                runs.push(run);
            }
            Err(error) => {
                eprintln!("[bench-operator] {count}: {error:#}");
                runs.push(Run::failed(count, format!("{error:#}")));
            }
        }
        // After every size, so a later one that runs out of time loses nothing.
        let report = figures::report(&runs, COMPONENT_QPS, AUTOSCALE_INTERVAL, SCRAPE_INTERVAL);
        if let Some(out) = &args.out {
            std::fs::write(out, &report).with_context(|| format!("writing {}", out.display()))?;
        }
    }
    println!(
        "{}",
        figures::report(&runs, COMPONENT_QPS, AUTOSCALE_INTERVAL, SCRAPE_INTERVAL)
    );
    Ok(())
}

async fn run(count: usize) -> anyhow::Result<Run> {
    let cluster = Cluster::start(ClusterOptions {
        component_qps: Some(COMPONENT_QPS),
        // kwok renews its nodes' leases from the same 2 cores as everything else; under the
        // load of a big create a renewal can come late, and a node marked NotReady marks its
        // pods unready for good (kwok does not set them Ready again).
        extra_controller_manager_args: vec!["--node-monitor-grace-period=10m".into()],
        ..ClusterOptions::full()
    })
    .await?;
    let client = cluster.client();
    fleet::install_crd(&client).await?;
    let mut kwok = Kwok::start(&cluster).await?;
    for i in 0..count.div_ceil(PODS_PER_NODE) + 1 {
        let mut node = SimulatedNode::gpu_node(&format!("node-{i}"), 0);
        node.pods = PODS_PER_NODE as u32;
        node.cpu = "1000".into();
        node.memory = "4000Gi".into();
        kwok.add_node(&node, Duration::from_secs(120)).await?;
    }
    let namespaces: Vec<String> = (0..count.div_ceil(PER_NAMESPACE))
        .map(|i| format!("team-{i}"))
        .collect();
    for namespace in &namespaces {
        cluster.create_namespace(namespace).await?;
    }
    let names: Vec<(String, String)> = (0..count)
        .map(|i| (namespaces[i / PER_NAMESPACE].clone(), format!("model-{i}")))
        .collect();
    let queues = SyntheticQueues::new(&names);
    let address = queues.serve().await;
    let prometheus = Prometheus::start(PrometheusOptions {
        scrape_interval: SCRAPE_INTERVAL,
        static_targets: vec![StaticTarget::new(address)],
        ..PrometheusOptions::default()
    })
    .await?;
    let (mut operator, telemetry) = fleet::start_operator_with_telemetry(
        &cluster,
        Some(&prometheus.url()),
        AUTOSCALE_INTERVAL,
    )?;
    let operator_pid = operator.pid();
    let metrics_url = format!("http://{telemetry}/metrics");

    let started = Instant::now();
    let created = futures::stream::iter(names.iter().cloned())
        .map(|(namespace, name)| {
            let client = client.clone();
            async move {
                let md = bench_model_deployment(&namespace, &name)?;
                fleet::apply(&client, &md)
                    .await
                    .map_err(anyhow::Error::from)
            }
        })
        .buffer_unordered(CONCURRENT_CREATES)
        .collect::<Vec<_>>()
        .await;
    if let Some(Err(error)) = created.into_iter().find(Result::is_err) {
        bail!("creating the ModelDeployments: {error}");
    }
    let created_in = started.elapsed();
    let ready_in = wait_all_ready(&client, count, Duration::from_secs(30 * 60)).await?;
    let at_ready = OperatorSample::take(&metrics_url, operator_pid).await?;
    tokio::time::sleep(STEADY).await;
    let steady = OperatorSample::take(&metrics_url, operator_pid).await?;

    let mut reactions = Vec::new();
    for (namespace, name) in names
        .iter()
        .step_by((count / REACTIONS).max(1))
        .take(REACTIONS)
    {
        reactions.push(reaction(&client, &queues, namespace, name).await?);
    }
    let end = OperatorSample::take(&metrics_url, operator_pid).await?;
    operator.stop();
    drop(prometheus);
    drop(kwok);
    cluster.stop();
    Ok(Run::new(
        count,
        Figures {
            created_in,
            ready_in,
            at_ready,
            steady,
            end,
            steady_for: STEADY,
            reactions,
        },
    ))
}

/// A ModelDeployment as the example writes it, autoscaled between 1 and 3 replicas and
/// scaling up as soon as the queue asks (nothing runs on a simulated node, so the source is
/// never fetched).
fn bench_model_deployment(namespace: &str, name: &str) -> anyhow::Result<ModelDeployment> {
    let mut md = demo_model_deployment(namespace, "https://models.example/smollm2")?;
    md.metadata.name = Some(name.to_string());
    md.spec.model.served_name = None;
    md.spec.resources.cpu = Some(Quantity("10m".into()));
    md.spec.resources.memory = Some(Quantity("16Mi".into()));
    md.spec.autoscaling.window = "10s".into();
    md.spec.autoscaling.scale_up_stabilization = "0s".into();
    Ok(md)
}

/// Waits until `count` ModelDeployments report Ready; returns how long that took from now.
async fn wait_all_ready(
    client: &Client,
    count: usize,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mds: Api<ModelDeployment> = Api::all(client.clone());
    let mut last_report = Instant::now();
    loop {
        let ready = mds
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|md| is_ready(md))
            .count();
        if ready >= count {
            return Ok(started.elapsed());
        }
        if started.elapsed() > timeout {
            bail!("{ready} of {count} ModelDeployments Ready after {timeout:?}");
        }
        if last_report.elapsed() > Duration::from_secs(30) {
            eprintln!(
                "[bench-operator] {ready}/{count} Ready after {:?}",
                started.elapsed()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

fn is_ready(md: &ModelDeployment) -> bool {
    md.status.as_ref().is_some_and(|status| {
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

/// Steps `name`'s queue depth from 0 to far above its target and times how long until its
/// Deployment asks for more replicas; then steps it back.
async fn reaction(
    client: &Client,
    queues: &Arc<SyntheticQueues>,
    namespace: &str,
    name: &str,
) -> anyhow::Result<Duration> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let replicas = |d: &Deployment| d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    let before = replicas(&deployments.get(name).await?);
    let stepped = Instant::now();
    queues.set(namespace, name, 1000.0);
    let deadline = Duration::from_secs(120);
    loop {
        let now = replicas(&deployments.get(name).await?);
        if now > before {
            let took = stepped.elapsed();
            queues.set(namespace, name, 0.0);
            return Ok(took);
        }
        if stepped.elapsed() > deadline {
            bail!(
                "{namespace}/{name} stayed at {before} replicas {deadline:?} after its queue grew"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
