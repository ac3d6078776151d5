//! The storage seam, in the manner of redb's `StorageBackend`.
//!
//! Every byte the journal reads or writes goes through [`StorageDir`] (open, create, remove,
//! rename, list files, sync the directory) and [`StorageFile`] (positional read and write,
//! `set_len`, `sync_data`, `len`). Two implementations:
//!
//! - [`FileDir`]: real files in a directory (`std::fs`, positional I/O, `fdatasync`);
//! - [`MemDir`]: files in memory that keep bytes written but not yet synced apart from bytes
//!   synced, and directory operations not yet synced apart from the directory as last synced,
//!   so tests can cut the power at any I/O call and inject failures (EIO on a write or a sync,
//!   ENOSPC past a capacity). A power cut loses every unsynced change ([`PowerLoss::DropUnsynced`])
//!   or, as a real disk may, a random subset of the unsynced 4 KiB pages with a torn last page
//!   ([`PowerLoss::RandomPages`]); creations, removals and renames since the last
//!   [`StorageDir::sync_dir`] are lost too (a random prefix of them survives).
//!
//! [`FileDir`] implements [`StorageDir::sync_dir`] with an `fsync` of the directory.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

/// One file of the store.
pub trait StorageFile: Send + Sync + fmt::Debug {
    /// The file's current length in bytes (including bytes written but not yet synced).
    fn len(&self) -> io::Result<u64>;
    /// Whether the file holds no bytes.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Fills `buf` from `offset`; fails with `UnexpectedEof` past the end.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes all of `buf` at `offset` (one contiguous positional write).
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()>;
    /// Truncates or extends (with zeros) the file.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes every byte written so far durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// The OS file descriptor, for a file that is a real file: the journal writer's io_uring
    /// path writes and syncs through it. `None` (the default) keeps the portable path.
    fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }
}

/// A directory of store files.
pub trait StorageDir: Send + Sync + fmt::Debug {
    /// Opens `name`, creating it empty when `create` is true and it does not exist.
    fn open(&self, name: &str, create: bool) -> io::Result<Arc<dyn StorageFile>>;
    /// Creates `name`, failing with `AlreadyExists` if it exists (`O_CREAT | O_EXCL`): a
    /// deposed master racing a new one for the next segment id loses instead of sharing it.
    fn create_new(&self, name: &str) -> io::Result<Arc<dyn StorageFile>>;
    /// Removes `name`.
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Renames `from` to `to`, replacing `to`.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Every file name in the directory, sorted.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Makes creations, removals and renames durable (`fsync` of the directory).
    fn sync_dir(&self) -> io::Result<()>;
    /// Where the files live, for log lines.
    fn describe(&self) -> String;
}

// ---------------------------------------------------------------------------------------------
// Real files.

/// Real files in one directory.
#[derive(Debug, Clone)]
pub struct FileDir {
    path: PathBuf,
}

impl FileDir {
    /// Uses (and creates if needed) the directory `path`.
    pub fn new(path: impl AsRef<Path>) -> io::Result<FileDir> {
        create_dir_all_durably(path.as_ref())?;
        Ok(FileDir {
            path: path.as_ref().to_path_buf(),
        })
    }
}

/// `create_dir_all`, then an fsync of the parent of every directory it created: a new
/// directory's name is only durable once its parent is synced, and without that a power cut
/// can take a brand-new data directory away — with the segments already synced inside it.
pub fn create_dir_all_durably(path: &Path) -> io::Result<()> {
    // The directories that do not exist yet, deepest first (bounded by the path's depth).
    let mut missing = Vec::new();
    let mut p = Some(path);
    while let Some(dir) = p {
        if dir.as_os_str().is_empty() || dir.exists() {
            break;
        }
        missing.push(dir.to_path_buf());
        p = dir.parent();
    }
    std::fs::create_dir_all(path)?;
    for dir in missing.iter().rev() {
        let parent = match dir.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}

#[derive(Debug)]
struct RealFile {
    file: File,
}

impl StorageFile for RealFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }
    fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        Some(std::os::fd::AsRawFd::as_raw_fd(&self.file))
    }
}

