//! The filesystem as two layers: what applications see now, and what a disk holds durably.
//!
//! Every regular file keeps its current bytes and its durable bytes; the pages written since
//! the file's last `fsync`/`fdatasync` are listed as unsynced. Every directory keeps its
//! current entries and its durable entries (as of its last `fsync`). A power cut rebuilds the
//! current layer from the durable one after deciding, per [`LossMode`], which unsynced pages
//! and directory changes had reached the disk anyway. No I/O here: the FUSE glue
//! (`crate::fuse`) and the unit tests drive it directly.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::time::SystemTime;

/// The unit of loss: a disk writes back whole pages, in no promised order.
pub const PAGE_BYTES: u64 = 4096;
/// The unit a torn page is torn at: a sector is written whole or not at all.
pub const SECTOR_BYTES: u64 = 512;
/// The inode number of the root directory (FUSE's fixed root).
pub const ROOT_INO: u64 = 1;

/// Which unsynced changes a power cut loses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossMode {
    /// Every write, truncation and directory change since the last sync is lost.
    DropAll,
    /// Each unsynced page, each unsynced truncation and each directory's unsynced changes
    /// (as a whole) independently reached the disk or not, with probability 1/2, drawn from
    /// `seed`: the same seed on the same history loses the same pages.
    RandomPages {
        /// Seed of the draw.
        seed: u64,
    },
    /// Everything unsynced reached the disk except the last unsynced page of each file, of
    /// which only a prefix of whole sectors (0 to 7, drawn from `seed`) did.
    TornLastPage {
        /// Seed of the draw.
        seed: u64,
    },
}

/// What a power cut did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CutReport {
    /// Pages written since their file's last sync, over all files.
    pub pages_unsynced: u64,
    /// Of those, pages that did not reach the disk.
    pub pages_lost: u64,
    /// Of those, pages that reached the disk only in part.
    pub pages_torn: u64,
    /// Directories with changes since their last sync.
    pub dirs_unsynced: u64,
    /// Of those, directories whose changes were lost.
    pub dirs_lost: u64,
    /// Bytes in regular files after the cut.
    pub bytes_after: u64,
}

/// A failed operation, as the errno FUSE answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FsError {
    /// No such file or directory (`ENOENT`).
    #[error("no such file or directory")]
    NotFound,
    /// The name exists (`EEXIST`).
    #[error("file exists")]
    Exists,
    /// A directory was expected (`ENOTDIR`).
    #[error("not a directory")]
    NotDir,
    /// A regular file was expected (`EISDIR`).
    #[error("is a directory")]
    IsDir,
    /// `rmdir` of a directory with entries, or a rename over one (`ENOTEMPTY`).
    #[error("directory not empty")]
    NotEmpty,
    /// A bad argument, such as renaming a directory into itself (`EINVAL`).
    #[error("invalid argument")]
    Invalid,
    /// An operation this filesystem does not model (`EOPNOTSUPP`).
    #[error("operation not supported")]
    NotSupported,
    /// The power is off ([`Model::arm_freeze`] fired): nothing changes any more (`EIO`).
    #[error("input/output error: the power is off")]
    PowerOff,
}

/// File or directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
}

/// The attributes `stat` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    /// Inode number.
    pub ino: u64,
    /// File or directory.
    pub kind: Kind,
    /// Length in bytes.
    pub size: u64,
    /// Permission bits (`mode & 0o7777`).
    pub perm: u16,
    /// Hard links (names in the current namespace; 2 for a directory).
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Last access.
    pub atime: SystemTime,
    /// Last data change.
    pub mtime: SystemTime,
    /// Last attribute change.
    pub ctime: SystemTime,
}

#[derive(Debug)]
struct FileNode {
    /// What reads return now.
    data: Vec<u8>,
    /// What the disk holds.
    durable: Vec<u8>,
    /// Page indexes written since the last sync.
    unsynced_pages: BTreeSet<u64>,
    /// The shortest length since the last sync: a truncation below it is unsynced.
    len_min_unsynced: usize,
}

#[derive(Debug)]
struct DirNode {
    /// `..`; rebuilt from the namespace after a cut.
    parent: u64,
    entries: BTreeMap<OsString, u64>,
    durable: BTreeMap<OsString, u64>,
}

#[derive(Debug)]
enum Node {
    File(FileNode),
    Dir(DirNode),
}

#[derive(Debug)]
struct Inode {
    node: Node,
    perm: u16,
    uid: u32,
    gid: u32,
    atime: SystemTime,
    mtime: SystemTime,
    ctime: SystemTime,
    nlink: u32,
    /// Open file handles: an unlinked file lives while one is open.
    open_handles: u32,
}

/// A deterministic draw (SplitMix64): the loss of a seeded cut is reproducible.
#[derive(Debug)]
struct Draw(u64);

impl Draw {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }
}

