//! The HA fence: how a journal learns that its broker is no longer the master.
//!
//! In shared-file master/slave several brokers point at one journal directory and a lock elects
//! the master. A master can be deposed while it is still alive (stopped past its keep-alive, its
//! lock file replaced, a network file system dropping the lock); a new master then opens the same
//! journal. The old one ("zombie") may wake up with records queued, a checkpoint half taken, or a
//! segment about to be deleted. The journal asks the [`Fence`] before every action that another
//! master could observe, and fails for good at the first "no":
//!
//! - before writing a group of records, and again after its `fdatasync`, before any waiter is
//!   completed (so a deposed master never confirms a record);
//! - before creating a segment, writing a checkpoint (and before renaming it into place), and
//!   before deleting each segment in GC or compaction.
//!
//! A check and the action after it are not atomic: a master can be deposed in between. What such
//! a late action can do is bounded by the journal format rather than by the fence: a new master
//! never appends to an older master's segment and seals it (see `EpochStart` in
//! `docs/journal-format.md`), segments are created exclusively, and checkpoints carry the epoch
//! that wrote them.

use crate::StoreError;

/// Tells the journal whether its writer is still the master of its epoch.
///
/// Implemented by the HA locker (for example: the lock file is still the one we locked and still
/// holds our epoch). A check costs a few syscalls, so the journal calls it once per group commit,
/// not once per record. `Err` carries a reason for the log and the error the store reports; the
/// store then fails permanently with `StoreError::Failed("fenced: <reason>")`.
pub trait Fence: Send + Sync + std::fmt::Debug {
    /// `Ok` while this writer may still write; `Err(reason)` once it may not.
    fn check(&self) -> Result<(), String>;
}

/// The error a failed fence check turns into.
pub(crate) fn fenced(reason: &str) -> StoreError {
    StoreError::Failed(format!("fenced: {reason}"))
}