impl StorageDir for FileDir {
    fn open(&self, name: &str, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(self.path.join(name))?;
        Ok(Arc::new(RealFile { file }))
    }
    fn create_new(&self, name: &str) -> io::Result<Arc<dyn StorageFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(self.path.join(name))?;
        Ok(Arc::new(RealFile { file }))
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        std::fs::remove_file(self.path.join(name))
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        std::fs::rename(self.path.join(from), self.path.join(to))
    }
    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.path)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                if let Some(name) = entry.file_name().to_str() {
                    names.push(name.to_string());
                }
            }
        }
        names.sort();
        Ok(names)
    }
    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.path)?.sync_all()
    }
    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

// ---------------------------------------------------------------------------------------------
// In-memory files with a power-loss model.

/// ENOSPC, as the kernel reports it.
const ENOSPC: i32 = 28;
/// EIO, as the kernel reports it.
const EIO: i32 = 5;
/// The unit in which the model's page cache writes back (and loses) unsynced data.
pub const MEM_PAGE_BYTES: usize = 4096;

/// A write or truncation that reached the "page cache" but not the "disk".
#[derive(Debug, Clone)]
enum Pending {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

/// One file's contents (an inode: names point at it).
#[derive(Debug, Clone, Default)]
struct MemFileData {
    /// What survives a power cut.
    durable: Vec<u8>,
    /// What reads see: `durable` with every pending change applied.
    current: Vec<u8>,
    /// Changes since the last `sync_data`, oldest first.
    pending: Vec<Pending>,
    /// Bytes that count against the capacity (the highest written extent).
    allocated_bytes: u64,
}

impl MemFileData {
    fn durable(bytes: Vec<u8>) -> MemFileData {
        MemFileData {
            allocated_bytes: bytes.len() as u64,
            current: bytes.clone(),
            durable: bytes,
            pending: Vec::new(),
        }
    }

    /// Pages whose bytes or length changed since the last sync.
    fn dirty_pages(&self) -> BTreeSet<usize> {
        let mut pages = BTreeSet::new();
        let mut len = self.durable.len();
        for change in &self.pending {
            let (from, to) = match change {
                Pending::Write { offset, data } => {
                    let start = *offset as usize;
                    let end = start + data.len();
                    len = len.max(end);
                    (start, end)
                }
                Pending::SetLen(new_len) => {
                    let new_len = *new_len as usize;
                    let range = (len.min(new_len), len.max(new_len));
                    len = new_len;
                    range
                }
            };
            if to > from {
                pages.extend(from / MEM_PAGE_BYTES..=(to - 1) / MEM_PAGE_BYTES);
            }
        }
        pages
    }
}

fn apply_pending(bytes: &mut Vec<u8>, change: &Pending) {
    match change {
        Pending::Write { offset, data } => {
            let start = *offset as usize;
            let end = start + data.len();
            if bytes.len() < end {
                bytes.resize(end, 0);
            }
            bytes[start..end].copy_from_slice(data);
        }
        Pending::SetLen(len) => bytes.resize(*len as usize, 0),
    }
}

/// What a [`MemDir`] does to unsynced bytes and unsynced directory operations when the power is
/// cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerLoss {
    /// Every unsynced change is lost: file bytes since each file's last `sync_data`, and
    /// creations, removals and renames since the last `sync_dir`.
    DropUnsynced,
    /// Each file keeps a random prefix of its unsynced changes, and the first change it loses
    /// may be torn (a random prefix of that write survives); a random prefix of the unsynced
    /// directory operations survives. Deterministic in the seed. Kinder than a real disk.
    KeepRandomPrefix {
        /// The seed of the choice.
        seed: u64,
    },
    /// As unkind as a real disk: each page ([`MEM_PAGE_BYTES`]) changed since the file's last
    /// `sync_data` independently keeps its new content or reverts to its last synced content
    /// (zeros where nothing was ever synced), so a later page of a write can survive while an
    /// earlier one is lost; the highest surviving page may be torn (a random prefix of it new,
    /// the rest old); an unsynced length change survives or not; a random prefix of the
    /// directory operations since the last `sync_dir` survives (a journaling file system
    /// commits them in order). Deterministic in the seed.
    RandomPages {
        /// The seed of the choice.
        seed: u64,
    },
}

/// Injected failures of a [`MemDir`].
#[derive(Debug, Clone, Default)]
struct Faults {
    /// The write call with this number (counting writes from 1) fails with EIO.
    fail_write_at: Option<u64>,
    /// The sync call with this number (counting syncs from 1) fails with EIO.
    fail_sync_at: Option<u64>,
    /// Writes that would allocate past this many bytes (all files) fail with ENOSPC.
    capacity_bytes: Option<u64>,
    /// After this many I/O calls (writes, set_len, syncs), the power is cut.
    power_cut_after_io: Option<(u64, PowerLoss)>,
    /// Every read or I/O call on a file whose name starts with this blocks until the gate opens.
    gate: Option<(String, Arc<Gate>)>,
}

