//! Async STOMP client for ferromq and Apache ActiveMQ 5.x.
//!
//! One [`Client`] is one TCP connection. It is cheap to clone (an `Arc`) and every clone drives
//! the same connection. Two tasks run per connection:
//!
//! - a **reader** decodes frames and routes them: `MESSAGE` by its `subscription` header to that
//!   [`Subscription`]'s channel, `RECEIPT` by `receipt-id` to the caller waiting for it, and
//!   `ERROR` fails every waiter and closes the connection (the server closes after an `ERROR`
//!   anyway). It treats silence longer than twice the negotiated server heart-beat as a dead
//!   connection.
//! - a **writer** fed by a bounded queue (so callers feel backpressure) that drains whatever is
//!   queued, encodes it into one buffer and writes it with one syscall, and sends a heart-beat
//!   when it has been idle for the negotiated interval.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ferromq_client::ClientError> {
//! use ferromq_client::{AckMode, Client, ClientConfig};
//! let client = Client::connect("tcp://localhost:61613", ClientConfig::default()).await?;
//! let mut sub = client.subscribe("/queue/orders", AckMode::Client, &[]).await?;
//! client.send_with_receipt("/queue/orders", "hello", &[]).await?;
//! if let Some(msg) = sub.next().await {
//!     client.ack(&msg, None).await?;
//! }
//! client.disconnect().await?;
//! # Ok(()) }
//! ```
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![warn(missing_docs)]

mod client;
mod config;
mod error;
pub mod failover;
mod frames;
mod message;
mod reader;
mod receipt;
mod shared;
mod subscription;
pub mod tls;
mod writer;

pub use client::Client;
pub use config::{AckMode, ClientConfig};
pub use error::ClientError;
pub use failover::{FailoverClient, FailoverConfig, FailoverSubscription, FailoverUri};
pub use message::ReceivedMessage;
pub use receipt::ReceiptHandle;
pub use subscription::Subscription;

/// Re-exported so that users need not depend on `ferromq-protocol` for the common types.
pub use ferromq_protocol::stomp::{Command, DecodeError, Frame, HeartBeat, Limits, Version};

/// Frames the writer queue holds before senders wait: the backpressure bound per connection.
pub const OUTGOING_QUEUE_FRAMES_MAX: usize = 1024;

/// Receipts that may be outstanding at once on one connection (pipelined sends included).
pub const RECEIPTS_PENDING_MAX: usize = 65_536;
