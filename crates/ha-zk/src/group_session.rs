//! The task that owns a broker's ZooKeeper session for the replication core ([`crate::proto`]):
//! it feeds the core [`Event::Session`], [`Event::Group`] (read again at every watch) and
//! [`Event::ZkDone`], and runs the core's [`ZkOp`]s through [`GroupNodes`].
//!
//! Like [`GroupNodes`] it decides nothing; what it must get right is *when* it reports:
//! - **`Connected` only after a read answered through the session.** zookeeper-client 0.11
//!   publishes `SyncConnected` as soon as a server answers the connect request, and when that
//!   connection dies before the handshake ends with no other server reachable, the state stays
//!   `SyncConnected` until the session expires (`tests/zk_reconnect.rs`). So a reconnection is
//!   reported together with the group read that proves it, never on the client's word.
//! - **`Disconnected` at once**, even while an operation or a read is waiting: every wait here
//!   races the session's state, so the core stops confirming without delay.
//! - **`Expired` before anything of the next session**, which is opened at once (its
//!   `Connected` and first read follow, in that order).
//! - **Every operation gets exactly one answer:** `Ok`/`Conflict` from ZooKeeper, `Unknown` when
//!   the connection was lost, the session ended, no session exists, or no answer came within
//!   [`OP_TIMEOUT`] (it may still be applied; the next read settles it, as the core expects).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use zookeeper_client::{Acls, Client, SessionState, StateWatcher};

use crate::group_nodes::GroupNodes;
use crate::proto::{Event, MemberId, Session, ZkFail, ZkOp, ZkReq};
use crate::ZkError;

/// How long an operation may wait for ZooKeeper's answer before it is reported `Unknown`.
pub const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a read of the group may wait; a read that does not answer is retried.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause before a failed read is tried again (the state node is unreadable, say).
const READ_RETRY: Duration = Duration::from_millis(500);
/// Bounds of the pause between attempts to open a session (doubling).
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// Operations queued for the task; the core issues a handful at a time.
const OPS_QUEUE: usize = 64;

/// Where and as whom a broker joins its group in ZooKeeper.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// ZooKeeper connect string (`host:port,host:port/chroot`).
    pub zk_address: String,
    /// The session timeout asked for.
    pub session_timeout: Duration,
    /// `ha.zk_password`: digest authentication and creator-only ACLs on the group's nodes.
    pub zk_password: Option<String>,
    /// Parent of every group (`ha.zk_path`).
    pub zk_path: String,
    /// The group (`broker.name`).
    pub group: String,
    /// This broker's member id.
    pub me: MemberId,
    /// Where this broker accepts replication connections (`host:port`), registered in every
    /// session for the others' [`GroupSession::lookup`]; `None` registers nothing.
    pub advertise: Option<String>,
}

/// Opens a ZooKeeper session with the broker's settings; bounded, so that a dead ensemble is
/// an error rather than a wait without end.
pub(crate) async fn connect(
    address: &str,
    session_timeout: Duration,
    password: Option<&str>,
) -> Result<Client, ZkError> {
    let mut c = Client::connector().with_session_timeout(session_timeout);
    if let Some(pw) = password {
        c = c.with_auth("digest", format!("ferromq:{pw}").as_bytes());
    }
    // `connect` itself retries the servers.
    tokio::time::timeout(Duration::from_secs(30), c.connect(address))
        .await
        .map_err(|_| {
            ZkError::Replication(format!(
                "could not connect to ZooKeeper at {address} within 30 s"
            ))
        })?
        .map_err(ZkError::zk(format!("connect {address}")))
}

/// The ACLs of a group's nodes: creator-only when a password is set.
pub(crate) fn acls(password: Option<&str>) -> Acls<'static> {
    if password.is_some() {
        Acls::creator_all()
    } else {
        Acls::anyone_all()
    }
}

