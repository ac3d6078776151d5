//! The driver of the replication core ([`crate::proto::Replica`]): one task that owns the
//! core and turns its actions into I/O — ZooKeeper through [`GroupSession`], the local store
//! through [`LogRecords`] — and I/O completions back into events. It decides nothing.
//!
//! It runs ZooKeeper, the live store, producers' writes and their confirmations, the role,
//! the member connections ([`crate::core_transport`], authenticated) and full copies: a
//! master streams one from its store while writers go on (`Action::SendSnapshot`, see
//! [`read_copy`]), a follower stages it beside its live store and installs it atomically
//! ([`Copies`]). Without a transport ([`Net`]) only one-member groups run; without
//! [`Copies`] a follower told that a copy follows closes its link (it stays out of the
//! in-sync set).
//!
//! Ordering rules it keeps:
//! - store batches are submitted in the core's order, and `StoreSynced { op }` is reported only
//!   once every batch up to `op` is durable (one task awaits the completions in order);
//! - a failed store write stops the driver: never retried (the durability contract), every
//!   waiting producer is told, and the role falls back to follower for HA to take over;
//! - a producer's write is confirmed only by the core's `Confirm` for its lsn;
//! - on a connection that is being sent a full copy, the core's later frames are held back
//!   until the copy's `SnapshotEnd` is queued (the core emits them after `SendSnapshot`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferromq_store::{Batch, Completion, MessageStore, Op, StoreError};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::JoinHandle;

use crate::core_store::{
    chunk_batch, chunk_data, entry_payload, install_batch, member_op, recover,
    staged_entries_batch, LogRecords,
};
use crate::core_transport::{self, Identity, NetEvent, Outgoing, Writer};
use crate::group_session::{GroupSession, Lookups, SessionConfig};
use crate::position::{POSITION_LIST, RESERVED_PREFIX};
use crate::proto::{
    Action, Config, ConnId, Event, MasterView, MemberId, Msg, Refused, Replica, Role, StoreOpId,
    StoreWrite,
};
use crate::staging::CopyStaging;
use crate::{StoreOpener, ZkError};

/// How often the core's timers are driven.
const TICK: Duration = Duration::from_millis(10);
/// Producer writes queued for the driver and not yet taken by it: past this, a write is
/// refused at once ([`SubmitError::Backlog`]) — the queue is bounded, and a store's `submit`
/// must not block an async worker.
const SUBMIT_QUEUE: usize = 65_536;
/// A full copy's chunk: store records up to about this many payload bytes.
const COPY_CHUNK_BYTES: usize = 256 * 1024;
/// Chunks of one copy queued and not yet written to the socket: the copy's memory bound
/// (about 4 MiB), and what keeps the read from running ahead of the connection.
const COPY_CHUNKS_IN_FLIGHT: usize = 16;
/// Messages read from a list at a time during a copy.
const COPY_PAGE: usize = 1_024;

/// Why a producer's write was not confirmed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// This broker is not the master (any more).
    #[error("not the master any more: the write is refused")]
    NotMaster,
    /// The write was accepted but the master lost its role before confirming it: it may or may
    /// not survive (the producer must treat it as unknown, like a lost receipt).
    #[error("mastership lost before the write was confirmed; its outcome is unknown")]
    Unknown,
    /// The driver stopped (its store failed, or it was shut down).
    #[error("replication stopped: {0}")]
    Stopped(String),
    /// The batch cannot be replicated (it names a reserved list).
    #[error("{0}")]
    Invalid(String),
    /// Too many writes wait for the replication already (back-pressure).
    #[error("too many writes wait for replication ({0}): refused")]
    Backlog(usize),
}

/// How a member claimed mastership (for the reason a status page shows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimKind {
    /// No leader node: the group is new or the previous master's session ended.
    LeaderGone,
    /// The master was silent for `master_timeout_ms`: its leader node was replaced (fast
    /// takeover).
    Takeover,
}

/// Told the outcome of one write.
pub type Waiter = Box<dyn FnOnce(Result<u64, SubmitError>) + Send>;

/// The write queue into the driver: unbounded as a channel, bounded by its count.
#[derive(Clone)]
struct Submits {
    tx: mpsc::UnboundedSender<(Batch, Waiter)>,
    queued: Arc<std::sync::atomic::AtomicUsize>,
}

impl std::fmt::Debug for Submits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Submits")
            .field("queued", &self.queued.load(Ordering::Relaxed))
            .finish()
    }
}

/// A running driver.
#[derive(Debug)]
pub struct CoreDriver {
    submits: Submits,
    status: watch::Receiver<Option<MasterView>>,
    following: watch::Receiver<Option<(MemberId, u64)>>,
    claims: watch::Receiver<Option<ClaimKind>>,
    role: watch::Receiver<Role>,
    serving: watch::Receiver<bool>,
    store: watch::Receiver<Arc<dyn MessageStore>>,
    stats: Arc<Counters>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), ZkError>>,
    /// Turns true when the driver task has ended.
    ended: watch::Receiver<bool>,
}

