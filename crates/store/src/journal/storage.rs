//! The storage seam, in the manner of redb's `StorageBackend`.
//!
//! Every byte the journal reads or writes goes through [`StorageDir`] (open, create, remove,
//! rename, list files, sync the directory) and [`StorageFile`] (positional read and write,
//! `set_len`, `sync_data`, `len`). Two implementations:
//!
//! - [`FileDir`]: real files in a directory (`std::fs`, positional I/O, `fdatasync`);
//! - [`MemDir`]: files in memory that keep bytes written but not yet synced apart from bytes
//!   synced, so tests can cut the power at any I/O call (dropping unsynced bytes, keeping an
//!   arbitrary prefix of them, or tearing a write) and inject failures (EIO on a write or a sync,
//!   ENOSPC past a capacity).
//!
//! Directory operations (create, remove, rename) are modelled as durable at once by [`MemDir`];
//! the journal still calls [`StorageDir::sync_dir`] after them, which [`FileDir`] implements with
//! an `fsync` of the directory.

use std::collections::BTreeMap;
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
        std::fs::create_dir_all(path.as_ref())?;
        Ok(FileDir {
            path: path.as_ref().to_path_buf(),
        })
    }
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

/// A write or truncation that reached the "page cache" but not the "disk".
#[derive(Debug, Clone)]
enum Pending {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

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

/// What a [`MemDir`] does to unsynced bytes when the power is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerLoss {
    /// Every unsynced change is lost.
    DropUnsynced,
    /// Each file keeps a random prefix of its unsynced changes, and the first change it loses
    /// may be torn (a random prefix of that write survives). Deterministic in the seed.
    KeepRandomPrefix {
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
}

#[derive(Debug, Default)]
struct MemState {
    files: BTreeMap<String, MemFileData>,
    faults: Faults,
    writes: u64,
    syncs: u64,
    io_calls: u64,
    /// Set once the power is cut: the image that survived, and every later I/O call fails.
    crash_image: Option<BTreeMap<String, MemFileData>>,
}

/// An in-memory directory that models bytes written but not synced. Cloning shares the files.
#[derive(Clone, Default)]
pub struct MemDir {
    state: Arc<Mutex<MemState>>,
}

impl fmt::Debug for MemDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.lock();
        f.debug_struct("MemDir")
            .field("files", &state.files.keys().collect::<Vec<_>>())
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

fn power_loss_image(
    files: &BTreeMap<String, MemFileData>,
    loss: PowerLoss,
) -> BTreeMap<String, MemFileData> {
    let mut rng = match loss {
        PowerLoss::DropUnsynced => None,
        PowerLoss::KeepRandomPrefix { seed } => Some(SplitMix64(seed)),
    };
    files
        .iter()
        .map(|(name, data)| {
            let mut kept = data.durable.clone();
            if let Some(rng) = rng.as_mut() {
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
                    if rng.next_u64() % 2 == 0 && !bytes.is_empty() {
                        let torn = rng.up_to(bytes.len() as u64 - 1) as usize;
                        let change = Pending::Write {
                            offset: *offset,
                            data: bytes[..torn].to_vec(),
                        };
                        apply_pending(&mut kept, &change);
                    }
                }
            }
            let allocated_bytes = kept.len() as u64;
            (
                name.clone(),
                MemFileData {
                    durable: kept.clone(),
                    current: kept,
                    pending: Vec::new(),
                    allocated_bytes,
                },
            )
        })
        .collect()
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
            None => power_loss_image(&state.files, loss),
        };
        MemDir {
            state: Arc::new(Mutex::new(MemState {
                files,
                ..MemState::default()
            })),
        }
    }

    /// After `io_calls` more I/O calls (writes, set_len, syncs), cut the power: the image taken
    /// then is what [`MemDir::power_loss`] returns from now on, and every later I/O call fails.
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

    /// I/O calls (writes, set_len, syncs) made so far.
    pub fn io_calls(&self) -> u64 {
        self.state.lock().io_calls
    }

    /// The current bytes of `name` (what reads see), for tests that corrupt files.
    pub fn file_bytes(&self, name: &str) -> Option<Vec<u8>> {
        self.state.lock().files.get(name).map(|f| f.current.clone())
    }

    /// Replaces the bytes of `name`, durably (tests use it to flip bits or truncate).
    pub fn put_file_bytes(&self, name: &str, bytes: Vec<u8>) {
        let mut state = self.state.lock();
        let allocated_bytes = bytes.len() as u64;
        state.files.insert(
            name.to_string(),
            MemFileData {
                durable: bytes.clone(),
                current: bytes,
                pending: Vec::new(),
                allocated_bytes,
            },
        );
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
                self.crash_image = Some(power_loss_image(&self.files, loss));
            }
        }
    }

    fn allocated_total(&self) -> u64 {
        self.files.values().map(|f| f.allocated_bytes).sum()
    }
}

