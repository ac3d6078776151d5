//! Durable writes with N in flight and no group commit: what the disk does when several
//! writers each wait for their own write to be durable (issue 19, the io_uring fast path).
//!
//! Two shapes, each with `in_flight` threads that loop "write one record, wait until it is
//! durable":
//!
//! - [`WriteMode::Fdatasync`]: `pwrite` through the page cache, then the thread's own
//!   `fdatasync`. Appending to a new file (the shape of the portable journal, whose segments are
//!   sparse) or, with `preallocate`, overwriting a zero-filled file.
//! - [`WriteMode::DirectDsync`]: a preallocated, zero-filled file (written extents: a durable
//!   overwrite needs no metadata commit) opened `O_DIRECT | O_DSYNC`; each record is padded to
//!   the block size and written from a 4 KiB-aligned buffer. On a disk without FUA the kernel
//!   follows each write with a cache flush; concurrent flushes can be merged by the block layer,
//!   which is where pipelining could win.
//!
//! Threads, not io_uring: a blocked `pwrite` per thread puts the same N requests in flight at the
//! block layer as an io_uring queue of depth N, without unsafe code in a load tool.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::disk_info::{self, DeviceInfo};
use crate::error::BenchError;
use crate::stats::{LatencyHistogram, LatencySummary};

/// Memory alignment of the `O_DIRECT` buffers (a page; any logical block size up to it fits).
pub const BUFFER_ALIGN_BYTES: usize = 4096;
/// Largest preallocated file.
pub const FILE_BYTES_MAX: u64 = 64 * 1024 * 1024 * 1024;
/// Largest padding unit.
pub const BLOCK_BYTES_MAX: usize = 64 * 1024;
/// Zero-fill chunk when preallocating.
const FILL_CHUNK_BYTES: usize = 1024 * 1024;

/// How each record is made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WriteMode {
    /// `pwrite` + this thread's own `fdatasync`.
    Fdatasync,
    /// `pwrite` of a block-padded, aligned record to a preallocated file opened
    /// `O_DIRECT | O_DSYNC`.
    DirectDsync,
}

impl WriteMode {
    /// The name used in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            WriteMode::Fdatasync => "fdatasync",
            WriteMode::DirectDsync => "direct-dsync",
        }
    }
}

/// One probe run.
#[derive(Debug, Clone)]
pub struct DurableWriteSpec {
    /// How each record is made durable.
    pub mode: WriteMode,
    /// Writer threads, each with one durable write in flight.
    pub in_flight: u32,
    /// Payload bytes per record.
    pub size_bytes: usize,
    /// `DirectDsync`: records are padded to a multiple of this (the device's logical block
    /// size, 512 on most disks). Ignored by `Fdatasync`.
    pub block_bytes: usize,
    /// Stop after this long.
    pub duration: Duration,
    /// Stop each thread after this many records (for tests and fixed-count runs).
    pub records_per_thread_max: Option<u64>,
    /// Directory of the temporary file (removed afterwards): it decides the disk measured.
    pub dir: PathBuf,
    /// `Fdatasync`: overwrite a preallocated zero-filled file instead of appending.
    /// `DirectDsync` always preallocates.
    pub preallocate: bool,
    /// Size of the preallocated file; writes wrap around inside it.
    pub file_bytes: u64,
}

/// The result of one probe run.
#[derive(Debug, Clone, Serialize)]
pub struct DurableWriteReport {
    /// `fdatasync` or `direct-dsync`.
    pub mode: WriteMode,
    /// Writer threads (durable writes in flight).
    pub in_flight: u32,
    /// Payload bytes per record.
    pub size_bytes: usize,
    /// Bytes written per record (the payload padded to the block size for `direct-dsync`).
    pub write_bytes: usize,
    /// Whether the file was preallocated and zero-filled (overwrites) or appended to.
    pub preallocated: bool,
    /// Measured seconds.
    pub duration_s: f64,
    /// Directory of the file.
    pub dir: String,
    /// Its filesystem type, when known.
    pub filesystem: Option<String>,
    /// The block device under it, when known.
    pub device: Option<DeviceInfo>,
    /// Records written and durable.
    pub writes: u64,
    /// Records per second.
    pub writes_per_s: f64,
    /// Payload throughput, 10^6 bytes per second.
    pub payload_mb_per_s: f64,
    /// Bytes written per second, padding included, 10^6 bytes per second.
    pub written_mb_per_s: f64,
    /// Write → durable, per record.
    pub latency: Option<LatencySummary>,
}