/// What a follower needs to receive full copies: a staging store beside the live one, and a
/// way to open the live store again once the copy replaced it.
#[derive(Clone)]
pub struct Copies {
    /// Where a copy is staged, and how it is installed (crash-safe).
    pub staging: Arc<dyn CopyStaging>,
    /// Opens the live store (after an install: the installed copy).
    pub opener: StoreOpener,
}

impl std::fmt::Debug for Copies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Copies").finish_non_exhaustive()
    }
}

/// Full-copy counters, for logs, metrics and tests.
#[derive(Debug, Default)]
struct Counters {
    copies_sent: AtomicU64,
    copy_bytes_sent: AtomicU64,
    copy_overlap_entries: AtomicU64,
    copies_installed: AtomicU64,
}

/// A snapshot of the driver's full-copy counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DriverStats {
    /// Full copies this member streamed to a follower, completely.
    pub copies_sent: u64,
    /// Payload bytes of those copies.
    pub copy_bytes_sent: u64,
    /// Entries written while the copies were read (`consistent_at - last`, summed): how much
    /// the followers had to replay before installing.
    pub copy_overlap_entries: u64,
    /// Full copies this member received and installed in place of its live store.
    pub copies_installed: u64,
}

impl CoreDriver {
    /// Recovers the log from `store` and starts the driver with ZooKeeper per `session`.
    pub fn start(
        core: Config,
        session: SessionConfig,
        store: Arc<dyn MessageStore>,
        net: Option<Net>,
    ) -> Result<CoreDriver, ZkError> {
        if core.replicas != 1 && net.is_none() {
            return Err(ZkError::Config(format!(
                "a group of {} members needs the member transport (a listener and an identity)",
                core.replicas
            )));
        }
        if net
            .as_ref()
            .is_some_and(|n| n.copies.is_none() && core.replicas > 1)
        {
            tracing::warn!(
                "this store cannot stage full copies: if this member falls behind the master's \
                 tail it stays out of the in-sync set"
            );
        }
        let me = core.id;
        let pause_ms = (core.master_timeout_ms / 2).max(100);
        let recovered = recover(&*store)?;
        let records = LogRecords::new(&recovered);
        let clock = tokio::time::Instant::now();
        let replica = Replica::new(core, recovered, 0);
        let (zk_tx, zk_events) = mpsc::channel(1_024);
        let zk = GroupSession::spawn(session, zk_tx);
        let lookups = zk.lookups();
        let (net_tx, net_events) = mpsc::channel(4_096);
        let (identity, listener, copies) = match net {
            Some(Net {
                listener,
                identity,
                copies,
            }) => {
                let task = core_transport::listen(listener, identity.clone(), net_tx.clone());
                (Some(identity), Some(task), copies)
            }
            None => (None, None, None),
        };
        let (store_tx, store_rx) = watch::channel(store.clone());
        let stats = Arc::new(Counters::default());
        let (copy_tx, copy_done) = mpsc::unbounded_channel();
        let (submit_tx, submit_rx) = mpsc::unbounded_channel();
        let submits = Submits {
            tx: submit_tx,
            queued: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        };
        let (status_tx, status) = watch::channel(None);
        let (following_tx, following) = watch::channel(None);
        let (claims_tx, claims) = watch::channel(None);
        let (role_tx, role) = watch::channel(Role::Follower);
        let (serving_tx, serving) = watch::channel(false);
        let (stop, stop_rx) = watch::channel(false);
        let (synced_tx, synced) = mpsc::unbounded_channel();
        let (sync_queue, sync_rx) = mpsc::unbounded_channel();
        tokio::spawn(await_syncs(sync_rx, synced_tx));
        let (ended_tx, ended) = watch::channel(false);
        let driver = Driver {
            replica,
            records,
            store,
            zk,
            zk_events,
            submit_rx,
            queued: submits.queued.clone(),
            status: status_tx,
            following: following_tx,
            claims: claims_tx,
            waiting: VecDeque::new(),
            confirms: HashMap::new(),
            role: role_tx,
            serving: serving_tx,
            sync_queue,
            synced,
            clock,
            actions: Vec::new(),
            identity,
            listener,
            lookups,
            net_tx,
            net_events,
            conns: HashMap::new(),
            connecting: HashSet::new(),
            me,
            zk_connected: false,
            stepped_down: None,
            takeover_req: None,
            last_tick_ms: 0,
            grace_until_ms: 0,
            pause_ms,
            copies,
            staged: None,
            store_tx,
            stats: stats.clone(),
            copy_tx,
            copy_done,
        }
        .run(stop_rx);
        let task = tokio::spawn(async move {
            let r = driver.await;
            ended_tx.send_replace(true);
            r
        });
        Ok(CoreDriver {
            submits,
            status,
            following,
            claims,
            role,
            serving,
            store: store_rx,
            stats,
            stop,
            task,
            ended,
        })
    }

