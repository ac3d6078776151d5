//! `ha.mode = "replicated"` run by the replication core ([`crate::proto::Replica`]) through its
//! driver ([`CoreDriver`]): the broker's [`Activation`].
//!
//! - [`CoreReplication::acquire`] starts the driver (once: it keeps running while the broker
//!   is a follower, applying the master's entries and full copies to the local store) and
//!   waits until the core announces mastership.
//! - The [`Mastership`] it returns carries the store the broker serves from — [`DriverStore`],
//!   a [`MessageStore`] whose writes go through the driver (confirmed when the core confirms
//!   them: durable on the quorum the sync mode names) and whose reads go to the live local
//!   store — the core's `serving` watch (dispatch stops when the master may be deposed), and a
//!   `lost` watch that fires when the core leaves the role.
//! - Dropping the mastership (after the broker closed its connectors) stops the driver: its
//!   ZooKeeper session closes, so an in-sync follower claims at once, and the local store is
//!   closed (checkpointed). The next `acquire` starts a new driver on the store as it is.
//!
//! Members are named by a number: `ha.broker_id` when set, else one allocated once from
//! ZooKeeper (`<zk_path>/<group>/ids`, persistent sequential) and kept in the local store
//! ([`crate::core_store::MEMBER_LIST`]; a full copy carries the receiver's own id over).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferromq_ha::{
    Activation, BoxFuture, HaError, Mastership, Replication, ReplicationStatus, SlaveReplication,
};
use ferromq_store::{Batch, Completion, MessageStore, Recovery, StoreError, StoredMessage};
use tokio::sync::watch;
use zookeeper_client::CreateMode;

use crate::core_driver::{ClaimKind, Copies, CoreDriver, Net, SubmitError};
use crate::core_store::{member_op, read_member};
use crate::core_transport::Identity;
use crate::group_session::{self, SessionConfig};
use crate::proto::{Config, MemberId, Role};
use crate::staging::CopyStaging;
use crate::{ReplicatedConfig, StoreOpener, ZkError};

/// The replicated mode on the replication core.
pub struct CoreReplication {
    cfg: ReplicatedConfig,
    broker_id: MemberId,
    opener: StoreOpener,
    staging: Option<Arc<dyn CopyStaging>>,
    running: parking_lot::Mutex<Option<Arc<CoreDriver>>>,
    /// When this member last saw its master gone (or started without one): where a takeover
    /// is measured from.
    master_gone_at: Arc<parking_lot::Mutex<Instant>>,
    /// Held by the task that stops a driver after a mastership ended, until it is stopped:
    /// the next driver opens the store only after the previous one closed it.
    stopping: Arc<tokio::sync::Mutex<()>>,
    restarts: std::sync::atomic::AtomicU64,
    /// The replication address this member publishes.
    advertised: parking_lot::Mutex<String>,
}

impl std::fmt::Debug for CoreReplication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreReplication")
            .field("group", &self.cfg.group)
            .field("broker_id", &self.broker_id)
            .finish_non_exhaustive()
    }
}

impl CoreReplication {
    /// The replicated mode for `cfg`; `broker_id` 0 = allocated from ZooKeeper at the first
    /// start and kept in the store. `opener` opens the local store (again after a full copy
    /// replaced it); `staging` receives full copies (without it a member that fell out of the
    /// master's tail stays out of the in-sync set).
    pub fn new(
        cfg: ReplicatedConfig,
        broker_id: MemberId,
        opener: StoreOpener,
        staging: Option<Arc<dyn CopyStaging>>,
    ) -> Result<CoreReplication, ZkError> {
        cfg.validate()?;
        if cfg.replicas > 255 {
            return Err(ZkError::Config("replicas must be at most 255".into()));
        }
        Ok(CoreReplication {
            cfg,
            broker_id,
            opener,
            staging,
            running: parking_lot::Mutex::new(None),
            master_gone_at: Arc::new(parking_lot::Mutex::new(Instant::now())),
            stopping: Arc::new(tokio::sync::Mutex::new(())),
            restarts: std::sync::atomic::AtomicU64::new(0),
            advertised: parking_lot::Mutex::new(String::new()),
        })
    }

    fn zk_password(&self) -> Option<&str> {
        self.cfg.zk_password.as_deref()
    }