/// A running session task. Dropping it stops the task (and closes the session).
#[derive(Debug)]
pub struct GroupSession {
    ops: mpsc::Sender<(ZkReq, ZkOp)>,
    lookups: mpsc::Sender<Lookup>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl GroupSession {
    /// Starts the task; its events go to `events` in the order they happened.
    pub fn spawn(cfg: SessionConfig, events: mpsc::Sender<Event>) -> GroupSession {
        let (ops_tx, ops) = mpsc::channel(OPS_QUEUE);
        let (lookups_tx, lookups) = mpsc::channel(OPS_QUEUE);
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(
            Task {
                cfg,
                events,
                ops,
                lookups,
                stop: stop_rx,
            }
            .run(),
        );
        GroupSession {
            ops: ops_tx,
            lookups: lookups_tx,
            stop,
            task,
        }
    }

    /// Queues an operation; its [`Event::ZkDone`] follows. `false` if the task has ended
    /// (then no answer comes: the driver is shutting down).
    pub async fn submit(&self, req: ZkReq, op: ZkOp) -> bool {
        self.ops.send((req, op)).await.is_ok()
    }

    /// Where `member` accepts replication connections, as registered in ZooKeeper; `None`
    /// when it has no registration, or no answer came (no session, or none within
    /// [`OP_TIMEOUT`]): the caller tries again later.
    pub async fn lookup(&self, member: MemberId) -> Option<String> {
        let (tx, rx) = oneshot::channel();
        self.lookups.send((member, tx)).await.ok()?;
        rx.await.ok().flatten()
    }

    /// A handle for lookups from other tasks.
    pub fn lookups(&self) -> Lookups {
        Lookups(self.lookups.clone())
    }

    /// Stops the task and waits for it; the session closes (its ephemeral nodes go at once).
    pub async fn stop(self) {
        self.stop.send_replace(true);
        let _ = self.task.await;
    }
}

/// Looks members' addresses up through a [`GroupSession`] (cloneable).
#[derive(Debug, Clone)]
pub struct Lookups(mpsc::Sender<Lookup>);

impl Lookups {
    /// See [`GroupSession::lookup`].
    pub async fn lookup(&self, member: MemberId) -> Option<String> {
        let (tx, rx) = oneshot::channel();
        self.0.send((member, tx)).await.ok()?;
        rx.await.ok().flatten()
    }
}

/// How a session ended.
enum End {
    /// The driver asked to stop, or dropped its end of a channel.
    Stop,
    /// The session is gone; open another.
    Expired,
}

type Fired = Pin<Box<dyn Future<Output = ()> + Send>>;
type Lookup = (MemberId, oneshot::Sender<Option<String>>);

struct Task {
    cfg: SessionConfig,
    events: mpsc::Sender<Event>,
    ops: mpsc::Receiver<(ZkReq, ZkOp)>,
    lookups: mpsc::Receiver<Lookup>,
    stop: watch::Receiver<bool>,
}

impl Task {
    async fn run(mut self) {
        let mut pause = RECONNECT_MIN;
        loop {
            let password = self.cfg.zk_password.clone();
            let opened = async {
                let zk = connect(
                    &self.cfg.zk_address,
                    self.cfg.session_timeout,
                    password.as_deref(),
                )
                .await?;
                let nodes = GroupNodes::open(
                    &zk,
                    &self.cfg.zk_path,
                    &self.cfg.group,
                    self.cfg.me,
                    acls(password.as_deref()),
                )
                .await?;
                if let Some(addr) = &self.cfg.advertise {
                    nodes.register(&zk, addr).await?;
                }
                Ok::<_, ZkError>((zk, nodes))
            };
            let mut stop = self.stop.clone();
            let opened = tokio::select! {
                () = stopped(&mut stop) => return,
                o = opened => o,
            };
            match opened {
                Ok((zk, nodes)) => {
                    pause = RECONNECT_MIN;
                    match self.session(&zk, &nodes).await {
                        End::Stop => return,
                        End::Expired => continue,
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?pause, "no ZooKeeper session for the replication group");
                    if !self.refuse_ops_for(pause).await {
                        return;
                    }
                    pause = (pause * 2).min(RECONNECT_MAX);
                }
            }
        }
    }

    /// Without a session, answers every operation `Unknown` for `pause`; `false` to stop.
    async fn refuse_ops_for(&mut self, pause: Duration) -> bool {
        let until = tokio::time::Instant::now() + pause;
        let mut stop = self.stop.clone();
        loop {
            tokio::select! {
                () = stopped(&mut stop) => return false,
                _ = tokio::time::sleep_until(until) => return true,
                l = self.lookups.recv() => match l {
                    None => return false,
                    Some((_, answer)) => {
                        let _ = answer.send(None);
                    }
                },
                op = self.ops.recv() => match op {
                    None => return false,
                    Some((req, _)) => {
                        if !self.emit(Event::ZkDone { req, result: Err(ZkFail::Unknown) }).await {
                            return false;
                        }
                    }
                },
            }
        }
    }

    async fn emit(&self, e: Event) -> bool {
        self.events.send(e).await.is_ok()
    }

