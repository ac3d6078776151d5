//! The OpenWire connector at the wire level, with the sans-I/O codec as the client: wire format
//! negotiation, keep-alives and the inactivity monitor, refusals with a reason, malformed input.

mod common;

use std::time::Duration;

use bytes::BytesMut;
use ferromq_protocol::openwire::{
    self as ow, map::encode_map, Command, CommandHeader, Decoder, PrimitiveMap, PrimitiveValue,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Wire {
    stream: TcpStream,
    buf: BytesMut,
    decoder: Decoder,
}

impl Wire {
    async fn connect(addr: std::net::SocketAddr) -> Wire {
        Wire {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
            decoder: Decoder::new(ow::DEFAULT_MAX_FRAME_SIZE),
        }
    }

    async fn send(&mut self, cmd: &Command) {
        let bytes = ow::encode_command(cmd, 12).unwrap();
        self.stream.write_all(&bytes).await.unwrap();
    }

    /// The next command, or `None` when the server closed the connection (bounded wait).
    async fn next(&mut self) -> Option<Command> {
        loop {
            if let Some(f) = self.decoder.decode(&mut self.buf).unwrap() {
                return Some(ow::decode_command(&f, 12).unwrap());
            }
            let n =
                tokio::time::timeout(Duration::from_secs(20), self.stream.read_buf(&mut self.buf))
                    .await
                    .expect("the server answers or closes within 20 s")
                    .unwrap_or(0);
            if n == 0 {
                return None;
            }
        }
    }

    /// Skips keep-alives and BrokerInfo until another command (or the close).
    async fn next_interesting(&mut self) -> Option<Command> {
        loop {
            match self.next().await {
                Some(Command::KeepAliveInfo(_)) | Some(Command::BrokerInfo(_)) => continue,
                other => return other,
            }
        }
    }
}

fn wire_format(inactivity_ms: i64) -> Command {
    let mut p = PrimitiveMap::new();
    p.insert("TightEncodingEnabled", PrimitiveValue::Bool(true));
    p.insert("CacheEnabled", PrimitiveValue::Bool(true));
    p.insert("MaxInactivityDuration", PrimitiveValue::Long(inactivity_ms));
    Command::WireFormatInfo(ow::WireFormatInfo {
        magic: ow::MAGIC,
        version: 12,
        marshalled_properties: Some(encode_map(Some(&p)).unwrap()),
    })
}

fn header(id: i32) -> CommandHeader {
    CommandHeader {
        command_id: id,
        response_required: true,
    }
}

fn connection_info(id: i32, client_id: &str) -> Command {
    Command::ConnectionInfo(ow::ConnectionInfo {
        header: header(id),
        connection_id: Some(ow::ConnectionId {
            value: format!("ID:test-{client_id}"),
        }),
        client_id: Some(client_id.into()),
        ..Default::default()
    })
}

async fn server(extra: &str) -> ferromq_server::server::Server {
    common::start(&format!("openwire = \"127.0.0.1:0\"\n{extra}")).await
}

#[tokio::test]
async fn the_server_offers_loose_encoding_without_cache_and_then_sends_its_broker_info() {
    let s = server("").await;
    let mut w = Wire::connect(s.openwire_addr.unwrap()).await;
    let Some(Command::WireFormatInfo(info)) = w.next().await else {
        panic!("the server speaks first, with its WireFormatInfo");
    };
    assert_eq!(info.magic, ow::MAGIC);
    assert_eq!(info.version, 12);
    let props = info.properties(&ow::MapLimits::default()).unwrap();
    assert_eq!(
        props.get("TightEncodingEnabled"),
        Some(&PrimitiveValue::Bool(false))
    );
    assert_eq!(
        props.get("CacheEnabled"),
        Some(&PrimitiveValue::Bool(false))
    );
    w.send(&wire_format(30_000)).await;
    let Some(Command::BrokerInfo(b)) = w.next().await else {
        panic!("BrokerInfo after negotiation");
    };
    assert!(b.broker_name.is_some());
    w.send(&connection_info(1, "negotiation")).await;
    let Some(Command::Response(r)) = w.next_interesting().await else {
        panic!("ConnectionInfo is answered");
    };
    assert_eq!(r.correlation_id, 1);
}

#[tokio::test]
async fn keep_alives_flow_and_a_silent_client_is_disconnected_with_a_reason() {
    let s = server("[openwire]\nmax_inactivity_duration_ms = 600\n").await;
    let mut w = Wire::connect(s.openwire_addr.unwrap()).await;
    w.next().await.unwrap();
    // The client asks for 300 ms: the smaller duration applies.
    w.send(&wire_format(300)).await;
    w.send(&connection_info(1, "silent")).await;
    let mut keepalives = 0;
    let reason = loop {
        match w.next().await {
            Some(Command::KeepAliveInfo(_)) => keepalives += 1,
            Some(Command::ConnectionError(e)) => {
                break e.exception.and_then(|x| x.message).unwrap_or_default()
            }
            Some(_) => {}
            None => panic!("closed without a ConnectionError"),
        }
    };
    assert!(keepalives >= 1, "the server writes keep-alives while idle");
    assert!(reason.contains("inactive"), "{reason}");
    assert!(w.next().await.is_none(), "then the connection closes");
}

#[tokio::test]
async fn a_keep_alive_that_asks_for_an_answer_gets_one() {
    let s = server("").await;
    let mut w = Wire::connect(s.openwire_addr.unwrap()).await;
    w.next().await.unwrap();
    w.send(&wire_format(30_000)).await;
    // BrokerInfo first, so that what follows can only be the answer.
    assert!(matches!(w.next().await, Some(Command::BrokerInfo(_))));
    w.send(&Command::KeepAliveInfo(ow::KeepAliveInfo {
        header: header(5),
    }))
    .await;
    // The server's own keep-alives come every 10 s (a third of 30 s); the answer comes now.
    let answer = tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .expect("an answer well before the first periodic keep-alive");
    let Some(Command::KeepAliveInfo(k)) = answer else {
        panic!("a KeepAliveInfo, got {answer:?}");
    };
    assert!(!k.header.response_required);
}

#[tokio::test]
async fn commands_before_connection_info_are_refused_with_a_reason() {
    let s = server("").await;
    let mut w = Wire::connect(s.openwire_addr.unwrap()).await;
    w.next().await.unwrap();
    w.send(&wire_format(30_000)).await;
    w.send(&Command::SessionInfo(ow::SessionInfo {
        header: header(7),
        session_id: None,
    }))
    .await;
    let Some(Command::ExceptionResponse(e)) = w.next_interesting().await else {
        panic!("an ExceptionResponse");
    };
    assert_eq!(e.correlation_id, 7);
    let ex = e.exception.unwrap();
    assert_eq!(ex.class_name.as_deref(), Some("javax.jms.JMSException"));
    assert!(ex.message.unwrap().contains("ConnectionInfo"));
}

#[tokio::test]
async fn a_second_connection_with_a_client_id_in_use_is_refused_unless_it_is_the_same_connection() {
    let s = server("").await;
    let mut a = Wire::connect(s.openwire_addr.unwrap()).await;
    a.next().await.unwrap();
    a.send(&wire_format(30_000)).await;
    a.send(&connection_info(1, "dup")).await;
    assert!(matches!(
        a.next_interesting().await,
        Some(Command::Response(_))
    ));
    // Another connection (another ConnectionId) with the same client id: refused.
    let mut b = Wire::connect(s.openwire_addr.unwrap()).await;
    b.next().await.unwrap();
    b.send(&wire_format(30_000)).await;
    let mut other = connection_info(2, "dup");
    if let Command::ConnectionInfo(c) = &mut other {
        c.connection_id = Some(ow::ConnectionId {
            value: "ID:someone-else".into(),
        });
    }
    b.send(&other).await;
    let Some(Command::ExceptionResponse(e)) = b.next_interesting().await else {
        panic!("refused");
    };
    assert_eq!(
        e.exception.unwrap().class_name.as_deref(),
        Some("javax.jms.InvalidClientIDException")
    );
    // The same client reconnecting (same ConnectionId) replaces its stale connection.
    let mut c = Wire::connect(s.openwire_addr.unwrap()).await;
    c.next().await.unwrap();
    c.send(&wire_format(30_000)).await;
    c.send(&connection_info(3, "dup")).await;
    let Some(Command::Response(r)) = c.next_interesting().await else {
        panic!("the reconnect is accepted");
    };
    assert_eq!(r.correlation_id, 3);
    assert!(
        a.next_interesting().await.is_none(),
        "the stale connection was closed"
    );
}

#[tokio::test]
async fn garbage_gets_a_connection_error_and_the_broker_keeps_serving() {
    let s = server("").await;
    let mut w = Wire::connect(s.openwire_addr.unwrap()).await;
    w.next().await.unwrap();
    // A frame claiming type 200 (no such command).
    w.stream.write_all(&[0, 0, 0, 3, 200, 1, 2]).await.unwrap();
    let Some(Command::ConnectionError(e)) = w.next().await else {
        panic!("a ConnectionError with the reason");
    };
    assert!(e.exception.unwrap().message.unwrap().contains("200"));
    assert!(w.next().await.is_none());
    // A size prefix beyond the limit.
    let mut w = Wire::connect(s.openwire_addr.unwrap()).await;
    w.next().await.unwrap();
    w.stream
        .write_all(&[0x7f, 0xff, 0xff, 0xff, 1])
        .await
        .unwrap();
    assert!(matches!(w.next().await, Some(Command::ConnectionError(_))));
    // Others are still served.
    let mut ok = Wire::connect(s.openwire_addr.unwrap()).await;
    ok.next().await.unwrap();
    ok.send(&wire_format(30_000)).await;
    ok.send(&connection_info(1, "after-garbage")).await;
    assert!(matches!(
        ok.next_interesting().await,
        Some(Command::Response(_))
    ));
}

#[tokio::test]
async fn producers_are_counted_on_their_queue_until_they_or_their_connection_close() {
    let s = server("").await;
    let queue = ferromq_broker::Destination::queue("pq");
    let producers = |s: &ferromq_server::server::Server| {
        s.broker
            .queue_snapshot(&queue)
            .map(|q| q.producers)
            .unwrap_or(0)
    };
    let mut w = Wire::connect(s.openwire_addr.unwrap()).await;
    w.next().await.unwrap();
    w.send(&wire_format(30_000)).await;
    w.send(&connection_info(1, "prod")).await;
    assert!(matches!(
        w.next_interesting().await,
        Some(Command::Response(_))
    ));
    let pid = |value: i64| ow::ProducerId {
        connection_id: "ID:test-prod".into(),
        value,
        session_id: 1,
    };
    let fixed = ow::Destination {
        kind: ow::DestinationKind::Queue,
        physical_name: "pq".into(),
    };
    for (id, dest) in [(1, Some(fixed.clone())), (2, Some(fixed)), (3, None)] {
        w.send(&Command::ProducerInfo(ow::ProducerInfo {
            header: header(10 + id as i32),
            producer_id: Some(pid(id)),
            destination: dest,
            ..Default::default()
        }))
        .await;
        assert!(matches!(
            w.next_interesting().await,
            Some(Command::Response(_))
        ));
    }
    assert_eq!(
        producers(&s),
        2,
        "two fixed producers; the anonymous one is not counted"
    );
    // The connection registry knows who this is.
    let conns = s.connections.snapshot();
    assert!(
        conns
            .iter()
            .any(|c| c.protocol == "openwire" && c.client_id.as_deref() == Some("prod")),
        "{conns:?}"
    );
    w.send(&Command::RemoveInfo(ow::RemoveInfo {
        header: header(20),
        object_id: Some(Box::new(ow::DataStructure::ProducerId(pid(1)))),
        last_delivered_sequence_id: -1,
    }))
    .await;
    assert!(matches!(
        w.next_interesting().await,
        Some(Command::Response(_))
    ));
    assert_eq!(producers(&s), 1);
    // The connection drops without closing its producer: the session's end uncounts it.
    drop(w);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while producers(&s) != 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        producers(&s),
        0,
        "a closed connection's producers are uncounted"
    );
}

