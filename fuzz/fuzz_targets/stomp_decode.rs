//! STOMP: the incremental frame decoder on arbitrary bytes, fed in two chunks so partial-frame
//! resumption is exercised. Oracle: no panic.
#![no_main]

use bytes::BytesMut;
use ferromq_protocol::stomp::{Decoder, Limits, Version};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let mut decoder = Decoder::new(Limits::default());
    decoder.set_version(match sel % 3 {
        0 => Version::V1_0,
        1 => Version::V1_1,
        _ => Version::V1_2,
    });
    let split = usize::from(sel).min(rest.len());
    let (first, second) = rest.split_at(split);
    let mut buf = BytesMut::new();
    for chunk in [first, second] {
        buf.extend_from_slice(chunk);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
