//! Opening a journal: load the checkpoint, replay the journal after it, repair a torn tail.
//!
//! Never panics and never drops data silently: a torn tail (a partial or bad record at the end
//! of the last segment with nothing valid after it) is truncated with a warning naming file and
//! offset; a bad record anywhere else is corruption, reported with its location, and either
//! stops the open (default, ActiveMQ's `checkForCorruptJournalFiles=false`) or is skipped with
//! an error line (`check_for_corrupt_journal_files = true`). A missing segment stops the open
//! unless `ignore_missing_journal_files` is set.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::journal::index::{
    decode_checkpoint, is_released, Index, Location, Position, INDEX_FILE, INDEX_TMP_FILE,
};
use crate::journal::record::{
    decode_batch, decode_released, parse_frame, parse_segment_header, segment_header, DecodedOp,
    FrameError, RecordType, RECORD_HEADER_BYTES, RECORD_MAGIC, SEGMENT_HEADER_BYTES,
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
}

pub(crate) struct Recovered {
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

/// Opens the journal in `dir`.
pub(crate) fn recover(
    dir: &dyn StorageDir,
    config: &JournalConfig,
) -> Result<Recovered, StoreError> {
    let started = Instant::now();
    let mut report = RecoveryReport::default();
    let names = dir.list().map_err(io("list journal directory"))?;
    if names.iter().any(|n| n == INDEX_TMP_FILE) {
        // A checkpoint interrupted before its rename: never trusted, just removed.
        dir.remove(INDEX_TMP_FILE)
            .map_err(io("remove stale index.db.tmp"))?;
    }
    let mut files: BTreeMap<u32, Arc<dyn StorageFile>> = BTreeMap::new();
    for name in &names {
        if let Some(id) = parse_segment_name(name) {
            files.insert(id, dir.open(name, false).map_err(io("open segment"))?);
        }
    }

    // The checkpoint, if there is a good one that agrees with the journal.
    let mut checkpoint = None;
    if names.iter().any(|n| n == INDEX_FILE) {
        let file = dir.open(INDEX_FILE, false).map_err(io("open index"))?;
        let len = file.len().map_err(io("stat index"))?;
        let mut bytes = vec![0u8; len as usize];
        file.read_at(0, &mut bytes).map_err(io("read index"))?;
        match decode_checkpoint(&bytes) {
            Ok(index) => checkpoint = Some(index),
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
        let ahead = match files.get(&pos.segment) {
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

    let (mut index, start) = match checkpoint {
        Some(index) => {
            report.from_checkpoint = true;
            let start = index.position;
            (index, start)
        }
        None => {
            let first = files.keys().next().copied().unwrap_or(0);
            (
                Index::default(),
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
    let mut tail_end: Option<(u32, u64, bool)> = None; // (segment, end offset, header rewritten)
    for &id in &to_replay {
        let is_last = Some(id) == last_id;
        let from = if id == start.segment {
            start.offset
        } else {
            SEGMENT_HEADER_BYTES as u64
        };
        let end = replay_segment(
            id,
            files[&id].as_ref(),
            from,
            is_last,
            config,
            &mut index,
            &mut report,
            &mut progress,
        )?;
        if is_last {
            tail_end = Some(end);
        }
    }

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
            report.messages_dropped += index.drop_segment(*s);
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
    let head = match tail_end {
        Some((id, end, header_ok)) => {
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
            } else if report.torn_tail.is_some() {
                // Zero everything after the last good record, so no stale bytes of the torn
                // write can be mistaken for records later.
                file.set_len(end).map_err(io("truncate torn tail"))?;
                file.set_len(capacity_bytes)
                    .map_err(io("preallocate segment"))?;
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
    if report.max_epoch_seen > config.epoch {
        tracing::warn!(
            "the journal holds records of epoch {}, newer than this broker's epoch {}",
            report.max_epoch_seen,
            config.epoch
        );
    }
    Ok(Recovered {
        index,
        head,
        segments: files,
        report,
    })
}

/// Replays one segment from `from`. Returns (segment, end of its last good record, whether its
/// header is good).
#[allow(clippy::too_many_arguments)]
fn replay_segment(
    id: u32,
    file: &dyn StorageFile,
    from: u64,
    is_last: bool,
    config: &JournalConfig,
    index: &mut Index,
    report: &mut RecoveryReport,
    progress: &mut Progress,
) -> Result<(u32, u64, bool), StoreError> {
    let name = segment_name(id);
    let len = file.len().map_err(io("stat segment"))?;
    let mut bytes = vec![0u8; len as usize];
    file.read_at(0, &mut bytes).map_err(io("read segment"))?;

    if parse_segment_header(&bytes) != Some(u64::from(id)) {
        let never_written = bytes
            .iter()
            .skip(SEGMENT_HEADER_BYTES.min(bytes.len()))
            .all(|b| *b == 0);
        if is_last && never_written {
            // Created just before a crash: its header was never synced. Start it afresh.
            tracing::warn!("Journal file {name} has a torn header; starting it afresh");
            report.torn_tail = Some((name, 0));
            return Ok((id, SEGMENT_HEADER_BYTES as u64, false));
        }
        let reason = "bad segment header".to_string();
        return corrupt(config, &name, 0, &reason, len as usize, report).map(|_| (id, len, true));
    }

    let mut at = from as usize;
    loop {
        if at >= bytes.len() {
            break;
        }
        let err = match parse_frame(&bytes[at..]) {
            Ok(frame) => {
                report.max_epoch_seen = report.max_epoch_seen.max(frame.epoch);
                let total = frame.total_bytes();
                let payload_at = at + RECORD_HEADER_BYTES;
                let applied = match frame.kind {
                    RecordType::Batch => decode_batch(frame.payload).map(|ops| {
                        let n = ops.len() as u64;
                        for op in ops {
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
                                ),
                                DecodedOp::Other(op) => index.apply_other(op, id),
                            }
                        }
                        n
                    }),
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
            Err(FrameError::End) => break,
            Err(e) => (e.to_string(), None),
        };
        let (reason, known_next) = err;
        let next = known_next.or_else(|| next_valid_record(&bytes, at + 1));
        if is_last && next.is_none() {
            tracing::warn!(
                "Journal file {name} has a torn tail at offset {at} ({reason}); truncating {} \
                 byte(s) of unconfirmed data",
                len as usize - at
            );
            report.torn_tail = Some((name, at as u64));
            return Ok((id, at as u64, true));
        }
        let next = next.unwrap_or(bytes.len());
        corrupt(config, &name, at, &reason, next - at, report)?;
        progress.advance((next - at) as u64);
        at = next;
    }
    Ok((id, at as u64, true))
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
