//! The simulated world: members running the real [`Replica`], a linearizable ZooKeeper with
//! sessions and ephemeral nodes, TCP-like connections and disks that lose unsynced writes.
//! Everything is driven by one seeded generator and one event queue: a seed is a trace.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};

use bytes::Bytes;
use ferromq_ha_zk::proto::{
    Action, Config, ConnId, Entry, EpochHistory, Event, Faults, GroupState, Msg, Recovered,
    Replica, Role, Session, StoreWrite, ZkFail, ZkOp,
};
use ferromq_ha_zk::proto_wire::{decode_entries, encode_entries};
use ferromq_ha_zk::SyncMode;

/// xorshift64*: small, fast, and the same everywhere.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// True with probability `ppm` per million.
    pub fn chance(&mut self, ppm: u64) -> bool {
        self.below(1_000_000) < ppm
    }
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
}

/// Fault rates (per million steps) and shapes of one run.
#[derive(Debug, Clone)]
pub struct Params {
    pub members: u32,
    pub steps: u64,
    pub crash_ppm: u64,
    pub conn_break_ppm: u64,
    pub partition_ppm: u64,
    pub zk_isolate_ppm: u64,
    pub zk_outage_ppm: u64,
    pub slow_msg_ppm: u64,
    /// A member's process stops (SIGSTOP, a stalled VM) for 50–1,500 ms: it handles nothing,
    /// its ZooKeeper session is not kept alive, then it handles its backlog at once.
    pub freeze_ppm: u64,
    /// `Config::master_timeout_ms` (0 = no fast takeover and no lease).
    pub master_timeout_ms: u64,
    /// Share of applied ZooKeeper requests whose answer is lost (per million requests).
    pub zk_lost_answer_ppm: u64,
    /// A write is offered on this share of steps.
    pub submit_ppm: u64,
    pub session_timeout_ms: u64,
    pub tail_entries_max: usize,
    pub snapshot_chunk_entries: usize,
    pub faults: Faults,
    /// The members' stores are message stores, as in the running broker: they cannot cut
    /// their log (`Config::log_truncation` off, and a `Truncate` below the last entry is a
    /// violation) and a restarted member recovers no tail of entries (only its state and
    /// position), so a follower that falls behind a restarted master needs a full copy.
    pub state_store: bool,
    /// Share of full copies (per million) read while the master goes on writing, as the
    /// running broker reads them: the frames after the copy are held for 1–150 ms of reading,
    /// then `SnapshotEnd` names the master's log end as the point where the copy is
    /// consistent, and the follower replays up to it into its staging area before installing.
    pub fuzzy_copy_ppm: u64,
    /// Check after every step that every ISR member holds every confirmed entry (off: only the
    /// end-to-end checks, to see an old behaviour actually lose a write).
    pub check_isr: bool,
    /// After the chaotic part: heal everything and require that the group is whole again (all
    /// members in the ISR) and a new write is confirmed within this many simulated ms.
    pub heal_deadline_ms: u64,
}

impl Params {
    pub fn new(members: u32, steps: u64) -> Params {
        Params {
            members,
            steps,
            crash_ppm: 300,
            conn_break_ppm: 1_000,
            partition_ppm: 300,
            zk_isolate_ppm: 200,
            zk_outage_ppm: 50,
            slow_msg_ppm: 20_000,
            freeze_ppm: 200,
            master_timeout_ms: 300,
            zk_lost_answer_ppm: 20_000,
            submit_ppm: 150_000,
            session_timeout_ms: 400,
            tail_entries_max: 40,
            snapshot_chunk_entries: 16,
            faults: Faults::default(),
            state_store: false,
            fuzzy_copy_ppm: 0,
            check_isr: true,
            heal_deadline_ms: 20_000,
        }
    }
}

/// What the checker found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub step: u64,
    pub time_ms: u64,
    pub what: String,
}

/// One entry as the simulator sees it: the entry and the hash of the log prefix it ends.
#[derive(Debug, Clone)]
struct Slot {
    entry: Entry,
    prefix: u64,
}

fn chain(prev: u64, e: &Entry) -> u64 {
    let id = e
        .payload
        .get(0..8)
        .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
    let mut x = prev ^ e.epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ e.lsn.rotate_left(17) ^ id;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x
}

fn prefix_at(log: &[Slot], lsn: u64) -> Option<u64> {
    if lsn == 0 {
        return Some(0);
    }
    log.get(lsn as usize - 1).map(|s| s.prefix)
}

/// Applies a write to `log` (the visible or the durable one; `staging` is the staging area);
/// returns what is wrong with a full copy's install, if anything.
fn apply(log: &mut Vec<Slot>, staging: &mut Vec<Entry>, w: &StoreWrite) -> Option<String> {
    match w {
        StoreWrite::Append(es) => {
            for e in es {
                assert_eq!(e.lsn as usize, log.len() + 1, "append not contiguous");
                let p = log.last().map_or(0, |s| s.prefix);
                log.push(Slot {
                    entry: e.clone(),
                    prefix: chain(p, e),
                });
            }
        }
        StoreWrite::Truncate { last } => log.truncate(*last as usize),
        StoreWrite::StageBegin => staging.clear(),
        StoreWrite::StageAppend(es) => staging.extend(es.iter().cloned()),
        StoreWrite::Stage(data) => match decode_entries(data.clone()) {
            Ok(es) => staging.extend(es),
            Err(e) => return Some(format!("a copy's chunk does not decode: {e}")),
        },
        StoreWrite::Install { last, history } => {
            let staged = std::mem::take(staging);
            let contiguous = staged
                .iter()
                .enumerate()
                .all(|(i, e)| e.lsn == i as u64 + 1);
            if !contiguous || staged.len() as u64 != *last {
                return Some(format!(
                    "installed a copy of {} staged entries (contiguous: {contiguous}) as 1..={last}",
                    staged.len()
                ));
            }
            log.clear();
            apply(log, &mut Vec::new(), &StoreWrite::Append(staged));
            if history_of(log).spans() != history.as_slice() {
                return Some(format!(
                    "installed a copy whose history {history:?} is not its entries' {:?}",
                    history_of(log).spans()
                ));
            }
        }
    }
    None
}

