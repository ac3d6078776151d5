//! Membership and election against a real ZooKeeper (`FERROMQ_TEST_ZK`, default the standalone
//! server of `scripts/services.sh`; unreachable = failure). Three in-process members, each over
//! its own journal: no master below quorum, the most up-to-date member wins, a slave receives
//! the master's writes, and after the master goes the survivor with every confirmed write is
//! promoted with a higher epoch.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferromq_ha::{Activation, Mastership};
use ferromq_ha_zk::position::{position_ops, read_position};
use ferromq_ha_zk::{Position, ReplicatedConfig, SyncMode, ZkReplication};
use ferromq_store::{JournalConfig, JournalStore, MessageStore, Op};

use common::{member_config, opener, unique_path, zk};

const T: Duration = Duration::from_secs(60);

fn member(path: &str, dir: &std::path::Path, weight: i64) -> Arc<ZkReplication> {
    let cfg = member_config(zk(), path, weight);
    Arc::new(ZkReplication::new(cfg, opener(dir.to_path_buf())).unwrap())
}

fn spawn_acquire(
    m: &Arc<ZkReplication>,
) -> tokio::task::JoinHandle<Result<Mastership, ferromq_ha::HaError>> {
    let m = m.clone();
    tokio::spawn(async move { m.acquire().await })
}

