//! The group-commit writer thread.
//!
//! Producers put `(batch, completer)` into a bounded channel (the store's backpressure). The
//! writer takes everything available, up to `batch_bytes_max`, encodes one record per batch into
//! one buffer, writes it with one positional write, issues one `fdatasync` (`SyncMode::Always`),
//! applies the ops to the index, then completes every waiter. One sync thus confirms as many
//! batches as arrived while the previous sync was running: at ~250 µs per fdatasync, 16
//! producers share each sync instead of queueing for 16 of them.
//!
//! On real files with the direct io_uring path (`JournalIo::IoUring`, module `uring`), a group
//! is instead padded to a block boundary and written with one `O_DIRECT | O_DSYNC` write (no
//! separate `fdatasync`), while up to `io_depth - 1` earlier groups are still in flight; the
//! writer reaps completions itself and confirms groups in journal order as their writes
//! complete (see [`Group`]); with writes in flight and nothing queued it waits in the ring for
//! either. A roll, a GC record, a compaction and a checkpoint wait for every write in flight
//! first (a barrier), so what they read of the index is durable.
//!
//! A failed write or sync fails the store for good: the page cache may have dropped the data, so
//! retrying the sync could report success for bytes that are gone. Every waiter of the failed
//! group, and every later batch, gets the error.
//!
//! With an HA [`crate::journal::Fence`], the writer checks it before writing a group (and before
//! rolling to a new segment) and again after the group's sync, before applying it to the index
//! and completing any waiter; a failed check fails the store like a failed sync.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::time::Instant;

use crate::group::{self, GroupItem, GroupLimits, GroupWriter, Submitted, SyncClock};
use crate::journal::index::{Index, Location, Position};
use crate::journal::prealloc::{Preallocation, Preparer};
use crate::journal::record::SEGMENT_HEADER_BYTES;
use crate::journal::record::{
    batch_payload_bytes, begin_record, check_payload, encode_batch, encode_released, finish_record,
    mark_unit_start, pad_to, RecordType, PAYLOAD_PREFIX_BYTES, RECORD_HEADER_BYTES,
    RECORD_PAYLOAD_BYTES_MAX,
};
use crate::journal::segment::{adopt_segment, create_segment, segment_name, Head};
use crate::journal::uring::{fill_holes, open_direct, Direct, Handler, SubmitError, DIRECT_ALIGN};
use crate::journal::Shared;
use crate::{Batch, Completer, Op, StoreError};

/// Batches the writer takes into one group at most (with `batch_bytes_max`, bounds a group).
const GROUP_BATCHES_MAX: usize = 4096;

/// A request to the writer thread.
#[derive(Debug)]
pub(crate) enum Cmd {
    /// Append one atomic batch (`bytes`: [`batch_group_bytes`]).
    Batch(Submitted),
    /// Append a segments-released record (cumulative ranges) and sync it.
    Released {
        /// Every range released so far, with the new ones.
        ranges: Vec<(u32, u32)>,
        /// Resolved when durable.
        completer: Completer,
    },
    /// Rewrite the live messages and subscriptions of these segments at the head.
    Relocate {
        /// Segments to empty.
        segments: Vec<u32>,
        /// Their live messages as of a snapshot, payloads already read by the maintenance
        /// thread (reads of old segments stay off the writer thread). The writer keeps those
        /// still live at the same location when it appends.
        messages: Vec<Relocated>,
        /// Resolved when durable.
        completer: Completer,
    },
    /// Sync everything written, then hand over a copy of the index.
    Checkpoint {
        /// Answer even when nothing changed (GC wants the snapshot anyway).
        for_gc: bool,
        /// Skip (answer `None`) when nothing changed since `last`.
        last: Option<Position>,
        /// The answer.
        reply: SyncSender<Result<Option<Snapshot>, StoreError>>,
    },
}

/// A live message read back for compaction.
#[derive(Debug)]
pub(crate) struct Relocated {
    pub list: String,
    pub seq: u64,
    /// Where it was when read: the writer relocates it only if it is still there.
    pub location: Location,
    pub payload: bytes::Bytes,
}