    /// Replicates `batch`; resolves with its lsn once the core confirmed it (durable as the
    /// sync mode says).
    pub async fn submit(&self, batch: Batch) -> Result<u64, SubmitError> {
        let (tx, rx) = oneshot::channel();
        self.submit_with(
            batch,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.await
            .map_err(|_| SubmitError::Stopped("the driver ended".into()))?
    }

    /// Queues `batch` now, without waiting (writes are replicated in the order of these
    /// calls); `done` is told the outcome exactly once. Refused at once with
    /// [`SubmitError::Backlog`] when too many writes wait already.
    pub fn submit_with(&self, batch: Batch, done: Waiter) {
        let q = &self.submits.queued;
        let n = q.fetch_add(1, Ordering::AcqRel);
        if n >= SUBMIT_QUEUE {
            q.fetch_sub(1, Ordering::AcqRel);
            return done(Err(SubmitError::Backlog(n)));
        }
        if let Err(e) = self.submits.tx.send((batch, done)) {
            q.fetch_sub(1, Ordering::AcqRel);
            let (_, done) = e.0;
            done(Err(SubmitError::Stopped("the driver ended".into())));
        }
    }

    /// The master's view of its followers, refreshed at every tick (`None` on a follower).
    pub fn master_view(&self) -> Option<MasterView> {
        self.status.borrow().clone()
    }

    /// The master this member follows with a log that matches it, `(member, epoch)`; `None`
    /// while it is master, has no master, or is still reconciling (a full copy).
    pub fn following(&self) -> watch::Receiver<Option<(MemberId, u64)>> {
        self.following.clone()
    }

    /// How this member last claimed mastership (`None`: it never tried).
    pub fn last_claim(&self) -> Option<ClaimKind> {
        *self.claims.borrow()
    }

    /// Whether the driver ended (stopped, or its store or ZooKeeper task failed).
    pub fn stopped(&self) -> bool {
        *self.ended.borrow()
    }

    /// Stops the driver through a shared handle (other holders — a store facade, a status
    /// page — may still hold it: their later writes fail as stopped) and waits until it
    /// ended (its ZooKeeper session closed).
    pub async fn halt(&self) {
        self.stop.send_replace(true);
        let mut ended = self.ended.clone();
        let _ = ended.wait_for(|e| *e).await;
    }

    /// Whether this member may dispatch to consumers now (`Replica::serving`: master,
    /// connected to ZooKeeper and, with fast takeover, holding its lease), re-checked at every
    /// event and tick.
    pub fn serving(&self) -> watch::Receiver<bool> {
        self.serving.clone()
    }

    /// The live store: the one given at start, until a full copy replaces it.
    pub fn store(&self) -> Arc<dyn MessageStore> {
        self.store.borrow().clone()
    }

    /// The full-copy counters.
    pub fn stats(&self) -> DriverStats {
        let c = &self.stats;
        DriverStats {
            copies_sent: c.copies_sent.load(Ordering::Relaxed),
            copy_bytes_sent: c.copy_bytes_sent.load(Ordering::Relaxed),
            copy_overlap_entries: c.copy_overlap_entries.load(Ordering::Relaxed),
            copies_installed: c.copies_installed.load(Ordering::Relaxed),
        }
    }

    /// The role, as the core last announced it.
    pub fn role(&self) -> watch::Receiver<Role> {
        self.role.clone()
    }

    /// Stops the driver (its ZooKeeper session closes) and returns how it ended.
    pub async fn stop(self) -> Result<(), ZkError> {
        self.stop.send_replace(true);
        self.task
            .await
            .map_err(|e| ZkError::Replication(format!("the driver task failed: {e}")))?
    }
}

/// What the completion task awaits, in order.
enum Pending {
    /// A store write: reported as synced once it and everything before it completed.
    Op(StoreOpId, Completion),
    /// Answered once everything before it completed (never after a failure).
    Barrier(oneshot::Sender<()>),
}

/// Awaits store completions in submission order; reports each durable op, or the first failure.
async fn await_syncs(
    mut queue: mpsc::UnboundedReceiver<Pending>,
    synced: mpsc::UnboundedSender<Result<StoreOpId, String>>,
) {
    while let Some(p) = queue.recv().await {
        match p {
            Pending::Op(op, done) => {
                let r = done.await.map(|()| op).map_err(|e| e.to_string());
                let failed = r.is_err();
                if synced.send(r).is_err() || failed {
                    return;
                }
            }
            Pending::Barrier(tx) => {
                let _ = tx.send(());
            }
        }
    }
}

/// The member transport: where this member accepts connections, and who it is.
#[derive(Debug)]
pub struct Net {
    /// Bound to `ha.bind`; its address is what `SessionConfig::advertise` publishes.
    pub listener: tokio::net::TcpListener,
    /// Group, member id and security token.
    pub identity: Identity,
    /// How this member receives full copies (`None`: it cannot; see [`Copies`]).
    pub copies: Option<Copies>,
}

/// An open connection.
#[derive(Debug)]
struct Conn {
    writer: Writer,
    /// The member an inbound connection's handshake proved (`None`: outbound).
    peer: Option<MemberId>,
    /// A full copy is being read for it: the core's later frames wait here, in order.
    held: Option<Vec<Msg>>,
    /// Dropped with the connection: the copy's reader stops.
    _copy_cancel: Option<watch::Sender<()>>,
}

impl Conn {
    fn new(writer: Writer, peer: Option<MemberId>) -> Conn {
        Conn {
            writer,
            peer,
            held: None,
            _copy_cancel: None,
        }
    }
}

/// A copy's reader ended: the copy's cut, and its payload bytes or why it failed.
type CopyDone = (ConnId, u64, Result<u64, String>);

struct Driver {
    replica: Replica,
    records: LogRecords,
    store: Arc<dyn MessageStore>,
    zk: GroupSession,
    zk_events: mpsc::Receiver<Event>,
    submit_rx: mpsc::UnboundedReceiver<(Batch, Waiter)>,
    queued: Arc<std::sync::atomic::AtomicUsize>,
    status: watch::Sender<Option<MasterView>>,
    following: watch::Sender<Option<(MemberId, u64)>>,
    claims: watch::Sender<Option<ClaimKind>>,
    /// Writes the core refused as `Busy`, retried in order after each confirmation.
    waiting: VecDeque<(Bytes, Waiter)>,
    /// Accepted writes by lsn, until the core confirms them.
    confirms: HashMap<u64, Waiter>,
    role: watch::Sender<Role>,
    /// `Replica::serving`: master, connected to ZooKeeper and holding its lease — the switch
    /// for dispatching to consumers.
    serving: watch::Sender<bool>,
    sync_queue: mpsc::UnboundedSender<Pending>,
    synced: mpsc::UnboundedReceiver<Result<StoreOpId, String>>,
    clock: tokio::time::Instant,
    actions: Vec<Action>,
    identity: Option<Identity>,
    listener: Option<JoinHandle<()>>,
    lookups: Lookups,
    net_tx: mpsc::Sender<NetEvent>,
    net_events: mpsc::Receiver<NetEvent>,
    conns: HashMap<ConnId, Conn>,
    /// Outbound connections asked for and not yet open.
    connecting: HashSet<ConnId>,
    /// This member.
    me: MemberId,
    /// The ZooKeeper session as last reported (for log lines only).
    zk_connected: bool,
    /// The epoch this member was master of until it stepped down, until a group read shows
    /// the next (for log lines only).
    stepped_down: Option<u64>,
    /// The takeover request in flight (for log lines only).
    takeover_req: Option<crate::proto::ZkReq>,
    /// When the last tick ran, and until when ticks wait after a pause (see the ticker).
    last_tick_ms: u64,
    grace_until_ms: u64,
    /// A pause longer than this (the process was stopped, the VM stalled) delays the timers.
    pause_ms: u64,
    copies: Option<Copies>,
    /// The staging store of the copy being received.
    staged: Option<Arc<dyn MessageStore>>,
    store_tx: watch::Sender<Arc<dyn MessageStore>>,
    stats: Arc<Counters>,
    copy_tx: mpsc::UnboundedSender<CopyDone>,
    copy_done: mpsc::UnboundedReceiver<CopyDone>,
}

impl Driver {
    fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    async fn run(mut self, mut stop: watch::Receiver<bool>) -> Result<(), ZkError> {
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let result = loop {
            let accepting = self.waiting.is_empty();
            tokio::select! {
                biased;
                () = crate::group_session::stopped(&mut stop) => break Ok(()),
                s = self.synced.recv() => match s {
                    Some(Ok(op)) => {
                        let now = self.now_ms();
                        self.replica.handle(now, Event::StoreSynced { op });
                    }
                    Some(Err(e)) => break Err(ZkError::Replication(format!(
                        "the local store failed a write ({e}): replication stops (a failed sync is never retried)"
                    ))),
                    None => break Err(ZkError::Replication("the store completion task ended".into())),
                },
                Some(ev) = self.net_events.recv() => self.on_net(ev),
                Some((conn, last, read)) = self.copy_done.recv() => self.copy_read(conn, last, read),
                ev = self.zk_events.recv() => match ev {
                    Some(ev) => {
                        if let Event::ZkDone { req, result } = &ev {
                            if self.takeover_req == Some(*req) {
                                self.takeover_req = None;
                                if result.is_err() {
                                    tracing::info!(
                                        "the takeover was refused (the group changed since: the master is alive or another claimed first): fence lifted, following it"
                                    );
                                }
                            }
                        }
                        if let Event::Session(s) = &ev {
                            self.zk_connected = *s == crate::proto::Session::Connected;
                        }
                        if let Event::Group { state: Some(g), .. } = &ev {
                            let mastered = match self.replica.role() {
                                Role::Master { epoch } => Some(epoch),
                                Role::Follower => self.stepped_down.take(),
                            };
                            match mastered {
                                Some(epoch) if g.epoch > epoch => tracing::warn!(
                                    epoch,
                                    new_epoch = g.epoch,
                                    leader = ?g.leader,
                                    "another master was elected after this one's epoch"
                                ),
                                Some(epoch) if self.replica.role() == Role::Follower => {
                                    self.stepped_down = Some(epoch);
                                }
                                _ => {}
                            }
                        }
                        let now = self.now_ms();
                        self.replica.handle(now, ev);
                    }
                    None => break Err(ZkError::Replication("the ZooKeeper session task ended".into())),
                },
                sub = self.submit_rx.recv(), if accepting => match sub {
                    Some((batch, done)) => {
                        self.queued.fetch_sub(1, Ordering::AcqRel);
                        match entry_payload(&batch) {
                            Ok(payload) => self.offer(payload, done),
                            Err(e) => done(Err(SubmitError::Invalid(e.to_string()))),
                        }
                    }
                    None => break Ok(()),
                },
                _ = ticker.tick() => {
                    let now = self.now_ms();
                    // After a pause (SIGSTOP, a stalled VM) the timers would fire before the
                    // frames queued in the sockets meanwhile are read: a follower would think
                    // a live master silent and take over. The network goes first, briefly.
                    let gap = now.saturating_sub(self.last_tick_ms);
                    self.last_tick_ms = now;
                    if gap > self.pause_ms {
                        tracing::info!(
                            paused_ms = gap,
                            "the replication driver did not run for a while: reading the network before its timers"
                        );
                        self.grace_until_ms = now + 100;
                    }
                    if now >= self.grace_until_ms {
                        self.replica.handle(now, Event::Tick);
                    }
                }
            }
            if let Err(e) = self.act().await {
                break Err(e);
            }
            let serving = self.replica.serving(self.now_ms());
            let was = self
                .serving
                .send_if_modified(|s| std::mem::replace(s, serving) != serving);
            if was && !serving && matches!(self.replica.role(), Role::Master { .. }) {
                if self.zk_connected {
                    tracing::warn!(
                        "heartbeat lease lost: the in-sync members did not answer within master_timeout_ms / 2; confirming and dispatching stop until they do"
                    );
                } else {
                    tracing::warn!(
                        "ZooKeeper connection lost: confirming and dispatching stop until it is back"
                    );
                }
            }
            // The status page's view, fresh after every event (a reader that saw a write's
            // receipt must not read a view older than it).
            let view = self.replica.master_view();
            self.status
                .send_if_modified(|s| std::mem::replace(s, view.clone()) != view);
            let following = self.replica.following();
            self.following
                .send_if_modified(|f| std::mem::replace(f, following) != following);
        };
        let why = match &result {
            Ok(()) => "the driver stopped".to_string(),
            Err(e) => e.to_string(),
        };
        for (_, w) in self.waiting.drain(..) {
            w(Err(SubmitError::Stopped(why.clone())));
        }
        for (_, w) in self.confirms.drain() {
            w(Err(SubmitError::Stopped(why.clone())));
        }
        // Taken and never offered: told too (the channel closes with the driver).
        self.submit_rx.close();
        while let Ok((_, w)) = self.submit_rx.try_recv() {
            w(Err(SubmitError::Stopped(why.clone())));
        }
        self.role.send_replace(Role::Follower);
        self.serving.send_replace(false);
        self.status.send_replace(None);
        self.following.send_replace(None);
        if let Some(l) = self.listener.take() {
            l.abort();
        }
        self.conns.clear();
        if let Some(staged) = self.staged.take() {
            // An unfinished copy: discarded at the next start (no install mark).
            let _ = tokio::task::spawn_blocking(move || staged.close()).await;
        }
        self.zk.stop().await;
        result
    }

