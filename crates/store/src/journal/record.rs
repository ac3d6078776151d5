//! Record framing (CRC32C, little-endian) and the encoding of [`Op`]s inside a record.
//!
//! The byte layout is documented in `docs/journal-format.md`; keep the two in step.
//!
//! ```text
//! record header (24 bytes)
//!   0  u32  magic  0x4A514D46 ("FMQJ" on disk)
//!   4  u32  payload_len
//!   8  u8   record type (1 = batch, 2 = segments released, 3 = epoch start, 4 = padding)
//!   9  u8   format version (2; 3 for padding; 1 is still read)
//!  10  u16  flags: bit 0 = first record after an fdatasync (sync-unit start); others 0
//!  12  u64  epoch of the writer
//!  20  u32  CRC32C over bytes 0..20 of the header, then the payload
//!  24  payload
//! ```

use bytes::Bytes;

use crate::{Op, SubscriptionRecord};

/// Marks the start of a record.
pub const RECORD_MAGIC: u32 = 0x4A51_4D46;
/// Bytes of a record header.
pub const RECORD_HEADER_BYTES: usize = 24;
/// The record format version written by this code. Version 2 added the epoch-start record
/// (type 3) and the seal rule; version 1 records (types 1 and 2 only) are still read.
pub const RECORD_VERSION: u8 = 2;
/// The oldest record format version this code reads.
pub const RECORD_VERSION_MIN: u8 = 1;
/// The version of a padding record (type 4), the only type version 3 added. Other records are
/// still written as version 2, so a journal written without padding (the portable path) stays
/// readable by binaries that predate it.
pub const RECORD_VERSION_PADDING: u8 = 3;
/// Header flag (bit 0 of the u16 at offset 10): the record is the first one the writer wrote
/// after an `fdatasync` of its segment (or the first of its segment). The bytes from one such
/// record to the next were made durable by one `fdatasync` before any byte after them was
/// written, so after a power cut only the last sync unit of the last segment can be damaged;
/// recovery tells a torn tail from corruption by it (see `docs/journal-format.md`).
pub const RECORD_FLAG_UNIT_START: u16 = 1;
/// The largest record payload accepted (written or read): bounds memory on a corrupt length.
pub const RECORD_PAYLOAD_BYTES_MAX: usize = 256 * 1024 * 1024;

/// Marks the start of a segment file.
pub const SEGMENT_MAGIC: &[u8; 8] = b"FMQSEG01";
/// Bytes of a segment header: magic, segment id, CRC, reserved.
pub const SEGMENT_HEADER_BYTES: usize = 24;

/// Bytes before a message payload inside an enqueue op: its CRC32C and its length. The index
/// points at the payload; `load` reads these 8 bytes too and checks them.
pub const PAYLOAD_PREFIX_BYTES: usize = 8;

/// What a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordType {
    /// One atomic batch of ops.
    Batch = 1,
    /// Every segment id range released by GC so far (cumulative).
    SegmentsReleased = 2,
    /// A new master's first record: its epoch and the segments it seals (format version 2).
    EpochStart = 3,
    /// Filler up to an alignment boundary, written by the direct (io_uring) path so that every
    /// write starts and ends on a block boundary (format version 3); replay skips it.
    Padding = 4,
}

impl RecordType {
    fn from_u8(v: u8, version: u8) -> Option<RecordType> {
        match (v, version) {
            (1, RECORD_VERSION_MIN..=RECORD_VERSION_PADDING) => Some(RecordType::Batch),
            (2, RECORD_VERSION_MIN..=RECORD_VERSION_PADDING) => Some(RecordType::SegmentsReleased),
            (3, 2..=RECORD_VERSION_PADDING) => Some(RecordType::EpochStart),
            (4, RECORD_VERSION_PADDING) => Some(RecordType::Padding),
            _ => None,
        }
    }
}

const OP_ENQUEUE: u8 = 1;
const OP_DEQUEUE: u8 = 2;
const OP_PUT_SUBSCRIPTION: u8 = 3;
const OP_DELETE_SUBSCRIPTION: u8 = 4;
const OP_PURGE: u8 = 5;

