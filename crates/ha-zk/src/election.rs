//! Membership and election in ZooKeeper, and the [`Activation`] of `mode = "replicated"`.
//!
//! ```text
//! <zk_path>/<group>/members/m-0000000007   ephemeral sequential: addr, position, weight, round
//! <zk_path>/<group>/epoch                  persistent: the highest epoch ever taken
//! <zk_path>/<group>/replicas               persistent: the group's `replicas`, set by its first broker
//! <zk_path>/<group>/master                 ephemeral: epoch, addr, member of the master
//! ```
//!
//! A *round* is the epoch counter's value while there is no master: a member's position counts
//! for an election only when reported for the current round, so nobody is elected on positions
//! reported before the last master died. A report is tagged with the round read *before* the
//! master znode was seen absent, and written only if the epoch znode has not changed since
//! (one ZooKeeper transaction): a position read before a master was elected can never carry
//! that master's round. Members are counted by their stable member id (kept in their store,
//! see [`crate::position::member_id`]), not by znode: a broker's lingering znode from an old
//! session and its new one count once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferromq_ha::{Activation, BoxFuture, HaError, Mastership};
use ferromq_store::{Fence, MessageStore};
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::watch;
use zookeeper_client::{Acls, Client, CreateMode, CreateOptions, SessionState};

use crate::master::ReplicatingStore;
use crate::position::{copy_in_progress, member_id, read_position};
use crate::slave::{follow, FollowParams};
use crate::wire::Position;
use crate::{ReplicatedConfig, StoreOpener, SyncPolicy, ZkError};

/// The replicated activation: follows the master while slave, returns a [`Mastership`] whose
/// store is the [`ReplicatingStore`] when promoted.
pub struct ZkReplication {
    cfg: ReplicatedConfig,
    opener: StoreOpener,
    /// The local store while this broker is a slave (the master's is inside its mastership).
    store: Mutex<Option<Arc<dyn MessageStore>>>,
}

impl std::fmt::Debug for ZkReplication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZkReplication")
            .field("group", &self.cfg.group)
            .field("zk_address", &self.cfg.zk_address)
            .field("zk_path", &self.cfg.zk_path)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
struct MemberInfo {
    /// The broker's stable member id.
    id: String,
    addr: String,
    pos: Position,
    weight: i64,
    /// `None` until the member reported its position for some round.
    round: Option<u64>,
}

impl MemberInfo {
    fn encode(&self) -> Vec<u8> {
        let mut s = format!(
            "id={}\naddr={}\nepoch={}\nlsn={}\nweight={}\n",
            self.id, self.addr, self.pos.epoch, self.pos.lsn, self.weight
        );
        if let Some(r) = self.round {
            s.push_str(&format!("round={r}\n"));
        }
        s.into_bytes()
    }

