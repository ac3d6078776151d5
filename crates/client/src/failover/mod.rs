//! ActiveMQ-style client failover: `failover:(tcp://a:61613,tcp://b:61613)?options`.
//!
//! A [`FailoverClient`] drives one [`Client`](crate::Client) connection at a time and replaces
//! it when it fails:
//!
//! - [`uri`] parses the connection URI, with ActiveMQ's option names and defaults;
//! - [`backoff`] decides, as a pure state machine, when to try again, in which broker order,
//!   and when to give up;
//! - `discovery` fills the broker list from multicast adverts for a
//!   `discovery:(multicast://default)` URI (ActiveMQ's `DiscoveryTransport`);
//! - [`cluster`] merges the broker list a broker advertises on CONNECTED (ActiveMQ's
//!   `updateClusterClients`) into the client's own, when `updateURIsSupported` (the default);
//! - [`audit`] remembers which messages the application has consumed, so that redeliveries
//!   after a failover are not handed to it twice;
//! - the client itself re-creates the session (same `client-id`), every subscription (same
//!   `id` and headers, so durable subscriptions resume under their names) and resends every
//!   message sent with a receipt that was not yet confirmed, in order and with the same
//!   producer identity, so that the broker can drop what it already stored.
//!
//! Every message a `FailoverClient` sends carries its producer identity:
//! [`PRODUCER_ID_HEADER`], [`PRODUCER_SEQ_HEADER`] and Artemis's [`DUPLICATE_ID_HEADER`]
//! (`<producer-id>:<seq>`), unless the application set its own duplicate id.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ferromq_client::ClientError> {
//! use ferromq_client::{AckMode, ClientConfig, ClientError, FailoverClient};
//! let uri = "failover:(tcp://a:61613,tcp://b:61613)?randomize=false&timeout=30000";
//! let config = ClientConfig { client_id: Some("billing".into()), ..ClientConfig::default() };
//! let client = FailoverClient::connect(uri, config).await?;
//! let mut orders = client.subscribe("/queue/orders", AckMode::ClientIndividual, &[]).await?;
//! // Completes once a broker confirmed it, whichever broker that turned out to be.
//! client.send_with_receipt("/queue/audit", "hello", &[("persistent", "true")]).await?;
//! while let Some(msg) = orders.next().await {
//!     client.begin("tx").await?;
//!     client.send("/queue/billed", msg.body().clone(), &[("transaction", "tx")]).await?;
//!     client.ack(&msg, Some("tx")).await?;
//!     match client.commit("tx").await {
//!         // Failed over mid-transaction: the message comes again; redo the work then.
//!         Err(ClientError::TransactionRolledBack { .. }) => continue,
//!         other => other?,
//!     }
//! }
//! # Ok(()) }
//! ```

pub mod audit;
pub mod backoff;
mod client;
pub mod cluster;
mod discovery;
mod state;
mod subscription;
pub mod uri;

pub use client::{FailoverClient, FailoverConfig, FailoverReceipt};
pub use cluster::{CLUSTER_BROKERS_MAX, CLUSTER_HEADER};
pub use subscription::FailoverSubscription;
pub use uri::{BrokerUri, FailoverOptions, FailoverUri, UriError};

/// Header naming the producer (one random id per [`FailoverClient`]).
pub const PRODUCER_ID_HEADER: &str = "ferromq.producer-id";
/// Header carrying the producer's message sequence number, increasing from 1.
pub const PRODUCER_SEQ_HEADER: &str = "ferromq.producer-seq";
/// Artemis's duplicate-detection header (`Message.HDR_DUPLICATE_DETECTION_ID`).
pub const DUPLICATE_ID_HEADER: &str = "_AMQ_DUPL_ID";

/// Default depth of the consumer audit (ActiveMQ's `auditDepth`).
pub const AUDIT_DEPTH_DEFAULT: usize = 2048;

/// Delivered-but-unacknowledged messages tracked per subscription. Beyond it the oldest are
/// forgotten (their later ACK is then not sent); the broker's prefetch normally keeps the
/// count far lower.
pub const UNACKED_TRACKED_MAX: usize = 65_536;

/// Receipted sends awaiting confirmation per client, resent after a failover.
pub const PENDING_SENDS_MAX: usize = 65_536;