/// Why bytes are not a valid record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// Zeros where a header should be: the end of the written part of a segment.
    End,
    /// Fewer bytes than the header or the payload need.
    Truncated,
    /// The bytes do not start with the record magic.
    BadMagic,
    /// The payload length is over [`RECORD_PAYLOAD_BYTES_MAX`].
    TooLong(u32),
    /// Unknown record type or version.
    BadType(u8, u8),
    /// The CRC does not match.
    BadCrc,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::End => write!(f, "end of written data"),
            FrameError::Truncated => write!(f, "record truncated"),
            FrameError::BadMagic => write!(f, "bad record magic"),
            FrameError::TooLong(n) => write!(f, "record length {n} over the limit"),
            FrameError::BadType(t, v) => write!(f, "unknown record type {t} version {v}"),
            FrameError::BadCrc => write!(f, "record CRC32C mismatch"),
        }
    }
}

/// A record parsed (and checked) from a byte slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<'a> {
    /// What it holds.
    pub kind: RecordType,
    /// The writer's epoch.
    pub epoch: u64,
    /// Whether it is the first record written after an `fdatasync` ([`RECORD_FLAG_UNIT_START`]).
    pub unit_start: bool,
    /// The payload.
    pub payload: &'a [u8],
}

impl Frame<'_> {
    /// Header plus payload bytes.
    pub fn total_bytes(&self) -> usize {
        RECORD_HEADER_BYTES + self.payload.len()
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Parses the record at the start of `bytes`.
pub fn parse_frame(bytes: &[u8]) -> Result<Frame<'_>, FrameError> {
    if bytes.len() < RECORD_HEADER_BYTES {
        if bytes.iter().all(|b| *b == 0) {
            return Err(FrameError::End);
        }
        return Err(FrameError::Truncated);
    }
    let magic = u32_at(bytes, 0);
    if magic != RECORD_MAGIC {
        if bytes[..RECORD_HEADER_BYTES].iter().all(|b| *b == 0) {
            return Err(FrameError::End);
        }
        return Err(FrameError::BadMagic);
    }
    let payload_len = u32_at(bytes, 4);
    if payload_len as usize > RECORD_PAYLOAD_BYTES_MAX {
        return Err(FrameError::TooLong(payload_len));
    }
    let (kind, version) = (bytes[8], bytes[9]);
    let Some(kind) = RecordType::from_u8(kind, version) else {
        return Err(FrameError::BadType(kind, version));
    };
    let end = RECORD_HEADER_BYTES + payload_len as usize;
    if bytes.len() < end {
        return Err(FrameError::Truncated);
    }
    let stored_crc = u32_at(bytes, 20);
    let crc = crc32c::crc32c_append(
        crc32c::crc32c(&bytes[..20]),
        &bytes[RECORD_HEADER_BYTES..end],
    );
    if crc != stored_crc {
        return Err(FrameError::BadCrc);
    }
    Ok(Frame {
        kind,
        epoch: u64_at(bytes, 12),
        unit_start: u16::from_le_bytes([bytes[10], bytes[11]]) & RECORD_FLAG_UNIT_START != 0,
        payload: &bytes[RECORD_HEADER_BYTES..end],
    })
}

/// Appends a record header whose payload was already appended at `buf[start + 24..]`: call
/// [`begin_record`] first, append the payload, then this.
pub fn finish_record(buf: &mut [u8], start: usize, kind: RecordType, epoch: u64) {
    write_header(buf, start, kind, RECORD_VERSION, epoch);
}

/// Fills the header of the record that runs from `start` to the end of `buf`, CRC included.
fn write_header(buf: &mut [u8], start: usize, kind: RecordType, version: u8, epoch: u64) {
    let payload_len = buf.len() - start - RECORD_HEADER_BYTES;
    debug_assert!(payload_len <= RECORD_PAYLOAD_BYTES_MAX);
    let header = &mut buf[start..start + RECORD_HEADER_BYTES];
    header[0..4].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
    header[4..8].copy_from_slice(&(payload_len as u32).to_le_bytes());
    header[8] = kind as u8;
    header[9] = version;
    header[10..12].copy_from_slice(&0u16.to_le_bytes());
    header[12..20].copy_from_slice(&epoch.to_le_bytes());
    let crc = crc32c::crc32c_append(
        crc32c::crc32c(&buf[start..start + 20]),
        &buf[start + RECORD_HEADER_BYTES..],
    );
    buf[start + 20..start + 24].copy_from_slice(&crc.to_le_bytes());
}

