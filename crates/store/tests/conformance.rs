//! One conformance suite for the [`MessageStore`] trait, run against every backend compiled in:
//! memory, journal (portable and io_uring write paths), lsm (RocksDB), and sql on SQLite,
//! PostgreSQL and MariaDB (real servers, started by `scripts/services.sh`).
//!
//! Each scenario is written once against a [`Fixture`], which knows how to open its backend and
//! how to "restart" it (close or drop, then open the same storage again). Every scenario also
//! checks the backend against [`MemoryStore`], the reference semantics, through `state()`.
//!
//! The memory backend keeps nothing across restarts by design, so its fixture hands the same
//! instance back and the restart scenarios check only that nothing confirmed went missing.

mod journal_common;

use std::sync::Arc;

use bytes::Bytes;
use ferromq_store::{
    JournalConfig, JournalStore, MemoryStore, MessageStore, Op, StoreError, SubscriptionRecord,
};
use journal_common::{body, deq, enq, state, Rng};

/// How a scenario opens and restarts one backend.
trait Fixture {
    /// Opens the backend on this fixture's storage (the same storage every time).
    fn open(&mut self) -> Arc<dyn MessageStore>;
    /// False for the memory store: nothing survives a restart.
    fn durable(&self) -> bool {
        true
    }
    /// Restarts: a clean close when `clean`, else a drop without close (a crash of the process
    /// after the confirmations were handed out), then opens the same storage again.
    fn restart(&mut self, store: Arc<dyn MessageStore>, clean: bool) -> Arc<dyn MessageStore> {
        if clean {
            store.close().expect("clean close");
        }
        drop(store);
        self.open()
    }
}

fn submit(store: &dyn MessageStore, batch: Vec<Op>) {
    store
        .submit(batch)
        .wait_blocking()
        .unwrap_or_else(|e| panic!("{} refused a valid batch: {e}", store.kind()));
}

fn sub(list: &str, client: &str, name: &str, topic: &str, selector: Option<&str>) -> Op {
    Op::PutSubscription(SubscriptionRecord {
        list: list.to_string(),
        client_id: client.to_string(),
        name: name.to_string(),
        topic: topic.to_string(),
        selector: selector.map(str::to_string),
        no_local: selector.is_none(),
    })
}

/// Applies the same batches to the store and to the reference, then compares everything.
struct Checked {
    store: Arc<dyn MessageStore>,
    model: MemoryStore,
}

impl Checked {
    fn new(store: Arc<dyn MessageStore>) -> Checked {
        Checked {
            store,
            model: MemoryStore::new(),
        }
    }

    fn apply(&self, batch: Vec<Op>) {
        submit(&self.model, batch.clone());
        submit(self.store.as_ref(), batch);
    }

    fn verify(&self, when: &str) {
        assert_eq!(
            state(self.store.as_ref()),
            state(&self.model),
            "{}: state differs from the reference {when}",
            self.store.kind()
        );
        assert_eq!(
            self.store.usage_bytes(),
            self.model.usage_bytes(),
            "{}: usage_bytes {when}",
            self.store.kind()
        );
    }

    fn restart(&mut self, fixture: &mut dyn Fixture, clean: bool) {
        let durable = fixture.durable();
        let store = std::mem::replace(&mut self.store, Arc::new(MemoryStore::new()));
        self.store = fixture.restart(store, clean);
        if durable {
            self.verify(if clean {
                "after a clean restart"
            } else {
                "after a restart without close"
            });
        }
    }
}

// ------------------------------------------------------------------------------------------
// Scenarios
// ------------------------------------------------------------------------------------------

