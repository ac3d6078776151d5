//! The client connections a server holds now, for the admin API and metrics.
//!
//! Touched once when a connection is accepted and once when it ends — never per frame — so a
//! plain mutex is cheap enough and the message path is untouched.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

/// One open client connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The registry's id for it, unique for the life of the process (what the admin API's
    /// `DELETE /api/v1/connections/{id}` names).
    pub id: u64,
    /// `stomp` or `openwire`.
    pub protocol: &'static str,
    /// The client's address.
    pub remote: SocketAddr,
    /// When it was accepted, milliseconds since the Unix epoch.
    pub since_ms: u64,
    /// The login it connected with, once connected (none without `[security]` users).
    pub login: Option<String>,
    /// Its JMS client id, once connected with one.
    pub client_id: Option<String>,
}

/// A connection's key: the protocol and the client's address (unique among open connections
/// of one listener; the same client port may reach both listeners).
type Key = (&'static str, SocketAddr);

/// The registry of open connections, shared by every connector of one server.
#[derive(Debug, Clone, Default)]
pub struct Connections(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    open: Mutex<HashMap<Key, Entry>>,
    /// Open connections per client address (`security.max_connections_per_ip`).
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// The last id given out.
    last_id: AtomicU64,
    /// Connections accepted since start, per protocol index (see [`protocol_index`]).
    accepted_total: [AtomicU64; 2],
}

/// A listed connection and the signal that asks its session to close.
#[derive(Debug)]
struct Entry {
    info: ConnectionInfo,
    /// Notified (once, with a stored permit: the session may not be waiting yet) when an
    /// administrator closes the connection.
    close: Arc<Notify>,
}

fn protocol_index(protocol: &str) -> usize {
    usize::from(protocol != "stomp")
}

/// A connection refused by `security.max_connections_per_ip`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerIpLimitReached {
    /// The limit.
    pub max: usize,
}

impl Connections {
    /// Records an accepted connection; it is forgotten when the returned guard drops.
    pub fn register(&self, protocol: &'static str, remote: SocketAddr) -> ConnectionGuard {
        self.0.admit(client_ip(remote), 0).ok();
        self.listed(protocol, remote)
    }

    /// [`Connections::register`], unless `max_per_ip` (above 0) connections from the same
    /// address are open already.
    pub fn try_register(
        &self,
        protocol: &'static str,
        remote: SocketAddr,
        max_per_ip: usize,
    ) -> Result<ConnectionGuard, PerIpLimitReached> {
        self.0.admit(client_ip(remote), max_per_ip)?;
        Ok(self.listed(protocol, remote))
    }

    /// Open connections from `ip` now.
    pub fn open_from(&self, ip: IpAddr) -> usize {
        self.0
            .per_ip
            .lock()
            .get(&ip.to_canonical())
            .copied()
            .unwrap_or(0)
    }

    fn listed(&self, protocol: &'static str, remote: SocketAddr) -> ConnectionGuard {
        let since_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let id = self.0.last_id.fetch_add(1, Ordering::Relaxed) + 1;
        self.0.open.lock().insert(
            (protocol, remote),
            Entry {
                info: ConnectionInfo {
                    id,
                    protocol,
                    remote,
                    since_ms,
                    login: None,
                    client_id: None,
                },
                close: Arc::new(Notify::new()),
            },
        );
        self.0.accepted_total[protocol_index(protocol)].fetch_add(1, Ordering::Relaxed);
        ConnectionGuard {
            registry: self.clone(),
            key: (protocol, remote),
        }
    }

    /// Records who an open connection is, once its CONNECT (or ConnectionInfo) is accepted.
    pub fn identify(
        &self,
        protocol: &'static str,
        remote: SocketAddr,
        login: Option<&str>,
        client_id: Option<&str>,
    ) {
        if let Some(Entry { info: c, .. }) = self.0.open.lock().get_mut(&(protocol, remote)) {
            c.login = login.filter(|l| !l.is_empty()).map(str::to_string);
            c.client_id = client_id.map(str::to_string);
        }
    }

    /// The open connections, oldest first.
    pub fn snapshot(&self) -> Vec<ConnectionInfo> {
        let mut v: Vec<ConnectionInfo> = self
            .0
            .open
            .lock()
            .values()
            .map(|e| e.info.clone())
            .collect();
        v.sort_by_key(|c| (c.since_ms, c.id));
        v
    }

