//! The journal writer's direct io_uring path (cargo feature `io-uring`): pipelined durable
//! writes without a separate flush.
//!
//! The portable path writes a group, `fdatasync`s it, and only then starts the next group: one
//! device flush at a time. Here each group is one `O_DIRECT | O_DSYNC` write (the kernel adds
//! the device's FUA, or a cache flush after the write where the device has no FUA, as on this
//! project's virtio disks), submitted to an io_uring while up to `depth - 1` earlier groups are
//! still in flight. Flushes that arrive while one runs are merged by the block layer, so the
//! device always has the next one queued (`bench-results/io-uring.md`: 2–2.3× the writes per
//! second of one-at-a-time group commit at 4 in flight).
//!
//! What makes it correct:
//! - **Order.** A group is confirmed (applied to the index, its producers answered) only when
//!   it and every earlier group are durable ([`super::pipeline::Pipeline`]); the device may
//!   finish them in any order. A failed write fails the store (never retried) and with it every
//!   later group, whatever their own result.
//! - **Alignment.** Every write starts and ends on a [`DIRECT_ALIGN`] boundary and comes from an
//!   aligned buffer: the writer ends each group with a padding record (`record::pad_to`), so no
//!   two writes in flight share a block. 4 KiB, not the disk's 512-byte logical block: ext4
//!   serialises (and must zero around) a sub-block direct write into unwritten space, and a
//!   page shared by a write in flight and a reader's buffered read is the page cache's one
//!   known incoherence with direct I/O.
//! - **Buffers.** Groups are copied into `depth` buffers registered with the ring
//!   (`IORING_REGISTER_BUFFERS`, `IORING_OP_WRITE_FIXED`: the kernel pins them once instead of
//!   per write); a group larger than one buffer gets an aligned buffer of its own. A buffer is
//!   reused only after its write's completion arrived, failed or not: until then it is the
//!   kernel's.
//! - **Completions** are reaped by a thread of their own, which also confirms (the writer
//!   gathers and encodes the next group meanwhile: on two cores that is the point), so it runs
//!   the writer's handler in journal order. The writer waits only when `depth` writes are in
//!   flight, and at a barrier (a roll, a checkpoint, a GC record, close), where it drains.
//!
//! Not used, on purpose: SQPOLL (a kernel thread spinning on a 2-core machine shared with the
//! broker), registered files (the head segment changes on each roll; the lookup is noise next to
//! a flush).
//!
//! `unsafe_code` is denied in the workspace; this module is the one exception, because pushing
//! a submission entry is `unsafe` (the kernel reads the buffer after the call returns), as are
//! registering buffers and sharing the ring's queues between the writer and the reaper.
#![allow(unsafe_code)]

use std::io;

/// Every direct write's offset, length and buffer address are multiples of this.
pub(crate) const DIRECT_ALIGN: u64 = 4096;

/// The largest `JournalConfig::io_depth`: 64 registered 1 MiB buffers (64 MiB of locked
/// memory at most) is already far past the depth at which this disk stops gaining
/// (bench-results/io-uring.md).
pub const DEPTH_MAX: usize = 64;

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
    /// Test hook: makes [`Direct::new`] on this thread fail as on a kernel without io_uring.
    pub(crate) static FAIL_SETUP: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// What the reaper hands back for each group, in journal order: the writer's item and whether
/// it (and everything before it) is durable.
pub(crate) type Handler<T> = Box<dyn FnMut(T, Result<(), crate::StoreError>) + Send>;

#[cfg(feature = "io-uring")]
mod imp {
    use std::alloc::{self, Layout};
    use std::fs::{File, OpenOptions};
    use std::io;
    use std::os::fd::RawFd;
    use std::os::unix::fs::OpenOptionsExt;
    use std::sync::Arc;
    use std::thread::JoinHandle;

    use io_uring::{opcode, squeue, types, IoUring, Probe};
    use parking_lot::{Condvar, Mutex};

    use super::{Handler, DIRECT_ALIGN};
    use crate::journal::pipeline::Pipeline;
    use crate::StoreError;

