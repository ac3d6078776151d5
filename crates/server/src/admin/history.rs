//! This broker's failover history — how often and why it became master, lost mastership and
//! was suspended — and the small file that keeps it across restarts
//! (`<data_dir>/ha-history.json`; see [`path_for`]).
//!
//! The serve loop records every transition into a [`Failover`] held in the admin
//! [`Status`](super::Status); [`keep`] writes it to the [`HistoryFile`] whenever it changed, and
//! [`HistoryFile::start`] reads it back when the process starts. The history is for operators,
//! not for correctness: a file that cannot be read is reported at WARN and ignored, and a write
//! that fails is reported and never stops the broker.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{unix_ms, Status};
use crate::config::Config;

/// Longest `reason` kept, in bytes; a longer one is cut at a character boundary. Reasons are
/// built by the HA modes from error texts, so they are bounded here rather than trusted, and
/// this bound is what keeps the history file small.
pub const REASON_BYTES_MAX: usize = 1024;

/// How many events (became master, lost mastership, suspension) the recent history keeps,
/// newest kept and oldest dropped; the counters count all of them. 20 is a few weeks of a
/// flapping cluster's story and keeps the file small (see [`FILE_BYTES_MAX`]).
pub const EVENTS_MAX: usize = 20;

/// Largest history file read, in bytes. One written by [`HistoryFile::save`] holds at most
/// [`EVENTS_MAX`] + 2 reasons of at most [`REASON_BYTES_MAX`] (at most 6 KiB each in JSON,
/// were every byte a control character escaped as `\u00XX`: 132 KiB) and a few numbers, so
/// anything bigger was not written by us.
pub const FILE_BYTES_MAX: u64 = 256 * 1024;

/// The file format's version; a file with another one is ignored (and replaced at the next
/// change), never misread.
const FILE_VERSION: u32 = 1;

/// Longest identity in a shared directory's file name ([`path_for`]).
const FILE_ID_CHARS_MAX: usize = 100;

/// Why the history file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// Reading the file (or its metadata) failed.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Writing, syncing or renaming the file (or syncing its directory) failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is larger than [`FILE_BYTES_MAX`].
    #[error("{path} is {bytes} bytes, more than the {FILE_BYTES_MAX} a history file can be")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        bytes: u64,
    },
    /// The file is not the JSON document this module writes.
    #[error("{path} is not a failover history: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        source: serde_json::Error,
    },
    /// The file is of a format version this build does not know.
    #[error("{path} is of format version {version}; this build reads version {FILE_VERSION}")]
    Version {
        /// The file.
        path: PathBuf,
        /// The version it says it is.
        version: u32,
    },
    /// The file parses but contradicts itself (a count below what it records, a suspension
    /// that ends before it starts, an overlong reason).
    #[error("{path} is inconsistent: {what}")]
    Inconsistent {
        /// The file.
        path: PathBuf,
        /// Which rule it breaks.
        what: &'static str,
    },
}

/// This broker's history as an HA member: how often and why it became master, lost it, and
/// was suspended. Kept by the serve loop, which sees every transition, and carried across
/// restarts by the [`HistoryFile`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Failover {
    /// When this history began: the start of the earliest process whose history it holds
    /// (from the file), or this process's start; `None` only in tests.
    pub since: Option<SystemTime>,
    /// When this process started: anything recorded before it comes from an earlier run.
    /// Not kept in the file.
    pub process_started: Option<SystemTime>,
    /// How many times this broker became master (started serving clients).
    pub masterships: u64,
    /// The last time it did.
    pub last_became_master: Option<BecameMaster>,
    /// How many times it lost mastership (stepped down, lost its lock, store failed).
    pub losses: u64,
    /// The last time it lost mastership.
    pub last_lost: Option<LostMastership>,
    /// How many times, as master, it was suspended (still master, but confirming and
    /// dispatching nothing while its HA coordination was unreachable).
    pub suspensions: u64,
    /// The time spent in suspensions that ended with a known end (see
    /// [`Failover::suspended_total`] for the total with an ongoing one).
    pub suspended_ended: Duration,
    /// The last suspension, ongoing or over.
    pub last_suspension: Option<Suspension>,
    /// The most recent events, oldest first, at most [`EVENTS_MAX`] of them.
    pub events: VecDeque<Event>,
}

/// One event of the recent history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// It became master.
    BecameMaster(BecameMaster),
    /// It lost mastership.
    LostMastership(LostMastership),
    /// It was suspended (the suspension's end is kept up to date while it goes on).
    Suspension(Suspension),
}

impl Event {
    /// When it happened (a suspension: when it began).
    pub fn at(&self) -> SystemTime {
        match self {
            Event::BecameMaster(b) => b.at,
            Event::LostMastership(l) => l.at,
            Event::Suspension(s) => s.from,
        }
    }
}

/// One time this process became master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BecameMaster {
    /// When it started serving clients.
    pub at: SystemTime,
    /// The epoch of that mastership.
    pub epoch: u64,
    /// Why, in the HA mode's words (`acquired the lock …`, `elected: …`).
    pub reason: String,
    /// From when it saw the previous master gone (or began competing, with no master to wait
    /// for) until it served clients; `None` when the HA mode cannot tell.
    pub takeover: Option<Duration>,
}