/// A gate I/O calls wait at (see [`MemDir::hold_io`]).
#[derive(Debug, Default)]
pub struct Gate {
    state: std::sync::Mutex<GateState>,
    changed: std::sync::Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    open: bool,
    waiting: u64,
}

impl Gate {
    fn pass(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.waiting += 1;
        self.changed.notify_all();
        while !state.open {
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        state.waiting -= 1;
    }

    /// Blocks until an I/O call waits at the gate, or `timeout` passes; returns whether one did.
    pub fn wait_for_waiter(&self, timeout: std::time::Duration) -> bool {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (state, _) = self
            .changed
            .wait_timeout_while(state, timeout, |s| s.waiting == 0)
            .unwrap_or_else(|e| e.into_inner());
        state.waiting > 0
    }

    /// Lets every waiting and later I/O call through.
    pub fn open(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.open = true;
        self.changed.notify_all();
    }
}

/// A creation, removal or rename not yet made durable by `sync_dir`.
#[derive(Debug, Clone)]
enum DirOp {
    Create { name: String, ino: u64 },
    Remove { name: String },
    Rename { from: String, to: String },
}

fn apply_dir_op(names: &mut BTreeMap<String, u64>, op: &DirOp) {
    match op {
        DirOp::Create { name, ino } => {
            names.insert(name.clone(), *ino);
        }
        DirOp::Remove { name } => {
            names.remove(name);
        }
        DirOp::Rename { from, to } => {
            if let Some(ino) = names.remove(from) {
                names.insert(to.clone(), ino);
            }
        }
    }
}

#[derive(Debug, Default)]
struct MemState {
    /// The directory as reads see it: name -> inode.
    names: BTreeMap<String, u64>,
    /// The directory as of the last `sync_dir`.
    durable_names: BTreeMap<String, u64>,
    /// Directory operations since the last `sync_dir`, oldest first.
    dir_ops: Vec<DirOp>,
    /// File contents by inode. An inode outlives its names (an open file stays readable, and a
    /// power cut may bring back a name whose removal was not synced).
    inodes: BTreeMap<u64, MemFileData>,
    next_ino: u64,
    faults: Faults,
    writes: u64,
    syncs: u64,
    io_calls: u64,
    /// Set once the power is cut: the image that survived, and every later I/O call fails.
    crash_image: Option<BTreeMap<String, MemFileData>>,
}

/// An in-memory directory that models bytes written but not synced and directory operations
/// not synced. Cloning shares the files.
#[derive(Clone, Default)]
pub struct MemDir {
    state: Arc<Mutex<MemState>>,
}

impl fmt::Debug for MemDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.lock();
        f.debug_struct("MemDir")
            .field("files", &state.names.keys().collect::<Vec<_>>())
            .field("io_calls", &state.io_calls)
            .finish()
    }
}

/// A tiny deterministic generator (splitmix64), so crash images do not need a `rand` crate.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..=max`.
    pub(crate) fn up_to(&mut self, max: u64) -> u64 {
        if max == u64::MAX {
            return self.next_u64();
        }
        self.next_u64() % (max + 1)
    }
}

/// A file after a power cut that keeps a random prefix of its unsynced changes.
fn keep_prefix(data: &MemFileData, rng: &mut SplitMix64) -> Vec<u8> {
    let mut kept = data.durable.clone();
    let keep = rng.up_to(data.pending.len() as u64) as usize;
    for change in &data.pending[..keep] {
        apply_pending(&mut kept, change);
    }
    // Tear the first lost write half of the time: a random prefix of it survives.
    if let Some(Pending::Write {
        offset,
        data: bytes,
    }) = data.pending.get(keep)
    {
        if rng.next_u64().is_multiple_of(2) && !bytes.is_empty() {
            let torn = rng.up_to(bytes.len() as u64 - 1) as usize;
            let change = Pending::Write {
                offset: *offset,
                data: bytes[..torn].to_vec(),
            };
            apply_pending(&mut kept, &change);
        }
    }
    kept
}

