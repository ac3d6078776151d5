//! Opening a journal: load the checkpoint, replay the journal after it, repair a torn tail.
//!
//! Never panics and never drops data silently: a torn tail (a partial or bad record at the end
//! of the last segment with nothing valid after it) is truncated with a warning naming file and
//! offset; a bad record anywhere else is corruption, reported with its location, and either
//! stops the open (default, ActiveMQ's `checkForCorruptJournalFiles=false`) or is skipped with
//! an error line (`check_for_corrupt_journal_files = true`). A missing segment stops the open
//! unless `ignore_missing_journal_files` is set.
//!
//! HA fencing: a pre-pass reads the first record of every segment to find `EpochStart` records
//! and their seals; replay ignores the bytes of a sealed segment past its sealed length, and
//! records whose epoch is older than an `EpochStart` replayed before them; a checkpoint older
//! than the newest `EpochStart` is not trusted. An open with an epoch newer than the journal's
//! starts a fresh segment whose first record is an `EpochStart` sealing the previous head.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::journal::fence::fenced;
use crate::journal::index::{
    decode_checkpoint_with, is_released, Index, Location, Position, INDEX_FILE, INDEX_TMP_FILE,
};
use crate::journal::pages::{Pager, PAGES_FILE};
use crate::journal::record::{
    begin_record, decode_batch, decode_epoch_start, decode_released, encode_epoch_start,
    finish_record, mark_unit_start, parse_frame, parse_segment_header, segment_header, DecodedOp,
    EpochStart, FrameError, RecordType, RECORD_HEADER_BYTES, RECORD_MAGIC,
    RECORD_PAYLOAD_BYTES_MAX, SEGMENT_HEADER_BYTES,
};
use crate::journal::segment::{create_segment, parse_segment_name, segment_name, Head};
use crate::journal::storage::{StorageDir, StorageFile};
use crate::journal::JournalConfig;
use crate::StoreError;

/// What recovery did, for logs, tests and the operator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Whether a valid checkpoint was loaded (else the index was rebuilt from the journal).
    pub from_checkpoint: bool,
    /// Where replay started.
    pub start: Position,
    /// Ops replayed from the journal.
    pub replayed_ops: u64,
    /// Records replayed from the journal.
    pub replayed_records: u64,
    /// Time recovery took.
    pub duration: Duration,
    /// A torn tail that was truncated: file and offset.
    pub torn_tail: Option<(String, u64)>,
    /// Corrupt records skipped (`check_for_corrupt_journal_files`).
    pub corrupt_records_skipped: u64,
    /// Segments missing from the sequence (`ignore_missing_journal_files`).
    pub missing_segments: Vec<u32>,
    /// Messages forgotten because their segment was missing.
    pub messages_dropped: u64,
    /// The highest writer epoch seen in a replayed record.
    pub max_epoch_seen: u64,
    /// The epoch the store writes with (`JournalConfig::epoch`, raised to the journal's newest
    /// epoch when opened without a fence).
    pub epoch: u64,
    /// The epoch-start record this open wrote (its epoch was newer than the journal's).
    pub epoch_start: Option<EpochStart>,
    /// Sealed segments found with bytes past their seal (a deposed master's late writes):
    /// `(file, sealed length)`. Those bytes were ignored.
    pub ignored_past_seal: Vec<(String, u64)>,
    /// Records skipped because their epoch is older than an epoch-start replayed before them.
    pub stale_epoch_records_ignored: u64,
    /// The checkpoint was ignored because an epoch-start newer than it exists.
    pub stale_checkpoint_ignored: bool,
}

pub(crate) struct Recovered {
    /// The epoch the writer stamps (see [`RecoveryReport::epoch`]).
    pub epoch: u64,
    pub index: Index,
    pub head: Head,
    pub segments: BTreeMap<u32, Arc<dyn StorageFile>>,
    pub report: RecoveryReport,
}

