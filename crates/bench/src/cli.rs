//! Command-line arguments. Every workload is bounded: durations, counts and windows have
//! upper limits, checked by [`RunArgs::validate`] and [`FsyncProbeArgs::validate`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ferromq_client::AckMode;

use crate::error::BenchError;

/// Producers or consumers one run may open (one connection each).
pub const CONNECTIONS_MAX: u32 = 1_000;
/// Destinations one run may spread over.
pub const DESTINATIONS_MAX: u32 = 1_000;
/// Receipts in flight per producer.
pub const WINDOW_MAX: u32 = 65_536;
/// Message body size.
pub const SIZE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Warm-up plus measurement, so that a run always ends.
pub const RUN_SECONDS_MAX: f64 = 24.0 * 3600.0;
/// Total open-loop rate.
pub const RATE_MAX: f64 = 100_000_000.0;
/// Threads of the fsync probe.
pub const PROBE_THREADS_MAX: u32 = 1_024;

/// `ferromq-bench`: STOMP load tool and raw fsync probe.
#[derive(Parser, Debug)]
#[command(name = "ferromq-bench", version, about)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Drive a STOMP broker with N producers and M consumers and report throughput and latency.
    // Boxed: the run's arguments are several times the probe's (clippy's large_enum_variant).
    Run(Box<RunArgs>),
    /// Durable writes to one file from T threads: write + fdatasync with group commit (the
    /// default), each thread's own write + fdatasync, or O_DIRECT | O_DSYNC writes with T in
    /// flight (`--mode`). What the disk allows at this concurrency.
    FsyncProbe(FsyncProbeArgs),
}

/// The `ack` header consumers subscribe with.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckArg {
    /// `ack:auto`: the broker forgets a message once it sent it.
    Auto,
    /// `ack:client`: the consumer ACKs every message (cumulative).
    Client,
    /// `ack:client-individual`: the consumer ACKs every message.
    ClientIndividual,
}

impl From<AckArg> for AckMode {
    fn from(a: AckArg) -> AckMode {
        match a {
            AckArg::Auto => AckMode::Auto,
            AckArg::Client => AckMode::Client,
            AckArg::ClientIndividual => AckMode::ClientIndividual,
        }
    }
}

