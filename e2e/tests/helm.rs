//! The Helm chart (`charts/modelfleet`), proven with the real `helm` and `kubectl` against a
//! real control plane with RBAC on: the operator's own pods, run from the operator image
//! (`make images`) by a real node's kubelet and containerd from the chart's Deployment under
//! the chart's service account, reconcile the example ModelDeployment
//! with exactly the permissions the chart grants. Also: the chart's static checks (lint, the
//! values schema, RBAC equal to `modelfleet_operator::rbac`, CRDs equal to `crds/`), upgrade and
//! uninstall, and the GitOps properties of a ModelDeployment applied with `kubectl`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::LogParams;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, ResourceExt};
use modelfleet_e2e::images::Image;
use modelfleet_e2e::real_node::{RealNode, RealNodeOptions};
use modelfleet_e2e::{Cluster, ClusterOptions, tools, wait};
use modelfleet_operator::api::ModelDeployment;
use modelfleet_operator::controller::FIELD_MANAGER;
use modelfleet_operator::rbac;

/// Generous: these tests share two cores with builds and with each other.
const TIMEOUT: Duration = Duration::from_secs(240);
const RELEASE: &str = "modelfleet";
/// The release's full name, which names its ServiceAccount, ClusterRole, Deployment, Lease.
const FULLNAME: &str = "modelfleet";
const OPERATOR_NS: &str = "modelfleet-system";
const TEAM_NS: &str = "team";
const NODE: &str = "node-0";
/// The example's name (`examples/modeldeployment.yaml`).
const EXAMPLE: &str = "smollm2";
const CRD_NAME: &str = "modeldeployments.modelfleet.dev";
const INSTANCE_SELECTOR: &str = "app.kubernetes.io/instance=modelfleet";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("the repository root")
}

fn chart() -> String {
    repo().join("charts/modelfleet").display().to_string()
}

fn example_path() -> String {
    repo()
        .join("examples/modeldeployment.yaml")
        .display()
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// Running helm and kubectl

/// What a command printed and how it ended.
struct Ran {
    command: String,
    success: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Ran {
    /// Panics, with everything the command printed, unless it succeeded.
    fn ok(self) -> Self {
        assert!(self.success, "{}", self.describe());
        self
    }

    /// Panics unless it failed; returns its stderr.
    fn refused(self) -> String {
        assert!(!self.success, "expected a refusal: {}", self.describe());
        self.stderr
    }

    fn describe(&self) -> String {
        format!(
            "`{}` exited with {:?}\nstdout:\n{}\nstderr:\n{}",
            self.command, self.code, self.stdout, self.stderr
        )
    }
}

/// The provisioned helm and kubectl, pointed at one cluster, with helm's own state kept in a
/// directory of the test's.
struct Tools {
    helm: PathBuf,
    kubectl: PathBuf,
    kubeconfig: Option<PathBuf>,
    home: tempfile::TempDir,
}

impl Tools {
    fn new(kubeconfig: Option<&Path>) -> Self {
        Self {
            helm: tools::tool("helm").expect("helm is provisioned (make tools)"),
            kubectl: tools::tool("kubectl").expect("kubectl is provisioned (make tools)"),
            kubeconfig: kubeconfig.map(Path::to_path_buf),
            home: tempfile::tempdir().expect("tempdir"),
        }
    }

    async fn run(&self, program: &Path, args: &[&str]) -> Ran {
        let mut command = tokio::process::Command::new(program);
        command.args(args).kill_on_drop(true);
        let home = self.home.path();
        command
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"))
            .env("KUBECACHEDIR", home.join("kube-cache"));
        match &self.kubeconfig {
            Some(path) => command.env("KUBECONFIG", path),
            None => command.env("KUBECONFIG", home.join("no-cluster")),
        };
        let name = program.file_name().unwrap_or_default().to_string_lossy();
        let described = format!("{name} {}", args.join(" "));
        let output = command
            .output()
            .await
            .unwrap_or_else(|e| panic!("running {described}: {e}"));
        Ran {
            command: described,
            success: output.status.success(),
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    async fn helm(&self, args: &[&str]) -> Ran {
        self.run(&self.helm, args).await
    }

    async fn kubectl(&self, args: &[&str]) -> Ran {
        self.run(&self.kubectl, args).await
    }

    /// `helm template` of the chart with `--set` values; the documents it renders.
    async fn template(&self, sets: &[&str]) -> Vec<serde_yaml::Value> {
        let chart = chart();
        let mut args = vec![
            "template",
            RELEASE,
            chart.as_str(),
            "--namespace",
            OPERATOR_NS,
        ];
        for set in sets {
            args.extend(["--set", set]);
        }
        let rendered = self.helm(&args).await.ok().stdout;
        documents(&rendered)
    }
}

/// The documents of a multi-document YAML stream, without empty ones.
fn documents(text: &str) -> Vec<serde_yaml::Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).expect("helm renders valid YAML"))
        .filter(|v: &serde_yaml::Value| !v.is_null())
        .collect()
}

fn of_kind<'a>(docs: &'a [serde_yaml::Value], kind: &str) -> Vec<&'a serde_yaml::Value> {
    docs.iter()
        .filter(|d| d["kind"].as_str() == Some(kind))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// A cluster with a real node that has the operator image

