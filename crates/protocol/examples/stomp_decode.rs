//! Decoding cost of typical frames: a MESSAGE as the broker delivers it (12 headers, 1 KiB
//! body), a persistent SEND with a receipt, and a 1.2 ACK. Prints ns per frame for each.
//!
//! `cargo run --release -p ferromq-protocol --example stomp_decode [frames]`

use std::time::Instant;

use bytes::BytesMut;
use ferromq_protocol::stomp::{encode, Command, Decoder, Frame, Item, Limits, Version};

fn message() -> Frame {
    Frame::new(Command::Message)
        .with_header("subscription", "sub-0")
        .with_header("destination", "/queue/cmp.a16.1")
        .with_header(
            "message-id",
            "ID:ferromq-broker-1-1733600000000-1:1:1:1:123456",
        )
        .with_header("ack", "7:123456")
        .with_header("persistent", "true")
        .with_header("priority", "4")
        .with_header("timestamp", "1733600000123")
        .with_header("expires", "0")
        .with_header("redelivered", "false")
        .with_header("content-type", "application/octet-stream")
        .with_header("bench-sent-ns", "1733600000123456789")
        .with_header("bench-seq", "123456")
        .with_body(vec![b'x'; 1024])
}

fn send() -> Frame {
    Frame::new(Command::Send)
        .with_header("destination", "/queue/cmp.a16.1")
        .with_header("persistent", "true")
        .with_header("receipt", "r-123456")
        .with_header("bench-sent-ns", "1733600000123456789")
        .with_header("bench-seq", "123456")
        .with_body(vec![b'x'; 1024])
}

fn ack() -> Frame {
    Frame::new(Command::Ack).with_header("id", "7:123456")
}

/// Decodes `n` copies of `frame` from one buffer refilled in batches of 64, as a connection's
/// read buffer is; returns ns per frame.
fn run(frame: &Frame, n: usize) -> f64 {
    let mut one = BytesMut::new();
    encode(frame, Version::V1_2, &mut one);
    let mut batch = BytesMut::new();
    for _ in 0..64 {
        batch.extend_from_slice(&one);
    }
    let mut decoder = Decoder::new(Limits::default());
    decoder.set_version(Version::V1_2);
    let mut buf = BytesMut::with_capacity(batch.len() * 2);
    let mut headers = 0usize;
    let start = Instant::now();
    let mut done = 0;
    while done < n {
        buf.extend_from_slice(&batch);
        while let Ok(Some(item)) = decoder.decode(&mut buf) {
            if let Item::Frame(f) = item {
                headers += f.headers.len();
                done += 1;
            }
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / done as f64;
    // The encoder adds a content-length to a frame with a body.
    let expected = frame.headers.len() + usize::from(!frame.body.is_empty());
    assert_eq!(headers, done * expected, "every frame decoded whole");
    ns
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    for (name, frame) in [("MESSAGE", message()), ("SEND", send()), ("ACK", ack())] {
        // Best of three, to see past a noisy neighbour.
        let best = (0..3).map(|_| run(&frame, n)).fold(f64::MAX, f64::min);
        println!(
            "{name:8} {:2} headers: {best:7.1} ns per frame",
            frame.headers.len()
        );
    }
}
