//! Shared file system master/slave (ActiveMQ's shared-file locker, without its 10 s poll).
//!
//! Every broker of the group points `broker.data_dir` at the same directory. Whoever holds an
//! exclusive `flock` on `<data_dir>/lock` is master:
//!
//! - A slave waits for the lock in a blocking call on its own thread, so it wakes the instant
//!   the master's process dies (the kernel drops the lock with the process) — no polling.
//! - The new master writes a new **epoch** (one more than any before, kept in `<data_dir>/epoch`
//!   so that deleting the lock file cannot reset it) and its identity into the lock file.
//! - A keep-alive re-checks every `lock_keepalive_ms` that the file at the path is still the one
//!   it locked (same inode) and still holds its epoch; the same check is the store's **fence**,
//!   run before every group commit. A master whose lock file was replaced, or whose epoch was
//!   overwritten by a newer master, stops confirming writes at once and steps down.
//!
//! `flock` locks belong to the open file description, so other reads of the lock file (the
//! fence's) never release it, unlike POSIX `fcntl` locks. On NFS, `flock` is emulated with
//! `fcntl` byte-range locks (Linux ≥ 2.6.12) and depends on the server's lock manager; see
//! `docs/ha.md`.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferromq_ha::{Activation, BoxFuture, HaError, Mastership};
use ferromq_store::Fence;
use tokio::sync::{oneshot, watch};

/// The lock file's name inside the shared directory (ActiveMQ's `<dir>/lock`).
pub const LOCK_FILE: &str = "lock";
/// The epoch counter's file name inside the shared directory.
pub const EPOCH_FILE: &str = "epoch";

/// The shared-file activation.
#[derive(Debug, Clone)]
pub struct SharedFileLock {
    dir: PathBuf,
    holder: String,
    keepalive: Duration,
}

impl SharedFileLock {
    /// Competes for `<dir>/lock`. `holder` identifies this broker in the lock file;
    /// `keepalive` is how often the master re-checks its lock (`lockKeepAlivePeriod`).
    pub fn new(dir: impl Into<PathBuf>, holder: impl Into<String>, keepalive: Duration) -> Self {
        SharedFileLock {
            dir: dir.into(),
            holder: holder.into(),
            keepalive: keepalive.max(Duration::from_millis(10)),
        }
    }

    fn lock_path(&self) -> PathBuf {
        self.dir.join(LOCK_FILE)
    }

    async fn acquire_inner(&self) -> Result<Mastership, HaError> {
        let io = |op: &str| {
            let op = op.to_string();
            move |source| HaError::Io { op, source }
        };
        std::fs::create_dir_all(&self.dir)
            .map_err(io(&format!("create {}", self.dir.display())))?;
        let path = self.lock_path();
        let mut announced = false;
        // Whether another broker held the lock when this one first tried: then the grant means
        // that master released it or died, else this broker found it free.
        let mut waited = false;
        loop {
            let file = open_lock_file(&path).map_err(io(&format!("open {}", path.display())))?;
            let file = match file.try_lock() {
                Ok(()) => file,
                Err(TryLockError::WouldBlock) => {
                    waited = true;
                    if !announced {
                        announced = true;
                        tracing::info!(
                            "Database {} is locked by another server. This broker is now in slave mode waiting a lock to be acquired",
                            path.display()
                        );
                    }
                    match self.wait_for_lock(file, &path).await? {
                        Some(f) => f,
                        // The lock file was replaced while we waited: compete for the new one.
                        None => continue,
                    }
                }
                Err(TryLockError::Error(e)) => {
                    return Err(HaError::Io {
                        op: format!("lock {}", path.display()),
                        source: e,
                    })
                }
            };
            // The kernel grants a waiting lock the moment its holder releases it or dies, so
            // this is when this broker saw the previous master gone.
            let granted = std::time::Instant::now();
            // We hold a lock on this inode; it only counts if it is still the file at `path`.
            let ino = file
                .metadata()
                .map_err(io(&format!("stat {}", path.display())))?
                .ino();
            if inode_of(&path) != Some(ino) {
                tracing::info!("lock file was replaced while acquiring it; retrying");
                continue;
            }
            let epoch = self
                .write_new_epoch(&file)
                .map_err(io("write the new epoch"))?;
            tracing::info!(
                epoch,
                holder = %self.holder,
                "Acquired the lock on {}: this broker is now the master",
                path.display()
            );
            let reason = if waited {
                format!(
                    "acquired the lock on {}: the previous master released it or its process ended",
                    path.display()
                )
            } else {
                format!("acquired the lock on {}: it was free", path.display())
            };
            let fence = Arc::new(FileFence { path, ino, epoch });
            let (tx, rx) = watch::channel(None);
            let stop = Arc::new(AtomicBool::new(false));
            let keepalive = {
                let fence = fence.clone();
                let stop = stop.clone();
                let period = self.keepalive;
                std::thread::Builder::new()
                    .name("ferromq-lock-keepalive".into())
                    .spawn(move || loop {
                        std::thread::sleep(period);
                        if stop.load(Ordering::Acquire) {
                            return;
                        }
                        if let Err(reason) = fence.check() {
                            tracing::error!(%reason, "lost the shared file lock: this broker must stop serving");
                            let _ = tx.send(Some(reason));
                            return;
                        }
                    })
                    .map_err(io("spawn the lock keep-alive thread"))?
            };
            let guard = LockGuard {
                file: Some(file),
                stop,
                keepalive: Some(keepalive),
            };
            return Ok(Mastership::new(epoch, Some(fence), rx, Box::new(guard))
                .with_reason(reason)
                .with_takeover_since(granted));
        }
    }