/// Fields drop in order: the node removes the operator pods before the control plane goes.
struct Fixture {
    _node: RealNode,
    tools: Tools,
    client: Client,
    // Kept for its lifetime: dropping it stops the control plane.
    _cluster: Cluster,
}

async fn fixture() -> Fixture {
    let cluster = Cluster::start(
        ClusterOptions::full()
            .with_own_service_range()
            .expect("a free Service range"),
    )
    .await
    .expect("control plane starts");
    let client = cluster.client();
    let node = RealNode::start(
        &cluster,
        RealNodeOptions {
            images: vec![Image::Operator],
            ..RealNodeOptions::new(NODE)
        },
    )
    .await
    .expect("the real node starts");
    cluster
        .create_namespace(TEAM_NS)
        .await
        .expect("team namespace");
    // The operator's namespace admits only pods that meet the "restricted" Pod Security
    // Standard, as a careful platform team would set it up.
    let namespace: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": OPERATOR_NS,
            "labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
            },
        },
    }))
    .expect("namespace");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .expect("operator namespace");
    let tools = Tools::new(Some(cluster.kubeconfig_path()));
    Fixture {
        _node: node,
        tools,
        client,
        _cluster: cluster,
    }
}

impl Fixture {
    /// `helm install` of the chart into OPERATOR_NS, waiting until the operator is available.
    async fn install(&self, sets: &[&str]) -> Ran {
        let chart = chart();
        let mut args = vec![
            "install",
            RELEASE,
            chart.as_str(),
            "--namespace",
            OPERATOR_NS,
            "--create-namespace",
            "--wait",
            "--timeout",
            "4m",
        ];
        for set in sets {
            args.extend(["--set", set]);
        }
        let ran = self.tools.helm(&args).await;
        if !ran.success {
            panic!("{}\n{}", ran.describe(), self.operator_diagnostics().await);
        }
        ran
    }

    fn operator_pods_api(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), OPERATOR_NS)
    }

    /// The operator's pods, not being deleted.
    async fn operator_pods(&self) -> Vec<Pod> {
        let list = self
            .operator_pods_api()
            .list(&ListParams::default().labels(INSTANCE_SELECTOR))
            .await
            .expect("list operator pods");
        list.items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect()
    }

    /// Waits until `count` operator pods run and are Ready, and returns them.
    async fn ready_operator_pods(&self, count: usize) -> Vec<Pod> {
        let what = format!("{count} Ready operator pods");
        wait::until(&what, TIMEOUT, || async {
            let pods = self.operator_pods().await;
            (pods.len() == count && pods.iter().all(is_ready)).then_some(pods)
        })
        .await
    }

    /// The operator container's log in `pod` (stdout and stderr, the previous run's first
    /// if it restarted), through the API server from the kubelet.
    async fn operator_log(&self, pod: &Pod) -> String {
        let name = pod.name_any();
        let api = self.operator_pods_api();
        let params = |previous| LogParams {
            container: Some("operator".into()),
            previous,
            ..LogParams::default()
        };
        let previous = api.logs(&name, &params(true)).await.unwrap_or_default();
        let current = api.logs(&name, &params(false)).await.unwrap_or_default();
        previous + &current
    }

    /// Pod states and operator logs, for a failure message.
    async fn operator_diagnostics(&self) -> String {
        let mut out = String::new();
        for pod in self.operator_pods().await {
            out.push_str(&format!(
                "pod {}: {:?}\nlog:\n{}\n",
                pod.name_any(),
                pod.status.as_ref().map(|s| &s.container_statuses),
                self.operator_log(&pod).await
            ));
        }
        out
    }

    /// Who holds the operator's Lease now.
    async fn lease_holder(&self) -> Option<String> {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), OPERATOR_NS);
        let lease = leases.get_opt(FULLNAME).await.ok().flatten()?;
        lease.spec?.holder_identity.filter(|h| !h.is_empty())
    }

    /// The operator pod holding the Lease.
    async fn leader(&self) -> Pod {
        wait::until("an operator pod to hold the lease", TIMEOUT, || async {
            let holder = self.lease_holder().await?;
            self.operator_pods()
                .await
                .into_iter()
                .find(|p| p.name_any() == holder)
        })
        .await
    }

    /// `kubectl apply --server-side` of the example into TEAM_NS; the object it returns.
    async fn apply_example(&self) -> ModelDeployment {
        let path = example_path();
        let ran = self
            .tools
            .kubectl(&[
                "apply",
                "--server-side",
                "-n",
                TEAM_NS,
                "-f",
                &path,
                "-o",
                "json",
            ])
            .await
            .ok();
        serde_json::from_str(&ran.stdout).expect("kubectl prints the applied ModelDeployment")
    }

    fn model_deployments(&self) -> Api<ModelDeployment> {
        Api::namespaced(self.client.clone(), TEAM_NS)
    }

    /// Waits until the operator has written a status for the current generation.
    async fn reconciled(&self) -> ModelDeployment {
        let mds = self.model_deployments();
        wait::until(
            "the example's status for its generation",
            TIMEOUT,
            || async {
                let md = mds.get(EXAMPLE).await.ok()?;
                let observed = md.status.as_ref()?.observed_generation?;
                (Some(observed) == md.metadata.generation).then_some(md)
            },
        )
        .await
    }
}

