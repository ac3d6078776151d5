//! The HA activation seam: a broker acquires mastership before it opens its store or any client
//! port, holds it, and learns at once when it is lost.
//!
//! ```text
//! serve:  loop {
//!           mastership = activation.acquire().await   // waits while slave
//!           open the store with mastership.epoch and mastership.fence, start the connectors
//!           select { mastership.lost() => fail-stop, then wait as a slave again
//!                    shutdown          => stop, release the lock so a slave takes over at once }
//!         }
//! ```
//!
//! Each HA mode (shared file lock, shared database lease, ZooKeeper) implements [`Activation`].
//! Every mastership carries an **epoch**, strictly greater than any earlier master's, and a
//! **fence** the store consults before it confirms anything: a deposed master whose fence check
//! fails can never get a write confirmed.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use ferromq_store::{Fence, MessageStore};
use tokio::sync::watch;

/// A boxed, sendable future (keeps [`Activation`] object-safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why mastership could not be acquired.
#[derive(Debug, thiserror::Error)]
pub enum HaError {
    /// An I/O call on the lock failed.
    #[error("{op}: {source}")]
    Io {
        /// What was being done.
        op: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration cannot work.
    #[error("HA configuration: {0}")]
    Config(String),
}

/// The role a broker plays, for logs and status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Starting up, not yet competing.
    Starting,
    /// Waiting for mastership; no client port is open.
    Slave,
    /// Serving clients.
    Master {
        /// The mastership's epoch.
        epoch: u64,
    },
    /// Lost mastership and stopped serving (fail-stop); `reason` says why.
    Deposed {
        /// Why.
        reason: String,
    },
    /// Shut down.
    Stopped,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Starting => f.write_str("starting"),
            Role::Slave => f.write_str("slave"),
            Role::Master { epoch } => write!(f, "master (epoch {epoch})"),
            Role::Deposed { reason } => write!(f, "deposed ({reason})"),
            Role::Stopped => f.write_str("stopped"),
        }
    }
}

/// Holds mastership until dropped or released.
pub struct Mastership {
    /// Strictly greater than every earlier master's epoch.
    pub epoch: u64,
    /// What the store must check before confirming a write (`None`: no HA, nothing to fence).
    pub fence: Option<Arc<dyn Fence>>,
    lost: watch::Receiver<Option<String>>,
    /// A store the HA mode already opened for this master (a replicated mode's store wrapper,
    /// whose local store the broker kept up to date while it was a slave). When present, the
    /// server serves from it instead of opening its own.
    store: Option<Arc<dyn MessageStore>>,
    /// False while the master is suspended (still master, but confirming nothing: its HA
    /// coordination is unreachable); `None`: always serving.
    serving: Option<watch::Receiver<bool>>,
    /// A replicating master's view of its slaves, for the admin API.
    replication: Option<Arc<dyn ReplicationStatus>>,
    /// Why this broker became master, in the HA mode's words (see [`Mastership::reason`]).
    reason: String,
    /// When this broker saw the previous master gone, or started competing when there was none
    /// to wait for (see [`Mastership::takeover_since`]).
    takeover_since: Option<Instant>,
    /// Keeps the lock (file handle, connection…) alive; dropping it releases the lock.
    _guard: Box<dyn Send + Sync>,
}

impl fmt::Debug for Mastership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mastership")
            .field("epoch", &self.epoch)
            .field("reason", &self.reason)
            .field("lost", &*self.lost.borrow())
            .finish_non_exhaustive()
    }
}

impl Mastership {
    /// A mastership held by `guard`, lost when `lost` carries a reason.
    pub fn new(
        epoch: u64,
        fence: Option<Arc<dyn Fence>>,
        lost: watch::Receiver<Option<String>>,
        guard: Box<dyn Send + Sync>,
    ) -> Mastership {
        Mastership {
            epoch,
            fence,
            lost,
            store: None,
            serving: None,
            replication: None,
            reason: String::new(),
            takeover_since: None,
            _guard: guard,
        }
    }

    /// Says why this broker became master (shown by the admin API after a failover).
    pub fn with_reason(mut self, reason: impl Into<String>) -> Mastership {
        self.reason = reason.into();
        self
    }

    /// Records when the takeover began: when this broker saw the previous master gone (lock
    /// granted, master znode deleted, master fenced) or, with no master to wait for, when it
    /// started competing. The server measures the takeover from there to serving clients.
    pub fn with_takeover_since(mut self, since: Instant) -> Mastership {
        self.takeover_since = Some(since);
        self
    }

    /// Why this broker became master; empty when the HA mode did not say.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// When the takeover began (see [`Mastership::with_takeover_since`]); `None` when the HA
    /// mode cannot tell.
    pub fn takeover_since(&self) -> Option<Instant> {
        self.takeover_since
    }

    /// Hands the server the store to serve from (see [`Mastership::take_store`]).
    pub fn with_store(mut self, store: Arc<dyn MessageStore>) -> Mastership {
        self.store = Some(store);
        self
    }

    /// Reports through `serving` when the master is suspended (see [`Mastership::serving`]).
    pub fn with_serving(mut self, serving: watch::Receiver<bool>) -> Mastership {
        self.serving = Some(serving);
        self
    }

    /// Lets the admin API read the replication state (see [`Mastership::replication`]).
    pub fn with_replication(mut self, r: Arc<dyn ReplicationStatus>) -> Mastership {
        self.replication = Some(r);
        self
    }

    /// The replication state of a replicating master (`None` in every other mode).
    pub fn replication(&self) -> Option<Arc<dyn ReplicationStatus>> {
        self.replication.clone()
    }

