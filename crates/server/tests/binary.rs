//! The `ferromq` binary as an operator uses it: `serve` with a config file, the CLI tools, and
//! graceful shutdown on SIGTERM.
// Child processes are reaped by their owners (Drop, or the end of the test); a panic on the
// way ends the test process, which takes its children's zombies with it.
#![allow(clippy::zombie_processes)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ferromq");

/// Starts `ferromq serve` on an ephemeral port; returns the child and the STOMP address read
/// from its start-up log line.
fn serve(config: &str) -> (Child, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ferromq.toml");
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(BIN)
        .args(["--log", "info", "serve", "--config"])
        .arg(&path)
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("ferromq did not log its listen address");
        if let Some(rest) = line.split("stomp://").nth(1) {
            let addr: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
            // Keep draining stderr so the child never blocks on a full pipe.
            std::thread::spawn(move || while rx.recv().is_ok() {});
            return (child, addr, dir);
        }
    }
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().unwrap()
}

#[test]
fn serve_produce_consume_and_sigterm_shutdown() {
    let (mut child, addr, _dir) = serve(
        "[broker]\nname = \"cli-test\"\n[transports]\nstomp = \"127.0.0.1:0\"\n[store]\nbackend = \"memory\"\n",
    );
    let out = run(&[
        "produce",
        "--url",
        &addr,
        "-d",
        "/queue/cli",
        "-n",
        "3",
        "--persistent",
        "--receipt",
        "-m",
        "hello {n}",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&[
        "consume",
        "--url",
        &addr,
        "-d",
        "/queue/cli",
        "-n",
        "3",
        "--ack",
        "client",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello 1\nhello 2\nhello 3\n"
    );

    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "ferromq did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        status.success(),
        "graceful shutdown must exit 0, got {status}"
    );
}

#[test]
fn unknown_config_key_is_a_startup_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[broker]\nnmae = \"x\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nmae"), "{err}");
}

#[test]
fn unavailable_store_backend_is_a_startup_error() {
    let out = Command::new(BIN)
        .args(["serve"])
        .env("FERROMQ__STORE__BACKEND", "cassandra")
        .env("FERROMQ__TRANSPORTS__STOMP", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cassandra") && err.contains("\"lsm\"") && err.contains("\"sql\""),
        "{err}"
    );
}
