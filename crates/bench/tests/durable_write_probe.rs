//! The durable-write probe for a handful of records, on a directory of the target dir (a real
//! disk, not tmpfs, on the machines this project builds on). Counts, never timings.

use std::path::Path;
use std::time::Duration;

use ferromq_bench::disk_info;
use ferromq_bench::durable_write_probe::{probe, DurableWriteSpec, WriteMode};
use ferromq_bench::BenchError;

fn spec(mode: WriteMode, in_flight: u32, size_bytes: usize, dir: &Path) -> DurableWriteSpec {
    DurableWriteSpec {
        mode,
        in_flight,
        size_bytes,
        block_bytes: 512,
        // Long enough never to be what stops the run: the record count is.
        duration: Duration::from_secs(120),
        records_per_thread_max: Some(5),
        dir: dir.to_path_buf(),
        preallocate: false,
        file_bytes: 1 << 20,
    }
}

fn disk_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

#[test]
fn fdatasync_per_thread_writes_every_record_of_every_thread_and_removes_its_file() {
    let dir = disk_dir();
    for preallocate in [false, true] {
        let r = probe(&DurableWriteSpec {
            preallocate,
            ..spec(WriteMode::Fdatasync, 4, 1024, dir.path())
        })
        .unwrap();
        assert_eq!(r.writes, 4 * 5, "{r:?}");
        assert!(r.writes_per_s > 0.0 && r.payload_mb_per_s > 0.0, "{r:?}");
        assert_eq!(r.write_bytes, 1024);
        assert_eq!(r.preallocated, preallocate);
        assert_eq!(r.latency.as_ref().unwrap().count, r.writes);
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn direct_dsync_pads_records_to_the_block_and_counts_every_write() {
    let dir = disk_dir();
    let r = match probe(&spec(WriteMode::DirectDsync, 4, 1000, dir.path())) {
        Ok(r) => r,
        Err(BenchError::Unsupported(why)) => {
            // Not this project's machines (ext4); the error path has its own test below.
            eprintln!("skipped: {why}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    assert_eq!(r.writes, 4 * 5, "{r:?}");
    assert_eq!(r.write_bytes, 1024, "1000 B padded to 2 blocks of 512");
    assert!(r.preallocated);
    assert!(r.written_mb_per_s > r.payload_mb_per_s, "{r:?}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn direct_dsync_on_tmpfs_is_a_clear_error() {
    let shm = Path::new("/dev/shm");
    if disk_info::filesystem_type(shm).as_deref() != Some("tmpfs") {
        eprintln!("skipped: /dev/shm is not tmpfs here");
        return;
    }
    let dir = tempfile::tempdir_in(shm).unwrap();
    let err = probe(&spec(WriteMode::DirectDsync, 1, 1024, dir.path())).unwrap_err();
    assert!(
        matches!(&err, BenchError::Unsupported(m) if m.contains("tmpfs") && m.contains("O_DIRECT")),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn a_file_too_small_for_the_writers_in_flight_is_refused() {
    let dir = disk_dir();
    let err = probe(&DurableWriteSpec {
        file_bytes: 4096,
        ..spec(WriteMode::DirectDsync, 16, 1024, dir.path())
    })
    .unwrap_err();
    assert!(matches!(err, BenchError::Config(_)), "{err}");
}
