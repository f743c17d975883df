//! IPv4 subnets for the harness's networks (a real node's link to the host, its pods, a
//! cluster's Services), chosen so they overlap nothing routed on this machine.
//!
//! Several harnesses may run at once on one machine (tests in parallel, other checkouts), and
//! each adds host routes for its node's pods and Services; two routes for one subnet would
//! collide. So every network is a /24 picked from its own block, starting at a place that
//! depends on the process and a counter, skipping whatever the host already routes.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::process::Command;
use std::str::FromStr;

use crate::Error;

/// An IPv4 network: base address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Cidr {
    base: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Cidr {
    /// The Service range of a cluster without a real node: kubeadm's default.
    pub const DEFAULT_SERVICES: Ipv4Cidr = Ipv4Cidr {
        base: Ipv4Addr::new(10, 96, 0, 0),
        prefix: 16,
    };

    /// The network of `address/prefix` (host bits cleared).
    pub fn new(address: Ipv4Addr, prefix: u8) -> Self {
        let prefix = prefix.min(32);
        Self {
            base: Ipv4Addr::from(u32::from(address) & mask(prefix)),
            prefix,
        }
    }

    pub fn base(&self) -> Ipv4Addr {
        self.base
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The `n`th address of the network (`n = 1` is the first host).
    pub fn host(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) | (n & !mask(self.prefix)))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.base)
    }

    pub fn overlaps(&self, other: &Ipv4Cidr) -> bool {
        let prefix = self.prefix.min(other.prefix);
        u32::from(self.base) & mask(prefix) == u32::from(other.base) & mask(prefix)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (address, prefix) = text.split_once('/').unwrap_or((text, "32"));
        let address: Ipv4Addr = address
            .parse()
            .map_err(|e| format!("{text:?}: not an IPv4 address: {e}"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("{text:?}: not a prefix length"))?;
        Ok(Self::new(address, prefix))
    }
}

/// A block that /24s are taken from.
#[derive(Debug, Clone, Copy)]
pub struct Block {
    pub cidr: Ipv4Cidr,
}

/// Where each kind of network is taken from. Distinct from each other and from the
/// control plane's default Service range (10.96.0.0/16).
pub const LINK_BLOCK: Block = Block {
    cidr: Ipv4Cidr {
        base: Ipv4Addr::new(10, 196, 0, 0),
        prefix: 14,
    },
};
pub const POD_BLOCK: Block = Block {
    cidr: Ipv4Cidr {
        base: Ipv4Addr::new(10, 200, 0, 0),
        prefix: 13,
    },
};
pub const SERVICE_BLOCK: Block = Block {
    cidr: Ipv4Cidr {
        base: Ipv4Addr::new(10, 100, 0, 0),
        prefix: 14,
    },
};

/// The first /24 of `block`, from `seed` on (wrapping), that overlaps nothing in `in_use`.
/// Pure: the caller says what is taken.
pub fn choose(block: Block, seed: u32, in_use: &BTreeSet<Ipv4Cidr>) -> Option<Ipv4Cidr> {
    let count = 1u32 << (24 - u32::from(block.cidr.prefix));
    (0..count)
        .map(|i| seed.wrapping_add(i) % count)
        .map(|index| {
            Ipv4Cidr::new(
                Ipv4Addr::from(u32::from(block.cidr.base) + (index << 8)),
                24,
            )
        })
        .find(|candidate| !in_use.iter().any(|taken| taken.overlaps(candidate)))
}

/// Every IPv4 network the host has an address in or a route to, the default route aside.
pub fn in_use_on_host() -> Result<BTreeSet<Ipv4Cidr>, Error> {
    let mut networks = BTreeSet::new();
    for args in [
        &["-4", "-o", "addr", "show"][..],
        &["-4", "route", "show", "table", "all"][..],
    ] {
        let output = Command::new("ip")
            .args(args)
            .output()
            .map_err(|e| Error::io("running ip to list the host's networks", e))?;
        networks.extend(parse_networks(&String::from_utf8_lossy(&output.stdout)));
    }
    Ok(networks)
}

