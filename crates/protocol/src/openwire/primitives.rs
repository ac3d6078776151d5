//! Loose-encoding primitives (`BaseDataStreamMarshaller` with tight encoding and caching off).
//!
//! Everything is big-endian Java `DataOutput`: booleans are one byte (non-zero = true), strings
//! are a "not null" boolean then `writeUTF`, byte arrays and byte sequences are a "not null"
//! boolean, an `i32` length and the bytes. Every read is bounds-checked and returns
//! [`OpenWireError::Truncated`] rather than panicking.

use bytes::{BufMut, Bytes, BytesMut};

use super::{decode_modified_utf8, encode_modified_utf8, OpenWireError};

/// A bounds-checked cursor over an encoded body.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }

    /// Fails with [`OpenWireError::TrailingBytes`] unless everything was read.
    pub fn finish(&self) -> Result<(), OpenWireError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(OpenWireError::TrailingBytes(n)),
        }
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], OpenWireError> {
        let end = self.pos.checked_add(n).ok_or(OpenWireError::Truncated)?;
        let out = self
            .data
            .get(self.pos..end)
            .ok_or(OpenWireError::Truncated)?;
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], OpenWireError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    /// One unsigned byte.
    pub fn u8(&mut self) -> Result<u8, OpenWireError> {
        Ok(self.array::<1>()?[0])
    }

    /// A Java boolean (any non-zero byte is true, as in `DataInput.readBoolean`).
    pub fn bool(&mut self) -> Result<bool, OpenWireError> {
        Ok(self.u8()? != 0)
    }

    /// A big-endian `u16`.
    pub fn u16(&mut self) -> Result<u16, OpenWireError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    /// A big-endian `i16`.
    pub fn i16(&mut self) -> Result<i16, OpenWireError> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    /// A big-endian `i32`.
    pub fn i32(&mut self) -> Result<i32, OpenWireError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    /// A big-endian `i64`.
    pub fn i64(&mut self) -> Result<i64, OpenWireError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    /// An `i32` length that must be non-negative and fit in what is left.
    pub fn length(&mut self) -> Result<usize, OpenWireError> {
        let len = self.i32()?;
        let len = usize::try_from(len).map_err(|_| OpenWireError::NegativeLength(len))?;
        if len > self.remaining() {
            return Err(OpenWireError::Truncated);
        }
        Ok(len)
    }

    /// `len` bytes of modified UTF-8, refusing more than `max` bytes.
    pub fn modified_utf8(&mut self, len: usize, max: usize) -> Result<String, OpenWireError> {
        if len > max {
            return Err(OpenWireError::ValueTooLarge { size: len, max });
        }
        decode_modified_utf8(self.bytes(len)?)
    }

    /// A loose string: "not null" boolean, then `readUTF`.
    pub fn string(&mut self) -> Result<Option<String>, OpenWireError> {
        if !self.bool()? {
            return Ok(None);
        }
        let len = usize::from(self.u16()?);
        self.modified_utf8(len, usize::from(u16::MAX)).map(Some)
    }

    /// A loose byte array or byte sequence: "not null" boolean, `i32` length, bytes.
    pub fn byte_array(&mut self) -> Result<Option<Bytes>, OpenWireError> {
        if !self.bool()? {
            return Ok(None);
        }
        let len = self.length()?;
        Ok(Some(Bytes::copy_from_slice(self.bytes(len)?)))
    }

    /// A fixed-size byte array with no prefix.
    pub fn const_bytes<const N: usize>(&mut self) -> Result<[u8; N], OpenWireError> {
        self.array()
    }
}

/// An append-only encoder of loose primitives.
#[derive(Debug, Default)]
pub struct Writer {
    out: BytesMut,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// The underlying buffer, for raw appends.
    pub fn buf(&mut self) -> &mut BytesMut {
        &mut self.out
    }

    /// The bytes written so far.
    pub fn into_bytes(self) -> Bytes {
        self.out.freeze()
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.out.len()
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
    }

    /// One byte.
    pub fn u8(&mut self, v: u8) {
        self.out.put_u8(v);
    }

    /// A Java boolean.
    pub fn bool(&mut self, v: bool) {
        self.out.put_u8(u8::from(v));
    }

