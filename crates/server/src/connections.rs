//! The client connections a server holds now, for the admin API and metrics.
//!
//! Touched once when a connection is accepted and once when it ends — never per frame — so a
//! plain mutex is cheap enough and the message path is untouched.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

/// One open client connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// `stomp` or `openwire`.
    pub protocol: &'static str,
    /// The client's address.
    pub remote: SocketAddr,
    /// When it was accepted, milliseconds since the Unix epoch.
    pub since_ms: u64,
}

/// The registry of open connections, shared by every connector of one server.
#[derive(Debug, Clone, Default)]
pub struct Connections(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, ConnectionInfo>>,
    /// Connections accepted since start, per protocol index (see [`protocol_index`]).
    accepted_total: [AtomicU64; 2],
}

fn protocol_index(protocol: &str) -> usize {
    usize::from(protocol != "stomp")
}

impl Connections {
    /// Records an accepted connection; it is forgotten when the returned guard drops.
    pub fn register(&self, protocol: &'static str, remote: SocketAddr) -> ConnectionGuard {
        let id = self.0.next_id.fetch_add(1, Ordering::Relaxed);
        let since_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.0.open.lock().insert(
            id,
            ConnectionInfo {
                protocol,
                remote,
                since_ms,
            },
        );
        self.0.accepted_total[protocol_index(protocol)].fetch_add(1, Ordering::Relaxed);
        ConnectionGuard {
            registry: self.clone(),
            id,
        }
    }

    /// The open connections, oldest first.
    pub fn snapshot(&self) -> Vec<ConnectionInfo> {
        let mut v: Vec<ConnectionInfo> = self.0.open.lock().values().cloned().collect();
        v.sort_by_key(|c| (c.since_ms, c.remote));
        v
    }

    /// Connections of `protocol` (`stomp` or `openwire`) accepted since the server started.
    pub fn accepted_total(&self, protocol: &str) -> u64 {
        self.0.accepted_total[protocol_index(protocol)].load(Ordering::Relaxed)
    }
}

/// Keeps a connection in its registry while it lives.
#[derive(Debug)]
pub struct ConnectionGuard {
    registry: Connections,
    id: u64,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.registry.0.open.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_listed_until_its_guard_drops() {
        let c = Connections::default();
        let a = c.register("stomp", "127.0.0.1:1".parse().unwrap());
        let b = c.register("openwire", "127.0.0.1:2".parse().unwrap());
        assert_eq!(c.snapshot().len(), 2);
        drop(a);
        let left = c.snapshot();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].protocol, "openwire");
        drop(b);
        assert!(c.snapshot().is_empty());
        assert_eq!(c.accepted_total("stomp"), 1);
        assert_eq!(c.accepted_total("openwire"), 1);
    }
}