/// Marks the whole record in `record` as the first written after an `fdatasync` (a sync-unit
/// start, see [`RECORD_FLAG_UNIT_START`]) and recomputes its CRC.
pub fn mark_unit_start(record: &mut [u8]) {
    debug_assert!(record.len() >= RECORD_HEADER_BYTES);
    let flags = u16::from_le_bytes([record[10], record[11]]) | RECORD_FLAG_UNIT_START;
    record[10..12].copy_from_slice(&flags.to_le_bytes());
    let crc = crc32c::crc32c_append(
        crc32c::crc32c(&record[..20]),
        &record[RECORD_HEADER_BYTES..],
    );
    record[20..24].copy_from_slice(&crc.to_le_bytes());
}

/// Appends a padding record (type 4) that ends `buf` on a multiple of `align` bytes counted from
/// `base` (the file offset of `buf[0]`). A gap shorter than a record header is padded to the
/// next boundary but one. Returns the bytes appended (0 when already aligned).
pub fn pad_to(buf: &mut Vec<u8>, base: u64, align: u64, epoch: u64) -> usize {
    debug_assert!(align.is_power_of_two() && align >= RECORD_HEADER_BYTES as u64);
    let end = base + buf.len() as u64;
    let mut gap = end.next_multiple_of(align) - end;
    if gap == 0 {
        return 0;
    }
    if gap < RECORD_HEADER_BYTES as u64 {
        gap += align;
    }
    let start = begin_record(buf);
    buf.resize(start + gap as usize, 0);
    write_header(
        buf,
        start,
        RecordType::Padding,
        RECORD_VERSION_PADDING,
        epoch,
    );
    gap as usize
}

/// Reserves the header of a record at the end of `buf`; returns where the record starts.
pub fn begin_record(buf: &mut Vec<u8>) -> usize {
    let start = buf.len();
    buf.resize(start + RECORD_HEADER_BYTES, 0);
    start
}

