//! Winning mastership (the slave's wait) and keeping it (the master's renewals / keep-alives).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferromq_ha::Mastership;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tracing::Instrument;

use crate::config::RETRY_BACKOFF_MAX;
use crate::db::{Db, LeaseView, LockConn, RowWait};
use crate::fence::{lease_now, DbFence, Validity};
use crate::{backoff, epoch_u64, lease_ms, DbLockConfig, DbLockError, Locker};

/// How long one wait for the row lock lasts before it is retried (MySQL's lock wait timeout is
/// in whole seconds, so one second is the finest that works on both databases). Bounding it
/// makes a waiting slave notice a dead connection instead of blocking in it forever.
const ROW_LOCK_WAIT: Duration = Duration::from_secs(1);

/// Waits until this broker is master, then starts the keeper that holds mastership.
pub(crate) async fn acquire(db: Db, cfg: Arc<DbLockConfig>) -> Result<Mastership, DbLockError> {
    let span = tracing::info_span!(
        "ha",
        mode = "shared-db",
        holder = %cfg.holder_id,
        table = %cfg.table(),
        locker = ?cfg.locker
    );
    async move {
        match cfg.locker {
            Locker::Lease => acquire_lease(db, cfg).await,
            Locker::Row => acquire_row(db, cfg).await,
        }
    }
    .instrument(span)
    .await
}

/// What a slave last saw, so that each change is logged once rather than every poll.
#[derive(Debug, Default, PartialEq, Eq)]
enum Seen {
    #[default]
    Nothing,
    Unreachable,
    HeldBy(Option<String>),
}

#[derive(Debug, Default)]
struct SlaveLog {
    seen: Seen,
}

impl SlaveLog {
    fn unreachable(&mut self, e: &DbLockError, retry: Duration) {
        if self.seen != Seen::Unreachable {
            self.seen = Seen::Unreachable;
            tracing::warn!(
                error = %e,
                "cannot use the lock table (database unreachable, failing or too slow); still a slave, retrying every {} ms at most",
                retry.max(RETRY_BACKOFF_MAX).as_millis()
            );
        }
    }

    fn held(&mut self, view: &LeaseView) {
        let seen = Seen::HeldBy(view.holder.clone());
        if self.seen != seen {
            if self.seen == Seen::Unreachable {
                tracing::info!("the lock table is reachable again");
            }
            self.seen = seen;
            tracing::info!(
                holder = view.holder.as_deref().unwrap_or("<none>"),
                epoch = view.epoch,
                "Lease held by {} until {} (database time, {} ms from now). This broker is now in slave mode waiting a lock to be acquired",
                view.holder.as_deref().unwrap_or("<none>"),
                view.expiry_ms,
                view.expiry_ms.saturating_sub(view.db_now_ms)
            );
        }
    }

    fn row_busy(&mut self) {
        let seen = Seen::HeldBy(None);
        if self.seen != seen {
            if self.seen == Seen::Unreachable {
                tracing::info!("the lock table is reachable again");
            }
            self.seen = seen;
            tracing::info!(
                "Lock row is held by another broker. This broker is now in slave mode waiting a lock to be acquired"
            );
        }
    }
}

/// Checks the lock table and, if it or its rows are missing and creation is configured,
/// creates them.
///
/// The check comes first, and creation only if it fails: on MySQL, `CREATE TABLE IF NOT
/// EXISTS` on an existing table waits for an exclusive metadata lock, which queues behind the
/// master's open transactions (the row lock, the store's) and makes every later statement on
/// the table queue behind it — a slave starting up would stall the master. PostgreSQL may
/// report a catalog duplicate-key error to the loser of two concurrent creators; one immediate
/// retry sees the winner's table.
async fn ensure_schema(db: &Db, cfg: &DbLockConfig) -> Result<(), DbLockError> {
    let table = cfg.table();
    match db.check_schema(&table).await {
        Ok(()) => return Ok(()),
        Err(e) if !cfg.create_tables_on_startup => return Err(e),
        Err(e) => tracing::debug!(error = %e, "lock table not ready; creating it"),
    }
    if let Err(first) = db.create_schema().await {
        tracing::debug!(error = %first, "creating the lock table failed; retrying once");
        db.create_schema().await?;
    }
    db.check_schema(&table).await
}

fn is_fatal(e: &DbLockError) -> bool {
    matches!(e, DbLockError::Config(_) | DbLockError::Schema { .. })
}

