//! The SQL store against real databases: SQLite in a temporary directory, and the PostgreSQL
//! and MariaDB of `scripts/services.sh` (`FERROMQ_TEST_PG_URL`, `FERROMQ_TEST_MYSQL_URL`). An
//! unreachable database fails the test. Every test uses its own random table prefix and drops
//! its tables at the end, so tests run in parallel against the same databases.
#![cfg(feature = "sql")]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use bytes::Bytes;
use ferromq_store::sql::{Dialect, SqlConfig, SqlStore};
use ferromq_store::{
    Batch, Completion, Fence, MemoryStore, MessageStore, Op, Recovery, StoreError,
    SubscriptionRecord,
};
use sqlx::{Connection, Row};

// ---------------------------------------------------------------------------------------------
// Harness

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Db {
    Sqlite,
    Postgres,
    MySql,
}

/// One test's tables: a random prefix in a shared database (or a fresh SQLite file).
struct TestDb {
    db: Db,
    url: String,
    prefix: String,
    _dir: Option<tempfile::TempDir>,
}

fn unique_prefix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "t_{}_{}_{}_",
        std::process::id(),
        nanos % 1_000_000,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

impl TestDb {
    fn new(db: Db) -> TestDb {
        let prefix = unique_prefix();
        let (url, dir) = match db {
            Db::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}/store.db", dir.path().display());
                (url, Some(dir))
            }
            Db::Postgres => {
                let base = std::env::var("FERROMQ_TEST_PG_URL").unwrap_or_else(|_| {
                    "postgres://postgres@127.0.0.1:5433/ferromq_test".to_string()
                });
                // Tags this test's connections so the kill test can find exactly them.
                let sep = if base.contains('?') { '&' } else { '?' };
                (format!("{base}{sep}application_name={prefix}"), None)
            }
            Db::MySql => (
                std::env::var("FERROMQ_TEST_MYSQL_URL")
                    .unwrap_or_else(|_| "mysql://root@127.0.0.1:3307/ferromq_test".to_string()),
                None,
            ),
        };
        TestDb {
            db,
            url,
            prefix,
            _dir: dir,
        }
    }

    fn config(&self) -> SqlConfig {
        let mut cfg = SqlConfig::new(self.url.clone());
        cfg.table_prefix = self.prefix.clone();
        cfg.connect_timeout_ms = 20_000;
        cfg
    }

    fn open(&self) -> SqlStore {
        SqlStore::open(self.config()).expect("open sql store (is the database running?)")
    }

    fn table(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Runs statements on a connection of the test's own (not the store's).
    fn exec(&self, statements: &[String]) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            match self.db {
                Db::Sqlite => {
                    let mut c = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                    for s in statements {
                        sqlx::raw_sql(s).execute(&mut c).await.unwrap();
                    }
                }
                Db::Postgres => {
                    let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
                    for s in statements {
                        sqlx::raw_sql(s).execute(&mut c).await.unwrap();
                    }
                }
                Db::MySql => {
                    let mut c = sqlx::MySqlConnection::connect(&self.url).await.unwrap();
                    for s in statements {
                        sqlx::raw_sql(s).execute(&mut c).await.unwrap();
                    }
                }
            }
        });
    }

    /// The single integer a query answers, read on the test's own connection.
    fn query_i64(&self, sql: &str) -> i64 {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            match self.db {
                Db::Sqlite => {
                    let mut c = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                    sqlx::query(sql)
                        .fetch_one(&mut c)
                        .await
                        .unwrap()
                        .get::<i64, _>(0)
                }
                Db::Postgres => {
                    let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
                    sqlx::query(sql)
                        .fetch_one(&mut c)
                        .await
                        .unwrap()
                        .get::<i64, _>(0)
                }
                Db::MySql => {
                    let mut c = sqlx::MySqlConnection::connect(&self.url).await.unwrap();
                    sqlx::query(sql)
                        .fetch_one(&mut c)
                        .await
                        .unwrap()
                        .get::<i64, _>(0)
                }
            }
        })
    }

    fn count_msgs(&self, filter: &str) -> i64 {
        let cast = if self.db == Db::MySql {
            "SIGNED"
        } else {
            "BIGINT"
        };
        self.query_i64(&format!(
            "SELECT CAST(COUNT(*) AS {cast}) FROM {} WHERE {filter}",
            self.table("msgs")
        ))
    }

    fn set_epoch(&self, epoch: u64) {
        self.exec(&[format!(
            "UPDATE {} SET epoch = {epoch} WHERE id = 1",
            self.table("lock")
        )]);
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.db == Db::Sqlite || std::thread::panicking() {
            // A failed test keeps its tables for a look; SQLite's go with the temp dir.
            return;
        }
        let drops: Vec<String> = ["msgs", "acks", "lists", "lock"]
            .iter()
            .map(|t| format!("DROP TABLE IF EXISTS {}", self.table(t)))
            .collect();
        self.exec(&drops);
    }
}

fn enq(list: &str, seq: u64, body: &str) -> Op {
    Op::Enqueue {
        list: list.to_string(),
        seq,
        payload: Bytes::from(body.to_string()),
    }
}

fn deq(list: &str, seq: u64) -> Op {
    Op::Dequeue {
        list: list.to_string(),
        seq,
    }
}

fn sub(list: &str, topic: &str, selector: Option<&str>) -> SubscriptionRecord {
    let (client_id, name) = list
        .trim_start_matches("durable://")
        .split_once(':')
        .unwrap_or(("c", "s"));
    SubscriptionRecord {
        list: list.to_string(),
        client_id: client_id.to_string(),
        name: name.to_string(),
        topic: topic.to_string(),
        selector: selector.map(str::to_string),
        no_local: selector.is_some(),
    }
}

fn ok(store: &dyn MessageStore, batch: Batch) {
    store.submit(batch).wait_blocking().unwrap();
}

