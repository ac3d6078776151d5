//! Golden frames marshalled by the real ActiveMQ 5.17 client (`openwire-golden/GenGolden.java`,
//! loose encoding, cache off): every frame must decode, carry the fields Java put in, and
//! re-encode to the identical bytes.

use bytes::BytesMut;
use ferromq_protocol::openwire::{
    decode_command_with, encode_command_with, map::decode_map, CodecOptions, Command,
    DataStructure, Decoder, DestinationKind, MapLimits, MessageAck, MessageKind, PrimitiveValue,
    TransactionId, TransactionInfo, MAGIC,
};

fn unhex(s: &str) -> Vec<u8> {
    assert_eq!(s.len() % 2, 0, "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

fn fixtures(version: u32) -> Vec<(String, Vec<u8>)> {
    // CARGO_MANIFEST_DIR as cargo sets it for the test run (the checkout under test), not the
    // compile-time one (whichever checkout built a binary shared through the target dir).
    let manifest = std::env::var("CARGO_MANIFEST_DIR")
        .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned());
    let path = format!("{manifest}/tests/openwire-golden/v{version}.hex");
    let text = std::fs::read_to_string(&path).expect("fixture file");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (name, hex) = l.split_once(' ').expect("name hex");
            (name.to_string(), unhex(hex.trim()))
        })
        .collect()
}

fn opts(version: u32, name: &str) -> CodecOptions {
    CodecOptions {
        stack_trace_enabled: name.ends_with(".st"),
        ..CodecOptions::new(version)
    }
}

/// Decodes one fixture frame and asserts the byte-identical re-encoding.
fn round_trip(version: u32, name: &str, wire: &[u8]) -> Command {
    let mut buf = BytesMut::from(wire);
    let frame = Decoder::default()
        .decode(&mut buf)
        .unwrap_or_else(|e| panic!("{name}: framing: {e}"))
        .unwrap_or_else(|| panic!("{name}: incomplete frame"));
    assert!(buf.is_empty(), "{name}: bytes after the frame");
    let o = opts(version, name);
    let cmd = decode_command_with(&frame, &o).unwrap_or_else(|e| panic!("{name} v{version}: {e}"));
    let again = encode_command_with(&cmd, &o).unwrap_or_else(|e| panic!("{name}: encode: {e}"));
    assert_eq!(again, wire, "{name} v{version}: re-encoding differs");
    cmd
}

#[test]
fn every_golden_frame_of_every_version_round_trips_byte_identical() {
    for version in 9..=12 {
        let all = fixtures(version);
        assert_eq!(all.len(), 39, "v{version} fixture count");
        for (name, wire) in &all {
            round_trip(version, name, wire);
        }
    }
}

fn golden(version: u32, name: &str) -> Command {
    let all = fixtures(version);
    let (_, wire) = all
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no fixture {name}"));
    round_trip(version, name, wire)
}

const CONN: &str = "ID:golden-host-40000-1700000000000-1:1";

#[test]
fn wire_format_info_carries_magic_version_and_options() {
    let Command::WireFormatInfo(w) = golden(12, "wireformat_info") else {
        panic!("not a WireFormatInfo")
    };
    assert_eq!(w.magic, MAGIC);
    assert_eq!(w.version, 12);
    let props = w.properties(&MapLimits::default()).unwrap();
    assert_eq!(
        props.get("TightEncodingEnabled"),
        Some(&PrimitiveValue::Bool(false))
    );
    assert_eq!(
        props.get("CacheEnabled"),
        Some(&PrimitiveValue::Bool(false))
    );
    assert_eq!(
        props.get("MaxInactivityDuration"),
        Some(&PrimitiveValue::Long(30000))
    );
    assert_eq!(
        props.get("MaxFrameSize"),
        Some(&PrimitiveValue::Long(64 * 1024 * 1024))
    );
}

#[test]
fn connection_and_session_info_fields() {
    let Command::ConnectionInfo(c) = golden(12, "connection_info") else {
        panic!("not a ConnectionInfo")
    };
    assert_eq!(c.header.command_id, 1);
    assert!(c.header.response_required);
    assert_eq!(c.connection_id.unwrap().value, CONN);
    assert_eq!(c.client_id.as_deref(), Some("golden-client"));
    assert_eq!(c.user_name.as_deref(), Some("alice"));
    assert_eq!(c.password.as_deref(), Some("s3cret"));
    // Java's ConnectionInfo defaults clientMaster to true.
    assert!(c.manageable && c.fault_tolerant && c.client_master);
    assert!(!c.broker_master_connector && !c.failover_reconnect);
    assert_eq!(c.client_ip.as_deref(), Some("tcp://127.0.0.1:5555"));

    let Command::SessionInfo(s) = golden(12, "session_info") else {
        panic!("not a SessionInfo")
    };
    let sid = s.session_id.unwrap();
    assert_eq!((sid.connection_id.as_str(), sid.value), (CONN, 1));
}

