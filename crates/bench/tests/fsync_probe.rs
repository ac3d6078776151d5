//! The fsync probe on a temporary directory.

use std::time::Duration;

use ferromq_bench::fsync_probe::probe;

#[test]
fn probe_makes_records_durable_with_at_least_one_record_per_sync() {
    let dir = tempfile::tempdir().unwrap();
    let r = probe(4, 512, Duration::from_secs(1), dir.path()).unwrap();
    assert!(r.records > 0, "{r:?}");
    assert!(r.syncs > 0, "{r:?}");
    assert!(r.records_per_sync >= 1.0, "{r:?}");
    assert_eq!(r.latency.as_ref().unwrap().count, r.records);
    assert_eq!(r.sync_latency.as_ref().unwrap().count, r.syncs);
    // The temporary file is gone afterwards.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn a_single_thread_syncs_once_per_record() {
    let dir = tempfile::tempdir().unwrap();
    let r = probe(1, 64, Duration::from_millis(300), dir.path()).unwrap();
    assert!(r.records > 0);
    assert_eq!(r.records, r.syncs);
}

#[test]
fn a_missing_directory_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    assert!(probe(1, 64, Duration::from_millis(10), &missing).is_err());
}