/// A copy of the index taken by the writer right after a sync, so it covers only durable
/// records. The copy is a memory copy under the index read lock (the seq maps are flat arrays);
/// encoding it and planning GC happen on the maintenance thread, not while group commit waits.
#[derive(Debug)]
pub(crate) struct Snapshot {
    /// The index, at `index.position`.
    pub index: Index,
    /// The segment being appended to.
    pub head: u32,
    /// The segment files open when it was taken.
    pub existing: BTreeSet<u32>,
}

/// Room a direct group needs past its records for its padding record, at most.
const PAD_RESERVE: u64 = DIRECT_ALIGN + RECORD_HEADER_BYTES as u64;

/// What a committed batch does to the index once written.
pub(crate) enum Apply {
    Batch {
        ops: Batch,
        locations: Vec<Location>,
        segment: u32,
    },
    Released(Vec<(u32, u32)>),
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    head: Head,
    /// Encoded records not yet written; they start at `head.offset`.
    buf: Vec<u8>,
    pending_apply: Vec<Apply>,
    /// Who to answer once the group is durable, with when each client batch was submitted
    /// (`None`: the writer's own records).
    waiters: Vec<(Completer, Option<Instant>)>,
    /// Client batches written since the last sync: what the next sync makes durable.
    batches_unsynced: u64,
    /// The messages (enqueues) of those batches.
    messages_unsynced: u64,
    /// Whether written bytes are unsynced, and when they must be synced.
    clock: SyncClock,
    /// The group being gathered holds a batch that must be durable before it is confirmed
    /// (anything but a lazy batch); only read with `SyncMode::Always`.
    group_needs_sync: bool,
    /// The direct io_uring path, when the store chose it (see `JournalIo`); `None` = portable.
    direct: Option<Direct<Group>>,
    /// The head segment opened `O_DIRECT | O_DSYNC` for the direct path, with its id.
    direct_file: Option<(u32, std::fs::File)>,
    /// Zero-filled segments prepared ahead (`Preallocation::Zeros`); `None` = sparse ones.
    prealloc: Option<Preparer>,
}

impl Writer {
    pub(crate) fn new(shared: Arc<Shared>, head: Head, direct: Option<Direct<Group>>) -> Writer {
        let clock = SyncClock::new(shared.config.sync, shared.config.ack_sync_delay_ms);
        let prealloc = (shared.config.preallocation == Preallocation::Zeros)
            .then(|| Preparer::new(shared.dir.clone(), shared.config.journal_max_file_length));
        Writer {
            shared,
            head,
            buf: Vec::with_capacity(1 << 20),
            pending_apply: Vec::new(),
            waiters: Vec::new(),
            batches_unsynced: 0,
            messages_unsynced: 0,
            clock,
            group_needs_sync: false,
            direct,
            direct_file: None,
            prealloc,
        }
    }

    /// Runs until every sender is gone, then syncs what is left.
    pub(crate) fn run(mut self, rx: Receiver<Cmd>) {
        let limits = GroupLimits {
            bytes_max: self.shared.config.batch_bytes_max,
            items_max: GROUP_BATCHES_MAX,
        };
        group::run(&mut self, &rx, limits);
    }

    fn failed(&self) -> Option<StoreError> {
        if self.shared.failed_flag.load(Ordering::Acquire) {
            Some(self.shared.failure())
        } else {
            None
        }
    }

