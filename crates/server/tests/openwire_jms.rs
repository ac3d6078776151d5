//! The JMS suite (`tests/jms`, ActiveMQ's own client, every scenario of issue 15 items 2–3)
//! against a ferromq broker serving OpenWire and STOMP. The same suite passes against
//! ActiveMQ 5.17 (`tests/jms/README.md`), so a failure here is ferromq's.

mod jms_support;
mod support;

use std::process::Command;
use std::time::Duration;

use support::{free_port, Proc};

fn broker(dir: &std::path::Path) -> (Proc, u16, u16) {
    let (stomp, ow) = (free_port(), free_port());
    let cfg = format!(
        "[broker]\nname = \"jms-suite\"\ndata_dir = \"{}\"\n[transports]\nstomp = \"127.0.0.1:{stomp}\"\nopenwire = \"tcp://127.0.0.1:{ow}\"\n[store]\nbackend = \"journal\"\n",
        dir.join("data").display()
    );
    let p = Proc::start("jms-suite", dir, stomp, &cfg);
    p.wait_accepting(Duration::from_secs(30))
        .expect("the broker accepts");
    (p, stomp, ow)
}

#[test]
fn the_activemq_jms_client_passes_the_whole_suite() {
    jms_support::client_classpath();
    let dir = tempfile::tempdir().unwrap();
    let (_broker, stomp, ow) = broker(dir.path());
    let build = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("jms-suite");
    let out = Command::new("bash")
        .arg(jms_support::repo_root().join("scripts/jms-test.sh"))
        .args(["--url", &format!("tcp://127.0.0.1:{ow}")])
        .args(["--stomp", &format!("127.0.0.1:{stomp}")])
        .env("FERROMQ_JMS_BUILD", &build)
        .output()
        .expect("scripts/jms-test.sh runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    let passed = stdout.lines().filter(|l| l.starts_with("PASS ")).count();
    let listed = Command::new("bash")
        .arg(jms_support::repo_root().join("scripts/jms-test.sh"))
        .arg("--list")
        .env("FERROMQ_JMS_BUILD", &build)
        .output()
        .unwrap();
    let scenarios = String::from_utf8_lossy(&listed.stdout).lines().count();
    assert!(scenarios >= 19, "the suite lists {scenarios} scenarios");
    assert!(out.status.success(), "JMS suite failed: {}", out.status);
    assert_eq!(passed, scenarios, "every scenario passes (none skipped)");
}
