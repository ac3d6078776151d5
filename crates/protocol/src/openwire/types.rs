//! OpenWire data structures and commands (v12 field set; see `docs/openwire.md` for v9–v11).
//!
//! Field order and nullability follow the Java `openwire/v12/*Marshaller` classes: a Java
//! reference that may be null is an `Option`, and strings that Java never sends as null
//! (identifier values, destination names) are plain `String`s; a null there is refused with
//! [`OpenWireError::NullValue`](super::OpenWireError::NullValue) rather than carried along.

use bytes::Bytes;

/// OpenWire data-structure type bytes (`CommandTypes` in the Java client).
pub mod type_id {
    #![allow(missing_docs)]
    pub const WIREFORMAT_INFO: u8 = 1;
    pub const BROKER_INFO: u8 = 2;
    pub const CONNECTION_INFO: u8 = 3;
    pub const SESSION_INFO: u8 = 4;
    pub const CONSUMER_INFO: u8 = 5;
    pub const PRODUCER_INFO: u8 = 6;
    pub const TRANSACTION_INFO: u8 = 7;
    pub const DESTINATION_INFO: u8 = 8;
    pub const REMOVE_SUBSCRIPTION_INFO: u8 = 9;
    pub const KEEP_ALIVE_INFO: u8 = 10;
    pub const SHUTDOWN_INFO: u8 = 11;
    pub const REMOVE_INFO: u8 = 12;
    pub const CONTROL_COMMAND: u8 = 14;
    pub const FLUSH_COMMAND: u8 = 15;
    pub const CONNECTION_ERROR: u8 = 16;
    pub const CONSUMER_CONTROL: u8 = 17;
    pub const CONNECTION_CONTROL: u8 = 18;
    pub const PRODUCER_ACK: u8 = 19;
    pub const MESSAGE_PULL: u8 = 20;
    pub const MESSAGE_DISPATCH: u8 = 21;
    pub const MESSAGE_ACK: u8 = 22;
    pub const ACTIVEMQ_MESSAGE: u8 = 23;
    pub const ACTIVEMQ_BYTES_MESSAGE: u8 = 24;
    pub const ACTIVEMQ_MAP_MESSAGE: u8 = 25;
    pub const ACTIVEMQ_OBJECT_MESSAGE: u8 = 26;
    pub const ACTIVEMQ_STREAM_MESSAGE: u8 = 27;
    pub const ACTIVEMQ_TEXT_MESSAGE: u8 = 28;
    pub const RESPONSE: u8 = 30;
    pub const EXCEPTION_RESPONSE: u8 = 31;
    pub const DATA_RESPONSE: u8 = 32;
    pub const DATA_ARRAY_RESPONSE: u8 = 33;
    pub const INTEGER_RESPONSE: u8 = 34;
    pub const REPLAY: u8 = 65;
    pub const MESSAGE_DISPATCH_NOTIFICATION: u8 = 90;
    pub const NETWORK_BRIDGE_FILTER: u8 = 91;
    pub const ACTIVEMQ_QUEUE: u8 = 100;
    pub const ACTIVEMQ_TOPIC: u8 = 101;
    pub const ACTIVEMQ_TEMP_QUEUE: u8 = 102;
    pub const ACTIVEMQ_TEMP_TOPIC: u8 = 103;
    pub const MESSAGE_ID: u8 = 110;
    pub const LOCAL_TRANSACTION_ID: u8 = 111;
    pub const XA_TRANSACTION_ID: u8 = 112;
    pub const CONNECTION_ID: u8 = 120;
    pub const SESSION_ID: u8 = 121;
    pub const CONSUMER_ID: u8 = 122;
    pub const PRODUCER_ID: u8 = 123;
    pub const BROKER_ID: u8 = 124;
}

// ---------------------------------------------------------------------------------------------
// Identifiers and destinations
// ---------------------------------------------------------------------------------------------

/// `ConnectionId` (120).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ConnectionId {
    /// The connection id string, e.g. `ID:host-1234-1-1`.
    pub value: String,
}

/// `SessionId` (121).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct SessionId {
    /// The owning connection's id string.
    pub connection_id: String,
    /// Session number within the connection.
    pub value: i64,
}

/// `ConsumerId` (122).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ConsumerId {
    /// The owning connection's id string.
    pub connection_id: String,
    /// The owning session's number.
    pub session_id: i64,
    /// Consumer number within the session.
    pub value: i64,
}

