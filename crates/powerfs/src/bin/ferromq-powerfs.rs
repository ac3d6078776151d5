//! `ferromq-powerfs MOUNT_POINT CONTROL_SOCKET`: mounts the power-loss filesystem and takes
//! commands, one a line, on a Unix socket (e.g. `socat - UNIX-CONNECT:CONTROL_SOCKET`):
//!
//! - `usage`: files, bytes, bytes durable, unsynced pages and directories;
//! - `cut all` | `cut random SEED` | `cut torn SEED`: cut the power (kill -9 every process
//!   using the filesystem first); answers with what was lost;
//! - `quit`: unmount (the content is gone) and exit.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use ferromq_powerfs::{LossMode, PowerFs};

fn parse_cut(words: &[&str]) -> Result<LossMode, String> {
    let seed = |w: Option<&&str>| -> Result<u64, String> {
        w.ok_or("a seed is needed")?
            .parse::<u64>()
            .map_err(|e| format!("seed: {e}"))
    };
    match words.first() {
        Some(&"all") => Ok(LossMode::DropAll),
        Some(&"random") => Ok(LossMode::RandomPages {
            seed: seed(words.get(1))?,
        }),
        Some(&"torn") => Ok(LossMode::TornLastPage {
            seed: seed(words.get(1))?,
        }),
        _ => Err("cut all | cut random SEED | cut torn SEED".into()),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mount_point, socket] = args.as_slice() else {
        eprintln!("usage: ferromq-powerfs MOUNT_POINT CONTROL_SOCKET");
        std::process::exit(2);
    };
    let socket = PathBuf::from(socket);
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket)?;
    let mut fs = PowerFs::mount(&PathBuf::from(mount_point))?;
    eprintln!("mounted on {mount_point}; commands on {}", socket.display());
    for conn in listener.incoming() {
        let conn = conn?;
        let mut out = conn.try_clone()?;
        for line in BufReader::new(conn).lines() {
            let line = line?;
            let words: Vec<&str> = line.split_whitespace().collect();
            let answer = match words.first() {
                Some(&"usage") => format!("{:?}", fs.usage()),
                Some(&"cut") => match parse_cut(&words[1..]) {
                    Ok(mode) => match fs.cut_power(mode) {
                        Ok(r) => format!("{r:?}"),
                        Err(e) => format!("error: {e}"),
                    },
                    Err(e) => format!("error: {e}"),
                },
                Some(&"quit") => {
                    writeln!(out, "bye")?;
                    drop(fs);
                    let _ = std::fs::remove_file(&socket);
                    return Ok(());
                }
                _ => "error: usage | cut all | cut random SEED | cut torn SEED | quit".into(),
            };
            writeln!(out, "{answer}")?;
        }
    }
    Ok(())
}