    fn handle(&mut self, cmd: Cmd) {
        if let Some(err) = self.failed() {
            cmd.refuse(err);
            return;
        }
        match cmd {
            Cmd::Batch(Submitted {
                ops,
                completer,
                lazy,
                submitted_at,
                ..
            }) => {
                self.group_needs_sync |= !lazy;
                self.append_batch(ops, completer, Some(submitted_at));
            }
            Cmd::Released { ranges, completer } => {
                // Apply what precedes first: the record carries the index's list seqs as of
                // its own position in the journal.
                self.settle();
                let max_seqs = self.shared.index.read().max_seqs();
                if let Err(e) = self.append_record(RecordType::SegmentsReleased, |buf| {
                    encode_released(buf, &ranges, &max_seqs)
                        .map_err(|e| StoreError::Config(e.0))?;
                    Ok(Vec::new())
                }) {
                    completer.complete(Err(e));
                    return;
                }
                self.pending_apply.push(Apply::Released(ranges));
                self.waiters.push((completer, None));
                // Deleting files must wait for this record to be durable whatever the mode.
                self.write_group(true);
            }
            Cmd::Relocate {
                segments,
                messages,
                completer,
            } => {
                // Earlier batches of this group must be applied first: the index decides what
                // is still live, and the rewritten copies must follow every earlier ack.
                self.settle();
                let ops = match self.relocation_ops(&segments, messages) {
                    Ok(ops) => ops,
                    Err(e) => {
                        completer.complete(Err(e));
                        return;
                    }
                };
                if ops.is_empty() {
                    completer.complete(Ok(()));
                } else {
                    self.append_batch(ops, completer, None);
                    self.write_group(true);
                }
            }
            Cmd::Checkpoint {
                for_gc,
                last,
                reply,
            } => {
                self.write_group(true);
                let _ = reply.send(self.snapshot(for_gc, last));
            }
        }
    }

    /// Encodes one batch; `submitted_at` is `Some` for a client's batch (counted in the commit
    /// statistics), `None` for the writer's own (compaction).
    fn append_batch(&mut self, ops: Batch, completer: Completer, submitted_at: Option<Instant>) {
        let payload_bytes = batch_payload_bytes(&ops);
        if payload_bytes > RECORD_PAYLOAD_BYTES_MAX {
            // Refuse this batch only; the store is fine.
            completer.complete(Err(StoreError::Config(format!(
                "batch of {payload_bytes} bytes is over the record limit of \
                 {RECORD_PAYLOAD_BYTES_MAX} bytes"
            ))));
            return;
        }
        let messages = crate::stats::enqueued_messages(&ops);
        let result = self.append_record(RecordType::Batch, |buf| {
            encode_batch(buf, &ops).map_err(|e| StoreError::Config(e.0))
        });
        match result {
            Ok((segment, locations)) => {
                self.pending_apply.push(Apply::Batch {
                    ops,
                    locations,
                    segment,
                });
                if submitted_at.is_some() {
                    self.batches_unsynced += 1;
                    self.messages_unsynced += messages;
                }
                self.waiters.push((completer, submitted_at));
            }
            Err(e) => completer.complete(Err(e)),
        }
    }

    /// Encodes one record into the buffer, rolling to a new segment first if it does not fit.
    /// `encode` appends the payload and returns offsets (in `buf`) of message payloads and
    /// their lengths; they come back as locations. A `Config` error refuses the record only;
    /// an I/O error fails the store.
    fn append_record<F>(
        &mut self,
        kind: RecordType,
        encode: F,
    ) -> Result<(u32, Vec<Location>), StoreError>
    where
        F: FnOnce(&mut Vec<u8>) -> Result<Vec<usize>, StoreError>,
    {
        // Encode first into the buffer to learn the size; undo if it must go elsewhere.
        let start = begin_record(&mut self.buf);
        let offsets = match encode(&mut self.buf) {
            Ok(o) => o,
            Err(e) => {
                self.buf.truncate(start);
                return Err(e);
            }
        };
        finish_record(&mut self.buf, start, kind, self.shared.epoch);
        if start == 0 && self.all_durable() {
            // Nothing written since the last sync: this record starts a sync unit.
            mark_unit_start(&mut self.buf[start..]);
        }
        let record_bytes = (self.buf.len() - start) as u64;
        let reserve = if self.direct.is_some() {
            PAD_RESERVE
        } else {
            0
        };
        if self.head.offset + self.buf.len() as u64 + reserve > self.head.capacity_bytes {
            let mut record = self.buf.split_off(start);
            if let Err(e) = self.roll(record_bytes) {
                self.fail(e.clone());
                return Err(e);
            }
            // The roll synced everything before: the first record of a segment starts a unit.
            mark_unit_start(&mut record);
            self.buf.extend_from_slice(&record);
        }
        let record_start = self.buf.len() as u64 - record_bytes;
        let base = self.head.offset + record_start;
        debug_assert!(base + record_bytes + reserve <= self.head.capacity_bytes);
        let buf = &self.buf;
        let locations = offsets
            .iter()
            .map(|&o| {
                let o = o - start;
                let len_at = o - 4;
                let len = u32::from_le_bytes([
                    buf[record_start as usize + len_at],
                    buf[record_start as usize + len_at + 1],
                    buf[record_start as usize + len_at + 2],
                    buf[record_start as usize + len_at + 3],
                ]);
                Location {
                    segment: self.head.id,
                    offset: (base + o as u64) as u32,
                    len,
                }
            })
            .collect();
        Ok((self.head.id, locations))
    }

