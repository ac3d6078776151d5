//! OpenWire (versions 9–12), loose encoding without the marshalling cache; see `docs/openwire.md`.
//!
//! Each frame on the wire (size prefix enabled, the default) is a big-endian `i32` length
//! followed by that many bytes, the first of which is the data-structure type byte
//! (`CommandTypes` in the Java client). [`Decoder`] splits a byte stream into [`Frame`]s;
//! [`decode_command`] turns a frame into a typed [`Command`] and [`encode_command`] does the
//! reverse (whole frame, size prefix included).
//!
//! - [`primitives`]: bounds-checked loose primitives.
//! - [`map`]: `MarshallingSupport` primitive maps (properties, map bodies, wire-format options).
//! - [`types`]: data structures and command structs.
//! - `codec`: the per-command field order of the Java marshallers.

mod body;
mod codec;
pub mod map;
pub mod primitives;
pub mod types;

pub use body::MAGIC;
pub use codec::{
    decode_command, decode_command_with, encode_command, encode_command_with, CodecOptions,
    MAX_NESTING_DEPTH,
};
pub use map::{MapLimits, PrimitiveMap, PrimitiveValue};
pub use types::*;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Default maximum frame size (ActiveMQ's `maxFrameSize` default is much larger; we are stricter).
pub const DEFAULT_MAX_FRAME_SIZE: usize = 64 * 1024 * 1024;

/// One size-prefixed OpenWire frame: its type byte and the undecoded body after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The data-structure type byte (e.g. 1 = `WireFormatInfo`).
    pub data_type: u8,
    /// The bytes after the type byte, still encoded.
    pub body: Bytes,
}

