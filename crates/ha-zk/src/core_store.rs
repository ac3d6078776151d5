//! The store side of the replication core's driver: how the core's log ([`crate::proto`])
//! lives in a message store.
//!
//! A message store keeps the *state* the entries built (queues, subscriptions), not the
//! entries. The log is represented by three things, always written in **one atomic batch**:
//! - the data: the ops of each entry (an entry's payload is a store batch,
//!   [`crate::wire::encode_batch`]);
//! - the position record ([`crate::position::POSITION_LIST`]): epoch and lsn of the last entry;
//! - the epoch history ([`EPOCHS_LIST`]): one record per epoch present, `seq` = the epoch,
//!   payload = its first lsn (`u64` little-endian).
//!
//! The store applies a batch atomically, so after any crash or power cut the three agree: the
//! recovered position names exactly the entries whose data is present, and the history
//! describes exactly them. Entries are not kept, so [`Recovered::tail`] is empty: a follower
//! behind a restarted master gets a full copy (simulated: `Params::state_store`).
//!
//! Everything here is sans-I/O except [`recover`], which reads the store.

use bytes::{Bytes, BytesMut};
use ferromq_store::{Batch, MessageStore, Op};

use crate::position::{load_all, position_ops, read_position, POSITION_LIST, RESERVED_PREFIX};
use crate::proto::{Entry, EpochHistory, MemberId, Recovered, StoreWrite};
use crate::wire::{decode_batch_bytes, encode_batch, Position};
use crate::ZkError;

/// The reserved list holding the epoch history.
pub const EPOCHS_LIST: &str = "replication://epochs";

/// The reserved list holding this member's numeric id (`ha.broker_id`, or the one allocated
/// from ZooKeeper): one record, `seq` 1, payload the id (`u32` little-endian). Distinct from
/// the older engine's `replication://member-id` (a random string).
pub const MEMBER_LIST: &str = "replication://member";

/// The record of this member's id.
pub fn member_op(id: MemberId) -> Op {
    Op::Enqueue {
        list: MEMBER_LIST.into(),
        seq: 1,
        payload: Bytes::copy_from_slice(&id.to_le_bytes()),
    }
}

/// The member id recorded in `store`, if any.
pub fn read_member(store: &dyn MessageStore) -> Result<Option<MemberId>, ZkError> {
    let Some(m) = store.load(MEMBER_LIST, None, 1)?.into_iter().next() else {
        return Ok(None);
    };
    let bytes: [u8; 4] = m.payload.as_ref().try_into().map_err(|_| {
        ZkError::Replication(format!(
            "{MEMBER_LIST} holds {} bytes, not a member id",
            m.payload.len()
        ))
    })?;
    Ok(Some(MemberId::from_le_bytes(bytes)))
}

/// A producer's batch as an entry payload. Reserved lists are the replication's own: a
/// producer's batch naming one is refused (it would corrupt the log's records).
pub fn entry_payload(batch: &Batch) -> Result<Bytes, ZkError> {
    refuse_reserved(batch)?;
    let mut b = BytesMut::new();
    encode_batch(&mut b, batch);
    Ok(b.freeze())
}

/// Part of a full copy (store records read from the master's view) as a `SnapshotChunk`'s
/// data.
pub fn chunk_data(records: &Batch) -> Result<Bytes, ZkError> {
    entry_payload(records)
}

/// A received chunk as a batch for the staging store.
pub fn chunk_batch(data: Bytes) -> Result<Batch, ZkError> {
    let batch = decode_batch_bytes(data)?;
    refuse_reserved(&batch)?;
    Ok(batch)
}

/// The data of entries replayed into a staging store after the copy's cut (the copy becomes
/// consistent once they are applied: store ops are idempotent per key). The position and
/// history come with [`install_batch`].
pub fn staged_entries_batch(entries: &[Entry]) -> Result<Batch, ZkError> {
    let mut ops = Vec::new();
    for e in entries {
        if !e.payload.is_empty() {
            let data = decode_batch_bytes(e.payload.clone())?;
            refuse_reserved(&data)?;
            ops.extend(data);
        }
    }
    Ok(ops)
}

/// The records that make a staged copy (its data already staged) a log ending at `last` with
/// `history`: submitted to the staging store last, in one batch, before it is installed.
pub fn install_batch(last: u64, history: &[(u64, u64)]) -> Result<Batch, ZkError> {
    let h = check_history(last, history)?;
    let mut ops: Batch = h.spans().iter().map(|s| epoch_op(*s)).collect();
    if last > 0 {
        ops.extend(position_ops(
            None,
            Position {
                epoch: h.epoch_at(last),
                lsn: last,
            },
        ));
    }
    Ok(ops)
}

