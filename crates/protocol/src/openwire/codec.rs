//! Command marshalling: loose encoding with the marshalling cache off, field by field in the
//! order of `openwire/v12/*Marshaller.looseUnmarshal`.
//!
//! With the cache off a "cached object" is written exactly like a nested object (a "not null"
//! boolean, the type byte, the body), so both go through [`Dec::nested`] / [`Enc::nested`].
//! Versions 9–11 differ from 12 only in three fields (see `docs/openwire.md`), gated on
//! [`CodecOptions::version`].

use bytes::Bytes;

use super::primitives::{i32_len, Reader, Writer};
use super::types::*;
use super::{Frame, OpenWireError};

/// Nested objects deeper than this are refused (messages in dispatches in data responses...).
pub const MAX_NESTING_DEPTH: usize = 32;

/// Lowest supported OpenWire version.
const MIN_VERSION: u32 = 9;
/// Highest supported OpenWire version.
const MAX_VERSION: u32 = 12;

/// Negotiated wire-format settings the codec needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodecOptions {
    /// Negotiated OpenWire version (9..=12).
    pub version: u32,
    /// Negotiated `StackTraceEnabled`: throwables carry stack frames and a cause.
    pub stack_trace_enabled: bool,
    /// Maximum elements of an object array (broker paths, peer infos, data arrays) and of
    /// stack frames in a throwable.
    pub max_array_len: usize,
}

impl CodecOptions {
    /// Options for `version` with stack traces off (what ferromq advertises).
    pub fn new(version: u32) -> Self {
        Self {
            version,
            stack_trace_enabled: false,
            max_array_len: 4096,
        }
    }

    fn check(&self) -> Result<(), OpenWireError> {
        if (MIN_VERSION..=MAX_VERSION).contains(&self.version) {
            Ok(())
        } else {
            Err(OpenWireError::UnsupportedVersion(self.version))
        }
    }

    /// v10 added `MessageId.textView`, `ConsumerInfo.clientId` and
    /// `Message.jMSXGroupFirstForConsumer`, and split `NetworkBridgeFilter.networkTTL` into
    /// message and consumer TTLs (moving it after the broker id).
    fn v10(&self) -> bool {
        self.version >= 10
    }
}

/// Decodes one frame with stack traces off (see [`decode_command_with`]).
pub fn decode_command(frame: &Frame, version: u32) -> Result<Command, OpenWireError> {
    decode_command_with(frame, &CodecOptions::new(version))
}

/// Decodes one frame into a [`Command`]; the whole body must be consumed.
pub fn decode_command_with(frame: &Frame, opts: &CodecOptions) -> Result<Command, OpenWireError> {
    opts.check()?;
    let mut d = Dec {
        r: Reader::new(&frame.body),
        opts,
        depth: 0,
    };
    let cmd = d.command(frame.data_type)?;
    d.r.finish()?;
    Ok(cmd)
}

/// Encodes a command as a whole frame (size prefix, type byte, body), stack traces off.
pub fn encode_command(cmd: &Command, version: u32) -> Result<Vec<u8>, OpenWireError> {
    encode_command_with(cmd, &CodecOptions::new(version))
}

