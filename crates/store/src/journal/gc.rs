//! Checkpoints and garbage collection, run by the maintenance thread (and on demand).
//!
//! A checkpoint asks the writer thread for a copy of the index taken right after a sync (so it
//! covers only durable records; the copy is one reference per block, under the index read
//! lock), then, on this thread and not the writer's, writes the blocks changed since the last
//! checkpoint to free pages of `index.pages` and syncs it, encodes the root (lists as block
//! directories), writes it to `index.db.tmp`, syncs it, renames it over `index.db` and syncs
//! the directory. Only then are the pages the root names the committed ones, and the written
//! bodies leave memory for the page cache (`demote`). Group commit goes on meanwhile; its
//! cost is the changed blocks plus a root of 40 bytes per block, not the messages held.
//!
//! GC deletes segments older than the checkpoint that no index state needs (see
//! [`crate::journal::index::Index::segment_is_garbage`]). Before deleting, it appends a
//! segments-released record (every range released so far) and syncs it, so a full replay can
//! tell a released segment from a missing one; it deletes oldest first, so a crash half way never
//! leaves an enqueue whose ack is gone. Segments held by only a few live messages are compacted:
//! this thread reads their live messages, the writer rewrites those still live (and the
//! subscription records) at the head, and the next pass deletes them. GC planning and
//! compaction reads run here, never on the writer thread.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::journal::index::{encode_checkpoint, merge_ranges, Index, INDEX_FILE, INDEX_TMP_FILE};
use crate::journal::segment::segment_name;
use crate::journal::storage::StorageFile;
use crate::journal::writer::{read_payload, Cmd, Relocated, Snapshot};
use crate::journal::Shared;
use crate::{Completion, StoreError};

/// What one GC pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Segments deleted, ascending.
    pub deleted: Vec<u32>,
    /// Segments whose live data was rewritten at the head (then deleted).
    pub compacted: Vec<u32>,
}

fn send(shared: &Shared, cmd: Cmd) -> Result<(), StoreError> {
    // A refused command is dropped: its waiter (this thread) is told `Closed` here.
    shared.tx.try_send(cmd).map_err(|_| StoreError::Closed)
}

fn snapshot(shared: &Shared, for_gc: bool) -> Result<Option<Snapshot>, StoreError> {
    let (reply, answer) = sync_channel(1);
    let last = if for_gc {
        None
    } else {
        *shared.last_checkpoint.lock()
    };
    send(
        shared,
        Cmd::Checkpoint {
            for_gc,
            last,
            reply,
        },
    )?;
    answer.recv().map_err(|_| StoreError::Closed)?
}

/// Writes checkpoint bytes durably: temp file, sync, rename, sync directory.
///
/// The fence is checked before writing and again before the rename that makes it visible; a
/// checkpoint that still lands late (a check-then-act window) carries its epoch, and an open
/// ignores a checkpoint older than the newest `EpochStart` record.
pub(crate) fn write_checkpoint_file(shared: &Shared, bytes: &[u8]) -> Result<(), StoreError> {
    shared.check_fence()?;
    let dir = shared.dir.as_ref();
    let file = dir
        .open(INDEX_TMP_FILE, true)
        .map_err(|e| StoreError::io("create index.db.tmp", e))?;
    file.set_len(0)
        .map_err(|e| StoreError::io("truncate index.db.tmp", e))?;
    file.write_at(0, bytes)
        .map_err(|e| StoreError::io("write index.db.tmp", e))?;
    file.sync_data()
        .map_err(|e| StoreError::io("fdatasync index.db.tmp", e))?;
    shared.check_fence()?;
    dir.rename(INDEX_TMP_FILE, INDEX_FILE)
        .map_err(|e| StoreError::io("rename index.db.tmp", e))?;
    dir.sync_dir()
        .map_err(|e| StoreError::io("sync directory", e))?;
    Ok(())
}

/// Checkpoints now if the index moved since the last checkpoint. Returns whether it wrote one.
pub(crate) fn checkpoint(shared: &Shared) -> Result<bool, StoreError> {
    let _one_at_a_time = shared.maintenance.lock();
    let started = Instant::now();
    let Some(snap) = snapshot(shared, false)? else {
        return Ok(false);
    };
    write_snapshot(shared, &snap, started)?;
    Ok(true)
}

/// Writes a checkpoint of `index` (a snapshot, or the final index at close): its unwritten
/// blocks to pages, then the root. Returns the bytes written (pages and root).
///
/// A failed page write or sync fails the store (never retry a sync; bodies may be marked
/// written at pages whose bytes are unknown). A failed root write unmarks the bodies it wrote,
/// so the next checkpoint writes them again, and is only an error, as before paging: the
/// previous root and its pages are intact.
pub(crate) fn write_checkpoint(shared: &Shared, index: &Index) -> Result<u64, StoreError> {
    shared.check_fence()?;
    let written = index.write_pages().inspect_err(|e| shared.set_failed(e))?;
    let pages_bytes: u64 = written
        .iter()
        .map(|b| (crate::journal::pages::PAGE_HEADER_BYTES + b.slots.len() * 16) as u64)
        .sum();
    let root = encode_checkpoint(index, shared.epoch)
        .and_then(|bytes| write_checkpoint_file(shared, &bytes).map(|()| bytes.len() as u64));
    let root_bytes = match root {
        Ok(n) => n,
        Err(e) => {
            for b in &written {
                b.set_written(None);
            }
            return Err(e);
        }
    };
    if let Some(pager) = &index.pager {
        pager.set_committed(index.referenced_pages());
        shared
            .stats
            .index_bytes_written
            .fetch_add(pages_bytes + root_bytes, Ordering::Relaxed);
    }
    Ok(pages_bytes + root_bytes)
}

