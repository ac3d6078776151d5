//! Argument parsing and validation: defaults, destination naming, bounds.

use clap::Parser;
use ferromq_bench::cli::{AckArg, Cli, Command, RunArgs};
use ferromq_bench::BenchError;

fn run_args(args: &[&str]) -> RunArgs {
    let mut argv = vec!["ferromq-bench", "run"];
    argv.extend_from_slice(args);
    match Cli::try_parse_from(argv).unwrap().command {
        Command::Run(a) => *a,
        other => panic!("parsed as {other:?}"),
    }
}

#[test]
fn run_defaults_are_one_to_one_closed_loop_queue_for_ten_seconds_after_two() {
    let cfg = run_args(&[]).validate().unwrap();
    let a = &cfg.args;
    assert_eq!((a.producers, a.consumers, a.destinations), (1, 1, 1));
    assert_eq!(a.size, 1024);
    assert_eq!(a.window, 1);
    assert_eq!(a.ack, AckArg::Auto);
    assert!(a.rate.is_none() && !a.persistent && !a.receipt && !a.json);
    assert_eq!(cfg.destination_names, vec!["/queue/bench".to_owned()]);
    assert!(!cfg.fan_out);
    assert_eq!(cfg.warmup.as_secs(), 2);
    assert_eq!(cfg.duration.as_secs(), 10);
    assert_eq!(a.host, "localhost");
}

#[test]
fn every_option_is_parsed() {
    let a = run_args(&[
        "--url",
        "tcp://h:1",
        "-d",
        "/topic/x",
        "--destinations",
        "3",
        "-p",
        "16",
        "-c",
        "10",
        "-s",
        "100",
        "--persistent",
        "--receipt",
        "--window",
        "64",
        "--ack",
        "client-individual",
        "--rate",
        "5000",
        "--warmup",
        "0",
        "--duration",
        "1.5",
        "--timeout",
        "3",
        "--login",
        "u",
        "--passcode",
        "p",
        "--host",
        "/",
        "-H",
        "a:b:c",
        "--subscribe-header",
        "prefetch-count:100",
        "--json",
        "--quiet",
    ]);
    assert_eq!(a.url, "tcp://h:1");
    assert_eq!(
        (a.producers, a.consumers, a.destinations, a.window),
        (16, 10, 3, 64)
    );
    assert_eq!(a.ack, AckArg::ClientIndividual);
    assert_eq!(a.rate, Some(5000.0));
    assert_eq!(a.host, "/");
    assert!(a.persistent && a.receipt && a.json && a.quiet);
    let cfg = a.validate().unwrap();
    assert_eq!(cfg.send_headers, vec![("a".to_owned(), "b:c".to_owned())]);
    assert_eq!(
        cfg.subscribe_headers,
        vec![("prefetch-count".to_owned(), "100".to_owned())]
    );
    assert_eq!(cfg.duration.as_millis(), 1500);
    assert_eq!(cfg.warmup.as_millis(), 0);
}

#[test]
fn several_destinations_get_numbered_suffixes_and_topics_fan_out_to_every_consumer() {
    let cfg = run_args(&["-d", "/topic/t", "--destinations", "3", "-c", "2"])
        .validate()
        .unwrap();
    assert_eq!(
        cfg.destination_names,
        ["/topic/t.0", "/topic/t.1", "/topic/t.2"]
    );
    assert!(cfg.fan_out);
    assert_eq!(cfg.consumer_destinations(0), [0, 1, 2]);
    assert_eq!(cfg.consumer_destinations(1), [0, 1, 2]);
    assert_eq!(cfg.deliveries_per_message(), 2);
}

#[test]
fn queue_destinations_are_dealt_so_each_has_a_consumer() {
    let few = run_args(&["--destinations", "5", "-c", "2"])
        .validate()
        .unwrap();
    assert_eq!(few.consumer_destinations(0), [0, 2, 4]);
    assert_eq!(few.consumer_destinations(1), [1, 3]);
    assert_eq!(few.deliveries_per_message(), 1);
    let many = run_args(&["--destinations", "2", "-c", "3"])
        .validate()
        .unwrap();
    assert_eq!(many.consumer_destinations(2), [0]);
    let none = run_args(&["-c", "0"]).validate().unwrap();
    assert_eq!(none.deliveries_per_message(), 0);
}