/// `ProducerId` (123). Wire order is connection id, value, session id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ProducerId {
    /// The owning connection's id string.
    pub connection_id: String,
    /// Producer number within the session.
    pub value: i64,
    /// The owning session's number.
    pub session_id: i64,
}

/// `BrokerId` (124).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct BrokerId {
    /// The broker id string.
    pub value: String,
}

/// `MessageId` (110).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct MessageId {
    /// Free-form id text (v10+; absent from the v9 wire format, so always `None` there).
    pub text_view: Option<String>,
    /// The producer that sent the message.
    pub producer_id: Option<ProducerId>,
    /// Sequence number assigned by the producer.
    pub producer_sequence_id: i64,
    /// Sequence number assigned by the broker.
    pub broker_sequence_id: i64,
}

/// `LocalTransactionId` (111).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct LocalTransactionId {
    /// Transaction number within the connection.
    pub value: i64,
    /// The owning connection.
    pub connection_id: Option<ConnectionId>,
}

/// `XATransactionId` (112).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct XaTransactionId {
    /// XA format id.
    pub format_id: i32,
    /// Global transaction id bytes.
    pub global_transaction_id: Option<Bytes>,
    /// Branch qualifier bytes.
    pub branch_qualifier: Option<Bytes>,
}

/// A transaction id: local (111) or XA (112).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TransactionId {
    /// `LocalTransactionId`.
    Local(LocalTransactionId),
    /// `XATransactionId`.
    Xa(XaTransactionId),
}

/// Which kind of destination (its type byte on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DestinationKind {
    /// `ActiveMQQueue` (100).
    Queue,
    /// `ActiveMQTopic` (101).
    Topic,
    /// `ActiveMQTempQueue` (102).
    TempQueue,
    /// `ActiveMQTempTopic` (103).
    TempTopic,
}

impl DestinationKind {
    /// The wire type byte.
    pub fn type_id(self) -> u8 {
        match self {
            Self::Queue => type_id::ACTIVEMQ_QUEUE,
            Self::Topic => type_id::ACTIVEMQ_TOPIC,
            Self::TempQueue => type_id::ACTIVEMQ_TEMP_QUEUE,
            Self::TempTopic => type_id::ACTIVEMQ_TEMP_TOPIC,
        }
    }

    /// The kind for a wire type byte, if it is a destination type.
    pub fn from_type_id(t: u8) -> Option<Self> {
        match t {
            type_id::ACTIVEMQ_QUEUE => Some(Self::Queue),
            type_id::ACTIVEMQ_TOPIC => Some(Self::Topic),
            type_id::ACTIVEMQ_TEMP_QUEUE => Some(Self::TempQueue),
            type_id::ACTIVEMQ_TEMP_TOPIC => Some(Self::TempTopic),
            _ => None,
        }
    }
}

/// `ActiveMQDestination` (100–103). Composite destinations keep their comma-separated name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Destination {
    /// Queue, topic, temporary queue or temporary topic.
    pub kind: DestinationKind,
    /// The physical name, e.g. `orders` or `ID:host-1:1:1` for temporaries.
    pub physical_name: String,
}

/// `NetworkBridgeFilter` (91): the only `BooleanExpression` sent on the wire (network bridges
/// put it in `ConsumerInfo.additionalPredicate`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct NetworkBridgeFilter {
    /// The bridging broker.
    pub network_broker_id: Option<BrokerId>,
    /// Message time-to-live in network hops.
    pub message_ttl: i32,
    /// Consumer advisory time-to-live in network hops.
    pub consumer_ttl: i32,
}

/// A Java `Throwable` as marshalled by `looseMarshalThrowable`.
///
/// `stack_trace` and `cause` travel only when the negotiated `StackTraceEnabled` is true
/// ([`CodecOptions::stack_trace_enabled`](super::CodecOptions)); otherwise they are dropped when
/// encoding and empty when decoding.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BrokerError {
    /// The exception class name, e.g. `javax.jms.InvalidDestinationException`.
    pub class_name: Option<String>,
    /// The exception message.
    pub message: Option<String>,
    /// Stack frames (only with stack traces enabled).
    pub stack_trace: Vec<StackTraceElement>,
    /// The cause (only with stack traces enabled).
    pub cause: Option<Box<BrokerError>>,
}

