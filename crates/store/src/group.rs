//! Group commit, shared by the writer threads of every store (journal, lsm, sql).
//!
//! Each store has one writer thread fed by a bounded channel (the store's backpressure). The
//! thread takes everything available, up to a byte and a batch bound, and hands the whole group
//! to the store's [`GroupWriter::commit`], which writes it, makes it durable as the sync mode
//! says (one `fdatasync`, one WAL sync or one database commit for the group) and only then
//! completes the waiters. So one sync confirms as many batches as arrived while the previous
//! one was running. What differs between stores — the encoding, the system calls, the fence
//! checks — lives in `commit`; the gathering, the sync timer for unsynced bytes and the
//! submitting side's channel live here, once.

use std::sync::mpsc::{Receiver, RecvTimeoutError, SendError, SyncSender, TryRecvError};
use std::time::{Duration, Instant};

use parking_lot::RwLock;

use crate::{Batch, Completer, Op, StoreError, SyncMode};

/// One batch submitted to a writer thread.
#[derive(Debug)]
pub(crate) struct Submitted {
    /// The ops, applied atomically.
    pub ops: Batch,
    /// Resolved when durable (or failed); when `lazy`, once written.
    pub completer: Completer,
    /// An ack without a receipt ([`crate::MessageStore::submit_lazy`]): with
    /// `SyncMode::Always` it does not make its group sync; the next synced group, or the
    /// `ack_sync_delay_ms` timer, makes it durable.
    pub lazy: bool,
    /// What it counts against a group's byte bound (each store's own measure, computed on the
    /// submitting thread).
    pub bytes: usize,
    /// When it was submitted (for [`crate::CommitStats::commit_wait_ns`]).
    pub submitted_at: Instant,
}

impl Submitted {
    /// A batch to submit, and the completion its writer will resolve.
    pub(crate) fn new(ops: Batch, lazy: bool, bytes: usize) -> (Submitted, crate::Completion) {
        let (completer, completion) = crate::Completion::pair();
        let s = Submitted {
            ops,
            completer,
            lazy,
            bytes,
            submitted_at: Instant::now(),
        };
        (s, completion)
    }
}

/// What travels on a writer's channel.
pub(crate) trait GroupItem {
    /// What the item counts against a group's byte bound.
    fn group_bytes(&self) -> usize;
    /// Answers the item with `err` without writing it (the writer is gone).
    fn refuse(self, err: StoreError);
}

impl GroupItem for Submitted {
    fn group_bytes(&self) -> usize {
        self.bytes
    }

    fn refuse(self, err: StoreError) {
        self.completer.complete(Err(err));
    }
}

/// Payload bytes of a batch's enqueues (what a group's byte bound and the usage limit count).
pub(crate) fn payload_bytes(ops: &Batch) -> usize {
    ops.iter()
        .map(|op| match op {
            Op::Enqueue { payload, .. } => payload.len(),
            _ => 0,
        })
        .sum()
}

/// Refuses a batch that would take the store past `store_usage_limit` (0 = no limit).
pub(crate) fn check_usage(limit: u64, usage: u64, ops: &Batch) -> Result<(), StoreError> {
    if limit == 0 {
        return Ok(());
    }
    let adding = payload_bytes(ops) as u64;
    if adding > 0 && usage.saturating_add(adding) > limit {
        return Err(StoreError::Full(format!(
            "store usage {usage} bytes + {adding} would exceed store_usage_limit {limit} bytes"
        )));
    }
    Ok(())
}

/// The submitting side of a writer's channel; closing it lets the writer drain and stop.
#[derive(Debug)]
pub(crate) struct Inbox<T> {
    tx: RwLock<Option<SyncSender<T>>>,
    /// Told of every item queued, when the writer waits elsewhere than on the channel.
    wake: std::sync::OnceLock<std::sync::Arc<dyn Wake>>,
}

impl<T: GroupItem> Inbox<T> {
    pub(crate) fn new(tx: SyncSender<T>) -> Inbox<T> {
        Inbox {
            tx: RwLock::new(Some(tx)),
            wake: std::sync::OnceLock::new(),
        }
    }

    /// Sets what to call after each item queued (once; later calls are ignored).
    pub(crate) fn set_wake(&self, wake: std::sync::Arc<dyn Wake>) {
        let _ = self.wake.set(wake);
    }

