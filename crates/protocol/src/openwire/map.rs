//! `MarshallingSupport` primitive maps and lists: message properties, `MapMessage` bodies and
//! the `WireFormatInfo` options.
//!
//! A map is an `i32` entry count (-1 = null), then per entry a `writeUTF` key and a tagged value.
//! Values are a type byte (`NULL` 0 .. `BIG_STRING` 13) and the Java `DataOutput` form. Maps keep
//! wire order in a `Vec` so that decode → encode is byte-identical (Java iterates a `HashMap`, so
//! its order is arbitrary but whatever it was, we reproduce it).

use bytes::{BufMut, Bytes, BytesMut};

use super::primitives::{Reader, Writer};
use super::OpenWireError;

/// Type tags of `MarshallingSupport`.
pub mod tag {
    #![allow(missing_docs)]
    pub const NULL: u8 = 0;
    pub const BOOLEAN: u8 = 1;
    pub const BYTE: u8 = 2;
    pub const CHAR: u8 = 3;
    pub const SHORT: u8 = 4;
    pub const INTEGER: u8 = 5;
    pub const LONG: u8 = 6;
    pub const DOUBLE: u8 = 7;
    pub const FLOAT: u8 = 8;
    pub const STRING: u8 = 9;
    pub const BYTE_ARRAY: u8 = 10;
    pub const MAP: u8 = 11;
    pub const LIST: u8 = 12;
    pub const BIG_STRING: u8 = 13;
}

/// Java writes strings shorter than this many UTF-16 units with `writeUTF` (tag 9) and longer
/// ones as a 4-byte-length "big string" (tag 13); we follow the same rule so bytes match.
const SHORT_STRING_MAX_UTF16: usize = (i16::MAX as usize) / 4;

/// One value of a primitive map or list.
#[derive(Debug, Clone, PartialEq)]
pub enum PrimitiveValue {
    /// `NULL` (0).
    Null,
    /// `BOOLEAN` (1).
    Bool(bool),
    /// `BYTE` (2).
    Byte(i8),
    /// `CHAR` (3): one UTF-16 code unit, kept raw because Java chars may be lone surrogates.
    Char(u16),
    /// `SHORT` (4).
    Short(i16),
    /// `INTEGER` (5).
    Int(i32),
    /// `LONG` (6).
    Long(i64),
    /// `DOUBLE` (7).
    Double(f64),
    /// `FLOAT` (8).
    Float(f32),
    /// `STRING` (9) or `BIG_STRING` (13), chosen by length when encoding.
    String(String),
    /// `BYTE_ARRAY` (10).
    Bytes(Bytes),
    /// `MAP` (11).
    Map(PrimitiveMap),
    /// `LIST` (12).
    List(Vec<PrimitiveValue>),
}

/// A primitive map in wire order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PrimitiveMap {
    /// Entries in wire order. Java maps have unique keys; a duplicate on decode is kept as is.
    pub entries: Vec<(String, PrimitiveValue)>,
}

