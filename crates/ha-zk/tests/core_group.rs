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
    let (listener, session) = listen(id, path).await;
    let mut identity = identity(id, TOKEN);
    identity.tls = tls;
    let net = Net {
        listener,
        identity,
        copies: None,
    };
    let core = Config::new(id, 1, 3, SyncMode::QuorumDisk);
    let driver = CoreDriver::start(core, session, store.clone(), Some(net)).unwrap();
    Member {
        id,
        driver: Some(Arc::new(driver)),
        store,
    }
}

/// A listener for member `id` and its ZooKeeper session settings (advertising the listener).
async fn listen(id: u32, path: &str) -> (TcpListener, SessionConfig) {
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
    (listener, session)
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
            .send(
                Msg::Hello {
                    member: claimed,
                    epoch: 1,
                    last: 0,
                    history: vec![],
                }
                .into(),
            )
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

/// A member with full copies staged beside its journal (`dir/journal`), whose master keeps
/// only `tail` entries in memory (so that a member behind by more gets a copy).
async fn start_copying(id: u32, path: &str, dir: &std::path::Path, tail: usize) -> Member {
    use ferromq_ha_zk::core_driver::Copies;
    use ferromq_ha_zk::staging::{finish_journal_install, JournalStaging};
    let live = dir.join("journal");
    let opener: ferromq_ha_zk::StoreOpener = {
        let live = live.clone();
        Arc::new(move || {
            finish_journal_install(&live)?;
            Ok(
                Arc::new(JournalStore::open(&live, JournalConfig::default())?)
                    as Arc<dyn MessageStore>,
            )
        })
    };
    let store = opener().unwrap();
    let (listener, session) = listen(id, path).await;
    let copies = Copies {
        staging: Arc::new(JournalStaging::new(live, JournalConfig::default())),
        opener,
    };
    let net = Net {
        listener,
        identity: identity(id, TOKEN),
        copies: Some(copies),
    };
    let mut core = Config::new(id, 1, 3, SyncMode::QuorumDisk);
    core.tail_entries_max = tail;
    let driver = CoreDriver::start(core, session, store.clone(), Some(net)).unwrap();
    Member {
        id,
        driver: Some(Arc::new(driver)),
        store,
    }
}

/// Producer `p` of `n` writes 1 KiB messages `seq = first + p + k·n`, while `go` holds and at
/// most `max` each; every even message is consumed (dequeued) once confirmed, so the queue
/// ends with exactly the odd ones. Returns the messages it wrote.
async fn produce_and_consume(
    d: Arc<CoreDriver>,
    p: u64,
    n: u64,
    first: u64,
    max: u64,
    go: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<u64> {
    use std::sync::atomic::Ordering;
    let mut seqs = Vec::new();
    let mut seq = first + p;
    while go.load(Ordering::Relaxed) && (seqs.len() as u64) < max {
        let msg = vec![Op::Enqueue {
            list: Q.into(),
            seq,
            payload: Bytes::from(format!("{seq:>1024}")),
        }];
        tokio::time::timeout(T, d.submit(msg))
            .await
            .expect("a write was neither confirmed nor refused")
            .unwrap();
        if seq.is_multiple_of(2) {
            let ack = vec![Op::Dequeue {
                list: Q.into(),
                seq,
            }];
            tokio::time::timeout(T, d.submit(ack))
                .await
                .expect("a dequeue was neither confirmed nor refused")
                .unwrap();
        }
        seqs.push(seq);
        seq += n;
    }
    seqs
}

/// The queue's messages in a store: (seq, payload).
fn contents(store: &dyn MessageStore) -> Vec<(u64, Bytes)> {
    store
        .load(Q, None, 1_000_000)
        .unwrap()
        .into_iter()
        .map(|m| (m.seq, m.payload))
        .collect()
}

async fn stop(m: &mut Member) {
    let d = m.driver.take().unwrap();
    Arc::into_inner(d).unwrap().stop().await.unwrap();
}

/// A member that joins behind the master's in-memory tail gets a full copy, streamed from the
/// master's store while 8 producers and their consumers go on (the copy is fuzzy: the member
/// replays what was written during the read before it installs the copy), staged beside its
/// journal and installed atomically. Afterwards its queue is exactly the master's; it joins the
/// in-sync set (the master confirms with its acks alone once the other follower stops); and
/// when the master stops it takes over holding every confirmed message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_behind_the_tail_gets_a_fuzzy_full_copy_installs_it_and_can_take_over() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let path = common::unique_path("core-copy");
    const TAIL: usize = 500;
    let mut members = vec![
        start_copying(1, &path, dirs[0].path(), TAIL).await,
        start_copying(2, &path, dirs[1].path(), TAIL).await,
    ];
    let m = master(&members).await;
    let d = members[m].driver.clone().unwrap();

    // Far past the tail before member 3 exists.
    let go = Arc::new(AtomicBool::new(true));
    let mut written = Vec::new();
    let tasks: Vec<_> = (0..8)
        .map(|p| tokio::spawn(produce_and_consume(d.clone(), p, 8, 0, 500, go.clone())))
        .collect();
    for t in tasks {
        written.extend(t.await.unwrap());
    }
    assert_eq!(written.len(), 4_000);

    // Writers go on while member 3 joins and receives its copy, and stop only once it
    // installed it (bounded by `max`).
    let tasks: Vec<_> = (0..8)
        .map(|p| {
            tokio::spawn(produce_and_consume(
                d.clone(),
                p,
                8,
                100_000,
                20_000,
                go.clone(),
            ))
        })
        .collect();
    members.push(start_copying(3, &path, dirs[2].path(), TAIL).await);
    let third = members[2].driver.clone().unwrap();
    let deadline = tokio::time::Instant::now() + T;
    while third.stats().copies_installed == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "member 3 installed no copy within {T:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    go.store(false, Ordering::Relaxed);
    for t in tasks {
        written.extend(t.await.unwrap());
    }
    let sent = d.stats();
    eprintln!("copy: {sent:?}, written {}", written.len());
    assert!(
        sent.copies_sent >= 1,
        "the master counted no copy: {sent:?}"
    );
    assert!(
        sent.copy_bytes_sent > 1_000_000,
        "the copy carried the queue: {sent:?}"
    );
    assert!(
        sent.copy_overlap_entries > 0,
        "writes went on during the copy, so it was consistent only after the cut: {sent:?}"
    );

    // Caught up: member 3's log ends where the master's does, with the same history, and its
    // queue is exactly the master's — the odd messages.
    let master_store = d.store();
    let end = recover(&*master_store).unwrap();
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let r = recover(&*third.store()).unwrap();
        if r.last == end.last {
            assert_eq!(
                r.history, end.history,
                "the copy's epoch history is the master's"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "member 3 did not catch up: {} < {}",
            r.last,
            end.last
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut expected: Vec<u64> = written.iter().copied().filter(|s| s % 2 == 1).collect();
    expected.sort_unstable();
    let on_master = contents(&*master_store);
    assert_eq!(
        on_master.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        expected
    );
    assert_eq!(
        contents(&*third.store()),
        on_master,
        "member 3's queue is the master's"
    );

    // In the in-sync set: with the other follower gone the master confirms on member 3 alone.
    let other = if m == 0 { 1 } else { 0 };
    stop(&mut members[other]).await;
    let more: Vec<_> = (0..8)
        .map(|p| {
            tokio::spawn(produce_and_consume(
                d.clone(),
                p,
                8,
                500_000,
                25,
                Arc::new(AtomicBool::new(true)),
            ))
        })
        .collect();
    for t in more {
        written.extend(t.await.unwrap());
    }
    drop(d);
    drop(master_store);
    stop(&mut members[m]).await;

    // ...and takes over with every confirmed message.
    tokio::time::timeout(
        T,
        third.role().wait_for(|r| matches!(r, Role::Master { .. })),
    )
    .await
    .expect("member 3 did not take over")
    .unwrap();
    let mut expected: Vec<u64> = written.iter().copied().filter(|s| s % 2 == 1).collect();
    expected.sort_unstable();
    let held: Vec<u64> = contents(&*third.store()).iter().map(|(s, _)| *s).collect();
    assert_eq!(
        held, expected,
        "the new master holds exactly the confirmed messages"
    );
    drop(third);
    stop(&mut members[2]).await;
}