fn io(op: &'static str) -> impl FnOnce(std::io::Error) -> StoreError {
    move |e| StoreError::io(op, e)
}

struct Progress {
    total_bytes: u64,
    done_bytes: u64,
    started: Instant,
    last_log: Instant,
}

impl Progress {
    fn advance(&mut self, bytes: u64) {
        self.done_bytes += bytes;
        if self.last_log.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last_log = Instant::now();
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let rate_bytes_per_s = self.done_bytes as f64 / secs;
        let remaining_s = if rate_bytes_per_s > 0.0 {
            (self.total_bytes.saturating_sub(self.done_bytes)) as f64 / rate_bytes_per_s
        } else {
            0.0
        };
        let pct = 100.0 * self.done_bytes as f64 / self.total_bytes.max(1) as f64;
        tracing::info!(
            "Replaying recovery log: {pct:.2}% done ({}/{} bytes) @ {:.2} kb/s, {:.0} secs remaining.",
            self.done_bytes,
            self.total_bytes,
            rate_bytes_per_s / 1024.0,
            remaining_s
        );
    }
}

/// The first offset after `from` where a record with a valid CRC starts.
fn next_valid_record(bytes: &[u8], from: usize) -> Option<usize> {
    let magic = RECORD_MAGIC.to_le_bytes();
    let last = bytes.len().checked_sub(RECORD_HEADER_BYTES)?;
    (from..=last).find(|&p| bytes[p..p + 4] == magic && parse_frame(&bytes[p..]).is_ok())
}

/// Whether a valid record flagged as a sync-unit start lies at or after `from`.
fn unit_start_after(bytes: &[u8], from: usize) -> bool {
    let mut at = from;
    while let Some(found) = next_valid_record(bytes, at) {
        match parse_frame(&bytes[found..]) {
            Ok(frame) if frame.unit_start => return true,
            Ok(frame) => at = found + frame.total_bytes(),
            Err(_) => at = found + 1,
        }
    }
    false
}

/// Seals found by the pre-pass: the epoch-start records that open segments.
#[derive(Debug, Default)]
struct Seals {
    /// Epoch-start records by the segment they open.
    starts: BTreeMap<u32, EpochStart>,
    /// Sealed length by segment (the smallest, if sealed twice).
    sealed: BTreeMap<u32, u64>,
}

impl Seals {
    fn newest_epoch(&self) -> u64 {
        self.starts.values().map(|s| s.epoch).max().unwrap_or(0)
    }

    /// The newest epoch of the epoch-starts that come before `pos` in replay order.
    fn epoch_before(&self, pos: Position) -> u64 {
        self.starts
            .iter()
            .filter(|(s, _)| {
                **s < pos.segment
                    || (**s == pos.segment && pos.offset > SEGMENT_HEADER_BYTES as u64)
            })
            .map(|(_, e)| e.epoch)
            .max()
            .unwrap_or(0)
    }
}

/// The epoch-start record opening segment `file`, if its first record is one. Reads the header
/// and one record only; anything unreadable is "no" (replay reports real corruption).
fn first_epoch_start(file: &dyn StorageFile) -> Result<Option<EpochStart>, StoreError> {
    let len = file.len().map_err(io("stat segment"))?;
    let first = SEGMENT_HEADER_BYTES as u64;
    if len < first + RECORD_HEADER_BYTES as u64 {
        return Ok(None);
    }
    let mut header = [0u8; RECORD_HEADER_BYTES];
    file.read_at(first, &mut header)
        .map_err(io("read segment"))?;
    if header[0..4] != RECORD_MAGIC.to_le_bytes() || header[8] != RecordType::EpochStart as u8 {
        return Ok(None);
    }
    let payload_len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as u64;
    if payload_len > RECORD_PAYLOAD_BYTES_MAX as u64
        || first + RECORD_HEADER_BYTES as u64 + payload_len > len
    {
        return Ok(None);
    }
    let mut record = vec![0u8; RECORD_HEADER_BYTES + payload_len as usize];
    file.read_at(first, &mut record)
        .map_err(io("read segment"))?;
    let Ok(frame) = parse_frame(&record) else {
        return Ok(None);
    };
    if frame.kind != RecordType::EpochStart {
        return Ok(None);
    }
    Ok(decode_epoch_start(frame.payload, frame.epoch).ok())
}