enum LeaseAttempt {
    Won {
        epoch: i64,
        /// When the winning statement was sent, for scheduling (tokio's clock) and for the
        /// fence (the lease clock).
        sent: Instant,
        sent_lease: Duration,
        previous: Option<String>,
    },
    Held(Option<LeaseView>),
}

async fn try_lease(
    db: &Db,
    cfg: &DbLockConfig,
    schema_ok: &mut bool,
) -> Result<LeaseAttempt, DbLockError> {
    if !*schema_ok {
        ensure_schema(db, cfg).await?;
        *schema_ok = true;
    }
    // A non-locking read first: only a lease that looks free is worth an UPDATE (which would
    // queue behind the master's share-locked store transactions on MySQL).
    let view = db.peek().await?;
    if !view.is_free() {
        return Ok(LeaseAttempt::Held(Some(view)));
    }
    // The database stamps the new lease no earlier than this instant, so a deadline counted
    // from here ends no later than the lease does.
    let sent = Instant::now();
    let sent_lease = lease_now(&*cfg.clock);
    Ok(
        match db.lease_acquire(&cfg.holder_id, lease_ms(cfg)).await? {
            Some(epoch) => LeaseAttempt::Won {
                epoch,
                sent,
                sent_lease,
                previous: view.holder,
            },
            None => LeaseAttempt::Held(None),
        },
    )
}

async fn acquire_lease(db: Db, cfg: Arc<DbLockConfig>) -> Result<Mastership, DbLockError> {
    let mut log = SlaveLog::default();
    let mut schema_ok = false;
    let mut retry = cfg.lock_acquire_sleep_interval;
    loop {
        match try_lease(&db, &cfg, &mut schema_ok).await {
            Ok(LeaseAttempt::Won {
                epoch,
                sent,
                sent_lease,
                previous,
            }) => {
                let epoch_u = epoch_u64(epoch)?;
                let validity = Arc::new(Validity::new(
                    epoch_u,
                    cfg.clock.clone(),
                    sent_lease,
                    cfg.lease_window(),
                ));
                tracing::info!(
                    epoch,
                    previous = previous.as_deref().unwrap_or("<none>"),
                    lease_ms = cfg.lease.as_millis() as u64,
                    "Acquired the shared-db lease: this broker is now the master"
                );
                // A lease looks free when nobody holds it (released, or never taken) or when
                // its holder's lease ran out.
                let reason = match &previous {
                    Some(p) => format!(
                        "acquired the database lock (lease locker): the lease of {p} expired"
                    ),
                    None => "acquired the database lock (lease locker): the lease was free".into(),
                };
                let (lost_tx, lost_rx) = watch::channel(None);
                let (stop_tx, stop_rx) = oneshot::channel();
                let keeper_done = Arc::new(AtomicBool::new(false));
                tokio::spawn(
                    keep_lease(
                        Keeper {
                            db: db.clone(),
                            cfg: cfg.clone(),
                            epoch,
                            validity: validity.clone(),
                            lost_tx,
                            keeper_done: keeper_done.clone(),
                            next_at: sent + cfg.renew_interval,
                        },
                        stop_rx,
                    )
                    .instrument(tracing::info_span!(
                        "ha-master",
                        mode = "shared-db",
                        epoch
                    )),
                );
                let release = Release {
                    db,
                    holder: cfg.holder_id.clone(),
                    epoch,
                    keeper_done,
                };
                return Ok(mastership(epoch_u, validity, lost_rx, stop_tx, release)
                    .with_reason(reason)
                    // The poll that found the lease free is when this slave saw the master gone.
                    .with_takeover_since(sent.into_std()));
            }
            Ok(LeaseAttempt::Held(view)) => {
                if let Some(v) = view {
                    log.held(&v);
                }
                retry = cfg.lock_acquire_sleep_interval;
            }
            Err(e) if is_fatal(&e) => return Err(e),
            Err(e) => {
                log.unreachable(&e, retry);
                retry = backoff(
                    retry,
                    RETRY_BACKOFF_MAX.max(cfg.lock_acquire_sleep_interval),
                );
            }
        }
        tokio::time::sleep(retry).await;
    }
}

fn mastership(
    epoch: u64,
    validity: Arc<Validity>,
    lost_rx: watch::Receiver<Option<String>>,
    stop_tx: oneshot::Sender<()>,
    release: Release,
) -> Mastership {
    let fence = Arc::new(DbFence {
        validity: validity.clone(),
    });
    Mastership::new(
        epoch,
        Some(fence),
        lost_rx,
        Box::new(Guard {
            validity,
            release,
            _stop: stop_tx,
        }),
    )
}

