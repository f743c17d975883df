//! Kubernetes pod discovery for a Prometheus built without it.
//!
//! Debian's `prometheus` package leaves out `kubernetes_sd_configs` (its Kubernetes client
//! libraries are not packaged), but keeps `http_sd_configs`. So the harness plays that part:
//! a watcher on the API server, authenticated as Prometheus's own service account, keeps the
//! pods in a reflector and serves them on a local HTTP endpoint as target groups carrying
//! the same `__meta_kubernetes_pod_*` labels `kubernetes_sd_configs` (role `pod`) would. The
//! scrape job's relabelling is the one a real cluster's Prometheus would use.
//!
//! It runs on its own thread and runtime, so it outlives whichever runtime started it and
//! stops when dropped.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::KubernetesPods;
use crate::Error;

/// The HTTP service-discovery endpoint and the watcher behind it.
pub(super) struct PodDiscovery {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PodDiscovery {
    /// Starts watching pods with `access` and serving them on a free local port.
    pub(super) fn start(access: &KubernetesPods) -> Result<Self, Error> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .map_err(|e| Error::io("binding the pod discovery endpoint", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::io("configuring the pod discovery endpoint", e))?;
        let port = listener
            .local_addr()
            .map_err(|e| Error::io("reading the pod discovery address", e))?
            .port();
        let client = client_for(access)?;
        let namespaces = access.namespaces.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (started, ready) = std::sync::mpsc::channel::<Result<(), Error>>();
        let thread = std::thread::Builder::new()
            .name("pod-discovery".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = started.send(Err(Error::io("starting a runtime", e)));
                        return;
                    }
                };
                runtime.block_on(async move {
                    // The client is rebuilt here: a kube client belongs to its runtime.
                    let client = match client() {
                        Ok(client) => client,
                        Err(e) => {
                            let _ = started.send(Err(e));
                            return;
                        }
                    };
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => listener,
                        Err(e) => {
                            let _ = started.send(Err(Error::io("listening", e)));
                            return;
                        }
                    };
                    let _ = started.send(Ok(()));
                    let (store, writer) = reflector::store::<Pod>();
                    let watch = reflector::reflector(
                        writer,
                        watcher(Api::<Pod>::all(client), watcher::Config::default())
                            .default_backoff(),
                    )
                    .for_each(|event| async move {
                        if let Err(error) = event {
                            tracing::warn!(%error, "pod discovery: watch failed; retrying");
                        }
                    });
                    tokio::select! {
                        _ = stopped => {}
                        () = watch => {}
                        () = serve(listener, store, namespaces) => {}
                    }
                });
            })
            .map_err(|e| Error::io("starting the pod discovery thread", e))?;
        match ready.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(Error::Prometheus("the pod discovery thread died".into())),
        }
        Ok(Self {
            url: format!("http://127.0.0.1:{port}/targets"),
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The `http_sd_configs` URL.
    pub(super) fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for PodDiscovery {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A factory of clients that authenticate with the service account's token.
fn client_for(
    access: &KubernetesPods,
) -> Result<impl FnOnce() -> Result<kube::Client, Error> + Send + 'static, Error> {
    let uri: http::Uri = access
        .api_server
        .parse()
        .map_err(|e| Error::Kubeconfig(format!("bad API server URL {}: {e}", access.api_server)))?;
    let ca = pem_to_der(&access.ca_pem)?;
    let token = access.token.clone();
    Ok(move || {
        let mut config = kube::Config::new(uri);
        config.root_cert = Some(vec![ca]);
        config.auth_info.token = Some(token.into());
        Ok(kube::Client::try_from(config)?)
    })
}

fn pem_to_der(pem: &str) -> Result<Vec<u8>, Error> {
    use base64::Engine as _;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|e| Error::Kubeconfig(format!("decoding the CA certificate: {e}")))
}

/// Answers every request with the current target groups.
async fn serve(listener: tokio::net::TcpListener, store: Store<Pod>, namespaces: Vec<String>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let body = target_groups(&store.state(), &namespaces).to_string();
        tokio::spawn(async move {
            let mut request = Vec::new();
            let mut buf = [0u8; 2048];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

/// One target group per container port of every pod that has an IP, labelled as
/// `kubernetes_sd_configs` role `pod` labels it. Pods outside `namespaces` (when not empty)
/// are left out.
pub(super) fn target_groups(pods: &[Arc<Pod>], namespaces: &[String]) -> Value {
    let mut groups = Vec::new();
    for pod in pods {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        if !namespaces.is_empty() && !namespaces.contains(&namespace) {
            continue;
        }
        let Some(status) = &pod.status else { continue };
        let Some(ip) = status.pod_ip.clone().filter(|ip| !ip.is_empty()) else {
            continue;
        };
        let Some(spec) = &pod.spec else { continue };
        let mut common = BTreeMap::new();
        common.insert("__meta_kubernetes_namespace".to_string(), namespace);
        common.insert(
            "__meta_kubernetes_pod_name".to_string(),
            pod.metadata.name.clone().unwrap_or_default(),
        );
        common.insert("__meta_kubernetes_pod_ip".to_string(), ip.clone());
        common.insert(
            "__meta_kubernetes_pod_phase".to_string(),
            status.phase.clone().unwrap_or_default(),
        );
        common.insert(
            "__meta_kubernetes_pod_node_name".to_string(),
            spec.node_name.clone().unwrap_or_default(),
        );
        let ready = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Ready")
            .map_or(
                "unknown",
                |c| if c.status == "True" { "true" } else { "false" },
            );
        common.insert("__meta_kubernetes_pod_ready".to_string(), ready.to_string());
        for (name, value) in pod.metadata.labels.iter().flatten() {
            let name = super::sanitize(name);
            common.insert(format!("__meta_kubernetes_pod_label_{name}"), value.clone());
            common.insert(
                format!("__meta_kubernetes_pod_labelpresent_{name}"),
                "true".to_string(),
            );
        }
        let containers = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| (c, true))
            .chain(spec.containers.iter().map(|c| (c, false)));
        for (container, init) in containers {
            for port in container.ports.iter().flatten() {
                let mut labels = common.clone();
                labels.insert(
                    "__meta_kubernetes_pod_container_name".into(),
                    container.name.clone(),
                );
                labels.insert(
                    "__meta_kubernetes_pod_container_init".into(),
                    init.to_string(),
                );
                labels.insert(
                    "__meta_kubernetes_pod_container_port_name".into(),
                    port.name.clone().unwrap_or_default(),
                );
                labels.insert(
                    "__meta_kubernetes_pod_container_port_number".into(),
                    port.container_port.to_string(),
                );
                labels.insert(
                    "__meta_kubernetes_pod_container_port_protocol".into(),
                    port.protocol.clone().unwrap_or_else(|| "TCP".into()),
                );
                groups.push(json!({
                    "targets": [format!("{ip}:{}", port.container_port)],
                    "labels": labels,
                }));
            }
        }
    }
    Value::Array(groups)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Container, ContainerPort, PodSpec, PodStatus};
    use kube::api::ObjectMeta;

    use super::*;

    fn pod(namespace: &str, name: &str, ip: Option<&str>) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                labels: Some(
                    [("modelfleet.dev/deployment".to_string(), "chat".to_string())].into(),
                ),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "engine".into(),
                    ports: Some(vec![
                        ContainerPort {
                            name: Some("grpc".into()),
                            container_port: 50051,
                            ..ContainerPort::default()
                        },
                        ContainerPort {
                            name: Some("http".into()),
                            container_port: 8000,
                            ..ContainerPort::default()
                        },
                    ]),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                pod_ip: ip.map(String::from),
                phase: Some("Running".into()),
                ..PodStatus::default()
            }),
        })
    }

    #[test]
    fn each_port_of_a_pod_with_an_ip_is_a_target_with_pod_meta_labels() {
        let groups = target_groups(
            &[
                pod("ml", "chat-0", Some("10.200.0.5")),
                pod("ml", "chat-1", None),
            ],
            &[],
        );
        let groups = groups.as_array().expect("array");
        assert_eq!(
            groups.len(),
            2,
            "two ports of the pod with an IP: {groups:?}"
        );
        let http = &groups[1];
        assert_eq!(http["targets"][0], "10.200.0.5:8000");
        let labels = &http["labels"];
        assert_eq!(labels["__meta_kubernetes_namespace"], "ml");
        assert_eq!(labels["__meta_kubernetes_pod_name"], "chat-0");
        assert_eq!(labels["__meta_kubernetes_pod_container_port_name"], "http");
        assert_eq!(labels["__meta_kubernetes_pod_phase"], "Running");
        assert_eq!(
            labels["__meta_kubernetes_pod_label_modelfleet_dev_deployment"],
            "chat"
        );
    }

    #[test]
    fn namespaces_filter_pods() {
        let pods = [
            pod("ml", "a", Some("10.200.0.5")),
            pod("other", "b", Some("10.200.0.6")),
        ];
        let groups = target_groups(&pods, &["other".to_string()]);
        let groups = groups.as_array().expect("array");
        assert!(
            groups
                .iter()
                .all(|g| g["labels"]["__meta_kubernetes_namespace"] == "other")
        );
        assert_eq!(groups.len(), 2);
    }
}
