//! What the ZooKeeper-backed tests of this crate share.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use ferromq_ha_zk::{ReplicatedConfig, StoreOpener, SyncMode};
use ferromq_store::{JournalConfig, JournalStore, MessageStore};

/// The ZooKeeper to test against (`FERROMQ_TEST_ZK`, default the standalone server of
/// `scripts/services.sh`; unreachable = failure).
pub fn zk() -> String {
    std::env::var("FERROMQ_TEST_ZK").unwrap_or_else(|_| "127.0.0.1:2181".into())
}

/// An election path no other test (or earlier run) uses.
pub fn unique_path(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("/ferromq-test/{name}-{}-{nanos}", std::process::id())
}

/// Opens (creating) a default journal in `dir`: a member's store.
pub fn opener(dir: std::path::PathBuf) -> StoreOpener {
    Arc::new(move || {
        let s: Arc<dyn MessageStore> =
            Arc::new(JournalStore::open(&dir, JournalConfig::default())?);
        Ok(s)
    })
}

/// A member of group "grp" (3 replicas, `quorum_disk`, 2 s session) at election path `path`,
/// reaching ZooKeeper at `zk_address`.
pub fn member_config(zk_address: String, path: &str, weight: i64) -> ReplicatedConfig {
    ReplicatedConfig {
        group: "grp".into(),
        replicas: 3,
        zk_address,
        zk_path: path.into(),
        zk_session_timeout: Duration::from_millis(2000),
        zk_password: None,
        bind: "127.0.0.1:0".into(),
        hostname: None,
        weight,
        security_token: "s3cret".into(),
        sync: SyncMode::QuorumDisk,
        master_timeout: Duration::ZERO,
        tls: None,
    }
}