/// Messages come back in sequence order, pages continue where the last one ended, and a list
/// keeps its order across batches and restarts.
fn ordering(f: &mut dyn Fixture) {
    let mut c = Checked::new(f.open());
    for chunk in 0..20u64 {
        c.apply(
            (0..50)
                .map(|i| {
                    let seq = chunk * 50 + i + 1;
                    enq("queue://orders", seq, body("queue://orders", seq, 100))
                })
                .collect(),
        );
    }
    let page = c.store.load("queue://orders", Some(500), 3).unwrap();
    assert_eq!(
        page.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![501, 502, 503]
    );
    assert!(c
        .store
        .load("queue://orders", Some(1000), 10)
        .unwrap()
        .is_empty());
    assert!(c.store.load("queue://absent", None, 10).unwrap().is_empty());
    c.verify("after 1000 enqueues");
    c.restart(f, true);
    // New messages continue above the recovered max_seq.
    let max = c.store.recover().unwrap().lists[0].max_seq;
    c.apply(vec![enq("queue://orders", max + 1, b"next".to_vec())]);
    c.verify("after an enqueue following the restart");
}

/// Acks remove exactly their message; an ack of an absent message is a no-op; counts and
/// bytes follow.
fn acks(f: &mut dyn Fixture) {
    let mut c = Checked::new(f.open());
    c.apply(
        (1..=100)
            .map(|s| enq("queue://a", s, body("queue://a", s, 64 + s as usize)))
            .collect(),
    );
    c.apply(
        (1..=100)
            .filter(|s| s % 3 == 0)
            .map(|s| deq("queue://a", s))
            .collect(),
    );
    c.apply(vec![
        deq("queue://a", 3),
        deq("queue://a", 10_000),
        deq("queue://nothing", 1),
    ]);
    c.verify("after acks");
    let info = &c.store.recover().unwrap().lists[0];
    assert_eq!(info.count, 67);
    assert_eq!(info.max_seq, 100);
    c.apply((1..=100).map(|s| deq("queue://a", s)).collect());
    assert!(
        c.store.recover().unwrap().lists.is_empty(),
        "a fully acknowledged list is not reported"
    );
    c.verify("after acking everything");
    c.restart(f, true);
}

/// Durable subscriptions: created, replaced, deleted with their messages, and recovered.
fn durable_subscriptions(f: &mut dyn Fixture) {
    let mut c = Checked::new(f.open());
    c.apply(vec![
        sub(
            "durable://c1:s1",
            "c1",
            "s1",
            "news.>",
            Some("prio > 3 AND region = 'eu'"),
        ),
        sub("durable://c1:s2", "c1", "s2", "news.sport", None),
        sub("durable://c2:s1", "c2", "s1", "*.weather", None),
    ]);
    c.apply(
        (1..=10)
            .map(|s| enq("durable://c1:s1", s, body("s1", s, 200)))
            .collect(),
    );
    c.apply(
        (1..=10)
            .map(|s| enq("durable://c1:s2", s, body("s2", s, 200)))
            .collect(),
    );
    // Replace s1's record (a new selector) and delete s2 with its messages.
    c.apply(vec![
        sub("durable://c1:s1", "c1", "s1", "news.>", Some("prio > 5")),
        Op::DeleteSubscription {
            list: "durable://c1:s2".into(),
        },
    ]);
    c.verify("after replacing and deleting subscriptions");
    c.restart(f, true);
    let r = c.store.recover().unwrap();
    if f.durable() {
        assert_eq!(r.subscriptions.len(), 2);
        assert_eq!(r.subscriptions[0].selector.as_deref(), Some("prio > 5"));
    }
    c.restart(f, false);
}

/// A batch is applied as a whole: a transaction that sends to two queues, acks three messages
/// and records a subscription, and a batch that enqueues and acks the same message.
fn transactions(f: &mut dyn Fixture) {
    let mut c = Checked::new(f.open());
    c.apply(
        (1..=5)
            .map(|s| enq("queue://in", s, body("in", s, 300)))
            .collect(),
    );
    c.apply(vec![
        enq("queue://out1", 1, b"tx-1".to_vec()),
        enq("queue://out2", 1, b"tx-2".to_vec()),
        deq("queue://in", 1),
        deq("queue://in", 2),
        deq("queue://in", 3),
        sub("durable://c:tx", "c", "tx", "t", None),
    ]);
    c.apply(vec![
        enq("queue://out1", 2, b"gone".to_vec()),
        deq("queue://out1", 2),
        Op::Purge {
            list: "queue://out2".into(),
        },
        enq("queue://out2", 2, b"after purge".to_vec()),
    ]);
    c.verify("after transactional batches");
    c.restart(f, false);
}

