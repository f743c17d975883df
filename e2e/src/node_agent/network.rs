//! Pod networking: one Linux bridge per agent, one network namespace per pod joined to it by
//! a veth pair. The bridge holds the gateway address of the agent's /24, so the host (the test
//! process) reaches every pod IP directly and every pod can bind any port.
//!
//! Names carry the agent's pid, so namespaces and links left by a process that died without
//! cleaning up (SIGKILL) can be recognised and removed by the next agent.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use super::NodeAgentError;

/// Agents take their /24 from this block: 10.200.0.0/13 (2048 subnets).
const BLOCK_BASE: u32 = u32::from_be_bytes([10, 200, 0, 0]);
const BLOCK_SUBNETS: u32 = 2048;
/// Prefixes of the names this module creates; `mf` + what follows + the owner's pid in hex.
const BRIDGE_PREFIX: &str = "mfb";
const VETH_PREFIX: &str = "mfv";
const NETNS_PREFIX: &str = "mfns-";
/// Linux limits interface names to 15 bytes.
const IFNAMSIZ: usize = 15;

static BRIDGE_COUNTER: AtomicU32 = AtomicU32::new(0);
static VETH_COUNTER: AtomicU32 = AtomicU32::new(0);
/// Agents in one process choose subnets one at a time, so two never pick the same one.
static SUBNET_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A /24 inside the agents' block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    /// The network address (x.y.z.0).
    pub base: Ipv4Addr,
}

impl Subnet {
    pub fn gateway(&self) -> Ipv4Addr {
        host(self.base, 1)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & 0xffff_ff00 == u32::from(self.base)
    }
}

fn host(base: Ipv4Addr, n: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(base) | u32::from(n))
}

/// Picks the first /24 of the block, starting at `seed`, that is not in `in_use` (network
/// addresses). Pure: the caller says what is taken.
pub fn choose_subnet(seed: u32, in_use: &BTreeSet<Ipv4Addr>) -> Option<Subnet> {
    (0..BLOCK_SUBNETS)
        .map(|i| (seed.wrapping_add(i)) % BLOCK_SUBNETS)
        .map(|index| Ipv4Addr::from(BLOCK_BASE + (index << 8)))
        .find(|base| !in_use.contains(base))
        .map(|base| Subnet { base })
}

/// Pod addresses of one /24: .1 is the gateway, .2 to .254 go to pods. Pure accounting.
#[derive(Debug)]
pub struct IpPool {
    subnet: Subnet,
    taken: BTreeSet<u8>,
    /// Where the next search starts, so a freed address is not handed out again at once
    /// (a late probe or connection for the old pod would otherwise hit the new one).
    next: u8,
}

impl IpPool {
    pub fn new(subnet: Subnet) -> Self {
        Self {
            subnet,
            taken: BTreeSet::new(),
            next: 2,
        }
    }

    pub fn allocate(&mut self) -> Option<Ipv4Addr> {
        let candidates = (self.next..=254).chain(2..self.next);
        let n = candidates.into_iter().find(|n| !self.taken.contains(n))?;
        self.taken.insert(n);
        self.next = if n == 254 { 2 } else { n + 1 };
        Some(host(self.subnet.base, n))
    }

    pub fn release(&mut self, ip: Ipv4Addr) {
        if self.subnet.contains(ip) {
            self.taken.remove(&ip.octets()[3]);
        }
    }
}