/// An OpenWire connection with client id `client_id` logged in as `user`.
async fn login(
    s: &ferromq_server::server::Server,
    client_id: &str,
    user: &str,
    password: &str,
) -> Wire {
    let mut info = connection_info(1, client_id);
    if let Command::ConnectionInfo(c) = &mut info {
        c.user_name = Some(user.into());
        c.password = Some(password.into());
    }
    connected_with(s, &info).await
}

/// `[[security.authorization]]` on OpenWire: a send or a consumer the rules refuse gets an
/// ExceptionResponse of class `java.lang.SecurityException` (what the JMS client throws as
/// `JMSSecurityException`) naming the destination; allowed ones are answered, and the refused
/// send stores nothing.
#[tokio::test]
async fn authorization_refuses_sends_and_consumers_with_a_security_exception() {
    let s = server(
        r#"
[security]
plaintext_passwords = true

[[security.users]]
username = "rita"
password = "r"
groups = ["readers"]

[[security.authorization]]
queue = "orders.>"
read = "readers"
write = "writers"
admin = "readers"
"#,
    )
    .await;
    let mut w = login(&s, "authz", "rita", "r").await;
    let queue = |name: &str| ow::Destination {
        kind: ow::DestinationKind::Queue,
        physical_name: name.into(),
    };
    let producer = ow::ProducerId {
        connection_id: "ID:test-authz".into(),
        value: 1,
        session_id: 1,
    };
    let mut m = ow::Message {
        kind: ow::MessageKind::Text,
        header: header(5),
        producer_id: Some(producer.clone()),
        destination: Some(queue("orders.eu")),
        message_id: Some(ow::MessageId {
            text_view: None,
            producer_id: Some(producer),
            producer_sequence_id: 1,
            broker_sequence_id: 0,
        }),
        persistent: true,
        priority: 4,
        ..Default::default()
    };
    m.set_text(Some("refused")).unwrap();
    w.send(&Command::Message(Box::new(m))).await;
    let Some(Command::ExceptionResponse(e)) = w.next_interesting().await else {
        panic!("an ExceptionResponse for the send");
    };
    assert_eq!(e.correlation_id, 5);
    let ex = e.exception.unwrap();
    assert_eq!(
        ex.class_name.as_deref(),
        Some("java.lang.SecurityException")
    );
    assert_eq!(
        ex.message.as_deref(),
        Some("User rita is not authorized to write to queue://orders.eu")
    );
    assert!(
        s.broker
            .queue_snapshot(&ferromq_broker::Destination::queue("orders.eu"))
            .is_none_or(|q| q.stats.enqueued == 0),
        "nothing stored"
    );
    let consumer = |id: i32, name: &str| {
        Command::ConsumerInfo(ow::ConsumerInfo {
            header: header(id),
            consumer_id: Some(ow::ConsumerId {
                connection_id: "ID:test-authz".into(),
                session_id: 1,
                value: i64::from(id),
            }),
            destination: Some(queue(name)),
            prefetch_size: 10,
            ..Default::default()
        })
    };
    // Reading orders.eu is allowed (and, with admin, creating it).
    w.send(&consumer(6, "orders.eu")).await;
    assert!(
        matches!(w.next_interesting().await, Some(Command::Response(_))),
        "an allowed consumer is answered"
    );
    // A queue no rule covers is refused.
    w.send(&consumer(7, "payroll")).await;
    let Some(Command::ExceptionResponse(e)) = w.next_interesting().await else {
        panic!("an ExceptionResponse for the consumer");
    };
    let ex = e.exception.unwrap();
    assert_eq!(
        ex.class_name.as_deref(),
        Some("java.lang.SecurityException")
    );
    assert_eq!(
        ex.message.as_deref(),
        Some("User rita is not authorized to read from queue://payroll")
    );
}