/// The whole filesystem, both layers.
#[derive(Debug)]
pub struct Model {
    inodes: BTreeMap<u64, Inode>,
    ino_next: u64,
    /// The power went off: every change fails until the cut.
    frozen: bool,
    /// Turn the power off once this many pages are unsynced.
    freeze_at_pages_unsynced: Option<u64>,
}

impl Default for Model {
    fn default() -> Self {
        Self::new()
    }
}

fn page_range(offset: u64, len: u64) -> std::ops::RangeInclusive<u64> {
    if len == 0 {
        // An empty range: start > end.
        #[allow(clippy::reversed_empty_ranges)]
        return 1..=0;
    }
    (offset / PAGE_BYTES)..=((offset + len - 1) / PAGE_BYTES)
}

impl Model {
    /// An empty filesystem: a root directory, durable.
    pub fn new() -> Model {
        let now = SystemTime::now();
        let mut inodes = BTreeMap::new();
        inodes.insert(
            ROOT_INO,
            Inode {
                node: Node::Dir(DirNode {
                    parent: ROOT_INO,
                    entries: BTreeMap::new(),
                    durable: BTreeMap::new(),
                }),
                perm: 0o755,
                uid: 0,
                gid: 0,
                atime: now,
                mtime: now,
                ctime: now,
                nlink: 2,
                open_handles: 0,
            },
        );
        Model {
            inodes,
            ino_next: ROOT_INO + 1,
            frozen: false,
            freeze_at_pages_unsynced: None,
        }
    }

    fn live(&self) -> Result<(), FsError> {
        if self.frozen {
            Err(FsError::PowerOff)
        } else {
            Ok(())
        }
    }

    /// Turns the power off (from then on every change fails with `EIO`, so the durable layer
    /// and the unsynced one stay as they are until [`Model::cut_power`]) right after the write
    /// that leaves `pages_min` pages unsynced. This catches a store between its write and its
    /// sync whatever its write path (an io_uring write and its linked fsync complete even
    /// while the process is stopped).
    pub fn arm_freeze(&mut self, pages_min: u64) {
        self.freeze_at_pages_unsynced = Some(pages_min.max(1));
    }

    /// Whether the power went off ([`Model::arm_freeze`]).
    pub fn is_frozen(&self) -> bool {
        self.frozen
    }

    fn inode(&self, ino: u64) -> Result<&Inode, FsError> {
        self.inodes.get(&ino).ok_or(FsError::NotFound)
    }

    fn inode_mut(&mut self, ino: u64) -> Result<&mut Inode, FsError> {
        self.inodes.get_mut(&ino).ok_or(FsError::NotFound)
    }

    fn dir(&self, ino: u64) -> Result<&DirNode, FsError> {
        match &self.inode(ino)?.node {
            Node::Dir(d) => Ok(d),
            Node::File(_) => Err(FsError::NotDir),
        }
    }

    fn dir_mut(&mut self, ino: u64) -> Result<&mut DirNode, FsError> {
        match &mut self.inode_mut(ino)?.node {
            Node::Dir(d) => Ok(d),
            Node::File(_) => Err(FsError::NotDir),
        }
    }

    fn file_mut(&mut self, ino: u64) -> Result<&mut FileNode, FsError> {
        match &mut self.inode_mut(ino)?.node {
            Node::File(f) => Ok(f),
            Node::Dir(_) => Err(FsError::IsDir),
        }
    }

    /// The attributes of `ino`.
    pub fn attr(&self, ino: u64) -> Result<Attr, FsError> {
        let i = self.inode(ino)?;
        let (kind, size) = match &i.node {
            Node::File(f) => (Kind::File, f.data.len() as u64),
            Node::Dir(d) => (Kind::Dir, d.entries.len() as u64),
        };
        Ok(Attr {
            ino,
            kind,
            size,
            perm: i.perm,
            nlink: i.nlink,
            uid: i.uid,
            gid: i.gid,
            atime: i.atime,
            mtime: i.mtime,
            ctime: i.ctime,
        })
    }

    /// The inode `name` in directory `parent` names.
    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<u64, FsError> {
        self.dir(parent)?
            .entries
            .get(name)
            .copied()
            .ok_or(FsError::NotFound)
    }

    fn add_inode(&mut self, node: Node, perm: u16, uid: u32, gid: u32) -> u64 {
        let ino = self.ino_next;
        self.ino_next += 1;
        let now = SystemTime::now();
        let nlink = match node {
            Node::File(_) => 1,
            Node::Dir(_) => 2,
        };
        self.inodes.insert(
            ino,
            Inode {
                node,
                perm,
                uid,
                gid,
                atime: now,
                mtime: now,
                ctime: now,
                nlink,
                open_handles: 0,
            },
        );
        ino
    }

    fn touch_dir(&mut self, ino: u64) {
        if let Some(i) = self.inodes.get_mut(&ino) {
            let now = SystemTime::now();
            i.mtime = now;
            i.ctime = now;
        }
    }

