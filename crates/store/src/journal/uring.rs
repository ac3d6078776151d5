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
//! - **Completions** are reaped by the writer thread itself, which also confirms: between
//!   groups (without blocking), when it needs a free buffer, at a barrier (a roll, a
//!   checkpoint, a GC record, close) and whenever it has writes in flight and nothing queued —
//!   then it waits in the ring for whichever comes first, a completion or a producer's batch
//!   (an eventfd the ring polls, which producers ring only while the writer is parked). A first
//!   version reaped on a thread of its own: one more hand-off per group.
//! - **Depth 1 (the default) does not use the ring for writes**: the writer `pwrite`s each group
//!   to the `O_DIRECT | O_DSYNC` descriptor itself, group commit as on the portable path but
//!   with no separate `fdatasync` and no metadata to commit. Through the ring, an `O_DSYNC`
//!   write cannot complete without blocking, so io_uring hands it to a kernel worker (io-wq,
//!   visible as `iou-wrk-*` threads): one more thread to wake per group, which CPU contention
//!   stretches to milliseconds. Measured with two busy loops beside the journal
//!   (`bench-results/io-uring.md`): depth 4 made 0.04× / 0.38× / 0.69× of the portable path with
//!   1 / 4 / 16 producers, depth 1 made 1.39× / 1.04× / 1.05×; on idle CPUs depth 4 won only at
//!   4 producers (1.45× against depth 1's 1.21×). Depth > 1 stays for disks whose flush is slow
//!   enough to pay for the hand-off, on machines with CPU to spare.
//!
//! Not used, on purpose: SQPOLL (a kernel thread spinning on a 2-core machine shared with the
//! broker), registered files (the head segment changes on each roll; the lookup is noise next to
//! a flush).
//!
//! `unsafe_code` is denied in the workspace; this module is the one exception, because pushing
//! a submission entry is `unsafe` (the kernel reads the buffer after the call returns), as are
//! registering buffers and the eventfd calls.
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

/// What the ring hands back for each group, in journal order: the writer's item and whether
/// it (and everything before it) is durable.
pub(crate) type Handler<T> = Box<dyn FnMut(T, Result<(), crate::StoreError>) + Send>;

#[cfg(feature = "io-uring")]
mod imp {
    use std::alloc::{self, Layout};
    use std::fs::{File, OpenOptions};
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    use std::os::unix::fs::OpenOptionsExt;
    use std::sync::atomic::{fence, AtomicBool, Ordering};
    use std::sync::Arc;

    use io_uring::{opcode, squeue, types, IoUring, Probe};

    use super::{Handler, DIRECT_ALIGN};
    use crate::journal::pipeline::Pipeline;
    use crate::StoreError;

    /// Bytes of one registered buffer: a group above it gets a buffer of its own.
    const SLOT_BYTES: usize = 1 << 20;
    /// The tag of the doorbell's poll (write tags count up from 0).
    const TAG_DOORBELL: u64 = u64::MAX;
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
    // the writer thread, which alone fills, submits and frees it (the kernel reads it meanwhile).
    unsafe impl Send for AlignedBuf {}

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

    /// The writer's doorbell while it waits in the ring: an eventfd the ring polls, rung by a
    /// producer that queued a batch while the writer was parked (see [`Direct::park`]).
    #[derive(Debug)]
    pub(crate) struct Doorbell {
        fd: OwnedFd,
        parked: AtomicBool,
    }

    impl crate::group::Wake for Doorbell {
        fn wake(&self) {
            // Pairs with the fence in `Direct::set_parked`: either the writer's check of the
            // channel sees the batch just queued, or this load sees it parked.
            fence(Ordering::SeqCst);
            if self.parked.load(Ordering::SeqCst) {
                let one = 1u64.to_ne_bytes();
                // SAFETY: writes 8 bytes from a live local to an eventfd we own. A failure
                // (the counter saturated: it is being rung anyway) needs no handling.
                let _ = unsafe { libc::write(self.fd.as_raw_fd(), one.as_ptr().cast(), 8) };
            }
        }
    }

