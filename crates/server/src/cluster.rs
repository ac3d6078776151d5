//! What a master tells its clients about the group (ActiveMQ's `updateClusterClients`).
//!
//! With `ha.update_cluster_clients`, the master's CONNECTED frame carries the group as
//! `ferromq.cluster: tcp://a:61613,tcp://b:61613`, and `ferromq-client` (with ActiveMQ's
//! `updateURIsSupported=true`, the default) adds those addresses to its failover list.
//!
//! OpenWire clients get the same list as a ConnectionControl (`connectedBrokers`), which
//! ActiveMQ's failover transport adds to its URIs. A member's registered entry is its STOMP
//! address, then, separated by a space, its OpenWire address when it serves OpenWire.
//!
//! Every member registers the address clients should use for it — slaves included: they are
//! the brokers a client must find after a failover:
//! - shared-file: a file `<data_dir>/members/<holder>.addr`, written at start and removed on a
//!   clean shutdown; a member that died without cleaning up stays listed (a client trying it
//!   just gets connection refused);
//! - replicated: an ephemeral znode `<zk_path>/.clients/<group>/<holder>` (outside the group's
//!   own znodes, which a `zk_password` protects), watched by every member; a crashed member
//!   drops out when its ZooKeeper session expires.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::watch;

/// The header on CONNECTED that lists the group.
pub const CLUSTER_HEADER: &str = "ferromq.cluster";
/// Most member files read (a bound on what a hostile directory can make us do).
const MEMBERS_MAX: usize = 64;
/// How long a read of the members directory is reused: a failover makes every client
/// reconnect at once, and each CONNECTED must not cost a directory scan.
const MEMBERS_CACHE_TTL: Duration = Duration::from_secs(1);

/// A member list and when it was read.
type CachedList = Option<(Instant, String)>;

/// Where a broker learns the other members of its group.
#[derive(Debug, Clone, Default)]
pub enum Members {
    /// Only itself (standalone, shared-db).
    #[default]
    Own,
    /// A shared-file group's members directory.
    Dir(PathBuf),
    /// Addresses kept current by a watch (replicated mode: the ZooKeeper registry).
    Live(watch::Receiver<Vec<String>>),
}

/// The group's member addresses as one broker sees them.
#[derive(Debug, Clone)]
pub struct ClusterView {
    members: Members,
    own: String,
    /// The STOMP and the OpenWire lists, each re-read at most once per `MEMBERS_CACHE_TTL`.
    cached: Arc<Mutex<[CachedList; 2]>>,
}

/// Whether `a` can go into the comma-separated header as one failover address.
fn usable(a: &str) -> bool {
    a.starts_with("tcp://") && !a.contains([',', '\n', '\r'])
}

impl ClusterView {
    /// A view for a broker advertising `own` (`tcp://host:port`, then optionally a space and
    /// its OpenWire `tcp://host:port`), finding the other members through `members`.
    pub fn new(own: String, members: Members) -> ClusterView {
        ClusterView {
            members,
            own,
            cached: Arc::new(Mutex::new([None, None])),
        }
    }

    /// Registers `own` as a member under `holder`. Errors are logged, not fatal: the cluster
    /// list is a convenience for clients.
    pub fn register(members_dir: &Path, holder: &str, own: &str) {
        let r = std::fs::create_dir_all(members_dir)
            .and_then(|_| std::fs::write(members_dir.join(format!("{holder}.addr")), own));
        if let Err(e) = r {
            tracing::warn!(error = %e, "cannot register this broker in {}", members_dir.display());
        }
    }

    /// Removes the registration of `holder` (clean shutdown).
    pub fn unregister(members_dir: &Path, holder: &str) {
        let _ = std::fs::remove_file(members_dir.join(format!("{holder}.addr")));
    }

    /// Every member's STOMP address, this broker's first, without duplicates.
    pub fn addresses(&self) -> Vec<String> {
        self.addresses_at(0)
    }

    /// Every member's OpenWire address (members that serve OpenWire), this broker's first.
    pub fn openwire_addresses(&self) -> Vec<String> {
        self.addresses_at(1)
    }