    /// Creates an empty regular file `name` in `parent` (a volatile directory change).
    pub fn create(
        &mut self,
        parent: u64,
        name: &OsStr,
        perm: u16,
        uid: u32,
        gid: u32,
    ) -> Result<u64, FsError> {
        self.live()?;
        if self.dir(parent)?.entries.contains_key(name) {
            return Err(FsError::Exists);
        }
        let ino = self.add_inode(
            Node::File(FileNode {
                data: Vec::new(),
                durable: Vec::new(),
                unsynced_pages: BTreeSet::new(),
                len_min_unsynced: 0,
            }),
            perm,
            uid,
            gid,
        );
        self.dir_mut(parent)?.entries.insert(name.to_owned(), ino);
        self.touch_dir(parent);
        Ok(ino)
    }

    /// Creates an empty directory `name` in `parent` (a volatile directory change).
    pub fn mkdir(
        &mut self,
        parent: u64,
        name: &OsStr,
        perm: u16,
        uid: u32,
        gid: u32,
    ) -> Result<u64, FsError> {
        self.live()?;
        if self.dir(parent)?.entries.contains_key(name) {
            return Err(FsError::Exists);
        }
        let ino = self.add_inode(
            Node::Dir(DirNode {
                parent,
                entries: BTreeMap::new(),
                durable: BTreeMap::new(),
            }),
            perm,
            uid,
            gid,
        );
        self.dir_mut(parent)?.entries.insert(name.to_owned(), ino);
        self.touch_dir(parent);
        Ok(ino)
    }

    /// Removes the name of a regular file (a volatile directory change).
    pub fn unlink(&mut self, parent: u64, name: &OsStr) -> Result<(), FsError> {
        self.live()?;
        let ino = self.lookup(parent, name)?;
        if let Node::Dir(_) = self.inode(ino)?.node {
            return Err(FsError::IsDir);
        }
        self.dir_mut(parent)?.entries.remove(name);
        self.drop_link(ino);
        self.touch_dir(parent);
        Ok(())
    }

    /// Removes an empty directory (a volatile directory change).
    pub fn rmdir(&mut self, parent: u64, name: &OsStr) -> Result<(), FsError> {
        self.live()?;
        let ino = self.lookup(parent, name)?;
        if !self.dir(ino)?.entries.is_empty() {
            return Err(FsError::NotEmpty);
        }
        self.dir_mut(parent)?.entries.remove(name);
        self.drop_link(ino);
        self.touch_dir(parent);
        Ok(())
    }

    fn drop_link(&mut self, ino: u64) {
        if let Some(i) = self.inodes.get_mut(&ino) {
            i.nlink = match i.node {
                Node::File(_) => i.nlink.saturating_sub(1),
                Node::Dir(_) => 0,
            };
            i.ctime = SystemTime::now();
        }
    }

    /// Whether `ancestor` is `ino` or one of its parents (a rename must not make a loop).
    fn is_ancestor(&self, ancestor: u64, mut ino: u64) -> bool {
        loop {
            if ino == ancestor {
                return true;
            }
            match self.dir(ino) {
                Ok(d) if d.parent != ino => ino = d.parent,
                _ => return false,
            }
        }
    }

