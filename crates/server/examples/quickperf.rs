//! A quick throughput probe with ferromq-client against a running broker (not a benchmark
//! suite: `ferromq-bench` is). Usage:
//!
//! ```text
//! cargo run --release --example quickperf -- 127.0.0.1:61613 queue 200000 1024
//! cargo run --release --example quickperf -- 127.0.0.1:61613 topic 50000 1024 10
//! ```

use std::time::Instant;

use ferromq_client::{AckMode, Client, ClientConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let addr = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:61613".into());
    let mode = args.get(2).cloned().unwrap_or_else(|| "queue".into());
    let n: u64 = args
        .get(3)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(100_000);
    let size: usize = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(1024);
    let subs: usize = args.get(5).map(|s| s.parse()).transpose()?.unwrap_or(10);
    let dest = if mode == "topic" {
        "/topic/quickperf"
    } else {
        "/queue/quickperf"
    };
    let consumers = if mode == "topic" { subs } else { 1 };
    let mut tasks = Vec::new();
    for _ in 0..consumers {
        let c = Client::connect(&addr, ClientConfig::default()).await?;
        let mut s = c.subscribe(dest, AckMode::Auto, &[]).await?;
        tasks.push(tokio::spawn(async move {
            let mut got = 0u64;
            while got < n {
                if s.next().await.is_none() {
                    break;
                }
                got += 1;
            }
            drop(c);
            got
        }));
    }
    let p = Client::connect(&addr, ClientConfig::default()).await?;
    let body = bytes::Bytes::from(vec![b'x'; size]);
    let start = Instant::now();
    for _ in 0..n {
        p.send(dest, body.clone(), &[]).await?;
    }
    p.send_with_receipt(dest, body.clone(), &[]).await.ok();
    let sent_s = start.elapsed().as_secs_f64();
    let mut delivered = 0;
    for t in tasks {
        delivered += t.await?;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{mode}: {n} messages of {size} B, {consumers} consumer(s): sent in {sent_s:.2} s ({:.0} msg/s), {delivered} deliveries in {secs:.2} s ({:.0} deliveries/s)",
        n as f64 / sent_s,
        delivered as f64 / secs
    );
    Ok(())
}
