//! The master side: [`ReplicatingStore`] wraps the local store, numbers every batch, streams it
//! to the connected slaves and confirms it only when the `sync` mode's condition holds.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ferromq_store::{
    Batch, Completer, Completion, MessageStore, Op, Recovery, StoreError, StoredMessage,
};
use parking_lot::Mutex;
use tokio::io::{AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::auth;
use crate::liveness::{boottime, Liveness};
use crate::position::{position_ops, POSITION_LIST, RESERVED_PREFIX};
use crate::wire::{self, AckKind, Frame, Position, PROTOCOL_VERSION};
use crate::SyncPolicy;

/// Most entries kept for slaves that catch up by streaming; further behind = full copy.
pub const RING_MAX_ENTRIES: usize = 100_000;
/// Most payload bytes kept in the ring.
pub const RING_MAX_BYTES: usize = 64 * 1024 * 1024;
/// Most bytes queued for one follower (entries not yet written to its socket); a follower
/// past it is dropped and comes back to catch up, rather than the master buffering without
/// bound or stalling its writers.
pub const FOLLOWER_QUEUE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Chunks of a full copy in flight between the store reader and the socket (memory bound:
/// this many times [`SNAPSHOT_CHUNK_BYTES`]).
const SNAPSHOT_CHUNKS_IN_FLIGHT: usize = 4;
/// Payload bytes per snapshot chunk of a full copy.
const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;
/// How long a connecting slave may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Recent log entries a *slave* received, in order, kept so that if it is promoted its slaves
/// within them catch up by streaming instead of each needing a full copy of the store (which
/// would also stall quorum writes for as long as the copy takes). Bounded like the master's
/// ring.
#[derive(Debug, Default)]
pub struct EntryRing {
    /// The position just before the first entry (where the entries continue the log).
    base: Position,
    entries: VecDeque<(Position, Batch)>,
    bytes: usize,
}

impl EntryRing {
    /// An empty ring continuing the log at `base`.
    pub fn new(base: Position) -> EntryRing {
        EntryRing {
            base,
            ..EntryRing::default()
        }
    }

    /// Forgets every entry: the log continues at `base` (a full copy, another start).
    pub fn reset(&mut self, base: Position) {
        self.base = base;
        self.entries.clear();
        self.bytes = 0;
    }

    /// The last entry's position (`base` when empty).
    pub fn last(&self) -> Position {
        self.entries.back().map_or(self.base, |(p, _)| *p)
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends the entry that follows [`EntryRing::last`], dropping the oldest past the bounds.
    pub fn push(&mut self, pos: Position, batch: Batch) {
        self.bytes += wire::batch_bytes(&batch);
        self.entries.push_back((pos, batch));
        while self.entries.len() > RING_MAX_ENTRIES || self.bytes > RING_MAX_BYTES {
            match self.entries.pop_front() {
                Some((p, b)) => {
                    self.bytes -= wire::batch_bytes(&b);
                    self.base = p;
                }
                None => break,
            }
        }
    }
}

struct Pending {
    lsn: u64,
    completer: Completer,
}

/// A connected slave, keyed by its member id: a reconnect of the same member replaces its old
/// connection (which may be half-open) instead of counting twice.
struct Follower {
    member: String,
    /// Which connection of that member this is; a replaced connection's acks are ignored.
    conn: u64,
    tx: mpsc::UnboundedSender<Bytes>,
    /// Bytes sent to `tx` and not yet written to the socket.
    queued_bytes: Arc<AtomicUsize>,
    /// The lsn from which this follower's log is agreed to match the master's: its hello
    /// position when streaming, the copy's end after a full copy. Acks below it are stale.
    floor: u64,
    /// Highest lsn acknowledged received / durable, of this master's own entries.
    mem: u64,
    disk: u64,
}

impl Follower {
    fn send(&self, frame: Bytes) -> bool {
        self.queued_bytes.fetch_add(frame.len(), Ordering::Relaxed);
        self.tx.send(frame).is_ok()
    }
}

struct State {
    /// The last position assigned.
    last: Position,
    /// The lsn of the position record the last batch wrote (dequeued by the next one).
    prev_record: Option<u64>,
    /// Recent entries, encoded as `Entry` frames, for slaves that catch up.
    ring: VecDeque<(Position, Bytes)>,
    ring_bytes: usize,
    /// The entry just before the ring's first (the position this master started from).
    ring_base: Position,
    pending: VecDeque<Pending>,
    /// Highest lsn the local store confirmed.
    local_done: u64,
    followers: HashMap<String, Follower>,
    next_conn: u64,
    failed: Option<StoreError>,
    closed: bool,
}

impl State {
    /// Where in the ring the entries after `pos` start, if `pos` is an entry of this log the
    /// ring continues from (`ring.len()` when `pos` is the last: nothing to resend); `None`
    /// when the ring no longer reaches back to it, or `pos` is not this log's.
    fn ring_index_after(&self, pos: Position) -> Option<usize> {
        if pos == self.last {
            Some(self.ring.len())
        } else if pos == self.ring_base {
            Some(0)
        } else {
            self.ring.iter().position(|(p, _)| *p == pos).map(|i| i + 1)
        }
    }
}

pub(crate) struct Shared {
    inner: Arc<dyn MessageStore>,
    epoch: u64,
    policy: SyncPolicy,
    group: String,
    token: String,
    /// False once this master's ZooKeeper session or quorum is lost: nothing more is confirmed.
    healthy: Arc<AtomicBool>,
    /// True while the ZooKeeper connection is down: nothing is confirmed, nothing is failed yet.
    suspended: AtomicBool,
    /// `!suspended && lease_ok`, as a watch: the server pauses dispatch to consumers while it
    /// is false.
    serving: watch::Sender<bool>,
    /// Fast failover's timing, once enabled ([`ReplicatingStore::enable_lease`]).
    liveness: std::sync::OnceLock<Liveness>,
    /// Whether enough slaves answered a recent heartbeat (always true without fast failover):
    /// without it a quorum of slaves may have fenced this master, which then confirms and
    /// dispatches nothing.
    lease_ok: AtomicBool,
    /// Per slave member: when (boot time) the newest heartbeat it answered was sent.
    leases: Mutex<HashMap<String, Duration>>,
    /// The lease was lost once (its regain is then worth a log line).
    lease_said_lost: AtomicBool,
    state: Mutex<State>,
    local_tx: mpsc::UnboundedSender<(u64, Completion)>,
    /// Full copies sent to slaves (for status and tests).
    full_copies: AtomicU64,
    /// Entries written while full copies read the store (summed over copies).
    copy_overlap_entries: AtomicU64,
    /// Most bytes queued for one follower before it is dropped.
    follower_queue_bytes_max: AtomicUsize,
}

/// The master's store: a [`MessageStore`] that replicates every batch before confirming it.
#[derive(Clone)]
pub struct ReplicatingStore {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ReplicatingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicatingStore")
            .field("epoch", &self.shared.epoch)
            .field("inner", &self.shared.inner.kind())
            .finish_non_exhaustive()
    }
}

impl ReplicatingStore {
    /// Wraps `inner`, whose recorded position is `start`, as the master of `epoch`. Must be
    /// called inside a tokio runtime (it spawns the task that follows local confirmations).
    pub fn new(
        inner: Arc<dyn MessageStore>,
        start: Position,
        epoch: u64,
        policy: SyncPolicy,
        group: String,
        token: String,
        healthy: Arc<AtomicBool>,
    ) -> ReplicatingStore {
        let (local_tx, mut local_rx) = mpsc::unbounded_channel::<(u64, Completion)>();
        let shared = Arc::new(Shared {
            inner,
            epoch,
            policy,
            group,
            token,
            healthy,
            suspended: AtomicBool::new(false),
            serving: watch::Sender::new(true),
            liveness: std::sync::OnceLock::new(),
            lease_ok: AtomicBool::new(true),
            leases: Mutex::new(HashMap::new()),
            lease_said_lost: AtomicBool::new(false),
            state: Mutex::new(State {
                last: start,
                prev_record: (start.lsn > 0).then_some(start.lsn),
                ring: VecDeque::new(),
                ring_bytes: 0,
                ring_base: start,
                pending: VecDeque::new(),
                local_done: start.lsn,
                followers: HashMap::new(),
                next_conn: 1,
                failed: None,
                closed: false,
            }),
            local_tx,
            full_copies: AtomicU64::new(0),
            copy_overlap_entries: AtomicU64::new(0),
            follower_queue_bytes_max: AtomicUsize::new(FOLLOWER_QUEUE_BYTES_MAX),
        });
        // The local store confirms in submission order, so one task awaiting the completions
        // in order is enough (and cheaper than a task per batch).
        let weak = Arc::downgrade(&shared);
        tokio::spawn(async move {
            while let Some((lsn, c)) = local_rx.recv().await {
                let r = c.await;
                let Some(shared) = weak.upgrade() else { return };
                let mut st = shared.state.lock();
                match r {
                    Ok(()) => st.local_done = st.local_done.max(lsn),
                    Err(e) => {
                        tracing::error!(error = %e, lsn, "the master's local store failed: no further write is confirmed");
                        if st.failed.is_none() {
                            st.failed = Some(e);
                        }
                    }
                }
                shared.resolve(&mut st);
            }
        });
        ReplicatingStore { shared }
    }

    /// The last position assigned.
    pub fn last_position(&self) -> Position {
        self.shared.state.lock().last
    }

    /// Why the store refuses writes, once it does (a local store failure, deposition, close).
    pub fn failure(&self) -> Option<String> {
        self.shared
            .state
            .lock()
            .failed
            .as_ref()
            .map(|e| e.to_string())
    }

    /// Sets the most bytes queued for one follower (default [`FOLLOWER_QUEUE_BYTES_MAX`]).
    pub fn set_follower_queue_bytes_max(&self, bytes: usize) {
        self.shared
            .follower_queue_bytes_max
            .store(bytes, Ordering::Relaxed);
    }

    /// How many full copies this master sent to slaves.
    pub fn full_copies(&self) -> u64 {
        self.shared.full_copies.load(Ordering::Relaxed)
    }

    /// How many log entries were written while full copies read the store (summed over
    /// copies): writes the copies did not hold back.
    pub fn entries_written_during_copies(&self) -> u64 {
        self.shared.copy_overlap_entries.load(Ordering::Relaxed)
    }

    /// How many slaves are connected and streaming.
    pub fn connected_slaves(&self) -> usize {
        self.shared.state.lock().followers.len()
    }

    /// Slaves whose acknowledgement (of the sync mode's kind) reached `lsn`.
    pub fn slaves_at(&self, lsn: u64) -> usize {
        let st = self.shared.state.lock();
        st.followers
            .values()
            .filter(|f| self.shared.acked(f) >= lsn)
            .count()
    }

    /// Seeds a new master's ring with the entries it received as a slave, when they end exactly
    /// where this master starts (and before anything was written): a slave whose last entry is
    /// one of them streams from there. Returns how many entries were taken.
    pub fn seed_ring(&self, ring: EntryRing) -> usize {
        let mut st = self.shared.state.lock();
        if ring.is_empty() || ring.last() != st.last || !st.ring.is_empty() {
            return 0;
        }
        let n = ring.len();
        let mut bytes = 0;
        let mut frames = VecDeque::with_capacity(n);
        for (pos, batch) in ring.entries {
            let mut buf = BytesMut::with_capacity(wire::batch_bytes(&batch) + 64);
            Frame::Entry { pos, batch }.encode(&mut buf);
            bytes += buf.len();
            frames.push_back((pos, buf.freeze()));
        }
        st.ring = frames;
        st.ring_bytes = bytes;
        st.ring_base = ring.base;
        n
    }

    /// Submits a batch that only moves the position (the new master's first entry, which
    /// commits every entry before it once a quorum has it — Raft's no-op).
    pub fn submit_marker(&self) -> Completion {
        self.submit(Vec::new())
    }

    /// Holds (`true`) or resumes confirmations, without failing anything.
    pub fn set_suspended(&self, suspended: bool) {
        self.shared.suspended.store(suspended, Ordering::SeqCst);
        self.shared.refresh_serving();
    }

    /// Turns on fast failover's lease: from now on this master confirms and dispatches only
    /// while `liveness.needed` slaves answered a heartbeat sent less than `liveness.lease` ago
    /// (slaves connect a liveness channel besides their stream). Starts without a lease.
    pub fn enable_lease(&self, liveness: Liveness) {
        if self.shared.liveness.set(liveness).is_err() {
            return;
        }
        self.shared.lease_ok.store(false, Ordering::SeqCst);
        self.shared.refresh_serving();
        let weak = Arc::downgrade(&self.shared);
        // Checked at twice the heartbeat rate: the lease is noticed gone at most
        // `heartbeat / 2` late, well inside the half timeout that separates it from a fence.
        let tick = (liveness.heartbeat / 2).max(Duration::from_millis(2));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(tick).await;
                let Some(shared) = weak.upgrade() else { return };
                if shared.state.lock().closed || !shared.healthy.load(Ordering::SeqCst) {
                    return;
                }
                shared.check_lease();
            }
        });
    }

    /// Whether this master serves (confirms writes), as a watch: false while suspended.
    pub fn serving(&self) -> watch::Receiver<bool> {
        self.shared.serving.subscribe()
    }

    /// Fails every unconfirmed and future write: this broker is no longer master.
    pub fn depose(&self, reason: &str) {
        self.shared.healthy.store(false, Ordering::SeqCst);
        let mut st = self.shared.state.lock();
        if st.failed.is_none() {
            st.failed = Some(StoreError::Failed(format!("no longer master: {reason}")));
        }
        // Dropping the followers' senders ends their connections.
        st.followers.clear();
        self.shared.resolve(&mut st);
    }

    /// Accepts slaves on `listener` until the store closes, over plain TCP.
    pub fn serve(&self, listener: TcpListener) -> tokio::task::JoinHandle<()> {
        self.serve_with(listener, None)
    }

    /// Accepts slaves on `listener` until the store closes, over mutual TLS when `tls` is set
    /// (a peer that fails the handshake is dropped before it can send anything).
    pub fn serve_with(
        &self,
        listener: TcpListener,
        tls: Option<&crate::ReplicationTls>,
    ) -> tokio::task::JoinHandle<()> {
        let shared = self.shared.clone();
        // The holder, not its configuration now: each connection takes the one current when
        // it arrives, so a reload of `ha.tls_*` applies to the next slave.
        let tls = tls.cloned();
        tokio::spawn(async move {
            loop {
                let (sock, peer) = match listener.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "replication accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if shared.state.lock().closed {
                    return;
                }
                let _ = sock.set_nodelay(true);
                let shared = shared.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let (rd, wr) = match crate::tls::accept(sock, peer, tls.as_ref(), HELLO_TIMEOUT)
                        .await
                    {
                        Ok(halves) => halves,
                        Err(e) => {
                            tracing::warn!(%peer, error = %e, "refusing a replication connection");
                            return;
                        }
                    };
                    if let Err(e) = serve_slave(shared, peer, rd, wr).await {
                        tracing::info!(%peer, error = %e, "replication connection ended");
                    }
                });
            }
        })
    }
}