fn bodies(s: &dyn MessageStore) -> Vec<String> {
    s.load("queue://e", None, 100_000)
        .unwrap()
        .into_iter()
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_master_below_quorum_then_the_most_up_to_date_wins_and_its_successor_has_every_write() {
    let d = tempfile::tempdir().unwrap();
    let path = unique_path("election");
    let (da, db, dc) = (d.path().join("a"), d.path().join("b"), d.path().join("c"));
    // C has the longest log (as if it were the last master's best slave).
    {
        let c = JournalStore::open(&dc, JournalConfig::default()).unwrap();
        c.submit(position_ops(None, Position { epoch: 1, lsn: 10 }))
            .await
            .unwrap();
        c.close().unwrap();
    }
    // A has the heavier weight, but position beats weight.
    let a = member(&path, &da, 5);
    let c = member(&path, &dc, 1);
    let wa = spawn_acquire(&a);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !wa.is_finished(),
        "one member of three is below quorum: no master"
    );
    let wc = spawn_acquire(&c);
    let mut mc = tokio::time::timeout(T, wc)
        .await
        .expect("C was never promoted")
        .unwrap()
        .unwrap();
    assert_eq!(
        mc.epoch, 2,
        "epoch is above every earlier one (C's log says 1)"
    );
    assert!(!wa.is_finished(), "A stays a slave");
    mc.fence.as_ref().unwrap().check().unwrap();

    // The master's writes are confirmed (quorum_disk: A has them on disk too).
    let store = mc
        .take_store()
        .expect("the replicated mode hands over its store");
    for i in 1..=20u64 {
        tokio::time::timeout(
            T,
            store.submit(vec![Op::Enqueue {
                list: "queue://e".into(),
                seq: i,
                payload: Bytes::from(format!("w-{i}")),
            }]),
        )
        .await
        .unwrap()
        .unwrap();
    }
    let confirmed = bodies(&*store);
    assert_eq!(confirmed.len(), 20);

    // The master leaves cleanly: A alone is below quorum and must not promote itself.
    store.close().unwrap();
    mc.release();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!wa.is_finished(), "a lone survivor must not become master");

    // B joins (empty): A has every confirmed write, so A wins, with a higher epoch.
    let b = member(&path, &db, 9);
    let wb = spawn_acquire(&b);
    let mut ma = tokio::time::timeout(T, wa)
        .await
        .expect("A was never promoted")
        .unwrap()
        .unwrap();
    assert_eq!(ma.epoch, 3);
    let sa = ma.take_store().unwrap();
    assert_eq!(bodies(&*sa), confirmed, "no confirmed write lost");
    assert!(!wb.is_finished());
    // B got a copy (it was empty): the new master's first entry needed it.
    sa.close().unwrap();
    drop(ma);
    wb.abort();
    let sb = JournalStore::open(&db, JournalConfig::default()).unwrap();
    assert_eq!(
        bodies(&sb),
        confirmed,
        "the new slave holds every confirmed write"
    );
    assert!(read_position(&sb).unwrap().epoch >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_protected_group_elects_and_locks_out_other_credentials() {
    let d = tempfile::tempdir().unwrap();
    let path = unique_path("password");
    let with_pw = |dir: &std::path::Path, pw: &str| {
        let cfg = ReplicatedConfig {
            group: "pw".into(),
            replicas: 1,
            zk_address: zk(),
            zk_path: path.clone(),
            zk_session_timeout: Duration::from_millis(2000),
            zk_password: Some(pw.into()),
            bind: "127.0.0.1:0".into(),
            hostname: None,
            weight: 1,
            security_token: String::new(),
            sync: SyncMode::QuorumDisk,
            master_timeout: Duration::ZERO,
            tls: None,
        };
        Arc::new(ZkReplication::new(cfg, opener(dir.to_path_buf())).unwrap())
    };
    // replicas = 1: a quorum of one, so the member elects itself (digest auth, creator ACLs).
    let a = with_pw(&d.path().join("a"), "right");
    let mut m = tokio::time::timeout(T, a.acquire())
        .await
        .expect("a lone member of a one-replica group must be promoted")
        .unwrap();
    assert_eq!(m.epoch, 1);
    // Another password cannot read the group's znodes: it never becomes master or slave.
    let b = with_pw(&d.path().join("b"), "wrong");
    let wb = spawn_acquire(&b);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !wb.is_finished(),
        "wrong credentials must not win mastership"
    );
    wb.abort();
    // Another group without a password shares the election path: only the protected
    // group's own znodes are locked, not the path.
    let open_cfg = ReplicatedConfig {
        group: "open".into(),
        replicas: 1,
        zk_address: zk(),
        zk_path: path.clone(),
        zk_session_timeout: Duration::from_millis(2000),
        zk_password: None,
        bind: "127.0.0.1:0".into(),
        hostname: None,
        weight: 1,
        security_token: String::new(),
        sync: SyncMode::QuorumDisk,
        master_timeout: Duration::ZERO,
        tls: None,
    };
    let open = ZkReplication::new(open_cfg, opener(d.path().join("o"))).unwrap();
    let mut mo = tokio::time::timeout(T, open.acquire())
        .await
        .expect("an open group under the same path must elect")
        .unwrap();
    mo.take_store().unwrap().close().unwrap();
    m.take_store().unwrap().close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_configured_with_other_replicas_than_its_group_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let path = unique_path("replicas");
    let cfg = |replicas: usize| ReplicatedConfig {
        group: "rep".into(),
        replicas,
        zk_address: zk(),
        zk_path: path.clone(),
        zk_session_timeout: Duration::from_millis(2000),
        zk_password: None,
        bind: "127.0.0.1:0".into(),
        hostname: None,
        weight: 1,
        security_token: String::new(),
        sync: SyncMode::QuorumDisk,
        master_timeout: Duration::ZERO,
        tls: None,
    };
    // The group's first broker records replicas = 1 (and, alone a quorum, becomes master).
    let first = ZkReplication::new(cfg(1), opener(d.path().join("a"))).unwrap();
    let mut m = tokio::time::timeout(T, first.acquire())
        .await
        .expect("a one-replica group elects its only member")
        .unwrap();
    // A broker that thinks the group has three replicas would count another quorum.
    let other = ZkReplication::new(cfg(3), opener(d.path().join("b"))).unwrap();
    let err = tokio::time::timeout(T, other.acquire())
        .await
        .expect("a mismatched broker must be refused, not left waiting")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("replicas = 3") && err.contains("replicas = 1"),
        "{err}"
    );
    m.take_store().unwrap().close().unwrap();
}
