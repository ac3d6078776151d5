//! The state machine of one broker of a replication group.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;

use super::{
    Action, Config, ConnId, Durability, Entry, EpochHistory, Event, FollowerView, GroupState,
    MasterView, MemberId, Msg, Position, Recovered, Refused, Role, Session, Start, StoreOpId,
    StoreWrite, ZkFail, ZkOp, ZkReq,
};

/// Bytes an entry counts for in flow control beyond its payload (frame overhead; also makes an
/// empty marker count).
const ENTRY_OVERHEAD_BYTES: u64 = 32;

#[derive(Debug, Clone)]
struct TailEntry {
    entry: Entry,
    appended_ms: u64,
    /// Flow-control bytes of every entry up to and including this one.
    cum_bytes: u64,
}

/// What this broker knows of its own log (the store holds the entries).
#[derive(Debug)]
struct Log {
    history: EpochHistory,
    last: u64,
    /// Every entry up to here survives a crash.
    durable: u64,
    tail: VecDeque<TailEntry>,
    tail_max: usize,
    /// Writes not yet known durable, with the log's last lsn once each is applied (lowered by
    /// later truncations: a truncation makes the earlier writes' entries past it irrelevant).
    unsynced: VecDeque<(StoreOpId, u64)>,
    next_op: StoreOpId,
}

impl Log {
    fn tail_start(&self) -> u64 {
        self.tail.front().map_or(self.last + 1, |t| t.entry.lsn)
    }

    fn tail_get(&self, lsn: u64) -> Option<&TailEntry> {
        let start = self.tail_start();
        if lsn < start {
            return None;
        }
        self.tail.get(usize::try_from(lsn - start).ok()?)
    }

    /// Flow-control bytes of the entries up to `lsn` (constant below the tail).
    fn cum_bytes(&self, lsn: u64) -> u64 {
        let base = self
            .tail
            .front()
            .map_or(0, |t| t.cum_bytes - entry_bytes(&t.entry));
        if lsn < self.tail_start() {
            return base;
        }
        self.tail_get(lsn)
            .or(self.tail.back())
            .map_or(base, |t| t.cum_bytes)
    }

    fn push_tail(&mut self, entry: Entry, now_ms: u64) {
        let prev = self.tail.back().map_or(0, |t| t.cum_bytes);
        let cum_bytes = prev + entry_bytes(&entry);
        self.tail.push_back(TailEntry {
            entry,
            appended_ms: now_ms,
            cum_bytes,
        });
        while self.tail.len() > self.tail_max {
            self.tail.pop_front();
        }
    }

    fn op(&mut self, last_after: u64, write: StoreWrite) -> Action {
        self.next_op += 1;
        self.unsynced.push_back((self.next_op, last_after));
        Action::Store {
            op: self.next_op,
            write,
        }
    }

    fn append(&mut self, entries: Vec<Entry>, now_ms: u64) -> Action {
        for e in &entries {
            debug_assert_eq!(e.lsn, self.last + 1);
            self.history.append(e.epoch, e.lsn);
            self.last = e.lsn;
            self.push_tail(e.clone(), now_ms);
        }
        self.op(self.last, StoreWrite::Append(entries))
    }

    fn truncate(&mut self, last: u64) -> Action {
        self.history.truncate(last);
        self.last = last;
        while self.tail.back().is_some_and(|t| t.entry.lsn > last) {
            self.tail.pop_back();
        }
        self.durable = self.durable.min(last);
        for u in &mut self.unsynced {
            u.1 = u.1.min(last);
        }
        self.op(last, StoreWrite::Truncate { last })
    }

    /// The staged copy replaces the log. Its entries never passed through the core, so the
    /// in-memory tail starts empty (followers of this member, should it become master, get
    /// full copies until the tail fills again — as after a restart).
    fn install(&mut self, last: u64, history: EpochHistory) -> Action {
        self.last = last;
        self.durable = 0;
        for u in &mut self.unsynced {
            u.1 = 0;
        }
        self.tail.clear();
        let spans = history.spans().to_vec();
        self.history = history;
        self.op(
            last,
            StoreWrite::Install {
                last,
                history: spans,
            },
        )
    }

    fn synced(&mut self, op: StoreOpId) {
        while let Some(&(id, last_after)) = self.unsynced.front() {
            if id > op {
                break;
            }
            self.durable = last_after;
            self.unsynced.pop_front();
        }
    }

    fn position(&self, lsn: u64) -> Position {
        Position {
            epoch: self.history.epoch_at(lsn),
            lsn,
        }
    }
}

fn entry_bytes(e: &Entry) -> u64 {
    e.payload.len() as u64 + ENTRY_OVERHEAD_BYTES
}

#[derive(Debug)]
enum Phase {
    Connecting,
    AwaitWelcome,
    /// Receiving a full copy into a staging area; the live log is untouched.
    Staging,
    /// The copy is complete up to its cut; the entries up to `until` are replayed into the
    /// staging area before it is installed.
    Replaying {
        /// The staging area's last entry.
        staged: Position,
        /// Where the copy is consistent.
        until: u64,
        /// The staging area's epoch history.
        history: EpochHistory,
    },
    /// `Faults::wipe_before_copy`: receiving a full copy after emptying the live log.
    WipedCopy,
    Streaming,
}

#[derive(Debug)]
struct Link {
    conn: ConnId,
    master: MemberId,
    epoch: u64,
    phase: Phase,
    /// The last ack sent `(received, durable)`.
    acked: (u64, u64),
    last_heard_ms: u64,
}

#[derive(Debug, Default)]
struct Follow {
    link: Option<Link>,
    retry_at_ms: u64,
    claim_at_ms: Option<u64>,
    /// Fast takeover: the epoch whose master we follow and when we last heard from it (any
    /// frame), or when we learnt of that epoch. Kept across reconnections: a master that
    /// never answers is as silent as one that stopped.
    heard: Option<(u64, u64)>,
}

#[derive(Debug)]
struct Peer {
    conn: Option<ConnId>,
    /// Streaming has started on `conn` (after the welcome).
    streaming: bool,
    sent: u64,
    last_sent_ms: u64,
    received: u64,
    durable: u64,
    /// What it holds in its staging area while it replays after a full copy (`Progress`):
    /// counted by the send window only.
    staged: u64,
    /// The follower held every entry appended before this time.
    caught_up_ms: u64,
    /// `(log end, time)` noted when it was set: once the follower acknowledges that lsn, it
    /// held everything appended before that time (Kafka's `lastCaughtUpTime`; needs no entry
    /// to be in the tail). Set at its `Hello`, renewed at every ack that reaches it.
    mark: (u64, u64),
    /// When we sent the newest ping it answered (on its current connection); `None` until it
    /// answers one in this epoch.
    pong_sent_ms: Option<u64>,
    /// When we last sent it a ping.
    last_ping_ms: u64,
    /// When we started following it (its silence counts from here until it answers a ping).
    since_ms: u64,
}

impl Peer {
    fn new(now_ms: u64) -> Peer {
        Peer {
            conn: None,
            streaming: false,
            sent: 0,
            last_sent_ms: now_ms,
            received: 0,
            durable: 0,
            staged: 0,
            caught_up_ms: now_ms,
            mark: (u64::MAX, now_ms),
            pong_sent_ms: None,
            last_ping_ms: 0,
            since_ms: now_ms,
        }
    }
}

#[derive(Debug)]
struct Lead {
    epoch: u64,
    version: u64,
    isr: Vec<MemberId>,
    durability: Durability,
    pending_add: Option<MemberId>,
    pending_remove: Option<MemberId>,
    /// ISR members that need a full copy: removed from the ISR before it is sent.
    want_removed: BTreeSet<MemberId>,
    conns: BTreeMap<ConnId, Option<MemberId>>,
    peers: BTreeMap<MemberId, Peer>,
    commit: u64,
    marker: u64,
    unconfirmed: VecDeque<u64>,
}