    /// This member's id: configured, recorded in the store, or allocated now (and recorded
    /// durably before it is used).
    async fn member_id(&self, store: &Arc<dyn MessageStore>) -> Result<MemberId, ZkError> {
        let recorded = read_member(&**store)?;
        let id = match (self.broker_id, recorded) {
            (0, Some(id)) => return Ok(id),
            (0, None) => self.allocate_id().await?,
            (id, Some(r)) if r == id => return Ok(id),
            (id, Some(r)) => {
                tracing::warn!(
                    configured = id,
                    recorded = r,
                    "ha.broker_id differs from the id recorded in the store: the configured one is used (the other members see a new member)"
                );
                id
            }
            (id, None) => id,
        };
        store.submit(vec![member_op(id)]).await?;
        Ok(id)
    }

    async fn allocate_id(&self) -> Result<MemberId, ZkError> {
        let zk = group_session::connect(
            &self.cfg.zk_address,
            self.cfg.zk_session_timeout,
            self.zk_password(),
        )
        .await?;
        let acls = group_session::acls(self.zk_password());
        let parent = self.cfg.zk_path.trim_end_matches('/');
        if !parent.is_empty() {
            zk.mkdir(
                parent,
                &CreateMode::Persistent.with_acls(zookeeper_client::Acls::anyone_all()),
            )
            .await
            .map_err(ZkError::zk(format!("mkdir {parent}")))?;
        }
        let base = format!("{parent}/{}", self.cfg.group);
        let ids = format!("{base}/ids");
        for p in [&base, &ids] {
            match zk
                .create(p, b"", &CreateMode::Persistent.with_acls(acls))
                .await
            {
                Ok(_) | Err(zookeeper_client::Error::NodeExists) => {}
                Err(e) => return Err(ZkError::zk(format!("create {p}"))(e)),
            }
        }
        let (_, seq) = zk
            .create(
                &format!("{ids}/id-"),
                b"",
                &CreateMode::PersistentSequential.with_acls(acls),
            )
            .await
            .map_err(ZkError::zk("allocate a member id"))?;
        let id = MemberId::try_from(seq.into_i64() + 1)
            .map_err(|_| ZkError::Replication(format!("member id {seq} out of range")))?;
        tracing::info!(
            member_id = id,
            "allocated this broker's replication member id"
        );
        Ok(id)
    }

    /// The running driver, started if there is none.
    async fn driver(&self) -> Result<Arc<CoreDriver>, ZkError> {
        if let Some(d) = self.running.lock().clone() {
            if !d.stopped() {
                return Ok(d);
            }
        }
        // The previous driver's store must be closed before it is opened again.
        let _stopped = self.stopping.lock().await;
        let opener = self.opener.clone();
        let store = tokio::task::spawn_blocking(move || opener())
            .await
            .map_err(|e| ZkError::Replication(format!("opening the store: {e}")))??;
        let me = self.member_id(&store).await?;
        let log = crate::core_store::recover(&*store)?;
        let position = crate::wire::Position {
            epoch: log.history.epoch_at(log.last),
            lsn: log.last,
        };
        let bind = self
            .cfg
            .bind
            .strip_prefix("tcp://")
            .unwrap_or(&self.cfg.bind)
            .to_string();
        let listener = tokio::net::TcpListener::bind(&bind).await.map_err(|e| {
            ZkError::Config(format!("cannot listen for replication on {bind}: {e}"))
        })?;
        let local = listener
            .local_addr()
            .map_err(|e| ZkError::Replication(format!("replication listener: {e}")))?;
        let host = match &self.cfg.hostname {
            Some(h) if !h.is_empty() => h.clone(),
            _ if local.ip().is_unspecified() => "127.0.0.1".to_string(),
            _ => local.ip().to_string(),
        };
        let advertise = format!("{host}:{}", local.port());
        *self.advertised.lock() = advertise.clone();
        let session = SessionConfig {
            zk_address: self.cfg.zk_address.clone(),
            session_timeout: self.cfg.zk_session_timeout,
            zk_password: self.cfg.zk_password.clone(),
            zk_path: self.cfg.zk_path.clone(),
            group: self.cfg.group.clone(),
            me,
            advertise: Some(advertise.clone()),
        };
        let copies = self.staging.clone().map(|staging| Copies {
            staging,
            opener: self.opener.clone(),
        });
        let net = Net {
            listener,
            identity: Identity {
                group: self.cfg.group.clone(),
                me,
                token: self.cfg.security_token.clone(),
                tls: self.cfg.tls.clone(),
            },
            copies,
        };
        // Distinct per start of this process (connection ids carry it).
        let incarnation = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
            + self
                .restarts
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut core = Config::new(me, incarnation, self.cfg.replicas as u32, self.cfg.sync);
        core.master_timeout_ms = self.cfg.master_timeout.as_millis() as u64;
        if core.master_timeout_ms > 0 {
            // Followers declare a silent master gone after `master_timeout`; the link to it is
            // considered dead well before, so that they reconnect in time.
            core.link_timeout_ms = core.link_timeout_ms.min(core.master_timeout_ms * 2);
        }
        let driver = Arc::new(CoreDriver::start(core, session, store, Some(net))?);
        tracing::info!(
            member_id = me,
            replication = %advertise,
            %position,
            replicas = self.cfg.replicas,
            sync = ?self.cfg.sync,
            "joined the replication group {} at {}",
            self.cfg.group,
            self.cfg.zk_address
        );
        *self.master_gone_at.lock() = Instant::now();
        tokio::spawn(narrate(
            driver.following(),
            driver.role(),
            self.master_gone_at.clone(),
        ));
        *self.running.lock() = Some(driver.clone());
        Ok(driver)
    }