    fn on_net(&mut self, ev: NetEvent) {
        let now = self.now_ms();
        match ev {
            NetEvent::Accepted { conn, peer, writer } => {
                self.conns.insert(conn, Conn::new(writer, Some(peer)));
                self.replica.handle(now, Event::Accepted { conn });
            }
            NetEvent::Connected { conn, writer } => {
                if self.connecting.remove(&conn) {
                    self.conns.insert(conn, Conn::new(writer, None));
                    self.replica.handle(now, Event::Connected { conn });
                }
                // Else the core gave up on it meanwhile: dropping the writer closes it.
            }
            NetEvent::Received { conn, msg } => {
                let Some(c) = self.conns.get(&conn) else {
                    return;
                };
                if let (Some(peer), Msg::Hello { member, .. }) = (c.peer, &msg) {
                    if *member != peer {
                        // The handshake proved `peer`: its acks must not count for another.
                        tracing::warn!(peer, member, "a member said Hello as another: closing");
                        self.conns.remove(&conn);
                        self.replica.handle(now, Event::Closed { conn });
                        return;
                    }
                }
                self.replica.handle(now, Event::Received { conn, msg });
            }
            NetEvent::Closed { conn } => {
                let known = self.conns.remove(&conn).is_some() || self.connecting.remove(&conn);
                if known {
                    self.replica.handle(now, Event::Closed { conn });
                }
            }
        }
    }