/// The pre-pass: every segment's first record, for epoch-starts and their seals.
fn scan_seals(files: &BTreeMap<u32, Arc<dyn StorageFile>>) -> Result<Seals, StoreError> {
    let mut seals = Seals::default();
    for (&id, file) in files {
        if let Some(start) = first_epoch_start(file.as_ref())? {
            for &(segment, len) in &start.sealed {
                let at = seals.sealed.entry(segment).or_insert(len);
                *at = (*at).min(len);
            }
            seals.starts.insert(id, start);
        }
    }
    Ok(seals)
}

fn check_fence(config: &JournalConfig) -> Result<(), StoreError> {
    match &config.fence {
        Some(fence) => fence.check().map_err(|reason| fenced(&reason)),
        None => Ok(()),
    }
}

/// Opens the journal in `dir`.
pub(crate) fn recover(
    dir: &dyn StorageDir,
    config: &JournalConfig,
) -> Result<Recovered, StoreError> {
    // Nothing below may touch the files of a master that already lost the lock.
    check_fence(config)?;
    let started = Instant::now();
    let mut report = RecoveryReport::default();
    let names = dir.list().map_err(io("list journal directory"))?;
    if names.iter().any(|n| n == INDEX_TMP_FILE) {
        // A checkpoint interrupted before its rename: never trusted, just removed.
        dir.remove(INDEX_TMP_FILE)
            .map_err(io("remove stale index.db.tmp"))?;
    }
    for name in names
        .iter()
        .filter(|n| crate::journal::prealloc::is_prepared_name(n))
    {
        // A segment prepared ahead but never adopted (the store was not closed cleanly): not
        // part of the journal.
        dir.remove(name)
            .map_err(io("remove a prepared segment left over"))?;
    }
    let mut files: BTreeMap<u32, Arc<dyn StorageFile>> = BTreeMap::new();
    for name in &names {
        if let Some(id) = parse_segment_name(name) {
            files.insert(id, dir.open(name, false).map_err(io("open segment"))?);
        }
    }

    let seals = scan_seals(&files)?;
    let newest_start_epoch = seals.newest_epoch();

    // The page file of the index's blocks (created empty if there is none).
    let pager = Arc::new(Pager::new(
        dir.open(PAGES_FILE, true).map_err(io("open index.pages"))?,
        config.index_cache_bytes,
    ));

    // The checkpoint, if there is a good one that agrees with the journal.
    let mut checkpoint = None;
    let mut checkpoint_epoch = 0;
    if names.iter().any(|n| n == INDEX_FILE) {
        let file = dir.open(INDEX_FILE, false).map_err(io("open index"))?;
        let len = file.len().map_err(io("stat index"))?;
        let mut bytes = vec![0u8; len as usize];
        file.read_at(0, &mut bytes).map_err(io("read index"))?;
        // Every page the root names is read and checked now: a bad page found later could
        // only fail the store, found now it costs a rebuild from the journal.
        let decoded = decode_checkpoint_with(&bytes, Some(pager.clone())).and_then(|(ix, e)| {
            ix.verify_pages().map_err(|e| e.to_string())?;
            Ok((ix, e))
        });
        match decoded {
            Ok((index, epoch)) if epoch < seals.epoch_before(index.position) => {
                // It claims a position after a newer master's epoch-start, yet was written by
                // an older epoch: a zombie wrote it in its check-then-act window, and it may
                // describe records the seal threw away. A full replay is always correct (GC
                // keeps what it needs). An older-epoch checkpoint whose position lies before
                // every newer epoch-start is the deposed master's last legitimate one: it is
                // used (and the seal check below still rejects one that reaches past a seal),
                // so a takeover replays only the tail, not the whole journal.
                tracing::warn!(
                    "Index checkpoint {}/{INDEX_FILE} was written by epoch {epoch}, older than \
                     the journal's newest epoch {newest_start_epoch}; ignoring it and \
                     rebuilding the index from the whole journal (it covered {}:{})",
                    dir.describe(),
                    segment_name(index.position.segment),
                    index.position.offset
                );
                report.stale_checkpoint_ignored = true;
            }
            Ok((index, epoch)) => {
                checkpoint = Some(index);
                checkpoint_epoch = epoch;
            }
            Err(reason) => tracing::warn!(
                "Index checkpoint {}/{INDEX_FILE} is corrupt ({reason}); rebuilding the index \
                 from the whole journal",
                dir.describe()
            ),
        }
    } else if !files.is_empty() {
        tracing::warn!(
            "No index checkpoint {}/{INDEX_FILE}; rebuilding the index from the whole journal",
            dir.describe()
        );
    }
    if let Some(index) = &checkpoint {
        let pos = index.position;
        let past_seal = seals
            .sealed
            .get(&pos.segment)
            .is_some_and(|sealed| pos.offset > *sealed);
        let ahead = past_seal
            || match files.get(&pos.segment) {
                Some(f) => f.len().map_err(io("stat segment"))? < pos.offset,
                None => pos.segment != 0 && files.keys().all(|s| *s < pos.segment),
            };
        if ahead {
            tracing::warn!(
                "Index checkpoint covers {}:{} which the journal does not reach; rebuilding \
                 the index from the whole journal",
                segment_name(pos.segment),
                pos.offset
            );
            checkpoint = None;
        }
    }

    match &checkpoint {
        Some(index) => pager.set_committed(index.referenced_pages()),
        None => {
            checkpoint_epoch = 0;
            // Nothing durable that will be used names a page: the rebuilt index may write
            // over all of them (the old root is replaced by the first checkpoint, and a crash
            // before that finds its pages' CRCs wrong and rebuilds again).
            pager.reset();
        }
    }
    let (mut index, start) = match checkpoint {
        Some(index) => {
            report.from_checkpoint = true;
            let start = index.position;
            (index, start)
        }
        None => {
            let first = files.keys().next().copied().unwrap_or(0);
            (
                Index::with_pager(Some(pager.clone())),
                Position {
                    segment: first,
                    offset: SEGMENT_HEADER_BYTES as u64,
                },
            )
        }
    };
    report.start = start;
    tracing::info!(
        "Recovering from the journal @{}:{}",
        start.segment,
        start.offset
    );

    let to_replay: Vec<u32> = files
        .keys()
        .copied()
        .filter(|s| *s >= start.segment)
        .collect();
    let mut progress = Progress {
        total_bytes: 0,
        done_bytes: 0,
        started,
        last_log: started,
    };
    for s in &to_replay {
        progress.total_bytes += files[s].len().map_err(io("stat segment"))?;
    }
    let last_id = to_replay.last().copied();
    let mut tail_end: Option<SegmentEnd> = None;
    let mut replay = Replay {
        config,
        seals: &seals,
        epoch_floor: seals.epoch_before(start),
    };
    for &id in &to_replay {
        let is_last = Some(id) == last_id;
        let from = if id == start.segment {
            start.offset
        } else {
            SEGMENT_HEADER_BYTES as u64
        };
        let end = replay.segment(
            id,
            files[&id].as_ref(),
            from,
            is_last,
            &mut index,
            &mut report,
            &mut progress,
        )?;
        if is_last {
            tail_end = Some(end);
        }
    }

    // The epoch to write with. Replay only read; nothing was changed yet.
    let journal_epoch = report
        .max_epoch_seen
        .max(newest_start_epoch)
        .max(checkpoint_epoch);
    let epoch = if config.epoch >= journal_epoch {
        config.epoch
    } else if config.fence.is_some() {
        return Err(fenced(&format!(
            "the journal holds epoch {journal_epoch}, newer than this master's epoch {}",
            config.epoch
        )));
    } else {
        // No HA: nobody else writes here, and records stamped below the journal's newest
        // epoch-start would be ignored by the next replay.
        tracing::warn!(
            "the journal holds records of epoch {journal_epoch}, newer than the configured \
             epoch {}; writing with epoch {journal_epoch} (no fence configured)",
            config.epoch
        );
        journal_epoch
    };
    report.epoch = epoch;

    // Missing segments: every id up to the last must exist or have been released by GC.
    let max_id = files.keys().next_back().copied().unwrap_or(0);
    let mut missing: Vec<u32> = (1..=max_id)
        .filter(|s| !files.contains_key(s) && !is_released(&index.released, *s))
        .collect();
    for s in index.referenced_segments() {
        if !files.contains_key(&s) && !missing.contains(&s) {
            missing.push(s);
        }
    }
    missing.sort_unstable();
    if !missing.is_empty() {
        let list: Vec<String> = missing.iter().map(|s| segment_name(*s)).collect();
        if !config.ignore_missing_journal_files {
            tracing::error!(
                "Journal files missing from {}: {}; refusing to start (set \
                 ignore_missing_journal_files=true to start without them and lose their data)",
                dir.describe(),
                list.join(", ")
            );
            return Err(StoreError::Corrupt {
                location: list.join(", "),
                reason: "missing journal file(s); set ignore_missing_journal_files=true to \
                         start without them"
                    .to_string(),
            });
        }
        for s in &missing {
            report.messages_dropped += index.drop_segment(*s)?;
        }
        tracing::warn!(
            "Journal files missing from {}: {}; ignored (ignore_missing_journal_files), {} \
             message(s) lost",
            dir.describe(),
            list.join(", "),
            report.messages_dropped
        );
        report.missing_segments = missing;
    }

    // Finish a GC that released segments but was cut before deleting them (oldest first).
    let stale: Vec<u32> = files
        .keys()
        .copied()
        .filter(|s| is_released(&index.released, *s) && Some(*s) != last_id)
        .collect();
    for s in stale {
        tracing::info!("Removing journal file {} released by GC", segment_name(s));
        dir.remove(&segment_name(s)).map_err(io("remove segment"))?;
        files.remove(&s);
    }

    // The head: the last segment, cut back to its last good record, or a new one.
    let mut head = match tail_end {
        Some(SegmentEnd {
            id,
            end,
            header_ok,
            written_end,
        }) => {
            let file = files[&id].clone();
            let len = file.len().map_err(io("stat segment"))?;
            let capacity_bytes = len.max(config.journal_max_file_length).max(end);
            if !header_ok {
                file.set_len(0).map_err(io("truncate torn segment"))?;
                file.write_at(0, &segment_header(id))
                    .map_err(io("write segment header"))?;
                file.set_len(capacity_bytes)
                    .map_err(io("preallocate segment"))?;
                file.sync_data().map_err(io("fdatasync"))?;
            } else if written_end > end {
                // Bytes after the last valid record are an unconfirmed write cut by a crash
                // (a torn record, or pages of a group that survived while an earlier page of it
                // did not). The writer appends at `end`; a stale record it does not overwrite
                // would be replayed after the new ones. Zero them, durably, before any append.
                if report.torn_tail.is_none() {
                    tracing::warn!(
                        "Journal file {} holds {} byte(s) after its last valid record at {end} \
                         (a write cut by a power loss, never confirmed); zeroing them",
                        segment_name(id),
                        written_end - end
                    );
                }
                zero_range(file.as_ref(), end, written_end)?;
                file.sync_data().map_err(io("fdatasync"))?;
            } else {
                // A process that crashed (without a power cut) can leave its last writes in the
                // page cache, not on disk. Make them durable before this writer's first record,
                // which starts a sync unit: a power cut must not tear bytes before it.
                file.sync_data().map_err(io("fdatasync"))?;
            }
            Head {
                id,
                file,
                offset: end,
                capacity_bytes,
            }
        }
        None => {
            let after_released = index.released.iter().map(|r| r.1).max().unwrap_or(0);
            let id = max_id.max(after_released).max(index.position.segment) + 1;
            let head = create_segment(dir, id, config.journal_max_file_length, 0)?;
            files.insert(id, head.file.clone());
            head
        }
    };

    // A new master never appends to an older master's segment: that one may still be written by
    // its deposed owner. Seal it at what we found valid, and start our own.
    if epoch > journal_epoch {
        check_fence(config)?;
        let mut sealed = Vec::new();
        if tail_end.is_some() {
            sealed.push((head.id, head.offset));
            let next = head.id.checked_add(1).ok_or_else(|| {
                StoreError::Failed("journal segment ids exhausted (u32)".to_string())
            })?;
            head = create_segment(dir, next, config.journal_max_file_length, 0)?;
            files.insert(head.id, head.file.clone());
        }
        let start = EpochStart { epoch, sealed };
        let mut buf = Vec::new();
        let at = begin_record(&mut buf);
        encode_epoch_start(&mut buf, &start).map_err(|e| StoreError::Config(e.0))?;
        finish_record(&mut buf, at, RecordType::EpochStart, epoch);
        // The first record of a segment created (and synced) just now starts a sync unit.
        mark_unit_start(&mut buf[at..]);
        debug_assert_eq!(head.offset, SEGMENT_HEADER_BYTES as u64);
        debug_assert!(head.offset + buf.len() as u64 <= head.capacity_bytes);
        head.file
            .write_at(head.offset, &buf)
            .map_err(io("write epoch start"))?;
        head.file.sync_data().map_err(io("fdatasync"))?;
        head.offset += buf.len() as u64;
        index.apply_epoch_start(head.id, &start.sealed);
        match start.sealed.first() {
            Some((segment, len)) => tracing::info!(
                "Journal epoch {epoch} starts in {}, sealing {} at {len} bytes",
                segment_name(head.id),
                segment_name(*segment)
            ),
            None => tracing::info!("Journal epoch {epoch} starts in {}", segment_name(head.id)),
        }
        report.epoch_start = Some(start);
        // Deposed while opening: fail now rather than at the first write.
        check_fence(config)?;
    }
    index.position = Position {
        segment: head.id,
        offset: head.offset,
    };

    report.duration = started.elapsed();
    tracing::info!(
        "Recovery replayed {} operations from the journal in {:.3} seconds.",
        report.replayed_ops,
        report.duration.as_secs_f64()
    );
    Ok(Recovered {
        epoch,
        index,
        head,
        segments: files,
        report,
    })
}