/// Writes the checkpoint of `snap` (on the calling thread, not the writer's), then lets the
/// live index drop the bodies it wrote from memory.
fn write_snapshot(shared: &Shared, snap: &Snapshot, started: Instant) -> Result<(), StoreError> {
    let bytes = write_checkpoint(shared, &snap.index)?;
    let position = snap.index.position;
    *shared.last_checkpoint.lock() = Some(position);
    let demoted = shared.index.write().demote();
    tracing::debug!(
        segment = position.segment,
        offset = position.offset,
        checkpoint_bytes = bytes,
        demoted,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "checkpoint written"
    );
    Ok(())
}

/// Segments GC may delete, ascending: older than the snapshot's position, not the head, and
/// needed by nothing (see [`crate::journal::index::Index::segment_is_garbage`]).
fn garbage_segments(snap: &Snapshot) -> Vec<u32> {
    let index = &snap.index;
    let mut existing = snap.existing.clone();
    let old: Vec<u32> = existing
        .iter()
        .copied()
        .filter(|s| *s < index.position.segment && *s != snap.head)
        .collect();
    let mut garbage = Vec::new();
    // Ascending: a segment's deps are all earlier, so one pass sees them go first.
    for s in old {
        if index.segment_is_garbage(s, &existing) {
            existing.remove(&s);
            garbage.push(s);
        }
    }
    garbage
}

/// Segments worth compacting (few live bytes left, own deps gone), ascending, given the
/// segments that stay after `garbage` goes.
fn compaction_candidates(shared: &Shared, snap: &Snapshot, garbage: &[u32]) -> Vec<u32> {
    let threshold = shared.config.compact_live_percent_max;
    if threshold == 0 {
        return Vec::new();
    }
    let index = &snap.index;
    let existing: BTreeSet<u32> = snap
        .existing
        .iter()
        .copied()
        .filter(|s| !garbage.contains(s))
        .collect();
    let live_bytes = &index.live_bytes_per_segment;
    let limit = shared.config.journal_max_file_length * u64::from(threshold) / 100;
    existing
        .iter()
        .copied()
        .filter(|s| *s < index.position.segment && *s != snap.head)
        .filter(|s| {
            let own_deps_gone = index
                .deps
                .get(s)
                .is_none_or(|d| d.iter().all(|x| !existing.contains(x)));
            own_deps_gone && live_bytes.get(s).copied().unwrap_or(0) <= limit
        })
        .collect()
}

/// Reads the live messages of `segments` as of `snap` (on the maintenance thread).
fn read_live(
    shared: &Shared,
    snap: &Snapshot,
    segments: &[u32],
) -> Result<Vec<Relocated>, StoreError> {
    let set: BTreeSet<u32> = segments.iter().copied().collect();
    let files: BTreeMap<u32, Arc<dyn StorageFile>> = shared
        .segments
        .read()
        .iter()
        .filter(|(s, _)| set.contains(s))
        .map(|(s, f)| (*s, f.clone()))
        .collect();
    let (Some(&lo), Some(&hi)) = (set.first(), set.last()) else {
        return Ok(Vec::new());
    };
    let mut names: Vec<&String> = snap.index.lists.keys().collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        // Only blocks whose segment range meets the compacted segments are read.
        let mut found = Vec::new();
        snap.index.lists[name].messages.visit(lo, hi, |seq, loc| {
            if set.contains(&loc.segment) {
                found.push((seq, loc));
            }
        })?;
        for (seq, loc) in found {
            let file = files.get(&loc.segment).ok_or_else(|| StoreError::Corrupt {
                location: segment_name(loc.segment),
                reason: "segment of a live message is not open".into(),
            })?;
            out.push(Relocated {
                list: name.clone(),
                seq,
                location: loc,
                payload: read_payload(file.as_ref(), loc)?,
            });
        }
    }
    Ok(out)
}

