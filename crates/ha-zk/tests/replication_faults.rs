//! The review's findings against the master (issue 12), each driven in-process with a memory
//! store and a hand-written slave speaking the wire protocol, so the slave can misbehave exactly
//! as a real one does at the worst moment: a stale ack right after the welcome, a second
//! connection of the same member, a stalled reader, a return after 100k entries.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferromq_ha_zk::auth;
use ferromq_ha_zk::position::read_position;
use ferromq_ha_zk::wire::{self, Frame, PROTOCOL_VERSION};
use ferromq_ha_zk::{AckKind, Position, ReplicatingStore, SyncMode, SyncPolicy};
use ferromq_store::{Completion, MemoryStore, MessageStore, Op};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket};

const T: Duration = Duration::from_secs(20);

fn enq(seq: u64, body: &str) -> Vec<Op> {
    vec![Op::Enqueue {
        list: "queue://x".into(),
        seq,
        payload: Bytes::from(body.to_string()),
    }]
}

fn master(
    store: Arc<dyn MessageStore>,
    epoch: u64,
    mode: SyncMode,
    replicas: usize,
) -> ReplicatingStore {
    let start = read_position(&*store).unwrap();
    ReplicatingStore::new(
        store,
        start,
        epoch,
        SyncPolicy::new(mode, replicas),
        "g".into(),
        "token".into(),
        Arc::new(AtomicBool::new(true)),
    )
}

async fn serve(rs: &ReplicatingStore) -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    rs.serve(l);
    addr
}

/// True when `c` has resolved (polled once, never waited on).
async fn resolved(c: &mut Completion) -> bool {
    tokio::time::timeout(Duration::ZERO, c).await.is_ok()
}

/// The bodies of `queue://x`, in order.
fn queue_bodies(s: &dyn MessageStore) -> Vec<String> {
    s.load("queue://x", None, 10)
        .unwrap()
        .into_iter()
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect()
}

/// A slave's parameters for a hand-driven master of epoch 2 listening on `l`.
fn follow_params(l: &TcpListener) -> ferromq_ha_zk::slave::FollowParams {
    ferromq_ha_zk::slave::FollowParams {
        addr: l.local_addr().unwrap().to_string(),
        master_epoch: 2,
        token: "token".into(),
        group: "g".into(),
        member: "m".into(),
        tls: None,
    }
}

/// The test's side of a master's handshake (it knows the token "token"): challenges the slave
/// that connected, reads its hello and its proof, and returns the hello with the `Welcome` of
/// epoch 2 that answers it.
async fn accept_slave(rd: &mut OwnedReadHalf, wr: &mut OwnedWriteHalf) -> (Frame, Frame) {
    let master_nonce = auth::nonce().unwrap();
    wire::write_frame(
        wr,
        &Frame::Challenge {
            version: PROTOCOL_VERSION,
            nonce: master_nonce,
        },
    )
    .await
    .unwrap();
    let hello = tokio::time::timeout(T, wire::read_frame(rd))
        .await
        .unwrap()
        .unwrap();
    let proof = tokio::time::timeout(T, wire::read_frame(rd))
        .await
        .unwrap()
        .unwrap();
    let (o, slave_nonce) = auth::Opening::of(&hello).unwrap();
    let Frame::Proof { proof } = proof else {
        panic!("no proof after the hello: {proof:?}");
    };
    assert!(auth::verify_slave(
        "token",
        &o,
        &master_nonce,
        slave_nonce,
        &proof
    ));
    let welcome = auth::welcome("token", &master_nonce, &hello, 2).unwrap();
    (hello, welcome)
}

/// A slave driven frame by frame.
struct RawSlave {
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
}

impl RawSlave {
    async fn connect(addr: &str, member: &str, epoch: u64, last: Position) -> RawSlave {
        Self::connect_with_buffer(addr, member, epoch, last, None).await
    }