/// `ferromq-bench run`.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Broker address: host:port or tcp://host:port. Producers connect here, and consumers
    /// too unless --consume-url is given.
    #[arg(long, default_value = "127.0.0.1:61613")]
    pub url: String,
    /// Where consumers connect (host:port or tcp://host:port); default: --url. Another broker
    /// of a network measures the path across a bridge: produced on one broker, forwarded on
    /// demand, consumed on the other.
    #[arg(long)]
    pub consume_url: Option<String>,
    /// Destination; with --destinations K > 1 the names are DEST.0 .. DEST.{K-1}. A /topic/
    /// destination fans out: every consumer subscribes to every destination.
    #[arg(long, short, default_value = "/queue/bench")]
    pub destination: String,
    /// Number of destinations (K).
    #[arg(long, default_value_t = 1)]
    pub destinations: u32,
    /// Producers (N), one connection each.
    #[arg(long, short, default_value_t = 1)]
    pub producers: u32,
    /// Consumers (M), one connection each.
    #[arg(long, short, default_value_t = 1)]
    pub consumers: u32,
    /// Body size in bytes.
    #[arg(long, short, default_value_t = 1024)]
    pub size: usize,
    /// Send with `persistent:true`.
    #[arg(long)]
    pub persistent: bool,
    /// Ask for a RECEIPT on every SEND and measure send latency (send → receipt).
    #[arg(long)]
    pub receipt: bool,
    /// Receipts in flight per producer (with --receipt).
    #[arg(long, default_value_t = 1)]
    pub window: u32,
    /// Consumers' ack mode; client modes ACK every message.
    #[arg(long, value_enum, default_value_t = AckArg::Auto)]
    pub ack: AckArg,
    /// Total send rate in msg/s over all producers, on a fixed schedule (open loop; latency
    /// is measured from the scheduled send time). Without it: as fast as possible.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Seconds of warm-up before measuring.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Seconds of measurement.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds any single broker operation (connect, send, receipt, ack, drain progress) may
    /// take before the run ends with an error.
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
    /// STOMP login.
    #[arg(long)]
    pub login: Option<String>,
    /// STOMP passcode.
    #[arg(long)]
    pub passcode: Option<String>,
    /// STOMP virtual host (the CONNECT `host` header); RabbitMQ wants `/`.
    #[arg(long, default_value = "localhost")]
    pub host: String,
    /// PEM CA bundle that signed the broker's certificate: needed for `stomp+ssl://` URLs
    /// (the same option as `ferromq produce --tls-ca`).
    #[arg(long, value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate chain, for a broker with `tls.need_client_auth` (with
    /// --tls-key).
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Extra SEND header, name:value (repeatable).
    #[arg(long = "header", short = 'H')]
    pub headers: Vec<String>,
    /// Extra SUBSCRIBE header, name:value (repeatable), e.g. activemq.prefetchSize:1000 or
    /// prefetch-count:1000 for RabbitMQ.
    #[arg(long = "subscribe-header")]
    pub subscribe_headers: Vec<String>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// How the fsync probe makes each record durable.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeMode {
    /// Append with `write`; whoever finds no sync running syncs for everyone (group commit).
    GroupCommit,
    /// Every thread does its own `pwrite` + `fdatasync` (no grouping in user space).
    Fdatasync,
    /// `pwrite` of block-padded records from 4 KiB-aligned buffers to a preallocated,
    /// zero-filled file opened `O_DIRECT | O_DSYNC`; T threads = T writes in flight.
    DirectDsync,
}

/// `ferromq-bench fsync-probe`.
#[derive(Args, Debug, Clone)]
pub struct FsyncProbeArgs {
    /// Threads appending concurrently (durable writes in flight).
    #[arg(long, short, default_value_t = 1)]
    pub threads: u32,
    /// How each record is made durable.
    #[arg(long, value_enum, default_value_t = ProbeMode::GroupCommit)]
    pub mode: ProbeMode,
    /// `fdatasync` / `direct-dsync`: stop each thread after this many records (else run for
    /// `--duration`).
    #[arg(long)]
    pub records: Option<u64>,
    /// `fdatasync`: overwrite a preallocated, zero-filled file instead of appending
    /// (`direct-dsync` always does).
    #[arg(long)]
    pub preallocate: bool,
    /// Size of the preallocated file in MiB; writes wrap around inside it.
    #[arg(long, default_value_t = 64)]
    pub file_mib: u64,
    /// `direct-dsync`: pad each record to a multiple of this (the device's logical block size).
    #[arg(long, default_value_t = 512)]
    pub block_bytes: usize,
    /// Record size in bytes.
    #[arg(long, short, default_value_t = 1024)]
    pub size: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Directory for the (temporary, removed afterwards) file; it decides which disk is measured.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Parses `name:value` (the value may contain `:`).
pub fn parse_header(s: &str) -> Result<(String, String), BenchError> {
    match s.split_once(':') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(BenchError::Config(format!(
            "header {s:?} is not name:value"
        ))),
    }
}

fn seconds(name: &str, v: f64, allow_zero: bool) -> Result<Duration, BenchError> {
    let ok = v.is_finite() && v <= RUN_SECONDS_MAX && (v > 0.0 || (allow_zero && v == 0.0));
    if !ok {
        return Err(BenchError::Config(format!(
            "--{name} {v} must be {} and at most {RUN_SECONDS_MAX} s",
            if allow_zero { ">= 0" } else { "> 0" }
        )));
    }
    Ok(Duration::from_secs_f64(v))
}

fn between(name: &str, v: u64, min: u64, max: u64) -> Result<(), BenchError> {
    if v < min || v > max {
        return Err(BenchError::Config(format!(
            "--{name} {v} must be between {min} and {max}"
        )));
    }
    Ok(())
}