/// One Java stack frame.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StackTraceElement {
    /// Declaring class.
    pub class_name: Option<String>,
    /// Method name.
    pub method_name: Option<String>,
    /// Source file.
    pub file_name: Option<String>,
    /// Line number.
    pub line_number: i32,
}

/// Any data structure that may appear where Java declares a `DataStructure` (e.g.
/// `RemoveInfo.objectId`, `Message.dataStructure`, `DataResponse.data`).
#[derive(Debug, Clone, PartialEq)]
pub enum DataStructure {
    /// A destination (100–103).
    Destination(Destination),
    /// `ConnectionId` (120).
    ConnectionId(ConnectionId),
    /// `SessionId` (121).
    SessionId(SessionId),
    /// `ConsumerId` (122).
    ConsumerId(ConsumerId),
    /// `ProducerId` (123).
    ProducerId(ProducerId),
    /// `BrokerId` (124).
    BrokerId(BrokerId),
    /// `MessageId` (110).
    MessageId(MessageId),
    /// A transaction id (111, 112).
    TransactionId(TransactionId),
    /// `NetworkBridgeFilter` (91).
    NetworkBridgeFilter(NetworkBridgeFilter),
    /// Any command (advisory messages carry `ConsumerInfo`, `ConnectionInfo`, ...).
    Command(Box<Command>),
}

// ---------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------

/// The `BaseCommand` fields every command except `WireFormatInfo` starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CommandHeader {
    /// Sender-assigned id; a `Response` names it in `correlation_id`.
    pub command_id: i32,
    /// Whether the sender waits for a `Response`.
    pub response_required: bool,
}

/// `WireFormatInfo` (1). Not a `BaseCommand` on the wire: no [`CommandHeader`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireFormatInfo {
    /// Always `ActiveMQ` in practice; checked by the negotiator, not the codec.
    pub magic: [u8; 8],
    /// Highest OpenWire version the sender speaks.
    pub version: i32,
    /// The options (`TightEncodingEnabled`, `CacheEnabled`, ...) as a marshalled primitive map;
    /// see [`WireFormatInfo::properties`].
    pub marshalled_properties: Option<Bytes>,
}

/// `BrokerInfo` (2).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BrokerInfo {
    /// Common command fields.
    pub header: CommandHeader,
    /// This broker's id.
    pub broker_id: Option<BrokerId>,
    /// The URL clients connect to.
    pub broker_url: Option<String>,
    /// Known peers (network of brokers).
    pub peer_broker_infos: Option<Vec<BrokerInfo>>,
    /// Broker name.
    pub broker_name: Option<String>,
    /// Whether this is a slave.
    pub slave_broker: bool,
    /// Whether this is a master.
    pub master_broker: bool,
    /// Whether a fault-tolerant (master/slave) configuration is used.
    pub fault_tolerant_configuration: bool,
    /// Duplex network connection.
    pub duplex_connection: bool,
    /// Network (broker-to-broker) connection.
    pub network_connection: bool,
    /// Connection number assigned by the broker.
    pub connection_id: i64,
    /// Blob upload URL.
    pub broker_upload_url: Option<String>,
    /// Network connector properties (a Java properties string).
    pub network_properties: Option<String>,
}

/// `ConnectionInfo` (3).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectionInfo {
    /// Common command fields.
    pub header: CommandHeader,
    /// The new connection's id.
    pub connection_id: Option<ConnectionId>,
    /// JMS client id.
    pub client_id: Option<String>,
    /// Password.
    pub password: Option<String>,
    /// User name.
    pub user_name: Option<String>,
    /// Brokers this connection passed through (network of brokers).
    pub broker_path: Option<Vec<BrokerId>>,
    /// Whether the connection comes from a master broker.
    pub broker_master_connector: bool,
    /// Whether the connection is JMX-manageable.
    pub manageable: bool,
    /// Whether the client is master (fault-tolerant clients).
    pub client_master: bool,
    /// Fault-tolerant (failover) client.
    pub fault_tolerant: bool,
    /// Reconnect after failover.
    pub failover_reconnect: bool,
    /// Client IP as seen by the client.
    pub client_ip: Option<String>,
}

/// `SessionInfo` (4).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionInfo {
    /// Common command fields.
    pub header: CommandHeader,
    /// The new session's id.
    pub session_id: Option<SessionId>,
}