/// Errors of the OpenWire codec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenWireError {
    /// The size prefix announces more than the configured maximum.
    #[error("frame of {size} bytes exceeds the maximum of {max}")]
    FrameTooLarge { size: usize, max: usize },
    /// The size prefix is negative or zero (a frame holds at least its type byte).
    #[error("invalid frame size {0}")]
    BadSize(i32),
    /// A primitive read ran past the end of the body.
    #[error("truncated body")]
    Truncated,
    /// A string was not valid (modified) UTF-8.
    #[error("invalid UTF-8 in string")]
    BadUtf8,
    /// A string is too long for its 2-byte length prefix.
    #[error("string of {0} encoded bytes is too long for a 2-byte length")]
    StringTooLong(usize),
    /// The frame's type byte is not a command this codec knows.
    #[error("unknown command type {0}")]
    UnknownCommand(u8),
    /// A nested object has a type byte not allowed in that field.
    #[error("unexpected data structure type {found} in {field}")]
    UnexpectedType {
        /// The field being decoded.
        field: &'static str,
        /// The type byte found.
        found: u8,
    },
    /// A value Java never sends as null (an id string, a destination name, an array element)
    /// was null.
    #[error("null value in {0}")]
    NullValue(&'static str),
    /// A length prefix was negative.
    #[error("negative length {0}")]
    NegativeLength(i32),
    /// Bytes were left after the last field.
    #[error("{0} trailing bytes after the last field")]
    TrailingBytes(usize),
    /// Nested objects (or throwable causes) are deeper than allowed.
    #[error("nested objects deeper than {max}")]
    NestingTooDeep {
        /// The limit.
        max: usize,
    },
    /// An object array is longer than allowed.
    #[error("array of {count} elements exceeds the maximum of {max}")]
    ArrayTooLong {
        /// The announced count.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A primitive map or list is nested deeper than allowed.
    #[error("primitive map nested deeper than {max}")]
    MapTooDeep {
        /// The limit.
        max: usize,
    },
    /// A primitive map or list has more entries than allowed.
    #[error("primitive map of {count} entries exceeds the maximum of {max}")]
    TooManyEntries {
        /// The announced count.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A string, key or byte array is larger than allowed.
    #[error("value of {size} bytes exceeds the maximum of {max}")]
    ValueTooLarge {
        /// The announced size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A primitive map value has an unknown type tag.
    #[error("unknown primitive type {0}")]
    UnknownPrimitiveType(u8),
    /// A message body is deflate-compressed; this codec does not inflate.
    #[error("compressed message body (deflate) is not supported")]
    Compressed,
    /// A helper was asked for a body the message kind does not have.
    #[error("message is not a {0} message")]
    WrongMessageKind(&'static str),
    /// The negotiated OpenWire version is outside 9..=12.
    #[error("unsupported OpenWire version {0}")]
    UnsupportedVersion(u32),
}

/// Incremental splitter of a byte stream into [`Frame`]s.
#[derive(Debug, Clone)]
pub struct Decoder {
    max_frame_size: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_SIZE)
    }
}

impl Decoder {
    /// A decoder refusing frames whose size prefix exceeds `max_frame_size`.
    pub fn new(max_frame_size: usize) -> Self {
        Self { max_frame_size }
    }

    /// Takes one complete frame off the front of `buf`; `Ok(None)` if more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, OpenWireError> {
        let Some(prefix) = buf.get(..4) else {
            return Ok(None);
        };
        let size = i32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        if size <= 0 {
            return Err(OpenWireError::BadSize(size));
        }
        let size = size as usize;
        if size > self.max_frame_size {
            return Err(OpenWireError::FrameTooLarge {
                size,
                max: self.max_frame_size,
            });
        }
        if buf.len() < 4 + size {
            return Ok(None);
        }
        buf.advance(4);
        // A small frame is copied out: a slice would keep the whole read buffer alive while
        // its message sits on a queue (see `own_allocation`).
        let mut frame = crate::own_allocation(buf, size);
        let data_type = frame.get_u8();
        Ok(Some(Frame {
            data_type,
            body: frame,
        }))
    }
}

/// Appends the size-prefixed wire form of `frame` to `out`.
pub fn encode(frame: &Frame, out: &mut BytesMut) -> Result<(), OpenWireError> {
    let size = frame.body.len() + 1;
    let prefix = i32::try_from(size).map_err(|_| OpenWireError::FrameTooLarge {
        size,
        max: i32::MAX as usize,
    })?;
    out.reserve(4 + size);
    out.put_i32(prefix);
    out.put_u8(frame.data_type);
    out.put_slice(&frame.body);
    Ok(())
}

/// Reads a loose-encoded string: a boolean "not null" byte, then Java `DataOutput.writeUTF`
/// (unsigned 16-bit length, then that many bytes of modified UTF-8).
pub fn read_loose_string(body: &mut Bytes) -> Result<Option<String>, OpenWireError> {
    if body.remaining() < 1 {
        return Err(OpenWireError::Truncated);
    }
    if body.get_u8() == 0 {
        return Ok(None);
    }
    if body.remaining() < 2 {
        return Err(OpenWireError::Truncated);
    }
    let len = usize::from(body.get_u16());
    if body.remaining() < len {
        return Err(OpenWireError::Truncated);
    }
    let raw = body.split_to(len);
    decode_modified_utf8(&raw).map(Some)
}

/// Writes a loose-encoded string (see [`read_loose_string`]).
pub fn write_loose_string(value: Option<&str>, out: &mut BytesMut) -> Result<(), OpenWireError> {
    let Some(s) = value else {
        out.put_u8(0);
        return Ok(());
    };
    let encoded = encode_modified_utf8(s);
    let len =
        u16::try_from(encoded.len()).map_err(|_| OpenWireError::StringTooLong(encoded.len()))?;
    out.put_u8(1);
    out.put_u16(len);
    out.put_slice(&encoded);
    Ok(())
}

/// Java modified UTF-8: U+0000 as `C0 80`, supplementary characters as two 3-byte surrogates.
pub(crate) fn encode_modified_utf8(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    for unit in s.encode_utf16() {
        match unit {
            0x0001..=0x007F => out.push(unit as u8),
            0x0000 | 0x0080..=0x07FF => {
                out.push(0xC0 | (unit >> 6) as u8);
                out.push(0x80 | (unit & 0x3F) as u8);
            }
            _ => {
                out.push(0xE0 | (unit >> 12) as u8);
                out.push(0x80 | ((unit >> 6) & 0x3F) as u8);
                out.push(0x80 | (unit & 0x3F) as u8);
            }
        }
    }
    out
}

pub(crate) fn decode_modified_utf8(raw: &[u8]) -> Result<String, OpenWireError> {
    // ASCII (ids, destination names, most property keys) is the same in both encodings.
    if raw.is_ascii() {
        return String::from_utf8(raw.to_vec()).map_err(|_| OpenWireError::BadUtf8);
    }
    let mut units = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b0 = raw[i];
        let cont = |j: usize| match raw.get(j) {
            Some(&b) if b & 0xC0 == 0x80 => Ok(u16::from(b & 0x3F)),
            _ => Err(OpenWireError::BadUtf8),
        };
        if b0 & 0x80 == 0 {
            units.push(u16::from(b0));
            i += 1;
        } else if b0 & 0xE0 == 0xC0 {
            units.push((u16::from(b0 & 0x1F) << 6) | cont(i + 1)?);
            i += 2;
        } else if b0 & 0xF0 == 0xE0 {
            units.push((u16::from(b0 & 0x0F) << 12) | (cont(i + 1)? << 6) | cont(i + 2)?);
            i += 3;
        } else {
            return Err(OpenWireError::BadUtf8);
        }
    }
    String::from_utf16(&units).map_err(|_| OpenWireError::BadUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frame_too_large_is_refused_before_buffering() {
        let mut buf = BytesMut::from(&[0x00, 0x00, 0x01, 0x01, 0x01][..]);
        let err = Decoder::new(256).decode(&mut buf).unwrap_err();
        assert_eq!(
            err,
            OpenWireError::FrameTooLarge {
                size: 257,
                max: 256
            }
        );
    }

    #[test]
    fn partial_frame_waits() {
        let mut buf = BytesMut::from(&[0x00, 0x00, 0x00, 0x03, 0x0A, 0x01][..]);
        assert_eq!(Decoder::default().decode(&mut buf).unwrap(), None);
        buf.put_u8(0x02);
        let f = Decoder::default().decode(&mut buf).unwrap().unwrap();
        assert_eq!(
            f,
            Frame {
                data_type: 0x0A,
                body: Bytes::from_static(&[1, 2])
            }
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn modified_utf8_nul_and_supplementary() {
        assert_eq!(encode_modified_utf8("\0"), vec![0xC0, 0x80]);
        assert_eq!(encode_modified_utf8("\u{1F600}").len(), 6);
    }

    #[test]
    fn string_too_long() {
        let s = "x".repeat(65536);
        assert_eq!(
            write_loose_string(Some(&s), &mut BytesMut::new()),
            Err(OpenWireError::StringTooLong(65536))
        );
    }

    proptest! {
        #[test]
        fn frame_round_trip(t in any::<u8>(), body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let frame = Frame { data_type: t, body: Bytes::from(body) };
            let mut buf = BytesMut::new();
            encode(&frame, &mut buf).unwrap();
            prop_assert_eq!(Decoder::default().decode(&mut buf).unwrap(), Some(frame));
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn string_round_trip(s in proptest::option::of(".{0,64}")) {
            let mut buf = BytesMut::new();
            write_loose_string(s.as_deref(), &mut buf).unwrap();
            let mut bytes = buf.freeze();
            prop_assert_eq!(read_loose_string(&mut bytes).unwrap(), s);
            prop_assert!(bytes.is_empty());
        }

        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut buf = BytesMut::from(&data[..]);
            let mut d = Decoder::new(1024);
            while let Ok(Some(f)) = d.decode(&mut buf) {
                let mut body = f.body;
                let _ = read_loose_string(&mut body);
            }
            let mut b = Bytes::from(data);
            let _ = read_loose_string(&mut b);
        }
    }
}
