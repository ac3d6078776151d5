//! The `ferromq` binary as an operator uses it: `serve` with a config file, the CLI tools, and
//! graceful shutdown on SIGTERM.
// Child processes are reaped by their owners (Drop, or the end of the test); a panic on the
// way ends the test process, which takes its children's zombies with it.
#![allow(clippy::zombie_processes)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ferromq");

const MEMORY_CONFIG: &str =
    "[broker]\nname = \"cli-test\"\n[transports]\nstomp = \"127.0.0.1:0\"\n[store]\nbackend = \"memory\"\n";

/// Starts `ferromq serve` on an ephemeral port; returns the child and the STOMP address read
/// from its start-up log line.
fn serve(config: &str) -> (Child, String, tempfile::TempDir) {
    let (child, addr, dir, _) = serve_env(config, &[("NO_COLOR", Some("1"))]);
    (child, addr, dir)
}

/// [`serve`] with environment variables set (`Some`) or removed (`None`); also returns the log
/// lines up to and including the one naming the STOMP address.
fn serve_env(
    config: &str,
    env: &[(&str, Option<&str>)],
) -> (Child, String, tempfile::TempDir, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ferromq.toml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["--log", "info", "serve", "--config"]).arg(&path);
    for (k, v) in env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let mut child = cmd
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
    let mut lines = Vec::new();
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("ferromq did not log its listen address");
        lines.push(line.clone());
        if let Some(rest) = line.split("stomp://").nth(1) {
            // Up to the first character that cannot be in host:port (a colour code, a space).
            let addr: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']'))
                .collect();
            // Keep draining stderr so the child never blocks on a full pipe.
            std::thread::spawn(move || while rx.recv().is_ok() {});
            return (child, addr, dir, lines);
        }
    }
}

/// [`serve`], keeping every log line (the start-up ones and those after) in a shared list.
fn serve_logged(
    config: &str,
) -> (
    Child,
    String,
    tempfile::TempDir,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
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
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    let addr = wait_for_line(&log, "stomp://")
        .split("stomp://")
        .nth(1)
        .unwrap()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':'))
        .collect();
    (child, addr, dir, log)
}

/// The first log line containing `needle`, waiting for it (bounded).
fn wait_for_line(log: &std::sync::Mutex<Vec<String>>, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(l) = log.lock().unwrap().iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {needle:?} within 20 s: {:?}",
            log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A producer blocked by producer flow control (a full queue, nobody consuming, no
/// `sendFailIfNoSpaceAfterTimeout`) must not hold a graceful shutdown up: SIGTERM ends its
/// send with an ERROR and the broker exits 0. It used to wait for space forever.
#[test]
fn sigterm_ends_a_send_blocked_by_producer_flow_control() {
    use std::io::{Read, Write};
    let config = "[broker]\nname = \"fc-test\"\n[transports]\nstomp = \"127.0.0.1:0\"\n[store]\nbackend = \"memory\"\n[policy]\nmemory_limit_bytes = 16384\n";
    let (mut child, addr, _dir, log) = serve_logged(config);
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"CONNECT\naccept-version:1.2\nhost:localhost\n\n\0")
        .unwrap();
    let mut connected = [0u8; 9];
    s.read_exact(&mut connected).unwrap();
    assert_eq!(&connected, b"CONNECTED");
    // 64 KiB of non-persistent messages for a queue that takes 16 KiB: the broker stops
    // reading this connection once the queue is full (all of it fits in the socket buffers).
    let body = "x".repeat(1024);
    for i in 0..64 {
        let frame =
            format!("SEND\ndestination:/queue/fc\nreceipt:r{i}\ncontent-length:1024\n\n{body}\0");
        s.write_all(frame.as_bytes()).unwrap();
    }
    // The positive event: the broker says a send is blocked.
    wait_for_line(&log, "producer flow control is blocking sends");
    let status = sigterm_and_wait(&mut child, " with a send blocked by flow control");
    assert!(
        status.success(),
        "graceful shutdown must exit 0, got {status}"
    );
    // The blocked send was answered: an ERROR saying why, then the end of the connection.
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        rest.contains("ERROR") && rest.contains("broker is stopping"),
        "the blocked producer got no ERROR: {rest:?}"
    );
}

/// Sends SIGTERM and waits (at most 20 s) for the broker to exit; `while_` says what was
/// going on, for the failure message.
fn sigterm_and_wait(child: &mut Child, while_: &str) -> std::process::ExitStatus {
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "ferromq did not exit within 20 s of SIGTERM{while_}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills a broker started by [`serve`] and reaps it.
fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().unwrap()
}