/// A file after a power cut that loses a random subset of its unsynced pages.
fn keep_random_pages(data: &MemFileData, rng: &mut SplitMix64) -> Vec<u8> {
    let len = if data.current.len() != data.durable.len() && rng.next_u64().is_multiple_of(2) {
        data.current.len()
    } else {
        data.durable.len()
    };
    let byte = |bytes: &[u8], at: usize| bytes.get(at).copied().unwrap_or(0);
    let mut kept: Vec<u8> = (0..len).map(|at| byte(&data.durable, at)).collect();
    let mut last_kept = None;
    for page in data.dirty_pages() {
        let from = page * MEM_PAGE_BYTES;
        if from >= len {
            break;
        }
        if rng.next_u64().is_multiple_of(2) {
            continue;
        }
        let to = (from + MEM_PAGE_BYTES).min(len);
        for (at, b) in kept[from..to].iter_mut().enumerate() {
            *b = byte(&data.current, from + at);
        }
        last_kept = Some((from, to));
    }
    // Tear the highest surviving page half of the time: only a prefix of it was written back.
    if let Some((from, to)) = last_kept {
        if rng.next_u64().is_multiple_of(2) {
            let torn_at = from + rng.up_to((to - from - 1) as u64) as usize;
            for (at, b) in kept[torn_at..to].iter_mut().enumerate() {
                *b = byte(&data.durable, torn_at + at);
            }
        }
    }
    kept
}

fn power_loss_image(state: &MemState, loss: PowerLoss) -> BTreeMap<String, MemFileData> {
    let mut rng = match loss {
        PowerLoss::DropUnsynced => None,
        PowerLoss::KeepRandomPrefix { seed } | PowerLoss::RandomPages { seed } => {
            Some(SplitMix64(seed))
        }
    };
    let mut names = state.durable_names.clone();
    if let Some(rng) = rng.as_mut() {
        let keep = rng.up_to(state.dir_ops.len() as u64) as usize;
        for op in &state.dir_ops[..keep] {
            apply_dir_op(&mut names, op);
        }
    }
    names
        .into_iter()
        .filter_map(|(name, ino)| {
            let data = state.inodes.get(&ino)?;
            let kept = match (loss, rng.as_mut()) {
                (PowerLoss::KeepRandomPrefix { .. }, Some(rng)) => keep_prefix(data, rng),
                (PowerLoss::RandomPages { .. }, Some(rng)) => keep_random_pages(data, rng),
                _ => data.durable.clone(),
            };
            Some((name, MemFileData::durable(kept)))
        })
        .collect()
}

fn state_from_image(files: BTreeMap<String, MemFileData>) -> MemState {
    let mut state = MemState::default();
    for (name, data) in files {
        let ino = state.next_ino;
        state.next_ino += 1;
        state.inodes.insert(ino, data);
        state.names.insert(name, ino);
    }
    state.durable_names = state.names.clone();
    state
}

impl MemDir {
    /// An empty directory.
    pub fn new() -> MemDir {
        MemDir::default()
    }

    /// What a power cut right now would leave on "disk", as a fresh directory.
    pub fn power_loss(&self, loss: PowerLoss) -> MemDir {
        let state = self.state.lock();
        let files = match &state.crash_image {
            Some(image) => image.clone(),
            None => power_loss_image(&state, loss),
        };
        MemDir {
            state: Arc::new(Mutex::new(state_from_image(files))),
        }
    }

    /// After `io_calls` more I/O calls (writes, set_len, syncs, creations, removals, renames),
    /// cut the power: the image taken then is what [`MemDir::power_loss`] returns from now on,
    /// and every later I/O call fails.
    pub fn arm_power_cut(&self, io_calls: u64, loss: PowerLoss) {
        let mut state = self.state.lock();
        let at = state.io_calls + io_calls;
        state.faults.power_cut_after_io = Some((at, loss));
    }

    /// Whether an armed power cut has happened.
    pub fn power_is_cut(&self) -> bool {
        self.state.lock().crash_image.is_some()
    }

    /// The `n`-th write from now (1 = the next one) fails with EIO.
    pub fn fail_write(&self, n: u64) {
        let mut state = self.state.lock();
        state.faults.fail_write_at = Some(state.writes + n);
    }

    /// The `n`-th sync from now (1 = the next one) fails with EIO.
    pub fn fail_sync(&self, n: u64) {
        let mut state = self.state.lock();
        state.faults.fail_sync_at = Some(state.syncs + n);
    }