#[test]
fn consumer_info_destination_selector_and_network_fields() {
    let Command::ConsumerInfo(c) = golden(12, "consumer_info") else {
        panic!("not a ConsumerInfo")
    };
    let id = c.consumer_id.unwrap();
    assert_eq!((id.session_id, id.value), (1, 7));
    let d = c.destination.unwrap();
    assert_eq!(d.kind, DestinationKind::Queue);
    assert_eq!(d.physical_name, "orders.in");
    assert_eq!(c.selector.as_deref(), Some("color = 'red' AND weight > 2"));
    assert_eq!(c.prefetch_size, 1000);
    assert_eq!(c.priority, 5);
    assert!(c.exclusive);

    let Command::ConsumerInfo(n) = golden(12, "consumer_info_durable_network") else {
        panic!("not a ConsumerInfo")
    };
    assert_eq!(n.destination.unwrap().kind, DestinationKind::Topic);
    assert_eq!(n.subscription_name.as_deref(), Some("durable-sub"));
    assert_eq!(n.client_id.as_deref(), Some("golden-client"));
    assert_eq!(n.broker_path.unwrap().len(), 2);
    let Some(DataStructure::NetworkBridgeFilter(f)) = n.additional_predicate.as_deref() else {
        panic!("no NetworkBridgeFilter")
    };
    assert_eq!((f.message_ttl, f.consumer_ttl), (3, 2));
    assert_eq!(n.network_consumer_path.unwrap()[0].value, 9);

    // v9 has no ConsumerInfo.clientId on the wire.
    let Command::ConsumerInfo(v9) = golden(9, "consumer_info_durable_network") else {
        panic!("not a ConsumerInfo")
    };
    assert_eq!(v9.client_id, None);
    assert_eq!(v9.subscription_name.as_deref(), Some("durable-sub"));
}

#[test]
fn text_message_body_properties_and_headers() {
    let Command::Message(m) = golden(12, "text_message") else {
        panic!("not a message")
    };
    assert_eq!(m.kind, MessageKind::Text);
    assert_eq!(
        m.text(1 << 20).unwrap().as_deref(),
        Some("hello, wörld \u{0} \u{1F600}")
    );
    assert_eq!(m.correlation_id.as_deref(), Some("corr-1"));
    assert_eq!(
        m.reply_to.as_ref().unwrap().kind,
        DestinationKind::TempQueue
    );
    assert_eq!(m.message_type.as_deref(), Some("greeting"));
    assert_eq!(m.group_id.as_deref(), Some("group-a"));
    assert_eq!(m.group_sequence, 2);
    assert!(m.persistent);
    assert_eq!(m.priority, 4);
    assert_eq!(m.timestamp, 1_700_000_000_001);
    assert_eq!(m.expiration, 1_700_000_060_000);
    assert_eq!(m.user_id.as_deref(), Some("alice"));
    assert!(m.jmsx_group_first_for_consumer);
    let id = m.message_id.as_ref().unwrap();
    assert_eq!(id.text_view.as_deref(), Some("ID:golden-text-view"));
    assert_eq!((id.producer_sequence_id, id.broker_sequence_id), (1, 1001));
    let props = m.properties(&MapLimits::default()).unwrap();
    assert_eq!(props.len(), 8);
    assert_eq!(
        props.get("color"),
        Some(&PrimitiveValue::String("red".into()))
    );
    assert_eq!(props.get("weight"), Some(&PrimitiveValue::Int(3)));
    assert_eq!(props.get("urgent"), Some(&PrimitiveValue::Bool(true)));
    assert_eq!(props.get("big"), Some(&PrimitiveValue::Long(i64::MIN)));
    assert_eq!(props.get("ratio"), Some(&PrimitiveValue::Double(0.25)));
    assert_eq!(props.get("f"), Some(&PrimitiveValue::Float(1.5)));
    assert_eq!(props.get("s"), Some(&PrimitiveValue::Short(-2)));
    assert_eq!(props.get("b"), Some(&PrimitiveValue::Byte(7)));
    // Re-marshalling the decoded map reproduces Java's bytes (order kept).
    let mut copy = (*m).clone();
    copy.set_properties(&props).unwrap();
    assert_eq!(copy.marshalled_properties, m.marshalled_properties);

    // v9: no MessageId.textView and no JMSXGroupFirstForConsumer on the wire.
    let Command::Message(old) = golden(9, "text_message") else {
        panic!("not a message")
    };
    assert_eq!(old.message_id.as_ref().unwrap().text_view, None);
    assert!(!old.jmsx_group_first_for_consumer);
}