impl Lead {
    fn min_isr(&self) -> usize {
        self.durability.followers + 1
    }

    /// The members whose claim could depose us: the in-sync set as ZooKeeper may hold it.
    fn could_claim(&self, me: MemberId) -> impl Iterator<Item = MemberId> + '_ {
        self.isr
            .iter()
            .copied()
            .chain(self.pending_add)
            .filter(move |m| *m != me)
    }
}

#[derive(Debug)]
enum RoleState {
    Follower(Follow),
    Master(Box<Lead>),
}

#[derive(Debug)]
enum ZkPending {
    Create,
    Claim(GroupState),
    /// The new state, and the master it deposes with when we last heard from it.
    Takeover(GroupState, Option<(MemberId, u64)>),
    Set(GroupState),
}

/// One broker's replication state machine: feed it [`Event`]s, collect its [`Action`]s.
#[derive(Debug)]
pub struct Replica {
    cfg: Config,
    log: Log,
    session: Session,
    group: Option<(GroupState, u64, bool)>,
    zk: Option<(ZkReq, ZkPending)>,
    next_req: ZkReq,
    next_conn: u64,
    role: RoleState,
    out: Vec<Action>,
}

impl Replica {
    /// A broker starting with the log it recovered, its ZooKeeper session not yet connected.
    pub fn new(cfg: Config, recovered: Recovered, now_ms: u64) -> Replica {
        let mut log = Log {
            history: recovered.history,
            last: recovered.last,
            durable: recovered.last,
            tail: VecDeque::new(),
            tail_max: cfg.tail_entries_max.max(1),
            unsynced: VecDeque::new(),
            next_op: 0,
        };
        for e in recovered.tail {
            log.push_tail(e, now_ms);
        }
        Replica {
            cfg,
            log,
            session: Session::Disconnected,
            group: None,
            zk: None,
            next_req: 0,
            next_conn: 0,
            role: RoleState::Follower(Follow::default()),
            out: Vec::new(),
        }
    }

    /// Moves the pending actions to `out`.
    pub fn poll_actions(&mut self, out: &mut Vec<Action>) {
        out.append(&mut self.out);
    }

    /// The current role.
    pub fn role(&self) -> Role {
        match &self.role {
            RoleState::Follower(_) => Role::Follower,
            RoleState::Master(l) => Role::Master { epoch: l.epoch },
        }
    }

    /// The log's last lsn.
    pub fn last(&self) -> u64 {
        self.log.last
    }

    /// The log's durable lsn.
    pub fn durable(&self) -> u64 {
        self.log.durable
    }

    /// The log's epoch history.
    pub fn history(&self) -> &EpochHistory {
        &self.log.history
    }

    /// The master's ISR as it knows it (`None` on a follower).
    pub fn isr(&self) -> Option<&[MemberId]> {
        match &self.role {
            RoleState::Master(l) => Some(&l.isr),
            RoleState::Follower(_) => None,
        }
    }

    /// The master this follower streams from, `(member, epoch)`, once its log follows that
    /// master's (after the `Welcome`, or after a full copy was installed); `None` otherwise.
    /// For logs and status pages only.
    pub fn following(&self) -> Option<(MemberId, u64)> {
        match &self.role {
            RoleState::Follower(Follow {
                link:
                    Some(Link {
                        master,
                        epoch,
                        phase: Phase::Streaming,
                        ..
                    }),
                ..
            }) => Some((*master, *epoch)),
            _ => None,
        }
    }

    /// A master's view of its followers and of what a write waits for (`None` on a follower),
    /// for status pages: read only, nothing depends on it.
    pub fn master_view(&self) -> Option<MasterView> {
        let RoleState::Master(lead) = &self.role else {
            return None;
        };
        Some(MasterView {
            epoch: lead.epoch,
            isr: lead.isr.clone(),
            commit: lead.commit,
            last: self.log.last,
            durable: self.log.durable,
            inherited: self.log.position(lead.marker.saturating_sub(1)),
            tail_from: self.log.tail_start(),
            durability: lead.durability,
            followers: lead
                .peers
                .iter()
                .map(|(m, p)| FollowerView {
                    member: *m,
                    connected: p.conn.is_some(),
                    sent: p.sent,
                    received: p.received,
                    durable: p.durable,
                })
                .collect(),
        })
    }

    /// Whether this broker may dispatch to consumers now: master, connected to ZooKeeper, and
    /// — fast takeover on, in a mode with an in-sync set — holding its lease: every member that
    /// could claim mastership (the in-sync set, a member being added) answered a ping sent less
    /// than `master_timeout_ms / 2` ago. Such a member takes over only after `master_timeout_ms`
    /// without hearing from us, and a member whose claim succeeded stopped answering before it,
    /// so no other master can be serving meanwhile (`docs/replication.md`, "Fast takeover").
    pub fn serving(&self, now_ms: u64) -> bool {
        let RoleState::Master(lead) = &self.role else {
            return false;
        };
        if self.session != Session::Connected {
            return false;
        }
        let t = self.cfg.master_timeout_ms;
        if t == 0 || lead.durability.followers == 0 || self.cfg.faults.no_lease {
            return true;
        }
        lead.could_claim(self.cfg.id).all(|m| {
            lead.peers
                .get(&m)
                .and_then(|p| p.pong_sent_ms)
                .is_some_and(|sent| now_ms < sent + t / 2)
        })
    }

    /// A producer's write: appended and streamed now, confirmed by a later [`Action::Confirm`]
    /// with the returned lsn.
    pub fn submit(&mut self, now_ms: u64, payload: Bytes) -> Result<u64, Refused> {
        if self.session != Session::Connected {
            return Err(Refused::NotMaster);
        }
        let RoleState::Master(lead) = &mut self.role else {
            return Err(Refused::NotMaster);
        };
        if lead.unconfirmed.len() as u64 >= self.cfg.unconfirmed_entries_max {
            return Err(Refused::Busy);
        }
        let lsn = self.log.last + 1;
        let entry = Entry {
            epoch: lead.epoch,
            lsn,
            payload,
        };
        lead.unconfirmed.push_back(lsn);
        let a = self.log.append(vec![entry], now_ms);
        self.out.push(a);
        self.absolute_lag_check();
        self.pump_all(now_ms);
        Ok(lsn)
    }

    /// Feeds one event at time `now_ms`.
    pub fn handle(&mut self, now_ms: u64, ev: Event) {
        match ev {
            Event::Tick => self.tick(now_ms),
            Event::Session(s) => self.on_session(s),
            Event::Group {
                state,
                version,
                leader_alive,
                leader_mine,
            } => {
                let adopt = leader_mine
                    && matches!(self.role, RoleState::Follower(_))
                    && state
                        .as_ref()
                        .is_some_and(|s| s.leader == Some(self.cfg.id));
                match state {
                    // Our claim was applied but its answer was lost: we are the master.
                    Some(s) if adopt => {
                        self.zk = None;
                        self.promote(now_ms, s, version);
                    }
                    state => self.on_group(now_ms, state, version, leader_alive),
                }
            }
            Event::ZkDone { req, result } => self.on_zk_done(now_ms, req, result),
            Event::Connected { conn } => self.on_connected(conn),
            Event::Accepted { conn } => match &mut self.role {
                RoleState::Master(lead) => {
                    lead.conns.insert(conn, None);
                }
                RoleState::Follower(_) => self.out.push(Action::Close { conn }),
            },
            Event::Closed { conn } => self.on_closed(now_ms, conn),
            Event::Received { conn, msg } => self.on_msg(now_ms, conn, msg),
            Event::StoreSynced { op } => {
                self.log.synced(op);
                match &self.role {
                    RoleState::Master(_) => self.advance_commit(),
                    RoleState::Follower(_) => self.send_ack(),
                }
            }
        }
    }