/// `ConsumerInfo` (5).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConsumerInfo {
    /// Common command fields.
    pub header: CommandHeader,
    /// The new consumer's id.
    pub consumer_id: Option<ConsumerId>,
    /// Queue browser.
    pub browser: bool,
    /// What to consume from.
    pub destination: Option<Destination>,
    /// Prefetch window in messages.
    pub prefetch_size: i32,
    /// Pending message limit for slow topic consumers.
    pub maximum_pending_message_limit: i32,
    /// Dispatch asynchronously.
    pub dispatch_async: bool,
    /// JMS selector.
    pub selector: Option<String>,
    /// Client id for durable subscriptions (v10+; not on the v9 wire).
    pub client_id: Option<String>,
    /// Durable subscription name.
    pub subscription_name: Option<String>,
    /// Do not receive messages from the same connection.
    pub no_local: bool,
    /// Exclusive consumer.
    pub exclusive: bool,
    /// Retroactive topic consumer.
    pub retroactive: bool,
    /// Consumer priority (Java byte).
    pub priority: u8,
    /// Brokers this subscription passed through.
    pub broker_path: Option<Vec<BrokerId>>,
    /// Extra filter (a `NetworkBridgeFilter` from network bridges).
    pub additional_predicate: Option<Box<DataStructure>>,
    /// Subscription made by a network bridge.
    pub network_subscription: bool,
    /// Batched acknowledgements.
    pub optimized_acknowledge: bool,
    /// Acks never name ranges.
    pub no_range_acks: bool,
    /// Consumer ids along the network path.
    pub network_consumer_path: Option<Vec<ConsumerId>>,
}

/// `ProducerInfo` (6).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProducerInfo {
    /// Common command fields.
    pub header: CommandHeader,
    /// The new producer's id.
    pub producer_id: Option<ProducerId>,
    /// Fixed destination, or `None` for an anonymous producer.
    pub destination: Option<Destination>,
    /// Brokers this producer passed through.
    pub broker_path: Option<Vec<BrokerId>>,
    /// Dispatch asynchronously.
    pub dispatch_async: bool,
    /// Producer flow-control window in bytes (0 = none).
    pub window_size: i32,
}

/// `TransactionInfo` (7).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TransactionInfo {
    /// Common command fields.
    pub header: CommandHeader,
    /// The connection the transaction belongs to.
    pub connection_id: Option<ConnectionId>,
    /// The transaction.
    pub transaction_id: Option<TransactionId>,
    /// Operation: see [`TransactionInfo::BEGIN`] and friends.
    pub transaction_type: u8,
}

impl TransactionInfo {
    /// Begin.
    pub const BEGIN: u8 = 0;
    /// XA prepare.
    pub const PREPARE: u8 = 1;
    /// One-phase commit.
    pub const COMMIT_ONE_PHASE: u8 = 2;
    /// Two-phase commit.
    pub const COMMIT_TWO_PHASE: u8 = 3;
    /// Rollback.
    pub const ROLLBACK: u8 = 4;
    /// XA recover.
    pub const RECOVER: u8 = 5;
    /// XA forget.
    pub const FORGET: u8 = 6;
    /// XA end.
    pub const END: u8 = 7;
}

/// `DestinationInfo` (8): create or remove a (usually temporary) destination.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DestinationInfo {
    /// Common command fields.
    pub header: CommandHeader,
    /// The requesting connection.
    pub connection_id: Option<ConnectionId>,
    /// The destination.
    pub destination: Option<Destination>,
    /// [`DestinationInfo::ADD`] or [`DestinationInfo::REMOVE`].
    pub operation_type: u8,
    /// Timeout in milliseconds.
    pub timeout: i64,
    /// Brokers this request passed through.
    pub broker_path: Option<Vec<BrokerId>>,
}

impl DestinationInfo {
    /// Add the destination.
    pub const ADD: u8 = 0;
    /// Remove the destination.
    pub const REMOVE: u8 = 1;
}

/// `RemoveSubscriptionInfo` (9): delete a durable subscription.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RemoveSubscriptionInfo {
    /// Common command fields.
    pub header: CommandHeader,
    /// The requesting connection.
    pub connection_id: Option<ConnectionId>,
    /// Subscription name (Java spells the accessor `subcriptionName`).
    pub subscription_name: Option<String>,
    /// The subscription's client id.
    pub client_id: Option<String>,
}

