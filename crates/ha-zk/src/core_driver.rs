//! The driver of the replication core ([`crate::proto::Replica`]): one task that owns the
//! core and turns its actions into I/O — ZooKeeper through [`GroupSession`], the local store
//! through [`LogRecords`] — and I/O completions back into events. It decides nothing.
//!
//! Built so far: ZooKeeper, the live store, producers' writes and their confirmations, the
//! role, and the member connections ([`crate::core_transport`], authenticated). **Not yet:**
//! full copies (`Action::SendSnapshot` and the staging writes): a master closes a connection
//! that needs one, and a follower told a copy follows closes its link, so a member that fell
//! out of the master's tail does not rejoin until they exist (`docs/replication.md`, "What
//! remains to wire"). Without a transport ([`Net`]) only one-member groups run.
//!
//! Ordering rules it keeps:
//! - store batches are submitted in the core's order, and `StoreSynced { op }` is reported only
//!   once every batch up to `op` is durable (one task awaits the completions in order);
//! - a failed store write stops the driver: never retried (the durability contract), every
//!   waiting producer is told, and the role falls back to follower for HA to take over;
//! - a producer's write is confirmed only by the core's `Confirm` for its lsn.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferromq_store::{Batch, Completion, MessageStore};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::core_store::{entry_payload, recover, LogRecords};
use crate::core_transport::{self, Identity, NetEvent};
use crate::group_session::{GroupSession, Lookups, SessionConfig};
use crate::proto::{
    Action, Config, ConnId, Event, MemberId, Msg, Refused, Replica, Role, StoreOpId, StoreWrite,
};
use crate::ZkError;

/// How often the core's timers are driven.
const TICK: Duration = Duration::from_millis(10);
/// Producer writes queued for the driver.
const SUBMIT_QUEUE: usize = 1_024;

/// Why a producer's write was not confirmed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// This broker is not the master (or is suspended: ZooKeeper unreachable).
    #[error("not the master")]
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
}