/// One time this process lost mastership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostMastership {
    /// When it noticed.
    pub at: SystemTime,
    /// The epoch it lost.
    pub epoch: u64,
    /// Why, as the HA mode reported it.
    pub reason: String,
}

/// One suspension of a master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suspension {
    /// When the master stopped serving.
    pub from: SystemTime,
    /// Whether and when it ended.
    pub end: SuspensionEnd,
}

/// How a [`Suspension`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuspensionEnd {
    /// It has not: the master is suspended now.
    Ongoing,
    /// At this time: the master served again, lost mastership or shut down.
    At(SystemTime),
    /// The process ended during it (a crash or a kill; read from the file of an earlier
    /// run), so when it ended is not known and its time is not counted.
    Unknown,
}

impl Suspension {
    /// How long it lasted, or has lasted by `now` if it is ongoing; `None` if the end is
    /// unknown. Wall-clock time, so that it means the same after a restart; a clock stepped
    /// back during it counts as zero rather than going negative.
    pub fn duration(&self, now: SystemTime) -> Option<Duration> {
        let to = match self.end {
            SuspensionEnd::Ongoing => now,
            SuspensionEnd::At(t) => t,
            SuspensionEnd::Unknown => return None,
        };
        Some(to.duration_since(self.from).unwrap_or(Duration::ZERO))
    }
}