#[tokio::test]
async fn an_administrator_closes_an_openwire_connection_with_a_reason() {
    let s = server("").await;
    let mut w = Wire::connect(s.openwire_addr.unwrap()).await;
    w.next().await.unwrap();
    w.send(&wire_format(30_000)).await;
    w.send(&connection_info(1, "to-close")).await;
    assert!(matches!(
        w.next_interesting().await,
        Some(Command::Response(_))
    ));
    // What `DELETE /api/v1/connections/{id}` does, with the id the listing shows.
    let listed = s.connections.snapshot();
    let c = listed
        .iter()
        .find(|c| c.client_id.as_deref() == Some("to-close"))
        .expect("listed once connected");
    assert!(s.connections.close(c.id).is_some());
    let reason = match w.next_interesting().await {
        Some(Command::ConnectionError(e)) => {
            e.exception.and_then(|x| x.message).unwrap_or_default()
        }
        other => panic!("a ConnectionError first, got {other:?}"),
    };
    assert!(reason.contains("closed by an administrator"), "{reason}");
    assert!(w.next().await.is_none(), "then the connection closes");
}

/// A connected client (WireFormatInfo and ConnectionInfo answered).
async fn connected(s: &ferromq_server::server::Server, client_id: &str) -> Wire {
    connected_with(s, &connection_info(1, client_id)).await
}

