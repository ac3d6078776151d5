//! Replication without ZooKeeper: a `ReplicatingStore` master and `follow` slaves on loopback,
//! each over its own journal. Sync-mode confirmation, streaming catch-up, full copy that
//! discards a deposed master's divergent suffix, token authentication, deposition.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferromq_ha_zk::position::read_position;
use ferromq_ha_zk::slave::{follow, FollowParams};
use ferromq_ha_zk::{Position, ReplicatingStore, SyncMode, SyncPolicy};
use ferromq_store::{JournalConfig, JournalStore, MessageStore, Op};
use tokio::net::TcpListener;
use tokio::sync::watch;

const T: Duration = Duration::from_secs(20);

fn journal(dir: &std::path::Path) -> Arc<dyn MessageStore> {
    Arc::new(JournalStore::open(dir, JournalConfig::default()).unwrap())
}

fn enq(seq: u64, body: &str) -> Vec<Op> {
    vec![Op::Enqueue {
        list: "queue://x".into(),
        seq,
        payload: Bytes::from(body.to_string()),
    }]
}

fn bodies(s: &dyn MessageStore) -> Vec<String> {
    s.load("queue://x", None, 100_000)
        .unwrap()
        .into_iter()
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect()
}

fn master(
    store: Arc<dyn MessageStore>,
    epoch: u64,
    mode: SyncMode,
) -> (ReplicatingStore, Arc<AtomicBool>) {
    let start = read_position(&*store).unwrap();
    let healthy = Arc::new(AtomicBool::new(true));
    let rs = ReplicatingStore::new(
        store,
        start,
        epoch,
        SyncPolicy::new(mode, 3),
        "g".into(),
        "token".into(),
        healthy.clone(),
    );
    (rs, healthy)
}

async fn serve(rs: &ReplicatingStore) -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    rs.serve(l);
    addr
}

struct Slave {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<(Position, Result<(), ferromq_ha_zk::ZkError>)>,
}

fn start_slave(store: Arc<dyn MessageStore>, addr: &str, epoch: u64, token: &str) -> Slave {
    let (stop, mut rx) = watch::channel(false);
    let params = FollowParams {
        addr: addr.into(),
        master_epoch: epoch,
        token: token.into(),
        group: "g".into(),
        member: "m-test".into(),
        tls: None,
    };
    let task = tokio::spawn(async move {
        let start = read_position(&*store).unwrap();
        follow(&store, start, &params, &mut rx).await
    });
    Slave { stop, task }
}

impl Slave {
    async fn stop(self) -> Position {
        let _ = self.stop.send(true);
        let (pos, r) = tokio::time::timeout(T, self.task).await.unwrap().unwrap();
        r.unwrap();
        pos
    }
}