    fn on_session(&mut self, s: Session) {
        self.session = s;
        if s == Session::Expired {
            self.group = None;
            self.zk = None;
            if matches!(self.role, RoleState::Master(_)) {
                self.step_down();
            }
        }
        if s == Session::Connected {
            self.advance_commit();
        }
    }

    /// The durability for the group size recorded in ZooKeeper.
    fn durability(&self, recorded_replicas: u32) -> Durability {
        let replicas = self.cfg.faults.local_replicas.unwrap_or(recorded_replicas);
        Durability::of(self.cfg.sync, replicas)
    }

    fn eligible(&self, state: &GroupState) -> bool {
        state.isr.contains(&self.cfg.id)
            || (state.epoch == 0 && state.isr.is_empty())
            || self.cfg.faults.elect_outside_isr
            || self.durability(state.replicas).followers == 0
    }

    fn on_group(&mut self, now_ms: u64, state: Option<GroupState>, version: u64, alive: bool) {
        let Some(state) = state else {
            self.group = None;
            if self.session == Session::Connected && self.zk.is_none() {
                let initial = GroupState {
                    epoch: 0,
                    leader: None,
                    isr: Vec::new(),
                    replicas: self.cfg.replicas,
                };
                self.zk_op(ZkPending::Create, ZkOp::Create(initial));
            }
            return;
        };
        self.group = Some((state.clone(), version, alive));
        let me = self.cfg.id;
        let eligible = self.eligible(&state);
        match &mut self.role {
            RoleState::Master(lead) => {
                if state.epoch != lead.epoch || state.leader != Some(me) || !alive {
                    self.step_down();
                    return self.on_group(now_ms, Some(state), version, alive);
                }
                if version > lead.version {
                    // Our own write whose answer was lost (only the master writes the state).
                    lead.version = version;
                    lead.isr = state.isr.clone();
                    lead.pending_add = None;
                    lead.pending_remove = None;
                }
            }
            RoleState::Follower(f) => {
                let leader = state.leader.filter(|l| alive && *l != me);
                if let Some(link) = &f.link {
                    if leader != Some(link.master) || state.epoch != link.epoch {
                        self.out.push(Action::Close { conn: link.conn });
                        f.link = None;
                    }
                }
                // The silence of a new epoch's master counts from when we learn of it.
                f.heard = match (leader, f.heard) {
                    (None, _) => None,
                    (Some(_), Some(h)) if h.0 == state.epoch => Some(h),
                    (Some(_), _) => Some((state.epoch, now_ms)),
                };
                if alive || !eligible || self.session != Session::Connected {
                    f.claim_at_ms = None;
                } else if f.claim_at_ms.is_none() {
                    let spread = u64::from(me % 8) + 1;
                    f.claim_at_ms = Some(now_ms + self.cfg.claim_delay_ms * spread);
                }
                self.tick(now_ms);
            }
        }
    }

    fn zk_op(&mut self, pending: ZkPending, op: ZkOp) {
        self.next_req += 1;
        self.zk = Some((self.next_req, pending));
        self.out.push(Action::Zk {
            req: self.next_req,
            op,
        });
    }

    fn on_zk_done(&mut self, now_ms: u64, req: ZkReq, result: Result<u64, ZkFail>) {
        let Some((r, pending)) = self.zk.take() else {
            return;
        };
        if r != req {
            self.zk = Some((r, pending));
            return;
        }
        match (pending, result) {
            (ZkPending::Claim(state), Ok(version)) => self.promote(now_ms, state, version),
            (ZkPending::Takeover(state, deposed), Ok(version)) => {
                self.promote(now_ms, state, version);
                // The master we replaced has been silent since we last heard it (at least
                // `master_timeout_ms`): its silence counts from then, so that it leaves the
                // in-sync set at the first ISR check instead of holding our lease for another
                // `master_timeout_ms` (removing a member is always safe while the set keeps
                // `followers + 1` members).
                if let (Some((m, heard_ms)), RoleState::Master(lead)) = (deposed, &mut self.role) {
                    if let Some(p) = lead.peers.get_mut(&m) {
                        p.since_ms = p.since_ms.min(heard_ms);
                    }
                    self.manage_isr(now_ms);
                }
            }
            (ZkPending::Set(state), Ok(version)) => {
                if let RoleState::Master(lead) = &mut self.role {
                    lead.version = version;
                    lead.isr = state.isr;
                    lead.pending_add = None;
                    lead.pending_remove = None;
                }
                self.advance_commit();
            }
            (ZkPending::Set(_), Err(ZkFail::Conflict)) => {
                // Only a claim changes the state under a master: we are deposed.
                if matches!(self.role, RoleState::Master(_)) {
                    self.step_down();
                }
            }
            (ZkPending::Set(_), Err(ZkFail::Unknown)) => {
                // Keep the pending change counted; the watch or a retry settles it.
                if let RoleState::Master(lead) = &mut self.role {
                    lead.pending_remove = None;
                }
            }
            _ => {}
        }
    }

    /// Becomes master of `state.epoch` (by a claim, a fast takeover, or a claim whose answer
    /// was lost).
    fn promote(&mut self, now_ms: u64, state: GroupState, version: u64) {
        if let RoleState::Follower(f) = &self.role {
            if let Some(link) = &f.link {
                self.out.push(Action::Close { conn: link.conn });
            }
        }
        let mut peers = BTreeMap::new();
        for m in state.isr.iter().filter(|m| **m != self.cfg.id) {
            peers.insert(*m, Peer::new(now_ms));
        }
        let marker = self.log.last + 1;
        self.role = RoleState::Master(Box::new(Lead {
            epoch: state.epoch,
            version,
            isr: state.isr.clone(),
            durability: self.durability(state.replicas),
            pending_add: None,
            pending_remove: None,
            want_removed: BTreeSet::new(),
            conns: BTreeMap::new(),
            peers,
            commit: 0,
            marker,
            unconfirmed: VecDeque::new(),
        }));
        self.out
            .push(Action::Role(Role::Master { epoch: state.epoch }));
        // Raft's no-op: committing an entry of our epoch commits everything inherited.
        let a = self.log.append(
            vec![Entry {
                epoch: state.epoch,
                lsn: marker,
                payload: Bytes::new(),
            }],
            now_ms,
        );
        self.out.push(a);
    }

    fn step_down(&mut self) {
        if let RoleState::Master(lead) = &self.role {
            for conn in lead.conns.keys() {
                self.out.push(Action::Close { conn: *conn });
            }
        }
        self.zk = None;
        self.role = RoleState::Follower(Follow::default());
        self.out.push(Action::Role(Role::Follower));
    }