impl Shared {
    /// Re-evaluates the heartbeat lease (on every tick, and at once when a pong arrives while
    /// it is not held, so a new master serves as soon as its slaves answer).
    fn check_lease(&self) {
        let Some(liveness) = self.liveness.get() else {
            return;
        };
        let ok = liveness.holds(self.leases.lock().values().copied(), boottime());
        let was = self.lease_ok.swap(ok, Ordering::SeqCst);
        if was == ok {
            return;
        }
        if ok {
            if self.lease_said_lost.load(Ordering::Relaxed) {
                tracing::info!("heartbeat lease regained: confirming and dispatching again");
            }
        } else {
            self.lease_said_lost.store(true, Ordering::Relaxed);
            tracing::warn!(
                needed = liveness.needed,
                lease_ms = liveness.lease.as_millis() as u64,
                "heartbeat lease lost: too few slaves answered recent heartbeats, so they may fence this master; confirming and dispatching nothing"
            );
        }
        self.refresh_serving();
    }

    /// Publishes whether this master serves (not suspended, lease held) and, when it does,
    /// confirms what waited.
    fn refresh_serving(&self) {
        let serving =
            !self.suspended.load(Ordering::SeqCst) && self.lease_ok.load(Ordering::SeqCst);
        self.serving.send_if_modified(|s| {
            let changed = *s != serving;
            *s = serving;
            changed
        });
        if serving {
            let mut st = self.state.lock();
            self.resolve(&mut st);
        }
    }

