//! The replication core's ZooKeeper driver (`group_nodes`) against a real ZooKeeper: every
//! `ZkOp` applied or refused as the core expects, ownership of the leader node, watches.

mod common;

use std::time::Duration;

use ferromq_ha_zk::group_nodes::GroupNodes;
use ferromq_ha_zk::proto::{Event, GroupState, ZkFail, ZkOp};
use zookeeper_client::{Acls, Client};

async fn client() -> Client {
    Client::connector()
        .with_session_timeout(Duration::from_secs(4))
        .connect(&common::zk())
        .await
        .expect("ZooKeeper (scripts/services.sh start)")
}

use common::group_state as state;

/// `(state, version, leader_alive, leader_mine)` as member `nodes` reads it.
async fn read(nodes: &GroupNodes, zk: &Client) -> (Option<GroupState>, u64, bool, bool) {
    match nodes.read(zk).await.expect("read").event {
        Event::Group {
            state,
            version,
            leader_alive,
            leader_mine,
        } => (state, version, leader_alive, leader_mine),
        other => panic!("not a group event: {other:?}"),
    }
}

#[tokio::test]
async fn claims_takeovers_and_isr_writes_are_applied_or_refused_atomically() {
    let path = common::unique_path("group-nodes");
    let (za, zb) = (client().await, client().await);
    let a = GroupNodes::open(&za, &path, "g", 1, Acls::anyone_all())
        .await
        .unwrap();
    let b = GroupNodes::open(&zb, &path, "g", 2, Acls::anyone_all())
        .await
        .unwrap();

    // A new group: no state; the first create wins, the second is a conflict.
    assert_eq!(read(&a, &za).await, (None, 0, false, false));
    let watch = a.read(&za).await.unwrap().state_watch;
    assert_eq!(
        a.apply(&za, &ZkOp::Create(state(0, None, &[]))).await,
        Ok(0)
    );
    tokio::time::timeout(Duration::from_secs(10), watch.changed())
        .await
        .expect("the watch on a missing state fires at its creation");
    assert_eq!(
        b.apply(&zb, &ZkOp::Create(state(0, None, &[]))).await,
        Err(ZkFail::Conflict)
    );

    // A claims epoch 1: state and its own leader node in one request.
    let claim = |v, s| ZkOp::Claim {
        version: v,
        state: s,
    };
    assert_eq!(
        a.apply(&za, &claim(0, state(1, Some(1), &[1]))).await,
        Ok(1)
    );
    assert_eq!(
        read(&a, &za).await,
        (Some(state(1, Some(1), &[1])), 1, true, true)
    );
    let (_, _, alive, mine) = read(&b, &zb).await;
    assert!(alive && !mine, "B sees A's leader node, not its own");

    // A claim while a leader node exists is refused, and changes nothing (not even the state).
    assert_eq!(
        b.apply(&zb, &claim(1, state(2, Some(2), &[1]))).await,
        Err(ZkFail::Conflict)
    );
    assert_eq!(read(&b, &zb).await.0, Some(state(1, Some(1), &[1])));

    // A writes its ISR (version-checked).
    let set = |v, s| ZkOp::Set {
        version: v,
        state: s,
    };
    assert_eq!(
        a.apply(&za, &set(1, state(1, Some(1), &[1, 2]))).await,
        Ok(2)
    );
    assert_eq!(
        a.apply(&za, &set(1, state(1, Some(1), &[1]))).await,
        Err(ZkFail::Conflict),
        "a stale version is refused"
    );

    // B takes over: a stale version is refused and A's leader node survives; the current
    // version deletes A's node and creates B's, with the state, atomically.
    let takeover = |v, s| ZkOp::Takeover {
        version: v,
        state: s,
    };
    assert_eq!(
        b.apply(&zb, &takeover(1, state(2, Some(2), &[1, 2]))).await,
        Err(ZkFail::Conflict)
    );
    assert!(read(&a, &za).await.3, "A still owns the leader node");
    let a_watch = a.read(&za).await.unwrap().state_watch;
    assert_eq!(
        b.apply(&zb, &takeover(2, state(2, Some(2), &[1, 2]))).await,
        Ok(3)
    );
    tokio::time::timeout(Duration::from_secs(10), a_watch.changed())
        .await
        .expect("the deposed master's watch fires");
    assert_eq!(
        read(&a, &za).await,
        (Some(state(2, Some(2), &[1, 2])), 3, true, false)
    );
    assert!(read(&b, &zb).await.3, "B owns the leader node now");
    // The deposed master's next ISR write is a conflict: that is how it learns, too.
    assert_eq!(
        a.apply(&za, &set(2, state(1, Some(1), &[1]))).await,
        Err(ZkFail::Conflict)
    );

    // B's session ends: its ephemeral leader node goes with it, the state stays.
    let watch = a.read(&za).await.unwrap().leader_watch;
    drop(b);
    // Dropping the last handle of a client closes its session.
    drop(zb);
    tokio::time::timeout(Duration::from_secs(10), watch.changed())
        .await
        .expect("the leader node's deletion fires the watch");
    assert_eq!(
        read(&a, &za).await,
        (Some(state(2, Some(2), &[1, 2])), 3, false, false)
    );
    // A takeover of a vanished leader is a conflict (the core claims instead), a claim works.
    assert_eq!(
        a.apply(&za, &takeover(3, state(3, Some(1), &[1, 2]))).await,
        Err(ZkFail::Conflict)
    );
    assert_eq!(
        a.apply(&za, &claim(3, state(3, Some(1), &[1, 2]))).await,
        Ok(4)
    );
    assert!(read(&a, &za).await.3);
}