/// The bytes of a segment header.
pub fn segment_header(segment_id: u32) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut h = [0u8; SEGMENT_HEADER_BYTES];
    h[0..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..16].copy_from_slice(&u64::from(segment_id).to_le_bytes());
    let crc = crc32c::crc32c(&h[0..16]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Checks a segment header; returns the segment id it names.
pub fn parse_segment_header(bytes: &[u8]) -> Option<u64> {
    if bytes.len() < SEGMENT_HEADER_BYTES || &bytes[0..8] != SEGMENT_MAGIC {
        return None;
    }
    if crc32c::crc32c(&bytes[0..16]) != u32_at(bytes, 16) {
        return None;
    }
    Some(u64_at(bytes, 8))
}

// ---------------------------------------------------------------------------------------------
// Ops inside a batch record.

/// Why an op could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodeError(pub String);

pub(crate) fn put_str16(buf: &mut Vec<u8>, s: &str, what: &str) -> Result<(), EncodeError> {
    let len = u16::try_from(s.len())
        .map_err(|_| EncodeError(format!("{what} of {} bytes is over 65535", s.len())))?;
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
    Ok(())
}

/// Bytes the encoding of `ops` takes (the batch record payload), without encoding.
pub fn batch_payload_bytes(ops: &[Op]) -> usize {
    let str16 = |s: &str| 2 + s.len();
    4 + ops
        .iter()
        .map(|op| {
            1 + match op {
                Op::Enqueue { list, payload, .. } => {
                    str16(list) + 8 + PAYLOAD_PREFIX_BYTES + payload.len()
                }
                Op::Dequeue { list, .. } => str16(list) + 8,
                Op::PutSubscription(r) => {
                    str16(&r.list)
                        + str16(&r.client_id)
                        + str16(&r.name)
                        + str16(&r.topic)
                        + 1
                        + r.selector.as_deref().map_or(0, |s| 4 + s.len())
                        + 1
                }
                Op::DeleteSubscription { list } | Op::Purge { list } => str16(list),
            }
        })
        .sum::<usize>()
}

/// Appends the batch payload of `ops` to `buf`. Returns, for each enqueue op in order, the
/// offset in `buf` of its message payload.
pub fn encode_batch(buf: &mut Vec<u8>, ops: &[Op]) -> Result<Vec<usize>, EncodeError> {
    let count = u32::try_from(ops.len()).map_err(|_| EncodeError("too many ops".into()))?;
    buf.extend_from_slice(&count.to_le_bytes());
    let mut payload_offsets = Vec::new();
    for op in ops {
        match op {
            Op::Enqueue { list, seq, payload } => {
                buf.push(OP_ENQUEUE);
                put_str16(buf, list, "list name")?;
                buf.extend_from_slice(&seq.to_le_bytes());
                let len = u32::try_from(payload.len())
                    .map_err(|_| EncodeError("message over 4 GiB".into()))?;
                buf.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
                buf.extend_from_slice(&len.to_le_bytes());
                payload_offsets.push(buf.len());
                buf.extend_from_slice(payload);
            }
            Op::Dequeue { list, seq } => {
                buf.push(OP_DEQUEUE);
                put_str16(buf, list, "list name")?;
                buf.extend_from_slice(&seq.to_le_bytes());
            }
            Op::PutSubscription(r) => {
                buf.push(OP_PUT_SUBSCRIPTION);
                put_str16(buf, &r.list, "list name")?;
                put_str16(buf, &r.client_id, "client id")?;
                put_str16(buf, &r.name, "subscription name")?;
                put_str16(buf, &r.topic, "topic")?;
                match &r.selector {
                    None => buf.push(0),
                    Some(s) => {
                        buf.push(1);
                        let len = u32::try_from(s.len())
                            .map_err(|_| EncodeError("selector over 4 GiB".into()))?;
                        buf.extend_from_slice(&len.to_le_bytes());
                        buf.extend_from_slice(s.as_bytes());
                    }
                }
                buf.push(u8::from(r.no_local));
            }
            Op::DeleteSubscription { list } => {
                buf.push(OP_DELETE_SUBSCRIPTION);
                put_str16(buf, list, "list name")?;
            }
            Op::Purge { list } => {
                buf.push(OP_PURGE);
                put_str16(buf, list, "list name")?;
            }
        }
    }
    Ok(payload_offsets)
}

/// A decoded op; an enqueue carries where its payload sits in the record payload instead of
/// the bytes (replay does not need them, `load` reads them back later).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodedOp {
    /// An enqueue: payload at `payload_offset` (relative to the record payload) of `len` bytes.
    Enqueue {
        /// The list.
        list: String,
        /// The message's seq.
        seq: u64,
        /// Offset of the message bytes within the record payload.
        payload_offset: usize,
        /// Message bytes.
        len: u32,
    },
    /// Any other op, as submitted.
    Other(Op),
}