fn refuse_reserved(batch: &Batch) -> Result<(), ZkError> {
    for op in batch {
        let list = match op {
            Op::Enqueue { list, .. }
            | Op::Dequeue { list, .. }
            | Op::DeleteSubscription { list }
            | Op::Purge { list } => list,
            Op::PutSubscription(r) => &r.list,
        };
        if list.starts_with(RESERVED_PREFIX) {
            return Err(ZkError::Replication(format!(
                "a replicated batch names the reserved list {list}"
            )));
        }
    }
    Ok(())
}

fn epoch_op((epoch, first): (u64, u64)) -> Op {
    Op::Enqueue {
        list: EPOCHS_LIST.into(),
        seq: epoch,
        payload: Bytes::copy_from_slice(&first.to_le_bytes()),
    }
}

/// A history that describes a log `1..=last`, or why not.
fn check_history(last: u64, spans: &[(u64, u64)]) -> Result<EpochHistory, ZkError> {
    let h = EpochHistory::from_spans(spans.to_vec()).ok_or_else(|| {
        ZkError::Replication(format!("epoch history {spans:?} is not increasing"))
    })?;
    let ok = match h.spans().last() {
        None => last == 0,
        Some(&(_, first)) => h.spans()[0].1 == 1 && first <= last,
    };
    if !ok {
        return Err(ZkError::Replication(format!(
            "epoch history {spans:?} does not describe a log of {last} entries"
        )));
    }
    Ok(h)
}

/// Where the log recorded in a live store ends; turns the core's writes into store batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecords {
    last: u64,
    last_epoch: u64,
}

impl LogRecords {
    /// The log end after `recovered` (what [`recover`] read) — or an empty log.
    pub fn new(recovered: &Recovered) -> LogRecords {
        LogRecords {
            last: recovered.last,
            last_epoch: recovered.history.last_epoch(),
        }
    }

    /// The last lsn.
    pub fn last(&self) -> u64 {
        self.last
    }

    /// The batch for one of the core's writes to the live store; `None` when there is nothing
    /// to write. Staging writes are not the live store's (see [`chunk_batch`] and
    /// [`install_batch`]); a cut below the last entry is refused — a message store cannot undo
    /// an entry (the core never asks with `Config::log_truncation` off).
    pub fn batch(&mut self, write: &StoreWrite) -> Result<Option<Batch>, ZkError> {
        match write {
            StoreWrite::Append(entries) => self.append(entries).map(Some),
            StoreWrite::Truncate { last } if *last == self.last => Ok(None),
            StoreWrite::Truncate { last } => Err(ZkError::Replication(format!(
                "asked to cut the log after {last} (it ends at {}): a message store cannot",
                self.last
            ))),
            StoreWrite::StageBegin
            | StoreWrite::Stage(_)
            | StoreWrite::StageAppend(_)
            | StoreWrite::Install { .. } => Err(ZkError::Replication(
                "a staging write is not the live store's".into(),
            )),
        }
    }

    /// After a staged copy was installed: the log is the copy's.
    pub fn installed(&mut self, last: u64, history: &[(u64, u64)]) -> Result<(), ZkError> {
        let h = check_history(last, history)?;
        self.last = last;
        self.last_epoch = h.last_epoch();
        Ok(())
    }

    fn append(&mut self, entries: &[Entry]) -> Result<Batch, ZkError> {
        let prev = (self.last > 0).then_some(self.last);
        let mut ops = Vec::new();
        let (mut last, mut last_epoch) = (self.last, self.last_epoch);
        for e in entries {
            if e.lsn != last + 1 || e.epoch < last_epoch {
                return Err(ZkError::Replication(format!(
                    "entry {}:{} does not follow {last_epoch}:{last}",
                    e.epoch, e.lsn
                )));
            }
            if e.epoch != last_epoch {
                ops.push(epoch_op((e.epoch, e.lsn)));
            }
            // A new master's marker carries nothing (an empty payload, no data ops).
            if !e.payload.is_empty() {
                let data = decode_batch_bytes(e.payload.clone())?;
                refuse_reserved(&data)?;
                ops.extend(data);
            }
            last = e.lsn;
            last_epoch = e.epoch;
        }
        if last != self.last {
            ops.extend(position_ops(
                prev,
                Position {
                    epoch: last_epoch,
                    lsn: last,
                },
            ));
        }
        self.last = last;
        self.last_epoch = last_epoch;
        Ok(ops)
    }
}