/// A checked run workload.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The arguments as given (the report repeats them).
    pub args: RunArgs,
    /// Where consumers connect: `--consume-url`, else `--url`.
    pub consume_url: String,
    /// Destination names, K of them.
    pub destination_names: Vec<String>,
    /// True for `/topic/...`: every consumer subscribes to every destination.
    pub fan_out: bool,
    /// Warm-up length.
    pub warmup: Duration,
    /// Measurement length.
    pub duration: Duration,
    /// Per-operation timeout.
    pub timeout: Duration,
    /// Extra SEND headers.
    pub send_headers: Vec<(String, String)>,
    /// Extra SUBSCRIBE headers.
    pub subscribe_headers: Vec<(String, String)>,
    /// TLS settings for `stomp+ssl://` URLs (from --tls-ca / --tls-cert / --tls-key).
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl RunArgs {
    /// Checks bounds and derives the destination names.
    pub fn validate(&self) -> Result<RunConfig, BenchError> {
        between(
            "producers",
            self.producers.into(),
            1,
            CONNECTIONS_MAX.into(),
        )?;
        between(
            "consumers",
            self.consumers.into(),
            0,
            CONNECTIONS_MAX.into(),
        )?;
        between(
            "destinations",
            self.destinations.into(),
            1,
            DESTINATIONS_MAX.into(),
        )?;
        between("window", self.window.into(), 1, WINDOW_MAX.into())?;
        if self.size > SIZE_BYTES_MAX {
            return Err(BenchError::Config(format!(
                "--size {} is above {SIZE_BYTES_MAX}",
                self.size
            )));
        }
        if let Some(rate) = self.rate {
            if !(rate.is_finite() && rate > 0.0 && rate <= RATE_MAX) {
                return Err(BenchError::Config(format!(
                    "--rate {rate} must be > 0 and at most {RATE_MAX}"
                )));
            }
        }
        if self.window > 1 && !self.receipt {
            return Err(BenchError::Config("--window needs --receipt".into()));
        }
        let warmup = seconds("warmup", self.warmup, true)?;
        let duration = seconds("duration", self.duration, false)?;
        let timeout = seconds("timeout", self.timeout, false)?;
        if self.warmup + self.duration > RUN_SECONDS_MAX {
            return Err(BenchError::Config(format!(
                "--warmup + --duration must be at most {RUN_SECONDS_MAX} s"
            )));
        }
        if !self.destination.starts_with('/') {
            return Err(BenchError::Config(format!(
                "--destination {:?} must start with / (e.g. /queue/bench)",
                self.destination
            )));
        }
        let destination_names = if self.destinations == 1 {
            vec![self.destination.clone()]
        } else {
            (0..self.destinations)
                .map(|i| format!("{}.{i}", self.destination))
                .collect()
        };
        let send_headers = self
            .headers
            .iter()
            .map(|h| parse_header(h))
            .collect::<Result<_, _>>()?;
        let subscribe_headers = self
            .subscribe_headers
            .iter()
            .map(|h| parse_header(h))
            .collect::<Result<_, _>>()?;
        // An empty value is a slip of a script's variable, not a request for the default:
        // refusing it beats silently measuring a single broker instead of a bridge.
        let consume_url = match &self.consume_url {
            Some(u) if u.trim().is_empty() => {
                return Err(BenchError::Config("--consume-url must not be empty".into()))
            }
            Some(u) => u.clone(),
            None => self.url.clone(),
        };
        let tls = self.tls_config()?;
        let tls_url = [&self.url, &consume_url]
            .into_iter()
            .find(|u| ferromq_client::tls::is_tls_addr(u));
        if let (Some(u), None) = (tls_url, &tls) {
            return Err(BenchError::Config(format!(
                "{u} is a TLS address: give --tls-ca (the CA that signed the broker's certificate)"
            )));
        }
        Ok(RunConfig {
            tls,
            args: self.clone(),
            consume_url,
            fan_out: self.destination.starts_with("/topic/"),
            destination_names,
            warmup,
            duration,
            timeout,
            send_headers,
            subscribe_headers,
        })
    }
}