/// A client whose ConnectionInfo `info` was answered.
async fn connected_with(s: &ferromq_server::server::Server, info: &Command) -> Wire {
    let mut w = Wire::connect(s.openwire_addr.unwrap()).await;
    w.next().await.unwrap();
    w.send(&wire_format(30_000)).await;
    w.send(info).await;
    assert!(matches!(
        w.next_interesting().await,
        Some(Command::Response(_))
    ));
    w
}

/// Waits (bounded by `Wire::next`) for the answer to command `id`, skipping dispatches and
/// keep-alives: `Ok` for a Response, `Err` with the exception for an ExceptionResponse.
async fn answer_to(w: &mut Wire, id: i32) -> Result<(), ow::BrokerError> {
    loop {
        match w.next_interesting().await {
            Some(Command::Response(r)) if r.correlation_id == id => return Ok(()),
            Some(Command::ExceptionResponse(e)) if e.correlation_id == id => {
                return Err(e
                    .exception
                    .expect("an ExceptionResponse names its exception"))
            }
            Some(_) => continue,
            None => panic!("the connection closed before command {id} was answered"),
        }
    }
}

/// The id of the next message dispatched to the client.
async fn next_dispatched(w: &mut Wire) -> ow::MessageId {
    loop {
        match w.next_interesting().await {
            Some(Command::MessageDispatch(d)) => {
                if let Some(id) = d.message.and_then(|m| m.message_id) {
                    return id;
                }
            }
            Some(_) => continue,
            None => panic!("the connection closed before a dispatch"),
        }
    }
}

