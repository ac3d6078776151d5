//! Three members running the replication core's driver over its own transport, with the real
//! ZooKeeper and real journals: a master is elected, producers' writes are confirmed only once
//! a follower holds them durably (`quorum_disk`), and when the master stops an in-sync member
//! takes over with every confirmed write. Also the transport's handshake: a wrong token, group
//! or member is refused before any core message.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferromq_ha_zk::core_driver::{CoreDriver, Net};
use ferromq_ha_zk::core_store::recover;
use ferromq_ha_zk::core_transport::{self, Identity, NetEvent};
use ferromq_ha_zk::group_session::SessionConfig;
use ferromq_ha_zk::proto::{Config, Role};
use ferromq_ha_zk::{ReplicationTls, SyncMode};
use ferromq_store::{JournalConfig, JournalStore, MessageStore, Op};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const T: Duration = Duration::from_secs(60);
const Q: &str = "queue://core-group";
const TOKEN: &str = "core group test token";

fn identity(me: u32, token: &str) -> Identity {
    Identity {
        group: "g".into(),
        me,
        token: token.into(),
        tls: None,
    }
}

struct Member {
    id: u32,
    driver: Option<Arc<CoreDriver>>,
    store: Arc<dyn MessageStore>,
}

async fn start(id: u32, path: &str, dir: &std::path::Path) -> Member {
    start_with(id, path, dir, None).await
}

