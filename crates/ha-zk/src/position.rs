//! A broker's replication log position, kept **inside** its own store, in the same atomic batch
//! as the data it describes: position and data can never disagree after a crash.
//!
//! The position is one message on the reserved list [`POSITION_LIST`] whose seq is the lsn and
//! whose payload is `epoch:u64le | lsn:u64le`; each log entry enqueues the new record and
//! dequeues the previous one. The wrapper hides the list from the broker's recovery.

use bytes::Bytes;
use ferromq_store::{MessageStore, Op, StoreError};

use crate::wire::Position;

/// The reserved list that holds the position record.
pub const POSITION_LIST: &str = "replication://position";
/// The reserved list that holds this broker's member id (one record, seq 1). Never copied to
/// another broker and never wiped by a full copy: the id names the broker, not the data.
pub const MEMBER_ID_LIST: &str = "replication://member-id";
/// The reserved list that marks a full copy in progress (one record, seq 1). It is written in
/// the same atomic batch that wipes the store and removed in the batch that records the copy's
/// position: while it is there the store holds part of a copy, no position at all.
pub const COPYING_LIST: &str = "replication://copying";
/// What a member mid-copy presents as its last position to a master: an lsn no log reaches,
/// so the master can only answer with a full copy (never stream onto a partial one).
pub const NO_POSITION: Position = Position {
    epoch: 0,
    lsn: u64::MAX,
};
/// The reserved list of fenced master epochs (fast failover): a record with seq `E` says this
/// member heard nothing from the master of epoch `E` for `master_timeout` and promised never to
/// follow or acknowledge it again. Never copied and never wiped by a full copy: it is this
/// broker's promise, not the data's.
pub const FENCED_LIST: &str = "replication://fenced";
/// The prefix of every reserved list (hidden from the broker, excluded from full copies).
pub const RESERVED_PREFIX: &str = "replication://";

/// This broker's stable member id, created (and made durable) on first use.
///
/// Why in the store: the ZooKeeper member znode is ephemeral and renamed with every session,
/// and `host:port` changes with a dynamic bind port; the store is what a member *is* (a
/// broker with a new, empty data directory is rightly a new member). A data directory copied
/// to a second broker would duplicate the id: do not clone data directories between members.
pub async fn member_id(store: &dyn MessageStore) -> Result<String, StoreError> {
    if let Some(m) = store.load(MEMBER_ID_LIST, None, 1)?.first() {
        return String::from_utf8(m.payload.to_vec()).map_err(|_| StoreError::Corrupt {
            location: format!("{MEMBER_ID_LIST} seq {}", m.seq),
            reason: "member id is not UTF-8".into(),
        });
    }
    let id = new_member_id();
    store
        .submit(vec![Op::Enqueue {
            list: MEMBER_ID_LIST.into(),
            seq: 1,
            payload: Bytes::from(id.clone()),
        }])
        .await?;
    Ok(id)
}

fn new_member_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS per process; mixed with the time and pid so that two
    // brokers started at once on one host still differ.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut parts = [0u64; 2];
    for (i, p) in parts.iter_mut().enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(nanos);
        h.write_u32(std::process::id());
        h.write_usize(i);
        *p = h.finish();
    }
    format!("b-{:016x}{:016x}", parts[0], parts[1])
}

/// The ops that move the recorded position from `prev` (its lsn, if any) to `pos`.
pub fn position_ops(prev: Option<u64>, pos: Position) -> Vec<Op> {
    let mut payload = Vec::with_capacity(16);
    payload.extend_from_slice(&pos.epoch.to_le_bytes());
    payload.extend_from_slice(&pos.lsn.to_le_bytes());
    let mut ops = Vec::with_capacity(2);
    if let Some(p) = prev.filter(|p| *p != pos.lsn) {
        ops.push(Op::Dequeue {
            list: POSITION_LIST.into(),
            seq: p,
        });
    }
    ops.push(Op::Enqueue {
        list: POSITION_LIST.into(),
        seq: pos.lsn,
        payload: Bytes::from(payload),
    });
    ops
}

