//! OpenWire: framing, then command decoding. Oracle: no panic, and whatever decodes
//! re-encodes and decodes back to the same command.
#![no_main]

use bytes::BytesMut;
use ferromq_protocol::openwire::{decode_command_with, encode_command_with, CodecOptions, Decoder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the negotiated options so one corpus covers v9..=v12 and both
    // stack-trace modes.
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let opts = CodecOptions {
        stack_trace_enabled: sel & 0x80 != 0,
        ..CodecOptions::new(9 + u32::from(sel & 0x03))
    };
    let mut buf = BytesMut::from(rest);
    let mut decoder = Decoder::new(1 << 20);
    while let Ok(Some(frame)) = decoder.decode(&mut buf) {
        if let Ok(cmd) = decode_command_with(&frame, &opts) {
            let wire = encode_command_with(&cmd, &opts).expect("a decoded command re-encodes");
            let mut again = BytesMut::from(&wire[..]);
            let frame2 = Decoder::new(usize::MAX)
                .decode(&mut again)
                .expect("own framing")
                .expect("complete frame");
            let back = decode_command_with(&frame2, &opts).expect("own encoding decodes");
            assert_eq!(back, cmd);
        }
    }
});