    /// Blocks (on a thread) until `file` is locked. Returns `None` when the path stopped
    /// pointing at `file` meanwhile (the lock file was deleted or replaced), so the caller
    /// competes for the new file instead of waiting forever on a dead one.
    async fn wait_for_lock(&self, file: File, path: &Path) -> Result<Option<File>, HaError> {
        let ino = file.metadata().map(|m| m.ino()).ok();
        let (tx, mut rx) = oneshot::channel();
        std::thread::Builder::new()
            .name("ferromq-lock-wait".into())
            .spawn(move || {
                let r = file.lock().map(|()| file);
                // If nobody waits any more, dropping the file releases the lock at once.
                let _ = tx.send(r);
            })
            .map_err(|source| HaError::Io {
                op: "spawn the lock wait thread".into(),
                source,
            })?;
        loop {
            tokio::select! {
                r = &mut rx => {
                    return match r {
                        Ok(Ok(f)) => Ok(Some(f)),
                        Ok(Err(source)) => Err(HaError::Io { op: format!("lock {}", path.display()), source }),
                        Err(_) => Err(HaError::Config("lock wait thread vanished".into())),
                    };
                }
                _ = tokio::time::sleep(self.keepalive) => {
                    if inode_of(path) != ino {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Epoch = 1 + the highest of the epoch file and the lock file; written to both, synced.
    fn write_new_epoch(&self, file: &File) -> std::io::Result<u64> {
        let mut current = String::new();
        let mut f = file;
        f.seek(SeekFrom::Start(0))?;
        f.read_to_string(&mut current)?;
        let in_lock = parse_epoch(&current).unwrap_or(0);
        let epoch_path = self.dir.join(EPOCH_FILE);
        let in_file = std::fs::read_to_string(&epoch_path)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let epoch = in_lock.max(in_file) + 1;
        // The epoch file first: once it says N, no later master can pick N again.
        let tmp = self.dir.join(format!("{EPOCH_FILE}.tmp"));
        {
            let mut t = File::create(&tmp)?;
            t.write_all(format!("{epoch}\n").as_bytes())?;
            t.sync_all()?;
        }
        std::fs::rename(&tmp, &epoch_path)?;
        File::open(&self.dir)?.sync_all()?;
        let content = format!(
            "epoch={epoch}\nholder={}\npid={}\nacquired_ms={}\n",
            self.holder,
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0)
        );
        file.set_len(0)?;
        f.seek(SeekFrom::Start(0))?;
        f.write_all(content.as_bytes())?;
        file.sync_all()?;
        Ok(epoch)
    }
}

impl Activation for SharedFileLock {
    fn mode(&self) -> &'static str {
        "shared-file"
    }

    fn acquire(&self) -> BoxFuture<'_, Result<Mastership, HaError>> {
        Box::pin(self.acquire_inner())
    }
}

fn open_lock_file(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

fn inode_of(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.ino())
}

fn parse_epoch(content: &str) -> Option<u64> {
    content
        .lines()
        .find_map(|l| l.strip_prefix("epoch="))
        .and_then(|v| v.trim().parse().ok())
}

/// The master's proof that it still holds the lock: the file at the path is the inode it
/// locked, and it holds this master's epoch.
#[derive(Debug)]
pub struct FileFence {
    path: PathBuf,
    ino: u64,
    epoch: u64,
}

impl Fence for FileFence {
    fn check(&self) -> Result<(), String> {
        let meta = std::fs::metadata(&self.path)
            .map_err(|e| format!("lock file {} is gone: {e}", self.path.display()))?;
        if meta.ino() != self.ino {
            return Err(format!(
                "lock file {} was replaced by another file",
                self.path.display()
            ));
        }
        let content = std::fs::read_to_string(&self.path)
            .map_err(|e| format!("cannot read lock file {}: {e}", self.path.display()))?;
        match parse_epoch(&content) {
            Some(e) if e == self.epoch => Ok(()),
            other => Err(format!(
                "lock file {} holds epoch {:?}, this master's is {}: another broker took over",
                self.path.display(),
                other,
                self.epoch
            )),
        }
    }
}

/// Holds the locked file; dropping it stops the keep-alive and releases the lock.
struct LockGuard {
    file: Option<File>,
    stop: Arc<AtomicBool>,
    keepalive: Option<std::thread::JoinHandle<()>>,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(f) = self.file.take() {
            let _ = f.unlock();
            drop(f);
            tracing::info!("released the shared file lock");
        }
        // The keep-alive thread exits at its next tick; do not wait for it here.
        drop(self.keepalive.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn locker(dir: &Path, who: &str) -> SharedFileLock {
        SharedFileLock::new(dir, who, Duration::from_millis(20))
    }

    #[tokio::test]
    async fn first_broker_is_master_with_epoch_one_and_a_valid_fence() {
        let dir = tempfile::tempdir().unwrap();
        let m = locker(dir.path(), "a").acquire().await.unwrap();
        assert_eq!(m.epoch, 1);
        m.fence.as_ref().unwrap().check().unwrap();
        let content = std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
        assert!(content.contains("holder=a"), "{content}");
        assert!(m.reason().ends_with("it was free"), "{}", m.reason());
        assert!(m.takeover_since().is_some());
    }

    #[tokio::test]
    async fn slave_waits_and_takes_over_the_moment_the_master_releases() {
        let dir = tempfile::tempdir().unwrap();
        let m1 = locker(dir.path(), "a").acquire().await.unwrap();
        let b = locker(dir.path(), "b");
        let waiting = tokio::spawn(async move { b.acquire().await.unwrap() });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !waiting.is_finished(),
            "the slave must wait while the master holds the lock"
        );
        let fence1 = m1.fence.clone().unwrap();
        m1.release();
        let m2 = waiting.await.unwrap();
        assert_eq!(m2.epoch, 2, "epochs only grow");
        assert!(
            m2.reason().starts_with("acquired the lock")
                && m2.reason().contains("previous master released it"),
            "{}",
            m2.reason()
        );
        assert!(fence1.check().is_err(), "the old master's fence must fail");
        m2.fence.as_ref().unwrap().check().unwrap();
    }

    #[tokio::test]
    async fn replaced_lock_file_deposes_the_master_and_keeps_epochs_growing() {
        let dir = tempfile::tempdir().unwrap();
        let mut m1 = locker(dir.path(), "a").acquire().await.unwrap();
        std::fs::remove_file(dir.path().join(LOCK_FILE)).unwrap();
        // A new broker creates a new lock file and becomes master too...
        let m2 = locker(dir.path(), "b").acquire().await.unwrap();
        assert_eq!(
            m2.epoch, 2,
            "the epoch file survives the lock file's removal"
        );
        // ...and the old one learns it lost mastership, and its fence fails.
        let reason = tokio::time::timeout(Duration::from_secs(5), m1.lost())
            .await
            .unwrap();
        assert!(reason.contains("lock file"), "{reason}");
        assert!(m1.fence.as_ref().unwrap().check().is_err());
        m2.fence.as_ref().unwrap().check().unwrap();
    }

    #[tokio::test]
    async fn a_waiting_slave_follows_a_replaced_lock_file() {
        let dir = tempfile::tempdir().unwrap();
        let _m1 = locker(dir.path(), "a").acquire().await.unwrap();
        let b = locker(dir.path(), "b");
        let waiting = tokio::spawn(async move { b.acquire().await.unwrap() });
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The lock file disappears (an operator's mistake): the waiting slave must not block
        // forever on the old file; it competes for the new path and wins it.
        std::fs::remove_file(dir.path().join(LOCK_FILE)).unwrap();
        let m2 = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("slave stuck on a deleted lock file")
            .unwrap();
        assert_eq!(m2.epoch, 2);
    }
}