fn seqs(store: &dyn MessageStore, list: &str, after: Option<u64>, max: usize) -> Vec<u64> {
    store
        .load(list, after, max)
        .unwrap()
        .iter()
        .map(|m| m.seq)
        .collect()
}

/// Every list's messages, by list.
type Pages = Vec<(String, Vec<(u64, Bytes)>)>;

/// Everything a store answers, for comparing two stores.
fn state(store: &dyn MessageStore) -> (Recovery, Pages, u64) {
    let rec = store.recover().unwrap();
    let pages = rec
        .lists
        .iter()
        .map(|l| {
            let msgs = store
                .load(&l.list, None, usize::MAX)
                .unwrap()
                .into_iter()
                .map(|m| (m.seq, m.payload))
                .collect();
            (l.list.clone(), msgs)
        })
        .collect();
    (rec, pages, store.usage_bytes())
}

/// Generates one `#[test]` per database for each check.
macro_rules! per_database {
    ($($check:ident),* $(,)?) => {
        mod sqlite {
            $(#[test] fn $check() { super::$check(super::Db::Sqlite) })*
        }
        mod postgres {
            $(#[test] fn $check() { super::$check(super::Db::Postgres) })*
        }
        mod mysql {
            $(#[test] fn $check() { super::$check(super::Db::MySql) })*
        }
    };
}

per_database!(
    kind_and_dialect_match_the_url,
    loads_pages_in_sequence_order,
    acks_remove_messages_and_absent_acks_are_no_ops,
    max_seq_survives_acking_the_newest_message_and_reopen,
    reenqueueing_a_seq_replaces_it_and_keeps_usage_exact,
    durable_subscriptions_are_upserted_and_deleted_with_their_messages,
    purge_forgets_the_list_and_its_max_seq,
    a_batch_whose_last_op_fails_leaves_nothing_and_fails_the_store_for_good,
    recovers_counts_bytes_max_seq_and_subscriptions_after_reopen,
    ten_mib_message_round_trips_across_reopen,
    five_hundred_lists_in_one_batch_recover,
    concurrent_submitters_share_commits,
    stale_fence_epoch_fails_the_batch_and_leaves_no_rows,
    opening_with_a_superseded_epoch_is_refused,
    a_failing_fence_check_fails_the_store,
    close_drains_queued_batches_then_refuses_writes,
    two_stores_creating_the_same_tables_at_once_both_open,
    matches_the_memory_store_on_random_ops_through_reopens,
    lock_table_has_the_shared_schema_and_both_rows,
    works_when_called_from_inside_a_tokio_runtime,
    values_the_database_cannot_hold_refuse_only_their_batch,
    lazy_acks_apply_in_submission_order_and_survive_reopen,
);

// ---------------------------------------------------------------------------------------------
// Checks

fn kind_and_dialect_match_the_url(db: Db) {
    let t = TestDb::new(db);
    let s = t.open();
    assert_eq!(s.kind(), "sql");
    let want = match db {
        Db::Sqlite => Dialect::Sqlite,
        Db::Postgres => Dialect::Postgres,
        Db::MySql => Dialect::MySql,
    };
    assert_eq!(s.dialect(), want);
    assert!(s.payload_bytes_max() >= 10 * 1024 * 1024);
    s.close().unwrap();
}

fn loads_pages_in_sequence_order(db: Db) {
    let t = TestDb::new(db);
    let s = t.open();
    // Out-of-order submission within a batch and across batches; load orders by seq.
    ok(
        &s,
        (11..=20).rev().map(|i| enq("queue://a", i, "x")).collect(),
    );
    ok(&s, (1..=10).map(|i| enq("queue://a", i, "y")).collect());
    ok(&s, vec![enq("queue://b", 0, "zero")]);
    assert_eq!(seqs(&s, "queue://a", None, 5), vec![1, 2, 3, 4, 5]);
    assert_eq!(
        seqs(&s, "queue://a", Some(5), 100),
        (6..=20).collect::<Vec<_>>()
    );
    assert_eq!(seqs(&s, "queue://a", Some(20), 100), Vec::<u64>::new());
    assert_eq!(
        seqs(&s, "queue://a", Some(u64::MAX), 100),
        Vec::<u64>::new()
    );
    assert_eq!(seqs(&s, "queue://a", None, 0), Vec::<u64>::new());
    assert_eq!(seqs(&s, "queue://b", None, 10), vec![0]);
    assert_eq!(seqs(&s, "queue://nope", None, 10), Vec::<u64>::new());
    // Keys differ only in case: MySQL's default collation would merge them.
    ok(&s, vec![enq("queue://A", 1, "upper")]);
    assert_eq!(s.load("queue://A", None, 10).unwrap()[0].payload, "upper");
    assert_eq!(s.load("queue://a", None, 1).unwrap()[0].payload, "y");
    s.close().unwrap();
}

/// Acks submitted lazily (PostgreSQL commits groups of only those with `synchronous_commit =
/// off`) interleave with synced enqueues; the store ends where the memory model does, also
/// after a reopen.
fn lazy_acks_apply_in_submission_order_and_survive_reopen(db: Db) {
    let t = TestDb::new(db);
    let s = t.open();
    let model = MemoryStore::new();
    let mut pending = Vec::new();
    for seq in 1..=200u64 {
        let b = vec![enq("queue://a", seq, "m")];
        ok(&model, b.clone());
        pending.push(s.submit(b));
        if seq % 2 == 0 {
            // Lazy-only stretches: several acks queued back to back form their own groups.
            for acked in [seq - 1, seq] {
                let b = vec![deq("queue://a", acked)];
                ok(&model, b.clone());
                pending.push(s.submit_lazy(b));
            }
        }
        if seq % 50 == 0 {
            for c in pending.drain(..) {
                c.wait_blocking().unwrap();
            }
        }
    }
    ok(&model, vec![enq("queue://a", 201, "last")]);
    ok(&s, vec![enq("queue://a", 201, "last")]);
    assert_eq!(s.recover().unwrap(), model.recover().unwrap());
    assert_eq!(seqs(&s, "queue://a", None, 10), vec![201]);
    s.close().unwrap();
    let s = t.open();
    assert_eq!(s.recover().unwrap(), model.recover().unwrap());
    s.close().unwrap();
}

fn acks_remove_messages_and_absent_acks_are_no_ops(db: Db) {
    let t = TestDb::new(db);
    let s = t.open();
    ok(
        &s,
        vec![
            enq("queue://a", 1, "a"),
            enq("queue://a", 2, "bb"),
            enq("queue://a", 3, "ccc"),
        ],
    );
    assert_eq!(s.usage_bytes(), 6);
    ok(
        &s,
        vec![
            deq("queue://a", 2),
            deq("queue://a", 99),
            deq("queue://zz", 1),
        ],
    );
    assert_eq!(seqs(&s, "queue://a", None, 10), vec![1, 3]);
    assert_eq!(s.usage_bytes(), 4);
    // Acking twice in one batch, and an enqueue acked in the same batch.
    ok(
        &s,
        vec![
            deq("queue://a", 1),
            deq("queue://a", 1),
            enq("queue://a", 4, "dddd"),
            deq("queue://a", 4),
        ],
    );
    assert_eq!(seqs(&s, "queue://a", None, 10), vec![3]);
    assert_eq!(s.usage_bytes(), 3);
    let r = s.recover().unwrap();
    assert_eq!(r.lists.len(), 1);
    assert_eq!((r.lists[0].count, r.lists[0].bytes), (1, 3));
    s.close().unwrap();
}

fn max_seq_survives_acking_the_newest_message_and_reopen(db: Db) {
    let t = TestDb::new(db);
    let s = t.open();
    ok(&s, (1..=3).map(|i| enq("queue://a", i, "m")).collect());
    ok(&s, vec![deq("queue://a", 3)]);
    let model = MemoryStore::new();
    ok(&model, (1..=3).map(|i| enq("queue://a", i, "m")).collect());
    ok(&model, vec![deq("queue://a", 3)]);
    assert_eq!(s.recover().unwrap(), model.recover().unwrap());
    assert_eq!(s.recover().unwrap().lists[0].max_seq, 3);
    s.close().unwrap();
    let s = t.open();
    assert_eq!(s.recover().unwrap(), model.recover().unwrap());
    s.close().unwrap();
}

fn reenqueueing_a_seq_replaces_it_and_keeps_usage_exact(db: Db) {
    let t = TestDb::new(db);
    let s = t.open();
    ok(
        &s,
        vec![enq("queue://a", 1, "short"), enq("queue://a", 2, "x")],
    );
    ok(&s, vec![enq("queue://a", 1, "much longer")]);
    let page = s.load("queue://a", None, 10).unwrap();
    assert_eq!(page[0].payload, "much longer");
    assert_eq!(s.usage_bytes(), 12);
    // The same seq twice within one group.
    ok(
        &s,
        vec![enq("queue://a", 5, "a"), enq("queue://a", 5, "bcd")],
    );
    assert_eq!(s.load("queue://a", Some(4), 10).unwrap()[0].payload, "bcd");
    assert_eq!(s.usage_bytes(), 15);
    s.close().unwrap();
    let s = t.open();
    assert_eq!(s.usage_bytes(), 15);
    s.close().unwrap();
}

fn durable_subscriptions_are_upserted_and_deleted_with_their_messages(db: Db) {
    let t = TestDb::new(db);
    let s = t.open();
    let d1 = "durable://client-1:sub-a";
    let d2 = "durable://client-1:sub-b";
    ok(&s, vec![Op::PutSubscription(sub(d2, "t.>", None))]);
    ok(&s, vec![Op::PutSubscription(sub(d1, "t.a", None))]);
    // Replacing keeps one record with the new fields.
    ok(
        &s,
        vec![Op::PutSubscription(sub(d1, "t.b", Some("color = 'red'")))],
    );
    ok(
        &s,
        vec![enq(d1, 1, "one"), enq(d1, 2, "two"), enq(d2, 1, "x")],
    );
    let r = s.recover().unwrap();
    assert_eq!(
        r.subscriptions,
        vec![sub(d1, "t.b", Some("color = 'red'")), sub(d2, "t.>", None)]
    );
    ok(&s, vec![Op::DeleteSubscription { list: d1.into() }]);
    let r = s.recover().unwrap();
    assert_eq!(r.subscriptions, vec![sub(d2, "t.>", None)]);
    assert_eq!(r.lists.len(), 1);
    assert_eq!(r.lists[0].list, d2);
    assert_eq!(s.usage_bytes(), 1);
    assert_eq!(t.count_msgs(&format!("container = '{d1}'")), 0);
    s.close().unwrap();
}

fn purge_forgets_the_list_and_its_max_seq(db: Db) {
    let t = TestDb::new(db);
    let s = t.open();
    ok(&s, (1..=5).map(|i| enq("queue://p", i, "12345")).collect());
    ok(&s, vec![enq("queue://q", 1, "k")]);
    ok(
        &s,
        vec![Op::Purge {
            list: "queue://p".into(),
        }],
    );
    assert_eq!(seqs(&s, "queue://p", None, 10), Vec::<u64>::new());
    assert_eq!(s.usage_bytes(), 1);
    // After a purge the list starts over: max_seq is the new one, as in the memory store.
    ok(&s, vec![enq("queue://p", 2, "n")]);
    let model = MemoryStore::new();
    ok(
        &model,
        (1..=5).map(|i| enq("queue://p", i, "12345")).collect(),
    );
    ok(&model, vec![enq("queue://q", 1, "k")]);
    ok(
        &model,
        vec![Op::Purge {
            list: "queue://p".into(),
        }],
    );
    ok(&model, vec![enq("queue://p", 2, "n")]);
    assert_eq!(state(&s), state(&model));
    s.close().unwrap();
    let s = t.open();
    assert_eq!(state(&s), state(&model));
    s.close().unwrap();
}

fn a_batch_whose_last_op_fails_leaves_nothing_and_fails_the_store_for_good(db: Db) {
    let t = TestDb::new(db);
    let s = t.open();
    ok(&s, vec![enq("queue://a", 1, "kept")]);
    // Make the batch's last op fail inside the database: its subscription table is gone.
    t.exec(&[format!("DROP TABLE {}", t.table("acks"))]);
    let err = s
        .submit(vec![
            enq("queue://a", 2, "lost"),
            enq("queue://b", 1, "lost"),
            deq("queue://a", 1),
            Op::PutSubscription(sub("durable://c:s", "t", None)),
        ])
        .wait_blocking()
        .unwrap_err();
    assert!(matches!(err, StoreError::Failed(_)), "{err:?}");
    // Nothing of the batch is in the database: the enqueues rolled back, the ack too.
    assert_eq!(t.count_msgs("1 = 1"), 1);
    assert_eq!(t.count_msgs("seq = 1 AND container = 'queue://a'"), 1);
    // Permanent, though the next batch would succeed in the database.
    let later = s.submit(vec![enq("queue://c", 1, "x")]).wait_blocking();
    assert!(matches!(later, Err(StoreError::Failed(_))), "{later:?}");
    assert_eq!(t.count_msgs("container = 'queue://c'"), 0);
    assert_eq!(s.usage_bytes(), 4);
    assert!(matches!(s.close(), Err(StoreError::Failed(_))));
}

fn recovers_counts_bytes_max_seq_and_subscriptions_after_reopen(db: Db) {
    let t = TestDb::new(db);
    let s = t.open();
    ok(
        &s,
        vec![
            Op::PutSubscription(sub("durable://c1:s1", "news.>", Some("a > 1"))),
            enq("queue://orders", 10, "0123456789"),
            enq("queue://orders", 11, "abc"),
            enq("queue://orders", 12, "zz"),
            enq("durable://c1:s1", 7, "sub-msg"),
        ],
    );
    ok(
        &s,
        vec![deq("queue://orders", 12), deq("queue://orders", 10)],
    );
    let before = state(&s);
    s.close().unwrap();
    assert!(matches!(
        s.submit(vec![enq("queue://x", 1, "x")]).wait_blocking(),
        Err(StoreError::Closed)
    ));
    let s = t.open();
    let after = state(&s);
    assert_eq!(after, before);
    let r = after.0;
    assert_eq!(r.lists.len(), 2);
    let orders = r.lists.iter().find(|l| l.list == "queue://orders").unwrap();
    assert_eq!((orders.count, orders.bytes, orders.max_seq), (1, 3, 12));
    assert_eq!(
        r.subscriptions,
        vec![sub("durable://c1:s1", "news.>", Some("a > 1"))]
    );
    assert_eq!(s.usage_bytes(), 3 + 7);
    // Writing goes on after a reopen.
    ok(&s, vec![enq("queue://orders", 13, "n")]);
    assert_eq!(seqs(&s, "queue://orders", None, 10), vec![11, 13]);
    s.close().unwrap();
}

fn ten_mib_message_round_trips_across_reopen(db: Db) {
    let t = TestDb::new(db);
    let s = t.open();
    let payload: Vec<u8> = (0..10 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let payload = Bytes::from(payload);
    ok(
        &s,
        vec![
            Op::Enqueue {
                list: "queue://big".into(),
                seq: 1,
                payload: payload.clone(),
            },
            enq("queue://big", 2, "small"),
        ],
    );
    s.close().unwrap();
    let s = t.open();
    let page = s.load("queue://big", None, 10).unwrap();
    assert_eq!(page.len(), 2);
    assert!(
        page[0].payload == payload,
        "10 MiB payload differs after reload"
    );
    assert_eq!(s.usage_bytes(), payload.len() as u64 + 5);
    // Over the database's limit: this batch is refused, the store is fine.
    let limit = s.payload_bytes_max();
    if limit < 64 * 1024 * 1024 {
        let too_big = Bytes::from(vec![0u8; limit as usize + 1]);
        let err = s
            .submit(vec![Op::Enqueue {
                list: "queue://big".into(),
                seq: 3,
                payload: too_big,
            }])
            .wait_blocking()
            .unwrap_err();
        assert!(matches!(err, StoreError::Config(_)), "{err:?}");
        ok(&s, vec![enq("queue://big", 4, "after")]);
    }
    s.close().unwrap();
}

fn five_hundred_lists_in_one_batch_recover(db: Db) {
    let t = TestDb::new(db);
    let s = t.open();
    let batch: Batch = (0..500)
        .flat_map(|i| {
            let list = format!("queue://dest.{i:03}");
            vec![enq(&list, 1, "first"), enq(&list, 2, "second")]
        })
        .collect();
    ok(&s, batch);
    // 1000 acks (half of them of absent messages): more than one multi-row DELETE.
    ok(
        &s,
        (0..500)
            .flat_map(|i| {
                let list = format!("queue://dest.{i:03}");
                vec![deq(&list, 1), deq(&list, 99)]
            })
            .collect(),
    );
    s.close().unwrap();
    let s = t.open();
    let r = s.recover().unwrap();
    assert_eq!(r.lists.len(), 500);
    assert!(r
        .lists
        .iter()
        .all(|l| l.count == 1 && l.bytes == 6 && l.max_seq == 2));
    assert_eq!(r.lists[0].list, "queue://dest.000");
    assert_eq!(s.usage_bytes(), 500 * 6);
    s.close().unwrap();
}

/// Holds the writer's first group until opened, so every other batch is queued by then.
#[derive(Debug)]
struct Gate {
    first: Mutex<Option<mpsc::Receiver<()>>>,
}

impl Fence for Gate {
    fn check(&self) -> Result<(), String> {
        let rx = self.first.lock().unwrap().take();
        if let Some(rx) = rx {
            rx.recv().map_err(|_| "gate dropped".to_string())?;
        }
        Ok(())
    }
}

fn concurrent_submitters_share_commits(db: Db) {
    const SUBMITTERS: u64 = 16;
    const BATCHES_EACH: u64 = 25;
    let t = TestDb::new(db);
    let (open_gate, gate) = mpsc::channel();
    let mut cfg = t.config();
    cfg.fence = Some(Arc::new(Gate {
        first: Mutex::new(Some(gate)),
    }));
    let s = Arc::new(SqlStore::open(cfg).unwrap());
    let submitters: Vec<_> = (0..SUBMITTERS)
        .map(|p| {
            let s = s.clone();
            std::thread::spawn(move || -> Vec<Completion> {
                (1..=BATCHES_EACH)
                    .map(|i| {
                        let list = format!("queue://p{p}");
                        s.submit(vec![
                            enq(&list, i, "payload"),
                            enq("queue://shared", p * 100 + i, "s"),
                        ])
                    })
                    .collect()
            })
        })
        .collect();
    let completions: Vec<Completion> = submitters
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    open_gate.send(()).unwrap();
    for c in completions {
        c.wait_blocking().unwrap();
    }
    let stats = s.stats();
    let batches = SUBMITTERS * BATCHES_EACH;
    assert_eq!(stats.batches, batches);
    // The first group (whatever was queued when the writer first looked) was held at the
    // gate; everything else was queued by then and fits one group (4096 batches, 4 MiB). So
    // one or two transactions committed all 400 batches.
    assert!((1..=2).contains(&stats.commits), "{stats:?}");
    let r = s.recover().unwrap();
    assert_eq!(r.lists.len() as u64, SUBMITTERS + 1);
    let shared = r.lists.iter().find(|l| l.list == "queue://shared").unwrap();
    assert_eq!(shared.count, batches);
    s.close().unwrap();
}

fn stale_fence_epoch_fails_the_batch_and_leaves_no_rows(db: Db) {
    let t = TestDb::new(db);
    t.open().close().unwrap(); // creates the tables and lock rows
    t.set_epoch(1);
    let mut cfg = t.config();
    cfg.fence_epoch = Some(1);
    let s = SqlStore::open(cfg).unwrap();
    ok(&s, vec![enq("queue://a", 1, "mine")]);
    // Another broker takes over and raises the epoch.
    t.set_epoch(2);
    let err = s
        .submit(vec![enq("queue://a", 2, "zombie"), deq("queue://a", 1)])
        .wait_blocking()
        .unwrap_err();
    let StoreError::Failed(msg) = &err else {
        panic!("expected Failed, got {err:?}")
    };
    assert!(msg.starts_with("fenced:"), "{msg}");
    assert!(
        msg.contains("epoch is 2") && msg.contains("epoch is 1"),
        "{msg}"
    );
    assert_eq!(t.count_msgs("seq = 2"), 0);
    assert_eq!(t.count_msgs("seq = 1"), 1);
    // For good, even if the epoch came back.
    t.set_epoch(1);
    let later = s.submit(vec![enq("queue://a", 3, "x")]).wait_blocking();
    assert!(matches!(later, Err(StoreError::Failed(_))), "{later:?}");
    assert_eq!(t.count_msgs("seq = 3"), 0);
}

fn opening_with_a_superseded_epoch_is_refused(db: Db) {
    let t = TestDb::new(db);
    t.open().close().unwrap();
    t.set_epoch(5);
    let mut cfg = t.config();
    cfg.fence_epoch = Some(4);
    match SqlStore::open(cfg) {
        Err(StoreError::Failed(msg)) => {
            assert!(msg.starts_with("fenced:") && msg.contains('5'), "{msg}")
        }
        other => panic!("expected a fenced open, got {other:?}"),
    }
}

#[derive(Debug, Default)]
struct Switch(std::sync::atomic::AtomicBool);

impl Fence for Switch {
    fn check(&self) -> Result<(), String> {
        if self.0.load(Ordering::SeqCst) {
            Err("lock file replaced".into())
        } else {
            Ok(())
        }
    }
}

fn a_failing_fence_check_fails_the_store(db: Db) {
    let t = TestDb::new(db);
    let fence = Arc::new(Switch::default());
    let mut cfg = t.config();
    cfg.fence = Some(fence.clone());
    let s = SqlStore::open(cfg).unwrap();
    ok(&s, vec![enq("queue://a", 1, "x")]);
    fence.0.store(true, Ordering::SeqCst);
    let err = s.submit(vec![enq("queue://a", 2, "y")]).wait_blocking();
    assert!(
        matches!(&err, Err(StoreError::Failed(m)) if m == "fenced: lock file replaced"),
        "{err:?}"
    );
    assert_eq!(t.count_msgs("seq = 2"), 0);
    fence.0.store(false, Ordering::SeqCst);
    assert!(s
        .submit(vec![enq("queue://a", 3, "z")])
        .wait_blocking()
        .is_err());
}

fn close_drains_queued_batches_then_refuses_writes(db: Db) {
    let t = TestDb::new(db);
    let s = t.open();
    let pending: Vec<Completion> = (1..=200)
        .map(|i| s.submit(vec![enq("queue://d", i, "q")]))
        .collect();
    s.close().unwrap();
    for c in pending {
        c.wait_blocking().unwrap();
    }
    assert!(matches!(
        s.submit(vec![enq("queue://d", 201, "late")])
            .wait_blocking(),
        Err(StoreError::Closed)
    ));
    // Reads still answer after close, as in the memory and journal stores.
    assert_eq!(s.load("queue://d", Some(198), 10).unwrap().len(), 2);
    assert_eq!(s.recover().unwrap().lists[0].count, 200);
    assert_eq!(t.count_msgs("container = 'queue://d'"), 200);
    s.close().unwrap();
}

fn two_stores_creating_the_same_tables_at_once_both_open(db: Db) {
    let t = Arc::new(TestDb::new(db));
    let openers: Vec<_> = (0..2)
        .map(|_| {
            let cfg = t.config();
            std::thread::spawn(move || SqlStore::open(cfg).map(|s| s.close()))
        })
        .collect();
    for o in openers {
        o.join().unwrap().unwrap().unwrap();
    }
    let cast = if db == Db::MySql { "SIGNED" } else { "BIGINT" };
    let rows = t.query_i64(&format!(
        "SELECT CAST(COUNT(*) AS {cast}) FROM {}",
        t.table("lock")
    ));
    assert_eq!(rows, 2);
}

fn lock_table_has_the_shared_schema_and_both_rows(db: Db) {
    let t = TestDb::new(db);
    t.open().close().unwrap();
    let cast = if db == Db::MySql { "SIGNED" } else { "BIGINT" };
    // Every column of the shared schema, with the initial values of a free lock.
    let free = t.query_i64(&format!(
        "SELECT CAST(COUNT(*) AS {cast}) FROM {} WHERE id IN (1, 2) AND broker_name IS NULL \
         AND epoch = 0 AND expiry_ms = 0 AND time = 0",
        t.table("lock")
    ));
    assert_eq!(free, 2);
    // A second open leaves a taken lease alone.
    t.exec(&[format!(
        "UPDATE {} SET broker_name = 'b1', epoch = 3, expiry_ms = 99, time = 98 WHERE id = 1",
        t.table("lock")
    )]);
    t.open().close().unwrap();
    let kept = t.query_i64(&format!(
        "SELECT CAST(epoch AS {cast}) FROM {} WHERE id = 1 AND broker_name = 'b1'",
        t.table("lock")
    ));
    assert_eq!(kept, 3);
}

fn works_when_called_from_inside_a_tokio_runtime(db: Db) {
    let t = TestDb::new(db);
    let (config, reopen_config) = (t.config(), t.config());
    // The broker opens, loads and recovers synchronously from async code on its own runtime
    // (here a current-thread one, the least forgiving): the store must never block_on it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let s = SqlStore::open(config).unwrap();
        s.submit(vec![enq("queue://rt", 1, "async")]).await.unwrap();
        let page = s.load("queue://rt", None, 10).unwrap();
        assert_eq!(page[0].payload, "async");
        assert_eq!(s.recover().unwrap().lists.len(), 1);
        s.close().unwrap();
        let s = SqlStore::open(reopen_config).unwrap();
        assert_eq!(s.usage_bytes(), 5);
        // Dropped without close, inside the runtime.
        drop(s);
    });
}

fn values_the_database_cannot_hold_refuse_only_their_batch(db: Db) {
    let t = TestDb::new(db);
    let s = t.open();
    let long_key = format!("queue://{}", "k".repeat(300));
    let mut long_selector = sub("durable://c:s", "t", None);
    long_selector.selector = Some("x".repeat(70_000));
    for bad in [
        vec![enq("queue://ok", 1, "x"), enq(&long_key, 1, "x")],
        vec![enq("queue://nul\0", 1, "x")],
        vec![Op::PutSubscription(long_selector)],
        vec![enq("queue://ok", u64::MAX, "x")],
    ] {
        let err = s.submit(bad).wait_blocking().unwrap_err();
        assert!(matches!(err, StoreError::Config(_)), "{err:?}");
    }
    // Nothing of the refused batches was written, and the store still works.
    assert_eq!(t.count_msgs("1 = 1"), 0);
    ok(&s, vec![enq("queue://ok", 1, "fine")]);
    // 250 characters fit, multi-byte ones included.
    let key = format!("queue://{}", "é".repeat(242));
    assert_eq!(key.chars().count(), 250);
    ok(&s, vec![enq(&key, 1, "wide")]);
    assert_eq!(s.load(&key, None, 1).unwrap()[0].payload, "wide");
    s.close().unwrap();
}

#[test]
fn missing_tables_without_create_tables_on_startup_fail_the_open() {
    let t = TestDb::new(Db::Sqlite);
    let mut cfg = t.config();
    cfg.create_tables_on_startup = false;
    let err = SqlStore::open(cfg).unwrap_err();
    assert!(matches!(err, StoreError::Io { .. }), "{err:?}");
    t.open().close().unwrap();
    let mut cfg = t.config();
    cfg.create_tables_on_startup = false;
    SqlStore::open(cfg).unwrap().close().unwrap();
}

#[test]
fn an_unreachable_database_fails_the_open_with_an_error() {
    let mut cfg = SqlConfig::new("postgres://postgres@127.0.0.1:1/nothing");
    cfg.connect_timeout_ms = 5_000;
    let err = SqlStore::open(cfg).unwrap_err();
    assert!(matches!(err, StoreError::Io { .. }), "{err:?}");
}

/// A small deterministic generator (xorshift), so a failure names its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

const LISTS: [&str; 4] = ["queue://a", "queue://b", "durable://c:s1", "durable://c:s2"];

fn random_batch(rng: &mut Rng, next_seq: &mut [u64; 4]) -> Batch {
    (0..1 + rng.below(4))
        .map(|_| {
            let l = rng.below(4) as usize;
            let list = LISTS[l];
            match rng.below(100) {
                0..=54 => {
                    let seq = next_seq[l];
                    next_seq[l] += 1;
                    let len = 1 + rng.below(300) as usize;
                    Op::Enqueue {
                        list: list.to_string(),
                        seq,
                        payload: Bytes::from(vec![b'a' + (seq % 26) as u8; len]),
                    }
                }
                55..=84 => deq(list, 1 + rng.below(next_seq[l])),
                85..=87 => {
                    // Re-enqueue an earlier seq (replace), as a relocation would.
                    let seq = 1 + rng.below(next_seq[l]);
                    enq(list, seq, "replaced")
                }
                88..=92 => Op::PutSubscription(sub(
                    LISTS[2 + rng.below(2) as usize],
                    "t.>",
                    if rng.below(2) == 0 {
                        None
                    } else {
                        Some("x = 1")
                    },
                )),
                93..=95 => Op::DeleteSubscription {
                    list: LISTS[2 + rng.below(2) as usize].to_string(),
                },
                _ => Op::Purge {
                    list: list.to_string(),
                },
            }
        })
        .collect()
}

fn matches_the_memory_store_on_random_ops_through_reopens(db: Db) {
    for seed in 1..=2u64 {
        let t = TestDb::new(db);
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut next_seq = [1u64; 4];
        let model = MemoryStore::new();
        let mut store = t.open();
        for step in 0..200 {
            let batch = random_batch(&mut rng, &mut next_seq);
            model.submit(batch.clone()).wait_blocking().unwrap();
            // Several batches in flight at once, so groups hold more than one.
            let c = store.submit(batch);
            if step % 4 == 3 {
                c.wait_blocking().unwrap();
                assert_eq!(state(&store), state(&model), "seed {seed} step {step}");
            } else {
                drop(c);
            }
            if step % 60 == 59 {
                store.close().unwrap();
                store = t.open();
                assert_eq!(
                    state(&store),
                    state(&model),
                    "seed {seed} after reopen {step}"
                );
            }
        }
        store.close().unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL only: the database drops the store's connections.

#[test]
fn postgres_store_fails_for_good_when_its_connections_are_terminated() {
    let t = TestDb::new(Db::Postgres);
    let s = t.open();
    ok(&s, vec![enq("queue://a", 1, "before")]);
    // Only this test's connections carry its prefix as application_name; the timeout makes
    // the call wait until they are gone, so the next group cannot race the termination.
    t.exec(&[format!(
        "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity \
         WHERE application_name = '{}' AND pid <> pg_backend_pid()",
        t.prefix
    )]);
    let err = s.submit(vec![enq("queue://a", 2, "after")]).wait_blocking();
    assert!(matches!(err, Err(StoreError::Failed(_))), "{err:?}");
    assert_eq!(t.count_msgs("seq = 2"), 0);
    // The database is fine; the store stays failed until reopened.
    let later = s.submit(vec![enq("queue://a", 3, "later")]).wait_blocking();
    assert!(matches!(later, Err(StoreError::Failed(_))), "{later:?}");
    assert!(s.close().is_err());
    let s = t.open();
    assert_eq!(seqs(&s, "queue://a", None, 10), vec![1]);
    s.close().unwrap();
}

/// Waits (boundedly) until `want` connections of this test wait on a row lock.
async fn until_waiting_on_locks(c: &mut sqlx::PgConnection, app: &str, want: i64) {
    for _ in 0..3_000 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE application_name = $1 AND wait_event_type = 'Lock'",
        )
        .bind(app)
        .fetch_one(&mut *c)
        .await
        .unwrap();
        if waiting == want {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("never saw {want} connections waiting on a lock");
}

#[test]
fn postgres_takeover_waits_for_the_in_flight_group_and_then_fences_it() {
    let t = TestDb::new(Db::Postgres);
    t.open().close().unwrap();
    t.set_epoch(1);
    let mut cfg = t.config();
    cfg.fence_epoch = Some(1);
    let s = SqlStore::open(cfg).unwrap();
    let msgs = t.table("msgs");
    let lock = t.table("lock");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // A holds an uncommitted row with the key the store is about to insert, so the store's
        // group stops mid-transaction, after its fence read took the share lock.
        let mut a = sqlx::PgConnection::connect(&t.url).await.unwrap();
        sqlx::raw_sql("BEGIN").execute(&mut a).await.unwrap();
        sqlx::raw_sql(&format!(
            "INSERT INTO {msgs} (container, seq, msg) VALUES ('queue://race', 1, 'a')"
        ))
        .execute(&mut a)
        .await
        .unwrap();
        let in_flight = s.submit(vec![enq("queue://race", 1, "store")]);
        let mut watcher = sqlx::PgConnection::connect(&t.url).await.unwrap();
        until_waiting_on_locks(&mut watcher, &t.prefix, 1).await;
        // The new master raises the epoch: it must wait for the in-flight group.
        let url = t.url.clone();
        let takeover = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut b = sqlx::PgConnection::connect(&url).await.unwrap();
                sqlx::raw_sql(&format!("UPDATE {lock} SET epoch = 2 WHERE id = 1"))
                    .execute(&mut b)
                    .await
                    .unwrap();
            });
        });
        until_waiting_on_locks(&mut watcher, &t.prefix, 2).await;
        assert!(!takeover.is_finished());
        sqlx::raw_sql("ROLLBACK").execute(&mut a).await.unwrap();
        // The group began under epoch 1 and commits; only then does the takeover go through.
        in_flight.await.unwrap();
        takeover.join().unwrap();
    });
    assert_eq!(t.count_msgs("container = 'queue://race'"), 1);
    // The next group sees epoch 2.
    let err = s
        .submit(vec![enq("queue://race", 2, "late")])
        .wait_blocking();
    assert!(
        matches!(&err, Err(StoreError::Failed(m)) if m.starts_with("fenced:")),
        "{err:?}"
    );
    assert_eq!(t.count_msgs("container = 'queue://race'"), 1);
}

