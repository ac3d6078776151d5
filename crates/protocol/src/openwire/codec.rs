//! Command marshalling (loose encoding, cache off), field order of `openwire/v12/*Marshaller`.

use super::map::MapLimits;
use super::types::*;
use super::{Frame, OpenWireError};

/// Nested objects deeper than this are refused (messages in dispatches in data responses...).
pub const MAX_NESTING_DEPTH: usize = 32;

/// Negotiated wire-format settings the codec needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodecOptions {
    /// Negotiated OpenWire version (9..=12).
    pub version: u32,
    /// Negotiated `StackTraceEnabled`: throwables carry stack frames and a cause.
    pub stack_trace_enabled: bool,
    /// Maximum elements of an object array (broker paths, peer infos, data arrays).
    pub max_array_len: usize,
}

impl CodecOptions {
    /// Options for `version` with stack traces off (what ferromq advertises).
    pub fn new(version: u32) -> Self {
        Self {
            version,
            stack_trace_enabled: false,
            max_array_len: 4096,
        }
    }
}

/// Decodes one frame with stack traces off (see [`decode_command_with`]).
pub fn decode_command(frame: &Frame, version: u32) -> Result<Command, OpenWireError> {
    decode_command_with(frame, &CodecOptions::new(version))
}

/// Decodes one frame into a [`Command`]; the whole body must be consumed.
pub fn decode_command_with(frame: &Frame, opts: &CodecOptions) -> Result<Command, OpenWireError> {
    let _ = (frame, opts, MapLimits::default());
    Err(OpenWireError::UnknownCommand(frame.data_type))
}

/// Encodes a command as a whole frame (size prefix, type byte, body), stack traces off.
pub fn encode_command(cmd: &Command, version: u32) -> Result<Vec<u8>, OpenWireError> {
    encode_command_with(cmd, &CodecOptions::new(version))
}

/// Encodes a command as a whole frame (size prefix, type byte, body).
pub fn encode_command_with(cmd: &Command, opts: &CodecOptions) -> Result<Vec<u8>, OpenWireError> {
    let _ = opts;
    Err(OpenWireError::UnknownCommand(cmd.type_id()))
}
