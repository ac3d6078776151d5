//! The ferromq storage seam: the [`MessageStore`] trait, its record types, and its backends.
//!
//! The broker talks to storage only through [`MessageStore`]. The trait is shaped for a
//! group-committing, asynchronously confirming store:
//!
//! - writes are [`Op`]s submitted in atomic [`Batch`]es; a batch is applied all or nothing
//!   (a transaction commit that sends to two queues and acks three messages is one batch);
//! - [`MessageStore::submit`] never waits for the disk. It queues the batch and returns a
//!   [`Completion`] that resolves once the batch is durable under the store's sync policy, so a
//!   STOMP RECEIPT can be sent at that moment and not before;
//! - submission order is the order the store applies batches in: the broker submits the enqueue
//!   of a message before any ack of it, so a store never sees an ack of an unknown message.
//!
//! The broker identifies each persistent message list by a [`ListKey`]: one per queue
//! (`queue://NAME`) and one per durable topic subscription (`durable://CLIENT-ID:NAME`).
//! Within a list, messages carry a sequence number the broker assigns in increasing order.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod completion;
mod error;
mod group;
pub mod journal;
#[cfg(feature = "lsm")]
pub mod lsm;
pub mod memory;
#[cfg(feature = "sql")]
pub mod sql;
mod stats;
mod types;

pub use completion::{Completer, Completion};
pub use error::StoreError;
pub use journal::Fence;
pub use journal::{create_dir_all_durably, JournalConfig, JournalIo, JournalStore, SyncMode};
#[cfg(feature = "lsm")]
pub use lsm::{LsmConfig, LsmStats, LsmStore};
pub use memory::MemoryStore;
#[cfg(feature = "sql")]
pub use sql::{SqlConfig, SqlStats, SqlStore};
pub use stats::{
    CommitStats, CommitStatsSnapshot, Histogram, HistogramSnapshot, HISTOGRAM_BUCKETS,
};
pub use types::{Batch, ListInfo, ListKey, Op, Recovery, StoredMessage, SubscriptionRecord};

/// A persistent message store.
///
/// Implementations must be safe to call from many threads at once; `submit` must not block on
/// I/O (it may block briefly on a bounded in-memory queue, which is the store's backpressure).
pub trait MessageStore: Send + Sync + std::fmt::Debug + 'static {
    /// A short name for logs and metrics: `memory`, `journal`, `lsm`, `sql`.
    fn kind(&self) -> &'static str;

    /// Queues `batch` to be applied atomically. The returned [`Completion`] resolves with `Ok`
    /// once the batch is durable under the store's sync policy, or with the error that failed
    /// the store. After a failure every later batch fails too, until the store is reopened.
    fn submit(&self, batch: Batch) -> Completion;

    /// Queues `batch` like [`MessageStore::submit`], for a write whose loss in a crash only
    /// causes a redelivery (a consumer's acknowledgement that nobody asked a receipt for).
    /// The store need not flush for it: it is written in submission order and becomes durable
    /// with the next batch that is synced, or at the latest after the store's
    /// `ack_sync_delay_ms`. Its completion resolves once it is written and applied (so a store
    /// failure is still reported), not necessarily once it is durable.
    ///
    /// The default treats it like any other batch, which is always correct.
    fn submit_lazy(&self, batch: Batch) -> Completion {
        self.submit(batch)
    }

    /// What the store holds at start-up: durable subscriptions and every non-empty list.
    fn recover(&self) -> Result<Recovery, StoreError>;

    /// Up to `max_count` messages of `list` whose sequence is greater than `after_seq`
    /// (or from the start when `None`), in sequence order.
    fn load(
        &self,
        list: &str,
        after_seq: Option<u64>,
        max_count: usize,
    ) -> Result<Vec<StoredMessage>, StoreError>;

    /// Bytes of message data the store currently holds (for `store_usage_limit`).
    fn usage_bytes(&self) -> u64;

    /// Group-commit statistics (batches per sync, sync latency, submit-to-confirmation wait),
    /// for a store that keeps them; read when `/metrics` is scraped.
    fn commit_stats(&self) -> Option<CommitStatsSnapshot> {
        None
    }

    /// Flushes, checkpoints and closes. Later submits fail with [`StoreError::Closed`].
    fn close(&self) -> Result<(), StoreError>;
}