    async fn connect_with_buffer(
        addr: &str,
        member: &str,
        epoch: u64,
        last: Position,
        recv_buffer_bytes: Option<u32>,
    ) -> RawSlave {
        let sock = TcpSocket::new_v4().unwrap();
        if let Some(b) = recv_buffer_bytes {
            sock.set_recv_buffer_size(b).unwrap();
        }
        let s = sock.connect(addr.parse().unwrap()).await.unwrap();
        let (mut rd, mut wr) = s.into_split();
        let opening = auth::Opening {
            channel: auth::Channel::Stream,
            group: "g",
            member,
            master_epoch: epoch,
            last: Some(last),
        };
        let (hello, slave_nonce) = auth::opening_frame(&opening).unwrap();
        wire::write_frame(&mut wr, &hello).await.unwrap();
        let challenge = tokio::time::timeout(T, wire::read_frame(&mut rd))
            .await
            .unwrap()
            .unwrap();
        let Frame::Challenge {
            version: PROTOCOL_VERSION,
            nonce: master_nonce,
        } = challenge
        else {
            panic!("the master did not open with a challenge: {challenge:?}");
        };
        let proof = auth::slave_proof("token", &opening, &master_nonce, &slave_nonce).unwrap();
        wire::write_frame(&mut wr, &Frame::Proof { proof })
            .await
            .unwrap();
        let welcome = tokio::time::timeout(T, wire::read_frame(&mut rd))
            .await
            .unwrap()
            .unwrap();
        let Frame::Welcome { epoch: e, proof } = welcome else {
            panic!("not welcomed: {welcome:?}");
        };
        assert_eq!(e, epoch);
        assert!(auth::verify_master(
            "token",
            &opening,
            &master_nonce,
            &slave_nonce,
            e,
            &proof
        ));
        RawSlave { rd, wr }
    }

    async fn ack(&mut self, kind: AckKind, pos: Position) {
        wire::write_frame(&mut self.wr, &Frame::Ack { kind, pos })
            .await
            .unwrap();
    }

    async fn next(&mut self) -> Result<Frame, wire::WireError> {
        tokio::time::timeout(T, wire::read_frame(&mut self.rd))
            .await
            .expect("no frame from the master in time")
    }

    /// Reads up to the end of a full copy; returns the position the copy is at.
    async fn read_copy(&mut self) -> Position {
        for _ in 0..100_000 {
            match self.next().await.unwrap() {
                Frame::SnapshotEnd { pos, .. } => return pos,
                Frame::SnapshotBegin { .. } | Frame::SnapshotChunk { .. } => {}
                other => panic!("unexpected frame during a copy: {other:?}"),
            }
        }
        panic!("the copy never ended");
    }
}

async fn wait_slaves(rs: &ReplicatingStore, n: usize) {
    for _ in 0..2000 {
        if rs.connected_slaves() == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "expected {n} connected slaves, have {}",
        rs.connected_slaves()
    );
}

/// Finding 1: a diverged slave (entries of epoch 1 at lsns where the master has epoch 2) acks
/// its own old position right after the welcome, while the master has decided on a full copy.
/// That ack names other entries than the master's: it must not confirm anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diverged_slaves_stale_ack_does_not_confirm_a_quorum_disk_write() {
    let m: Arc<dyn MessageStore> = Arc::new(MemoryStore::new());
    {
        let rs = master(m.clone(), 1, SyncMode::LocalDisk, 3);
        for i in 1..=3u64 {
            rs.submit(enq(i, &format!("e1-{i}"))).await.unwrap();
        }
        rs.depose("test");
    }
    let rs = master(m.clone(), 2, SyncMode::QuorumDisk, 3);
    let mut pending: Vec<Completion> = (4..=6u64)
        .map(|i| rs.submit(enq(i, &format!("e2-{i}"))))
        .collect();
    let addr = serve(&rs).await;

    // The old master of epoch 1 kept two entries of its own at lsn 4 and 5.
    let diverged = Position { epoch: 1, lsn: 5 };
    let mut s = RawSlave::connect(&addr, "old-master", 2, diverged).await;
    s.ack(AckKind::Disk, diverged).await;
    let cut = s.read_copy().await;
    assert_eq!(cut, Position { epoch: 2, lsn: 6 }, "a full copy was chosen");
    // Hang up before the copy could be durable anywhere; once the master has forgotten the
    // slave, every ack it sent has been handled (acks are read before the hang-up).
    drop(s);
    wait_slaves(&rs, 0).await;
    for (i, c) in pending.iter_mut().enumerate() {
        assert!(
            !resolved(c).await,
            "write {} was confirmed on an ack of different entries",
            i + 4
        );
    }

    // The same slave acking the copy's end (what it sends once the copy is durable) confirms.
    let mut s = RawSlave::connect(&addr, "old-master", 2, diverged).await;
    let cut = s.read_copy().await;
    s.ack(AckKind::Disk, cut).await;
    for c in pending {
        tokio::time::timeout(T, c).await.unwrap().unwrap();
    }
}