    async fn acquire_inner(&self) -> Result<Mastership, HaError> {
        let driver = self.driver().await.map_err(|e| match e {
            ZkError::Config(c) => HaError::Config(c),
            other => HaError::Config(other.to_string()),
        })?;
        let mut role = driver.role();
        let mut said_short = false;
        // Master once the core claimed the role with an in-sync set large enough to confirm
        // writes (ActiveMQ opens no client port before a quorum is connected either).
        let epoch = loop {
            if let Role::Master { epoch } = *role.borrow_and_update() {
                match driver.master_view() {
                    // ...and serving: its lease holds (the members that could claim answered
                    // its pings), so a new master does not start suspended.
                    Some(v)
                        if v.epoch == epoch
                            && v.isr.len() > v.durability.followers
                            && *driver.serving().borrow() =>
                    {
                        break epoch
                    }
                    Some(v)
                        if v.epoch == epoch
                            && v.isr.len() <= v.durability.followers
                            && !said_short =>
                    {
                        said_short = true;
                        tracing::info!(
                            epoch,
                            in_sync = ?v.isr,
                            needed = v.durability.followers + 1,
                            "Not enough cluster members connected to elect a master."
                        );
                    }
                    _ => {}
                }
            }
            let changed = tokio::time::timeout(Duration::from_millis(20), role.changed()).await;
            if matches!(changed, Ok(Err(_))) || driver.stopped() {
                *self.running.lock() = None;
                return Err(HaError::Config(
                    "the replication driver stopped (its local store failed, see the log)".into(),
                ));
            }
        };
        let waiting_since = *self.master_gone_at.lock();
        // The position it was promoted at: the last entry it inherited (its own epoch starts
        // with a marker after it).
        let view = driver.master_view();
        let position = view
            .as_ref()
            .map(|v| v.inherited.to_string())
            .unwrap_or_default();
        if let Some(v) = view.as_ref().filter(|v| v.tail_from <= v.inherited.lsn) {
            // Followers that held them catch up from here instead of taking a full copy.
            tracing::info!(
                from = v.tail_from,
                to = v.inherited.lsn,
                "kept the entries received as a slave (in memory): followers catch up from them"
            );
        }
        match driver.last_claim() {
            Some(ClaimKind::Takeover) if epoch > 1 => tracing::info!(
                epoch,
                fenced_epoch = epoch - 1,
                %position,
                "Promoted to master"
            ),
            _ => tracing::info!(epoch, %position, "Promoted to master"),
        }
        tracing::info!(epoch, "Master started: tcp://{}", self.advertised.lock());
        let (lost_tx, lost) = watch::channel(None);
        let patience = self.cfg.zk_session_timeout;
        let watcher = tokio::spawn({
            let mut role = driver.role();
            let driver = driver.clone();
            async move {
                // Since when the in-sync followers connected are too few to confirm a write.
                let mut short_since: Option<Instant> = None;
                loop {
                    let now = *role.borrow_and_update();
                    if now != (Role::Master { epoch }) {
                        let _ = lost_tx.send(Some(format!(
                            "the master of epoch {epoch} steps down (deposed, or its ZooKeeper session or store failed)"
                        )));
                        return;
                    }
                    // A master that cannot confirm anything for a session timeout steps down
                    // (ActiveMQ's replicated store does too): its clients fail over, and once
                    // enough members are back one of the in-sync set is elected.
                    let short = driver.master_view().is_some_and(|v| {
                        let in_sync = v
                            .followers
                            .iter()
                            .filter(|f| f.connected && v.isr.contains(&f.member))
                            .count();
                        in_sync < v.durability.followers
                    });
                    short_since = match (short, short_since) {
                        (false, _) => None,
                        (true, None) => Some(Instant::now()),
                        (true, Some(t)) if t.elapsed() >= patience => {
                            tracing::warn!(
                                epoch,
                                "Not enough cluster members connected to elect a master."
                            );
                            let _ = lost_tx.send(Some(format!(
                                "the master of epoch {epoch} steps down: too few in-sync members connected to confirm writes for {} ms",
                                patience.as_millis()
                            )));
                            return;
                        }
                        (true, t) => t,
                    };
                    if let Ok(Err(_)) =
                        tokio::time::timeout(Duration::from_millis(50), role.changed()).await
                    {
                        let _ = lost_tx.send(Some("the replication driver stopped".into()));
                        return;
                    }
                }
            }
        });
        let guard = Guard {
            driver: Some(driver.clone()),
            stopping: self.stopping.clone(),
            watcher,
        };
        // This mastership's driver is stopped with it: a later acquire starts another.
        *self.running.lock() = None;
        let store = Arc::new(DriverStore {
            driver: driver.clone(),
            limbo: Arc::default(),
            kind: driver.store().kind(),
            closed: std::sync::atomic::AtomicBool::new(false),
        });
        Ok(
            Mastership::new(epoch, None, lost, Box::new(guard) as Box<dyn Send + Sync>)
                .with_reason(match (epoch, driver.last_claim()) {
                    (1, _) => "elected: first master of the group".to_string(),
                    (_, Some(ClaimKind::Takeover)) => format!(
                        "elected through the fence: the master of epoch {} was silent {} ms",
                        epoch - 1,
                        self.cfg.master_timeout.as_millis()
                    ),
                    _ => "elected: the previous master left ZooKeeper (its session ended); this member was in the in-sync set".to_string(),
                })
                .with_takeover_since(waiting_since)
                .with_serving(driver.serving())
                .with_replication(Arc::new(Status { driver }))
                .with_store(store),
        )
    }
}