    /// Whether this master may serve consumers now: false while it is suspended, when another
    /// broker may be elected and deliver the same messages, so the server must stop handing
    /// messages to consumers until it turns true again (or mastership is lost). A mastership
    /// that is never suspended reports true once and never changes.
    pub fn serving(&self) -> watch::Receiver<bool> {
        match &self.serving {
            Some(rx) => rx.clone(),
            None => watch::channel(true).1,
        }
    }

    /// The store this mastership provides, if any; `None` means "open the configured store".
    pub fn take_store(&mut self) -> Option<Arc<dyn MessageStore>> {
        self.store.take()
    }

    /// Resolves with the reason when mastership is lost. Never resolves while it is held.
    pub async fn lost(&mut self) -> String {
        loop {
            if let Some(r) = self.lost.borrow().clone() {
                return r;
            }
            if self.lost.changed().await.is_err() {
                // The watcher went away without a verdict: treat as lost, never as held.
                return "mastership watcher stopped".into();
            }
        }
    }

    /// Releases mastership (the lock) now, so a slave can take over at once.
    pub fn release(self) {
        drop(self);
    }
}

/// A replicating master's view of its slaves, read (never changed) by the admin API.
pub trait ReplicationStatus: Send + Sync + fmt::Debug {
    /// The state now.
    fn replication(&self) -> Replication;
}

/// What a replicating master knows of its log and its slaves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replication {
    /// The last log position (lsn) the master assigned.
    pub last_lsn: u64,
    /// The highest lsn the master's own store confirmed.
    pub local_lsn: u64,
    /// Slave acknowledgements a write waits for before it is confirmed.
    pub slave_acks_required: u64,
    /// Whether those acknowledgements mean "durable" (`true`) or "received" (`false`).
    pub slave_acks_durable: bool,
    /// The connected slaves, by member id.
    pub slaves: Vec<SlaveReplication>,
}

/// One connected slave as its master sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlaveReplication {
    /// The slave's member id.
    pub member: String,
    /// The highest lsn it holds as the sync mode counts it (received or durable).
    pub acked_lsn: u64,
    /// The highest lsn it acknowledged receiving.
    pub received_lsn: u64,
    /// The highest lsn it acknowledged as durable.
    pub durable_lsn: u64,
    /// Entries the master assigned that the slave has not acknowledged: `last_lsn - acked_lsn`.
    pub lag_entries: u64,
    /// Bytes queued for it and not yet written to its socket.
    pub queued_bytes: u64,
}

/// How a broker becomes master.
pub trait Activation: Send + Sync + fmt::Debug {
    /// A short name: `none`, `shared-file`, `shared-db`, `replicated`.
    fn mode(&self) -> &'static str;

    /// Waits until this broker is master. Logs that it is a slave while it waits.
    fn acquire(&self) -> BoxFuture<'_, Result<Mastership, HaError>>;

    /// The broker exits while not master (after `acquire` was abandoned): release what the
    /// activation holds open. A replicated slave closes its local store here, which checkpoints
    /// it, so that the next start does not replay its whole journal.
    fn shutdown(&self) {}
}

/// No HA: the broker is always master, epoch 0, and nothing is fenced.
#[derive(Debug, Default)]
pub struct Standalone;

impl Activation for Standalone {
    fn mode(&self) -> &'static str {
        "none"
    }

    fn acquire(&self) -> BoxFuture<'_, Result<Mastership, HaError>> {
        Box::pin(async {
            let (tx, rx) = watch::channel(None);
            // Keep the sender alive inside the guard: a standalone broker never loses mastership.
            Ok(Mastership::new(0, None, rx, Box::new(tx))
                .with_reason("no HA: a standalone broker is always master")
                .with_takeover_since(Instant::now()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn standalone_is_master_and_never_loses_it() {
        let mut m = Standalone.acquire().await.unwrap();
        assert_eq!(m.epoch, 0);
        assert!(m.fence.is_none());
        let lost = tokio::time::timeout(std::time::Duration::from_millis(50), m.lost()).await;
        assert!(
            lost.is_err(),
            "a standalone broker must never lose mastership"
        );
    }

    #[tokio::test]
    async fn losing_mastership_reports_the_reason() {
        let (tx, rx) = watch::channel(None);
        let mut m = Mastership::new(3, None, rx, Box::new(()));
        tx.send(Some("lock file replaced".into())).unwrap();
        assert_eq!(m.lost().await, "lock file replaced");
    }

    #[tokio::test]
    async fn serving_follows_the_suspension_and_defaults_to_true() {
        let (_tx, rx) = watch::channel(None);
        let m = Mastership::new(1, None, rx.clone(), Box::new(()));
        assert!(*m.serving().borrow());
        let (stx, srx) = watch::channel(true);
        let m = Mastership::new(1, None, rx, Box::new(())).with_serving(srx);
        let mut serving = m.serving();
        stx.send(false).unwrap();
        serving.changed().await.unwrap();
        assert!(!*serving.borrow_and_update());
    }

    #[tokio::test]
    async fn the_reason_and_takeover_start_travel_with_the_mastership() {
        let (_tx, rx) = watch::channel(None);
        let m = Mastership::new(1, None, rx, Box::new(()));
        assert_eq!(m.reason(), "");
        assert!(m.takeover_since().is_none());
        let t = Instant::now();
        let m = m.with_reason("acquired the lock").with_takeover_since(t);
        assert_eq!(m.reason(), "acquired the lock");
        assert_eq!(m.takeover_since(), Some(t));
        let s = Standalone.acquire().await.unwrap();
        assert!(s.reason().contains("standalone"));
    }

    #[tokio::test]
    async fn a_vanished_watcher_counts_as_lost() {
        let (tx, rx) = watch::channel(None);
        let mut m = Mastership::new(1, None, rx, Box::new(()));
        drop(tx);
        assert_eq!(m.lost().await, "mastership watcher stopped");
    }
}