/// Finding 4: a half-open old connection plus a reconnect of the same member must count once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_member_connected_twice_counts_once_towards_the_quorum() {
    let m: Arc<dyn MessageStore> = Arc::new(MemoryStore::new());
    // Five replicas: quorum_disk needs two slaves besides the master.
    let rs = master(m, 1, SyncMode::QuorumDisk, 5);
    let addr = serve(&rs).await;
    let mut c1 = rs.submit(enq(1, "one"));
    let e1 = Position { epoch: 1, lsn: 1 };

    let mut old = RawSlave::connect(&addr, "broker-b", 1, Position::default()).await;
    assert!(matches!(old.next().await.unwrap(), Frame::Entry { pos, .. } if pos == e1));
    old.ack(AckKind::Disk, e1).await;
    let mut again = RawSlave::connect(&addr, "broker-b", 1, Position::default()).await;
    assert!(matches!(again.next().await.unwrap(), Frame::Entry { pos, .. } if pos == e1));
    again.ack(AckKind::Disk, e1).await;
    // The master replaces the old connection: it hangs up on it.
    tokio::select! {
        r = &mut c1 => panic!("one member counted twice: the write was confirmed ({r:?})"),
        f = old.next() => assert!(f.is_err(), "the old connection must be closed, got {f:?}"),
    }
    assert!(!resolved(&mut c1).await);
    wait_slaves(&rs, 1).await;

    // A second, different member completes the quorum.
    let mut other = RawSlave::connect(&addr, "broker-c", 1, Position::default()).await;
    assert!(matches!(other.next().await.unwrap(), Frame::Entry { pos, .. } if pos == e1));
    other.ack(AckKind::Disk, e1).await;
    tokio::time::timeout(T, c1).await.unwrap().unwrap();
    drop(again);
}

/// Finding 6: a follower that connects once the log is past 100k entries starts from where
/// it is, not from 0 (it used to be cut off by the very next write).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_returning_past_100k_entries_is_not_dropped() {
    let m: Arc<dyn MessageStore> = Arc::new(MemoryStore::new());
    let rs = master(m, 1, SyncMode::LocalDisk, 3);
    let addr = serve(&rs).await;
    let n = ferromq_ha_zk::master::RING_MAX_ENTRIES as u64 + 10;
    let mut last = None;
    for _ in 0..n {
        last = Some(rs.submit_marker());
    }
    tokio::time::timeout(T, last.unwrap())
        .await
        .unwrap()
        .unwrap();
    let here = rs.last_position();
    assert_eq!(here.lsn, n);
    // Up to date (as a slave that was away and caught up elsewhere would be): it streams.
    let mut s = RawSlave::connect(&addr, "returning", 1, here).await;
    wait_slaves(&rs, 1).await;
    rs.submit(enq(1, "next")).await.unwrap();
    match s.next().await {
        Ok(Frame::Entry { pos, .. }) => assert_eq!(pos.lsn, n + 1),
        other => panic!("the returning follower was cut off: {other:?}"),
    }
    assert_eq!(rs.connected_slaves(), 1);
    assert_eq!(rs.full_copies(), 0);
}

