//! A power-loss test filesystem, in the spirit of Jepsen's LazyFS.
//!
//! A FUSE filesystem held wholly in memory that remembers, besides what applications see, what
//! a disk would hold durably: a file's writes become durable at its `fsync`/`fdatasync`, a
//! directory's creates, renames and removes at the directory's `fsync`. [`PowerFs::cut_power`]
//! loses the rest, per a [`LossMode`]: all of it, a seeded random subset of pages, or a torn
//! last page. Processes using the filesystem must be dead (kill -9) before a cut: the cut
//! unmounts (which empties the kernel's caches of it), rebuilds the files from the durable
//! layer, and mounts again at the same place. See `docs/testing.md`.
//!
//! Needs root (or `fusermount3` setuid), `/dev/fuse` and the `fusermount3` binary (Debian
//! package `fuse3`).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod fuse;
pub mod model;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fuser::{BackgroundSession, Config, MountOption};
use parking_lot::Mutex;

pub use model::{CutReport, LossMode, Usage, PAGE_BYTES, SECTOR_BYTES};

/// A failure to mount or unmount.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `/dev/fuse` is missing: this machine (or container) cannot run FUSE filesystems.
    #[error("/dev/fuse is missing: the power-loss tests need FUSE (a machine or container with /dev/fuse, run as root)")]
    NoFuseDevice,
    /// Mounting failed (no `fusermount3`? not root?).
    #[error("mounting the power-loss filesystem on {path}: {source} (needs root and the fusermount3 binary, Debian package fuse3)")]
    Mount {
        /// The mount point.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Unmounting failed.
    #[error("unmounting the power-loss filesystem from {path}: {source}")]
    Unmount {
        /// The mount point.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// A mounted power-loss filesystem; unmounted on drop (its content is then gone).
#[derive(Debug)]
pub struct PowerFs {
    model: Arc<Mutex<model::Model>>,
    mount_point: PathBuf,
    session: Option<BackgroundSession>,
}

impl PowerFs {
    /// Mounts an empty power-loss filesystem on `mount_point` (an existing directory).
    pub fn mount(mount_point: &Path) -> Result<PowerFs, Error> {
        if !Path::new("/dev/fuse").exists() {
            return Err(Error::NoFuseDevice);
        }
        let mut fs = PowerFs {
            model: Arc::new(Mutex::new(model::Model::new())),
            mount_point: mount_point.to_path_buf(),
            session: None,
        };
        fs.session = Some(fs.spawn()?);
        Ok(fs)
    }

    fn spawn(&self) -> Result<BackgroundSession, Error> {
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("ferromq-powerfs".into()),
            MountOption::Subtype("ferromq-powerfs".into()),
        ];
        // One thread: every request takes the model's lock anyway.
        config.n_threads = Some(1);
        fuser::spawn_mount(
            fuse::FuseFs::new(self.model.clone()),
            &self.mount_point,
            &config,
        )
        .map_err(|source| Error::Mount {
            path: self.mount_point.clone(),
            source,
        })
    }

    /// Where it is mounted.
    pub fn mount_point(&self) -> &Path {
        &self.mount_point
    }

    /// What it holds now (unsynced pages: the volatile layer a cut would lose).
    pub fn usage(&self) -> Usage {
        self.model.lock().usage()
    }

    /// Makes everything durable, as `sync(2)` on a machine that then ran for a while.
    pub fn sync_all(&self) {
        self.model.lock().sync_all();
    }

    /// Turns the power off right after the write that leaves `pages_min` pages unsynced:
    /// from then on every change fails (`EIO`) until [`PowerFs::cut_power`], so the cut
    /// judges the filesystem as it was at that write. Kill the processes using it once
    /// [`PowerFs::is_frozen`].
    pub fn arm_freeze(&self, pages_min: u64) {
        self.model.lock().arm_freeze(pages_min);
    }

    /// Whether an armed freeze fired.
    pub fn is_frozen(&self) -> bool {
        self.model.lock().is_frozen()
    }

    /// Cuts the power: unmounts, loses the unsynced changes `mode` says, mounts again. Every
    /// process with a file open here must have been killed (and reaped) first.
    pub fn cut_power(&mut self, mode: LossMode) -> Result<CutReport, Error> {
        self.unmount()?;
        let report = self.model.lock().cut_power(mode);
        self.session = Some(self.spawn()?);
        Ok(report)
    }

    fn unmount(&mut self) -> Result<(), Error> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        // Lazily: the kernel tears a dead process's io_uring down after the process is
        // reaped, holding its files here open a moment longer, and a plain unmount would fail
        // with EBUSY. The session thread answers those last requests and ends once the
        // kernel lets the connection go; fuser's Mount, dropped after that, finds it gone.
        let unmount_error = |source| Error::Unmount {
            path: self.mount_point.clone(),
            source,
        };
        let out = match std::process::Command::new("fusermount3")
            .args(["-u", "-z", "--"])
            .arg(&self.mount_point)
            .output()
        {
            // Root mounts without fusermount3 (the mount(2) call itself); util-linux's umount
            // then unmounts.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::process::Command::new("umount")
                    .arg("-l")
                    .arg(&self.mount_point)
                    .output()
                    .map_err(unmount_error)?
            }
            other => other.map_err(unmount_error)?,
        };
        if !out.status.success() {
            return Err(unmount_error(std::io::Error::other(
                String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            )));
        }
        session.join().map_err(unmount_error)
    }
}

impl Drop for PowerFs {
    fn drop(&mut self) {
        let _ = self.unmount();
    }
}