/// What the [`Guard`] needs to free row 1 when the mastership is dropped.
struct Release {
    db: Db,
    holder: String,
    epoch: i64,
    /// Set by the keeper once it has stepped down and tried to free the row itself.
    keeper_done: Arc<AtomicBool>,
}

/// Held inside the [`Mastership`]. Dropping it fails the fence at once, frees row 1 (waiting
/// at most the statement timeout, so the next master takes over at its next poll even if this
/// process exits right away), then, by dropping the stop sender, stops the keeper (which, for
/// the row locker, ends the row-lock transaction: row 1 is freed before row 2).
struct Guard {
    validity: Arc<Validity>,
    release: Release,
    _stop: oneshot::Sender<()>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        // The fence fails before the lock is freed, so this master never overlaps the next.
        self.validity.kill("shared-db mastership released");
        let r = &self.release;
        if r.keeper_done.load(Ordering::Acquire) {
            return;
        }
        match r.db.release_blocking(&r.holder, r.epoch) {
            Ok(1) => tracing::info!(epoch = r.epoch, "released the shared-db lock"),
            Ok(_) => tracing::debug!(
                epoch = r.epoch,
                "the shared-db lock was no longer ours to release"
            ),
            Err(e) => tracing::warn!(
                error = %e,
                "could not release the shared-db lock; the next master waits for it to expire"
            ),
        }
    }
}

/// What a keeper task holds while this broker is master.
struct Keeper {
    db: Db,
    cfg: Arc<DbLockConfig>,
    epoch: i64,
    validity: Arc<Validity>,
    lost_tx: watch::Sender<Option<String>>,
    /// Set once the keeper has stepped down and tried to free row 1 itself.
    keeper_done: Arc<AtomicBool>,
    /// When to send the first renewal / keep-alive. Each next one is due one interval after
    /// the previous was *sent* (not after it returned), so a renewal always has the whole
    /// validity window minus one interval to complete, however slow the previous one was.
    next_at: Instant,
}

/// What woke the keeper.
enum Wake<T> {
    Stop,
    Deadline,
    Done(T),
}

async fn wake<T>(
    stop: &mut oneshot::Receiver<()>,
    deadline: Instant,
    work: impl std::future::Future<Output = T>,
) -> Wake<T> {
    tokio::select! {
        _ = stop => Wake::Stop,
        _ = tokio::time::sleep_until(deadline) => Wake::Deadline,
        r = work => Wake::Done(r),
    }
}

/// Whether the [`Guard`] was dropped (mastership released rather than lost).
fn released(stop: &mut oneshot::Receiver<()>) -> bool {
    matches!(stop.try_recv(), Err(oneshot::error::TryRecvError::Closed))
}

/// The current deadline on tokio's clock, or why mastership is lost. Recomputed from the lease
/// clock at every turn: tokio's clock does not count a suspend, the lease clock does.
fn deadline(validity: &Validity) -> Result<Instant, String> {
    validity.remaining().map(|left| Instant::now() + left)
}

async fn keep_lease(k: Keeper, mut stop: oneshot::Receiver<()>) {
    let Keeper {
        db,
        cfg,
        epoch,
        validity,
        lost_tx,
        keeper_done,
        mut next_at,
    } = k;
    // On a stop, the guard has already freed the row (before the stop was sent).
    let mut failing = false;
    let reason = loop {
        let until = match deadline(&validity) {
            Ok(d) => d,
            Err(_) if released(&mut stop) => return,
            Err(reason) => break reason,
        };
        match wake(&mut stop, until, tokio::time::sleep_until(next_at)).await {
            Wake::Stop => return,
            Wake::Deadline => continue,
            Wake::Done(()) => {}
        }
        let sent = Instant::now();
        let sent_lease = validity.now();
        next_at = sent + cfg.renew_interval;
        let r = match wake(
            &mut stop,
            until,
            db.lease_renew(&cfg.holder_id, epoch, lease_ms(&cfg)),
        )
        .await
        {
            Wake::Stop => return,
            Wake::Deadline => continue,
            Wake::Done(r) => r,
        };
        match r {
            Ok(1) => {
                if let Err(reason) = validity.extend(sent_lease, cfg.lease_window()) {
                    break reason;
                }
                if failing {
                    failing = false;
                    tracing::info!("renewed the shared-db lease again: still the master");
                }
            }
            Ok(_) => {
                let reason = format!(
                    "the lease row no longer holds this broker at epoch {epoch}: another broker took over, stepping down"
                );
                validity.kill(reason.clone());
                break reason;
            }
            Err(e) => {
                if !failing {
                    failing = true;
                    tracing::warn!(
                        error = %e,
                        "cannot renew the shared-db lease: pausing, still the master for {} ms unless a renewal succeeds, then stepping down",
                        until.saturating_duration_since(Instant::now()).as_millis()
                    );
                }
            }
        }
    };
    tracing::error!(%reason, "lost the shared-db lease: this broker must stop serving");
    let _ = lost_tx.send(Some(reason));
    // The fence has failed for good, so freeing the row (if still ours) only speeds up the
    // next master; one attempt, bounded by the statement timeout.
    release(&db, &cfg, epoch).await;
    keeper_done.store(true, Ordering::Release);
}