/// Finding 6: a follower that stops reading must not make the master buffer without bound:
/// past its queue's byte limit it is dropped (it comes back and catches up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_followers_queue_stays_bounded_in_bytes() {
    let m: Arc<dyn MessageStore> = Arc::new(MemoryStore::new());
    let rs = master(m, 1, SyncMode::LocalDisk, 3);
    let queue_bytes_max = 1024 * 1024;
    rs.set_follower_queue_bytes_max(queue_bytes_max);
    let addr = serve(&rs).await;
    let here = rs.last_position();
    let _stalled = RawSlave::connect_with_buffer(&addr, "stalled", 1, here, Some(64 * 1024)).await;
    wait_slaves(&rs, 1).await;
    let body = "x".repeat(1024 * 1024);
    // 48 MiB: far beyond the limit plus what the sockets' buffers can absorb.
    for i in 1..=48u64 {
        rs.submit(enq(i, &body)).await.unwrap();
        if rs.connected_slaves() == 0 {
            break;
        }
    }
    assert_eq!(
        rs.connected_slaves(),
        0,
        "a follower that reads nothing must be dropped once its queue passes the limit"
    );
    // The master goes on confirming without it.
    rs.submit(enq(100, "after")).await.unwrap();
}

/// A memory store whose `load` of `queue://x` waits, once armed, until released: it holds a
/// full copy in the middle of reading the master's store.
struct GatedStore {
    inner: MemoryStore,
    armed: std::sync::atomic::AtomicBool,
    reading: tokio::sync::Notify,
    released: std::sync::Mutex<bool>,
    release: std::sync::Condvar,
}

impl std::fmt::Debug for GatedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GatedStore")
    }
}

impl GatedStore {
    fn release(&self) {
        *self.released.lock().unwrap() = true;
        self.release.notify_all();
    }
}

impl MessageStore for GatedStore {
    fn kind(&self) -> &'static str {
        "gated"
    }
    fn submit(&self, batch: Vec<Op>) -> Completion {
        self.inner.submit(batch)
    }
    fn recover(&self) -> Result<ferromq_store::Recovery, ferromq_store::StoreError> {
        self.inner.recover()
    }
    fn load(
        &self,
        list: &str,
        after_seq: Option<u64>,
        max_count: usize,
    ) -> Result<Vec<ferromq_store::StoredMessage>, ferromq_store::StoreError> {
        if list == "queue://x" && self.armed.load(std::sync::atomic::Ordering::SeqCst) {
            self.reading.notify_one();
            let mut r = self.released.lock().unwrap();
            while !*r {
                r = self.release.wait(r).unwrap();
            }
        }
        self.inner.load(list, after_seq, max_count)
    }
    fn usage_bytes(&self) -> u64 {
        self.inner.usage_bytes()
    }
    fn close(&self) -> Result<(), ferromq_store::StoreError> {
        self.inner.close()
    }
}