    fn tick(&mut self, now_ms: u64) {
        if matches!(self.role, RoleState::Master(_)) {
            self.absolute_lag_check();
            self.manage_isr(now_ms);
            self.pump_all(now_ms);
            return;
        }
        let Some((state, version, alive)) = self.group.clone() else {
            return;
        };
        if self.session != Session::Connected {
            return;
        }
        let me = self.cfg.id;
        let eligible = self.eligible(&state);
        let claim_free = self.zk.is_none();
        let isr_mode = self.durability(state.replicas).followers > 0;
        let RoleState::Follower(f) = &mut self.role else {
            return;
        };
        if !alive {
            if !eligible || !claim_free {
                return;
            }
            match f.claim_at_ms {
                None => {
                    let spread = u64::from(me % 8) + 1;
                    f.claim_at_ms = Some(now_ms + self.cfg.claim_delay_ms * spread);
                    return;
                }
                Some(t) if t > now_ms => return,
                Some(_) => f.claim_at_ms = None,
            }
            let mut isr = if state.isr.contains(&me) {
                state.isr.clone()
            } else if self.cfg.faults.elect_outside_isr {
                let mut v = state.isr.clone();
                v.push(me);
                v.sort_unstable();
                v
            } else {
                vec![me]
            };
            isr.dedup();
            return self.claim(&state, version, isr, None);
        }
        let Some(leader) = state.leader.filter(|l| *l != me) else {
            return;
        };
        let t = self.cfg.master_timeout_ms;
        let silent = f
            .heard
            .is_some_and(|(e, at)| e == state.epoch && now_ms.saturating_sub(at) >= t);
        if t > 0 && silent && claim_free && state.isr.contains(&me) && isr_mode {
            // Fast takeover: we hold every confirmed entry (we are in the in-sync set), and
            // the master's lease ended half a timeout after its last ping we answered.
            if let Some(link) = f.link.take() {
                self.out.push(Action::Close { conn: link.conn });
            }
            let last_heard = f.heard.map_or(now_ms, |(_, at)| at);
            f.heard = Some((state.epoch, now_ms));
            let isr = state.isr.clone();
            return self.claim(&state, version, isr, Some(last_heard));
        }
        if let Some(link) = f.link.as_ref() {
            if now_ms.saturating_sub(link.last_heard_ms) > self.cfg.link_timeout_ms {
                let conn = link.conn;
                f_close(self, conn, now_ms);
                return;
            }
        }
        if f.link.is_none() && now_ms >= f.retry_at_ms {
            self.next_conn += 1;
            let conn = (u64::from(me) << 48)
                | ((self.cfg.incarnation & 0xffff) << 32)
                | (self.next_conn & 0xffff_ffff);
            f.link = Some(Link {
                conn,
                master: leader,
                epoch: state.epoch,
                phase: Phase::Connecting,
                acked: (u64::MAX, u64::MAX),
                last_heard_ms: now_ms,
            });
            self.out.push(Action::Connect { conn, to: leader });
        }
    }

    /// Claims the epoch after `state` (read at `version`) with `isr`: an ordinary claim (the
    /// leader node is gone) or a fast takeover (it is deleted in the same request; `takeover`
    /// holds when we last heard the master).
    fn claim(
        &mut self,
        state: &GroupState,
        version: u64,
        isr: Vec<MemberId>,
        takeover: Option<u64>,
    ) {
        let new = GroupState {
            epoch: state.epoch + 1,
            leader: Some(self.cfg.id),
            isr,
            replicas: state.replicas,
        };
        let (pending, op) = if let Some(heard) = takeover {
            let deposed = state
                .leader
                .filter(|l| *l != self.cfg.id)
                .map(|l| (l, heard));
            (
                ZkPending::Takeover(new.clone(), deposed),
                ZkOp::Takeover {
                    version,
                    state: new,
                },
            )
        } else {
            (
                ZkPending::Claim(new.clone()),
                ZkOp::Claim {
                    version,
                    state: new,
                },
            )
        };
        self.zk_op(pending, op);
    }

    fn on_connected(&mut self, conn: ConnId) {
        let RoleState::Follower(f) = &mut self.role else {
            self.out.push(Action::Close { conn });
            return;
        };
        let Some(link) = f.link.as_mut().filter(|l| l.conn == conn) else {
            self.out.push(Action::Close { conn });
            return;
        };
        link.phase = Phase::AwaitWelcome;
        self.out.push(Action::Send {
            conn,
            msg: Msg::Hello {
                member: self.cfg.id,
                epoch: link.epoch,
                last: self.log.last,
                history: self.log.history.spans().to_vec(),
            },
        });
    }

    fn on_closed(&mut self, now_ms: u64, conn: ConnId) {
        match &mut self.role {
            RoleState::Follower(f) => {
                if f.link.as_ref().is_some_and(|l| l.conn == conn) {
                    f.link = None;
                    f.retry_at_ms = now_ms + self.cfg.reconnect_ms;
                }
            }
            RoleState::Master(lead) => {
                if let Some(Some(m)) = lead.conns.remove(&conn) {
                    if let Some(p) = lead.peers.get_mut(&m).filter(|p| p.conn == Some(conn)) {
                        p.conn = None;
                        p.streaming = false;
                    }
                }
            }
        }
    }

    fn on_msg(&mut self, now_ms: u64, conn: ConnId, msg: Msg) {
        if matches!(self.role, RoleState::Master(_)) {
            return self.on_master_msg(now_ms, conn, msg);
        }
        let RoleState::Follower(f) = &mut self.role else {
            return;
        };
        let Some(link) = f.link.as_mut().filter(|l| l.conn == conn) else {
            self.out.push(Action::Close { conn });
            return;
        };
        link.last_heard_ms = now_ms;
        let epoch_followed = link.epoch;
        if let Msg::Ping { epoch, sent_ms } = msg {
            if epoch != epoch_followed {
                return f_close(self, conn, now_ms);
            }
            if f.heard.is_some_and(|(e, _)| e == epoch) {
                f.heard = Some((epoch, now_ms));
            }
            self.out.push(Action::Send {
                conn,
                msg: Msg::Pong { epoch, sent_ms },
            });
            return;
        }
        if f.heard.is_some_and(|(e, _)| e == epoch_followed) {
            f.heard = Some((epoch_followed, now_ms));
        }
        let Some(link) = f.link.as_mut() else {
            return;
        };
        let ok = match (msg, std::mem::replace(&mut link.phase, Phase::Connecting)) {
            (Msg::Welcome { epoch, start }, Phase::AwaitWelcome)
                // A master older than our own log's newest epoch is deposed: never let it cut.
                if epoch == link.epoch && epoch >= self.log.history.last_epoch() =>
            {
                match start {
                    Start::TruncateAfter(d)
                        if d == self.log.last || (d < self.log.last && self.cfg.log_truncation) =>
                    {
                        if d < self.log.last {
                            let a = self.log.truncate(d);
                            self.out.push(a);
                        }
                        link.phase = Phase::Streaming;
                        true
                    }
                    Start::TruncateAfter(_) => false,
                    Start::Snapshot if self.cfg.faults.wipe_before_copy => {
                        let a = self.log.truncate(0);
                        self.out.push(a);
                        let a = self.log.op(0, StoreWrite::StageBegin);
                        self.out.push(a);
                        link.phase = Phase::WipedCopy;
                        true
                    }
                    Start::Snapshot => {
                        let a = self.log.op(self.log.last, StoreWrite::StageBegin);
                        self.out.push(a);
                        link.phase = Phase::Staging;
                        true
                    }
                }
            }
            (Msg::SnapshotChunk { data }, phase @ (Phase::Staging | Phase::WipedCopy)) => {
                let a = self.log.op(self.log.last, StoreWrite::Stage(data));
                self.out.push(a);
                link.phase = phase;
                true
            }
            (
                Msg::SnapshotEnd {
                    last,
                    history,
                    consistent_at,
                },
                Phase::Staging | Phase::WipedCopy,
            ) => {
                // The history must describe a log of exactly `last` entries.
                match EpochHistory::from_spans(history) {
                    Some(h)
                        if (last == 0) == h.spans().is_empty()
                            && h.spans().last().is_none_or(|s| s.1 <= last)
                            && consistent_at >= last =>
                    {
                        if consistent_at == last {
                            let a = self.log.install(last, h);
                            self.out.push(a);
                            link.phase = Phase::Streaming;
                        } else {
                            link.phase = Phase::Replaying {
                                staged: Position {
                                    epoch: h.epoch_at(last),
                                    lsn: last,
                                },
                                until: consistent_at,
                                history: h,
                            };
                            self.out.push(Action::Send {
                                conn: link.conn,
                                msg: Msg::Progress {
                                    epoch: link.epoch,
                                    staged: last,
                                },
                            });
                        }
                        true
                    }
                    _ => false,
                }
            }
            (
                Msg::Entries {
                    epoch,
                    prev,
                    entries,
                },
                Phase::Replaying {
                    staged,
                    until,
                    mut history,
                },
            ) => {
                let matches = epoch == link.epoch
                    && prev == staged
                    && entries
                        .iter()
                        .enumerate()
                        .all(|(i, e)| e.lsn == prev.lsn + 1 + i as u64 && e.epoch <= epoch)
                    && entries
                        .first()
                        .is_none_or(|e| e.epoch >= history.last_epoch());
                if matches {
                    let mut staged = staged;
                    if let Some(e) = entries.last() {
                        staged = Position {
                            epoch: e.epoch,
                            lsn: e.lsn,
                        };
                    }
                    for e in &entries {
                        history.append(e.epoch, e.lsn);
                    }
                    if !entries.is_empty() {
                        let a = self.log.op(self.log.last, StoreWrite::StageAppend(entries));
                        self.out.push(a);
                    }
                    if staged.lsn >= until {
                        let a = self.log.install(staged.lsn, history);
                        self.out.push(a);
                        link.phase = Phase::Streaming;
                    } else {
                        if staged != prev {
                            self.out.push(Action::Send {
                                conn: link.conn,
                                msg: Msg::Progress {
                                    epoch: link.epoch,
                                    staged: staged.lsn,
                                },
                            });
                        }
                        link.phase = Phase::Replaying {
                            staged,
                            until,
                            history,
                        };
                    }
                }
                matches
            }
            (
                Msg::Entries {
                    epoch,
                    prev,
                    entries,
                },
                Phase::Streaming,
            ) => {
                let matches = epoch == link.epoch
                    && prev == self.log.position(self.log.last)
                    && entries
                        .iter()
                        .enumerate()
                        .all(|(i, e)| e.lsn == prev.lsn + 1 + i as u64 && e.epoch <= epoch);
                if matches && !entries.is_empty() {
                    let a = self.log.append(entries, now_ms);
                    self.out.push(a);
                }
                link.phase = Phase::Streaming;
                matches
            }
            _ => false,
        };
        if ok {
            self.send_ack();
        } else {
            f_close(self, conn, now_ms);
        }
    }

