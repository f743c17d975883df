//! The node's own network: a network namespace, as a machine of its own would have, joined
//! to the host by a veth pair.
//!
//! containerd, the kubelet and kube-proxy run inside it, so the CNI bridge, the pods' veths
//! and kube-proxy's iptables rules live there too: two nodes on one machine (tests in
//! parallel, other checkouts) never see each other's rules, and deleting the namespace takes
//! every interface and rule with it. The host reaches the node's pods and its cluster's
//! Services through routes via the node's address, the way a machine on a cluster's network
//! would; the node's default route goes back through the host.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;

use crate::Error;
use crate::subnets::Ipv4Cidr;

/// Where `ip netns add` binds named namespaces.
const NETNS_DIR: &str = "/run/netns";
/// Linux limits interface names to 15 bytes.
const IFNAMSIZ: usize = 15;
/// The node's end of the link, named as a machine's first interface.
pub const NODE_INTERFACE: &str = "eth0";

/// The namespace, the veth pair and the host routes into it.
#[derive(Debug)]
pub struct NodeLink {
    pub netns: String,
    /// The veth end on the host.
    pub host_end: String,
    /// The link's /24: the host end has `.1`, the node `.2`.
    pub subnet: Ipv4Cidr,
}

impl NodeLink {
    /// Creates namespace `netns` and the veth pair (`host_end` on the host), addresses both
    /// ends from `subnet`, routes the node's traffic through the host and turns on forwarding
    /// (the node routes between its pods and the host).
    pub fn create(netns: &str, host_end: &str, subnet: Ipv4Cidr) -> Result<Self, Error> {
        // The peer is named on the host until it moves into the namespace; the host ends'
        // names end in a hex digit, so no host end is ever called this.
        let peer = format!("{host_end}p");
        for name in [host_end, peer.as_str()] {
            if name.len() > IFNAMSIZ {
                return Err(Error::Harness(format!(
                    "the name {name} is longer than {IFNAMSIZ} bytes"
                )));
            }
        }
        ip(&["netns", "add", netns])?;
        let link = Self {
            netns: netns.to_string(),
            host_end: host_end.to_string(),
            subnet,
        };
        // From here on a failure deletes the namespace (dropping `link` does not: the
        // caller owns the teardown), so do it by hand.
        let made = (|| {
            ip(&[
                "link", "add", host_end, "type", "veth", "peer", "name", &peer,
            ])?;
            ip(&["link", "set", &peer, "netns", netns])?;
            let host_cidr = format!("{}/24", link.host_ip());
            ip(&["addr", "add", &host_cidr, "dev", host_end])?;
            ip(&["link", "set", host_end, "up"])?;
            let node_cidr = format!("{}/24", link.node_ip());
            let host_ip = link.host_ip().to_string();
            for args in [
                &["link", "set", "lo", "up"][..],
                &["link", "set", &peer, "name", NODE_INTERFACE],
                &["addr", "add", &node_cidr, "dev", NODE_INTERFACE],
                &["link", "set", NODE_INTERFACE, "up"],
                &["route", "add", "default", "via", &host_ip],
            ] {
                link.ip_in(args)?;
            }
            link.set_sysctls(&[
                ("net/ipv4/ip_forward", "1"),
                // Pod-to-Service traffic that kube-proxy sends back to a pod on the same
                // bridge must pass iptables to be translated back.
                ("net/bridge/bridge-nf-call-iptables", "1"),
            ])
        })();
        if let Err(err) = made {
            link.remove();
            return Err(err);
        }
        Ok(link)
    }

    /// The host's address on the link: what the node reaches the host (and through it the
    /// API server) at.
    pub fn host_ip(&self) -> Ipv4Addr {
        self.subnet.host(1)
    }

    /// The node's address (its InternalIP).
    pub fn node_ip(&self) -> Ipv4Addr {
        self.subnet.host(2)
    }

    /// `/run/netns/<name>`, for entering the namespace.
    pub fn netns_path(&self) -> PathBuf {
        netns_path(&self.netns)
    }

    /// Routes `cidr` from the host through the node (pod and Service ranges).
    pub fn route_from_host(&self, cidr: Ipv4Cidr) -> Result<(), Error> {
        ip(&[
            "route",
            "add",
            &cidr.to_string(),
            "via",
            &self.node_ip().to_string(),
            "dev",
            &self.host_end,
        ])
        .map(drop)
    }

    /// Runs `ip ARGS…` inside the node's namespace (`ip -n`).
    pub fn ip_in(&self, args: &[&str]) -> Result<String, Error> {
        let mut all = vec!["-n", self.netns.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Writes `/proc/sys/<key>` as seen from inside the namespace.
    fn set_sysctls(&self, values: &[(&str, &str)]) -> Result<(), Error> {
        let path = self.netns_path();
        let values: Vec<(String, String)> = values
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        // setns(2) moves only the calling thread: a thread of its own does the writes.
        std::thread::spawn(move || -> Result<(), Error> {
            let netns = std::fs::File::open(&path)
                .map_err(|e| Error::io(&format!("opening {}", path.display()), e))?;
            // SAFETY: setns(2) on a descriptor we own; it affects only this thread.
            let entered =
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&netns), libc::CLONE_NEWNET) };
            if entered != 0 {
                return Err(Error::io(
                    "entering the node's network namespace",
                    std::io::Error::last_os_error(),
                ));
            }
            for (key, value) in values {
                let file = format!("/proc/sys/{key}");
                std::fs::write(&file, &value)
                    .map_err(|e| Error::io(&format!("setting {file} to {value}"), e))?;
            }
            Ok(())
        })
        .join()
        .map_err(|_| Error::Harness("setting the node's sysctls panicked".into()))?
    }

    /// Deletes the namespace: its interfaces (the veth pair, the CNI bridge, the pods'
    /// veths' node ends) and iptables rules go with it, and the host routes through the
    /// link with the host end. Safe to call when it is gone already.
    pub fn remove(&self) {
        remove_netns(&self.netns, &self.host_end);
    }
}

/// `/run/netns/<name>`.
pub fn netns_path(name: &str) -> PathBuf {
    PathBuf::from(NETNS_DIR).join(name)
}

/// Deletes namespace `netns` and, should it outlive the namespace, the host end of its veth.
pub fn remove_netns(netns: &str, host_end: &str) {
    if netns_path(netns).exists()
        && let Err(err) = ip(&["netns", "del", netns])
    {
        tracing::warn!(%netns, error = %err, "deleting the node's network namespace failed");
    }
    // The pair goes with the namespace; this only matters if creation stopped half-way.
    if std::path::Path::new("/sys/class/net")
        .join(host_end)
        .exists()
    {
        let _ = ip(&["link", "del", host_end]);
    }
}

/// The names of the network namespaces `ip netns add` made.
pub fn named_namespaces() -> Vec<String> {
    std::fs::read_dir(NETNS_DIR)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Runs `ip ARGS…`, turning a failure into an error carrying its stderr.
pub fn ip(args: &[&str]) -> Result<String, Error> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| Error::io(&format!("running ip {}", args.join(" ")), e))?;
    if !output.status.success() {
        return Err(Error::Harness(format!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
