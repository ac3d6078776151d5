//! `ferromq`: the broker and its command-line tools.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

// Allocation is the largest single CPU cost on the message path (malloc/free ≈ 30 % of the
// instructions of the perf-gate workload with glibc's allocator); mimalloc's thread-local free
// lists make it markedly cheaper. See bench-results/profile.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::{Parser, Subcommand, ValueEnum};
use ferromq_client::{AckMode, ClientConfig, FailoverClient};
use ferromq_server::config::Config;
use ferromq_server::server::Server;

#[derive(Parser, Debug)]
#[command(
    name = "ferromq",
    version,
    about = "A highly available message broker (STOMP 1.0-1.2), ActiveMQ-compatible"
)]
struct Cli {
    /// Log filter (tracing's EnvFilter syntax); overrides RUST_LOG.
    #[arg(long, global = true)]
    log: Option<String>,
    /// Log as JSON lines instead of text (as `[log] format = "json"` does for `serve`).
    #[arg(long, global = true)]
    log_json: bool,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(subcommand)]
    command: Command,
}

/// TLS for the client tools: `ssl://` / `stomp+ssl://` broker URLs (`produce`, `consume`) and
/// `https://` admin addresses (`status`, `dstat`, `browse`, `purge`).
#[derive(clap::Args, Debug)]
struct TlsArgs {
    /// PEM file of the CA that signed the broker's certificate (needed for ssl:// and https://).
    #[arg(long, global = true, env = "FERROMQ_TLS_CA", value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// PEM client certificate chain, for a broker with tls.need_client_auth (with --tls-key).
    #[arg(long, global = true, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, global = true, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// The rustls client configuration, when --tls-ca is given.
    fn client_config(&self) -> anyhow::Result<Option<Arc<rustls::ClientConfig>>> {
        let Some(ca) = &self.tls_ca else {
            if self.tls_cert.is_some() {
                anyhow::bail!(
                    "--tls-cert needs --tls-ca (the CA that signed the broker's certificate)"
                );
            }
            return Ok(None);
        };
        let client = match (&self.tls_cert, &self.tls_key) {
            (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
            _ => None,
        };
        Ok(Some(ferromq_client::tls::client_config(ca, client)?))
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the broker. Without --config it serves STOMP on 127.0.0.1:61613.
    Serve {
        /// TOML configuration file.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Send messages (for a person at a terminal, or a script).
    Produce {
        /// Broker address: host:port, tcp://host:port, ssl://host:port (STOMP over TLS, with
        /// --tls-ca), or a failover URI such as
        /// failover:(tcp://a:61613,tcp://b:61613)?randomize=false
        #[arg(long, default_value = "127.0.0.1:61613")]
        url: String,
        /// Destination, e.g. /queue/orders or /topic/prices.
        #[arg(long, short)]
        destination: String,
        /// How many messages.
        #[arg(long, short = 'n', default_value_t = 1)]
        count: u64,
        /// The body; the message number replaces each n in braces, as in the default. Ignored
        /// with --size.
        // Not written as `{n}` here: clap turns that into a line break in help text (it does
        // not in the default value shown after it).
        #[arg(long, short, value_name = "TEXT", default_value = "message {n}")]
        message: String,
        /// Send bodies of this many bytes instead of --message.
        #[arg(long)]
        size: Option<usize>,
        /// Send persistent messages.
        #[arg(long)]
        persistent: bool,
        /// Wait for a receipt for every message.
        #[arg(long)]
        receipt: bool,
        /// Extra headers, name:value (repeatable).
        #[arg(long = "header", short = 'H')]
        headers: Vec<String>,
        #[command(flatten)]
        auth: Auth,
    },
    /// Ask a broker's admin endpoint what it is doing (role, epoch, bridges), as JSON; given
    /// several brokers, draw the topology (groups, roles, epochs, bridges and their traffic).
    Status {
        /// The broker's admin address (`transports.admin`), or several, comma-separated.
        #[arg(long, default_value = "127.0.0.1:8161")]
        admin: String,
        /// Print the topology table even for one broker.
        #[arg(long)]
        table: bool,
    },
    /// Destination statistics over the admin API, like `activemq dstat`.
    Dstat {
        /// Which destinations: all, queues or topics.
        #[arg(default_value = "all", value_parser = ["all", "queues", "topics"])]
        kind: String,
        #[command(flatten)]
        admin: AdminArgs,
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List the messages waiting in a queue without consuming them (admin API).
    Browse {
        /// The queue's name (without /queue/).
        queue: String,
        /// At most this many messages.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[command(flatten)]
        admin: AdminArgs,
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove every waiting message of a queue (admin API; needs an admin user when users
    /// are configured).
    Purge {
        /// The queue's name (without /queue/).
        queue: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// The attributes of the queues whose names match a pattern, like `activemq query`
    /// (admin API).
    Query {
        /// Name pattern; `*` matches any run of characters.
        #[arg(short = 'q', long = "queue", default_value = "*")]
        pattern: String,
        #[command(flatten)]
        admin: AdminArgs,
        /// Print the matching queues' JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Move one message (--message ID) or every waiting message (--all) of a queue to another
    /// queue (admin API; needs an admin user when users are configured).
    Move {
        /// The source queue.
        #[arg(long)]
        from: String,
        /// The target queue (created if need be).
        #[arg(long)]
        to: String,
        /// The message id, as `browse` lists it.
        #[arg(long, conflicts_with = "all", required_unless_present = "all")]
        message: Option<String>,
        /// Every waiting message (one move per message, in rounds of a browse).
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Send dead-lettered messages back to their original queues: one (--message ID) or all
    /// (admin API; needs an admin user when users are configured).
    Retry {
        /// The dead-letter queue.
        #[arg(long, default_value = "ActiveMQ.DLQ")]
        queue: String,
        /// Only this message.
        #[arg(long)]
        message: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Remove a queue and every message it holds (admin API; refused while consumers are
    /// attached).
    DeleteQueue {
        /// The queue's name (without /queue/).
        queue: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Print the hash to store as a user's `password` in `[[security.users]]` (Argon2id).
    /// Reads the password from standard input (one line) unless --password is given.
    Passwd {
        /// The password (visible in the process list and shell history: prefer stdin).
        #[arg(long)]
        password: Option<String>,
    },
    /// Receive messages and print them.
    Consume {
        /// Broker address: host:port, tcp://host:port, ssl://host:port (STOMP over TLS, with
        /// --tls-ca), or a failover URI such as
        /// failover:(tcp://a:61613,tcp://b:61613)?randomize=false
        #[arg(long, default_value = "127.0.0.1:61613")]
        url: String,
        /// Destination, e.g. /queue/orders or /topic/prices.
        #[arg(long, short)]
        destination: String,
        /// Stop after this many messages (0: run until interrupted or idle).
        #[arg(long, short = 'n', default_value_t = 0)]
        count: u64,
        /// Stop after this many seconds without a message (0: never).
        #[arg(long, default_value_t = 0)]
        idle_timeout_secs: u64,
        /// Acknowledgement mode.
        #[arg(long, value_enum, default_value_t = AckArg::Auto)]
        ack: AckArg,
        /// JMS selector.
        #[arg(long)]
        selector: Option<String>,
        /// Durable subscription name (needs --client-id).
        #[arg(long)]
        durable: Option<String>,
        /// Print only a count at the end, not every message.
        #[arg(long)]
        quiet: bool,
        #[command(flatten)]
        auth: Auth,
    },
}

#[derive(clap::Args, Debug)]
struct AdminArgs {
    /// The broker's admin address (`transports.admin`).
    #[arg(long, default_value = "127.0.0.1:8161")]
    admin: String,
    /// Admin API user (needed when the broker has `[security]` users).
    #[arg(long)]
    admin_user: Option<String>,
    /// Its password (or the environment variable FERROMQ_ADMIN_PASSWORD).
    #[arg(long, env = "FERROMQ_ADMIN_PASSWORD", hide_env_values = true)]
    admin_password: Option<String>,
}

impl AdminArgs {
    fn credentials(&self) -> Option<ferromq_server::admin::cli::Credentials> {
        self.admin_user
            .as_ref()
            .map(|user| ferromq_server::admin::cli::Credentials {
                user: user.clone(),
                password: self.admin_password.clone().unwrap_or_default(),
            })
    }

    fn api(&self, tls: &Option<Arc<rustls::ClientConfig>>) -> ferromq_server::admin::cli::Api {
        ferromq_server::admin::cli::Api {
            addr: self.admin.clone(),
            credentials: self.credentials(),
            tls: tls.clone(),
        }
    }

    async fn call(
        &self,
        tls: &Option<Arc<rustls::ClientConfig>>,
        method: &str,
        path: &str,
    ) -> anyhow::Result<String> {
        let c = self.credentials();
        let answer = ferromq_server::admin::cli::request(
            &self.admin,
            method,
            path,
            c.as_ref(),
            None,
            tls.as_ref(),
        )
        .await?;
        ferromq_server::admin::cli::ok_body(answer)
    }
}

#[derive(clap::Args, Debug)]
struct Auth {
    /// STOMP login.
    #[arg(long)]
    login: Option<String>,
    /// STOMP passcode.
    #[arg(long)]
    passcode: Option<String>,
    /// JMS client id (durable subscriptions).
    #[arg(long)]
    client_id: Option<String>,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum AckArg {
    Auto,
    Client,
    ClientIndividual,
}

/// Logs go to stderr, filtered by `--log`, else `RUST_LOG`, else `default_level`.
fn init_logging(filter: Option<&str>, json: bool, default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = match filter {
        Some(f) => EnvFilter::new(f),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level)),
    };
    // Colour codes are for a person at a terminal; in a log file or a pipe they are noise.
    // NO_COLOR (https://no-color.org): present and not empty turns colour off.
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let ansi = std::io::stderr().is_terminal() && !no_color;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn client_config(auth: &Auth, tls: &Option<Arc<rustls::ClientConfig>>) -> ClientConfig {
    ClientConfig {
        login: auth.login.clone(),
        passcode: auth.passcode.clone(),
        client_id: auth.client_id.clone(),
        tls: tls.clone(),
        ..ClientConfig::default()
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The broker reports what it does at info; the client tools print their results
    // themselves, and the client library's connection chatter would only surround them.
    let default_level = match cli.command {
        Command::Serve { .. } => "info",
        _ => "warn",
    };
    // `[log] format = "json"` in the broker's configuration does what --log-json does. The
    // configuration is read here only for that (logging must start before the broker does);
    // `serve` reads it again and reports any error in it, logged as configured or as text.
    let config_json = match &cli.command {
        Command::Serve { config } => Config::load(config.as_deref(), std::env::vars())
            .map(|c| c.log.json())
            .unwrap_or(false),
        _ => false,
    };
    init_logging(
        cli.log.as_deref(),
        cli.log_json || config_json,
        default_level,
    );
    let tls = cli.tls.client_config()?;
    match cli.command {
        Command::Serve { config } => serve(config).await,
        Command::Status { admin, table } => {
            let addrs: Vec<&str> = admin
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .collect();
            if addrs.len() == 1 && !table {
                println!(
                    "{}",
                    ferromq_server::admin::fetch(addrs[0], tls.as_ref()).await?
                );
                return Ok(());
            }
            let mut brokers = Vec::with_capacity(addrs.len());
            for a in addrs {
                brokers.push((
                    a.to_string(),
                    ferromq_server::admin::fetch(a, tls.as_ref()).await,
                ));
            }
            print!("{}", ferromq_server::admin::topology_table(&brokers));
            Ok(())
        }
        Command::Passwd { password } => {
            let password = match password {
                Some(p) => p,
                None => {
                    let mut line = String::new();
                    std::io::stdin()
                        .read_line(&mut line)
                        .context("read the password from standard input")?;
                    line.trim_end_matches(['\r', '\n']).to_string()
                }
            };
            if password.is_empty() {
                anyhow::bail!("an empty password cannot be hashed");
            }
            println!(
                "{}",
                ferromq_server::passwords::hash(&password).map_err(anyhow::Error::msg)?
            );
            Ok(())
        }
        Command::Dstat { kind, admin, json } => {
            let queues = admin.call(&tls, "GET", "/api/v1/queues").await?;
            let topics = admin.call(&tls, "GET", "/api/v1/topics").await?;
            if json {
                println!("{{\"queues\":{queues},\"topics\":{topics}}}");
            } else {
                print!(
                    "{}",
                    ferromq_server::admin::cli::dstat_table(&queues, &topics, &kind)?
                );
            }
            Ok(())
        }
        Command::Browse {
            queue,
            limit,
            admin,
            json,
        } => {
            let path = format!(
                "/api/v1/queues/{}/messages?limit={limit}",
                ferromq_server::admin::cli::path_segment(&queue)
            );
            let answer = admin.call(&tls, "GET", &path).await?;
            if json {
                println!("{answer}");
            } else {
                print!("{}", ferromq_server::admin::cli::browse_table(&answer)?);
            }
            Ok(())
        }
        Command::Purge { queue, admin } => {
            let path = format!(
                "/api/v1/queues/{}/purge",
                ferromq_server::admin::cli::path_segment(&queue)
            );
            println!("{}", admin.call(&tls, "POST", &path).await?);
            Ok(())
        }
        Command::Query {
            pattern,
            admin,
            json,
        } => {
            let queues = admin.call(&tls, "GET", "/api/v1/queues").await?;
            if json {
                let v: serde_json::Value = serde_json::from_str(&queues)?;
                let matching: Vec<&serde_json::Value> = v["queues"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|q| {
                        ferromq_server::admin::cli::pattern_matches(
                            &pattern,
                            q["name"].as_str().unwrap_or_default(),
                        )
                    })
                    .collect();
                println!("{}", serde_json::json!({ "queues": matching }));
            } else {
                print!(
                    "{}",
                    ferromq_server::admin::cli::query_text(&queues, &pattern)?
                );
            }
            Ok(())
        }
        Command::Move {
            from,
            to,
            message,
            all: _,
            admin,
        } => {
            use ferromq_server::admin::cli::path_segment;
            let api = admin.api(&tls);
            let answer = match message {
                Some(id) => {
                    let path = format!(
                        "/api/v1/queues/{}/messages/{}/move",
                        path_segment(&from),
                        path_segment(&id)
                    );
                    let body = serde_json::json!({ "to": to }).to_string();
                    api.call("POST", &path, Some(&body)).await?
                }
                None => ferromq_server::admin::cli::move_all(&api, &from, &to).await?,
            };
            println!("{answer}");
            Ok(())
        }
        Command::Retry {
            queue,
            message,
            admin,
        } => {
            use ferromq_server::admin::cli::path_segment;
            let api = admin.api(&tls);
            let answer = match message {
                Some(id) => {
                    let path = format!(
                        "/api/v1/queues/{}/messages/{}/retry",
                        path_segment(&queue),
                        path_segment(&id)
                    );
                    api.call("POST", &path, Some("{}")).await?
                }
                None => ferromq_server::admin::cli::retry_all(&api, &queue).await?,
            };
            println!("{answer}");
            Ok(())
        }
        Command::DeleteQueue { queue, admin } => {
            let path = format!(
                "/api/v1/queues/{}",
                ferromq_server::admin::cli::path_segment(&queue)
            );
            println!("{}", admin.call(&tls, "DELETE", &path).await?);
            Ok(())
        }
        Command::Produce {
            url,
            destination,
            count,
            message,
            size,
            persistent,
            receipt,
            headers,
            auth,
        } => {
            let client = FailoverClient::connect(&url, client_config(&auth, &tls))
                .await
                .with_context(|| format!("cannot connect to {url}"))?;
            let mut hdrs: Vec<(String, String)> = Vec::new();
            for h in &headers {
                let Some((n, v)) = h.split_once(':') else {
                    bail!("--header {h:?}: expected name:value");
                };
                hdrs.push((n.to_string(), v.to_string()));
            }
            if persistent {
                hdrs.push(("persistent".into(), "true".into()));
            }
            let hrefs: Vec<(&str, &str)> =
                hdrs.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            let fixed = size.map(|s| bytes::Bytes::from(vec![b'x'; s]));
            let started = Instant::now();
            let mut progress = ferromq_server::progress::Progress::stderr("sent", count);
            for n in 1..=count {
                let body = match &fixed {
                    Some(b) => b.clone(),
                    None => bytes::Bytes::from(message.replace("{n}", &n.to_string())),
                };
                if receipt {
                    client.send_with_receipt(&destination, body, &hrefs).await?;
                } else {
                    client.send(&destination, body, &hrefs).await?;
                }
                progress.inc();
            }
            progress.finish();
            client.disconnect().await?;
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "sent {count} message(s) to {destination} in {secs:.3} s ({:.0} msg/s)",
                count as f64 / secs.max(1e-9)
            );
            Ok(())
        }
        Command::Consume {
            url,
            destination,
            count,
            idle_timeout_secs,
            ack,
            selector,
            durable,
            quiet,
            auth,
        } => {
            if durable.is_some() && auth.client_id.is_none() {
                bail!("--durable needs --client-id");
            }
            let client = FailoverClient::connect(&url, client_config(&auth, &tls))
                .await
                .with_context(|| format!("cannot connect to {url}"))?;
            let mode = match ack {
                AckArg::Auto => AckMode::Auto,
                AckArg::Client => AckMode::Client,
                AckArg::ClientIndividual => AckMode::ClientIndividual,
            };
            let mut hdrs: Vec<(&str, &str)> = vec![("id", "cli-1")];
            if let Some(s) = &selector {
                hdrs.push(("selector", s));
            }
            if let Some(d) = &durable {
                hdrs.push(("activemq.subscriptionName", d));
            }
            let mut sub = client.subscribe(&destination, mode, &hdrs).await?;
            let mut received = 0u64;
            // Only with -n (a total to count towards), and not over bodies printed to the same
            // terminal.
            let mut progress = (count > 0 && (quiet || !std::io::stdout().is_terminal()))
                .then(|| ferromq_server::progress::Progress::stderr("received", count));
            loop {
                if count > 0 && received >= count {
                    break;
                }
                let next = if idle_timeout_secs > 0 {
                    sub.next_timeout(Duration::from_secs(idle_timeout_secs))
                        .await
                } else {
                    tokio::select! {
                        m = sub.next() => m,
                        _ = tokio::signal::ctrl_c() => None,
                    }
                };
                let Some(msg) = next else { break };
                received += 1;
                if let Some(p) = progress.as_mut() {
                    p.inc();
                }
                if !quiet {
                    println!("{}", String::from_utf8_lossy(msg.body()));
                }
                if mode != AckMode::Auto {
                    client.ack(&msg, None).await?;
                }
            }
            if let Some(p) = progress {
                p.finish();
            }
            client.disconnect().await?;
            eprintln!("received {received} message(s) from {destination}");
            Ok(())
        }
    }
}

async fn serve(config: Option<PathBuf>) -> anyhow::Result<()> {
    use ferromq_ha::{Activation, Standalone};
    use ferromq_ha_flock::SharedFileLock;
    use tokio::signal::unix::{signal, SignalKind};

    // First of all: SIGHUP's default action ends the process, and an operator may send it as
    // soon as the ports accept.
    let hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let cfg = Config::load(config.as_deref(), std::env::vars())?;
    let live = ferromq_server::reload::LiveConfig::new(&cfg).context("[security] / [tls]")?;
    tokio::spawn(reload_on_sighup(
        hup,
        config.clone(),
        live.clone(),
        cfg.clone(),
    ));
    let activation: Arc<dyn Activation> = match cfg.ha.mode.as_str() {
        "shared-file" => Arc::new(SharedFileLock::new(
            &cfg.broker.data_dir,
            cfg.holder(),
            Duration::from_millis(cfg.ha.lock_keepalive_ms),
        )),
        "shared-db" => shared_db_activation(&cfg)?,
        #[cfg(feature = "zk")]
        "replicated" => replicated_activation(&cfg, &live)?,
        _ => Arc::new(Standalone),
    };
    // Slaves register too: they are where clients must go after a failover.
    let members = cfg.broker.data_dir.join("members");
    let registered = cfg.ha.mode == "shared-file" && cfg.ha.update_cluster_clients;
    if registered {
        ferromq_server::cluster::ClusterView::register(
            &members,
            &cfg.holder(),
            &cfg.member_entry(),
        );
    }
    // The failover history of earlier runs, so that a restart does not wipe what an operator
    // asks `/api/v1/ha` after an incident; an unreadable file is said and ignored.
    let history = Arc::new(ferromq_server::admin::history::HistoryFile::new(
        ferromq_server::admin::history::path_for(&cfg),
    ));
    let (status_tx, status_rx) = tokio::sync::watch::channel(ferromq_server::admin::Status {
        broker: cfg.broker.name.clone(),
        ha_mode: cfg.ha.mode.clone(),
        role: "starting".into(),
        failover: history.start(std::time::SystemTime::now()),
        ..Default::default()
    });
    let keep_history = AbortOnDrop(tokio::spawn(ferromq_server::admin::history::keep(
        history.clone(),
        status_rx.clone(),
    )));
    if !cfg.transports.admin.is_empty() {
        let tls = match live.certs().filter(|_| cfg.transports.admin_tls) {
            // hyper serves HTTP/1 only: say so in ALPN, so that clients do not try HTTP/2.
            Some(certs) => Some(
                ferromq_server::tls::acceptor_with(&cfg.tls, &[b"http/1.1"], certs)
                    .context("[tls] for transports.admin_tls")?,
            ),
            None => None,
        };
        let (listener, addr) = ferromq_server::admin::bind(&cfg.transports.admin)
            .await
            .with_context(|| format!("cannot listen for admin on {}", cfg.transports.admin))?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!(
            "admin endpoint: {scheme}://{addr}/status (API: /api/v1, metrics: /metrics)"
        );
        tokio::spawn(ferromq_server::admin::serve_reloadable(
            listener,
            status_rx,
            Arc::new(cfg.clone()),
            tls,
            live.clone(),
        ));
    }
    #[cfg(feature = "zk")]
    let zk_members = (cfg.ha.mode == "replicated" && cfg.ha.update_cluster_clients)
        .then(|| ZkMembers::start(&cfg));
    #[cfg(feature = "zk")]
    let members_live = zk_members.as_ref().map(|m| m.members.clone());
    #[cfg(not(feature = "zk"))]
    let members_live = None;
    let result = serve_loop(&cfg, activation, &status_tx, members_live, live).await;
    // The last change (a suspension ended by the shutdown) may not be written yet: write it
    // here, after the keeper is stopped, so that the two never race.
    drop(keep_history);
    let last = status_tx.borrow().failover.clone();
    match tokio::task::spawn_blocking(move || history.save(&last)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!("failover history not saved: {e}"),
        Err(e) => tracing::warn!("failover history not saved: the writer failed: {e}"),
    }
    if registered {
        ferromq_server::cluster::ClusterView::unregister(&members, &cfg.holder());
    }
    #[cfg(feature = "zk")]
    if let Some(m) = zk_members {
        m.stop().await;
    }
    result
}

/// A replicated member's entry in its group's client list (`update_cluster_clients`): this
/// broker's address at `<zk_path>/.clients/<group>/<holder>`, and a watch on the group's
/// entries. Slaves register too — they are where clients go after a failover — so this lives
/// as long as the process, across masterships.
#[cfg(feature = "zk")]
struct ZkMembers {
    registration: ferromq_ha_zk::registry::Registration,
    members: ferromq_server::cluster::Members,
    _watch: AbortOnDrop,
}

#[cfg(feature = "zk")]
impl ZkMembers {
    fn start(cfg: &Config) -> ZkMembers {
        use ferromq_ha_zk::registry::{register, watch_children, RegistryConfig};
        let rc = RegistryConfig {
            zk_address: cfg.ha.zk_address.clone(),
            session_timeout: Duration::from_millis(cfg.ha.zk_session_timeout_ms),
        };
        let parent = format!(
            "{}/.clients/{}",
            cfg.ha.zk_path.trim_end_matches('/'),
            cfg.broker.name
        );
        let node = format!("{parent}/{}", cfg.holder().replace('/', "_"));
        let registration = register(rc.clone(), node, cfg.member_entry().into_bytes());
        let watch = watch_children(rc, parent);
        let (tx, rx) = tokio::sync::watch::channel(Vec::new());
        let task = tokio::spawn(async move {
            let mut children = watch.rx.clone();
            loop {
                let addrs = children
                    .borrow_and_update()
                    .values()
                    .map(|d| String::from_utf8_lossy(d).into_owned())
                    .collect();
                tx.send_replace(addrs);
                if children.changed().await.is_err() {
                    return;
                }
            }
        });
        ZkMembers {
            registration,
            members: ferromq_server::cluster::Members::Live(rx),
            _watch: AbortOnDrop(task),
        }
    }

    async fn stop(self) {
        self.registration.stop().await;
    }
}

/// The shared-database locker of `[ha]` on `store.url`.
#[cfg(feature = "sql")]
fn shared_db_activation(
    cfg: &Config,
) -> anyhow::Result<std::sync::Arc<dyn ferromq_ha::Activation>> {
    use ferromq_ha_dblock::{DbLock, DbLockConfig, Locker};
    let holder = if cfg.ha.lease_holder_id.is_empty() {
        cfg.holder()
    } else {
        cfg.ha.lease_holder_id.clone()
    };
    let lease = Duration::from_millis(cfg.ha.lease_ms);
    let dc = DbLockConfig {
        table_prefix: cfg.store.table_prefix.clone(),
        locker: if cfg.ha.locker == "row" {
            Locker::Row
        } else {
            Locker::Lease
        },
        lease,
        // Renew four times per lease; a statement may take at most as long, so a renewal that
        // hangs is given up with a quarter of the lease still left to step down in.
        renew_interval: lease / 4,
        statement_timeout: (lease / 4).min(Duration::from_secs(2)),
        lock_acquire_sleep_interval: Duration::from_millis(
            cfg.ha.lock_acquire_sleep_interval_ms.max(10),
        ),
        create_tables_on_startup: cfg.store.create_tables_on_startup,
        ..DbLockConfig::new(cfg.store.url.clone(), holder)
    };
    Ok(std::sync::Arc::new(
        DbLock::new(dc).context("shared-db locker configuration")?,
    ))
}

#[cfg(not(feature = "sql"))]
fn shared_db_activation(_: &Config) -> anyhow::Result<std::sync::Arc<dyn ferromq_ha::Activation>> {
    anyhow::bail!(
        "ha.mode = \"shared-db\" needs the `sql` cargo feature, which this build does not have"
    )
}

/// `ha.mode = "replicated"`: the local store is opened by the activation (a slave applies the
/// master's stream to it), so the opener is handed over rather than called here.
#[cfg(feature = "zk")]
fn replicated_activation(
    cfg: &Config,
    live: &ferromq_server::reload::LiveConfig,
) -> anyhow::Result<std::sync::Arc<dyn ferromq_ha::Activation>> {
    use ferromq_ha_zk::{ReplicatedConfig, ZkReplication};
    let h = &cfg.ha;
    let rc = ReplicatedConfig {
        group: cfg.broker.name.clone(),
        replicas: h.replicas,
        zk_address: h.zk_address.clone(),
        zk_path: h.zk_path.clone(),
        zk_session_timeout: Duration::from_millis(h.zk_session_timeout_ms),
        zk_password: (!h.zk_password.is_empty()).then(|| h.zk_password.clone()),
        bind: h.bind.clone(),
        hostname: (!h.hostname.is_empty()).then(|| h.hostname.clone()),
        weight: h.weight,
        security_token: h.security_token.clone(),
        sync: h.sync.parse()?,
        master_timeout: Duration::from_millis(h.master_timeout_ms),
        // The holder a SIGHUP reload of `ha.tls_*` swaps: the replication's acceptor and
        // connectors read it at each new connection.
        tls: live.replication_tls(),
    };
    if rc.tls.is_none() {
        tracing::info!(
            "the replication link is plain TCP (ha.tls_cert, ha.tls_key, ha.tls_ca unset): \
             every message crosses the network in clear (the security token does not: both \
             ends prove it by challenge-response)"
        );
    }
    let store_cfg = cfg.clone();
    let journal = cfg.store.backend == "journal";
    let opener: ferromq_ha_zk::StoreOpener = Arc::new(move || {
        if journal {
            // A staged full copy marked complete replaces the journal before it is opened
            // (an install cut short by a crash); an unfinished one is discarded.
            ferromq_ha_zk::staging::finish_journal_install(&ferromq_server::server::journal_dir(
                &store_cfg,
            ))?;
        }
        ferromq_server::server::open_store(&store_cfg, 0, None)
            .map_err(|e| ferromq_store::StoreError::Config(format!("{e:#}")))
    });
    if h.engine == "core" {
        let staging: Option<Arc<dyn ferromq_ha_zk::staging::CopyStaging>> = if journal {
            Some(Arc::new(ferromq_ha_zk::staging::JournalStaging::new(
                ferromq_server::server::journal_dir(cfg),
                ferromq_server::server::journal_config(cfg, 0, None),
            )))
        } else {
            tracing::warn!(
                backend = %cfg.store.backend,
                "full copies are staged only for the journal store: a member of this group that falls behind the master's in-memory tail stays out of the in-sync set"
            );
            None
        };
        return Ok(Arc::new(
            ferromq_ha_zk::core_activation::CoreReplication::new(rc, h.broker_id, opener, staging)?,
        ));
    }
    let mut replication = ZkReplication::new(rc, opener)?;
    if journal {
        // Full copies go to a journal beside the live one and are installed when consistent:
        // the live store, and the position this member reports, stay whole until then.
        replication =
            replication.with_staging(Arc::new(ferromq_ha_zk::staging::JournalStaging::new(
                ferromq_server::server::journal_dir(cfg),
                ferromq_server::server::journal_config(cfg, 0, None),
            )));
    }
    Ok(Arc::new(replication))
}

/// Aborts a task when dropped, on every way out of a scope.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Re-reads the configuration file on each SIGHUP and applies its reloadable parts
/// (`[security]`, the `[tls]` certificate, key and CA files, the replication link's `ha.tls_*`
/// files; see `ferromq_server::reload`), all or nothing.
/// Settings outside those parts that changed are named in the line (`restart_needed`): they
/// apply at the next start.
async fn reload_on_sighup(
    mut hup: tokio::signal::unix::Signal,
    path: Option<PathBuf>,
    live: Arc<ferromq_server::reload::LiveConfig>,
    running: Config,
) {
    while hup.recv().await.is_some() {
        let applied = Config::load(path.as_deref(), std::env::vars()).and_then(|cfg| {
            live.apply(&cfg)?;
            Ok(ferromq_server::reload::needs_restart(&running, &cfg))
        });
        match applied {
            Ok(pending) if pending.is_empty() => {
                tracing::info!("configuration reloaded (SIGHUP)")
            }
            Ok(pending) => tracing::info!(
                restart_needed = %pending.join(", "),
                "configuration reloaded (SIGHUP)"
            ),
            Err(e) => tracing::warn!(
                "configuration reload (SIGHUP) failed, keeping the running configuration: {e:#}"
            ),
        }
    }
}

async fn serve_loop(
    cfg: &Config,
    activation: std::sync::Arc<dyn ferromq_ha::Activation>,
    status: &tokio::sync::watch::Sender<ferromq_server::admin::Status>,
    members: Option<ferromq_server::cluster::Members>,
    live: Arc<ferromq_server::reload::LiveConfig>,
) -> anyhow::Result<()> {
    use ferromq_server::admin::{Live, LiveServer, ReplicationView};
    let set_role = |role: &str,
                    epoch: u64,
                    stomp: String,
                    bridges: ferromq_server::server::BridgeList,
                    live: Live,
                    replication: ReplicationView,
                    became: Option<ferromq_server::admin::BecameMaster>| {
        // One update: a reader of /api/v1/ha never sees the role "master" without the
        // mastership in the failover history.
        status.send_modify(|s| {
            s.role = role.to_string();
            s.epoch = epoch;
            s.stomp = stomp;
            s.bridges = bridges;
            s.live = live;
            s.replication = replication;
            if let Some(b) = became {
                s.failover.became_master(b);
            }
        })
    };
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    loop {
        tracing::info!(mode = activation.mode(), "competing for mastership");
        set_role(
            "slave",
            0,
            String::new(),
            Default::default(),
            Live(None),
            ReplicationView::default(),
            None,
        );
        // A slave opens no client port: it only waits here.
        let mut mastership = tokio::select! {
            m = activation.acquire() => m.context("acquiring mastership")?,
            _ = term.recv() => { tracing::info!("SIGTERM received while slave: exiting"); activation.shutdown(); return Ok(()); }
            _ = int.recv() => { tracing::info!("SIGINT received while slave: exiting"); activation.shutdown(); return Ok(()); }
        };
        let epoch = mastership.epoch;
        // A replicated mastership brings its own store (the local one, wrapped to replicate).
        let store = match mastership.take_store() {
            Some(store) => Ok(store),
            None => ferromq_server::server::open_store(cfg, epoch, mastership.fence.clone()),
        };
        let started = match store {
            Ok(store) => {
                Server::start_reloadable(cfg.clone(), store, members.clone(), live.clone()).await
            }
            Err(e) => Err(e),
        };
        let server = match started {
            Ok(s) => s,
            Err(e) => {
                mastership.release();
                return Err(e);
            }
        };
        // Taken once the connectors are up: the takeover counts until clients can connect.
        let became = ferromq_server::admin::BecameMaster {
            at: std::time::SystemTime::now(),
            epoch,
            reason: match mastership.reason() {
                "" => format!("acquired mastership ({})", activation.mode()),
                r => r.to_string(),
            },
            takeover: mastership.takeover_since().map(|t| t.elapsed()),
        };
        if activation.mode() != "none" {
            tracing::info!(
                epoch,
                reason = %became.reason,
                takeover_ms = became.takeover.map(|d| d.as_millis() as u64),
                "Master started: stomp://{}",
                server.stomp_addr
            );
        }
        set_role(
            "master",
            epoch,
            format!("stomp://{}", server.stomp_addr),
            server.bridges.clone(),
            Live(Some(LiveServer {
                broker: server.broker.clone(),
                connections: server.connections.clone(),
            })),
            ReplicationView(mastership.replication()),
            Some(became),
        );
        // A suspended master confirms nothing and must deliver nothing either: another broker
        // may be elected meanwhile and deliver the same messages. Each suspension goes into the
        // failover history too (which ignores a value that is no transition).
        let gate = {
            let mut serving = mastership.serving();
            let broker = server.broker.clone();
            let status = status.clone();
            tokio::spawn(async move {
                loop {
                    let now_serving = *serving.borrow_and_update();
                    status.send_if_modified(|s| {
                        s.failover
                            .serving(now_serving, std::time::SystemTime::now())
                    });
                    if broker.dispatch_paused() == now_serving {
                        if now_serving {
                            tracing::info!("master serving again: dispatch to consumers resumed");
                        } else {
                            tracing::warn!("master suspended: dispatch to consumers paused");
                        }
                        broker.set_dispatch_paused(!now_serving);
                    }
                    if serving.changed().await.is_err() {
                        return;
                    }
                }
            })
        };
        let _gate = AbortOnDrop(gate);
        tokio::select! {
            reason = mastership.lost() => {
                tracing::error!(%reason, epoch, "lost mastership: stopping every connector (fail-stop)");
                status.send_modify(|s| {
                    s.failover.lost_mastership(ferromq_server::admin::LostMastership {
                        at: std::time::SystemTime::now(),
                        epoch,
                        reason: reason.clone(),
                    })
                });
                set_role(
                    "deposed",
                    0,
                    String::new(),
                    Default::default(),
                    Live(None),
                    ReplicationView::default(),
                    None,
                );
                if let Err(e) = server.shutdown().await {
                    tracing::warn!(error = %format!("{e:#}"), "store did not close cleanly after losing mastership");
                }
                drop(mastership);
                if !cfg.ha.restart_allowed {
                    anyhow::bail!("lost mastership ({reason}) and ha.restart_allowed is false");
                }
                tracing::info!("restart_allowed: waiting to become master again");
            }
            _ = term.recv() => {
                tracing::info!("SIGTERM received: shutting down");
                end_suspension(status);
                server.shutdown().await?;
                // Released after the store is closed, so the slave that takes over finds a
                // checkpointed journal.
                mastership.release();
                return Ok(());
            }
            _ = int.recv() => {
                tracing::info!("SIGINT received: shutting down");
                end_suspension(status);
                server.shutdown().await?;
                mastership.release();
                return Ok(());
            }
        }
    }
}

/// A master shutting down is no longer suspended: ends the suspension going on, if any, in the
/// failover history, so that the next run does not find it open.
fn end_suspension(status: &tokio::sync::watch::Sender<ferromq_server::admin::Status>) {
    status.send_if_modified(|s| s.failover.end_suspension(std::time::SystemTime::now()));
}
