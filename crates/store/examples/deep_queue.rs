//! Memory, checkpoint cost and restart time of the journal store with a deep queue.
//!
//! ```text
//! cargo run --release -p ferromq-store --example deep_queue -- fill DIR MESSAGES SIZE
//! cargo run --release -p ferromq-store --example deep_queue -- flow DIR SIZE
//! cargo run --release -p ferromq-store --example deep_queue -- tail DIR SIZE
//! cargo run --release -p ferromq-store --example deep_queue -- drain DIR SIZE
//! ```
//!
//! Each step is a process of its own, so that what one reports (resident memory, `VmRSS`, and
//! its peak, `VmHWM`) is not memory an earlier step freed but the allocator kept:
//!
//! - `fill`: one queue gets MESSAGES persistent messages of SIZE bytes (batches of 1,000, eight
//!   in flight), with a checkpoint every 500,000 messages (what the 5 s timer does for a broker
//!   taking 100,000 msg/s); then a checkpoint, and a clean close;
//! - `flow`: opens (the clean-restart time), then 5 s of 1,000 msg/s (50 enqueued and 50 acked
//!   every 100 ms), then the bytes one checkpoint writes (the process's `wchar` around
//!   `checkpoint()`, traffic paused), the memory at rest, and a clean close;
//! - `tail`: opens, checkpoints, appends 50,000 messages and exits without closing (no final
//!   checkpoint, threads killed: what a `kill -9` leaves);
//! - `drain`: opens (the restart time after that kill: the last checkpoint plus the tail), then
//!   reads every message back as a consumer pages them in and acks them.
//!
//! It uses only the store's public API, so the same file measures an older version of the
//! store. `FERROMQ_JOURNAL_IO=io-uring` runs every step on the direct write path. Bounded: MESSAGES ≤ 100,000,000.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferromq_store::{Completion, JournalConfig, JournalStore, MessageStore, Op};

const LIST: &str = "queue://deep";
const BATCH: u64 = 1_000;