/// Waits (boundedly) until `want` statements on this test's tables are executing. Here each
/// such statement is a one-row write that can only be held up by a row lock. (InnoDB's own
/// lock-wait tables are a cached snapshot in MariaDB and missed waits in practice.)
async fn until_mysql_statements_blocked(c: &mut sqlx::MySqlConnection, prefix: &str, want: i64) {
    for _ in 0..3_000 {
        let executing: i64 = sqlx::query_scalar(
            "SELECT CAST(COUNT(*) AS SIGNED) FROM information_schema.processlist \
             WHERE command IN ('Query', 'Execute') AND info LIKE ?",
        )
        .bind(format!("%{prefix}%"))
        .fetch_one(&mut *c)
        .await
        .unwrap();
        if executing == want {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("never saw {want} statements blocked");
}

#[test]
fn mysql_takeover_waits_for_the_in_flight_group_and_then_fences_it() {
    let t = TestDb::new(Db::MySql);
    t.open().close().unwrap();
    t.set_epoch(1);
    let mut cfg = t.config();
    cfg.fence_epoch = Some(1);
    let s = SqlStore::open(cfg).unwrap();
    let msgs = t.table("msgs");
    let lock = t.table("lock");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // A holds an uncommitted row with the key the store is about to insert, so the store's
        // group stops mid-transaction, after its fence read took the share lock.
        let mut a = sqlx::MySqlConnection::connect(&t.url).await.unwrap();
        sqlx::raw_sql("START TRANSACTION")
            .execute(&mut a)
            .await
            .unwrap();
        sqlx::raw_sql(&format!(
            "INSERT INTO {msgs} (container, seq, msg) VALUES ('queue://race', 1, 'a')"
        ))
        .execute(&mut a)
        .await
        .unwrap();
        let in_flight = s.submit(vec![enq("queue://race", 1, "store")]);
        let mut watcher = sqlx::MySqlConnection::connect(&t.url).await.unwrap();
        until_mysql_statements_blocked(&mut watcher, &t.prefix, 1).await;
        // The new master raises the epoch: it must wait for the in-flight group.
        let url = t.url.clone();
        let takeover = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut b = sqlx::MySqlConnection::connect(&url).await.unwrap();
                sqlx::raw_sql(&format!("UPDATE {lock} SET epoch = 2 WHERE id = 1"))
                    .execute(&mut b)
                    .await
                    .unwrap();
            });
        });
        until_mysql_statements_blocked(&mut watcher, &t.prefix, 2).await;
        assert!(!takeover.is_finished());
        sqlx::raw_sql("ROLLBACK").execute(&mut a).await.unwrap();
        // The group began under epoch 1 and commits; only then does the takeover go through.
        in_flight.await.unwrap();
        takeover.join().unwrap();
    });
    assert_eq!(t.count_msgs("container = 'queue://race'"), 1);
    // The next group sees epoch 2.
    let err = s
        .submit(vec![enq("queue://race", 2, "late")])
        .wait_blocking();
    assert!(
        matches!(&err, Err(StoreError::Failed(m)) if m.starts_with("fenced:")),
        "{err:?}"
    );
    assert_eq!(t.count_msgs("container = 'queue://race'"), 1);
}