/// One GC pass: checkpoint, delete garbage, compact sparse segments, delete them too.
pub(crate) fn collect(shared: &Shared) -> Result<GcReport, StoreError> {
    let _one_at_a_time = shared.maintenance.lock();
    let mut report = GcReport::default();
    let snap = snapshot(shared, true)?
        .ok_or_else(|| StoreError::Failed("writer returned no GC snapshot".into()))?;
    write_snapshot(shared, &snap, Instant::now())?;
    let garbage = garbage_segments(&snap);
    let compact = compaction_candidates(shared, &snap, &garbage);
    report.deleted = delete(shared, &garbage, &snap.index.released)?;

    if !compact.is_empty() {
        let messages = read_live(shared, &snap, &compact)?;
        let (completer, completion) = Completion::pair();
        send(
            shared,
            Cmd::Relocate {
                segments: compact.clone(),
                messages,
                completer,
            },
        )?;
        completion.wait_blocking()?;
        let snap = snapshot(shared, true)?
            .ok_or_else(|| StoreError::Failed("writer returned no GC snapshot".into()))?;
        write_snapshot(shared, &snap, Instant::now())?;
        let deleted = delete(shared, &garbage_segments(&snap), &snap.index.released)?;
        report.compacted = compact
            .into_iter()
            .filter(|s| deleted.contains(s))
            .collect();
        report.deleted.extend(deleted);
    }
    if !report.deleted.is_empty() {
        tracing::info!(
            deleted = ?report.deleted,
            compacted = ?report.compacted,
            "journal GC deleted {} segment(s)",
            report.deleted.len()
        );
    }
    Ok(report)
}

fn delete(
    shared: &Shared,
    garbage: &[u32],
    released: &[(u32, u32)],
) -> Result<Vec<u32>, StoreError> {
    if garbage.is_empty() {
        return Ok(Vec::new());
    }
    let ranges = merge_ranges(
        released
            .iter()
            .copied()
            .chain(garbage.iter().map(|s| (*s, *s)))
            .collect(),
    );
    let (completer, completion) = Completion::pair();
    send(shared, Cmd::Released { ranges, completer })?;
    completion.wait_blocking()?;
    let mut deleted = Vec::with_capacity(garbage.len());
    for &s in garbage {
        debug_assert!(
            deleted.last().is_none_or(|l| *l < s),
            "GC deletes oldest first"
        );
        // A deposed master deletes nothing more; it stops at the first failed check.
        shared.check_fence()?;
        shared.segments.write().remove(&s);
        shared
            .dir
            .remove(&segment_name(s))
            .map_err(|e| StoreError::io("remove segment", e))?;
        deleted.push(s);
    }
    shared
        .dir
        .sync_dir()
        .map_err(|e| StoreError::io("sync directory", e))?;
    Ok(deleted)
}

/// How often the maintenance thread looks at how much of the index changed since the last
/// checkpoint (with the checkpoint timer on).
const CHANGED_BLOCKS_POLL: Duration = Duration::from_millis(250);

/// Bytes of index blocks in memory (changed since the last checkpoint, or not yet demoted),
/// counting a block as the 16 KiB a full one takes.
fn resident_index_bytes(shared: &Shared) -> u64 {
    let (_, resident) = shared.index.read().block_counts();
    resident as u64 * crate::journal::seqmap::BLOCK_BYTES_FULL
}

/// The maintenance thread: checkpoints and GC on their intervals until told to stop. With the
/// checkpoint timer on, a checkpoint also starts as soon as the index blocks changed since the
/// last one take more than `index_cache_bytes`: a burst between two timer ticks (millions of
/// messages in 5 s) or acks scattered over a deep queue cannot hold more than about that much
/// of the index in memory.
pub(crate) fn run_maintenance(shared: Arc<Shared>, stop: std::sync::mpsc::Receiver<()>) {
    let checkpoint_every = Duration::from_millis(shared.config.checkpoint_interval_ms);
    let cleanup_every = Duration::from_millis(shared.config.cleanup_interval_ms);
    let changed_max = shared.config.index_cache_bytes;
    let mut next_checkpoint =
        (!checkpoint_every.is_zero()).then(|| Instant::now() + checkpoint_every);
    let mut next_cleanup = (!cleanup_every.is_zero()).then(|| Instant::now() + cleanup_every);
    loop {
        let next = match (next_checkpoint, next_cleanup) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let next = match next_checkpoint {
            Some(_) => next.map(|t| t.min(Instant::now() + CHANGED_BLOCKS_POLL)),
            None => next,
        };
        let wait = match next {
            Some(t) => stop.recv_timeout(t.saturating_duration_since(Instant::now())),
            None => stop
                .recv()
                .map_err(|_| std::sync::mpsc::RecvTimeoutError::Disconnected),
        };
        match wait {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let now = Instant::now();
        if let Some(t) = next_cleanup.filter(|t| *t <= now) {
            if let Err(e) = collect(&shared) {
                tracing::warn!("journal GC failed: {e}");
            }
            next_cleanup = Some(t.max(now) + cleanup_every);
            // A GC pass checkpoints too.
            next_checkpoint = next_checkpoint.map(|_| now + checkpoint_every);
        } else if let Some(t) = next_checkpoint.filter(|t| *t <= now) {
            if let Err(e) = checkpoint(&shared) {
                tracing::warn!("journal checkpoint failed: {e}");
            }
            next_checkpoint = Some(t.max(now) + checkpoint_every);
        } else if next_checkpoint.is_some() && resident_index_bytes(&shared) > changed_max {
            if let Err(e) = checkpoint(&shared) {
                tracing::warn!("journal checkpoint failed: {e}");
            }
            next_checkpoint = Some(now + checkpoint_every);
        }
    }
}