/// Runs `ip ARGS…`, turning a failure into an error carrying its stderr.
pub fn ip(args: &[&str]) -> Result<String, NodeAgentError> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| NodeAgentError::Network(format!("running ip {}: {e}", args.join(" "))))?;
    if !output.status.success() {
        return Err(NodeAgentError::Network(format!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The /24 networks of every IPv4 address on the host.
fn subnets_in_use() -> Result<BTreeSet<Ipv4Addr>, NodeAgentError> {
    let out = ip(&["-4", "-o", "addr", "show"])?;
    Ok(out
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.find(|w| *w == "inet")?;
            let addr: Ipv4Addr = words.next()?.split('/').next()?.parse().ok()?;
            Some(Ipv4Addr::from(u32::from(addr) & 0xffff_ff00))
        })
        .collect())
}

/// The agent's bridge. Removing it (on [`Bridge::remove`]) takes the subnet's route with it.
#[derive(Debug)]
pub struct Bridge {
    pub name: String,
    pub subnet: Subnet,
}

impl Bridge {
    /// Creates a bridge named after this process with the gateway address of a free /24.
    pub fn create() -> Result<Self, NodeAgentError> {
        let pid = std::process::id();
        let n = BRIDGE_COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{BRIDGE_PREFIX}{pid:x}x{n:x}");
        check_ifname(&name)?;
        let _guard = SUBNET_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let seed = pid.wrapping_mul(31).wrapping_add(n.wrapping_mul(7));
        let subnet = choose_subnet(seed, &subnets_in_use()?)
            .ok_or_else(|| NodeAgentError::Network("no free /24 in 10.200.0.0/13".into()))?;
        ip(&["link", "add", &name, "type", "bridge"])?;
        let bridge = Self { name, subnet };
        let cidr = format!("{}/24", subnet.gateway());
        ip(&["addr", "add", &cidr, "dev", &bridge.name])?;
        ip(&["link", "set", &bridge.name, "up"])?;
        Ok(bridge)
    }

    pub fn remove(&self) {
        if let Err(err) = ip(&["link", "del", &self.name]) {
            tracing::warn!(bridge = %self.name, error = %err, "removing the bridge failed");
        }
    }
}

fn check_ifname(name: &str) -> Result<(), NodeAgentError> {
    if name.len() > IFNAMSIZ {
        return Err(NodeAgentError::Network(format!(
            "interface name {name} is longer than {IFNAMSIZ} bytes"
        )));
    }
    Ok(())
}

/// A pod's network namespace, attached to the bridge with its own address.
#[derive(Debug, Clone)]
pub struct PodNetwork {
    pub netns: String,
    /// The veth end on the bridge.
    pub host_end: String,
    pub ip: Ipv4Addr,
}

impl PodNetwork {
    /// Creates the namespace, a veth pair (host end on the bridge, pod end `eth0`), the pod's
    /// address and a default route via the gateway.
    pub fn create(bridge: &Bridge, ip_addr: Ipv4Addr) -> Result<Self, NodeAgentError> {
        let pid = std::process::id();
        let n = VETH_COUNTER.fetch_add(1, Ordering::Relaxed);
        let netns = format!("{NETNS_PREFIX}{pid:x}-{n:x}");
        let host_end = format!("{VETH_PREFIX}{pid:x}x{n:x}");
        let pod_end = format!("{VETH_PREFIX}{pid:x}p{n:x}");
        check_ifname(&host_end)?;
        check_ifname(&pod_end)?;
        ip(&["netns", "add", &netns])?;
        let network = Self {
            netns,
            host_end: host_end.clone(),
            ip: ip_addr,
        };
        // From here on a failure removes the namespace; the veth pair goes with it.
        let result = (|| {
            ip(&[
                "link", "add", &host_end, "type", "veth", "peer", "name", &pod_end,
            ])?;
            ip(&["link", "set", &pod_end, "netns", &network.netns])?;
            ip(&["link", "set", &host_end, "master", &bridge.name])?;
            ip(&["link", "set", &host_end, "up"])?;
            let ns = network.netns.as_str();
            ip(&["-n", ns, "link", "set", &pod_end, "name", "eth0"])?;
            let cidr = format!("{ip_addr}/24");
            ip(&["-n", ns, "addr", "add", &cidr, "dev", "eth0"])?;
            ip(&["-n", ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            let gateway = bridge.subnet.gateway().to_string();
            ip(&["-n", ns, "route", "add", "default", "via", &gateway])?;
            Ok(())
        })();
        if let Err(err) = result {
            network.remove();
            return Err(err);
        }
        Ok(network)
    }

    /// The bind-mounted namespace file that processes join.
    pub fn path(&self) -> PathBuf {
        netns_path(&self.netns)
    }

    /// Deletes the veth pair and the namespace. The kernel would destroy the pair with the
    /// namespace, but asynchronously; deleting it first makes it gone when this returns.
    pub fn remove(&self) {
        remove(&self.netns, &self.host_end);
    }
}

/// Deletes veth `host_end` (if it still exists) and namespace `netns`.
pub fn remove(netns: &str, host_end: &str) {
    let _ = ip(&["link", "del", host_end]);
    if let Err(err) = ip(&["netns", "del", netns]) {
        tracing::warn!(netns = %netns, error = %err, "removing the network namespace failed");
    }
}

pub fn netns_path(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

/// The pid encoded in a name this module made, if `name` is one.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name
        .strip_prefix(NETNS_PREFIX)
        .or_else(|| name.strip_prefix(BRIDGE_PREFIX))
        .or_else(|| name.strip_prefix(VETH_PREFIX))?;
    let hex: String = rest.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
    u32::from_str_radix(&hex, 16).ok()
}

fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes namespaces and bridges left by agents whose process no longer exists (a test
/// binary killed with SIGKILL cannot clean up after itself).
pub fn remove_stale() {
    if let Ok(list) = ip(&["netns", "list"]) {
        for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
            if owner_pid(name).is_some_and(|pid| !process_exists(pid)) {
                let _ = ip(&["netns", "del", name]);
            }
        }
    }
    if let Ok(list) = ip(&["-o", "link", "show"]) {
        for line in list.lines() {
            let Some(name) = line.split(": ").nth(1) else {
                continue;
            };
            let name = name.split('@').next().unwrap_or(name);
            if owner_pid(name).is_some_and(|pid| !process_exists(pid)) {
                let _ = ip(&["link", "del", name]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet(a: u8, b: u8, c: u8) -> Ipv4Addr {
        Ipv4Addr::new(a, b, c, 0)
    }

    #[test]
    fn a_subnet_is_chosen_from_the_block_at_the_seed() {
        let chosen = choose_subnet(5, &BTreeSet::new()).expect("a subnet");
        assert_eq!(chosen.base, subnet(10, 200, 5));
        assert_eq!(chosen.gateway(), Ipv4Addr::new(10, 200, 5, 1));
        let high = choose_subnet(256 + 3, &BTreeSet::new()).expect("a subnet");
        assert_eq!(high.base, subnet(10, 201, 3));
    }

    #[test]
    fn a_subnet_in_use_is_skipped_and_the_search_wraps_around() {
        let in_use: BTreeSet<_> = [subnet(10, 207, 255), subnet(10, 200, 0)].into();
        let chosen = choose_subnet(2047, &in_use).expect("a subnet");
        assert_eq!(chosen.base, subnet(10, 200, 1));
    }

    #[test]
    fn no_subnet_when_the_block_is_full() {
        let all: BTreeSet<_> = (0..BLOCK_SUBNETS)
            .map(|i| Ipv4Addr::from(BLOCK_BASE + (i << 8)))
            .collect();
        assert_eq!(choose_subnet(0, &all), None);
    }

    #[test]
    fn pod_addresses_skip_the_gateway_and_are_not_reused_at_once() {
        let mut pool = IpPool::new(Subnet {
            base: subnet(10, 200, 9),
        });
        let a = pool.allocate().expect("first");
        let b = pool.allocate().expect("second");
        assert_eq!(a, Ipv4Addr::new(10, 200, 9, 2));
        assert_eq!(b, Ipv4Addr::new(10, 200, 9, 3));
        pool.release(a);
        assert_eq!(pool.allocate(), Some(Ipv4Addr::new(10, 200, 9, 4)));
    }

    #[test]
    fn the_pool_holds_253_pods_and_reuses_freed_addresses_when_full() {
        let mut pool = IpPool::new(Subnet {
            base: subnet(10, 200, 9),
        });
        let all: Vec<_> = (0..253).map(|_| pool.allocate().expect("free")).collect();
        assert_eq!(pool.allocate(), None);
        pool.release(all[10]);
        assert_eq!(pool.allocate(), Some(all[10]));
    }

    #[test]
    fn names_carry_their_owner_pid() {
        assert_eq!(owner_pid("mfns-1f-3"), Some(0x1f));
        assert_eq!(owner_pid("mfb2ax0"), Some(0x2a));
        assert_eq!(owner_pid("mfv2ap4"), Some(0x2a));
        assert_eq!(owner_pid("eth0"), None);
        assert_eq!(owner_pid("cni0"), None);
    }
}