/// Purge empties one list and leaves the others.
fn purge(f: &mut dyn Fixture) {
    let mut c = Checked::new(f.open());
    c.apply(
        (1..=50)
            .map(|s| enq("queue://p", s, body("p", s, 100)))
            .collect(),
    );
    c.apply(
        (1..=50)
            .map(|s| enq("queue://keep", s, body("k", s, 100)))
            .collect(),
    );
    c.apply(vec![Op::Purge {
        list: "queue://p".into(),
    }]);
    c.verify("after a purge");
    c.apply(vec![enq("queue://p", 51, b"x".to_vec())]);
    c.restart(f, true);
    c.verify("after a restart");
}

/// The broker's producer audit (`_AMQ_DUPL_ID` cache) is an ordinary list of ids with its own
/// key space; it must survive restarts next to the queue it guards.
fn producer_audit(f: &mut dyn Fixture) {
    let mut c = Checked::new(f.open());
    for s in 1..=30u64 {
        c.apply(vec![
            enq("queue://orders", s, body("orders", s, 100)),
            enq(
                "dupids://queue://orders",
                s,
                format!("producer-1:{s}").into_bytes(),
            ),
        ]);
    }
    // The cache is bounded: old ids are dropped in the same batch as new ones arrive.
    c.apply(
        (1..=10)
            .map(|s| deq("dupids://queue://orders", s))
            .collect(),
    );
    c.restart(f, false);
    if f.durable() {
        let ids = c.store.load("dupids://queue://orders", None, 100).unwrap();
        assert_eq!(ids.len(), 20);
        assert_eq!(ids[0].payload, Bytes::from("producer-1:11"));
    }
}

/// Messages of 10 MiB (and one just over the journal's segment size) round-trip intact.
fn large_messages(f: &mut dyn Fixture) {
    let mut c = Checked::new(f.open());
    let big = body("queue://big", 1, 10 * 1024 * 1024);
    c.apply(vec![enq("queue://big", 1, big.clone())]);
    c.apply(vec![
        enq(
            "queue://big",
            2,
            body("queue://big", 2, 3 * 1024 * 1024 + 17),
        ),
        enq("queue://small", 1, b"small".to_vec()),
    ]);
    let back = c.store.load("queue://big", None, 1).unwrap();
    assert_eq!(back[0].payload.len(), big.len());
    assert!(back[0].payload == big, "10 MiB payload changed");
    c.restart(f, true);
    c.apply(vec![deq("queue://big", 1)]);
    c.verify("after acking the 10 MiB message");
}

/// Hundreds of destinations, each with its own messages and counts.
fn many_destinations(f: &mut dyn Fixture) {
    let mut c = Checked::new(f.open());
    let names: Vec<String> = (0..500).map(|i| format!("queue://dest.{i:03}")).collect();
    for chunk in names.chunks(50) {
        c.apply(
            chunk
                .iter()
                .flat_map(|n| (1..=3).map(move |s| enq(n, s, body(n, s, 40))))
                .collect(),
        );
    }
    c.apply(names.iter().step_by(7).map(|n| deq(n, 2)).collect());
    assert_eq!(c.store.recover().unwrap().lists.len(), 500);
    c.restart(f, false);
    c.verify("with 500 destinations");
}

