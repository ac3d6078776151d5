//! Networks of brokers (issue 14), as an operator meets them through `ferromq serve`.
//!
//! Forwarding is not implemented yet; what exists is the `[[network_connectors]]` config. These
//! tests pin that a real `ferromq serve` refuses a network connector with a clear error instead
//! of starting and silently not forwarding, and names unsupported ActiveMQ options.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_ferromq");

/// Runs `ferromq serve` with `config`; it must exit (an error), returning its stderr.
fn serve_fails(config: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("net.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(!out.status.success(), "serve accepted:\n{config}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const BASE: &str =
    "[broker]\nname = \"net-test\"\n[transports]\nstomp = \"127.0.0.1:0\"\n[store]\nbackend = \"memory\"\n";

#[test]
fn a_network_connector_is_refused_until_forwarding_exists() {
    let err = serve_fails(&format!(
        "{BASE}[[network_connectors]]\nname = \"to-b\"\nuri = \"static:(tcp://127.0.0.1:1)\"\n"
    ));
    assert!(
        err.contains("to-b") && err.contains("not implemented"),
        "{err}"
    );
}

#[test]
fn unsupported_activemq_options_are_named() {
    let err = serve_fails(&format!(
        "{BASE}[[network_connectors]]\nuri = \"static:(tcp://127.0.0.1:1)\"\nbridge_temp_destinations = false\n"
    ));
    assert!(
        err.contains("bridge_temp_destinations") && err.contains("not supported"),
        "{err}"
    );
}

#[test]
fn a_bad_uri_is_named() {
    let err = serve_fails(&format!(
        "{BASE}[[network_connectors]]\nuri = \"static:(tcp://127.0.0.1)\"\n"
    ));
    assert!(err.contains("tcp://127.0.0.1"), "{err}");
}
