//! Property tests of the OpenWire codec: every command type round-trips with arbitrary field
//! values, arbitrary or damaged input never panics, and every limit is a typed error.

use bytes::{Bytes, BytesMut};
use ferromq_protocol::openwire::map::{decode_map, encode_map};
use ferromq_protocol::openwire::*;
use proptest::collection::vec;
use proptest::option::of;
use proptest::prelude::*;

// -- strategies -------------------------------------------------------------------------------

fn s() -> impl Strategy<Value = String> {
    ".{0,12}"
}

fn os() -> impl Strategy<Value = Option<String>> {
    of(s())
}

fn ob() -> impl Strategy<Value = Option<Bytes>> {
    of(vec(any::<u8>(), 0..16).prop_map(Bytes::from))
}

fn header() -> impl Strategy<Value = CommandHeader> {
    (any::<i32>(), any::<bool>()).prop_map(|(command_id, response_required)| CommandHeader {
        command_id,
        response_required,
    })
}

fn connection_id() -> impl Strategy<Value = ConnectionId> {
    s().prop_map(|value| ConnectionId { value })
}

fn session_id() -> impl Strategy<Value = SessionId> {
    (s(), any::<i64>()).prop_map(|(connection_id, value)| SessionId {
        connection_id,
        value,
    })
}

fn consumer_id() -> impl Strategy<Value = ConsumerId> {
    (s(), any::<i64>(), any::<i64>()).prop_map(|(connection_id, session_id, value)| ConsumerId {
        connection_id,
        session_id,
        value,
    })
}

fn producer_id() -> impl Strategy<Value = ProducerId> {
    (s(), any::<i64>(), any::<i64>()).prop_map(|(connection_id, value, session_id)| ProducerId {
        connection_id,
        value,
        session_id,
    })
}

fn broker_id() -> impl Strategy<Value = BrokerId> {
    s().prop_map(|value| BrokerId { value })
}

fn broker_path() -> impl Strategy<Value = Option<Vec<BrokerId>>> {
    of(vec(broker_id(), 0..3))
}

fn message_id() -> impl Strategy<Value = MessageId> {
    (os(), of(producer_id()), any::<i64>(), any::<i64>()).prop_map(|(t, p, ps, bs)| MessageId {
        text_view: t,
        producer_id: p,
        producer_sequence_id: ps,
        broker_sequence_id: bs,
    })
}

fn destination() -> impl Strategy<Value = Destination> {
    (
        prop_oneof![
            Just(DestinationKind::Queue),
            Just(DestinationKind::Topic),
            Just(DestinationKind::TempQueue),
            Just(DestinationKind::TempTopic)
        ],
        s(),
    )
        .prop_map(|(kind, physical_name)| Destination {
            kind,
            physical_name,
        })
}

fn transaction_id() -> impl Strategy<Value = TransactionId> {
    prop_oneof![
        (any::<i64>(), of(connection_id())).prop_map(|(value, connection_id)| {
            TransactionId::Local(LocalTransactionId {
                value,
                connection_id,
            })
        }),
        (any::<i32>(), ob(), ob()).prop_map(|(format_id, g, b)| TransactionId::Xa(
            XaTransactionId {
                format_id,
                global_transaction_id: g,
                branch_qualifier: b,
            }
        )),
    ]
}

fn stack_frame() -> impl Strategy<Value = StackTraceElement> {
    (os(), os(), os(), any::<i32>()).prop_map(|(c, m, f, l)| StackTraceElement {
        class_name: c,
        method_name: m,
        file_name: f,
        line_number: l,
    })
}

fn broker_error() -> impl Strategy<Value = BrokerError> {
    let leaf = (os(), os(), vec(stack_frame(), 0..3))
        .prop_map(|(c, m, st)| BrokerError {
            class_name: c,
            message: m,
            stack_trace: st,
            cause: None,
        })
        .boxed();
    (leaf.clone(), of(leaf)).prop_map(|(mut e, cause)| {
        e.cause = cause.map(Box::new);
        e
    })
}

