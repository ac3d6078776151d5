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

/// Every event logged in this test binary, as `LEVEL message field=value...` (a global
/// subscriber: the runtimes' worker threads log too).
pub static LOGS: parking_lot::Mutex<Vec<String>> = parking_lot::const_mutex(Vec::new());

struct Logs;

struct Line(String);

impl tracing::field::Visit for Line {
    fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        let _ = write!(self.0, " {}={:?}", f.name(), v);
    }
}

impl tracing::Subscriber for Logs {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, e: &tracing::Event<'_>) {
        let mut l = Line(e.metadata().level().to_string());
        e.record(&mut l);
        LOGS.lock().push(l.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

pub fn capture_logs() {
    // Only the first call installs it; later ones find it there.
    let _ = tracing::subscriber::set_global_default(Logs);
}

/// Waits until a logged line contains every one of `parts` (logging is asynchronous to the
/// test: the peer's task logs after the test saw the connection end).
pub async fn logged(parts: &[&str]) -> String {
    for _ in 0..2000 {
        if let Some(l) = LOGS
            .lock()
            .iter()
            .find(|l| parts.iter().all(|p| l.contains(p)))
        {
            return l.clone();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("nothing logged with {parts:?}");
}

/// Starts a heartbeat watch of the master with `p` and waits (at most `t` per change) until the
/// master, whose lease needs an answering slave, serves. Returns the watch task and its count
/// of heartbeats heard.
pub async fn watch_until_serving(
    p: ferromq_ha_zk::slave::FollowParams,
    serving: &mut tokio::sync::watch::Receiver<bool>,
    t: Duration,
) -> (
    tokio::task::JoinHandle<Result<(), ferromq_ha_zk::ZkError>>,
    Arc<std::sync::atomic::AtomicU64>,
) {
    let heard = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let watcher = {
        let h = heard.clone();
        tokio::spawn(async move { ferromq_ha_zk::slave::watch_master(&p, &h, t).await })
    };
    while !*serving.borrow_and_update() {
        tokio::time::timeout(t, serving.changed())
            .await
            .expect("the master did not serve in time")
            .expect("the master's serving flag went away");
    }
    (watcher, heard)
}

/// A group state of three replicas (the replication core's ZooKeeper tests).
pub fn group_state(
    epoch: u64,
    leader: Option<u32>,
    isr: &[u32],
) -> ferromq_ha_zk::proto::GroupState {
    ferromq_ha_zk::proto::GroupState {
        epoch,
        leader,
        isr: isr.to_vec(),
        replicas: 3,
    }
}

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A test certificate authority (rcgen; no key is committed).
pub struct Ca(rcgen::Certificate, rcgen::KeyPair);

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = p.self_signed(&key).unwrap();
        Ca(cert, key)
    }

    /// A member certificate for `names` (DNS names or IP addresses), usable as server and as
    /// client, and the TLS settings of a member presenting it and trusting `trusted`.
    pub fn member(
        &self,
        names: &[&str],
        trusted: &Ca,
        verify_hostname: bool,
    ) -> ferromq_ha_zk::ReplicationTls {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
        p.distinguished_name.push(DnType::CommonName, names[0]);
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = p.signed_by(&key, &self.0, &self.1).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        ferromq_ha_zk::ReplicationTls::new(
            provider(),
            vec![CertificateDer::from(cert.der().to_vec())],
            key,
            vec![CertificateDer::from(trusted.0.der().to_vec())],
            verify_hostname,
        )
        .unwrap()
    }
}

/// The project's provider (see ferromq_client::tls::crypto_provider for why ring).
#[allow(deprecated)]
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