impl PrimitiveMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// The first value stored under `key`.
    pub fn get(&self, key: &str) -> Option<&PrimitiveValue> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Replaces the value under `key`, or appends it.
    pub fn insert(&mut self, key: impl Into<String>, value: PrimitiveValue) {
        let key = key.into();
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.entries.push((key, value)),
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Bounds applied while decoding maps and lists; every excess is a typed error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapLimits {
    /// Maximum nesting of maps/lists (the outermost map is depth 1).
    pub max_depth: usize,
    /// Maximum entries of one map or elements of one list.
    pub max_entries: usize,
    /// Maximum bytes of one string, key or byte array.
    pub max_value_bytes: usize,
}

impl Default for MapLimits {
    fn default() -> Self {
        Self {
            max_depth: 16,
            max_entries: 65_536,
            max_value_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Decodes a marshalled map (`None` for the -1 "null map" count); the input must be consumed.
pub fn decode_map(data: &[u8], limits: &MapLimits) -> Result<Option<PrimitiveMap>, OpenWireError> {
    let mut r = Reader::new(data);
    let map = read_map(&mut r, limits, 1)?;
    r.finish()?;
    Ok(map)
}

/// Encodes a map (`None` as the -1 "null map" count).
pub fn encode_map(map: Option<&PrimitiveMap>) -> Result<Bytes, OpenWireError> {
    let mut w = Writer::new();
    write_map(&mut w, map)?;
    Ok(w.into_bytes())
}

fn check_depth(depth: usize, limits: &MapLimits) -> Result<(), OpenWireError> {
    if depth > limits.max_depth {
        return Err(OpenWireError::MapTooDeep {
            max: limits.max_depth,
        });
    }
    Ok(())
}

fn read_count(r: &mut Reader<'_>, limits: &MapLimits) -> Result<Option<usize>, OpenWireError> {
    let count = r.i32()?;
    if count < 0 {
        return Ok(None);
    }
    let count = count as usize;
    if count > limits.max_entries {
        return Err(OpenWireError::TooManyEntries {
            count,
            max: limits.max_entries,
        });
    }
    // Every entry takes at least one byte: refuse counts the input cannot hold before
    // allocating for them.
    if count > r.remaining() {
        return Err(OpenWireError::Truncated);
    }
    Ok(Some(count))
}

pub(crate) fn read_map(
    r: &mut Reader<'_>,
    limits: &MapLimits,
    depth: usize,
) -> Result<Option<PrimitiveMap>, OpenWireError> {
    check_depth(depth, limits)?;
    let Some(count) = read_count(r, limits)? else {
        return Ok(None);
    };
    let mut entries = Vec::with_capacity(count.min(128));
    for _ in 0..count {
        let key_len = usize::from(r.u16()?);
        let key = r.modified_utf8(key_len, limits.max_value_bytes)?;
        let value = read_value(r, limits, depth)?;
        entries.push((key, value));
    }
    Ok(Some(PrimitiveMap { entries }))
}

fn read_list(
    r: &mut Reader<'_>,
    limits: &MapLimits,
    depth: usize,
) -> Result<Vec<PrimitiveValue>, OpenWireError> {
    check_depth(depth, limits)?;
    // Java reads a negative list size as an empty list.
    let count = read_count(r, limits)?.unwrap_or(0);
    let mut items = Vec::with_capacity(count.min(128));
    for _ in 0..count {
        items.push(read_value(r, limits, depth)?);
    }
    Ok(items)
}

fn read_value(
    r: &mut Reader<'_>,
    limits: &MapLimits,
    depth: usize,
) -> Result<PrimitiveValue, OpenWireError> {
    Ok(match r.u8()? {
        tag::NULL => PrimitiveValue::Null,
        tag::BOOLEAN => PrimitiveValue::Bool(r.bool()?),
        tag::BYTE => PrimitiveValue::Byte(r.u8()? as i8),
        tag::CHAR => PrimitiveValue::Char(r.u16()?),
        tag::SHORT => PrimitiveValue::Short(r.i16()?),
        tag::INTEGER => PrimitiveValue::Int(r.i32()?),
        tag::LONG => PrimitiveValue::Long(r.i64()?),
        tag::DOUBLE => PrimitiveValue::Double(f64::from_bits(r.i64()? as u64)),
        tag::FLOAT => PrimitiveValue::Float(f32::from_bits(r.i32()? as u32)),
        tag::STRING => {
            let len = usize::from(r.u16()?);
            PrimitiveValue::String(r.modified_utf8(len, limits.max_value_bytes)?)
        }
        tag::BIG_STRING => {
            let len = r.length()?;
            PrimitiveValue::String(r.modified_utf8(len, limits.max_value_bytes)?)
        }
        tag::BYTE_ARRAY => {
            let len = r.length()?;
            if len > limits.max_value_bytes {
                return Err(OpenWireError::ValueTooLarge {
                    size: len,
                    max: limits.max_value_bytes,
                });
            }
            PrimitiveValue::Bytes(Bytes::copy_from_slice(r.bytes(len)?))
        }
        tag::MAP => PrimitiveValue::Map(read_map(r, limits, depth + 1)?.unwrap_or_default()),
        tag::LIST => PrimitiveValue::List(read_list(r, limits, depth + 1)?),
        other => return Err(OpenWireError::UnknownPrimitiveType(other)),
    })
}

fn len_i32(len: usize) -> Result<i32, OpenWireError> {
    i32::try_from(len).map_err(|_| OpenWireError::ValueTooLarge {
        size: len,
        max: i32::MAX as usize,
    })
}

pub(crate) fn write_map(w: &mut Writer, map: Option<&PrimitiveMap>) -> Result<(), OpenWireError> {
    let Some(map) = map else {
        w.i32(-1);
        return Ok(());
    };
    w.i32(len_i32(map.entries.len())?);
    for (key, value) in &map.entries {
        w.utf(key)?;
        write_value(w, value)?;
    }
    Ok(())
}

fn write_value(w: &mut Writer, value: &PrimitiveValue) -> Result<(), OpenWireError> {
    let out: &mut BytesMut = w.buf();
    match value {
        PrimitiveValue::Null => out.put_u8(tag::NULL),
        PrimitiveValue::Bool(v) => {
            out.put_u8(tag::BOOLEAN);
            out.put_u8(u8::from(*v));
        }
        PrimitiveValue::Byte(v) => {
            out.put_u8(tag::BYTE);
            out.put_i8(*v);
        }
        PrimitiveValue::Char(v) => {
            out.put_u8(tag::CHAR);
            out.put_u16(*v);
        }
        PrimitiveValue::Short(v) => {
            out.put_u8(tag::SHORT);
            out.put_i16(*v);
        }
        PrimitiveValue::Int(v) => {
            out.put_u8(tag::INTEGER);
            out.put_i32(*v);
        }
        PrimitiveValue::Long(v) => {
            out.put_u8(tag::LONG);
            out.put_i64(*v);
        }
        PrimitiveValue::Double(v) => {
            out.put_u8(tag::DOUBLE);
            out.put_u64(v.to_bits());
        }
        PrimitiveValue::Float(v) => {
            out.put_u8(tag::FLOAT);
            out.put_u32(v.to_bits());
        }
        PrimitiveValue::String(s) => {
            if s.encode_utf16().count() < SHORT_STRING_MAX_UTF16 {
                out.put_u8(tag::STRING);
                w.utf(s)?;
            } else {
                out.put_u8(tag::BIG_STRING);
                w.big_utf(s)?;
            }
        }
        PrimitiveValue::Bytes(b) => {
            out.put_u8(tag::BYTE_ARRAY);
            out.put_i32(len_i32(b.len())?);
            out.put_slice(b);
        }
        PrimitiveValue::Map(m) => {
            out.put_u8(tag::MAP);
            write_map(w, Some(m))?;
        }
        PrimitiveValue::List(items) => {
            out.put_u8(tag::LIST);
            w.i32(len_i32(items.len())?);
            for item in items {
                write_value(w, item)?;
            }
        }
    }
    Ok(())
}
