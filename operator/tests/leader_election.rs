//! Two operators, one Lease: only the leader reconciles, and a standby takes over when the
//! leader dies (after the lease lapses), shuts down (at once: it releases the lease), or is
//! cut off from the API server (after it has stopped reconciling). Also the telemetry
//! endpoints of a running operator.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use modelfleet_operator::metrics;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

async fn holder(leases: &Api<Lease>) -> Option<String> {
    let lease = leases.get_opt("modelfleet-operator").await.ok().flatten()?;
    lease.spec?.holder_identity.filter(|h| !h.is_empty())
}

async fn wait_for_holder(leases: &Api<Lease>, identity: &str) {
    until(&format!("{identity} to hold the lease"), || async {
        (holder(leases).await.as_deref() == Some(identity)).then_some(())
    })
    .await;
}

async fn wait_for_deployment(client: &Client, ns: &str, name: &str) {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    until(&format!("Deployment {name}"), || async {
        deployments.get_opt(name).await.ok().flatten()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_reconciles_and_a_standby_takes_over_when_it_dies() {
    let ns = "failover";
    let cluster = cluster(false);
    let client = cluster.client().await;
    cluster.namespace(&client, ns).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);

    let first = start_operator(client.clone(), ns, "first", Some(test_lease(ns, "first")));
    wait_for_holder(&leases, "first").await;
    let second = start_operator(client.clone(), ns, "second", Some(test_lease(ns, "second")));

    apply_as_user(&client, ns, &minimal(ns, "one", "r1")).await;
    wait_for_deployment(&client, ns, "one").await;
    assert!(first.reconciles() > 0);
    assert_eq!(
        second.reconciles(),
        0,
        "the standby reconciled while the leader held the lease"
    );
    assert_eq!(second.metrics.leader.get(), 0);
    assert_eq!(first.metrics.leader.get(), 1);

    // The leader dies without releasing the lease; the standby waits out the lease.
    first.kill().await;
    wait_for_holder(&leases, "second").await;
    apply_as_user(&client, ns, &minimal(ns, "two", "r1")).await;
    wait_for_deployment(&client, ns, "two").await;
    assert!(second.reconciles() > 0, "the new leader did not reconcile");
    assert_eq!(second.metrics.leader.get(), 1);
    let lease = leases.get("modelfleet-operator").await.expect("lease");
    assert_eq!(lease.spec.and_then(|s| s.lease_transitions), Some(1));
    second.stop().await.expect("stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_shuts_down_releases_the_lease_to_the_standby() {
    let ns = "handover";
    let cluster = cluster(false);
    let client = cluster.client().await;
    cluster.namespace(&client, ns).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);

    let first = start_operator(client.clone(), ns, "first", Some(test_lease(ns, "first")));
    wait_for_holder(&leases, "first").await;
    let second = start_operator(client.clone(), ns, "second", Some(test_lease(ns, "second")));
    first.stop().await.expect("the leader stops cleanly");
    // Released, the lease says so at once: no holder, or already the standby.
    let after_stop = holder(&leases).await;
    assert!(
        after_stop.is_none() || after_stop.as_deref() == Some("second"),
        "still held by {after_stop:?}"
    );
    wait_for_holder(&leases, "second").await;
    apply_as_user(&client, ns, &minimal(ns, "one", "r1")).await;
    wait_for_deployment(&client, ns, "one").await;
    second.stop().await.expect("stops cleanly");
}

/// One HTTP/1.0 GET; returns (status code, body).
async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((code, body))
}

fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_serves_health_readiness_and_metrics() {
    let ns = "telemetry";
    let cluster = cluster(false);
    let client = cluster.client().await;
    cluster.namespace(&client, ns).await;
    let addr = free_addr();
    let operator = start_operator_with(
        client.clone(),
        ns,
        "watched",
        Some(test_lease(ns, "watched")),
        Some(addr),
    );

    until("/healthz", || async {
        get(addr, "/healthz").await.filter(|(code, _)| *code == 200)
    })
    .await;
    until("/readyz", || async {
        get(addr, "/readyz").await.filter(|(code, _)| *code == 200)
    })
    .await;
    apply_as_user(&client, ns, &minimal(ns, "one", "r1")).await;
    wait_for_deployment(&client, ns, "one").await;
    let (_, body) = until("a reconcile counted in /metrics", || async {
        get(addr, "/metrics").await.filter(|(code, body)| {
            *code == 200
                && body
                    .lines()
                    .any(|l| l.starts_with(metrics::RECONCILES_TOTAL) && !l.ends_with(" 0"))
        })
    })
    .await;
    for name in [
        metrics::RECONCILE_ERRORS_TOTAL,
        metrics::RECONCILE_DURATION_SECONDS,
        metrics::MANAGED_MODELDEPLOYMENTS,
        metrics::LEADER,
    ] {
        assert!(body.contains(name), "{name} missing from /metrics:\n{body}");
    }
    assert!(body.contains(&format!("{} 1", metrics::LEADER)), "{body}");
    operator.stop().await.expect("stops cleanly");
    assert!(
        get(addr, "/healthz").await.is_none(),
        "the server keeps running after shutdown"
    );
}

/// A TCP proxy in front of the API server that can black-hole everything: once it does,
/// bytes in flight either way vanish and new connections are accepted and never answered, as
/// when a network partition cuts a node off (nothing is refused or reset, so the client only
/// notices by its own timeouts).
struct BlackHoleProxy {
    addr: SocketAddr,
    black_holed: Arc<AtomicBool>,
}

impl BlackHoleProxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let black_holed = Arc::new(AtomicBool::new(false));
        let holes = black_holed.clone();
        tokio::spawn(async move {
            // Connections accepted while black-holed are kept open, unanswered.
            let mut swallowed = Vec::new();
            while let Ok((downstream, _)) = listener.accept().await {
                if holes.load(Ordering::SeqCst) {
                    swallowed.push(downstream);
                    continue;
                }
                let Ok(upstream) = tokio::net::TcpStream::connect(upstream).await else {
                    continue;
                };
                let (down_read, down_write) = downstream.into_split();
                let (up_read, up_write) = upstream.into_split();
                tokio::spawn(pump(down_read, up_write, holes.clone()));
                tokio::spawn(pump(up_read, down_write, holes.clone()));
            }
        });
        Self { addr, black_holed }
    }

    fn black_hole(&self) {
        self.black_holed.store(true, Ordering::SeqCst);
    }
}

