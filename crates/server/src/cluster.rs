//! What a master tells its clients about the group (ActiveMQ's `updateClusterClients`).
//!
//! Every broker of a shared-file group writes the address clients should use for it to
//! `<data_dir>/members/<holder>.addr` when it starts (slaves included: they are the brokers a
//! client must find after a failover) and removes it on a clean shutdown. With
//! `ha.update_cluster_clients`, the master's CONNECTED frame carries the group as
//! `ferromq.cluster: tcp://a:61613,tcp://b:61613`, and `ferromq-client` (with ActiveMQ's
//! `updateURIsSupported=true`, the default) adds those addresses to its failover list. A member
//! that died without cleaning up stays listed; a client trying it just gets connection refused.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// The header on CONNECTED that lists the group.
pub const CLUSTER_HEADER: &str = "ferromq.cluster";
/// Most member files read (a bound on what a hostile directory can make us do).
const MEMBERS_MAX: usize = 64;
/// How long a read of the members directory is reused: a failover makes every client
/// reconnect at once, and each CONNECTED must not cost a directory scan.
const MEMBERS_CACHE_TTL: Duration = Duration::from_secs(1);

/// The group's member addresses as one broker sees them.
#[derive(Debug, Clone)]
pub struct ClusterView {
    members_dir: Option<PathBuf>,
    own: String,
    cached: Arc<Mutex<Option<(Instant, String)>>>,
}

impl ClusterView {
    /// A view for a broker advertising `own` (`tcp://host:port`), reading the members of a
    /// shared-file group from `members_dir`.
    pub fn new(own: String, members_dir: Option<PathBuf>) -> ClusterView {
        ClusterView {
            members_dir,
            own,
            cached: Arc::new(Mutex::new(None)),
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

    /// Every member's address, this broker's first, without duplicates.
    pub fn addresses(&self) -> Vec<String> {
        let mut out = vec![self.own.clone()];
        if let Some(dir) = &self.members_dir {
            if let Ok(entries) = std::fs::read_dir(dir) {
                for e in entries.flatten().take(MEMBERS_MAX) {
                    if e.path().extension().and_then(|x| x.to_str()) != Some("addr") {
                        continue;
                    }
                    if let Ok(a) = std::fs::read_to_string(e.path()) {
                        let a = a.trim();
                        if a.starts_with("tcp://")
                            && !a.contains([',', '\n'])
                            && !out.iter().any(|o| o == a)
                        {
                            out.push(a.to_string());
                        }
                    }
                }
            }
        }
        out
    }

    /// The header value (the member list, re-read at most once per `MEMBERS_CACHE_TTL`).
    pub fn header_value(&self) -> String {
        let mut cached = self.cached.lock();
        match &*cached {
            Some((at, v)) if at.elapsed() < MEMBERS_CACHE_TTL => v.clone(),
            _ => {
                let v = self.addresses().join(",");
                *cached = Some((Instant::now(), v.clone()));
                v
            }
        }
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
        let v = ClusterView::new("tcp://127.0.0.1:2".into(), Some(m.clone()));
        let a = v.addresses();
        assert_eq!(a[0], "tcp://127.0.0.1:2");
        assert_eq!(a.len(), 2);
        assert!(a.contains(&"tcp://127.0.0.1:1".to_string()));
        ClusterView::unregister(&m, "a");
        assert_eq!(v.addresses(), ["tcp://127.0.0.1:2"]);
    }
}