    /// Bytes of one registered buffer: a group above it gets a buffer of its own.
    const SLOT_BYTES: usize = 1 << 20;
    /// The tag of the no-op that tells the reaper to stop (write tags count up from 0).
    const TAG_STOP: u64 = u64::MAX;
    /// `IORING_ENTER_GETEVENTS` (not exported by the `io-uring` crate).
    const ENTER_GETEVENTS: u32 = 1;
    /// `io_uring_enter` failures with EINTR/EAGAIN/EBUSY retried before giving up.
    const ENTER_RETRIES_MAX: usize = 1024;
    const EINTR: i32 = 4;
    const EAGAIN: i32 = 11;
    const EBUSY: i32 = 16;

    /// A zeroed, [`DIRECT_ALIGN`]-aligned heap buffer.
    struct AlignedBuf {
        ptr: *mut u8,
        len: usize,
    }

    // SAFETY: the buffer is plain heap memory owned by this value; access is synchronised by
    // the pipeline's mutex (the writer fills it, the kernel reads it, the reaper frees it).
    unsafe impl Send for AlignedBuf {}
    unsafe impl Sync for AlignedBuf {}

    impl AlignedBuf {
        fn new(len: usize) -> io::Result<AlignedBuf> {
            let len = len.max(1).next_multiple_of(DIRECT_ALIGN as usize);
            let layout = Layout::from_size_align(len, DIRECT_ALIGN as usize)
                .map_err(|e| io::Error::other(e.to_string()))?;
            // SAFETY: the layout has a non-zero size.
            let ptr = unsafe { alloc::alloc_zeroed(layout) };
            if ptr.is_null() {
                return Err(io::Error::from(io::ErrorKind::OutOfMemory));
            }
            Ok(AlignedBuf { ptr, len })
        }

