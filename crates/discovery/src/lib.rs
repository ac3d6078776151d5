//! ActiveMQ 5.x compatible multicast discovery: `multicast://default`.
//!
//! Brokers advertise their services (`tcp://host:61616`) to a UDP multicast group, by default
//! 239.255.2.3:6155, every `keepAliveInterval` (500 ms); listeners build the list of live
//! services from those adverts and declare a service dead when it says so or after 10 missed
//! adverts. The datagrams are byte-compatible with ActiveMQ's `MulticastDiscoveryAgent`, so
//! ferromq and ActiveMQ brokers and clients can find each other.
//!
//! The crate is layered like `ferromq-protocol`:
//!
//! - [`config`]: the `multicast://` URI and its options (ActiveMQ's names and defaults);
//! - [`codec`]: the datagram format, sans I/O;
//! - [`membership`]: the table of live services, fed with adverts and the time, sans I/O;
//! - [`net`]: the tokio sockets: [`Advertiser`] and [`Listener`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use ferromq_discovery::{Advertiser, DiscoveryEvent, Listener, MulticastConfig};
//! let cfg = MulticastConfig::parse("multicast://default?interface=127.0.0.1")?;
//! let advertiser = Advertiser::start(&cfg, "localhost", "tcp://127.0.0.1:61613")?;
//! let (listener, mut events) = Listener::start(&cfg, None)?;
//! while let Some(event) = events.recv().await {
//!     if let DiscoveryEvent::Up { service_uri, .. } = event {
//!         println!("found {service_uri}");
//!         break;
//!     }
//! }
//! advertiser.stop().await; // sends the `dead` advert
//! listener.stop().await;
//! # Ok(()) }
//! ```
//!
//! There is no authentication: anyone who can send to the group can advertise a service.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![warn(missing_docs)]

pub mod codec;
pub mod config;
pub mod membership;
pub mod net;

pub use codec::{
    decode, decode_for_group, encode, encode_alive, encode_dead, Advert, AdvertKind, DecodeError,
    EncodeError, DATAGRAM_BYTES_MAX,
};
pub use config::{
    ConfigError, MulticastConfig, DEFAULT_GROUP, DEFAULT_GROUP_ADDR, DEFAULT_PORT,
    HEARTBEAT_MISS_BEFORE_DEATH,
};
pub use membership::{DiscoveryEvent, Membership, SERVICES_MAX};
pub use net::{
    Advertiser, AdvertiserHandle, DiscoveryError, Listener, ListenerHandle, EVENTS_CHANNEL_CAPACITY,
};