impl Fixture {
    /// `kubectl auth can-i`: may the chart's ServiceAccount patch ModelDeployment status in
    /// TEAM_NS?
    async fn operator_can_patch_status(&self) -> bool {
        let account = format!("system:serviceaccount:{OPERATOR_NS}:{FULLNAME}");
        let ran = self
            .tools
            .kubectl(&[
                "auth",
                "can-i",
                "patch",
                "modeldeployments.modelfleet.dev",
                "--subresource=status",
                "-n",
                TEAM_NS,
                "--as",
                &account,
            ])
            .await;
        match ran.stdout.trim() {
            "yes" => true,
            "no" => false,
            _ => panic!("{}", ran.describe()),
        }
    }

    /// Waits until the example's ScalingActive condition has `reason`.
    async fn until_scaling_reason(&self, reason: &str) -> ModelDeployment {
        let mds = self.model_deployments();
        let what = format!("ScalingActive with reason {reason}");
        wait::until(&what, TIMEOUT, || async {
            let md = mds.get(EXAMPLE).await.ok()?;
            let condition = md.status.as_ref()?.condition("ScalingActive")?.clone();
            (condition.reason == reason).then_some(md)
        })
        .await
    }
}

/// The body of a plain HTTP GET from the test process, if it answers 200.
async fn http_get(ip: &str, port: u16, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let connect = tokio::net::TcpStream::connect((ip, port));
    let mut stream = tokio::time::timeout(Duration::from_secs(5), connect)
        .await
        .ok()?
        .ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {ip}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    (head.split_whitespace().nth(1)? == "200").then(|| body.to_string())
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn container_args(pod: &Pod) -> Vec<String> {
    pod.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.args.clone())
        .unwrap_or_default()
}

async fn events_about(client: &Client, namespace: &str, name: &str) -> Vec<Event> {
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    let list = events
        .list(&ListParams::default())
        .await
        .expect("list events");
    list.items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The chart on its own

#[tokio::test]
async fn helm_lint_is_clean_with_default_and_optional_values() {
    let tools = Tools::new(None);
    let chart = chart();
    for sets in [
        vec![],
        vec!["metrics.serviceMonitor.enabled=true"],
        vec!["metrics.podMonitor.enabled=true", "watchNamespaces={team}"],
        vec![
            "prometheus.url=http://prometheus.monitoring.svc:9090",
            "replicaCount=1",
        ],
    ] {
        let mut args = vec!["lint", "--strict", chart.as_str()];
        for set in &sets {
            args.extend(["--set", set]);
        }
        let ran = tools.helm(&args).await.ok();
        let text = format!("{}{}", ran.stdout, ran.stderr);
        assert!(
            text.contains("1 chart(s) linted, 0 chart(s) failed"),
            "{}",
            ran.describe()
        );
        for line in text.lines() {
            assert!(
                !line.contains("[WARNING]") && !line.contains("[ERROR]"),
                "helm lint {sets:?}: {line}"
            );
        }
    }
}

#[test]
fn the_charts_crds_are_the_generated_crds_byte_for_byte() {
    let names = |dir: &Path| -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect()
    };
    let generated = repo().join("crds");
    let in_chart = repo().join("charts/modelfleet/crds");
    assert_eq!(
        names(&generated),
        names(&in_chart),
        "charts/modelfleet/crds must hold the files of crds/: run `make crds`"
    );
    for name in names(&generated) {
        let a = std::fs::read(generated.join(&name)).expect("read");
        let b = std::fs::read(in_chart.join(&name)).expect("read");
        assert!(
            a == b,
            "charts/modelfleet/crds/{name} differs from crds/{name}: run `make crds`"
        );
    }
}

fn rules_of(doc: &serde_yaml::Value) -> Vec<PolicyRule> {
    serde_yaml::from_value(doc["rules"].clone()).expect("rules parse as PolicyRules")
}

