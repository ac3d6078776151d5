//! An OpenWire persistent send is answered only once the message is on disk: OpenWire
//! producers (pipelined, `responseRequired`, as the JMS client's synchronous `send()`) on the
//! power-loss filesystem, power cut while the store writes, and after recovery every message
//! whose Response arrived is there. The same rig with `sync = "never"` must report losses (the
//! test of the test).

mod power_loss_support;
mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use ferromq_powerfs::LossMode;
use ferromq_protocol::openwire::{
    self as ow, map::encode_map, Command, CommandHeader, Decoder, PrimitiveMap, PrimitiveValue,
};
use power_loss_support::{Ledger, Rig, SharedLedger};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PRODUCERS: usize = 4;
/// Sends each producer keeps unanswered, so the store always has a batch going.
const WINDOW: usize = 8;
const RESPONSES_PER_ROUND: usize = 1500;

fn header(id: i32, response_required: bool) -> CommandHeader {
    CommandHeader {
        command_id: id,
        response_required,
    }
}

/// One OpenWire producer: sends `ow<round>-p<p>-<i>` to queue `ha` (what the STOMP drain
/// reads as `/queue/ha`), records a body as receipted when its Response arrives.
async fn produce(
    addr: String,
    ledger: SharedLedger,
    stop: Arc<AtomicBool>,
    round: usize,
    p: usize,
) {
    let Ok(mut stream) = TcpStream::connect(&addr).await else {
        return;
    };
    let conn_id = format!("ID:power-{round}-{p}");
    let mut props = PrimitiveMap::new();
    props.insert("TightEncodingEnabled", PrimitiveValue::Bool(false));
    props.insert("CacheEnabled", PrimitiveValue::Bool(false));
    props.insert("MaxInactivityDuration", PrimitiveValue::Long(0));
    let producer = ow::ProducerId {
        connection_id: conn_id.clone(),
        session_id: 1,
        value: 1,
    };
    let mut setup = vec![
        Command::WireFormatInfo(ow::WireFormatInfo {
            magic: ow::MAGIC,
            version: 12,
            marshalled_properties: Some(encode_map(Some(&props)).unwrap()),
        }),
        Command::ConnectionInfo(ow::ConnectionInfo {
            header: header(1, true),
            connection_id: Some(ow::ConnectionId {
                value: conn_id.clone(),
            }),
            client_id: Some(conn_id.clone()),
            ..Default::default()
        }),
        Command::SessionInfo(ow::SessionInfo {
            header: header(2, false),
            session_id: Some(ow::SessionId {
                connection_id: conn_id.clone(),
                value: 1,
            }),
        }),
        Command::ProducerInfo(ow::ProducerInfo {
            header: header(3, true),
            producer_id: Some(producer.clone()),
            ..Default::default()
        }),
    ];
    let mut out = Vec::new();
    for c in setup.drain(..) {
        out.extend(ow::encode_command(&c, 12).unwrap());
    }
    if stream.write_all(&out).await.is_err() {
        return;
    }
    let (mut rd, mut wr) = stream.into_split();
    let mut pending: HashMap<i32, String> = HashMap::new();
    let mut decoder = Decoder::new(ow::DEFAULT_MAX_FRAME_SIZE);
    let mut buf = BytesMut::new();
    let mut next_id = 10;
    let mut seq = 0i64;
    loop {
        while pending.len() < WINDOW && !stop.load(Ordering::Relaxed) {
            seq += 1;
            next_id += 1;
            let body = format!("ow{round}-p{p}-{seq}");
            let mut m = ow::Message {
                kind: ow::MessageKind::Text,
                header: header(next_id, true),
                producer_id: Some(producer.clone()),
                destination: Some(ow::Destination {
                    kind: ow::DestinationKind::Queue,
                    physical_name: "ha".into(),
                }),
                message_id: Some(ow::MessageId {
                    text_view: None,
                    producer_id: Some(producer.clone()),
                    producer_sequence_id: seq,
                    broker_sequence_id: 0,
                }),
                persistent: true,
                priority: 4,
                ..Default::default()
            };
            m.set_text(Some(&body)).unwrap();
            ledger.lock().unwrap().sent.insert(body.clone());
            pending.insert(next_id, body);
            let bytes = ow::encode_command(&Command::Message(Box::new(m)), 12).unwrap();
            if wr.write_all(&bytes).await.is_err() {
                return;
            }
        }
        if pending.is_empty() {
            return;
        }
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(f)) => {
                    if let Ok(Command::Response(r)) = ow::decode_command(&f, 12) {
                        if let Some(body) = pending.remove(&r.correlation_id) {
                            ledger.lock().unwrap().receipted.insert(body);
                        }
                    }
                    continue;
                }
                Ok(None) => {}
                Err(_) => return,
            }
            break;
        }
        match tokio::time::timeout(Duration::from_secs(30), rd.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            // Closed (the broker died) or silent: this producer is done.
            _ => return,
        }
    }
}

struct OwLoad {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl OwLoad {
    fn start(addr: &str, ledger: &SharedLedger, round: usize) -> OwLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..PRODUCERS)
            .map(|p| {
                tokio::spawn(produce(
                    addr.to_string(),
                    ledger.clone(),
                    stop.clone(),
                    round,
                    p,
                ))
            })
            .collect();
        OwLoad { stop, tasks }
    }

    async fn wait_responses(ledger: &SharedLedger, n: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while ledger.lock().unwrap().receipted.len() < n {
            assert!(
                std::time::Instant::now() < deadline,
                "the OpenWire load never got going: {} responses",
                ledger.lock().unwrap().receipted.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn join(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            tokio::time::timeout(Duration::from_secs(60), t)
                .await
                .expect("a producer did not end after the broker died")
                .unwrap();
        }
    }
}

async fn cut_twice(name: &str, store: &str) -> power_loss_support::Verdict {
    let mut rig = Rig::new(name, store);
    rig.openwire = true;
    let ledger = Ledger::shared();
    rig.start_first();
    for (round, mode) in [
        (0, LossMode::RandomPages { seed: 7 }),
        (1, LossMode::DropAll),
    ] {
        if round > 0 {
            rig.start();
        }
        let load = OwLoad::start(&rig.openwire_addr(), &ledger, round);
        OwLoad::wait_responses(&ledger, (round + 1) * RESPONSES_PER_ROUND).await;
        rig.cut_while_writing(mode, 2, &ledger);
        load.join().await;
    }
    rig.start();
    let verdict = rig.drain_and_check(&ledger).await;
    eprintln!("[{name}] {verdict}");
    rig.stop();
    verdict
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openwire_persistent_sends_answered_are_on_disk_through_power_cuts() {
    cut_twice("openwire_journal", "backend = \"journal\"\n")
        .await
        .assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openwire_checker_reports_loss_when_the_journal_never_syncs() {
    let verdict = cut_twice(
        "openwire_journal_sync_never",
        "backend = \"journal\"\nsync = \"never\"\n",
    )
    .await;
    assert!(
        !verdict.lost.is_empty(),
        "sync = \"never\" lost nothing in a power cut: the rig or the checker is blind ({verdict})"
    );
}