    fn submit_local(&self, st: &mut State, lsn: u64, batch: Batch) {
        let local = self.inner.submit(batch);
        if self.local_tx.send((lsn, local)).is_err() {
            st.failed = Some(StoreError::Closed);
        }
    }

    fn acked(&self, f: &Follower) -> u64 {
        match self.policy.ack_kind {
            AckKind::Mem => f.mem.max(f.disk),
            AckKind::Disk => f.disk,
        }
    }

    /// Confirms, in log order, every pending batch whose sync condition now holds.
    fn resolve(&self, st: &mut State) {
        while let Some(front) = st.pending.front() {
            let lsn = front.lsn;
            // A pending write was streamed to the slaves when it was submitted: whatever ends
            // this master now, it may survive on them (and be served by the next master), so
            // its failure is "outcome unknown", never "not stored".
            let verdict = if let Some(e) = &st.failed {
                Some(Err(StoreError::Indeterminate(e.to_string())))
            } else if !self.healthy.load(Ordering::SeqCst) {
                Some(Err(StoreError::Indeterminate(
                    "lost mastership before the write was confirmed".into(),
                )))
            } else if self.suspended.load(Ordering::SeqCst) || !self.lease_ok.load(Ordering::SeqCst)
            {
                None
            } else {
                let local_ok = !self.policy.local_disk || st.local_done >= lsn;
                let acks = st
                    .followers
                    .values()
                    .filter(|f| self.acked(f) >= lsn)
                    .count();
                (local_ok && acks >= self.policy.slave_acks).then_some(Ok(()))
            };
            let Some(v) = verdict else { break };
            if let Some(p) = st.pending.pop_front() {
                p.completer.complete(v);
            }
        }
    }
}

