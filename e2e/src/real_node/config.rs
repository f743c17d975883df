//! The node's configuration files, rendered from its paths and addresses: containerd's
//! `config.toml` (with the CRI plugin), the CNI network, the kubelet's and kube-proxy's
//! configuration. Pure functions; what each setting is for is said beside it.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::subnets::Ipv4Cidr;

/// Everything of one node lives under its directory.
#[derive(Debug, Clone)]
pub struct NodePaths {
    pub dir: PathBuf,
}

impl NodePaths {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    pub fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }
    pub fn containerd_config(&self) -> PathBuf {
        self.dir.join("containerd.toml")
    }
    pub fn containerd_root(&self) -> PathBuf {
        self.dir.join("containerd/root")
    }
    pub fn containerd_state(&self) -> PathBuf {
        self.dir.join("containerd/state")
    }
    /// containerd's CRI (and image) socket.
    pub fn containerd_socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.dir.join("cni/net.d")
    }
    /// host-local's address allocations.
    pub fn cni_ipam_dir(&self) -> PathBuf {
        self.dir.join("cni/ipam")
    }
    pub fn kubelet_config(&self) -> PathBuf {
        self.dir.join("kubelet.yaml")
    }
    pub fn kubelet_root(&self) -> PathBuf {
        self.dir.join("kubelet")
    }
    pub fn kubelet_certs(&self) -> PathBuf {
        self.dir.join("kubelet-pki")
    }
    pub fn pod_logs(&self) -> PathBuf {
        self.dir.join("pod-logs")
    }
    pub fn kube_proxy_config(&self) -> PathBuf {
        self.dir.join("kube-proxy.yaml")
    }
    pub fn crictl_config(&self) -> PathBuf {
        self.dir.join("crictl.yaml")
    }
}

/// containerd's configuration (version 2): its root, state and sockets under the node's
/// directory, and the CRI plugin as the kubelet needs it on these machines.
pub fn containerd_config(paths: &NodePaths, sandbox_image: &str, cni_bin_dir: &Path) -> String {
    let path = |p: PathBuf| p.display().to_string();
    format!(
        r#"version = 2
root = "{root}"
state = "{state}"
# Snapshotters and exporters nothing here uses; the btrfs/zfs/devmapper ones only log errors.
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"

[plugins."io.containerd.grpc.v1.cri"]
  # Imported with the other images: nothing can be pulled.
  sandbox_image = "{sandbox_image}"
  # The kubelet asks for OOM score adjustments below the harness's own, which an
  # unprivileged-in-effect process may not make; without this every sandbox fails with
  # runc's "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  # Pod network namespaces under the state directory, not /run/netns.
  netns_mounts_under_state_dir = true
  disable_tcp_service = true
  # No streaming server port outside the node's namespace.
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{cni_conf}"
    max_conf_num = 1

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        # The kubelet's cgroup driver is cgroupfs (cgroups v1, no systemd here).
        SystemdCgroup = false
        Root = "{runc_root}"
"#,
        root = path(paths.containerd_root()),
        state = path(paths.containerd_state()),
        socket = path(paths.containerd_socket()),
        opt = path(paths.dir.join("containerd/opt")),
        cni_bin = cni_bin_dir.display(),
        cni_conf = path(paths.cni_conf_dir()),
        runc_root = path(paths.dir.join("containerd/runc")),
    )
}

/// The CNI network: a bridge (the pods' gateway, masquerading their traffic out), addresses
/// from the node's pod range, port mappings and loopback.
pub fn cni_network(name: &str, bridge: &str, pod_cidr: Ipv4Cidr, ipam_dir: &Path) -> String {
    let network = json!({
        "cniVersion": "0.4.0",
        "name": name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": true,
                "ipMasq": true,
                // A pod reaching its own Service may be sent back to itself.
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "dataDir": ipam_dir.display().to_string(),
                    "ranges": [[{ "subnet": pod_cidr.to_string() }]],
                    "routes": [{ "dst": "0.0.0.0/0" }],
                },
            },
            { "type": "portmap", "capabilities": { "portMappings": true } },
            { "type": "loopback" },
        ],
    });
    serde_json::to_string_pretty(&network).unwrap_or_default()
}

/// What the kubelet's configuration depends on.
#[derive(Debug, Clone)]
pub struct KubeletSettings<'a> {
    pub paths: &'a NodePaths,
    /// The cgroup (in every hierarchy) the node's pods live under: one per node, so two
    /// kubelets on one machine never share `kubepods`.
    pub cgroup_root: &'a str,
}

/// The kubelet's `KubeletConfiguration`.
pub fn kubelet_config(settings: &KubeletSettings<'_>) -> String {
    let paths = settings.paths;
    let config = json!({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        // A test node: the API server (and only it, on the node's own network) talks to the
        // kubelet, which lets it.
        "authentication": { "anonymous": { "enabled": true }, "webhook": { "enabled": false } },
        "authorization": { "mode": "AlwaysAllow" },
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": settings.cgroup_root,
        "containerRuntimeEndpoint": format!("unix://{}", paths.containerd_socket().display()),
        "failSwapOn": false,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "podLogsDir": paths.pod_logs().display().to_string(),
        "volumePluginDir": paths.dir.join("volume-plugins").display().to_string(),
        // The disk is the machine's, shared with builds that fill and free gigabytes in
        // minutes: a disk signal would evict the pods and then reclaim the imported images,
        // which cannot be pulled again, leaving the node unable to start any pod. "0%" turns
        // a signal off (the kubelet ignores 0% and 100%); memory pressure still evicts.
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "0%",
            "imagefs.available": "0%",
            "nodefs.inodesFree": "0%",
            "imagefs.inodesFree": "0%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": false,
        "resolvConf": "/etc/resolv.conf",
        "nodeStatusUpdateFrequency": "4s",
        "shutdownGracePeriod": "0s",
    });
    serde_yaml::to_string(&config).unwrap_or_default()
}

