//! The harness's Prometheus for real: it scrapes fixed targets with fixed labels, keeps its
//! data across a stop and a start on the same port, and finds engine-like pods on a real
//! node with its own Kubernetes discovery (`kubernetes_sd_configs`, role pod), labelling
//! their series with namespace, pod and ModelDeployment as a cluster's Prometheus does.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, ContainerPort, Pod, PodSpec};
use kube::api::{Api, ObjectMeta, PostParams};
use modelfleet_contract::labels::DEPLOYMENT as DEPLOYMENT_LABEL;
use modelfleet_contract::metrics::{self, MODEL_DEPLOYMENT, QUEUE_DEPTH};
use modelfleet_contract::ports;
use modelfleet_e2e::images::Image;
use modelfleet_e2e::prometheus::{
    KubernetesPods, Prometheus, PrometheusOptions, Sample, StaticTarget,
};
use modelfleet_e2e::queue_depth_endpoint::serve_queue_depth;
use modelfleet_e2e::real_node::{RealNode, RealNodeOptions};
use modelfleet_e2e::{Cluster, ClusterOptions, wait};

/// Generous: the machine running these may be busy compiling or running other tests.
const TIMEOUT: Duration = Duration::from_secs(120);
const NAMESPACE: &str = "ml";
const NODE: &str = "gpu-node-0";