/// Says yes `yes` times, then no.
#[derive(Debug)]
struct Countdown(AtomicU64);

impl Fence for Countdown {
    fn check(&self) -> Result<(), String> {
        let left = self.0.load(Ordering::SeqCst);
        if left == 0 {
            return Err("deposed".into());
        }
        self.0.store(left - 1, Ordering::SeqCst);
        Ok(())
    }
}

#[test]
fn a_fence_failing_right_after_a_commit_confirms_nothing_of_that_group() {
    let t = TestDb::new(Db::Sqlite);
    let mut cfg = t.config();
    // Group 1: checked before and after its commit; group 2: before only, then deposed.
    cfg.fence = Some(Arc::new(Countdown(AtomicU64::new(3))));
    let s = SqlStore::open(cfg).unwrap();
    ok(&s, vec![enq("queue://a", 1, "x")]);
    let err = s.submit(vec![enq("queue://a", 2, "y")]).wait_blocking();
    assert!(
        matches!(&err, Err(StoreError::Failed(m)) if m == "fenced: deposed"),
        "{err:?}"
    );
    // Committed but never confirmed; usage counts confirmed groups only.
    assert_eq!(t.count_msgs("seq = 2"), 1);
    assert_eq!(s.usage_bytes(), 1);
    assert!(s
        .submit(vec![enq("queue://a", 3, "z")])
        .wait_blocking()
        .is_err());
}