    /// A ring with `depth` writes in flight at most, owned and driven by the writer thread:
    /// it submits, reaps completions (between groups, when it needs a free buffer, and while it
    /// waits for work) and runs the handler for each write in journal order itself. One thread
    /// and no hand-off: a completion wakes the writer, which confirms at once.
    pub(crate) struct Direct<T: Send + 'static> {
        // Dropped first: closing the ring ends the kernel's use of the buffers below.
        ring: IoUring,
        /// The registered buffers (or, when registration failed, plain aligned ones).
        slots: Vec<AlignedBuf>,
        registered: bool,
        pipeline: Pipeline<Flight<T>>,
        /// Registered buffers not in flight.
        free: Vec<usize>,
        /// Set when the ring cannot be trusted any more (a failed submit or wait): nothing is
        /// submitted after it; buffers possibly still in the kernel's hands are leaked.
        broken: Option<String>,
        handler: Option<Handler<T>>,
        depth: usize,
        doorbell: Arc<Doorbell>,
        /// Whether a poll of the doorbell is in the ring.
        doorbell_armed: bool,
    }

    /// Why [`Direct::submit`] did not submit.
    #[derive(Debug)]
    pub(crate) enum SubmitError<T> {
        /// Refused before it entered the pipeline: the item comes back to be answered.
        Refused(T, StoreError),
        /// It entered the pipeline and was handed to the handler as failed.
        Failed(StoreError),
    }

    impl<T: Send + 'static> std::fmt::Debug for Direct<T> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Direct")
                .field("depth", &self.depth)
                .field("registered", &self.registered)
                .field("in_flight", &self.pipeline.len())
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
        /// Sets up a ring for `depth` writes in flight and, above depth 1, registers its
        /// buffers; nothing is handled before [`Direct::set_handler`].
        pub(crate) fn new(depth: usize) -> io::Result<Direct<T>> {
            #[cfg(test)]
            if super::FAIL_SETUP.with(|f| f.get()) {
                return Err(io::Error::from_raw_os_error(38));
            }
            let depth = depth.clamp(1, super::DEPTH_MAX);
            // One more entry than writes: the doorbell's poll.
            let ring = IoUring::new((depth as u32 + 1).next_power_of_two())?;
            let mut probe = Probe::new();
            ring.submitter().register_probe(&mut probe)?;
            if !probe.is_supported(opcode::Write::CODE)
                || !probe.is_supported(opcode::WriteFixed::CODE)
                || !probe.is_supported(opcode::PollAdd::CODE)
            {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "the kernel's io_uring lacks IORING_OP_WRITE, WRITE_FIXED or POLL_ADD",
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
            // At depth 1 the writer `pwrite`s from its buffer itself: nothing to register.
            // SAFETY: the buffers live as long as the ring (both in `Direct`; the ring is
            // dropped first, which unregisters them).
            let registered = depth > 1
                && match unsafe { ring.submitter().register_buffers(&iovecs) } {
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
            // SAFETY: eventfd takes integer arguments; the result is checked.
            let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
            if efd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `efd` is a new descriptor nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(efd) };
            Ok(Direct {
                ring,
                slots,
                registered,
                pipeline: Pipeline::default(),
                free: (0..depth).rev().collect(),
                broken: None,
                handler: None,
                depth,
                doorbell: Arc::new(Doorbell {
                    fd,
                    parked: AtomicBool::new(false),
                }),
                doorbell_armed: false,
            })
        }

        /// Sets the handler called for every write, in journal order, with its outcome.
        pub(crate) fn set_handler(&mut self, handler: Handler<T>) {
            self.handler = Some(handler);
        }

        /// What producers ring when they queue a batch (see [`Direct::park`]).
        pub(crate) fn doorbell(&self) -> Arc<Doorbell> {
            self.doorbell.clone()
        }

        /// Whether every write submitted so far completed and was handled.
        pub(crate) fn idle(&self) -> bool {
            self.pipeline.is_empty()
        }

        /// Writes `data` (aligned length) at `offset` (aligned) of `fd` (opened with
        /// [`open_direct`]), first reaping completions, and waiting for them while `depth`
        /// writes are in flight. Once submitted, the item reaches the handler, in journal
        /// order, with its outcome.
        pub(crate) fn submit(
            &mut self,
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
            self.reap();
            while self.broken.is_none()
                && (self.pipeline.len() >= self.depth || (fits && self.free.is_empty()))
            {
                self.wait();
            }
            if let Some(why) = &self.broken {
                let e = StoreError::Failed(why.clone());
                return Err(SubmitError::Refused(item, e));
            }
            let (buf, ptr, index) = if fits {
                let Some(i) = self.free.pop() else {
                    let e = StoreError::Failed("no free io_uring buffer".into());
                    return Err(SubmitError::Refused(item, e));
                };
                let slot = &mut self.slots[i];
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
            let tag = self.pipeline.push(Flight {
                item,
                buf,
                len: data.len(),
            });
            if self.depth == 1 {
                // One write at a time gains nothing from the ring, and through it an O_DSYNC
                // write is handed to a kernel worker (io-wq: it cannot complete without
                // blocking), a thread hand-off per group that CPU contention stretches to
                // milliseconds (bench-results/io-uring.md). So depth 1 writes on this thread.
                // SAFETY: `ptr` is valid for `len` bytes (a slot or the owned buffer, both
                // held by the pipeline until the write is handled below).
                let done =
                    unsafe { libc::pwrite(fd, ptr.cast(), len as usize, offset as libc::off_t) };
                let result = match done {
                    d if d < 0 => Err(StoreError::io("direct write", io::Error::last_os_error())),
                    d if d as usize != len as usize => Err(StoreError::io(
                        "direct write",
                        io::Error::new(
                            io::ErrorKind::WriteZero,
                            format!("wrote {d} of {len} bytes"),
                        ),
                    )),
                    _ => Ok(()),
                };
                let failed = result.as_ref().err().cloned();
                let released = self.pipeline.complete(tag, result);
                self.handle(released, false);
                return match failed {
                    Some(e) => Err(SubmitError::Failed(e)),
                    None => Ok(()),
                };
            }
            let entry = match index {
                Some(i) if self.registered => {
                    opcode::WriteFixed::new(types::Fd(fd), ptr, len, i as u16)
                        .offset(offset)
                        .build()
                }
                _ => opcode::Write::new(types::Fd(fd), ptr, len)
                    .offset(offset)
                    .build(),
            }
            .user_data(tag);
            let Err(e) = self.push_and_submit(&entry) else {
                return Ok(());
            };
            // Whether the kernel took the entry is unknown: the ring is not used again, so no
            // buffer is reused while the kernel might still read it.
            let why = format!("io_uring submit failed: {e}");
            self.broken = Some(why.clone());
            let err = StoreError::Failed(why);
            let released = self.pipeline.complete(tag, Err(err.clone()));
            self.handle(released, true);
            Err(SubmitError::Failed(err))
        }

        fn push_and_submit(&mut self, entry: &squeue::Entry) -> io::Result<()> {
            // SAFETY: the buffer the entry names stays allocated until its completion is
            // reaped (the pipeline owns it), or for good once the ring is broken.
            unsafe {
                let mut sq = self.ring.submission();
                sq.push(entry)
                    .map_err(|_| io::Error::other("submission queue full"))?;
                sq.sync();
            }
            let mut tries = 0;
            loop {
                match self.ring.submitter().submit() {
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
        pub(crate) fn drain(&mut self) {
            self.reap();
            while self.broken.is_none() && !self.pipeline.is_empty() {
                self.wait();
            }
        }

        /// Announces (`true`) that the writer is about to wait in [`Direct::park`], before it
        /// checks its channel a last time, or that it is not (`false`).
        pub(crate) fn set_parked(&self, parked: bool) {
            self.doorbell.parked.store(parked, Ordering::SeqCst);
            // Pairs with the fence in `Doorbell::wake`.
            fence(Ordering::SeqCst);
        }

        /// With writes in flight and an empty channel: waits in the ring until a write
        /// completes (and is handled) or a producer rings the doorbell.
        pub(crate) fn park(&mut self) {
            if self.broken.is_none() && !self.doorbell_armed {
                let poll = opcode::PollAdd::new(
                    types::Fd(self.doorbell.fd.as_raw_fd()),
                    libc::POLLIN as u32,
                )
                .build()
                .user_data(TAG_DOORBELL);
                match self.push_and_submit(&poll) {
                    Ok(()) => self.doorbell_armed = true,
                    Err(e) => {
                        self.fail(format!("io_uring submit failed: {e}"));
                        return;
                    }
                }
            }
            self.wait();
        }

        /// Blocks in the ring for at least one completion, then reaps.
        fn wait(&mut self) {
            if self.broken.is_some() {
                return;
            }
            let mut errors = 0usize;
            loop {
                // SAFETY: to_submit = 0; the wait touches no buffer.
                let waited = unsafe {
                    self.ring
                        .submitter()
                        .enter::<libc::sigset_t>(0, 1, ENTER_GETEVENTS, None)
                };
                match waited {
                    Ok(_) => break,
                    Err(e)
                        if matches!(e.raw_os_error(), Some(EINTR | EAGAIN | EBUSY))
                            && errors < ENTER_RETRIES_MAX =>
                    {
                        errors += 1;
                    }
                    Err(e) => {
                        self.fail(format!("io_uring wait failed: {e}"));
                        return;
                    }
                }
            }
            self.reap();
        }

        /// The ring failed: every write in flight fails, in order, and nothing more is
        /// submitted.
        fn fail(&mut self, why: String) {
            tracing::error!("io_uring: {why}");
            self.broken = Some(why.clone());
            let err = StoreError::Failed(why);
            let mut released = Vec::new();
            while let Some(tag) = self.pipeline.first_tag() {
                released.extend(self.pipeline.complete(tag, Err(err.clone())));
            }
            self.handle(released, true);
        }

        /// Takes every completion the ring holds and hands the writes they release to the
        /// handler, in journal order. Never blocks.
        fn reap(&mut self) {
            let done: Vec<(u64, i32)> = self
                .ring
                .completion()
                .map(|c| (c.user_data(), c.result()))
                .collect();
            for (tag, res) in done {
                if tag == TAG_DOORBELL {
                    self.doorbell_armed = false;
                    let mut count = [0u8; 8];
                    // SAFETY: reads 8 bytes into a live local from an eventfd we own
                    // (non-blocking: a counter already read leaves EAGAIN, ignored).
                    let _ = unsafe {
                        libc::read(self.doorbell.fd.as_raw_fd(), count.as_mut_ptr().cast(), 8)
                    };
                    continue;
                }
                let expected = self.pipeline.get(tag).map(|f| f.len);
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
                let released = self.pipeline.complete(tag, result);
                self.handle(released, false);
            }
        }

        /// Runs the handler on released writes and frees their buffers (or, on a broken ring,
        /// leaks those the kernel may still hold).
        fn handle(&mut self, released: Vec<(Flight<T>, Result<(), StoreError>)>, leak: bool) {
            for (flight, outcome) in released {
                if let Some(h) = self.handler.as_mut() {
                    h(flight.item, outcome);
                }
                match flight.buf {
                    Buf::Slot(i) if !leak => self.free.push(i),
                    Buf::Slot(_) => {}
                    Buf::Owned(b) if leak => std::mem::forget(b),
                    Buf::Owned(b) => drop(b),
                }
            }
        }
    }

    impl<T: Send + 'static> Drop for Direct<T> {
        fn drop(&mut self) {
            // The ring closes when `self` drops: no write may still be using a buffer.
            self.drain();
            if self.broken.is_some() {
                // Writes may still be in the kernel's hands: keep their buffers alive for good.
                std::mem::forget(std::mem::take(&mut self.slots));
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

    /// Never built without the feature.
    #[derive(Debug)]
    pub(crate) struct Doorbell;

    impl crate::group::Wake for Doorbell {
        fn wake(&self) {}
    }

    impl<T: Send + 'static> Direct<T> {
        pub(crate) fn new(_depth: usize) -> io::Result<Direct<T>> {
            Err(unsupported())
        }

        fn never(&self) -> ! {
            match *self {
                Direct::Never(n, _) => match n {},
            }
        }

        pub(crate) fn set_handler(&mut self, _handler: Handler<T>) {
            self.never()
        }

        pub(crate) fn doorbell(&self) -> std::sync::Arc<Doorbell> {
            self.never()
        }

        pub(crate) fn idle(&self) -> bool {
            self.never()
        }

        pub(crate) fn submit(
            &mut self,
            _fd: RawFd,
            _offset: u64,
            _data: &[u8],
            _item: T,
        ) -> Result<(), SubmitError<T>> {
            self.never()
        }

        pub(crate) fn drain(&mut self) {
            self.never()
        }

        pub(crate) fn set_parked(&self, _parked: bool) {
            self.never()
        }

        pub(crate) fn park(&mut self) {
            self.never()
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
