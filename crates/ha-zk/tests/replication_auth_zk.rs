//! Against a real ZooKeeper, in-process: a group of three whose third member was configured
//! with another security token. It joins the election as usual, but the master refuses its
//! stream and its watch (both logged), it never gets a message, and the group keeps serving
//! with the other slave.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferromq_ha::Activation;
use ferromq_ha_zk::ZkReplication;
use ferromq_store::{JournalConfig, JournalStore, MessageStore, Op};

use common::{capture_logs, logged, member_config, opener, unique_path, zk};

const T: Duration = Duration::from_secs(60);

fn member(path: &str, dir: &std::path::Path, token: &str) -> Arc<ZkReplication> {
    let mut cfg = member_config(zk(), path, 1);
    cfg.security_token = token.into();
    // Fast failover on: each slave opens the watch connection too, which must be refused
    // to the impostor as well.
    cfg.master_timeout = Duration::from_millis(300);
    cfg.zk_session_timeout = Duration::from_millis(4000);
    Arc::new(ZkReplication::new(cfg, opener(dir.to_path_buf())).unwrap())
}

fn write(store: &Arc<dyn MessageStore>, seq: u64) -> ferromq_store::Completion {
    store.submit(vec![Op::Enqueue {
        list: "queue://a".into(),
        seq,
        payload: Bytes::from(format!("w-{seq}")),
    }])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_with_another_token_is_refused_and_the_group_keeps_serving() {
    capture_logs();
    let d = tempfile::tempdir().unwrap();
    let path = unique_path("auth-wrong-token");
    let (da, db, dc) = (d.path().join("a"), d.path().join("b"), d.path().join("c"));
    let (a, c) = (member(&path, &da, "s3cret"), member(&path, &dc, "s3cret"));
    let mut wa = {
        let a = a.clone();
        tokio::spawn(async move { a.acquire().await })
    };
    let mut wc = {
        let c = c.clone();
        tokio::spawn(async move { c.acquire().await })
    };
    let (mut m, slave_task) = tokio::select! {
        r = &mut wa => (r.unwrap().unwrap(), wc),
        r = &mut wc => (r.unwrap().unwrap(), wa),
    };
    let store = m.take_store().unwrap();
    for i in 1..=5 {
        tokio::time::timeout(T, write(&store, i))
            .await
            .unwrap()
            .unwrap();
    }

    // B joins with another token: refused on both connections, by the master (which logs the
    // peer) and as seen from B.
    let b = member(&path, &db, "not-the-group-token");
    let wb = {
        let b = b.clone();
        tokio::spawn(async move { b.acquire().await })
    };
    logged(&[
        "WARN",
        "refusing a replication slave",
        "peer=127.0.0.1:",
        "authentication failed",
    ])
    .await;
    logged(&[
        "stopped following the master",
        "master refused the stream",
        "authentication failed",
    ])
    .await;

    // The group keeps serving: quorum_disk writes go on being confirmed (by the good slave).
    for i in 6..=20 {
        tokio::time::timeout(T, write(&store, i))
            .await
            .expect("the master stopped confirming with a rogue member around")
            .unwrap();
    }
    assert!(!wb.is_finished(), "the rogue member must not be elected");
    m.fence.as_ref().unwrap().check().unwrap();

    store.close().unwrap();
    drop(m);
    slave_task.abort();
    let _ = slave_task.await;
    wb.abort();
    let _ = wb.await;
    drop((a, b, c));
    // B never passed the handshake: none of the group's messages reached its store.
    let b = JournalStore::open(&db, JournalConfig::default()).unwrap();
    assert!(b.load("queue://a", None, 100).unwrap().is_empty());
}