    /// Writes and syncs what the current segment has, then starts the next one.
    fn roll(&mut self, record_bytes: u64) -> Result<(), StoreError> {
        // A deposed master must neither write nor create the segment a new master may be using
        // (creation is exclusive too, for a check that passed just before the takeover).
        self.shared.check_fence()?;
        // The old segment must be durable before records land in the next one, so that a
        // crash can only lose a suffix of the journal.
        if self.direct.is_some() {
            self.submit_direct()?;
            self.drain_direct()?;
        } else {
            self.write_and_sync(true)?;
        }
        // A direct segment needs room for the padding at its start and after the record.
        let record_bytes = match self.direct {
            Some(_) => record_bytes + 2 * PAD_RESERVE,
            None => record_bytes,
        };
        let next =
            self.head.id.checked_add(1).ok_or_else(|| {
                StoreError::Failed("journal segment ids exhausted (u32)".to_string())
            })?;
        let prepared = self
            .prealloc
            .as_mut()
            .and_then(|p| p.take_ready(SEGMENT_HEADER_BYTES as u64, record_bytes));
        let counter = match prepared {
            Some(_) => &self.shared.stats.segments_zero_filled,
            None => &self.shared.stats.segments_sparse,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let head = match prepared {
            Some(p) => adopt_segment(self.shared.dir.as_ref(), next, p)?,
            None => create_segment(
                self.shared.dir.as_ref(),
                next,
                self.shared.config.journal_max_file_length,
                record_bytes,
            )?,
        };
        self.shared
            .segments
            .write()
            .insert(head.id, head.file.clone());
        self.head = head;
        if self.direct.is_some() {
            align_head(&mut self.head, self.shared.epoch)?;
        }
        Ok(())
    }

    fn write_buf(&mut self) -> Result<(), StoreError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        debug_assert!(self.head.offset + self.buf.len() as u64 <= self.head.capacity_bytes);
        self.head
            .file
            .write_at(self.head.offset, &self.buf)
            .map_err(|e| StoreError::io("write", e))?;
        self.wrote(self.buf.len() as u64);
        self.clock.written();
        Ok(())
    }

    /// Writes the buffer and, when `sync`, makes the head segment durable (`write_at` then
    /// `sync_data`): the portable path. A failure is returned for the caller to fail the store.
    fn write_and_sync(&mut self, sync: bool) -> Result<(), StoreError> {
        self.write_buf()?;
        if sync {
            let started = Instant::now();
            self.head
                .file
                .sync_data()
                .map_err(|e| StoreError::io("fdatasync", e))?;
            self.shared
                .commit
                .sync_ns
                .record_duration(started.elapsed());
            self.synced();
        }
        Ok(())
    }

    /// Whether every byte written so far is durable (nothing unsynced; on the direct path,
    /// nothing in flight).
    fn all_durable(&self) -> bool {
        match &self.direct {
            Some(d) => d.idle(),
            None => !self.clock.unsynced(),
        }
    }

    /// Before an operation that reads the index (a GC record, a compaction): on the portable
    /// path, writes and applies the group gathered so far; on the direct path, also waits for
    /// every write in flight, since groups are applied when their writes complete.
    fn settle(&mut self) {
        let barrier = self.direct.is_some();
        self.write_group(barrier);
    }

