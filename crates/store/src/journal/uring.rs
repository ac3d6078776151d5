//! The journal writer's io_uring path (cargo feature `io-uring`): a group's write linked
//! (`IO_LINK`) to an `fdatasync` in one submission and one `io_uring_enter`, instead of a
//! `pwrite` and an `fdatasync` system call.
//!
//! It runs on the journal's existing writer thread (no async runtime): the writer hands over its
//! group buffer, [`Ring::write_and_sync`] submits and waits for both completions, and only then
//! returns, so no request is ever in flight while the writer touches the buffer again.
//!
//! Semantics are the portable path's: every completion is checked; a failed write or sync is
//! reported as such and the writer fails the store for good (never retried). A short write
//! breaks the link (the kernel cancels the linked sync with `ECANCELED`), so the rest of the
//! buffer is resubmitted, again linked to a sync, a bounded number of times.
//!
//! Not used, on purpose:
//! - registered buffers: the writer's buffer grows and moves (a group is up to
//!   `batch_bytes_max`, a single record up to 256 MiB), so it would have to be copied into a
//!   pinned one, and the page-pinning it saves costs microseconds against an `fdatasync` of
//!   hundreds of microseconds;
//! - registered files: they save an fd lookup per request, but the head segment changes on each
//!   roll, and the lookup is noise next to the sync;
//! - SQPOLL: a kernel thread spinning on a 2-core machine shared with the broker.
//!
//! `unsafe_code` is denied in the workspace; this module is the one exception, because pushing
//! a submission entry is `unsafe` (the kernel reads the buffer after the call returns).
#![allow(unsafe_code)]

use std::io;

/// What failed, so the writer can name it (`write` or `fdatasync`) in the store's error.
// Without the feature no ring exists, so nothing builds these; the writer still matches on them.
#[cfg_attr(not(feature = "io-uring"), allow(dead_code))]
#[derive(Debug)]
pub(crate) enum UringError {
    /// The write failed (or wrote nothing).
    Write(io::Error),
    /// The sync failed.
    Sync(io::Error),
    /// Submitting or waiting failed.
    Submit(io::Error),
}

/// Why the ring could not be set up (for the log line at open, or the `Config` error).
pub(crate) fn unavailable_reason(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(1) => format!(
            "io_uring is not permitted ({e}; kernel.io_uring_disabled, a seccomp filter or \
             a container policy)"
        ),
        Some(38) => format!("io_uring is not implemented by this kernel ({e})"),
        _ => format!("io_uring setup failed ({e})"),
    }
}

