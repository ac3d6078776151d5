//! `ferromq-bench`: STOMP load tool and raw fsync probe. See the crate README.

use std::io::Write;

use anyhow::Context;
use clap::Parser;
use ferromq_bench::cli::{Cli, Command};
use ferromq_bench::{durable_write_probe, fsync_probe, report, run};

// Same allocator as the broker: a load tool spending its CPU in malloc/free measures itself.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            let cfg = args.validate()?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("start the tokio runtime")?;
            let json = args.json;
            let r = runtime.block_on(run::run(cfg, !args.quiet))?;
            emit(if json {
                report::to_json(&r) + "\n"
            } else {
                report::run_text(&r)
            })?;
        }
        Command::FsyncProbe(args) => {
            let duration = args.validate()?;
            if let Some(spec) = args.durable_write_spec(duration) {
                let r = durable_write_probe::probe(&spec)?;
                emit(if args.json {
                    report::to_json(&r) + "\n"
                } else {
                    report::durable_write_text(&r)
                })?;
            } else {
                let r = fsync_probe::probe(args.threads, args.size, duration, &args.dir)?;
                emit(if args.json {
                    report::to_json(&r) + "\n"
                } else {
                    report::fsync_text(&r)
                })?;
            }
        }
    }
    Ok(())
}

/// Writes the report to stdout; a closed pipe (`| head`) is not an error.
fn emit(text: String) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("write the report to stdout"),
    }
}