fn history_of(log: &[Slot]) -> EpochHistory {
    let mut h = EpochHistory::default();
    for s in log {
        h.append(s.entry.epoch, s.entry.lsn);
    }
    h
}

#[derive(Debug, Default)]
struct Disk {
    durable: Vec<Slot>,
    visible: Vec<Slot>,
    /// The staging area of a full copy (entries as received, in order), as written and as
    /// synced. Never survives a crash: the driver deletes it at start.
    staging: Vec<Entry>,
    durable_staging: Vec<Entry>,
    pending: Vec<(u64, StoreWrite)>,
    sync_scheduled: bool,
}

#[derive(Debug)]
struct Node {
    replica: Option<Replica>,
    incarnation: u64,
    disk: Disk,
    /// The ZooKeeper session this incarnation uses.
    session: Option<u64>,
    /// The node's link to ZooKeeper is up (not isolated).
    zk_link: bool,
    /// The replica was told it is connected.
    zk_told: Option<Session>,
    /// The session the replica was last told is connected (its requests go over it).
    told_session: Option<u64>,
    /// A late "disconnected" notice is pending until then: later notices come after it.
    zk_quiet_until_ms: u64,
    role: Role,
    /// Frozen: events for it wait here, in order, until it thaws.
    frozen: Option<Vec<Ev>>,
}

#[derive(Debug)]
struct ZkSession {
    node: u32,
    last_heard_ms: u64,
    expired: bool,
}

#[derive(Debug, Default)]
struct Zk {
    state: Option<GroupState>,
    version: u64,
    leader_owner: Option<u64>,
    sessions: BTreeMap<u64, ZkSession>,
    next_session: u64,
    available: bool,
}

#[derive(Debug)]
struct Conn {
    /// The member that opened it (the follower) and its incarnation.
    client: (u32, u64),
    /// The member it reached, with its incarnation at the time.
    server: (u32, u64),
    /// Each end: still believes the connection is open.
    open: [bool; 2],
    /// Broken: nothing more is delivered.
    broken: bool,
    /// Per direction: the time the last frame is delivered (TCP keeps order).
    tail_ms: [u64; 2],
    /// Frames towards the follower held back while the master reads a full copy.
    held: Option<Vec<Msg>>,
}

#[derive(Debug)]
enum Ev {
    Tick(u32),
    /// Deliver an event to a member's incarnation.
    To(u32, u64, Event),
    /// A frame on a connection, towards end `dir` (0 = client, 1 = server).
    Frame(ConnId, usize, Msg),
    Sync(u32, u64),
    /// A ZooKeeper request (sent over a session) reaches the ensemble.
    ZkApply(u32, u64, u64, u64, ZkOp),
    /// The member learns that its session is connected.
    SessionUp(u32, u64, u64),
    /// A watch fired: the member reads the group state now.
    Watch(u32, u64),
    Restart(u32),
    Heal,
    ZkBack,
    /// A frozen member's process resumes (incarnation).
    Thaw(u32, u64),
    /// The master (member, incarnation, epoch) finished reading a full copy cut at `cut`
    /// for the follower on a connection.
    ReadEnd(u32, u64, u64, ConnId, u64),
}

/// The checker's memory.
#[derive(Debug, Default)]
struct Truth {
    /// Confirmed lsn -> prefix hash.
    confirmed: HashMap<u64, u64>,
    max_confirmed: u64,
    epoch_master: HashMap<u64, u32>,
    epoch_confirmer: HashMap<u64, u32>,
    /// The log of the master of each epoch (prefix hashes).
    epoch_log: HashMap<u64, Vec<u64>>,
    /// Last ack per connection.
    last_ack: HashMap<ConnId, (u64, u64)>,
    confirmed_writes: u64,
    crashes: u64,
    snapshots: u64,
    truncations: u64,
    freezes: u64,
    takeovers: u64,
    zombies: u64,
}

pub struct World {
    pub p: Params,
    rng: Rng,
    now_ms: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: HashMap<u64, Ev>,
    nodes: Vec<Node>,
    zk: Zk,
    conns: BTreeMap<ConnId, Conn>,
    cut: Vec<Vec<bool>>,
    truth: Truth,
    next_payload: u64,
    actions: Vec<Action>,
    pub steps: u64,
    trace: Option<VecDeque<String>>,
    chaos: bool,
    failed: Option<Violation>,
}

impl World {
    pub fn new(seed: u64, p: Params, trace: bool) -> World {
        let n = p.members as usize;
        let mut w = World {
            rng: Rng::new(seed),
            now_ms: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            nodes: Vec::new(),
            zk: Zk {
                available: true,
                ..Zk::default()
            },
            conns: BTreeMap::new(),
            cut: vec![vec![false; n]; n],
            truth: Truth::default(),
            next_payload: 0,
            actions: Vec::new(),
            steps: 0,
            trace: trace.then(VecDeque::new),
            chaos: true,
            failed: None,
            p,
        };
        for i in 0..n as u32 {
            w.nodes.push(Node {
                replica: None,
                incarnation: 0,
                disk: Disk::default(),
                session: None,
                zk_link: true,
                zk_told: None,
                zk_quiet_until_ms: 0,
                told_session: None,
                role: Role::Follower,
                frozen: None,
            });
            w.start(i);
            w.at(u64::from(i), Ev::Tick(i));
        }
        w
    }

    fn log(&mut self, f: impl FnOnce() -> String) {
        if let Some(t) = &mut self.trace {
            t.push_back(format!("{:>7}ms #{:<8} {}", self.now_ms, self.steps, f()));
            if t.len() > 80 && std::env::var_os("FERROMQ_SIM_TRACE_ALL").is_none() {
                t.pop_front();
            }
        }
    }

    pub fn trace_lines(&self) -> Vec<String> {
        self.trace.iter().flatten().cloned().collect()
    }