/// Runs the probe; see the module documentation.
pub fn probe(spec: &DurableWriteSpec) -> Result<DurableWriteReport, BenchError> {
    assert!(
        spec.in_flight >= 1 && spec.size_bytes >= 1,
        "validated by the CLI"
    );
    let filesystem = disk_info::filesystem_type(&spec.dir);
    let preallocated = spec.preallocate || spec.mode == WriteMode::DirectDsync;
    let write_bytes = match spec.mode {
        WriteMode::Fdatasync => spec.size_bytes,
        WriteMode::DirectDsync => {
            if !spec.block_bytes.is_power_of_two()
                || spec.block_bytes < 512
                || spec.block_bytes > BLOCK_BYTES_MAX
            {
                return Err(BenchError::Config(format!(
                    "block size {} must be a power of two between 512 and {BLOCK_BYTES_MAX}",
                    spec.block_bytes
                )));
            }
            if let Some(fs @ ("tmpfs" | "ramfs")) = filesystem.as_deref() {
                return Err(BenchError::Unsupported(format!(
                    "{} is on {fs}: its pages live in RAM, so O_DIRECT | O_DSYNC writes there \
                     measure memory copies, not a disk; use a directory on a block-device \
                     filesystem (see `df -T`)",
                    spec.dir.display()
                )));
            }
            spec.size_bytes.div_ceil(spec.block_bytes) * spec.block_bytes
        }
    };
    let slots = if preallocated {
        let slots = spec.file_bytes / write_bytes as u64;
        if slots < u64::from(spec.in_flight) {
            return Err(BenchError::Config(format!(
                "a {} B file holds {slots} records of {write_bytes} B: fewer than the {} in flight",
                spec.file_bytes, spec.in_flight
            )));
        }
        Some(slots)
    } else {
        None
    };

    let tmp = tempfile::Builder::new()
        .prefix("durable-write-probe-")
        .suffix(".dat")
        .tempfile_in(&spec.dir)
        .map_err(|source| BenchError::Io {
            what: format!("create a file in {}", spec.dir.display()),
            source,
        })?;
    if let Some(slots) = slots {
        zero_fill(tmp.as_file(), slots * write_bytes as u64)?;
    }
    let file = open_for_writes(tmp.path(), spec.mode)?;

    let shared = Arc::new(Shared {
        file,
        next: AtomicU64::new(0),
        failed: AtomicBool::new(false),
    });
    let start = Instant::now();
    let deadline = start + spec.duration;
    let handles: Vec<_> = (0..spec.in_flight)
        .map(|t| {
            let shared = shared.clone();
            let job = Job {
                mode: spec.mode,
                size_bytes: spec.size_bytes,
                write_bytes,
                slots,
                deadline,
                records_max: spec.records_per_thread_max.unwrap_or(u64::MAX),
                fill: b'a' + (t % 26) as u8,
            };
            std::thread::spawn(move || job.run(&shared))
        })
        .collect();
    let mut writes = 0u64;
    let mut latency = LatencyHistogram::default();
    let mut first_error = None;
    for h in handles {
        match h.join() {
            Ok(Ok((n, hist))) => {
                writes += n;
                latency.merge(&hist);
            }
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(_) => {
                first_error.get_or_insert(BenchError::Worker(
                    "durable-write probe thread panicked".into(),
                ));
            }
        }
    }
    let elapsed_s = start.elapsed().as_secs_f64();
    if let Some(e) = first_error {
        return Err(e);
    }
    drop(shared);
    drop(tmp);
    Ok(DurableWriteReport {
        mode: spec.mode,
        in_flight: spec.in_flight,
        size_bytes: spec.size_bytes,
        write_bytes,
        preallocated,
        duration_s: elapsed_s,
        dir: spec.dir.display().to_string(),
        filesystem,
        device: disk_info::device_info(&spec.dir),
        writes,
        writes_per_s: writes as f64 / elapsed_s,
        payload_mb_per_s: (writes * spec.size_bytes as u64) as f64 / elapsed_s / 1e6,
        written_mb_per_s: (writes * write_bytes as u64) as f64 / elapsed_s / 1e6,
        latency: latency.summary(),
    })
}

/// Writes zeros over the whole file and syncs it, so that every block is allocated and
/// written (no unwritten extents: a later overwrite needs no metadata change).
fn zero_fill(file: &File, bytes: u64) -> Result<(), BenchError> {
    let zeros = vec![0u8; FILL_CHUNK_BYTES];
    let mut left = bytes;
    let mut w = file;
    while left > 0 {
        let n = left.min(FILL_CHUNK_BYTES as u64) as usize;
        w.write_all(&zeros[..n]).map_err(|source| BenchError::Io {
            what: "zero-fill the probe file".into(),
            source,
        })?;
        left -= n as u64;
    }
    file.sync_all().map_err(|source| BenchError::Io {
        what: "fsync the zero-filled probe file".into(),
        source,
    })
}