    /// Queues `item` for the writer (blocking while the channel is full: backpressure), or
    /// refuses it with `StoreError::Closed` when the store is closing.
    pub(crate) fn send(&self, item: T) {
        if let Err(item) = self.try_send(item) {
            item.refuse(StoreError::Closed);
        }
    }

    /// Like [`Inbox::send`], but hands a refused item back.
    pub(crate) fn try_send(&self, item: T) -> Result<(), T> {
        let tx = self.tx.read();
        let sent = match tx.as_ref() {
            Some(tx) => tx.send(item).map_err(|SendError(item)| item),
            None => Err(item),
        };
        if sent.is_ok() {
            if let Some(w) = self.wake.get() {
                w.wake();
            }
        }
        sent
    }

    /// Drops the sender: once every queued item is written, the writer's loop ends.
    pub(crate) fn close(&self) {
        self.tx.write().take();
    }
}

/// Something to tell the writer that an item was queued, for a writer that waits elsewhere
/// than on its channel (the journal's direct path waits in its ring).
pub(crate) trait Wake: Send + Sync + std::fmt::Debug {
    /// Called after every item queued; cheap when the writer is not waiting.
    fn wake(&self);
}

/// A store's side of group commit.
pub(crate) trait GroupWriter {
    /// What arrives on the channel.
    type Item: GroupItem;

    /// Whether writes are in flight whose completions this thread reaps itself (the journal's
    /// direct path): while there are, the loop does not block on the channel but in
    /// [`GroupWriter::park`].
    fn in_flight(&self) -> bool {
        false
    }

    /// Announces that the loop is about to park (`true`, before its last look at the channel)
    /// or that it is not (`false`), so that producers know to wake it.
    fn set_parked(&self, _parked: bool) {}

    /// Waits until a write in flight completes or a producer wakes it.
    fn park(&mut self) {}

    /// When written but unsynced data must be synced though nothing else arrives (the
    /// periodic interval, the lazy acks' delay); `None` = wait for the next item.
    fn sync_due(&self) -> Option<Instant> {
        None
    }

    /// `sync_due` passed while nothing arrived.
    fn sync_timer(&mut self) {}

    /// Writes one group (items in arrival order), makes it durable as the sync mode says and
    /// answers every item. Drains `group`.
    fn commit(&mut self, group: &mut Vec<Self::Item>);

    /// Every sender is gone and the channel is drained.
    fn finish(&mut self) {}
}

/// Bounds of one group.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GroupLimits {
    /// Stop gathering once the group counts this many bytes ([`GroupItem::group_bytes`]).
    pub bytes_max: usize,
    /// Items in one group at most.
    pub items_max: usize,
}