    /// Writes past `capacity_bytes` allocated bytes (all files together) fail with ENOSPC;
    /// `None` lifts the limit.
    pub fn set_capacity(&self, capacity_bytes: Option<u64>) {
        self.state.lock().faults.capacity_bytes = capacity_bytes;
    }

    /// From now on, every read, write, `set_len` or `sync_data` on a file whose name starts with
    /// `name_prefix` (as named when opened) blocks until the returned gate opens: tests use it to
    /// hold one thread's I/O and watch what the others can still do.
    pub fn hold_io(&self, name_prefix: &str) -> Arc<Gate> {
        let gate = Arc::new(Gate::default());
        self.state.lock().faults.gate = Some((name_prefix.to_string(), gate.clone()));
        gate
    }

    /// I/O calls made so far.
    pub fn io_calls(&self) -> u64 {
        self.state.lock().io_calls
    }

    /// The current bytes of `name` (what reads see), for tests that corrupt files.
    pub fn file_bytes(&self, name: &str) -> Option<Vec<u8>> {
        let state = self.state.lock();
        let ino = state.names.get(name)?;
        state.inodes.get(ino).map(|f| f.current.clone())
    }

    /// Whether `name` would survive a power cut (its creation or rename reached a `sync_dir`).
    pub fn name_is_durable(&self, name: &str) -> bool {
        self.state.lock().durable_names.contains_key(name)
    }

    /// Replaces the bytes of `name`, durably, name included (tests use it to flip bits or
    /// truncate).
    pub fn put_file_bytes(&self, name: &str, bytes: Vec<u8>) {
        let mut state = self.state.lock();
        let ino = match state.names.get(name) {
            Some(ino) => *ino,
            None => {
                let ino = state.next_ino;
                state.next_ino += 1;
                state.names.insert(name.to_string(), ino);
                ino
            }
        };
        state.durable_names.insert(name.to_string(), ino);
        state.inodes.insert(ino, MemFileData::durable(bytes));
    }
}

impl MemState {
    /// Counts one I/O call; fails it when the power is (or just went) off.
    fn io_call(&mut self) -> io::Result<()> {
        if self.crash_image.is_some() {
            return Err(io::Error::from_raw_os_error(EIO));
        }
        self.io_calls += 1;
        Ok(())
    }

    /// Called after an I/O call took effect: cuts the power if it is time.
    fn maybe_cut_power(&mut self) {
        if let Some((at, loss)) = self.faults.power_cut_after_io {
            if self.io_calls >= at && self.crash_image.is_none() {
                self.crash_image = Some(power_loss_image(self, loss));
            }
        }
    }

    fn allocated_total(&self) -> u64 {
        self.names
            .values()
            .filter_map(|ino| self.inodes.get(ino))
            .map(|f| f.allocated_bytes)
            .sum()
    }

    fn create(&mut self, name: &str) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inodes.insert(ino, MemFileData::default());
        self.names.insert(name.to_string(), ino);
        self.dir_ops.push(DirOp::Create {
            name: name.to_string(),
            ino,
        });
        ino
    }

    fn file_mut(&mut self, ino: u64, name: &str) -> io::Result<&mut MemFileData> {
        self.inodes.get_mut(&ino).ok_or_else(|| not_found(name))
    }
}

#[derive(Debug)]
struct MemFile {
    /// The name it was opened by, for errors and gates.
    name: String,
    ino: u64,
    state: Arc<Mutex<MemState>>,
}

impl MemFile {
    /// Waits at the gate, if one holds this file's I/O (outside the state lock).
    fn gate(&self) {
        let gate = {
            let state = self.state.lock();
            match &state.faults.gate {
                Some((prefix, gate)) if self.name.starts_with(prefix.as_str()) => {
                    Some(gate.clone())
                }
                _ => None,
            }
        };
        if let Some(gate) = gate {
            gate.pass();
        }
    }
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{name}: no such file"))
}