/// A temporary queue on `w` with one consumer (id 1) holding one dispatched message: the
/// queue, the consumer and the message's id.
async fn consumer_holding_a_temp_message(
    w: &mut Wire,
    conn: &str,
) -> (ow::Destination, ow::ConsumerId, ow::MessageId) {
    let temp = ow::Destination {
        kind: ow::DestinationKind::TempQueue,
        physical_name: format!("{conn}:1"),
    };
    w.send(&Command::DestinationInfo(ow::DestinationInfo {
        header: header(2),
        destination: Some(temp.clone()),
        operation_type: ow::DestinationInfo::ADD,
        ..Default::default()
    }))
    .await;
    answer_to(w, 2)
        .await
        .expect("the temporary queue is created");
    let consumer = ow::ConsumerId {
        connection_id: conn.into(),
        session_id: 1,
        value: 1,
    };
    w.send(&Command::ConsumerInfo(ow::ConsumerInfo {
        header: header(3),
        consumer_id: Some(consumer.clone()),
        destination: Some(temp.clone()),
        prefetch_size: 10,
        ..Default::default()
    }))
    .await;
    answer_to(w, 3).await.expect("the consumer is created");
    let producer = ow::ProducerId {
        connection_id: conn.into(),
        value: 1,
        session_id: 1,
    };
    // Sent asynchronously: its dispatch is then the next thing the client reads.
    w.send(&Command::Message(Box::new(ow::Message {
        kind: ow::MessageKind::Text,
        header: CommandHeader {
            command_id: 4,
            response_required: false,
        },
        producer_id: Some(producer.clone()),
        destination: Some(temp.clone()),
        message_id: Some(ow::MessageId {
            text_view: None,
            producer_id: Some(producer),
            producer_sequence_id: 1,
            broker_sequence_id: 0,
        }),
        content: Some(bytes::Bytes::from_static(b"\0\0\0\x05hello")),
        ..Default::default()
    })))
    .await;
    let dispatched = next_dispatched(w).await;
    (temp, consumer, dispatched)
}

