//! Running Java programs built against ActiveMQ's own JMS client (Debian `libactivemq-java`,
//! installed with `default-jdk-headless` by `scripts/services.sh`): the real client that the
//! OpenWire connector must serve unchanged.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The jars of the ActiveMQ 5.17 JMS client, as Debian installs them.
const JARS: [&str; 5] = [
    "activemq-client.jar",
    "geronimo-jms_1.1_spec.jar",
    "hawtbuf.jar",
    "slf4j-api.jar",
    "geronimo-j2ee-management-1.1-spec.jar",
];

/// The classpath of the JMS client; panics, naming the packages, when it is not installed.
pub fn client_classpath() -> String {
    let mut parts = Vec::new();
    for j in JARS {
        let p = Path::new("/usr/share/java").join(j);
        assert!(
            p.exists(),
            "{} is missing: install the Debian packages libactivemq-java and default-jdk-headless (scripts/services.sh does)",
            p.display()
        );
        parts.push(p.display().to_string());
    }
    parts.join(":")
}

/// The repository root (tests run in `crates/server`). From CARGO_MANIFEST_DIR as cargo sets it
/// when the test runs: the compile-time value names whichever checkout built the binary, which
/// may be another clone sharing the target dir.
pub fn repo_root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf())
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Compiles the `.java` files of `src` (relative to the repository root) into a fresh
/// directory named `name` under the test's target tmp dir; returns the classpath to run them.
pub fn compile(src: &str, name: &str) -> String {
    let cp = client_classpath();
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("jms-{name}"));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let dir = repo_root().join(src);
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "java"))
        .collect();
    assert!(!files.is_empty(), "no .java files in {}", dir.display());
    let status = Command::new("javac")
        .arg("-nowarn")
        .arg("-d")
        .arg(&out)
        .arg("-cp")
        .arg(&cp)
        .args(&files)
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .expect("javac not found: install default-jdk-headless (scripts/services.sh does)");
    assert!(status.success(), "javac failed for {}", dir.display());
    format!("{cp}:{}", out.display())
}

/// A `java` command with `classpath`, quiet about the missing SLF4J binding.
pub fn java(classpath: &str, main: &str) -> Command {
    let mut c = Command::new("java");
    c.arg("-cp").arg(classpath).arg(main);
    c
}