    /// Closes every outbound connection (a follower's link) and tells the core.
    fn close_links(&mut self) {
        let now = self.now_ms();
        let links: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.peer.is_none())
            .map(|(k, _)| *k)
            .collect();
        for conn in links {
            self.conns.remove(&conn);
            self.replica.handle(now, Event::Closed { conn });
        }
    }

    /// Offers a write to the core; a `Busy` core, or a master whose ZooKeeper connection is
    /// down (suspended: it may get it back within the session), keeps it waiting, in order.
    fn offer(&mut self, payload: Bytes, done: Waiter) {
        let now = self.now_ms();
        match self.replica.submit(now, payload.clone()) {
            Ok(lsn) => {
                self.confirms.insert(lsn, done);
            }
            Err(Refused::Busy) => self.waiting.push_back((payload, done)),
            Err(Refused::NotMaster) if matches!(self.replica.role(), Role::Master { .. }) => {
                self.waiting.push_back((payload, done))
            }
            Err(Refused::NotMaster) => {
                done(Err(SubmitError::NotMaster));
            }
        }
    }

    /// Carries out every pending action.
    async fn act(&mut self) -> Result<(), ZkError> {
        // Writes that wait are retried at every event too: a suspended master's come back
        // with its ZooKeeper connection, which need not produce an action.
        let mut retry = !self.waiting.is_empty();
        loop {
            self.replica.poll_actions(&mut self.actions);
            if self.actions.is_empty() && !retry {
                return Ok(());
            }
            retry = false;
            let actions = std::mem::take(&mut self.actions);
            for a in actions {
                self.action(a).await?;
            }
            // A confirmation freed room: retry the writes the core refused as busy.
            while let Some((payload, done)) = self.waiting.pop_front() {
                let now = self.now_ms();
                match self.replica.submit(now, payload.clone()) {
                    Ok(lsn) => {
                        self.confirms.insert(lsn, done);
                    }
                    Err(Refused::Busy) => {
                        self.waiting.push_front((payload, done));
                        break;
                    }
                    Err(Refused::NotMaster)
                        if matches!(self.replica.role(), Role::Master { .. }) =>
                    {
                        self.waiting.push_front((payload, done));
                        break;
                    }
                    Err(Refused::NotMaster) => {
                        done(Err(SubmitError::NotMaster));
                    }
                }
            }
        }
    }