/// Data structures without nested commands (those come from `command()`).
fn leaf_data_structure() -> impl Strategy<Value = DataStructure> {
    prop_oneof![
        destination().prop_map(DataStructure::Destination),
        connection_id().prop_map(DataStructure::ConnectionId),
        session_id().prop_map(DataStructure::SessionId),
        consumer_id().prop_map(DataStructure::ConsumerId),
        producer_id().prop_map(DataStructure::ProducerId),
        broker_id().prop_map(DataStructure::BrokerId),
        message_id().prop_map(DataStructure::MessageId),
        transaction_id().prop_map(DataStructure::TransactionId),
        (of(broker_id()), any::<i32>(), any::<i32>()).prop_map(|(b, m, c)| {
            DataStructure::NetworkBridgeFilter(NetworkBridgeFilter {
                network_broker_id: b,
                message_ttl: m,
                consumer_ttl: c,
            })
        }),
        header().prop_map(
            |header| DataStructure::Command(Box::new(Command::KeepAliveInfo(KeepAliveInfo {
                header
            })))
        ),
    ]
}

fn message_kind() -> impl Strategy<Value = MessageKind> {
    prop_oneof![
        Just(MessageKind::Message),
        Just(MessageKind::Bytes),
        Just(MessageKind::Map),
        Just(MessageKind::Object),
        Just(MessageKind::Stream),
        Just(MessageKind::Text),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    let a = (
        message_kind(),
        header(),
        of(producer_id()),
        of(destination()),
        of(transaction_id()),
        of(destination()),
        of(message_id()),
        of(transaction_id()),
        os(),
        any::<i32>(),
        os(),
        any::<bool>(),
    );
    let b = (
        any::<i64>(),
        any::<u8>(),
        of(destination()),
        any::<i64>(),
        os(),
        ob(),
        ob(),
        of(leaf_data_structure()),
        of(consumer_id()),
        any::<bool>(),
        any::<i32>(),
        broker_path(),
    );
    let c = (
        any::<i64>(),
        os(),
        any::<bool>(),
        any::<bool>(),
        broker_path(),
        any::<i64>(),
        any::<i64>(),
        any::<bool>(),
    );
    (a, b, c).prop_map(|(a, b, c)| Message {
        kind: a.0,
        header: a.1,
        producer_id: a.2,
        destination: a.3,
        transaction_id: a.4,
        original_destination: a.5,
        message_id: a.6,
        original_transaction_id: a.7,
        group_id: a.8,
        group_sequence: a.9,
        correlation_id: a.10,
        persistent: a.11,
        expiration: b.0,
        priority: b.1,
        reply_to: b.2,
        timestamp: b.3,
        message_type: b.4,
        content: b.5,
        marshalled_properties: b.6,
        data_structure: b.7.map(Box::new),
        target_consumer_id: b.8,
        compressed: b.9,
        redelivery_counter: b.10,
        broker_path: b.11,
        arrival: c.0,
        user_id: c.1,
        received_by_df_bridge: c.2,
        droppable: c.3,
        cluster: c.4,
        broker_in_time: c.5,
        broker_out_time: c.6,
        jmsx_group_first_for_consumer: c.7,
    })
}

fn broker_info() -> impl Strategy<Value = BrokerInfo> {
    let base = (
        header(),
        of(broker_id()),
        os(),
        os(),
        any::<[bool; 5]>(),
        any::<i64>(),
        os(),
        os(),
    )
        .prop_map(|(header, id, url, name, f, cid, up, np)| BrokerInfo {
            header,
            broker_id: id,
            broker_url: url,
            peer_broker_infos: None,
            broker_name: name,
            slave_broker: f[0],
            master_broker: f[1],
            fault_tolerant_configuration: f[2],
            duplex_connection: f[3],
            network_connection: f[4],
            connection_id: cid,
            broker_upload_url: up,
            network_properties: np,
        })
        .boxed();
    (base.clone(), of(vec(base, 0..2))).prop_map(|(mut b, peers)| {
        b.peer_broker_infos = peers;
        b
    })
}

fn consumer_info() -> impl Strategy<Value = ConsumerInfo> {
    let a = (
        header(),
        of(consumer_id()),
        any::<bool>(),
        of(destination()),
        any::<i32>(),
        any::<i32>(),
        any::<bool>(),
        os(),
        os(),
        os(),
    );
    let b = (
        any::<[bool; 6]>(),
        any::<u8>(),
        broker_path(),
        of(leaf_data_structure()),
        of(vec(consumer_id(), 0..3)),
    );
    (a, b).prop_map(|(a, b)| ConsumerInfo {
        header: a.0,
        consumer_id: a.1,
        browser: a.2,
        destination: a.3,
        prefetch_size: a.4,
        maximum_pending_message_limit: a.5,
        dispatch_async: a.6,
        selector: a.7,
        client_id: a.8,
        subscription_name: a.9,
        no_local: b.0[0],
        exclusive: b.0[1],
        retroactive: b.0[2],
        network_subscription: b.0[3],
        optimized_acknowledge: b.0[4],
        no_range_acks: b.0[5],
        priority: b.1,
        broker_path: b.2,
        additional_predicate: b.3.map(Box::new),
        network_consumer_path: b.4,
    })
}

/// One arbitrary command of every type this codec supports.
fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        (any::<[u8; 8]>(), any::<i32>(), ob()).prop_map(|(magic, version, p)| {
            Command::WireFormatInfo(WireFormatInfo {
                magic,
                version,
                marshalled_properties: p,
            })
        }),
        broker_info().prop_map(Command::BrokerInfo),
        (
            header(),
            of(connection_id()),
            os(),
            os(),
            os(),
            broker_path(),
            any::<[bool; 5]>(),
            os()
        )
            .prop_map(|(header, id, c, p, u, bp, f, ip)| {
                Command::ConnectionInfo(ConnectionInfo {
                    header,
                    connection_id: id,
                    client_id: c,
                    password: p,
                    user_name: u,
                    broker_path: bp,
                    broker_master_connector: f[0],
                    manageable: f[1],
                    client_master: f[2],
                    fault_tolerant: f[3],
                    failover_reconnect: f[4],
                    client_ip: ip,
                })
            }),
        (header(), of(session_id())).prop_map(|(header, session_id)| Command::SessionInfo(
            SessionInfo { header, session_id }
        )),
        consumer_info().prop_map(Command::ConsumerInfo),
        (
            header(),
            of(producer_id()),
            of(destination()),
            broker_path(),
            any::<bool>(),
            any::<i32>()
        )
            .prop_map(
                |(header, p, d, bp, a, w)| Command::ProducerInfo(ProducerInfo {
                    header,
                    producer_id: p,
                    destination: d,
                    broker_path: bp,
                    dispatch_async: a,
                    window_size: w,
                })
            ),
        (
            header(),
            of(connection_id()),
            of(transaction_id()),
            any::<u8>()
        )
            .prop_map(
                |(header, c, t, ty)| Command::TransactionInfo(TransactionInfo {
                    header,
                    connection_id: c,
                    transaction_id: t,
                    transaction_type: ty,
                })
            ),
        (
            header(),
            of(connection_id()),
            of(destination()),
            any::<u8>(),
            any::<i64>(),
            broker_path()
        )
            .prop_map(|(header, c, d, o, t, bp)| Command::DestinationInfo(
                DestinationInfo {
                    header,
                    connection_id: c,
                    destination: d,
                    operation_type: o,
                    timeout: t,
                    broker_path: bp,
                }
            )),
        (header(), of(connection_id()), os(), os()).prop_map(|(header, c, s, id)| {
            Command::RemoveSubscriptionInfo(RemoveSubscriptionInfo {
                header,
                connection_id: c,
                subscription_name: s,
                client_id: id,
            })
        }),
        header().prop_map(|header| Command::KeepAliveInfo(KeepAliveInfo { header })),
        header().prop_map(|header| Command::ShutdownInfo(ShutdownInfo { header })),
        (header(), of(leaf_data_structure()), any::<i64>()).prop_map(|(header, o, l)| {
            Command::RemoveInfo(RemoveInfo {
                header,
                object_id: o.map(Box::new),
                last_delivered_sequence_id: l,
            })
        }),
        (header(), os()).prop_map(|(header, command)| Command::ControlCommand(ControlCommand {
            header,
            command
        })),
        header().prop_map(|header| Command::FlushCommand(FlushCommand { header })),
        (header(), of(broker_error()), of(connection_id())).prop_map(|(header, e, c)| {
            Command::ConnectionError(ConnectionError {
                header,
                exception: e,
                connection_id: c,
            })
        }),
        (
            header(),
            of(destination()),
            of(consumer_id()),
            any::<i32>(),
            any::<[bool; 4]>()
        )
            .prop_map(
                |(header, d, c, p, f)| Command::ConsumerControl(ConsumerControl {
                    header,
                    destination: d,
                    close: f[0],
                    consumer_id: c,
                    prefetch: p,
                    flush: f[1],
                    start: f[2],
                    stop: f[3],
                })
            ),
        (header(), any::<[bool; 6]>(), os(), os(), ob()).prop_map(|(header, f, cb, rt, t)| {
            Command::ConnectionControl(ConnectionControl {
                header,
                close: f[0],
                exit: f[1],
                fault_tolerant: f[2],
                resume: f[3],
                suspend: f[4],
                connected_brokers: cb,
                reconnect_to: rt,
                rebalance_connection: f[5],
                token: t,
            })
        }),
        (header(), of(producer_id()), any::<i32>()).prop_map(|(header, p, size)| {
            Command::ProducerAck(ProducerAck {
                header,
                producer_id: p,
                size,
            })
        }),
        (
            header(),
            of(consumer_id()),
            of(destination()),
            any::<i64>(),
            os(),
            of(message_id())
        )
            .prop_map(
                |(header, c, d, t, cid, m)| Command::MessagePull(MessagePull {
                    header,
                    consumer_id: c,
                    destination: d,
                    timeout: t,
                    correlation_id: cid,
                    message_id: m,
                })
            ),
        (
            header(),
            of(consumer_id()),
            of(destination()),
            of(message()),
            any::<i32>()
        )
            .prop_map(
                |(header, c, d, m, r)| Command::MessageDispatch(MessageDispatch {
                    header,
                    consumer_id: c,
                    destination: d,
                    message: m.map(Box::new),
                    redelivery_counter: r,
                })
            ),
        (
            header(),
            of(destination()),
            of(transaction_id()),
            of(consumer_id()),
            any::<u8>(),
            of(message_id()),
            of(message_id()),
            any::<i32>(),
            of(broker_error())
        )
            .prop_map(
                |(header, d, t, c, a, f, l, n, p)| Command::MessageAck(MessageAck {
                    header,
                    destination: d,
                    transaction_id: t,
                    consumer_id: c,
                    ack_type: a,
                    first_message_id: f,
                    last_message_id: l,
                    message_count: n,
                    poison_cause: p,
                })
            ),
        message().prop_map(|m| Command::Message(Box::new(m))),
        (header(), any::<i32>()).prop_map(|(header, correlation_id)| Command::Response(Response {
            header,
            correlation_id
        })),
        (header(), any::<i32>(), of(broker_error())).prop_map(|(header, c, e)| {
            Command::ExceptionResponse(ExceptionResponse {
                header,
                correlation_id: c,
                exception: e,
            })
        }),
        (header(), any::<i32>(), of(leaf_data_structure())).prop_map(|(header, c, d)| {
            Command::DataResponse(DataResponse {
                header,
                correlation_id: c,
                data: d.map(Box::new),
            })
        }),
        (header(), any::<i32>(), of(vec(leaf_data_structure(), 0..3))).prop_map(
            |(header, c, d)| Command::DataArrayResponse(DataArrayResponse {
                header,
                correlation_id: c,
                data: d,
            })
        ),
        (header(), any::<i32>(), any::<i32>()).prop_map(|(header, c, r)| {
            Command::IntegerResponse(IntegerResponse {
                header,
                correlation_id: c,
                result: r,
            })
        }),
        (header(), any::<i32>(), any::<i32>()).prop_map(|(header, f, l)| {
            Command::ReplayCommand(ReplayCommand {
                header,
                first_nak_number: f,
                last_nak_number: l,
            })
        }),
        (
            header(),
            of(consumer_id()),
            of(destination()),
            any::<i64>(),
            of(message_id())
        )
            .prop_map(|(header, c, d, s, m)| Command::MessageDispatchNotification(
                MessageDispatchNotification {
                    header,
                    consumer_id: c,
                    destination: d,
                    delivery_sequence_id: s,
                    message_id: m,
                }
            )),
    ]
}