impl ferromq_ha::ReplicationStatus for ReplicatingStore {
    fn replication(&self) -> ferromq_ha::Replication {
        let shared = &self.shared;
        let st = shared.state.lock();
        let last_lsn = st.last.lsn;
        let mut slaves: Vec<ferromq_ha::SlaveReplication> = st
            .followers
            .values()
            .map(|f| {
                // The slave holds everything up to its floor (where its log was agreed to
                // match this master's) before it acknowledges anything of this epoch.
                let acked_lsn = shared.acked(f).max(f.floor);
                ferromq_ha::SlaveReplication {
                    member: f.member.clone(),
                    acked_lsn,
                    received_lsn: f.mem.max(f.disk).max(f.floor),
                    durable_lsn: f.disk.max(f.floor),
                    lag_entries: last_lsn.saturating_sub(acked_lsn),
                    queued_bytes: f.queued_bytes.load(Ordering::Relaxed) as u64,
                }
            })
            .collect();
        slaves.sort_by(|a, b| a.member.cmp(&b.member));
        ferromq_ha::Replication {
            last_lsn,
            local_lsn: st.local_done,
            slave_acks_required: shared.policy.slave_acks as u64,
            slave_acks_durable: matches!(shared.policy.ack_kind, AckKind::Disk),
            slaves,
        }
    }
}

impl MessageStore for ReplicatingStore {
    fn kind(&self) -> &'static str {
        "replicated"
    }

    fn submit(&self, mut batch: Batch) -> Completion {
        let shared = &self.shared;
        if !shared.healthy.load(Ordering::SeqCst) {
            return Completion::ready(Err(StoreError::Failed(
                "not the master any more: the write is refused".into(),
            )));
        }
        let mut st = shared.state.lock();
        if st.closed {
            return Completion::ready(Err(StoreError::Closed));
        }
        if let Some(e) = &st.failed {
            return Completion::ready(Err(e.clone()));
        }
        let pos = Position {
            epoch: shared.epoch,
            lsn: st.last.lsn + 1,
        };
        batch.extend(position_ops(st.prev_record, pos));
        st.prev_record = Some(pos.lsn);
        let mut buf = BytesMut::with_capacity(wire::batch_bytes(&batch) + 64);
        Frame::Entry {
            pos,
            batch: batch.clone(),
        }
        .encode(&mut buf);
        let frame = buf.freeze();
        st.ring_bytes += frame.len();
        st.ring.push_back((pos, frame.clone()));
        while st.ring.len() > RING_MAX_ENTRIES || st.ring_bytes > RING_MAX_BYTES {
            match st.ring.pop_front() {
                Some((p, f)) => {
                    st.ring_bytes -= f.len();
                    st.ring_base = p;
                }
                None => break,
            }
        }
        // A slave whose queue is full is cut off; it comes back and catches up (from the ring
        // or by a copy) instead of making the master buffer without bound. The bound is on
        // bytes in flight, not on lsn distance: a slave that starts far into the log is fine.
        let queue_max = shared.follower_queue_bytes_max.load(Ordering::Relaxed);
        st.followers.retain(|_, f| {
            if f.queued_bytes.load(Ordering::Relaxed) + frame.len() > queue_max {
                tracing::warn!(member = %f.member, queue_max, "slave's queue is full: disconnecting it");
                return false;
            }
            f.send(frame.clone())
        });
        let (completer, completion) = Completion::pair();
        st.pending.push_back(Pending {
            lsn: pos.lsn,
            completer,
        });
        st.last = pos;
        // Submitted under the lock, so the local store sees batches in lsn order. A full copy
        // reading the store meanwhile holds nothing back (see `send_snapshot`).
        shared.submit_local(&mut st, pos.lsn, batch);
        shared.resolve(&mut st);
        completion
    }

    fn recover(&self) -> Result<Recovery, StoreError> {
        let mut r = self.shared.inner.recover()?;
        r.lists.retain(|l| !l.list.starts_with(RESERVED_PREFIX));
        Ok(r)
    }

    fn load(
        &self,
        list: &str,
        after_seq: Option<u64>,
        max_count: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.shared.inner.load(list, after_seq, max_count)
    }

    fn usage_bytes(&self) -> u64 {
        self.shared.inner.usage_bytes()
    }

    /// The local store's: what this master's own disk does per group (replication's waits
    /// are in the replication status, not here).
    fn commit_stats(&self) -> Option<ferromq_store::CommitStatsSnapshot> {
        self.shared.inner.commit_stats()
    }

    fn close(&self) -> Result<(), StoreError> {
        {
            let mut st = self.shared.state.lock();
            st.closed = true;
            st.followers.clear();
            if st.failed.is_none() {
                st.failed = Some(StoreError::Closed);
            }
            self.shared.resolve(&mut st);
        }
        self.shared.inner.close()
    }
}

