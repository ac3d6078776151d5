//! Membership and election in ZooKeeper, and the [`Activation`] of `mode = "replicated"`.
//!
//! ```text
//! <zk_path>/<group>/members/m-0000000007   ephemeral sequential: addr, position, weight, round
//! <zk_path>/<group>/epoch                  persistent: the highest epoch ever taken
//! <zk_path>/<group>/replicas               persistent: the group's `replicas`, set by its first broker
//! <zk_path>/<group>/master                 ephemeral: epoch, addr, member of the master
//! <zk_path>/<group>/master_timeout_ms      persistent: the group's fast-failover timeout
//! ```
//!
//! A *round* is the epoch counter's value while there is no master: a member's position counts
//! for an election only when reported for the current round, so nobody is elected on positions
//! reported before the last master died. A report is tagged with the round read *before* the
//! master znode was seen absent, and written only if the epoch znode has not changed since
//! (one ZooKeeper transaction): a position read before a master was elected can never carry
//! that master's round. Fast failover (see [`crate::liveness`]) adds a second way to a round:
//! while the master znode still names epoch `E`, members that *fenced* `E` report with
//! `fenced=E`, and once a quorum of members other than the master did, the most up to date
//! replaces the master znode in the transaction that bumps the epoch. Members are counted by their stable member id (kept in their store,
//! see [`crate::position::member_id`]), not by znode: a broker's lingering znode from an old
//! session and its new one count once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferromq_ha::{Activation, BoxFuture, HaError, Mastership};
use ferromq_store::{Fence, MessageStore};
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::watch;
use zookeeper_client::{Acls, Client, CreateMode, CreateOptions, SessionState};

use crate::liveness::{boottime, Liveness};
use crate::master::{EntryRing, ReplicatingStore};
use crate::position::{
    copy_in_progress, fence_ops, member_id, read_fence, read_position, unfence_ops,
};
use crate::slave::{follow_staged, watch_master, FollowParams};
use crate::staging::CopyStaging;
use crate::wire::Position;
use crate::{ReplicatedConfig, StoreOpener, SyncPolicy, ZkError};