/// Reads the log's end and epoch history back from a live store (at start). The tail is
/// empty: a message store keeps no entries.
pub fn recover(store: &dyn MessageStore) -> Result<Recovered, ZkError> {
    let pos = read_position(store)?;
    let mut spans = Vec::new();
    // One record per epoch (in ascending seq: the spans' order).
    for m in load_all(store, EPOCHS_LIST)? {
        let first: [u8; 8] = m.payload.as_ref().try_into().map_err(|_| {
            ZkError::Replication(format!(
                "{EPOCHS_LIST} seq {}: an epoch record is not 8 bytes",
                m.seq
            ))
        })?;
        spans.push((m.seq, u64::from_le_bytes(first)));
    }
    if pos.lsn > 0 && spans.is_empty() && !store.load(POSITION_LIST, None, 1)?.is_empty() {
        return Err(ZkError::Replication(
            "the store has a replication position but no epoch history: it was written by the \
             older replication engine; start this member with an empty data directory (it takes \
             a full copy)"
                .into(),
        ));
    }
    let history = check_history(pos.lsn, &spans)?;
    if pos.lsn > 0 && history.last_epoch() != pos.epoch {
        return Err(ZkError::Replication(format!(
            "the recorded position {pos} is not in the recorded history's last epoch {}",
            history.last_epoch()
        )));
    }
    Ok(Recovered {
        history,
        last: pos.lsn,
        tail: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enq(list: &str, seq: u64) -> Op {
        Op::Enqueue {
            list: list.into(),
            seq,
            payload: Bytes::from(format!("m{seq}")),
        }
    }

    #[test]
    fn a_marker_entry_moves_the_position_and_starts_its_epoch() {
        let mut r = LogRecords::new(&Recovered::default());
        let marker = Entry {
            epoch: 1,
            lsn: 1,
            payload: Bytes::new(),
        };
        let ops = r.batch(&StoreWrite::Append(vec![marker])).unwrap().unwrap();
        assert_eq!(ops.len(), 2, "{ops:?}");
        assert!(matches!(&ops[0], Op::Enqueue { list, seq: 1, .. } if list == EPOCHS_LIST));
        assert!(matches!(&ops[1], Op::Enqueue { list, seq: 1, .. } if list == POSITION_LIST));
    }

    fn entry(epoch: u64, lsn: u64) -> Entry {
        Entry {
            epoch,
            lsn,
            payload: entry_payload(&vec![enq("queue://q", lsn)]).unwrap(),
        }
    }

    #[test]
    fn an_append_carries_its_data_the_epoch_starts_and_the_new_position() {
        let mut r = LogRecords::new(&Recovered::default());
        let ops = r
            .batch(&StoreWrite::Append(vec![
                entry(1, 1),
                entry(1, 2),
                entry(3, 3),
            ]))
            .unwrap()
            .unwrap();
        let lists: Vec<(&str, u64)> = ops
            .iter()
            .map(|o| match o {
                Op::Enqueue { list, seq, .. } => (list.as_str(), *seq),
                Op::Dequeue { list, seq } => (list.as_str(), *seq),
                _ => ("other", 0),
            })
            .collect();
        assert_eq!(
            lists,
            [
                (EPOCHS_LIST, 1),
                ("queue://q", 1),
                ("queue://q", 2),
                (EPOCHS_LIST, 3),
                ("queue://q", 3),
                (POSITION_LIST, 3),
            ]
        );
        // The next append moves the position record (dequeues the old one).
        let ops = r
            .batch(&StoreWrite::Append(vec![entry(3, 4)]))
            .unwrap()
            .unwrap();
        assert!(matches!(&ops[1], Op::Dequeue { list, seq: 3 } if list == POSITION_LIST));
        assert_eq!(r.last(), 4);
    }

    #[test]
    fn gaps_older_epochs_cuts_staging_writes_and_reserved_lists_are_refused() {
        let mut r = LogRecords::new(&Recovered::default());
        r.batch(&StoreWrite::Append(vec![entry(2, 1)])).unwrap();
        let before = r.clone();
        assert!(r.batch(&StoreWrite::Append(vec![entry(2, 3)])).is_err());
        assert!(r.batch(&StoreWrite::Append(vec![entry(1, 2)])).is_err());
        assert!(r.batch(&StoreWrite::Truncate { last: 0 }).is_err());
        assert!(r.batch(&StoreWrite::StageBegin).is_err());
        assert_eq!(r, before, "a refused write changes nothing");
        assert_eq!(r.batch(&StoreWrite::Truncate { last: 1 }).unwrap(), None);
        let bad = vec![enq(POSITION_LIST, 9)];
        assert!(entry_payload(&bad).is_err());
        let mut b = BytesMut::new();
        encode_batch(&mut b, &bad);
        assert!(chunk_batch(b.clone().freeze()).is_err());
        let sneaky = Entry {
            epoch: 2,
            lsn: 2,
            payload: b.freeze(),
        };
        assert!(r.batch(&StoreWrite::Append(vec![sneaky])).is_err());
    }

    #[test]
    fn an_install_batch_records_exactly_the_copys_history_and_end() {
        assert!(install_batch(0, &[]).unwrap().is_empty());
        let ops = install_batch(9, &[(1, 1), (4, 6)]).unwrap();
        assert_eq!(ops.len(), 3);
        for bad in [
            (0, vec![(1, 1)]),
            (5, vec![]),
            (5, vec![(1, 2)]),
            (5, vec![(1, 1), (2, 7)]),
            (5, vec![(2, 1), (1, 3)]),
        ] {
            assert!(install_batch(bad.0, &bad.1).is_err(), "{bad:?}");
        }
    }
}