/// `KeepAliveInfo` (10).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeepAliveInfo {
    /// Common command fields.
    pub header: CommandHeader,
}

/// `ShutdownInfo` (11): the client is closing the connection.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShutdownInfo {
    /// Common command fields.
    pub header: CommandHeader,
}

/// `RemoveInfo` (12): close a connection, session, consumer or producer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RemoveInfo {
    /// Common command fields.
    pub header: CommandHeader,
    /// The id of what is removed (a `ConnectionId`, `SessionId`, `ConsumerId` or `ProducerId`).
    pub object_id: Option<Box<DataStructure>>,
    /// Last message sequence the consumer saw (for redelivery accounting); -1 if unknown.
    pub last_delivered_sequence_id: i64,
}

/// `ControlCommand` (14).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ControlCommand {
    /// Common command fields.
    pub header: CommandHeader,
    /// The control string.
    pub command: Option<String>,
}

/// `FlushCommand` (15).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FlushCommand {
    /// Common command fields.
    pub header: CommandHeader,
}

/// `ConnectionError` (16): the broker reports an asynchronous error.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectionError {
    /// Common command fields.
    pub header: CommandHeader,
    /// The error.
    pub exception: Option<BrokerError>,
    /// The affected connection.
    pub connection_id: Option<ConnectionId>,
}

/// `ConsumerControl` (17).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConsumerControl {
    /// Common command fields.
    pub header: CommandHeader,
    /// The consumer's destination.
    pub destination: Option<Destination>,
    /// Close the consumer.
    pub close: bool,
    /// The consumer.
    pub consumer_id: Option<ConsumerId>,
    /// New prefetch size.
    pub prefetch: i32,
    /// Flush.
    pub flush: bool,
    /// Start.
    pub start: bool,
    /// Stop.
    pub stop: bool,
}

/// `ConnectionControl` (18).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectionControl {
    /// Common command fields.
    pub header: CommandHeader,
    /// Close.
    pub close: bool,
    /// Exit.
    pub exit: bool,
    /// Fault tolerant.
    pub fault_tolerant: bool,
    /// Resume.
    pub resume: bool,
    /// Suspend.
    pub suspend: bool,
    /// Comma-separated broker URLs for failover clients.
    pub connected_brokers: Option<String>,
    /// URL the client should reconnect to.
    pub reconnect_to: Option<String>,
    /// Whether the client should rebalance.
    pub rebalance_connection: bool,
    /// Opaque token.
    pub token: Option<Bytes>,
}

/// `ProducerAck` (19): producer flow-control credit.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProducerAck {
    /// Common command fields.
    pub header: CommandHeader,
    /// The producer.
    pub producer_id: Option<ProducerId>,
    /// Bytes released.
    pub size: i32,
}

/// `MessagePull` (20): a zero-prefetch consumer asks for a message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessagePull {
    /// Common command fields.
    pub header: CommandHeader,
    /// The consumer.
    pub consumer_id: Option<ConsumerId>,
    /// The consumer's destination.
    pub destination: Option<Destination>,
    /// Timeout in milliseconds (0 = wait, -1 = no wait).
    pub timeout: i64,
    /// Correlation id.
    pub correlation_id: Option<String>,
    /// A specific message.
    pub message_id: Option<MessageId>,
}

/// `MessageDispatch` (21): the broker delivers a message to a consumer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MessageDispatch {
    /// Common command fields.
    pub header: CommandHeader,
    /// The consumer.
    pub consumer_id: Option<ConsumerId>,
    /// The destination.
    pub destination: Option<Destination>,
    /// The message (`None` signals end of browse / pull timeout).
    pub message: Option<Box<Message>>,
    /// Redelivery counter.
    pub redelivery_counter: i32,
}

/// `MessageAck` (22).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageAck {
    /// Common command fields.
    pub header: CommandHeader,
    /// The destination.
    pub destination: Option<Destination>,
    /// The transaction, if transacted.
    pub transaction_id: Option<TransactionId>,
    /// The consumer.
    pub consumer_id: Option<ConsumerId>,
    /// See [`MessageAck::DELIVERED`] and friends.
    pub ack_type: u8,
    /// First message of the acked range.
    pub first_message_id: Option<MessageId>,
    /// Last message of the acked range.
    pub last_message_id: Option<MessageId>,
    /// Number of messages acked.
    pub message_count: i32,
    /// Why a poison ack was sent.
    pub poison_cause: Option<BrokerError>,
}