/// Takes the cut a full copy starts from: the last position assigned, once every batch up to
/// it is applied to the local store (so a read of the store sees at least the cut).
async fn begin_snapshot(shared: &Shared) -> Result<Position, StoreError> {
    let cut = {
        let st = shared.state.lock();
        if st.closed {
            return Err(StoreError::Closed);
        }
        st.last
    };
    // A no-op through the local store: applied after every batch submitted before it, so once
    // it is done the store holds everything up to the cut.
    shared
        .inner
        .submit(vec![Op::Dequeue {
            list: POSITION_LIST.into(),
            seq: u64::MAX,
        }])
        .await?;
    Ok(cut)
}

/// Reads the store chunk by chunk into `tx`, while writers go on: the read is *fuzzy*, it sees
/// the store at the cut plus any part of the later batches (see [`send_snapshot`]). Blocking:
/// run on a blocking thread. Stops early when the store closes or the receiver is gone.
fn read_snapshot(shared: &Shared, tx: &mpsc::Sender<Batch>) -> Result<(), StoreError> {
    let closed = || shared.state.lock().closed;
    let rec = shared.inner.recover()?;
    let mut chunk: Batch = rec
        .subscriptions
        .iter()
        .cloned()
        .map(Op::PutSubscription)
        .collect();
    let mut chunk_bytes = 0usize;
    let gone = || StoreError::Failed("the copy was abandoned".into());
    // The position is the copy's end (sent apart); the member id is the master's own.
    for l in rec
        .lists
        .iter()
        .filter(|l| !l.list.starts_with(RESERVED_PREFIX))
    {
        let mut after: Option<u64> = None;
        // Bounded: pages of 1024 ascending seqs, at most the list's count at the start plus
        // what writers add meanwhile (a list that keeps growing is read up to a bound; what
        // the read misses reaches the slave as entries after the cut).
        for _ in 0..=(l.count / 1024 + 64) {
            if closed() {
                return Err(gone());
            }
            let page = shared.inner.load(&l.list, after, 1024)?;
            let Some(last) = page.last() else { break };
            after = Some(last.seq);
            for m in page {
                chunk_bytes += m.payload.len();
                chunk.push(Op::Enqueue {
                    list: l.list.clone(),
                    seq: m.seq,
                    payload: m.payload,
                });
                if chunk_bytes >= SNAPSHOT_CHUNK_BYTES {
                    tx.blocking_send(std::mem::take(&mut chunk))
                        .map_err(|_| gone())?;
                    chunk_bytes = 0;
                }
            }
        }
        chunk.extend(crate::position::max_seq_ops(&l.list, after, l.max_seq));
    }
    if !chunk.is_empty() {
        tx.blocking_send(chunk).map_err(|_| gone())?;
    }
    Ok(())
}

