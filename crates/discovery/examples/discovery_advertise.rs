//! Advertises one service on a multicast group for some seconds, then stops (sending the
//! `dead` advert), for checking interoperability with ActiveMQ by hand:
//!
//! ```text
//! cargo run -p ferromq-discovery --example discovery_advertise -- \
//!     'multicast://default?interface=127.0.0.1' tcp://127.0.0.1:61616 [seconds]
//! ```

use std::time::Duration;

use ferromq_discovery::{Advertiser, MulticastConfig};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(uri), Some(service)) = (args.first(), args.get(1)) else {
        return Err("usage: discovery_advertise MULTICAST_URI SERVICE_URI [SECONDS]".into());
    };
    let seconds: u64 = args.get(2).map_or(Ok(10), |s| s.parse())?;
    let cfg = MulticastConfig::parse(uri)?;
    let advertiser = Advertiser::start(&cfg, "localhost", service)?;
    println!("advertising {service} on {cfg} for {seconds} s");
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    advertiser.stop().await;
    println!("stopped (dead advert sent)");
    Ok(())
}