    fn at(&mut self, delay_ms: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((self.now_ms + delay_ms, self.seq)));
        self.events.insert(self.seq, ev);
    }

    fn cfg(&self, i: u32) -> Config {
        let mut c = Config::new(
            i + 1,
            self.nodes[i as usize].incarnation,
            self.p.members,
            SyncMode::QuorumDisk,
        );
        c.lag_max_ms = 300;
        c.tail_entries_max = self.p.tail_entries_max;
        c.inflight_bytes_max = 2_000;
        c.unconfirmed_entries_max = 200;
        c.batch_entries_max = 8;
        c.reconnect_ms = 30;
        c.claim_delay_ms = 10;
        c.heartbeat_ms = 40;
        c.link_timeout_ms = 250;
        c.master_timeout_ms = self.p.master_timeout_ms;
        c.log_truncation = !self.p.state_store;
        c.faults = self.p.faults;
        if i != 1 {
            // A misconfigured group size on one broker only (n2: not the first master).
            c.faults.local_replicas = None;
        }
        c
    }

    fn start(&mut self, i: u32) {
        let node = &mut self.nodes[i as usize];
        node.incarnation += 1;
        node.disk.visible = node.disk.durable.clone();
        node.disk.staging.clear();
        node.disk.durable_staging.clear();
        node.disk.pending.clear();
        node.disk.sync_scheduled = false;
        node.role = Role::Follower;
        let log = &node.disk.durable;
        let skip = if self.p.state_store {
            log.len()
        } else {
            log.len().saturating_sub(self.p.tail_entries_max)
        };
        let rec = Recovered {
            history: history_of(log),
            last: log.len() as u64,
            tail: log.iter().skip(skip).map(|s| s.entry.clone()).collect(),
        };
        let cfg = self.cfg(i);
        self.nodes[i as usize].replica = Some(Replica::new(cfg, rec, self.now_ms));
        self.nodes[i as usize].session = None;
        self.nodes[i as usize].told_session = None;
        self.nodes[i as usize].zk_told = None;
        self.zk_connect(i);
    }

    /// (Re)connects a member to ZooKeeper if it can: tells it about an expired session, opens a
    /// new one if needed, and delivers the group state.
    fn zk_connect(&mut self, i: u32) {
        let node = &self.nodes[i as usize];
        if node.replica.is_none() || !node.zk_link || !self.zk.available {
            return;
        }
        let inc = node.incarnation;
        let alive = node
            .session
            .and_then(|s| self.zk.sessions.get(&s))
            .is_some_and(|s| !s.expired);
        let wait = node.zk_quiet_until_ms.saturating_sub(self.now_ms);
        if !alive {
            if node.session.is_some() {
                self.at(wait, Ev::To(i, inc, Event::Session(Session::Expired)));
                // Told it expired (a frozen member may not have been told it was disconnected
                // first): it must then be told the new session is connected.
                self.nodes[i as usize].zk_told = None;
            }
            self.zk.next_session += 1;
            let sid = self.zk.next_session;
            self.zk.sessions.insert(
                sid,
                ZkSession {
                    node: i,
                    last_heard_ms: self.now_ms,
                    expired: false,
                },
            );
            self.nodes[i as usize].session = Some(sid);
        }
        if self.nodes[i as usize].zk_told != Some(Session::Connected) {
            self.nodes[i as usize].zk_told = Some(Session::Connected);
            let sid = self.nodes[i as usize].session.unwrap_or(0);
            self.at(wait, Ev::SessionUp(i, inc, sid));
            self.at(wait, Ev::Watch(i, inc));
        }
    }

    fn zk_disconnect(&mut self, i: u32) {
        let node = &mut self.nodes[i as usize];
        if node.replica.is_some() && node.zk_told == Some(Session::Connected) {
            node.zk_told = Some(Session::Disconnected);
            let inc = node.incarnation;
            // A client notices a lost connection late (missed pings), sometimes after the
            // ensemble has already expired its session.
            let d = self.rng.below(self.p.session_timeout_ms * 3 / 2);
            self.nodes[i as usize].zk_quiet_until_ms = self.now_ms + d;
            self.at(d, Ev::To(i, inc, Event::Session(Session::Disconnected)));
        }
    }

    fn zk_reachable(&self, i: u32) -> bool {
        let node = &self.nodes[i as usize];
        self.zk.available
            && node.zk_link
            && node.zk_told == Some(Session::Connected)
            && node
                .session
                .and_then(|s| self.zk.sessions.get(&s))
                .is_some_and(|s| !s.expired)
    }

    fn group_event(&self, i: u32) -> Event {
        let mine = self.zk.leader_owner.is_some()
            && self.zk.leader_owner == self.nodes[i as usize].session;
        Event::Group {
            state: self.zk.state.clone(),
            version: self.zk.version,
            leader_alive: self.zk.leader_owner.is_some(),
            leader_mine: mine,
        }
    }

    fn zk_changed(&mut self) {
        for i in 0..self.p.members {
            if self.zk_reachable(i) {
                let d = self.rng.range(1, 4);
                let inc = self.nodes[i as usize].incarnation;
                // The watch fires; the member reads the state when it arrives.
                self.at(d, Ev::Watch(i, inc));
            }
        }
    }

    fn deliver(&mut self, i: u32, inc: u64, ev: Event) {
        let node = &self.nodes[i as usize];
        if node.incarnation != inc || node.replica.is_none() {
            return;
        }
        if self.trace.is_some() {
            let line = format!("n{} <- {}", i + 1, short_event(&ev));
            self.log(|| line);
        }
        let now = self.now_ms;
        if let Some(r) = self.nodes[i as usize].replica.as_mut() {
            r.handle(now, ev);
        }
        self.drain(i);
    }

    fn drain(&mut self, i: u32) {
        let mut acts = std::mem::take(&mut self.actions);
        if let Some(r) = self.nodes[i as usize].replica.as_mut() {
            r.poll_actions(&mut acts);
        }
        for a in acts.drain(..) {
            self.act(i, a);
        }
        self.actions = acts;
    }

    fn violation(&self, what: String) -> Violation {
        Violation {
            step: self.steps,
            time_ms: self.now_ms,
            what,
        }
    }

    fn act(&mut self, i: u32, a: Action) {
        let inc = self.nodes[i as usize].incarnation;
        if self.trace.is_some() {
            let line = format!("n{} -> {}", i + 1, short_action(&a));
            self.log(|| line);
        }
        match a {
            Action::Zk { req, op } => {
                // The request travels to the ensemble, is applied there, the answer travels back.
                let d = self.rng.range(1, 5);
                let sid = self.nodes[i as usize].told_session.unwrap_or(0);
                self.at(d, Ev::ZkApply(i, inc, sid, req, op));
            }
            Action::Connect { conn, to } => {
                let j = to - 1;
                let jn = &self.nodes[j as usize];
                let reachable = jn.replica.is_some() && !self.cut[i as usize][j as usize];
                let d = self.rng.range(1, 3);
                if reachable {
                    let jinc = jn.incarnation;
                    self.conns.insert(
                        conn,
                        Conn {
                            client: (i, inc),
                            server: (j, jinc),
                            open: [true, true],
                            broken: false,
                            tail_ms: [self.now_ms + d, self.now_ms + d],
                            held: None,
                        },
                    );
                    self.at(d, Ev::To(j, jinc, Event::Accepted { conn }));
                    self.at(d, Ev::To(i, inc, Event::Connected { conn }));
                } else {
                    self.at(d, Ev::To(i, inc, Event::Closed { conn }));
                }
            }
            Action::Send { conn, msg } => {
                if let Msg::Ack {
                    epoch,
                    received,
                    durable,
                } = &msg
                {
                    self.check_ack(i, conn, *epoch, *received, *durable);
                }
                self.send(i, conn, msg);
            }
            Action::SendSnapshot { conn, last } => {
                self.truth.snapshots += 1;
                let log = &self.nodes[i as usize].disk.visible;
                assert_eq!(
                    log.len() as u64,
                    last,
                    "snapshot of a log that is not the last"
                );
                let entries: Vec<Entry> = log.iter().map(|s| s.entry.clone()).collect();
                let history = history_of(log).spans().to_vec();
                for chunk in entries.chunks(self.p.snapshot_chunk_entries.max(1)) {
                    let mut data = bytes::BytesMut::new();
                    encode_entries(&mut data, chunk);
                    self.send(
                        i,
                        conn,
                        Msg::SnapshotChunk {
                            data: data.freeze(),
                        },
                    );
                }
                let fuzzy = self.p.fuzzy_copy_ppm > 0 && self.rng.chance(self.p.fuzzy_copy_ppm);
                if let (true, Role::Master { epoch }, Some(c)) = (
                    fuzzy,
                    self.nodes[i as usize].role,
                    self.conns.get_mut(&conn),
                ) {
                    c.held = Some(Vec::new());
                    let d = self.rng.range(1, 150);
                    self.at(d, Ev::ReadEnd(i, inc, epoch, conn, last));
                } else {
                    self.send(
                        i,
                        conn,
                        Msg::SnapshotEnd {
                            last,
                            history,
                            consistent_at: last,
                        },
                    );
                }
            }
            Action::Close { conn } => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    let me = usize::from(c.server.0 == i);
                    c.open[me] = false;
                    c.broken = true;
                    if c.open[1 - me] {
                        // The peer notices (FIN), after what was already in flight.
                        let (peer, pinc) = if me == 0 { c.server } else { c.client };
                        let t = c.tail_ms[1 - me].max(self.now_ms) + 1;
                        c.open[1 - me] = false;
                        let d = t - self.now_ms;
                        self.at(d, Ev::To(peer, pinc, Event::Closed { conn }));
                    }
                }
            }
            Action::Store { op, write } => {
                if matches!(self.nodes[i as usize].role, Role::Master { .. })
                    && !matches!(write, StoreWrite::Append(_))
                {
                    self.fail(format!("n{} rewrote its log while master", i + 1));
                }
                if let StoreWrite::Truncate { last } = write {
                    self.truth.truncations += 1;
                    if self.p.state_store
                        && !self.p.faults.wipe_before_copy
                        && last < self.nodes[i as usize].disk.visible.len() as u64
                    {
                        self.fail(format!(
                            "n{} was asked to cut its log after {last}: a message store cannot",
                            i + 1
                        ));
                    }
                }
                let disk = &mut self.nodes[i as usize].disk;
                if let Some(what) = apply(&mut disk.visible, &mut disk.staging, &write) {
                    self.fail(format!("n{}: {what}", i + 1));
                }
                if let (Role::Master { epoch }, StoreWrite::Append(es)) =
                    (self.nodes[i as usize].role, &write)
                {
                    let log = &self.nodes[i as usize].disk.visible;
                    let el = self.truth.epoch_log.entry(epoch).or_default();
                    for e in es {
                        el.push(log[e.lsn as usize - 1].prefix);
                    }
                }
                let disk = &mut self.nodes[i as usize].disk;
                disk.pending.push((op, write));
                if !disk.sync_scheduled {
                    disk.sync_scheduled = true;
                    let d = self.rng.range(1, 6);
                    self.at(d, Ev::Sync(i, inc));
                }
            }
            Action::Confirm { lsn } => self.check_confirm(i, lsn),
            Action::Role(role) => {
                self.nodes[i as usize].role = role;
                if let Role::Master { epoch } = role {
                    self.check_promotion(i, epoch);
                }
            }
        }
    }

    fn send(&mut self, i: u32, conn: ConnId, msg: Msg) {
        let slow = self.rng.chance(self.p.slow_msg_ppm);
        let d = if slow {
            self.rng.range(20, 150)
        } else {
            self.rng.range(1, 4)
        };
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let me = usize::from(c.server.0 == i);
        if c.broken || !c.open[me] {
            return;
        }
        let (a, b) = (c.client.0 as usize, c.server.0 as usize);
        if self.cut[a][b] {
            // The partition breaks the connection: the sender may or may not notice.
            c.broken = true;
            return;
        }
        let to = 1 - me;
        if let (0, Some(held)) = (to, c.held.as_mut()) {
            held.push(msg);
            return;
        }
        let t = (self.now_ms + d).max(c.tail_ms[to]);
        c.tail_ms[to] = t;
        let delay = t - self.now_ms;
        self.at(delay, Ev::Frame(conn, to, msg));
    }

    fn zk_apply(&mut self, i: u32, op: ZkOp) -> Result<u64, ZkFail> {
        let sid = self.nodes[i as usize].session;
        let r = match op {
            ZkOp::Create(s) => {
                if self.zk.state.is_some() {
                    Err(ZkFail::Conflict)
                } else {
                    self.zk.state = Some(s);
                    self.zk.version = 0;
                    Ok(0)
                }
            }
            ZkOp::Claim { version, state } => {
                if self.zk.state.is_none()
                    || self.zk.version != version
                    || self.zk.leader_owner.is_some()
                {
                    Err(ZkFail::Conflict)
                } else {
                    self.zk.state = Some(state);
                    self.zk.version += 1;
                    self.zk.leader_owner = sid;
                    Ok(self.zk.version)
                }
            }
            ZkOp::Takeover { version, state } => {
                if self.zk.state.is_none() || self.zk.version != version {
                    Err(ZkFail::Conflict)
                } else {
                    self.zk.state = Some(state);
                    self.zk.version += 1;
                    self.zk.leader_owner = sid;
                    self.truth.takeovers += 1;
                    Ok(self.zk.version)
                }
            }
            ZkOp::Set { version, state } => {
                if self.zk.state.is_none() || self.zk.version != version {
                    Err(ZkFail::Conflict)
                } else {
                    self.zk.state = Some(state);
                    self.zk.version += 1;
                    Ok(self.zk.version)
                }
            }
        };
        if r.is_ok() {
            let line = format!("zk state v{} {:?}", self.zk.version, self.zk.state);
            self.log(|| line);
            self.zk_changed();
        }
        r
    }

    fn fail(&mut self, what: String) {
        if self.failed.is_none() {
            self.failed = Some(self.violation(what));
        }
    }

    fn check_confirm(&mut self, i: u32, lsn: u64) {
        let Role::Master { epoch } = self.nodes[i as usize].role else {
            return self.fail(format!("n{} confirmed lsn {lsn} while not master", i + 1));
        };
        if let Some(&other) = self.truth.epoch_confirmer.get(&epoch) {
            if other != i {
                return self.fail(format!(
                    "two masters confirmed in epoch {epoch}: n{} and n{}",
                    other + 1,
                    i + 1
                ));
            }
        }
        self.truth.epoch_confirmer.insert(epoch, i);
        let log = &self.nodes[i as usize].disk.visible;
        let Some(slot) = log.get(lsn as usize - 1) else {
            return self.fail(format!("n{} confirmed lsn {lsn} beyond its log", i + 1));
        };
        if slot.entry.epoch != epoch {
            return self.fail(format!("n{} confirmed an entry of another epoch", i + 1));
        }
        let h = slot.prefix;
        match self.truth.confirmed.insert(lsn, h) {
            Some(old) if old != h => {
                return self.fail(format!("two different entries confirmed at lsn {lsn}"))
            }
            _ => {}
        }
        self.truth.max_confirmed = self.truth.max_confirmed.max(lsn);
        self.truth.confirmed_writes += 1;
    }

    fn holds_confirmed(&self, log: &[Slot]) -> bool {
        let m = self.truth.max_confirmed;
        m == 0 || prefix_at(log, m) == self.truth.confirmed.get(&m).copied()
    }

    fn check_promotion(&mut self, i: u32, epoch: u64) {
        if let Some(&other) = self.truth.epoch_master.get(&epoch) {
            if other != i {
                return self.fail(format!("two masters of epoch {epoch}"));
            }
        }
        self.truth.epoch_master.insert(epoch, i);
        let log = &self.nodes[i as usize].disk.visible;
        let newest = self.zk.state.as_ref().map_or(0, |s| s.epoch);
        if epoch < newest {
            // A zombie: its claim was applied, then it stopped (frozen) while its session
            // expired and a newer master was elected; it learns of its promotion from its
            // backlog. It cannot confirm (its in-sync set holds the newer master, which never
            // acknowledges an older epoch) nor serve (no lease): `check_confirm` and
            // `check_serving` would see it. Only a promotion to the newest epoch must hold
            // every confirmed entry.
            self.truth.zombies += 1;
            let hashes: Vec<u64> = log.iter().map(|s| s.prefix).collect();
            self.truth.epoch_log.insert(epoch, hashes);
            return;
        }
        if !self.holds_confirmed(log) {
            let (last, m) = (log.len(), self.truth.max_confirmed);
            return self.fail(format!(
                "confirmed entry lost: n{} became master of epoch {epoch} with log end {last}, \
                 confirmed up to {m} not all in it",
                i + 1
            ));
        }
        let hashes: Vec<u64> = log.iter().map(|s| s.prefix).collect();
        self.truth.epoch_log.insert(epoch, hashes);
    }

    fn check_ack(&mut self, i: u32, conn: ConnId, epoch: u64, received: u64, durable: u64) {
        if let Some(&(r0, d0)) = self.truth.last_ack.get(&conn) {
            if received < r0 || durable < d0 {
                return self.fail(format!(
                    "n{} position report went back on one connection: ({r0},{d0}) -> ({received},{durable})",
                    i + 1
                ));
            }
        }
        self.truth.last_ack.insert(conn, (received, durable));
        let node = &self.nodes[i as usize];
        let master = self.truth.epoch_log.get(&epoch);
        let m_at = |l: u64| {
            if l == 0 {
                Some(0)
            } else {
                master.and_then(|m| m.get(l as usize - 1).copied())
            }
        };
        let ok_r = prefix_at(&node.disk.visible, received).is_some()
            && prefix_at(&node.disk.visible, received) == m_at(received);
        let ok_d = prefix_at(&node.disk.durable, durable).is_some()
            && prefix_at(&node.disk.durable, durable) == m_at(durable);
        if !ok_r || !ok_d {
            self.fail(format!(
                "n{} acked ({received},{durable}) to epoch {epoch} holding a divergent entry",
                i + 1
            ));
        }
    }

    /// Every member of the ISR recorded in ZooKeeper holds every confirmed entry durably.
    fn check_isr(&mut self) {
        let Some(st) = &self.zk.state else { return };
        for m in &st.isr {
            let node = &self.nodes[*m as usize - 1];
            if !self.holds_confirmed(&node.disk.durable) {
                let (l, c) = (node.disk.durable.len(), self.truth.max_confirmed);
                let what = format!(
                    "ISR member n{m} does not hold confirmed entries durably (durable end {l}, confirmed {c})"
                );
                return self.fail(what);
            }
        }
    }

    fn crash(&mut self, i: u32) {
        let node = &mut self.nodes[i as usize];
        if node.replica.is_none() {
            return;
        }
        // Writes reach the disk in order: a crash keeps a prefix of the unsynced ones.
        let keep = self.rng.below(node.disk.pending.len() as u64 + 1) as usize;
        let pending = std::mem::take(&mut node.disk.pending);
        for (_, w) in pending.iter().take(keep) {
            apply(&mut node.disk.durable, &mut node.disk.durable_staging, w);
        }
        node.replica = None;
        node.role = Role::Follower;
        node.frozen = None;
        self.truth.crashes += 1;
        let inc = node.incarnation;
        self.log(|| format!("CRASH n{} (kept {keep} unsynced writes)", i + 1));
        // Its connections die: each peer notices (RST) or not (half-open until it times out).
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            let notice = self.rng.chance(500_000);
            let c = self.conns.get_mut(&id).unwrap();
            let end = if c.client == (i, inc) {
                1
            } else if c.server == (i, inc) {
                0
            } else {
                continue;
            };
            c.broken = true;
            c.open[1 - end] = false;
            if notice && c.open[end] {
                c.open[end] = false;
                let (peer, pinc) = if end == 0 { c.client } else { c.server };
                self.at(2, Ev::To(peer, pinc, Event::Closed { conn: id }));
            }
        }
        let d = self.rng.range(20, 600);
        self.at(d, Ev::Restart(i));
    }

    fn inject(&mut self) {
        let n = self.p.members;
        if self.rng.chance(self.p.crash_ppm) {
            let i = self.rng.below(u64::from(n)) as u32;
            self.crash(i);
        }
        if self.rng.chance(self.p.conn_break_ppm) && !self.conns.is_empty() {
            let mut ids: Vec<ConnId> = self
                .conns
                .iter()
                .filter(|(_, c)| !c.broken)
                .map(|(k, _)| *k)
                .collect();
            ids.sort_unstable();
            if !ids.is_empty() {
                let id = ids[self.rng.below(ids.len() as u64) as usize];
                let half_open = self.rng.chance(300_000);
                let c = self.conns.get_mut(&id).unwrap();
                c.broken = true;
                let ends = if half_open {
                    vec![(self.rng.below(2)) as usize]
                } else {
                    vec![0, 1]
                };
                let c = self.conns.get_mut(&id).unwrap();
                let mut notify = Vec::new();
                for e in ends {
                    if c.open[e] {
                        c.open[e] = false;
                        notify.push(if e == 0 { c.client } else { c.server });
                    }
                }
                self.log(|| format!("BREAK conn {id:x} half_open={half_open}"));
                for (peer, pinc) in notify {
                    self.at(1, Ev::To(peer, pinc, Event::Closed { conn: id }));
                }
            }
        }
        if self.rng.chance(self.p.partition_ppm) {
            let a = self.rng.below(u64::from(n)) as usize;
            let b = self.rng.below(u64::from(n)) as usize;
            if a != b {
                self.cut[a][b] = true;
                self.cut[b][a] = true;
                self.log(|| format!("PARTITION n{}|n{}", a + 1, b + 1));
                let d = self.rng.range(50, 1500);
                self.at(d, Ev::Heal);
            }
        }
        if self.rng.chance(self.p.zk_isolate_ppm) {
            let i = self.rng.below(u64::from(n)) as u32;
            self.nodes[i as usize].zk_link = false;
            self.log(|| format!("ZK-ISOLATE n{}", i + 1));
            self.zk_disconnect(i);
            let d = self.rng.range(50, 1500);
            self.at(d, Ev::Heal);
        }
        if self.rng.chance(self.p.zk_outage_ppm) && self.zk.available {
            self.zk.available = false;
            self.log(|| "ZK-OUTAGE".into());
            for i in 0..n {
                self.zk_disconnect(i);
            }
            let d = self.rng.range(100, 2000);
            self.at(d, Ev::ZkBack);
        }
        // No draw at all when off: the regression seeds of older findings keep their traces.
        if self.p.freeze_ppm > 0 && self.rng.chance(self.p.freeze_ppm) {
            let i = self.rng.below(u64::from(n)) as u32;
            let d = self.rng.range(50, 1500);
            let node = &mut self.nodes[i as usize];
            if node.replica.is_some() && node.frozen.is_none() {
                node.frozen = Some(Vec::new());
                let inc = node.incarnation;
                self.truth.freezes += 1;
                self.log(|| format!("FREEZE n{} for {d} ms", i + 1));
                self.at(d, Ev::Thaw(i, inc));
            }
        }
        if self.rng.chance(self.p.submit_ppm) {
            let masters: Vec<u32> = (0..n)
                .filter(|i| matches!(self.nodes[*i as usize].role, Role::Master { .. }))
                .collect();
            if !masters.is_empty() {
                let i = masters[self.rng.below(masters.len() as u64) as usize];
                self.submit(i);
            }
        }
    }

    fn submit(&mut self, i: u32) -> Option<u64> {
        self.next_payload += 1;
        let payload = Bytes::copy_from_slice(&self.next_payload.to_le_bytes());
        let now = self.now_ms;
        let r = self.nodes[i as usize]
            .replica
            .as_mut()?
            .submit(now, payload)
            .ok();
        self.drain(i);
        r
    }

    fn heal_all(&mut self) {
        for row in &mut self.cut {
            row.iter_mut().for_each(|c| *c = false);
        }
        for i in 0..self.p.members {
            self.nodes[i as usize].zk_link = true;
        }
        self.zk.available = true;
        for s in self.zk.sessions.values_mut() {
            s.last_heard_ms = s.last_heard_ms.max(self.now_ms);
        }
        for i in 0..self.p.members {
            self.zk_connect(i);
        }
    }

    fn expire_sessions(&mut self) {
        if !self.zk.available {
            return;
        }
        let now = self.now_ms;
        let mut expired = Vec::new();
        for (id, s) in self.zk.sessions.iter_mut() {
            if s.expired {
                continue;
            }
            let node = &self.nodes[s.node as usize];
            let heard = node.session == Some(*id)
                && node.replica.is_some()
                && node.zk_link
                && node.frozen.is_none();
            if heard {
                s.last_heard_ms = now;
            } else if now - s.last_heard_ms > self.p.session_timeout_ms {
                s.expired = true;
                expired.push(*id);
            }
        }
        for id in expired {
            if self.zk.leader_owner == Some(id) {
                self.zk.leader_owner = None;
                self.log(|| format!("zk session {id} expired: leader node deleted"));
                self.zk_changed();
            }
        }
    }

    /// Runs one event. `Err` on the first violation.
    pub fn step(&mut self) -> Result<(), Violation> {
        self.steps += 1;
        if self.chaos {
            self.inject();
        }
        let Some(Reverse((t, id))) = self.queue.pop() else {
            return Err(self.violation("event queue empty".into()));
        };
        if t > self.now_ms {
            self.now_ms = t;
            self.expire_sessions();
        }
        let ev = self.events.remove(&id).unwrap();
        self.handle_ev(ev);
        if self.p.check_isr {
            self.check_isr();
        }
        self.check_serving();
        if let Some(v) = self.failed.take() {
            return Err(v);
        }
        Ok(())
    }

    /// The member an event is for, if it is handled by a member's process.
    fn target(&self, ev: &Ev) -> Option<u32> {
        match ev {
            Ev::To(i, ..) | Ev::Sync(i, _) | Ev::Watch(i, _) | Ev::SessionUp(i, ..) => Some(*i),
            Ev::Frame(conn, to, _) => {
                self.conns
                    .get(conn)
                    .map(|c| if *to == 0 { c.client.0 } else { c.server.0 })
            }
            _ => None,
        }
    }

    fn handle_ev(&mut self, ev: Ev) {
        if let Some(i) = self.target(&ev) {
            if let Some(backlog) = self.nodes[i as usize].frozen.as_mut() {
                backlog.push(ev);
                return;
            }
        }
        match ev {
            Ev::Tick(i) => {
                // A frozen process misses its timer; it ticks again after it thaws.
                if self.nodes[i as usize].frozen.is_none() {
                    let inc = self.nodes[i as usize].incarnation;
                    self.deliver(i, inc, Event::Tick);
                }
                self.at(10, Ev::Tick(i));
            }
            Ev::Thaw(i, inc) => self.thaw(i, inc),
            Ev::To(i, inc, ev) => self.deliver(i, inc, ev),
            Ev::SessionUp(i, inc, sid) => {
                if self.nodes[i as usize].incarnation == inc {
                    self.nodes[i as usize].told_session = Some(sid);
                    self.deliver(i, inc, Event::Session(Session::Connected));
                }
            }
            Ev::ZkApply(i, inc, sid, req, op) => {
                if self.nodes[i as usize].incarnation == inc {
                    let same_session = self.nodes[i as usize].session == Some(sid);
                    let mut result = if same_session && self.zk_reachable(i) {
                        self.zk_apply(i, op)
                    } else {
                        Err(ZkFail::Unknown)
                    };
                    // Sometimes the connection drops after the ensemble applied the request.
                    if result.is_ok() && self.chaos && self.rng.chance(self.p.zk_lost_answer_ppm) {
                        result = Err(ZkFail::Unknown);
                    }
                    let d = self.rng.range(1, 5);
                    self.at(d, Ev::To(i, inc, Event::ZkDone { req, result }));
                }
            }
            Ev::Watch(i, inc) => {
                if self.zk_reachable(i) {
                    let g = self.group_event(i);
                    self.deliver(i, inc, g);
                }
            }
            Ev::Frame(conn, to, msg) => {
                let Some(c) = self.conns.get(&conn) else {
                    return;
                };
                if c.broken || !c.open[to] {
                    return;
                }
                let (node, inc) = if to == 0 { c.client } else { c.server };
                self.deliver(node, inc, Event::Received { conn, msg });
            }
            Ev::ReadEnd(i, inc, epoch, conn, cut) => {
                let node = &self.nodes[i as usize];
                let still = node.incarnation == inc
                    && node.replica.is_some()
                    && node.role == Role::Master { epoch };
                let Some(c) = self.conns.get_mut(&conn) else {
                    return;
                };
                let Some(held) = c.held.take() else {
                    return;
                };
                if !still {
                    // The reader is gone or deposed: the copy is abandoned with its connection.
                    c.broken = true;
                    return;
                }
                let log = &self.nodes[i as usize].disk.visible;
                let consistent_at = log.len() as u64;
                let history = history_of(&log[..cut as usize]).spans().to_vec();
                self.send(
                    i,
                    conn,
                    Msg::SnapshotEnd {
                        last: cut,
                        history,
                        consistent_at,
                    },
                );
                for m in held {
                    self.send(i, conn, m);
                }
            }
            Ev::Sync(i, inc) => {
                let node = &mut self.nodes[i as usize];
                if node.incarnation == inc && node.replica.is_some() {
                    node.disk.sync_scheduled = false;
                    let pending = std::mem::take(&mut node.disk.pending);
                    let last_op = pending.last().map(|p| p.0);
                    for (_, w) in &pending {
                        apply(&mut node.disk.durable, &mut node.disk.durable_staging, w);
                    }
                    if let Some(op) = last_op {
                        self.deliver(i, inc, Event::StoreSynced { op });
                    }
                }
            }
            Ev::Restart(i) => {
                if self.nodes[i as usize].replica.is_none() {
                    self.log(|| format!("RESTART n{}", i + 1));
                    self.start(i);
                }
            }
            Ev::Heal => {
                // Heal one random partition or isolation (each Heal undoes one fault).
                let n = self.p.members as usize;
                let cuts: Vec<(usize, usize)> = (0..n)
                    .flat_map(|a| (0..n).map(move |b| (a, b)))
                    .filter(|(a, b)| a < b && self.cut[*a][*b])
                    .collect();
                let isolated: Vec<u32> = (0..n as u32)
                    .filter(|i| !self.nodes[*i as usize].zk_link)
                    .collect();
                if let Some(&(a, b)) = cuts.first() {
                    self.cut[a][b] = false;
                    self.cut[b][a] = false;
                } else if let Some(&i) = isolated.first() {
                    self.nodes[i as usize].zk_link = true;
                    self.zk_connect(i);
                }
            }
            Ev::ZkBack => {
                self.zk.available = true;
                // ZooKeeper gives sessions a fresh timeout after an outage.
                let now = self.now_ms;
                self.zk
                    .sessions
                    .values_mut()
                    .for_each(|s| s.last_heard_ms = now);
                for i in 0..self.p.members {
                    self.zk_connect(i);
                }
            }
        }
    }

    /// A frozen process resumes: it handles its backlog at once (still believing what it
    /// believed when it stopped), and only then may learn that its session expired meanwhile.
    fn thaw(&mut self, i: u32, inc: u64) {
        let node = &mut self.nodes[i as usize];
        if node.incarnation != inc {
            return;
        }
        let Some(backlog) = node.frozen.take() else {
            return;
        };
        self.log(|| format!("THAW n{} ({} events waiting)", i + 1, backlog.len()));
        for ev in backlog {
            self.handle_ev(ev);
        }
        let node = &self.nodes[i as usize];
        let expired = node
            .session
            .and_then(|s| self.zk.sessions.get(&s))
            .is_some_and(|s| s.expired);
        if expired && node.zk_told == Some(Session::Connected) {
            self.nodes[i as usize].zk_told = Some(Session::Disconnected);
            self.zk_connect(i);
        }
    }

    /// With fast takeover, at most one member serves (dispatches to consumers) at any time.
    fn check_serving(&mut self) {
        if self.p.master_timeout_ms == 0 {
            return;
        }
        let now = self.now_ms;
        let serving: Vec<String> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.frozen.is_none())
            .filter(|(_, n)| n.replica.as_ref().is_some_and(|r| r.serving(now)))
            .map(|(i, n)| format!("n{} ({:?})", i + 1, n.role))
            .collect();
        if serving.len() > 1 {
            self.fail(format!(
                "two masters serving at once: {}",
                serving.join(", ")
            ));
        }
    }

    /// The chaotic part, then healing, then the liveness requirement.
    pub fn run(&mut self) -> Result<(), Violation> {
        while self.steps < self.p.steps {
            self.step()?;
        }
        self.chaos = false;
        self.heal_all();
        for i in 0..self.p.members {
            if self.nodes[i as usize].replica.is_none() {
                self.start(i);
            }
        }
        let deadline = self.now_ms + self.p.heal_deadline_ms;
        let mut probe: Option<(u32, u64, u64)> = None;
        while self.now_ms < deadline {
            self.step()?;
            // Light load while healing: a returning member must catch up under writes.
            if self.rng.chance(100_000) {
                if let Some(i) = self.master() {
                    self.submit(i);
                }
            }
            let whole = self.zk.state.as_ref().is_some_and(|s| {
                s.isr.len() == self.p.members as usize && self.zk.leader_owner.is_some()
            });
            if !whole {
                probe = None;
                continue;
            }
            let Some(m) = self.master() else { continue };
            match probe {
                None => {
                    if let Some(lsn) = self.submit(m) {
                        probe = Some((m, self.truth.confirmed_writes, lsn));
                    }
                }
                Some((pm, _, lsn)) if pm == m => {
                    if self.truth.confirmed.contains_key(&lsn)
                        && self.truth.epoch_confirmer.values().any(|x| *x == m)
                    {
                        return Ok(());
                    }
                }
                Some(_) => probe = None,
            }
        }
        let st = self.zk.state.clone();
        Err(self.violation(format!(
            "no progress: the group was not whole with a write confirmed within {} ms of healing (zk state {st:?})",
            self.p.heal_deadline_ms
        )))
    }

    fn master(&self) -> Option<u32> {
        let owner = self.zk.leader_owner?;
        let s = self.zk.sessions.get(&owner)?;
        let n = &self.nodes[s.node as usize];
        (n.session == Some(owner) && matches!(n.role, Role::Master { .. })).then_some(s.node)
    }

    /// Counters of what the run exercised.
    pub fn stats(&self) -> [u64; 8] {
        let t = &self.truth;
        let epochs = self.zk.state.as_ref().map_or(0, |s| s.epoch);
        [
            t.confirmed_writes,
            t.max_confirmed,
            epochs,
            t.crashes,
            t.snapshots,
            t.truncations,
            t.freezes,
            t.takeovers,
        ]
    }
}