    /// Renames `name` in `parent` to `new_name` in `new_parent`, replacing what was there
    /// unless `no_replace` (two volatile directory changes when the directories differ).
    pub fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        no_replace: bool,
    ) -> Result<(), FsError> {
        self.live()?;
        let ino = self.lookup(parent, name)?;
        self.dir(new_parent)?;
        let moving_dir = matches!(self.inode(ino)?.node, Node::Dir(_));
        if moving_dir && self.is_ancestor(ino, new_parent) {
            return Err(FsError::Invalid);
        }
        if let Ok(old) = self.lookup(new_parent, new_name) {
            if old == ino {
                return Ok(());
            }
            if no_replace {
                return Err(FsError::Exists);
            }
            match (&self.inode(old)?.node, moving_dir) {
                (Node::Dir(d), true) if !d.entries.is_empty() => return Err(FsError::NotEmpty),
                (Node::Dir(_), false) => return Err(FsError::IsDir),
                (Node::File(_), true) => return Err(FsError::NotDir),
                _ => {}
            }
            self.drop_link(old);
        }
        self.dir_mut(parent)?.entries.remove(name);
        self.dir_mut(new_parent)?
            .entries
            .insert(new_name.to_owned(), ino);
        if moving_dir {
            self.dir_mut(ino)?.parent = new_parent;
        }
        self.touch_dir(parent);
        self.touch_dir(new_parent);
        Ok(())
    }

    /// The entries of directory `ino`, `.` and `..` first.
    pub fn readdir(&self, ino: u64) -> Result<Vec<(u64, Kind, OsString)>, FsError> {
        let d = self.dir(ino)?;
        let mut out = vec![
            (ino, Kind::Dir, OsString::from(".")),
            (d.parent, Kind::Dir, OsString::from("..")),
        ];
        for (name, child) in &d.entries {
            let kind = match self.inode(*child)?.node {
                Node::File(_) => Kind::File,
                Node::Dir(_) => Kind::Dir,
            };
            out.push((*child, kind, name.clone()));
        }
        Ok(out)
    }

    /// Up to `size` bytes of file `ino` from `offset`.
    pub fn read(&self, ino: u64, offset: u64, size: u32) -> Result<&[u8], FsError> {
        let f = match &self.inode(ino)?.node {
            Node::File(f) => f,
            Node::Dir(_) => return Err(FsError::IsDir),
        };
        let len = f.data.len() as u64;
        let start = offset.min(len) as usize;
        let end = offset.saturating_add(u64::from(size)).min(len) as usize;
        Ok(&f.data[start..end])
    }

    /// Writes `bytes` at `offset` (volatile until the file is synced).
    pub fn write(&mut self, ino: u64, offset: u64, bytes: &[u8]) -> Result<usize, FsError> {
        self.live()?;
        let f = self.file_mut(ino)?;
        let start = usize::try_from(offset).map_err(|_| FsError::Invalid)?;
        let end = start.checked_add(bytes.len()).ok_or(FsError::Invalid)?;
        if f.data.len() < end {
            f.data.resize(end, 0);
        }
        f.data[start..end].copy_from_slice(bytes);
        f.unsynced_pages
            .extend(page_range(offset, bytes.len() as u64));
        if let Ok(i) = self.inode_mut(ino) {
            let now = SystemTime::now();
            i.mtime = now;
            i.ctime = now;
        }
        if let Some(pages_min) = self.freeze_at_pages_unsynced {
            if self.usage().pages_unsynced >= pages_min {
                self.frozen = true;
            }
        }
        Ok(bytes.len())
    }

    /// Sets the length of file `ino` (`truncate`/`ftruncate`; volatile until synced).
    pub fn set_len(&mut self, ino: u64, len: u64) -> Result<(), FsError> {
        self.live()?;
        let f = self.file_mut(ino)?;
        let len = usize::try_from(len).map_err(|_| FsError::Invalid)?;
        if len < f.data.len() {
            f.data.truncate(len);
            // Pages wholly past the end no longer exist; the one holding the end stays
            // unsynced, its tail now zero.
            let first_gone = (len as u64).div_ceil(PAGE_BYTES);
            f.unsynced_pages.split_off(&first_gone);
            if !(len as u64).is_multiple_of(PAGE_BYTES) {
                f.unsynced_pages.insert(len as u64 / PAGE_BYTES);
            }
            f.len_min_unsynced = f.len_min_unsynced.min(len);
        } else {
            f.data.resize(len, 0);
        }
        if let Ok(i) = self.inode_mut(ino) {
            let now = SystemTime::now();
            i.mtime = now;
            i.ctime = now;
        }
        Ok(())
    }

    /// `fallocate`: mode 0 extends the file; `FALLOC_FL_KEEP_SIZE` (1) only reserves space,
    /// which memory needs not; `FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE` (3) zeroes a range.
    pub fn fallocate(&mut self, ino: u64, offset: u64, len: u64, mode: i32) -> Result<(), FsError> {
        self.live()?;
        let end = offset.checked_add(len).ok_or(FsError::Invalid)?;
        match mode {
            0 => {
                let size = self.attr(ino)?.size;
                if end > size {
                    self.set_len(ino, end)?;
                }
                Ok(())
            }
            1 => self.file_mut(ino).map(|_| ()),
            3 => {
                let size = self.attr(ino)?.size;
                let end = end.min(size);
                if end > offset {
                    let zeros =
                        vec![0u8; usize::try_from(end - offset).map_err(|_| FsError::Invalid)?];
                    self.write(ino, offset, &zeros)?;
                }
                Ok(())
            }
            _ => Err(FsError::NotSupported),
        }
    }

    /// Sets the permission bits, owner, group and times that are `Some`.
    pub fn set_meta(
        &mut self,
        ino: u64,
        perm: Option<u16>,
        uid: Option<u32>,
        gid: Option<u32>,
        atime: Option<SystemTime>,
        mtime: Option<SystemTime>,
    ) -> Result<(), FsError> {
        self.live()?;
        let i = self.inode_mut(ino)?;
        if let Some(p) = perm {
            i.perm = p;
        }
        if let Some(u) = uid {
            i.uid = u;
        }
        if let Some(g) = gid {
            i.gid = g;
        }
        if let Some(t) = atime {
            i.atime = t;
        }
        if let Some(t) = mtime {
            i.mtime = t;
        }
        i.ctime = SystemTime::now();
        Ok(())
    }

    /// `fsync`/`fdatasync` of a file (its bytes and length become durable) or of a directory
    /// (its entries become durable).
    pub fn sync(&mut self, ino: u64) -> Result<(), FsError> {
        self.live()?;
        match &mut self.inode_mut(ino)?.node {
            Node::File(f) => {
                let durable_keep = f.durable.len().min(f.len_min_unsynced);
                f.durable.truncate(durable_keep);
                f.durable.resize(f.data.len(), 0);
                for page in std::mem::take(&mut f.unsynced_pages) {
                    copy_page(&f.data, &mut f.durable, page, PAGE_BYTES);
                }
                f.len_min_unsynced = f.data.len();
                // The whole-content equality would cost a compare of the file per sync.
                debug_assert_eq!(f.data.len(), f.durable.len());
            }
            Node::Dir(d) => {
                d.durable = d.entries.clone();
                self.collect_garbage();
            }
        }
        Ok(())
    }

    /// `sync(2)` and a settled disk: everything becomes durable (as on a machine that ran
    /// for a while before its power cut).
    pub fn sync_all(&mut self) {
        let inos: Vec<u64> = self.inodes.keys().copied().collect();
        for ino in inos {
            // Every listed inode exists: sync cannot fail here.
            let _ = self.sync(ino);
        }
    }

    /// A file handle was opened on `ino`.
    pub fn open(&mut self, ino: u64) -> Result<(), FsError> {
        self.inode_mut(ino)?.open_handles += 1;
        Ok(())
    }

    /// A file handle on `ino` was closed.
    pub fn release(&mut self, ino: u64) {
        if let Some(i) = self.inodes.get_mut(&ino) {
            i.open_handles = i.open_handles.saturating_sub(1);
            if i.open_handles == 0 && i.nlink == 0 {
                self.collect_garbage();
            }
        }
    }

    /// Forgets inodes no name reaches, current or durable, and no handle holds open.
    fn collect_garbage(&mut self) {
        let mut live = BTreeSet::new();
        let mut todo = vec![ROOT_INO];
        while let Some(ino) = todo.pop() {
            if !live.insert(ino) {
                continue;
            }
            if let Some(Inode {
                node: Node::Dir(d), ..
            }) = self.inodes.get(&ino)
            {
                todo.extend(d.entries.values().chain(d.durable.values()).copied());
            }
        }
        self.inodes
            .retain(|ino, i| live.contains(ino) || i.open_handles > 0);
    }

    /// Bytes held unsynced (in pages) and bytes durable, over all files.
    pub fn usage(&self) -> Usage {
        let mut u = Usage::default();
        for i in self.inodes.values() {
            match &i.node {
                Node::File(f) => {
                    u.files += 1;
                    u.bytes += f.data.len() as u64;
                    u.bytes_durable += f.durable.len() as u64;
                    u.pages_unsynced += f.unsynced_pages.len() as u64;
                }
                Node::Dir(d) => {
                    u.dirs += 1;
                    if d.entries != d.durable {
                        u.dirs_unsynced += 1;
                    }
                }
            }
        }
        u
    }

    /// Cuts the power: decides per `mode` which unsynced changes reached the disk, then makes
    /// the disk the only truth (every handle is gone; unreachable inodes are forgotten).
    pub fn cut_power(&mut self, mode: LossMode) -> CutReport {
        self.frozen = false;
        self.freeze_at_pages_unsynced = None;
        let mut report = CutReport::default();
        let mut draw = Draw(match mode {
            LossMode::DropAll => 0,
            LossMode::RandomPages { seed } | LossMode::TornLastPage { seed } => seed,
        });
        // BTreeMap order: the draw is the same for the same history.
        for i in self.inodes.values_mut() {
            i.open_handles = 0;
            match &mut i.node {
                Node::File(f) => cut_file(f, mode, &mut draw, &mut report),
                Node::Dir(d) => {
                    if d.entries != d.durable {
                        report.dirs_unsynced += 1;
                        let kept = match mode {
                            LossMode::DropAll => false,
                            LossMode::RandomPages { .. } => draw.coin(),
                            LossMode::TornLastPage { .. } => true,
                        };
                        if kept {
                            d.durable = d.entries.clone();
                        } else {
                            report.dirs_lost += 1;
                            d.entries = d.durable.clone();
                        }
                    }
                }
            }
        }
        self.collect_garbage();
        self.relink();
        report.bytes_after = self.usage().bytes;
        report
    }

    /// Recomputes link counts and parents from the namespace (after a cut).
    fn relink(&mut self) {
        let mut links: BTreeMap<u64, (u32, u64)> = BTreeMap::new();
        links.insert(ROOT_INO, (1, ROOT_INO));
        for (ino, i) in &self.inodes {
            if let Node::Dir(d) = &i.node {
                for child in d.entries.values() {
                    let e = links.entry(*child).or_insert((0, *ino));
                    e.0 += 1;
                    e.1 = *ino;
                }
            }
        }
        for (ino, i) in self.inodes.iter_mut() {
            let (n, parent) = links.get(ino).copied().unwrap_or((0, ROOT_INO));
            match &mut i.node {
                Node::File(_) => i.nlink = n,
                Node::Dir(d) => {
                    i.nlink = 2;
                    d.parent = parent;
                }
            }
        }
    }
}