    async fn action(&mut self, a: Action) -> Result<(), ZkError> {
        match a {
            Action::Zk { req, op } => {
                let kind = match &op {
                    crate::proto::ZkOp::Claim { .. } => Some(ClaimKind::LeaderGone),
                    crate::proto::ZkOp::Takeover { state, .. } => {
                        tracing::info!(
                            fenced_epoch = state.epoch.saturating_sub(1),
                            "the master was silent past master_timeout_ms: claiming over its leader node, which fenced its epoch"
                        );
                        Some(ClaimKind::Takeover)
                    }
                    _ => None,
                };
                if kind.is_some() {
                    self.claims.send_replace(kind);
                }
                if kind == Some(ClaimKind::Takeover) {
                    self.takeover_req = Some(req);
                }
                if !self.zk.submit(req, op).await {
                    return Err(ZkError::Replication(
                        "the ZooKeeper session task ended".into(),
                    ));
                }
            }
            Action::Store { op, write } => self.store_write(op, write).await?,
            Action::Confirm { lsn } => {
                if let Some(w) = self.confirms.remove(&lsn) {
                    w(Ok(lsn));
                }
            }
            Action::Role(r) => {
                tracing::info!(role = ?r, "replication role");
                if let (Role::Master { epoch }, Role::Follower) = (*self.role.borrow(), r) {
                    // Said when the group shows who replaced it.
                    self.stepped_down = Some(epoch);
                }
                if r == Role::Follower {
                    // Accepted and not confirmed: the next master may or may not hold them.
                    for (_, w) in self.confirms.drain() {
                        w(Err(SubmitError::Unknown));
                    }
                    // Never accepted: refused.
                    for (_, w) in self.waiting.drain(..) {
                        w(Err(SubmitError::NotMaster));
                    }
                }
                self.role.send_replace(r);
            }
            Action::Connect { conn, to } => match &self.identity {
                Some(id) => {
                    self.connecting.insert(conn);
                    let (id, lookups, events) =
                        (id.clone(), self.lookups.clone(), self.net_tx.clone());
                    tokio::spawn(async move {
                        let address = lookups.lookup(to).await;
                        core_transport::connect(conn, to, address, id, events);
                    });
                }
                None => {
                    let now = self.now_ms();
                    self.replica.handle(now, Event::Closed { conn });
                }
            },
            Action::Send { conn, msg } => {
                if let (Some(c), Msg::Welcome { start, .. }) = (self.conns.get(&conn), &msg) {
                    let member = c.peer.map(|p| p.to_string()).unwrap_or_default();
                    match start {
                        crate::proto::Start::TruncateAfter(d) => tracing::info!(
                            %member,
                            slave_position = d,
                            "slave connected: streaming from its position"
                        ),
                        crate::proto::Start::Snapshot => tracing::info!(
                            %member,
                            "slave connected: it needs a full copy of the store"
                        ),
                    }
                }
                if let Some(c) = self.conns.get_mut(&conn) {
                    match &mut c.held {
                        Some(held) => held.push(msg),
                        None => {
                            let _ = c.writer.send(msg.into());
                        }
                    }
                }
            }
            Action::Close { conn } => {
                self.conns.remove(&conn);
                self.connecting.remove(&conn);
            }
            Action::SendSnapshot { conn, last } => self.send_copy(conn, last),
        }
        Ok(())
    }