#[derive(Debug)]
struct MemFile {
    name: String,
    state: Arc<Mutex<MemState>>,
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{name}: no such file"))
}

impl StorageFile for MemFile {
    fn len(&self) -> io::Result<u64> {
        let state = self.state.lock();
        let file = state
            .files
            .get(&self.name)
            .ok_or_else(|| not_found(&self.name))?;
        Ok(file.current.len() as u64)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let state = self.state.lock();
        let file = state
            .files
            .get(&self.name)
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
        let mut state = self.state.lock();
        state.io_call()?;
        state.writes += 1;
        if state.faults.fail_write_at == Some(state.writes) {
            return Err(io::Error::from_raw_os_error(EIO));
        }
        let end = offset + buf.len() as u64;
        let allocated_before = state
            .files
            .get(&self.name)
            .ok_or_else(|| not_found(&self.name))?
            .allocated_bytes;
        let growth = end.saturating_sub(allocated_before);
        if let Some(capacity) = state.faults.capacity_bytes {
            if state.allocated_total() + growth > capacity {
                return Err(io::Error::from_raw_os_error(ENOSPC));
            }
        }
        let file = state
            .files
            .get_mut(&self.name)
            .ok_or_else(|| not_found(&self.name))?;
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
        let mut state = self.state.lock();
        state.io_call()?;
        let file = state
            .files
            .get_mut(&self.name)
            .ok_or_else(|| not_found(&self.name))?;
        let change = Pending::SetLen(len);
        apply_pending(&mut file.current, &change);
        file.pending.push(change);
        // Extending is sparse (no allocation); shrinking frees.
        file.allocated_bytes = file.allocated_bytes.min(len);
        state.maybe_cut_power();
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut state = self.state.lock();
        state.io_call()?;
        state.syncs += 1;
        if state.faults.fail_sync_at == Some(state.syncs) {
            // Like Linux after a failed fsync: the dirty pages may be gone and the error is
            // reported once. The store must never retry and trust the data.
            return Err(io::Error::from_raw_os_error(EIO));
        }
        let file = state
            .files
            .get_mut(&self.name)
            .ok_or_else(|| not_found(&self.name))?;
        file.durable = file.current.clone();
        file.pending.clear();
        state.maybe_cut_power();
        Ok(())
    }
}

impl StorageDir for MemDir {
    fn open(&self, name: &str, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        let mut state = self.state.lock();
        if !state.files.contains_key(name) {
            if !create {
                return Err(not_found(name));
            }
            state.io_call()?;
            state.files.insert(name.to_string(), MemFileData::default());
            state.maybe_cut_power();
        }
        Ok(Arc::new(MemFile {
            name: name.to_string(),
            state: self.state.clone(),
        }))
    }
    fn create_new(&self, name: &str) -> io::Result<Arc<dyn StorageFile>> {
        let mut state = self.state.lock();
        if state.files.contains_key(name) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{name}: file exists"),
            ));
        }
        state.io_call()?;
        state.files.insert(name.to_string(), MemFileData::default());
        state.maybe_cut_power();
        Ok(Arc::new(MemFile {
            name: name.to_string(),
            state: self.state.clone(),
        }))
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        let mut state = self.state.lock();
        state.io_call()?;
        state.files.remove(name).ok_or_else(|| not_found(name))?;
        state.maybe_cut_power();
        Ok(())
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut state = self.state.lock();
        state.io_call()?;
        let file = state.files.remove(from).ok_or_else(|| not_found(from))?;
        state.files.insert(to.to_string(), file);
        state.maybe_cut_power();
        Ok(())
    }
    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.state.lock().files.keys().cloned().collect())
    }
    fn sync_dir(&self) -> io::Result<()> {
        let mut state = self.state.lock();
        state.io_call()?;
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