/// The position recorded in `store` (the highest record), or the zero position for a store that
/// never took part in replication.
pub fn read_position(store: &dyn MessageStore) -> Result<Position, StoreError> {
    let rec = store.recover()?;
    if !rec.lists.iter().any(|l| l.list == POSITION_LIST) {
        return Ok(Position::default());
    }
    // Normally one record; after an interrupted copy there may be a few. The highest counts.
    let mut best = Position::default();
    for m in load_all(store, POSITION_LIST)? {
        let p = decode(&m.payload).ok_or_else(|| StoreError::Corrupt {
            location: format!("{POSITION_LIST} seq {}", m.seq),
            reason: "position record is not 16 bytes".into(),
        })?;
        best = best.max(p);
    }
    Ok(best)
}

/// Every record of a reserved list (a few records: positions, epochs, fences), page by page.
pub(crate) fn load_all(
    store: &dyn MessageStore,
    list: &str,
) -> Result<Vec<ferromq_store::StoredMessage>, StoreError> {
    let mut all = Vec::new();
    let mut after = None;
    // Bounded: a reserved list of a billion records is a corrupt store, not a loop.
    for _ in 0..1_000_000 {
        let page = store.load(list, after, 1024)?;
        let Some(last) = page.last() else { break };
        after = Some(last.seq);
        all.extend(page);
    }
    Ok(all)
}

/// True while `store` holds an unfinished full copy (see [`COPYING_LIST`]).
pub fn copy_in_progress(store: &dyn MessageStore) -> Result<bool, StoreError> {
    Ok(!store.load(COPYING_LIST, None, 1)?.is_empty())
}

/// The position this member may report to an election: `None` while a copy is unfinished (it
/// holds no position, and must never be elected or counted, whatever `read_position` says).
pub fn reportable_position(store: &dyn MessageStore) -> Result<Option<Position>, StoreError> {
    if copy_in_progress(store)? {
        return Ok(None);
    }
    read_position(store).map(Some)
}

/// The ops that start a copy: wipe everything but the member id, and mark the copy.
pub fn begin_copy_ops(rec: &ferromq_store::Recovery, copy_at: Position) -> Vec<Op> {
    let mut ops: Vec<Op> = vec![Op::Purge {
        list: POSITION_LIST.into(),
    }];
    ops.extend(rec.subscriptions.iter().map(|s| Op::DeleteSubscription {
        list: s.list.clone(),
    }));
    // The member id names this broker, not the data: it stays.
    ops.extend(
        rec.lists
            .iter()
            .filter(|l| {
                l.list != MEMBER_ID_LIST && l.list != POSITION_LIST && l.list != FENCED_LIST
            })
            .map(|l| Op::Purge {
                list: l.list.clone(),
            }),
    );
    let mut payload = Vec::with_capacity(16);
    payload.extend_from_slice(&copy_at.epoch.to_le_bytes());
    payload.extend_from_slice(&copy_at.lsn.to_le_bytes());
    ops.push(Op::Enqueue {
        list: COPYING_LIST.into(),
        seq: 1,
        payload: Bytes::from(payload),
    });
    ops
}

/// The ops that finish a copy at `pos`: record the position and lift the mark, atomically.
pub fn end_copy_ops(pos: Position) -> Vec<Op> {
    let mut ops = position_ops(None, pos);
    ops.extend(lift_copy_mark_ops());
    ops
}

/// The op that lifts the copy mark: from then on the recorded position is reportable.
pub fn lift_copy_mark_ops() -> Vec<Op> {
    vec![Op::Dequeue {
        list: COPYING_LIST.into(),
        seq: 1,
    }]
}

/// The highest master epoch this member fenced, if any.
pub fn read_fence(store: &dyn MessageStore) -> Result<Option<u64>, StoreError> {
    let mut best = None;
    let mut after = None;
    for _ in 0..1_000_000 {
        let page = store.load(FENCED_LIST, after, 1024)?;
        let Some(last) = page.last() else { break };
        after = Some(last.seq);
        best = best.max(Some(last.seq));
    }
    Ok(best)
}

