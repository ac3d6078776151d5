//! The CI performance gate's workload: a fixed amount of the work that decides ferromq's
//! throughput — STOMP decoding and encoding, and the broker's send → dispatch → ack path with
//! selectors — on one thread, with no I/O, no clocks and no randomness, so that its instruction
//! count under `valgrind --tool=callgrind` is the same on every run of the same binary.
//! `ci/perf-gate.sh` compares that count with the baseline in `bench-results/`.
//!
//! `FERROMQ_PERF_GATE_SLOWDOWN_PERCENT=N` adds N % more work (by repeating part of it); the gate
//! script uses it to show that it catches a regression of that size.

use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use ferromq_broker::{
    AckMode, AckScope, Broker, BrokerConfig, ConsumerOptions, Delivery, DeliverySink, Destination,
    Message, Selector,
};
use ferromq_protocol::stomp::{encode, Command, Decoder, Frame, Item, Limits, Version};
use ferromq_store::MemoryStore;

const FRAMES: usize = 20_000;
const MESSAGES: u64 = 20_000;

#[derive(Debug, Default)]
struct Sink(Mutex<Vec<Delivery>>);

impl DeliverySink for Sink {
    fn deliver(&self, d: Delivery) {
        if let Ok(mut v) = self.0.lock() {
            v.push(d);
        }
    }
}

/// Encodes and decodes `n` SEND frames of 1 KiB with a few headers; returns bytes decoded.
fn codec(n: usize) -> usize {
    let body = Bytes::from(vec![b'x'; 1024]);
    let mut wire = BytesMut::new();
    for i in 0..n {
        let f = Frame::new(Command::Send)
            .with_header("destination", "/queue/perf")
            .with_header("persistent", "true")
            .with_header("receipt", format!("r-{i}"))
            .with_header("x-key", "value:with\nescapes")
            .with_body(body.clone());
        encode(&f, Version::V1_2, &mut wire);
    }
    let total = wire.len();
    let mut d = Decoder::new(Limits::default());
    d.set_version(Version::V1_2);
    let mut frames = 0;
    while let Ok(Some(item)) = d.decode(&mut wire) {
        if let Item::Frame(_) = item {
            frames += 1;
        }
    }
    assert_eq!(frames, n, "the codec lost frames");
    total
}

/// Sends `n` persistent messages through the broker to a consumer with a selector, acking
/// each; returns how many were delivered.
async fn broker_path(n: u64) -> usize {
    let broker = Broker::open(
        BrokerConfig::default(),
        Arc::new(MemoryStore::new()),
        Arc::new(|| 1_700_000_000_000),
    )
    .unwrap_or_else(|e| panic!("broker: {e}"));
    let q = Destination::queue("perf");
    let sink = Arc::new(Sink::default());
    let selector = Selector::parse("color = 'red' AND price > 10")
        .ok()
        .map(Arc::new);
    let opts = ConsumerOptions {
        ack_mode: AckMode::ClientIndividual,
        prefetch: 100,
        selector,
        ..ConsumerOptions::default()
    };
    let (h, _) = broker
        .subscribe(&q, opts, None, sink.clone())
        .unwrap_or_else(|e| panic!("subscribe: {e}"));
    let body = Bytes::from(vec![b'y'; 1024]);
    let mut delivered = 0;
    for i in 0..n {
        let m = Message {
            id: broker.next_message_id(),
            destination: q.clone(),
            headers: vec![
                ("color".into(), "red".into()),
                ("price".into(), (20 + i % 7).to_string()),
            ],
            body: body.clone(),
            persistent: true,
            priority: 4,
            timestamp_ms: 1_700_000_000_000,
            expires_ms: 0,
            producer_connection: 1,
            wire: Default::default(),
        };
        let c = broker.send(m).await.unwrap_or_else(|e| panic!("send: {e}"));
        c.await.unwrap_or_else(|e| panic!("store: {e}"));
        let ds: Vec<Delivery> = sink
            .0
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default();
        for d in ds {
            let (_, c) = broker
                .ack(&h, AckScope::Individual(d.tag), false)
                .unwrap_or_else(|e| panic!("ack: {e}"));
            c.await.unwrap_or_else(|e| panic!("ack store: {e}"));
            delivered += 1;
        }
    }
    delivered
}

fn main() {
    let slowdown: usize = std::env::var("FERROMQ_PERF_GATE_SLOWDOWN_PERCENT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let bytes = codec(FRAMES);
    let delivered = rt.block_on(broker_path(MESSAGES));
    assert_eq!(delivered as u64, MESSAGES, "the broker lost messages");
    // The deliberate regression: roughly `slowdown` % more of the same work.
    if slowdown > 0 {
        let extra_frames = FRAMES * slowdown / 100;
        codec(extra_frames);
        rt.block_on(broker_path(MESSAGES * slowdown as u64 / 100));
    }
    println!("perf-gate workload: {FRAMES} frames ({bytes} bytes) coded, {delivered} messages through the broker");
}