/// kube-proxy's `KubeProxyConfiguration`: iptables mode, inside the node's namespace.
pub fn kube_proxy_config(
    kubeconfig: &Path,
    node_name: &str,
    node_ip: Ipv4Addr,
    pod_cidr: Ipv4Cidr,
) -> String {
    let config = json!({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": { "kubeconfig": kubeconfig.display().to_string() },
        "mode": "iptables",
        "hostnameOverride": node_name,
        "bindAddress": node_ip.to_string(),
        "clusterCIDR": pod_cidr.to_string(),
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        "nodePortAddresses": ["primary"],
        // Leave the conntrack table's size and timeouts alone: in a network namespace they
        // are the host's to set.
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
    });
    serde_yaml::to_string(&config).unwrap_or_default()
}

/// crictl's configuration: the node's containerd, and short timeouts.
pub fn crictl_config(paths: &NodePaths) -> String {
    let endpoint = format!("unix://{}", paths.containerd_socket().display());
    format!("runtime-endpoint: {endpoint}\nimage-endpoint: {endpoint}\ntimeout: 30\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> NodePaths {
        NodePaths::new(Path::new("/tmp/node-x"))
    }

    #[test]
    fn containerd_keeps_everything_under_the_nodes_directory() {
        let text = containerd_config(
            &paths(),
            "localhost/modelfleet/pause:1",
            Path::new("/usr/lib/cni"),
        );
        let config: toml::Table = text.parse().expect("TOML");
        assert_eq!(config["version"].as_integer(), Some(2));
        assert_eq!(config["root"].as_str(), Some("/tmp/node-x/containerd/root"));
        assert_eq!(
            config["state"].as_str(),
            Some("/tmp/node-x/containerd/state")
        );
        assert_eq!(
            config["grpc"]["address"].as_str(),
            Some("/tmp/node-x/containerd.sock")
        );
        let cri = &config["plugins"]["io.containerd.grpc.v1.cri"];
        assert_eq!(
            cri["sandbox_image"].as_str(),
            Some("localhost/modelfleet/pause:1")
        );
        assert_eq!(cri["restrict_oom_score_adj"].as_bool(), Some(true));
        assert_eq!(cri["netns_mounts_under_state_dir"].as_bool(), Some(true));
        assert_eq!(
            cri["cni"]["conf_dir"].as_str(),
            Some("/tmp/node-x/cni/net.d")
        );
        let runc = &cri["containerd"]["runtimes"]["runc"]["options"];
        assert_eq!(runc["SystemdCgroup"].as_bool(), Some(false));
        assert_eq!(runc["Root"].as_str(), Some("/tmp/node-x/containerd/runc"));
    }

    #[test]
    fn the_cni_network_is_a_masquerading_bridge_over_the_pod_range() {
        let text = cni_network(
            "mfnode-1",
            "mfbr0",
            "10.200.9.0/24".parse().expect("cidr"),
            Path::new("/tmp/node-x/cni/ipam"),
        );
        let network: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        let bridge = &network["plugins"][0];
        assert_eq!(bridge["type"], "bridge");
        assert_eq!(bridge["isGateway"], true);
        assert_eq!(bridge["ipMasq"], true);
        assert_eq!(bridge["ipam"]["ranges"][0][0]["subnet"], "10.200.9.0/24");
        assert_eq!(bridge["ipam"]["dataDir"], "/tmp/node-x/cni/ipam");
        let types: Vec<&str> = network["plugins"]
            .as_array()
            .expect("plugins")
            .iter()
            .filter_map(|p| p["type"].as_str())
            .collect();
        assert_eq!(types, ["bridge", "portmap", "loopback"]);
    }

    #[test]
    fn the_kubelet_uses_its_own_cgroup_and_directories() {
        let text = kubelet_config(&KubeletSettings {
            paths: &paths(),
            cgroup_root: "/mfnode-1",
        });
        let config: serde_yaml::Value = serde_yaml::from_str(&text).expect("YAML");
        assert_eq!(config["kind"], "KubeletConfiguration");
        assert_eq!(config["cgroupRoot"], "/mfnode-1");
        assert_eq!(config["cgroupDriver"], "cgroupfs");
        assert_eq!(
            config["containerRuntimeEndpoint"],
            "unix:///tmp/node-x/containerd.sock"
        );
        assert_eq!(config["podLogsDir"], "/tmp/node-x/pod-logs");
        assert_eq!(config["imageGCHighThresholdPercent"], 100);
        // No disk signal can evict the pods or reclaim the images; memory still can.
        let eviction = &config["evictionHard"];
        for signal in [
            "nodefs.available",
            "imagefs.available",
            "nodefs.inodesFree",
            "imagefs.inodesFree",
        ] {
            assert_eq!(eviction[signal], "0%", "{signal}");
        }
        assert_eq!(eviction["memory.available"], "100Mi");
    }

    #[test]
    fn kube_proxy_runs_iptables_for_the_node() {
        let text = kube_proxy_config(
            Path::new("/tmp/node-x/kube-proxy.kubeconfig"),
            "gpu-node-1",
            Ipv4Addr::new(10, 196, 3, 2),
            "10.200.9.0/24".parse().expect("cidr"),
        );
        let config: serde_yaml::Value = serde_yaml::from_str(&text).expect("YAML");
        assert_eq!(config["mode"], "iptables");
        assert_eq!(config["hostnameOverride"], "gpu-node-1");
        assert_eq!(config["clusterCIDR"], "10.200.9.0/24");
        assert_eq!(config["conntrack"]["maxPerCore"], 0);
    }
}