/// Frees row 1 if it still holds this broker's epoch.
async fn release(db: &Db, cfg: &DbLockConfig, epoch: i64) {
    match db.release(&cfg.holder_id, epoch).await {
        Ok(1) => tracing::info!(epoch, "released the shared-db lock"),
        Ok(_) => tracing::debug!(epoch, "the shared-db lock was no longer ours to release"),
        Err(e) => tracing::warn!(
            error = %e,
            "could not release the shared-db lock; the next master waits for the lease to expire"
        ),
    }
}

async fn acquire_row(db: Db, cfg: Arc<DbLockConfig>) -> Result<Mastership, DbLockError> {
    let mut log = SlaveLog::default();
    let mut schema_ok = false;
    let mut retry = cfg.lock_acquire_sleep_interval;
    // The database kills a lock session idle in its transaction for this long: longer than a
    // healthy master's keep-alive gap, shorter than forever for a stopped one.
    let idle_kill = cfg.renew_interval * 2 + cfg.statement_timeout;
    loop {
        match try_row(&db, &cfg, &mut schema_ok, &mut log, idle_kill).await {
            Ok(Some(RowWon {
                conn,
                epoch,
                sent,
                sent_lease,
                locked_at,
                unclean,
            })) => {
                let epoch_u = epoch_u64(epoch)?;
                let validity = Arc::new(Validity::new(
                    epoch_u,
                    cfg.clock.clone(),
                    sent_lease,
                    cfg.row_window(),
                ));
                tracing::info!(
                    epoch,
                    "Acquired the shared-db row lock: this broker is now the master"
                );
                let (lost_tx, lost_rx) = watch::channel(None);
                let (stop_tx, stop_rx) = oneshot::channel();
                let keeper_done = Arc::new(AtomicBool::new(false));
                tokio::spawn(
                    keep_row(
                        Keeper {
                            db: db.clone(),
                            cfg: cfg.clone(),
                            epoch,
                            validity: validity.clone(),
                            lost_tx,
                            keeper_done: keeper_done.clone(),
                            next_at: sent + cfg.renew_interval,
                        },
                        conn,
                        stop_rx,
                    )
                    .instrument(tracing::info_span!(
                        "ha-master",
                        mode = "shared-db",
                        epoch
                    )),
                );
                let release = Release {
                    db,
                    holder: cfg.holder_id.clone(),
                    epoch,
                    keeper_done,
                };
                let reason = if unclean {
                    "acquired the database lock (row locker): the previous master's lock connection died without releasing it"
                } else {
                    "acquired the database lock (row locker)"
                };
                return Ok(mastership(epoch_u, validity, lost_rx, stop_tx, release)
                    .with_reason(reason)
                    .with_takeover_since(locked_at.into_std()));
            }
            Ok(None) => {}
            Err(e) if is_fatal(&e) => return Err(e),
            Err(e) => {
                log.unreachable(&e, retry);
                tokio::time::sleep(retry).await;
                retry = backoff(
                    retry,
                    RETRY_BACKOFF_MAX.max(cfg.lock_acquire_sleep_interval),
                );
                continue;
            }
        }
        retry = cfg.lock_acquire_sleep_interval;
    }
}

/// What a won round of the row locker hands over.
struct RowWon {
    conn: LockConn,
    epoch: i64,
    /// When the first keep-alive was sent (tokio's clock, and the lease clock).
    sent: Instant,
    sent_lease: Duration,
    /// When the row lock was granted: when this slave saw the previous master gone.
    locked_at: Instant,
    /// Whether the previous master left without releasing the lock.
    unclean: bool,
}

