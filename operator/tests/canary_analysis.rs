//! A canary's analysis against a real Prometheus: two stand-ins for engines' `/metrics`
//! export what a canary's and a stable pod's engines would (the engine's own series names:
//! requests by outcome, time-to-first-token and inter-token histograms) as requests arrive,
//! Prometheus scrapes them with the labels its relabelling gives engine pods, and the
//! operator's analysis reads them with its own PromQL. A slow canary fails naming the
//! figure, an equal one passes, a failing one fails on its error ratio, and a Prometheus
//! that is gone gives no verdict.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::ObjectMeta;
use modelfleet_contract::labels::CANARY_TRACK;
use modelfleet_contract::metrics::{
    INTER_TOKEN_LATENCY, MODEL_DEPLOYMENT, NAMESPACE, OUTCOME, REQUESTS, TIME_TO_FIRST_TOKEN, TRACK,
};
use modelfleet_contract::prometheus::PrometheusClient;
use modelfleet_e2e::prometheus::{Prometheus, PrometheusOptions, StaticTarget};
use modelfleet_e2e::queue_depth_endpoint::serve_exposition;
use modelfleet_operator::api::{
    AnalysisVerdict, ModelDeployment, ModelDeploymentSpec, ModelSpec, RolloutPhase, RolloutStatus,
    RolloutStrategy,
};
use modelfleet_operator::rollout::CanaryPlan;
use modelfleet_operator::rollout::analyst::analyse;
use prometheus::{CounterVec, Histogram, HistogramOpts, Opts, Registry, TextEncoder};

const BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
const TIMEOUT: Duration = Duration::from_secs(120);

/// One engine's series, fed by a stream of requests that all take the same times.
struct Engine {
    registry: Registry,
    requests: CounterVec,
    ttft: Histogram,
    itl: Histogram,
}

