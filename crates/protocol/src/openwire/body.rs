//! Helpers for the encoded parts of messages and `WireFormatInfo`: property maps, text and map
//! bodies. Compressed (deflate) bodies are refused with [`OpenWireError::Compressed`].

use bytes::Bytes;

use super::map::{decode_map, encode_map, MapLimits, PrimitiveMap};
use super::primitives::{Reader, Writer};
use super::types::{Message, MessageKind, WireFormatInfo};
use super::OpenWireError;

/// The magic every `WireFormatInfo` starts with.
pub const MAGIC: [u8; 8] = *b"ActiveMQ";

impl WireFormatInfo {
    /// A `WireFormatInfo` with the standard magic.
    pub fn new(version: i32, properties: &PrimitiveMap) -> Result<Self, OpenWireError> {
        Ok(Self {
            magic: MAGIC,
            version,
            marshalled_properties: Some(encode_map(Some(properties))?),
        })
    }

    /// The decoded options map (empty if absent).
    pub fn properties(&self, limits: &MapLimits) -> Result<PrimitiveMap, OpenWireError> {
        decode_optional_map(self.marshalled_properties.as_ref(), limits)
    }
}

fn decode_optional_map(
    raw: Option<&Bytes>,
    limits: &MapLimits,
) -> Result<PrimitiveMap, OpenWireError> {
    match raw {
        None => Ok(PrimitiveMap::new()),
        Some(raw) => Ok(decode_map(raw, limits)?.unwrap_or_default()),
    }
}

impl Message {
    /// The user properties (empty if none were sent).
    pub fn properties(&self, limits: &MapLimits) -> Result<PrimitiveMap, OpenWireError> {
        decode_optional_map(self.marshalled_properties.as_ref(), limits)
    }

    /// Stores `properties` (an empty map clears them, as the Java client sends none).
    pub fn set_properties(&mut self, properties: &PrimitiveMap) -> Result<(), OpenWireError> {
        self.marshalled_properties = if properties.is_empty() {
            None
        } else {
            Some(encode_map(Some(properties))?)
        };
        Ok(())
    }

    fn uncompressed_content(&self) -> Result<Option<&Bytes>, OpenWireError> {
        if self.compressed && self.content.is_some() {
            return Err(OpenWireError::Compressed);
        }
        Ok(self.content.as_ref())
    }

    /// The text of a `TextMessage` (`None` for a null text): `i32` length (-1 = null) and
    /// modified UTF-8, as `MarshallingSupport.writeUTF8` stores it.
    pub fn text(&self, max_bytes: usize) -> Result<Option<String>, OpenWireError> {
        if self.kind != MessageKind::Text {
            return Err(OpenWireError::WrongMessageKind("text"));
        }
        let Some(content) = self.uncompressed_content()? else {
            return Ok(None);
        };
        let mut r = Reader::new(content);
        let len = r.i32()?;
        if len < 0 {
            r.finish()?;
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| OpenWireError::NegativeLength(len))?;
        let text = r.modified_utf8(len, max_bytes)?;
        r.finish()?;
        Ok(Some(text))
    }

    /// Sets the body of a `TextMessage` (uncompressed).
    pub fn set_text(&mut self, text: Option<&str>) -> Result<(), OpenWireError> {
        if self.kind != MessageKind::Text {
            return Err(OpenWireError::WrongMessageKind("text"));
        }
        self.compressed = false;
        self.content = match text {
            // The Java client leaves the content null for a null text.
            None => None,
            Some(t) => {
                let mut w = Writer::new();
                w.big_utf(t)?;
                Some(w.into_bytes())
            }
        };
        Ok(())
    }

    /// The body of a `MapMessage` (empty if none).
    pub fn map_body(&self, limits: &MapLimits) -> Result<PrimitiveMap, OpenWireError> {
        if self.kind != MessageKind::Map {
            return Err(OpenWireError::WrongMessageKind("map"));
        }
        decode_optional_map(self.uncompressed_content()?, limits)
    }

    /// Sets the body of a `MapMessage` (uncompressed; an empty map leaves the content null,
    /// as the Java client does).
    pub fn set_map_body(&mut self, body: &PrimitiveMap) -> Result<(), OpenWireError> {
        if self.kind != MessageKind::Map {
            return Err(OpenWireError::WrongMessageKind("map"));
        }
        self.compressed = false;
        self.content = if body.is_empty() {
            None
        } else {
            Some(encode_map(Some(body))?)
        };
        Ok(())
    }
}
