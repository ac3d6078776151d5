//! The review's findings against the master (issue 12), each driven in-process with a memory
//! store and a hand-written slave speaking the wire protocol, so the slave can misbehave exactly
//! as a real one does at the worst moment: a stale ack right after the welcome, a second
//! connection of the same member, a stalled reader, a return after 100k entries.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
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
        wire::write_frame(
            &mut wr,
            &Frame::Hello {
                version: PROTOCOL_VERSION,
                token: "token".into(),
                group: "g".into(),
                master_epoch: epoch,
                last,
                member: member.into(),
            },
        )
        .await
        .unwrap();
        let welcome = tokio::time::timeout(T, wire::read_frame(&mut rd))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(welcome, Frame::Welcome { epoch });
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
                Frame::SnapshotEnd { pos } => return pos,
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

/// Finding 6: a full copy must not pause writers (they used to wait on a condvar, on the
/// async runtime's workers, for as long as the copy read the store), and the copy must still
/// be exactly the cut: a write made during it arrives as an entry after the copy, not in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_copy_does_not_pause_writers_and_is_exactly_the_cut() {
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
                    Frame::SnapshotEnd { pos } => break pos,
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
    gated.release();
    tokio::time::timeout(T, during).await.unwrap().unwrap();
    let (cut, copied, after) = tokio::time::timeout(T, copying).await.unwrap().unwrap();
    assert_eq!(cut, Position { epoch: 1, lsn: 3 });
    let copied_bodies: Vec<_> = copied
        .iter()
        .filter_map(|op| match op {
            Op::Enqueue { payload, .. } => Some(String::from_utf8_lossy(payload).into_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(copied_bodies, vec!["before-1", "before-2", "before-3"]);
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
    use ferromq_ha_zk::slave::{follow, FollowParams};

    let store: Arc<dyn MessageStore> = Arc::new(MemoryStore::new());
    let old = Position { epoch: 1, lsn: 2 };
    let mut b = enq(1, "old");
    b.extend(position_ops(None, old));
    store.submit(b).await.unwrap();
    assert_eq!(reportable_position(&*store).unwrap(), Some(old));

    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let params = FollowParams {
        addr: l.local_addr().unwrap().to_string(),
        master_epoch: 2,
        token: "token".into(),
        group: "g".into(),
        member: "m".into(),
        tls: None,
    };
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
    let hello = wire::read_frame(&mut rd).await.unwrap();
    assert!(matches!(hello, Frame::Hello { last, .. } if last == old));
    for f in [
        Frame::Welcome { epoch: 2 },
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
    let hello = wire::read_frame(&mut rd).await.unwrap();
    assert!(
        matches!(hello, Frame::Hello { last, .. } if last == NO_POSITION),
        "{hello:?}"
    );
    for f in [
        Frame::Welcome { epoch: 2 },
        Frame::SnapshotBegin {
            pos: cut,
            total_bytes: 10,
        },
        chunk,
        Frame::SnapshotEnd { pos: cut },
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
    let bodies: Vec<_> = store
        .load("queue://x", None, 10)
        .unwrap()
        .into_iter()
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect();
    assert_eq!(bodies, vec!["copied-1"]);
}