/// A standard ack of `id` by `consumer`, synchronous (`responseRequired`) as a JMS client
/// with `sendAcksAsync=false` sends it, in `tx` when given.
fn standard_ack(
    command_id: i32,
    dest: &ow::Destination,
    consumer: &ow::ConsumerId,
    id: &ow::MessageId,
    tx: Option<ow::TransactionId>,
) -> Command {
    Command::MessageAck(ow::MessageAck {
        header: CommandHeader {
            command_id,
            response_required: tx.is_none(),
        },
        destination: Some(dest.clone()),
        transaction_id: tx,
        consumer_id: Some(consumer.clone()),
        ack_type: ow::MessageAck::STANDARD,
        first_message_id: Some(id.clone()),
        last_message_id: Some(id.clone()),
        message_count: 1,
        poison_cause: None,
    })
}

/// The broker lost the delivery between dispatch and ack (its temporary queue was deleted
/// under the consumer): the synchronous ack is not applied, so the client must get an
/// ExceptionResponse (its `acknowledge()` throws) and never a plain Response that says the
/// ack is durable.
#[tokio::test]
async fn a_synchronous_ack_the_broker_cannot_apply_is_answered_with_an_exception_not_ok() {
    let s = server("").await;
    let mut w = connected(&s, "ackfail").await;
    let (temp, consumer, id) = consumer_holding_a_temp_message(&mut w, "ID:test-ackfail").await;
    w.send(&Command::DestinationInfo(ow::DestinationInfo {
        header: header(5),
        destination: Some(temp.clone()),
        operation_type: ow::DestinationInfo::REMOVE,
        ..Default::default()
    }))
    .await;
    answer_to(&mut w, 5)
        .await
        .expect("the temporary queue is deleted");
    w.send(&standard_ack(6, &temp, &consumer, &id, None)).await;
    let ex = answer_to(&mut w, 6)
        .await
        .expect_err("an ack the broker did not apply is not answered OK");
    assert_eq!(ex.class_name.as_deref(), Some("javax.jms.JMSException"));
    // The connection keeps serving.
    w.send(&Command::SessionInfo(ow::SessionInfo {
        header: header(7),
        session_id: None,
    }))
    .await;
    answer_to(&mut w, 7)
        .await
        .expect("the connection still serves");
}

/// As above inside a local transaction: the transacted ack is asynchronous (nothing to
/// refuse it to), so the COMMIT that would have made it durable must fail instead of
/// reporting a commit without it.
#[tokio::test]
async fn a_transacted_ack_the_broker_cannot_apply_makes_its_commit_fail() {
    let s = server("").await;
    let mut w = connected(&s, "txackfail").await;
    let conn = "ID:test-txackfail";
    let (temp, consumer, id) = consumer_holding_a_temp_message(&mut w, conn).await;
    let tx = ow::TransactionId::Local(ow::LocalTransactionId {
        value: 1,
        connection_id: Some(ow::ConnectionId { value: conn.into() }),
    });
    let tx_info = |id: i32, transaction_type: u8| {
        Command::TransactionInfo(ow::TransactionInfo {
            header: header(id),
            connection_id: Some(ow::ConnectionId { value: conn.into() }),
            transaction_id: Some(tx.clone()),
            transaction_type,
        })
    };
    w.send(&tx_info(5, ow::TransactionInfo::BEGIN)).await;
    answer_to(&mut w, 5).await.expect("BEGIN");
    w.send(&Command::DestinationInfo(ow::DestinationInfo {
        header: header(6),
        destination: Some(temp.clone()),
        operation_type: ow::DestinationInfo::REMOVE,
        ..Default::default()
    }))
    .await;
    answer_to(&mut w, 6)
        .await
        .expect("the temporary queue is deleted");
    w.send(&standard_ack(7, &temp, &consumer, &id, Some(tx.clone())))
        .await;
    w.send(&tx_info(8, ow::TransactionInfo::COMMIT_ONE_PHASE))
        .await;
    let ex = answer_to(&mut w, 8)
        .await
        .expect_err("a commit missing one of its acks is not answered OK");
    assert_eq!(
        ex.class_name.as_deref(),
        Some("javax.jms.TransactionRolledBackException")
    );
}

