//! Sans-I/O protocol codecs for ferromq.
//!
//! Bytes in, frames out, typed errors. Nothing here touches a socket, a clock or a runtime, so
//! every codec is deterministic, unit-testable and fuzzable. The tokio glue lives in the
//! `ferromq` server and in `ferromq-client`.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod openwire;
pub mod stomp;