/// Sends a full copy, then registers the follower to stream the entries after the cut.
///
/// Writers are never held back: the store is read while they go on, so the copy holds the
/// store at the cut plus some of the later batches (a *fuzzy* copy). Every store op is
/// idempotent per key (an enqueue is an upsert of `(list, seq)`; a dequeue of an absent message,
/// a purge, a subscription put or delete are set operations), so applying the copy and then
/// every entry after the cut, in order, ends at exactly the master's state at the last of them,
/// whatever part of them the read saw. The copy is therefore only *consistent at* the position
/// the log had when the read ended: the slave keeps its copy mark (no position, no acks) until
/// it has applied the entry at that position. The entries after the cut are taken from the
/// in-memory ring, not queued during the copy: a follower's queue does not grow with the copy's
/// duration, and a copy that writes outran (the ring no longer reaches back to the cut) is
/// abandoned; the slave retries. Memory is bounded by [`SNAPSHOT_CHUNKS_IN_FLIGHT`] chunks.
async fn send_snapshot<W: tokio::io::AsyncWrite + Unpin>(
    shared: &Arc<Shared>,
    mut follower: Follower,
    wr: &mut W,
) -> Result<(), crate::ZkError> {
    let cut = begin_snapshot(shared).await?;
    let (tx, mut rx) = mpsc::channel::<Batch>(SNAPSHOT_CHUNKS_IN_FLIGHT);
    let reader = {
        let sh = shared.clone();
        tokio::task::spawn_blocking(move || read_snapshot(&sh, &tx))
    };
    let sent: Result<(), crate::ZkError> = async {
        let mut b = BytesMut::new();
        Frame::SnapshotBegin {
            pos: cut,
            // An estimate, for progress only: the exact size is known once read.
            total_bytes: shared.inner.usage_bytes(),
        }
        .encode(&mut b);
        wr.write_all(&b).await.map_err(wire::WireError::Io)?;
        while let Some(batch) = rx.recv().await {
            let mut b = BytesMut::new();
            Frame::SnapshotChunk { batch }.encode(&mut b);
            wr.write_all(&b).await.map_err(wire::WireError::Io)?;
        }
        Ok(())
    }
    .await;
    drop(rx);
    reader
        .await
        .map_err(|e| crate::ZkError::Replication(format!("copy task: {e}")))??;
    sent?;
    // The read is over: every batch it could have seen was submitted to the local store, so
    // numbered at most `st.last`. Under the same lock the entries after the cut are queued
    // (from the ring) and the follower registered for later ones: none missed, none twice.
    let consistent_at = {
        let mut st = shared.state.lock();
        if st.closed {
            return Err(StoreError::Closed.into());
        }
        let Some(skip) = st.ring_index_after(cut) else {
            return Err(crate::ZkError::Replication(format!(
                "the writes made during the full copy outran the in-memory tail (cut {cut}, tail from {}): the slave retries",
                st.ring_base
            )));
        };
        let consistent_at = st.last;
        shared
            .copy_overlap_entries
            .fetch_add(consistent_at.lsn - cut.lsn, Ordering::Relaxed);
        // The slave acknowledges nothing before it is consistent; an ack below that point
        // (stale, or from a slave that ignores the rule) says nothing about this log.
        follower.floor = consistent_at.lsn;
        follower.mem = 0;
        follower.disk = 0;
        for (_, f) in st.ring.iter().skip(skip) {
            let _ = follower.send(f.clone());
        }
        register(&mut st, follower);
        consistent_at
    };
    // Written before the writer loop starts on the queued entries.
    wire::write_frame(
        wr,
        &Frame::SnapshotEnd {
            pos: cut,
            consistent_at,
        },
    )
    .await?;
    Ok(())
}

fn register(st: &mut State, f: Follower) {
    if let Some(old) = st.followers.insert(f.member.clone(), f) {
        tracing::info!(member = %old.member, "the member reconnected: its old connection is replaced");
    }
}

/// Removes `member`'s follower if it is still connection `conn` (not a newer one).
fn forget(st: &mut State, member: &str, conn: u64) {
    if st.followers.get(member).is_some_and(|f| f.conn == conn) {
        st.followers.remove(member);
    }
}

/// Whether `buf` starts with one whole frame (length prefix and body), so reading it
/// completes without waiting on the socket.
fn buffered_frame(buf: &[u8]) -> bool {
    buf.len() >= 4 && buf.len() - 4 >= u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize
}

/// Refuses a slave: logged with its address, and told why (a `Reject` carries no proof: a
/// peer refused before it proved the token must learn nothing that depends on it).
async fn refuse<W: tokio::io::AsyncWrite + Unpin>(
    wr: &mut W,
    peer: std::net::SocketAddr,
    member: &str,
    reason: String,
) -> crate::ZkError {
    // The member name is the peer's unproven claim: logged escaped (Debug), not as is.
    tracing::warn!(%peer, member = ?member, %reason, "refusing a replication slave");
    // Best effort: the peer may already be gone, and the refusal is logged either way.
    let _ = wire::write_frame(
        wr,
        &Frame::Reject {
            reason: reason.clone(),
        },
    )
    .await;
    crate::ZkError::Replication(reason)
}

