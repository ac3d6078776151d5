//! The lsm store's group-commit writer thread.
//!
//! Producers put `(batch, completer)` into a bounded channel (the store's backpressure). The
//! writer takes everything available, up to `group_bytes_max` / `group_batches_max`, turns the
//! whole group into **one** `WriteBatch` (messages, list stats and subscriptions together),
//! writes it with one WAL sync (`SyncMode::Always`), publishes the new list stats, and only then
//! completes every waiter. So one sync confirms every batch that arrived while the previous one
//! was running.
//!
//! Building the `WriteBatch` needs the current state of the messages an op touches (the length
//! of an acked message, whether an enqueue replaces one). Within a group, earlier ops are not in
//! RocksDB yet, so the writer reads through a per-group overlay (`Staged`) first.
//!
//! A failed write or sync fails the store for good (RocksDB itself stops accepting writes after
//! a failed WAL sync, and the data may be gone from the page cache); the group's waiters and
//! every later batch get the error. With an HA fence, the writer checks it before writing a
//! group and again before confirming it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Instant;

use rocksdb::{WriteBatch, WriteOptions, DB};

use crate::group::{self, GroupLimits, GroupWriter, Submitted, SyncClock};
use crate::lsm::codec::{self, ListStats};
use crate::lsm::{batch_bytes, cf, rocks_error, Shared, CF_LISTS, CF_MESSAGES, CF_SUBSCRIPTIONS};
use crate::{Batch, Completer, Op, StoreError};

use super::LSM_BATCH_BYTES_MAX;

/// What a group changes, ahead of RocksDB: reads during staging look here first.
#[derive(Debug, Default)]
struct Staged {
    /// New stats per list touched by the group; `None` = the list was purged (row deleted).
    lists: HashMap<String, Option<ListStats>>,
    /// Messages written (`Some(len)`) or deleted (`None`) by the group.
    messages: HashMap<(String, u64), Option<u64>>,
    /// Lists purged by the group: their messages not in `messages` are gone.
    purged: HashSet<String>,
    /// Payload bytes of the group's enqueues.
    enqueued_bytes: u64,
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    db: Arc<DB>,
    /// Whether a group was written to the WAL but not synced, and when it must be.
    clock: SyncClock,
    /// Batches written since the last WAL sync: the next sync makes them durable and counts
    /// them as one group ([`crate::CommitStats::group_batches`]).
    batches_unsynced: u64,
    /// The messages (enqueues) of those batches.
    messages_unsynced: u64,
}

impl Writer {
    pub(crate) fn new(shared: Arc<Shared>, db: Arc<DB>) -> Writer {
        let clock = SyncClock::new(shared.config.sync, shared.config.ack_sync_delay_ms);
        Writer {
            shared,
            db,
            clock,
            batches_unsynced: 0,
            messages_unsynced: 0,
        }
    }

    /// Runs until every sender is gone, then syncs what is left unsynced.
    pub(crate) fn run(mut self, rx: Receiver<Submitted>) {
        let limits = GroupLimits {
            bytes_max: self.shared.config.group_bytes_max,
            items_max: self.shared.config.group_batches_max,
        };
        group::run(&mut self, &rx, limits);
    }

    /// Syncs the WAL (for lazy groups, `Periodic` and `Never`); a failure fails the store.
    fn sync_wal(&mut self) -> bool {
        let started = Instant::now();
        match self.db.flush_wal(true) {
            Ok(()) => {
                self.shared
                    .commit
                    .sync_ns
                    .record_duration(started.elapsed());
                self.synced();
                true
            }
            Err(e) => {
                self.shared
                    .set_failed(&rocks_error("sync WAL", &self.shared.config.path, e));
                false
            }
        }
    }

    /// Counts a WAL sync, and the batches it made durable as one group. A sync that made no
    /// batch durable is not a group: it would only pull the size distribution towards zero.
    fn synced(&mut self) {
        self.clock.synced();
        self.shared.stats.syncs.fetch_add(1, Ordering::Relaxed);
        let batches = std::mem::take(&mut self.batches_unsynced);
        let messages = std::mem::take(&mut self.messages_unsynced);
        if batches > 0 {
            self.shared.commit.group_batches.record(batches);
            self.shared.commit.group_messages.record(messages);
        }
    }

    fn fail_all(&self, err: StoreError, waiters: Vec<Completer>) {
        self.shared.set_failed(&err);
        let err = self.shared.failed().unwrap_or(err);
        for w in waiters {
            w.complete(Err(err.clone()));
        }
    }

