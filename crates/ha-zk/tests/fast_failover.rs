//! Fast failover against a real ZooKeeper, in-process: a member whose store fenced the current
//! master's epoch (as if it alone had stopped hearing the master) reports as fenced, cannot be
//! elected without a quorum of fences, and — once it hears the master's heartbeats again and
//! nobody replaced it — lifts its fence and follows (proved by a write that only its
//! acknowledgement can confirm).

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferromq_ha::Activation;
use ferromq_ha_zk::position::{fence_ops, read_fence};
use ferromq_ha_zk::{ReplicatedConfig, StoreOpener, SyncMode, ZkReplication};
use ferromq_store::{JournalConfig, JournalStore, MessageStore, Op};

use common::{unique_path, zk};

const T: Duration = Duration::from_secs(60);

fn member(path: &str, dir: &std::path::Path) -> Arc<ZkReplication> {
    let dir = dir.to_path_buf();
    let opener: StoreOpener = Arc::new(move || {
        let s: Arc<dyn MessageStore> =
            Arc::new(JournalStore::open(&dir, JournalConfig::default())?);
        Ok(s)
    });
    let cfg = ReplicatedConfig {
        group: "grp".into(),
        replicas: 3,
        zk_address: zk(),
        zk_path: path.into(),
        zk_session_timeout: Duration::from_millis(4000),
        zk_password: None,
        bind: "127.0.0.1:0".into(),
        hostname: None,
        weight: 1,
        security_token: "s3cret".into(),
        sync: SyncMode::QuorumDisk,
        master_timeout: Duration::from_millis(200),
        tls: None,
    };
    Arc::new(ZkReplication::new(cfg, opener).unwrap())
}

fn write(store: &Arc<dyn MessageStore>, seq: u64) -> ferromq_store::Completion {
    store.submit(vec![Op::Enqueue {
        list: "queue://f".into(),
        seq,
        payload: Bytes::from(format!("w-{seq}")),
    }])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_fence_is_lifted_when_the_master_answers_and_was_not_replaced() {
    let d = tempfile::tempdir().unwrap();
    let path = unique_path("fast-withdraw");
    let (da, db, dc) = (d.path().join("a"), d.path().join("b"), d.path().join("c"));
    let (a, c) = (member(&path, &da), member(&path, &dc));
    let mut wa = {
        let a = a.clone();
        tokio::spawn(async move { a.acquire().await })
    };
    let mut wc = {
        let c = c.clone();
        tokio::spawn(async move { c.acquire().await })
    };
    // Whichever wins is the master; the other stays a slave.
    let (mut m, slave_task) = tokio::select! {
        r = &mut wa => (r.unwrap().unwrap(), wc),
        r = &mut wc => (r.unwrap().unwrap(), wa),
    };
    let epoch = m.epoch;
    let store = m.take_store().unwrap();
    for i in 1..=5 {
        tokio::time::timeout(T, write(&store, i))
            .await
            .unwrap()
            .unwrap();
    }

    // B's store already fenced this master's epoch (it alone lost the heartbeats).
    {
        let b = JournalStore::open(&db, JournalConfig::default()).unwrap();
        b.submit(fence_ops(None, epoch)).await.unwrap();
        assert_eq!(read_fence(&b).unwrap(), Some(epoch));
        b.close().unwrap();
    }
    let b = member(&path, &db);
    let wb = {
        let b = b.clone();
        tokio::spawn(async move { b.acquire().await })
    };

    // Wait for B's fenced report: it joined and, fenced, reports as such (and waits).
    let zkc = zookeeper_client::Client::connect(&zk()).await.unwrap();
    let members = format!("{path}/grp/members");
    let reported = async {
        loop {
            for child in zkc.list_children(&members).await.unwrap() {
                if let Ok((data, _)) = zkc.get_data(&format!("{members}/{child}")).await {
                    if String::from_utf8_lossy(&data).contains(&format!("fenced={epoch}")) {
                        return;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(T, reported)
        .await
        .expect("B never reported as fenced");

    // The other slave leaves: from now on a quorum_disk write needs B's acknowledgement,
    // which a fenced member never gives. Its confirmation is the proof that B lifted the
    // fence and follows (through a full copy: it was empty).
    slave_task.abort();
    let _ = slave_task.await;
    tokio::time::timeout(T, write(&store, 6))
        .await
        .expect("B never followed the master it had fenced")
        .unwrap();
    assert!(!wb.is_finished(), "B must not have been elected");
    m.fence.as_ref().unwrap().check().unwrap();

    store.close().unwrap();
    drop(m);
    wb.abort();
    let _ = wb.await;
    drop(b);
    let b = JournalStore::open(&db, JournalConfig::default()).unwrap();
    assert_eq!(read_fence(&b).unwrap(), None, "the fence is lifted durably");
    assert_eq!(b.load("queue://f", None, 100).unwrap().len(), 6);
}
