//! The `ferromq` server: configuration, the STOMP connector, and the wiring of store and
//! broker. The binary (`src/main.rs`) adds the command line.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod accept;
pub mod admin;
pub mod authz;
pub mod cluster;
pub mod config;
mod conn_buf;
mod conn_stream;
pub mod connections;
pub mod dn;
pub mod network;
pub mod openwire;
pub mod passwords;
pub mod progress;
pub mod reload;
pub mod security;
pub mod server;
pub mod stomp;
pub mod tls;
