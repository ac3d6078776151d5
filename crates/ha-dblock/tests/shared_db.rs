//! Shared-db master/slave against real PostgreSQL and MariaDB servers. An unreachable test
//! database is a failure, never a skip.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{config, unique_prefix, url, Conn, Kind, Proxy, Throwaway};
use ferromq_ha::{Activation, Mastership};
use ferromq_ha_dblock::{DbLock, DbLockConfig, Locker};
use ferromq_store::Fence;
use tokio::task::JoinHandle;

/// Generous bound on anything that must eventually happen; never reached when things work.
const EVENTUALLY: Duration = Duration::from_secs(60);
/// How long a slave is watched to show it does *not* become master (several polls).
const WATCH_SLAVE: Duration = Duration::from_millis(1500);

fn lock(c: DbLockConfig) -> Arc<DbLock> {
    common::init_logs();
    Arc::new(DbLock::new(c).unwrap())
}

fn spawn_acquire(l: &Arc<DbLock>) -> JoinHandle<Mastership> {
    let l = l.clone();
    tokio::spawn(async move { l.acquire().await.unwrap() })
}

async fn eventually<T>(what: &str, h: JoinHandle<T>) -> T {
    tokio::time::timeout(EVENTUALLY, h)
        .await
        .unwrap_or_else(|_| panic!("{what}: did not happen within {EVENTUALLY:?}"))
        .unwrap()
}

fn fence(m: &Mastership) -> Arc<dyn Fence> {
    m.fence
        .clone()
        .expect("a shared-db mastership always has a fence")
}

/// A test's own lock table, dropped at the end.
struct Table {
    kind: Kind,
    url: String,
    prefix: String,
}

impl Table {
    fn new(kind: Kind, url: String) -> Table {
        Table {
            kind,
            url,
            prefix: unique_prefix(),
        }
    }
    fn name(&self) -> String {
        format!("{}lock", self.prefix)
    }
    fn config(&self, holder: &str, locker: Locker) -> DbLockConfig {
        config(&self.url, &self.prefix, holder, locker)
    }
    async fn conn(&self) -> Conn {
        Conn::open(self.kind, &self.url).await
    }
    async fn drop_table(self) {
        let mut c = self.conn().await;
        c.drop_table(&self.name()).await;
        c.close().await;
    }
}

/// The masters a [`Sampler`] watches, by name.
type Watched = Arc<Mutex<Vec<(String, Arc<dyn Fence>)>>>;

/// Samples every registered master's fence; fails the test if two pass at the same moment.
struct Sampler {
    fences: Watched,
    task: JoinHandle<u64>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Sampler {
    fn start() -> Sampler {
        let fences: Watched = Arc::default();
        let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
        let f = fences.clone();
        let task = tokio::spawn(async move {
            let mut samples = 0u64;
            // Bounded by the stop signal, and by EVENTUALLY × 10 in any case.
            let end = Instant::now() + EVENTUALLY * 10;
            while Instant::now() < end && !*stop_rx.borrow() {
                let snapshot = f.lock().unwrap().clone();
                let live: Vec<_> = snapshot
                    .iter()
                    .filter(|(_, fence)| fence.check().is_ok())
                    .map(|(who, _)| who.clone())
                    .collect();
                assert!(live.len() <= 1, "two masters at once: {live:?}");
                samples += 1;
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                    _ = stop_rx.changed() => {}
                }
            }
            samples
        });
        Sampler { fences, task, stop }
    }

    fn watch(&self, who: &str, m: &Mastership) {
        self.fences.lock().unwrap().push((who.into(), fence(m)));
    }

    async fn finish(self) {
        self.stop.send_replace(true);
        let samples = self.task.await.expect("the sampler saw two masters");
        assert!(samples > 0);
    }
}

macro_rules! per_db {
    ($name:ident, $body:ident $(, $arg:expr)*) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                $body(Kind::Pg $(, $arg)*).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mariadb() {
                $body(Kind::My $(, $arg)*).await
            }
        }
    };
}