async fn serve_slave(
    shared: Arc<Shared>,
    peer: std::net::SocketAddr,
    rd: crate::tls::Reader,
    wr: crate::tls::Writer,
) -> Result<(), crate::ZkError> {
    // Buffered: an ack frame is ~20 bytes, and an unbuffered read costs two syscalls per frame
    // (length, then body); with a buffer, a burst of acks is one read.
    let mut rd = BufReader::with_capacity(16 * 1024, rd);
    let mut wr = BufWriter::with_capacity(256 * 1024, wr);
    // The challenge goes at once, unasked (the slave writes its hello meanwhile): the slave's
    // proof must cover this fresh nonce, so a proof recorded from another connection is worth
    // nothing here.
    let master_nonce = auth::nonce()?;
    wire::write_frame(
        &mut wr,
        &Frame::Challenge {
            version: PROTOCOL_VERSION,
            nonce: master_nonce,
        },
    )
    .await?;
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, wire::read_frame(&mut rd)).await {
        Err(_) => {
            return Err(crate::ZkError::Replication(
                "no hello from the slave in time".into(),
            ))
        }
        // An older slave (its hello carries the token in clear, which is not read) or a newer
        // one: refused by name, not misread.
        Ok(Err(e @ wire::WireError::Version(_))) => {
            return Err(refuse(&mut wr, peer, "?", e.to_string()).await)
        }
        Ok(r) => r?,
    };
    let Some((opening, slave_nonce)) = auth::Opening::of(&hello) else {
        return Err(refuse(
            &mut wr,
            peer,
            "?",
            "the first frame was neither a hello nor a watch".into(),
        )
        .await);
    };
    let proof = match tokio::time::timeout(HELLO_TIMEOUT, wire::read_frame(&mut rd)).await {
        Err(_) => {
            return Err(crate::ZkError::Replication(
                "no proof from the slave in time".into(),
            ))
        }
        Ok(Ok(Frame::Proof { proof })) => proof,
        Ok(Ok(_)) => {
            return Err(refuse(
                &mut wr,
                peer,
                opening.member,
                "the hello was not followed by a proof".into(),
            )
            .await)
        }
        Ok(Err(e)) => return Err(e.into()),
    };
    let (group, master_epoch, member, last) = (
        opening.group,
        opening.master_epoch,
        opening.member.to_string(),
        opening.last,
    );
    // The proof is checked before anything else is looked at: what a slave states is worth
    // nothing until it proved it belongs to the group.
    let refusal =
        if !auth::verify_slave(&shared.token, &opening, &master_nonce, slave_nonce, &proof) {
            Some(
                "authentication failed: the slave did not prove it knows the security token \
             (a different ha.security_token?)"
                    .to_string(),
            )
        } else if group != shared.group {
            Some(format!("group {group:?} is not {:?}", shared.group))
        } else if master_epoch != shared.epoch {
            Some(format!(
                "slave expects the master of epoch {master_epoch}, this is epoch {}",
                shared.epoch
            ))
        } else if !shared.healthy.load(Ordering::SeqCst) {
            Some("this broker is no longer master".to_string())
        } else if last.is_none() && shared.liveness.get().is_none() {
            Some("fast failover is off on this master (master_timeout_ms = 0)".to_string())
        } else {
            None
        };
    if let Some(reason) = refusal {
        return Err(refuse(&mut wr, peer, &member, reason).await);
    }
    // Sent only now, to a slave that proved the token: the slave checks it before it trusts
    // anything that follows.
    let welcome = auth::welcome(&shared.token, &master_nonce, &hello, shared.epoch)?;
    let Some(last) = last else {
        // A watch (refused above when fast failover is off).
        return serve_watch(shared, member, welcome, rd, wr).await;
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<Bytes>();
    let queued_bytes = Arc::new(AtomicUsize::new(0));
    let conn = {
        let mut st = shared.state.lock();
        st.next_conn += 1;
        st.next_conn
    };
    let mut follower = Follower {
        member: member.clone(),
        conn,
        tx,
        queued_bytes: queued_bytes.clone(),
        floor: 0,
        mem: 0,
        disk: 0,
    };
    // Stream from the ring when the slave's last entry is one we have, with the same epoch;
    // anything else (too far behind, or a suffix this master never had) gets a full copy,
    // which discards the divergent suffix by construction.
    let streamed = {
        let mut st = shared.state.lock();
        match st.ring_index_after(last) {
            Some(skip) => {
                // The slave holds `last`, an entry of this master's log (same epoch): its log
                // matches up to there, which is where its acked position starts.
                follower.floor = last.lsn;
                follower.mem = last.lsn;
                follower.disk = last.lsn;
                for (_, f) in st.ring.iter().skip(skip) {
                    let _ = follower.send(f.clone());
                }
                register(&mut st, follower);
                Ok(())
            }
            None => Err(follower),
        }
    };
    wire::write_frame(&mut wr, &welcome).await?;
    match streamed {
        Ok(()) => {
            tracing::info!(%member, slave_position = %last, "slave connected: streaming from its position");
        }
        Err(follower) => {
            tracing::info!(%member, slave_position = %last, "slave connected: it needs a full copy of the store");
            shared.full_copies.fetch_add(1, Ordering::Relaxed);
            send_snapshot(&shared, follower, &mut wr).await?;
        }
    }
    let acks = {
        let shared = shared.clone();
        let member = member.clone();
        tokio::spawn(async move {
            loop {
                // Every ack already received is folded in before the state lock is taken, so
                // a burst costs one lock and one resolve (acks are cumulative: only the highest
                // counted one of each kind matters). Bounded: at most what the buffer holds.
                let mut acks: Vec<(AckKind, Position)> = Vec::new();
                match wire::read_frame(&mut rd).await {
                    Ok(Frame::Ack { kind, pos }) => acks.push((kind, pos)),
                    Ok(other) => {
                        tracing::warn!(frame = ?std::mem::discriminant(&other), "unexpected frame from a slave");
                        return;
                    }
                    Err(_) => return,
                }
                let mut bad = false;
                while acks.len() < 1024 && buffered_frame(rd.buffer()) {
                    match wire::read_frame(&mut rd).await {
                        Ok(Frame::Ack { kind, pos }) => acks.push((kind, pos)),
                        Ok(other) => {
                            tracing::warn!(frame = ?std::mem::discriminant(&other), "unexpected frame from a slave");
                            bad = true;
                            break;
                        }
                        Err(_) => {
                            bad = true;
                            break;
                        }
                    }
                }
                let mut st = shared.state.lock();
                let last = st.last;
                let Some(f) = st.followers.get_mut(&member).filter(|f| f.conn == conn) else {
                    return;
                };
                for (kind, pos) in acks {
                    // Only this master writes entries of its epoch, so (epoch, lsn) names
                    // one of its own entries exactly; anything else (an old epoch's entry
                    // at that lsn, a position from before the agreed start) says nothing
                    // about what the slave holds of this log.
                    if pos.epoch != shared.epoch || pos.lsn < f.floor || pos.lsn > last.lsn {
                        tracing::debug!(%member, ack = %pos, floor = f.floor, "ack not counted");
                        continue;
                    }
                    match kind {
                        AckKind::Mem => f.mem = f.mem.max(pos.lsn),
                        AckKind::Disk => f.disk = f.disk.max(pos.lsn),
                    }
                }
                shared.resolve(&mut st);
                if bad {
                    return;
                }
            }
        })
    };
    let acks_abort = acks.abort_handle();
    // When the slave hangs up, forget it at once (its sender goes, ending the writer below).
    let reaper = {
        let shared = shared.clone();
        let member = member.clone();
        tokio::spawn(async move {
            let _ = acks.await;
            let mut st = shared.state.lock();
            forget(&mut st, &member, conn);
            shared.resolve(&mut st);
        })
    };
    let result: Result<(), crate::ZkError> = async {
        while let Some(f) = rx.recv().await {
            wr.write_all(&f).await.map_err(wire::WireError::Io)?;
            queued_bytes.fetch_sub(f.len(), Ordering::Relaxed);
            // Write everything queued before flushing: one syscall for a burst of entries.
            for _ in 0..1024 {
                match rx.try_recv() {
                    Ok(f) => {
                        wr.write_all(&f).await.map_err(wire::WireError::Io)?;
                        queued_bytes.fetch_sub(f.len(), Ordering::Relaxed);
                    }
                    Err(_) => break,
                }
            }
            wr.flush().await.map_err(wire::WireError::Io)?;
        }
        Ok(())
    }
    .await;
    reaper.abort();
    acks_abort.abort();
    let mut st = shared.state.lock();
    forget(&mut st, &member, conn);
    shared.resolve(&mut st);
    tracing::info!(%member, "slave disconnected");
    result
}