impl MessageAck {
    /// Delivered (not consumed).
    pub const DELIVERED: u8 = 0;
    /// Poison (send to DLQ).
    pub const POISON: u8 = 1;
    /// Standard (consumed).
    pub const STANDARD: u8 = 2;
    /// Redelivered.
    pub const REDELIVERED: u8 = 3;
    /// Individual.
    pub const INDIVIDUAL: u8 = 4;
    /// Unmatched (topic selector).
    pub const UNMATCHED: u8 = 5;
    /// Expired.
    pub const EXPIRED: u8 = 6;
}

/// Which `ActiveMQ*Message` class a [`Message`] is (its type byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MessageKind {
    /// `ActiveMQMessage` (23): no body.
    #[default]
    Message,
    /// `ActiveMQBytesMessage` (24).
    Bytes,
    /// `ActiveMQMapMessage` (25): body is a primitive map.
    Map,
    /// `ActiveMQObjectMessage` (26): body is a serialized Java object (kept opaque).
    Object,
    /// `ActiveMQStreamMessage` (27).
    Stream,
    /// `ActiveMQTextMessage` (28): body is a 4-byte-length modified UTF-8 string.
    Text,
}

impl MessageKind {
    /// The wire type byte.
    pub fn type_id(self) -> u8 {
        match self {
            Self::Message => type_id::ACTIVEMQ_MESSAGE,
            Self::Bytes => type_id::ACTIVEMQ_BYTES_MESSAGE,
            Self::Map => type_id::ACTIVEMQ_MAP_MESSAGE,
            Self::Object => type_id::ACTIVEMQ_OBJECT_MESSAGE,
            Self::Stream => type_id::ACTIVEMQ_STREAM_MESSAGE,
            Self::Text => type_id::ACTIVEMQ_TEXT_MESSAGE,
        }
    }

    /// The kind for a wire type byte, if it is a message type.
    pub fn from_type_id(t: u8) -> Option<Self> {
        match t {
            type_id::ACTIVEMQ_MESSAGE => Some(Self::Message),
            type_id::ACTIVEMQ_BYTES_MESSAGE => Some(Self::Bytes),
            type_id::ACTIVEMQ_MAP_MESSAGE => Some(Self::Map),
            type_id::ACTIVEMQ_OBJECT_MESSAGE => Some(Self::Object),
            type_id::ACTIVEMQ_STREAM_MESSAGE => Some(Self::Stream),
            type_id::ACTIVEMQ_TEXT_MESSAGE => Some(Self::Text),
            _ => None,
        }
    }
}

/// A message (types 23–28), all `Message` fields of the v12 marshaller in wire order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Message {
    /// Which message class.
    pub kind: MessageKind,
    /// Common command fields.
    pub header: CommandHeader,
    /// The sending producer.
    pub producer_id: Option<ProducerId>,
    /// Where the message is sent.
    pub destination: Option<Destination>,
    /// The transaction, if transacted.
    pub transaction_id: Option<TransactionId>,
    /// Destination before a DLQ move / virtual destination mapping.
    pub original_destination: Option<Destination>,
    /// JMSMessageID.
    pub message_id: Option<MessageId>,
    /// Transaction before a move.
    pub original_transaction_id: Option<TransactionId>,
    /// JMSXGroupID.
    pub group_id: Option<String>,
    /// JMSXGroupSeq.
    pub group_sequence: i32,
    /// JMSCorrelationID.
    pub correlation_id: Option<String>,
    /// JMSDeliveryMode persistent.
    pub persistent: bool,
    /// JMSExpiration (epoch ms, 0 = never).
    pub expiration: i64,
    /// JMSPriority.
    pub priority: u8,
    /// JMSReplyTo.
    pub reply_to: Option<Destination>,
    /// JMSTimestamp (epoch ms).
    pub timestamp: i64,
    /// JMSType.
    pub message_type: Option<String>,
    /// The encoded body; see [`Message::text`] and [`Message::map_body`].
    pub content: Option<Bytes>,
    /// The encoded user properties; see [`Message::properties`].
    pub marshalled_properties: Option<Bytes>,
    /// Payload of advisory messages.
    pub data_structure: Option<Box<DataStructure>>,
    /// Consumer the message is targeted at.
    pub target_consumer_id: Option<ConsumerId>,
    /// Whether `content` is deflate-compressed.
    pub compressed: bool,
    /// Redelivery count.
    pub redelivery_counter: i32,
    /// Brokers the message passed through.
    pub broker_path: Option<Vec<BrokerId>>,
    /// Broker arrival time (epoch ms).
    pub arrival: i64,
    /// JMSXUserID.
    pub user_id: Option<String>,
    /// Received by a durable-forwarding bridge (Java spells it `recievedByDFBridge`).
    pub received_by_df_bridge: bool,
    /// May be dropped under load.
    pub droppable: bool,
    /// Brokers in the cluster path.
    pub cluster: Option<Vec<BrokerId>>,
    /// Broker in time (epoch ms).
    pub broker_in_time: i64,
    /// Broker out time (epoch ms).
    pub broker_out_time: i64,
    /// JMSXGroupFirstForConsumer (v10+; not on the v9 wire).
    pub jmsx_group_first_for_consumer: bool,
}

