//! Histograms, percentiles and the shape of both reports.

use clap::Parser;
use ferromq_bench::cli::{Cli, Command};
use ferromq_bench::report::{self, FsyncReport, RunConditions, RunReport, Throughput};
use ferromq_bench::stats::{LatencyHistogram, LATENCY_US_MAX};

fn hist_1_to_1000_us() -> LatencyHistogram {
    let mut h = LatencyHistogram::new();
    for us in 1..=1000u64 {
        h.record_ns(us * 1000);
    }
    h
}

#[test]
fn percentiles_of_a_uniform_sample_are_where_they_should_be() {
    let s = hist_1_to_1000_us().summary().unwrap();
    assert_eq!(s.count, 1000);
    assert_eq!(s.min_us, 1);
    assert_eq!(s.p50_us, 500);
    assert_eq!(s.p90_us, 900);
    assert_eq!(s.p99_us, 990);
    assert_eq!(s.p99_9_us, 999);
    assert_eq!(s.max_us, 1000);
    assert!((s.mean_us - 500.5).abs() < 1.0, "{}", s.mean_us);
}

#[test]
fn an_empty_histogram_has_no_summary() {
    assert!(LatencyHistogram::new().summary().is_none());
    assert!(LatencyHistogram::new().is_empty());
}

#[test]
fn merging_adds_samples_and_extremes_are_clamped_not_lost() {
    let mut a = hist_1_to_1000_us();
    let mut b = LatencyHistogram::new();
    b.record_ns(10); // sub-microsecond counts as 1 µs
    b.record_ns(u64::MAX); // beyond an hour is clamped
    a.merge(&b);
    let s = a.summary().unwrap();
    assert_eq!(s.count, 1002);
    assert_eq!(s.min_us, 1);
    assert!(s.max_us >= LATENCY_US_MAX && s.max_us <= LATENCY_US_MAX + LATENCY_US_MAX / 500);
}

#[test]
fn throughput_is_messages_over_seconds_and_bytes_in_megabytes() {
    let t = Throughput::new(20_000, 1000, 2.0);
    assert_eq!(t.msgs_per_s, 10_000.0);
    assert_eq!(t.mb_per_s, 10.0);
    assert_eq!(Throughput::new(5, 1000, 0.0).msgs_per_s, 0.0);
}

fn sample_run_report(rate: Option<&str>) -> RunReport {
    let mut argv = vec!["ferromq-bench", "run", "--receipt"];
    if let Some(r) = rate {
        argv.extend_from_slice(&["--rate", r]);
    }
    let Command::Run(a) = Cli::try_parse_from(argv).unwrap().command else {
        panic!("not run")
    };
    let cfg = a.validate().unwrap();
    let h = hist_1_to_1000_us();
    RunReport {
        conditions: RunConditions::from_config(&cfg, "ferromq/0".into(), "1.2".into()),
        sent: Throughput::new(100, 1024, 10.0),
        delivered: Throughput::new(100, 1024, 10.0),
        send_latency: h.summary(),
        end_to_end_latency: None,
        sent_total: 120,
        delivered_total: 120,
        expected_deliveries: 120,
        undelivered_after_drain: 0,
        unsent_behind_schedule: 0,
        stale_ignored: 3,
    }
}

#[test]
fn run_json_has_the_fields_scripts_read() {
    let v: serde_json::Value =
        serde_json::from_str(&report::to_json(&sample_run_report(Some("1000")))).unwrap();
    for key in [
        "conditions",
        "sent",
        "delivered",
        "send_latency",
        "end_to_end_latency",
        "sent_total",
        "delivered_total",
        "expected_deliveries",
        "undelivered_after_drain",
        "unsent_behind_schedule",
        "stale_ignored",
    ] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    assert_eq!(v["sent"]["msgs_per_s"], 10.0);
    assert!(v["sent"]["mb_per_s"].is_number());
    for p in ["count", "p50_us", "p90_us", "p99_us", "p99_9_us", "max_us"] {
        assert!(v["send_latency"][p].is_u64(), "send_latency.{p}");
    }
    assert_eq!(v["send_latency"]["p99_us"], 990);
    assert!(v["end_to_end_latency"].is_null());
    assert_eq!(v["conditions"]["rate_per_s"], 1000.0);
    assert_eq!(v["conditions"]["ack"], "auto");
    assert!(v["conditions"]["latency_method"]
        .as_str()
        .unwrap()
        .contains("coordinated omission"));
    assert!(v["conditions"].get("passcode").is_none());
    // Without --consume-url the consumers use the producers' broker, and the report says so.
    assert_eq!(v["conditions"]["consume_url"], v["conditions"]["url"]);
}

#[test]
fn reports_name_the_consumers_broker_when_it_differs() {
    let Command::Run(a) = Cli::try_parse_from([
        "ferromq-bench",
        "run",
        "--url",
        "127.0.0.1:1",
        "--consume-url",
        "127.0.0.1:2",
    ])
    .unwrap()
    .command
    else {
        panic!("not run")
    };
    let mut r = sample_run_report(None);
    r.conditions = RunConditions::from_config(&a.validate().unwrap(), "s".into(), "1.2".into());
    let v: serde_json::Value = serde_json::from_str(&report::to_json(&r)).unwrap();
    assert_eq!(v["conditions"]["url"], "127.0.0.1:1");
    assert_eq!(v["conditions"]["consume_url"], "127.0.0.1:2");
    let text = report::run_text(&r);
    assert!(text.contains("consumers on 127.0.0.1:2"), "{text}");
    let same = report::run_text(&sample_run_report(None));
    assert!(!same.contains("consumers on"), "{same}");
}

#[test]
fn text_report_says_how_latency_was_measured() {
    let open = report::run_text(&sample_run_report(Some("1000")));
    assert!(open.contains("scheduled send time"), "{open}");
    assert!(open.contains("coordinated omission"), "{open}");
    assert!(open.contains("p99.9"), "{open}");
    let closed = report::run_text(&sample_run_report(None));
    assert!(closed.contains("closed loop"), "{closed}");
    assert!(closed.contains("nothing delivered"), "{closed}");
}

#[test]
fn fsync_json_has_rates_and_latencies() {
    let r = FsyncReport {
        threads: 2,
        size_bytes: 1024,
        duration_s: 1.0,
        dir: "/tmp".into(),
        records: 10,
        syncs: 5,
        records_per_s: 10.0,
        syncs_per_s: 5.0,
        records_per_sync: 2.0,
        latency: hist_1_to_1000_us().summary(),
        sync_latency: None,
    };
    let v: serde_json::Value = serde_json::from_str(&report::to_json(&r)).unwrap();
    assert_eq!(v["records_per_sync"], 2.0);
    assert_eq!(v["latency"]["p50_us"], 500);
    assert!(report::fsync_text(&r).contains("records/sync"));
}