/// Copies page `page` of `from` into `to` (clipped to `from`'s end), `bytes_max` bytes of it.
fn copy_page(from: &[u8], to: &mut Vec<u8>, page: u64, bytes_max: u64) {
    let start = (page * PAGE_BYTES) as usize;
    let end = ((page * PAGE_BYTES + bytes_max.min(PAGE_BYTES)) as usize).min(from.len());
    if start >= end {
        return;
    }
    if to.len() < end {
        to.resize(end, 0);
    }
    to[start..end].copy_from_slice(&from[start..end]);
}

fn cut_file(f: &mut FileNode, mode: LossMode, draw: &mut Draw, report: &mut CutReport) {
    let pages = std::mem::take(&mut f.unsynced_pages);
    report.pages_unsynced += pages.len() as u64;
    let truncated = f.len_min_unsynced < f.durable.len();
    let truncation_kept = match mode {
        LossMode::DropAll => false,
        LossMode::RandomPages { .. } => truncated && draw.coin(),
        LossMode::TornLastPage { .. } => true,
    };
    if truncated && truncation_kept {
        f.durable.truncate(f.len_min_unsynced);
    }
    let last = pages.last().copied();
    for page in pages {
        match mode {
            LossMode::DropAll => report.pages_lost += 1,
            LossMode::RandomPages { .. } => {
                if draw.coin() {
                    copy_page(&f.data, &mut f.durable, page, PAGE_BYTES);
                } else {
                    report.pages_lost += 1;
                }
            }
            LossMode::TornLastPage { .. } => {
                if Some(page) == last {
                    let sectors = draw.next() % (PAGE_BYTES / SECTOR_BYTES);
                    copy_page(&f.data, &mut f.durable, page, sectors * SECTOR_BYTES);
                    report.pages_torn += 1;
                } else {
                    copy_page(&f.data, &mut f.durable, page, PAGE_BYTES);
                }
            }
        }
    }
    f.data = f.durable.clone();
    f.len_min_unsynced = f.data.len();
}