#[test]
fn serve_produce_consume_and_sigterm_shutdown() {
    let (mut child, addr, _dir) = serve(MEMORY_CONFIG);
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

    let status = sigterm_and_wait(&mut child, "");
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

#[test]
fn logs_written_to_a_pipe_carry_no_colour_codes() {
    // Without NO_COLOR: a pipe alone must turn colour off.
    let (child, _addr, _dir, lines) = serve_env(MEMORY_CONFIG, &[("NO_COLOR", None)]);
    stop(child);
    let log = lines.join("\n");
    assert!(lines.len() > 1, "{log}");
    assert!(
        !log.contains('\x1b'),
        "colour codes in a log written to a pipe: {log:?}"
    );
}

/// Runs a client command against `addr` with the environment of a user who set no log level.
fn client(args: &[&str], rust_log: Option<&str>) -> (String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_remove("NO_COLOR");
    match rust_log {
        Some(l) => cmd.env("RUST_LOG", l),
        None => cmd.env_remove("RUST_LOG"),
    };
    let out = cmd.output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{args:?}: {stderr}");
    (stdout, stderr)
}

#[test]
fn client_commands_print_their_results_without_info_logs_unless_asked() {
    let (child, addr, _dir) = serve(MEMORY_CONFIG);
    let produce = [
        "produce",
        "--url",
        &addr,
        "-d",
        "/queue/quiet",
        "-n",
        "2",
        "--receipt",
    ];
    let (stdout, stderr) = client(&produce, None);
    assert!(stderr.contains("sent 2 message(s)"), "{stderr}");
    // Piped stderr: no progress line (it is drawn with \r on a terminal only).
    assert!(
        !stderr.contains('\r') && !stderr.contains("sent 1/2"),
        "{stderr:?}"
    );
    assert!(
        !stdout.contains("INFO") && !stderr.contains("INFO"),
        "produce printed INFO log lines: {stdout}{stderr}"
    );
    let consume = ["consume", "--url", &addr, "-d", "/queue/quiet", "-n", "2"];
    let (stdout, stderr) = client(&consume, None);
    assert_eq!(stdout, "message 1\nmessage 2\n");
    assert!(!stderr.contains('\r'), "{stderr:?}");
    assert!(
        !stderr.contains("INFO"),
        "consume printed INFO log lines: {stderr}"
    );
    // RUST_LOG still wins.
    let (_, stderr) = client(&produce, Some("info"));
    assert!(
        stderr.contains("INFO"),
        "RUST_LOG=info was ignored: {stderr}"
    );
    stop(child);
}

/// On a terminal `produce` and `consume -n` draw a progress line on stderr (`\r`-redrawn, ended
/// with the final count): `script` (util-linux) runs them on a pseudo-terminal. Piped, they
/// draw nothing (the test above).
#[test]
fn produce_and_consume_draw_progress_on_a_terminal() {
    let (child, addr, _dir) = serve(MEMORY_CONFIG);
    let on_tty = |cmd: String| {
        let out = Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .env_remove("RUST_LOG")
            .output()
            .expect("script(1) from util-linux");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{cmd}: {text}");
        text
    };
    let text = on_tty(format!(
        "{BIN} produce --url {addr} -d /queue/tty -n 3 --receipt"
    ));
    assert!(text.contains("\rsent 3/3 ["), "{text:?}");
    assert!(text.contains("100%"), "{text:?}");
    assert!(text.contains("sent 3 message(s)"), "{text:?}");
    // Bodies printed to the same terminal would be torn by the line: --quiet keeps stdout quiet.
    let text = on_tty(format!(
        "{BIN} consume --url {addr} -d /queue/tty -n 3 --quiet"
    ));
    assert!(text.contains("\rreceived 3/3 ["), "{text:?}");
    assert!(text.contains("received 3 message(s)"), "{text:?}");
    stop(child);
}

#[test]
fn produce_help_describes_the_message_placeholder_on_one_line() {
    let out = Command::new(BIN)
        .args(["produce", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    let line = help
        .lines()
        .find(|l| l.contains("--message"))
        .unwrap_or_else(|| panic!("no --message in {help}"));
    assert!(
        line.contains("-m, --message <TEXT>")
            && line.contains("message number")
            && line.contains("[default: \"message {n}\"]"),
        "the --message help is broken: {help}"
    );
    assert!(
        !help.lines().any(|l| l.trim() == "`"),
        "a placeholder became a line break: {help}"
    );
}