/// `Response` (30).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Response {
    /// Common command fields.
    pub header: CommandHeader,
    /// The `command_id` being answered.
    pub correlation_id: i32,
}

/// `ExceptionResponse` (31).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExceptionResponse {
    /// Common command fields.
    pub header: CommandHeader,
    /// The `command_id` being answered.
    pub correlation_id: i32,
    /// The failure.
    pub exception: Option<BrokerError>,
}

/// `DataResponse` (32).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DataResponse {
    /// Common command fields.
    pub header: CommandHeader,
    /// The `command_id` being answered.
    pub correlation_id: i32,
    /// The data.
    pub data: Option<Box<DataStructure>>,
}

/// `DataArrayResponse` (33).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DataArrayResponse {
    /// Common command fields.
    pub header: CommandHeader,
    /// The `command_id` being answered.
    pub correlation_id: i32,
    /// The data.
    pub data: Option<Vec<DataStructure>>,
}

/// `IntegerResponse` (34).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IntegerResponse {
    /// Common command fields.
    pub header: CommandHeader,
    /// The `command_id` being answered.
    pub correlation_id: i32,
    /// The result.
    pub result: i32,
}

/// `ReplayCommand` (65).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplayCommand {
    /// Common command fields.
    pub header: CommandHeader,
    /// First missing command number.
    pub first_nak_number: i32,
    /// Last missing command number.
    pub last_nak_number: i32,
}

/// `MessageDispatchNotification` (90): a slave learns which message went to which consumer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageDispatchNotification {
    /// Common command fields.
    pub header: CommandHeader,
    /// The consumer.
    pub consumer_id: Option<ConsumerId>,
    /// The destination.
    pub destination: Option<Destination>,
    /// Delivery sequence number.
    pub delivery_sequence_id: i64,
    /// The message.
    pub message_id: Option<MessageId>,
}

/// Every OpenWire command this codec understands.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// 1
    WireFormatInfo(WireFormatInfo),
    /// 2
    BrokerInfo(BrokerInfo),
    /// 3
    ConnectionInfo(ConnectionInfo),
    /// 4
    SessionInfo(SessionInfo),
    /// 5
    ConsumerInfo(ConsumerInfo),
    /// 6
    ProducerInfo(ProducerInfo),
    /// 7
    TransactionInfo(TransactionInfo),
    /// 8
    DestinationInfo(DestinationInfo),
    /// 9
    RemoveSubscriptionInfo(RemoveSubscriptionInfo),
    /// 10
    KeepAliveInfo(KeepAliveInfo),
    /// 11
    ShutdownInfo(ShutdownInfo),
    /// 12
    RemoveInfo(RemoveInfo),
    /// 14
    ControlCommand(ControlCommand),
    /// 15
    FlushCommand(FlushCommand),
    /// 16
    ConnectionError(ConnectionError),
    /// 17
    ConsumerControl(ConsumerControl),
    /// 18
    ConnectionControl(ConnectionControl),
    /// 19
    ProducerAck(ProducerAck),
    /// 20
    MessagePull(MessagePull),
    /// 21
    MessageDispatch(MessageDispatch),
    /// 22
    MessageAck(MessageAck),
    /// 23–28 (see [`Message::kind`])
    Message(Box<Message>),
    /// 30
    Response(Response),
    /// 31
    ExceptionResponse(ExceptionResponse),
    /// 32
    DataResponse(DataResponse),
    /// 33
    DataArrayResponse(DataArrayResponse),
    /// 34
    IntegerResponse(IntegerResponse),
    /// 65
    ReplayCommand(ReplayCommand),
    /// 90
    MessageDispatchNotification(MessageDispatchNotification),
}