#[test]
fn postgres_group_held_past_its_timeout_fails_the_store() {
    let t = TestDb::new(Db::Postgres);
    t.open().close().unwrap();
    t.set_epoch(1);
    let mut cfg = t.config();
    cfg.fence_epoch = Some(1);
    cfg.group_timeout_ms = 300;
    let s = SqlStore::open(cfg).unwrap();
    let lock = t.table("lock");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // Another session holds the lease row exclusively (as ActiveMQ's DatabaseLocker does
        // for its whole life): the group's fence read can never get its share lock.
        let mut holder = sqlx::PgConnection::connect(&t.url).await.unwrap();
        sqlx::raw_sql("BEGIN").execute(&mut holder).await.unwrap();
        sqlx::raw_sql(&format!("SELECT epoch FROM {lock} WHERE id = 1 FOR UPDATE"))
            .execute(&mut holder)
            .await
            .unwrap();
        let err = s.submit(vec![enq("queue://a", 1, "held")]).await;
        assert!(
            matches!(&err, Err(StoreError::Failed(m)) if m.contains("did not finish in time")),
            "{err:?}"
        );
        sqlx::raw_sql("ROLLBACK")
            .execute(&mut holder)
            .await
            .unwrap();
    });
    assert_eq!(t.count_msgs("1 = 1"), 0);
    let later = s.submit(vec![enq("queue://a", 2, "later")]).wait_blocking();
    assert!(matches!(later, Err(StoreError::Failed(_))), "{later:?}");
}