    fn send_ack(&mut self) {
        let RoleState::Follower(f) = &mut self.role else {
            return;
        };
        let Some(link) = f.link.as_mut() else { return };
        if !matches!(link.phase, Phase::Streaming) {
            return;
        }
        let now = (self.log.last, self.log.durable.min(self.log.last));
        if now != link.acked {
            link.acked = now;
            self.out.push(Action::Send {
                conn: link.conn,
                msg: Msg::Ack {
                    epoch: link.epoch,
                    received: now.0,
                    durable: now.1,
                },
            });
        }
    }

    fn on_master_msg(&mut self, now_ms: u64, conn: ConnId, msg: Msg) {
        let RoleState::Master(lead) = &mut self.role else {
            return;
        };
        let faults = self.cfg.faults;
        match msg {
            Msg::Hello {
                member,
                epoch,
                last,
                history,
            } => {
                let Some(history) = EpochHistory::from_spans(history) else {
                    return self.master_close(conn);
                };
                if epoch != lead.epoch
                    || member == self.cfg.id
                    || history.last_epoch() > lead.epoch
                    || !lead.conns.contains_key(&conn)
                {
                    return self.master_close(conn);
                }
                lead.conns.insert(conn, Some(member));
                let peer = lead
                    .peers
                    .entry(member)
                    .or_insert_with(|| Peer::new(now_ms));
                // One follower per member: a reconnect replaces a half-open old connection.
                if let Some(old) = peer.conn.filter(|c| *c != conn) {
                    lead.conns.remove(&old);
                    self.out.push(Action::Close { conn: old });
                }
                peer.conn = Some(conn);
                peer.streaming = false;
                peer.mark = (self.log.last, now_ms);
                // Nothing it held before this agreement counts: acks on this connection will.
                let (received, durable) = if faults.stale_acks {
                    (last, last)
                } else {
                    (0, 0)
                };
                peer.received = received;
                peer.durable = durable;
                peer.staged = 0;
                let d = self.log.history.divergence(self.log.last, &history, last);
                // A store that cannot cut its log (a message store) continues only from its
                // own last entry; a divergent suffix is replaced by a full copy.
                let continues = d == last || self.cfg.log_truncation;
                if continues && d + 1 >= self.log.tail_start() {
                    peer.sent = d;
                    peer.streaming = true;
                    self.out.push(Action::Send {
                        conn,
                        msg: Msg::Welcome {
                            epoch: lead.epoch,
                            start: Start::TruncateAfter(d),
                        },
                    });
                    self.pump_all(now_ms);
                    return;
                }
                let in_isr = lead.isr.contains(&member) || lead.pending_add == Some(member);
                if in_isr && !faults.wipe_before_copy {
                    // A member mid-copy must not be in the ISR: leave it first, copy after.
                    lead.want_removed.insert(member);
                    peer.conn = None;
                    lead.conns.remove(&conn);
                    self.out.push(Action::Close { conn });
                    self.manage_isr(now_ms);
                    return;
                }
                peer.sent = self.log.last;
                peer.streaming = true;
                self.out.push(Action::Send {
                    conn,
                    msg: Msg::Welcome {
                        epoch: lead.epoch,
                        start: Start::Snapshot,
                    },
                });
                self.out.push(Action::SendSnapshot {
                    conn,
                    last: self.log.last,
                });
                self.pump_all(now_ms);
            }
            Msg::Ack {
                epoch,
                received,
                durable,
            } => {
                let Some(Some(member)) = lead.conns.get(&conn).copied() else {
                    return;
                };
                let Some(peer) = lead.peers.get_mut(&member) else {
                    return;
                };
                if peer.conn != Some(conn) {
                    return;
                }
                let valid = epoch == lead.epoch && received <= peer.sent && durable <= received;
                if !valid && !faults.stale_acks {
                    return self.master_close(conn);
                }
                peer.received = peer.received.max(received);
                peer.durable = peer.durable.max(durable);
                let acked = if lead.durability.disk {
                    peer.durable
                } else {
                    peer.received
                };
                if acked >= self.log.last {
                    peer.caught_up_ms = now_ms;
                } else if let Some(t) = self.log.tail_get(acked + 1) {
                    peer.caught_up_ms = peer.caught_up_ms.max(t.appended_ms);
                }
                // The first entry it lacks may have left the in-memory tail already (a tail
                // shorter than the unconfirmed window, or the empty tail of a restarted
                // master): then the mark still says how recent its copy is.
                if acked >= peer.mark.0 && !faults.tail_only_catch_up {
                    peer.caught_up_ms = peer.caught_up_ms.max(peer.mark.1);
                    peer.mark = (self.log.last, now_ms);
                }
                self.advance_commit();
                self.pump_all(now_ms);
            }
            Msg::Progress { epoch, staged } => {
                let Some(Some(member)) = lead.conns.get(&conn).copied() else {
                    return;
                };
                let Some(peer) = lead.peers.get_mut(&member).filter(|p| p.conn == Some(conn))
                else {
                    return;
                };
                if epoch != lead.epoch || staged > peer.sent {
                    return self.master_close(conn);
                }
                if !faults.no_progress {
                    peer.staged = peer.staged.max(staged);
                }
                self.pump_all(now_ms);
            }
            Msg::Pong { epoch, sent_ms } => {
                let Some(Some(member)) = lead.conns.get(&conn).copied() else {
                    return;
                };
                let Some(peer) = lead.peers.get_mut(&member).filter(|p| p.conn == Some(conn))
                else {
                    return;
                };
                if epoch != lead.epoch || sent_ms > now_ms {
                    return self.master_close(conn);
                }
                peer.pong_sent_ms = Some(peer.pong_sent_ms.map_or(sent_ms, |p| p.max(sent_ms)));
            }
            _ => self.master_close(conn),
        }
    }

