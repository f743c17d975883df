//! The operator as it is deployed: the built binary (CLI wiring, SIGTERM, JSON logs), and
//! an operator holding only the permissions in `modelfleet_operator::rbac`.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::process::Stdio;

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, Role, RoleBinding, RoleRef, Subject};
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use modelfleet_operator::api::ModelDeployment;
use modelfleet_operator::rbac;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

async fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

async fn lease_holder(leases: &Api<Lease>) -> Option<String> {
    let lease = leases.get_opt("modelfleet-operator").await.ok().flatten()?;
    lease.spec?.holder_identity.filter(|h| !h.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_reconciles_and_exits_cleanly_on_sigterm() {
    let ns = "binary";
    let cluster = cluster(false);
    let client = cluster.client().await;
    cluster.namespace(&client, ns).await;
    let addr = free_addr();
    let log_dir = tempfile::tempdir().expect("tempdir");
    let log_path = log_dir.path().join("operator.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_modelfleet-operator"))
        .args([
            "run",
            "--namespace",
            ns,
            "--leader-elect",
            "--lease-namespace",
            ns,
        ])
        .args(["--identity", "from-binary", "--log-format", "json"])
        .arg("--telemetry-addr")
        .arg(addr.to_string())
        .env("KUBECONFIG", cluster.kubeconfig_path())
        // What the Helm chart sets from its engine.image value.
        .env(
            "MODELFLEET_ENGINE_IMAGE",
            "registry.example/ml/engine:from-chart",
        )
        // Log lines go to stdout (the container convention); stderr stays for panics.
        .stdout(log)
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start the operator binary");
    let logs = || std::fs::read_to_string(&log_path).unwrap_or_default();

    apply_as_user(&client, ns, &minimal(ns, "chat", "r1")).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let deployment = until("the binary to create the Deployment", || async {
        deployments.get_opt("chat").await.ok().flatten()
    })
    .await;
    let engine_image = deployment
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|p| p.containers.first().and_then(|c| c.image.clone()));
    assert_eq!(
        engine_image.as_deref(),
        Some("registry.example/ml/engine:from-chart"),
        "the engine image comes from MODELFLEET_ENGINE_IMAGE"
    );
    until("/readyz", || async {
        (http_status(addr, "/readyz").await == Some(200)).then_some(())
    })
    .await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    assert_eq!(lease_holder(&leases).await.as_deref(), Some("from-binary"));

    let pid = child.id().expect("pid").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = tokio::time::timeout(TIMEOUT, child.wait())
        .await
        .expect("the operator exits after SIGTERM")
        .expect("wait");
    assert!(status.success(), "exit status {status}; logs:\n{}", logs());
    assert_eq!(
        lease_holder(&leases).await,
        None,
        "the lease was not released on shutdown"
    );

    let text = logs();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "no log lines");
    for line in lines {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
    }
}

/// Creates a service account bound to exactly the rules in `modelfleet_operator::rbac` and
/// returns a client that authenticates as it.
async fn least_privilege_client(
    admin: &Client,
    cluster: &SharedCluster,
    home: &str,
    watched: &str,
) -> Client {
    let meta = |name: &str, ns: Option<&str>| ObjectMeta {
        name: Some(name.into()),
        namespace: ns.map(Into::into),
        ..ObjectMeta::default()
    };
    let pp = PostParams::default();
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), home);
    accounts
        .create(
            &pp,
            &ServiceAccount {
                metadata: meta("operator", Some(home)),
                ..Default::default()
            },
        )
        .await
        .expect("service account");
    let subject = Subject {
        kind: "ServiceAccount".into(),
        name: "operator".into(),
        namespace: Some(home.into()),
        ..Subject::default()
    };
    let cluster_role = ClusterRole {
        metadata: meta("modelfleet-operator-test", None),
        rules: Some(rbac::controller_rules()),
        ..ClusterRole::default()
    };
    Api::<ClusterRole>::all(admin.clone())
        .create(&pp, &cluster_role)
        .await
        .expect("cluster role");
    // Bound in the watched namespace only: a namespace-scoped install.
    let binding = RoleBinding {
        metadata: meta("modelfleet-operator", Some(watched)),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: "modelfleet-operator-test".into(),
        },
        subjects: Some(vec![subject.clone()]),
    };
    Api::<RoleBinding>::namespaced(admin.clone(), watched)
        .create(&pp, &binding)
        .await
        .expect("binding");
    let role = Role {
        metadata: meta("modelfleet-operator-leader", Some(home)),
        rules: Some(rbac::leader_election_rules()),
    };
    Api::<Role>::namespaced(admin.clone(), home)
        .create(&pp, &role)
        .await
        .expect("role");
    let leader_binding = RoleBinding {
        metadata: meta("modelfleet-operator-leader", Some(home)),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: "modelfleet-operator-leader".into(),
        },
        subjects: Some(vec![subject]),
    };
    Api::<RoleBinding>::namespaced(admin.clone(), home)
        .create(&pp, &leader_binding)
        .await
        .expect("leader binding");

    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    let token: TokenRequest = accounts
        .create_subresource("token", "operator", &pp, &request)
        .await
        .expect("token");
    let token = token.status.expect("token status").token;

    let kubeconfig = Kubeconfig::read_from(cluster.kubeconfig_path()).expect("kubeconfig");
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("config");
    config.auth_info = AuthInfo {
        token: Some(token.into()),
        ..AuthInfo::default()
    };
    Client::try_from(config).expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_works_with_only_the_documented_permissions() {
    let (home, watched) = ("operator-system", "team");
    let cluster = cluster(false);
    let admin = cluster.client().await;
    cluster.namespace(&admin, home).await;
    cluster.namespace(&admin, watched).await;
    let client = least_privilege_client(&admin, cluster, home, watched).await;

    let operator = start_operator(
        client,
        watched,
        "restricted",
        Some(test_lease(home, "restricted")),
    );
    apply_as_user(&admin, watched, &minimal(watched, "chat", "r1")).await;
    let mds: Api<ModelDeployment> = Api::namespaced(admin.clone(), watched);
    until("status written by the restricted operator", || async {
        mds.get("chat").await.ok().filter(|md| md.status.is_some())
    })
    .await;
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), watched);
    let services: Api<Service> = Api::namespaced(admin.clone(), watched);
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(admin.clone(), watched);
    assert!(deployments.get_opt("chat").await.expect("get").is_some());
    assert!(services.get_opt("chat").await.expect("get").is_some());
    assert!(pdbs.get_opt("chat").await.expect("get").is_some());
    let events: Api<Event> = Api::namespaced(admin.clone(), watched);
    until("the Created event", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("Created"))
    })
    .await;
    let errors: u64 = modelfleet_operator::Error::METRIC_LABELS
        .iter()
        .map(|l| {
            operator
                .metrics
                .reconcile_errors
                .with_label_values(&[*l])
                .get()
        })
        .sum();
    assert_eq!(errors, 0, "reconciles failed (forbidden?)");
    operator.stop().await.expect("stops cleanly");
}
