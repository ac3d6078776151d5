//! The replication protocol as a sans-I/O state machine (see `docs/replication.md`).
//!
//! A [`Replica`] is fed [`Event`]s (ZooKeeper results and watches, frames from peers, store
//! completions, ticks) together with the current time, and answers with [`Action`]s (ZooKeeper
//! operations, frames to send, store writes, confirmations, role changes). It owns no socket,
//! no clock and no thread: the drivers and the deterministic simulator (`tests/sim.rs`) run it.
//!
//! Safety rests on three agreements instead of on position reports:
//! - the **in-sync set** (ISR) lives in ZooKeeper and only a master changes it, with conditional
//!   writes; a member leaves it (ZooKeeper first) before the master confirms without it;
//! - only an ISR member may claim mastership, in one ZooKeeper transaction that checks the group
//!   state's version and creates the ephemeral leader node;
//! - a rejoining member's log is cut to the divergence point computed from both epoch histories,
//!   and its acks count only after that point was agreed, on that connection, for that epoch.

mod history;
mod replica;

use bytes::Bytes;

pub use history::EpochHistory;
pub use replica::Replica;

pub use crate::wire::Position;

/// A broker's stable identity in its group (configured, not a znode sequence number).
pub type MemberId = u32;
/// One transport connection, named by whoever opened it.
pub type ConnId = u64;
/// A ZooKeeper request, echoed in its result.
pub type ZkReq = u64;
/// A store write, echoed when it is durable.
pub type StoreOpId = u64;

/// One log entry. `lsn`s are contiguous from 1 across epochs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The epoch of the master that created it.
    pub epoch: u64,
    /// Its position in the log.
    pub lsn: u64,
    /// The batch it carries (empty for a new master's marker).
    pub payload: Bytes,
}

/// The group's state znode (`<zk_path>/<group>/state`): written only with version checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupState {
    /// The highest epoch ever claimed.
    pub epoch: u64,
    /// Who claimed it.
    pub leader: Option<MemberId>,
    /// Members known to hold every confirmed entry, sorted.
    pub isr: Vec<MemberId>,
    /// The group's size, recorded once so that every broker computes the same quorum.
    pub replicas: u32,
}

/// What the master waits for before confirming (ActiveMQ's `sync` attribute).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Durability {
    /// Count only entries made durable (the local store's and the followers' `*_disk`).
    pub disk: bool,
    /// Followers whose copy is awaited; 0 = local modes (no ISR, and a failover may lose writes).
    pub followers: usize,
}

impl Durability {
    /// The durability of `mode` for a group of `replicas` (as recorded in ZooKeeper).
    pub fn of(mode: crate::SyncMode, replicas: u32) -> Durability {
        let p = crate::SyncPolicy::new(mode, replicas as usize);
        Durability {
            disk: p.local_disk,
            followers: p.slave_acks,
        }
    }
}

/// Old behaviours the simulator must be able to catch (each closed by the protocol). All off
/// by default; only tests turn them on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Finding 1: a follower's `Hello` position counts as acknowledged before the divergence
    /// point is agreed, and acks are not checked against the epoch.
    pub stale_acks: bool,
    /// Finding 2: any live member may claim mastership (as when a stale position report was
    /// counted), not only an ISR member.
    pub elect_outside_isr: bool,
    /// Finding 3: a full copy empties the live log first and installs chunk by chunk, and the
    /// member is not removed from the ISR before it.
    pub wipe_before_copy: bool,
    /// Finding 4 (its `replicas` part): this broker computes its quorum from its own
    /// configured group size instead of the size recorded in ZooKeeper.
    pub local_replicas: Option<u32>,
    /// Finding 6: a follower more than this many entries behind (its acked position starting at
    /// 0 on every connection) is dropped and must start over.
    pub absolute_lag_entries: Option<u64>,
    /// The old behaviour the lease closes (finding 6, its last part): a master serves (dispatches
    /// to consumers) whenever it believes it is master and connected to ZooKeeper, so a deposed
    /// master that has not noticed yet keeps dispatching beside its successor.
    pub no_lease: bool,
    /// A liveness bug the simulator found (seed 8000 of five members under frequent crashes):
    /// a follower's catch-up time was only learnt from the in-memory tail, so once the first
    /// entry it lacked had left the tail its lag looked ever older: it was added to the ISR
    /// (it had acknowledged everything confirmed) and removed as lagging in turn, forever.
    pub tail_only_catch_up: bool,
    /// A stall the simulator found in the first design of replayed copies: the master's send
    /// window ignored what a replaying follower staged (`Msg::Progress`), so once the entries
    /// written during a copy's read filled the window, nothing more was sent and the follower
    /// could never reach the point where its copy is consistent.
    pub no_progress: bool,
}