    fn queue_sync(&self, p: Pending) -> Result<(), ZkError> {
        self.sync_queue
            .send(p)
            .map_err(|_| ZkError::Replication("the store completion task ended".into()))
    }

    /// Carries out a store write: the live log's through [`LogRecords`], a full copy's into
    /// the staging store. Each is reported synced in the core's order.
    async fn store_write(&mut self, op: StoreOpId, write: StoreWrite) -> Result<(), ZkError> {
        let done = match write {
            StoreWrite::Append(_) | StoreWrite::Truncate { .. } => {
                match self.records.batch(&write)? {
                    Some(batch) => self.store.submit(batch),
                    None => Completion::ready(Ok(())),
                }
            }
            StoreWrite::StageBegin => {
                let Some(copies) = self.copies.clone() else {
                    tracing::warn!(
                        "the master sends a full copy, which this store cannot stage: closing \
                         the link (the member stays out of the in-sync set)"
                    );
                    self.close_links();
                    return Ok(());
                };
                let old = self.staged.take();
                let staged = tokio::task::spawn_blocking(move || {
                    if let Some(old) = old {
                        // Abandoned by a copy that did not finish; its directory goes next.
                        let _ = old.close();
                    }
                    copies.staging.open_staged()
                })
                .await
                .map_err(|e| ZkError::Replication(format!("the staging task failed: {e}")))?
                .map_err(|e| ZkError::Replication(format!("opening the staging store: {e}")))?;
                tracing::info!(
                    "receiving a full copy of the master's store (staged beside the live store)"
                );
                self.staged = Some(staged);
                Completion::ready(Ok(()))
            }
            // A staged chunk need not be flushed: the install batch, synced, follows it in
            // the same journal, and nothing depends on the staging area before that.
            StoreWrite::Stage(data) => self.staging()?.submit_lazy(chunk_batch(data)?),
            StoreWrite::StageAppend(entries) => {
                let batch = staged_entries_batch(&entries)?;
                self.staging()?.submit_lazy(batch)
            }
            StoreWrite::Install { last, history } => {
                self.install(last, &history).await?;
                Completion::ready(Ok(()))
            }
        };
        self.queue_sync(Pending::Op(op, done))
    }

    fn staging(&self) -> Result<&Arc<dyn MessageStore>, ZkError> {
        self.staged
            .as_ref()
            .ok_or_else(|| ZkError::Replication("a staging write without a staging store".into()))
    }

    /// Installs the staged copy (complete and consistent) as the live store, with the log
    /// records that make it a log ending at `last` with `history`. Any failure stops the
    /// driver: the live store may be closed by then, and the install is crash-safe (the next
    /// start finds the old live store or the whole copy, see [`CopyStaging::install`]).
    async fn install(&mut self, last: u64, history: &[(u64, u64)]) -> Result<(), ZkError> {
        let copies = self
            .copies
            .clone()
            .ok_or_else(|| ZkError::Replication("an install without staging".into()))?;
        let staged = self
            .staged
            .take()
            .ok_or_else(|| ZkError::Replication("an install without a staging store".into()))?;
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            ZkError::Replication(format!("installing a full copy: {what}: {e}"))
        };
        // Durable before anything is swapped: the copy's records and every staged write
        // before them (same journal, written in order).
        // The copy is the master's store: this member's own id record goes with it.
        let mut records = install_batch(last, history)?;
        records.push(member_op(self.me));
        staged
            .submit(records)
            .await
            .map_err(|e| failed("the staging store failed", &e))?;
        // Every earlier write of the live store completed (it is closed next).
        let (tx, rx) = oneshot::channel();
        self.queue_sync(Pending::Barrier(tx))?;
        rx.await.map_err(|_| {
            ZkError::Replication("a live store write failed before an install".into())
        })?;
        let live = self.store.clone();
        let opened = tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
            staged.close()?;
            live.close()?;
            copies.staging.install()?;
            (copies.opener)()
        })
        .await
        .map_err(|e| failed("the install task failed", &e))?
        .map_err(|e| failed("the store", &e))?;
        self.records.installed(last, history)?;
        self.store = opened.clone();
        self.store_tx.send_replace(opened);
        self.stats.copies_installed.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            last,
            "full copy consistent: installed in place of the live store"
        );
        Ok(())
    }

    /// Starts streaming a full copy on `conn` (the core sent its `Welcome` already): the
    /// store is read on a blocking thread while writers go on; the core's later frames for
    /// `conn` are held until the read ended and `SnapshotEnd` is queued ([`Self::copy_read`]).
    fn send_copy(&mut self, conn: ConnId, last: u64) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let (cancel, cancelled) = watch::channel(());
        c.held = Some(Vec::new());
        c._copy_cancel = Some(cancel);
        let writer = c.writer.clone();
        let store = self.store.clone();
        let done = self.copy_tx.clone();
        let rt = tokio::runtime::Handle::current();
        tracing::info!(conn, last, "sending a full copy of the store to a follower");
        tokio::spawn(async move {
            let read = tokio::task::spawn_blocking(move || {
                read_copy(&*store, &writer, &rt, cancelled).map_err(|e| e.to_string())
            })
            .await
            .unwrap_or_else(|e| Err(format!("the copy task failed: {e}")));
            let _ = done.send((conn, last, read));
        });
    }

    /// A copy's read ended: `SnapshotEnd` says where the copy is consistent — the log's end
    /// now, since every batch the read could see was submitted to the store before it ended,
    /// and the driver submits a batch only after the core appended its entries — then the
    /// held frames follow it.
    fn copy_read(&mut self, conn: ConnId, last: u64, read: Result<u64, String>) {
        let now = self.now_ms();
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        match read {
            Ok(bytes) => {
                let consistent_at = self.replica.last().max(last);
                let history: Vec<(u64, u64)> = self
                    .replica
                    .history()
                    .spans()
                    .iter()
                    .copied()
                    .filter(|(_, first)| *first <= last)
                    .collect();
                let _ = c.writer.send(
                    Msg::SnapshotEnd {
                        last,
                        history,
                        consistent_at,
                    }
                    .into(),
                );
                for msg in c.held.take().unwrap_or_default() {
                    let _ = c.writer.send(msg.into());
                }
                c._copy_cancel = None;
                let s = &self.stats;
                s.copies_sent.fetch_add(1, Ordering::Relaxed);
                s.copy_bytes_sent.fetch_add(bytes, Ordering::Relaxed);
                s.copy_overlap_entries
                    .fetch_add(consistent_at - last, Ordering::Relaxed);
                tracing::info!(conn, last, consistent_at, bytes, "full copy sent");
            }
            Err(e) => {
                tracing::warn!(conn, error = %e, "a full copy failed: closing the connection");
                self.conns.remove(&conn);
                self.replica.handle(now, Event::Closed { conn });
            }
        }
    }
}