#[test]
fn bytes_and_map_message_bodies() {
    let Command::Message(b) = golden(12, "bytes_message") else {
        panic!("not a message")
    };
    assert_eq!(b.kind, MessageKind::Bytes);
    assert_eq!(b.content.as_deref(), Some(&[0, 1, 2, 0xff, 1, 2, 3, 4][..]));
    let Some(TransactionId::Local(tx)) = &b.transaction_id else {
        panic!("no local transaction")
    };
    assert_eq!(tx.value, 11);

    let Command::Message(m) = golden(12, "map_message") else {
        panic!("not a message")
    };
    assert_eq!(m.kind, MessageKind::Map);
    let body = m.map_body(&MapLimits::default()).unwrap();
    assert_eq!(
        body.get("name"),
        Some(&PrimitiveValue::String("widget".into()))
    );
    assert_eq!(body.get("count"), Some(&PrimitiveValue::Int(12)));
    assert_eq!(
        body.get("grade"),
        Some(&PrimitiveValue::Char(u16::from(b'A')))
    );
    assert_eq!(
        body.get("raw"),
        Some(&PrimitiveValue::Bytes(vec![9, 8, 7].into()))
    );
    assert_eq!(body.get("price"), Some(&PrimitiveValue::Double(9.99)));
    assert_eq!(
        body.get("long"),
        Some(&PrimitiveValue::String("x".repeat(9000)))
    );
    let Some(PrimitiveValue::Map(nested)) = body.get("nested") else {
        panic!("no nested map")
    };
    assert_eq!(
        nested.get("list"),
        Some(&PrimitiveValue::List(vec![
            PrimitiveValue::String("a".into()),
            PrimitiveValue::Long(2),
            PrimitiveValue::Null
        ]))
    );
    // The 9000-character string travels as BIG_STRING; re-encoding keeps the bytes.
    let mut copy = (*m).clone();
    copy.set_map_body(&body).unwrap();
    assert_eq!(copy.content, m.content);
    assert_eq!(
        decode_map(m.content.as_deref().unwrap(), &MapLimits::default())
            .unwrap()
            .unwrap(),
        body
    );
}

#[test]
fn advisory_message_carries_a_consumer_info() {
    let Command::Message(m) = golden(12, "advisory_message") else {
        panic!("not a message")
    };
    assert_eq!(m.kind, MessageKind::Message);
    let Some(DataStructure::Command(c)) = m.data_structure.as_deref() else {
        panic!("no data structure")
    };
    assert!(matches!(**c, Command::ConsumerInfo(_)));
    assert_eq!(m.cluster.as_ref().unwrap()[0].value, "ID:c1");
    assert_eq!((m.arrival, m.broker_in_time, m.broker_out_time), (5, 6, 7));
}

#[test]
fn acks_transactions_and_removes() {
    let Command::MessageAck(a) = golden(12, "message_ack_standard") else {
        panic!("not an ack")
    };
    assert_eq!(a.ack_type, MessageAck::STANDARD);
    assert_eq!(a.message_count, 3);
    assert_eq!(a.first_message_id.unwrap().producer_sequence_id, 1);
    assert_eq!(a.last_message_id.unwrap().producer_sequence_id, 3);

    let Command::MessageAck(i) = golden(12, "message_ack_individual") else {
        panic!("not an ack")
    };
    assert_eq!(i.ack_type, MessageAck::INDIVIDUAL);
    assert!(i.first_message_id.is_none());
    assert!(matches!(i.transaction_id, Some(TransactionId::Local(_))));

    let Command::MessageAck(p) = golden(12, "message_ack_poison") else {
        panic!("not an ack")
    };
    let cause = p.poison_cause.unwrap();
    assert_eq!(cause.class_name.as_deref(), Some("java.lang.Throwable"));
    assert_eq!(cause.message.as_deref(), Some("redelivery limit"));

    let Command::TransactionInfo(t) = golden(12, "transaction_info") else {
        panic!("not a TransactionInfo")
    };
    assert_eq!(t.transaction_type, TransactionInfo::COMMIT_ONE_PHASE);
    let Command::TransactionInfo(x) = golden(12, "transaction_info_xa") else {
        panic!("not a TransactionInfo")
    };
    let Some(TransactionId::Xa(xid)) = x.transaction_id else {
        panic!("no XA id")
    };
    assert_eq!(xid.format_id, 0x1234);
    assert_eq!(xid.global_transaction_id.as_deref(), Some(&[1, 2, 3][..]));

    let Command::RemoveInfo(r) = golden(12, "remove_info_consumer") else {
        panic!("not a RemoveInfo")
    };
    assert!(matches!(
        r.object_id.as_deref(),
        Some(DataStructure::ConsumerId(c)) if c.value == 7
    ));
    let Command::RemoveInfo(r) = golden(12, "remove_info_connection") else {
        panic!("not a RemoveInfo")
    };
    assert_eq!(r.last_delivered_sequence_id, -1);
}