/// Encodes a command as a whole frame (size prefix, type byte, body).
pub fn encode_command_with(cmd: &Command, opts: &CodecOptions) -> Result<Vec<u8>, OpenWireError> {
    opts.check()?;
    let mut e = Enc {
        w: Writer::new(),
        opts,
        depth: 0,
    };
    // Size placeholder, patched below once the body length is known (as OpenWireFormat does).
    e.w.i32(0);
    e.w.u8(cmd.type_id());
    e.command(cmd)?;
    let mut out = e.w.into_bytes().to_vec();
    let size = i32_len(out.len() - 4)?;
    if let Some(prefix) = out.get_mut(..4) {
        prefix.copy_from_slice(&size.to_be_bytes());
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

struct Dec<'a, 'o> {
    r: Reader<'a>,
    opts: &'o CodecOptions,
    depth: usize,
}

impl Dec<'_, '_> {
    /// A nested (or, cache off, cached) object: "not null" boolean, type byte, body.
    fn nested<T>(
        &mut self,
        body: impl FnOnce(&mut Self, u8) -> Result<T, OpenWireError>,
    ) -> Result<Option<T>, OpenWireError> {
        if !self.r.bool()? {
            return Ok(None);
        }
        let t = self.r.u8()?;
        self.enter()?;
        let v = body(self, t);
        self.depth -= 1;
        v.map(Some)
    }

    fn enter(&mut self) -> Result<(), OpenWireError> {
        if self.depth >= MAX_NESTING_DEPTH {
            return Err(OpenWireError::NestingTooDeep {
                max: MAX_NESTING_DEPTH,
            });
        }
        self.depth += 1;
        Ok(())
    }

    fn expect(t: u8, want: u8, field: &'static str) -> Result<(), OpenWireError> {
        if t == want {
            Ok(())
        } else {
            Err(OpenWireError::UnexpectedType { field, found: t })
        }
    }

    fn required_string(&mut self, field: &'static str) -> Result<String, OpenWireError> {
        self.r.string()?.ok_or(OpenWireError::NullValue(field))
    }

    /// An object array: "not null" boolean, `i16` count, nested objects (none may be null).
    fn array<T>(
        &mut self,
        field: &'static str,
        mut elem: impl FnMut(&mut Self, u8) -> Result<T, OpenWireError>,
    ) -> Result<Option<Vec<T>>, OpenWireError> {
        if !self.r.bool()? {
            return Ok(None);
        }
        let count = self.r.i16()?;
        let count =
            usize::try_from(count).map_err(|_| OpenWireError::NegativeLength(i32::from(count)))?;
        self.check_array_len(count)?;
        let mut out = Vec::with_capacity(count.min(64));
        for _ in 0..count {
            let v = self
                .nested(&mut elem)?
                .ok_or(OpenWireError::NullValue(field))?;
            out.push(v);
        }
        Ok(Some(out))
    }

    fn check_array_len(&self, count: usize) -> Result<(), OpenWireError> {
        if count > self.opts.max_array_len {
            return Err(OpenWireError::ArrayTooLong {
                count,
                max: self.opts.max_array_len,
            });
        }
        Ok(())
    }

    fn throwable(&mut self) -> Result<Option<BrokerError>, OpenWireError> {
        if !self.r.bool()? {
            return Ok(None);
        }
        self.enter()?;
        let v = self.throwable_body();
        self.depth -= 1;
        v.map(Some)
    }

    fn throwable_body(&mut self) -> Result<BrokerError, OpenWireError> {
        let class_name = self.r.string()?;
        let message = self.r.string()?;
        let mut err = BrokerError {
            class_name,
            message,
            ..BrokerError::default()
        };
        if self.opts.stack_trace_enabled {
            let count = self.r.i16()?;
            let count = usize::try_from(count)
                .map_err(|_| OpenWireError::NegativeLength(i32::from(count)))?;
            self.check_array_len(count)?;
            let mut frames = Vec::with_capacity(count.min(64));
            for _ in 0..count {
                frames.push(StackTraceElement {
                    class_name: self.r.string()?,
                    method_name: self.r.string()?,
                    file_name: self.r.string()?,
                    line_number: self.r.i32()?,
                });
            }
            err.stack_trace = frames;
            err.cause = self.throwable()?.map(Box::new);
        }
        Ok(err)
    }

    // -- data structures ----------------------------------------------------------------------

    fn connection_id(
        &mut self,
        field: &'static str,
    ) -> Result<Option<ConnectionId>, OpenWireError> {
        self.nested(|d, t| {
            Self::expect(t, type_id::CONNECTION_ID, field)?;
            d.connection_id_body()
        })
    }

    fn connection_id_body(&mut self) -> Result<ConnectionId, OpenWireError> {
        Ok(ConnectionId {
            value: self.required_string("ConnectionId.value")?,
        })
    }

    fn session_id_body(&mut self) -> Result<SessionId, OpenWireError> {
        Ok(SessionId {
            connection_id: self.required_string("SessionId.connectionId")?,
            value: self.r.i64()?,
        })
    }

    fn consumer_id(&mut self, field: &'static str) -> Result<Option<ConsumerId>, OpenWireError> {
        self.nested(|d, t| {
            Self::expect(t, type_id::CONSUMER_ID, field)?;
            d.consumer_id_body()
        })
    }

    fn consumer_id_body(&mut self) -> Result<ConsumerId, OpenWireError> {
        Ok(ConsumerId {
            connection_id: self.required_string("ConsumerId.connectionId")?,
            session_id: self.r.i64()?,
            value: self.r.i64()?,
        })
    }

    fn producer_id(&mut self, field: &'static str) -> Result<Option<ProducerId>, OpenWireError> {
        self.nested(|d, t| {
            Self::expect(t, type_id::PRODUCER_ID, field)?;
            d.producer_id_body()
        })
    }

    fn producer_id_body(&mut self) -> Result<ProducerId, OpenWireError> {
        Ok(ProducerId {
            connection_id: self.required_string("ProducerId.connectionId")?,
            value: self.r.i64()?,
            session_id: self.r.i64()?,
        })
    }

    fn broker_id_body(&mut self) -> Result<BrokerId, OpenWireError> {
        Ok(BrokerId {
            value: self.required_string("BrokerId.value")?,
        })
    }

    fn broker_id(&mut self, field: &'static str) -> Result<Option<BrokerId>, OpenWireError> {
        self.nested(|d, t| {
            Self::expect(t, type_id::BROKER_ID, field)?;
            d.broker_id_body()
        })
    }

    fn broker_path(&mut self, field: &'static str) -> Result<Option<Vec<BrokerId>>, OpenWireError> {
        self.array(field, |d, t| {
            Self::expect(t, type_id::BROKER_ID, field)?;
            d.broker_id_body()
        })
    }

    fn message_id(&mut self, field: &'static str) -> Result<Option<MessageId>, OpenWireError> {
        self.nested(|d, t| {
            Self::expect(t, type_id::MESSAGE_ID, field)?;
            d.message_id_body()
        })
    }

    fn message_id_body(&mut self) -> Result<MessageId, OpenWireError> {
        let text_view = if self.opts.v10() {
            self.r.string()?
        } else {
            None
        };
        Ok(MessageId {
            text_view,
            producer_id: self.producer_id("MessageId.producerId")?,
            producer_sequence_id: self.r.i64()?,
            broker_sequence_id: self.r.i64()?,
        })
    }

    fn destination(&mut self, field: &'static str) -> Result<Option<Destination>, OpenWireError> {
        self.nested(|d, t| {
            let kind = DestinationKind::from_type_id(t)
                .ok_or(OpenWireError::UnexpectedType { field, found: t })?;
            d.destination_body(kind)
        })
    }

    fn destination_body(&mut self, kind: DestinationKind) -> Result<Destination, OpenWireError> {
        Ok(Destination {
            kind,
            physical_name: self.required_string("ActiveMQDestination.physicalName")?,
        })
    }

    fn transaction_id(
        &mut self,
        field: &'static str,
    ) -> Result<Option<TransactionId>, OpenWireError> {
        self.nested(|d, t| d.transaction_id_body(t, field))
    }

    fn transaction_id_body(
        &mut self,
        t: u8,
        field: &'static str,
    ) -> Result<TransactionId, OpenWireError> {
        match t {
            type_id::LOCAL_TRANSACTION_ID => Ok(TransactionId::Local(LocalTransactionId {
                value: self.r.i64()?,
                connection_id: self.connection_id("LocalTransactionId.connectionId")?,
            })),
            type_id::XA_TRANSACTION_ID => Ok(TransactionId::Xa(XaTransactionId {
                format_id: self.r.i32()?,
                global_transaction_id: self.r.byte_array()?,
                branch_qualifier: self.r.byte_array()?,
            })),
            found => Err(OpenWireError::UnexpectedType { field, found }),
        }
    }

    fn data_structure(&mut self) -> Result<Option<Box<DataStructure>>, OpenWireError> {
        self.nested(|d, t| d.data_structure_body(t).map(Box::new))
    }

    fn data_structure_body(&mut self, t: u8) -> Result<DataStructure, OpenWireError> {
        if let Some(kind) = DestinationKind::from_type_id(t) {
            return self.destination_body(kind).map(DataStructure::Destination);
        }
        Ok(match t {
            type_id::CONNECTION_ID => DataStructure::ConnectionId(self.connection_id_body()?),
            type_id::SESSION_ID => DataStructure::SessionId(self.session_id_body()?),
            type_id::CONSUMER_ID => DataStructure::ConsumerId(self.consumer_id_body()?),
            type_id::PRODUCER_ID => DataStructure::ProducerId(self.producer_id_body()?),
            type_id::BROKER_ID => DataStructure::BrokerId(self.broker_id_body()?),
            type_id::MESSAGE_ID => DataStructure::MessageId(self.message_id_body()?),
            type_id::LOCAL_TRANSACTION_ID | type_id::XA_TRANSACTION_ID => {
                DataStructure::TransactionId(self.transaction_id_body(t, "DataStructure")?)
            }
            type_id::NETWORK_BRIDGE_FILTER => {
                DataStructure::NetworkBridgeFilter(self.network_bridge_filter()?)
            }
            _ => DataStructure::Command(Box::new(self.command(t)?)),
        })
    }

    fn network_bridge_filter(&mut self) -> Result<NetworkBridgeFilter, OpenWireError> {
        const FIELD: &str = "NetworkBridgeFilter.networkBrokerId";
        if self.opts.v10() {
            return Ok(NetworkBridgeFilter {
                network_broker_id: self.broker_id(FIELD)?,
                message_ttl: self.r.i32()?,
                consumer_ttl: self.r.i32()?,
            });
        }
        // v9 has a single networkTTL before the broker id; Java's setNetworkTTL sets both TTLs.
        let ttl = self.r.i32()?;
        Ok(NetworkBridgeFilter {
            network_broker_id: self.broker_id(FIELD)?,
            message_ttl: ttl,
            consumer_ttl: ttl,
        })
    }

    // -- commands -----------------------------------------------------------------------------

    fn header(&mut self) -> Result<CommandHeader, OpenWireError> {
        Ok(CommandHeader {
            command_id: self.r.i32()?,
            response_required: self.r.bool()?,
        })
    }

    fn command(&mut self, t: u8) -> Result<Command, OpenWireError> {
        if t == type_id::WIREFORMAT_INFO {
            return Ok(Command::WireFormatInfo(WireFormatInfo {
                magic: self.r.const_bytes()?,
                version: self.r.i32()?,
                marshalled_properties: self.r.byte_array()?,
            }));
        }
        if let Some(kind) = MessageKind::from_type_id(t) {
            return Ok(Command::Message(Box::new(self.message(kind)?)));
        }
        let known = matches!(t, 2..=12 | 14..=22 | 30..=34 | 65 | 90);
        if !known {
            return Err(OpenWireError::UnknownCommand(t));
        }
        let header = self.header()?;
        Ok(match t {
            type_id::BROKER_INFO => Command::BrokerInfo(self.broker_info(header)?),
            type_id::CONNECTION_INFO => Command::ConnectionInfo(ConnectionInfo {
                header,
                connection_id: self.connection_id("ConnectionInfo.connectionId")?,
                client_id: self.r.string()?,
                password: self.r.string()?,
                user_name: self.r.string()?,
                broker_path: self.broker_path("ConnectionInfo.brokerPath")?,
                broker_master_connector: self.r.bool()?,
                manageable: self.r.bool()?,
                client_master: self.r.bool()?,
                fault_tolerant: self.r.bool()?,
                failover_reconnect: self.r.bool()?,
                client_ip: self.r.string()?,
            }),
            type_id::SESSION_INFO => Command::SessionInfo(SessionInfo {
                header,
                session_id: self.nested(|d, t| {
                    Self::expect(t, type_id::SESSION_ID, "SessionInfo.sessionId")?;
                    d.session_id_body()
                })?,
            }),
            type_id::CONSUMER_INFO => Command::ConsumerInfo(ConsumerInfo {
                header,
                consumer_id: self.consumer_id("ConsumerInfo.consumerId")?,
                browser: self.r.bool()?,
                destination: self.destination("ConsumerInfo.destination")?,
                prefetch_size: self.r.i32()?,
                maximum_pending_message_limit: self.r.i32()?,
                dispatch_async: self.r.bool()?,
                selector: self.r.string()?,
                client_id: if self.opts.v10() {
                    self.r.string()?
                } else {
                    None
                },
                subscription_name: self.r.string()?,
                no_local: self.r.bool()?,
                exclusive: self.r.bool()?,
                retroactive: self.r.bool()?,
                priority: self.r.u8()?,
                broker_path: self.broker_path("ConsumerInfo.brokerPath")?,
                additional_predicate: self.data_structure()?,
                network_subscription: self.r.bool()?,
                optimized_acknowledge: self.r.bool()?,
                no_range_acks: self.r.bool()?,
                network_consumer_path: self.array("ConsumerInfo.networkConsumerPath", |d, t| {
                    Self::expect(t, type_id::CONSUMER_ID, "ConsumerInfo.networkConsumerPath")?;
                    d.consumer_id_body()
                })?,
            }),
            type_id::PRODUCER_INFO => Command::ProducerInfo(ProducerInfo {
                header,
                producer_id: self.producer_id("ProducerInfo.producerId")?,
                destination: self.destination("ProducerInfo.destination")?,
                broker_path: self.broker_path("ProducerInfo.brokerPath")?,
                dispatch_async: self.r.bool()?,
                window_size: self.r.i32()?,
            }),
            type_id::TRANSACTION_INFO => Command::TransactionInfo(TransactionInfo {
                header,
                connection_id: self.connection_id("TransactionInfo.connectionId")?,
                transaction_id: self.transaction_id("TransactionInfo.transactionId")?,
                transaction_type: self.r.u8()?,
            }),
            type_id::DESTINATION_INFO => Command::DestinationInfo(DestinationInfo {
                header,
                connection_id: self.connection_id("DestinationInfo.connectionId")?,
                destination: self.destination("DestinationInfo.destination")?,
                operation_type: self.r.u8()?,
                timeout: self.r.i64()?,
                broker_path: self.broker_path("DestinationInfo.brokerPath")?,
            }),
            type_id::REMOVE_SUBSCRIPTION_INFO => {
                Command::RemoveSubscriptionInfo(RemoveSubscriptionInfo {
                    header,
                    connection_id: self.connection_id("RemoveSubscriptionInfo.connectionId")?,
                    subscription_name: self.r.string()?,
                    client_id: self.r.string()?,
                })
            }
            type_id::KEEP_ALIVE_INFO => Command::KeepAliveInfo(KeepAliveInfo { header }),
            type_id::SHUTDOWN_INFO => Command::ShutdownInfo(ShutdownInfo { header }),
            type_id::REMOVE_INFO => Command::RemoveInfo(RemoveInfo {
                header,
                object_id: self.data_structure()?,
                last_delivered_sequence_id: self.r.i64()?,
            }),
            type_id::CONTROL_COMMAND => Command::ControlCommand(ControlCommand {
                header,
                command: self.r.string()?,
            }),
            type_id::FLUSH_COMMAND => Command::FlushCommand(FlushCommand { header }),
            type_id::CONNECTION_ERROR => Command::ConnectionError(ConnectionError {
                header,
                exception: self.throwable()?,
                connection_id: self.connection_id("ConnectionError.connectionId")?,
            }),
            type_id::CONSUMER_CONTROL => Command::ConsumerControl(ConsumerControl {
                header,
                destination: self.destination("ConsumerControl.destination")?,
                close: self.r.bool()?,
                consumer_id: self.consumer_id("ConsumerControl.consumerId")?,
                prefetch: self.r.i32()?,
                flush: self.r.bool()?,
                start: self.r.bool()?,
                stop: self.r.bool()?,
            }),
            type_id::CONNECTION_CONTROL => Command::ConnectionControl(ConnectionControl {
                header,
                close: self.r.bool()?,
                exit: self.r.bool()?,
                fault_tolerant: self.r.bool()?,
                resume: self.r.bool()?,
                suspend: self.r.bool()?,
                connected_brokers: self.r.string()?,
                reconnect_to: self.r.string()?,
                rebalance_connection: self.r.bool()?,
                token: self.r.byte_array()?,
            }),
            type_id::PRODUCER_ACK => Command::ProducerAck(ProducerAck {
                header,
                producer_id: self.producer_id("ProducerAck.producerId")?,
                size: self.r.i32()?,
            }),
            type_id::MESSAGE_PULL => Command::MessagePull(MessagePull {
                header,
                consumer_id: self.consumer_id("MessagePull.consumerId")?,
                destination: self.destination("MessagePull.destination")?,
                timeout: self.r.i64()?,
                correlation_id: self.r.string()?,
                message_id: self.message_id("MessagePull.messageId")?,
            }),
            type_id::MESSAGE_DISPATCH => Command::MessageDispatch(MessageDispatch {
                header,
                consumer_id: self.consumer_id("MessageDispatch.consumerId")?,
                destination: self.destination("MessageDispatch.destination")?,
                message: self.nested(|d, t| {
                    let kind =
                        MessageKind::from_type_id(t).ok_or(OpenWireError::UnexpectedType {
                            field: "MessageDispatch.message",
                            found: t,
                        })?;
                    d.message(kind).map(Box::new)
                })?,
                redelivery_counter: self.r.i32()?,
            }),
            type_id::MESSAGE_ACK => Command::MessageAck(MessageAck {
                header,
                destination: self.destination("MessageAck.destination")?,
                transaction_id: self.transaction_id("MessageAck.transactionId")?,
                consumer_id: self.consumer_id("MessageAck.consumerId")?,
                ack_type: self.r.u8()?,
                first_message_id: self.message_id("MessageAck.firstMessageId")?,
                last_message_id: self.message_id("MessageAck.lastMessageId")?,
                message_count: self.r.i32()?,
                poison_cause: self.throwable()?,
            }),
            type_id::RESPONSE => Command::Response(Response {
                header,
                correlation_id: self.r.i32()?,
            }),
            type_id::EXCEPTION_RESPONSE => Command::ExceptionResponse(ExceptionResponse {
                header,
                correlation_id: self.r.i32()?,
                exception: self.throwable()?,
            }),
            type_id::DATA_RESPONSE => Command::DataResponse(DataResponse {
                header,
                correlation_id: self.r.i32()?,
                data: self.data_structure()?,
            }),
            type_id::DATA_ARRAY_RESPONSE => Command::DataArrayResponse(DataArrayResponse {
                header,
                correlation_id: self.r.i32()?,
                data: self.array("DataArrayResponse.data", |d, t| d.data_structure_body(t))?,
            }),
            type_id::INTEGER_RESPONSE => Command::IntegerResponse(IntegerResponse {
                header,
                correlation_id: self.r.i32()?,
                result: self.r.i32()?,
            }),
            type_id::REPLAY => Command::ReplayCommand(ReplayCommand {
                header,
                first_nak_number: self.r.i32()?,
                last_nak_number: self.r.i32()?,
            }),
            type_id::MESSAGE_DISPATCH_NOTIFICATION => {
                Command::MessageDispatchNotification(MessageDispatchNotification {
                    header,
                    consumer_id: self.consumer_id("MessageDispatchNotification.consumerId")?,
                    destination: self.destination("MessageDispatchNotification.destination")?,
                    delivery_sequence_id: self.r.i64()?,
                    message_id: self.message_id("MessageDispatchNotification.messageId")?,
                })
            }
            other => return Err(OpenWireError::UnknownCommand(other)),
        })
    }

    fn broker_info(&mut self, header: CommandHeader) -> Result<BrokerInfo, OpenWireError> {
        Ok(BrokerInfo {
            header,
            broker_id: self.broker_id("BrokerInfo.brokerId")?,
            broker_url: self.r.string()?,
            peer_broker_infos: self.array("BrokerInfo.peerBrokerInfos", |d, t| {
                Self::expect(t, type_id::BROKER_INFO, "BrokerInfo.peerBrokerInfos")?;
                let h = d.header()?;
                d.broker_info(h)
            })?,
            broker_name: self.r.string()?,
            slave_broker: self.r.bool()?,
            master_broker: self.r.bool()?,
            fault_tolerant_configuration: self.r.bool()?,
            duplex_connection: self.r.bool()?,
            network_connection: self.r.bool()?,
            connection_id: self.r.i64()?,
            broker_upload_url: self.r.string()?,
            network_properties: self.r.string()?,
        })
    }

    fn message(&mut self, kind: MessageKind) -> Result<Message, OpenWireError> {
        Ok(Message {
            kind,
            header: self.header()?,
            producer_id: self.producer_id("Message.producerId")?,
            destination: self.destination("Message.destination")?,
            transaction_id: self.transaction_id("Message.transactionId")?,
            original_destination: self.destination("Message.originalDestination")?,
            message_id: self.message_id("Message.messageId")?,
            original_transaction_id: self.transaction_id("Message.originalTransactionId")?,
            group_id: self.r.string()?,
            group_sequence: self.r.i32()?,
            correlation_id: self.r.string()?,
            persistent: self.r.bool()?,
            expiration: self.r.i64()?,
            priority: self.r.u8()?,
            reply_to: self.destination("Message.replyTo")?,
            timestamp: self.r.i64()?,
            message_type: self.r.string()?,
            content: self.r.byte_array()?,
            marshalled_properties: self.r.byte_array()?,
            data_structure: self.data_structure()?,
            target_consumer_id: self.consumer_id("Message.targetConsumerId")?,
            compressed: self.r.bool()?,
            redelivery_counter: self.r.i32()?,
            broker_path: self.broker_path("Message.brokerPath")?,
            arrival: self.r.i64()?,
            user_id: self.r.string()?,
            received_by_df_bridge: self.r.bool()?,
            droppable: self.r.bool()?,
            cluster: self.broker_path("Message.cluster")?,
            broker_in_time: self.r.i64()?,
            broker_out_time: self.r.i64()?,
            jmsx_group_first_for_consumer: if self.opts.v10() {
                self.r.bool()?
            } else {
                false
            },
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

struct Enc<'o> {
    w: Writer,
    opts: &'o CodecOptions,
    depth: usize,
}

impl Enc<'_> {
    /// A nested object: "not null" boolean, type byte, body.
    fn nested<T>(
        &mut self,
        value: Option<&T>,
        type_of: impl FnOnce(&T) -> u8,
        body: impl FnOnce(&mut Self, &T) -> Result<(), OpenWireError>,
    ) -> Result<(), OpenWireError> {
        let Some(v) = value else {
            self.w.bool(false);
            return Ok(());
        };
        self.w.bool(true);
        self.w.u8(type_of(v));
        self.enter()?;
        let res = body(self, v);
        self.depth -= 1;
        res
    }

    fn enter(&mut self) -> Result<(), OpenWireError> {
        // The same bound as decoding, so that whatever we send we could also read back.
        if self.depth >= MAX_NESTING_DEPTH {
            return Err(OpenWireError::NestingTooDeep {
                max: MAX_NESTING_DEPTH,
            });
        }
        self.depth += 1;
        Ok(())
    }

    fn array<T>(
        &mut self,
        items: Option<&[T]>,
        type_of: impl Fn(&T) -> u8,
        mut body: impl FnMut(&mut Self, &T) -> Result<(), OpenWireError>,
    ) -> Result<(), OpenWireError> {
        let Some(items) = items else {
            self.w.bool(false);
            return Ok(());
        };
        self.w.bool(true);
        self.w.i16(self.array_len(items.len())?);
        for item in items {
            self.nested(Some(item), &type_of, &mut body)?;
        }
        Ok(())
    }

    fn array_len(&self, len: usize) -> Result<i16, OpenWireError> {
        let max = self.opts.max_array_len.min(i16::MAX as usize);
        if len > max {
            return Err(OpenWireError::ArrayTooLong { count: len, max });
        }
        i16::try_from(len).map_err(|_| OpenWireError::ArrayTooLong { count: len, max })
    }

    fn string(&mut self, s: &Option<String>) -> Result<(), OpenWireError> {
        self.w.string(s.as_deref())
    }

    fn bytes(&mut self, b: &Option<Bytes>) -> Result<(), OpenWireError> {
        self.w.byte_array(b.as_deref())
    }

    fn throwable(&mut self, e: Option<&BrokerError>) -> Result<(), OpenWireError> {
        let Some(e) = e else {
            self.w.bool(false);
            return Ok(());
        };
        self.w.bool(true);
        self.enter()?;
        let res = self.throwable_body(e);
        self.depth -= 1;
        res
    }

    fn throwable_body(&mut self, e: &BrokerError) -> Result<(), OpenWireError> {
        self.string(&e.class_name)?;
        self.string(&e.message)?;
        if self.opts.stack_trace_enabled {
            self.w.i16(self.array_len(e.stack_trace.len())?);
            for f in &e.stack_trace {
                self.string(&f.class_name)?;
                self.string(&f.method_name)?;
                self.string(&f.file_name)?;
                self.w.i32(f.line_number);
            }
            self.throwable(e.cause.as_deref())?;
        }
        Ok(())
    }

    // -- data structures ----------------------------------------------------------------------

    fn connection_id(&mut self, v: Option<&ConnectionId>) -> Result<(), OpenWireError> {
        self.nested(
            v,
            |_| type_id::CONNECTION_ID,
            |e, v| e.w.string(Some(&v.value)),
        )
    }

    fn session_id_body(&mut self, v: &SessionId) -> Result<(), OpenWireError> {
        self.w.string(Some(&v.connection_id))?;
        self.w.i64(v.value);
        Ok(())
    }

    fn consumer_id(&mut self, v: Option<&ConsumerId>) -> Result<(), OpenWireError> {
        self.nested(v, |_| type_id::CONSUMER_ID, Self::consumer_id_body)
    }

    fn consumer_id_body(&mut self, v: &ConsumerId) -> Result<(), OpenWireError> {
        self.w.string(Some(&v.connection_id))?;
        self.w.i64(v.session_id);
        self.w.i64(v.value);
        Ok(())
    }

    fn producer_id(&mut self, v: Option<&ProducerId>) -> Result<(), OpenWireError> {
        self.nested(v, |_| type_id::PRODUCER_ID, Self::producer_id_body)
    }

    fn producer_id_body(&mut self, v: &ProducerId) -> Result<(), OpenWireError> {
        self.w.string(Some(&v.connection_id))?;
        self.w.i64(v.value);
        self.w.i64(v.session_id);
        Ok(())
    }

    fn broker_id(&mut self, v: Option<&BrokerId>) -> Result<(), OpenWireError> {
        self.nested(v, |_| type_id::BROKER_ID, |e, v| e.w.string(Some(&v.value)))
    }

    fn broker_path(&mut self, v: &Option<Vec<BrokerId>>) -> Result<(), OpenWireError> {
        self.array(
            v.as_deref(),
            |_| type_id::BROKER_ID,
            |e, v| e.w.string(Some(&v.value)),
        )
    }

    fn message_id(&mut self, v: Option<&MessageId>) -> Result<(), OpenWireError> {
        self.nested(v, |_| type_id::MESSAGE_ID, Self::message_id_body)
    }

    fn message_id_body(&mut self, v: &MessageId) -> Result<(), OpenWireError> {
        if self.opts.v10() {
            self.string(&v.text_view)?;
        }
        self.producer_id(v.producer_id.as_ref())?;
        self.w.i64(v.producer_sequence_id);
        self.w.i64(v.broker_sequence_id);
        Ok(())
    }

    fn destination(&mut self, v: Option<&Destination>) -> Result<(), OpenWireError> {
        self.nested(
            v,
            |d| d.kind.type_id(),
            |e, d| e.w.string(Some(&d.physical_name)),
        )
    }

    fn transaction_id(&mut self, v: Option<&TransactionId>) -> Result<(), OpenWireError> {
        self.nested(v, transaction_type_id, Self::transaction_id_body)
    }

    fn transaction_id_body(&mut self, v: &TransactionId) -> Result<(), OpenWireError> {
        match v {
            TransactionId::Local(l) => {
                self.w.i64(l.value);
                self.connection_id(l.connection_id.as_ref())
            }
            TransactionId::Xa(x) => {
                self.w.i32(x.format_id);
                self.bytes(&x.global_transaction_id)?;
                self.bytes(&x.branch_qualifier)
            }
        }
    }

    fn data_structure(&mut self, v: Option<&DataStructure>) -> Result<(), OpenWireError> {
        self.nested(v, data_structure_type_id, Self::data_structure_body)
    }

    fn data_structure_body(&mut self, v: &DataStructure) -> Result<(), OpenWireError> {
        match v {
            DataStructure::Destination(d) => self.w.string(Some(&d.physical_name)),
            DataStructure::ConnectionId(c) => self.w.string(Some(&c.value)),
            DataStructure::SessionId(s) => self.session_id_body(s),
            DataStructure::ConsumerId(c) => self.consumer_id_body(c),
            DataStructure::ProducerId(p) => self.producer_id_body(p),
            DataStructure::BrokerId(b) => self.w.string(Some(&b.value)),
            DataStructure::MessageId(m) => self.message_id_body(m),
            DataStructure::TransactionId(t) => self.transaction_id_body(t),
            DataStructure::NetworkBridgeFilter(f) => {
                if self.opts.v10() {
                    self.broker_id(f.network_broker_id.as_ref())?;
                    self.w.i32(f.message_ttl);
                    self.w.i32(f.consumer_ttl);
                } else {
                    // v9: one networkTTL (Java's getNetworkTTL returns the message TTL).
                    self.w.i32(f.message_ttl);
                    self.broker_id(f.network_broker_id.as_ref())?;
                }
                Ok(())
            }
            DataStructure::Command(c) => self.command(c),
        }
    }

    // -- commands -----------------------------------------------------------------------------

    fn header(&mut self, h: &CommandHeader) {
        self.w.i32(h.command_id);
        self.w.bool(h.response_required);
    }

    /// The body of `cmd` (everything after its type byte).
    fn command(&mut self, cmd: &Command) -> Result<(), OpenWireError> {
        if let Some(h) = cmd.header() {
            self.header(h);
        }
        match cmd {
            Command::WireFormatInfo(c) => {
                self.w.raw(&c.magic);
                self.w.i32(c.version);
                self.bytes(&c.marshalled_properties)?;
            }
            Command::BrokerInfo(c) => self.broker_info_fields(c)?,
            Command::ConnectionInfo(c) => {
                self.connection_id(c.connection_id.as_ref())?;
                self.string(&c.client_id)?;
                self.string(&c.password)?;
                self.string(&c.user_name)?;
                self.broker_path(&c.broker_path)?;
                self.w.bool(c.broker_master_connector);
                self.w.bool(c.manageable);
                self.w.bool(c.client_master);
                self.w.bool(c.fault_tolerant);
                self.w.bool(c.failover_reconnect);
                self.string(&c.client_ip)?;
            }
            Command::SessionInfo(c) => {
                self.nested(
                    c.session_id.as_ref(),
                    |_| type_id::SESSION_ID,
                    Self::session_id_body,
                )?;
            }
            Command::ConsumerInfo(c) => {
                self.consumer_id(c.consumer_id.as_ref())?;
                self.w.bool(c.browser);
                self.destination(c.destination.as_ref())?;
                self.w.i32(c.prefetch_size);
                self.w.i32(c.maximum_pending_message_limit);
                self.w.bool(c.dispatch_async);
                self.string(&c.selector)?;
                if self.opts.v10() {
                    self.string(&c.client_id)?;
                }
                self.string(&c.subscription_name)?;
                self.w.bool(c.no_local);
                self.w.bool(c.exclusive);
                self.w.bool(c.retroactive);
                self.w.u8(c.priority);
                self.broker_path(&c.broker_path)?;
                self.data_structure(c.additional_predicate.as_deref())?;
                self.w.bool(c.network_subscription);
                self.w.bool(c.optimized_acknowledge);
                self.w.bool(c.no_range_acks);
                self.array(
                    c.network_consumer_path.as_deref(),
                    |_| type_id::CONSUMER_ID,
                    Self::consumer_id_body,
                )?;
            }
            Command::ProducerInfo(c) => {
                self.producer_id(c.producer_id.as_ref())?;
                self.destination(c.destination.as_ref())?;
                self.broker_path(&c.broker_path)?;
                self.w.bool(c.dispatch_async);
                self.w.i32(c.window_size);
            }
            Command::TransactionInfo(c) => {
                self.connection_id(c.connection_id.as_ref())?;
                self.transaction_id(c.transaction_id.as_ref())?;
                self.w.u8(c.transaction_type);
            }
            Command::DestinationInfo(c) => {
                self.connection_id(c.connection_id.as_ref())?;
                self.destination(c.destination.as_ref())?;
                self.w.u8(c.operation_type);
                self.w.i64(c.timeout);
                self.broker_path(&c.broker_path)?;
            }
            Command::RemoveSubscriptionInfo(c) => {
                self.connection_id(c.connection_id.as_ref())?;
                self.string(&c.subscription_name)?;
                self.string(&c.client_id)?;
            }
            Command::KeepAliveInfo(_) | Command::ShutdownInfo(_) | Command::FlushCommand(_) => {}
            Command::RemoveInfo(c) => {
                self.data_structure(c.object_id.as_deref())?;
                self.w.i64(c.last_delivered_sequence_id);
            }
            Command::ControlCommand(c) => self.string(&c.command)?,
            Command::ConnectionError(c) => {
                self.throwable(c.exception.as_ref())?;
                self.connection_id(c.connection_id.as_ref())?;
            }
            Command::ConsumerControl(c) => {
                self.destination(c.destination.as_ref())?;
                self.w.bool(c.close);
                self.consumer_id(c.consumer_id.as_ref())?;
                self.w.i32(c.prefetch);
                self.w.bool(c.flush);
                self.w.bool(c.start);
                self.w.bool(c.stop);
            }
            Command::ConnectionControl(c) => {
                self.w.bool(c.close);
                self.w.bool(c.exit);
                self.w.bool(c.fault_tolerant);
                self.w.bool(c.resume);
                self.w.bool(c.suspend);
                self.string(&c.connected_brokers)?;
                self.string(&c.reconnect_to)?;
                self.w.bool(c.rebalance_connection);
                self.bytes(&c.token)?;
            }
            Command::ProducerAck(c) => {
                self.producer_id(c.producer_id.as_ref())?;
                self.w.i32(c.size);
            }
            Command::MessagePull(c) => {
                self.consumer_id(c.consumer_id.as_ref())?;
                self.destination(c.destination.as_ref())?;
                self.w.i64(c.timeout);
                self.string(&c.correlation_id)?;
                self.message_id(c.message_id.as_ref())?;
            }
            Command::MessageDispatch(c) => {
                self.consumer_id(c.consumer_id.as_ref())?;
                self.destination(c.destination.as_ref())?;
                self.nested(
                    c.message.as_deref(),
                    |m| m.kind.type_id(),
                    |e, m| {
                        e.header(&m.header);
                        e.message_fields(m)
                    },
                )?;
                self.w.i32(c.redelivery_counter);
            }
            Command::MessageAck(c) => {
                self.destination(c.destination.as_ref())?;
                self.transaction_id(c.transaction_id.as_ref())?;
                self.consumer_id(c.consumer_id.as_ref())?;
                self.w.u8(c.ack_type);
                self.message_id(c.first_message_id.as_ref())?;
                self.message_id(c.last_message_id.as_ref())?;
                self.w.i32(c.message_count);
                self.throwable(c.poison_cause.as_ref())?;
            }
            Command::Message(m) => self.message_fields(m)?,
            Command::Response(c) => self.w.i32(c.correlation_id),
            Command::ExceptionResponse(c) => {
                self.w.i32(c.correlation_id);
                self.throwable(c.exception.as_ref())?;
            }
            Command::DataResponse(c) => {
                self.w.i32(c.correlation_id);
                self.data_structure(c.data.as_deref())?;
            }
            Command::DataArrayResponse(c) => {
                self.w.i32(c.correlation_id);
                self.array(
                    c.data.as_deref(),
                    data_structure_type_id,
                    Self::data_structure_body,
                )?;
            }
            Command::IntegerResponse(c) => {
                self.w.i32(c.correlation_id);
                self.w.i32(c.result);
            }
            Command::ReplayCommand(c) => {
                self.w.i32(c.first_nak_number);
                self.w.i32(c.last_nak_number);
            }
            Command::MessageDispatchNotification(c) => {
                self.consumer_id(c.consumer_id.as_ref())?;
                self.destination(c.destination.as_ref())?;
                self.w.i64(c.delivery_sequence_id);
                self.message_id(c.message_id.as_ref())?;
            }
        }
        Ok(())
    }

    /// `BrokerInfo` fields after the header.
    fn broker_info_fields(&mut self, c: &BrokerInfo) -> Result<(), OpenWireError> {
        self.broker_id(c.broker_id.as_ref())?;
        self.string(&c.broker_url)?;
        self.array(
            c.peer_broker_infos.as_deref(),
            |_| type_id::BROKER_INFO,
            |e, peer| {
                e.header(&peer.header);
                e.broker_info_fields(peer)
            },
        )?;
        self.string(&c.broker_name)?;
        self.w.bool(c.slave_broker);
        self.w.bool(c.master_broker);
        self.w.bool(c.fault_tolerant_configuration);
        self.w.bool(c.duplex_connection);
        self.w.bool(c.network_connection);
        self.w.i64(c.connection_id);
        self.string(&c.broker_upload_url)?;
        self.string(&c.network_properties)
    }

    /// `Message` fields after the header.
    fn message_fields(&mut self, m: &Message) -> Result<(), OpenWireError> {
        self.producer_id(m.producer_id.as_ref())?;
        self.destination(m.destination.as_ref())?;
        self.transaction_id(m.transaction_id.as_ref())?;
        self.destination(m.original_destination.as_ref())?;
        self.message_id(m.message_id.as_ref())?;
        self.transaction_id(m.original_transaction_id.as_ref())?;
        self.string(&m.group_id)?;
        self.w.i32(m.group_sequence);
        self.string(&m.correlation_id)?;
        self.w.bool(m.persistent);
        self.w.i64(m.expiration);
        self.w.u8(m.priority);
        self.destination(m.reply_to.as_ref())?;
        self.w.i64(m.timestamp);
        self.string(&m.message_type)?;
        self.bytes(&m.content)?;
        self.bytes(&m.marshalled_properties)?;
        self.data_structure(m.data_structure.as_deref())?;
        self.consumer_id(m.target_consumer_id.as_ref())?;
        self.w.bool(m.compressed);
        self.w.i32(m.redelivery_counter);
        self.broker_path(&m.broker_path)?;
        self.w.i64(m.arrival);
        self.string(&m.user_id)?;
        self.w.bool(m.received_by_df_bridge);
        self.w.bool(m.droppable);
        self.broker_path(&m.cluster)?;
        self.w.i64(m.broker_in_time);
        self.w.i64(m.broker_out_time);
        if self.opts.v10() {
            self.w.bool(m.jmsx_group_first_for_consumer);
        }
        Ok(())
    }
}

fn transaction_type_id(t: &TransactionId) -> u8 {
    match t {
        TransactionId::Local(_) => type_id::LOCAL_TRANSACTION_ID,
        TransactionId::Xa(_) => type_id::XA_TRANSACTION_ID,
    }
}

fn data_structure_type_id(v: &DataStructure) -> u8 {
    match v {
        DataStructure::Destination(d) => d.kind.type_id(),
        DataStructure::ConnectionId(_) => type_id::CONNECTION_ID,
        DataStructure::SessionId(_) => type_id::SESSION_ID,
        DataStructure::ConsumerId(_) => type_id::CONSUMER_ID,
        DataStructure::ProducerId(_) => type_id::PRODUCER_ID,
        DataStructure::BrokerId(_) => type_id::BROKER_ID,
        DataStructure::MessageId(_) => type_id::MESSAGE_ID,
        DataStructure::TransactionId(t) => transaction_type_id(t),
        DataStructure::NetworkBridgeFilter(_) => type_id::NETWORK_BRIDGE_FILTER,
        DataStructure::Command(c) => c.type_id(),
    }
}