    fn decode(b: &[u8]) -> MemberInfo {
        let kv = parse_kv(b);
        let num = |k: &str| kv.get(k).and_then(|v| v.parse::<u64>().ok());
        MemberInfo {
            id: kv.get("id").cloned().unwrap_or_default(),
            addr: kv.get("addr").cloned().unwrap_or_default(),
            pos: Position {
                epoch: num("epoch").unwrap_or(0),
                lsn: num("lsn").unwrap_or(0),
            },
            weight: kv.get("weight").and_then(|v| v.parse().ok()).unwrap_or(1),
            round: num("round"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct MasterInfo {
    epoch: u64,
    addr: String,
    member: String,
}

impl MasterInfo {
    fn encode(&self) -> Vec<u8> {
        format!(
            "epoch={}\naddr={}\nmember={}\n",
            self.epoch, self.addr, self.member
        )
        .into_bytes()
    }

    fn decode(b: &[u8]) -> Option<MasterInfo> {
        let kv = parse_kv(b);
        Some(MasterInfo {
            epoch: kv.get("epoch")?.parse().ok()?,
            addr: kv.get("addr")?.clone(),
            member: kv.get("member")?.clone(),
        })
    }
}

fn parse_kv(b: &[u8]) -> HashMap<String, String> {
    String::from_utf8_lossy(b)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Says each waiting state once, not on every loop.
#[derive(Default)]
struct Said(Option<&'static str>);

impl Said {
    fn say(&mut self, line: &'static str) {
        if self.0 != Some(line) {
            self.0 = Some(line);
            tracing::info!("{line}");
        }
    }
}

const NOT_ENOUGH_MEMBERS: &str = "Not enough cluster members connected to elect a master.";
/// How often an election in progress re-reads the members' reports (children watches do not
/// fire on data changes, and this window is what failover time is made of).
const ELECTION_POLL: Duration = Duration::from_millis(50);
const MID_COPY: &str = "This member's store holds an unfinished full copy: it reports no position and cannot be elected until a master completes the copy.";
const NOT_REPORTED: &str = "Not enough cluster members have reported their update positions yet.";

/// The fence of a replicated master: its ZooKeeper session is connected and it was not deposed.
#[derive(Debug)]
struct ZkFence {
    healthy: Arc<AtomicBool>,
}

impl Fence for ZkFence {
    fn check(&self) -> Result<(), String> {
        if self.healthy.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err("this replicated master lost its ZooKeeper session or its quorum".into())
        }
    }
}

/// Keeps a mastership alive; dropping it deposes the store and closes the ZooKeeper session
/// (which deletes the master znode, so a slave takes over at once).
struct Guard {
    zk: Option<Client>,
    master_path: String,
    store: ReplicatingStore,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.store.depose("mastership released");
        for t in &self.tasks {
            t.abort();
        }
        let Some(zk) = self.zk.take() else { return };
        let path = self.master_path.clone();
        let release = async move {
            // Deleting the master znode explicitly (rather than waiting for the session close
            // to reach the server) is what makes a clean hand-over immediate.
            let _ = tokio::time::timeout(Duration::from_secs(1), zk.delete(&path, None)).await;
            drop(zk);
        };
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread {
                tokio::task::block_in_place(|| h.block_on(release));
            } else {
                h.spawn(release);
            }
        }
    }
}

enum Attempt {
    Master(Mastership),
    /// Start over with a new session (the old one expired, or promotion failed).
    Retry(String),
}

impl ZkReplication {
    /// The replicated activation of `cfg`; `opener` opens the local store.
    pub fn new(cfg: ReplicatedConfig, opener: StoreOpener) -> Result<ZkReplication, ZkError> {
        cfg.validate()?;
        Ok(ZkReplication {
            cfg,
            opener,
            store: Mutex::new(None),
        })
    }

    fn local_store(&self) -> Result<Arc<dyn MessageStore>, ZkError> {
        let mut s = self.store.lock();
        if let Some(st) = s.as_ref() {
            return Ok(st.clone());
        }
        let st = (self.opener)()?;
        *s = Some(st.clone());
        Ok(st)
    }

    fn base(&self) -> String {
        let p = self.cfg.zk_path.trim_end_matches('/');
        format!("{p}/{}", self.cfg.group)
    }

    async fn connect(&self) -> Result<Client, ZkError> {
        let mut c = Client::connector().with_session_timeout(self.cfg.zk_session_timeout);
        if let Some(pw) = &self.cfg.zk_password {
            c = c.with_auth("digest", format!("ferromq:{pw}").as_bytes());
        }
        // `connect` itself retries the servers; bound it so a dead ensemble is an error.
        tokio::time::timeout(Duration::from_secs(30), c.connect(&self.cfg.zk_address))
            .await
            .map_err(|_| {
                ZkError::Replication(format!(
                    "could not connect to ZooKeeper at {} within 30 s",
                    self.cfg.zk_address
                ))
            })?
            .map_err(ZkError::zk(format!("connect {}", self.cfg.zk_address)))
    }

    fn acls(&self) -> Acls<'static> {
        if self.cfg.zk_password.is_some() {
            Acls::creator_all()
        } else {
            Acls::anyone_all()
        }
    }

    async fn acquire_inner(&self) -> Result<Mastership, HaError> {
        // Every failure below is retried with a fresh session; only the configuration and the
        // local store can make acquiring fail for good.
        let mut attempts: u64 = 0;
        loop {
            attempts += 1;
            match self.attempt().await {
                Ok(Attempt::Master(m)) => return Ok(m),
                Ok(Attempt::Retry(why)) => {
                    tracing::info!(%why, attempts, "starting the election over");
                }
                Err(ZkError::Config(c)) => return Err(HaError::Config(c)),
                Err(ZkError::Store(e)) => {
                    return Err(HaError::Config(format!("local store: {e}")));
                }
                Err(e) => {
                    tracing::warn!(error = %e, attempts, "replicated election failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    async fn attempt(&self) -> Result<Attempt, ZkError> {
        let cfg = &self.cfg;
        let store = self.local_store()?;
        let mut pos = read_position(&*store)?;
        let mut copying = copy_in_progress(&*store)?;
        let bind = cfg
            .bind
            .strip_prefix("tcp://")
            .unwrap_or(&cfg.bind)
            .to_string();
        let listener = TcpListener::bind(&bind).await.map_err(|e| {
            ZkError::Config(format!("cannot listen for replication on {bind}: {e}"))
        })?;
        let local = listener
            .local_addr()
            .map_err(|e| ZkError::Replication(format!("replication listener: {e}")))?;
        let host = match &cfg.hostname {
            Some(h) if !h.is_empty() => h.clone(),
            _ if local.ip().is_unspecified() => "127.0.0.1".to_string(),
            _ => local.ip().to_string(),
        };
        let addr = format!("{host}:{}", local.port());

        let zk = self.connect().await?;
        let base = self.base();
        let members_path = format!("{base}/members");
        let epoch_path = format!("{base}/epoch");
        let master_path = format!("{base}/master");
        let acls = self.acls();
        let persistent = CreateMode::Persistent.with_acls(acls);
        // The election path and its ancestors are shared (other groups, other passwords):
        // open. Only this group's own znodes carry the password's ACL.
        let parent = cfg.zk_path.trim_end_matches('/');
        if !parent.is_empty() {
            zk.mkdir(
                parent,
                &CreateMode::Persistent.with_acls(Acls::anyone_all()),
            )
            .await
            .map_err(ZkError::zk(format!("mkdir {parent}")))?;
        }
        for p in [&base, &members_path] {
            match zk.create(p, b"", &persistent).await {
                Ok(_) | Err(zookeeper_client::Error::NodeExists) => {}
                Err(e) => return Err(ZkError::zk(format!("create {p}"))(e)),
            }
        }
        match zk.create(&epoch_path, b"0", &persistent).await {
            Ok(_) | Err(zookeeper_client::Error::NodeExists) => {}
            Err(e) => return Err(ZkError::zk(format!("create {epoch_path}"))(e)),
        }
        check_replicas(&zk, &format!("{base}/replicas"), cfg, &persistent).await?;
        let my_id = member_id(&*store).await?;
        let mut me = MemberInfo {
            id: my_id.clone(),
            addr: addr.clone(),
            pos,
            weight: cfg.weight,
            round: None,
        };
        let eph_seq = CreateMode::EphemeralSequential.with_acls(acls);
        let (_, seq) = zk
            .create(&format!("{members_path}/m-"), &me.encode(), &eph_seq)
            .await
            .map_err(ZkError::zk("register the member znode"))?;
        let my_name = format!("m-{seq}");
        let my_path = format!("{members_path}/{my_name}");
        tracing::info!(
            member = %my_name,
            member_id = %my_id,
            replication = %addr,
            position = %pos,
            // The server may have negotiated another timeout (it clamps to 2..20 ticks).
            session_timeout_ms = zk.session_timeout().as_millis() as u64,
            "joined the replication group {} at {}",
            cfg.group,
            cfg.zk_address
        );

        let mut said = Said::default();
        let mut too_many_said = false;
        let started = Instant::now();
        // Bounded per iteration by the waits below; unbounded overall by design: a slave
        // waits as long as it takes.
        loop {
            if matches!(
                zk.state(),
                SessionState::Expired | SessionState::Closed | SessionState::AuthFailed
            ) {
                return Ok(Attempt::Retry(format!("ZooKeeper session {}", zk.state())));
            }
            let (children, _, members_watch) = zk
                .get_and_watch_children(&members_path)
                .await
                .map_err(ZkError::zk("list members"))?;
            // The epoch before the master znode: a round is only ever taken from a read that
            // precedes seeing "no master", so a master claimed in between cannot lend its
            // round to a position read before it existed.
            let (epoch_data, epoch_stat) = zk
                .get_data(&epoch_path)
                .await
                .map_err(ZkError::zk("read the epoch"))?;
            let round: u64 = String::from_utf8_lossy(&epoch_data)
                .trim()
                .parse()
                .map_err(|_| ZkError::Replication(format!("{epoch_path} is not a number")))?;
            let master = match zk.get_and_watch_data(&master_path).await {
                Ok((data, _, w)) => Some((MasterInfo::decode(&data), w)),
                Err(zookeeper_client::Error::NoNode) => None,
                Err(e) => return Err(ZkError::zk("read the master znode")(e)),
            };
            if let Some((info, master_watch)) = master {
                match info {
                    Some(m) if m.member != my_name => {
                        said.say("Slave started");
                        pos = self
                            .follow_master(&zk, &store, pos, &m, &my_id, master_watch)
                            .await;
                        copying = copy_in_progress(&*store).unwrap_or_else(|e| {
                            tracing::warn!(error = %e, "cannot tell whether a copy is unfinished: reporting no position");
                            true
                        });
                        me.pos = pos;
                        me.round = None;
                        continue;
                    }
                    _ => {
                        // Not decodable yet or stale: wait for it to change or vanish.
                        let _ =
                            tokio::time::timeout(Duration::from_secs(1), master_watch.changed())
                                .await;
                        continue;
                    }
                }
            }
            let quorum = cfg.quorum();
            if children.len() > cfg.replicas && !too_many_said {
                too_many_said = true;
                tracing::warn!(
                    "Too many cluster members are connected. Expected at most {} members",
                    cfg.replicas
                );
            }
            if children.len() < quorum {
                said.say(NOT_ENOUGH_MEMBERS);
                let _ = tokio::time::timeout(Duration::from_secs(1), members_watch.changed()).await;
                continue;
            }
            if copying {
                // Part of a copy is no position: this member must neither be elected nor
                // help make up a quorum of reports. It waits for a master to copy from.
                said.say(MID_COPY);
                let _ = tokio::time::timeout(Duration::from_secs(1), members_watch.changed()).await;
                continue;
            }
            if me.round != Some(round) || me.pos != pos {
                me.round = Some(round);
                me.pos = pos;
                // Written only while the epoch is still the one read before "no master": if a
                // master was claimed meanwhile, the report is dropped and the loop follows it.
                let mut tx = zk.new_multi_writer();
                tx.add_check_version(&epoch_path, epoch_stat.version)
                    .map_err(ZkError::zk("prepare the report's epoch check"))?;
                tx.add_set_data(&my_path, &me.encode(), None)
                    .map_err(ZkError::zk("prepare the report"))?;
                if let Err(e) = tx.commit().await {
                    tracing::debug!(error = %e, round, "the epoch moved before the report: not reported");
                    me.round = None;
                }
                continue;
            }
            let mut members = Vec::with_capacity(children.len());
            for c in &children {
                match zk.get_data(&format!("{members_path}/{c}")).await {
                    Ok((d, _)) => members.push((c.clone(), MemberInfo::decode(&d))),
                    Err(zookeeper_client::Error::NoNode) => {}
                    Err(e) => return Err(ZkError::zk("read a member")(e)),
                }
            }
            let best = match decide(round, quorum, &members) {
                Decision::NotEnoughMembers => {
                    said.say(NOT_ENOUGH_MEMBERS);
                    let _ = tokio::time::timeout(ELECTION_POLL, members_watch.changed()).await;
                    continue;
                }
                Decision::NotReported => {
                    said.say(NOT_REPORTED);
                    let _ = tokio::time::timeout(ELECTION_POLL, members_watch.changed()).await;
                    continue;
                }
                Decision::Elect(best) => best,
            };
            if best != my_name {
                tracing::debug!(
                    ?best,
                    "another member is the most up to date; waiting for it"
                );
                let _ = tokio::time::timeout(ELECTION_POLL, members_watch.changed()).await;
                continue;
            }
            let epoch = round.max(pos.epoch) + 1;
            let info = MasterInfo {
                epoch,
                addr: addr.clone(),
                member: my_name.clone(),
            };
            // Epoch bump and master claim in one transaction: either both or neither.
            let mut tx = zk.new_multi_writer();
            tx.add_set_data(
                &epoch_path,
                epoch.to_string().as_bytes(),
                Some(epoch_stat.version),
            )
            .map_err(ZkError::zk("prepare the epoch bump"))?;
            let eph: CreateOptions<'_> = CreateMode::Ephemeral.with_acls(acls);
            tx.add_create(&master_path, &info.encode(), &eph)
                .map_err(ZkError::zk("prepare the master claim"))?;
            if let Err(e) = tx.commit().await {
                tracing::info!(error = %e, "lost the race for mastership");
                continue;
            }
            tracing::info!(epoch, position = %pos, waited_ms = started.elapsed().as_millis() as u64, "Promoted to master");
            return self
                .become_master(
                    zk,
                    store,
                    pos,
                    epoch,
                    listener,
                    addr,
                    master_path,
                    members_path,
                )
                .await;
        }
    }

    /// Follows the master until its znode changes, the connection ends, or the session goes.
    /// Returns the position durable in the local store afterwards.
    async fn follow_master(
        &self,
        zk: &Client,
        store: &Arc<dyn MessageStore>,
        pos: Position,
        m: &MasterInfo,
        my_id: &str,
        master_watch: zookeeper_client::OneshotWatcher,
    ) -> Position {
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let mut states = zk.state_watcher();
        let stopper = tokio::spawn(async move {
            tokio::select! {
                _ = master_watch.changed() => {}
                _ = async {
                    for _ in 0..1_000_000 {
                        if session_ends_following(states.changed().await) {
                            return;
                        }
                    }
                } => {}
            }
            let _ = stop_tx.send(true);
        });
        let params = FollowParams {
            addr: m.addr.clone(),
            master_epoch: m.epoch,
            token: self.cfg.security_token.clone(),
            group: self.cfg.group.clone(),
            member: my_id.to_string(),
        };
        let (pos, result) = follow(store, pos, &params, &mut stop_rx).await;
        let stopped = *stop_rx.borrow();
        if let Err(e) = result {
            tracing::info!(error = %e, master = %m.addr, "stopped following the master");
        }
        if !stopped {
            // The connection ended while ZooKeeper still names that master (it died and its
            // session has not expired yet): retry shortly, or at once when the znode changes.
            let _ = tokio::time::timeout(Duration::from_millis(200), stop_rx.changed()).await;
        }
        stopper.abort();
        pos
    }

    #[allow(clippy::too_many_arguments)]
    async fn become_master(
        &self,
        zk: Client,
        store: Arc<dyn MessageStore>,
        pos: Position,
        epoch: u64,
        listener: TcpListener,
        addr: String,
        master_path: String,
        members_path: String,
    ) -> Result<Attempt, ZkError> {
        let cfg = &self.cfg;
        let policy = SyncPolicy::new(cfg.sync, cfg.replicas);
        let healthy = Arc::new(AtomicBool::new(true));
        let rs = ReplicatingStore::new(
            store.clone(),
            pos,
            epoch,
            policy,
            cfg.group.clone(),
            cfg.security_token.clone(),
            healthy.clone(),
        );
        let server = rs.serve(listener);
        let (lost_tx, lost_rx) = watch::channel::<Option<String>>(None);
        let lost_tx = Arc::new(lost_tx);
        let monitor = {
            let zk = zk.clone();
            let rs = rs.clone();
            let lost_tx = lost_tx.clone();
            let quorum = cfg.quorum();
            let grace = cfg.zk_session_timeout;
            tokio::spawn(async move {
                let reason = monitor(&zk, &rs, &members_path, quorum, policy, grace).await;
                tracing::error!(%reason, "this master steps down");
                rs.depose(&reason);
                let _ = lost_tx.send(Some(reason));
            })
        };
        let guard = Guard {
            zk: Some(zk),
            master_path,
            store: rs.clone(),
            tasks: vec![server, monitor],
        };
        // The first entry of the new epoch: once the sync mode's quorum has it, everything this
        // master inherited is on that quorum too, so a duplicate resend it acknowledges from
        // its dedup cache is really safe.
        let marker = rs.submit_marker();
        tokio::pin!(marker);
        let mut lost = lost_rx.clone();
        let waited = Instant::now();
        let mut next_log = Duration::from_secs(2);
        loop {
            tokio::select! {
                r = &mut marker => match r {
                    Ok(()) => break,
                    Err(e) => return Ok(Attempt::Retry(format!("the new epoch's first entry failed: {e}"))),
                },
                _ = lost.changed() => {
                    let why = lost.borrow().clone().unwrap_or_default();
                    drop(guard);
                    return Ok(Attempt::Retry(format!("lost mastership while starting: {why}")));
                }
                _ = tokio::time::sleep(Duration::from_millis(250)) => {
                    if waited.elapsed() >= next_log {
                        next_log += Duration::from_secs(2);
                        tracing::info!(
                            "Store update waiting on {} replica(s) to catch up to log position {}",
                            policy.slave_acks,
                            pos.lsn + 1
                        );
                    }
                }
            }
        }
        // The store now belongs to the mastership; a later acquire opens the store afresh.
        self.store.lock().take();
        tracing::info!(epoch, "Master started: tcp://{addr}");
        let fence: Arc<dyn Fence> = Arc::new(ZkFence { healthy });
        let serving = rs.serving();
        Ok(Attempt::Master(
            Mastership::new(epoch, Some(fence), lost_rx, Box::new(guard))
                .with_store(Arc::new(rs))
                .with_serving(serving),
        ))
    }
}

/// What a master does in a ZooKeeper session state.
#[derive(Debug, PartialEq)]
enum MasterSession {
    /// Connected: confirm and dispatch.
    Serve,
    /// Disconnected: the session may still be alive (it expires only by the ensemble's
    /// decision); confirm and dispatch nothing until it returns or is declared expired.
    Suspend,
    /// The session is over: another master may be elected.
    StepDown,
}

fn master_on_session(state: SessionState) -> MasterSession {
    match state {
        SessionState::SyncConnected => MasterSession::Serve,
        SessionState::Disconnected | SessionState::ConnectedReadOnly => MasterSession::Suspend,
        _ => MasterSession::StepDown,
    }
}

/// Whether a session state change stops a slave following its master: only the session's end.
/// A disconnect may heal within the session timeout, and a master change made meanwhile still
/// reaches us (the master znode's watch is re-armed on reconnection and fires for changes made
/// while away); dropping the stream on every blip made slaves flap through reconnects.
fn session_ends_following(state: SessionState) -> bool {
    matches!(
        state,
        SessionState::Expired | SessionState::Closed | SessionState::AuthFailed
    )
}

/// What one look at a round's reports allows.
#[derive(Debug, PartialEq)]
enum Decision {
    /// Fewer distinct members than a quorum.
    NotEnoughMembers,
    /// Fewer distinct members than a quorum reported for this round.
    NotReported,
    /// This member (znode name) is the most up to date of a quorum of reports.
    Elect(String),
}

/// The election rule, apart from ZooKeeper: each member id counts once (its newest znode: an
/// older one is a lingering session of the same broker), only reports tagged `round` count,
/// and among a quorum of them the highest position wins, then the heaviest, then the oldest.
fn decide(round: u64, quorum: usize, members: &[(String, MemberInfo)]) -> Decision {
    let mut newest: HashMap<&str, (&String, &MemberInfo)> = HashMap::new();
    for (name, m) in members {
        // A member without an id (an older broker) is known by its znode only.
        let id = if m.id.is_empty() {
            name.as_str()
        } else {
            m.id.as_str()
        };
        match newest.get(id) {
            // Sequential znode names have fixed-width counters: the larger is the newer.
            Some((n, _)) if *n >= name => {}
            _ => {
                newest.insert(id, (name, m));
            }
        }
    }
    if newest.len() < quorum {
        return Decision::NotEnoughMembers;
    }
    let reporters: Vec<(&String, &MemberInfo)> = newest
        .into_values()
        .filter(|(_, m)| m.round == Some(round))
        .collect();
    if reporters.len() < quorum {
        return Decision::NotReported;
    }
    reporters
        .into_iter()
        .max_by(|(an, a), (bn, b)| {
            a.pos
                .cmp(&b.pos)
                .then(a.weight.cmp(&b.weight))
                .then(bn.cmp(an))
        })
        .map_or(Decision::NotReported, |(n, _)| Decision::Elect(n.clone()))
}

/// The group's member znodes and what each says (a znode gone meanwhile is skipped).
async fn read_members(
    zk: &Client,
    members_path: &str,
) -> Result<Vec<(String, MemberInfo)>, zookeeper_client::Error> {
    let children = zk.list_children(members_path).await?;
    let mut members = Vec::with_capacity(children.len());
    for c in children {
        match zk.get_data(&format!("{members_path}/{c}")).await {
            Ok((d, _)) => members.push((c, MemberInfo::decode(&d))),
            Err(zookeeper_client::Error::NoNode) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(members)
}

/// How many brokers the member znodes stand for: a broker whose old session has not expired
/// yet has two znodes with one member id, and must count once (as in [`decide`]).
fn distinct_members(members: &[(String, MemberInfo)]) -> usize {
    members
        .iter()
        .map(|(name, m)| {
            // A member without an id (an older broker) is known by its znode only.
            if m.id.is_empty() {
                name.as_str()
            } else {
                m.id.as_str()
            }
        })
        .collect::<std::collections::HashSet<&str>>()
        .len()
}

/// Records the group's `replicas` at its creation, or refuses a broker configured otherwise:
/// brokers that disagree on it would disagree on what a quorum is.
async fn check_replicas(
    zk: &Client,
    path: &str,
    cfg: &ReplicatedConfig,
    persistent: &CreateOptions<'_>,
) -> Result<(), ZkError> {
    let mine = cfg.replicas.to_string();
    match zk.create(path, mine.as_bytes(), persistent).await {
        Ok(_) => return Ok(()),
        Err(zookeeper_client::Error::NodeExists) => {}
        Err(e) => return Err(ZkError::zk(format!("create {path}"))(e)),
    }
    let (data, _) = zk
        .get_data(path)
        .await
        .map_err(ZkError::zk(format!("read {path}")))?;
    let theirs = String::from_utf8_lossy(&data).trim().to_string();
    if theirs != mine {
        return Err(ZkError::Config(format!(
            "ha.replicas = {mine}, but group {:?} was created with replicas = {theirs} (recorded in ZooKeeper at {path}); every broker of a group must use the same value (to change it, stop the group and delete that znode)",
            cfg.group
        )));
    }
    Ok(())
}

/// Watches a master's session, its group and its slaves; returns why it must step down.
async fn monitor(
    zk: &Client,
    rs: &ReplicatingStore,
    members_path: &str,
    quorum: usize,
    policy: SyncPolicy,
    grace: Duration,
) -> String {
    let mut states = zk.state_watcher();
    let mut short_since: Option<Instant> = None;
    let mut disconnected = false;
    // One iteration per state change or tick; ends only with a verdict.
    loop {
        let state = states.peek_state();
        match master_on_session(state) {
            MasterSession::Serve => {
                if disconnected {
                    disconnected = false;
                    tracing::info!("ZooKeeper session reconnected: confirming writes again");
                    rs.set_suspended(false);
                }
            }
            MasterSession::Suspend => {
                // Stop confirming (and, through `serving`, dispatching) at once: the session
                // may be expiring on the server. No step-down on a timer: the session ends
                // only by the ensemble's decision, which reaches us as `Expired`; with the
                // whole ensemble down nobody else can be elected, and a suspended master
                // harms nothing meanwhile.
                if !disconnected {
                    disconnected = true;
                    tracing::warn!(
                        "ZooKeeper connection lost: confirming and dispatching nothing until it returns"
                    );
                }
                rs.set_suspended(true);
            }
            MasterSession::StepDown => return format!("ZooKeeper session {state}"),
        }
        if let Some(why) = rs.failure() {
            // A master whose store refuses writes serves nothing: let a slave take over.
            return format!("its store failed: {why}");
        }
        if !disconnected {
            match read_members(zk, members_path).await {
                Ok(m) if distinct_members(&m) < quorum => return NOT_ENOUGH_MEMBERS.to_string(),
                Ok(_) => {}
                Err(zookeeper_client::Error::SessionExpired) => {
                    return "ZooKeeper session expired".into()
                }
                Err(_) => {}
            }
        }
        // Checked connected or not: a master cut off from ZooKeeper and from its slaves (a
        // partition) steps down, so its clients fail over, while one that only lost the
        // ensemble (its slaves keep their streams through a ZooKeeper outage) waits.
        if rs.connected_slaves() < policy.slave_acks {
            let since = *short_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= grace {
                return format!(
                    "lost its quorum of slaves: {} connected, {} needed",
                    rs.connected_slaves(),
                    policy.slave_acks
                );
            }
        } else {
            short_since = None;
        }
        tokio::select! {
            _ = states.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

impl Activation for ZkReplication {
    fn mode(&self) -> &'static str {
        "replicated"
    }

    fn acquire(&self) -> BoxFuture<'_, Result<Mastership, HaError>> {
        Box::pin(self.acquire_inner())
    }

    fn shutdown(&self) {
        let store = self.store.lock().take();
        if let Some(store) = store {
            match store.close() {
                Ok(()) => tracing::info!("slave store closed"),
                Err(e) => tracing::warn!(error = %e, "the slave's store did not close cleanly"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(id: &str, lsn: u64, round: Option<u64>) -> MemberInfo {
        MemberInfo {
            id: id.into(),
            addr: "h:1".into(),
            pos: Position { epoch: 1, lsn },
            weight: 1,
            round,
        }
    }

    #[test]
    fn a_zookeeper_disconnect_alone_does_not_end_following() {
        // A disconnect may heal within the session: the stream stays. A master change still
        // ends it (the master znode's watch), and so does the end of the session.
        assert!(!session_ends_following(SessionState::Disconnected));
        assert!(!session_ends_following(SessionState::SyncConnected));
        assert!(!session_ends_following(SessionState::ConnectedReadOnly));
        assert!(session_ends_following(SessionState::Expired));
        assert!(session_ends_following(SessionState::Closed));
        assert!(session_ends_following(SessionState::AuthFailed));
    }

    #[test]
    fn a_disconnected_master_stays_suspended_and_steps_down_only_when_the_session_ends() {
        assert_eq!(
            master_on_session(SessionState::SyncConnected),
            MasterSession::Serve
        );
        assert_eq!(
            master_on_session(SessionState::Disconnected),
            MasterSession::Suspend
        );
        assert_eq!(
            master_on_session(SessionState::ConnectedReadOnly),
            MasterSession::Suspend
        );
        assert_eq!(
            master_on_session(SessionState::Expired),
            MasterSession::StepDown
        );
        assert_eq!(
            master_on_session(SessionState::Closed),
            MasterSession::StepDown
        );
        assert_eq!(
            master_on_session(SessionState::AuthFailed),
            MasterSession::StepDown
        );
    }

    #[test]
    fn a_master_counts_brokers_not_znodes_for_its_quorum_of_members() {
        // The master's step-down check: broker b's lingering znode must not make up a quorum.
        let members = vec![
            ("m-0000000001".to_string(), report("b", 9, None)),
            ("m-0000000003".to_string(), report("b", 9, None)),
        ];
        assert_eq!(distinct_members(&members), 1);
        let mut with_old = members.clone();
        with_old.push(("m-0000000002".to_string(), report("", 5, None)));
        assert_eq!(
            distinct_members(&with_old),
            2,
            "an id-less member counts by znode"
        );
    }

    #[test]
    fn a_broker_with_two_znodes_counts_once() {
        // Broker b's znode from a session that has not expired yet, and its new one.
        let members = vec![
            ("m-0000000001".to_string(), report("b", 9, Some(4))),
            ("m-0000000003".to_string(), report("b", 9, Some(4))),
        ];
        assert_eq!(decide(4, 2, &members), Decision::NotEnoughMembers);
        let mut with_c = members.clone();
        with_c.push(("m-0000000002".to_string(), report("c", 5, Some(4))));
        assert_eq!(
            decide(4, 2, &with_c),
            Decision::Elect("m-0000000003".into()),
            "the newest znode of the most up-to-date broker"
        );
    }

    #[test]
    fn only_the_newest_znodes_report_for_the_round_counts() {
        // b's old znode reported round 4; its new one has not reported yet: b is not counted
        // on the old session's word.
        let members = vec![
            ("m-0000000001".to_string(), report("b", 9, Some(4))),
            ("m-0000000003".to_string(), report("b", 9, None)),
            ("m-0000000002".to_string(), report("c", 5, Some(4))),
        ];
        assert_eq!(decide(4, 2, &members), Decision::NotReported);
        // A report of another round never counts.
        let stale = vec![
            ("m-0000000001".to_string(), report("b", 9, Some(3))),
            ("m-0000000002".to_string(), report("c", 5, Some(4))),
        ];
        assert_eq!(decide(4, 2, &stale), Decision::NotReported);
    }

    #[test]
    fn member_and_master_data_round_trip() {
        let m = MemberInfo {
            id: "b-1".into(),
            addr: "127.0.0.1:1".into(),
            pos: Position { epoch: 2, lsn: 9 },
            weight: 5,
            round: Some(3),
        };
        assert_eq!(MemberInfo::decode(&m.encode()), m);
        let unreported = MemberInfo {
            round: None,
            ..m.clone()
        };
        assert_eq!(MemberInfo::decode(&unreported.encode()).round, None);
        let mi = MasterInfo {
            epoch: 4,
            addr: "h:2".into(),
            member: "m-0000000001".into(),
        };
        assert_eq!(MasterInfo::decode(&mi.encode()), Some(mi));
        assert_eq!(MasterInfo::decode(b"garbage"), None);
    }
}
