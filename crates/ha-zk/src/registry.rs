//! A small ZooKeeper registry for discovery: a broker publishes its client address at an
//! ephemeral znode while it serves, and others watch a parent znode for what is published.
//!
//! Networks of brokers use it (`zookeeper://` discovery: each group's master publishes
//! `<path>/<group>`), and so does `update_cluster_clients` in replicated mode (every member of
//! a group publishes `<zk_path>/<group>/clients/<member>`).
//!
//! A registration is keyed so that a newcomer replaces a stale znode — a new master publishes at
//! once, without waiting for its deposed predecessor's session to expire — and a registration
//! removes only a znode its own session owns, so a deposed master that stops late cannot remove
//! its successor's address.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use zookeeper_client::{Acls, Client, CreateMode};

/// Where the registry's ZooKeeper is.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// `host:port[,host:port…]`.
    pub zk_address: String,
    /// The session timeout: how long a crashed publisher's znode outlives it.
    pub session_timeout: Duration,
}

/// Pause before retrying after a ZooKeeper error.
const RETRY: Duration = Duration::from_millis(250);
/// A watcher also re-reads this often, in case a data change slipped between two watches.
const REREAD: Duration = Duration::from_secs(1);
/// Most children a watch reads (a bound on what a registry can make a broker hold).
const CHILDREN_MAX: usize = 10_000;

async fn connect(cfg: &RegistryConfig) -> Result<Client, String> {
    let c = Client::connector().with_session_timeout(cfg.session_timeout);
    match tokio::time::timeout(Duration::from_secs(10), c.connect(&cfg.zk_address)).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(format!("connect {}: {e}", cfg.zk_address)),
        Err(_) => Err(format!("connect {}: timed out", cfg.zk_address)),
    }
}

fn parent_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(p, _)| p)
}

/// A published znode; dropping it (or [`Registration::stop`]) removes it.
#[derive(Debug)]
pub struct Registration {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Registration {
    /// Removes the znode (if this registration's session still owns it) and ends.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Publishes `data` at the ephemeral znode `path` (creating its parents), replacing a znode
/// left there by another session, and publishes it again after a session expiry.
pub fn register(cfg: RegistryConfig, path: String, data: Vec<u8>) -> Registration {
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        loop {
            if *stopped.borrow() {
                return;
            }
            match publish(&cfg, &path, &data).await {
                Ok(zk) => {
                    tracing::debug!(%path, "registered in ZooKeeper");
                    let mut state = zk.state_watcher();
                    loop {
                        tokio::select! {
                            _ = stopped.changed() => {
                                remove_own(&zk, &path).await;
                                return;
                            }
                            s = state.changed() => {
                                if s.is_terminated() {
                                    tracing::warn!(%path, state = ?s, "ZooKeeper session ended; registering again");
                                    break;
                                }
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(%path, error = %e, "cannot register in ZooKeeper; retrying")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(RETRY) => {}
                _ = stopped.changed() => return,
            }
        }
    });
    Registration { stop, task }
}

async fn publish(cfg: &RegistryConfig, path: &str, data: &[u8]) -> Result<Client, String> {
    let zk = connect(cfg).await?;
    let parent = parent_of(path);
    if !parent.is_empty() {
        zk.mkdir(
            parent,
            &CreateMode::Persistent.with_acls(Acls::anyone_all()),
        )
        .await
        .map_err(|e| format!("mkdir {parent}: {e}"))?;
    }
    let eph = CreateMode::Ephemeral.with_acls(Acls::anyone_all());
    for _ in 0..10 {
        match zk.create(path, data, &eph).await {
            Ok(_) => return Ok(zk),
            Err(zookeeper_client::Error::NodeExists) => {
                // Another session's (a predecessor's, or this broker's own before a restart):
                // replace it. A concurrent publisher may win the race; then try again.
                match zk.delete(path, None).await {
                    Ok(()) | Err(zookeeper_client::Error::NoNode) => {}
                    Err(e) => return Err(format!("delete stale {path}: {e}")),
                }
            }
            Err(e) => return Err(format!("create {path}: {e}")),
        }
    }
    Err(format!("create {path}: kept losing the race for it"))
}

/// Deletes `path` only if this session owns it.
async fn remove_own(zk: &Client, path: &str) {
    if let Ok((_, stat)) = zk.get_data(path).await {
        if stat.ephemeral_owner == zk.session_id().0 {
            let _ = zk.delete(path, Some(stat.version)).await;
        }
    }
}

/// The children of a watched znode with their data, by name.
pub type Children = BTreeMap<String, Vec<u8>>;

/// A watch on the children of a znode; dropping it stops the watch.
#[derive(Debug)]
pub struct ChildrenWatch {
    /// The latest children and data (empty until first read).
    pub rx: watch::Receiver<Children>,
    task: JoinHandle<()>,
}

impl Drop for ChildrenWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Watches the children of `parent` (created if missing) and their data.
pub fn watch_children(cfg: RegistryConfig, parent: String) -> ChildrenWatch {
    let (tx, rx) = watch::channel(Children::new());
    let task = tokio::spawn(async move {
        loop {
            if let Err(e) = watch_session(&cfg, &parent, &tx).await {
                tracing::warn!(%parent, error = %e, "ZooKeeper watch failed; retrying");
            }
            tokio::time::sleep(RETRY).await;
        }
    });
    ChildrenWatch { rx, task }
}

async fn watch_session(
    cfg: &RegistryConfig,
    parent: &str,
    tx: &watch::Sender<Children>,
) -> Result<(), String> {
    let zk = connect(cfg).await?;
    zk.mkdir(
        parent,
        &CreateMode::Persistent.with_acls(Acls::anyone_all()),
    )
    .await
    .map_err(|e| format!("mkdir {parent}: {e}"))?;
    let mut state = zk.state_watcher();
    loop {
        let (mut names, _, watcher) = zk
            .get_and_watch_children(parent)
            .await
            .map_err(|e| format!("children of {parent}: {e}"))?;
        names.sort();
        names.truncate(CHILDREN_MAX);
        let mut now = Children::new();
        for n in names {
            match zk.get_data(&format!("{parent}/{n}")).await {
                Ok((data, _)) => {
                    now.insert(n, data);
                }
                Err(zookeeper_client::Error::NoNode) => {}
                Err(e) => return Err(format!("read {parent}/{n}: {e}")),
            }
        }
        tx.send_if_modified(|cur| {
            let changed = *cur != now;
            if changed {
                *cur = now;
            }
            changed
        });
        tokio::select! {
            _ = watcher.changed() => {}
            _ = tokio::time::sleep(REREAD) => {}
            s = state.changed() => {
                if s.is_terminated() {
                    return Err(format!("session {s:?}"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents() {
        assert_eq!(parent_of("/a/b/c"), "/a/b");
        assert_eq!(parent_of("/a"), "");
    }
}
