//! Memory, checkpoint cost and restart time of the journal store with a deep queue.
//!
//! ```text
//! cargo run --release -p ferromq-store --example deep_queue -- DIR MESSAGES SIZE
//! ```
//!
//! Fills one queue with MESSAGES persistent messages of SIZE bytes (batches of 1,000, eight in
//! flight), then reports: the process's resident memory after a checkpoint (at rest) and its
//! peak; the bytes one checkpoint writes after 5 s of 1,000 msg/s flowing (500 enqueued and 500
//! acked per second, measured as the process's `wchar` around `checkpoint()` with traffic
//! paused); the open time after a clean close and after a drop without close (the last
//! checkpoint plus a replayed tail of 50,000 messages: what a `kill -9` leaves); and the drain
//! rate, reading every message back and acking it. It uses only the store's public API, so
//! the same file measures an older version of the store. Bounded: MESSAGES ≤ 100,000,000.

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

fn open(dir: &str) -> (JournalStore, Duration) {
    let t = Instant::now();
    let store = JournalStore::open(dir, JournalConfig::default()).expect("open");
    (store, t.elapsed())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: deep_queue DIR MESSAGES SIZE");
        std::process::exit(2);
    }
    let dir = &args[1];
    let n: u64 = args[2].parse().expect("MESSAGES");
    let size: usize = args[3].parse().expect("SIZE");
    assert!(
        (100_000..=100_000_000).contains(&n),
        "MESSAGES in 100,000..=100,000,000"
    );
    let payload = Bytes::from(vec![b'x'; size]);

    let (store, _) = open(dir);
    let t = Instant::now();
    let mut in_flight: std::collections::VecDeque<Completion> = Default::default();
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
    }
    for c in in_flight {
        c.wait_blocking().expect("enqueue");
    }
    let fill_s = t.elapsed().as_secs_f64();
    store.checkpoint().expect("checkpoint");
    std::thread::sleep(Duration::from_millis(500));
    println!(
        "filled {n} x {size} B in {fill_s:.1} s ({:.0} msg/s); after a checkpoint: RSS {:.1} MiB, peak {:.1} MiB",
        n as f64 / fill_s,
        rss_mib(),
        peak_mib()
    );

    // 5 s of 1,000 msg/s: 50 enqueues and 50 acks every 100 ms.
    let mut head = 1u64;
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
        "checkpoint after 5 s of 1,000 msg/s at {} queued: {} bytes written in {:.1} ms",
        next - head,
        wchar() - w0,
        t.elapsed().as_secs_f64() * 1e3
    );
    println!("RSS {:.1} MiB, peak {:.1} MiB", rss_mib(), peak_mib());
    store.close().expect("close");
    drop(store);

    let (store, took) = open(dir);
    println!(
        "clean restart: open {:.3} s, replayed {} ops; RSS {:.1} MiB",
        took.as_secs_f64(),
        store.recovery_report().replayed_ops,
        rss_mib()
    );
    // A tail after the last checkpoint, then no close: what a kill -9 leaves.
    store.checkpoint().expect("checkpoint");
    for _ in 0..50 {
        store
            .submit(enqueues(next..next + BATCH, &payload))
            .wait_blocking()
            .expect("enqueue");
        next += BATCH;
    }
    drop(store);
    let (store, took) = open(dir);
    println!(
        "restart without close: open {:.3} s, replayed {} ops; RSS {:.1} MiB",
        took.as_secs_f64(),
        store.recovery_report().replayed_ops,
        rss_mib()
    );

    // Drain: read every message back (as a consumer pages them in) and ack it.
    let t = Instant::now();
    let mut after = None;
    let mut drained = 0u64;
    let mut pending: std::collections::VecDeque<Completion> = Default::default();
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
    assert_eq!(drained, next - head, "every queued message was read back");
    println!(
        "drained {drained} in {drain_s:.1} s ({:.0} msg/s); RSS {:.1} MiB, peak {:.1} MiB",
        drained as f64 / drain_s,
        rss_mib(),
        peak_mib()
    );
    store.close().expect("close");
}