#[tokio::test]
async fn the_charts_rbac_grants_exactly_the_operators_rules() {
    let tools = Tools::new(None);
    let docs = tools.template(&[]).await;
    let cluster_roles = of_kind(&docs, "ClusterRole");
    assert_eq!(cluster_roles.len(), 1);
    assert_eq!(
        rules_of(cluster_roles[0]),
        rbac::controller_rules(),
        "charts/modelfleet/templates/clusterrole.yaml must grant exactly operator/src/rbac.rs's rules"
    );
    let roles = of_kind(&docs, "Role");
    assert_eq!(roles.len(), 1);
    assert_eq!(
        roles[0]["metadata"]["namespace"].as_str(),
        Some(OPERATOR_NS)
    );
    assert_eq!(
        rules_of(roles[0]),
        rbac::leader_election_rules(),
        "the chart's leader-election Role must grant exactly operator/src/rbac.rs's rules"
    );
    // Watching every namespace: one ClusterRoleBinding, no RoleBinding to the ClusterRole.
    let bindings = of_kind(&docs, "ClusterRoleBinding");
    assert_eq!(bindings.len(), 1);
    assert_eq!(bindings[0]["roleRef"]["name"].as_str(), Some(FULLNAME));
    assert_eq!(
        bindings[0]["subjects"][0]["name"].as_str(),
        Some(FULLNAME),
        "bound to the chart's ServiceAccount"
    );

    // Watching one namespace: the same ClusterRole, bound there only.
    let docs = tools.template(&["watchNamespaces={team}"]).await;
    assert!(of_kind(&docs, "ClusterRoleBinding").is_empty());
    let to_cluster_role: Vec<_> = of_kind(&docs, "RoleBinding")
        .into_iter()
        .filter(|b| b["roleRef"]["kind"].as_str() == Some("ClusterRole"))
        .collect();
    assert_eq!(to_cluster_role.len(), 1);
    assert_eq!(
        to_cluster_role[0]["metadata"]["namespace"].as_str(),
        Some(TEAM_NS)
    );
    let deployment = &of_kind(&docs, "Deployment")[0];
    let args = &deployment["spec"]["template"]["spec"]["containers"][0]["args"];
    let args: Vec<&str> = args
        .as_sequence()
        .expect("args")
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert!(args.contains(&"--namespace=team"), "{args:?}");

    // RBAC left to the user: nothing of it rendered.
    let docs = tools.template(&["rbac.create=false"]).await;
    for kind in ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"] {
        assert!(of_kind(&docs, kind).is_empty(), "{kind} rendered");
    }
}