fn primitive_value() -> impl Strategy<Value = PrimitiveValue> {
    let leaf = prop_oneof![
        Just(PrimitiveValue::Null),
        any::<bool>().prop_map(PrimitiveValue::Bool),
        any::<i8>().prop_map(PrimitiveValue::Byte),
        any::<u16>().prop_map(PrimitiveValue::Char),
        any::<i16>().prop_map(PrimitiveValue::Short),
        any::<i32>().prop_map(PrimitiveValue::Int),
        any::<i64>().prop_map(PrimitiveValue::Long),
        any::<f64>().prop_map(PrimitiveValue::Double),
        any::<f32>().prop_map(PrimitiveValue::Float),
        s().prop_map(PrimitiveValue::String),
        vec(any::<u8>(), 0..8).prop_map(|b| PrimitiveValue::Bytes(b.into())),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(PrimitiveValue::List),
            vec((s(), inner), 0..4)
                .prop_map(|entries| PrimitiveValue::Map(PrimitiveMap { entries })),
        ]
    })
}

// -- helpers ----------------------------------------------------------------------------------

fn frame_of(wire: &[u8]) -> Frame {
    let mut buf = BytesMut::from(wire);
    let frame = Decoder::default()
        .decode(&mut buf)
        .expect("framing")
        .expect("complete frame");
    assert!(buf.is_empty());
    frame
}