per_db!(
    lease_one_master_of_two_and_clean_release_hands_over_with_a_higher_epoch,
    one_master_and_handover,
    Locker::Lease
);
per_db!(
    row_one_master_of_two_and_clean_release_hands_over_with_a_higher_epoch,
    one_master_and_handover,
    Locker::Row
);

async fn one_master_and_handover(kind: Kind, locker: Locker) {
    let t = Table::new(kind, url(kind));
    let a = lock(t.config("a", locker));
    let b = lock(t.config("b", locker));
    assert_eq!(a.mode(), "shared-db");
    let ma = eventually("a becomes master", spawn_acquire(&a)).await;
    fence(&ma).check().unwrap();
    let mut c = t.conn().await;
    let (holder, epoch, _) = c.row1(&t.name()).await;
    assert_eq!(holder.as_deref(), Some("a"));
    assert_eq!(epoch as u64, ma.epoch);

    let waiting_b = spawn_acquire(&b);
    tokio::time::sleep(WATCH_SLAVE).await;
    assert!(
        !waiting_b.is_finished(),
        "b became master while a holds the lock"
    );

    let fence_a = fence(&ma);
    let released = Instant::now();
    ma.release();
    // Dropping the mastership frees the row before it returns (a server exits right after).
    let (holder, _, _) = c.row1(&t.name()).await;
    assert_ne!(
        holder.as_deref(),
        Some("a"),
        "release() returned with row 1 still a's"
    );
    let mb = eventually("b takes over after a clean release", waiting_b).await;
    println!(
        "{kind:?} {locker:?}: clean handover took {:?}",
        released.elapsed()
    );
    assert!(
        fence_a.check().is_err(),
        "the released master's fence must fail"
    );
    fence(&mb).check().unwrap();
    let (holder, epoch_b, _) = c.row1(&t.name()).await;
    assert_eq!(holder.as_deref(), Some("b"));
    assert_eq!(epoch_b as u64, mb.epoch);
    assert!(mb.epoch > epoch as u64, "epochs grow on every takeover");

    // And back: every acquisition bumps the epoch again.
    let waiting_a = spawn_acquire(&a);
    tokio::time::sleep(WATCH_SLAVE).await;
    assert!(
        !waiting_a.is_finished(),
        "a became master while b holds the lock"
    );
    let b_epoch = mb.epoch;
    mb.release();
    let ma2 = eventually("a takes over again", waiting_a).await;
    assert!(ma2.epoch > b_epoch);
    // The store's fence read sees the newest epoch only.
    assert_eq!(c.begin_store_tx(&t.name()).await as u64, ma2.epoch);
    c.exec("COMMIT").await;
    ma2.release();
    c.close().await;
    t.drop_table().await;
}

per_db!(
    concurrent_first_start_creates_the_table_once_and_elects_one_master,
    concurrent_first_start
);