        /// Copies `data` to the start of the buffer (`data.len() <= self.len`).
        fn fill(&mut self, data: &[u8]) {
            debug_assert!(data.len() <= self.len);
            // SAFETY: in bounds (checked by the caller); nothing else touches this buffer while
            // it is not in flight.
            unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr, data.len()) };
        }
    }

    impl Drop for AlignedBuf {
        fn drop(&mut self) {
            if let Ok(layout) = Layout::from_size_align(self.len, DIRECT_ALIGN as usize) {
                // SAFETY: allocated with this layout in `new`.
                unsafe { alloc::dealloc(self.ptr, layout) };
            }
        }
    }

    /// Where a write's bytes are.
    enum Buf {
        /// A registered buffer, by index.
        Slot(usize),
        /// A group too large for one: its own buffer, freed at its completion.
        Owned(AlignedBuf),
    }

    /// One write in flight.
    struct Flight<T> {
        item: T,
        buf: Buf,
        len: usize,
    }

    struct State<T> {
        pipeline: Pipeline<Flight<T>>,
        /// Registered buffers not in flight.
        free: Vec<usize>,
        /// Set when the ring cannot be trusted any more (a failed submit or wait): nothing is
        /// submitted after it; buffers possibly still in the kernel's hands are leaked.
        broken: Option<String>,
    }

    struct Inner<T> {
        ring: IoUring,
        /// The registered buffers (or, when registration failed, plain aligned ones).
        slots: Vec<Mutex<AlignedBuf>>,
        registered: bool,
        state: Mutex<State<T>>,
        /// Signalled when a write is released (a buffer is free, the pipeline may be empty).
        released: Condvar,
        /// The writer's handler. Taken *before* releasing writes from the pipeline (lock
        /// order: handler, then state), so writes are handled in the order they are released.
        handler: Mutex<Option<Handler<T>>>,
    }

    /// Why [`Direct::submit`] did not submit.
    #[derive(Debug)]
    pub(crate) enum SubmitError<T> {
        /// Refused before it entered the pipeline: the item comes back to be answered.
        Refused(T, StoreError),
        /// It entered the pipeline and was handed to the handler as failed.
        Failed(StoreError),
    }

    /// A ring with `depth` writes in flight at most and the thread that reaps them.
    pub(crate) struct Direct<T: Send + 'static> {
        inner: Arc<Inner<T>>,
        depth: usize,
        reaper: Option<JoinHandle<()>>,
    }

    impl<T: Send + 'static> std::fmt::Debug for Direct<T> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Direct")
                .field("depth", &self.depth)
                .field("registered", &self.inner.registered)
                .finish()
        }
    }

    /// Opens the file behind `fd` again for direct durable writes: a new open file description
    /// of the same inode through `/proc/self/fd`, so the buffered descriptor readers use keeps
    /// its flags.
    pub(crate) fn open_direct(fd: RawFd) -> io::Result<File> {
        OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
            .open(format!("/proc/self/fd/{fd}"))
    }

    impl<T: Send + 'static> Direct<T> {
        /// Sets up a ring for `depth` writes in flight and registers its buffers; nothing is
        /// submitted before [`Direct::start`].
        pub(crate) fn new(depth: usize) -> io::Result<Direct<T>> {
            #[cfg(test)]
            if super::FAIL_SETUP.with(|f| f.get()) {
                return Err(io::Error::from_raw_os_error(38));
            }
            let depth = depth.clamp(1, super::DEPTH_MAX);
            // One more entry than writes: the stop no-op.
            let ring = IoUring::new((depth as u32 + 1).next_power_of_two())?;
            let mut probe = Probe::new();
            ring.submitter().register_probe(&mut probe)?;
            if !probe.is_supported(opcode::Write::CODE)
                || !probe.is_supported(opcode::WriteFixed::CODE)
            {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "the kernel's io_uring lacks IORING_OP_WRITE or IORING_OP_WRITE_FIXED",
                ));
            }
            let mut slots = Vec::with_capacity(depth);
            for _ in 0..depth {
                slots.push(AlignedBuf::new(SLOT_BYTES)?);
            }
            let iovecs: Vec<libc::iovec> = slots
                .iter()
                .map(|b| libc::iovec {
                    iov_base: b.ptr.cast(),
                    iov_len: b.len,
                })
                .collect();
            // SAFETY: the buffers live as long as the ring (both in `Inner`; the ring is
            // dropped first, which unregisters them).
            let registered = match unsafe { ring.submitter().register_buffers(&iovecs) } {
                Ok(()) => true,
                Err(e) => {
                    // RLIMIT_MEMLOCK on older kernels: plain writes work the same, slower by
                    // a page pinning per write.
                    tracing::warn!(
                        "io_uring: registering buffers failed ({e}); using plain writes"
                    );
                    false
                }
            };
            let inner = Arc::new(Inner {
                ring,
                slots: slots.into_iter().map(Mutex::new).collect(),
                registered,
                state: Mutex::new(State {
                    pipeline: Pipeline::default(),
                    free: (0..depth).rev().collect(),
                    broken: None,
                }),
                released: Condvar::new(),
                handler: Mutex::new(None),
            });
            Ok(Direct {
                inner,
                depth,
                reaper: None,
            })
        }

        /// Starts the reaper, which calls `handler` for every write in journal order.
        pub(crate) fn start(&mut self, handler: Handler<T>) -> io::Result<()> {
            *self.inner.handler.lock() = Some(handler);
            let reaper_inner = self.inner.clone();
            let reaper = std::thread::Builder::new()
                .name("ferromq-journal-reaper".into())
                .spawn(move || reap(&reaper_inner))?;
            self.reaper = Some(reaper);
            Ok(())
        }

        /// Whether every write submitted so far completed and was handled.
        pub(crate) fn idle(&self) -> bool {
            self.inner.state.lock().pipeline.is_empty()
        }

        /// Writes `data` (aligned length) at `offset` (aligned) of `fd` (opened with
        /// [`open_direct`]), waiting first while `depth` writes are in flight. Once submitted,
        /// the item reaches the handler, in journal order, with its outcome.
        pub(crate) fn submit(
            &self,
            fd: RawFd,
            offset: u64,
            data: &[u8],
            item: T,
        ) -> Result<(), SubmitError<T>> {
            debug_assert!(
                offset.is_multiple_of(DIRECT_ALIGN)
                    && (data.len() as u64).is_multiple_of(DIRECT_ALIGN)
            );
            let Ok(len) = u32::try_from(data.len()) else {
                let e = StoreError::Config(format!("a direct write of {} bytes", data.len()));
                return Err(SubmitError::Refused(item, e));
            };
            let fits = data.len() <= SLOT_BYTES;
            let mut state = self.inner.state.lock();
            // A released write's buffer comes back after its handler ran: wait for the buffer,
            // not only for the pipeline to have room.
            while state.broken.is_none()
                && (state.pipeline.len() >= self.depth || (fits && state.free.is_empty()))
            {
                self.inner.released.wait(&mut state);
            }
            if let Some(why) = &state.broken {
                let e = StoreError::Failed(why.clone());
                return Err(SubmitError::Refused(item, e));
            }
            let (buf, ptr, index) = if fits {
                let Some(i) = state.free.pop() else {
                    let e = StoreError::Failed("no free io_uring buffer".into());
                    return Err(SubmitError::Refused(item, e));
                };
                let mut slot = self.inner.slots[i].lock();
                slot.fill(data);
                (Buf::Slot(i), slot.ptr, Some(i))
            } else {
                let mut own = match AlignedBuf::new(data.len()) {
                    Ok(b) => b,
                    Err(e) => {
                        let e = StoreError::io("allocate a write buffer", e);
                        return Err(SubmitError::Refused(item, e));
                    }
                };
                own.fill(data);
                let ptr = own.ptr;
                (Buf::Owned(own), ptr, None)
            };
            let tag = state.pipeline.push(Flight {
                item,
                buf,
                len: data.len(),
            });
            let entry = match index {
                Some(i) if self.inner.registered => {
                    opcode::WriteFixed::new(types::Fd(fd), ptr, len, i as u16)
                        .offset(offset)
                        .build()
                }
                _ => opcode::Write::new(types::Fd(fd), ptr, len)
                    .offset(offset)
                    .build(),
            }
            .user_data(tag);
            // The lock is held while pushing: the reaper records a completion under it, so it
            // always finds the write in the pipeline.
            let Err(e) = self.push_and_submit(&entry) else {
                return Ok(());
            };
            // Whether the kernel took the entry is unknown: the ring is not used again, so no
            // buffer is reused while the kernel might still read it.
            let why = format!("io_uring submit failed: {e}");
            state.broken = Some(why.clone());
            self.inner.released.notify_all();
            drop(state);
            let err = StoreError::Failed(why);
            let mut handler = self.inner.handler.lock();
            let released = self
                .inner
                .state
                .lock()
                .pipeline
                .complete(tag, Err(err.clone()));
            for (flight, outcome) in released {
                if let Buf::Owned(b) = flight.buf {
                    std::mem::forget(b);
                }
                if let Some(h) = handler.as_mut() {
                    h(flight.item, outcome);
                }
            }
            self.inner.released.notify_all();
            Err(SubmitError::Failed(err))
        }

        fn push_and_submit(&self, entry: &squeue::Entry) -> io::Result<()> {
            // SAFETY: only the writer thread (the caller, under the state lock) uses the
            // submission queue; the buffer the entry names stays allocated until its
            // completion is reaped (the pipeline owns it).
            unsafe {
                let mut sq = self.inner.ring.submission_shared();
                sq.push(entry)
                    .map_err(|_| io::Error::other("submission queue full"))?;
                sq.sync();
            }
            let mut tries = 0;
            loop {
                match self.inner.ring.submitter().submit() {
                    Ok(_) => return Ok(()),
                    Err(e)
                        if matches!(e.raw_os_error(), Some(EINTR | EAGAIN | EBUSY))
                            && tries < ENTER_RETRIES_MAX =>
                    {
                        tries += 1;
                        std::thread::yield_now();
                    }
                    Err(e) => return Err(e),
                }
            }
        }

        /// Waits until every write submitted so far completed and was handled.
        pub(crate) fn drain(&self) {
            let mut state = self.inner.state.lock();
            while state.broken.is_none() && !state.pipeline.is_empty() {
                self.inner.released.wait(&mut state);
            }
        }

        /// Drains, stops the reaper and waits for it.
        pub(crate) fn shutdown(&mut self) {
            // Without a reaper nothing was ever submitted (`submit` needs one to complete).
            let Some(reaper) = self.reaper.take() else {
                return;
            };
            self.drain();
            let stop = opcode::Nop::new().build().user_data(TAG_STOP);
            let pushed = {
                let _state = self.inner.state.lock();
                self.push_and_submit(&stop)
            };
            match pushed {
                Ok(()) => {
                    let _ = reaper.join();
                }
                Err(e) => {
                    // The reaper stays blocked in the kernel; it holds the ring, which is then
                    // never freed. Only on a ring that already failed.
                    tracing::error!("io_uring: could not stop the completion thread: {e}");
                }
            }
        }
    }

    impl<T: Send + 'static> Drop for Direct<T> {
        fn drop(&mut self) {
            self.shutdown();
        }
    }

    /// The reaper: waits for completions, records them, and hands every releasable write to
    /// `handler` in journal order, then frees its buffer.
    fn reap<T: Send + 'static>(inner: &Inner<T>) {
        let mut stopping = false;
        let mut errors = 0usize;
        loop {
            // SAFETY: to_submit = 0 (only the writer submits); the wait touches no buffer.
            let waited = unsafe {
                inner
                    .ring
                    .submitter()
                    .enter::<libc::sigset_t>(0, 1, ENTER_GETEVENTS, None)
            };
            if let Err(e) = waited {
                if matches!(e.raw_os_error(), Some(EINTR | EAGAIN | EBUSY))
                    && errors < ENTER_RETRIES_MAX
                {
                    errors += 1;
                    continue;
                }
                let mut state = inner.state.lock();
                state.broken = Some(format!("io_uring wait failed: {e}"));
                inner.released.notify_all();
                tracing::error!("io_uring: waiting for completions failed: {e}");
                return;
            }
            errors = 0;
            // SAFETY: only this thread reads the completion queue.
            let done: Vec<(u64, i32)> = unsafe { inner.ring.completion_shared() }
                .map(|c| (c.user_data(), c.result()))
                .collect();
            for (tag, res) in done {
                if tag == TAG_STOP {
                    stopping = true;
                    continue;
                }
                let mut handler = inner.handler.lock();
                let released = {
                    let mut state = inner.state.lock();
                    let expected = state.pipeline.get(tag).map(|f| f.len);
                    let result = match (res, expected) {
                        (r, _) if r < 0 => Err(StoreError::io(
                            "direct write",
                            io::Error::from_raw_os_error(-r),
                        )),
                        (r, Some(len)) if r as usize != len => Err(StoreError::io(
                            "direct write",
                            io::Error::new(
                                io::ErrorKind::WriteZero,
                                format!("wrote {r} of {len} bytes"),
                            ),
                        )),
                        _ => Ok(()),
                    };
                    state.pipeline.complete(tag, result)
                };
                for (flight, outcome) in released {
                    if let Some(h) = handler.as_mut() {
                        h(flight.item, outcome);
                    }
                    let mut state = inner.state.lock();
                    if let Buf::Slot(i) = flight.buf {
                        state.free.push(i);
                    }
                    inner.released.notify_all();
                }
            }
            if stopping && inner.state.lock().pipeline.is_empty() {
                return;
            }
        }
    }

    /// Whether direct writes work on the file behind `fd` (tmpfs and some FUSE filesystems
    /// refuse `O_DIRECT` with EINVAL).
    pub(crate) fn check_direct(fd: RawFd) -> io::Result<()> {
        open_direct(fd).map(drop)
    }

    /// Writes zeros (buffered, through `fd`) into every hole of the file between `from` and
    /// `to`; whether it wrote any (the caller then syncs). A direct `O_DSYNC` write into a hole
    /// or an unwritten extent makes ext4 allocate or convert the extent, and that metadata
    /// must be committed by a second device write and flush: measured, it halved the direct
    /// path's single-producer rate. Written extents take data only.
    pub(crate) fn fill_holes(fd: RawFd, from: u64, to: u64) -> io::Result<bool> {
        const CHUNK: usize = 1 << 20;
        let zeros = vec![0u8; CHUNK];
        let mut at = from;
        let mut wrote = false;
        while at < to {
            let hole = match seek(fd, at, libc::SEEK_HOLE)? {
                Some(h) if h < to => h,
                _ => break,
            };
            // The hole runs to the next data, or to the end of the file (ENXIO).
            let end = seek(fd, hole, libc::SEEK_DATA)?.unwrap_or(to).min(to);
            let mut pos = hole;
            while pos < end {
                let n = ((end - pos) as usize).min(CHUNK);
                let done = unsafe {
                    // SAFETY: `zeros` is valid for `n <= CHUNK` bytes for the whole call.
                    libc::pwrite(fd, zeros.as_ptr().cast(), n, pos as libc::off_t)
                };
                if done < 0 {
                    return Err(io::Error::last_os_error());
                }
                if done == 0 {
                    return Err(io::Error::new(io::ErrorKind::WriteZero, "pwrite wrote 0"));
                }
                pos += done as u64;
                wrote = true;
            }
            at = end;
        }
        Ok(wrote)
    }

    /// `lseek` with `SEEK_HOLE`/`SEEK_DATA`; `None` for ENXIO (no such region before EOF).
    fn seek(fd: RawFd, at: u64, whence: i32) -> io::Result<Option<u64>> {
        // SAFETY: lseek only reads its integer arguments.
        let r = unsafe { libc::lseek(fd, at as libc::off_t, whence) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENXIO) => Ok(None),
                _ => Err(e),
            };
        }
        Ok(Some(r as u64))
    }
}