fn full_opts(version: u32) -> CodecOptions {
    CodecOptions {
        stack_trace_enabled: true,
        ..CodecOptions::new(version)
    }
}

/// A `DataResponse` whose data is `depth - 1` more `DataResponse`s.
fn nested_responses(depth: usize) -> Command {
    let mut cmd = Command::KeepAliveInfo(KeepAliveInfo::default());
    for _ in 0..depth {
        cmd = Command::DataResponse(DataResponse {
            data: Some(Box::new(DataStructure::Command(Box::new(cmd)))),
            ..DataResponse::default()
        });
    }
    cmd
}

// -- tests ------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_command_round_trips_in_v10_to_v12(cmd in command(), version in 10u32..=12) {
        let opts = full_opts(version);
        let wire = encode_command_with(&cmd, &opts).unwrap();
        let back = decode_command_with(&frame_of(&wire), &opts).unwrap();
        prop_assert_eq!(&back, &cmd);
        prop_assert_eq!(back.type_id(), wire[4]);
    }

    #[test]
    fn v9_encoding_is_stable_through_a_decode(cmd in command()) {
        // v9 lacks three fields, so compare encodings rather than values.
        let opts = full_opts(9);
        let wire = encode_command_with(&cmd, &opts).unwrap();
        let back = decode_command_with(&frame_of(&wire), &opts).unwrap();
        prop_assert_eq!(encode_command_with(&back, &opts).unwrap(), wire);
    }

    #[test]
    fn without_stack_traces_only_class_and_message_travel(e in broker_error()) {
        let cmd = Command::ExceptionResponse(ExceptionResponse {
            exception: Some(e.clone()),
            ..ExceptionResponse::default()
        });
        let wire = encode_command(&cmd, 12).unwrap();
        let Command::ExceptionResponse(back) = decode_command(&frame_of(&wire), 12).unwrap() else {
            panic!("type changed");
        };
        let expected = BrokerError { class_name: e.class_name, message: e.message, ..BrokerError::default() };
        prop_assert_eq!(back.exception, Some(expected));
    }

    #[test]
    fn random_frames_never_panic(t in any::<u8>(), body in vec(any::<u8>(), 0..256), version in 9u32..=12, st in any::<bool>()) {
        let frame = Frame { data_type: t, body: body.into() };
        let opts = CodecOptions { stack_trace_enabled: st, ..CodecOptions::new(version) };
        if let Ok(cmd) = decode_command_with(&frame, &opts) {
            // Whatever decodes re-encodes to the same type byte.
            prop_assert_eq!(encode_command_with(&cmd, &opts).unwrap()[4], t);
        }
    }

    #[test]
    fn damaged_valid_frames_never_panic(cmd in command(), pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let opts = full_opts(12);
        let wire = encode_command_with(&cmd, &opts).unwrap();
        let frame = frame_of(&wire);
        let mut body = frame.body.to_vec();
        if !body.is_empty() {
            let i = pos.index(body.len());
            body[i] = byte;
            let _ = decode_command_with(&Frame { data_type: frame.data_type, body: body.into() }, &opts);
        }
    }

    #[test]
    fn truncated_frames_are_errors(cmd in command(), cut in any::<prop::sample::Index>()) {
        let opts = full_opts(12);
        let frame = frame_of(&encode_command_with(&cmd, &opts).unwrap());
        prop_assume!(!frame.body.is_empty());
        let keep = cut.index(frame.body.len());
        let short = Frame { data_type: frame.data_type, body: frame.body.slice(..keep) };
        prop_assert!(decode_command_with(&short, &opts).is_err());
    }

    #[test]
    fn primitive_maps_round_trip_byte_identical(entries in vec((s(), primitive_value()), 0..8)) {
        let map = PrimitiveMap { entries };
        let wire = encode_map(Some(&map)).unwrap();
        let back = decode_map(&wire, &MapLimits::default()).unwrap().unwrap();
        prop_assert_eq!(back.len(), map.len());
        // Byte comparison, because NaN != NaN.
        prop_assert_eq!(encode_map(Some(&back)).unwrap(), wire);
    }

    #[test]
    fn random_map_bytes_never_panic(data in vec(any::<u8>(), 0..256)) {
        let limits = MapLimits { max_depth: 4, max_entries: 16, max_value_bytes: 64 };
        let _ = decode_map(&data, &limits);
    }
}