/// Replay state that spans segments.
struct Replay<'a> {
    config: &'a JournalConfig,
    seals: &'a Seals,
    /// The newest epoch-start replayed so far: records of older epochs after it are a deposed
    /// master's and are ignored.
    epoch_floor: u64,
}

impl Replay<'_> {
    /// Replays one segment from `from`. Returns where its valid records end.
    #[allow(clippy::too_many_arguments)]
    fn segment(
        &mut self,
        id: u32,
        file: &dyn StorageFile,
        from: u64,
        is_last: bool,
        index: &mut Index,
        report: &mut RecoveryReport,
        progress: &mut Progress,
    ) -> Result<SegmentEnd, StoreError> {
        let config = self.config;
        let name = segment_name(id);
        let file_len = file.len().map_err(io("stat segment"))?;
        let mut bytes = vec![0u8; file_len as usize];
        file.read_at(0, &mut bytes).map_err(io("read segment"))?;
        if let Some(&sealed) = self.seals.sealed.get(&id) {
            // Everything past the seal was written after a newer master took over: ignored, even
            // if well-formed. (The bytes stay: the deposed master may still hold the file open.)
            let sealed = sealed.max(SEGMENT_HEADER_BYTES as u64) as usize;
            if sealed < bytes.len() {
                if parse_frame(&bytes[sealed..]) != Err(FrameError::End) {
                    tracing::warn!(
                    "Journal file {name} holds data past its seal at {sealed} bytes, written by \
                     a deposed master after a newer one took over; ignoring it"
                );
                    report.ignored_past_seal.push((name.clone(), sealed as u64));
                }
                bytes.truncate(sealed);
            }
        }
        let len = bytes.len() as u64;
        let written_end = if is_last {
            bytes
                .iter()
                .rposition(|b| *b != 0)
                .map_or(0, |p| p as u64 + 1)
        } else {
            0
        };
        let ends_at = |end: u64, header_ok: bool| SegmentEnd {
            id,
            end,
            header_ok,
            written_end,
        };

        if parse_segment_header(&bytes) != Some(u64::from(id)) {
            let never_written = bytes
                .iter()
                .skip(SEGMENT_HEADER_BYTES.min(bytes.len()))
                .all(|b| *b == 0);
            if is_last && never_written {
                // Created just before a crash: its header was never synced. Start it afresh.
                tracing::warn!("Journal file {name} has a torn header; starting it afresh");
                report.torn_tail = Some((name, 0));
                return Ok(ends_at(SEGMENT_HEADER_BYTES as u64, false));
            }
            let reason = "bad segment header".to_string();
            return corrupt(config, &name, 0, &reason, len as usize, report)
                .map(|_| ends_at(len, true));
        }

        let mut at = from as usize;
        loop {
            if at >= bytes.len() {
                break;
            }
            let err = match parse_frame(&bytes[at..]) {
                Ok(frame) if frame.epoch < self.epoch_floor => {
                    // Only a deposed master writes an older epoch after a newer epoch-start.
                    tracing::warn!(
                        "Ignoring a record of epoch {} at {name}:{at}: epoch {} started before it",
                        frame.epoch,
                        self.epoch_floor
                    );
                    report.stale_epoch_records_ignored += 1;
                    let total = frame.total_bytes();
                    progress.advance(total as u64);
                    at += total;
                    continue;
                }
                Ok(frame) => {
                    report.max_epoch_seen = report.max_epoch_seen.max(frame.epoch);
                    let total = frame.total_bytes();
                    let payload_at = at + RECORD_HEADER_BYTES;
                    let applied = match frame.kind {
                        RecordType::EpochStart => decode_epoch_start(frame.payload, frame.epoch)
                            .map(|start| {
                                self.epoch_floor = self.epoch_floor.max(start.epoch);
                                index.apply_epoch_start(id, &start.sealed);
                                0
                            }),
                        RecordType::Batch => match decode_batch(frame.payload) {
                            Ok(ops) => {
                                let n = ops.len() as u64;
                                for op in ops {
                                    // An error here is the index's (a page that cannot be
                                    // read), not the record's: it ends the open.
                                    match op {
                                        DecodedOp::Enqueue {
                                            list,
                                            seq,
                                            payload_offset,
                                            len,
                                        } => index.apply_enqueue(
                                            &list,
                                            seq,
                                            Location {
                                                segment: id,
                                                offset: (payload_at + payload_offset) as u32,
                                                len,
                                            },
                                        )?,
                                        DecodedOp::Other(op) => index.apply_other(op, id)?,
                                    }
                                }
                                Ok(n)
                            }
                            Err(e) => Err(e),
                        },
                        // Filler of the direct path: nothing to apply, not a record of the log.
                        RecordType::Padding => {
                            progress.advance(total as u64);
                            at += total;
                            continue;
                        }
                        RecordType::SegmentsReleased => {
                            decode_released(frame.payload).map(|(ranges, max_seqs)| {
                                index.apply_released(&ranges);
                                index.apply_max_seqs(&max_seqs);
                                1
                            })
                        }
                    };
                    match applied {
                        Ok(n) => {
                            report.replayed_ops += n;
                            report.replayed_records += 1;
                            progress.advance(total as u64);
                            at += total;
                            continue;
                        }
                        // A good CRC around undecodable ops: a bug or a foreign writer.
                        Err(reason) => (format!("undecodable record: {reason}"), Some(at + total)),
                    }
                }
                Err(FrameError::End) => {
                    // Zeros where a header should be. In the last segment, non-zero bytes may
                    // follow: pages of the last sync unit that survived a power cut while an
                    // earlier page of it did not (the end: recovery zeroes them), or synced
                    // records after a zeroed region (corruption), told apart by a unit start.
                    if !(is_last && unit_start_after(&bytes[..written_end as usize], at)) {
                        break;
                    }
                    ("zeroed bytes before later synced records".to_string(), None)
                }
                Err(e) => (e.to_string(), None),
            };
            let (reason, known_next) = err;
            let next = known_next.or_else(|| next_valid_record(&bytes, at + 1));
            // Only the last sync unit of the last segment can be damaged by a power cut: a bad
            // record there with no sync-unit start after it is the torn end of that unit, and
            // whatever valid records follow it belong to that unit, never confirmed.
            let torn = is_last
                && known_next.is_none()
                && !unit_start_after(&bytes[..(written_end as usize).max(at)], at + 1);
            if torn {
                tracing::warn!(
                    "Journal file {name} has a torn tail at offset {at} ({reason}); truncating {} \
                 byte(s) of unconfirmed data",
                    len as usize - at
                );
                report.torn_tail = Some((name, at as u64));
                return Ok(ends_at(at as u64, true));
            }
            let next = next.unwrap_or(bytes.len());
            corrupt(config, &name, at, &reason, next - at, report)?;
            progress.advance((next - at) as u64);
            at = next;
        }
        Ok(ends_at(at as u64, true))
    }
}