async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    black_holed: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if black_holed.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// The API server's address, and a client that reaches it through `proxy` instead.
async fn apiserver_and_client_via(
    cluster: &SharedCluster,
    proxy: Option<SocketAddr>,
) -> (SocketAddr, Client) {
    let kubeconfig = Kubeconfig::read_from(cluster.kubeconfig_path()).expect("kubeconfig");
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("config");
    let authority = config
        .cluster_url
        .authority()
        .expect("the API server URL has a host")
        .as_str()
        .to_string();
    let apiserver: SocketAddr = authority.parse().expect("a loopback address and port");
    if let Some(proxy) = proxy {
        // The serving certificate names 127.0.0.1, so TLS still verifies through the proxy.
        config.cluster_url = format!("https://{proxy}").parse().expect("url");
    }
    (apiserver, Client::try_from(config).expect("client"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_api_server_stops_reconciling_before_the_standby_leads() {
    let ns = "partition";
    let cluster = cluster(false);
    let client = cluster.client().await;
    cluster.namespace(&client, ns).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    let (apiserver, _) = apiserver_and_client_via(cluster, None).await;
    let proxy = BlackHoleProxy::start(apiserver).await;
    let (_, through_proxy) = apiserver_and_client_via(cluster, Some(proxy.addr)).await;

    let lease = test_lease(ns, "first");
    let first = start_operator(through_proxy, ns, "first", Some(lease.clone()));
    wait_for_holder(&leases, "first").await;
    let second = start_operator(client.clone(), ns, "second", Some(test_lease(ns, "second")));
    apply_as_user(&client, ns, &minimal(ns, "one", "r1")).await;
    wait_for_deployment(&client, ns, "one").await;
    assert!(
        first.reconciles() > 0,
        "the leader reconciles through the proxy"
    );
    assert_eq!(second.metrics.leader.get(), 0);

    // The leader's every request now hangs, its renewals included.
    proxy.black_hole();
    let cut = Instant::now();
    let mut first_stopped = None;
    let second_leads = loop {
        let now = Instant::now();
        if first_stopped.is_none() && first.metrics.leader.get() == 0 {
            first_stopped = Some(now);
        }
        if second.metrics.leader.get() == 1 {
            break now;
        }
        assert!(now - cut < TIMEOUT, "the standby never took over");
        // A fine grain: the two moments are seconds apart, lease_duration - renew_deadline.
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let Some(first_stopped) = first_stopped else {
        panic!(
            "two leaders: the standby leads {:?} after the cut while the old leader still \
             reconciles",
            second_leads - cut
        );
    };
    assert!(
        first_stopped - cut <= lease.renew_deadline + Duration::from_secs(1),
        "the old leader stopped {:?} after the cut, past its renew deadline of {:?}",
        first_stopped - cut,
        lease.renew_deadline
    );
    eprintln!(
        "cut off: the old leader stopped after {:?}, the standby led after {:?}",
        first_stopped - cut,
        second_leads - cut
    );
    let ended = tokio::time::timeout(TIMEOUT, first.stop())
        .await
        .expect("the old leader's operator ends");
    assert!(
        matches!(
            ended,
            Err(modelfleet_operator::Error::LeadershipLost { .. })
        ),
        "{ended:?}"
    );

    wait_for_holder(&leases, "second").await;
    apply_as_user(&client, ns, &minimal(ns, "two", "r1")).await;
    wait_for_deployment(&client, ns, "two").await;
    second.stop().await.expect("stops cleanly");
}