/// A synchronous ack naming a consumer this connection does not have (a failover client
/// replaying an ack whose consumer was refused): ActiveMQ refuses it ("The subscription does
/// not exist"); a plain Response would tell the client its messages are gone.
#[tokio::test]
async fn a_synchronous_ack_for_an_unknown_consumer_is_answered_with_an_exception() {
    let s = server("").await;
    let mut w = connected(&s, "nocons").await;
    let dest = ow::Destination {
        kind: ow::DestinationKind::Queue,
        physical_name: "nocons".into(),
    };
    let consumer = ow::ConsumerId {
        connection_id: "ID:test-nocons".into(),
        session_id: 1,
        value: 9,
    };
    let id = ow::MessageId {
        text_view: None,
        producer_id: Some(ow::ProducerId {
            connection_id: "ID:test-nocons".into(),
            value: 1,
            session_id: 1,
        }),
        producer_sequence_id: 1,
        broker_sequence_id: 1,
    };
    w.send(&standard_ack(2, &dest, &consumer, &id, None)).await;
    answer_to(&mut w, 2)
        .await
        .expect_err("an ack for no consumer is not answered OK");
}

/// Advisory topics are destinations for `[[security.authorization]]` like any other (ActiveMQ's
/// AuthorizationBroker asks `read` of them): the JMS client's temp-destination watcher (a
/// consumer on the composite `ActiveMQ.Advisory.TempQueue,ActiveMQ.Advisory.TempTopic`) is
/// answered for a user whose group may read `ActiveMQ.Advisory.>` and refused with a
/// SecurityException for one whose group may not.
#[tokio::test]
async fn advisory_consumers_need_read_on_the_advisory_topics() {
    let s = server(
        r#"
[security]
plaintext_passwords = true

[[security.users]]
username = "rita"
password = "r"
groups = ["readers"]

[[security.users]]
username = "otto"
password = "o"
groups = ["others"]

[[security.authorization]]
topic = "ActiveMQ.Advisory.>"
read = "readers"
write = "readers"
admin = "readers"

[[security.authorization]]
queue = ">"
read = "readers,others"
write = "readers,others"
admin = "readers,others"
"#,
    )
    .await;
    let watcher = |user: &str| {
        Command::ConsumerInfo(ow::ConsumerInfo {
            header: header(6),
            consumer_id: Some(ow::ConsumerId {
                connection_id: format!("ID:test-advisory-{user}"),
                session_id: 0,
                value: 1,
            }),
            destination: Some(ow::Destination {
                kind: ow::DestinationKind::Topic,
                physical_name: "ActiveMQ.Advisory.TempQueue,ActiveMQ.Advisory.TempTopic".into(),
            }),
            prefetch_size: 1000,
            ..Default::default()
        })
    };
    let mut answers = Vec::new();
    for (user, password) in [("rita", "r"), ("otto", "o")] {
        let mut w = login(&s, &format!("advisory-{user}"), user, password).await;
        w.send(&watcher(user)).await;
        answers.push(w.next_interesting().await);
    }
    assert!(
        matches!(answers[0], Some(Command::Response(_))),
        "a reader of ActiveMQ.Advisory.> gets its watcher: {:?}",
        answers[0]
    );
    let Some(Command::ExceptionResponse(e)) = answers[1].take() else {
        panic!("an ExceptionResponse for otto's watcher: {:?}", answers[1]);
    };
    let ex = e.exception.unwrap();
    assert_eq!(
        ex.class_name.as_deref(),
        Some("java.lang.SecurityException")
    );
    assert_eq!(
        ex.message.as_deref(),
        Some("User otto is not authorized to read from topic://ActiveMQ.Advisory.TempQueue")
    );
}
