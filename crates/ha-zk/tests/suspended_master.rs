//! What a suspended master reports: the server pauses dispatch to consumers from the
//! `serving` watch, together with the store holding confirmations back.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferromq_ha_zk::position::read_position;
use ferromq_ha_zk::{ReplicatingStore, SyncMode, SyncPolicy};
use ferromq_store::{MemoryStore, MessageStore, Op};

const T: Duration = Duration::from_secs(20);

#[tokio::test]
async fn suspension_stops_serving_and_confirming_together_and_resumes_both() {
    let store: Arc<dyn MessageStore> = Arc::new(MemoryStore::new());
    let start = read_position(&*store).unwrap();
    let rs = ReplicatingStore::new(
        store,
        start,
        1,
        SyncPolicy::new(SyncMode::LocalDisk, 1),
        "g".into(),
        "token".into(),
        Arc::new(AtomicBool::new(true)),
    );
    let mut serving = rs.serving();
    assert!(*serving.borrow_and_update(), "a new master serves");

    rs.set_suspended(true);
    tokio::time::timeout(T, serving.changed())
        .await
        .unwrap()
        .unwrap();
    assert!(!*serving.borrow_and_update(), "suspended: not serving");
    let mut write = rs.submit(vec![Op::Enqueue {
        list: "queue://x".into(),
        seq: 1,
        payload: Bytes::from_static(b"m"),
    }]);
    // The write is durable locally soon; it must stay unconfirmed while suspended. The watch
    // flipping back is the positive event this test waits for below.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), &mut write)
            .await
            .is_err(),
        "a suspended master confirmed a write"
    );

    rs.set_suspended(false);
    tokio::time::timeout(T, serving.changed())
        .await
        .unwrap()
        .unwrap();
    assert!(*serving.borrow_and_update(), "resumed: serving again");
    tokio::time::timeout(T, write).await.unwrap().unwrap();
}