impl RunArgs {
    /// The rustls client configuration, when --tls-ca is given.
    fn tls_config(&self) -> Result<Option<Arc<rustls::ClientConfig>>, BenchError> {
        let Some(ca) = &self.tls_ca else {
            if self.tls_cert.is_some() {
                return Err(BenchError::Config(
                    "--tls-cert needs --tls-ca (the CA that signed the broker's certificate)"
                        .into(),
                ));
            }
            return Ok(None);
        };
        let client = self.tls_cert.as_deref().zip(self.tls_key.as_deref());
        ferromq_client::tls::client_config(ca, client)
            .map(Some)
            .map_err(|e| BenchError::Config(format!("TLS: {e}")))
    }
}

impl RunConfig {
    /// The destination indexes consumer `consumer` subscribes to. Topics: all of them. Queues:
    /// every destination gets at least one consumer when M >= K; with M < K the destinations
    /// are dealt round-robin, so each consumer takes several.
    pub fn consumer_destinations(&self, consumer: u32) -> Vec<usize> {
        let k = self.destination_names.len();
        let m = self.args.consumers as usize;
        let c = consumer as usize;
        if self.fan_out {
            (0..k).collect()
        } else if m >= k {
            vec![c % k]
        } else {
            (0..k).filter(|d| d % m == c).collect()
        }
    }

    /// How many deliveries one sent message should produce: M on a topic, 1 on a queue that
    /// has consumers, 0 without consumers.
    pub fn deliveries_per_message(&self) -> u64 {
        match (self.args.consumers, self.fan_out) {
            (0, _) => 0,
            (m, true) => u64::from(m),
            (_, false) => 1,
        }
    }
}

impl FsyncProbeArgs {
    /// Checks bounds; returns the duration.
    pub fn validate(&self) -> Result<Duration, BenchError> {
        between("threads", self.threads.into(), 1, PROBE_THREADS_MAX.into())?;
        between("size", self.size as u64, 1, SIZE_BYTES_MAX as u64)?;
        between(
            "file-mib",
            self.file_mib,
            1,
            crate::durable_write_probe::FILE_BYTES_MAX >> 20,
        )?;
        between(
            "block-bytes",
            self.block_bytes as u64,
            512,
            crate::durable_write_probe::BLOCK_BYTES_MAX as u64,
        )?;
        if !self.block_bytes.is_power_of_two() {
            return Err(BenchError::Config(format!(
                "--block-bytes {} must be a power of two",
                self.block_bytes
            )));
        }
        if let Some(n) = self.records {
            between("records", n, 1, u64::MAX)?;
        }
        if self.mode == ProbeMode::GroupCommit && (self.records.is_some() || self.preallocate) {
            return Err(BenchError::Config(
                "--records and --preallocate apply to --mode fdatasync and direct-dsync".into(),
            ));
        }
        seconds("duration", self.duration, false)
    }

    /// The durable-write probe's run, for the modes other than group commit.
    pub fn durable_write_spec(
        &self,
        duration: Duration,
    ) -> Option<crate::durable_write_probe::DurableWriteSpec> {
        use crate::durable_write_probe::{DurableWriteSpec, WriteMode};
        let mode = match self.mode {
            ProbeMode::GroupCommit => return None,
            ProbeMode::Fdatasync => WriteMode::Fdatasync,
            ProbeMode::DirectDsync => WriteMode::DirectDsync,
        };
        Some(DurableWriteSpec {
            mode,
            in_flight: self.threads,
            size_bytes: self.size,
            block_bytes: self.block_bytes,
            duration,
            records_per_thread_max: self.records,
            dir: self.dir.clone(),
            preallocate: self.preallocate,
            file_bytes: self.file_mib << 20,
        })
    }
}