fn proc_field(file: &str, key: &str) -> u64 {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn rss_mib() -> f64 {
    proc_field("/proc/self/status", "VmRSS:") as f64 / 1024.0
}

fn peak_mib() -> f64 {
    proc_field("/proc/self/status", "VmHWM:") as f64 / 1024.0
}

fn wchar() -> u64 {
    proc_field("/proc/self/io", "wchar:")
}

fn enqueues(seqs: std::ops::Range<u64>, payload: &Bytes) -> Vec<Op> {
    seqs.map(|seq| Op::Enqueue {
        list: LIST.into(),
        seq,
        payload: payload.clone(),
    })
    .collect()
}

fn dequeues(seqs: std::ops::Range<u64>) -> Vec<Op> {
    seqs.map(|seq| Op::Dequeue {
        list: LIST.into(),
        seq,
    })
    .collect()
}

fn rss() -> String {
    format!("RSS {:.1} MiB, peak {:.1} MiB", rss_mib(), peak_mib())
}

fn open(dir: &str) -> (JournalStore, Duration) {
    open_with(dir, base_config())
}

/// The default configuration, with the write path `FERROMQ_JOURNAL_IO` names (`portable`,
/// `io-uring` or `auto`; default portable): the direct path's writes bypass the page cache, so
/// `drain` after `fill` shows what reading a backlog back costs on each.
fn base_config() -> JournalConfig {
    let io = match std::env::var("FERROMQ_JOURNAL_IO").as_deref() {
        Ok("io-uring") => ferromq_store::JournalIo::IoUring,
        Ok("auto") => ferromq_store::JournalIo::Auto,
        _ => ferromq_store::JournalIo::Portable,
    };
    JournalConfig {
        io,
        ..JournalConfig::default()
    }
}

fn open_with(dir: &str, config: JournalConfig) -> (JournalStore, Duration) {
    let t = Instant::now();
    let store = JournalStore::open(dir, config).expect("open");
    (store, t.elapsed())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = || -> ! {
        eprintln!("usage: deep_queue fill DIR MESSAGES SIZE | flow|tail|drain DIR SIZE");
        std::process::exit(2)
    };
    let (step, dir) = match (args.get(1), args.get(2)) {
        (Some(s), Some(d)) => (s.as_str(), d.as_str()),
        _ => usage(),
    };
    let size: usize = match args.last().and_then(|s| s.parse().ok()) {
        Some(s) if args.len() >= 4 => s,
        _ => usage(),
    };
    let payload = Bytes::from(vec![b'x'; size]);
    match step {
        "fill" => {
            let n: u64 = args[3].parse().unwrap_or_else(|_| usage());
            assert!(
                (100_000..=100_000_000).contains(&n),
                "MESSAGES in 100,000..=100,000,000"
            );
            let (store, _) = open(dir);
            let t = Instant::now();
            let mut in_flight: VecDeque<Completion> = VecDeque::new();
            let mut next = 1u64;
            while next <= n {
                let end = (next + BATCH).min(n + 1);
                in_flight.push_back(store.submit(enqueues(next..end, &payload)));
                next = end;
                if in_flight.len() >= 8 {
                    if let Some(c) = in_flight.pop_front() {
                        c.wait_blocking().expect("enqueue");
                    }
                }
                if (next - 1).is_multiple_of(500_000) {
                    store.checkpoint().expect("checkpoint");
                }
            }
            for c in in_flight {
                c.wait_blocking().expect("enqueue");
            }
            store.checkpoint().expect("checkpoint");
            let fill_s = t.elapsed().as_secs_f64();
            println!(
                "fill: {n} x {size} B in {fill_s:.1} s ({:.0} msg/s, checkpoints included); {}",
                n as f64 / fill_s,
                rss()
            );
            store.close().expect("close");
        }
        "flow" => {
            // No timer: the checkpoint measured is the only one after the 5 s of traffic.
            let config = JournalConfig {
                checkpoint_interval_ms: 0,
                cleanup_interval_ms: 0,
                ..base_config()
            };
            let (store, took) = open_with(dir, config);
            let info = store.recover().expect("recover");
            let l = info
                .lists
                .iter()
                .find(|l| l.list == LIST)
                .expect("the queue");
            println!(
                "clean restart: open {:.3} s, replayed {} ops; {}",
                took.as_secs_f64(),
                store.recovery_report().replayed_ops,
                rss()
            );
            let mut head = store
                .load(LIST, None, 1)
                .expect("load")
                .first()
                .map(|m| m.seq)
                .expect("a message");
            let mut next = l.max_seq + 1;
            for _ in 0..50 {
                let t = Instant::now();
                store
                    .submit(enqueues(next..next + 50, &payload))
                    .wait_blocking()
                    .expect("enqueue");
                store
                    .submit(dequeues(head..head + 50))
                    .wait_blocking()
                    .expect("ack");
                next += 50;
                head += 50;
                std::thread::sleep(Duration::from_millis(100).saturating_sub(t.elapsed()));
            }
            let w0 = wchar();
            let t = Instant::now();
            store.checkpoint().expect("checkpoint");
            println!(
                "checkpoint after 5 s of 1,000 msg/s at {} queued: {} bytes written in {:.1} ms; {}",
                l.count,
                wchar() - w0,
                t.elapsed().as_secs_f64() * 1e3,
                rss()
            );
            store.close().expect("close");
        }
        "tail" => {
            let (store, _) = open(dir);
            let info = store.recover().expect("recover");
            let mut next = info.lists.iter().map(|l| l.max_seq).max().unwrap_or(0) + 1;
            store.checkpoint().expect("checkpoint");
            for _ in 0..50 {
                store
                    .submit(enqueues(next..next + BATCH, &payload))
                    .wait_blocking()
                    .expect("enqueue");
                next += BATCH;
            }
            println!("tail: 50,000 messages after the last checkpoint; exiting without close");
            std::process::exit(0);
        }
        "drain" => {
            let (store, took) = open(dir);
            let expected = store.recover().expect("recover").lists[0].count;
            println!(
                "restart after the kill: open {:.3} s, replayed {} ops; {}",
                took.as_secs_f64(),
                store.recovery_report().replayed_ops,
                rss()
            );
            let t = Instant::now();
            let mut after = None;
            let mut drained = 0u64;
            let mut pending: VecDeque<Completion> = VecDeque::new();
            loop {
                let page = store.load(LIST, after, BATCH as usize).expect("load");
                let (Some(first), Some(last)) = (page.first(), page.last()) else {
                    break;
                };
                assert!(page.iter().all(|m| m.payload.len() == size));
                drained += page.len() as u64;
                pending.push_back(store.submit(dequeues(first.seq..last.seq + 1)));
                after = Some(last.seq);
                if pending.len() >= 8 {
                    if let Some(c) = pending.pop_front() {
                        c.wait_blocking().expect("ack");
                    }
                }
            }
            for c in pending {
                c.wait_blocking().expect("ack");
            }
            let drain_s = t.elapsed().as_secs_f64();
            assert_eq!(drained, expected, "every queued message was read back");
            println!(
                "drain: {drained} in {drain_s:.1} s ({:.0} msg/s); {}",
                drained as f64 / drain_s,
                rss()
            );
            store.close().expect("close");
        }
        _ => usage(),
    }
}