#[test]
fn unbounded_or_impossible_workloads_are_rejected() {
    for bad in [
        &["--duration", "0"][..],
        &["--duration", "inf"],
        &["--duration", "NaN"],
        &["--duration", "1e9"],
        &["--warmup=-1"],
        &["--timeout", "0"],
        &["--rate", "0"],
        &["--rate", "inf"],
        &["-p", "0"],
        &["-p", "100000"],
        &["--destinations", "0"],
        &["--window", "4"],
        &["--receipt", "--window", "0"],
        &["-d", "queue/no-slash"],
        &["-H", "no-colon"],
        &["--subscribe-header", ":v"],
        &["--consume-url", ""],
        &["--consume-url", " "],
    ] {
        let r = run_args(bad).validate();
        assert!(
            matches!(r, Err(BenchError::Config(_))),
            "{bad:?} accepted: {r:?}"
        );
    }
}

#[test]
fn consumers_connect_to_the_producers_broker_unless_consume_url_names_another() {
    let same = run_args(&["--url", "tcp://a:1"]).validate().unwrap();
    assert_eq!(same.args.consume_url, None);
    assert_eq!(same.consume_url, "tcp://a:1");
    let bridged = run_args(&["--url", "tcp://a:1", "--consume-url", "tcp://b:2"])
        .validate()
        .unwrap();
    assert_eq!(bridged.args.url, "tcp://a:1");
    assert_eq!(bridged.consume_url, "tcp://b:2");
}

#[test]
fn unknown_ack_mode_and_unknown_subcommand_fail_to_parse() {
    assert!(Cli::try_parse_from(["ferromq-bench", "run", "--ack", "sometimes"]).is_err());
    assert!(Cli::try_parse_from(["ferromq-bench", "walk"]).is_err());
}

#[test]
fn fsync_probe_arguments_are_parsed_and_bounded() {
    let cli = Cli::try_parse_from([
        "ferromq-bench",
        "fsync-probe",
        "--threads",
        "16",
        "--size",
        "4096",
        "--duration",
        "2",
        "--dir",
        "/tmp",
        "--json",
    ])
    .unwrap();
    let Command::FsyncProbe(a) = cli.command else {
        panic!("not fsync-probe")
    };
    assert_eq!((a.threads, a.size), (16, 4096));
    assert_eq!(a.validate().unwrap().as_secs(), 2);
    assert!(a.json);
    for bad in [["--threads", "0"], ["--size", "0"], ["--duration", "0"]] {
        let mut argv = vec!["ferromq-bench", "fsync-probe"];
        argv.extend_from_slice(&bad);
        let Command::FsyncProbe(a) = Cli::try_parse_from(argv).unwrap().command else {
            panic!("not fsync-probe")
        };
        assert!(a.validate().is_err(), "{bad:?} accepted");
    }
}

#[test]
fn fsync_probe_modes_are_parsed_and_group_commit_refuses_their_options() {
    use ferromq_bench::cli::ProbeMode;
    use ferromq_bench::durable_write_probe::WriteMode;
    let parse = |extra: &[&str]| {
        let mut argv = vec!["ferromq-bench", "fsync-probe"];
        argv.extend_from_slice(extra);
        let Command::FsyncProbe(a) = Cli::try_parse_from(argv).unwrap().command else {
            panic!("not fsync-probe")
        };
        a
    };
    let a = parse(&[]);
    assert_eq!(a.mode, ProbeMode::GroupCommit);
    assert!(a.durable_write_spec(a.validate().unwrap()).is_none());
    let a = parse(&["--mode", "direct-dsync", "-t", "16", "--records", "3"]);
    let spec = a.durable_write_spec(a.validate().unwrap()).unwrap();
    assert_eq!(spec.mode, WriteMode::DirectDsync);
    assert_eq!(
        (
            spec.in_flight,
            spec.records_per_thread_max,
            spec.block_bytes
        ),
        (16, Some(3), 512)
    );
    assert_eq!(spec.file_bytes, 64 << 20);
    let a = parse(&["--mode", "fdatasync", "--preallocate"]);
    assert!(
        a.durable_write_spec(a.validate().unwrap())
            .unwrap()
            .preallocate
    );
    for bad in [
        &["--records", "3"][..],
        &["--preallocate"],
        &["--mode", "direct-dsync", "--block-bytes", "1000"],
        &["--mode", "direct-dsync", "--block-bytes", "256"],
        &["--mode", "fdatasync", "--records", "0"],
        &["--mode", "fdatasync", "--file-mib", "0"],
    ] {
        assert!(parse(bad).validate().is_err(), "{bad:?} accepted");
    }
}
