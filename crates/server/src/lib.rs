//! The `ferromq` server: configuration, the STOMP connector, and the wiring of store and
//! broker. The binary (`src/main.rs`) adds the command line.

pub mod admin;
pub mod cluster;
pub mod config;
pub mod server;
pub mod stomp;