/// Logs what a follower does, in the words ActiveMQ's replicated store uses, and notes when
/// the master was lost (the start of a takeover).
async fn narrate(
    mut following: watch::Receiver<Option<(MemberId, u64)>>,
    role: watch::Receiver<Role>,
    gone_at: Arc<parking_lot::Mutex<Instant>>,
) {
    let mut was: Option<(MemberId, u64)> = None;
    loop {
        let now = *following.borrow_and_update();
        match (was, now) {
            (_, Some((m, e))) if was != now => tracing::info!(
                master = m,
                epoch = e,
                "Slave started: replicating from the master (member {m}, epoch {e})"
            ),
            (Some((m, e)), None) => {
                *gone_at.lock() = Instant::now();
                if matches!(*role.borrow(), Role::Follower) {
                    tracing::info!(
                        master = m,
                        epoch = e,
                        "stopped following the master (member {m}, epoch {e})"
                    );
                }
            }
            _ => {}
        }
        was = now;
        if following.changed().await.is_err() {
            return;
        }
    }
}

/// Stops a mastership's driver when the mastership is dropped.
struct Guard {
    driver: Option<Arc<CoreDriver>>,
    stopping: Arc<tokio::sync::Mutex<()>>,
    watcher: tokio::task::JoinHandle<()>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.watcher.abort();
        let Some(driver) = self.driver.take() else {
            return;
        };
        // Taken now, not in the task below: the next `acquire` must not open the store
        // before this driver closed it (two writers on one journal).
        let held = self.stopping.clone().try_lock_owned();
        let stopping = self.stopping.clone();
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let stop = async move {
            let _held = match held {
                Ok(h) => h,
                Err(_) => stopping.lock_owned().await,
            };
            stop_driver(driver).await;
        };
        if rt.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread {
            // Done before the broker goes on (or exits, after SIGTERM): the session closes at
            // once, so a follower claims without waiting, and the store is checkpointed.
            tokio::task::block_in_place(|| rt.block_on(stop));
        } else {
            rt.spawn(stop);
        }
    }
}