/// Serves one slave's liveness channel: a heartbeat every `liveness.heartbeat`, and each pong
/// renews that slave's share of the lease from the moment its heartbeat was *sent* (a pong
/// says the slave heard the master at some time after that).
async fn serve_watch<R, W>(
    shared: Arc<Shared>,
    member: String,
    welcome: Frame,
    mut rd: R,
    mut wr: W,
) -> Result<(), crate::ZkError>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
    W: tokio::io::AsyncWrite + Unpin,
{
    let Some(liveness) = shared.liveness.get().copied() else {
        return Err(crate::ZkError::Replication(
            "a watch on a master without fast failover".into(),
        ));
    };
    wire::write_frame(&mut wr, &welcome).await?;
    // Heartbeats sent and not answered yet: (seq, boot time sent). Bounded: a slave that
    // stops answering is cut off before it holds more.
    let sent: Arc<Mutex<VecDeque<(u64, Duration)>>> = Arc::new(Mutex::new(VecDeque::new()));
    const MAX_UNANSWERED: usize = 64;
    let reader = {
        let sent = sent.clone();
        let shared = shared.clone();
        let member = member.clone();
        tokio::spawn(async move {
            loop {
                match wire::read_frame(&mut rd).await {
                    Ok(Frame::Pong { seq }) => {
                        let at = {
                            let mut q = sent.lock();
                            let mut at = None;
                            while let Some((s, t)) = q.front().copied() {
                                if s > seq {
                                    break;
                                }
                                q.pop_front();
                                if s == seq {
                                    at = Some(t);
                                }
                            }
                            at
                        };
                        if let Some(t) = at {
                            {
                                let mut l = shared.leases.lock();
                                let e = l.entry(member.clone()).or_insert(t);
                                *e = (*e).max(t);
                            }
                            if !shared.lease_ok.load(Ordering::SeqCst) {
                                shared.check_lease();
                            }
                        }
                    }
                    Ok(_) | Err(_) => return,
                }
            }
        })
    };
    let mut seq = 0u64;
    let result = loop {
        if reader.is_finished() {
            break Ok(());
        }
        if shared.state.lock().closed || !shared.healthy.load(Ordering::SeqCst) {
            break Ok(());
        }
        seq += 1;
        {
            let mut q = sent.lock();
            if q.len() >= MAX_UNANSWERED {
                break Err(crate::ZkError::Replication(format!(
                    "slave {member} answered none of {MAX_UNANSWERED} heartbeats"
                )));
            }
            q.push_back((seq, boottime()));
        }
        // A heartbeat that cannot be written within a heartbeat interval is late anyway.
        match tokio::time::timeout(
            liveness.lease,
            wire::write_frame(&mut wr, &Frame::Heartbeat { seq }),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => break Err(e.into()),
            Err(_) => {
                break Err(crate::ZkError::Replication(
                    "a heartbeat could not be written in time".into(),
                ))
            }
        }
        tokio::time::sleep(liveness.heartbeat).await;
    };
    reader.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffered_frame_needs_the_whole_frame() {
        let mut b = BytesMut::new();
        Frame::Ack {
            kind: AckKind::Disk,
            pos: Position { epoch: 3, lsn: 7 },
        }
        .encode(&mut b);
        assert!(buffered_frame(&b));
        for cut in 0..b.len() {
            assert!(
                !buffered_frame(&b[..cut]),
                "a prefix of {cut} bytes is not a frame"
            );
        }
    }
}