/// The tunables of a [`Replica`].
#[derive(Debug, Clone)]
pub struct Config {
    /// This broker.
    pub id: MemberId,
    /// Increases at every start of the broker (keeps connection ids of two lives apart).
    pub incarnation: u64,
    /// The group size this broker would record if it creates the group.
    pub replicas: u32,
    /// When a write counts as done.
    pub sync: crate::SyncMode,
    /// A follower whose acks lag the log end by more than this leaves the ISR.
    pub lag_max_ms: u64,
    /// Entries the master keeps in memory for incremental catch-up; older = full copy.
    pub tail_entries_max: usize,
    /// Payload bytes sent to one follower and not yet acknowledged (back-pressure).
    pub inflight_bytes_max: u64,
    /// Entries the master accepts and has not yet confirmed (back-pressure on producers).
    pub unconfirmed_entries_max: u64,
    /// Entries per `Entries` frame.
    pub batch_entries_max: usize,
    /// Pause before reconnecting to the master.
    pub reconnect_ms: u64,
    /// Pause before claiming an empty mastership (spread by member id).
    pub claim_delay_ms: u64,
    /// The master sends an empty `Entries` to an idle follower this often.
    pub heartbeat_ms: u64,
    /// A follower that heard nothing from its master for this long reconnects (a half-open
    /// connection is otherwise never noticed).
    pub link_timeout_ms: u64,
    /// Fast takeover (`ha.master_timeout_ms`; 0 = off, then only the ZooKeeper session's expiry
    /// ends a master): an in-sync follower that heard nothing from the master for this long
    /// claims mastership at once; the master serves (dispatches to consumers) only while every
    /// in-sync follower answered a ping sent less than half of it ago. Only in the modes with an
    /// in-sync set (`quorum_*`, `remote_*`).
    pub master_timeout_ms: u64,
    /// The store can cut entries off the end of its log (`StoreWrite::Truncate` below its last
    /// entry). A message store (the journal, SQLite, ...) holds the *state* the entries built,
    /// not the entries: it cannot undo one. With `false`, a member whose log goes past the
    /// divergence point (a deposed master's unconfirmed suffix) gets a full copy, staged and
    /// installed atomically, instead of a cut; `Truncate` is then only ever issued for the
    /// old behaviour `Faults::wipe_before_copy`.
    pub log_truncation: bool,
    /// Re-introduced old behaviours (tests only).
    pub faults: Faults,
}

impl Config {
    /// Defaults for production-like timing.
    pub fn new(id: MemberId, incarnation: u64, replicas: u32, sync: crate::SyncMode) -> Config {
        Config {
            id,
            incarnation,
            replicas,
            sync,
            lag_max_ms: 10_000,
            tail_entries_max: 100_000,
            inflight_bytes_max: 16 * 1024 * 1024,
            unconfirmed_entries_max: 10_000,
            batch_entries_max: 256,
            reconnect_ms: 200,
            claim_delay_ms: 50,
            heartbeat_ms: 100,
            link_timeout_ms: 1_000,
            master_timeout_ms: 500,
            log_truncation: false,
            faults: Faults::default(),
        }
    }
}

/// The log a broker found in its store at start.
#[derive(Debug, Clone, Default)]
pub struct Recovered {
    /// Its epoch history (every entry of `1..=last`).
    pub history: EpochHistory,
    /// Its last lsn.
    pub last: u64,
    /// Its last entries (up to `tail_entries_max`), for followers to catch up incrementally.
    pub tail: Vec<Entry>,
}

/// Where a follower's log starts following the master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Cut the log after this lsn (the divergence point), then entries follow.
    TruncateAfter(u64),
    /// A full copy follows (`SnapshotChunk`s, then `SnapshotEnd`), then entries.
    Snapshot,
}