impl StorageFile for MemFile {
    fn len(&self) -> io::Result<u64> {
        let state = self.state.lock();
        let file = state
            .inodes
            .get(&self.ino)
            .ok_or_else(|| not_found(&self.name))?;
        Ok(file.current.len() as u64)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.gate();
        let state = self.state.lock();
        let file = state
            .inodes
            .get(&self.ino)
            .ok_or_else(|| not_found(&self.name))?;
        let start = offset as usize;
        let end = start
            .checked_add(buf.len())
            .ok_or(io::ErrorKind::InvalidInput)?;
        if end > file.current.len() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.copy_from_slice(&file.current[start..end]);
        Ok(())
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.gate();
        let mut state = self.state.lock();
        state.io_call()?;
        state.writes += 1;
        if state.faults.fail_write_at == Some(state.writes) {
            return Err(io::Error::from_raw_os_error(EIO));
        }
        let end = offset + buf.len() as u64;
        let allocated_before = state.file_mut(self.ino, &self.name)?.allocated_bytes;
        let growth = end.saturating_sub(allocated_before);
        if let Some(capacity) = state.faults.capacity_bytes {
            if state.allocated_total() + growth > capacity {
                return Err(io::Error::from_raw_os_error(ENOSPC));
            }
        }
        let file = state.file_mut(self.ino, &self.name)?;
        let change = Pending::Write {
            offset,
            data: buf.to_vec(),
        };
        apply_pending(&mut file.current, &change);
        file.pending.push(change);
        file.allocated_bytes = file.allocated_bytes.max(end);
        state.maybe_cut_power();
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.gate();
        let mut state = self.state.lock();
        state.io_call()?;
        let file = state.file_mut(self.ino, &self.name)?;
        let change = Pending::SetLen(len);
        apply_pending(&mut file.current, &change);
        file.pending.push(change);
        // Extending is sparse (no allocation); shrinking frees.
        file.allocated_bytes = file.allocated_bytes.min(len);
        state.maybe_cut_power();
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.gate();
        let mut state = self.state.lock();
        state.io_call()?;
        state.syncs += 1;
        if state.faults.fail_sync_at == Some(state.syncs) {
            // Like Linux after a failed fsync: the dirty pages may be gone and the error is
            // reported once. The store must never retry and trust the data.
            return Err(io::Error::from_raw_os_error(EIO));
        }
        let file = state.file_mut(self.ino, &self.name)?;
        file.durable = file.current.clone();
        file.pending.clear();
        state.maybe_cut_power();
        Ok(())
    }
}