async fn concurrent_first_start(kind: Kind) {
    let t = Table::new(kind, url(kind));
    let lockers: Vec<_> = (0..4)
        .map(|i| lock(t.config(&format!("b{i}"), Locker::Lease)))
        .collect();
    let mut waiting: Vec<_> = lockers.iter().map(spawn_acquire).collect();
    let first = tokio::time::timeout(EVENTUALLY, async {
        loop {
            if let Some(i) = waiting.iter().position(|h| h.is_finished()) {
                return i;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("nobody became master");
    let m = waiting.remove(first).await.expect("acquire failed");
    fence(&m).check().unwrap();
    tokio::time::sleep(WATCH_SLAVE).await;
    for h in &waiting {
        assert!(
            !h.is_finished(),
            "a second master among concurrent starters"
        );
    }
    for h in waiting {
        h.abort();
    }
    m.release();
    t.drop_table().await;
}

per_db!(
    lease_master_cut_off_from_the_database_steps_down_before_another_acquires,
    cut_off_lease_master
);

async fn cut_off_lease_master(kind: Kind) {
    let t = Table::new(kind, url(kind));
    let proxy = Proxy::start(common::addr_of(&t.url)).await;
    let a = lock(config(
        &proxy.url_via(&t.url),
        &t.prefix,
        "a",
        Locker::Lease,
    ));
    let b = lock(t.config("b", Locker::Lease));
    let mut ma = eventually("a becomes master", spawn_acquire(&a)).await;
    let fence_a = fence(&ma);
    let epoch_a = ma.epoch;

    // a can no longer reach the database (as if partitioned, or stopped as seen by the db).
    proxy.cut(true);
    let b_task = {
        let b = b.clone();
        let fence_a = fence_a.clone();
        tokio::spawn(async move {
            let mb = b.acquire().await.unwrap();
            // At the very moment b is master, a's fence must already refuse.
            let a_refused = fence_a.check().is_err();
            (mb, a_refused)
        })
    };
    let mut b_task = b_task;
    // a must learn it lost mastership before b can acquire.
    let reason = tokio::time::timeout(EVENTUALLY, async {
        tokio::select! {
            biased;
            r = ma.lost() => r,
            _ = &mut b_task => panic!("b became master before a noticed it lost the lease"),
        }
    })
    .await
    .expect("a never noticed it cannot renew");
    println!("{kind:?}: a stepped down: {reason}");
    assert!(fence_a.check().is_err());
    let (mb, a_refused) = eventually("b takes over the expired lease", b_task).await;
    assert!(a_refused, "a's fence still passed when b became master");
    assert!(mb.epoch > epoch_a);

    // The partition heals (SIGCONT): a never believes it is master again.
    proxy.cut(false);
    tokio::time::sleep(WATCH_SLAVE).await;
    assert!(
        fence_a.check().is_err(),
        "a deposed master's fence came back"
    );
    let a_again = spawn_acquire(&a);
    tokio::time::sleep(WATCH_SLAVE).await;
    assert!(
        !a_again.is_finished(),
        "a became master again while b holds the lease"
    );
    a_again.abort();
    // A store transaction of a's epoch sees the mismatch and must fail.
    let mut c = t.conn().await;
    let seen = c.begin_store_tx(&t.name()).await;
    c.exec("COMMIT").await;
    assert_ne!(seen as u64, epoch_a);
    assert_eq!(seen as u64, mb.epoch);
    drop(ma);
    mb.release();
    c.close().await;
    t.drop_table().await;
}

per_db!(
    row_master_cut_off_from_the_database_steps_down_before_another_acquires,
    cut_off_row_master
);

async fn cut_off_row_master(kind: Kind) {
    let t = Table::new(kind, url(kind));
    let proxy = Proxy::start(common::addr_of(&t.url)).await;
    let a = lock(config(&proxy.url_via(&t.url), &t.prefix, "a", Locker::Row));
    let b = lock(t.config("b", Locker::Row));
    let mut ma = eventually("a becomes master", spawn_acquire(&a)).await;
    let fence_a = fence(&ma);
    proxy.cut(true);
    let mut b_task = {
        let b = b.clone();
        let fence_a = fence_a.clone();
        tokio::spawn(async move {
            let mb = b.acquire().await.unwrap();
            let a_refused = fence_a.check().is_err();
            (mb, a_refused)
        })
    };
    let reason = tokio::time::timeout(EVENTUALLY, async {
        tokio::select! {
            biased;
            r = ma.lost() => r,
            _ = &mut b_task => panic!("b became master before a noticed its lock connection died"),
        }
    })
    .await
    .expect("a never noticed its lock connection hangs");
    println!("{kind:?}: a stepped down: {reason}");
    // The database ends a's silent session (idle in transaction too long), freeing the row.
    let (mb, a_refused) = eventually("b takes over the row lock", b_task).await;
    assert!(a_refused, "a's fence still passed when b became master");
    assert!(mb.epoch > ma.epoch);
    proxy.cut(false);
    tokio::time::sleep(WATCH_SLAVE).await;
    assert!(fence_a.check().is_err());
    drop(ma);
    mb.release();
    t.drop_table().await;
}

per_db!(
    lease_takeover_waits_for_the_old_masters_store_transaction,
    takeover_waits_for_store_tx,
    Locker::Lease
);
per_db!(
    row_takeover_waits_for_the_old_masters_store_transaction,
    takeover_waits_for_store_tx,
    Locker::Row
);

/// The `sql` store's fence contract: a write transaction of the old master that share-locked
/// row 1 before the takeover finishes before the new epoch commits; every later one sees it.
async fn takeover_waits_for_store_tx(kind: Kind, locker: Locker) {
    let t = Table::new(kind, url(kind));
    let a = lock(t.config("a", locker));
    let b = lock(t.config("b", locker));
    let ma = eventually("a becomes master", spawn_acquire(&a)).await;
    let epoch_a = ma.epoch;
    let mut store_a = t.conn().await;
    assert_eq!(store_a.begin_store_tx(&t.name()).await as u64, epoch_a);

    let waiting_b = spawn_acquire(&b);
    ma.release();
    tokio::time::sleep(WATCH_SLAVE * 2).await;
    assert!(
        !waiting_b.is_finished(),
        "b became master while a's store transaction was in flight"
    );
    let mut observer = t.conn().await;
    assert_eq!(observer.row1(&t.name()).await.1 as u64, epoch_a);
    store_a.exec("COMMIT").await;

    let mb = eventually("b takes over once the store transaction ends", waiting_b).await;
    assert!(mb.epoch > epoch_a);
    let seen = store_a.begin_store_tx(&t.name()).await;
    store_a.exec("ROLLBACK").await;
    assert_ne!(
        seen as u64, epoch_a,
        "a later store transaction of a must fail"
    );
    mb.release();
    store_a.close().await;
    observer.close().await;
    t.drop_table().await;
}

per_db!(
    lease_database_restart_never_makes_two_masters_and_the_slave_takes_over,
    lease_db_restart
);

async fn lease_db_restart(kind: Kind) {
    let pg = Throwaway::start(kind).await;
    let t = Table::new(kind, pg.url());
    let sampler = Sampler::start();
    let a = lock(t.config("a", Locker::Lease));
    let b = lock(t.config("b", Locker::Lease));
    let mut ma = eventually("a becomes master", spawn_acquire(&a)).await;
    sampler.watch("a", &ma);
    let waiting_b = spawn_acquire(&b);

    // A quick restart: a may ride it out (shorter than its margin) or step down; either way
    // there is never a second master (the sampler), and there is always one eventually.
    let changed_before = {
        let mut c = t.conn().await;
        let v = c.row1_time(&t.name()).await;
        c.close().await;
        v
    };
    pg.down();
    pg.up().await;
    // Wait until a either renewed after the restart (row 1's `time` moved) or stepped down.
    let survived = tokio::time::timeout(EVENTUALLY, async {
        loop {
            if fence(&ma).check().is_err() {
                return false;
            }
            let mut c = t.conn().await;
            let now = c.row1_time(&t.name()).await;
            c.close().await;
            if now > changed_before && fence(&ma).check().is_ok() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("a neither renewed nor stepped down after the restart");
    let (mut ma, waiting_b) = if survived {
        println!("a survived the quick restart");
        (ma, waiting_b)
    } else {
        println!("a stepped down during the quick restart");
        let mb = eventually("b takes over after the restart", waiting_b).await;
        sampler.watch("b", &mb);
        // Swap roles so the rest of the test reads the same.
        drop(ma);
        let waiting_a = spawn_acquire(&a);
        ma = mb;
        (ma, waiting_a)
    };
    let epoch_before = ma.epoch;

    // A long outage: the master cannot prove its lease and steps down; the slave, unable to
    // reach the database the whole time, survives and takes over once it is back.
    pg.down();
    let reason = tokio::time::timeout(EVENTUALLY, ma.lost())
        .await
        .expect("the master never stepped down while the database was down");
    println!("master stepped down: {reason}");
    assert!(
        !waiting_b.is_finished(),
        "a slave became master without a database"
    );
    pg.up().await;
    let m_new = eventually("the slave becomes master after the outage", waiting_b).await;
    sampler.watch("new", &m_new);
    assert!(m_new.epoch > epoch_before);
    fence(&m_new).check().unwrap();
    sampler.finish().await;
    m_new.release();
    drop(ma);
}

per_db!(
    row_database_restart_deposes_the_master_at_once_and_a_new_one_follows,
    row_db_restart
);

async fn row_db_restart(kind: Kind) {
    let pg = Throwaway::start(kind).await;
    let t = Table::new(kind, pg.url());
    let sampler = Sampler::start();
    let a = lock(t.config("a", Locker::Row));
    let b = lock(t.config("b", Locker::Row));
    let mut ma = eventually("a becomes master", spawn_acquire(&a)).await;
    sampler.watch("a", &ma);
    let waiting_b = spawn_acquire(&b);
    tokio::time::sleep(WATCH_SLAVE).await;
    assert!(!waiting_b.is_finished());

    // The restart kills a's session and with it the row lock: a steps down at its next
    // keep-alive, and b (which waits for the row) takes over once the database is back.
    pg.down();
    pg.up().await;
    let reason = tokio::time::timeout(EVENTUALLY, ma.lost())
        .await
        .expect("the row master did not notice the restart");
    println!("a stepped down: {reason}");
    assert!(fence(&ma).check().is_err());
    let mb = eventually("b becomes master after the restart", waiting_b).await;
    sampler.watch("b", &mb);
    assert!(mb.epoch > ma.epoch);
    sampler.finish().await;
    mb.release();
    drop(ma);
}

/// MySQL: a slave starting up must not lock the lock table's rows. `INSERT IGNORE` of rows
/// that exist share-locks them for its duplicate check; against a row-lock master (row 2
/// X-locked for the whole mastership) it waits while holding row 1, and then the master's own
/// writes to row 1 (its release, the next epoch) queue behind a slave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_a_starting_slave_never_locks_row_one_against_the_master() {
    let t = Table::new(Kind::My, url(Kind::My));
    let a = lock(t.config("a", Locker::Row));
    let ma = eventually("a becomes master", spawn_acquire(&a)).await;
    let b = lock(t.config("b", Locker::Row));
    let waiting_b = spawn_acquire(&b);
    tokio::time::sleep(WATCH_SLAVE).await;
    // Any row-lock wait fails this session's statement after one second; a correct slave
    // never makes the master's writes to row 1 wait at all.
    let mut master_write = t.conn().await;
    master_write
        .exec("SET SESSION innodb_lock_wait_timeout = 1")
        .await;
    for _ in 0..3 {
        master_write
            .exec(&format!("UPDATE {} SET time = time WHERE id = 1", t.name()))
            .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(!waiting_b.is_finished());
    let released = Instant::now();
    ma.release();
    let mb = eventually("b takes over", waiting_b).await;
    println!("row handover on MariaDB took {:?}", released.elapsed());
    mb.release();
    master_write.close().await;
    t.drop_table().await;
}

per_db!(
    without_table_creation_a_lock_table_missing_its_rows_is_an_error,
    missing_rows_is_an_error
);

async fn missing_rows_is_an_error(kind: Kind) {
    let t = Table::new(kind, url(kind));
    let mut c = t.conn().await;
    c.exec(&format!(
        "CREATE TABLE {} (id BIGINT NOT NULL PRIMARY KEY, broker_name VARCHAR(250) NULL, \
         epoch BIGINT NOT NULL, expiry_ms BIGINT NOT NULL, time BIGINT NOT NULL)",
        t.name()
    ))
    .await;
    c.exec(&format!(
        "INSERT INTO {} (id, broker_name, epoch, expiry_ms, time) VALUES (1, NULL, 0, 0, 0)",
        t.name()
    ))
    .await;
    let mut cfg = t.config("a", Locker::Lease);
    cfg.create_tables_on_startup = false;
    let r = tokio::time::timeout(EVENTUALLY, DbLock::new(cfg).unwrap().acquire())
        .await
        .expect("acquire neither failed nor succeeded");
    let e = r.expect_err("a lock table without row 2 must be refused, not used");
    assert!(e.to_string().contains("row"), "{e}");
    // With creation on, the missing row is added and the broker becomes master.
    let m = eventually(
        "a becomes master once the row is created",
        spawn_acquire(&lock(t.config("a", Locker::Lease))),
    )
    .await;
    assert_eq!(m.epoch, 1);
    m.release();
    c.close().await;
    t.drop_table().await;
}