#[cfg(not(feature = "io-uring"))]
mod imp {
    use std::fs::File;
    use std::io;
    use std::os::fd::RawFd;

    use super::Handler;

    fn unsupported() -> io::Error {
        io::Error::new(
            io::ErrorKind::Unsupported,
            "ferromq-store was built without the io-uring feature",
        )
    }

    /// Never built without the feature.
    #[derive(Debug)]
    #[allow(dead_code)]
    pub(crate) enum SubmitError<T> {
        Refused(T, crate::StoreError),
        Failed(crate::StoreError),
    }

    /// Without the `io-uring` feature no ring can exist; the writer's direct branch is dead.
    #[derive(Debug)]
    pub(crate) enum Direct<T> {
        #[allow(dead_code)]
        Never(std::convert::Infallible, std::marker::PhantomData<T>),
    }

    pub(crate) fn open_direct(_fd: RawFd) -> io::Result<File> {
        Err(unsupported())
    }

    pub(crate) fn check_direct(_fd: RawFd) -> io::Result<()> {
        Err(unsupported())
    }

    pub(crate) fn fill_holes(_fd: RawFd, _from: u64, _to: u64) -> io::Result<bool> {
        Err(unsupported())
    }

    impl<T: Send + 'static> Direct<T> {
        pub(crate) fn new(_depth: usize) -> io::Result<Direct<T>> {
            Err(unsupported())
        }

        pub(crate) fn start(&mut self, _handler: Handler<T>) -> io::Result<()> {
            match *self {
                Direct::Never(n, _) => match n {},
            }
        }

        pub(crate) fn idle(&self) -> bool {
            match *self {
                Direct::Never(n, _) => match n {},
            }
        }

        pub(crate) fn submit(
            &self,
            _fd: RawFd,
            _offset: u64,
            _data: &[u8],
            _item: T,
        ) -> Result<(), SubmitError<T>> {
            match *self {
                Direct::Never(n, _) => match n {},
            }
        }

        pub(crate) fn drain(&self) {
            match *self {
                Direct::Never(n, _) => match n {},
            }
        }

        pub(crate) fn shutdown(&mut self) {
            match *self {
                Direct::Never(n, _) => match n {},
            }
        }
    }
}

pub(crate) use imp::{check_direct, fill_holes, open_direct, Direct, SubmitError};

/// Why a ring could not be set up, for the log line or the `Config` error.
pub(crate) fn setup_error(e: &io::Error) -> String {
    if e.kind() == io::ErrorKind::Unsupported {
        e.to_string()
    } else {
        unavailable_reason(e)
    }
}