impl Command {
    /// The wire type byte of this command.
    pub fn type_id(&self) -> u8 {
        use type_id as t;
        match self {
            Self::WireFormatInfo(_) => t::WIREFORMAT_INFO,
            Self::BrokerInfo(_) => t::BROKER_INFO,
            Self::ConnectionInfo(_) => t::CONNECTION_INFO,
            Self::SessionInfo(_) => t::SESSION_INFO,
            Self::ConsumerInfo(_) => t::CONSUMER_INFO,
            Self::ProducerInfo(_) => t::PRODUCER_INFO,
            Self::TransactionInfo(_) => t::TRANSACTION_INFO,
            Self::DestinationInfo(_) => t::DESTINATION_INFO,
            Self::RemoveSubscriptionInfo(_) => t::REMOVE_SUBSCRIPTION_INFO,
            Self::KeepAliveInfo(_) => t::KEEP_ALIVE_INFO,
            Self::ShutdownInfo(_) => t::SHUTDOWN_INFO,
            Self::RemoveInfo(_) => t::REMOVE_INFO,
            Self::ControlCommand(_) => t::CONTROL_COMMAND,
            Self::FlushCommand(_) => t::FLUSH_COMMAND,
            Self::ConnectionError(_) => t::CONNECTION_ERROR,
            Self::ConsumerControl(_) => t::CONSUMER_CONTROL,
            Self::ConnectionControl(_) => t::CONNECTION_CONTROL,
            Self::ProducerAck(_) => t::PRODUCER_ACK,
            Self::MessagePull(_) => t::MESSAGE_PULL,
            Self::MessageDispatch(_) => t::MESSAGE_DISPATCH,
            Self::MessageAck(_) => t::MESSAGE_ACK,
            Self::Message(m) => m.kind.type_id(),
            Self::Response(_) => t::RESPONSE,
            Self::ExceptionResponse(_) => t::EXCEPTION_RESPONSE,
            Self::DataResponse(_) => t::DATA_RESPONSE,
            Self::DataArrayResponse(_) => t::DATA_ARRAY_RESPONSE,
            Self::IntegerResponse(_) => t::INTEGER_RESPONSE,
            Self::ReplayCommand(_) => t::REPLAY,
            Self::MessageDispatchNotification(_) => t::MESSAGE_DISPATCH_NOTIFICATION,
        }
    }

    /// The `BaseCommand` header; `None` for `WireFormatInfo`, which has none on the wire.
    pub fn header(&self) -> Option<&CommandHeader> {
        Some(match self {
            Self::WireFormatInfo(_) => return None,
            Self::BrokerInfo(c) => &c.header,
            Self::ConnectionInfo(c) => &c.header,
            Self::SessionInfo(c) => &c.header,
            Self::ConsumerInfo(c) => &c.header,
            Self::ProducerInfo(c) => &c.header,
            Self::TransactionInfo(c) => &c.header,
            Self::DestinationInfo(c) => &c.header,
            Self::RemoveSubscriptionInfo(c) => &c.header,
            Self::KeepAliveInfo(c) => &c.header,
            Self::ShutdownInfo(c) => &c.header,
            Self::RemoveInfo(c) => &c.header,
            Self::ControlCommand(c) => &c.header,
            Self::FlushCommand(c) => &c.header,
            Self::ConnectionError(c) => &c.header,
            Self::ConsumerControl(c) => &c.header,
            Self::ConnectionControl(c) => &c.header,
            Self::ProducerAck(c) => &c.header,
            Self::MessagePull(c) => &c.header,
            Self::MessageDispatch(c) => &c.header,
            Self::MessageAck(c) => &c.header,
            Self::Message(c) => &c.header,
            Self::Response(c) => &c.header,
            Self::ExceptionResponse(c) => &c.header,
            Self::DataResponse(c) => &c.header,
            Self::DataArrayResponse(c) => &c.header,
            Self::IntegerResponse(c) => &c.header,
            Self::ReplayCommand(c) => &c.header,
            Self::MessageDispatchNotification(c) => &c.header,
        })
    }
}
