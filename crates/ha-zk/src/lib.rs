//! Replicated store + ZooKeeper election: ActiveMQ's replicated LevelDB, rebuilt on the
//! [`MessageStore`] seam so it works over any local store (the embedded journal by default).
//!
//! - **Membership** (`election`): every broker of a group (`broker.name`) registers an ephemeral
//!   sequential znode under `<zk_path>/<group>/members` carrying its replication address, its
//!   log [`Position`] and its `weight`. No master is elected until `(replicas/2)+1` members
//!   have reported their position for the current round; the most up-to-date one (highest
//!   position, then weight, then oldest member) takes mastership by bumping the epoch counter
//!   znode with a version check **and** creating the ephemeral `master` znode, in one ZooKeeper
//!   transaction — so epochs are strictly increasing and there is at most one claimant.
//! - **Replication** (`master`, `slave`): the master wraps its local store in a
//!   [`ReplicatingStore`] which numbers each batch `(epoch, lsn)`, applies it locally and
//!   streams it to every slave over `bind`; a batch is confirmed only when the `sync` mode's
//!   condition holds. Each slave applies batches in order to its own store, with its position
//!   recorded in the same atomic batch (`position`). A slave whose last entry the master's
//!   in-memory ring holds (same epoch) streams from there; any other (too far behind, or a
//!   deposed master's divergent suffix) gets a full copy, which discards that suffix.
//! - **Safety**: a new master's first entry is a marker that must reach the sync mode's quorum
//!   before it serves (Raft's no-op: it commits everything it inherited). Slaves follow only the
//!   master named by ZooKeeper for the current epoch and stop following the moment that znode
//!   changes. A master whose session is disconnected stops confirming at once; one whose
//!   session expires, whose group falls below quorum, or which lacks its quorum of slaves for a
//!   session timeout steps down.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod auth;
pub mod core_activation;
pub mod core_auth;
pub mod core_driver;
pub mod core_store;
pub mod core_transport;
mod election;
pub mod group_nodes;
pub mod group_session;
pub mod liveness;
pub mod master;
pub mod position;
pub mod proto;
pub mod proto_wire;
pub mod registry;
pub mod slave;
pub mod staging;
pub mod tls;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

pub use election::ZkReplication;
use ferromq_store::{MessageStore, StoreError};
pub use master::ReplicatingStore;
pub use tls::ReplicationTls;
pub use wire::{AckKind, Position};

/// Why replication or the election failed.
#[derive(Debug, thiserror::Error)]
pub enum ZkError {
    /// ZooKeeper refused or failed a call.
    #[error("ZooKeeper {op}: {source}")]
    Zk {
        /// What was being done.
        op: String,
        /// The client's error.
        #[source]
        source: zookeeper_client::Error,
    },
    /// The replication protocol failed.
    #[error(transparent)]
    Wire(#[from] wire::WireError),
    /// Replication could not proceed.
    #[error("replication: {0}")]
    Replication(String),
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The configuration cannot work.
    #[error("replicated HA configuration: {0}")]
    Config(String),
    /// The TLS handshake of a replication connection failed (the peer's certificate is not
    /// signed by `tls_ca` or does not name its host, the peer does not speak TLS, ...).
    #[error("replication TLS handshake with {peer}: {source}")]
    Tls {
        /// The other end, `host:port`.
        peer: String,
        /// Why (rustls's error, inside an I/O error).
        #[source]
        source: std::io::Error,
    },
    /// The replication TLS settings cannot be used.
    #[error("replication TLS: {what}: {source}")]
    TlsSetup {
        /// What was being set up.
        what: &'static str,
        /// rustls's reason.
        #[source]
        source: rustls::Error,
    },
}

impl ZkError {
    fn zk(op: impl Into<String>) -> impl FnOnce(zookeeper_client::Error) -> ZkError {
        let op = op.into();
        move |source| ZkError::Zk { op, source }
    }
}

/// ActiveMQ's `sync` attribute: when a replicated write counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Confirmed once handed to the local store.
    LocalMem,
    /// Confirmed once the local store made it durable.
    LocalDisk,
    /// Handed to the local store and received by one slave.
    RemoteMem,
    /// Durable locally and in one slave's store.
    RemoteDisk,
    /// Handed to the local store and received by enough slaves to form a majority of `replicas`.
    QuorumMem,
    /// Durable locally and in enough slaves' stores to form a majority (the default).
    QuorumDisk,
}

impl std::str::FromStr for SyncMode {
    type Err = ZkError;

    fn from_str(s: &str) -> Result<SyncMode, ZkError> {
        Ok(match s {
            "local_mem" => SyncMode::LocalMem,
            "local_disk" => SyncMode::LocalDisk,
            "remote_mem" => SyncMode::RemoteMem,
            "remote_disk" => SyncMode::RemoteDisk,
            "quorum_mem" => SyncMode::QuorumMem,
            "quorum_disk" => SyncMode::QuorumDisk,
            other => {
                return Err(ZkError::Config(format!(
                    "sync = {other:?}: expected local_mem, local_disk, remote_mem, remote_disk, quorum_mem or quorum_disk"
                )))
            }
        })
    }
}