/// Finding 6: a full copy must not pause writers. They used to wait on a condvar, on the async
/// runtime's workers, for as long as the copy read the store; then their batches were held back
/// from the local store until the copy ended, so nothing was confirmed during a copy (and a
/// copy gave up past 64 MiB of writes). Now the store is read while writers go on: a write
/// made during the copy is confirmed at once, may appear in the copy, and follows it as an
/// entry; the copy says where it becomes consistent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_copy_does_not_hold_writers_back_and_says_where_it_is_consistent() {
    let gated = Arc::new(GatedStore {
        inner: MemoryStore::new(),
        armed: false.into(),
        reading: tokio::sync::Notify::new(),
        released: std::sync::Mutex::new(false),
        release: std::sync::Condvar::new(),
    });
    // Whatever happens below, never leave the copy's reader blocked (the runtime waits for it).
    struct ReleaseOnDrop(Arc<GatedStore>);
    impl Drop for ReleaseOnDrop {
        fn drop(&mut self) {
            self.0.release();
        }
    }
    let _release = ReleaseOnDrop(gated.clone());
    let store: Arc<dyn MessageStore> = gated.clone();
    let rs = master(store, 1, SyncMode::LocalDisk, 3);
    for i in 1..=3u64 {
        rs.submit(enq(i, &format!("before-{i}"))).await.unwrap();
    }
    let addr = serve(&rs).await;
    gated.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    // An unknown position: the master must copy.
    let copying = tokio::spawn({
        let addr = addr.clone();
        async move {
            let mut s = RawSlave::connect(&addr, "new", 1, Position { epoch: 9, lsn: 9 }).await;
            let mut copied = Vec::new();
            let cut = loop {
                match s.next().await.unwrap() {
                    Frame::SnapshotChunk { batch } => copied.extend(batch),
                    Frame::SnapshotEnd { pos, consistent_at } => break (pos, consistent_at),
                    Frame::SnapshotBegin { .. } => {}
                    other => panic!("unexpected frame during a copy: {other:?}"),
                }
            };
            let after = s.next().await.unwrap();
            (cut, copied, after)
        }
    });
    tokio::time::timeout(T, gated.reading.notified())
        .await
        .expect("the copy never started reading");
    // The copy is stuck mid-read: a write must still be accepted without waiting for it.
    let submitted = tokio::task::spawn_blocking({
        let rs = rs.clone();
        move || rs.submit(enq(4, "during"))
    });
    let during = tokio::time::timeout(T, submitted)
        .await
        .expect("a writer was held by the copy")
        .unwrap();
    // ...and confirmed while the copy is still stuck (local_disk: the master's own disk), not
    // held back until the copy ends.
    tokio::time::timeout(T, during)
        .await
        .expect("a write made during a full copy was not confirmed until the copy ended")
        .unwrap();
    gated.release();
    let ((cut, consistent_at), copied, after) =
        tokio::time::timeout(T, copying).await.unwrap().unwrap();
    assert_eq!(cut, Position { epoch: 1, lsn: 3 });
    // The write was in the store before the read resumed: the copy is consistent only once
    // the slave has applied it too.
    assert_eq!(consistent_at, Position { epoch: 1, lsn: 4 });
    let copied_bodies: Vec<_> = copied
        .iter()
        .filter_map(|op| match op {
            Op::Enqueue { payload, .. } => Some(String::from_utf8_lossy(payload).into_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(
        copied_bodies,
        vec!["before-1", "before-2", "before-3", "during"]
    );
    assert!(
        matches!(&after, Frame::Entry { pos, .. } if pos.lsn == 4),
        "the write made during the copy follows it: {after:?}"
    );
}

/// Finding 3: a master that dies in the middle of a full copy leaves the slave with part of a
/// store. That member must report no position (it used to report 0:0 and could be elected),
/// must ask the next master for a copy rather than stream onto the remains, and gets its
/// position back only once a copy is complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_mid_copy_reports_no_position_and_asks_for_a_copy() {
    use ferromq_ha_zk::position::{
        copy_in_progress, position_ops, reportable_position, NO_POSITION,
    };
    use ferromq_ha_zk::slave::follow;

    let store: Arc<dyn MessageStore> = Arc::new(MemoryStore::new());
    let old = Position { epoch: 1, lsn: 2 };
    let mut b = enq(1, "old");
    b.extend(position_ops(None, old));
    store.submit(b).await.unwrap();
    assert_eq!(reportable_position(&*store).unwrap(), Some(old));

    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let params = follow_params(&l);
    let cut = Position { epoch: 2, lsn: 5 };
    let chunk = Frame::SnapshotChunk {
        batch: enq(1, "copied-1"),
    };
    // A master that dies after the first chunk of a copy.
    let (_stop_tx, mut stop) = tokio::sync::watch::channel(false);
    let follower = tokio::spawn({
        let store = store.clone();
        let params = params.clone();
        async move {
            let start = read_position(&*store).unwrap();
            follow(&store, start, &params, &mut stop).await
        }
    });
    let (sock, _) = tokio::time::timeout(T, l.accept()).await.unwrap().unwrap();
    let (mut rd, mut wr) = sock.into_split();
    let (hello, welcome) = accept_slave(&mut rd, &mut wr).await;
    assert!(matches!(hello, Frame::Hello { last, .. } if last == old));
    for f in [
        welcome,
        Frame::SnapshotBegin {
            pos: cut,
            total_bytes: 10,
        },
        chunk.clone(),
    ] {
        wire::write_frame(&mut wr, &f).await.unwrap();
    }
    drop((rd, wr));
    let (_, r) = tokio::time::timeout(T, follower).await.unwrap().unwrap();
    assert!(r.is_err(), "the master went away mid-copy");
    assert!(copy_in_progress(&*store).unwrap());
    assert_eq!(
        reportable_position(&*store).unwrap(),
        None,
        "part of a copy is no position"
    );

    // The next master is asked for a copy (an unmatchable position), never for a stream.
    let (_stop_tx, mut stop) = tokio::sync::watch::channel(false);
    let follower = tokio::spawn({
        let store = store.clone();
        async move {
            let start = read_position(&*store).unwrap();
            follow(&store, start, &params, &mut stop).await
        }
    });
    let (sock, _) = tokio::time::timeout(T, l.accept()).await.unwrap().unwrap();
    let (mut rd, mut wr) = sock.into_split();
    let (hello, welcome) = accept_slave(&mut rd, &mut wr).await;
    assert!(
        matches!(hello, Frame::Hello { last, .. } if last == NO_POSITION),
        "{hello:?}"
    );
    for f in [
        welcome,
        Frame::SnapshotBegin {
            pos: cut,
            total_bytes: 10,
        },
        chunk,
        Frame::SnapshotEnd {
            pos: cut,
            consistent_at: cut,
        },
    ] {
        wire::write_frame(&mut wr, &f).await.unwrap();
    }
    // Wait for the slave to say the copy is durable.
    for _ in 0..100 {
        match tokio::time::timeout(T, wire::read_frame(&mut rd))
            .await
            .unwrap()
            .unwrap()
        {
            Frame::Ack {
                kind: AckKind::Disk,
                pos,
            } if pos == cut => break,
            _ => {}
        }
    }
    drop((rd, wr));
    let _ = tokio::time::timeout(T, follower).await.unwrap().unwrap();
    assert!(!copy_in_progress(&*store).unwrap());
    assert_eq!(reportable_position(&*store).unwrap(), Some(cut));
    assert_eq!(queue_bodies(&*store), ["copied-1"]);
}

/// The slave's half of a copy read while writers went on: the copy may hold a message already
/// dequeued at the cut's successor and one enqueued after the cut. Applying it and then the
/// entries after the cut must end exactly at the master's state; until the entry at
/// `consistent_at` is applied the member keeps its copy mark (no position to report, nothing
/// acknowledged), because before that its store matches no position of the master's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_read_during_writes_gives_no_position_and_no_ack_until_consistent() {
    use ferromq_ha_zk::position::{copy_in_progress, position_ops, reportable_position};
    use ferromq_ha_zk::slave::follow;

    let store: Arc<dyn MessageStore> = Arc::new(MemoryStore::new());
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let params = follow_params(&l);
    let (_stop_tx, mut stop) = tokio::sync::watch::channel(false);
    let follower = tokio::spawn({
        let store = store.clone();
        async move {
            let start = read_position(&*store).unwrap();
            follow(&store, start, &params, &mut stop).await
        }
    });
    let (sock, _) = tokio::time::timeout(T, l.accept()).await.unwrap().unwrap();
    let (mut rd, mut wr) = sock.into_split();
    let (_hello, welcome) = accept_slave(&mut rd, &mut wr).await;
    let pos = |lsn| Position { epoch: 2, lsn };
    // The master's log: at the cut (lsn 5) the queue holds 1 "a" and 2 "b"; lsn 6 dequeues 1,
    // lsn 7 enqueues 3 "c". The read saw 1 before its dequeue and 3 after its enqueue.
    let mut copied = enq(1, "a");
    copied.extend(enq(2, "b"));
    copied.extend(enq(3, "c"));
    let mut e6 = vec![Op::Dequeue {
        list: "queue://x".into(),
        seq: 1,
    }];
    e6.extend(position_ops(Some(5), pos(6)));
    let mut e7 = enq(3, "c");
    e7.extend(position_ops(Some(6), pos(7)));
    for f in [
        welcome,
        Frame::SnapshotBegin {
            pos: pos(5),
            total_bytes: 3,
        },
        Frame::SnapshotChunk { batch: copied },
        Frame::SnapshotEnd {
            pos: pos(5),
            consistent_at: pos(7),
        },
        Frame::Entry {
            pos: pos(6),
            batch: e6,
        },
    ] {
        wire::write_frame(&mut wr, &f).await.unwrap();
    }
    // Entry 6 applied (the positive event: message 1 gone), the store still matches no
    // position of the master's log: the mark stays.
    for _ in 0..2000 {
        if queue_bodies(&*store) == ["b", "c"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(queue_bodies(&*store), ["b", "c"]);
    assert!(copy_in_progress(&*store).unwrap());
    assert_eq!(reportable_position(&*store).unwrap(), None);
    wire::write_frame(
        &mut wr,
        &Frame::Entry {
            pos: pos(7),
            batch: e7,
        },
    )
    .await
    .unwrap();
    // Every ack names a position at or past the consistent point (the start ack of a store
    // that never replicated names 0:0, which no master counts); the durable one is 2:7.
    for _ in 0..100 {
        match tokio::time::timeout(T, wire::read_frame(&mut rd))
            .await
            .unwrap()
            .unwrap()
        {
            Frame::Ack { kind, pos: p } if p != Position::default() => {
                assert!(
                    p >= pos(7),
                    "acknowledged {p} ({kind:?}) before the copy was consistent"
                );
                if kind == AckKind::Disk {
                    break;
                }
            }
            _ => {}
        }
    }
    drop((rd, wr));
    let _ = tokio::time::timeout(T, follower).await.unwrap().unwrap();
    assert!(!copy_in_progress(&*store).unwrap());
    assert_eq!(reportable_position(&*store).unwrap(), Some(pos(7)));
    assert_eq!(queue_bodies(&*store), ["b", "c"]);
}

/// Finding 3, closed with staging: a full copy goes to a journal beside the live one. A master
/// that dies mid-copy leaves the live store, and the position the member reports, untouched
/// (the member can still be elected with what it holds); a copy that completes is installed in
/// place of the live store, carrying over the member's id and fences, and the reopened store
/// holds the master's data at the consistent position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staged_copy_leaves_the_live_store_whole_until_it_is_installed() {
    use ferromq_ha_zk::position::{
        copy_in_progress, fence_ops, member_id, position_ops, read_fence, reportable_position,
    };
    use ferromq_ha_zk::slave::follow_staged;
    use ferromq_ha_zk::staging::{finish_journal_install, JournalStaging};
    use ferromq_store::{JournalConfig, JournalStore};

    let d = tempfile::tempdir().unwrap();
    let live_dir = d.path().join("journal");
    let open = |dir: &std::path::Path| -> Arc<dyn MessageStore> {
        finish_journal_install(dir).unwrap();
        Arc::new(JournalStore::open(dir, JournalConfig::default()).unwrap())
    };
    let store = open(&live_dir);
    let id = member_id(&*store).await.unwrap();
    store.submit(fence_ops(None, 1)).await.unwrap();
    let old = Position { epoch: 1, lsn: 2 };
    let mut b = enq(1, "old");
    b.extend(position_ops(None, old));
    store.submit(b).await.unwrap();
    let staging = JournalStaging::new(live_dir.clone(), JournalConfig::default());

    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let params = follow_params(&l);
    let pos = |lsn| Position { epoch: 2, lsn };
    let follow = |store: Arc<dyn MessageStore>| {
        let params = params.clone();
        let staging = staging.clone();
        tokio::spawn(async move {
            let (_stop_tx, mut stop) = tokio::sync::watch::channel(false);
            let start = read_position(&*store).unwrap();
            follow_staged(&store, start, &params, &mut stop, None, Some(&staging)).await
        })
    };

    // A master that dies after the first chunk of a copy.
    let follower = follow(store.clone());
    let (sock, _) = tokio::time::timeout(T, l.accept()).await.unwrap().unwrap();
    let (mut rd, mut wr) = sock.into_split();
    let (hello, welcome) = accept_slave(&mut rd, &mut wr).await;
    assert!(matches!(hello, Frame::Hello { last, .. } if last == old));
    for f in [
        welcome,
        Frame::SnapshotBegin {
            pos: pos(5),
            total_bytes: 10,
        },
        Frame::SnapshotChunk {
            batch: enq(1, "copied-1"),
        },
    ] {
        wire::write_frame(&mut wr, &f).await.unwrap();
    }
    // The positive event: the staged journal exists (the copy is being received).
    let staged_dir = d.path().join("journal.copy");
    for _ in 0..2000 {
        if staged_dir.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(staged_dir.exists(), "the copy was not staged");
    drop((rd, wr));
    let f = tokio::time::timeout(T, follower).await.unwrap().unwrap();
    assert!(f.result.is_err() && !f.installed, "{f:?}");
    assert!(!copy_in_progress(&*store).unwrap());
    assert_eq!(
        reportable_position(&*store).unwrap(),
        Some(old),
        "a copy that did not complete must leave the member its position"
    );
    assert_eq!(queue_bodies(&*store), ["old"]);

    // The next master's copy completes: consistent once the entry at 2:6 is applied.
    let follower = follow(store.clone());
    let (sock, _) = tokio::time::timeout(T, l.accept()).await.unwrap().unwrap();
    let (mut rd, mut wr) = sock.into_split();
    let (hello, welcome) = accept_slave(&mut rd, &mut wr).await;
    assert!(matches!(hello, Frame::Hello { last, .. } if last == old));
    let mut e6 = enq(2, "during");
    e6.extend(position_ops(Some(5), pos(6)));
    for f in [
        welcome,
        Frame::SnapshotBegin {
            pos: pos(5),
            total_bytes: 10,
        },
        Frame::SnapshotChunk {
            batch: enq(1, "copied-1"),
        },
        Frame::SnapshotEnd {
            pos: pos(5),
            consistent_at: pos(6),
        },
        Frame::Entry {
            pos: pos(6),
            batch: e6,
        },
    ] {
        wire::write_frame(&mut wr, &f).await.unwrap();
    }
    let f = tokio::time::timeout(T, follower).await.unwrap().unwrap();
    assert!(f.installed && f.result.is_ok(), "{f:?}");
    assert_eq!(f.pos, pos(6));
    drop((rd, wr));
    drop(store);
    let store = open(&live_dir);
    assert!(!staged_dir.exists());
    assert_eq!(reportable_position(&*store).unwrap(), Some(pos(6)));
    assert_eq!(queue_bodies(&*store), ["copied-1", "during"]);
    assert_eq!(
        member_id(&*store).await.unwrap(),
        id,
        "the member id names the broker: kept"
    );
    assert_eq!(
        read_fence(&*store).unwrap(),
        Some(1),
        "a fence is a promise: kept"
    );
}

/// The install's crash points: whatever step a crash interrupts, the next start finds either
/// the old journal or the new one, whole.
#[test]
fn a_journal_install_cut_short_anywhere_is_finished_or_undone_on_the_next_start() {
    use ferromq_ha_zk::staging::finish_journal_install;
    let d = tempfile::tempdir().unwrap();
    let live = d.path().join("journal");
    let staged = d.path().join("journal.copy");
    let old = d.path().join("journal.old");
    let put = |dir: &std::path::Path, what: &str| {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("data"), what).unwrap();
    };
    let data = |dir: &std::path::Path| std::fs::read_to_string(dir.join("data")).unwrap();
    // Interrupted while receiving: no mark, the staged copy is discarded.
    put(&live, "old");
    put(&staged, "partial");
    finish_journal_install(&live).unwrap();
    assert_eq!(data(&live), "old");
    assert!(!staged.exists());
    // Marked complete, nothing renamed yet.
    put(&staged, "new");
    std::fs::write(staged.join("INSTALL"), "").unwrap();
    finish_journal_install(&live).unwrap();
    assert_eq!(data(&live), "new");
    assert!(!staged.exists() && !old.exists() && !live.join("INSTALL").exists());
    // Marked complete, the live journal already set aside.
    std::fs::rename(&live, &old).unwrap();
    put(&staged, "newer");
    std::fs::write(staged.join("INSTALL"), "").unwrap();
    finish_journal_install(&live).unwrap();
    assert_eq!(data(&live), "newer");
    assert!(!staged.exists() && !old.exists());
    // Installed, the mark and the old journal not yet removed.
    put(&old, "older");
    std::fs::write(live.join("INSTALL"), "").unwrap();
    finish_journal_install(&live).unwrap();
    assert_eq!(data(&live), "newer");
    assert!(!old.exists() && !live.join("INSTALL").exists());
}