fn short_event(ev: &Event) -> String {
    match ev {
        Event::Received { conn, msg } => format!("recv {conn:x} {}", short_msg(msg)),
        other => format!("{other:?}"),
    }
}

fn short_action(a: &Action) -> String {
    match a {
        Action::Send { conn, msg } => format!("send {conn:x} {}", short_msg(msg)),
        Action::Store { op, write } => match write {
            StoreWrite::Append(es) => format!(
                "store#{op} append {}..={}",
                es.first().map_or(0, |e| e.lsn),
                es.last().map_or(0, |e| e.lsn)
            ),
            StoreWrite::Truncate { last } => format!("store#{op} truncate after {last}"),
            StoreWrite::StageBegin => format!("store#{op} stage begin"),
            StoreWrite::Stage(data) => format!("store#{op} stage {} bytes", data.len()),
            StoreWrite::StageAppend(es) => format!(
                "store#{op} stage {}..={}",
                es.first().map_or(0, |e| e.lsn),
                es.last().map_or(0, |e| e.lsn)
            ),
            StoreWrite::Install { last, .. } => format!("store#{op} install 1..={last}"),
        },
        other => format!("{other:?}"),
    }
}

fn short_msg(m: &Msg) -> String {
    match m {
        Msg::Entries {
            epoch,
            prev,
            entries,
        } => format!(
            "Entries e{epoch} prev {prev} +{} (epochs {:?})",
            entries.len(),
            entries.first().map(|e| e.epoch)
        ),
        Msg::SnapshotChunk { data } => {
            format!("SnapshotChunk {} bytes", data.len())
        }
        other => format!("{other:?}"),
    }
}

impl World {
    /// Debugging aid: every member's state machine.
    pub fn dump(&self) -> String {
        let mut s = String::new();
        for (i, n) in self.nodes.iter().enumerate() {
            s.push_str(&format!(
                "n{} frozen={} zk_told={:?} session={:?} {:#?}\n",
                i + 1,
                n.frozen.is_some(),
                n.zk_told,
                n.session,
                n.replica.as_ref().map(|r| format!("{r:?}"))
            ));
        }
        s
    }
}