#[test]
fn map_deeper_than_the_limit_is_refused() {
    let mut value = PrimitiveValue::Int(1);
    for _ in 0..20 {
        value = PrimitiveValue::Map(PrimitiveMap {
            entries: vec![("k".into(), value)],
        });
    }
    let map = PrimitiveMap {
        entries: vec![("root".into(), value)],
    };
    let wire = encode_map(Some(&map)).unwrap();
    assert_eq!(
        decode_map(&wire, &MapLimits::default()),
        Err(OpenWireError::MapTooDeep { max: 16 })
    );
    let deep_enough = MapLimits {
        max_depth: 32,
        ..MapLimits::default()
    };
    assert_eq!(decode_map(&wire, &deep_enough).unwrap(), Some(map));
}

#[test]
fn nested_lists_count_towards_the_depth_limit() {
    let mut value = PrimitiveValue::Null;
    for _ in 0..5 {
        value = PrimitiveValue::List(vec![value]);
    }
    let wire = encode_map(Some(&PrimitiveMap {
        entries: vec![("l".into(), value)],
    }))
    .unwrap();
    let limits = MapLimits {
        max_depth: 4,
        ..MapLimits::default()
    };
    assert_eq!(
        decode_map(&wire, &limits),
        Err(OpenWireError::MapTooDeep { max: 4 })
    );
}

