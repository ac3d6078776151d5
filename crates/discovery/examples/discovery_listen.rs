//! Prints the services advertised on a multicast group, for checking interoperability with
//! ActiveMQ brokers by hand:
//!
//! ```text
//! cargo run -p ferromq-discovery --example discovery_listen -- \
//!     'multicast://default?interface=127.0.0.1' [seconds]
//! ```
//!
//! Exits after the given number of seconds (default 10), or at the first `Up` with `--first`.

use std::time::Duration;

use ferromq_discovery::{DiscoveryEvent, Listener, MulticastConfig};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let uri = args
        .first()
        .map_or("multicast://default", String::as_str)
        .to_owned();
    let seconds: u64 = args.get(1).map_or(Ok(10), |s| s.parse())?;
    let first_only = args.iter().any(|a| a == "--first");
    let cfg = MulticastConfig::parse(&uri)?;
    let (listener, mut events) = Listener::start(&cfg, None)?;
    println!("listening on {cfg}");
    let deadline = tokio::time::sleep(Duration::from_secs(seconds));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            event = events.recv() => match event {
                Some(DiscoveryEvent::Up { broker_name, service_uri }) => {
                    println!("UP   {service_uri} (broker name {broker_name:?})");
                    if first_only {
                        break;
                    }
                }
                Some(DiscoveryEvent::Down { broker_name, service_uri }) => {
                    println!("DOWN {service_uri} (broker name {broker_name:?})");
                }
                None => break,
            },
        }
    }
    listener.stop().await;
    Ok(())
}