/// One round of the row locker: wait (at most [`ROW_LOCK_WAIT`]) for row 2; once held, bump
/// the epoch and, if the previous master did not release cleanly, wait out its fence.
async fn try_row(
    db: &Db,
    cfg: &DbLockConfig,
    schema_ok: &mut bool,
    log: &mut SlaveLog,
    idle_kill: Duration,
) -> Result<Option<RowWon>, DbLockError> {
    if !*schema_ok {
        ensure_schema(db, cfg).await?;
        *schema_ok = true;
    }
    let mut conn = db.lock_connection(ROW_LOCK_WAIT, idle_kill).await?;
    // Bounded: a slave reconnects at least every few hundred rounds, so a session the database
    // silently dropped cannot keep it waiting.
    for _ in 0..300 {
        match conn
            .lock_row(&db.stmts, ROW_LOCK_WAIT + cfg.statement_timeout)
            .await?
        {
            RowWait::Busy => log.row_busy(),
            RowWait::Locked => {
                let locked_at = Instant::now();
                let (epoch, previous) = match db.row_take_epoch(&cfg.holder_id).await {
                    Ok(r) => r,
                    Err(e) => {
                        conn.close(cfg.statement_timeout).await;
                        return Err(e);
                    }
                };
                let unclean = previous.is_some();
                if let Some(previous) = previous {
                    // The previous master may not know yet that its lock connection died: its
                    // fence holds until one keep-alive period plus timeout after its last
                    // successful keep-alive, which was sent before we could lock the row.
                    let grace = cfg.row_window();
                    tracing::info!(
                        previous = %previous,
                        epoch,
                        "the previous master did not release the lock cleanly: waiting {} ms for its fence to expire before serving",
                        grace.as_millis()
                    );
                    tokio::time::sleep(grace).await;
                }
                let sent = Instant::now();
                let sent_lease = lease_now(&*cfg.clock);
                // The lock may have died during the grace (database restart): then it was
                // never ours to serve with, and the next round competes again.
                conn.keepalive(&db.stmts, cfg.statement_timeout).await?;
                return Ok(Some(RowWon {
                    conn,
                    epoch,
                    sent,
                    sent_lease,
                    locked_at,
                    unclean,
                }));
            }
        }
    }
    conn.close(cfg.statement_timeout).await;
    Ok(None)
}

async fn keep_row(k: Keeper, mut conn: LockConn, mut stop: oneshot::Receiver<()>) {
    let Keeper {
        db,
        cfg,
        epoch,
        validity,
        lost_tx,
        keeper_done,
        mut next_at,
    } = k;
    let reason = loop {
        let until = match deadline(&validity) {
            Ok(d) => d,
            Err(_) if released(&mut stop) => break String::new(),
            Err(reason) => break reason,
        };
        match wake(&mut stop, until, tokio::time::sleep_until(next_at)).await {
            Wake::Stop => break String::new(),
            Wake::Deadline => continue,
            Wake::Done(()) => {}
        }
        let sent = Instant::now();
        let sent_lease = validity.now();
        next_at = sent + cfg.renew_interval;
        let r = match wake(
            &mut stop,
            until,
            conn.keepalive(&db.stmts, cfg.statement_timeout),
        )
        .await
        {
            Wake::Stop => break String::new(),
            Wake::Deadline => continue,
            Wake::Done(r) => r,
        };
        match r {
            Ok(()) => {
                if let Err(reason) = validity.extend(sent_lease, cfg.row_window()) {
                    break reason;
                }
            }
            Err(e) => {
                let reason = format!(
                    "the row lock's connection failed ({e}): the database has released the lock, stepping down"
                );
                validity.kill(reason.clone());
                break reason;
            }
        }
    };
    if !reason.is_empty() {
        tracing::error!(%reason, "lost the shared-db row lock: this broker must stop serving");
        let _ = lost_tx.send(Some(reason));
        // Free row 1 first, then row 2: the next master then sees a clean release and serves
        // at once instead of waiting out our fence (which has already failed). On a stop, the
        // guard freed row 1 before the stop was sent.
        release(&db, &cfg, epoch).await;
        keeper_done.store(true, Ordering::Release);
    }
    conn.close(cfg.statement_timeout).await;
}