/// A cursor over little-endian bytes; every read is bounds-checked.
pub(crate) struct Reader<'a> {
    b: &'a [u8],
    pub(crate) at: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Reader<'a> {
        Reader { b, at: 0 }
    }
    pub(crate) fn remaining(&self) -> usize {
        self.b.len() - self.at
    }
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).ok_or("length overflow")?;
        if end > self.b.len() {
            return Err(format!("op truncated at byte {}", self.at));
        }
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16, String> {
        let s = self.take(2)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, String> {
        Ok(u32_at(self.take(4)?, 0))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, String> {
        Ok(u64_at(self.take(8)?, 0))
    }
    pub(crate) fn str16(&mut self) -> Result<String, String> {
        let n = self.u16()? as usize;
        let s = self.take(n)?;
        String::from_utf8(s.to_vec()).map_err(|_| "string is not UTF-8".to_string())
    }
}

/// Decodes a batch record payload. The record CRC already passed, so an error here means a bug
/// or a writer of another format: reported as corruption, never a panic.
pub fn decode_batch(payload: &[u8]) -> Result<Vec<DecodedOp>, String> {
    let mut r = Reader { b: payload, at: 0 };
    let count = r.u32()? as usize;
    // Each op takes at least 3 bytes: bound the allocation by what the payload can hold.
    let mut ops = Vec::with_capacity(count.min(payload.len() / 3));
    for _ in 0..count {
        let tag = r.u8()?;
        let op = match tag {
            OP_ENQUEUE => {
                let list = r.str16()?;
                let seq = r.u64()?;
                let _crc = r.u32()?;
                let len = r.u32()?;
                let payload_offset = r.at;
                r.take(len as usize)?;
                DecodedOp::Enqueue {
                    list,
                    seq,
                    payload_offset,
                    len,
                }
            }
            OP_DEQUEUE => {
                let list = r.str16()?;
                let seq = r.u64()?;
                DecodedOp::Other(Op::Dequeue { list, seq })
            }
            OP_PUT_SUBSCRIPTION => {
                let list = r.str16()?;
                let client_id = r.str16()?;
                let name = r.str16()?;
                let topic = r.str16()?;
                let selector = match r.u8()? {
                    0 => None,
                    1 => {
                        let n = r.u32()? as usize;
                        let s = r.take(n)?;
                        Some(String::from_utf8(s.to_vec()).map_err(|_| "selector not UTF-8")?)
                    }
                    v => return Err(format!("bad selector flag {v}")),
                };
                let no_local = r.u8()? != 0;
                DecodedOp::Other(Op::PutSubscription(SubscriptionRecord {
                    list,
                    client_id,
                    name,
                    topic,
                    selector,
                    no_local,
                }))
            }
            OP_DELETE_SUBSCRIPTION => DecodedOp::Other(Op::DeleteSubscription { list: r.str16()? }),
            OP_PURGE => DecodedOp::Other(Op::Purge { list: r.str16()? }),
            t => return Err(format!("unknown op tag {t}")),
        };
        ops.push(op);
    }
    if r.at != payload.len() {
        return Err(format!("{} trailing bytes after ops", payload.len() - r.at));
    }
    Ok(ops)
}

/// Checks the 8-byte prefix (CRC32C, length) read back with a payload at load time.
pub fn check_payload(prefix_and_payload: &[u8], expected_len: u32) -> Result<Bytes, String> {
    if prefix_and_payload.len() != PAYLOAD_PREFIX_BYTES + expected_len as usize {
        return Err("short read".into());
    }
    let crc = u32_at(prefix_and_payload, 0);
    let len = u32_at(prefix_and_payload, 4);
    if len != expected_len {
        return Err(format!("length {len} where the index says {expected_len}"));
    }
    let payload = &prefix_and_payload[PAYLOAD_PREFIX_BYTES..];
    if crc32c::crc32c(payload) != crc {
        return Err("message CRC32C mismatch".into());
    }
    Ok(Bytes::copy_from_slice(payload))
}

/// Encodes the payload of a segments-released record: cumulative `[first, last]` id ranges,
/// then the highest seq of every list at that point (a full replay no longer sees the enqueues
/// in released segments, but must not hand out their seqs again).
pub fn encode_released(
    buf: &mut Vec<u8>,
    ranges: &[(u32, u32)],
    max_seqs: &[(String, u64)],
) -> Result<(), EncodeError> {
    buf.extend_from_slice(&(ranges.len() as u32).to_le_bytes());
    for (first, last) in ranges {
        buf.extend_from_slice(&first.to_le_bytes());
        buf.extend_from_slice(&last.to_le_bytes());
    }
    buf.extend_from_slice(&(max_seqs.len() as u32).to_le_bytes());
    for (list, max_seq) in max_seqs {
        put_str16(buf, list, "list name")?;
        buf.extend_from_slice(&max_seq.to_le_bytes());
    }
    Ok(())
}

/// What an epoch-start record holds: the new master's epoch, and for each segment it seals,
/// the length recovery found valid in it. Replay ignores every byte of a sealed segment past its
/// sealed length: a deposed master that appended there after the takeover is ignored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EpochStart {
    /// The epoch of the master that wrote it (equal to the record header's epoch).
    pub epoch: u64,
    /// `(segment id, sealed length in bytes)`, ascending by id.
    pub sealed: Vec<(u32, u64)>,
}