    /// The head segment's direct descriptor, opened again at each roll.
    fn direct_fd(&mut self) -> Result<std::os::fd::RawFd, StoreError> {
        use std::os::fd::AsRawFd;
        if let Some((id, f)) = &self.direct_file {
            if *id == self.head.id {
                return Ok(f.as_raw_fd());
            }
        }
        let fd =
            self.head.file.raw_fd().ok_or_else(|| {
                StoreError::Failed("the direct write path needs a real file".into())
            })?;
        let file = open_direct(fd).map_err(|e| StoreError::io("open O_DIRECT|O_DSYNC", e))?;
        let raw = file.as_raw_fd();
        self.direct_file = Some((self.head.id, file));
        Ok(raw)
    }

    /// The direct path's write of the group gathered so far: pads it to a block boundary and
    /// submits it with its waiters and index changes, which are applied and answered
    /// once it and every earlier group are durable. Returns without waiting for it.
    fn submit_direct(&mut self) -> Result<(), StoreError> {
        if self.buf.is_empty() && self.waiters.is_empty() && self.pending_apply.is_empty() {
            return Ok(());
        }
        let fd = self.direct_fd()?;
        pad_to(
            &mut self.buf,
            self.head.offset,
            DIRECT_ALIGN,
            self.shared.epoch,
        );
        let len = self.buf.len() as u64;
        debug_assert!(self.head.offset + len <= self.head.capacity_bytes);
        let group = Group {
            applies: std::mem::take(&mut self.pending_apply),
            waiters: std::mem::take(&mut self.waiters),
            position: Position {
                segment: self.head.id,
                offset: self.head.offset + len,
            },
            batches: std::mem::take(&mut self.batches_unsynced),
            messages: std::mem::take(&mut self.messages_unsynced),
            submitted: Instant::now(),
        };
        let Some(direct) = self.direct.as_mut() else {
            return Err(StoreError::Failed("no direct write path".into()));
        };
        match direct.submit(fd, self.head.offset, &self.buf, group) {
            Ok(()) => {}
            Err(SubmitError::Refused(group, e)) => {
                for (w, _) in group.waiters {
                    w.complete(Err(e.clone()));
                }
                return Err(e);
            }
            Err(SubmitError::Failed(e)) => return Err(e),
        }
        self.wrote(len);
        Ok(())
    }

    /// The buffer's `len` bytes were written (or submitted) at the head: advance past them.
    fn wrote(&mut self, len: u64) {
        self.head.offset += len;
        if self.head.offset.saturating_mul(2) >= self.head.capacity_bytes {
            // The next segment is prepared while the second half of this one fills: not at
            // once, so that a store that never fills a segment (a short-lived broker, a small
            // queue) never writes a segment's worth of zeros. A no-op when one is ready or
            // under way.
            if let Some(p) = self.prealloc.as_mut() {
                p.request();
            }
        }
        self.shared
            .stats
            .bytes_written
            .fetch_add(len, Ordering::Relaxed);
        self.shared.stats.writes.fetch_add(1, Ordering::Relaxed);
        self.buf.clear();
    }