fn single_value(samples: &[Sample]) -> Option<f64> {
    match samples {
        [one] => Some(one.value),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_targets_are_scraped_with_their_labels_and_data_survives_a_restart() {
    let depth = Arc::new(AtomicU64::new(300));
    let address = serve_queue_depth(depth.clone()).await;
    let mut prometheus = Prometheus::start(PrometheusOptions {
        scrape_interval: Duration::from_millis(500),
        static_targets: vec![
            StaticTarget::new(&address)
                .label(metrics::NAMESPACE, "ml")
                .label(MODEL_DEPLOYMENT, "chat"),
        ],
        ..PrometheusOptions::default()
    })
    .await
    .expect("Prometheus starts");

    let query = &metrics::series(
        QUEUE_DEPTH,
        &[(metrics::NAMESPACE, "ml"), (MODEL_DEPLOYMENT, "chat")],
    );
    let samples = prometheus
        .wait_for(query, TIMEOUT, |s| single_value(s) == Some(3.0))
        .await
        .expect("the first value is scraped");
    let labels = &samples[0].labels;
    assert_eq!(labels.get("job").map(String::as_str), Some("static"));
    assert_eq!(labels.get("instance"), Some(&address));

    depth.store(700, Ordering::SeqCst);
    prometheus
        .wait_for(query, TIMEOUT, |s| single_value(s) == Some(7.0))
        .await
        .expect("a changed value is scraped");

    let url = prometheus.url();
    prometheus.stop();
    assert!(!prometheus.is_running());
    assert!(
        prometheus.query("up").await.is_err(),
        "a stopped Prometheus answers nothing"
    );

    depth.store(100, Ordering::SeqCst);
    prometheus.start_again().await.expect("starts again");
    assert_eq!(prometheus.url(), url, "same port after a restart");
    prometheus
        .wait_for(query, TIMEOUT, |s| single_value(s) == Some(1.0))
        .await
        .expect("scraping resumes");
    // The value 7 was only ever scraped before the restart: the data directory was kept.
    let before = prometheus
        .query_value(&format!(
            "max_over_time({}[10m])",
            metrics::series(QUEUE_DEPTH, &[(MODEL_DEPLOYMENT, "chat")])
        ))
        .await
        .expect("query");
    assert_eq!(before, Some(7.0));
}

/// Fields drop in order: Prometheus and the node's pods go before the control plane.
struct Fleet {
    prometheus: Prometheus,
    node: RealNode,
    cluster: Cluster,
}

fn engine_like_pod(name: &str, labels: BTreeMap<String, String>, queue_depth: f64) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "engine".into(),
                image: Some(Image::TestServer.tag()),
                args: Some(vec![
                    "--port".into(),
                    "8000".into(),
                    "--queue-depth".into(),
                    queue_depth.to_string(),
                ]),
                ports: Some(vec![ContainerPort {
                    container_port: 8000,
                    name: Some(ports::HTTP.name.into()),
                    ..ContainerPort::default()
                }]),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}

fn pod_ip(pod: &Pod) -> Option<String> {
    pod.status.as_ref()?.pod_ip.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_found_through_the_api_server_are_scraped_with_namespace_pod_and_model_deployment() {
    let cluster = Cluster::start(
        ClusterOptions::full()
            .with_own_service_range()
            .expect("a free Service range"),
    )
    .await
    .expect("control plane starts");
    cluster
        .create_namespace(NAMESPACE)
        .await
        .expect("namespace");
    let client = cluster.client();
    let node = RealNode::start(
        &cluster,
        RealNodeOptions {
            images: vec![Image::TestServer],
            ..RealNodeOptions::new(NODE)
        },
    )
    .await
    .expect("the real node starts");
    let access = KubernetesPods::for_cluster(&cluster)
        .await
        .expect("a service account for Prometheus");
    let prometheus = Prometheus::start(PrometheusOptions {
        scrape_interval: Duration::from_millis(500),
        kubernetes_pods: Some(access),
        ..PrometheusOptions::default()
    })
    .await
    .expect("Prometheus starts");
    let fleet = Fleet {
        prometheus,
        node,
        cluster,
    };

    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let engine_labels: BTreeMap<String, String> = [
        (DEPLOYMENT_LABEL.to_string(), "chat".to_string()),
        ("app".to_string(), "engine".to_string()),
    ]
    .into();
    let other_labels: BTreeMap<String, String> = [("app".to_string(), "other".to_string())].into();
    for pod in [
        engine_like_pod("chat-0", engine_labels, 5.0),
        engine_like_pod("unrelated", other_labels, 9.0),
    ] {
        pods.create(&PostParams::default(), &pod)
            .await
            .expect("create pod");
    }
    let mut ips = BTreeMap::new();
    for name in ["chat-0", "unrelated"] {
        let ip = wait::until(
            &format!("pod {name} running with an IP"),
            TIMEOUT,
            || async { pods.get(name).await.ok().as_ref().and_then(pod_ip) },
        )
        .await;
        ips.insert(name, ip);
    }

    let samples = fleet
        .prometheus
        .wait_for(QUEUE_DEPTH, TIMEOUT, |s| !s.is_empty())
        .await
        .expect("the engine pod is discovered and scraped");
    assert_eq!(samples.len(), 1, "only the labelled pod: {samples:?}");
    let labels = &samples[0].labels;
    assert_eq!(samples[0].value, 5.0);
    assert_eq!(
        labels.get(metrics::NAMESPACE).map(String::as_str),
        Some(NAMESPACE)
    );
    assert_eq!(labels.get(metrics::POD).map(String::as_str), Some("chat-0"));
    assert_eq!(
        labels.get(MODEL_DEPLOYMENT).map(String::as_str),
        Some("chat")
    );
    assert_eq!(
        labels.get("instance"),
        Some(&format!("{}:8000", ips["chat-0"])),
        "scraped at the pod IP and the port named http"
    );

    // The unlabelled pod is never a target.
    let targets = fleet.prometheus.active_targets().await.expect("targets");
    assert_eq!(targets.len(), 1, "{targets:?}");
    assert!(
        !targets[0].0.contains(&ips["unrelated"]),
        "the unlabelled pod is not scraped: {targets:?}"
    );

    // Deleting the pod removes its target: its series goes stale.
    pods.delete("chat-0", &Default::default())
        .await
        .expect("delete pod");
    fleet
        .prometheus
        .wait_for(QUEUE_DEPTH, TIMEOUT, |s| s.is_empty())
        .await
        .expect("the deleted pod's series goes stale");

    let Fleet {
        prometheus,
        node,
        cluster,
    } = fleet;
    drop(prometheus);
    node.shutdown().await;
    drop(cluster);
}