/// Cuts `s` to at most [`REASON_BYTES_MAX`] bytes, at a character boundary.
fn bound_reason(s: &mut String) {
    if s.len() > REASON_BYTES_MAX {
        let mut end = REASON_BYTES_MAX;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// `t` to the whole millisecond, the precision of the API and the file: recorded so, a
/// suspension's duration is exactly `to - from` as served, and the same after a restart.
fn whole_ms(t: SystemTime) -> SystemTime {
    time(unix_ms(t))
}

impl Failover {
    /// An empty history that begins at `now`, the start of this process.
    pub fn new(now: SystemTime) -> Failover {
        let now = whole_ms(now);
        Failover {
            since: Some(now),
            process_started: Some(now),
            ..Failover::default()
        }
    }

    /// Records that this broker became master.
    pub fn became_master(&mut self, mut b: BecameMaster) {
        b.at = whole_ms(b.at);
        bound_reason(&mut b.reason);
        self.masterships += 1;
        self.push(Event::BecameMaster(b.clone()));
        self.last_became_master = Some(b);
    }

    /// Adds `e` to the recent events, dropping the oldest beyond [`EVENTS_MAX`].
    fn push(&mut self, e: Event) {
        self.events.push_back(e);
        while self.events.len() > EVENTS_MAX {
            self.events.pop_front();
        }
        debug_assert!(self.events.len() <= EVENTS_MAX);
    }

    /// Records that this broker lost mastership; a suspension going on ends with it (the
    /// broker is no longer a master to be suspended).
    pub fn lost_mastership(&mut self, mut l: LostMastership) {
        l.at = whole_ms(l.at);
        self.end_suspension(l.at);
        bound_reason(&mut l.reason);
        self.losses += 1;
        self.push(Event::LostMastership(l.clone()));
        self.last_lost = Some(l);
    }

    /// Records the master's `serving` signal at `at`: `false` starts a suspension, `true` ends
    /// the one going on. Repeating the current state records nothing, so the caller may feed
    /// every value it sees. Returns whether the history changed.
    pub fn serving(&mut self, serving: bool, at: SystemTime) -> bool {
        let at = whole_ms(at);
        match (serving, self.suspended_now()) {
            (false, false) => {
                self.suspensions += 1;
                let s = Suspension {
                    from: at,
                    end: SuspensionEnd::Ongoing,
                };
                self.push(Event::Suspension(s));
                self.last_suspension = Some(s);
                true
            }
            (true, true) => self.end_suspension(at),
            _ => false,
        }
    }

    /// Ends the suspension going on, if any, at `at` (the master served again, lost
    /// mastership or is shutting down). Returns whether there was one.
    pub fn end_suspension(&mut self, at: SystemTime) -> bool {
        let at = whole_ms(at);
        match &mut self.last_suspension {
            Some(s) if s.end == SuspensionEnd::Ongoing => {
                s.end = SuspensionEnd::At(at);
                self.suspended_ended += s.duration(at).unwrap_or(Duration::ZERO);
                // The same suspension among the recent events (the newest one that is
                // ongoing; gone only if more than EVENTS_MAX events came since it began).
                let from = s.from;
                if let Some(Event::Suspension(e)) =
                    self.events.iter_mut().rev().find(
                        |e| matches!(e, Event::Suspension(x) if x.end == SuspensionEnd::Ongoing),
                    )
                {
                    debug_assert_eq!(e.from, from);
                    e.end = SuspensionEnd::At(at);
                }
                true
            }
            _ => false,
        }
    }

    /// Whether the master is suspended now.
    pub fn suspended_now(&self) -> bool {
        self.last_suspension
            .is_some_and(|s| s.end == SuspensionEnd::Ongoing)
    }

    /// The time spent suspended, counting an ongoing suspension up to `now`.
    pub fn suspended_total(&self, now: SystemTime) -> Duration {
        let ongoing = match self.last_suspension {
            Some(s) if s.end == SuspensionEnd::Ongoing => s.duration(now),
            _ => None,
        };
        self.suspended_ended + ongoing.unwrap_or(Duration::ZERO)
    }
}

// ---------------------------------------------------------------------------------------------
// The file.

/// The file's JSON document. Times are milliseconds since the Unix epoch, durations
/// milliseconds, as in the admin API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    version: u32,
    since_unix_ms: u64,
    masterships: u64,
    last_became_master: Option<BecameRecord>,
    lost_masterships: u64,
    last_lost_mastership: Option<LostRecord>,
    suspensions: u64,
    /// Of suspensions with a known end.
    suspended_ms_total: u64,
    last_suspension: Option<SuspensionRecord>,
    /// The recent events, oldest first. Absent from files written before the history was
    /// kept: such a file's recent history is rebuilt from its `last_*` fields.
    #[serde(default)]
    events: Option<Vec<EventRecord>>,
}

/// One recent event in the file, tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum EventRecord {
    BecameMaster(BecameRecord),
    LostMastership(LostRecord),
    Suspension(SuspensionRecord),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct BecameRecord {
    at_unix_ms: u64,
    epoch: u64,
    reason: String,
    takeover_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct LostRecord {
    at_unix_ms: u64,
    epoch: u64,
    reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct SuspensionRecord {
    from_unix_ms: u64,
    /// `null`: it had not ended when the file was written. Whoever reads the file is a later
    /// process, so for it such a suspension ended with the process that wrote it, when
    /// unknown.
    to_unix_ms: Option<u64>,
}

fn time(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl BecameRecord {
    fn of(b: &BecameMaster) -> BecameRecord {
        BecameRecord {
            at_unix_ms: unix_ms(b.at),
            epoch: b.epoch,
            reason: b.reason.clone(),
            takeover_ms: b.takeover.map(ms),
        }
    }

    fn into_became(self) -> BecameMaster {
        BecameMaster {
            at: time(self.at_unix_ms),
            epoch: self.epoch,
            reason: self.reason,
            takeover: self.takeover_ms.map(Duration::from_millis),
        }
    }
}

impl LostRecord {
    fn of(l: &LostMastership) -> LostRecord {
        LostRecord {
            at_unix_ms: unix_ms(l.at),
            epoch: l.epoch,
            reason: l.reason.clone(),
        }
    }

    fn into_lost(self) -> LostMastership {
        LostMastership {
            at: time(self.at_unix_ms),
            epoch: self.epoch,
            reason: self.reason,
        }
    }
}

impl SuspensionRecord {
    fn of(s: &Suspension) -> SuspensionRecord {
        SuspensionRecord {
            from_unix_ms: unix_ms(s.from),
            to_unix_ms: match s.end {
                SuspensionEnd::At(t) => Some(unix_ms(t)),
                SuspensionEnd::Ongoing | SuspensionEnd::Unknown => None,
            },
        }
    }

    /// The suspension, as read by a later process: one without an end ended, unknown when,
    /// with the process that wrote the file.
    fn into_suspension(self) -> Suspension {
        Suspension {
            from: time(self.from_unix_ms),
            end: self
                .to_unix_ms
                .map_or(SuspensionEnd::Unknown, |t| SuspensionEnd::At(time(t))),
        }
    }

    fn check(&self) -> Result<(), &'static str> {
        match self.to_unix_ms {
            Some(to) if to < self.from_unix_ms => Err("a suspension that ends before it starts"),
            _ => Ok(()),
        }
    }
}

impl EventRecord {
    fn of(e: &Event) -> EventRecord {
        match e {
            Event::BecameMaster(b) => EventRecord::BecameMaster(BecameRecord::of(b)),
            Event::LostMastership(l) => EventRecord::LostMastership(LostRecord::of(l)),
            Event::Suspension(s) => EventRecord::Suspension(SuspensionRecord::of(s)),
        }
    }

    fn into_event(self) -> Event {
        match self {
            EventRecord::BecameMaster(b) => Event::BecameMaster(b.into_became()),
            EventRecord::LostMastership(l) => Event::LostMastership(l.into_lost()),
            EventRecord::Suspension(s) => Event::Suspension(s.into_suspension()),
        }
    }

    fn reason(&self) -> Option<&String> {
        match self {
            EventRecord::BecameMaster(b) => Some(&b.reason),
            EventRecord::LostMastership(l) => Some(&l.reason),
            EventRecord::Suspension(_) => None,
        }
    }
}

impl Record {
    fn of(f: &Failover) -> Record {
        Record {
            version: FILE_VERSION,
            since_unix_ms: f.since.map_or(0, unix_ms),
            masterships: f.masterships,
            last_became_master: f.last_became_master.as_ref().map(BecameRecord::of),
            lost_masterships: f.losses,
            last_lost_mastership: f.last_lost.as_ref().map(LostRecord::of),
            suspensions: f.suspensions,
            suspended_ms_total: ms(f.suspended_ended),
            last_suspension: f.last_suspension.as_ref().map(SuspensionRecord::of),
            events: Some(f.events.iter().map(EventRecord::of).collect()),
        }
    }

    /// The rules every record written by [`Record::of`] keeps, checked again when one is read
    /// back: a file that breaks them was not written by us whole, and is not trusted.
    fn check(&self) -> Result<(), &'static str> {
        if self.last_became_master.is_some() && self.masterships == 0 {
            return Err("a last mastership with masterships = 0");
        }
        if self.last_lost_mastership.is_some() && self.lost_masterships == 0 {
            return Err("a last lost mastership with lost_masterships = 0");
        }
        if self.last_suspension.is_some() && self.suspensions == 0 {
            return Err("a last suspension with suspensions = 0");
        }
        let events = self.events.as_deref().unwrap_or_default();
        if events.len() > EVENTS_MAX {
            return Err("more recent events than EVENTS_MAX");
        }
        let count = |pick: fn(&EventRecord) -> bool| events.iter().filter(|e| pick(e)).count();
        if count(|e| matches!(e, EventRecord::BecameMaster(_))) as u64 > self.masterships
            || count(|e| matches!(e, EventRecord::LostMastership(_))) as u64 > self.lost_masterships
            || count(|e| matches!(e, EventRecord::Suspension(_))) as u64 > self.suspensions
        {
            return Err("more recent events of a kind than its count");
        }
        let reasons = [
            self.last_became_master.as_ref().map(|b| &b.reason),
            self.last_lost_mastership.as_ref().map(|l| &l.reason),
        ];
        if reasons
            .into_iter()
            .flatten()
            .chain(events.iter().filter_map(EventRecord::reason))
            .any(|r| r.len() > REASON_BYTES_MAX)
        {
            return Err("a reason longer than REASON_BYTES_MAX");
        }
        let suspensions = events.iter().filter_map(|e| match e {
            EventRecord::Suspension(s) => Some(s),
            _ => None,
        });
        for s in self.last_suspension.iter().chain(suspensions) {
            s.check()?;
        }
        Ok(())
    }

    /// The history this record holds, read by the process that started at `now`.
    fn into_failover(self, now: SystemTime) -> Failover {
        let last_became_master = self.last_became_master.map(BecameRecord::into_became);
        let last_lost = self.last_lost_mastership.map(LostRecord::into_lost);
        let last_suspension = self.last_suspension.map(SuspensionRecord::into_suspension);
        let events: VecDeque<Event> = match self.events {
            Some(events) => events.into_iter().map(EventRecord::into_event).collect(),
            // A file written before the recent history was kept: its last events are the
            // history, in the order they happened.
            None => {
                let mut events: Vec<Event> = [
                    last_became_master.clone().map(Event::BecameMaster),
                    last_lost.clone().map(Event::LostMastership),
                    last_suspension.map(Event::Suspension),
                ]
                .into_iter()
                .flatten()
                .collect();
                events.sort_by_key(Event::at);
                events.into()
            }
        };
        Failover {
            since: Some(time(self.since_unix_ms)),
            process_started: Some(whole_ms(now)),
            masterships: self.masterships,
            last_became_master,
            losses: self.lost_masterships,
            last_lost,
            suspensions: self.suspensions,
            suspended_ended: Duration::from_millis(self.suspended_ms_total),
            last_suspension,
            events,
        }
    }
}

/// Where this broker keeps its history: `<data_dir>/ha-history.json`, except where brokers
/// share the data directory (`shared-file`, whose whole point it is, and `shared-db`, whose
/// store is elsewhere and whose default `data_dir` the brokers of one host may share). There
/// each broker keeps its own `ha-history-<id>.json`, `<id>` being what identifies it across
/// restarts: `ha.holder_id` if set, else its advertised STOMP address (the default holder id
/// has the process id in it, new at every start). Brokers on different hosts that advertise the
/// same address need a `holder_id` each (docs/operations.md).
pub fn path_for(cfg: &Config) -> PathBuf {
    let dir = &cfg.broker.data_dir;
    if cfg.ha.mode != "shared-file" && cfg.ha.mode != "shared-db" {
        return dir.join("ha-history.json");
    }
    let id = if cfg.ha.holder_id.is_empty() {
        cfg.advertised()
    } else {
        cfg.ha.holder_id.clone()
    };
    let id: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(FILE_ID_CHARS_MAX)
        .collect();
    dir.join(format!("ha-history-{id}.json"))
}

/// The file that keeps a broker's [`Failover`] history across restarts.
#[derive(Debug)]
pub struct HistoryFile {
    path: PathBuf,
    /// What the file holds (as last read or written); `None` before either. Held for the
    /// whole of a write, so that two writers never share the temporary file.
    saved: Mutex<Option<Record>>,
}

impl HistoryFile {
    /// The history kept at `path` (see [`path_for`]).
    pub fn new(path: impl Into<PathBuf>) -> HistoryFile {
        HistoryFile {
            path: path.into(),
            saved: Mutex::new(None),
        }
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn tmp_path(&self) -> PathBuf {
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(".tmp");
        self.path.with_file_name(name)
    }

    fn saved(&self) -> std::sync::MutexGuard<'_, Option<Record>> {
        // A writer that panicked left at worst a stale comparison copy: the next save writes.
        self.saved.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the history a process starting at `now` continues: `Ok(None)` when there is no
    /// file yet (a first start, or nothing happened before).
    pub fn load(&self, now: SystemTime) -> Result<Option<Failover>, HistoryError> {
        let read = |source| HistoryError::Read {
            path: self.path.clone(),
            source,
        };
        let bytes = match std::fs::metadata(&self.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(read(e)),
            Ok(m) if m.len() > FILE_BYTES_MAX => {
                return Err(HistoryError::TooLarge {
                    path: self.path.clone(),
                    bytes: m.len(),
                })
            }
            Ok(_) => std::fs::read(&self.path).map_err(read)?,
        };
        // Checked again: the file may have grown between the two calls.
        if bytes.len() as u64 > FILE_BYTES_MAX {
            return Err(HistoryError::TooLarge {
                path: self.path.clone(),
                bytes: bytes.len() as u64,
            });
        }
        #[derive(Deserialize)]
        struct Versioned {
            version: u32,
        }
        let corrupt = |source| HistoryError::Corrupt {
            path: self.path.clone(),
            source,
        };
        let v: Versioned = serde_json::from_slice(&bytes).map_err(corrupt)?;
        if v.version != FILE_VERSION {
            return Err(HistoryError::Version {
                path: self.path.clone(),
                version: v.version,
            });
        }
        let record: Record = serde_json::from_slice(&bytes).map_err(corrupt)?;
        record.check().map_err(|what| HistoryError::Inconsistent {
            path: self.path.clone(),
            what,
        })?;
        *self.saved() = Some(record.clone());
        Ok(Some(record.into_failover(now)))
    }

    /// The history a process starting at `now` begins with: the file's, or an empty one when
    /// there is none or it cannot be read (said at WARN: the broker starts anyway, and the
    /// next change replaces the file).
    pub fn start(&self, now: SystemTime) -> Failover {
        match self.load(now) {
            Ok(Some(f)) => {
                tracing::info!(
                    path = %self.path.display(),
                    masterships = f.masterships,
                    lost_masterships = f.losses,
                    suspensions = f.suspensions,
                    "failover history of earlier runs loaded"
                );
                f
            }
            Ok(None) => Failover::new(now),
            Err(e) => {
                tracing::warn!("failover history ignored, starting a new one: {e}");
                Failover::new(now)
            }
        }
    }

    /// Writes `f` unless the file already holds it. Returns whether it wrote.
    ///
    /// The write is atomic and durable: a temporary file beside it is written and synced, then
    /// renamed over the file, and the directory synced. A crash at any point leaves the old
    /// history or the new one whole, never a mix (a temporary file left behind is never read,
    /// and the next save replaces it).
    pub fn save(&self, f: &Failover) -> Result<bool, HistoryError> {
        let record = Record::of(f);
        debug_assert_eq!(
            record.check(),
            Ok(()),
            "recorded a history that breaks its rules"
        );
        let mut saved = self.saved();
        if saved.as_ref() == Some(&record) {
            return Ok(false);
        }
        let bytes = serde_json::to_vec(&record).map_err(|e| HistoryError::Write {
            path: self.path.clone(),
            source: std::io::Error::other(e),
        })?;
        self.write_atomically(&bytes)
            .map_err(|source| HistoryError::Write {
                path: self.path.clone(),
                source,
            })?;
        *saved = Some(record);
        Ok(true)
    }

    fn write_atomically(&self, bytes: &[u8]) -> std::io::Result<()> {
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        // A slave's data directory may not exist yet (its store is opened on mastership).
        ferromq_store::create_dir_all_durably(dir)?;
        let tmp = self.tmp_path();
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, &self.path)?;
        // The rename is durable only once the directory is.
        std::fs::File::open(dir)?.sync_all()
    }
}

/// Keeps `history`'s file up to date with the failover history in `status` until the sender
/// is dropped: writes it at every change (on a blocking thread: it syncs the disk). A write
/// that fails is said at WARN and tried again at the next change.
pub async fn keep(history: Arc<HistoryFile>, mut status: watch::Receiver<Status>) {
    let mut last: Option<Failover> = None;
    loop {
        let f = status.borrow_and_update().failover.clone();
        if last.as_ref() != Some(&f) {
            let h = history.clone();
            let written = f.clone();
            match tokio::task::spawn_blocking(move || h.save(&written)).await {
                Ok(Ok(_)) => last = Some(f),
                Ok(Err(e)) => tracing::warn!("failover history not saved: {e}"),
                Err(e) => tracing::warn!("failover history not saved: the writer failed: {e}"),
            }
        }
        if status.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> SystemTime {
        time(ms)
    }

    fn sample() -> Failover {
        let mut f = Failover::new(at(1_000));
        f.became_master(BecameMaster {
            at: at(2_000),
            epoch: 3,
            reason: "elected: first master of the group \"g\" ✓".into(),
            takeover: Some(Duration::from_millis(412)),
        });
        f.serving(false, at(3_000));
        f.serving(true, at(3_250));
        f.lost_mastership(LostMastership {
            at: at(4_000),
            epoch: 3,
            reason: "ZooKeeper session expired".into(),
        });
        f
    }

    #[test]
    fn serving_transitions_are_counted_timed_and_repeats_ignored() {
        let mut f = Failover::new(at(0));
        assert!(
            !f.serving(true, at(10)),
            "serving while serving is no event"
        );
        assert!(f.serving(false, at(100)));
        assert!(!f.serving(false, at(150)), "a repeat does not restart it");
        assert!(f.suspended_now());
        assert_eq!(f.suspensions, 1);
        assert_eq!(f.suspended_total(at(400)), Duration::from_millis(300));
        assert_eq!(
            f.last_suspension.unwrap().duration(at(400)),
            Some(Duration::from_millis(300))
        );
        assert!(f.serving(true, at(600)));
        assert!(!f.suspended_now());
        assert_eq!(
            f.last_suspension,
            Some(Suspension {
                from: at(100),
                end: SuspensionEnd::At(at(600)),
            })
        );
        assert_eq!(f.suspended_total(at(9_999)), Duration::from_millis(500));
        assert!(!f.serving(true, at(700)));
        assert!(f.serving(false, at(1_000)));
        assert!(f.serving(true, at(1_020)));
        assert_eq!(f.suspensions, 2);
        assert_eq!(f.suspended_total(at(9_999)), Duration::from_millis(520));
    }

    #[test]
    fn times_are_kept_to_the_millisecond_so_durations_match_their_ends() {
        let mut f = Failover::new(at(0));
        // 100.9 ms to 112.2 ms: 11.3 ms, but the ends are served as 100 and 112.
        f.serving(false, at(100) + Duration::from_micros(900));
        f.serving(true, at(112) + Duration::from_micros(200));
        let s = f.last_suspension.unwrap();
        assert_eq!(s.from, at(100));
        assert_eq!(s.end, SuspensionEnd::At(at(112)));
        assert_eq!(s.duration(at(0)), Some(Duration::from_millis(12)));
        assert_eq!(f.suspended_total(at(0)), Duration::from_millis(12));
        // And a read-back history equals the one written.
        let dir = tempfile::tempdir().unwrap();
        let h = HistoryFile::new(dir.path().join("ha-history.json"));
        h.save(&f).unwrap();
        assert_eq!(h.load(at(0)).unwrap().unwrap(), f);
    }

    #[test]
    fn losing_mastership_or_shutting_down_ends_a_suspension() {
        let mut f = Failover::new(at(0));
        f.serving(false, at(100));
        f.lost_mastership(LostMastership {
            at: at(250),
            epoch: 1,
            reason: "ZooKeeper session expired".into(),
        });
        assert!(!f.suspended_now());
        assert_eq!(f.suspended_total(at(9_999)), Duration::from_millis(150));
        assert_eq!(f.losses, 1);
        f.serving(false, at(1_000));
        assert!(f.end_suspension(at(1_100)));
        assert!(!f.end_suspension(at(1_200)), "nothing left to end");
        assert_eq!(f.suspended_total(at(9_999)), Duration::from_millis(250));
        // A clock stepped back counts zero, not a panic or a wrap.
        f.serving(false, at(5_000));
        f.serving(true, at(4_000));
        assert_eq!(f.suspended_total(at(9_999)), Duration::from_millis(250));
    }

    #[test]
    fn reasons_are_bounded_at_a_character_boundary() {
        let mut f = Failover::new(at(0));
        f.became_master(BecameMaster {
            at: at(1),
            epoch: 1,
            reason: "é".repeat(REASON_BYTES_MAX),
            takeover: None,
        });
        let r = &f.last_became_master.unwrap().reason;
        assert_eq!(r.len(), REASON_BYTES_MAX);
        assert!(r.chars().all(|c| c == 'é'));
    }

    #[test]
    fn the_history_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data").join("ha-history.json");
        let f = sample();
        assert!(HistoryFile::new(&path).save(&f).unwrap());
        let restarted = at(10_000);
        let back = HistoryFile::new(&path).load(restarted).unwrap().unwrap();
        assert_eq!(
            back,
            Failover {
                process_started: Some(restarted),
                ..f
            }
        );
        assert_eq!(
            back.since,
            Some(at(1_000)),
            "the history keeps its beginning"
        );
    }

    #[test]
    fn a_suspension_open_when_the_file_was_written_ends_unknown_in_the_next_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ha-history.json");
        let mut f = sample();
        f.serving(false, at(5_000));
        HistoryFile::new(&path).save(&f).unwrap();
        let back = HistoryFile::new(&path).load(at(60_000)).unwrap().unwrap();
        assert!(!back.suspended_now(), "a new process is not suspended");
        assert_eq!(back.suspensions, 2);
        let s = back.last_suspension.unwrap();
        assert_eq!(s.end, SuspensionEnd::Unknown);
        assert_eq!(s.duration(at(60_000)), None);
        // Only the suspension that ended counts, not the gap until the restart.
        assert_eq!(back.suspended_total(at(60_000)), Duration::from_millis(250));
    }

    #[test]
    fn an_unchanged_history_is_not_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ha-history.json");
        let h = HistoryFile::new(&path);
        let mut f = sample();
        assert!(h.save(&f).unwrap());
        assert!(!h.save(&f).unwrap());
        // Neither is one just read back: a restart writes nothing until something happens.
        let h2 = HistoryFile::new(&path);
        let back = h2.load(at(9_000)).unwrap().unwrap();
        assert!(!h2.save(&back).unwrap());
        f.serving(false, at(5_000));
        assert!(h.save(&f).unwrap());
    }

    #[test]
    fn many_events_keep_only_the_newest_events_max_in_order_and_survive_a_reload() {
        let mut f = Failover::new(at(0));
        // 30 rounds of three events each: 90 events, far beyond EVENTS_MAX.
        for i in 0..30u64 {
            let t = 1_000 + i * 100;
            f.became_master(BecameMaster {
                at: at(t),
                epoch: i + 1,
                reason: format!("elected {i}"),
                takeover: Some(Duration::from_millis(i)),
            });
            f.serving(false, at(t + 10));
            f.serving(true, at(t + 30));
            f.lost_mastership(LostMastership {
                at: at(t + 50),
                epoch: i + 1,
                reason: format!("lost {i}"),
            });
        }
        assert_eq!(f.events.len(), EVENTS_MAX);
        assert_eq!((f.masterships, f.losses, f.suspensions), (30, 30, 30));
        let times: Vec<SystemTime> = f.events.iter().map(Event::at).collect();
        assert!(
            times.windows(2).all(|w| w[0] <= w[1]),
            "oldest first: {times:?}"
        );
        assert_eq!(
            f.events.back(),
            Some(&Event::LostMastership(LostMastership {
                at: at(1_000 + 29 * 100 + 50),
                epoch: 30,
                reason: "lost 29".into(),
            }))
        );
        // 20 newest of 90: the last 6 rounds whole, and the last two events of round 23.
        assert_eq!(
            f.events.front(),
            Some(&Event::Suspension(Suspension {
                from: at(1_000 + 23 * 100 + 10),
                end: SuspensionEnd::At(at(1_000 + 23 * 100 + 30)),
            }))
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ha-history.json");
        assert!(HistoryFile::new(&path).save(&f).unwrap());
        let back = HistoryFile::new(&path).load(at(99_999)).unwrap().unwrap();
        assert_eq!(
            back.events, f.events,
            "the recent history survives a restart"
        );
        // An ongoing suspension ends with its process, in the history as in `last_suspension`.
        f.serving(false, at(50_000));
        assert_eq!(f.events.len(), EVENTS_MAX);
        HistoryFile::new(&path).save(&f).unwrap();
        let back = HistoryFile::new(&path).load(at(99_999)).unwrap().unwrap();
        assert_eq!(
            back.events.back(),
            Some(&Event::Suspension(Suspension {
                from: at(50_000),
                end: SuspensionEnd::Unknown,
            }))
        );
    }

    #[test]
    fn a_file_written_before_the_recent_history_loads_its_last_events_as_the_history() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ha-history.json");
        // The format as written before `events` existed: one event of each kind, out of order.
        let old = r#"{"version":1,"since_unix_ms":1000,"masterships":3,
            "last_became_master":{"at_unix_ms":2000,"epoch":3,"reason":"elected","takeover_ms":412},
            "lost_masterships":2,
            "last_lost_mastership":{"at_unix_ms":1500,"epoch":2,"reason":"lock lost"},
            "suspensions":1,"suspended_ms_total":250,
            "last_suspension":{"from_unix_ms":3000,"to_unix_ms":3250}}"#;
        std::fs::write(&path, old).unwrap();
        let h = HistoryFile::new(&path);
        let f = h.load(at(9_000)).unwrap().unwrap();
        assert_eq!((f.masterships, f.losses, f.suspensions), (3, 2, 1));
        let times: Vec<u64> = f.events.iter().map(|e| unix_ms(e.at())).collect();
        assert_eq!(times, vec![1_500, 2_000, 3_000]);
        assert!(matches!(f.events[0], Event::LostMastership(_)));
        // Saved again, the file gains its events and reads back the same.
        let mut g = f.clone();
        g.serving(false, at(10_000));
        assert!(h.save(&g).unwrap());
        let back = HistoryFile::new(&path).load(at(11_000)).unwrap().unwrap();
        assert_eq!(back.events.len(), 4);
    }

    #[test]
    fn a_file_with_too_many_recent_events_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ha-history.json");
        let mut r = Record::of(&sample());
        r.suspensions = 1_000;
        r.events = Some(vec![
            EventRecord::Suspension(SuspensionRecord {
                from_unix_ms: 1,
                to_unix_ms: Some(2),
            });
            EVENTS_MAX + 1
        ]);
        std::fs::write(&path, serde_json::to_vec(&r).unwrap()).unwrap();
        assert!(matches!(
            HistoryFile::new(&path).load(at(0)),
            Err(HistoryError::Inconsistent { .. })
        ));
    }

    #[test]
    fn a_missing_file_is_an_empty_history() {
        let dir = tempfile::tempdir().unwrap();
        let h = HistoryFile::new(dir.path().join("nothing").join("ha-history.json"));
        assert!(h.load(at(5)).unwrap().is_none());
        assert_eq!(h.start(at(5)), Failover::new(at(5)));
    }

    #[test]
    fn a_corrupt_file_is_ignored_and_replaced_at_the_next_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ha-history.json");
        let good = serde_json::to_string(&Record::of(&sample())).unwrap();
        let bad: Vec<(&str, Vec<u8>)> = vec![
            ("torn", good.as_bytes()[..good.len() / 2].to_vec()),
            ("binary", vec![0xff, 0x00, 0x13, 0x37]),
            ("empty", Vec::new()),
            (
                "future version",
                good.replacen("\"version\":1", "\"version\":2", 1)
                    .into_bytes(),
            ),
            (
                "inconsistent",
                good.replacen("\"masterships\":1", "\"masterships\":0", 1)
                    .into_bytes(),
            ),
            (
                "too large",
                format!("{good}{}", " ".repeat(FILE_BYTES_MAX as usize)).into_bytes(),
            ),
        ];
        for (what, bytes) in bad {
            std::fs::write(&path, &bytes).unwrap();
            let h = HistoryFile::new(&path);
            let err = h.load(at(7)).expect_err(what);
            match (what, &err) {
                ("future version", HistoryError::Version { version: 2, .. })
                | ("inconsistent", HistoryError::Inconsistent { .. })
                | ("too large", HistoryError::TooLarge { .. })
                | ("torn" | "binary" | "empty", HistoryError::Corrupt { .. }) => {}
                _ => panic!("{what}: {err}"),
            }
            assert_eq!(h.start(at(7)), Failover::new(at(7)), "{what}");
            let mut f = Failover::new(at(7));
            f.serving(false, at(8));
            assert!(h.save(&f).unwrap(), "{what}: the next change replaces it");
            assert_eq!(h.load(at(9)).unwrap().unwrap().suspensions, 1, "{what}");
        }
    }

    #[test]
    fn a_save_replaces_the_file_whole_and_ignores_a_torn_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ha-history.json");
        let h = HistoryFile::new(&path);
        let f = sample();
        h.save(&f).unwrap();
        // A crash in the middle of the next save leaves a torn temporary file: the history
        // read is still the last one saved whole.
        let tmp = dir.path().join("ha-history.json.tmp");
        std::fs::write(&tmp, b"{\"version\":1,\"since_unix").unwrap();
        let back = HistoryFile::new(&path).load(at(9)).unwrap().unwrap();
        assert_eq!(back.masterships, 1);
        // The next save writes over the leftover and leaves only the file itself.
        let mut g = f.clone();
        g.serving(false, at(5_000));
        assert!(h.save(&g).unwrap());
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["ha-history.json".to_string()]);
        assert_eq!(
            HistoryFile::new(&path)
                .load(at(9))
                .unwrap()
                .unwrap()
                .suspensions,
            2
        );
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ha-history.json");
        let h = HistoryFile::new(&path);
        h.save(&sample()).unwrap();
        // A directory where the temporary file goes: creating it fails.
        std::fs::create_dir(dir.path().join("ha-history.json.tmp")).unwrap();
        let mut g = sample();
        g.serving(false, at(5_000));
        assert!(matches!(h.save(&g), Err(HistoryError::Write { .. })));
        let back = HistoryFile::new(&path).load(at(9)).unwrap().unwrap();
        assert_eq!(back.suspensions, 1, "the old history is intact");
        // And the change is not taken as saved: the next attempt writes again.
        std::fs::remove_dir(dir.path().join("ha-history.json.tmp")).unwrap();
        assert!(h.save(&g).unwrap());
    }

    #[test]
    fn brokers_sharing_a_data_dir_keep_separate_files() {
        let mut cfg = Config::default();
        cfg.broker.data_dir = PathBuf::from("/var/lib/ferromq");
        assert_eq!(
            path_for(&cfg),
            PathBuf::from("/var/lib/ferromq/ha-history.json")
        );
        cfg.ha.mode = "replicated".into();
        assert_eq!(
            path_for(&cfg),
            PathBuf::from("/var/lib/ferromq/ha-history.json")
        );
        cfg.ha.mode = "shared-file".into();
        cfg.transports.stomp = "127.0.0.1:61613".into();
        assert_eq!(
            path_for(&cfg),
            PathBuf::from("/var/lib/ferromq/ha-history-tcp___127.0.0.1_61613.json")
        );
        cfg.ha.holder_id = "b/1".into();
        assert_eq!(
            path_for(&cfg),
            PathBuf::from("/var/lib/ferromq/ha-history-b_1.json")
        );
    }

    #[tokio::test]
    async fn keep_writes_each_change_of_the_history() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ha-history.json");
        let h = Arc::new(HistoryFile::new(&path));
        let (tx, rx) = watch::channel(Status::default());
        let task = tokio::spawn(keep(h.clone(), rx));
        tx.send_modify(|s| s.failover = sample());
        let read = || async {
            for _ in 0..500 {
                if let Ok(Some(f)) = HistoryFile::new(&path).load(at(0)) {
                    if f.suspensions == 2 {
                        return f;
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("the history was not written");
        };
        tx.send_modify(|s| {
            s.failover.serving(false, at(6_000));
        });
        let f = read().await;
        assert_eq!(f.masterships, 1);
        drop(tx);
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("keep ends with its sender")
            .unwrap();
    }
}
