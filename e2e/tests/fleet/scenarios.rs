//! The five scenarios: deploy, scale up and down, rollout, failure, delete.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams};
use modelfleet_contract::metrics::{MODEL_DEPLOYMENT, NAMESPACE, QUEUE_DEPTH, series};
use modelfleet_contract::ports;
use modelfleet_e2e::fleet::{EndpointFollower, model_deployments};
use modelfleet_operator::api::condition::{READY, SCALING_ACTIVE};
use tokio_util::sync::CancellationToken;

use crate::support::{
    NAME, SERVED_NAME, Scenario, condition, generate, grpc_target, http_target, load,
    served_revision,
};

const POD_START: Duration = Duration::from_secs(240);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_serves_grpc_and_openai_through_its_service_under_the_restricted_context() {
    let started = Instant::now();
    let scenario = Scenario::start("deploy").await;
    let md = scenario.example();
    let revision = md.spec.model.revision.clone();
    scenario.apply(&md).await;
    let status = scenario.wait_ready(1, POD_START).await;
    assert_eq!(status.current_revision.as_deref(), Some(revision.as_str()));
    assert_eq!(
        condition(&status, READY).map(|c| c.status.as_str()),
        Some("True")
    );

    let endpoints = scenario.ready_endpoints().await;
    assert_eq!(endpoints.len(), 1, "{endpoints:?}");
    let pod_ip = &endpoints[0];
    let node = scenario.fleet.node();
    assert!(
        node.pod_cidr()
            .contains(pod_ip.parse().expect("an IPv4 pod IP")),
        "{pod_ip} is a pod IP in the node's range {}",
        node.pod_cidr()
    );
    // The engine runs from the image, under the restricted security context, for real.
    let pods = scenario.pods().await;
    let engine = node
        .crictl()
        .containers()
        .expect("the node's containers")
        .into_iter()
        .find(|c| c.metadata.name == "engine" && c.state == "CONTAINER_RUNNING")
        .expect("a running engine container");
    let pid = node.crictl().pid(&engine.id).expect("the engine's pid");
    let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |name: &str| {
        proc_status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
            .map(String::from)
    };
    assert_eq!(field("Uid").as_deref(), Some("65532\t65532\t65532\t65532"));
    assert_eq!(field("CapEff").as_deref(), Some("0000000000000000"));
    assert_eq!(field("NoNewPrivs").as_deref(), Some("1"));
    let root = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .expect("mountinfo")
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/"))
        .map(String::from)
        .expect("the engine's root mount");
    assert!(
        root.split(' ')
            .nth(5)
            .is_some_and(|o| o.split(',').any(|o| o == "ro")),
        "a read-only root filesystem: {root}"
    );
    let image = pods[0].spec.as_ref().expect("spec").containers[0]
        .image
        .clone();
    assert_eq!(
        image.as_deref(),
        Some(modelfleet_e2e::images::Image::Engine.tag().as_str())
    );

    let text = generate(pod_ip, "The capital of France is", 8).await;
    assert!(text.contains("Paris"), "{text:?}");
    assert_eq!(served_revision(pod_ip).await, revision);

    // Clients call the Service: kube-proxy on the node routes its cluster IP to the pod.
    let service_ip = scenario.service_ip().await;
    assert!(
        scenario
            .fleet
            .cluster()
            .service_range()
            .contains(service_ip.parse().expect("an IPv4 cluster IP"))
    );
    let text = generate(&service_ip, "The capital of France is", 8).await;
    assert!(text.contains("Paris"), "through the Service: {text:?}");
    let response = reqwest_post(
        &format!(
            "http://{service_ip}:{}/v1/chat/completions",
            ports::HTTP.number
        ),
        serde_json::json!({
            "model": SERVED_NAME, "temperature": 0, "max_tokens": 16,
            "messages": [{"role": "user", "content": "What is 2+2?"}],
        }),
    )
    .await;
    assert_eq!(response.0, 200, "{}", response.1);
    assert!(response.1.contains('4'), "{}", response.1);

    // Prometheus found the pod and labels its series with the ModelDeployment.
    let query = series(
        QUEUE_DEPTH,
        &[(NAMESPACE, "deploy"), (MODEL_DEPLOYMENT, NAME)],
    );
    scenario
        .fleet
        .prometheus()
        .wait_for(&query, Duration::from_secs(60), |samples| {
            samples.len() == 1
        })
        .await
        .expect("the pod's queue depth in Prometheus");
    eprintln!("deploy: {:.0}s", started.elapsed().as_secs_f64());
    scenario.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_scales_the_fleet_up_and_its_end_scales_it_back_down() {
    let started = Instant::now();
    let scenario = Scenario::start("scale").await;
    let mut md = scenario.example();
    md.spec.engine.max_num_seqs = 2;
    md.spec.replicas.min = 1;
    md.spec.replicas.max = 3;
    md.spec.autoscaling.target_queue_depth = 2;
    md.spec.autoscaling.window = "6s".into();
    md.spec.autoscaling.scale_down_stabilization = "20s".into();
    scenario.apply(&md).await;
    scenario.wait_ready(1, POD_START).await;
    let service_ip = scenario.service_ip().await;

    // 12 clients of the Service while one pod runs 2 at a time: about 10 wait, so the
    // autoscaler wants ceil(10 / 2) = 5 replicas, held to max = 3.
    let generator = load(vec![http_target(&service_ip)], 12, 64);
    let cancel = CancellationToken::new();
    let running = tokio::spawn(generator.run(cancel.clone()));
    scenario
        .fleet
        .prometheus()
        .wait_for(
            &format!(
                "sum({})",
                series(
                    QUEUE_DEPTH,
                    &[(NAMESPACE, "scale"), (MODEL_DEPLOYMENT, NAME)]
                )
            ),
            Duration::from_secs(60),
            |samples| samples.first().is_some_and(|s| s.value >= 4.0),
        )
        .await
        .expect("the queue depth in Prometheus");
    let status = scenario
        .wait_status(
            "the autoscaler to ask for 3 replicas",
            Duration::from_secs(90),
            |s| s.desired_replicas == 3,
        )
        .await;
    assert!(status.queue_depth.unwrap_or(0.0) >= 4.0, "{status:?}");
    assert!(status.last_scale_time.is_some());
    assert_eq!(scenario.deployment_replicas().await, 3);
    scenario.wait_ready(3, POD_START).await;
    // Each change of the count is an event that names its cause.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let scaled = scenario.event_messages("Scaled").await;
        if scaled
            .iter()
            .any(|m| m.contains("to 3 replicas") && m.contains("queue depth"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no Scaled event to 3 replicas: {scaled:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    cancel.cancel();
    let _ = running.await;
    // Down only after the queue has stayed empty for the stabilization window, and never
    // below min.
    let status = scenario
        .wait_status(
            "the fleet to return to 1 replica",
            Duration::from_secs(180),
            |s| s.desired_replicas == 1,
        )
        .await;
    assert_eq!(status.queue_depth, Some(0.0));
    scenario.wait_ready(1, Duration::from_secs(120)).await;
    assert_eq!(scenario.deployment_replicas().await, 1);
    eprintln!("scale up and down: {:.0}s", started.elapsed().as_secs_f64());
    scenario.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_revision_rolls_out_under_load_with_no_failed_request() {
    let started = Instant::now();
    let scenario = Scenario::start("rollout").await;
    let mut md = scenario.example();
    md.spec.replicas.min = 2;
    md.spec.replicas.max = 2;
    scenario.apply(&md).await;
    scenario.wait_ready(2, POD_START).await;

    let generator = load(
        Vec::from_iter(
            scenario
                .ready_endpoints()
                .await
                .iter()
                .map(|a| grpc_target(a)),
        ),
        4,
        24,
    );
    let live = generator.live();
    let cancel = CancellationToken::new();
    let _follower = EndpointFollower::start(
        scenario.fleet.client(),
        "rollout".into(),
        NAME.into(),
        generator.targets(),
        grpc_target,
        cancel.clone(),
    );
    let running = tokio::spawn(generator.run(cancel.clone()));
    while live.snapshot().ok < 8 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let old_revision = md.spec.model.revision.clone();
    let new_revision = format!("{old_revision}-rebuilt");
    md.spec.model.revision = new_revision.clone();
    scenario.apply(&md).await;
    let status = scenario
        .wait_status(
            "the new revision on every replica",
            Duration::from_secs(400),
            |s| {
                s.current_revision.as_deref() == Some(new_revision.as_str())
                    && s.updated_replicas == 2
                    && s.ready_replicas == 2
                    && s.replicas == 2
            },
        )
        .await;
    assert_eq!(
        status.updated_revision.as_deref(),
        Some(new_revision.as_str())
    );
    // Keep the load on the new pods for a moment, then stop.
    let after = live.snapshot().ok;
    while live.snapshot().ok < after + 8 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cancel.cancel();
    let report = running.await.expect("load task").expect("load run");
    let endpoints = scenario.ready_endpoints().await;
    assert_eq!(endpoints.len(), 2);
    for address in &endpoints {
        assert_eq!(served_revision(address).await, new_revision);
    }
    let snapshot = live.snapshot();
    assert_eq!(
        snapshot.failed(),
        0,
        "requests failed during the rollout: {}",
        report.to_text()
    );
    assert!(snapshot.ok >= 16);
    eprintln!(
        "rollout: {:.0}s, {} requests, none failed",
        started.elapsed().as_secs_f64(),
        snapshot.ok
    );
    scenario.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_engine_restarts_and_a_lost_prometheus_holds_the_fleet() {
    let started = Instant::now();
    let mut scenario = Scenario::start("failure").await;
    let mut md = scenario.example();
    md.spec.engine.max_num_seqs = 2;
    md.spec.replicas.min = 1;
    md.spec.replicas.max = 2;
    md.spec.autoscaling.target_queue_depth = 2;
    md.spec.autoscaling.window = "6s".into();
    scenario.apply(&md).await;
    scenario.wait_ready(1, POD_START).await;
    scenario
        .wait_status("ScalingActive", Duration::from_secs(60), |s| {
            condition(s, SCALING_ACTIVE).is_some_and(|c| c.status == "True")
        })
        .await;

    // Kill the engine's process, as a crash would: the kubelet restarts the container, the
    // status follows.
    let pods = scenario.pods().await;
    assert_eq!(pods.len(), 1);
    let pod_name = pods[0].metadata.name.clone().expect("a pod name");
    scenario
        .fleet
        .node()
        .kill_container(&pod_name, "engine")
        .expect("killing the engine container's process");
    scenario
        .wait_status(
            "the status to show the lost replica",
            Duration::from_secs(60),
            |s| s.ready_replicas == 0,
        )
        .await;
    scenario.wait_ready(1, POD_START).await;
    let pods = scenario.pods().await;
    let restarts: i32 = pods
        .iter()
        .filter_map(|p| p.status.as_ref()?.container_statuses.as_ref())
        .flatten()
        .map(|c| c.restart_count)
        .sum();
    assert_eq!(restarts, 1, "the engine container restarted once");
    assert_eq!(
        scenario.pods().await[0].metadata.name.as_deref(),
        Some(pod_name.as_str()),
        "the same pod, its container restarted"
    );

    // Prometheus goes away: the fleet keeps its size and says why.
    scenario.fleet.prometheus_mut().stop();
    let status = scenario
        .wait_status("ScalingActive=False", Duration::from_secs(60), |s| {
            condition(s, SCALING_ACTIVE).is_some_and(|c| c.status == "False")
        })
        .await;
    let reason = condition(&status, SCALING_ACTIVE).map(|c| c.reason.clone());
    assert!(
        reason.as_deref().is_some_and(|r| r.contains("Prometheus")),
        "{reason:?}"
    );
    let pod_ip = scenario.ready_endpoints().await[0].clone();
    let generator = load(vec![grpc_target(&pod_ip)], 10, 64);
    let cancel = CancellationToken::new();
    let running = tokio::spawn(generator.run(cancel.clone()));
    // Queued requests pile up, but with no metric the decision is held.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(scenario.deployment_replicas().await, 1);
    assert_eq!(scenario.status().await.desired_replicas, 1);

    // Prometheus is back: scaling resumes and the load gets its second replica.
    scenario
        .fleet
        .prometheus_mut()
        .start_again()
        .await
        .expect("restarting Prometheus");
    scenario
        .wait_status("scaling to resume", Duration::from_secs(120), |s| {
            condition(s, SCALING_ACTIVE).is_some_and(|c| c.status == "True")
                && s.desired_replicas == 2
        })
        .await;
    cancel.cancel();
    let _ = running.await;
    eprintln!("failure: {:.0}s", started.elapsed().as_secs_f64());
    scenario.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_model_deployment_leaves_nothing_behind() {
    let started = Instant::now();
    let scenario = Scenario::start("delete").await;
    let md = scenario.example();
    scenario.apply(&md).await;
    scenario.wait_ready(1, POD_START).await;
    let node = scenario.fleet.node();
    // While the pod runs the node shows it: the same check that must come back empty.
    let running = node.pod_leftovers().expect("inspecting the node");
    assert!(
        running.iter().any(|l| l.starts_with("sandbox of delete/"))
            && running.iter().any(|l| l.starts_with("container engine"))
            && running.iter().any(|l| l.starts_with("veth"))
            && running.iter().any(|l| l.starts_with("mount")),
        "a running engine pod shows: {running:?}"
    );

    let client = scenario.fleet.client();
    model_deployments(&client, "delete")
        .delete(NAME, &DeleteParams::background())
        .await
        .expect("delete");
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let deployment = Api::<Deployment>::namespaced(client.clone(), "delete")
            .get_opt(NAME)
            .await
            .expect("get");
        let service = Api::<Service>::namespaced(client.clone(), "delete")
            .get_opt(NAME)
            .await
            .expect("get");
        let pdb = Api::<PodDisruptionBudget>::namespaced(client.clone(), "delete")
            .get_opt(NAME)
            .await
            .expect("get");
        let pods = scenario.pods().await;
        let on_node = node.pod_leftovers().expect("inspecting the node");
        let gone = deployment.is_none()
            && service.is_none()
            && pdb.is_none()
            && pods.is_empty()
            && on_node.is_empty();
        if gone {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: deployment={} service={} pdb={} pods={} on the node: {on_node:?}",
            deployment.is_some(),
            service.is_some(),
            pdb.is_some(),
            pods.len(),
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!("delete: {:.0}s", started.elapsed().as_secs_f64());
    scenario.shutdown().await;
}

async fn reqwest_post(url: &str, body: serde_json::Value) -> (u16, String) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let response = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("POST");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}