/// How much the filesystem holds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Regular files (including unlinked ones still held).
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Bytes in regular files, as applications see them.
    pub bytes: u64,
    /// Bytes in regular files, as the disk holds them.
    pub bytes_durable: u64,
    /// Pages written since their file's last sync.
    pub pages_unsynced: u64,
    /// Directories with changes since their last sync.
    pub dirs_unsynced: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> &OsStr {
        OsStr::new(s)
    }

    fn file(m: &mut Model, n: &str) -> u64 {
        let ino = m.create(ROOT_INO, name(n), 0o644, 0, 0).unwrap();
        m.sync(ROOT_INO).unwrap();
        ino
    }

    fn content(m: &Model, n: &str) -> Vec<u8> {
        let ino = m.lookup(ROOT_INO, name(n)).unwrap();
        m.read(ino, 0, u32::MAX).unwrap().to_vec()
    }

    #[test]
    fn a_write_without_fsync_is_gone_after_a_cut() {
        let mut m = Model::new();
        let f = file(&mut m, "a");
        m.write(f, 0, b"hello").unwrap();
        assert_eq!(content(&m, "a"), b"hello", "visible before the cut");
        let r = m.cut_power(LossMode::DropAll);
        assert_eq!(content(&m, "a"), b"");
        assert_eq!((r.pages_unsynced, r.pages_lost), (1, 1));
    }

    #[test]
    fn fsynced_data_survives_and_later_writes_do_not() {
        let mut m = Model::new();
        let f = file(&mut m, "a");
        m.write(f, 0, &[1u8; 10_000]).unwrap();
        m.sync(f).unwrap();
        m.write(f, 5000, &[2u8; 10_000]).unwrap();
        m.cut_power(LossMode::DropAll);
        assert_eq!(content(&m, "a"), vec![1u8; 10_000]);
    }

    #[test]
    fn an_unsynced_truncation_is_undone_and_a_synced_one_kept() {
        let mut m = Model::new();
        let f = file(&mut m, "a");
        m.write(f, 0, &[7u8; 9000]).unwrap();
        m.sync(f).unwrap();
        m.set_len(f, 100).unwrap();
        m.set_len(f, 9000).unwrap();
        assert_eq!(
            m.read(f, 100, 10).unwrap(),
            &[0u8; 10],
            "zeros after re-extension"
        );
        m.cut_power(LossMode::DropAll);
        assert_eq!(content(&m, "a"), vec![7u8; 9000]);
        m.set_len(f, 100).unwrap();
        m.set_len(f, 9000).unwrap();
        m.sync(f).unwrap();
        m.cut_power(LossMode::DropAll);
        let mut want = vec![7u8; 100];
        want.resize(9000, 0);
        assert_eq!(content(&m, "a"), want);
    }

    #[test]
    fn a_created_file_is_lost_unless_its_directory_was_synced() {
        let mut m = Model::new();
        let f = m.create(ROOT_INO, name("new"), 0o644, 0, 0).unwrap();
        m.write(f, 0, b"data").unwrap();
        m.sync(f).unwrap();
        m.cut_power(LossMode::DropAll);
        assert_eq!(m.lookup(ROOT_INO, name("new")), Err(FsError::NotFound));
        assert_eq!(m.usage().files, 0, "the unreachable inode is forgotten");
    }

    #[test]
    fn a_rename_without_a_directory_fsync_is_lost() {
        let mut m = Model::new();
        let tmp = file(&mut m, "index.tmp");
        let old = file(&mut m, "index");
        m.write(old, 0, b"old").unwrap();
        m.sync(old).unwrap();
        m.write(tmp, 0, b"new").unwrap();
        m.sync(tmp).unwrap();
        m.rename(ROOT_INO, name("index.tmp"), ROOT_INO, name("index"), false)
            .unwrap();
        assert_eq!(content(&m, "index"), b"new");
        m.cut_power(LossMode::DropAll);
        assert_eq!(content(&m, "index"), b"old", "the rename is lost");
        assert_eq!(content(&m, "index.tmp"), b"new");

        m.rename(ROOT_INO, name("index.tmp"), ROOT_INO, name("index"), false)
            .unwrap();
        m.sync(ROOT_INO).unwrap();
        m.cut_power(LossMode::DropAll);
        assert_eq!(content(&m, "index"), b"new", "a synced rename stays");
        assert_eq!(
            m.lookup(ROOT_INO, name("index.tmp")),
            Err(FsError::NotFound)
        );
    }

    #[test]
    fn an_unlink_without_a_directory_fsync_is_undone() {
        let mut m = Model::new();
        let f = file(&mut m, "seg");
        m.write(f, 0, b"kept").unwrap();
        m.sync(f).unwrap();
        m.unlink(ROOT_INO, name("seg")).unwrap();
        m.cut_power(LossMode::DropAll);
        assert_eq!(content(&m, "seg"), b"kept");
        assert_eq!(m.attr(f).unwrap().nlink, 1);
    }

    #[test]
    fn a_directory_made_without_syncing_its_parent_is_lost_with_its_content() {
        let mut m = Model::new();
        let d = m.mkdir(ROOT_INO, name("d"), 0o755, 0, 0).unwrap();
        let f = m.create(d, name("x"), 0o644, 0, 0).unwrap();
        m.write(f, 0, b"x").unwrap();
        m.sync(f).unwrap();
        m.sync(d).unwrap();
        m.cut_power(LossMode::DropAll);
        assert_eq!(m.lookup(ROOT_INO, name("d")), Err(FsError::NotFound));
        assert_eq!(
            m.usage(),
            Usage {
                dirs: 1,
                ..Usage::default()
            }
        );
    }

    #[test]
    fn a_torn_last_page_keeps_whole_sectors_of_it_and_every_earlier_page() {
        for seed in 0..16 {
            let mut m = Model::new();
            let f = file(&mut m, "j");
            m.write(f, 0, &[1u8; 8192]).unwrap();
            m.sync(f).unwrap();
            m.write(f, 8192, &[2u8; 8192]).unwrap();
            let r = m.cut_power(LossMode::TornLastPage { seed });
            assert_eq!((r.pages_unsynced, r.pages_torn), (2, 1));
            let c = content(&m, "j");
            assert!(c.len() >= 3 * 4096 && c.len() < 4 * 4096, "{}", c.len());
            assert!(c[..3 * 4096].iter().take(8192).all(|b| *b == 1));
            assert!(c[8192..3 * 4096].iter().all(|b| *b == 2));
            let torn = c.len() - 3 * 4096;
            assert_eq!(torn % 512, 0, "whole sectors only");
            assert!(c[3 * 4096..].iter().all(|b| *b == 2));
        }
    }

    #[test]
    fn a_torn_last_page_over_old_data_mixes_old_and_new_sectors() {
        let mut m = Model::new();
        let f = file(&mut m, "j");
        m.write(f, 0, &[1u8; 4096]).unwrap();
        m.sync(f).unwrap();
        m.write(f, 0, &[2u8; 4096]).unwrap();
        // Find a seed that tears somewhere inside the page.
        let seed = (0..64)
            .find(|s| {
                let mut d = Draw(*s);
                !d.next().is_multiple_of(8)
            })
            .unwrap();
        m.cut_power(LossMode::TornLastPage { seed });
        let c = content(&m, "j");
        assert_eq!(c.len(), 4096);
        let new = c.iter().take_while(|b| **b == 2).count();
        assert!(new > 0 && new < 4096 && new % 512 == 0, "{new}");
        assert!(c[new..].iter().all(|b| *b == 1));
    }

    /// Writes 64 pages unsynced to a file and cuts with `mode`: which pages survived.
    fn random_cut(seed: u64) -> (Vec<u8>, CutReport) {
        let mut m = Model::new();
        let f = file(&mut m, "j");
        for p in 0..64u8 {
            m.write(f, u64::from(p) * PAGE_BYTES, &[p + 1; PAGE_BYTES as usize])
                .unwrap();
        }
        let r = m.cut_power(LossMode::RandomPages { seed });
        let c = content(&m, "j");
        let pages = c.chunks(PAGE_BYTES as usize).map(|p| p[0]).collect();
        (pages, r)
    }

    #[test]
    fn random_page_loss_is_seeded_deterministic_and_not_a_prefix() {
        let (a, ra) = random_cut(42);
        let (b, rb) = random_cut(42);
        assert_eq!(a, b, "same seed, same loss");
        assert_eq!(ra, rb);
        let (c, _) = random_cut(43);
        assert_ne!(a, c, "another seed, another loss");
        assert!(ra.pages_lost > 0 && ra.pages_lost < 64, "{ra:?}");
        // A hole (a zero page) with surviving pages after it: not a clean prefix.
        let hole = a.iter().position(|p| *p == 0).unwrap();
        assert!(a[hole..].iter().any(|p| *p != 0), "{a:?}");
        for (i, p) in a.iter().enumerate() {
            assert!(*p == 0 || usize::from(*p) == i + 1, "page {i} holds {p}");
        }
    }

    #[test]
    fn sync_all_makes_every_file_and_directory_durable() {
        let mut m = Model::new();
        let d = m.mkdir(ROOT_INO, name("d"), 0o755, 0, 0).unwrap();
        let f = m.create(d, name("f"), 0o644, 0, 0).unwrap();
        m.write(f, 0, b"x").unwrap();
        m.sync_all();
        let r = m.cut_power(LossMode::DropAll);
        assert_eq!((r.pages_unsynced, r.dirs_unsynced), (0, 0));
        assert_eq!(m.read(m.lookup(d, name("f")).unwrap(), 0, 9).unwrap(), b"x");
    }

    #[test]
    fn an_armed_freeze_stops_every_change_after_the_write_that_leaves_pages_unsynced() {
        let mut m = Model::new();
        let f = file(&mut m, "j");
        m.arm_freeze(2);
        m.write(f, 0, b"a").unwrap();
        m.sync(f).unwrap();
        assert!(!m.is_frozen());
        m.write(f, 4096, b"b").unwrap();
        m.write(f, 8192, b"c").unwrap();
        assert!(m.is_frozen(), "two pages unsynced");
        assert_eq!(m.sync(f), Err(FsError::PowerOff));
        assert_eq!(m.write(f, 0, b"x"), Err(FsError::PowerOff));
        assert_eq!(
            m.create(ROOT_INO, name("k"), 0o644, 0, 0),
            Err(FsError::PowerOff)
        );
        assert_eq!(m.read(f, 0, 1).unwrap(), b"a", "reads still work");
        let r = m.cut_power(LossMode::DropAll);
        assert_eq!(r.pages_lost, 2);
        assert!(!m.is_frozen(), "the power is back after the cut");
        assert_eq!(content(&m, "j"), b"a");
        m.write(f, 0, b"y").unwrap();
    }

    #[test]
    fn an_unlinked_open_file_lives_until_closed() {
        let mut m = Model::new();
        let f = file(&mut m, "a");
        m.open(f).unwrap();
        m.unlink(ROOT_INO, name("a")).unwrap();
        m.sync(ROOT_INO).unwrap();
        m.write(f, 0, b"still").unwrap();
        assert_eq!(m.read(f, 0, 10).unwrap(), b"still");
        m.release(f);
        assert_eq!(m.attr(f), Err(FsError::NotFound));
    }

    #[test]
    fn rename_refuses_a_loop_and_a_non_empty_target() {
        let mut m = Model::new();
        let a = m.mkdir(ROOT_INO, name("a"), 0o755, 0, 0).unwrap();
        m.mkdir(a, name("b"), 0o755, 0, 0).unwrap();
        let c = m.mkdir(ROOT_INO, name("c"), 0o755, 0, 0).unwrap();
        m.create(c, name("f"), 0o644, 0, 0).unwrap();
        let b = m.lookup(a, name("b")).unwrap();
        assert_eq!(
            m.rename(ROOT_INO, name("a"), b, name("x"), false),
            Err(FsError::Invalid)
        );
        assert_eq!(
            m.rename(a, name("b"), ROOT_INO, name("c"), false),
            Err(FsError::NotEmpty)
        );
        assert_eq!(m.rmdir(ROOT_INO, name("c")), Err(FsError::NotEmpty));
    }
}
