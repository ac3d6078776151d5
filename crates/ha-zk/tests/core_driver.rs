//! The replication core's driver (`core_driver`) with a real ZooKeeper and a real journal:
//! a one-member group (the member transport is not built yet) claims, confirms producers'
//! writes only once durable, keeps its log across restarts, and stops — never retrying — when
//! its store fails a write.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferromq_ha_zk::core_driver::{CoreDriver, SubmitError};
use ferromq_ha_zk::core_store::recover;
use ferromq_ha_zk::group_session::SessionConfig;
use ferromq_ha_zk::proto::{Config, Role};
use ferromq_ha_zk::SyncMode;
use ferromq_powerfs::{LossMode, PowerFs};
use ferromq_store::{JournalConfig, JournalStore, MessageStore, Op};

const T: Duration = Duration::from_secs(60);
const Q: &str = "queue://core-driver";

fn session(path: &str) -> SessionConfig {
    SessionConfig {
        zk_address: common::zk(),
        session_timeout: Duration::from_secs(4),
        zk_password: None,
        zk_path: path.to_string(),
        group: "g".into(),
        me: 1,
        advertise: None,
    }
}

fn core(incarnation: u64, replicas: u32) -> Config {
    Config::new(1, incarnation, replicas, SyncMode::QuorumDisk)
}

fn open(dir: &std::path::Path) -> Arc<dyn MessageStore> {
    Arc::new(JournalStore::open(dir, JournalConfig::default()).unwrap())
}

fn enqueue(seq: u64) -> Vec<Op> {
    vec![Op::Enqueue {
        list: Q.into(),
        seq,
        payload: Bytes::from(format!("{seq:>512}")),
    }]
}

async fn master_of(d: &CoreDriver, epoch: u64) {
    let mut role = d.role();
    tokio::time::timeout(T, role.wait_for(|r| *r == Role::Master { epoch }))
        .await
        .unwrap_or_else(|_| panic!("not master of epoch {epoch} within {T:?}"))
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_member_group_claims_confirms_and_keeps_its_log_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let path = common::unique_path("core-driver");
    let store = open(dir.path());
    let d = Arc::new(CoreDriver::start(core(1, 1), session(&path), store.clone(), None).unwrap());
    master_of(&d, 1).await;

    // 16 producers, 100 writes each, at full speed: every write confirmed with its own lsn.
    let mut tasks = Vec::new();
    for p in 0..16u64 {
        let d = d.clone();
        tasks.push(tokio::spawn(async move {
            let mut lsns = Vec::new();
            for i in 0..100u64 {
                lsns.push(d.submit(enqueue(1 + p * 100 + i)).await.unwrap());
            }
            lsns
        }));
    }
    let mut lsns = Vec::new();
    for t in tasks {
        lsns.extend(t.await.unwrap());
    }
    lsns.sort_unstable();
    // lsn 1 is the new master's marker.
    assert_eq!(lsns, (2..=1_601).collect::<Vec<_>>());
    // A batch naming a replication list is refused, not replicated.
    let bad = vec![Op::Enqueue {
        list: "replication://position".into(),
        seq: 1,
        payload: Bytes::new(),
    }];
    assert!(matches!(d.submit(bad).await, Err(SubmitError::Invalid(_))));
    Arc::into_inner(d).unwrap().stop().await.unwrap();

    // Confirmed means durable: reopened, the store holds all of it, position and history.
    store.close().unwrap();
    drop(store);
    let store = open(dir.path());
    let rec = recover(&*store).unwrap();
    assert_eq!(rec.last, 1_601);
    assert_eq!(rec.history.spans(), &[(1, 1)]);
    assert_eq!(store.load(Q, None, 10_000).unwrap().len(), 1_600);

    // Restarted on the same store: the next epoch continues the log after it.
    let d = CoreDriver::start(core(2, 1), session(&path), store.clone(), None).unwrap();
    master_of(&d, 2).await;
    assert_eq!(d.submit(enqueue(1_601)).await, Ok(1_603));
    d.stop().await.unwrap();
    let rec = recover(&*store).unwrap();
    assert_eq!(rec.last, 1_603);
    assert_eq!(rec.history.spans(), &[(1, 1), (2, 1_602)]);
    store.close().unwrap();
}

#[tokio::test]
async fn a_group_of_several_members_needs_the_transport() {
    let dir = tempfile::tempdir().unwrap();
    let err =
        CoreDriver::start(core(1, 3), session("/unused"), open(dir.path()), None).unwrap_err();
    assert!(err.to_string().contains("member transport"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_store_write_stops_the_driver_and_is_never_confirmed() {
    let mount = tempfile::tempdir().unwrap();
    let mut fs = PowerFs::mount(mount.path()).unwrap_or_else(|e| panic!("{e}"));
    let dir = fs.mount_point().join("journal");
    let path = common::unique_path("core-driver-eio");
    let store = open(&dir);
    let d = CoreDriver::start(core(1, 1), session(&path), store.clone(), None).unwrap();
    master_of(&d, 1).await;
    assert_eq!(d.submit(enqueue(1)).await, Ok(2));

    // The disk fails the next write (every change returns EIO from now on).
    fs.arm_freeze(1);
    let r = d.submit(enqueue(2)).await;
    assert!(fs.is_frozen(), "the write reached the disk");
    assert!(
        matches!(r, Err(SubmitError::Stopped(_))),
        "a write the store failed is not confirmed: {r:?}"
    );
    let mut role = d.role();
    tokio::time::timeout(T, role.wait_for(|r| *r == Role::Follower))
        .await
        .expect("the driver gives up the role")
        .unwrap();
    let end = d.stop().await;
    assert!(
        end.as_ref()
            .is_err_and(|e| e.to_string().contains("never retried")),
        "{end:?}"
    );
    let _ = store.close();
    drop(store);
    fs.cut_power(LossMode::DropAll).unwrap();
    // After the cut: the confirmed write is there, the failed one is not.
    let store = open(&dir);
    assert_eq!(recover(&*store).unwrap().last, 2);
    assert_eq!(store.load(Q, None, 10).unwrap().len(), 1);
    store.close().unwrap();
}
