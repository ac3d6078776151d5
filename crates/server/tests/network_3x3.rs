//! The article's production layout under faults: three replicated groups of three
//! `ferromq serve` processes (`broker.name` group1…3, `replicas = 3`, `sync = quorum_disk`) on the
//! shared three-node ZooKeeper ensemble, their masters joined into a network by `zookeeper://`
//! discovery, every member with `update_cluster_clients`.
//!
//! Producers send receipted persistent 1 KiB messages at full speed to group1; the consumers
//! of one queue are on group2, those of another on group3 (client-individual, receipted ACKs,
//! every MESSAGE frame recorded as it came off the wire). While the load runs the master of each
//! group is killed (-9) in turn — the sender of the bridges, then each receiver — and then one
//! ZooKeeper node of three. After each fault the test waits for a positive event: more messages
//! confirmed *and* delivered across the network. The wire-level history checker of the
//! replicated mode then judges each queue: every confirmed message delivered, none stored twice
//! (under two message ids: a bridge's resend kept as a second message), none delivered again
//! after its ACK was confirmed.
//!
//! The first test gives each queue consumers in one group. The second consumes one queue in two
//! groups and kills the receiving masters: a message in flight to a group whose master dies
//! must wait for that group's next master (`in_flight_pin_ms`) rather than go to the other
//! group, which would store it a second time. (A queue consumed in two remote groups can still
//! get a message twice when the *sending* master dies mid-forward — its new master does not
//! know where the message was going; see "Limits" in docs/network.md.)
#![cfg(feature = "zk")]

mod ha_replicated_support;
mod support;

use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::time::Duration;

use ha_replicated_support::*;

const T: Duration = Duration::from_secs(60);
/// Progress demanded after each fault, per queue: confirmed on group1 and delivered remotely.
const STEP: usize = 400;

fn group(base: &std::path::Path, name: &str, discovery: &str) -> Cluster {
    let dir = base.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let mut c = Cluster::new(
        &dir,
        &zk_ensemble(),
        name,
        &format!(
            "update_cluster_clients = true\n\
             [[network_connectors]]\nname = \"net\"\nuri = \"{discovery}\"\n\
             initial_reconnect_delay_ms = 20\nmax_reconnect_delay_ms = 200\n"
        ),
    );
    c.group = name.to_string();
    c.transports_extra = format!("discovery = \"{discovery}\"\n");
    for i in 0..3 {
        c.start(i);
    }
    c
}

/// The index of `c`'s master, once one serves (and its two slaves have joined).
fn master_of(c: &Cluster, except: &[usize]) -> usize {
    let (m, _) = tokio::task::block_in_place(|| c.wait_master(except, T))
        .unwrap_or_else(|| panic!("{}: no master within {T:?}", c.group));
    m
}

/// Waits until each load has `step` more confirmed and delivered messages than at `from`.
async fn progress(what: &str, loads: &[&LoadGen], step: usize) {
    for (k, l) in loads.iter().enumerate() {
        let (c, d) = (l.confirmed.load(SeqCst), l.delivered.load(SeqCst));
        assert!(
            l.wait_confirmed(c + step, T).await,
            "{what}: queue {k}: no {step} more confirmed within {T:?} (at {c}; errors {:?})",
            l.send_errors.lock().unwrap()
        );
        let deadline = std::time::Instant::now() + T;
        while l.delivered.load(SeqCst) < d + step {
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: queue {k}: no {step} more delivered across the network within {T:?} (at {d})"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        eprintln!(
            "{what}: queue {k}: confirmed {} delivered {}",
            l.confirmed.load(SeqCst),
            l.delivered.load(SeqCst)
        );
    }
}

/// One test at a time: each runs nine brokers, and the first stops a ZooKeeper node.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The layout, load and faults of one run.
struct Run {
    /// Per queue, the groups (0-based) its consumers are attached to.
    consumers_in: Vec<Vec<usize>>,
    /// The groups whose master is killed, in turn.
    kill_masters_of: Vec<usize>,
    /// Whether one ZooKeeper node of three is stopped after the kills.
    stop_zookeeper_node: bool,
}