/// Where the valid records of a replayed segment end.
#[derive(Debug, Clone, Copy)]
struct SegmentEnd {
    id: u32,
    /// The end of its last valid record: where the writer appends next.
    end: u64,
    /// Whether its header is good (else it is started afresh).
    header_ok: bool,
    /// The end of its last non-zero byte (computed for the last segment only, else 0).
    written_end: u64,
}

/// Writes zeros over `from..to` (not synced).
fn zero_range(file: &dyn StorageFile, from: u64, to: u64) -> Result<(), StoreError> {
    const CHUNK_BYTES: u64 = 1 << 20;
    let zeros = vec![0u8; CHUNK_BYTES.min(to.saturating_sub(from)) as usize];
    let mut at = from;
    while at < to {
        let n = (to - at).min(CHUNK_BYTES);
        file.write_at(at, &zeros[..n as usize])
            .map_err(io("zero stale tail"))?;
        at += n;
    }
    Ok(())
}

/// Reports a corrupt region: an error, or (when skipping is allowed) an error log line.
fn corrupt(
    config: &JournalConfig,
    name: &str,
    at: usize,
    reason: &str,
    skipped_bytes: usize,
    report: &mut RecoveryReport,
) -> Result<(), StoreError> {
    let location = format!("{name}:{at}");
    if config.check_for_corrupt_journal_files {
        tracing::error!(
            "Corrupt journal record at {location} ({reason}); skipping {skipped_bytes} byte(s) \
             to the next valid record (check_for_corrupt_journal_files); the operations in them \
             are lost"
        );
        report.corrupt_records_skipped += 1;
        Ok(())
    } else {
        tracing::error!(
            "Corrupt journal record at {location} ({reason}); refusing to start (set \
             check_for_corrupt_journal_files=true to skip corrupt records)"
        );
        Err(StoreError::Corrupt {
            location,
            reason: format!(
                "{reason}; set check_for_corrupt_journal_files=true to skip corrupt records"
            ),
        })
    }
}