    /// Waits for every direct write in flight; an error if the store failed meanwhile.
    fn drain_direct(&mut self) -> Result<(), StoreError> {
        if let Some(d) = self.direct.as_mut() {
            d.drain();
        }
        match self.failed() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn synced(&mut self) {
        self.clock.synced();
        self.shared.stats.syncs.fetch_add(1, Ordering::Relaxed);
        // A sync that made no client batch durable (a GC record, a checkpoint with nothing
        // new) is not a group: it would only pull the size distribution towards zero.
        let batches = std::mem::take(&mut self.batches_unsynced);
        let messages = std::mem::take(&mut self.messages_unsynced);
        if batches > 0 {
            self.shared.commit.group_batches.record(batches);
            self.shared.commit.group_messages.record(messages);
        }
    }

    fn sync_now(&mut self) -> bool {
        if !self.clock.unsynced() {
            return true;
        }
        match self.write_and_sync(true) {
            Ok(()) => true,
            Err(e) => {
                self.fail(e);
                false
            }
        }
    }

    /// Writes the buffer, applies the group to the index, syncs per the sync mode (always when
    /// `force_sync`), and completes the waiters.
    fn write_group(&mut self, force_sync: bool) {
        let needs_sync = std::mem::take(&mut self.group_needs_sync);
        if self.pending_apply.is_empty() && self.waiters.is_empty() && !force_sync {
            return;
        }
        if let Some(err) = self.failed() {
            self.fail_waiters(err);
            return;
        }
        let confirming = !self.waiters.is_empty() || !self.pending_apply.is_empty();
        // Fence before the write: a deposed master writes nothing more (one check per group).
        if confirming || !self.buf.is_empty() {
            if let Err(e) = self.shared.check_fence() {
                self.fail(e);
                return;
            }
        }
        if self.direct.is_some() {
            // Every direct write is durable when it completes: no sync to decide. The fence
            // check after it, the index and the answers come when it completes (`Group`).
            let submitted = self.submit_direct();
            let result = match (submitted, force_sync) {
                (Ok(()), true) => self.drain_direct(),
                (r, _) => r,
            };
            if let Err(e) = result {
                self.fail(e);
            }
            return;
        }
        // A group of lazy batches only is written and left for a later sync, unless the oldest
        // unsynced one has waited `ack_sync_delay_ms` already (`SyncClock::must_sync`).
        let sync = force_sync || self.clock.must_sync(needs_sync);
        // One write and (when due and something is unsynced) one sync for the whole group.
        let sync = sync && (self.clock.unsynced() || !self.buf.is_empty());
        if let Err(e) = self.write_and_sync(sync) {
            self.fail(e);
            return;
        }
        // Fence again after the sync, before confirming or applying anything: if we were deposed
        // while writing, the group may be on disk (a new master seals it away) but nobody is
        // told it is durable, and the index (hence checkpoints and GC) never includes it.
        if confirming {
            if let Err(e) = self.shared.check_fence() {
                self.fail(e);
                return;
            }
        }
        if let Err(e) = self.apply() {
            // The group is durable but the index could not take it (a page of the index
            // could not be read back): nothing is confirmed, and the store fails.
            self.fail(e);
            return;
        }
        let batches = self.waiters.len() as u64;
        self.shared
            .stats
            .batches
            .fetch_add(batches, Ordering::Relaxed);
        // Only a synced group's batches are durable now; a written-only group's wait is not
        // a wait for durability.
        let now = sync.then(Instant::now);
        for (w, submitted_at) in self.waiters.drain(..) {
            if let (Some(now), Some(since)) = (now, submitted_at) {
                self.shared.commit.record_wait(since, now);
            }
            w.complete(Ok(()));
        }
    }

    fn apply(&mut self) -> Result<(), StoreError> {
        let position = Position {
            segment: self.head.id,
            offset: self.head.offset,
        };
        apply_to_index(
            &self.shared,
            std::mem::take(&mut self.pending_apply),
            position,
        )
    }

    fn fail(&mut self, err: StoreError) {
        self.shared.set_failed(&err);
        self.pending_apply.clear();
        self.buf.clear();
        self.fail_waiters(err);
    }

    fn fail_waiters(&mut self, err: StoreError) {
        self.pending_apply.clear();
        for (w, _) in self.waiters.drain(..) {
            w.complete(Err(err.clone()));
        }
    }

    fn snapshot(
        &self,
        for_gc: bool,
        last: Option<Position>,
    ) -> Result<Option<Snapshot>, StoreError> {
        if let Some(err) = self.failed() {
            return Err(err);
        }
        let index = self.shared.index.read();
        if !for_gc && last == Some(index.position) {
            return Ok(None);
        }
        Ok(Some(Snapshot {
            index: index.clone(),
            head: self.head.id,
            existing: self.shared.segments.read().keys().copied().collect(),
        }))
    }

    /// The ops that rewrite what is live in `segments` at the head: the messages read for it
    /// that are still live where they were read, and the live subscription records there. Only
    /// index lookups: no I/O on the writer thread.
    fn relocation_ops(
        &self,
        segments: &[u32],
        messages: Vec<Relocated>,
    ) -> Result<Batch, StoreError> {
        let set: BTreeSet<u32> = segments.iter().copied().collect();
        let index = self.shared.index.read();
        let mut ops: Batch = Vec::with_capacity(messages.len());
        for m in messages {
            if !set.contains(&m.location.segment) {
                continue;
            }
            let now = match index.lists.get(&m.list) {
                Some(l) => l.messages.get(m.seq)?,
                None => None,
            };
            if now == Some(m.location) {
                ops.push(Op::Enqueue {
                    list: m.list,
                    seq: m.seq,
                    payload: m.payload,
                });
            }
        }
        for entry in index.subscriptions.values() {
            if entry.segments.last().is_some_and(|s| set.contains(s)) {
                ops.push(Op::PutSubscription(entry.record.clone()));
            }
        }
        Ok(ops)
    }
}

/// Applies committed batches to the index and moves its position to `position` (the byte after
/// them); publishes the new usage.
fn apply_to_index(
    shared: &Shared,
    applies: Vec<Apply>,
    position: Position,
) -> Result<(), StoreError> {
    if applies.is_empty() {
        return Ok(());
    }
    let mut index = shared.index.write();
    for apply in applies {
        match apply {
            Apply::Batch {
                ops,
                locations,
                segment,
            } => {
                let mut locations = locations.into_iter();
                for op in ops {
                    match op {
                        Op::Enqueue { list, seq, .. } => match locations.next() {
                            Some(loc) => index.apply_enqueue(&list, seq, loc)?,
                            None => debug_assert!(false, "enqueue without a location"),
                        },
                        other => index.apply_other(other, segment)?,
                    }
                }
                debug_assert!(locations.next().is_none());
            }
            Apply::Released(ranges) => index.apply_released(&ranges),
        }
    }
    index.position = position;
    shared
        .usage_bytes
        .store(index.usage_bytes, Ordering::Release);
    Ok(())
}

/// A group written on the direct path: what confirming it takes, carried with its write until
/// its completion hands it back (in journal order) to [`direct_handler`].
pub(crate) struct Group {
    applies: Vec<Apply>,
    waiters: Vec<(Completer, Option<Instant>)>,
    /// The byte after the group (its padding included): the index's position once applied.
    position: Position,
    /// Client batches and their enqueued messages, for the commit statistics.
    batches: u64,
    messages: u64,
    submitted: Instant,
}

/// What the writer does with each completed direct group, in journal order: the portable path's
/// steps after its `fdatasync`. The fence is checked again (a deposed master confirms nothing),
/// the group is applied to the index, then its producers are answered. Any failure fails the
/// store and every waiter of this and each later group.
pub(crate) fn direct_handler(shared: Arc<Shared>) -> Handler<Group> {
    Box::new(move |group: Group, outcome: Result<(), StoreError>| {
        let confirming = !group.waiters.is_empty() || !group.applies.is_empty();
        let result = outcome
            .and_then(|()| {
                if shared.failed_flag.load(Ordering::Acquire) {
                    Err(shared.failure())
                } else {
                    Ok(())
                }
            })
            .and_then(|()| {
                if confirming {
                    shared.check_fence()
                } else {
                    Ok(())
                }
            })
            .and_then(|()| apply_to_index(&shared, group.applies, group.position));
        if let Err(e) = result {
            shared.set_failed(&e);
            let e = shared.failure();
            for (w, _) in group.waiters {
                w.complete(Err(e.clone()));
            }
            return;
        }
        // The write was its own sync: timed from submission to completion.
        shared
            .commit
            .sync_ns
            .record_duration(group.submitted.elapsed());
        shared.stats.syncs.fetch_add(1, Ordering::Relaxed);
        if group.batches > 0 {
            shared.commit.group_batches.record(group.batches);
            shared.commit.group_messages.record(group.messages);
        }
        shared
            .stats
            .batches
            .fetch_add(group.waiters.len() as u64, Ordering::Relaxed);
        let now = Instant::now();
        for (w, submitted_at) in group.waiters {
            if let Some(since) = submitted_at {
                shared.commit.record_wait(since, now);
            }
            w.complete(Ok(()));
        }
    })
}

/// Pads the head segment to a [`DIRECT_ALIGN`] boundary with a padding record written and
/// synced the portable way (at open and after a roll, before the first direct write): direct
/// writes must start on a boundary, and a gap of zeros would read as the end of the journal.
///
/// Then fills the rest of the segment's holes with zeros (a sparse segment: the first of a
/// run, or one the preparer had not finished), so that direct writes land on written extents
/// and commit no filesystem metadata (see [`crate::journal::uring`]'s `fill_holes`).
pub(crate) fn align_head(head: &mut Head, epoch: u64) -> Result<(), StoreError> {
    let mut pad = Vec::new();
    let mut dirty = false;
    if pad_to(&mut pad, head.offset, DIRECT_ALIGN, epoch) > 0 {
        // Everything before it is durable (recovery synced the head; a roll syncs the segment
        // header): it starts a sync unit.
        mark_unit_start(&mut pad);
        if head.offset + pad.len() as u64 > head.capacity_bytes {
            return Err(StoreError::Failed(format!(
                "segment {} has no room to align its head for direct writes",
                head.id
            )));
        }
        head.file
            .write_at(head.offset, &pad)
            .map_err(|e| StoreError::io("write", e))?;
        dirty = true;
    }
    let end = head.offset + pad.len() as u64;
    if let Some(fd) = head.file.raw_fd() {
        dirty |= fill_holes(fd, end, head.capacity_bytes)
            .map_err(|e| StoreError::io("zero-fill segment", e))?;
    }
    if dirty {
        head.file
            .sync_data()
            .map_err(|e| StoreError::io("fdatasync", e))?;
    }
    head.offset = end;
    Ok(())
}

/// Reads a message payload back and checks its CRC and length.
pub(crate) fn read_payload(
    file: &dyn crate::journal::storage::StorageFile,
    loc: Location,
) -> Result<bytes::Bytes, StoreError> {
    let mut buf = vec![0u8; PAYLOAD_PREFIX_BYTES + loc.len as usize];
    let at = u64::from(loc.offset) - PAYLOAD_PREFIX_BYTES as u64;
    file.read_at(at, &mut buf)
        .map_err(|e| StoreError::io("read message", e))?;
    check_payload(&buf, loc.len).map_err(|reason| StoreError::Corrupt {
        location: format!("{}:{}", segment_name(loc.segment), loc.offset),
        reason,
    })
}

/// What a batch counts against the group's `batch_bytes_max`: its payloads plus a little per
/// op, at least a record header.
pub(crate) fn batch_group_bytes(ops: &Batch) -> usize {
    ops.iter()
        .map(|op| match op {
            Op::Enqueue { payload, .. } => payload.len() + 64,
            _ => 64,
        })
        .sum::<usize>()
        .max(RECORD_HEADER_BYTES)
}

impl GroupItem for Cmd {
    fn group_bytes(&self) -> usize {
        match self {
            Cmd::Batch(b) => b.bytes,
            _ => RECORD_HEADER_BYTES,
        }
    }