#[test]
fn map_entry_count_and_value_size_limits() {
    let map = PrimitiveMap {
        entries: (0..10)
            .map(|i| (format!("k{i}"), PrimitiveValue::Int(i)))
            .collect(),
    };
    let wire = encode_map(Some(&map)).unwrap();
    let few = MapLimits {
        max_entries: 9,
        ..MapLimits::default()
    };
    assert_eq!(
        decode_map(&wire, &few),
        Err(OpenWireError::TooManyEntries { count: 10, max: 9 })
    );

    let big = PrimitiveMap {
        entries: vec![("s".into(), PrimitiveValue::String("x".repeat(100)))],
    };
    let small = MapLimits {
        max_value_bytes: 99,
        ..MapLimits::default()
    };
    assert_eq!(
        decode_map(&encode_map(Some(&big)).unwrap(), &small),
        Err(OpenWireError::ValueTooLarge { size: 100, max: 99 })
    );

    // A count larger than the bytes that follow is refused before allocating.
    let lying = [0x00, 0x00, 0xff, 0xff];
    assert_eq!(
        decode_map(&lying, &MapLimits::default()),
        Err(OpenWireError::Truncated)
    );
    assert_eq!(
        decode_map(&[0, 0, 0, 1, 0, 1, b'k', 99], &MapLimits::default()),
        Err(OpenWireError::UnknownPrimitiveType(99))
    );
}