    fn master_close(&mut self, conn: ConnId) {
        if let RoleState::Master(lead) = &mut self.role {
            if let Some(Some(m)) = lead.conns.remove(&conn) {
                if let Some(p) = lead.peers.get_mut(&m).filter(|p| p.conn == Some(conn)) {
                    p.conn = None;
                    p.streaming = false;
                }
            }
        }
        self.out.push(Action::Close { conn });
    }

    /// The acked lsn of `m` that counts for the sync mode.
    fn peer_acked(lead: &Lead, m: MemberId) -> u64 {
        lead.peers.get(&m).map_or(0, |p| {
            if lead.durability.disk {
                p.durable
            } else {
                p.received
            }
        })
    }

    fn advance_commit(&mut self) {
        if self.session != Session::Connected {
            // Suspended: the ZooKeeper connection is down, confirm nothing until it returns.
            return;
        }
        let RoleState::Master(lead) = &mut self.role else {
            return;
        };
        let own = if lead.durability.disk {
            self.log.durable
        } else {
            self.log.last
        };
        let mut c = own;
        if lead.durability.followers > 0 {
            if lead.isr.len() < lead.min_isr() {
                return;
            }
            let me = self.cfg.id;
            for m in lead.isr.iter().chain(lead.pending_add.iter()) {
                if *m != me {
                    c = c.min(Self::peer_acked(lead, *m));
                }
            }
        }
        lead.commit = lead.commit.max(c);
        while let Some(&lsn) = lead.unconfirmed.front() {
            if lsn > lead.commit {
                break;
            }
            lead.unconfirmed.pop_front();
            self.out.push(Action::Confirm { lsn });
        }
    }

    fn manage_isr(&mut self, now_ms: u64) {
        if self.session != Session::Connected || self.zk.is_some() {
            return;
        }
        let RoleState::Master(lead) = &mut self.role else {
            return;
        };
        if lead.durability.followers == 0 {
            return;
        }
        let me = self.cfg.id;
        let last = self.log.last;
        let lag_max = self.cfg.lag_max_ms;
        let master_timeout = self.cfg.master_timeout_ms;
        let mut change: Option<Vec<MemberId>> = None;
        if let Some(m) = lead.pending_add {
            // An add whose answer was lost: it may have been applied, so the member's acks
            // stay required; write it again (a conflict then means we were deposed).
            let mut isr = lead.isr.clone();
            if !isr.contains(&m) {
                isr.push(m);
                isr.sort_unstable();
            }
            change = Some(isr);
        }
        let isr_now: Vec<MemberId> = if change.is_none() {
            lead.isr.clone()
        } else {
            Vec::new()
        };
        for m in isr_now.into_iter().filter(|m| *m != me) {
            let acked = Self::peer_acked(lead, m);
            let caught_up = lead.peers.get(&m).map_or(0, |p| p.caught_up_ms);
            let lagging = acked < last && now_ms.saturating_sub(caught_up) > lag_max;
            // Fast takeover: a member that answers no ping holds our lease (we cannot tell a
            // dead member from one that may take over), so it leaves the in-sync set.
            let unresponsive = master_timeout > 0
                && lead.peers.get(&m).is_some_and(|p| {
                    now_ms.saturating_sub(p.pong_sent_ms.unwrap_or(p.since_ms)) > master_timeout
                });
            let removable = lead.want_removed.contains(&m)
                || ((lagging || unresponsive) && lead.isr.len() > lead.min_isr());
            if removable {
                change = Some(lead.isr.iter().copied().filter(|x| *x != m).collect());
                lead.pending_remove = Some(m);
                lead.want_removed.remove(&m);
                break;
            }
        }
        if change.is_none() {
            let commit = lead.commit;
            let candidate = lead.peers.iter().find(|(m, p)| {
                !lead.isr.contains(m)
                    && p.conn.is_some()
                    && p.streaming
                    && Self::peer_acked(lead, **m) >= commit.max(lead.marker)
            });
            if let Some((m, _)) = candidate {
                let mut isr = lead.isr.clone();
                isr.push(*m);
                isr.sort_unstable();
                lead.pending_add = Some(*m);
                change = Some(isr);
            }
        }
        if let Some(isr) = change {
            let state = GroupState {
                epoch: lead.epoch,
                leader: Some(me),
                isr,
                replicas: self
                    .group
                    .as_ref()
                    .map_or(self.cfg.replicas, |g| g.0.replicas),
            };
            let version = lead.version;
            self.zk_op(ZkPending::Set(state.clone()), ZkOp::Set { version, state });
        }
    }

    fn absolute_lag_check(&mut self) {
        let Some(gap) = self.cfg.faults.absolute_lag_entries else {
            return;
        };
        let RoleState::Master(lead) = &mut self.role else {
            return;
        };
        let last = self.log.last;
        let behind: Vec<ConnId> = lead
            .peers
            .values()
            .filter(|p| p.conn.is_some() && last.saturating_sub(p.received) > gap)
            .filter_map(|p| p.conn)
            .collect();
        for conn in behind {
            self.master_close(conn);
        }
    }

    fn pump_all(&mut self, now_ms: u64) {
        let RoleState::Master(lead) = &mut self.role else {
            return;
        };
        let mut close = Vec::new();
        for peer in lead.peers.values_mut() {
            let Some(conn) = peer.conn.filter(|_| peer.streaming) else {
                continue;
            };
            while peer.sent < self.log.last {
                let from = peer.sent + 1;
                if from < self.log.tail_start() {
                    // Fell out of the tail: it starts over (and gets a full copy).
                    close.push(conn);
                    break;
                }
                let base = peer
                    .received
                    .max(peer.staged)
                    .max(self.log.tail_start() - 1);
                let inflight = self
                    .log
                    .cum_bytes(peer.sent)
                    .saturating_sub(self.log.cum_bytes(base));
                if inflight >= self.cfg.inflight_bytes_max {
                    break;
                }
                let to = self
                    .log
                    .last
                    .min(from + self.cfg.batch_entries_max as u64 - 1);
                let entries: Vec<Entry> = (from..=to)
                    .filter_map(|l| self.log.tail_get(l).map(|t| t.entry.clone()))
                    .collect();
                self.out.push(Action::Send {
                    conn,
                    msg: Msg::Entries {
                        epoch: lead.epoch,
                        prev: self.log.position(peer.sent),
                        entries,
                    },
                });
                peer.sent = to;
                peer.last_sent_ms = now_ms;
            }
            let ping_every = self.cfg.master_timeout_ms / 5;
            if ping_every > 0 && now_ms.saturating_sub(peer.last_ping_ms) >= ping_every {
                peer.last_ping_ms = now_ms;
                peer.last_sent_ms = now_ms;
                self.out.push(Action::Send {
                    conn,
                    msg: Msg::Ping {
                        epoch: lead.epoch,
                        sent_ms: now_ms,
                    },
                });
            }
            if now_ms.saturating_sub(peer.last_sent_ms) >= self.cfg.heartbeat_ms {
                peer.last_sent_ms = now_ms;
                self.out.push(Action::Send {
                    conn,
                    msg: Msg::Entries {
                        epoch: lead.epoch,
                        prev: self.log.position(peer.sent),
                        entries: Vec::new(),
                    },
                });
            }
        }
        for conn in close {
            self.master_close(conn);
        }
    }
}