/// The networks named in `ip -o addr` (after `inet`) or `ip route` (the first word, or the
/// word after a route type such as `local`) output.
fn parse_networks(text: &str) -> Vec<Ipv4Cidr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace().peekable();
            let word = if line.contains(" inet ") {
                words.find(|w| *w == "inet")?;
                words.next()?
            } else {
                let first = words.next()?;
                if matches!(
                    first,
                    "local" | "broadcast" | "unicast" | "anycast" | "multicast" | "blackhole"
                ) {
                    words.next()?
                } else {
                    first
                }
            };
            if word == "default" {
                return None;
            }
            word.parse::<Ipv4Cidr>().ok()
        })
        .collect()
}

/// A seed that differs between processes and between calls in one process.
pub fn seed() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static CALLS: AtomicU32 = AtomicU32::new(0);
    let n = CALLS.fetch_add(1, Ordering::Relaxed);
    std::process::id()
        .wrapping_mul(2_654_435_761)
        .wrapping_add(n.wrapping_mul(97))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(text: &str) -> Ipv4Cidr {
        text.parse().expect("a CIDR")
    }

    #[test]
    fn a_cidr_knows_its_hosts_and_overlaps() {
        let net = cidr("10.200.3.77/24");
        assert_eq!(net.to_string(), "10.200.3.0/24");
        assert_eq!(net.host(1), Ipv4Addr::new(10, 200, 3, 1));
        assert!(net.contains(Ipv4Addr::new(10, 200, 3, 254)));
        assert!(!net.contains(Ipv4Addr::new(10, 200, 4, 1)));
        assert!(net.overlaps(&cidr("10.200.0.0/16")));
        assert!(cidr("10.200.0.0/16").overlaps(&net));
        assert!(!net.overlaps(&cidr("10.200.4.0/24")));
        assert!("10.0.0.0/33".parse::<Ipv4Cidr>().is_err());
        assert!("nonsense".parse::<Ipv4Cidr>().is_err());
    }

    #[test]
    fn choosing_skips_what_is_taken_and_stays_in_the_block() {
        // Two /24s and a /23 that covers the next two.
        let taken: BTreeSet<Ipv4Cidr> = [
            cidr("10.200.0.0/24"),
            cidr("10.200.1.0/24"),
            cidr("10.200.2.0/23"),
        ]
        .into();
        let chosen = choose(POD_BLOCK, 0, &taken).expect("a free /24");
        assert_eq!(chosen, cidr("10.200.4.0/24"));
        // A seed past the end wraps into the block.
        let wrapped = choose(POD_BLOCK, 2048 + 5, &BTreeSet::new()).expect("a /24");
        assert_eq!(wrapped, cidr("10.200.5.0/24"));
        // A route covering the whole block leaves nothing.
        let all: BTreeSet<Ipv4Cidr> = [cidr("10.192.0.0/10")].into();
        assert_eq!(choose(POD_BLOCK, 0, &all), None);
    }

    #[test]
    fn host_networks_are_read_from_addresses_and_routes() {
        let text = "2: eth0    inet 172.16.0.2/24 brd 172.16.0.255 scope global eth0\n\
                    default via 172.16.0.1 dev eth0\n\
                    10.200.7.0/24 via 10.196.0.2 dev mfh1\n\
                    local 127.0.0.0/8 dev lo table local proto kernel scope host src 127.0.0.1\n\
                    broadcast 172.16.0.255 dev eth0 table local proto kernel scope link\n";
        let networks = parse_networks(text);
        assert_eq!(
            networks,
            [
                cidr("172.16.0.0/24"),
                cidr("10.200.7.0/24"),
                cidr("127.0.0.0/8"),
                cidr("172.16.0.255/32"),
            ]
        );
    }
}