/// Sealed segments an epoch-start record may list at most (it names the previous head, so one
/// in practice): bounds the decoder on a corrupt count.
pub const EPOCH_START_SEALED_MAX: usize = 1024;

/// Encodes the payload of an epoch-start record.
pub fn encode_epoch_start(buf: &mut Vec<u8>, start: &EpochStart) -> Result<(), EncodeError> {
    if start.sealed.len() > EPOCH_START_SEALED_MAX {
        return Err(EncodeError(format!(
            "{} sealed segments, over {EPOCH_START_SEALED_MAX}",
            start.sealed.len()
        )));
    }
    buf.extend_from_slice(&start.epoch.to_le_bytes());
    buf.extend_from_slice(&(start.sealed.len() as u32).to_le_bytes());
    for (segment, len) in &start.sealed {
        buf.extend_from_slice(&segment.to_le_bytes());
        buf.extend_from_slice(&len.to_le_bytes());
    }
    Ok(())
}

/// Decodes an epoch-start payload; `header_epoch` is the epoch in the record header, which must
/// agree with the payload's.
pub fn decode_epoch_start(payload: &[u8], header_epoch: u64) -> Result<EpochStart, String> {
    let mut r = Reader { b: payload, at: 0 };
    let epoch = r.u64()?;
    if epoch != header_epoch {
        return Err(format!(
            "epoch {epoch} in the payload, {header_epoch} in the header"
        ));
    }
    let n = r.u32()? as usize;
    if n > EPOCH_START_SEALED_MAX {
        return Err(format!(
            "{n} sealed segments, over {EPOCH_START_SEALED_MAX}"
        ));
    }
    let mut sealed = Vec::with_capacity(n);
    for _ in 0..n {
        sealed.push((r.u32()?, r.u64()?));
    }
    if r.remaining() != 0 {
        return Err(format!("{} trailing bytes", r.remaining()));
    }
    Ok(EpochStart { epoch, sealed })
}

/// What a segments-released record holds: ranges and per-list highest seqs.
pub type Released = (Vec<(u32, u32)>, Vec<(String, u64)>);

