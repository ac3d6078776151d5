//! One cell of the journal write-path comparison (issue 19, `scripts/bench-journal-paths.sh`):
//! `producers` threads, each submitting single-message batches of `size` bytes to its own
//! queue and waiting for each confirmation before the next (a receipted producer), against a
//! fresh journal with `sync = always` on the chosen path, for `secs` seconds after one second of
//! warm-up. Prints one JSON object: confirmed messages per second, syncs (= groups made
//! durable) and the journal's bytes written.
//!
//!   cargo run --release -p ferromq-store --features io-uring --example journal_paths -- \
//!       io-uring 16 1024 5 /var/tmp [depth]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferromq_store::{JournalConfig, JournalIo, JournalStore, MessageStore, Op, SyncMode};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 5 {
        return Err(
            "usage: journal_paths <portable|io-uring> PRODUCERS SIZE SECS DIR [DEPTH]".into(),
        );
    }
    let io = match args[0].as_str() {
        "portable" => JournalIo::Portable,
        "io-uring" => JournalIo::IoUring,
        other => return Err(format!("unknown path {other}").into()),
    };
    let producers: usize = args[1].parse()?;
    let size: usize = args[2].parse()?;
    let secs: f64 = args[3].parse()?;
    let depth: usize = match args.get(5) {
        Some(d) => d.parse()?,
        None => ferromq_store::journal::IO_DEPTH_DEFAULT,
    };
    let dir = tempfile::tempdir_in(&args[4])?;
    let store = Arc::new(JournalStore::open(
        dir.path(),
        JournalConfig {
            io,
            io_depth: depth,
            sync: SyncMode::Always,
            ..JournalConfig::default()
        },
    )?);
    if store.io() != io {
        return Err(format!("asked for {io:?}, got {:?}", store.io()).into());
    }
    let payload = Bytes::from(vec![0xA5u8; size]);
    let (measuring, stop) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let counted = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..producers)
        .map(|p| {
            let (store, payload) = (store.clone(), payload.clone());
            let (measuring, stop, counted) = (measuring.clone(), stop.clone(), counted.clone());
            std::thread::spawn(move || -> Result<(), String> {
                let list = format!("queue://paths.{p}");
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    seq += 1;
                    store
                        .submit(vec![Op::Enqueue {
                            list: list.clone(),
                            seq,
                            payload: payload.clone(),
                        }])
                        .wait_blocking()
                        .map_err(|e| e.to_string())?;
                    if measuring.load(Ordering::Relaxed) {
                        counted.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let before = store.stats();
    measuring.store(true, Ordering::Relaxed);
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    measuring.store(false, Ordering::Relaxed);
    let took = start.elapsed().as_secs_f64();
    let after = store.stats();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().map_err(|_| "producer panicked")??;
    }
    let messages = counted.load(Ordering::Relaxed);
    println!(
        "{{\"path\":\"{}\",\"producers\":{producers},\"size\":{size},\"depth\":{depth},\
         \"seconds\":{took:.3},\"messages\":{messages},\"per_second\":{:.1},\"syncs\":{},\
         \"bytes_written\":{}}}",
        args[0],
        messages as f64 / took,
        after.syncs - before.syncs,
        after.bytes_written - before.bytes_written,
    );
    Arc::try_unwrap(store)
        .map_err(|_| "store still shared")?
        .close()?;
    Ok(())
}