/// Stops `driver` (its session closes; other holders' later writes fail as stopped) and
/// closes its live store.
async fn stop_driver(driver: Arc<CoreDriver>) {
    let store = driver.store();
    driver.halt().await;
    let closed = tokio::task::spawn_blocking(move || store.close()).await;
    match closed {
        Ok(Ok(())) => tracing::info!("replication stopped, local store closed"),
        Ok(Err(e)) => tracing::warn!(error = %e, "the local store did not close cleanly"),
        Err(e) => tracing::warn!(error = %e, "closing the local store failed"),
    }
}

impl Activation for CoreReplication {
    fn mode(&self) -> &'static str {
        "replicated"
    }

    fn acquire(&self) -> BoxFuture<'_, Result<Mastership, HaError>> {
        Box::pin(self.acquire_inner())
    }

    fn shutdown(&self) {
        let Some(driver) = self.running.lock().take() else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // Called while the broker exits as a follower: close the session (the group sees us
        // gone at once) and checkpoint the store before the process ends.
        if rt.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread {
            tokio::task::block_in_place(|| rt.block_on(stop_driver(driver)));
        } else {
            rt.spawn(stop_driver(driver));
        }
    }
}

/// The store a master serves from: writes replicated through the driver, reads from the live
/// local store (which holds every entry the master appended, confirmed or not — the broker
/// reads back only what it wrote itself or recovered).
#[derive(Debug)]
pub struct DriverStore {
    driver: Arc<CoreDriver>,
    /// Writes whose outcome is unknown, never answered (bounded by the core's
    /// `unconfirmed_entries_max`: only writes it accepted can end here).
    limbo: Arc<parking_lot::Mutex<Vec<ferromq_store::Completer>>>,
    kind: &'static str,
    closed: std::sync::atomic::AtomicBool,
}

impl MessageStore for DriverStore {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn submit(&self, batch: Batch) -> Completion {
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            return Completion::ready(Err(StoreError::Closed));
        }
        let (done, completion) = Completion::pair();
        let limbo = self.limbo.clone();
        self.driver.submit_with(
            batch,
            Box::new(move |r| match r {
                Ok(_) => done.complete(Ok(())),
                // Neither confirmed nor refused: the next master may hold it. The producer
                // gets no answer (an ERROR would tell it the write failed): its connection
                // closes when the broker stops on losing mastership, and the client resends
                // (duplicate detection on the next master drops a resend of a stored one).
                Err(SubmitError::Unknown) => limbo.lock().push(done),
                Err(SubmitError::Stopped(_)) => done.complete(Err(StoreError::Closed)),
                Err(e) => done.complete(Err(StoreError::Failed(e.to_string()))),
            }),
        );
        completion
    }

    fn recover(&self) -> Result<Recovery, StoreError> {
        let mut r = self.driver.store().recover()?;
        // The replication's own records are not the broker's.
        r.lists
            .retain(|l| !l.list.starts_with(crate::position::RESERVED_PREFIX));
        r.subscriptions
            .retain(|s| !s.list.starts_with(crate::position::RESERVED_PREFIX));
        Ok(r)
    }

    fn load(
        &self,
        list: &str,
        after_seq: Option<u64>,
        max_count: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.driver.store().load(list, after_seq, max_count)
    }

    fn usage_bytes(&self) -> u64 {
        self.driver.store().usage_bytes()
    }

    fn commit_stats(&self) -> Option<ferromq_store::CommitStatsSnapshot> {
        self.driver.store().commit_stats()
    }

    /// Refuses later writes; the local store itself is closed when the mastership ends.
    fn close(&self) -> Result<(), StoreError> {
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }
}

/// The admin API's view of a master's followers.
#[derive(Debug)]
struct Status {
    driver: Arc<CoreDriver>,
}

impl ReplicationStatus for Status {
    fn replication(&self) -> Replication {
        let Some(v) = self.driver.master_view() else {
            return Replication::default();
        };
        let disk = v.durability.disk;
        let last = v.last;
        Replication {
            last_lsn: last,
            local_lsn: v.durable,
            slave_acks_required: v.durability.followers as u64,
            slave_acks_durable: disk,
            slaves: v
                .followers
                .iter()
                .filter(|f| f.connected)
                .map(|f| {
                    let acked = if disk { f.durable } else { f.received };
                    SlaveReplication {
                        member: f.member.to_string(),
                        acked_lsn: acked,
                        received_lsn: f.received,
                        durable_lsn: f.durable,
                        lag_entries: last.saturating_sub(acked),
                        queued_bytes: 0,
                    }
                })
                .collect(),
        }
    }
}