#[cfg(test)]
thread_local! {
    /// Test hook: makes [`Ring::new`] on this thread fail as on a kernel without io_uring.
    pub(crate) static FAIL_SETUP: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[cfg(feature = "io-uring")]
mod imp {
    use std::io;
    use std::os::fd::RawFd;

    use io_uring::{opcode, squeue, types, IoUring, Probe};

    use super::UringError;

    /// Submission queue entries: a group needs two (write + sync).
    const RING_ENTRIES: u32 = 8;
    /// Rounds of resubmission after short writes before giving up. A round that writes nothing
    /// fails at once, so this only bounds pathological one-byte-at-a-time progress.
    const ROUNDS_MAX: usize = 64;
    /// `io_uring_enter` calls interrupted by signals before giving up waiting.
    const ENTER_RETRIES_MAX: usize = 1024;
    /// Bytes one write request asks for at most (its length is a `u32`; Linux writes at most
    /// 2 GiB - 4 KiB per call anyway). A bigger buffer takes several rounds.
    const WRITE_BYTES_MAX: usize = 1 << 30;
    const TAG_WRITE: u64 = 1;
    const TAG_SYNC: u64 = 2;
    /// ECANCELED: a linked request whose predecessor failed or was short.
    const ECANCELED: i32 = 125;
    const EINTR: i32 = 4;
    const EAGAIN: i32 = 11;
    const EBUSY: i32 = 16;

    /// One io_uring instance, owned by the journal writer thread.
    pub(crate) struct Ring {
        ring: IoUring,
        /// Set when a request may still be in flight after an error: the ring is not used
        /// again (the store has failed anyway).
        poisoned: bool,
    }

    impl std::fmt::Debug for Ring {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Ring")
                .field("poisoned", &self.poisoned)
                .finish()
        }
    }

    impl Ring {
        /// Sets up a ring and checks that the kernel knows the two operations used.
        pub(crate) fn new() -> io::Result<Ring> {
            #[cfg(test)]
            if super::FAIL_SETUP.with(|f| f.get()) {
                return Err(io::Error::from_raw_os_error(38));
            }
            let ring = IoUring::new(RING_ENTRIES)?;
            let mut probe = Probe::new();
            ring.submitter().register_probe(&mut probe)?;
            // IORING_OP_WRITE is 5.6+; a kernel that has io_uring but not it must fall back.
            if !probe.is_supported(opcode::Write::CODE) || !probe.is_supported(opcode::Fsync::CODE)
            {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "the kernel's io_uring lacks IORING_OP_WRITE or IORING_OP_FSYNC",
                ));
            }
            Ok(Ring {
                ring,
                poisoned: false,
            })
        }

        /// Writes all of `buf` at `offset` of `fd` and, when `sync`, `fdatasync`s it (the sync
        /// linked to the write that completes the buffer). Returns once every submitted request
        /// completed. If a request might still be in flight when this returns an error, the
        /// buffer's memory is leaked (left empty in `buf`) so the kernel never reads freed memory.
        pub(crate) fn write_and_sync(
            &mut self,
            fd: RawFd,
            offset: u64,
            buf: &mut Vec<u8>,
            sync: bool,
        ) -> Result<(), UringError> {
            if self.poisoned {
                return Err(UringError::Submit(io::Error::other(
                    "io_uring ring unusable after an earlier error",
                )));
            }
            let mut written = 0usize;
            for _ in 0..ROUNDS_MAX {
                let rest = buf.len() - written;
                let chunk = rest.min(WRITE_BYTES_MAX);
                let last = chunk == rest;
                let with_sync = sync && last;
                let mut expected = 0;
                if chunk > 0 {
                    // `chunk` <= WRITE_BYTES_MAX < u32::MAX.
                    let mut write =
                        opcode::Write::new(types::Fd(fd), buf[written..].as_ptr(), chunk as u32)
                            .offset(offset + written as u64)
                            .build()
                            .user_data(TAG_WRITE);
                    if with_sync {
                        write = write.flags(squeue::Flags::IO_LINK);
                    }
                    // SAFETY: the entry points into `buf[written..written + chunk]`, which
                    // `buf` (borrowed mutably for this whole call) keeps alive and unmoved;
                    // `submit_wait` returns only after this request completed, or else `buf`'s
                    // memory is leaked (see `abandon`), so it outlives the kernel's use of it.
                    unsafe { self.push(&write) }?;
                    expected += 1;
                }
                if with_sync {
                    let fsync = opcode::Fsync::new(types::Fd(fd))
                        .flags(types::FsyncFlags::DATASYNC)
                        .build()
                        .user_data(TAG_SYNC);
                    // SAFETY: an fsync entry references no memory, only the fd, which the
                    // writer's segment handle keeps open for the whole call.
                    unsafe { self.push(&fsync) }?;
                    expected += 1;
                }
                if expected == 0 {
                    return Ok(());
                }
                let mut wrote = None;
                let mut synced = None;
                for (tag, res) in self.submit_wait(expected, buf)? {
                    match tag {
                        TAG_WRITE => wrote = Some(res),
                        _ => synced = Some(res),
                    }
                }
                if let Some(res) = wrote {
                    match usize::try_from(res) {
                        Err(_) => {
                            return Err(UringError::Write(io::Error::from_raw_os_error(-res)))
                        }
                        Ok(0) => return Err(UringError::Write(io::ErrorKind::WriteZero.into())),
                        Ok(n) if n > chunk => {
                            return Err(UringError::Write(io::Error::other(format!(
                                "io_uring write reported {n} bytes for a request of {chunk}"
                            ))))
                        }
                        Ok(n) => written += n,
                    }
                }
                match synced {
                    // A sync that ran covers what was written before it; if the write was short
                    // (and the kernel ran the sync anyway), the next round writes the rest and
                    // syncs again.
                    None | Some(0) => {}
                    // The write before it was short, which breaks the link: resubmit the rest,
                    // with a sync again.
                    Some(res) if res == -ECANCELED && written < buf.len() => {}
                    Some(res) => return Err(UringError::Sync(io::Error::from_raw_os_error(-res))),
                }
                if written == buf.len() && (!sync || synced == Some(0)) {
                    return Ok(());
                }
            }
            Err(UringError::Write(io::Error::other(format!(
                "io_uring write still short after {ROUNDS_MAX} rounds ({written} of {} bytes)",
                buf.len()
            ))))
        }

        /// Pushes one entry.
        ///
        /// # Safety
        /// Any memory `entry` points to must stay valid until its completion is reaped.
        unsafe fn push(&mut self, entry: &squeue::Entry) -> Result<(), UringError> {
            // SAFETY: forwarded to the caller (see above).
            unsafe { self.ring.submission().push(entry) }.map_err(|_| {
                // The queue is drained after every call, so it is never full: a bug.
                UringError::Submit(io::Error::other("io_uring submission queue full"))
            })
        }

        /// Submits what is queued and reaps exactly `expected` completions as `(tag, result)`.
        fn submit_wait(
            &mut self,
            expected: usize,
            buf: &mut Vec<u8>,
        ) -> Result<Vec<(u64, i32)>, UringError> {
            let mut done = Vec::with_capacity(expected);
            for _ in 0..ENTER_RETRIES_MAX {
                match self.ring.submit_and_wait(expected - done.len()) {
                    Ok(_) => {}
                    // Interrupted or short of resources: the requests already queued stay
                    // queued (the kernel consumed none or reports them as consumed), so waiting
                    // again is safe.
                    Err(e) if matches!(e.raw_os_error(), Some(EINTR | EAGAIN | EBUSY)) => {}
                    Err(e) => {
                        self.abandon(buf);
                        return Err(UringError::Submit(e));
                    }
                }
                for cqe in self.ring.completion() {
                    done.push((cqe.user_data(), cqe.result()));
                }
                if done.len() >= expected {
                    return Ok(done);
                }
            }
            self.abandon(buf);
            Err(UringError::Submit(io::Error::other(format!(
                "io_uring completions not reaped after {ENTER_RETRIES_MAX} interrupted waits"
            ))))
        }

        /// Gives up on requests that may still be in flight: the ring is never used again and
        /// the buffer's memory is leaked, so a late kernel read cannot see reused memory.
        fn abandon(&mut self, buf: &mut Vec<u8>) {
            self.poisoned = true;
            std::mem::forget(std::mem::take(buf));
        }
    }
}

