//! Fast failover's master side: a master with the heartbeat lease enabled confirms and
//! dispatches only while enough slaves answer its heartbeats on the liveness channel.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferromq_ha_zk::liveness::Liveness;
use ferromq_ha_zk::position::read_position;
use ferromq_ha_zk::slave::{watch_master, FollowParams};
use ferromq_ha_zk::{ReplicatingStore, SyncMode, SyncPolicy};
use ferromq_store::{MemoryStore, MessageStore, Op};
use tokio::net::TcpListener;

const T: Duration = Duration::from_secs(20);

fn master() -> ReplicatingStore {
    let store: Arc<dyn MessageStore> = Arc::new(MemoryStore::new());
    let start = read_position(&*store).unwrap();
    ReplicatingStore::new(
        store,
        start,
        1,
        // Local only: the lease alone holds confirmations back in this test.
        SyncPolicy::new(SyncMode::LocalDisk, 3),
        "g".into(),
        "token".into(),
        Arc::new(AtomicBool::new(true)),
    )
}

fn write(rs: &ReplicatingStore, seq: u64) -> ferromq_store::Completion {
    rs.submit(vec![Op::Enqueue {
        list: "queue://x".into(),
        seq,
        payload: Bytes::from_static(b"m"),
    }])
}

async fn serve(rs: &ReplicatingStore) -> FollowParams {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    rs.serve(l);
    FollowParams {
        addr,
        master_epoch: 1,
        token: "token".into(),
        group: "g".into(),
        member: "b-slave".into(),
        tls: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_serves_only_while_a_slave_answers_its_heartbeats() {
    let rs = master();
    let mut serving = rs.serving();
    let l = Liveness::new(Duration::from_millis(300), 3).unwrap();
    rs.enable_lease(l);
    assert!(!*serving.borrow_and_update(), "no lease yet: not serving");
    let params = serve(&rs).await;
    let mut w1 = write(&rs, 1);
    assert!(
        tokio::time::timeout(Duration::from_millis(100), &mut w1)
            .await
            .is_err(),
        "confirmed without a lease"
    );

    let heard = Arc::new(AtomicU64::new(0));
    let watcher = {
        let (p, h) = (params.clone(), heard.clone());
        tokio::spawn(async move { watch_master(&p, &h, T).await })
    };
    tokio::time::timeout(T, serving.changed())
        .await
        .unwrap()
        .unwrap();
    assert!(*serving.borrow_and_update(), "a slave answered: serving");
    tokio::time::timeout(T, w1).await.unwrap().unwrap();
    assert!(
        heard.load(Ordering::SeqCst) > 0,
        "the slave heard heartbeats"
    );

    // The slave goes silent (its process stopped, say): the lease runs out.
    watcher.abort();
    tokio::time::timeout(T, serving.changed())
        .await
        .unwrap()
        .unwrap();
    assert!(
        !*serving.borrow_and_update(),
        "the lease ran out: not serving"
    );
    let mut w2 = write(&rs, 2);
    assert!(
        tokio::time::timeout(Duration::from_millis(100), &mut w2)
            .await
            .is_err(),
        "confirmed after the lease ran out"
    );

    // It answers again: the lease and the held write come back.
    let watcher = {
        let (p, h) = (params.clone(), heard.clone());
        tokio::spawn(async move { watch_master(&p, &h, T).await })
    };
    tokio::time::timeout(T, serving.changed())
        .await
        .unwrap()
        .unwrap();
    assert!(*serving.borrow_and_update());
    tokio::time::timeout(T, w2).await.unwrap().unwrap();
    watcher.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_is_refused_when_fast_failover_is_off_or_the_epoch_differs() {
    let rs = master();
    let params = serve(&rs).await;
    let heard = AtomicU64::new(0);
    let e = watch_master(&params, &heard, T).await.unwrap_err();
    assert!(e.to_string().contains("fast failover is off"), "{e}");

    rs.enable_lease(Liveness::new(Duration::from_millis(300), 3).unwrap());
    let wrong = FollowParams {
        master_epoch: 7,
        ..params
    };
    let e = watch_master(&wrong, &heard, T).await.unwrap_err();
    assert!(e.to_string().contains("epoch"), "{e}");
    assert_eq!(heard.load(Ordering::SeqCst), 0);
}