/// The writer thread's loop: gathers groups from `rx` and commits them until every sender is
/// gone, then calls [`GroupWriter::finish`].
pub(crate) fn run<W: GroupWriter>(writer: &mut W, rx: &Receiver<W::Item>, limits: GroupLimits) {
    let mut group: Vec<W::Item> = Vec::new();
    loop {
        if writer.in_flight() {
            writer.set_parked(true);
            let next = rx.try_recv();
            if matches!(next, Err(TryRecvError::Empty)) {
                writer.park();
            }
            writer.set_parked(false);
            match next {
                Ok(item) => {
                    gather(writer, rx, limits, item, &mut group);
                    continue;
                }
                Err(TryRecvError::Empty) => continue,
                Err(TryRecvError::Disconnected) => break,
            }
        }
        let first = match writer.sync_due() {
            Some(due) => match rx.recv_timeout(due.saturating_duration_since(Instant::now())) {
                Ok(item) => item,
                Err(RecvTimeoutError::Timeout) => {
                    writer.sync_timer();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            },
            None => match rx.recv() {
                Ok(item) => item,
                Err(_) => break,
            },
        };
        gather(writer, rx, limits, first, &mut group);
    }
    writer.finish();
}

/// Gathers a group starting with `first` from what is queued, and commits it.
fn gather<W: GroupWriter>(
    writer: &mut W,
    rx: &Receiver<W::Item>,
    limits: GroupLimits,
    first: W::Item,
    group: &mut Vec<W::Item>,
) {
    let mut bytes = first.group_bytes();
    group.push(first);
    while bytes < limits.bytes_max && group.len() < limits.items_max.max(1) {
        match rx.try_recv() {
            Ok(item) => {
                bytes = bytes.saturating_add(item.group_bytes());
                group.push(item);
            }
            Err(_) => break,
        }
    }
    writer.commit(group);
    // `commit` drains it; whatever it left was neither written nor answered.
    for item in group.drain(..) {
        item.refuse(StoreError::Failed(
            "group commit left a batch unanswered".into(),
        ));
    }
}

/// When a writer last synced and whether it holds unsynced data, and the rule for when it must
/// sync: shared by the writers whose sync is separate from their write (journal, lsm).
#[derive(Debug)]
pub(crate) struct SyncClock {
    mode: SyncMode,
    ack_sync_delay: Duration,
    /// Written since the last sync.
    unsynced: bool,
    last_sync: Instant,
    /// When the oldest lazy group written but not yet synced was written (`Always`).
    lazy_unsynced_since: Option<Instant>,
}

impl SyncClock {
    pub(crate) fn new(mode: SyncMode, ack_sync_delay_ms: u64) -> SyncClock {
        SyncClock {
            mode,
            ack_sync_delay: Duration::from_millis(ack_sync_delay_ms),
            unsynced: false,
            last_sync: Instant::now(),
            lazy_unsynced_since: None,
        }
    }

    /// Whether something written is not synced yet.
    pub(crate) fn unsynced(&self) -> bool {
        self.unsynced
    }

    /// When the unsynced data must be synced even if nothing else arrives.
    pub(crate) fn due(&self) -> Option<Instant> {
        if !self.unsynced {
            return None;
        }
        match self.mode {
            SyncMode::Periodic { interval_ms } => {
                Some(self.last_sync + Duration::from_millis(interval_ms))
            }
            SyncMode::Always => self.lazy_unsynced_since.map(|t| t + self.ack_sync_delay),
            SyncMode::Never => None,
        }
    }

    /// Whether the group being committed must be synced: with `Always` when it holds a batch
    /// that is not lazy (`needs_sync`) or the oldest unsynced lazy group has waited its delay;
    /// with `Periodic` when the interval has passed; with `Never`, not.
    pub(crate) fn must_sync(&self, needs_sync: bool) -> bool {
        match self.mode {
            SyncMode::Always => {
                needs_sync
                    || self
                        .lazy_unsynced_since
                        .is_some_and(|t| t.elapsed() >= self.ack_sync_delay)
            }
            SyncMode::Periodic { interval_ms } => {
                self.last_sync.elapsed() >= Duration::from_millis(interval_ms)
            }
            SyncMode::Never => false,
        }
    }

    /// Data was written without a sync.
    pub(crate) fn written(&mut self) {
        self.unsynced = true;
        if matches!(self.mode, SyncMode::Always) && self.lazy_unsynced_since.is_none() {
            self.lazy_unsynced_since = Some(Instant::now());
        }
    }

    /// Everything written so far is durable.
    pub(crate) fn synced(&mut self) {
        self.unsynced = false;
        self.lazy_unsynced_since = None;
        self.last_sync = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::sync_channel;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::Completion;

    #[derive(Debug)]
    struct Item(usize, Completer);

    impl GroupItem for Item {
        fn group_bytes(&self) -> usize {
            self.0
        }
        fn refuse(self, err: StoreError) {
            self.1.complete(Err(err));
        }
    }

    /// Records the sizes of the groups it is given; answers every item Ok.
    #[derive(Default)]
    struct Recorder {
        groups: Arc<Mutex<Vec<Vec<usize>>>>,
        finished: bool,
    }

    impl GroupWriter for Recorder {
        type Item = Item;
        fn commit(&mut self, group: &mut Vec<Item>) {
            self.groups
                .lock()
                .unwrap()
                .push(group.iter().map(|i| i.0).collect());
            for Item(_, c) in group.drain(..) {
                c.complete(Ok(()));
            }
        }
        fn finish(&mut self) {
            self.finished = true;
        }
    }

    fn item(bytes: usize) -> (Item, Completion) {
        let (c, done) = Completion::pair();
        (Item(bytes, c), done)
    }

    #[test]
    fn a_group_takes_what_is_queued_up_to_its_bounds() {
        let (tx, rx) = sync_channel(64);
        let mut answers = Vec::new();
        for bytes in [10, 10, 10, 10, 10, 100, 1, 1] {
            let (i, done) = item(bytes);
            tx.send(i).unwrap();
            answers.push(done);
        }
        drop(tx);
        let mut w = Recorder::default();
        run(
            &mut w,
            &rx,
            GroupLimits {
                bytes_max: 25,
                items_max: 4,
            },
        );
        // Gathering stops once the bytes reach the bound (the item that crosses it is taken)
        // or the group holds items_max items.
        assert_eq!(
            *w.groups.lock().unwrap(),
            vec![vec![10, 10, 10], vec![10, 10, 100], vec![1, 1]]
        );
        assert!(w.finished);
        for done in answers {
            assert!(done.wait_blocking().is_ok());
        }
    }

    #[test]
    fn the_timer_fires_when_nothing_arrives() {
        struct Timed {
            due: Option<Instant>,
            fired: usize,
        }
        impl GroupWriter for Timed {
            type Item = Item;
            fn sync_due(&self) -> Option<Instant> {
                self.due
            }
            fn sync_timer(&mut self) {
                self.fired += 1;
                self.due = None;
            }
            fn commit(&mut self, group: &mut Vec<Item>) {
                for Item(_, c) in group.drain(..) {
                    c.complete(Ok(()));
                }
            }
        }
        let (tx, rx) = sync_channel::<Item>(1);
        let mut w = Timed {
            due: Some(Instant::now() + Duration::from_millis(5)),
            fired: 0,
        };
        let sender = std::thread::spawn(move || {
            // Sent after the writer's timer had to fire (it waits on the channel until then).
            std::thread::sleep(Duration::from_millis(50));
            let (i, done) = item(1);
            tx.send(i).unwrap();
            done
        });
        // `run` returns only once the sender is gone, after the item was committed.
        run(
            &mut w,
            &rx,
            GroupLimits {
                bytes_max: 1,
                items_max: 1,
            },
        );
        assert_eq!(w.fired, 1);
        assert!(sender.join().unwrap().wait_blocking().is_ok());
    }

    #[test]
    fn an_item_left_in_the_group_is_refused_not_lost() {
        struct Lazy;
        impl GroupWriter for Lazy {
            type Item = Item;
            fn commit(&mut self, _group: &mut Vec<Item>) {}
        }
        let (tx, rx) = sync_channel(1);
        let (i, done) = item(1);
        tx.send(i).unwrap();
        drop(tx);
        run(
            &mut Lazy,
            &rx,
            GroupLimits {
                bytes_max: 10,
                items_max: 10,
            },
        );
        assert!(matches!(done.wait_blocking(), Err(StoreError::Failed(_))));
    }

    #[test]
    fn a_closed_inbox_refuses() {
        let (tx, _rx) = sync_channel(1);
        let inbox = Inbox::new(tx);
        inbox.close();
        let (i, done) = item(1);
        inbox.send(i);
        assert!(matches!(done.wait_blocking(), Err(StoreError::Closed)));
    }

    #[test]
    fn sync_rules() {
        let mut always = SyncClock::new(SyncMode::Always, 60_000);
        assert_eq!(always.due(), None);
        assert!(always.must_sync(true));
        assert!(!always.must_sync(false));
        always.written();
        assert!(always.unsynced());
        assert!(always.due().is_some());
        assert!(!always.must_sync(false), "the lazy delay has not passed");
        always.synced();
        assert_eq!(always.due(), None);

        let mut now = SyncClock::new(SyncMode::Always, 0);
        now.written();
        assert!(now.must_sync(false), "a zero delay syncs at once");

        let mut never = SyncClock::new(SyncMode::Never, 100);
        never.written();
        assert_eq!(never.due(), None);
        assert!(!never.must_sync(true));

        let mut periodic = SyncClock::new(SyncMode::Periodic { interval_ms: 0 }, 100);
        periodic.written();
        assert!(periodic.due().is_some());
        assert!(periodic.must_sync(false));
    }

    #[test]
    fn usage_limit() {
        let batch: Batch = vec![Op::Enqueue {
            list: "q".into(),
            seq: 1,
            payload: bytes::Bytes::from_static(b"12345"),
        }];
        assert!(check_usage(0, u64::MAX, &batch).is_ok());
        assert!(check_usage(10, 5, &batch).is_ok());
        assert!(matches!(
            check_usage(10, 6, &batch),
            Err(StoreError::Full(_))
        ));
        assert!(
            check_usage(10, 100, &Vec::new()).is_ok(),
            "acks always pass"
        );
    }
}