#[tokio::test]
async fn the_operator_deployment_is_highly_available_restricted_and_configured_by_values() {
    let tools = Tools::new(None);
    let docs = tools
        .template(&[
            "prometheus.url=http://prometheus.monitoring.svc:9090",
            "logLevel=debug",
            "logFormat=text",
            "image.tag=1.2.3",
            "engine.image.tag=1.2.4",
            "podAnnotations.team=ml",
            "nodeSelector.pool=system",
            "tolerations[0].key=dedicated",
            "tolerations[0].operator=Exists",
            "autoscaler.interval=30s",
        ])
        .await;
    let deployment = of_kind(&docs, "Deployment")[0];
    let spec = &deployment["spec"];
    assert_eq!(spec["replicas"].as_u64(), Some(2));
    let pod = &spec["template"]["spec"];
    assert_eq!(
        spec["template"]["metadata"]["annotations"]["team"].as_str(),
        Some("ml")
    );
    assert_eq!(pod["serviceAccountName"].as_str(), Some(FULLNAME));
    assert_eq!(pod["nodeSelector"]["pool"].as_str(), Some("system"));
    assert_eq!(pod["tolerations"][0]["key"].as_str(), Some("dedicated"));
    // The Pod Security Standard "restricted" profile.
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"].as_str(),
        Some("RuntimeDefault")
    );
    let container = &pod["containers"][0];
    let security = &container["securityContext"];
    assert_eq!(security["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(security["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(security["capabilities"]["drop"][0].as_str(), Some("ALL"));
    assert_eq!(
        container["image"].as_str(),
        Some("ghcr.io/modelfleet/operator:1.2.3")
    );
    assert_eq!(
        container["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
    assert_eq!(
        container["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    assert!(container["resources"]["requests"]["cpu"].is_string());
    assert!(container["resources"]["limits"]["memory"].is_string());
    let args: Vec<&str> = container["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    for expected in ["run", "--leader-elect", "--log-format=text"] {
        assert!(args.contains(&expected), "{expected} in {args:?}");
    }
    assert!(
        !args.iter().any(|a| a.starts_with("--namespace")),
        "every namespace by default: {args:?}"
    );
    let env = |name: &str| -> Option<String> {
        container["env"]
            .as_sequence()?
            .iter()
            .find(|e| e["name"].as_str() == Some(name))?["value"]
            .as_str()
            .map(str::to_string)
    };
    assert_eq!(env("RUST_LOG").as_deref(), Some("debug"));
    assert_eq!(
        env("MODELFLEET_PROMETHEUS_URL").as_deref(),
        Some("http://prometheus.monitoring.svc:9090")
    );
    assert_eq!(env("MODELFLEET_AUTOSCALE_INTERVAL").as_deref(), Some("30s"));
    assert_eq!(
        env("MODELFLEET_ENGINE_IMAGE").as_deref(),
        Some("ghcr.io/modelfleet/engine:1.2.4")
    );

    // Monitors are off by default; on, they select the metrics Service or the pods.
    let defaults = tools.template(&[]).await;
    assert!(of_kind(&defaults, "ServiceMonitor").is_empty());
    assert!(of_kind(&defaults, "PodMonitor").is_empty());
    let default_env =
        &of_kind(&defaults, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["env"];
    assert!(
        !default_env
            .as_sequence()
            .expect("env")
            .iter()
            .any(|e| e["name"].as_str() == Some("MODELFLEET_PROMETHEUS_URL")),
        "no Prometheus URL unless one is given: {default_env:?}"
    );
    let service = of_kind(&defaults, "Service")[0];
    assert_eq!(
        service["spec"]["ports"][0]["name"].as_str(),
        Some("metrics")
    );
    let docs = tools
        .template(&["metrics.serviceMonitor.enabled=true"])
        .await;
    let monitor = of_kind(&docs, "ServiceMonitor")[0];
    assert_eq!(
        monitor["spec"]["selector"]["matchLabels"],
        service["spec"]["selector"]
    );
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"].as_str(),
        Some("metrics")
    );
    let docs = tools.template(&["metrics.podMonitor.enabled=true"]).await;
    let monitor = of_kind(&docs, "PodMonitor")[0];
    assert_eq!(
        monitor["spec"]["selector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
}

#[tokio::test]
async fn bad_values_are_rejected_with_a_message_naming_the_value() {
    let tools = Tools::new(None);
    let chart = chart();
    // (value, what the message must say)
    let cases = [
        ("logFormat=xml", "/logFormat"),
        ("replicaCount=two", "/replicaCount"),
        ("prometheus.url=prometheus:9090", "/prometheus/url"),
        ("image.repository=Not An Image", "/image/repository"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("metrics.port=70000", "/metrics/port"),
        ("autoscaler.interval=soon", "/autoscaler/interval"),
        ("watchNamespaces[0]=Team_A", "/watchNamespaces/0"),
        ("replicas=2", "'replicas' not allowed"),
        (
            "watchNamespaces={a,b}",
            "watchNamespaces: the operator watches",
        ),
        (
            "leaderElection.enabled=false",
            "need leaderElection.enabled=true",
        ),
        (
            "leaderElection.leaseDurationSeconds=5",
            "renewDeadlineSeconds (10) < leaseDurationSeconds (5)",
        ),
        (
            "metrics.serviceMonitor.enabled=true,metrics.podMonitor.enabled=true",
            "serviceMonitor or podMonitor, not both",
        ),
    ];
    for (set, expected) in cases {
        let stderr = tools
            .helm(&["template", RELEASE, chart.as_str(), "--set", set])
            .await
            .refused();
        assert!(
            stderr.contains(expected),
            "--set {set}: the message should contain {expected:?}:\n{stderr}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// On the cluster

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_runs_the_operator_under_its_service_account_and_the_example_reconciles() {
    let f = fixture().await;
    let ran = f.install(&[]).await;
    assert!(
        ran.stdout.contains("kubectl apply --server-side"),
        "NOTES tells what to do next:\n{}",
        ran.stdout
    );

    // The CRD came from the chart.
    let crds: Api<CustomResourceDefinition> = Api::all(f.client.clone());
    assert!(crds.get_opt(CRD_NAME).await.expect("get").is_some());

    let pods = f.ready_operator_pods(2).await;
    for pod in &pods {
        let spec = pod.spec.as_ref().expect("spec");
        assert_eq!(spec.service_account_name.as_deref(), Some(FULLNAME));
        assert_eq!(spec.node_name.as_deref(), Some(NODE));
        let status = &pod.status.as_ref().expect("status").container_statuses;
        let container = &status.as_ref().expect("statuses")[0];
        let id = container.container_id.clone().unwrap_or_default();
        assert!(
            id.starts_with("containerd://"),
            "containerd runs the operator: {id}"
        );
        assert_eq!(container.image, Image::Operator.tag(), "from its image");
    }
    // They were admitted under the "restricted" Pod Security Standard, which is enforced:
    // a pod that asks for less is refused there.
    let loose: Pod = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "loose" },
        "spec": { "containers": [{ "name": "c", "image": Image::Operator.tag() }] },
    }))
    .expect("pod");
    let refused = f
        .operator_pods_api()
        .create(&PostParams::default(), &loose)
        .await
        .expect_err("a pod without the restricted security context is refused");
    assert!(refused.to_string().contains("PodSecurity"), "{refused}");

    // One of them leads, under its pod name (POD_NAME from the downward API), which it can
    // only do with the chart's leader-election Role.
    let leader = f.leader().await;
    let names: Vec<String> = pods.iter().map(ResourceExt::name_any).collect();
    assert!(names.contains(&leader.name_any()));

    // The metrics Service selects both replicas; the leader's /metrics says it leads.
    let slices: Api<EndpointSlice> = Api::namespaced(f.client.clone(), OPERATOR_NS);
    let selector = format!("kubernetes.io/service-name={FULLNAME}-metrics");
    let pod_ips: BTreeSet<String> = pods
        .iter()
        .filter_map(|p| p.status.as_ref()?.pod_ip.clone())
        .collect();
    wait::until("the metrics Service's endpoints", TIMEOUT, || async {
        let list = slices
            .list(&ListParams::default().labels(&selector))
            .await
            .ok()?;
        let ips: BTreeSet<String> = list
            .items
            .iter()
            .flat_map(|s| s.endpoints.iter())
            .flat_map(|e| e.addresses.iter().cloned())
            .collect();
        let port = list.items.first()?.ports.as_ref()?.first()?.port;
        (ips == pod_ips && port == Some(8080)).then_some(())
    })
    .await;
    let leader_ip = leader
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("leader IP");
    let metrics = wait::until("the leader's /metrics", TIMEOUT, || async {
        http_get(&leader_ip, 8080, "/metrics").await
    })
    .await;
    assert!(
        metrics.lines().any(|l| l == "modelfleet_operator_leader 1"),
        "{metrics}"
    );

    let applied = f.apply_example().await;
    assert_eq!(applied.name_any(), EXAMPLE);
    let md = f.reconciled().await;
    let status = md.status.as_ref().expect("status");
    assert_eq!(status.desired_replicas, 1, "{status:?}");
    assert_eq!(
        status.endpoint.as_deref().map(|e| e.contains(EXAMPLE)),
        Some(true),
        "{status:?}"
    );
    assert!(
        status.conditions.iter().any(|c| c.type_ == "Ready"),
        "{status:?}"
    );
    // No prometheus.url by default: the autoscaler is off and says why.
    f.until_scaling_reason("NoPrometheus").await;
    let deployments: Api<Deployment> = Api::namespaced(f.client.clone(), TEAM_NS);
    let services: Api<Service> = Api::namespaced(f.client.clone(), TEAM_NS);
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(f.client.clone(), TEAM_NS);
    let deployment = deployments.get(EXAMPLE).await.expect("the Deployment");
    assert!(services.get_opt(EXAMPLE).await.expect("get").is_some());
    assert!(pdbs.get_opt(EXAMPLE).await.expect("get").is_some());
    assert!(
        deployment
            .managed_fields()
            .iter()
            .any(|m| m.manager.as_deref() == Some(FIELD_MANAGER)),
        "applied by the operator"
    );
    // The event says which replica did it: the leader pod.
    let events = wait::until("the Created event", TIMEOUT, || async {
        let events = events_about(&f.client, TEAM_NS, EXAMPLE).await;
        events
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("Created"))
    })
    .await;
    assert_eq!(
        events.reporting_instance.as_deref(),
        Some(leader.name_any().as_str())
    );
    let log = f.operator_log(&leader).await;
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "nothing was refused with the chart's permissions:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_example_applied_with_kubectl_server_side_stays_in_sync_after_the_operator_reconciles() {
    let f = fixture().await;
    f.install(&[]).await;
    let first = f.apply_example().await;
    let reconciled = f.reconciled().await;
    assert_eq!(reconciled.metadata.generation, first.metadata.generation);

    // Applying the same manifest again changes nothing: same resourceVersion. The operator
    // may write status in between; that is told apart by who changed what.
    let mds = f.model_deployments();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let before = mds.get(EXAMPLE).await.expect("get");
        let after = f.apply_example().await;
        if after.resource_version() == before.resource_version() {
            break;
        }
        assert_eq!(
            after.metadata.generation, before.metadata.generation,
            "the second apply changed the spec"
        );
        let user_entry = |md: &ModelDeployment| {
            md.managed_fields()
                .iter()
                .find(|m| m.manager.as_deref() == Some("kubectl"))
                .cloned()
        };
        assert_eq!(
            user_entry(&after),
            user_entry(&before),
            "the second apply changed the fields kubectl owns"
        );
        assert!(
            attempts < 10,
            "the resourceVersion kept changing under the second apply"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    // The operator owns status only; the spec is the user's alone.
    let md = mds.get(EXAMPLE).await.expect("get");
    let managers: Vec<_> = md.managed_fields().to_vec();
    let operator_entries: Vec<_> = managers
        .iter()
        .filter(|m| m.manager.as_deref() == Some(FIELD_MANAGER))
        .collect();
    assert!(!operator_entries.is_empty(), "the operator wrote status");
    for entry in &operator_entries {
        assert_eq!(entry.subresource.as_deref(), Some("status"), "{entry:?}");
        let fields = entry.fields_v1.as_ref().map(|f| &f.0);
        let fields = fields.expect("fieldsV1");
        assert!(
            fields.get("f:spec").is_none(),
            "operator owns spec: {fields}"
        );
        assert!(fields.get("f:status").is_some(), "{fields}");
    }
    let user = managers
        .iter()
        .find(|m| m.manager.as_deref() == Some("kubectl"))
        .expect("kubectl's entry");
    assert_eq!(user.operation.as_deref(), Some("Apply"));
    let fields = &user.fields_v1.as_ref().expect("fieldsV1").0;
    assert!(fields.get("f:spec").is_some(), "{fields}");
    for entry in &managers {
        if entry.subresource.is_none() && entry.manager.as_deref() != Some("kubectl") {
            let fields = &entry.fields_v1.as_ref().expect("fieldsV1").0;
            assert!(
                fields.get("f:spec").is_none(),
                "{:?} owns spec fields: {fields}",
                entry.manager
            );
        }
    }

    // kubectl diff of the manifest shows nothing (exit 0), server-side and client-side.
    let path = example_path();
    for extra in [vec!["--server-side"], vec![]] {
        let mut args = vec!["diff", "-n", TEAM_NS, "-f", path.as_str()];
        args.extend(extra);
        let ran = f.tools.kubectl(&args).await;
        assert!(
            ran.success && ran.stdout.trim().is_empty(),
            "{}",
            ran.describe()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_one_cluster_role_rule_the_operator_reports_the_refusal_and_recovers_when_it_is_back()
 {
    let f = fixture().await;
    f.install(&[]).await;
    let leader = f.leader().await;

    let account = format!("system:serviceaccount:{OPERATOR_NS}:{FULLNAME}");
    assert!(f.operator_can_patch_status().await);

    // Take away the status rule, as a cluster admin trimming the ClusterRole might.
    let roles: Api<ClusterRole> = Api::all(f.client.clone());
    let role = roles.get(FULLNAME).await.expect("the chart's ClusterRole");
    let rules = role.rules.clone().unwrap_or_default();
    let index = rules
        .iter()
        .position(|r| r.resources.as_deref() == Some(&["modeldeployments/status".to_string()][..]))
        .expect("the status rule");
    let removed = rules[index].clone();
    let patch = format!(r#"[{{"op":"remove","path":"/rules/{index}"}}]"#);
    f.tools
        .kubectl(&[
            "patch",
            "clusterrole",
            FULLNAME,
            "--type=json",
            "-p",
            &patch,
        ])
        .await
        .ok();

    // The API server's authorizer sees the change before the example is applied.
    wait::until(
        "the status rule to be gone for the API server",
        TIMEOUT,
        || async { (!f.operator_can_patch_status().await).then_some(()) },
    )
    .await;

    f.apply_example().await;
    let event = wait::until("a ReconcileFailed event", TIMEOUT, || async {
        let events = events_about(&f.client, TEAM_NS, EXAMPLE).await;
        events
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("ReconcileFailed"))
    })
    .await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    let note = event.note.clone().unwrap_or_default();
    for expected in [
        "writing the ModelDeployment status",
        "forbidden",
        account.as_str(),
        "patch",
        "modeldeployments/status",
    ] {
        assert!(
            note.contains(expected),
            "the event should say {expected:?}: {note}"
        );
    }
    // The children were made (those rules remain); the status was not written.
    let deployments: Api<Deployment> = Api::namespaced(f.client.clone(), TEAM_NS);
    assert!(deployments.get_opt(EXAMPLE).await.expect("get").is_some());
    let md = f.model_deployments().get(EXAMPLE).await.expect("get");
    assert!(md.status.is_none(), "{:?}", md.status);
    // The leader's log says the same, on a line that names the object.
    let log = wait::until("the refusal in the leader's log", TIMEOUT, || async {
        let log = f.operator_log(&leader).await;
        log.lines()
            .find(|l| l.contains("reconcile failed") && l.contains("forbidden"))
            .map(str::to_string)
    })
    .await;
    assert!(log.contains(&format!("{TEAM_NS}/{EXAMPLE}")), "{log}");

    // Put the rule back: the operator's retries succeed.
    let rule = serde_json::to_string(&removed).expect("rule as JSON");
    let patch = format!(r#"[{{"op":"add","path":"/rules/{index}","value":{rule}}}]"#);
    f.tools
        .kubectl(&[
            "patch",
            "clusterrole",
            FULLNAME,
            "--type=json",
            "-p",
            &patch,
        ])
        .await
        .ok();
    f.reconciled().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_upgrade_with_a_changed_value_rolls_the_operator_and_uninstall_leaves_only_the_crd() {
    let f = fixture().await;
    f.install(&["logFormat=json"]).await;
    let old: BTreeSet<String> = f
        .ready_operator_pods(2)
        .await
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    let old_leader = f.leader().await;
    let first_line = wait::until("a log line from the leader", TIMEOUT, || async {
        f.operator_log(&old_leader)
            .await
            .lines()
            .find(|l| !l.trim().is_empty())
            .map(str::to_string)
    })
    .await;
    assert!(
        serde_json::from_str::<serde_json::Value>(&first_line).is_ok(),
        "JSON logs first: {first_line}"
    );
    f.apply_example().await;
    f.until_scaling_reason("NoPrometheus").await;

    // New values: text logs, and a Prometheus URL (one that refuses connections: the
    // operator says so in ScalingActive, which shows the URL reached it).
    let chart = chart();
    f.tools
        .helm(&[
            "upgrade",
            RELEASE,
            chart.as_str(),
            "--namespace",
            OPERATOR_NS,
            "--reuse-values",
            "--set",
            "logFormat=text",
            "--set",
            "prometheus.url=http://127.0.0.1:9",
            "--set",
            "autoscaler.interval=1s",
            "--wait",
            "--timeout",
            "4m",
        ])
        .await
        .ok();
    // Every old pod is replaced by one running with the new value.
    let new = wait::until("the old operator pods to be gone", TIMEOUT, || async {
        let list = f
            .operator_pods_api()
            .list(&ListParams::default().labels(INSTANCE_SELECTOR))
            .await
            .ok()?;
        let names: BTreeSet<String> = list.items.iter().map(ResourceExt::name_any).collect();
        (names.is_disjoint(&old) && list.items.len() == 2 && list.items.iter().all(is_ready))
            .then_some(list.items)
    })
    .await;
    for pod in &new {
        let args = container_args(pod);
        assert!(args.contains(&"--log-format=text".to_string()), "{args:?}");
    }
    let new_leader = f.leader().await;
    assert!(!old.contains(&new_leader.name_any()));
    let line = wait::until("a log line from the new leader", TIMEOUT, || async {
        f.operator_log(&new_leader)
            .await
            .lines()
            .find(|l| !l.trim().is_empty())
            .map(str::to_string)
    })
    .await;
    assert!(
        serde_json::from_str::<serde_json::Value>(&line).is_err(),
        "text logs after the upgrade: {line}"
    );
    let status = f
        .tools
        .helm(&["status", RELEASE, "-n", OPERATOR_NS, "-o", "json"])
        .await
        .ok();
    let status: serde_json::Value = serde_json::from_str(&status.stdout).expect("status JSON");
    assert_eq!(status["version"].as_u64(), Some(2));
    // The upgraded operator reconciles, with the Prometheus URL from the chart.
    f.until_scaling_reason("PrometheusUnavailable").await;

    // Everything the chart made goes, but the CRD and the ModelDeployments stay.
    let manifest = f
        .tools
        .helm(&["get", "manifest", RELEASE, "-n", OPERATOR_NS])
        .await
        .ok()
        .stdout;
    let objects: Vec<(String, String, String, Option<String>)> = documents(&manifest)
        .iter()
        .map(|d| {
            let api_version = d["apiVersion"].as_str().expect("apiVersion").to_string();
            let kind = d["kind"].as_str().expect("kind").to_string();
            let name = d["metadata"]["name"].as_str().expect("name").to_string();
            let ns = d["metadata"]["namespace"].as_str().map(str::to_string);
            (api_version, kind, name, ns)
        })
        .collect();
    let kinds: BTreeSet<&str> = objects.iter().map(|o| o.1.as_str()).collect();
    for kind in [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
    ] {
        assert!(kinds.contains(kind), "the release has a {kind}: {kinds:?}");
    }
    f.tools
        .helm(&[
            "uninstall",
            RELEASE,
            "-n",
            OPERATOR_NS,
            "--wait",
            "--timeout",
            "4m",
        ])
        .await
        .ok();
    for (api_version, kind, name, ns) in &objects {
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
        let api: Api<DynamicObject> = match ns {
            Some(ns) => Api::namespaced_with(f.client.clone(), ns, &resource),
            None => Api::all_with(f.client.clone(), &resource),
        };
        let what = format!("{kind} {name} to be deleted");
        wait::until(&what, TIMEOUT, || async {
            matches!(api.get_opt(name).await, Ok(None)).then_some(())
        })
        .await;
    }
    wait::until("the operator pods to be gone", TIMEOUT, || async {
        let list = f
            .operator_pods_api()
            .list(&ListParams::default().labels(INSTANCE_SELECTOR))
            .await
            .ok()?;
        list.items.is_empty().then_some(())
    })
    .await;
    let releases = f.tools.helm(&["list", "-A", "-q"]).await.ok().stdout;
    assert!(releases.trim().is_empty(), "releases left: {releases}");
    let crds: Api<CustomResourceDefinition> = Api::all(f.client.clone());
    assert!(
        crds.get_opt(CRD_NAME).await.expect("get").is_some(),
        "the CRD stays"
    );
    let md = f.model_deployments().get_opt(EXAMPLE).await.expect("get");
    assert!(md.is_some(), "the ModelDeployment stays");
    let roles: Api<Role> = Api::namespaced(f.client.clone(), OPERATOR_NS);
    assert!(
        roles
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .is_empty()
    );
}