/// Decodes a segments-released payload.
pub fn decode_released(payload: &[u8]) -> Result<Released, String> {
    let mut r = Reader { b: payload, at: 0 };
    let n = r.u32()? as usize;
    let mut ranges = Vec::with_capacity(n.min(payload.len() / 8));
    for _ in 0..n {
        ranges.push((r.u32()?, r.u32()?));
    }
    let n = r.u32()? as usize;
    let mut max_seqs = Vec::with_capacity(n.min(payload.len() / 10));
    for _ in 0..n {
        max_seqs.push((r.str16()?, r.u64()?));
    }
    if r.remaining() != 0 {
        return Err(format!("{} trailing bytes", r.remaining()));
    }
    Ok((ranges, max_seqs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_ops() -> Vec<Op> {
        vec![
            Op::Enqueue {
                list: "queue://a".into(),
                seq: 7,
                payload: Bytes::from_static(b"hello"),
            },
            Op::Dequeue {
                list: "queue://a".into(),
                seq: 3,
            },
            Op::PutSubscription(SubscriptionRecord {
                list: "durable://c:s".into(),
                client_id: "c".into(),
                name: "s".into(),
                topic: "t.>".into(),
                selector: Some("x > 1".into()),
                no_local: true,
            }),
            Op::DeleteSubscription {
                list: "durable://c:s".into(),
            },
            Op::Purge {
                list: "queue://b".into(),
            },
        ]
    }

    #[test]
    fn batch_round_trips_and_size_is_predicted() {
        let ops = sample_ops();
        let mut buf = Vec::new();
        let start = begin_record(&mut buf);
        let offsets = encode_batch(&mut buf, &ops).unwrap();
        finish_record(&mut buf, start, RecordType::Batch, 42);
        assert_eq!(buf.len(), RECORD_HEADER_BYTES + batch_payload_bytes(&ops));
        let frame = parse_frame(&buf).unwrap();
        assert_eq!(frame.kind, RecordType::Batch);
        assert_eq!(frame.epoch, 42);
        let decoded = decode_batch(frame.payload).unwrap();
        assert_eq!(decoded.len(), ops.len());
        match &decoded[0] {
            DecodedOp::Enqueue {
                payload_offset,
                len,
                seq,
                ..
            } => {
                assert_eq!(*seq, 7);
                assert_eq!(RECORD_HEADER_BYTES + payload_offset, offsets[0]);
                let p = &frame.payload[*payload_offset - 8..*payload_offset + *len as usize];
                assert_eq!(&check_payload(p, *len).unwrap()[..], b"hello");
            }
            other => panic!("{other:?}"),
        }
        for (d, o) in decoded[1..].iter().zip(&ops[1..]) {
            assert_eq!(d, &DecodedOp::Other(o.clone()));
        }
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let mut buf = Vec::new();
        let start = begin_record(&mut buf);
        encode_batch(&mut buf, &sample_ops()).unwrap();
        finish_record(&mut buf, start, RecordType::Batch, 1);
        for bit in 0..buf.len() * 8 {
            let mut b = buf.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(parse_frame(&b).is_err(), "bit {bit} undetected");
        }
    }

    #[test]
    fn zeros_are_the_end_and_partial_records_are_truncated() {
        assert_eq!(parse_frame(&[0u8; 100]), Err(FrameError::End));
        assert_eq!(parse_frame(&[0u8; 3]), Err(FrameError::End));
        let mut buf = Vec::new();
        let start = begin_record(&mut buf);
        encode_batch(&mut buf, &sample_ops()).unwrap();
        finish_record(&mut buf, start, RecordType::Batch, 1);
        assert_eq!(
            parse_frame(&buf[..buf.len() - 1]),
            Err(FrameError::Truncated)
        );
        assert_eq!(parse_frame(&buf[..10]), Err(FrameError::Truncated));
    }

    #[test]
    fn epoch_start_round_trips_and_version_1_still_reads() {
        let start = EpochStart {
            epoch: 7,
            sealed: vec![(3, 4096)],
        };
        let mut buf = Vec::new();
        let at = begin_record(&mut buf);
        encode_epoch_start(&mut buf, &start).unwrap();
        finish_record(&mut buf, at, RecordType::EpochStart, 7);
        let frame = parse_frame(&buf).unwrap();
        assert_eq!(frame.kind, RecordType::EpochStart);
        assert_eq!(decode_epoch_start(frame.payload, 7).unwrap(), start);
        assert!(decode_epoch_start(frame.payload, 8).is_err());

        // A version-1 batch (written before epoch-start records existed) is still accepted,
        // but a version-1 record of type 3 is not: that type did not exist yet.
        let mut v1 = Vec::new();
        let at = begin_record(&mut v1);
        encode_batch(&mut v1, &sample_ops()).unwrap();
        finish_record(&mut v1, at, RecordType::Batch, 0);
        v1[9] = 1;
        let crc = crc32c::crc32c_append(crc32c::crc32c(&v1[..20]), &v1[RECORD_HEADER_BYTES..]);
        v1[20..24].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(parse_frame(&v1).unwrap().kind, RecordType::Batch);
        let mut bad = buf.clone();
        bad[9] = 1;
        let crc = crc32c::crc32c_append(crc32c::crc32c(&bad[..20]), &bad[RECORD_HEADER_BYTES..]);
        bad[20..24].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(parse_frame(&bad), Err(FrameError::BadType(3, 1)));
    }

    #[test]
    fn segment_header_round_trips() {
        let h = segment_header(9);
        assert_eq!(parse_segment_header(&h), Some(9));
        let mut bad = h;
        bad[9] ^= 1;
        assert_eq!(parse_segment_header(&bad), None);
    }
}