async fn wait_no_slaves(rs: &ReplicatingStore) {
    for _ in 0..2000 {
        if rs.connected_slaves() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("a stopped slave is still registered");
}

async fn wait_slaves_at(rs: &ReplicatingStore, lsn: u64, n: usize) {
    for _ in 0..2000 {
        if rs.slaves_at(lsn) >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("slaves never reached lsn {lsn}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_disk_confirms_only_once_a_slave_has_it_on_disk() {
    let d = tempfile::tempdir().unwrap();
    let m = journal(&d.path().join("m"));
    let s = journal(&d.path().join("s"));
    let (rs, _) = master(m.clone(), 1, SyncMode::QuorumDisk);
    let addr = serve(&rs).await;

    let first = rs.submit(enq(1, "m-1"));
    tokio::pin!(first);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut first)
            .await
            .is_err(),
        "quorum_disk must not confirm a write no slave has"
    );
    let slave = start_slave(s.clone(), &addr, 1, "token");
    tokio::time::timeout(T, first).await.unwrap().unwrap();
    let mut pending = Vec::new();
    for i in 2..=100u64 {
        pending.push(rs.submit(enq(i, &format!("m-{i}"))));
    }
    for c in pending {
        tokio::time::timeout(T, c).await.unwrap().unwrap();
    }
    assert_eq!(rs.last_position(), Position { epoch: 1, lsn: 100 });
    let pos = slave.stop().await;
    assert_eq!(pos, Position { epoch: 1, lsn: 100 });
    assert_eq!(
        read_position(&*s).unwrap(),
        pos,
        "position stored with the data"
    );
    assert_eq!(bodies(&*s), bodies(&*m));
    assert_eq!(bodies(&*s).len(), 100);
    // The reserved position list never reaches the broker.
    assert!(rs
        .recover()
        .unwrap()
        .lists
        .iter()
        .all(|l| !l.list.starts_with("replication://")));
    assert_eq!(rs.full_copies(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_disk_confirms_alone_and_a_returning_slave_streams_from_its_position() {
    let d = tempfile::tempdir().unwrap();
    let m = journal(&d.path().join("m"));
    let s = journal(&d.path().join("s"));
    let (rs, _) = master(m.clone(), 1, SyncMode::LocalDisk);
    let addr = serve(&rs).await;
    for i in 1..=10u64 {
        tokio::time::timeout(T, rs.submit(enq(i, &format!("a-{i}"))))
            .await
            .unwrap()
            .unwrap();
    }
    let slave = start_slave(s.clone(), &addr, 1, "token");
    wait_slaves_at(&rs, 10, 1).await;
    slave.stop().await;
    wait_no_slaves(&rs).await;
    // Written while the slave is away: it must catch up from the ring, not by a copy.
    for i in 11..=30u64 {
        tokio::time::timeout(T, rs.submit(enq(i, &format!("a-{i}"))))
            .await
            .unwrap()
            .unwrap();
    }
    let slave = start_slave(s.clone(), &addr, 1, "token");
    wait_slaves_at(&rs, 30, 1).await;
    let pos = slave.stop().await;
    wait_no_slaves(&rs).await;
    assert_eq!(pos.lsn, 30);
    // Back again, already up to date: it must get only what comes next (a resent entry
    // would be out of order and break the stream).
    let slave = start_slave(s.clone(), &addr, 1, "token");
    wait_slaves_at(&rs, 30, 1).await;
    rs.submit(enq(31, "a-31")).await.unwrap();
    wait_slaves_at(&rs, 31, 1).await;
    let pos = slave.stop().await;
    assert_eq!(pos.lsn, 31);
    assert_eq!(bodies(&*s), bodies(&*m));
    assert_eq!(
        rs.full_copies(),
        0,
        "a slave whose entry is in the ring streams"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_masters_divergent_suffix_is_discarded_by_a_full_copy() {
    let d = tempfile::tempdir().unwrap();
    let old = journal(&d.path().join("old"));
    let new = journal(&d.path().join("new"));
    let mid = journal(&d.path().join("mid"));
    // Epoch 1: entries 1..3 reach everyone.
    for s in [&old, &new, &mid] {
        let (rs, _) = master(s.clone(), 1, SyncMode::LocalDisk);
        for i in 1..=3u64 {
            rs.submit(enq(i, &format!("e1-{i}"))).await.unwrap();
        }
        rs.depose("test");
    }
    // The old master of epoch 1 wrote two more that nobody else got (never quorum-confirmed).
    {
        let (rs, _) = master(old.clone(), 1, SyncMode::LocalDisk);
        for i in 4..=5u64 {
            rs.submit(enq(i, &format!("lost-{i}"))).await.unwrap();
        }
        rs.depose("test");
    }
    assert_eq!(read_position(&*old).unwrap(), Position { epoch: 1, lsn: 5 });
    // Epoch 2 on the new master: different entries at lsn 4..6.
    let (rs, _) = master(new.clone(), 2, SyncMode::LocalDisk);
    for i in 4..=6u64 {
        rs.submit(enq(i, &format!("e2-{i}"))).await.unwrap();
    }
    let addr = serve(&rs).await;

    let slave = start_slave(old.clone(), &addr, 2, "token");
    wait_slaves_at(&rs, 6, 1).await;
    let pos = slave.stop().await;
    wait_no_slaves(&rs).await;
    assert_eq!(pos, Position { epoch: 2, lsn: 6 });
    assert_eq!(
        bodies(&*old),
        vec!["e1-1", "e1-2", "e1-3", "e2-4", "e2-5", "e2-6"],
        "the divergent suffix must be gone"
    );
    assert_eq!(rs.full_copies(), 1);

    // A slave whose last entry is the master's starting point streams, no copy.
    let slave = start_slave(mid.clone(), &addr, 2, "token");
    wait_slaves_at(&rs, 6, 1).await;
    slave.stop().await;
    wait_no_slaves(&rs).await;
    assert_eq!(bodies(&*mid), bodies(&*new));
    assert_eq!(rs.full_copies(), 1);

    // Writes after the copy keep flowing to the copied slave.
    let slave = start_slave(old.clone(), &addr, 2, "token");
    rs.submit(enq(7, "e2-7")).await.unwrap();
    wait_slaves_at(&rs, 7, 1).await;
    slave.stop().await;
    assert_eq!(bodies(&*old), bodies(&*new));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slave_with_the_wrong_token_or_epoch_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let (rs, _) = master(journal(&d.path().join("m")), 3, SyncMode::LocalDisk);
    let addr = serve(&rs).await;
    let s = journal(&d.path().join("s"));
    for (token, epoch, why) in [("nope", 3, "token"), ("token", 2, "epoch")] {
        let slave = start_slave(s.clone(), &addr, epoch, token);
        let (_, r) = tokio::time::timeout(T, slave.task).await.unwrap().unwrap();
        let e = r.unwrap_err().to_string();
        assert!(e.contains("refused") && e.contains(why), "{e}");
    }
    assert_eq!(rs.connected_slaves(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_master_fails_pending_and_later_writes() {
    let d = tempfile::tempdir().unwrap();
    let (rs, _) = master(journal(&d.path().join("m")), 1, SyncMode::QuorumDisk);
    let pending = rs.submit(enq(1, "never"));
    rs.depose("ZooKeeper session expired");
    assert!(tokio::time::timeout(T, pending).await.unwrap().is_err());
    assert!(rs.submit(enq(2, "after")).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_master_confirms_nothing_until_resumed() {
    let d = tempfile::tempdir().unwrap();
    let (rs, _) = master(journal(&d.path().join("m")), 1, SyncMode::LocalDisk);
    rs.set_suspended(true);
    let c = rs.submit(enq(1, "held"));
    tokio::pin!(c);
    assert!(tokio::time::timeout(Duration::from_millis(300), &mut c)
        .await
        .is_err());
    rs.set_suspended(false);
    tokio::time::timeout(T, c).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoted_slave_keeps_what_it_received_so_a_lagging_slave_streams_instead_of_copying() {
    use ferromq_ha_zk::master::EntryRing;
    use ferromq_ha_zk::slave::follow_with_ring;
    let d = tempfile::tempdir().unwrap();
    let m = journal(&d.path().join("m"));
    let a = journal(&d.path().join("a"));
    let b = journal(&d.path().join("b"));
    let (rs1, _) = master(m, 1, SyncMode::QuorumDisk);
    let addr1 = serve(&rs1).await;

    // A keeps a ring of what it receives; B is a plain slave.
    let ring = Arc::new(parking_lot::Mutex::new(EntryRing::default()));
    let (stop_a, mut rx_a) = watch::channel(false);
    let task_a = {
        let (a, ring) = (a.clone(), ring.clone());
        let params = FollowParams {
            addr: addr1.clone(),
            master_epoch: 1,
            token: "token".into(),
            group: "g".into(),
            member: "m-a".into(),
            tls: None,
        };
        tokio::spawn(async move {
            let start = read_position(&*a).unwrap();
            follow_with_ring(&a, start, &params, &mut rx_a, Some(&ring)).await
        })
    };
    let sb = start_slave(b.clone(), &addr1, 1, "token");
    for i in 1..=10 {
        tokio::time::timeout(T, rs1.submit(enq(i, &format!("m-{i}"))))
            .await
            .unwrap()
            .unwrap();
    }
    let last10 = rs1.last_position().lsn;
    wait_slaves_at(&rs1, last10, 2).await;
    // B stops; the master goes on with A alone.
    let b_pos = sb.stop().await;
    for i in 11..=20 {
        tokio::time::timeout(T, rs1.submit(enq(i, &format!("m-{i}"))))
            .await
            .unwrap()
            .unwrap();
    }
    let _ = stop_a.send(true);
    let (a_pos, r) = tokio::time::timeout(T, task_a).await.unwrap().unwrap();
    r.unwrap();
    rs1.depose("test: the master dies");
    assert!(b_pos < a_pos, "B lags: {b_pos} vs {a_pos}");

    // A is promoted with the entries it received: B, whose last entry is one of them, streams.
    let (rs2, _) = master(a.clone(), 2, SyncMode::QuorumDisk);
    let kept = rs2.seed_ring(std::mem::take(&mut *ring.lock()));
    assert!(kept >= 10, "kept {kept} entries");
    let addr2 = serve(&rs2).await;
    let sb = start_slave(b.clone(), &addr2, 2, "token");
    // The marker is confirmed only with B's disk ack: B caught up.
    tokio::time::timeout(T, rs2.submit_marker())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rs2.full_copies(), 0, "B needed a full copy");
    sb.stop().await;
    assert_eq!(bodies(&*b), bodies(&*a));
    assert_eq!(bodies(&*b).len(), 20);
}

#[test]
fn an_entry_ring_is_bounded_and_remembers_where_it_starts() {
    use ferromq_ha_zk::master::{EntryRing, RING_MAX_ENTRIES};
    let p = |lsn| Position { epoch: 1, lsn };
    let mut r = EntryRing::new(p(5));
    assert_eq!(r.last(), p(5));
    for lsn in 6..(6 + RING_MAX_ENTRIES as u64 + 3) {
        r.push(p(lsn), enq(lsn, "x"));
    }
    assert_eq!(r.len(), RING_MAX_ENTRIES);
    assert_eq!(r.last(), p(5 + RING_MAX_ENTRIES as u64 + 3));
    r.reset(p(9));
    assert!(r.is_empty());
    assert_eq!(r.last(), p(9));
}

/// Everything a store holds outside the reserved `replication://` lists: lists with their
/// messages (seq, payload) and the subscription records, in a canonical order.
type Contents = (
    Vec<(String, Vec<(u64, Bytes)>)>,
    Vec<String>,
    Vec<(String, u64)>,
);

fn contents(s: &dyn MessageStore) -> Contents {
    let rec = s.recover().unwrap();
    // Where each list's seqs continue (a promoted slave must not reuse one).
    let mut max_seqs: Vec<(String, u64)> = rec
        .lists
        .iter()
        .filter(|l| !l.list.starts_with("replication://") && l.max_seq > 0)
        .map(|l| (l.list.to_string(), l.max_seq))
        .collect();
    max_seqs.sort();
    let mut lists: Vec<(String, Vec<(u64, Bytes)>)> = rec
        .lists
        .iter()
        .filter(|l| !l.list.starts_with("replication://"))
        .map(|l| {
            let msgs: Vec<(u64, Bytes)> = s
                .load(&l.list, None, 1_000_000)
                .unwrap()
                .into_iter()
                .map(|m| (m.seq, m.payload))
                .collect();
            (l.list.to_string(), msgs)
        })
        .filter(|(_, m)| !m.is_empty())
        .collect();
    lists.sort();
    let mut subs: Vec<String> = rec.subscriptions.iter().map(|s| format!("{s:?}")).collect();
    subs.sort();
    (lists, subs, max_seqs)
}

/// A full copy is read while writers go on at full speed (enqueues, dequeues of live and
/// already-copied messages, purges, subscriptions created and deleted): the copied slave must
/// end with exactly the master's store. This is the claim that makes a copy that does not
/// hold writers back correct (every op is idempotent per key, and the entries after the cut
/// are applied in order), checked on the real journal store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_copy_read_under_concurrent_writes_ends_identical_to_the_master() {
    use ferromq_store::SubscriptionRecord;
    let d = tempfile::tempdir().unwrap();
    let m = journal(&d.path().join("master"));
    let (rs, _) = master(m.clone(), 1, SyncMode::LocalDisk);
    let rs = Arc::new(rs);
    const LISTS: [&str; 3] = ["queue://a", "queue://b", "durable://c:s"];
    // ~24 MB of messages before the slave arrives: a copy of many chunks.
    let payload = |list: usize, seq: u64| Bytes::from(format!("{list}:{seq}:{}", "x".repeat(1000)));
    let mut next = [1u64; 3];
    let mut live: [std::collections::VecDeque<u64>; 3] = Default::default();
    for _ in 0..200 {
        let mut batch = Vec::new();
        for _ in 0..40 {
            for (l, name) in LISTS.iter().enumerate() {
                batch.push(Op::Enqueue {
                    list: (*name).into(),
                    seq: next[l],
                    payload: payload(l, next[l]),
                });
                live[l].push_back(next[l]);
                next[l] += 1;
            }
        }
        rs.submit(batch).await.unwrap();
    }
    // A list whose newest messages were consumed before the copy: the copy holds only its
    // oldest, yet the slave must know where its seqs continue.
    for seq in 1..=100u64 {
        let mut b = vec![Op::Enqueue {
            list: "queue://drained".into(),
            seq,
            payload: payload(9, seq),
        }];
        if seq > 2 {
            b.push(Op::Dequeue {
                list: "queue://drained".into(),
                seq: seq - 1,
            });
        }
        rs.submit(b).await.unwrap();
    }
    rs.submit(vec![Op::Dequeue {
        list: "queue://drained".into(),
        seq: 100,
    }])
    .await
    .unwrap();
    let addr = serve(&rs).await;
    // A slave whose log the master never had (a deposed master's suffix): it needs a copy,
    // and what it held must go.
    let s = journal(&d.path().join("slave"));
    let mut junk = enq(1, "diverged");
    junk.extend(ferromq_ha_zk::position::position_ops(
        None,
        Position { epoch: 0, lsn: 9 },
    ));
    s.submit(junk).await.unwrap();
    let slave = start_slave(s.clone(), &addr, 1, "token");
    // Writers: a seeded mix, pipelined (many batches in flight, as brokers submit them).
    let writer = tokio::spawn({
        let rs = rs.clone();
        async move {
            let mut rng = 0x9e37_79b9_7f4a_7c15u64;
            let mut rand = move || {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng
            };
            let mut inflight = std::collections::VecDeque::new();
            for i in 0..30_000u64 {
                let l = (rand() % 3) as usize;
                let batch = match rand() % 10 {
                    0..=4 => {
                        let seq = next[l];
                        next[l] += 1;
                        live[l].push_back(seq);
                        vec![Op::Enqueue {
                            list: LISTS[l].into(),
                            seq,
                            payload: payload(l, seq),
                        }]
                    }
                    5..=7 => match live[l].pop_front() {
                        // Oldest first: most of these were in the copy already.
                        Some(seq) => vec![Op::Dequeue {
                            list: LISTS[l].into(),
                            seq,
                        }],
                        None => continue,
                    },
                    8 => {
                        // A random live one, anywhere in the list.
                        if live[l].is_empty() {
                            continue;
                        }
                        let k = (rand() as usize) % live[l].len();
                        let seq = live[l].remove(k).unwrap();
                        vec![Op::Dequeue {
                            list: LISTS[l].into(),
                            seq,
                        }]
                    }
                    _ => {
                        if i % 41 == 0 {
                            live[l].clear();
                            vec![Op::Purge {
                                list: LISTS[l].into(),
                            }]
                        } else if i % 2 == 0 {
                            vec![Op::PutSubscription(SubscriptionRecord {
                                list: format!("durable://c:sub{}", i % 5),
                                client_id: "c".into(),
                                name: format!("sub{}", i % 5),
                                topic: "topic://t".into(),
                                selector: None,
                                no_local: false,
                            })]
                        } else {
                            vec![Op::DeleteSubscription {
                                list: format!("durable://c:sub{}", i % 5),
                            }]
                        }
                    }
                };
                inflight.push_back(rs.submit(batch));
                while inflight.len() > 64 {
                    inflight.pop_front().unwrap().await.unwrap();
                }
                if i % 64 == 0 {
                    // Let the copy make progress between bursts.
                    tokio::task::yield_now().await;
                }
            }
            for c in inflight {
                c.await.unwrap();
            }
        }
    });
    writer.await.unwrap();
    let last = read_position(&*m).unwrap();
    wait_slaves_at(&rs, last.lsn, 1).await;
    let pos = slave.stop().await;
    assert_eq!(pos, last);
    assert_eq!(rs.full_copies(), 1);
    assert!(
        rs.entries_written_during_copies() > 0,
        "no write overlapped the copy: the test proved nothing"
    );
    let (ml, ms, mq) = contents(&*m);
    let (sl, ss, sq) = contents(&*s);
    assert_eq!(ms, ss, "subscriptions differ");
    assert_eq!(mq, sq, "where the lists' seqs continue differs");
    assert_eq!(ml.len(), sl.len(), "lists differ");
    for ((mn, mm), (sn, sm)) in ml.iter().zip(sl.iter()) {
        assert_eq!(mn, sn);
        assert!(
            mm == sm,
            "{mn}: master {} messages, slave {}",
            mm.len(),
            sm.len()
        );
    }
    eprintln!(
        "copy overlapped {} entries; final lists {:?}",
        rs.entries_written_during_copies(),
        ml.iter()
            .map(|(n, m)| (n.clone(), m.len()))
            .collect::<Vec<_>>()
    );
}
