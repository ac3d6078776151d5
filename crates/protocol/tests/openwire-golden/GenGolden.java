// Generates golden OpenWire frames with the real ActiveMQ client (loose encoding, cache off).
//
// Run from the repository root (Java 17, Debian's /usr/share/java jars):
//   CP=/usr/share/java/activemq-client.jar:/usr/share/java/hawtbuf.jar:/usr/share/java/geronimo-jms_1.1_spec.jar:/usr/share/java/slf4j-api.jar
//   java -cp $CP crates/protocol/tests/openwire-golden/GenGolden.java crates/protocol/tests/openwire-golden
// It writes v9.hex .. v12.hex: one "name hex" line per frame. Names ending in ".st" were
// marshalled with StackTraceEnabled=true. The Rust test (tests/openwire_golden.rs) decodes each
// frame, checks key fields and asserts that re-encoding gives the same bytes.

import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import org.apache.activemq.command.*;
import org.apache.activemq.openwire.OpenWireFormat;
import org.apache.activemq.util.ByteSequence;

public class GenGolden {
    static final ConnectionId CONN = new ConnectionId("ID:golden-host-40000-1700000000000-1:1");
    static final SessionId SESSION = new SessionId(CONN, 1);
    static final ConsumerId CONSUMER = new ConsumerId(SESSION, 7);
    static final ProducerId PRODUCER = new ProducerId(SESSION, 3);
    static final ActiveMQQueue QUEUE = new ActiveMQQueue("orders.in");
    static final ActiveMQTopic TOPIC = new ActiveMQTopic("prices.>");

    public static void main(String[] args) throws Exception {
        Path dir = Path.of(args.length > 0 ? args[0] : ".");
        for (int v = 9; v <= 12; v++) {
            try (PrintWriter out = new PrintWriter(dir.resolve("v" + v + ".hex").toFile(), "UTF-8")) {
                for (Map.Entry<String, DataStructure> e : commands().entrySet()) {
                    String name = e.getKey();
                    OpenWireFormat wf = new OpenWireFormat(v);
                    wf.setTightEncodingEnabled(false);
                    wf.setCacheEnabled(false);
                    wf.setSizePrefixDisabled(false);
                    wf.setStackTraceEnabled(name.endsWith(".st"));
                    ByteSequence seq = wf.marshal(e.getValue());
                    out.println(name + " " + hex(seq));
                }
            }
        }
    }

    static String hex(ByteSequence seq) {
        StringBuilder sb = new StringBuilder();
        for (int i = seq.offset; i < seq.offset + seq.length; i++) {
            sb.append(String.format("%02x", seq.data[i] & 0xff));
        }
        return sb.toString();
    }

    static MessageId messageId(long seq) {
        MessageId id = new MessageId(PRODUCER, seq);
        id.setBrokerSequenceId(1000 + seq);
        return id;
    }

    static <T extends BaseCommand> T cmd(T c, int id, boolean responseRequired) {
        c.setCommandId(id);
        c.setResponseRequired(responseRequired);
        return c;
    }

    static void stamp(Message m, long seq) {
        m.setProducerId(PRODUCER);
        m.setDestination(QUEUE);
        m.setMessageId(messageId(seq));
        m.setTimestamp(1700000000000L + seq);
        m.setPersistent(true);
        m.setPriority((byte) 4);
        cmd(m, 20 + (int) seq, true);
    }