#[test]
fn big_strings_switch_encoding_at_the_java_threshold() {
    let short = "y".repeat(8190);
    let long = "y".repeat(8191);
    for (text, tag) in [(short, 9u8), (long, 13u8)] {
        let map = PrimitiveMap {
            entries: vec![("k".into(), PrimitiveValue::String(text))],
        };
        let wire = encode_map(Some(&map)).unwrap();
        // count (4) + key length (2) + "k" (1), then the tag.
        assert_eq!(wire[7], tag);
        assert_eq!(decode_map(&wire, &MapLimits::default()).unwrap(), Some(map));
    }
}

#[test]
fn nesting_beyond_the_limit_is_refused_both_ways() {
    let ok = nested_responses(MAX_NESTING_DEPTH);
    let wire = encode_command(&ok, 12).unwrap();
    assert_eq!(decode_command(&frame_of(&wire), 12).unwrap(), ok);

    let too_deep = nested_responses(MAX_NESTING_DEPTH + 1);
    assert_eq!(
        encode_command(&too_deep, 12),
        Err(OpenWireError::NestingTooDeep {
            max: MAX_NESTING_DEPTH
        })
    );
    // Hand-built: a DataResponse body is header (5) + correlation id (4) + nested object.
    let mut body = Vec::new();
    for _ in 0..=MAX_NESTING_DEPTH {
        body.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 32]);
    }
    let frame = Frame {
        data_type: 32,
        body: body.into(),
    };
    assert_eq!(
        decode_command(&frame, 12),
        Err(OpenWireError::NestingTooDeep {
            max: MAX_NESTING_DEPTH
        })
    );
}

#[test]
fn throwable_cause_chains_are_depth_limited() {
    // ExceptionResponse: header, correlation id, then throwables each with 0 frames and a cause.
    let mut body = vec![0, 0, 0, 0, 0, 0, 0, 0, 0];
    for _ in 0..100 {
        body.extend_from_slice(&[1, 0, 0, 0, 0]);
    }
    let frame = Frame {
        data_type: 31,
        body: body.into(),
    };
    assert_eq!(
        decode_command_with(&frame, &full_opts(12)),
        Err(OpenWireError::NestingTooDeep {
            max: MAX_NESTING_DEPTH
        })
    );
}