fn f_close(r: &mut Replica, conn: ConnId, now_ms: u64) {
    if let RoleState::Follower(f) = &mut r.role {
        if f.link.as_ref().is_some_and(|l| l.conn == conn) {
            f.link = None;
            f.retry_at_ms = now_ms + r.cfg.reconnect_ms;
        }
    }
    r.out.push(Action::Close { conn });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Faults;
    use crate::SyncMode;

    fn entry(epoch: u64, lsn: u64) -> Entry {
        Entry {
            epoch,
            lsn,
            payload: Bytes::from_static(b"x"),
        }
    }

    /// A log of `spans` (epoch, first lsn) ending at `last`.
    fn recovered(spans: &[(u64, u64)], last: u64) -> Recovered {
        let history = EpochHistory::from_spans(spans.to_vec()).unwrap();
        let tail = (1..=last).map(|l| entry(history.epoch_at(l), l)).collect();
        Recovered {
            history,
            last,
            tail,
        }
    }

    /// Member 1, master of epoch 3 over `rec`, with ISR `isr`; returns it and its actions.
    fn master(rec: Recovered, isr: Vec<MemberId>, tail_max: usize) -> (Replica, Vec<Action>) {
        master_with(rec, isr, tail_max, Faults::default())
    }

    fn master_with(
        rec: Recovered,
        isr: Vec<MemberId>,
        tail_max: usize,
        faults: Faults,
    ) -> (Replica, Vec<Action>) {
        let mut cfg = Config::new(1, 1, 3, SyncMode::QuorumDisk);
        cfg.tail_entries_max = tail_max;
        cfg.faults = faults;
        // These tests model a log store (one that can cut its suffix); see
        // `a_message_store_gets_a_full_copy_instead_of_a_cut` for the running broker's stores.
        cfg.log_truncation = true;
        master_cfg(rec, isr, cfg)
    }

    fn master_cfg(rec: Recovered, isr: Vec<MemberId>, cfg: Config) -> (Replica, Vec<Action>) {
        let mut r = Replica::new(cfg, rec, 0);
        r.handle(0, Event::Session(Session::Connected));
        let state = GroupState {
            epoch: 2,
            leader: Some(2),
            isr,
            replicas: 3,
        };
        r.handle(
            0,
            Event::Group {
                state: Some(state),
                version: 7,
                leader_alive: false,
                leader_mine: false,
            },
        );
        r.handle(1_000, Event::Tick);
        let mut out = Vec::new();
        r.poll_actions(&mut out);
        let req = out
            .iter()
            .find_map(|a| match a {
                Action::Zk {
                    req,
                    op: ZkOp::Claim { version: 7, .. },
                } => Some(*req),
                _ => None,
            })
            .expect("an ISR member claims the empty mastership");
        r.handle(1_000, Event::ZkDone { req, result: Ok(8) });
        out.clear();
        r.poll_actions(&mut out);
        assert_eq!(r.role(), Role::Master { epoch: 3 });
        (r, out)
    }

    fn hello(r: &mut Replica, conn: ConnId, member: MemberId, spans: &[(u64, u64)], last: u64) {
        r.handle(1_000, Event::Accepted { conn });
        r.handle(
            1_000,
            Event::Received {
                conn,
                msg: Msg::Hello {
                    member,
                    epoch: 3,
                    last,
                    history: spans.to_vec(),
                },
            },
        );
    }

    #[test]
    fn a_message_store_gets_a_full_copy_instead_of_a_cut() {
        // As below, but the stores hold state, not entries: the suffix cannot be cut.
        let mut cfg = Config::new(1, 1, 3, SyncMode::QuorumDisk);
        cfg.tail_entries_max = 100;
        assert!(
            !cfg.log_truncation,
            "the default is the running broker's stores"
        );
        let (mut r, _) = master_cfg(recovered(&[(1, 1)], 10), vec![1, 3], cfg);
        hello(&mut r, 9, 2, &[(1, 1), (2, 8)], 12);
        let mut out = Vec::new();
        r.poll_actions(&mut out);
        assert!(
            matches!(
                out.first(),
                Some(Action::Send {
                    msg: Msg::Welcome {
                        epoch: 3,
                        start: Start::Snapshot
                    },
                    ..
                })
            ),
            "{out:?}"
        );
        assert!(out
            .iter()
            .any(|a| matches!(a, Action::SendSnapshot { conn: 9, .. })));
        // A member whose log is a prefix of ours still continues without a copy.
        hello(&mut r, 10, 3, &[(1, 1)], 6);
        out.clear();
        r.poll_actions(&mut out);
        assert!(
            out.iter().any(|a| matches!(
                a,
                Action::Send {
                    conn: 10,
                    msg: Msg::Welcome {
                        start: Start::TruncateAfter(6),
                        ..
                    },
                }
            )),
            "{out:?}"
        );
        assert!(!out
            .iter()
            .any(|a| matches!(a, Action::SendSnapshot { conn: 10, .. })));
    }

    #[test]
    fn a_deposed_masters_suffix_is_cut_at_the_divergence_point_without_a_full_copy() {
        // Ours: epoch 1 up to 10, then our marker of epoch 3 at 11. Theirs: epoch 1 up to 7,
        // then 5 entries of epoch 2 that nobody else has.
        let (mut r, _) = master(recovered(&[(1, 1)], 10), vec![1, 2, 3], 100);
        hello(&mut r, 9, 2, &[(1, 1), (2, 8)], 12);
        let mut out = Vec::new();
        r.poll_actions(&mut out);
        assert!(matches!(
            out.first(),
            Some(Action::Send {
                msg: Msg::Welcome {
                    epoch: 3,
                    start: Start::TruncateAfter(7)
                },
                ..
            })
        ));
        assert!(!out.iter().any(|a| matches!(a, Action::SendSnapshot { .. })));
        // The next frame continues right after the divergence point.
        assert!(out.iter().any(|a| matches!(
            a,
            Action::Send {
                msg: Msg::Entries {
                    prev: Position { epoch: 1, lsn: 7 },
                    ..
                },
                ..
            }
        )));
    }

    #[test]
    fn a_hello_position_is_never_counted_as_an_ack() {
        hello_then_acks(Faults::default());
    }

    #[test]
    #[should_panic(expected = "confirmed before an ack covered it")]
    fn the_stale_acks_knob_counts_the_hello_position() {
        hello_then_acks(Faults {
            stale_acks: true,
            ..Faults::default()
        });
    }

    fn hello_then_acks(faults: Faults) {
        let (mut r, out) = master_with(recovered(&[(1, 1)], 10), vec![1, 2], 100, faults);
        let marker_op = out
            .iter()
            .find_map(|a| match a {
                Action::Store { op, .. } => Some(*op),
                _ => None,
            })
            .unwrap();
        r.handle(1_000, Event::StoreSynced { op: marker_op });
        let lsn = r.submit(1_000, Bytes::from_static(b"w")).unwrap();
        r.handle(1_000, Event::StoreSynced { op: marker_op + 1 });
        // Member 2 claims to hold far more than we have, in an epoch we never wrote.
        hello(&mut r, 9, 2, &[(1, 1), (2, 11)], 40);
        let mut out = Vec::new();
        r.poll_actions(&mut out);
        assert!(!out.iter().any(|a| matches!(a, Action::Confirm { .. })));
        // Only an ack after the welcome, for our epoch, confirms.
        let ack = |received, durable| Event::Received {
            conn: 9,
            msg: Msg::Ack {
                epoch: 3,
                received,
                durable,
            },
        };
        r.handle(1_001, ack(10, 10));
        r.poll_actions(&mut out);
        assert!(
            !out.iter().any(|a| matches!(a, Action::Confirm { .. })),
            "confirmed before an ack covered it"
        );
        r.handle(1_002, ack(lsn, lsn));
        out.clear();
        r.poll_actions(&mut out);
        assert!(out
            .iter()
            .any(|a| matches!(a, Action::Confirm { lsn: l } if *l == lsn)));
    }

    #[test]
    fn an_isr_member_needing_a_full_copy_leaves_the_isr_before_it_is_sent() {
        // A tail of 4 entries: a member at lsn 2 needs a full copy.
        let (mut r, _) = master(recovered(&[(1, 1)], 10), vec![1, 2, 3], 4);
        hello(&mut r, 9, 2, &[(1, 1)], 2);
        let mut out = Vec::new();
        r.poll_actions(&mut out);
        assert!(!out.iter().any(|a| matches!(a, Action::SendSnapshot { .. })));
        assert!(out.iter().any(|a| matches!(a, Action::Close { conn: 9 })));
        let req = out
            .iter()
            .find_map(|a| match a {
                Action::Zk {
                    req,
                    op: ZkOp::Set { version: 8, state },
                } if state.isr == vec![1, 3] => Some(*req),
                _ => None,
            })
            .expect("the member is removed from the ISR in ZooKeeper first");
        r.handle(1_010, Event::ZkDone { req, result: Ok(9) });
        assert_eq!(r.isr(), Some(&[1, 3][..]));
        hello(&mut r, 10, 2, &[(1, 1)], 2);
        out.clear();
        r.poll_actions(&mut out);
        assert!(out
            .iter()
            .any(|a| matches!(a, Action::SendSnapshot { conn: 10, last: 11 })));
    }

    fn pong(r: &mut Replica, now: u64, conn: ConnId, sent_ms: u64) {
        r.handle(
            now,
            Event::Received {
                conn,
                msg: Msg::Pong { epoch: 3, sent_ms },
            },
        );
    }

    #[test]
    fn a_master_serves_only_while_every_isr_follower_answered_a_recent_ping() {
        // master_timeout_ms 500: a ping answered keeps the lease for 250 ms after it was sent.
        let (mut r, _) = master(recovered(&[(1, 1)], 10), vec![1, 2, 3], 100);
        hello(&mut r, 9, 2, &[(1, 1)], 10);
        hello(&mut r, 10, 3, &[(1, 1)], 10);
        let mut out = Vec::new();
        r.handle(1_100, Event::Tick);
        r.poll_actions(&mut out);
        let pings: Vec<(ConnId, u64)> = out
            .iter()
            .filter_map(|a| match a {
                Action::Send {
                    conn,
                    msg: Msg::Ping { epoch: 3, sent_ms },
                } => Some((*conn, *sent_ms)),
                _ => None,
            })
            .collect();
        assert!(pings.contains(&(9, 1_100)) && pings.contains(&(10, 1_100)));
        assert!(
            !r.serving(1_100),
            "no answer yet: a follower may be taking over"
        );
        pong(&mut r, 1_105, 9, 1_100);
        assert!(!r.serving(1_105), "member 3 has not answered");
        pong(&mut r, 1_106, 10, 1_100);
        assert!(r.serving(1_106));
        assert!(r.serving(1_349));
        assert!(
            !r.serving(1_350),
            "the lease ends half a timeout after the ping was sent"
        );
        // A pong for another epoch is refused (the connection is closed), never counted.
        r.handle(
            1_351,
            Event::Received {
                conn: 9,
                msg: Msg::Pong {
                    epoch: 2,
                    sent_ms: 1_351,
                },
            },
        );
        out.clear();
        r.poll_actions(&mut out);
        assert!(out.iter().any(|a| matches!(a, Action::Close { conn: 9 })));
        pong(&mut r, 1_352, 10, 1_300);
        assert!(!r.serving(1_352));
    }

    #[test]
    fn an_unanswering_isr_member_leaves_the_isr_so_that_the_master_serves_again() {
        let (mut r, _) = master(recovered(&[(1, 1)], 10), vec![1, 2, 3], 100);
        hello(&mut r, 9, 2, &[(1, 1)], 10);
        hello(&mut r, 10, 3, &[(1, 1)], 10);
        let mut out = Vec::new();
        r.handle(1_100, Event::Tick);
        pong(&mut r, 1_101, 9, 1_100);
        // Member 3 never answers; after master_timeout_ms it is removed from the ISR.
        r.handle(1_400, Event::Tick);
        r.poll_actions(&mut out);
        assert!(!out.iter().any(|a| matches!(a, Action::Zk { .. })));
        r.handle(1_501, Event::Tick);
        out.clear();
        r.poll_actions(&mut out);
        let req = out
            .iter()
            .find_map(|a| match a {
                Action::Zk {
                    req,
                    op: ZkOp::Set { state, .. },
                } if state.isr == vec![1, 2] => Some(*req),
                _ => None,
            })
            .expect("the silent member leaves the ISR");
        assert!(
            !r.serving(1_502),
            "still in the ISR until ZooKeeper says otherwise"
        );
        r.handle(1_505, Event::ZkDone { req, result: Ok(9) });
        // The ping sent at 1,501 (every 100 ms) is answered.
        let sent = 1_501;
        pong(&mut r, 1_506, 9, sent);
        assert!(r.serving(1_506));
    }

    /// A follower (member 2) of master 1 in epoch 3, ISR `isr`, at time 0.
    fn follower(isr: Vec<MemberId>) -> Replica {
        let cfg = Config::new(2, 1, 3, SyncMode::QuorumDisk);
        let mut r = Replica::new(cfg, recovered(&[(1, 1)], 10), 0);
        r.handle(0, Event::Session(Session::Connected));
        r.handle(
            0,
            Event::Group {
                state: Some(GroupState {
                    epoch: 3,
                    leader: Some(1),
                    isr,
                    replicas: 3,
                }),
                version: 7,
                leader_alive: true,
                leader_mine: false,
            },
        );
        r
    }

    fn takeover_req(r: &mut Replica) -> Option<(ZkReq, GroupState)> {
        let mut out = Vec::new();
        r.poll_actions(&mut out);
        out.into_iter().find_map(|a| match a {
            Action::Zk {
                req,
                op: ZkOp::Takeover { version: 7, state },
            } => Some((req, state)),
            _ => None,
        })
    }

    #[test]
    fn an_isr_follower_takes_over_after_a_master_timeout_of_silence() {
        let mut r = follower(vec![1, 2, 3]);
        let mut out = Vec::new();
        r.poll_actions(&mut out);
        assert!(!out.iter().any(|a| matches!(a, Action::Zk { .. })));
        let conn = out
            .iter()
            .find_map(|a| match a {
                Action::Connect { conn, to: 1 } => Some(*conn),
                _ => None,
            })
            .expect("it follows the master");
        // Connected, welcomed, pinged at 100: silence counts from the last frame.
        r.handle(2, Event::Connected { conn });
        let welcome = Msg::Welcome {
            epoch: 3,
            start: Start::TruncateAfter(10),
        };
        r.handle(3, Event::Received { conn, msg: welcome });
        let ping = Msg::Ping {
            epoch: 3,
            sent_ms: 99,
        };
        r.handle(100, Event::Received { conn, msg: ping });
        out.clear();
        r.poll_actions(&mut out);
        assert!(out.iter().any(|a| matches!(
            a,
            Action::Send {
                msg: Msg::Pong {
                    epoch: 3,
                    sent_ms: 99
                },
                ..
            }
        )));
        r.handle(599, Event::Tick);
        assert!(takeover_req(&mut r).is_none(), "not yet: 499 ms of silence");
        r.handle(600, Event::Tick);
        let (req, state) = takeover_req(&mut r).expect("a takeover after 500 ms of silence");
        assert_eq!(state.epoch, 4);
        assert_eq!(state.leader, Some(2));
        assert_eq!(state.isr, vec![1, 2, 3], "the ISR is kept");
        r.handle(603, Event::ZkDone { req, result: Ok(8) });
        assert_eq!(r.role(), Role::Master { epoch: 4 });
        // The master it replaced has been silent since 100: it leaves the in-sync set at
        // once, instead of holding the new master's lease for another master timeout.
        out.clear();
        r.poll_actions(&mut out);
        let isr = out.iter().find_map(|a| match a {
            Action::Zk {
                op: ZkOp::Set { state, .. },
                ..
            } => Some(state.isr.clone()),
            _ => None,
        });
        assert_eq!(isr, Some(vec![2, 3]), "{out:?}");
    }

    #[test]
    fn a_follower_outside_the_isr_never_takes_over() {
        let mut r = follower(vec![1, 3]);
        for t in (0..5_000).step_by(50) {
            r.handle(t, Event::Tick);
            assert!(takeover_req(&mut r).is_none());
        }
    }
}