async fn start_with(
    id: u32,
    path: &str,
    dir: &std::path::Path,
    tls: Option<ReplicationTls>,
) -> Member {
    let store: Arc<dyn MessageStore> =
        Arc::new(JournalStore::open(dir, JournalConfig::default()).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let session = SessionConfig {
        zk_address: common::zk(),
        session_timeout: Duration::from_secs(4),
        zk_password: None,
        zk_path: path.to_string(),
        group: "g".into(),
        me: id,
        advertise: Some(addr),
    };
    let mut identity = identity(id, TOKEN);
    identity.tls = tls;
    let net = Net { listener, identity };
    let core = Config::new(id, 1, 3, SyncMode::QuorumDisk);
    let driver = CoreDriver::start(core, session, store.clone(), Some(net)).unwrap();
    Member {
        id,
        driver: Some(Arc::new(driver)),
        store,
    }
}

fn enqueue(seq: u64) -> Vec<Op> {
    vec![Op::Enqueue {
        list: Q.into(),
        seq,
        payload: Bytes::from(format!("{seq:>256}")),
    }]
}

/// The member that announces mastership first (polling the role watches).
async fn master(members: &[Member]) -> usize {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        for (i, m) in members.iter().enumerate() {
            if let Some(d) = &m.driver {
                if matches!(*d.role().borrow(), Role::Master { .. }) {
                    return i;
                }
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no master within {T:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Writes `n` messages from 8 producers; returns the confirmed lsns.
async fn write(d: &Arc<CoreDriver>, first: u64, n: u64) -> Vec<u64> {
    let mut tasks = Vec::new();
    for p in 0..8 {
        let d = d.clone();
        tasks.push(tokio::spawn(async move {
            let mut lsns = Vec::new();
            let mut seq = first + p;
            while seq < first + n {
                let lsn = tokio::time::timeout(T, d.submit(enqueue(seq)))
                    .await
                    .expect("a write was neither confirmed nor refused")
                    .unwrap();
                lsns.push(lsn);
                seq += 8;
            }
            lsns
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_confirm_on_a_follower_and_fail_over_with_every_confirmed_write() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let path = common::unique_path("core-group");
    let mut members = Vec::new();
    for (i, d) in dirs.iter().enumerate() {
        members.push(start(i as u32 + 1, &path, d.path()).await);
    }
    let first = master(&members).await;
    let d = members[first].driver.clone().unwrap();
    let lsns = write(&d, 1, 400).await;
    assert_eq!(lsns.len(), 400);
    let confirmed = *lsns.iter().max().unwrap();

    // quorum_disk with 3 members: a confirmation needs a follower's durable copy.
    let holders = members
        .iter()
        .enumerate()
        .filter(|(i, m)| *i != first && recover(&*m.store).unwrap().last >= confirmed)
        .count();
    assert!(
        holders >= 1,
        "no follower holds the confirmed writes durably"
    );

    // The master stops (its session closes): an in-sync follower takes over with everything.
    drop(d);
    let old = members[first].driver.take().unwrap();
    Arc::into_inner(old).unwrap().stop().await.unwrap();
    let second = master(&members).await;
    assert_ne!(second, first);
    let d = members[second].driver.clone().unwrap();
    let rec = recover(&*members[second].store).unwrap();
    assert!(
        rec.last >= confirmed,
        "the new master (member {}) lacks confirmed writes: {} < {confirmed}",
        members[second].id,
        rec.last
    );
    let present = members[second].store.load(Q, None, 10_000).unwrap();
    assert_eq!(
        present.len(),
        400,
        "every confirmed message is on the new master"
    );
    // ...and goes on confirming with the remaining follower.
    let more = write(&d, 401, 100).await;
    assert!(more.iter().all(|l| *l > confirmed));
    drop(d);
    for m in &mut members {
        if let Some(d) = m.driver.take() {
            Arc::into_inner(d).unwrap().stop().await.unwrap();
        }
    }
}

/// What a connection attempt ends with: `true` = authenticated and open.
async fn attempt(addr: &str, id: Identity, to: u32) -> bool {
    let (tx, mut rx) = mpsc::channel(16);
    core_transport::connect(7, to, Some(addr.to_string()), id, tx);
    match tokio::time::timeout(T, rx.recv()).await.expect("an answer") {
        Some(NetEvent::Connected { .. }) => true,
        Some(NetEvent::Closed { .. }) => false,
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn the_handshake_refuses_a_wrong_token_group_or_member_before_any_message() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, mut accepted) = mpsc::channel(16);
    let task = core_transport::listen(listener, identity(1, TOKEN), tx);

    assert!(!attempt(&addr, identity(2, "another token"), 1).await);
    let mut other_group = identity(2, TOKEN);
    other_group.group = "h".into();
    assert!(!attempt(&addr, other_group, 1).await);
    assert!(
        !attempt(&addr, identity(2, TOKEN), 3).await,
        "member 1 is not member 3"
    );
    assert!(
        !attempt(&addr, identity(1, TOKEN), 1).await,
        "a member does not connect to itself"
    );
    assert!(
        accepted.try_recv().is_err(),
        "no refused connection reached the driver"
    );

    assert!(attempt(&addr, identity(2, TOKEN), 1).await);
    match tokio::time::timeout(T, accepted.recv()).await.unwrap() {
        Some(NetEvent::Accepted { peer, .. }) => assert_eq!(peer, 2, "the proven member"),
        other => panic!("expected the accepted connection, got {other:?}"),
    }
    task.abort();
}

/// After the handshake the driver knows which member is at the other end: a `Hello` naming
/// another member is closed (its acks would count for that member), the right one welcomed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_naming_another_member_than_the_handshake_proved_is_closed() {
    use ferromq_ha_zk::proto::Msg;
    let dir = tempfile::tempdir().unwrap();
    let path = common::unique_path("core-group-hello");
    let m = start(1, &path, dir.path()).await;
    let d = m.driver.clone().unwrap();
    // A brand-new group: member 1 claims epoch 1 alone (then waits for followers).
    tokio::time::timeout(T, d.role().wait_for(|r| *r == Role::Master { epoch: 1 }))
        .await
        .unwrap()
        .unwrap();
    let addr = {
        let zk = zookeeper_client::Client::connector()
            .connect(&common::zk())
            .await
            .unwrap();
        let base = format!("{path}/g/members");
        let children = zk.list_children(&base).await.unwrap();
        let node = children.iter().find(|c| c.starts_with("1-")).unwrap();
        String::from_utf8(zk.get_data(&format!("{base}/{node}")).await.unwrap().0).unwrap()
    };
    for (claimed, welcomed) in [(3, false), (2, true)] {
        let (tx, mut rx) = mpsc::channel(64);
        core_transport::connect(9, 1, Some(addr.clone()), identity(2, TOKEN), tx);
        let writer = match tokio::time::timeout(T, rx.recv()).await.unwrap() {
            Some(NetEvent::Connected { writer, .. }) => writer,
            other => panic!("not connected: {other:?}"),
        };
        writer
            .send(Msg::Hello {
                member: claimed,
                epoch: 1,
                last: 0,
                history: vec![],
            })
            .unwrap();
        // The answer: the connection closes, or the master's Welcome comes.
        let answer = loop {
            match tokio::time::timeout(T, rx.recv()).await.unwrap() {
                Some(NetEvent::Closed { .. }) => break false,
                Some(NetEvent::Received {
                    msg: Msg::Welcome { .. },
                    ..
                }) => break true,
                Some(_) => continue,
                None => panic!("the transport ended"),
            }
        };
        assert_eq!(
            answer, welcomed,
            "Hello as member {claimed} over member 2's handshake"
        );
    }
    drop(d);
    let mut m = m;
    Arc::into_inner(m.driver.take().unwrap())
        .unwrap()
        .stop()
        .await
        .unwrap();
}

/// The group over mutual TLS (`ha.tls_*`): members whose certificates the group CA signed
/// replicate; a member of another CA, or one speaking plain TCP, never gets past the TLS
/// handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_replicate_over_tls_and_strangers_are_refused() {
    let ca = common::Ca::new("group CA");
    let rogue = common::Ca::new("rogue CA");
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let path = common::unique_path("core-group-tls");
    let mut members = Vec::new();
    for (i, d) in dirs.iter().enumerate() {
        let tls = ca.member(&["127.0.0.1"], &ca, true);
        members.push(start_with(i as u32 + 1, &path, d.path(), Some(tls)).await);
    }
    let first = master(&members).await;
    let d = members[first].driver.clone().unwrap();
    // Confirmed only with a follower's durable copy: the followers replicate over TLS.
    let lsns = write(&d, 1, 200).await;
    assert_eq!(lsns.len(), 200);

    // A TLS listener of the group, reached by strangers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, mut accepted) = mpsc::channel(16);
    let mut server = identity(9, TOKEN);
    server.tls = Some(ca.member(&["127.0.0.1"], &ca, true));
    let task = core_transport::listen(listener, server, tx);
    let mut intruder = identity(2, TOKEN);
    intruder.tls = Some(rogue.member(&["127.0.0.1"], &ca, true));
    assert!(
        !attempt(&addr, intruder, 9).await,
        "a certificate of another CA"
    );
    assert!(
        !attempt(&addr, identity(2, TOKEN), 9).await,
        "plain TCP to a TLS member"
    );
    assert!(accepted.try_recv().is_err(), "nothing reached the driver");
    let mut member = identity(2, TOKEN);
    member.tls = Some(ca.member(&["127.0.0.1"], &ca, true));
    assert!(
        attempt(&addr, member, 9).await,
        "a certificate of the group CA"
    );
    task.abort();

    drop(d);
    for m in &mut members {
        if let Some(d) = m.driver.take() {
            Arc::into_inner(d).unwrap().stop().await.unwrap();
        }
    }
}

/// The master's lease through the real transport: it serves (may dispatch) while the in-sync
/// followers answer its pings, and stops serving when they go silent — before any of them could
/// take over (`master_timeout_ms`, 500 ms by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_master_serves_only_while_its_followers_answer() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let path = common::unique_path("core-group-lease");
    let mut members = Vec::new();
    for (i, d) in dirs.iter().enumerate() {
        members.push(start(i as u32 + 1, &path, d.path()).await);
    }
    let first = master(&members).await;
    let d = members[first].driver.clone().unwrap();
    // A confirmed write: both followers are in sync (the ISR holds them).
    write(&d, 1, 16).await;
    let mut serving = d.serving();
    tokio::time::timeout(T, serving.wait_for(|s| *s))
        .await
        .expect("the master serves once its followers answer")
        .unwrap();
    // The followers stop: nobody answers the master's pings any more.
    for (i, m) in members.iter_mut().enumerate() {
        if i != first {
            let f = m.driver.take().unwrap();
            Arc::into_inner(f).unwrap().stop().await.unwrap();
        }
    }
    tokio::time::timeout(T, serving.wait_for(|s| !*s))
        .await
        .expect("a master whose followers are silent stops serving")
        .unwrap();
    drop(d);
    let m = members[first].driver.take().unwrap();
    Arc::into_inner(m).unwrap().stop().await.unwrap();
}
