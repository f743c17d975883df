//! Free local TCP ports for a cluster's components.

use std::net::TcpListener;

use crate::Error;

/// Asks the kernel for `count` distinct free ports on 127.0.0.1.
///
/// The listeners are held until all ports are chosen so one call never returns the same
/// port twice. Another process could still take a port before a component binds it; the
/// cluster start-up retries with fresh ports when a component fails to come up.
pub fn free_ports(count: usize) -> Result<Vec<u16>, Error> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::io("reserving a free local port", e))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::io("reading a reserved port", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_in_one_call_are_distinct() {
        let mut ports = free_ports(8).expect("ports");
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 8);
        assert!(ports.iter().all(|p| *p > 0));
    }
}