    /// Writes one group as one `WriteBatch`, then confirms its batches.
    fn write_group(&mut self, group: Vec<Submitted>) {
        let mut waiters = Vec::with_capacity(group.len());
        // When each waiter was submitted, for the commit-wait histogram; `None` for a lazy
        // ack, whose confirmation is not a wait for durability.
        let mut submitted = Vec::with_capacity(group.len());
        let mut batches = Vec::with_capacity(group.len());
        let mut messages = 0u64;
        let mut needs_sync = false;
        for Submitted {
            ops,
            completer,
            lazy,
            submitted_at,
            ..
        } in group
        {
            let bytes = batch_bytes(&ops);
            if bytes > LSM_BATCH_BYTES_MAX {
                // Refuse this batch only; the store is fine.
                completer.complete(Err(StoreError::Config(format!(
                    "batch of {bytes} bytes is over the lsm batch limit of \
                     {LSM_BATCH_BYTES_MAX} bytes"
                ))));
                continue;
            }
            needs_sync |= !lazy;
            messages += crate::stats::enqueued_messages(&ops);
            waiters.push(completer);
            submitted.push((!lazy).then_some(submitted_at));
            batches.push(ops);
        }
        if waiters.is_empty() {
            return;
        }
        if let Some(err) = self.shared.failed() {
            for w in waiters {
                w.complete(Err(err.clone()));
            }
            return;
        }
        // Fence before the write: a deposed master writes nothing more (one check per group).
        if let Err(e) = self.shared.check_fence() {
            self.fail_all(e, waiters);
            return;
        }
        let mut wb = WriteBatch::default();
        let mut staged = Staged::default();
        for ops in batches {
            if let Err(e) = self.stage(&mut wb, &mut staged, ops) {
                self.fail_all(e, waiters);
                return;
            }
        }
        if let Err(e) = self.stage_list_rows(&mut wb, &staged) {
            self.fail_all(e, waiters);
            return;
        }
        // A group of lazy batches only is written and left for a later sync (a later group's,
        // which syncs the whole WAL file, or the timer's), unless the oldest unsynced lazy
        // group has waited `ack_sync_delay_ms` already; with `Periodic`, the group that finds
        // the interval passed syncs (the WAL sync covers every earlier unsynced group).
        let sync = self.clock.must_sync(needs_sync);
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        let started = Instant::now();
        if let Err(e) = self.db.write_opt(wb, &wo) {
            let op = if sync { "write and sync" } else { "write" };
            self.fail_all(rocks_error(op, &self.shared.config.path, e), waiters);
            return;
        }
        self.shared.stats.groups.fetch_add(1, Ordering::Relaxed);
        self.batches_unsynced += waiters.len() as u64;
        self.messages_unsynced += messages;
        if sync {
            // RocksDB writes the WAL record and syncs it in one call: timed together, like
            // the journal's linked io_uring write and fdatasync.
            self.shared
                .commit
                .sync_ns
                .record_duration(started.elapsed());
            self.synced();
        } else {
            self.clock.written();
        }
        // Fence again before confirming: a master deposed while writing confirms nothing.
        if let Err(e) = self.shared.check_fence() {
            self.fail_all(e, waiters);
            return;
        }
        // Only a synced group's batches are durable now; a written-only group's wait is not a
        // wait for durability (a later sync covers it, and records no wait either).
        if sync {
            let now = Instant::now();
            for since in submitted.into_iter().flatten() {
                self.shared.commit.record_wait(since, now);
            }
        }
        self.publish(staged, waiters);
    }

    /// Makes the group's list stats visible to `recover()` and `usage_bytes()`, then confirms.
    fn publish(&self, staged: Staged, waiters: Vec<Completer>) {
        {
            let mut lists = self.shared.lists.write();
            let mut usage = self.shared.usage_bytes.load(Ordering::Acquire);
            for (list, stats) in staged.lists {
                let old = match stats {
                    Some(s) => lists.insert(list, s),
                    None => lists.remove(&list),
                };
                usage = usage
                    .saturating_sub(old.map_or(0, |o| o.bytes))
                    .saturating_add(stats.map_or(0, |s| s.bytes));
            }
            self.shared.usage_bytes.store(usage, Ordering::Release);
        }
        let c = &self.shared.stats;
        c.batches.fetch_add(waiters.len() as u64, Ordering::Relaxed);
        c.bytes_written
            .fetch_add(staged.enqueued_bytes, Ordering::Relaxed);
        for w in waiters {
            w.complete(Ok(()));
        }
    }

    /// The list's stats as of the ops staged so far (`None` = no such list).
    fn list_stats(&self, staged: &Staged, list: &str) -> Option<ListStats> {
        match staged.lists.get(list) {
            Some(s) => *s,
            None => self.shared.lists.read().get(list).copied(),
        }
    }

    /// The payload length of message `seq` of `list` as of the ops staged so far.
    fn message_len(
        &self,
        staged: &Staged,
        list: &str,
        seq: u64,
    ) -> Result<Option<u64>, StoreError> {
        if let Some(len) = staged.messages.get(&(list.to_string(), seq)) {
            return Ok(*len);
        }
        if staged.purged.contains(list) {
            return Ok(None);
        }
        // Every stored message is covered by its list's stats (max_seq is the highest seq
        // enqueued since the list's last purge), so most lookups never reach RocksDB:
        // a new message's seq is above max_seq.
        match self.list_stats(staged, list) {
            Some(s) if s.count > 0 && seq <= s.max_seq => {}
            _ => return Ok(None),
        }
        let found = self
            .db
            .get_pinned_cf(cf(&self.db, CF_MESSAGES)?, codec::message_key(list, seq))
            .map_err(|e| rocks_error("read message", &self.shared.config.path, e))?;
        Ok(found.map(|v| v.len() as u64))
    }