    /// Part `part` (0: STOMP, 1: OpenWire) of every registered entry.
    fn addresses_at(&self, part: usize) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut add = |entry: &str| {
            if let Some(a) = entry.split_whitespace().nth(part) {
                if usable(a) && !out.iter().any(|o| o == a) {
                    out.push(a.to_string());
                }
            }
        };
        add(&self.own);
        match &self.members {
            Members::Own => {}
            Members::Dir(dir) => {
                if let Ok(entries) = std::fs::read_dir(dir) {
                    for e in entries.flatten().take(MEMBERS_MAX) {
                        if e.path().extension().and_then(|x| x.to_str()) != Some("addr") {
                            continue;
                        }
                        if let Ok(a) = std::fs::read_to_string(e.path()) {
                            add(&a);
                        }
                    }
                }
            }
            Members::Live(rx) => {
                for a in rx.borrow().iter().take(MEMBERS_MAX) {
                    add(a);
                }
            }
        }
        out
    }

    fn cached_list(&self, part: usize) -> String {
        let mut cached = self.cached.lock();
        match &cached[part] {
            Some((at, v)) if at.elapsed() < MEMBERS_CACHE_TTL => v.clone(),
            _ => {
                let v = self.addresses_at(part).join(",");
                cached[part] = Some((Instant::now(), v.clone()));
                v
            }
        }
    }

    /// The header value (the STOMP member list).
    pub fn header_value(&self) -> String {
        self.cached_list(0)
    }

    /// The OpenWire member list (`ConnectionControl.connectedBrokers`); empty when no member
    /// serves OpenWire.
    pub fn openwire_value(&self) -> String {
        self.cached_list(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_listed_once_with_the_own_address_first() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("members");
        ClusterView::register(&m, "a", "tcp://127.0.0.1:1");
        ClusterView::register(&m, "b", "tcp://127.0.0.1:2");
        std::fs::write(m.join("junk.addr"), "not a uri").unwrap();
        let v = ClusterView::new("tcp://127.0.0.1:2".into(), Members::Dir(m.clone()));
        let a = v.addresses();
        assert_eq!(a[0], "tcp://127.0.0.1:2");
        assert_eq!(a.len(), 2);
        assert!(a.contains(&"tcp://127.0.0.1:1".to_string()));
        ClusterView::unregister(&m, "a");
        assert_eq!(v.addresses(), ["tcp://127.0.0.1:2"]);
    }

    #[test]
    fn live_members_follow_their_watch() {
        let (tx, rx) = watch::channel(vec![]);
        let v = ClusterView::new("tcp://127.0.0.1:1".into(), Members::Live(rx));
        assert_eq!(v.addresses(), ["tcp://127.0.0.1:1"]);
        tx.send_replace(vec![
            "tcp://127.0.0.1:2".into(),
            "tcp://127.0.0.1:1".into(),
            "tcp://a:1,tcp://b:2".into(),
            "http://x".into(),
        ]);
        assert_eq!(v.addresses(), ["tcp://127.0.0.1:1", "tcp://127.0.0.1:2"]);
        tx.send_replace(vec![]);
        assert_eq!(v.addresses(), ["tcp://127.0.0.1:1"]);
    }

    #[test]
    fn openwire_addresses_come_from_the_second_part_of_each_entry() {
        let (tx, rx) = watch::channel(vec![]);
        let v = ClusterView::new(
            "tcp://127.0.0.1:1 tcp://127.0.0.1:11".into(),
            Members::Live(rx),
        );
        tx.send_replace(vec![
            "tcp://127.0.0.1:2 tcp://127.0.0.1:12".into(),
            "tcp://127.0.0.1:3".into(),
        ]);
        assert_eq!(
            v.addresses(),
            [
                "tcp://127.0.0.1:1",
                "tcp://127.0.0.1:2",
                "tcp://127.0.0.1:3"
            ]
        );
        assert_eq!(
            v.openwire_addresses(),
            ["tcp://127.0.0.1:11", "tcp://127.0.0.1:12"]
        );
        assert_eq!(v.openwire_value(), "tcp://127.0.0.1:11,tcp://127.0.0.1:12");
    }
}
