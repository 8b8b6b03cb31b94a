//! Helpers the workspace's tests and benches share, and nothing else: a
//! dev-dependency only, never a dependency of production code.
//!
//! Owns: [`free_port`], the loopback ports tests give the processes and
//! endpoints they start. Must not touch: anything a product crate does.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// A loopback address for a TCP listener a test starts (see [`free_port`]).
pub fn free_tcp() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// A loopback address for a UDP socket a test starts (see [`free_port`]).
pub fn free_udp() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// A port free for both TCP and UDP on loopback that no outgoing
/// connection can take before the test's process binds it.
///
/// Binding port 0 and releasing it hands out a port from the kernel's
/// ephemeral range, the range every outgoing connection (HTTP clients, a
/// router's upstream connections, QUIC endpoints) draws its local port
/// from: between the release and the process's own bind, such a connection
/// can take it, and the process exits with "already in use" (seen in CI).
/// Ports are therefore taken from just below the ephemeral range, which
/// only listeners use; a process-wide cursor, started at an offset from the
/// pid, hands each out once, so two tests of one binary never get the same
/// port, and each is checked free for TCP and UDP.
pub fn free_port() -> u16 {
    static WINDOW: OnceLock<(u32, u32)> = OnceLock::new();
    static CURSOR: AtomicU32 = AtomicU32::new(0);
    let &(low, size) = WINDOW.get_or_init(|| {
        let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|text| text.split_whitespace().next()?.parse::<u32>().ok())
            .unwrap_or(32768);
        // Up to 12 000 ports below the range, never under 10 000.
        let low = ephemeral_low.saturating_sub(12_000).max(10_000);
        let size = ephemeral_low.saturating_sub(low);
        CURSOR.store(std::process::id().wrapping_mul(7919), Ordering::Relaxed);
        (low, size)
    });
    if size < 100 {
        // No room below the ephemeral range here: the kernel's choice.
        return TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|addr| addr.port())
            .unwrap_or_else(|error| panic!("no free port: {error}"));
    }
    for _ in 0..size {
        let offset = CURSOR.fetch_add(1, Ordering::Relaxed) % size;
        let Ok(port) = u16::try_from(low + offset) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", port)).is_ok()
            && UdpSocket::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
    panic!("no free port in {low}..{}", low + size);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_handed_out_once_below_the_ephemeral_range_and_are_free() {
        let ports: Vec<u16> = (0..200).map(|_| free_port()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len(), "a port was handed out twice");
        let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|text| text.split_whitespace().next()?.parse::<u16>().ok());
        if let Some(low) = ephemeral_low.filter(|low| *low > 10_100) {
            assert!(ports.iter().all(|port| *port < low), "{ports:?} vs {low}");
        }
        for port in ports.iter().take(20) {
            assert!(TcpListener::bind(("127.0.0.1", *port)).is_ok(), "{port}");
        }
    }
}