async fn run(name: &str, r: Run) {
    let _serial = SERIAL.lock().await;
    let d = tempfile::tempdir().unwrap();
    let discovery = format!("zookeeper://{}{}", zk_ensemble(), unique_zk_path(name));
    let mut groups: Vec<Cluster> = ["group1", "group2", "group3"]
        .iter()
        .map(|g| group(d.path(), g, &discovery))
        .collect();
    for g in &groups {
        let m = master_of(g, &[]);
        for i in (0..3).filter(|i| *i != m) {
            assert!(g.proc(i).wait_log("Slave started", T), "{}", g.group);
        }
    }

    // A client that knows one member of a group learns the others from CONNECTED (the
    // members register in ZooKeeper as they start: wait, bounded, for all three).
    {
        let g = &groups[1];
        let m = master_of(g, &[]);
        let wanted: Vec<String> = g
            .ports
            .iter()
            .map(|p| format!("tcp://127.0.0.1:{p}"))
            .collect();
        let deadline = std::time::Instant::now() + T;
        loop {
            let c = ferromq_client::Client::connect(
                &format!("127.0.0.1:{}", g.ports[m]),
                ferromq_client::ClientConfig::default(),
            )
            .await
            .unwrap();
            let cluster = support::cluster_header(&c);
            c.disconnect().await.unwrap();
            let listed: Vec<&str> = cluster.split(',').collect();
            assert_eq!(listed[0], wanted[m], "the master first: {cluster}");
            if wanted.iter().all(|w| listed.contains(&w.as_str())) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "CONNECTED never listed the whole group: {cluster}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let mut loads = Vec::new();
    for (k, consumer_groups) in r.consumers_in.iter().enumerate() {
        let history = Arc::new(History::create(&d.path().join(format!("history-{k}.log"))));
        let uris: Vec<String> = consumer_groups.iter().map(|g| groups[*g].uri()).collect();
        let uris: Vec<&str> = uris.iter().map(String::as_str).collect();
        let spec = LoadSpec {
            producers: 3,
            window: 8,
            consumers: 2 * consumer_groups.len(),
            msg_bytes: 1024,
            destination: format!("/queue/{name}.{k}"),
            max_per_producer: None,
            pace: Duration::ZERO,
            consume_during: true,
        };
        let gen = LoadGen::start_split(&groups[0].uri(), &uris, history.clone(), spec);
        loads.push((gen, history, consumer_groups.clone()));
    }
    let gens: Vec<&LoadGen> = loads.iter().map(|(g, _, _)| g).collect();
    progress("bridges formed", &gens, STEP).await;

    for &g in &r.kill_masters_of {
        let m = master_of(&groups[g], &[]);
        groups[g].kill9(m);
        let next = master_of(&groups[g], &[m]);
        eprintln!("group{}: master {m} killed, {next} took over", g + 1);
        progress(
            &format!("after group{}'s master was killed", g + 1),
            &gens,
            STEP,
        )
        .await;
        groups[g].start(m);
        assert!(groups[g].proc(m).wait_log("Slave started", T));
    }

    if r.stop_zookeeper_node {
        let back = EnsembleNodeBack;
        stop_ensemble_node(1);
        progress("with one ZooKeeper node of three down", &gens, STEP).await;
        drop(back);
    }

    let quiet = Duration::from_secs(3);
    let most = Duration::from_secs(300);
    let mut verdicts = Vec::new();
    let finishing: Vec<_> = loads
        .into_iter()
        .map(|(gen, h, cg)| {
            verdicts.push((h, cg));
            gen.finish(true, quiet, most)
        })
        .collect();
    futures_join_all(finishing).await;
    for (h, cg) in verdicts {
        let what = format!("queue produced on group1, consumed on groups {cg:?} (0-based)");
        h.flush();
        let v = check_wire_history(h.path()).unwrap_or_else(|e| panic!("{what}: {e:#?}"));
        eprintln!("{what}: {v:?}");
        let steps = 1 + r.kill_masters_of.len() + usize::from(r.stop_zookeeper_node);
        assert!(v.verdict.confirmed >= steps * STEP, "{what}: {v:?}");
    }
    for g in &groups {
        g.assert_epochs_unique();
    }
}

/// Runs the futures concurrently (the producers of every queue stop together).
async fn futures_join_all<F: std::future::Future<Output = ()> + Send + 'static>(fs: Vec<F>) {
    let handles: Vec<_> = fs.into_iter().map(tokio::spawn).collect();
    for h in handles {
        h.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_groups_of_three_lose_and_duplicate_nothing_through_master_and_zookeeper_kills() {
    run(
        "net3x3",
        Run {
            consumers_in: vec![vec![1], vec![2]],
            kill_masters_of: vec![0, 1, 2],
            stop_zookeeper_node: true,
        },
    )
    .await;
}

// Known open bug, not hidden: about 1 run in 10 still stores one message in both receiving
// groups (seen 2026-12-05: p0-1164 in group3 and in group2's new master). Run it with
// `cargo test --all-features -p ferromq --test network_3x3 -- --ignored`; docs/network.md, Limits.
#[ignore = "flaky: ~1 run in 10 stores one message twice across groups; see docs/network.md Limits"]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_queue_consumed_in_two_groups_is_not_stored_twice_when_a_receiving_master_dies() {
    run(
        "net3x3two",
        Run {
            consumers_in: vec![vec![1, 2]],
            kill_masters_of: vec![1, 2],
            stop_zookeeper_node: false,
        },
    )
    .await;
}