#[test]
fn responses_and_exceptions() {
    let Command::Response(r) = golden(12, "response") else {
        panic!("not a Response")
    };
    assert_eq!(r.correlation_id, 1);
    let Command::ExceptionResponse(e) = golden(12, "exception_response") else {
        panic!("not an ExceptionResponse")
    };
    let ex = e.exception.unwrap();
    assert_eq!(
        ex.class_name.as_deref(),
        Some("javax.jms.InvalidSelectorException")
    );
    assert_eq!(ex.message.as_deref(), Some("bad selector"));
    assert!(ex.stack_trace.is_empty());

    let Command::ExceptionResponse(s) = golden(12, "exception_response.st") else {
        panic!("not an ExceptionResponse")
    };
    let ex = s.exception.unwrap();
    assert_eq!(ex.stack_trace.len(), 2);
    assert_eq!(ex.stack_trace[0].line_number, 10);
    assert_eq!(ex.stack_trace[1].file_name, None);
    let cause = ex.cause.unwrap();
    assert_eq!(cause.message.as_deref(), Some("inner"));
    assert_eq!(cause.stack_trace[0].method_name.as_deref(), Some("c"));

    let Command::DataArrayResponse(d) = golden(12, "data_array_response") else {
        panic!("not a DataArrayResponse")
    };
    assert_eq!(d.data.unwrap().len(), 2);
    let Command::IntegerResponse(i) = golden(12, "integer_response") else {
        panic!("not an IntegerResponse")
    };
    assert_eq!((i.correlation_id, i.result), (11, 2));
}

#[test]
fn dispatch_pull_control_and_broker_info() {
    let Command::MessageDispatch(d) = golden(12, "message_dispatch") else {
        panic!("not a dispatch")
    };
    assert_eq!(d.redelivery_counter, 1);
    let m = d.message.unwrap();
    assert_eq!(m.kind, MessageKind::Text);
    assert_eq!(m.correlation_id.as_deref(), Some("corr-1"));
    let Command::MessageDispatch(end) = golden(12, "message_dispatch_null") else {
        panic!("not a dispatch")
    };
    assert!(end.message.is_none());

    let Command::MessagePull(p) = golden(12, "message_pull") else {
        panic!("not a pull")
    };
    assert_eq!(p.timeout, -1);
    assert_eq!(p.correlation_id.as_deref(), Some("pull-1"));

    let Command::ConnectionControl(c) = golden(12, "connection_control") else {
        panic!("not a ConnectionControl")
    };
    assert!(c.rebalance_connection);
    assert_eq!(c.token.as_deref(), Some(&[42][..]));

    let Command::DestinationInfo(di) = golden(12, "destination_info") else {
        panic!("not a DestinationInfo")
    };
    assert_eq!(di.destination.unwrap().kind, DestinationKind::TempQueue);
    assert_eq!(di.timeout, 5000);

    let Command::BrokerInfo(b) = golden(12, "broker_info") else {
        panic!("not a BrokerInfo")
    };
    assert_eq!(b.broker_name.as_deref(), Some("ferromq"));
    assert_eq!(b.connection_id, 42);
    let peers = b.peer_broker_infos.unwrap();
    assert_eq!(peers[0].broker_name.as_deref(), Some("peer"));

    let Command::KeepAliveInfo(k) = golden(12, "keep_alive_info") else {
        panic!("not a KeepAliveInfo")
    };
    assert!(!k.header.response_required);
    let Command::ShutdownInfo(s) = golden(12, "shutdown_info") else {
        panic!("not a ShutdownInfo")
    };
    assert_eq!(s.header.command_id, 60);
}