/// A frame between members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// Follower -> master: who I am, which epoch I follow, what my log holds.
    Hello {
        /// The follower.
        member: MemberId,
        /// The master epoch it expects.
        epoch: u64,
        /// Its log's last lsn.
        last: u64,
        /// Its log's epoch history.
        history: Vec<(u64, u64)>,
    },
    /// Master -> follower: accepted; how the logs are reconciled.
    Welcome {
        /// The master's epoch.
        epoch: u64,
        /// Truncation point or full copy.
        start: Start,
    },
    /// Master -> follower: the entries after `prev`.
    Entries {
        /// The master's epoch.
        epoch: u64,
        /// The entry just before the first (Raft's log-matching check).
        prev: Position,
        /// Contiguous entries.
        entries: Vec<Entry>,
    },
    /// Master -> follower: part of a full copy, from a consistent read view. Opaque to the
    /// core, which neither reads nor keeps it (a copy may be gigabytes): the driver's encoding
    /// of part of its store (a message store's records; a log's entries in the simulator),
    /// staged by the follower's driver beside its live store.
    SnapshotChunk {
        /// The driver's bytes.
        data: Bytes,
    },
    /// Master -> follower: the full copy is complete up to `last` (the cut: the entries that
    /// follow continue after it). The copy was read while writers went on, so it may hold
    /// effects of later entries, up to `consistent_at`: the follower replays the entries
    /// `last+1 ..= consistent_at` into the staging area (store ops are idempotent per key)
    /// and installs it only then — the live store never holds a half-consistent copy.
    SnapshotEnd {
        /// The copy's cut.
        last: u64,
        /// The epoch history of `1..=last`.
        history: Vec<(u64, u64)>,
        /// The master's log end when the read ended (`>= last`).
        consistent_at: u64,
    },
    /// Master -> follower: are you there? (Fast takeover: the follower's silence timer and the
    /// master's lease.)
    Ping {
        /// The master's epoch.
        epoch: u64,
        /// When the master sent it, by its own clock (echoed; only the master reads it).
        sent_ms: u64,
    },
    /// Follower -> master: the answer to a `Ping`.
    Pong {
        /// The master's epoch.
        epoch: u64,
        /// The `Ping`'s `sent_ms`.
        sent_ms: u64,
    },
    /// Follower -> master, while it replays the entries after a full copy's cut into its
    /// staging area: it holds them up to `staged` there (not in its log: this is no ack). Only
    /// the master's send window counts it, so that a copy read during heavy writes (many
    /// entries to replay) does not stall behind the window.
    Progress {
        /// The master's epoch.
        epoch: u64,
        /// The staging area's last entry.
        staged: u64,
    },
    /// Follower -> master: my log holds yours identically up to `received`, durably up to
    /// `durable`, for your epoch `epoch`.
    Ack {
        /// The master's epoch this ack is about.
        epoch: u64,
        /// Held (in memory at least).
        received: u64,
        /// Held durably.
        durable: u64,
    },
}

/// The ZooKeeper session as the client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Session {
    /// Connected; operations can be issued.
    Connected,
    /// The connection is down; the session may still be alive.
    Disconnected,
    /// The session is gone (its ephemerals are deleted); the driver opens a new one.
    Expired,
}

/// A ZooKeeper operation. Each is one atomic request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZkOp {
    /// Create the group state node (fails if it exists).
    Create(GroupState),
    /// `multi(check+set state at version, create ephemeral leader node)`.
    Claim {
        /// The state version read.
        version: u64,
        /// The new state (epoch + 1, leader = me).
        state: GroupState,
    },
    /// Fast takeover: `multi(check+set state at version, delete the leader node whoever owns
    /// it, create ephemeral leader node)`. The version check makes sure the leader node
    /// deleted is the one of the master this follower stopped hearing.
    Takeover {
        /// The state version read.
        version: u64,
        /// The new state (epoch + 1, leader = me, ISR unchanged).
        state: GroupState,
    },
    /// `set state at version` (the master's ISR changes).
    Set {
        /// The state version last known.
        version: u64,
        /// The new state.
        state: GroupState,
    },
}

/// Why a ZooKeeper operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZkFail {
    /// The version check failed or the node existed / did not exist.
    Conflict,
    /// The connection was lost: the outcome is unknown (a watch will tell).
    Unknown,
}

/// An input.
#[derive(Debug, Clone)]
pub enum Event {
    /// Time passed.
    Tick,
    /// The ZooKeeper session changed state.
    Session(Session),
    /// The group's state (read with a watch after each change), and whether the ephemeral
    /// leader node exists.
    Group {
        /// `None`: no state node yet.
        state: Option<GroupState>,
        /// Its version.
        version: u64,
        /// The ephemeral leader node exists.
        leader_alive: bool,
        /// The leader node is owned by this broker's current session (its `ephemeralOwner`):
        /// settles a claim whose answer was lost.
        leader_mine: bool,
    },
    /// A ZooKeeper operation finished; `Ok` carries the state's new version.
    ZkDone {
        /// The request.
        req: ZkReq,
        /// The outcome.
        result: Result<u64, ZkFail>,
    },
    /// An outbound connection (from [`Action::Connect`]) is up.
    Connected {
        /// The connection.
        conn: ConnId,
    },
    /// An inbound connection arrived.
    Accepted {
        /// The connection.
        conn: ConnId,
    },
    /// A connection is gone (either direction).
    Closed {
        /// The connection.
        conn: ConnId,
    },
    /// A frame arrived.
    Received {
        /// On this connection.
        conn: ConnId,
        /// The frame.
        msg: Msg,
    },
    /// Every store write up to this one is durable.
    StoreSynced {
        /// The highest durable write.
        op: StoreOpId,
    },
}