    static Map<String, DataStructure> commands() throws Exception {
        Map<String, DataStructure> m = new LinkedHashMap<>();

        WireFormatInfo wfi = new WireFormatInfo();
        wfi.setVersion(12);
        wfi.setTightEncodingEnabled(false);
        wfi.setCacheEnabled(false);
        wfi.setStackTraceEnabled(false);
        wfi.setSizePrefixDisabled(false);
        wfi.setTcpNoDelayEnabled(true);
        wfi.setMaxInactivityDuration(30000);
        wfi.setMaxInactivityDurationInitalDelay(10000);
        wfi.setCacheSize(0);
        wfi.setMaxFrameSize(64L * 1024 * 1024);
        m.put("wireformat_info", wfi);

        BrokerInfo peer = cmd(new BrokerInfo(), 0, false);
        peer.setBrokerId(new BrokerId("ID:peer-1"));
        peer.setBrokerName("peer");
        peer.setBrokerURL("tcp://peer:61616");
        BrokerInfo bi = cmd(new BrokerInfo(), 1, false);
        bi.setBrokerId(new BrokerId("ID:ferromq-1"));
        bi.setBrokerName("ferromq");
        bi.setBrokerURL("tcp://localhost:61616");
        bi.setPeerBrokerInfos(new BrokerInfo[] {peer});
        bi.setFaultTolerantConfiguration(true);
        bi.setConnectionId(42);
        bi.setNetworkProperties("a=b");
        m.put("broker_info", bi);

        ConnectionInfo ci = cmd(new ConnectionInfo(CONN), 1, true);
        ci.setClientId("golden-client");
        ci.setUserName("alice");
        ci.setPassword("s3cret");
        ci.setManageable(true);
        ci.setFaultTolerant(true);
        ci.setClientIp("tcp://127.0.0.1:5555");
        m.put("connection_info", ci);

        m.put("session_info", cmd(new SessionInfo(SESSION), 2, true));

        ConsumerInfo cons = cmd(new ConsumerInfo(CONSUMER), 3, true);
        cons.setDestination(QUEUE);
        cons.setSelector("color = 'red' AND weight > 2");
        cons.setPrefetchSize(1000);
        cons.setPriority((byte) 5);
        cons.setExclusive(true);
        m.put("consumer_info", cons);

        ConsumerInfo dur = cmd(new ConsumerInfo(new ConsumerId(SESSION, 8)), 4, true);
        dur.setDestination(TOPIC);
        dur.setSubscriptionName("durable-sub");
        dur.setClientId("golden-client");
        dur.setNoLocal(true);
        dur.setBrokerPath(new BrokerId[] {new BrokerId("ID:b1"), new BrokerId("ID:b2")});
        NetworkBridgeFilter nbf = new NetworkBridgeFilter();
        nbf.setNetworkBrokerId(new BrokerId("ID:b1"));
        nbf.setMessageTTL(3);
        nbf.setConsumerTTL(2);
        dur.setAdditionalPredicate(nbf);
        dur.setNetworkSubscription(true);
        dur.setNetworkConsumerPath(new ConsumerId[] {new ConsumerId(SESSION, 9)});
        m.put("consumer_info_durable_network", dur);

        ProducerInfo pi = cmd(new ProducerInfo(PRODUCER), 5, true);
        pi.setDestination(QUEUE);
        pi.setWindowSize(1 << 20);
        m.put("producer_info", pi);

        ActiveMQTextMessage text = new ActiveMQTextMessage();
        stamp(text, 1);
        text.setText("hello, wörld \u0000 \uD83D\uDE00");
        text.setCorrelationId("corr-1");
        text.setReplyTo(new ActiveMQTempQueue("ID:golden-host-40000-1700000000000-1:1:1"));
        text.setType("greeting");
        text.setGroupID("group-a");
        text.setGroupSequence(2);
        text.setExpiration(1700000060000L);
        text.setStringProperty("color", "red");
        text.setIntProperty("weight", 3);
        text.setBooleanProperty("urgent", true);
        text.setLongProperty("big", Long.MIN_VALUE);
        text.setDoubleProperty("ratio", 0.25);
        text.setFloatProperty("f", 1.5f);
        text.setShortProperty("s", (short) -2);
        text.setByteProperty("b", (byte) 7);
        text.getMessageId().setTextView("ID:golden-text-view");
        text.setUserID("alice");
        text.setJMSXGroupFirstForConsumer(true);
        m.put("text_message", text);

        ActiveMQBytesMessage bytes = new ActiveMQBytesMessage();
        stamp(bytes, 2);
        bytes.writeBytes(new byte[] {0, 1, 2, (byte) 0xff});
        bytes.writeInt(0x01020304);
        // Moves the written bytes into the content (the client does this on send).
        bytes.reset();
        bytes.setTransactionId(new LocalTransactionId(CONN, 11));
        m.put("bytes_message", bytes);

        ActiveMQMapMessage map = new ActiveMQMapMessage();
        stamp(map, 3);
        map.setString("name", "widget");
        map.setInt("count", 12);
        map.setChar("grade", 'A');
        map.setBytes("raw", new byte[] {9, 8, 7});
        map.setDouble("price", 9.99);
        map.setString("long", "x".repeat(9000));
        Map<String, Object> nested = new LinkedHashMap<>();
        nested.put("inner", 1);
        List<Object> list = new ArrayList<>();
        list.add("a");
        list.add(2L);
        list.add(null);
        nested.put("list", list);
        map.setObject("nested", nested);
        m.put("map_message", map);

        ActiveMQMessage advisory = new ActiveMQMessage();
        stamp(advisory, 4);
        advisory.setDestination(new ActiveMQTopic("ActiveMQ.Advisory.Consumer.Queue.orders.in"));
        advisory.setDataStructure(cons);
        advisory.setBrokerPath(new BrokerId[] {new BrokerId("ID:b1")});
        advisory.setCluster(new BrokerId[] {new BrokerId("ID:c1")});
        advisory.setArrival(5);
        advisory.setBrokerInTime(6);
        advisory.setBrokerOutTime(7);
        m.put("advisory_message", advisory);

        MessageAck std = cmd(new MessageAck(), 30, false);
        std.setAckType(MessageAck.STANDARD_ACK_TYPE);
        std.setConsumerId(CONSUMER);
        std.setDestination(QUEUE);
        std.setFirstMessageId(messageId(1));
        std.setLastMessageId(messageId(3));
        std.setMessageCount(3);
        m.put("message_ack_standard", std);

        MessageAck ind = cmd(new MessageAck(), 31, true);
        ind.setAckType(MessageAck.INDIVIDUAL_ACK_TYPE);
        ind.setConsumerId(CONSUMER);
        ind.setDestination(QUEUE);
        ind.setLastMessageId(messageId(2));
        ind.setMessageCount(1);
        ind.setTransactionId(new LocalTransactionId(CONN, 12));
        m.put("message_ack_individual", ind);

        MessageAck poison = cmd(new MessageAck(), 32, false);
        poison.setAckType(MessageAck.POISON_ACK_TYPE);
        poison.setConsumerId(CONSUMER);
        poison.setDestination(QUEUE);
        poison.setLastMessageId(messageId(2));
        poison.setMessageCount(1);
        poison.setPoisonCause(new Throwable("redelivery limit"));
        m.put("message_ack_poison", poison);

        TransactionInfo tx = cmd(new TransactionInfo(CONN, new LocalTransactionId(CONN, 11), TransactionInfo.COMMIT_ONE_PHASE), 40, true);
        m.put("transaction_info", tx);

        XATransactionId xid = new XATransactionId();
        xid.setFormatId(0x1234);
        xid.setGlobalTransactionId(new byte[] {1, 2, 3});
        xid.setBranchQualifier(new byte[] {4, 5});
        m.put("transaction_info_xa", cmd(new TransactionInfo(CONN, xid, TransactionInfo.PREPARE), 41, true));

        m.put("remove_info_consumer", cmd(new RemoveInfo(CONSUMER), 50, true));
        RemoveInfo rc = cmd(new RemoveInfo(CONN), 51, true);
        rc.setLastDeliveredSequenceId(-1);
        m.put("remove_info_connection", rc);
        m.put("keep_alive_info", cmd(new KeepAliveInfo(), 0, false));
        m.put("shutdown_info", cmd(new ShutdownInfo(), 60, false));

        m.put("response", cmd(new Response(), 0, false));
        Response r = (Response) m.get("response");
        r.setCorrelationId(1);

        ExceptionResponse er = cmd(new ExceptionResponse(), 0, false);
        er.setCorrelationId(3);
        er.setException(new javax.jms.InvalidSelectorException("bad selector"));
        m.put("exception_response", er);

        ExceptionResponse ers = cmd(new ExceptionResponse(), 0, false);
        ers.setCorrelationId(4);
        Exception cause = new IllegalStateException("inner");
        cause.setStackTrace(new StackTraceElement[] {new StackTraceElement("a.B", "c", "B.java", 7)});
        Exception outer = new javax.jms.JMSException("outer");
        outer.initCause(cause);
        outer.setStackTrace(new StackTraceElement[] {
            new StackTraceElement("x.Y", "run", "Y.java", 10),
            new StackTraceElement("x.Z", "call", null, -2)});
        ers.setException(outer);
        m.put("exception_response.st", ers);

        MessageDispatch md = cmd(new MessageDispatch(), 70, false);
        md.setConsumerId(CONSUMER);
        md.setDestination(QUEUE);
        md.setMessage(text);
        md.setRedeliveryCounter(1);
        m.put("message_dispatch", md);

        MessageDispatch mdEnd = cmd(new MessageDispatch(), 71, false);
        mdEnd.setConsumerId(CONSUMER);
        mdEnd.setDestination(QUEUE);
        m.put("message_dispatch_null", mdEnd);

        ConnectionControl cc = cmd(new ConnectionControl(), 80, false);
        cc.setConnectedBrokers("tcp://a:61616,tcp://b:61616");
        cc.setRebalanceConnection(true);
        cc.setToken(new byte[] {42});
        m.put("connection_control", cc);

        DestinationInfo di = cmd(new DestinationInfo(CONN, DestinationInfo.ADD_OPERATION_TYPE,
                new ActiveMQTempQueue("ID:golden-host-40000-1700000000000-1:1:1")), 90, true);
        di.setTimeout(5000);
        m.put("destination_info", di);

        MessagePull pull = cmd(new MessagePull(), 100, false);
        pull.setConsumerId(CONSUMER);
        pull.setDestination(QUEUE);
        pull.setTimeout(-1);
        pull.setCorrelationId("pull-1");
        m.put("message_pull", pull);

        RemoveSubscriptionInfo rs = cmd(new RemoveSubscriptionInfo(), 110, true);
        rs.setConnectionId(CONN);
        rs.setClientId("golden-client");
        rs.setSubcriptionName("durable-sub");
        m.put("remove_subscription_info", rs);

        ConsumerControl ctl = cmd(new ConsumerControl(), 120, false);
        ctl.setConsumerId(CONSUMER);
        ctl.setDestination(QUEUE);
        ctl.setPrefetch(10);
        ctl.setStart(true);
        m.put("consumer_control", ctl);

        ProducerAck pa = cmd(new ProducerAck(PRODUCER, 4096), 130, false);
        m.put("producer_ack", pa);

        ConnectionError ce = cmd(new ConnectionError(), 140, false);
        ce.setConnectionId(CONN);
        ce.setException(new java.io.IOException("socket gone"));
        m.put("connection_error", ce);

        ControlCommand ctrl = cmd(new ControlCommand(), 150, false);
        ctrl.setCommand("shutdown");
        m.put("control_command", ctrl);
        m.put("flush_command", cmd(new FlushCommand(), 151, false));

        DataResponse dr = cmd(new DataResponse(), 0, false);
        dr.setCorrelationId(9);
        dr.setData(QUEUE);
        m.put("data_response", dr);

        DataArrayResponse dar = cmd(new DataArrayResponse(), 0, false);
        dar.setCorrelationId(10);
        dar.setData(new DataStructure[] {xid, new LocalTransactionId(CONN, 5)});
        m.put("data_array_response", dar);

        IntegerResponse ir = cmd(new IntegerResponse(), 0, false);
        ir.setCorrelationId(11);
        ir.setResult(2);
        m.put("integer_response", ir);

        ReplayCommand rp = cmd(new ReplayCommand(), 160, false);
        rp.setFirstNakNumber(3);
        rp.setLastNakNumber(9);
        m.put("replay_command", rp);

        MessageDispatchNotification mdn = cmd(new MessageDispatchNotification(), 170, false);
        mdn.setConsumerId(CONSUMER);
        mdn.setDestination(QUEUE);
        mdn.setDeliverySequenceId(77);
        mdn.setMessageId(messageId(5));
        m.put("message_dispatch_notification", mdn);

        return m;
    }
}
