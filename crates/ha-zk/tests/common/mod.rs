//! What the ZooKeeper-backed tests of this crate share.

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