    fn stage(
        &self,
        wb: &mut WriteBatch,
        staged: &mut Staged,
        ops: Batch,
    ) -> Result<(), StoreError> {
        let messages = cf(&self.db, CF_MESSAGES)?;
        for op in ops {
            match op {
                Op::Enqueue { list, seq, payload } => {
                    let len = payload.len() as u64;
                    let old = self.message_len(staged, &list, seq)?;
                    let mut stats = self.list_stats(staged, &list).unwrap_or_default();
                    if let Some(old) = old {
                        // Re-enqueueing the same seq replaces it; keep the counts exact.
                        stats = shrink(&list, stats, old)?;
                    }
                    stats.count += 1;
                    stats.bytes += len;
                    stats.max_seq = stats.max_seq.max(seq);
                    wb.put_cf(messages, codec::message_key(&list, seq), &payload);
                    staged.enqueued_bytes += len;
                    staged.messages.insert((list.clone(), seq), Some(len));
                    staged.lists.insert(list, Some(stats));
                }
                Op::Dequeue { list, seq } => {
                    // Removing an absent message is a no-op (and writes nothing).
                    if let Some(len) = self.message_len(staged, &list, seq)? {
                        let stats = self.list_stats(staged, &list).unwrap_or_default();
                        let stats = shrink(&list, stats, len)?;
                        wb.delete_cf(messages, codec::message_key(&list, seq));
                        staged.messages.insert((list.clone(), seq), None);
                        staged.lists.insert(list, Some(stats));
                    }
                }
                Op::PutSubscription(rec) => {
                    wb.put_cf(
                        cf(&self.db, CF_SUBSCRIPTIONS)?,
                        rec.list.as_bytes(),
                        codec::encode_subscription(&rec),
                    );
                }
                Op::DeleteSubscription { list } => {
                    wb.delete_cf(cf(&self.db, CF_SUBSCRIPTIONS)?, list.as_bytes());
                    self.stage_purge(wb, staged, list)?;
                }
                Op::Purge { list } => self.stage_purge(wb, staged, list)?,
            }
        }
        Ok(())
    }

    fn stage_purge(
        &self,
        wb: &mut WriteBatch,
        staged: &mut Staged,
        list: String,
    ) -> Result<(), StoreError> {
        // A list without stats holds no message: skip the range tombstone, which every later
        // read of the range would have to step over until compaction drops it.
        if self.list_stats(staged, &list).is_none() {
            return Ok(());
        }
        let prefix = codec::list_prefix(&list);
        let messages = cf(&self.db, CF_MESSAGES)?;
        match codec::prefix_end(&prefix) {
            // Later entries of a WriteBatch get later sequence numbers, so this tombstone
            // removes the list's earlier puts in this batch too, and not the later ones.
            Some(end) => wb.delete_range_cf(messages, prefix, end),
            None => {
                return Err(StoreError::Config(format!(
                    "list name of {} bytes has no key bound",
                    list.len()
                )))
            }
        }
        staged.messages.retain(|(l, _), _| *l != list);
        staged.purged.insert(list.clone());
        staged.lists.insert(list, None);
        Ok(())
    }

    /// Adds the final stats row of every list the group touched (once per list, not per op).
    fn stage_list_rows(&self, wb: &mut WriteBatch, staged: &Staged) -> Result<(), StoreError> {
        let lists = cf(&self.db, CF_LISTS)?;
        for (list, stats) in &staged.lists {
            match stats {
                Some(s) => wb.put_cf(lists, list.as_bytes(), s.encode()),
                None => wb.delete_cf(lists, list.as_bytes()),
            }
        }
        Ok(())
    }
}

/// `stats` less one message of `len` bytes; an underflow means the stats and the messages
/// disagree, which only corruption can cause.
fn shrink(list: &str, stats: ListStats, len: u64) -> Result<ListStats, StoreError> {
    match (stats.count.checked_sub(1), stats.bytes.checked_sub(len)) {
        (Some(count), Some(bytes)) => Ok(ListStats {
            count,
            bytes,
            max_seq: stats.max_seq,
        }),
        _ => Err(StoreError::Corrupt {
            location: format!("lsm list stats of {list}"),
            reason: format!(
                "a stored message of {len} bytes is not counted ({} messages, {} bytes)",
                stats.count, stats.bytes
            ),
        }),
    }
}

impl GroupWriter for Writer {
    type Item = Submitted;

    fn sync_due(&self) -> Option<Instant> {
        if self.shared.failed().is_some() {
            return None;
        }
        self.clock.due()
    }

    fn sync_timer(&mut self) {
        // A failure has failed the store already; the next batch learns it.
        let _ = self.sync_wal();
    }

    fn commit(&mut self, group: &mut Vec<Submitted>) {
        self.write_group(std::mem::take(group));
    }

    fn finish(&mut self) {
        if self.clock.unsynced() && self.shared.failed().is_none() {
            let _ = self.sync_wal();
        }
        tracing::debug!("lsm writer stopped");
    }
}