#[test]
fn object_arrays_are_bounded() {
    // ProducerInfo: header, null producer id, null destination, broker path of 5000 elements.
    let body = vec![0, 0, 0, 0, 0, 0, 0, 1, 0x13, 0x88];
    let frame = Frame {
        data_type: 6,
        body: body.into(),
    };
    assert_eq!(
        decode_command(&frame, 12),
        Err(OpenWireError::ArrayTooLong {
            count: 5000,
            max: 4096
        })
    );
    let big = Command::ProducerInfo(ProducerInfo {
        broker_path: Some(vec![BrokerId::default(); 5000]),
        ..ProducerInfo::default()
    });
    assert!(matches!(
        encode_command(&big, 12),
        Err(OpenWireError::ArrayTooLong { count: 5000, .. })
    ));
}

#[test]
fn unknown_types_versions_and_wrong_nested_types_are_typed_errors() {
    let frame = Frame {
        data_type: 13,
        body: Bytes::new(),
    };
    assert_eq!(
        decode_command(&frame, 12),
        Err(OpenWireError::UnknownCommand(13))
    );
    let frame = Frame {
        data_type: 29,
        body: Bytes::new(),
    };
    assert_eq!(
        decode_command(&frame, 12),
        Err(OpenWireError::UnknownCommand(29))
    );
    let ka = Frame {
        data_type: 10,
        body: Bytes::from_static(&[0, 0, 0, 1, 0]),
    };
    assert_eq!(
        decode_command(&ka, 8),
        Err(OpenWireError::UnsupportedVersion(8))
    );
    assert!(matches!(
        decode_command(&ka, 12),
        Ok(Command::KeepAliveInfo(_))
    ));
    // SessionInfo whose session id is tagged as a ConnectionId.
    let bad = Frame {
        data_type: 4,
        body: Bytes::from_static(&[0, 0, 0, 1, 0, 1, 120, 1, 0, 1, b'x']),
    };
    assert_eq!(
        decode_command(&bad, 12),
        Err(OpenWireError::UnexpectedType {
            field: "SessionInfo.sessionId",
            found: 120
        })
    );
    // A null ConnectionId value.
    let null_id = Frame {
        data_type: 4,
        body: Bytes::from_static(&[0, 0, 0, 1, 0, 1, 121, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
    };
    assert_eq!(
        decode_command(&null_id, 12),
        Err(OpenWireError::NullValue("SessionId.connectionId"))
    );
    // Trailing garbage after a KeepAliveInfo.
    let trailing = Frame {
        data_type: 10,
        body: Bytes::from_static(&[0, 0, 0, 1, 0, 9]),
    };
    assert_eq!(
        decode_command(&trailing, 12),
        Err(OpenWireError::TrailingBytes(1))
    );
}

#[test]
fn message_body_helpers() {
    let mut text = Message {
        kind: MessageKind::Text,
        ..Message::default()
    };
    text.set_text(Some("héllo\u{0}")).unwrap();
    assert_eq!(text.text(1024).unwrap().as_deref(), Some("héllo\u{0}"));
    assert_eq!(
        text.text(3),
        Err(OpenWireError::ValueTooLarge { size: 8, max: 3 })
    );
    text.compressed = true;
    assert_eq!(text.text(1024), Err(OpenWireError::Compressed));
    assert_eq!(
        text.map_body(&MapLimits::default()),
        Err(OpenWireError::WrongMessageKind("map"))
    );

    let mut map = Message {
        kind: MessageKind::Map,
        ..Message::default()
    };
    let mut body = PrimitiveMap::new();
    body.insert("a", PrimitiveValue::Int(1));
    body.insert("a", PrimitiveValue::Int(2));
    assert_eq!(body.len(), 1);
    map.set_map_body(&body).unwrap();
    assert_eq!(map.map_body(&MapLimits::default()).unwrap(), body);
    map.set_properties(&body).unwrap();
    assert_eq!(map.properties(&MapLimits::default()).unwrap(), body);
    assert_eq!(
        map.set_text(Some("x")),
        Err(OpenWireError::WrongMessageKind("text"))
    );
}