/// A running driver.
#[derive(Debug)]
pub struct CoreDriver {
    submits: mpsc::Sender<(Batch, oneshot::Sender<Result<u64, SubmitError>>)>,
    role: watch::Receiver<Role>,
    serving: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), ZkError>>,
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
        let recovered = recover(&*store)?;
        let records = LogRecords::new(&recovered);
        let clock = tokio::time::Instant::now();
        let replica = Replica::new(core, recovered, 0);
        let (zk_tx, zk_events) = mpsc::channel(1_024);
        let zk = GroupSession::spawn(session, zk_tx);
        let lookups = zk.lookups();
        let (net_tx, net_events) = mpsc::channel(4_096);
        let (identity, listener) = match net {
            Some(Net { listener, identity }) => {
                let task = core_transport::listen(listener, identity.clone(), net_tx.clone());
                (Some(identity), Some(task))
            }
            None => (None, None),
        };
        let (submits, submit_rx) = mpsc::channel(SUBMIT_QUEUE);
        let (role_tx, role) = watch::channel(Role::Follower);
        let (serving_tx, serving) = watch::channel(false);
        let (stop, stop_rx) = watch::channel(false);
        let (synced_tx, synced) = mpsc::unbounded_channel();
        let (sync_queue, sync_rx) = mpsc::unbounded_channel();
        tokio::spawn(await_syncs(sync_rx, synced_tx));
        let task = tokio::spawn(
            Driver {
                replica,
                records,
                store,
                zk,
                zk_events,
                submit_rx,
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
            }
            .run(stop_rx),
        );
        Ok(CoreDriver {
            submits,
            role,
            serving,
            stop,
            task,
        })
    }

    /// Replicates `batch`; resolves with its lsn once the core confirmed it (durable as the
    /// sync mode says).
    pub async fn submit(&self, batch: Batch) -> Result<u64, SubmitError> {
        let (tx, rx) = oneshot::channel();
        self.submits
            .send((batch, tx))
            .await
            .map_err(|_| SubmitError::Stopped("the driver ended".into()))?;
        rx.await
            .map_err(|_| SubmitError::Stopped("the driver ended".into()))?
    }

    /// Whether this member may dispatch to consumers now (`Replica::serving`: master,
    /// connected to ZooKeeper and, with fast takeover, holding its lease), re-checked at every
    /// event and tick.
    pub fn serving(&self) -> watch::Receiver<bool> {
        self.serving.clone()
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

/// Awaits store completions in submission order; reports each durable op, or the first failure.
async fn await_syncs(
    mut queue: mpsc::UnboundedReceiver<(StoreOpId, Completion)>,
    synced: mpsc::UnboundedSender<Result<StoreOpId, String>>,
) {
    while let Some((op, done)) = queue.recv().await {
        let r = done.await.map(|()| op).map_err(|e| e.to_string());
        let failed = r.is_err();
        if synced.send(r).is_err() || failed {
            return;
        }
    }
}

type Waiter = oneshot::Sender<Result<u64, SubmitError>>;

/// The member transport: where this member accepts connections, and who it is.
#[derive(Debug)]
pub struct Net {
    /// Bound to `ha.bind`; its address is what `SessionConfig::advertise` publishes.
    pub listener: tokio::net::TcpListener,
    /// Group, member id and security token.
    pub identity: Identity,
}

/// An open connection.
#[derive(Debug)]
struct Conn {
    writer: mpsc::UnboundedSender<Msg>,
    /// The member an inbound connection's handshake proved (`None`: outbound).
    peer: Option<MemberId>,
}

struct Driver {
    replica: Replica,
    records: LogRecords,
    store: Arc<dyn MessageStore>,
    zk: GroupSession,
    zk_events: mpsc::Receiver<Event>,
    submit_rx: mpsc::Receiver<(Batch, Waiter)>,
    /// Writes the core refused as `Busy`, retried in order after each confirmation.
    waiting: VecDeque<(Bytes, Waiter)>,
    /// Accepted writes by lsn, until the core confirms them.
    confirms: HashMap<u64, Waiter>,
    role: watch::Sender<Role>,
    /// `Replica::serving`: master, connected to ZooKeeper and holding its lease — the switch
    /// for dispatching to consumers.
    serving: watch::Sender<bool>,
    sync_queue: mpsc::UnboundedSender<(StoreOpId, Completion)>,
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
                ev = self.zk_events.recv() => match ev {
                    Some(ev) => {
                        let now = self.now_ms();
                        self.replica.handle(now, ev);
                    }
                    None => break Err(ZkError::Replication("the ZooKeeper session task ended".into())),
                },
                sub = self.submit_rx.recv(), if accepting => match sub {
                    Some((batch, done)) => match entry_payload(&batch) {
                        Ok(payload) => self.offer(payload, done),
                        Err(e) => {
                            let _ = done.send(Err(SubmitError::Invalid(e.to_string())));
                        }
                    },
                    None => break Ok(()),
                },
                _ = ticker.tick() => {
                    let now = self.now_ms();
                    self.replica.handle(now, Event::Tick);
                }
            }
            if let Err(e) = self.act().await {
                break Err(e);
            }
            let serving = self.replica.serving(self.now_ms());
            self.serving
                .send_if_modified(|s| std::mem::replace(s, serving) != serving);
        };
        let why = match &result {
            Ok(()) => "the driver stopped".to_string(),
            Err(e) => e.to_string(),
        };
        for (_, w) in self.waiting.drain(..) {
            let _ = w.send(Err(SubmitError::Stopped(why.clone())));
        }
        for (_, w) in self.confirms.drain() {
            let _ = w.send(Err(SubmitError::Stopped(why.clone())));
        }
        self.role.send_replace(Role::Follower);
        self.serving.send_replace(false);
        if let Some(l) = self.listener.take() {
            l.abort();
        }
        self.conns.clear();
        self.zk.stop().await;
        result
    }

    fn on_net(&mut self, ev: NetEvent) {
        let now = self.now_ms();
        match ev {
            NetEvent::Accepted { conn, peer, writer } => {
                self.conns.insert(
                    conn,
                    Conn {
                        writer,
                        peer: Some(peer),
                    },
                );
                self.replica.handle(now, Event::Accepted { conn });
            }
            NetEvent::Connected { conn, writer } => {
                if self.connecting.remove(&conn) {
                    self.conns.insert(conn, Conn { writer, peer: None });
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

    /// Offers a write to the core; a `Busy` core keeps it waiting (in order).
    fn offer(&mut self, payload: Bytes, done: Waiter) {
        let now = self.now_ms();
        match self.replica.submit(now, payload.clone()) {
            Ok(lsn) => {
                self.confirms.insert(lsn, done);
            }
            Err(Refused::Busy) => self.waiting.push_back((payload, done)),
            Err(Refused::NotMaster) => {
                let _ = done.send(Err(SubmitError::NotMaster));
            }
        }
    }

    /// Carries out every pending action.
    async fn act(&mut self) -> Result<(), ZkError> {
        loop {
            self.replica.poll_actions(&mut self.actions);
            if self.actions.is_empty() {
                return Ok(());
            }
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
                    Err(Refused::NotMaster) => {
                        let _ = done.send(Err(SubmitError::NotMaster));
                    }
                }
            }
        }
    }

    async fn action(&mut self, a: Action) -> Result<(), ZkError> {
        match a {
            Action::Zk { req, op } => {
                if !self.zk.submit(req, op).await {
                    return Err(ZkError::Replication(
                        "the ZooKeeper session task ended".into(),
                    ));
                }
            }
            Action::Store { op, write } => match write {
                StoreWrite::Append(_) | StoreWrite::Truncate { .. } => {
                    let done = match self.records.batch(&write)? {
                        Some(batch) => self.store.submit(batch),
                        None => Completion::ready(Ok(())),
                    };
                    self.sync_queue.send((op, done)).map_err(|_| {
                        ZkError::Replication("the store completion task ended".into())
                    })?;
                }
                StoreWrite::StageBegin => {
                    tracing::warn!(
                        "the master sends a full copy, which this driver cannot take yet: \
                         closing the link (the member stays out of the in-sync set)"
                    );
                    self.close_links();
                }
                // Only after a `StageBegin`, whose link is closed already.
                StoreWrite::Stage(_) | StoreWrite::StageAppend(_) | StoreWrite::Install { .. } => {}
            },
            Action::Confirm { lsn } => {
                if let Some(w) = self.confirms.remove(&lsn) {
                    let _ = w.send(Ok(lsn));
                }
            }
            Action::Role(r) => {
                tracing::info!(role = ?r, "replication role");
                if r == Role::Follower {
                    // Accepted and not confirmed: the next master may or may not hold them.
                    for (_, w) in self.confirms.drain() {
                        let _ = w.send(Err(SubmitError::Unknown));
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
                if let Some(c) = self.conns.get(&conn) {
                    let _ = c.writer.send(msg);
                }
            }
            Action::Close { conn } => {
                self.conns.remove(&conn);
                self.connecting.remove(&conn);
            }
            Action::SendSnapshot { conn, .. } => {
                tracing::warn!(
                    conn,
                    "a follower needs a full copy, which this driver cannot send yet: closing"
                );
                if self.conns.remove(&conn).is_some() {
                    let now = self.now_ms();
                    self.replica.handle(now, Event::Closed { conn });
                }
            }
        }
        Ok(())
    }
}