impl Engine {
    fn new() -> Arc<Self> {
        let registry = Registry::new();
        let requests =
            CounterVec::new(Opts::new(REQUESTS, "requests"), &[OUTCOME]).expect("counter");
        let histogram = |name: &str| {
            Histogram::with_opts(HistogramOpts::new(name, name).buckets(BUCKETS.to_vec()))
                .expect("histogram")
        };
        let ttft = histogram(TIME_TO_FIRST_TOKEN);
        let itl = histogram(INTER_TOKEN_LATENCY);
        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(ttft.clone()),
            Box::new(itl.clone()),
        ] {
            registry.register(collector).expect("register");
        }
        Arc::new(Self {
            registry,
            requests,
            ttft,
            itl,
        })
    }

    /// Ten requests a second, each with these times; every `fail_every`-th one failed.
    fn serve(self: &Arc<Self>, ttft: f64, itl: f64, fail_every: Option<u64>) {
        let engine = self.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            loop {
                n += 1;
                let failed = fail_every.is_some_and(|every| n.is_multiple_of(every));
                let outcome = if failed { "failed" } else { "stop" };
                engine.requests.with_label_values(&[outcome]).inc();
                engine.ttft.observe(ttft);
                for _ in 0..8 {
                    engine.itl.observe(itl);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }

    async fn expose(self: &Arc<Self>) -> String {
        let engine = self.clone();
        serve_exposition(move || {
            TextEncoder::new()
                .encode_to_string(&engine.registry.gather())
                .unwrap_or_default()
        })
        .await
    }
}

fn target(address: &str, name: &str, canary: bool) -> StaticTarget {
    let target = StaticTarget::new(address)
        .label(NAMESPACE, "ml")
        .label(MODEL_DEPLOYMENT, name);
    if canary {
        target.label(TRACK, CANARY_TRACK)
    } else {
        target
    }
}

fn model_deployment(name: &str) -> ModelDeployment {
    let mut md = ModelDeployment::new(
        name,
        ModelDeploymentSpec {
            model: ModelSpec {
                source: "s3://bucket/model".into(),
                revision: "v2".into(),
                served_name: None,
            },
            engine: Default::default(),
            resources: Default::default(),
            replicas: Default::default(),
            autoscaling: Default::default(),
            rollout: Default::default(),
            scheduling: Default::default(),
            network_policy: None,
        },
    );
    md.metadata = ObjectMeta {
        name: Some(name.into()),
        namespace: Some("ml".into()),
        ..ObjectMeta::default()
    };
    md.spec.rollout.strategy = RolloutStrategy::Canary;
    md
}

fn rollout(since: &Time) -> RolloutStatus {
    RolloutStatus {
        canary: "abc".into(),
        revision: "v2".into(),
        phase: RolloutPhase::Progressing,
        step: 1,
        steps: 2,
        observing_since: Some(since.clone()),
        canary_replicas: 1,
        stable_replicas: 1,
        message: String::new(),
        analysis: None,
    }
}

fn now() -> Time {
    Time(Timestamp::from_second(Timestamp::now().as_second()).expect("now"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_analysis_judges_what_prometheus_recorded_of_each_side() {
    let since = now();
    // Three ModelDeployments, each a canary and a stable engine.
    let slow = (Engine::new(), Engine::new());
    slow.0.serve(0.9, 0.02, None);
    slow.1.serve(0.08, 0.02, None);
    let equal = (Engine::new(), Engine::new());
    equal.0.serve(0.08, 0.02, None);
    equal.1.serve(0.08, 0.02, None);
    let failing = (Engine::new(), Engine::new());
    failing.0.serve(0.08, 0.02, Some(5));
    failing.1.serve(0.08, 0.02, None);
    let mut targets = Vec::new();
    for (name, (canary, stable)) in [("slow", &slow), ("equal", &equal), ("failing", &failing)] {
        targets.push(target(&canary.expose().await, name, true));
        targets.push(target(&stable.expose().await, name, false));
    }
    let mut prometheus = Prometheus::start(PrometheusOptions {
        scrape_interval: Duration::from_millis(500),
        static_targets: targets,
        ..PrometheusOptions::default()
    })
    .await
    .expect("Prometheus starts");
    let client = PrometheusClient::new(&prometheus.url()).expect("a client");
    let plan = CanaryPlan::of(&model_deployment("x").spec)
        .expect("parses")
        .expect("a canary");

    // Enough requests on every side (the default analysis needs 20).
    let deadline = std::time::Instant::now() + TIMEOUT;
    let analysis = |name: &'static str| {
        let client = client.clone();
        let plan = plan.clone();
        let since = since.clone();
        async move {
            let md = model_deployment(name);
            analyse(&client, &md, &plan, &rollout(&since), since.clone()).await
        }
    };
    loop {
        let equal = analysis("equal").await;
        if equal.status.canary.requests.is_some_and(|r| r >= 30.0)
            && equal.status.stable.requests.is_some_and(|r| r >= 30.0)
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no requests recorded: {equal:#?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let slow = analysis("slow").await;
    assert_eq!(slow.status.verdict, AnalysisVerdict::Fail, "{slow:#?}");
    assert!(
        slow.status
            .reasons
            .iter()
            .any(|r| r.contains("time-to-first-token p95")),
        "{slow:#?}"
    );
    let (canary, stable) = (
        slow.status
            .canary
            .time_to_first_token_p95_seconds
            .expect("canary TTFT"),
        slow.status
            .stable
            .time_to_first_token_p95_seconds
            .expect("stable TTFT"),
    );
    // Within their buckets: (0.5, 1] and (0.05, 0.1].
    assert!((0.5..=1.0).contains(&canary), "{canary}");
    assert!((0.05..=0.1).contains(&stable), "{stable}");
    assert_eq!(slow.status.canary.failed_request_ratio, Some(0.0));

    let equal = analysis("equal").await;
    assert_eq!(equal.status.verdict, AnalysisVerdict::Pass, "{equal:#?}");
    assert!(equal.status.reasons.is_empty());

    let failing = analysis("failing").await;
    assert_eq!(
        failing.status.verdict,
        AnalysisVerdict::Fail,
        "{failing:#?}"
    );
    let ratio = failing.status.canary.failed_request_ratio.expect("a ratio");
    assert!((0.1..=0.3).contains(&ratio), "one in five failed: {ratio}");
    assert!(
        failing
            .status
            .reasons
            .iter()
            .any(|r| r.contains("failed-request ratio")),
        "{failing:#?}"
    );

    prometheus.stop();
    let blind = analysis("equal").await;
    assert_eq!(
        blind.status.verdict,
        AnalysisVerdict::Inconclusive,
        "{blind:#?}"
    );
    assert!(blind.missing);
    assert_eq!(blind.status.canary.requests, None);
}