/// Sixteen threads submitting at once: every confirmed batch is there, each list in order.
fn concurrent_submitters(f: &mut dyn Fixture) {
    let mut c = Checked::new(f.open());
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let store = c.store.clone();
            std::thread::spawn(move || {
                let list = format!("queue://conc.{t}");
                let pending: Vec<_> = (1..=40u64)
                    .map(|s| store.submit(vec![enq(&list, s, body(&list, s, 512))]))
                    .collect();
                for p in pending {
                    p.wait_blocking().expect("confirmed");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("submitter thread");
    }
    for t in 0..16 {
        let list = format!("queue://conc.{t}");
        submit(
            &c.model,
            (1..=40u64)
                .map(|s| enq(&list, s, body(&list, s, 512)))
                .collect(),
        );
    }
    c.verify("after 16 concurrent submitters");
    c.restart(f, false);
}

/// Group-commit statistics (`MessageStore::commit_stats`): after 160 batches from 16 threads
/// the groups' sizes sum to at least 160 (every batch was made durable by some sync), each
/// group holds one batch at least, a sync was timed, and each batch's wait was counted. The
/// memory store (no sync) keeps none.
fn commit_statistics(f: &mut dyn Fixture) {
    let store = f.open();
    let kind = store.kind();
    let Some(before) = store.commit_stats() else {
        assert!(kind == "memory", "{kind} keeps no commit statistics");
        return;
    };
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let list = format!("queue://stats.{t}");
                let pending: Vec<_> = (1..=10u64)
                    .map(|s| store.submit(vec![enq(&list, s, body(&list, s, 64))]))
                    .collect();
                for p in pending {
                    p.wait_blocking().expect("confirmed");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("submitter thread");
    }
    let after = store.commit_stats().expect("still kept");
    let groups = after.group_batches.count() - before.group_batches.count();
    let batches = after.group_batches.sum - before.group_batches.sum;
    assert!(groups >= 1, "{kind}: no group counted");
    assert!(
        batches >= 160,
        "{kind}: {batches} batches in groups for 160"
    );
    assert!(groups <= batches, "{kind}: an empty group was counted");
    // Each batch here is one enqueue: the messages histogram counts the same syncs, and as
    // many messages as batches.
    let message_groups = after.group_messages.count() - before.group_messages.count();
    let messages = after.group_messages.sum - before.group_messages.sum;
    assert_eq!(
        message_groups, groups,
        "{kind}: messages counted for other syncs"
    );
    assert_eq!(messages, batches, "{kind}: one message per batch");
    assert!(
        after.sync_ns.count() > before.sync_ns.count(),
        "{kind}: no sync timed"
    );
    let waits = after.commit_wait_ns.count() - before.commit_wait_ns.count();
    assert!(waits >= 160, "{kind}: {waits} waits for 160 batches");
    assert!(
        after.commit_wait_ns.sum > before.commit_wait_ns.sum,
        "{kind}: the batches waited no time at all"
    );
    drop(store);
}

/// A random mix of every op, compared with the reference throughout, with clean and unclean
/// restarts in between.
fn random_ops_match_the_reference(f: &mut dyn Fixture) {
    const LISTS: [&str; 4] = ["queue://a", "queue://b", "durable://c:s1", "durable://c:s2"];
    let mut rng = Rng(42);
    let mut next_seq = [1u64; 4];
    let mut c = Checked::new(f.open());
    for step in 0..400 {
        let batch = (0..1 + rng.below(4))
            .map(|_| {
                let l = rng.below(4) as usize;
                let list = LISTS[l];
                match rng.below(100) {
                    0..=54 => {
                        let seq = next_seq[l];
                        next_seq[l] += 1;
                        enq(list, seq, body(list, seq, 1 + rng.below(2000) as usize))
                    }
                    55..=89 => deq(list, 1 + rng.below(next_seq[l])),
                    90..=93 => sub(LISTS[2 + rng.below(2) as usize], "c", "s", "t.>", None),
                    94..=95 => Op::DeleteSubscription {
                        list: LISTS[2 + rng.below(2) as usize].to_string(),
                    },
                    _ => Op::Purge {
                        list: list.to_string(),
                    },
                }
            })
            .collect();
        c.apply(batch);
        if step % 100 == 99 {
            c.verify(&format!("at step {step}"));
            c.restart(f, step % 200 == 99);
        }
    }
}

/// After `close()`, submits fail with `Closed` and nothing more is confirmed.
fn closed_store_refuses_writes(f: &mut dyn Fixture) {
    let store = f.open();
    submit(
        store.as_ref(),
        vec![enq("queue://c", 1, b"before".to_vec())],
    );
    store.close().expect("close");
    match store
        .submit(vec![enq("queue://c", 2, b"after".to_vec())])
        .wait_blocking()
    {
        Err(StoreError::Closed) | Err(StoreError::Failed(_)) => {}
        other => panic!("{}: submit after close gave {other:?}", store.kind()),
    }
    if f.durable() {
        let store = f.open();
        let msgs = store.load("queue://c", None, 10).unwrap();
        assert_eq!(
            msgs.len(),
            1,
            "only the message confirmed before close is kept"
        );
    }
}

macro_rules! conformance {
    ($backend:ident, $fixture:expr) => {
        mod $backend {
            use super::*;

            #[test]
            fn ordering() {
                super::ordering(&mut $fixture)
            }
            #[test]
            fn acks() {
                super::acks(&mut $fixture)
            }
            #[test]
            fn durable_subscriptions() {
                super::durable_subscriptions(&mut $fixture)
            }
            #[test]
            fn transactions() {
                super::transactions(&mut $fixture)
            }
            #[test]
            fn purge() {
                super::purge(&mut $fixture)
            }
            #[test]
            fn producer_audit() {
                super::producer_audit(&mut $fixture)
            }
            #[test]
            fn large_messages() {
                super::large_messages(&mut $fixture)
            }
            #[test]
            fn many_destinations() {
                super::many_destinations(&mut $fixture)
            }
            #[test]
            fn concurrent_submitters() {
                super::concurrent_submitters(&mut $fixture)
            }
            #[test]
            fn commit_statistics() {
                super::commit_statistics(&mut $fixture)
            }
            #[test]
            fn random_ops_match_the_reference() {
                super::random_ops_match_the_reference(&mut $fixture)
            }
            #[test]
            fn closed_store_refuses_writes() {
                super::closed_store_refuses_writes(&mut $fixture)
            }
        }
    };
}

// ------------------------------------------------------------------------------------------
// Backends
// ------------------------------------------------------------------------------------------

/// The memory store: one instance, "restarted" by handing it back (reopened if closed).
struct MemoryFixture(Option<Arc<MemoryStore>>);

impl Fixture for MemoryFixture {
    fn open(&mut self) -> Arc<dyn MessageStore> {
        let s = self.0.get_or_insert_with(|| Arc::new(MemoryStore::new()));
        s.reopen();
        s.clone()
    }
    fn durable(&self) -> bool {
        false
    }
}

/// The journal on a real directory.
struct JournalFixture {
    dir: tempfile::TempDir,
    config: JournalConfig,
}

impl JournalFixture {
    fn new(config: JournalConfig) -> JournalFixture {
        JournalFixture {
            dir: tempfile::tempdir().expect("tempdir"),
            config,
        }
    }
}

impl Fixture for JournalFixture {
    fn open(&mut self) -> Arc<dyn MessageStore> {
        Arc::new(JournalStore::open(self.dir.path(), self.config.clone()).expect("open journal"))
    }
}

fn journal_config() -> JournalConfig {
    JournalConfig {
        // Small segments, so that rolls and big-record segments are exercised too.
        journal_max_file_length: 2 * 1024 * 1024,
        checkpoint_interval_ms: 0,
        cleanup_interval_ms: 0,
        ..JournalConfig::default()
    }
}

conformance!(memory, MemoryFixture(None));
conformance!(journal, JournalFixture::new(journal_config()));
conformance!(
    journal_portable,
    JournalFixture::new(JournalConfig {
        io: ferromq_store::journal::JournalIo::Portable,
        ..journal_config()
    })
);
#[cfg(feature = "io-uring")]
conformance!(
    journal_io_uring,
    JournalFixture::new(JournalConfig {
        io: ferromq_store::journal::JournalIo::IoUring,
        ..journal_config()
    })
);

/// RocksDB in a temporary directory.
#[cfg(feature = "lsm")]
struct LsmFixture(tempfile::TempDir);

#[cfg(feature = "lsm")]
impl Fixture for LsmFixture {
    fn open(&mut self) -> Arc<dyn MessageStore> {
        let config = ferromq_store::LsmConfig::new(self.0.path().join("lsm"));
        Arc::new(ferromq_store::LsmStore::open(config).expect("open lsm store"))
    }
}

#[cfg(feature = "lsm")]
conformance!(lsm, LsmFixture(tempfile::tempdir().expect("tempdir")));

/// The sql store on one database: SQLite in a temp dir, or the PostgreSQL / MariaDB of
/// `scripts/services.sh` in tables of the test's own (dropped at the end, kept on failure).
#[cfg(feature = "sql")]
struct SqlFixture {
    url: String,
    prefix: String,
    _dir: Option<tempfile::TempDir>,
}

#[cfg(feature = "sql")]
impl SqlFixture {
    fn unique_prefix() -> String {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        format!(
            "c_{}_{}_{}_",
            std::process::id(),
            nanos % 1_000_000,
            NEXT.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn sqlite() -> SqlFixture {
        let dir = tempfile::tempdir().expect("tempdir");
        SqlFixture {
            url: format!("sqlite://{}/store.db", dir.path().display()),
            prefix: Self::unique_prefix(),
            _dir: Some(dir),
        }
    }

    fn server(env: &str, default: &str) -> SqlFixture {
        SqlFixture {
            url: std::env::var(env).unwrap_or_else(|_| default.to_string()),
            prefix: Self::unique_prefix(),
            _dir: None,
        }
    }
}

#[cfg(feature = "sql")]
impl Fixture for SqlFixture {
    fn open(&mut self) -> Arc<dyn MessageStore> {
        let mut config = ferromq_store::SqlConfig::new(self.url.clone());
        config.table_prefix = self.prefix.clone();
        Arc::new(
            ferromq_store::SqlStore::open(config)
                .expect("open sql store (is scripts/services.sh running?)"),
        )
    }
}

#[cfg(feature = "sql")]
impl Drop for SqlFixture {
    fn drop(&mut self) {
        if self._dir.is_some() || std::thread::panicking() {
            return;
        }
        let statements: Vec<String> = ["msgs", "acks", "lists", "lock"]
            .iter()
            .map(|t| format!("DROP TABLE IF EXISTS {}{t}", self.prefix))
            .collect();
        let url = self.url.clone();
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async move {
            use sqlx::Connection;
            if url.starts_with("mysql") {
                if let Ok(mut c) = sqlx::MySqlConnection::connect(&url).await {
                    for s in &statements {
                        let _ = sqlx::raw_sql(s).execute(&mut c).await;
                    }
                }
            } else if let Ok(mut c) = sqlx::PgConnection::connect(&url).await {
                for s in &statements {
                    let _ = sqlx::raw_sql(s).execute(&mut c).await;
                }
            }
        });
    }
}

#[cfg(feature = "sql")]
conformance!(sql_sqlite, SqlFixture::sqlite());
#[cfg(feature = "sql")]
conformance!(
    sql_postgres,
    SqlFixture::server(
        "FERROMQ_TEST_PG_URL",
        "postgres://postgres@127.0.0.1:5433/ferromq_test"
    )
);
#[cfg(feature = "sql")]
conformance!(
    sql_mariadb,
    SqlFixture::server(
        "FERROMQ_TEST_MYSQL_URL",
        "mysql://root@127.0.0.1:3307/ferromq_test"
    )
);