/// Reads `store` into `SnapshotChunk`s on `writer`, while writers go on: subscriptions, then
/// every list page by page (reserved lists excepted: the copy's log records come with its
/// `SnapshotEnd`). The read is *fuzzy*: it may see any part of the batches written
/// meanwhile, which the follower replays after the cut (every store op is idempotent per
/// key). Each chunk holds a permit of the copy's budget until the connection wrote it, so at
/// most [`COPY_CHUNKS_IN_FLIGHT`] chunks are in memory. Blocking: runs on a blocking thread.
/// Returns the payload bytes sent; stops when `cancelled` (the connection is gone).
fn read_copy(
    store: &dyn MessageStore,
    writer: &Writer,
    rt: &tokio::runtime::Handle,
    mut cancelled: watch::Receiver<()>,
) -> Result<u64, ZkError> {
    let budget = Arc::new(Semaphore::new(COPY_CHUNKS_IN_FLIGHT));
    let gone = || ZkError::Replication("the follower's connection closed during the copy".into());
    let mut sent = 0u64;
    let mut send = |chunk: &mut Batch| -> Result<(), ZkError> {
        let data = chunk_data(chunk)?;
        chunk.clear();
        let permit = rt.block_on(async {
            tokio::select! {
                p = budget.clone().acquire_owned() => p.ok(),
                _ = cancelled.changed() => None,
            }
        });
        let permit = permit.ok_or_else(gone)?;
        sent += data.len() as u64;
        writer
            .send(Outgoing {
                msg: Msg::SnapshotChunk { data },
                budget: Some(permit),
            })
            .map_err(|_| gone())
    };
    // The cut's entries were submitted to the store before the copy began (the core appends
    // before it asks for a copy, and the driver submits in the core's order), but a submitted
    // batch may not be applied yet: a no-op through the store is applied after all of them,
    // so once it completes a read sees at least the cut.
    rt.block_on(store.submit(vec![Op::Dequeue {
        list: POSITION_LIST.into(),
        seq: u64::MAX,
    }]))?;
    let rec = store.recover()?;
    let mut chunk: Batch = rec
        .subscriptions
        .iter()
        .filter(|s| !s.list.starts_with(RESERVED_PREFIX))
        .cloned()
        .map(Op::PutSubscription)
        .collect();
    let mut chunk_bytes = 0usize;
    for l in rec
        .lists
        .iter()
        .filter(|l| !l.list.starts_with(RESERVED_PREFIX))
    {
        let mut after: Option<u64> = None;
        // Bounded: the list's count at the start plus what writers add meanwhile, up to a
        // bound (what the read misses reaches the follower as entries after the cut).
        for _ in 0..=(l.count / COPY_PAGE as u64 + 64) {
            let page = store.load(&l.list, after, COPY_PAGE)?;
            let Some(last) = page.last() else { break };
            after = Some(last.seq);
            for m in page {
                chunk_bytes += m.payload.len() + 64;
                chunk.push(Op::Enqueue {
                    list: l.list.clone(),
                    seq: m.seq,
                    payload: m.payload,
                });
                if chunk_bytes >= COPY_CHUNK_BYTES {
                    send(&mut chunk)?;
                    chunk_bytes = 0;
                }
            }
        }
        chunk.extend(crate::position::max_seq_ops(&l.list, after, l.max_seq));
    }
    if !chunk.is_empty() {
        send(&mut chunk)?;
    }
    Ok(sent)
}