/// Durably fences `epoch` (and drops an older fence `prev`): from its completion on, this
/// member neither follows nor acknowledges that epoch's master.
pub fn fence_ops(prev: Option<u64>, epoch: u64) -> Vec<Op> {
    let mut ops = Vec::with_capacity(2);
    if let Some(p) = prev.filter(|p| *p != epoch) {
        ops.push(Op::Dequeue {
            list: FENCED_LIST.into(),
            seq: p,
        });
    }
    if prev != Some(epoch) {
        ops.push(Op::Enqueue {
            list: FENCED_LIST.into(),
            seq: epoch,
            payload: Bytes::new(),
        });
    }
    ops
}

/// Lifts the fence of `epoch` (its master turned out alive and was not replaced).
pub fn unfence_ops(epoch: u64) -> Vec<Op> {
    vec![Op::Dequeue {
        list: FENCED_LIST.into(),
        seq: epoch,
    }]
}

fn decode(b: &[u8]) -> Option<Position> {
    let e: [u8; 8] = b.get(0..8)?.try_into().ok()?;
    let l: [u8; 8] = b.get(8..16)?.try_into().ok()?;
    (b.len() == 16).then(|| Position {
        epoch: u64::from_le_bytes(e),
        lsn: u64::from_le_bytes(l),
    })
}

/// What a full copy carries for a list whose highest sequence ever enqueued is `max_seq`
/// when the copy's read ended at `read_up_to` (the last sequence read, `None`: none): so that
/// new messages continue above it on the receiver once it is promoted, an enqueue and a
/// dequeue of that sequence (they leave nothing but the sequence when the message is gone).
/// Harmless if an entry after the copy's cut touches it: those are applied after the copy,
/// in order. Empty when the read reached `max_seq` already.
pub fn max_seq_ops(list: &str, read_up_to: Option<u64>, max_seq: u64) -> Vec<ferromq_store::Op> {
    if max_seq == 0 || read_up_to.is_some_and(|a| a >= max_seq) {
        return Vec::new();
    }
    vec![
        ferromq_store::Op::Enqueue {
            list: list.into(),
            seq: max_seq,
            payload: bytes::Bytes::new(),
        },
        ferromq_store::Op::Dequeue {
            list: list.into(),
            seq: max_seq,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferromq_store::MemoryStore;

    #[tokio::test]
    async fn the_member_id_is_created_once_and_kept() {
        let s = MemoryStore::new();
        let id = member_id(&s).await.unwrap();
        assert!(id.starts_with("b-") && id.len() == 34, "{id}");
        assert_eq!(member_id(&s).await.unwrap(), id);
        assert_ne!(member_id(&MemoryStore::new()).await.unwrap(), id);
    }

    #[test]
    fn a_fence_is_recorded_replaced_lifted_and_survives_a_copy() {
        let s = MemoryStore::new();
        assert_eq!(read_fence(&s).unwrap(), None);
        s.submit(fence_ops(None, 4)).wait_blocking().unwrap();
        assert_eq!(read_fence(&s).unwrap(), Some(4));
        s.submit(fence_ops(Some(4), 4)).wait_blocking().unwrap();
        s.submit(fence_ops(Some(4), 7)).wait_blocking().unwrap();
        assert_eq!(read_fence(&s).unwrap(), Some(7));
        let rec = s.recover().unwrap();
        let wipe = begin_copy_ops(&rec, Position { epoch: 8, lsn: 9 });
        s.submit(wipe).wait_blocking().unwrap();
        assert_eq!(
            read_fence(&s).unwrap(),
            Some(7),
            "a full copy keeps the fence"
        );
        s.submit(unfence_ops(7)).wait_blocking().unwrap();
        assert_eq!(read_fence(&s).unwrap(), None);
    }

    #[test]
    fn position_moves_with_the_batches_that_carry_it() {
        let s = MemoryStore::new();
        assert_eq!(read_position(&s).unwrap(), Position::default());
        let p1 = Position { epoch: 1, lsn: 1 };
        s.submit(position_ops(None, p1)).wait_blocking().unwrap();
        assert_eq!(read_position(&s).unwrap(), p1);
        let p2 = Position { epoch: 2, lsn: 2 };
        s.submit(position_ops(Some(1), p2)).wait_blocking().unwrap();
        assert_eq!(read_position(&s).unwrap(), p2);
        let rec = s.recover().unwrap();
        let l = rec.lists.iter().find(|l| l.list == POSITION_LIST).unwrap();
        assert_eq!(l.count, 1, "the previous record is dequeued");
    }
}