/// A store write; applied in issue order, durable when [`Event::StoreSynced`] says so.
#[derive(Debug, Clone)]
pub enum StoreWrite {
    /// Append contiguous entries after the log's last.
    Append(Vec<Entry>),
    /// Drop every entry after `last`.
    Truncate {
        /// The new last lsn.
        last: u64,
    },
    /// Start a new staging area beside the live store, discarding any earlier one (a full
    /// copy begins). A staging area never survives a restart: the driver deletes it at start.
    StageBegin,
    /// Add a full copy's chunk to the staging area (the live store is untouched).
    Stage(Bytes),
    /// Apply entries after the copy's cut to the staging area (replaying up to the point where
    /// the copy is consistent).
    StageAppend(Vec<Entry>),
    /// Replace the whole store with the staging area, atomically, recording the copy's last
    /// lsn and epoch history with it (durable when synced, like any write).
    Install {
        /// The copy's last lsn.
        last: u64,
        /// The copy's epoch history.
        history: Vec<(u64, u64)>,
    },
}

/// A master's followers as it sees them ([`Replica::master_view`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterView {
    /// The master's epoch.
    pub epoch: u64,
    /// The in-sync set as last written to ZooKeeper.
    pub isr: Vec<MemberId>,
    /// The highest confirmed lsn.
    pub commit: u64,
    /// The log's last lsn.
    pub last: u64,
    /// The local log's durable lsn.
    pub durable: u64,
    /// The last entry it inherited: the one before its epoch's marker.
    pub inherited: Position,
    /// The first lsn its in-memory tail holds (followers behind it need a full copy).
    pub tail_from: u64,
    /// What a confirmation waits for.
    pub durability: Durability,
    /// Every member that said `Hello` in this epoch.
    pub followers: Vec<FollowerView>,
}

/// One follower as its master sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerView {
    /// The member.
    pub member: MemberId,
    /// Whether it has a connection now.
    pub connected: bool,
    /// The last lsn sent to it.
    pub sent: u64,
    /// The highest lsn it acknowledged receiving (on its current connection).
    pub received: u64,
    /// The highest lsn it acknowledged as durable.
    pub durable: u64,
}

/// What a broker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Following (or waiting for) a master.
    Follower,
    /// Master of this epoch.
    Master {
        /// The epoch claimed.
        epoch: u64,
    },
}

/// An output.
#[derive(Debug, Clone)]
pub enum Action {
    /// Run a ZooKeeper operation; answer with [`Event::ZkDone`].
    Zk {
        /// Echoed in the result.
        req: ZkReq,
        /// The operation.
        op: ZkOp,
    },
    /// Open a connection to a member; answer with [`Event::Connected`] or [`Event::Closed`].
    Connect {
        /// The id chosen for it.
        conn: ConnId,
        /// The member.
        to: MemberId,
    },
    /// Send a frame.
    Send {
        /// The connection.
        conn: ConnId,
        /// The frame.
        msg: Msg,
    },
    /// Stream a full copy of the store, from a read view taken now, as `SnapshotChunk`s and a
    /// `SnapshotEnd` up to `last`, before any later `Send` on that connection.
    SendSnapshot {
        /// The connection.
        conn: ConnId,
        /// The copy ends here (the log's last lsn now).
        last: u64,
    },
    /// Close a connection.
    Close {
        /// The connection.
        conn: ConnId,
    },
    /// Write to the local store.
    Store {
        /// Echoed (as a bound) in [`Event::StoreSynced`].
        op: StoreOpId,
        /// The write.
        write: StoreWrite,
    },
    /// The producer's write at this lsn is confirmed.
    Confirm {
        /// Its lsn.
        lsn: u64,
    },
    /// The role changed.
    Role(Role),
}

/// Why a write was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// This broker is not the master.
    #[error("not the master")]
    NotMaster,
    /// Too many writes await confirmation; retry later.
    #[error("too many unconfirmed writes")]
    Busy,
}