#[cfg(not(feature = "io-uring"))]
mod imp {
    use std::io;
    use std::os::fd::RawFd;

    use super::UringError;

    /// Without the `io-uring` feature no ring can exist; the writer's io_uring branch is dead.
    #[derive(Debug)]
    pub(crate) enum Ring {}

    impl Ring {
        pub(crate) fn new() -> io::Result<Ring> {
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "ferromq-store was built without the io-uring feature",
            ))
        }

        pub(crate) fn write_and_sync(
            &mut self,
            _fd: RawFd,
            _offset: u64,
            _buf: &mut Vec<u8>,
            _sync: bool,
        ) -> Result<(), UringError> {
            match *self {}
        }
    }
}

pub(crate) use imp::Ring;

/// Sets up the ring, or says why not.
pub(crate) fn setup() -> Result<Ring, String> {
    Ring::new().map_err(|e| {
        if e.kind() == io::ErrorKind::Unsupported {
            e.to_string()
        } else {
            unavailable_reason(&e)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::FAIL_SETUP;
    use crate::journal::{JournalConfig, JournalIo, JournalStore};
    use crate::{MessageStore, Op, StoreError};

    fn config(io: JournalIo) -> JournalConfig {
        JournalConfig {
            io,
            checkpoint_interval_ms: 0,
            cleanup_interval_ms: 0,
            ..JournalConfig::default()
        }
    }

    #[test]
    fn forcing_io_uring_fails_when_setup_fails_and_auto_stays_portable() {
        let dir = tempfile::tempdir().unwrap();
        FAIL_SETUP.with(|f| f.set(true));
        let forced = JournalStore::open(dir.path(), config(JournalIo::IoUring));
        let auto = JournalStore::open(dir.path(), config(JournalIo::Auto));
        FAIL_SETUP.with(|f| f.set(false));
        assert!(
            matches!(forced, Err(StoreError::Config(ref m)) if m.contains("io_uring")),
            "{forced:?}"
        );
        let store = auto.unwrap();
        assert_eq!(store.io(), JournalIo::Portable);
        store
            .submit(vec![Op::Enqueue {
                list: "queue://a".into(),
                seq: 1,
                payload: bytes::Bytes::from_static(b"x"),
            }])
            .wait_blocking()
            .unwrap();
        assert_eq!(store.stats().syncs, 1);
    }

    #[cfg(feature = "io-uring")]
    mod ring {
        use std::os::fd::AsRawFd;

        use super::super::{Ring, UringError};

        #[test]
        fn a_linked_write_and_sync_write_everything_and_chunks_do_not_overlap() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("f");
            let file = std::fs::File::create(&path).unwrap();
            let mut ring = Ring::new().unwrap();
            let mut buf: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
            let expected = buf.clone();
            ring.write_and_sync(file.as_raw_fd(), 0, &mut buf, true)
                .unwrap();
            let mut tail = b"tail".to_vec();
            ring.write_and_sync(file.as_raw_fd(), 300_000, &mut tail, false)
                .unwrap();
            let mut empty = Vec::new();
            ring.write_and_sync(file.as_raw_fd(), 0, &mut empty, true)
                .unwrap();
            let got = std::fs::read(&path).unwrap();
            assert_eq!(&got[..300_000], &expected[..]);
            assert_eq!(&got[300_000..], b"tail");
        }

        #[test]
        fn a_failed_write_is_reported_as_a_write_error_and_its_sync_never_succeeds() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("f");
            std::fs::write(&path, b"").unwrap();
            let read_only = std::fs::File::open(&path).unwrap();
            let mut ring = Ring::new().unwrap();
            let mut buf = vec![1u8; 4096];
            let err = ring
                .write_and_sync(read_only.as_raw_fd(), 0, &mut buf, true)
                .unwrap_err();
            // EBADF: the fd is not open for writing.
            assert!(
                matches!(&err, UringError::Write(e) if e.raw_os_error() == Some(9)),
                "{err:?}"
            );
            assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        }

        /// Set in the child process: the file to write under a file-size limit.
        const SHORT_WRITE_ENV: &str = "FERROMQ_URING_SHORT_WRITE_FILE";

        #[test]
        fn a_short_write_is_resubmitted_and_never_reported_as_complete() {
            if let Ok(path) = std::env::var(SHORT_WRITE_ENV) {
                // The child: RLIMIT_FSIZE is 5120 bytes, so the kernel writes 5120 of the 8192
                // bytes (a short write, which cancels the linked sync); the resubmitted rest
                // starts at the limit and fails with EFBIG (SIGXFSZ is ignored).
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&path)
                    .unwrap();
                let mut ring = Ring::new().unwrap();
                let mut buf = vec![7u8; 8192];
                let result = ring.write_and_sync(file.as_raw_fd(), 0, &mut buf, true);
                println!("RESULT {result:?}");
                return;
            }
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("f");
            let exe = std::env::current_exe().unwrap();
            // `ulimit -f` counts 512-byte blocks; an ignored signal stays ignored across exec.
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(
                    "trap '' XFSZ; ulimit -f 10; exec \"$0\" --exact \
                     journal::uring::tests::ring::a_short_write_is_resubmitted_and_never_reported_as_complete \
                     --nocapture --test-threads=1",
                )
                .arg(&exe)
                .env(SHORT_WRITE_ENV, &path)
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{stdout}");
            let Some((_, result)) = stdout.lines().find_map(|l| l.split_once("RESULT ")) else {
                panic!(
                    "no result from the child: {stdout} {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            };
            // Ok would claim bytes that are not there; Sync(ECANCELED) would mean the rest was
            // never resubmitted. EFBIG on the write proves the resubmission.
            assert!(
                result.starts_with("Err(Write(") && result.contains("code: 27"),
                "{result}"
            );
            assert_eq!(std::fs::metadata(&path).unwrap().len(), 5120);
        }

        #[test]
        fn a_failed_sync_is_reported_as_a_sync_error() {
            // fdatasync of a pipe fails with EINVAL: the sync's own completion is checked.
            let (reader, writer) = std::io::pipe().unwrap();
            let mut ring = Ring::new().unwrap();
            let mut empty = Vec::new();
            let err = ring
                .write_and_sync(writer.as_raw_fd(), 0, &mut empty, true)
                .unwrap_err();
            assert!(
                matches!(&err, UringError::Sync(e) if e.raw_os_error() == Some(22)),
                "{err:?}"
            );
            drop(reader);
        }
    }
}