/// What a [`SyncMode`] means for a cluster of `replicas`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncPolicy {
    /// Wait for the local store's confirmation.
    pub local_disk: bool,
    /// Slaves that must acknowledge.
    pub slave_acks: usize,
    /// What their acknowledgement must mean.
    pub ack_kind: AckKind,
}

impl SyncPolicy {
    /// The policy of `mode` in a cluster of `replicas` brokers.
    pub fn new(mode: SyncMode, replicas: usize) -> SyncPolicy {
        // A majority of `replicas` counts the master itself.
        let quorum_slaves = replicas / 2;
        let (local_disk, slave_acks, ack_kind) = match mode {
            SyncMode::LocalMem => (false, 0, AckKind::Mem),
            SyncMode::LocalDisk => (true, 0, AckKind::Disk),
            SyncMode::RemoteMem => (false, 1, AckKind::Mem),
            SyncMode::RemoteDisk => (true, 1, AckKind::Disk),
            SyncMode::QuorumMem => (false, quorum_slaves, AckKind::Mem),
            SyncMode::QuorumDisk => (true, quorum_slaves, AckKind::Disk),
        };
        SyncPolicy {
            local_disk,
            slave_acks,
            ack_kind,
        }
    }
}

/// Opens the broker's local store (called again after a deposed master closed it).
pub type StoreOpener = Arc<dyn Fn() -> Result<Arc<dyn MessageStore>, StoreError> + Send + Sync>;

/// The `[ha]` settings of `mode = "replicated"` (ActiveMQ's replicated LevelDB attributes).
#[derive(Debug, Clone)]
pub struct ReplicatedConfig {
    /// `broker.name`: brokers with the same name form one replication group.
    pub group: String,
    /// Cluster size; `(replicas/2)+1` must be online.
    pub replicas: usize,
    /// Comma-separated ZooKeeper servers.
    pub zk_address: String,
    /// Election path; several groups may share it.
    pub zk_path: String,
    /// ZooKeeper session timeout (failure detection).
    pub zk_session_timeout: Duration,
    /// ZooKeeper digest password (`None`: open ACLs).
    pub zk_password: Option<String>,
    /// Replication listen address, `host:port` (port 0: dynamic).
    pub bind: String,
    /// Host advertised to slaves (default: the bind host, or 127.0.0.1 for a wildcard bind).
    pub hostname: Option<String>,
    /// Election tie-breaker: higher wins among equally up-to-date members.
    pub weight: i64,
    /// Shared secret a slave must present to the master.
    pub security_token: String,
    /// When a write counts as done.
    pub sync: SyncMode,
    /// Fast failover (`master_timeout_ms`): how long slaves wait without a heartbeat from the
    /// master before they fence its epoch and elect another, without waiting for ZooKeeper to
    /// expire its session. Zero: the ZooKeeper session alone decides (ActiveMQ's behaviour).
    /// Needs `replicas >= 3`; ignored below.
    pub master_timeout: Duration,
    /// Mutual TLS on the replication connections; `None`: plain TCP (trusted networks only).
    pub tls: Option<ReplicationTls>,
}

impl ReplicatedConfig {
    /// `(replicas/2)+1`.
    pub fn quorum(&self) -> usize {
        self.replicas / 2 + 1
    }

    /// Checks what can be checked without connecting.
    pub fn validate(&self) -> Result<(), ZkError> {
        if self.replicas == 0 {
            return Err(ZkError::Config("replicas must be at least 1".into()));
        }
        if !self.zk_path.starts_with('/') || (self.zk_path.len() > 1 && self.zk_path.ends_with('/'))
        {
            return Err(ZkError::Config(format!(
                "zk_path {:?} must start with '/' and not end with one",
                self.zk_path
            )));
        }
        if self.zk_address.trim().is_empty() {
            return Err(ZkError::Config("zk_address is empty".into()));
        }
        if self.group.is_empty() || self.group.contains('/') {
            return Err(ZkError::Config(
                "broker.name must be non-empty without '/'".into(),
            ));
        }
        if self.zk_session_timeout < Duration::from_millis(100) {
            return Err(ZkError::Config(
                "zk_session_timeout_ms must be at least 100".into(),
            ));
        }
        if !self.master_timeout.is_zero() && self.master_timeout < Duration::from_millis(50) {
            return Err(ZkError::Config(
                "master_timeout_ms must be 0 (off) or at least 50".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_modes_map_to_activemq_semantics() {
        let q = SyncPolicy::new(SyncMode::QuorumDisk, 3);
        assert_eq!(
            (q.local_disk, q.slave_acks, q.ack_kind),
            (true, 1, AckKind::Disk)
        );
        let q5 = SyncPolicy::new(SyncMode::QuorumMem, 5);
        assert_eq!(
            (q5.local_disk, q5.slave_acks, q5.ack_kind),
            (false, 2, AckKind::Mem)
        );
        assert_eq!(SyncPolicy::new(SyncMode::LocalDisk, 3).slave_acks, 0);
        assert_eq!(SyncPolicy::new(SyncMode::RemoteDisk, 5).slave_acks, 1);
        assert!("quorum_disk".parse::<SyncMode>().is_ok());
        assert!("quorum".parse::<SyncMode>().is_err());
    }
}
