//! The physical reference: T threads append S-byte records to one file with `write` and make
//! them durable with `fdatasync`, using the simplest group commit there is — whoever finds no
//! sync in progress becomes the leader and syncs everything written so far; the others wait
//! for a sync that covers their record. The result is what this disk allows at this
//! concurrency, the bar a persistent broker figure is divided by.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::error::BenchError;
use crate::report::FsyncReport;
use crate::stats::LatencyHistogram;

/// The group-commit state, under one lock.
#[derive(Debug, Default)]
struct Log {
    /// Records written (sequence number of the last one).
    written: u64,
    /// Every record up to this sequence number is durable.
    synced: u64,
    /// A leader is inside `fdatasync`.
    syncing: bool,
    /// `fdatasync` calls completed.
    syncs: u64,
    /// The first I/O failure; after it nobody writes or syncs again (a failed fsync is never
    /// retried: the page cache may already have dropped the data).
    failed: Option<String>,
}

#[derive(Debug)]
struct Probe {
    file: File,
    log: Mutex<Log>,
    synced: Condvar,
}

#[derive(Debug, Default)]
struct ThreadOutcome {
    records: u64,
    latency: LatencyHistogram,
    sync_latency: LatencyHistogram,
}

/// Runs the probe for `duration` in a temporary file under `dir` (removed afterwards).
pub fn probe(
    threads: u32,
    size_bytes: usize,
    duration: Duration,
    dir: &Path,
) -> Result<FsyncReport, BenchError> {
    assert!(threads >= 1 && size_bytes >= 1, "validated by the CLI");
    let tmp = tempfile::Builder::new()
        .prefix("fsync-probe-")
        .suffix(".dat")
        .tempfile_in(dir)
        .map_err(|source| BenchError::Io {
            what: format!("create a file in {}", dir.display()),
            source,
        })?;
    let file = tmp.reopen().map_err(|source| BenchError::Io {
        what: "reopen the probe file".into(),
        source,
    })?;
    let probe = Arc::new(Probe {
        file,
        log: Mutex::new(Log::default()),
        synced: Condvar::new(),
    });
    let start = Instant::now();
    let deadline = start + duration;
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let probe = probe.clone();
            std::thread::spawn(move || append_loop(&probe, size_bytes, deadline))
        })
        .collect();
    let mut total = ThreadOutcome::default();
    for h in handles {
        let o = h
            .join()
            .map_err(|_| BenchError::Worker("fsync-probe thread panicked".into()))?;
        total.records += o.records;
        total.latency.merge(&o.latency);
        total.sync_latency.merge(&o.sync_latency);
    }
    let elapsed_s = start.elapsed().as_secs_f64();
    let log = probe.log.lock();
    if let Some(e) = &log.failed {
        return Err(BenchError::Io {
            what: "write or fdatasync".into(),
            source: std::io::Error::other(e.clone()),
        });
    }
    let syncs = log.syncs;
    drop(log);
    drop(tmp);
    Ok(FsyncReport {
        threads,
        size_bytes,
        duration_s: elapsed_s,
        dir: dir.display().to_string(),
        records: total.records,
        syncs,
        records_per_s: total.records as f64 / elapsed_s,
        syncs_per_s: syncs as f64 / elapsed_s,
        records_per_sync: if syncs == 0 {
            0.0
        } else {
            total.records as f64 / syncs as f64
        },
        latency: total.latency.summary(),
        sync_latency: total.sync_latency.summary(),
    })
}

fn append_loop(probe: &Probe, size_bytes: usize, deadline: Instant) -> ThreadOutcome {
    let record = vec![b'r'; size_bytes];
    let mut out = ThreadOutcome::default();
    while Instant::now() < deadline {
        let t0 = Instant::now();
        let mut log = probe.log.lock();
        if log.failed.is_some() {
            break;
        }
        // Appends are serialized by the lock, so the file offset order is the sequence order.
        if let Err(e) = (&probe.file).write_all(&record) {
            fail(probe, &mut log, format!("write: {e}"));
            break;
        }
        log.written += 1;
        let mine = log.written;
        if !wait_durable(probe, &mut log, mine, &mut out.sync_latency) {
            break;
        }
        drop(log);
        out.latency.record_ns(duration_ns(t0.elapsed()));
        out.records += 1;
    }
    out
}

/// Blocks until record `mine` is durable, leading a sync when none is running. False if the
/// probe failed.
fn wait_durable(
    probe: &Probe,
    log: &mut MutexGuard<'_, Log>,
    mine: u64,
    sync_latency: &mut LatencyHistogram,
) -> bool {
    loop {
        if log.failed.is_some() {
            return false;
        }
        if log.synced >= mine {
            return true;
        }
        if log.syncing {
            probe.synced.wait(log);
            continue;
        }
        log.syncing = true;
        let target = log.written;
        let (result, took) = MutexGuard::unlocked(log, || {
            let s0 = Instant::now();
            let r = probe.file.sync_data();
            (r, s0.elapsed())
        });
        log.syncing = false;
        match result {
            Ok(()) => {
                debug_assert!(target >= log.synced, "durability never goes backwards");
                log.synced = target;
                log.syncs += 1;
                sync_latency.record_ns(duration_ns(took));
                probe.synced.notify_all();
            }
            Err(e) => {
                fail(probe, log, format!("fdatasync: {e}"));
                return false;
            }
        }
    }
}

fn fail(probe: &Probe, log: &mut Log, msg: String) {
    log.failed.get_or_insert(msg);
    probe.synced.notify_all();
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