    fn refuse(self, err: StoreError) {
        match self {
            Cmd::Batch(Submitted { completer, .. })
            | Cmd::Released { completer, .. }
            | Cmd::Relocate { completer, .. } => completer.complete(Err(err)),
            Cmd::Checkpoint { reply, .. } => {
                // The maintenance thread may have given up waiting; nothing to tell then.
                let _ = reply.send(Err(err));
            }
        }
    }
}

impl GroupWriter for Writer {
    type Item = Cmd;

    fn in_flight(&self) -> bool {
        self.direct.as_ref().is_some_and(|d| !d.idle())
    }

    fn set_parked(&self, parked: bool) {
        if let Some(d) = self.direct.as_ref() {
            d.set_parked(parked);
        }
    }

    fn park(&mut self) {
        if let Some(d) = self.direct.as_mut() {
            d.park();
        }
    }

    fn sync_due(&self) -> Option<Instant> {
        self.clock.due()
    }

    fn sync_timer(&mut self) {
        // A failure has failed the store already; the next batch learns it.
        let _ = self.sync_now();
    }

    fn commit(&mut self, group: &mut Vec<Cmd>) {
        for cmd in group.drain(..) {
            self.handle(cmd);
        }
        self.write_group(false);
    }

    fn finish(&mut self) {
        self.write_group(true);
        if let Some(d) = self.direct.as_mut() {
            d.drain();
        }
        if let Some(p) = self.prealloc.as_mut() {
            p.shutdown();
        }
        tracing::debug!(
            segment = self.head.id,
            offset = self.head.offset,
            "journal writer stopped"
        );
    }
}