    /// The signal a session waits on to close at an administrator's request; a connection
    /// that is not listed (never, for a session the accept loop started) gets one nobody
    /// notifies.
    pub fn close_signal(&self, protocol: &'static str, remote: SocketAddr) -> Arc<Notify> {
        self.0
            .open
            .lock()
            .get(&(protocol, remote))
            .map(|e| e.close.clone())
            .unwrap_or_default()
    }

    /// Asks the session of connection `id` to close (the admin API); `None` when no open
    /// connection has that id. The session closes on its own task (STOMP: an ERROR frame
    /// first), and leaves the listing when it has.
    pub fn close(&self, id: u64) -> Option<ConnectionInfo> {
        let open = self.0.open.lock();
        let e = open.values().find(|e| e.info.id == id)?;
        e.close.notify_one();
        Some(e.info.clone())
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
    key: Key,
}

/// The address a connection is counted under: an IPv4 client reaching a dual-stack listener
/// (`::ffff:10.0.0.7`) counts as `10.0.0.7`.
fn client_ip(remote: SocketAddr) -> IpAddr {
    remote.ip().to_canonical()
}

impl Inner {
    /// Counts one more connection from `ip`, unless `max` (above 0) are open.
    fn admit(&self, ip: IpAddr, max: usize) -> Result<(), PerIpLimitReached> {
        let mut per_ip = self.per_ip.lock();
        let n = per_ip.entry(ip).or_insert(0);
        if max > 0 && *n >= max {
            return Err(PerIpLimitReached { max });
        }
        *n += 1;
        Ok(())
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.registry.0.open.lock().remove(&self.key);
        let ip = client_ip(self.key.1);
        let mut per_ip = self.registry.0.per_ip.lock();
        if let Some(n) = per_ip.get_mut(&ip) {
            debug_assert!(*n > 0, "a connection counted for its address");
            *n = n.saturating_sub(1);
            if *n == 0 {
                per_ip.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_is_listed_until_its_guard_drops_and_can_be_closed() {
        let c = Connections::default();
        let a = c.register("stomp", "127.0.0.1:1".parse().unwrap());
        let b = c.register("openwire", "127.0.0.1:2".parse().unwrap());
        assert_eq!(c.snapshot().len(), 2);
        c.identify(
            "openwire",
            "127.0.0.1:2".parse().unwrap(),
            Some("app"),
            Some("cid"),
        );
        drop(a);
        let left = c.snapshot();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].id, 2, "ids count from 1 in accept order");
        let signal = c.close_signal("openwire", "127.0.0.1:2".parse().unwrap());
        assert_eq!(c.close(2).map(|i| i.id), Some(2));
        // The permit is stored: a session that waits only later still sees it.
        tokio::time::timeout(std::time::Duration::from_secs(5), signal.notified())
            .await
            .expect("the close signal fires");
        assert_eq!(left[0].protocol, "openwire");
        assert_eq!(left[0].login.as_deref(), Some("app"));
        assert_eq!(left[0].client_id.as_deref(), Some("cid"));
        drop(b);
        assert!(c.snapshot().is_empty());
        assert!(c.close(1).is_none(), "gone with its guard");
        assert_eq!(c.accepted_total("stomp"), 1);
        assert_eq!(c.accepted_total("openwire"), 1);
    }

    #[test]
    fn connections_per_address_are_counted_limited_and_released() {
        let c = Connections::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let a = c
            .try_register("stomp", "10.0.0.1:1".parse().unwrap(), 2)
            .unwrap();
        let b = c.register("openwire", "10.0.0.1:2".parse().unwrap());
        assert_eq!(c.open_from(ip), 2);
        assert_eq!(
            c.try_register("stomp", "10.0.0.1:3".parse().unwrap(), 2)
                .unwrap_err(),
            PerIpLimitReached { max: 2 }
        );
        let other = c
            .try_register("stomp", "10.0.0.2:1".parse().unwrap(), 2)
            .unwrap();
        assert_eq!(c.open_from(ip), 2, "a refusal counts nothing");
        drop(a);
        assert_eq!(c.open_from(ip), 1);
        let again = c.try_register("stomp", "10.0.0.1:3".parse().unwrap(), 2);
        assert!(again.is_ok());
        drop((b, again, other));
        assert_eq!(c.open_from(ip), 0);
        assert!(c.0.per_ip.lock().is_empty(), "no entry left behind");
    }
}
