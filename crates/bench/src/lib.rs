//! `ferromq-bench`: a STOMP load tool that drives any STOMP 1.2 broker (ferromq, ActiveMQ,
//! RabbitMQ) with the same workload, and a raw `write` + `fdatasync` probe that gives the
//! physical reference for every persistent figure.
//!
//! The library exists so that the binary's parts are testable one by one:
//!
//! - [`cli`]: command-line arguments and their validation;
//! - [`schedule`]: the open-loop send schedule (pure, takes the time as input);
//! - [`stats`]: latency histograms and the percentiles the reports print;
//! - [`run`]: the STOMP workload (producers, consumers, warm-up, measurement, drain);
//! - [`fsync_probe`]: T threads appending to one file with leader-based group commit;
//! - [`durable_write_probe`]: N writers each waiting for its own durable write (`fdatasync`,
//!   or `O_DIRECT | O_DSYNC` on a preallocated file); [`disk_info`] names the disk it ran on;
//! - [`report`]: the text and JSON renderings of both.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod cli;
pub mod disk_info;
pub mod durable_write_probe;
pub mod error;
pub mod fsync_probe;
pub mod report;
pub mod run;
pub mod schedule;
pub mod stats;

pub use error::BenchError;