/// The replicated activation: follows the master while slave, returns a [`Mastership`] whose
/// store is the [`ReplicatingStore`] when promoted.
pub struct ZkReplication {
    cfg: ReplicatedConfig,
    opener: StoreOpener,
    /// Where full copies are staged (none: a copy wipes the live store first, marked).
    staging: Option<Arc<dyn CopyStaging>>,
    /// The local store while this broker is a slave (the master's is inside its mastership).
    store: Mutex<Option<Arc<dyn MessageStore>>>,
    /// The entries received as a slave, handed to the master's ring on promotion.
    ring: Mutex<EntryRing>,
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
    /// The highest master epoch this member fenced (fast failover), when it reports as fenced.
    fenced: Option<u64>,
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
        if let Some(f) = self.fenced {
            s.push_str(&format!("fenced={f}\n"));
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
            fenced: num("fenced"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct MasterInfo {
    epoch: u64,
    addr: String,
    member: String,
    /// The master's member id (empty from brokers that did not write it).
    id: String,
}

impl MasterInfo {
    fn encode(&self) -> Vec<u8> {
        format!(
            "epoch={}\naddr={}\nmember={}\nid={}\n",
            self.epoch, self.addr, self.member, self.id
        )
        .into_bytes()
    }

    fn decode(b: &[u8]) -> Option<MasterInfo> {
        let kv = parse_kv(b);
        Some(MasterInfo {
            epoch: kv.get("epoch")?.parse().ok()?,
            addr: kv.get("addr")?.clone(),
            member: kv.get("member")?.clone(),
            id: kv.get("id").cloned().unwrap_or_default(),
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
const FENCED_WAITING: &str = "Fenced the silent master's epoch: waiting for a quorum of members to fence it too (or for its ZooKeeper session to expire).";
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
    epoch_path: String,
    /// The epoch znode's version right after this master's claim: the master znode is deleted
    /// only while it is unchanged (after a fenced takeover the znode is another master's).
    epoch_version: i32,
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
        let epoch_path = self.epoch_path.clone();
        let epoch_version = self.epoch_version;
        let release = async move {
            // Deleting the master znode explicitly (rather than waiting for the session close
            // to reach the server) is what makes a clean hand-over immediate — but only if no
            // other master claimed since (the epoch is still ours).
            let mut tx = zk.new_multi_writer();
            if tx.add_check_version(&epoch_path, epoch_version).is_ok()
                && tx.add_delete(&path, None).is_ok()
            {
                let _ = tokio::time::timeout(Duration::from_secs(1), tx.commit()).await;
            }
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

/// The liveness channel to the master of one epoch (fast failover), reconnected as long as it
/// lives; `heard` is when its last heartbeat arrived (boot time, ns).
struct MasterWatch {
    epoch: u64,
    heard: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl MasterWatch {
    /// Starts watching; the silence counts from now (a master that never answers is silent).
    fn start(params: FollowParams, l: Liveness) -> MasterWatch {
        let heard = Arc::new(AtomicU64::new(boottime().as_nanos() as u64));
        let epoch = params.master_epoch;
        let task = {
            let heard = heard.clone();
            tokio::spawn(async move {
                loop {
                    if let Err(e) = watch_master(&params, &heard, l.timeout).await {
                        tracing::debug!(error = %e, master = %params.addr, "master watch ended");
                    }
                    tokio::time::sleep(l.heartbeat).await;
                }
            })
        };
        MasterWatch { epoch, heard, task }
    }

    /// How long since the last heartbeat (or since watching began).
    fn silent_for(&self) -> Duration {
        silent_since(&self.heard)
    }
}

/// How long since `heard` (boot time, ns).
fn silent_since(heard: &AtomicU64) -> Duration {
    let now = boottime().as_nanos() as u64;
    Duration::from_nanos(now.saturating_sub(heard.load(Ordering::SeqCst)))
}

impl Drop for MasterWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a fenced member works with in one step (see [`ZkReplication::fenced_round`]).
struct FencedRound<'a> {
    zk: &'a Client,
    store: &'a Arc<dyn MessageStore>,
    /// The fenced master, as its znode names it.
    m: &'a MasterInfo,
    master_version: i32,
    round: u64,
    epoch_version: i32,
    my_path: &'a str,
    my_name: &'a str,
    members_path: &'a str,
    master_path: &'a str,
    epoch_path: &'a str,
}

enum FencedStep {
    /// This member took mastership, with this epoch.
    Claimed(u64),
    /// Wait for a change of members or master (or a poll interval).
    Wait,
    /// Loop at once.
    Again,
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
            staging: None,
            store: Mutex::new(None),
            ring: Mutex::new(EntryRing::default()),
        })
    }

    /// Stages full copies in `staging` instead of wiping the live store first.
    pub fn with_staging(mut self, staging: Arc<dyn CopyStaging>) -> ZkReplication {
        self.staging = Some(staging);
        self
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
        crate::group_session::connect(
            &self.cfg.zk_address,
            self.cfg.zk_session_timeout,
            self.cfg.zk_password.as_deref(),
        )
        .await
    }

    fn acls(&self) -> Acls<'static> {
        crate::group_session::acls(self.cfg.zk_password.as_deref())
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
        let mut store = self.local_store()?;
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
        check_group_setting(
            &zk,
            &format!("{base}/replicas"),
            "replicas",
            &cfg.replicas.to_string(),
            &cfg.group,
            &persistent,
        )
        .await?;
        check_group_setting(
            &zk,
            &format!("{base}/master_timeout_ms"),
            "master_timeout_ms",
            &cfg.master_timeout.as_millis().to_string(),
            &cfg.group,
            &persistent,
        )
        .await?;
        let liveness = Liveness::new(cfg.master_timeout, cfg.replicas);
        let mut fence = read_fence(&*store)?;
        let my_id = member_id(&*store).await?;
        let mut me = MemberInfo {
            id: my_id.clone(),
            addr: addr.clone(),
            pos,
            weight: cfg.weight,
            round: None,
            fenced: None,
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
        // Fast failover: the liveness channel to the master of one epoch, kept across
        // reconnects of the stream (its silence is what counts), and when this member fenced.
        let mut watcher: Option<MasterWatch> = None;
        let mut fenced_at: Option<Instant> = None;
        let started = Instant::now();
        // For the admin API's failover history: the epoch of the last master this member saw
        // (it followed or waited on it), when it saw that master's znode gone, and how long the
        // master had been silent when this member fenced it.
        let mut seen_master: Option<u64> = None;
        let mut gone_at: Option<Instant> = None;
        let mut fence_silent: Option<Duration> = None;
        // Bounded per iteration by the waits below; unbounded overall by design: a slave
        // waits as long as it takes. Ends with this member's claim: (epoch, epoch znode
        // version it claimed over, the master epoch it fenced to get there).
        let (epoch, claimed_over, fenced_from) = loop {
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
                Ok((data, stat, w)) => Some((MasterInfo::decode(&data), stat.version, w)),
                Err(zookeeper_client::Error::NoNode) => None,
                Err(e) => return Err(ZkError::zk("read the master znode")(e)),
            };
            if let Some((info, master_version, master_watch)) = master {
                match info {
                    Some(m) if m.member != my_name => {
                        seen_master = Some(m.epoch);
                        gone_at = None;
                        if let Some(l) = liveness {
                            if watcher.as_ref().map(|w| w.epoch) != Some(m.epoch) {
                                watcher =
                                    Some(MasterWatch::start(self.follow_params(&m, &my_id), l));
                            }
                            if fence.is_some_and(|f| f >= m.epoch) {
                                let fenced = FencedRound {
                                    zk: &zk,
                                    store: &store,
                                    m: &m,
                                    master_version,
                                    round,
                                    epoch_version: epoch_stat.version,
                                    my_path: &my_path,
                                    my_name: &my_name,
                                    members_path: &members_path,
                                    master_path: &master_path,
                                    epoch_path: &epoch_path,
                                };
                                let step = self
                                    .fenced_round(
                                        fenced,
                                        &mut me,
                                        pos,
                                        copying,
                                        &mut fence,
                                        &mut fenced_at,
                                        watcher.as_ref(),
                                        l,
                                        &mut said,
                                    )
                                    .await?;
                                match step {
                                    FencedStep::Claimed(epoch) => {
                                        break (epoch, epoch_stat.version, Some(m.epoch));
                                    }
                                    FencedStep::Wait => {
                                        tokio::select! {
                                            _ = members_watch.changed() => {}
                                            _ = master_watch.changed() => {}
                                            _ = tokio::time::sleep(ELECTION_POLL) => {}
                                        }
                                    }
                                    FencedStep::Again => {}
                                }
                                continue;
                            }
                        }
                        said.say("Slave started");
                        me.fenced = None;
                        let silence = watcher.as_ref().zip(liveness);
                        let (p, silent, installed) = self
                            .follow_master(&zk, &store, pos, &m, &my_id, master_watch, silence)
                            .await;
                        pos = p;
                        if installed {
                            // A staged copy replaced the live store (closed): open it afresh.
                            self.store.lock().take();
                            store = self.local_store()?;
                            pos = read_position(&*store)?;
                        }
                        copying = copy_in_progress(&*store).unwrap_or_else(|e| {
                            tracing::warn!(error = %e, "cannot tell whether a copy is unfinished: reporting no position");
                            true
                        });
                        me.pos = pos;
                        me.round = None;
                        if let (Some(silent), Some(l)) = (silent, liveness) {
                            // Stopped following first (nothing more of that epoch is acked),
                            // then the promise is made durable, then reported.
                            store.submit(fence_ops(fence, m.epoch)).await?;
                            fence = Some(m.epoch);
                            fenced_at = Some(Instant::now());
                            fence_silent = Some(silent);
                            tracing::warn!(
                                master_epoch = m.epoch,
                                master = %m.addr,
                                silent_ms = silent.as_millis() as u64,
                                master_timeout_ms = l.timeout.as_millis() as u64,
                                position = %pos,
                                "Master silent past master_timeout_ms: fenced its epoch (never following or acknowledging it again); electing a new master once a quorum of members fenced it"
                            );
                        }
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
            watcher = None;
            if seen_master.is_some() && gone_at.is_none() {
                gone_at = Some(Instant::now());
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
                write_report(&zk, &epoch_path, epoch_stat.version, &my_path, &mut me).await?;
                continue;
            }
            let (members, _) = read_member_data(&zk, &members_path, children)
                .await
                .map_err(ZkError::zk("read a member"))?;
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
                id: my_id.clone(),
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
            break (epoch, epoch_stat.version, None);
        };
        match fenced_from {
            Some(f) => {
                tracing::info!(epoch, position = %pos, fenced_epoch = f, waited_ms = started.elapsed().as_millis() as u64, "Promoted to master")
            }
            None => {
                tracing::info!(epoch, position = %pos, waited_ms = started.elapsed().as_millis() as u64, "Promoted to master")
            }
        }
        let reason = why_elected(epoch, fenced_from, fence_silent, seen_master);
        let since = match fenced_from {
            Some(_) => fenced_at.unwrap_or(started),
            None => gone_at.unwrap_or(started),
        };
        let attempt = self
            .become_master(
                zk,
                store,
                pos,
                epoch,
                // The claim moved the epoch znode one version on.
                claimed_over + 1,
                listener,
                addr,
                master_path,
                members_path,
            )
            .await?;
        Ok(match attempt {
            Attempt::Master(m) => Attempt::Master(m.with_reason(reason).with_takeover_since(since)),
            retry => retry,
        })
    }

    fn follow_params(&self, m: &MasterInfo, my_id: &str) -> FollowParams {
        FollowParams {
            addr: m.addr.clone(),
            master_epoch: m.epoch,
            token: self.cfg.security_token.clone(),
            group: self.cfg.group.clone(),
            member: my_id.to_string(),
            tls: self.cfg.tls.clone(),
        }
    }

    /// One step of a member that fenced the epoch of the master the master znode still names:
    /// report as fenced, claim mastership when a quorum of other members fenced it too and this
    /// member is the most up to date of them, or lift the fence when the master turns out alive
    /// and nobody replaced it.
    #[allow(clippy::too_many_arguments)]
    async fn fenced_round(
        &self,
        f: FencedRound<'_>,
        me: &mut MemberInfo,
        pos: Position,
        copying: bool,
        fence: &mut Option<u64>,
        fenced_at: &mut Option<Instant>,
        watcher: Option<&MasterWatch>,
        l: Liveness,
        said: &mut Said,
    ) -> Result<FencedStep, ZkError> {
        let zk = f.zk;
        let since = *fenced_at.get_or_insert_with(Instant::now);
        // Withdraw: the master answers heartbeats again and was not replaced within a few
        // timeouts (a quorum of the others did not lose it: a blip on this member's side).
        if since.elapsed() >= 4 * l.timeout && watcher.is_some_and(|w| w.silent_for() < l.timeout) {
            me.fenced = None;
            me.round = None;
            // The report changes first (its znode version moves, so no claim can count the
            // old one any more), then the master znode is read: if it still names the fenced
            // epoch, no claim counted this member, and none can now.
            zk.set_data(f.my_path, &me.encode(), None)
                .await
                .map_err(ZkError::zk("withdraw the fenced report"))?;
            match zk.get_data(f.master_path).await {
                Ok((d, _)) if MasterInfo::decode(&d).is_some_and(|x| x.epoch == f.m.epoch) => {
                    f.store.submit(unfence_ops(f.m.epoch)).await?;
                    *fence = read_fence(&**f.store)?;
                    *fenced_at = None;
                    tracing::info!(
                        master_epoch = f.m.epoch,
                        "the fenced master answers heartbeats again and was not replaced: fence lifted, following it"
                    );
                }
                Ok(_) | Err(zookeeper_client::Error::NoNode) => {}
                Err(e) => return Err(ZkError::zk("read the master znode")(e)),
            }
            return Ok(FencedStep::Again);
        }
        if copying {
            said.say(MID_COPY);
            return Ok(FencedStep::Wait);
        }
        said.say(FENCED_WAITING);
        if me.round != Some(f.round) || me.pos != pos || me.fenced != *fence {
            me.round = Some(f.round);
            me.pos = pos;
            me.fenced = *fence;
            write_report(zk, f.epoch_path, f.epoch_version, f.my_path, me).await?;
            return Ok(FencedStep::Again);
        }
        let children = zk
            .list_children(f.members_path)
            .await
            .map_err(ZkError::zk("list members"))?;
        let (members, versions) = read_member_data(zk, f.members_path, children)
            .await
            .map_err(ZkError::zk("read a member"))?;
        let (decision, counted) = decide_fenced(f.round, self.cfg.quorum(), &members, f.m);
        match decision {
            Decision::Elect(best) if best == f.my_name => {}
            _ => return Ok(FencedStep::Wait),
        }
        let epoch = f.round.max(pos.epoch) + 1;
        let info = MasterInfo {
            epoch,
            addr: me.addr.clone(),
            member: f.my_name.to_string(),
            id: me.id.clone(),
        };
        // One transaction: the epoch moves on, the silent master's znode (that exact one) is
        // replaced by this member's, and every counted report is still the one read.
        let mut tx = zk.new_multi_writer();
        tx.add_set_data(
            f.epoch_path,
            epoch.to_string().as_bytes(),
            Some(f.epoch_version),
        )
        .map_err(ZkError::zk("prepare the epoch bump"))?;
        tx.add_delete(f.master_path, Some(f.master_version))
            .map_err(ZkError::zk("prepare the fenced master's removal"))?;
        let eph: CreateOptions<'_> = CreateMode::Ephemeral.with_acls(self.acls());
        tx.add_create(f.master_path, &info.encode(), &eph)
            .map_err(ZkError::zk("prepare the master claim"))?;
        for c in &counted {
            if let Some(v) = versions.get(c) {
                tx.add_check_version(&format!("{}/{c}", f.members_path), *v)
                    .map_err(ZkError::zk("prepare a report check"))?;
            }
        }
        if let Err(e) = tx.commit().await {
            tracing::info!(error = %e, "lost the race for mastership after the fence");
            return Ok(FencedStep::Again);
        }
        Ok(FencedStep::Claimed(epoch))
    }

    /// Follows the master until its znode changes, the connection ends, the session goes, or
    /// (fast failover) the master has been silent for `master_timeout`. Returns the position
    /// durable in the local store afterwards, and how long the master had been silent when
    /// that ended the following.
    #[allow(clippy::too_many_arguments)]
    async fn follow_master(
        &self,
        zk: &Client,
        store: &Arc<dyn MessageStore>,
        pos: Position,
        m: &MasterInfo,
        my_id: &str,
        master_watch: zookeeper_client::OneshotWatcher,
        silence: Option<(&MasterWatch, Liveness)>,
    ) -> (Position, Option<Duration>, bool) {
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let mut states = zk.state_watcher();
        let heard = silence.map(|(w, l)| (w.heard.clone(), l));
        let silent = move || {
            heard.as_ref().and_then(|(h, l)| {
                let d = silent_since(h);
                (d >= l.timeout).then_some(d)
            })
        };
        let poll = silence.map_or(Duration::from_secs(3600), |(_, l)| l.heartbeat / 2);
        let stopper = {
            let silent = silent.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = master_watch.changed() => {}
                    _ = async {
                        for _ in 0..1_000_000 {
                            if session_ends_following(states.changed().await) {
                                return;
                            }
                        }
                    } => {}
                    _ = async {
                        loop {
                            tokio::time::sleep(poll).await;
                            if silent().is_some() {
                                return;
                            }
                        }
                    } => {}
                }
                let _ = stop_tx.send(true);
            })
        };
        let params = self.follow_params(m, my_id);
        if let Some(d) = silent() {
            stopper.abort();
            return (pos, Some(d), false);
        }
        let f = follow_staged(
            store,
            pos,
            &params,
            &mut stop_rx,
            Some(&self.ring),
            self.staging.as_deref(),
        )
        .await;
        let (pos, installed) = (f.pos, f.installed);
        let stopped = *stop_rx.borrow();
        if let Err(e) = f.result {
            tracing::info!(error = %e, master = %m.addr, "stopped following the master");
        }
        if installed && !stopped {
            // Reconnect at once from the installed copy's position.
            stopper.abort();
            return (pos, silent(), true);
        }
        if !stopped {
            // The connection ended while ZooKeeper still names that master (it died and its
            // session has not expired yet): retry shortly, or at once when the znode changes
            // or the master has been silent too long.
            let _ = tokio::time::timeout(Duration::from_millis(200), stop_rx.changed()).await;
        }
        stopper.abort();
        (pos, silent(), installed)
    }

    #[allow(clippy::too_many_arguments)]
    async fn become_master(
        &self,
        zk: Client,
        store: Arc<dyn MessageStore>,
        pos: Position,
        epoch: u64,
        epoch_version: i32,
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
        let kept = rs.seed_ring(std::mem::take(&mut *self.ring.lock()));
        if kept > 0 {
            tracing::info!(
                entries = kept,
                "kept the entries received as a slave: slaves within them catch up by streaming"
            );
        }
        if let Some(l) = Liveness::new(cfg.master_timeout, cfg.replicas) {
            rs.enable_lease(l);
        }
        let server = rs.serve_with(listener, cfg.tls.as_ref());
        let (lost_tx, lost_rx) = watch::channel::<Option<String>>(None);
        let lost_tx = Arc::new(lost_tx);
        let monitor = {
            let zk = zk.clone();
            let rs = rs.clone();
            let lost_tx = lost_tx.clone();
            let quorum = cfg.quorum();
            let grace = cfg.zk_session_timeout;
            let master_path = master_path.clone();
            tokio::spawn(async move {
                let reason = monitor(
                    &zk,
                    &rs,
                    &members_path,
                    &master_path,
                    epoch,
                    quorum,
                    policy,
                    grace,
                )
                .await;
                tracing::error!(%reason, "this master steps down");
                rs.depose(&reason);
                let _ = lost_tx.send(Some(reason));
            })
        };
        let epoch_path = format!("{}/epoch", self.base());
        let guard = Guard {
            zk: Some(zk),
            master_path,
            epoch_path,
            epoch_version,
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
                .with_store(Arc::new(rs.clone()))
                .with_replication(Arc::new(rs))
                .with_serving(serving),
        ))
    }
}

/// Why this member was elected, for the admin API's failover history: from how it claimed
/// (`fenced_from`: the master epoch it fenced), how long that master had been silent when it
/// fenced it, and the last master it saw while competing. The epoch counter starts at 0, so
/// the claim of epoch 1 is the group's first master.
fn why_elected(
    epoch: u64,
    fenced_from: Option<u64>,
    fence_silent: Option<Duration>,
    seen_master: Option<u64>,
) -> String {
    match (fenced_from, fence_silent, seen_master) {
        (Some(f), Some(d), _) => format!(
            "elected through the fence: the master of epoch {f} was silent {} ms",
            d.as_millis()
        ),
        // The fence was already in the local store when this attempt began.
        (Some(f), None, _) => format!("elected through the fence of the master of epoch {f}"),
        (None, _, Some(e)) => format!(
            "elected: the previous master left ZooKeeper (the master of epoch {e}: its session expired, or it stepped down or shut down)"
        ),
        (None, _, None) if epoch == 1 => "elected: first master of the group".into(),
        (None, _, None) => format!(
            "elected: no master in the group when this broker joined (last epoch {})",
            epoch - 1
        ),
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
    let newest = newest_per_member(members);
    if newest.len() < quorum {
        return Decision::NotEnoughMembers;
    }
    let reporters: Vec<(&String, &MemberInfo)> = newest
        .into_iter()
        .filter(|(_, m)| m.round == Some(round))
        .collect();
    if reporters.len() < quorum {
        return Decision::NotReported;
    }
    best_of(reporters)
}

/// The fast-failover rule, while the master znode still names `master`: like [`decide`], but
/// the master itself never counts, and only reports for `round` of members that fenced the
/// master's epoch do. Returns the decision and the znodes it counted (whose versions the
/// claim must check: a member that withdrew its fence meanwhile changed its znode).
fn decide_fenced(
    round: u64,
    quorum: usize,
    members: &[(String, MemberInfo)],
    master: &MasterInfo,
) -> (Decision, Vec<String>) {
    let newest: Vec<(&String, &MemberInfo)> = newest_per_member(members)
        .into_iter()
        .filter(|(n, m)| **n != master.member && (master.id.is_empty() || m.id != master.id))
        .collect();
    if newest.len() < quorum {
        return (Decision::NotEnoughMembers, Vec::new());
    }
    let reporters: Vec<(&String, &MemberInfo)> = newest
        .into_iter()
        .filter(|(_, m)| m.round == Some(round) && m.fenced.is_some_and(|f| f >= master.epoch))
        .collect();
    if reporters.len() < quorum {
        return (Decision::NotReported, Vec::new());
    }
    let counted = reporters.iter().map(|(n, _)| (*n).clone()).collect();
    (best_of(reporters), counted)
}

/// Each member id once, by its newest znode (an older one is a lingering session of the same
/// broker); a member without an id (an older broker) is known by its znode only.
fn newest_per_member(members: &[(String, MemberInfo)]) -> Vec<(&String, &MemberInfo)> {
    let mut newest: HashMap<&str, (&String, &MemberInfo)> = HashMap::new();
    for (name, m) in members {
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
    newest.into_values().collect()
}

/// The highest position wins, then the heaviest, then the oldest znode.
fn best_of(reporters: Vec<(&String, &MemberInfo)>) -> Decision {
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
    Ok(read_member_data(zk, members_path, children).await?.0)
}

/// What the member znodes `children` say, and each one's data version (a znode gone
/// meanwhile is skipped).
async fn read_member_data(
    zk: &Client,
    members_path: &str,
    children: Vec<String>,
) -> Result<(Vec<(String, MemberInfo)>, HashMap<String, i32>), zookeeper_client::Error> {
    let mut members = Vec::with_capacity(children.len());
    let mut versions = HashMap::with_capacity(children.len());
    for c in children {
        match zk.get_data(&format!("{members_path}/{c}")).await {
            Ok((d, st)) => {
                versions.insert(c.clone(), st.version);
                members.push((c, MemberInfo::decode(&d)));
            }
            Err(zookeeper_client::Error::NoNode) => {}
            Err(e) => return Err(e),
        }
    }
    Ok((members, versions))
}

/// Writes this member's report, only while the epoch znode is still at `epoch_version` (one
/// transaction): a position read before a master was claimed never carries that master's
/// round. When the epoch moved, the report is not written and `me.round` is cleared, so the
/// caller's loop sees the new state and reports again.
async fn write_report(
    zk: &Client,
    epoch_path: &str,
    epoch_version: i32,
    my_path: &str,
    me: &mut MemberInfo,
) -> Result<(), ZkError> {
    let mut tx = zk.new_multi_writer();
    tx.add_check_version(epoch_path, epoch_version)
        .map_err(ZkError::zk("prepare the report's epoch check"))?;
    tx.add_set_data(my_path, &me.encode(), None)
        .map_err(ZkError::zk("prepare the report"))?;
    if let Err(e) = tx.commit().await {
        tracing::debug!(error = %e, round = ?me.round, "the epoch moved before the report: not reported");
        me.round = None;
    }
    Ok(())
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

/// Records a group-wide setting at the group's creation, or refuses a broker configured
/// otherwise: brokers that disagree on `replicas` disagree on what a quorum is, and on
/// `master_timeout_ms`, on when a slave may fence a master that still holds its lease.
async fn check_group_setting(
    zk: &Client,
    path: &str,
    name: &str,
    mine: &str,
    group: &str,
    persistent: &CreateOptions<'_>,
) -> Result<(), ZkError> {
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
            "ha.{name} = {mine}, but group {group:?} was created with {name} = {theirs} (recorded in ZooKeeper at {path}); every broker of a group must use the same value (to change it, stop the group and delete that znode)"
        )));
    }
    Ok(())
}

/// How long a master's periodic ZooKeeper reads may wait before its other checks run again.
const MASTER_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// What a master's reads through its ZooKeeper session said.
#[derive(Debug)]
enum SessionCheck {
    /// The session answered, and this broker is still the master with a quorum of members.
    /// The only proof that a session is (again) connected: zookeeper-client 0.11 publishes
    /// `SyncConnected` as soon as a server answers the connect request, and when that
    /// connection dies before the handshake ends and no other server accepts one, the state
    /// stays `SyncConnected` until the session expires — a master that resumed on the state
    /// alone confirmed writes for seconds with the whole ensemble down
    /// (tests/zk_reconnect.rs).
    Answered,
    /// A read failed or is still waiting: no verdict.
    NoAnswer,
    /// This master must step down, for this reason.
    StepDown(String),
}

async fn check_session(
    zk: &Client,
    members_path: &str,
    master_path: &str,
    epoch: u64,
    quorum: usize,
) -> SessionCheck {
    let members_ok = match read_members(zk, members_path).await {
        Ok(m) if distinct_members(&m) < quorum => {
            return SessionCheck::StepDown(NOT_ENOUGH_MEMBERS.to_string())
        }
        Ok(_) => true,
        Err(zookeeper_client::Error::SessionExpired) => {
            return SessionCheck::StepDown("ZooKeeper session expired".into())
        }
        Err(_) => false,
    };
    // Fast failover: a quorum of slaves may have fenced this master and replaced its znode
    // while its session lives (it was paused, or cut off from them).
    match zk.get_data(master_path).await {
        Ok((d, _)) => match MasterInfo::decode(&d) {
            Some(m) if m.epoch != epoch => SessionCheck::StepDown(format!(
                "another master was elected (epoch {}): its slaves fenced this one",
                m.epoch
            )),
            _ if members_ok => SessionCheck::Answered,
            _ => SessionCheck::NoAnswer,
        },
        Err(zookeeper_client::Error::NoNode) => {
            SessionCheck::StepDown("the master znode is gone: another master may be elected".into())
        }
        Err(zookeeper_client::Error::SessionExpired) => {
            SessionCheck::StepDown("ZooKeeper session expired".into())
        }
        Err(_) => SessionCheck::NoAnswer,
    }
}

/// Watches a master's session, its group and its slaves; returns why it must step down.
#[allow(clippy::too_many_arguments)]
async fn monitor(
    zk: &Client,
    rs: &ReplicatingStore,
    members_path: &str,
    master_path: &str,
    epoch: u64,
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
        let session = master_on_session(state);
        match session {
            // Resuming after a disconnect waits for a read answered through the session
            // (below): the client's `SyncConnected` alone is not proof (see `SessionCheck`).
            MasterSession::Serve => {}
            MasterSession::Suspend => {
                // Stop confirming (and, through `serving`, dispatching) at once: the session
                // may be expiring on the server. No step-down on a timer of ours: the end of
                // the session reaches us as `Expired` — from the ensemble, or from the client
                // itself once it could reach no server for 7/5 of the session timeout
                // (zookeeper-client 0.11), which with the whole ensemble down is a step-down
                // after ~1.4 session timeouts.
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
        if session == MasterSession::Serve {
            // The reads race the session state: a ZooKeeper request made just as the
            // connection drops waits for a reconnection (or the session's end), and the
            // suspension must not wait with it. Bounded, so that the slave check below still
            // runs while a request waits.
            let checks = tokio::time::timeout(
                MASTER_CHECK_TIMEOUT,
                check_session(zk, members_path, master_path, epoch, quorum),
            );
            tokio::select! {
                checked = checks => match checked {
                    Ok(SessionCheck::StepDown(why)) => return why,
                    Ok(SessionCheck::Answered) => {
                        if disconnected {
                            disconnected = false;
                            tracing::info!(
                                "ZooKeeper session reconnected (a read through it answered, and this broker is still master): confirming writes again"
                            );
                            rs.set_suspended(false);
                        }
                    }
                    Ok(SessionCheck::NoAnswer) | Err(_) => {}
                },
                _ = states.changed() => continue,
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
            fenced: None,
        }
    }

    fn fenced(id: &str, lsn: u64, round: u64, fenced: u64) -> MemberInfo {
        MemberInfo {
            fenced: Some(fenced),
            ..report(id, lsn, Some(round))
        }
    }

    fn master(epoch: u64) -> MasterInfo {
        MasterInfo {
            epoch,
            addr: "h:9".into(),
            member: "m-0000000001".into(),
            id: "a".into(),
        }
    }

    #[test]
    fn the_election_reason_says_how_the_member_was_elected() {
        assert_eq!(
            why_elected(1, None, None, None),
            "elected: first master of the group"
        );
        assert!(why_elected(5, None, None, None).contains("no master in the group"));
        assert!(why_elected(5, None, None, Some(4)).contains("previous master left ZooKeeper"));
        assert_eq!(
            why_elected(5, Some(4), Some(Duration::from_millis(750)), Some(4)),
            "elected through the fence: the master of epoch 4 was silent 750 ms"
        );
        assert!(why_elected(5, Some(4), None, None).starts_with("elected through the fence"));
    }

    #[test]
    fn a_fenced_election_needs_a_quorum_of_fences_without_the_master() {
        let m = master(4);
        // a is the master (znode m-1); b and c fenced epoch 4 and reported for round 4.
        let members = vec![
            ("m-0000000001".to_string(), report("a", 20, Some(4))),
            ("m-0000000002".to_string(), fenced("b", 9, 4, 4)),
            ("m-0000000003".to_string(), fenced("c", 12, 4, 4)),
        ];
        let (d, counted) = decide_fenced(4, 2, &members, &m);
        assert_eq!(
            d,
            Decision::Elect("m-0000000003".into()),
            "the master never counts"
        );
        assert_eq!(counted.len(), 2);
        // One fence is not a quorum, even with the master's own report beside it.
        let one = vec![
            ("m-0000000001".to_string(), fenced("a", 20, 4, 4)),
            ("m-0000000002".to_string(), fenced("b", 9, 4, 4)),
            ("m-0000000003".to_string(), report("c", 12, Some(4))),
        ];
        assert_eq!(decide_fenced(4, 2, &one, &m).0, Decision::NotReported);
        // The master's lingering second znode (same id) does not count either.
        let twice = vec![
            ("m-0000000001".to_string(), report("a", 20, None)),
            ("m-0000000004".to_string(), fenced("a", 20, 4, 4)),
            ("m-0000000002".to_string(), fenced("b", 9, 4, 4)),
        ];
        assert_eq!(
            decide_fenced(4, 2, &twice, &m).0,
            Decision::NotEnoughMembers
        );
    }

    /// Exhaustive over small groups: whatever the slaves hold (a prefix of the master's log
    /// each), whichever of them fenced, and however far the unfenced ones get afterwards, a
    /// fenced election elects a member holding every write the master could confirm
    /// (`replicas / 2` slave acks, the master's own included in the majority) — quorums
    /// intersect — and the master's own report never counts.
    #[test]
    fn a_fenced_election_never_loses_a_write_the_master_could_confirm() {
        const K: u64 = 3;
        let mut checked = 0u32;
        for replicas in [3usize, 4, 5] {
            let quorum = replicas / 2 + 1;
            let slave_acks = replicas / 2;
            let slaves = replicas - 1;
            let m = master(4);
            // positions[i] in 0..=K for each slave, encoded in base K+1.
            for code in 0..(K + 1).pow(slaves as u32) {
                let pos: Vec<u64> = (0..slaves)
                    .map(|i| code / (K + 1).pow(i as u32) % (K + 1))
                    .collect();
                for fenced_mask in 0u32..(1 << slaves) {
                    let fenced_set: Vec<usize> = (0..slaves)
                        .filter(|i| fenced_mask & (1 << i) != 0)
                        .collect();
                    let mut members = vec![(
                        "m-0000000000".to_string(),
                        // The master's member znode, even claiming a fence and the best position.
                        fenced("a", K + 10, 4, 4),
                    )];
                    for (i, p) in pos.iter().enumerate() {
                        let id = format!("s{i}");
                        let name = format!("m-{:010}", i + 1);
                        let info = if fenced_set.contains(&i) {
                            fenced(&id, *p, 4, 4)
                        } else {
                            report(&id, *p, None)
                        };
                        members.push((name, info));
                    }
                    let mut mm = m.clone();
                    mm.member = "m-0000000000".into();
                    let (d, counted) = decide_fenced(4, quorum, &members, &mm);
                    let Decision::Elect(best) = d else {
                        assert!(
                            fenced_set.len() < quorum,
                            "{replicas} {pos:?} {fenced_set:?}"
                        );
                        continue;
                    };
                    assert!(fenced_set.len() >= quorum && counted.len() >= quorum);
                    let winner = members.iter().find(|(n, _)| *n == best).unwrap();
                    assert_ne!(winner.1.id, "a", "the master's report counted");
                    // The unfenced slaves may have acked up to K since: a write L is confirmed
                    // when `slave_acks` slaves hold it, fenced ones at their frozen position.
                    for l in 1..=K {
                        let holders = (0..slaves)
                            .filter(|i| !fenced_set.contains(i) || pos[*i] >= l)
                            .count();
                        if holders >= slave_acks {
                            assert!(
                                winner.1.pos.lsn >= l,
                                "replicas {replicas}, positions {pos:?}, fenced {fenced_set:?}: \
                                 write {l} confirmable, elected {} at {}",
                                winner.0,
                                winner.1.pos.lsn
                            );
                        }
                    }
                    checked += 1;
                }
            }
        }
        assert!(checked > 500, "{checked}");
    }

    #[test]
    fn an_older_fence_or_another_round_does_not_count() {
        let m = master(4);
        let members = vec![
            ("m-0000000002".to_string(), fenced("b", 9, 4, 3)),
            ("m-0000000003".to_string(), fenced("c", 12, 3, 4)),
            ("m-0000000005".to_string(), fenced("d", 1, 4, 4)),
        ];
        assert_eq!(decide_fenced(4, 2, &members, &m).0, Decision::NotReported);
        // A fenced report is a true position for the normal rule too (the member follows
        // nobody): once the master znode is gone, `decide` may count it.
        assert_eq!(
            decide(4, 2, &members),
            Decision::Elect("m-0000000002".into())
        );
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
            fenced: Some(2),
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
            id: "b-7".into(),
        };
        assert_eq!(MasterInfo::decode(&mi.encode()), Some(mi));
        assert_eq!(
            MasterInfo::decode(b"epoch=1\naddr=h:1\nmember=m-1\n").map(|m| m.id),
            Some(String::new()),
            "a master znode without an id decodes"
        );
        assert_eq!(MasterInfo::decode(b"garbage"), None);
    }

    /// Finding 2 of issue 12, the interleaving on the real ZooKeeper: a member reads the epoch
    /// (round 3, "no master"), then a master claims epoch 4 (bumping the epoch znode and
    /// creating its master znode), then the member writes its report. The report must not
    /// land tagged with a round it did not read before the claim; the member forgets the round
    /// and reads again. Without the epoch version check in `write_report` the stale report is
    /// written (checked by removing it: this test then fails at the first assertion).
    #[tokio::test]
    async fn a_report_read_before_a_master_claim_is_not_written() {
        let zk_address =
            std::env::var("FERROMQ_TEST_ZK").unwrap_or_else(|_| "127.0.0.1:2181".into());
        let zk = Client::connector()
            .with_session_timeout(Duration::from_secs(5))
            .connect(&zk_address)
            .await
            .expect("the ZooKeeper of scripts/services.sh");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let base = format!("/ferromq-test/report-order-{}-{nanos}", std::process::id());
        let persistent = CreateMode::Persistent.with_acls(Acls::anyone_all());
        zk.mkdir(&format!("{base}/members"), &persistent)
            .await
            .unwrap();
        let epoch_path = format!("{base}/epoch");
        zk.create(&epoch_path, b"3", &persistent).await.unwrap();
        let mut me = report("member-a", 42, None);
        let (_, seq) = zk
            .create(
                &format!("{base}/members/m-"),
                &me.encode(),
                &CreateMode::EphemeralSequential.with_acls(Acls::anyone_all()),
            )
            .await
            .unwrap();
        let my_path = format!("{base}/members/m-{seq}");

        // The member's read: epoch 3, no master.
        let (data, stat) = zk.get_data(&epoch_path).await.unwrap();
        assert_eq!(data, b"3");
        // Meanwhile a master claims epoch 4 (what the election's claim transaction does).
        let mut claim = zk.new_multi_writer();
        claim
            .add_set_data(&epoch_path, b"4", Some(stat.version))
            .unwrap();
        claim
            .add_create(
                &format!("{base}/master"),
                b"epoch=4\n",
                &CreateMode::Persistent.with_acls(Acls::anyone_all()),
            )
            .unwrap();
        claim.commit().await.unwrap();

        // The member reports what it read before the claim.
        me.round = Some(3);
        write_report(&zk, &epoch_path, stat.version, &my_path, &mut me)
            .await
            .unwrap();
        let (stored, _) = zk.get_data(&my_path).await.unwrap();
        assert_eq!(
            MemberInfo::decode(&stored).round,
            None,
            "a report tagged with round 3 was written after epoch 4 was claimed"
        );
        assert_eq!(me.round, None, "the member must read the round again");

        // Read afresh, the report goes through with the current round.
        let (_, stat) = zk.get_data(&epoch_path).await.unwrap();
        me.round = Some(4);
        write_report(&zk, &epoch_path, stat.version, &my_path, &mut me)
            .await
            .unwrap();
        let (stored, _) = zk.get_data(&my_path).await.unwrap();
        assert_eq!(MemberInfo::decode(&stored).round, Some(4));
        assert_eq!(MemberInfo::decode(&stored).pos.lsn, 42);
    }
}