    /// A big-endian `i16`.
    pub fn i16(&mut self, v: i16) {
        self.out.put_i16(v);
    }

    /// A big-endian `i32`.
    pub fn i32(&mut self, v: i32) {
        self.out.put_i32(v);
    }

    /// A big-endian `i64`.
    pub fn i64(&mut self, v: i64) {
        self.out.put_i64(v);
    }

    /// Raw bytes, no prefix.
    pub fn raw(&mut self, v: &[u8]) {
        self.out.put_slice(v);
    }

    /// Java `writeUTF`: `u16` length and modified UTF-8 (no "not null" flag).
    pub fn utf(&mut self, s: &str) -> Result<(), OpenWireError> {
        let encoded = encode_modified_utf8(s);
        let len = u16::try_from(encoded.len())
            .map_err(|_| OpenWireError::StringTooLong(encoded.len()))?;
        self.out.put_u16(len);
        self.out.put_slice(&encoded);
        Ok(())
    }

    /// `MarshallingSupport.writeUTF8`: `i32` length and modified UTF-8.
    pub fn big_utf(&mut self, s: &str) -> Result<(), OpenWireError> {
        let encoded = encode_modified_utf8(s);
        self.i32(i32_len(encoded.len())?);
        self.out.put_slice(&encoded);
        Ok(())
    }

    /// A loose string: "not null" boolean, then `writeUTF`.
    pub fn string(&mut self, s: Option<&str>) -> Result<(), OpenWireError> {
        match s {
            None => self.bool(false),
            Some(s) => {
                self.bool(true);
                self.utf(s)?;
            }
        }
        Ok(())
    }

    /// A loose byte array / byte sequence.
    pub fn byte_array(&mut self, v: Option<&[u8]>) -> Result<(), OpenWireError> {
        match v {
            None => self.bool(false),
            Some(v) => {
                self.bool(true);
                self.i32(i32_len(v.len())?);
                self.out.put_slice(v);
            }
        }
        Ok(())
    }
}

/// A length as a Java `int`.
pub(crate) fn i32_len(len: usize) -> Result<i32, OpenWireError> {
    i32::try_from(len).map_err(|_| OpenWireError::ValueTooLarge {
        size: len,
        max: i32::MAX as usize,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_bounds_checked() {
        let mut r = Reader::new(&[0, 1, 2]);
        assert_eq!(r.i32(), Err(OpenWireError::Truncated));
        // A failed read consumes nothing.
        assert_eq!(r.i16(), Ok(1));
        assert_eq!(r.u8(), Ok(2));
        assert_eq!(r.u8(), Err(OpenWireError::Truncated));
        assert_eq!(r.finish(), Ok(()));
    }

    #[test]
    fn any_non_zero_byte_is_true() {
        let mut r = Reader::new(&[0, 1, 0x80]);
        assert_eq!(
            (r.bool(), r.bool(), r.bool()),
            (Ok(false), Ok(true), Ok(true))
        );
    }

    #[test]
    fn byte_array_lengths_are_checked_before_allocating() {
        let mut r = Reader::new(&[1, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(r.byte_array(), Err(OpenWireError::NegativeLength(-1)));
        let mut r = Reader::new(&[1, 0x7f, 0xff, 0xff, 0xff, 0]);
        assert_eq!(r.byte_array(), Err(OpenWireError::Truncated));
    }

    #[test]
    fn loose_string_and_bytes_round_trip() {
        let mut w = Writer::new();
        w.string(Some("a\u{0}é")).unwrap();
        w.string(None).unwrap();
        w.byte_array(Some(&[7, 8])).unwrap();
        w.byte_array(None).unwrap();
        w.i64(-2);
        let bytes = w.into_bytes();
        let mut r = Reader::new(&bytes);
        assert_eq!(r.string(), Ok(Some("a\u{0}é".to_string())));
        assert_eq!(r.string(), Ok(None));
        assert_eq!(r.byte_array(), Ok(Some(Bytes::from_static(&[7, 8]))));
        assert_eq!(r.byte_array(), Ok(None));
        assert_eq!(r.i64(), Ok(-2));
        assert_eq!(r.finish(), Ok(()));
    }
}