impl StorageDir for MemDir {
    fn open(&self, name: &str, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        let mut state = self.state.lock();
        let ino = match state.names.get(name) {
            Some(ino) => *ino,
            None => {
                if !create {
                    return Err(not_found(name));
                }
                state.io_call()?;
                let ino = state.create(name);
                state.maybe_cut_power();
                ino
            }
        };
        Ok(Arc::new(MemFile {
            name: name.to_string(),
            ino,
            state: self.state.clone(),
        }))
    }
    fn create_new(&self, name: &str) -> io::Result<Arc<dyn StorageFile>> {
        let mut state = self.state.lock();
        if state.names.contains_key(name) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{name}: file exists"),
            ));
        }
        state.io_call()?;
        let ino = state.create(name);
        state.maybe_cut_power();
        Ok(Arc::new(MemFile {
            name: name.to_string(),
            ino,
            state: self.state.clone(),
        }))
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        let mut state = self.state.lock();
        state.io_call()?;
        state.names.remove(name).ok_or_else(|| not_found(name))?;
        state.dir_ops.push(DirOp::Remove {
            name: name.to_string(),
        });
        state.maybe_cut_power();
        Ok(())
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut state = self.state.lock();
        state.io_call()?;
        let ino = state.names.remove(from).ok_or_else(|| not_found(from))?;
        state.names.insert(to.to_string(), ino);
        state.dir_ops.push(DirOp::Rename {
            from: from.to_string(),
            to: to.to_string(),
        });
        state.maybe_cut_power();
        Ok(())
    }
    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.state.lock().names.keys().cloned().collect())
    }
    fn sync_dir(&self) -> io::Result<()> {
        let mut state = self.state.lock();
        state.io_call()?;
        state.durable_names = state.names.clone();
        state.dir_ops.clear();
        state.maybe_cut_power();
        Ok(())
    }
    fn describe(&self) -> String {
        "memory".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsynced_bytes_are_lost_on_power_cut_and_synced_bytes_survive() {
        let dir = MemDir::new();
        let f = dir.open("a", true).unwrap();
        dir.sync_dir().unwrap();
        f.write_at(0, b"hello").unwrap();
        f.sync_data().unwrap();
        f.write_at(5, b" world").unwrap();
        let mut buf = [0u8; 11];
        f.read_at(0, &mut buf).unwrap();
        assert_eq!(&buf, b"hello world");
        let after = dir.power_loss(PowerLoss::DropUnsynced);
        assert_eq!(after.file_bytes("a").unwrap(), b"hello");
    }

    #[test]
    fn random_prefix_keeps_a_prefix_of_unsynced_writes() {
        let dir = MemDir::new();
        let f = dir.open("a", true).unwrap();
        dir.sync_dir().unwrap();
        f.write_at(0, b"aaaa").unwrap();
        f.write_at(4, b"bbbb").unwrap();
        for seed in 0..50 {
            let bytes = dir
                .power_loss(PowerLoss::KeepRandomPrefix { seed })
                .file_bytes("a")
                .unwrap();
            assert!(b"aaaabbbb".starts_with(&bytes), "{bytes:?}");
        }
    }

    #[test]
    fn random_pages_lose_unsynced_pages_out_of_order_and_keep_synced_ones() {
        let dir = MemDir::new();
        let f = dir.open("a", true).unwrap();
        dir.sync_dir().unwrap();
        f.write_at(0, &[1u8; MEM_PAGE_BYTES]).unwrap();
        f.sync_data().unwrap();
        f.write_at(MEM_PAGE_BYTES as u64, &[2u8; 3 * MEM_PAGE_BYTES])
            .unwrap();
        let (mut hole_before_kept, mut torn) = (false, false);
        for seed in 0..200 {
            let bytes = dir
                .power_loss(PowerLoss::RandomPages { seed })
                .file_bytes("a")
                .unwrap();
            assert!(
                bytes[..MEM_PAGE_BYTES].iter().all(|b| *b == 1),
                "synced page"
            );
            let pages: Vec<&[u8]> = bytes[MEM_PAGE_BYTES..].chunks(MEM_PAGE_BYTES).collect();
            for page in &pages {
                assert!(page.iter().all(|b| *b == 0 || *b == 2), "old or new bytes");
            }
            let new = |p: &[u8]| p.iter().all(|b| *b == 2);
            let old = |p: &[u8]| p.iter().all(|b| *b == 0);
            if pages.len() == 3 && old(pages[0]) && !old(pages[2]) {
                hole_before_kept = true;
            }
            if pages.iter().any(|p| !new(p) && !old(p)) {
                torn = true;
            }
        }
        assert!(
            hole_before_kept,
            "a later page survives an earlier lost one"
        );
        assert!(torn, "a page is torn");
    }

    #[test]
    fn directory_operations_are_lost_unless_the_directory_was_synced() {
        let dir = MemDir::new();
        let a = dir.open("a", true).unwrap();
        a.write_at(0, b"a").unwrap();
        a.sync_data().unwrap();
        let after = dir.power_loss(PowerLoss::DropUnsynced);
        assert_eq!(
            after.list().unwrap(),
            Vec::<String>::new(),
            "create not synced"
        );
        dir.sync_dir().unwrap();
        dir.rename("a", "b").unwrap();
        let after = dir.power_loss(PowerLoss::DropUnsynced);
        assert_eq!(
            after.list().unwrap(),
            vec!["a".to_string()],
            "rename not synced"
        );
        assert_eq!(after.file_bytes("a").unwrap(), b"a");
        dir.sync_dir().unwrap();
        dir.remove("b").unwrap();
        let after = dir.power_loss(PowerLoss::DropUnsynced);
        assert_eq!(
            after.list().unwrap(),
            vec!["b".to_string()],
            "remove not synced"
        );
        dir.sync_dir().unwrap();
        let after = dir.power_loss(PowerLoss::DropUnsynced);
        assert!(after.list().unwrap().is_empty());
    }

    #[test]
    fn injected_faults_fire_once_at_the_chosen_call() {
        let dir = MemDir::new();
        let f = dir.open("a", true).unwrap();
        dir.fail_sync(1);
        f.write_at(0, b"x").unwrap();
        assert!(f.sync_data().is_err());
        dir.set_capacity(Some(4));
        assert_eq!(
            f.write_at(0, b"too long").unwrap_err().raw_os_error(),
            Some(ENOSPC)
        );
        dir.arm_power_cut(1, PowerLoss::DropUnsynced);
        f.write_at(0, b"y").unwrap();
        assert!(dir.power_is_cut());
        assert!(f.write_at(0, b"z").is_err());
    }
}