    /// One session, from its first read to its end.
    async fn session(&mut self, zk: &Client, nodes: &GroupNodes) -> End {
        let mut states = zk.state_watcher();
        // What the core was last told: `Connected` waits for a read that answered.
        let mut connected = false;
        let mut fired: Option<Fired> = None;
        let mut stop = self.stop.clone();
        loop {
            if fired.is_none() && states.peek_state() == SessionState::SyncConnected {
                match self.read(zk, nodes, &mut states, &mut connected).await {
                    Step::Read(f) => fired = Some(f),
                    Step::Failed => {}
                    Step::End(end) => return end,
                }
            }
            let retry = fired.is_none() && states.peek_state() == SessionState::SyncConnected;
            let watch = async {
                match fired.as_mut() {
                    Some(f) => f.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = stopped(&mut stop) => return End::Stop,
                s = states.changed() => {
                    if let Some(end) = self.on_state(s, &mut connected).await {
                        return end;
                    }
                    if s == SessionState::SyncConnected {
                        // Read again: that read is what reports the session back.
                        fired = None;
                    }
                }
                () = watch => fired = None,
                () = tokio::time::sleep(READ_RETRY), if retry => {}
                l = self.lookups.recv() => {
                    let Some((member, answer)) = l else { return End::Stop };
                    let found = match self.bounded(nodes.lookup(zk, member), OP_TIMEOUT, &mut states, &mut connected).await {
                        Waited::Done(Ok(a)) => a,
                        Waited::Done(Err(e)) => {
                            tracing::debug!(error = %e, member, "looking up a member's address");
                            None
                        }
                        Waited::TimedOut => None,
                        Waited::End(end) => return end,
                    };
                    let _ = answer.send(found);
                }
                op = self.ops.recv() => {
                    let Some((req, op)) = op else { return End::Stop };
                    let result = match self.bounded(nodes.apply(zk, &op), OP_TIMEOUT, &mut states, &mut connected).await {
                        Waited::Done(r) => r,
                        Waited::TimedOut => Err(ZkFail::Unknown),
                        Waited::End(end) => {
                            // The answer is lost with the session: it may have been applied.
                            let _ = self.emit(Event::ZkDone { req, result: Err(ZkFail::Unknown) }).await;
                            return end;
                        }
                    };
                    if !self.emit(Event::ZkDone { req, result }).await {
                        return End::Stop;
                    }
                }
            }
        }
    }

    /// Reads the group with watches; reports `Connected` first if the core thinks otherwise.
    async fn read(
        &self,
        zk: &Client,
        nodes: &GroupNodes,
        states: &mut StateWatcher,
        connected: &mut bool,
    ) -> Step {
        match self
            .bounded(nodes.read(zk), READ_TIMEOUT, states, connected)
            .await
        {
            Waited::Done(Ok(read)) => {
                if !*connected {
                    *connected = true;
                    if !self.emit(Event::Session(Session::Connected)).await {
                        return Step::End(End::Stop);
                    }
                }
                if !self.emit(read.event).await {
                    return Step::End(End::Stop);
                }
                let (sw, lw) = (read.state_watch, read.leader_watch);
                Step::Read(Box::pin(async move {
                    tokio::select! {
                        _ = sw.changed() => {}
                        _ = lw.changed() => {}
                    }
                }))
            }
            Waited::Done(Err(e)) => {
                tracing::warn!(error = %e, "reading the replication group's state");
                Step::Failed
            }
            Waited::TimedOut => Step::Failed,
            Waited::End(end) => Step::End(end),
        }
    }

    /// Waits for `fut` at most `limit`, reporting session changes meanwhile.
    async fn bounded<T>(
        &self,
        fut: impl Future<Output = T>,
        limit: Duration,
        states: &mut StateWatcher,
        connected: &mut bool,
    ) -> Waited<T> {
        let mut fut = std::pin::pin!(fut);
        let deadline = tokio::time::Instant::now() + limit;
        let mut stop = self.stop.clone();
        loop {
            tokio::select! {
                biased;
                () = stopped(&mut stop) => return Waited::End(End::Stop),
                s = states.changed() => {
                    if let Some(end) = self.on_state(s, connected).await {
                        return Waited::End(end);
                    }
                }
                r = &mut fut => return Waited::Done(r),
                _ = tokio::time::sleep_until(deadline) => return Waited::TimedOut,
            }
        }
    }

    /// Reports a session state change; `Some` when the session is over.
    async fn on_state(&self, s: SessionState, connected: &mut bool) -> Option<End> {
        match s {
            SessionState::SyncConnected => None,
            SessionState::Disconnected | SessionState::ConnectedReadOnly => {
                if *connected {
                    *connected = false;
                    tracing::warn!("ZooKeeper connection lost (the session may still be alive)");
                    if !self.emit(Event::Session(Session::Disconnected)).await {
                        return Some(End::Stop);
                    }
                }
                None
            }
            // Expired, Closed, AuthFailed: the session and its ephemeral nodes are gone.
            other => {
                tracing::warn!(state = %other, "ZooKeeper session ended; opening a new one");
                if !self.emit(Event::Session(Session::Expired)).await {
                    return Some(End::Stop);
                }
                Some(End::Expired)
            }
        }
    }
}

/// Resolves when the driver asks to stop or is gone (without holding the channel's lock).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

enum Step {
    Read(Fired),
    Failed,
    End(End),
}

enum Waited<T> {
    Done(T),
    TimedOut,
    End(End),
}