fn open_for_writes(path: &Path, mode: WriteMode) -> Result<File, BenchError> {
    let mut options = OpenOptions::new();
    options.write(true);
    if mode == WriteMode::DirectDsync {
        options.custom_flags(libc::O_DIRECT | libc::O_DSYNC);
    }
    options.open(path).map_err(|source| {
        if mode == WriteMode::DirectDsync && source.raw_os_error() == Some(libc::EINVAL) {
            BenchError::Unsupported(format!(
                "the filesystem of {} does not support O_DIRECT (open returned EINVAL); use a \
                 directory on a block-device filesystem such as ext4 or xfs",
                path.parent().unwrap_or(path).display()
            ))
        } else {
            BenchError::Io {
                what: format!("open {} for writing", path.display()),
                source,
            }
        }
    })
}

#[derive(Debug)]
struct Shared {
    file: File,
    /// Next record number; records own disjoint byte ranges.
    next: AtomicU64,
    /// Set by the first thread that fails, so the others stop.
    failed: AtomicBool,
}

#[derive(Debug)]
struct Job {
    mode: WriteMode,
    size_bytes: usize,
    write_bytes: usize,
    /// Preallocated records; `None` = append.
    slots: Option<u64>,
    deadline: Instant,
    records_max: u64,
    fill: u8,
}

impl Job {
    fn run(&self, shared: &Shared) -> Result<(u64, LatencyHistogram), BenchError> {
        let result = self.write_loop(shared);
        if result.is_err() {
            shared.failed.store(true, Ordering::Release);
        }
        result
    }

    fn write_loop(&self, shared: &Shared) -> Result<(u64, LatencyHistogram), BenchError> {
        // Over-allocate and slice at an aligned address: O_DIRECT needs the buffer aligned to
        // the logical block size, and safe code cannot ask the allocator for alignment.
        let mut raw = vec![0u8; self.write_bytes + BUFFER_ALIGN_BYTES];
        let skip = raw.as_ptr().align_offset(BUFFER_ALIGN_BYTES);
        if skip >= BUFFER_ALIGN_BYTES {
            return Err(BenchError::Worker("cannot align the write buffer".into()));
        }
        let buf = &mut raw[skip..skip + self.write_bytes];
        buf[..self.size_bytes].fill(self.fill);
        let buf = &*buf;
        debug_assert_eq!(buf.as_ptr() as usize % BUFFER_ALIGN_BYTES, 0);

        let mut latency = LatencyHistogram::default();
        let mut writes = 0u64;
        while writes < self.records_max
            && Instant::now() < self.deadline
            && !shared.failed.load(Ordering::Acquire)
        {
            let record = shared.next.fetch_add(1, Ordering::Relaxed);
            let offset = match self.slots {
                Some(slots) => (record % slots) * self.write_bytes as u64,
                None => record * self.write_bytes as u64,
            };
            let t0 = Instant::now();
            self.write_durably(&shared.file, buf, offset)?;
            latency.record_ns(u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX));
            writes += 1;
        }
        Ok((writes, latency))
    }

    fn write_durably(&self, file: &File, buf: &[u8], offset: u64) -> Result<(), BenchError> {
        match self.mode {
            WriteMode::Fdatasync => {
                file.write_all_at(buf, offset)
                    .map_err(|source| BenchError::Io {
                        what: format!("pwrite {} B at {offset}", buf.len()),
                        source,
                    })?;
                // A failed sync ends the probe; it is never retried.
                file.sync_data().map_err(|source| BenchError::Io {
                    what: "fdatasync".into(),
                    source,
                })
            }
            WriteMode::DirectDsync => {
                // One call: a short O_DIRECT write cannot be continued from an unaligned
                // offset, so it is an error, not a retry.
                match file.write_at(buf, offset) {
                    Ok(n) if n == buf.len() => Ok(()),
                    Ok(n) => Err(BenchError::Io {
                        what: format!("O_DIRECT | O_DSYNC pwrite at {offset}"),
                        source: std::io::Error::other(format!(
                            "short write: {n} of {} B",
                            buf.len()
                        )),
                    }),
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                        Err(BenchError::Unsupported(format!(
                            "an O_DIRECT write of {} B at offset {offset} was refused (EINVAL): \
                             the device's logical block size is probably larger than the \
                             padding unit; raise --block-bytes",
                            buf.len()
                        )))
                    }
                    Err(source) => Err(BenchError::Io {
                        what: format!("O_DIRECT | O_DSYNC pwrite {} B at {offset}", buf.len()),
                        source,
                    }),
                }
            }
        }
    }
}
