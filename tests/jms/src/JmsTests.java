// OpenWire conformance scenarios driven by the real ActiveMQ 5.x JMS client.
//
//   java JmsTests --url tcp://127.0.0.1:61616 [--stomp 127.0.0.1:61613] [--only a,b] [--list]
//
// Each scenario prints "PASS name" or "FAIL name: reason" plus a stack trace; the exit code is 1
// if any failed (2 on bad arguments). Every scenario uses destinations suffixed with a random
// id, bounded waits, and a hard limit of SCENARIO_LIMIT_S per scenario. See tests/jms/README.md.

import java.io.*;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.util.*;
import java.util.concurrent.*;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;

import javax.jms.BytesMessage;
import javax.jms.Connection;
import javax.jms.DeliveryMode;
import javax.jms.Destination;
import javax.jms.JMSException;
import javax.jms.MapMessage;
import javax.jms.Message;
import javax.jms.MessageConsumer;
import javax.jms.MessageProducer;
import javax.jms.ObjectMessage;
import javax.jms.Queue;
import javax.jms.QueueBrowser;
import javax.jms.Session;
import javax.jms.StreamMessage;
import javax.jms.TemporaryQueue;
import javax.jms.TextMessage;
import javax.jms.Topic;
import javax.jms.TopicSubscriber;

import org.apache.activemq.ActiveMQConnectionFactory;
import org.apache.activemq.ActiveMQMessageConsumer;
import org.apache.activemq.ActiveMQSession;

public class JmsTests {
    static final int SCENARIO_LIMIT_S = 30;
    static final long WAIT_MS = 5000; // one receive that must succeed

    static String url;
    static String stomp; // host:port or null

    // ---- per-scenario state -------------------------------------------------------------------
    final String id = Long.toString(Math.abs(new Random().nextLong()), 36);
    final List<Connection> opened = Collections.synchronizedList(new ArrayList<>());

    interface Body { void run(JmsTests t) throws Exception; }

    static final LinkedHashMap<String, Body> SCENARIOS = new LinkedHashMap<>();
    static {
        SCENARIOS.put("queue-text", JmsTests::queueText);
        SCENARIOS.put("message-types", JmsTests::messageTypes);
        SCENARIOS.put("large-message", JmsTests::largeMessage);
        SCENARIOS.put("topic-fanout", JmsTests::topicFanout);
        SCENARIOS.put("client-ack-redelivery", JmsTests::clientAckRedelivery);
        SCENARIOS.put("individual-ack", JmsTests::individualAck);
        SCENARIOS.put("auto-ack-many", JmsTests::autoAckMany);
        SCENARIOS.put("async-send", JmsTests::asyncSend);
        SCENARIOS.put("prefetch0", JmsTests::prefetch0);
        SCENARIOS.put("tx-send", JmsTests::txSend);
        SCENARIOS.put("tx-ack", JmsTests::txAck);
        SCENARIOS.put("durable-sub", JmsTests::durableSub);
        SCENARIOS.put("selector", JmsTests::selector);
        SCENARIOS.put("priority", JmsTests::priority);
        SCENARIOS.put("expiry", JmsTests::expiry);
        SCENARIOS.put("temp-queue-reply", JmsTests::tempQueueReply);
        SCENARIOS.put("browser", JmsTests::browser);
        SCENARIOS.put("stomp-interop", JmsTests::stompInterop);
        SCENARIOS.put("failover-url", JmsTests::failoverUrl);
        SCENARIOS.put("prefetched-uncounted", JmsTests::prefetchedUncounted);
        SCENARIOS.put("xa", JmsTests::xa);
        SCENARIOS.put("dups-ok-window", JmsTests::dupsOkWindow);
        SCENARIOS.put("exclusive-nolocal", JmsTests::exclusiveNoLocal);
        SCENARIOS.put("stomp-durable-tx", JmsTests::stompDurableTx);
        SCENARIOS.put("poison-dlq", JmsTests::poisonDlq);
    }

    public static void main(String[] args) throws Exception {
        List<String> only = null;
        boolean list = false;
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--url": url = args[++i]; break;
                case "--stomp": stomp = args[++i]; break;
                case "--only": only = Arrays.asList(args[++i].split(",")); break;
                case "--list": list = true; break;
                default: usage("unknown argument " + args[i]);
            }
        }
        if (list) {
            SCENARIOS.keySet().forEach(System.out::println);
            return;
        }
        if (url == null) usage("--url is required");
        if (only != null) {
            for (String n : only) if (!SCENARIOS.containsKey(n)) usage("unknown scenario " + n + " (see --list)");
        }
        int failed = 0, passed = 0, skipped = 0;
        ExecutorService ex = Executors.newCachedThreadPool(r -> {
            Thread t = new Thread(r, "scenario");
            t.setDaemon(true);
            return t;
        });
        for (Map.Entry<String, Body> e : SCENARIOS.entrySet()) {
            String name = e.getKey();
            if (only != null && !only.contains(name)) continue;
            if (name.startsWith("stomp-") && stomp == null) {
                System.out.println("SKIP " + name + ": no --stomp given");
                skipped++;
                continue;
            }
            JmsTests t = new JmsTests();
            long t0 = System.nanoTime();
            Future<?> f = ex.submit(() -> { e.getValue().run(t); return null; });
            Throwable err = null;
            try {
                f.get(SCENARIO_LIMIT_S, TimeUnit.SECONDS);
            } catch (TimeoutException te) {
                f.cancel(true);
                err = new AssertionError("timed out after " + SCENARIO_LIMIT_S + " s");
            } catch (ExecutionException ee) {
                err = ee.getCause();
            } finally {
                t.closeAll();
            }
            long ms = (System.nanoTime() - t0) / 1_000_000;
            if (err == null) {
                System.out.println("PASS " + name + " (" + ms + " ms)");
                passed++;
            } else {
                System.out.println("FAIL " + name + ": " + err);
                err.printStackTrace(System.out);
                failed++;
            }
            System.out.flush();
        }
        System.out.println("passed " + passed + ", failed " + failed + ", skipped " + skipped);
        System.exit(failed == 0 ? 0 : 1);
    }

    static void usage(String why) {
        System.err.println("JmsTests: " + why);
        System.err.println("usage: JmsTests --url <brokerURL> [--stomp host:port] [--only name,...] [--list]");
        System.exit(2);
    }

    // ---- helpers ------------------------------------------------------------------------------

    static String withOptions(String base, String opts) {
        if (opts == null || opts.isEmpty()) return base;
        return base + (base.contains("?") ? "&" : "?") + opts;
    }

    ActiveMQConnectionFactory factory(String opts) {
        ActiveMQConnectionFactory f = new ActiveMQConnectionFactory(withOptions(url, opts));
        return f;
    }

    Connection conn(String opts) throws JMSException { return conn(factory(opts), null); }

    Connection conn() throws JMSException { return conn(""); }

    Connection conn(ActiveMQConnectionFactory f, String clientId) throws JMSException {
        Connection c = f.createConnection();
        opened.add(c);
        if (clientId != null) c.setClientID(clientId);
        c.start();
        return c;
    }

    void closeAll() {
        synchronized (opened) {
            for (Connection c : opened) {
                try { c.close(); } catch (Exception ignored) { }
            }
            opened.clear();
        }
    }

    String name(String prefix) { return "ow." + prefix + "." + id; }

    static void check(boolean cond, String what) {
        if (!cond) throw new AssertionError(what);
    }

    static void eq(Object expected, Object actual, String what) {
        if (!Objects.equals(expected, actual))
            throw new AssertionError(what + ": expected <" + expected + "> (" + cls(expected) + ") but got <"
                    + actual + "> (" + cls(actual) + ")");
    }

    static String cls(Object o) { return o == null ? "null" : o.getClass().getSimpleName(); }

    static Message mustReceive(MessageConsumer c, String what) throws JMSException {
        Message m = c.receive(WAIT_MS);
        if (m == null) throw new AssertionError("no message within " + WAIT_MS + " ms: " + what);
        return m;
    }

    static String text(Message m) throws JMSException {
        check(m instanceof TextMessage, "expected a TextMessage, got " + cls(m));
        return ((TextMessage) m).getText();
    }

    static int deliveryCount(Message m) throws JMSException {
        Object o = m.getObjectProperty("JMSXDeliveryCount");
        check(o != null, "JMSXDeliveryCount missing");
        return m.getIntProperty("JMSXDeliveryCount");
    }

    /**
     * Proves a queue holds nothing older: sends a fresh marker and requires it to be the first
     * message a new consumer gets (a positive check instead of "receive timed out").
     */
    void assertOnlyMarkerLeft(Destination d) throws JMSException {
        Connection c = conn();
        Session s = c.createSession(false, Session.AUTO_ACKNOWLEDGE);
        MessageConsumer mc = s.createConsumer(d);
        String marker = "marker-" + UUID.randomUUID();
        s.createProducer(d).send(s.createTextMessage(marker));
        Message m = mustReceive(mc, "marker on " + d);
        eq(marker, text(m), "first message after the marker was sent (leftover message?)");
        c.close();
        opened.remove(c);
    }

    // ---- scenarios ----------------------------------------------------------------------------

    /** Persistent TextMessage with headers and typed properties survives the broker intact. */
    static void queueText(JmsTests t) throws Exception {
        Connection c1 = t.conn(), c2 = t.conn();
        Session s1 = c1.createSession(false, Session.AUTO_ACKNOWLEDGE);
        Queue q = s1.createQueue(t.name("text"));
        Queue reply = s1.createQueue(t.name("text.reply"));
        String body = "hello OpenWire \u00fcn\u00efc\u00f8d\u00e9 \u20ac \ud83d\ude00 " + t.id;
        TextMessage m = s1.createTextMessage(body);
        m.setStringProperty("s", "str-\u00e9");
        m.setIntProperty("i", -42);
        m.setLongProperty("l", 1L << 40);
        m.setBooleanProperty("b", true);
        m.setDoubleProperty("d", 3.25);
        m.setByteProperty("y", (byte) -7);
        m.setShortProperty("sh", (short) 1234);
        m.setFloatProperty("f", 1.5f);
        m.setJMSCorrelationID("corr-" + t.id);
        m.setJMSType("type-x");
        m.setJMSReplyTo(reply);
        MessageProducer p = s1.createProducer(q);
        p.send(m, DeliveryMode.PERSISTENT, 7, 0);
        String mid = m.getJMSMessageID();
        check(mid != null && mid.startsWith("ID:"), "JMSMessageID set by send: " + mid);

        Session s2 = c2.createSession(false, Session.AUTO_ACKNOWLEDGE);
        Message r = mustReceive(s2.createConsumer(q), "the text message");
        eq(body, text(r), "body");
        eq(mid, r.getJMSMessageID(), "JMSMessageID");
        eq("str-\u00e9", r.getObjectProperty("s"), "string property");
        eq(-42, r.getObjectProperty("i"), "int property");
        eq(1L << 40, r.getObjectProperty("l"), "long property");
        eq(true, r.getObjectProperty("b"), "boolean property");
        eq(3.25, r.getObjectProperty("d"), "double property");
        eq((byte) -7, r.getObjectProperty("y"), "byte property");
        eq((short) 1234, r.getObjectProperty("sh"), "short property");
        eq(1.5f, r.getObjectProperty("f"), "float property");
        eq("corr-" + t.id, r.getJMSCorrelationID(), "JMSCorrelationID");
        eq("type-x", r.getJMSType(), "JMSType");
        check(r.getJMSReplyTo() instanceof Queue, "JMSReplyTo is a Queue: " + r.getJMSReplyTo());
        eq(reply.getQueueName(), ((Queue) r.getJMSReplyTo()).getQueueName(), "JMSReplyTo");
        eq(7, r.getJMSPriority(), "JMSPriority");
        eq(DeliveryMode.PERSISTENT, r.getJMSDeliveryMode(), "JMSDeliveryMode");
        eq(false, r.getJMSRedelivered(), "JMSRedelivered");
        eq(1, deliveryCount(r), "JMSXDeliveryCount");
        eq(0L, r.getJMSExpiration(), "JMSExpiration");
        check(r.getJMSTimestamp() > 0, "JMSTimestamp set");
        check(r.getJMSDestination() instanceof Queue, "JMSDestination is a Queue");
        eq(q.getQueueName(), ((Queue) r.getJMSDestination()).getQueueName(), "JMSDestination");
        Set<String> names = new TreeSet<>();
        for (Enumeration<?> e = r.getPropertyNames(); e.hasMoreElements(); ) names.add((String) e.nextElement());
        check(names.containsAll(Arrays.asList("s", "i", "l", "b", "d", "y", "sh", "f")), "property names " + names);
    }

    /** Every JMS body type round-trips, including empty/null bodies. */
    static void messageTypes(JmsTests t) throws Exception {
        Connection c1 = t.conn();
        ActiveMQConnectionFactory cf = t.factory("");
        cf.setTrustAllPackages(true); // ObjectMessage deserialisation on the consumer side
        Connection c2 = t.conn(cf, null);
        Session s1 = c1.createSession(false, Session.AUTO_ACKNOWLEDGE);
        Queue q = s1.createQueue(t.name("types"));
        MessageProducer p = s1.createProducer(q);
        byte[] raw = new byte[300];
        for (int i = 0; i < raw.length; i++) raw[i] = (byte) (i * 7);

        BytesMessage bm = s1.createBytesMessage();
        bm.writeBytes(raw);
        bm.writeInt(0x01020304);
        bm.writeUTF("utf \u20ac");
        p.send(bm);

        MapMessage mm = s1.createMapMessage();
        mm.setBoolean("bool", true);
        mm.setByte("byte", (byte) -128);
        mm.setShort("short", (short) -32768);
        mm.setChar("char", '\u20ac');
        mm.setInt("int", Integer.MIN_VALUE);
        mm.setLong("long", Long.MAX_VALUE);
        mm.setFloat("float", -0.5f);
        mm.setDouble("double", Math.PI);
        mm.setString("string", "map \u00e9");
        mm.setBytes("bytes", new byte[] {0, 1, (byte) 0xff, 0});
        p.send(mm);

        StreamMessage sm = s1.createStreamMessage();
        sm.writeBoolean(false);
        sm.writeInt(99);
        sm.writeString("stream");
        sm.writeDouble(2.5);
        sm.writeBytes(new byte[] {9, 8, 7});
        sm.writeLong(-1L);
        p.send(sm);

        ArrayList<Object> list = new ArrayList<>();
        list.add("a");
        list.add(42);
        HashMap<String, Object> map = new HashMap<>();
        map.put("k", 3.5d);
        map.put("l", new ArrayList<>(Arrays.asList(1L, 2L)));
        list.add(map);
        ObjectMessage om = s1.createObjectMessage(list);
        p.send(om);

        p.send(s1.createTextMessage(""));
        p.send(s1.createTextMessage(null));
        Message plain = s1.createMessage();
        plain.setStringProperty("only", "headers");
        p.send(plain);

        Session s2 = c2.createSession(false, Session.AUTO_ACKNOWLEDGE);
        MessageConsumer mc = s2.createConsumer(q);

        Message r = mustReceive(mc, "bytes");
        check(r instanceof BytesMessage, "BytesMessage expected, got " + cls(r));
        BytesMessage rb = (BytesMessage) r;
        byte[] got = new byte[raw.length];
        eq(raw.length, rb.readBytes(got), "readBytes length");
        check(Arrays.equals(raw, got), "bytes body");
        eq(0x01020304, rb.readInt(), "bytes readInt");
        eq("utf \u20ac", rb.readUTF(), "bytes readUTF");
        eq((long) raw.length + 4 + 2 + "utf \u20ac".getBytes(StandardCharsets.UTF_8).length, rb.getBodyLength(),
                "getBodyLength");

        r = mustReceive(mc, "map");
        check(r instanceof MapMessage, "MapMessage expected, got " + cls(r));
        MapMessage rm = (MapMessage) r;
        eq(true, rm.getObject("bool"), "map bool");
        eq((byte) -128, rm.getObject("byte"), "map byte");
        eq((short) -32768, rm.getObject("short"), "map short");
        eq('\u20ac', rm.getObject("char"), "map char");
        eq(Integer.MIN_VALUE, rm.getObject("int"), "map int");
        eq(Long.MAX_VALUE, rm.getObject("long"), "map long");
        eq(-0.5f, rm.getObject("float"), "map float");
        eq(Math.PI, rm.getObject("double"), "map double");
        eq("map \u00e9", rm.getObject("string"), "map string");
        check(Arrays.equals(new byte[] {0, 1, (byte) 0xff, 0}, rm.getBytes("bytes")), "map bytes");
        Set<String> keys = new TreeSet<>();
        for (Enumeration<?> e = rm.getMapNames(); e.hasMoreElements(); ) keys.add((String) e.nextElement());
        eq(10, keys.size(), "map entry count " + keys);

        r = mustReceive(mc, "stream");
        check(r instanceof StreamMessage, "StreamMessage expected, got " + cls(r));
        StreamMessage rs = (StreamMessage) r;
        eq(false, rs.readBoolean(), "stream bool");
        eq(99, rs.readInt(), "stream int");
        eq("stream", rs.readString(), "stream string");
        eq(2.5, rs.readDouble(), "stream double");
        byte[] three = new byte[3];
        eq(3, rs.readBytes(three), "stream bytes length");
        check(Arrays.equals(new byte[] {9, 8, 7}, three), "stream bytes");
        eq(-1, rs.readBytes(three), "end of the byte[] field");
        eq(-1L, rs.readLong(), "stream long");

        r = mustReceive(mc, "object");
        check(r instanceof ObjectMessage, "ObjectMessage expected, got " + cls(r));
        eq(list, ((ObjectMessage) r).getObject(), "object body");

        r = mustReceive(mc, "empty text");
        eq("", text(r), "empty text body");
        r = mustReceive(mc, "null text");
        eq(null, text(r), "null text body");
        r = mustReceive(mc, "plain message");
        check(!(r instanceof TextMessage || r instanceof BytesMessage || r instanceof MapMessage
                || r instanceof StreamMessage || r instanceof ObjectMessage), "plain Message expected, got " + cls(r));
        eq("headers", r.getStringProperty("only"), "plain message property");
    }

    /** 1 MiB text and 4 MiB bytes bodies (frames spanning many TCP segments). */
    static void largeMessage(JmsTests t) throws Exception {
        Connection c1 = t.conn(), c2 = t.conn();
        Session s1 = c1.createSession(false, Session.AUTO_ACKNOWLEDGE);
        Queue q = s1.createQueue(t.name("large"));
        MessageProducer p = s1.createProducer(q);
        StringBuilder sb = new StringBuilder(1 << 20);
        for (int i = 0; sb.length() < (1 << 20); i++) sb.append(i % 10 == 0 ? '\u00e9' : (char) ('a' + i % 26));
        String big = sb.toString();
        p.send(s1.createTextMessage(big));
        byte[] raw = new byte[4 << 20];
        new Random(7).nextBytes(raw);
        BytesMessage bm = s1.createBytesMessage();
        bm.writeBytes(raw);
        p.send(bm);
        MessageConsumer c = c2.createSession(false, Session.AUTO_ACKNOWLEDGE).createConsumer(q);
        eq(big, text(mustReceive(c, "1 MiB text")), "1 MiB text body");
        Message m = mustReceive(c, "4 MiB bytes");
        check(m instanceof BytesMessage, "BytesMessage expected, got " + cls(m));
        eq((long) raw.length, ((BytesMessage) m).getBodyLength(), "4 MiB body length");
        byte[] got = new byte[raw.length];
        ((BytesMessage) m).readBytes(got);
        check(Arrays.equals(raw, got), "4 MiB body content");
    }

    /** Two live subscribers get all 50 in order; a late subscriber gets none of them. */
    static void topicFanout(JmsTests t) throws Exception {
        Connection pc = t.conn(), a = t.conn(), b = t.conn();
        Session ps = pc.createSession(false, Session.AUTO_ACKNOWLEDGE);
        Topic topic = ps.createTopic(t.name("fanout"));
        Session sa = a.createSession(false, Session.AUTO_ACKNOWLEDGE);
        Session sb = b.createSession(false, Session.AUTO_ACKNOWLEDGE);
        MessageConsumer ca = sa.createConsumer(topic), cb = sb.createConsumer(topic);
        MessageProducer p = ps.createProducer(topic);
        final int n = 50;
        for (int i = 0; i < n; i++) {
            TextMessage m = ps.createTextMessage("t" + i);
            m.setIntProperty("seq", i);
            p.send(m);
        }
        for (MessageConsumer c : Arrays.asList(ca, cb)) {
            for (int i = 0; i < n; i++) {
                Message m = mustReceive(c, "topic message " + i);
                eq("t" + i, text(m), "topic message order");
                eq(i, m.getIntProperty("seq"), "seq");
                check(m.getJMSDestination() instanceof Topic, "JMSDestination is a Topic");
            }
        }
        Connection late = t.conn();
        Session sl = late.createSession(false, Session.AUTO_ACKNOWLEDGE);
        MessageConsumer cl = sl.createConsumer(topic);
        p.send(ps.createTextMessage("after-late-join"));
        eq("after-late-join", text(mustReceive(cl, "late subscriber")), "late subscriber's first message");
        eq("after-late-join", text(mustReceive(ca, "a")), "subscriber a");
        eq("after-late-join", text(mustReceive(cb, "b")), "subscriber b");
    }

    static List<String> sendTexts(Session s, Destination d, String prefix, int n) throws JMSException {
        MessageProducer p = s.createProducer(d);
        List<String> sent = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            String body = prefix + i;
            p.send(s.createTextMessage(body));
            sent.add(body);
        }
        p.close();
        return sent;
    }

    /** Unacked CLIENT_ACKNOWLEDGE messages come back redelivered after the session closes. */
    static void clientAckRedelivery(JmsTests t) throws Exception {
        Connection pc = t.conn(), cc = t.conn();
        Session ps = pc.createSession(false, Session.AUTO_ACKNOWLEDGE);
        Queue q = ps.createQueue(t.name("cack"));
        List<String> sent = sendTexts(ps, q, "c", 3);

        Session s1 = cc.createSession(false, Session.CLIENT_ACKNOWLEDGE);
        MessageConsumer c1 = s1.createConsumer(q);
        for (String body : sent) {
            Message m = mustReceive(c1, body);
            eq(body, text(m), "first delivery");
            eq(false, m.getJMSRedelivered(), "JMSRedelivered on first delivery");
            eq(1, deliveryCount(m), "JMSXDeliveryCount on first delivery");
        }
        s1.close(); // no acknowledge()

        Session s2 = cc.createSession(false, Session.CLIENT_ACKNOWLEDGE);
        MessageConsumer c2 = s2.createConsumer(q);
        Message last = null;
        for (String body : sent) {
            Message m = mustReceive(c2, "redelivery of " + body);
            eq(body, text(m), "redelivery order");
            eq(true, m.getJMSRedelivered(), "JMSRedelivered on redelivery");
            check(deliveryCount(m) >= 2, "JMSXDeliveryCount >= 2, got " + deliveryCount(m));
            last = m;
        }
        last.acknowledge(); // acknowledges all consumed messages of the session
        s2.close();
        t.assertOnlyMarkerLeft(q);
    }

    /**
     * Messages that sat in a closed consumer's prefetch buffer, never given to the application,
     * come back without JMSRedelivered (RemoveInfo.lastDeliveredSequenceId); the one the
     * application received comes back redelivered.
     */
    static void prefetchedUncounted(JmsTests t) throws Exception {
        Connection pc = t.conn(), cc = t.conn();
        Session ps = pc.createSession(false, Session.AUTO_ACKNOWLEDGE);
        Queue q = ps.createQueue(t.name("prefetched"));
        List<String> sent = sendTexts(ps, q, "p", 5);
        Session s1 = cc.createSession(false, Session.CLIENT_ACKNOWLEDGE);
        MessageConsumer c1 = s1.createConsumer(q);
        Message first = mustReceive(c1, sent.get(0));
        eq(sent.get(0), text(first), "first message");
        // Let the rest arrive in the prefetch buffer before closing.
        long deadline = System.currentTimeMillis() + 5000;
        while (((org.apache.activemq.ActiveMQMessageConsumer) c1).getMessageSize() < 4
                && System.currentTimeMillis() < deadline) {
            Thread.sleep(10);
        }
        check(((org.apache.activemq.ActiveMQMessageConsumer) c1).getMessageSize() == 4,
                "the other 4 messages are prefetched");
        c1.close();
        MessageConsumer c2 = s1.createConsumer(q);
        for (int i = 0; i < sent.size(); i++) {
            Message m = mustReceive(c2, "again " + sent.get(i));
            eq(sent.get(i), text(m), "order");
            eq(i == 0, m.getJMSRedelivered(), "JMSRedelivered of " + sent.get(i));
            eq(i == 0 ? 2 : 1, deliveryCount(m), "JMSXDeliveryCount of " + sent.get(i));
            if (i == sent.size() - 1) m.acknowledge();
        }
        s1.close();
        t.assertOnlyMarkerLeft(q);
    }

    /**
     * DUPS_OK_ACKNOWLEDGE (batched range acks) consumes everything once; a producer with a
     * window (`jms.producerWindowSize`) sending asynchronously is not blocked forever: the broker
     * frees its window with ProducerAcks.
     */
    static void dupsOkWindow(JmsTests t) throws Exception {
        Connection pc = t.conn("jms.producerWindowSize=4096&jms.useAsyncSend=true");
        Connection cc = t.conn();
        Session ps = pc.createSession(false, Session.AUTO_ACKNOWLEDGE);
        Queue q = ps.createQueue(t.name("dupsok"));
        MessageProducer p = ps.createProducer(q);
        int n = 500;
        for (int i = 0; i < n; i++) p.send(ps.createTextMessage("w" + i));
        Session cs = cc.createSession(false, Session.DUPS_OK_ACKNOWLEDGE);
        MessageConsumer c = cs.createConsumer(q);
        for (int i = 0; i < n; i++) eq("w" + i, text(mustReceive(c, "w" + i)), "order");
        c.close();
        cs.close();
        t.assertOnlyMarkerLeft(q);
    }

    /**
     * An exclusive queue consumer gets every message while it is attached; a noLocal topic
     * subscriber does not get what its own connection publishes.
     */
    static void exclusiveNoLocal(JmsTests t) throws Exception {
        Connection c1 = t.conn(), c2 = t.conn(), pc = t.conn();
        Session s1 = c1.createSession(false, Session.AUTO_ACKNOWLEDGE);
        Session s2 = c2.createSession(false, Session.AUTO_ACKNOWLEDGE);
        Session ps = pc.createSession(false, Session.AUTO_ACKNOWLEDGE);
        Queue q = ps.createQueue(t.name("excl") + "?consumer.exclusive=true");
        MessageConsumer first = s1.createConsumer(q);
        MessageConsumer second = s2.createConsumer(q);
        List<String> sent = sendTexts(ps, ps.createQueue(t.name("excl")), "e", 10);
        for (String body : sent) eq(body, text(mustReceive(first, body)), "the exclusive consumer gets all");
        check(second.receiveNoWait() == null, "the second consumer got nothing");
        // noLocal: c1 subscribes with noLocal and publishes; c2 publishes too.
        Topic topic = s1.createTopic(t.name("nolocal"));
        MessageConsumer sub = s1.createConsumer(topic, null, true);
        s1.createProducer(topic).send(s1.createTextMessage("own"));
        s2.createProducer(topic).send(s2.createTextMessage("other"));
        eq("other", text(mustReceive(sub, "the other connection's message")), "noLocal skips its own");
    }

    /**
     * XA: either it works (ActiveMQ) or the broker refuses it with a clear reason (ferromq),
     * never a hang or a dropped connection.
     */
    static void xa(JmsTests t) throws Exception {
        org.apache.activemq.ActiveMQXAConnectionFactory f = new org.apache.activemq.ActiveMQXAConnectionFactory(url);
        javax.jms.XAConnection c = f.createXAConnection();
        try {
            c.start();
            javax.jms.XASession s = c.createXASession();
            javax.transaction.xa.XAResource r = s.getXAResource();
            javax.transaction.xa.Xid xid = new javax.transaction.xa.Xid() {
                public int getFormatId() { return 42; }
                public byte[] getGlobalTransactionId() { return ("g" + t.id).getBytes(); }
                public byte[] getBranchQualifier() { return new byte[] {1}; }
            };
            try {
                r.start(xid, javax.transaction.xa.XAResource.TMNOFLAGS);
                Queue q = s.createQueue(t.name("xa"));
                s.createProducer(q).send(s.createTextMessage("xa"));
                r.end(xid, javax.transaction.xa.XAResource.TMSUCCESS);
                r.commit(xid, true);
                Connection cc = t.conn();
                Session cs = cc.createSession(false, Session.AUTO_ACKNOWLEDGE);
                eq("xa", text(mustReceive(cs.createConsumer(q), "the XA-committed message")), "XA body");
            } catch (javax.transaction.xa.XAException e) {
                Throwable cause = e.getCause() != null ? e.getCause() : e;
                String msg = String.valueOf(cause.getMessage());
                check(msg.contains("XA transactions are not supported"),
                        "refused with a clear reason, got: " + cause);
            }
        } finally {
            c.close();
        }
    }

    /** INDIVIDUAL_ACKNOWLEDGE: only the acknowledged message is removed. */
    static void individualAck(JmsTests t) throws Exception {
        Connection pc = t.conn(), cc = t.conn();
        Session ps = pc.createSession(false, Session.AUTO_ACKNOWLEDGE);
        Queue q = ps.createQueue(t.name("iack"));
        sendTexts(ps, q, "m", 3); // m0 m1 m2 = messages 1, 2, 3
        Session s1 = cc.createSession(false, ActiveMQSession.INDIVIDUAL_ACKNOWLEDGE);
        MessageConsumer c1 = s1.createConsumer(q);
        Message[] got = new Message[3];
        for (int i = 0; i < 3; i++) {
            got[i] = mustReceive(c1, "m" + i);
            eq("m" + i, text(got[i]), "order");
        }
        got[1].acknowledge();
        s1.close();
        Session s2 = cc.createSession(false, ActiveMQSession.INDIVIDUAL_ACKNOWLEDGE);
        MessageConsumer c2 = s2.createConsumer(q);
        for (String body : Arrays.asList("m0", "m2")) {
            Message m = mustReceive(c2, body);
            eq(body, text(m), "redelivered message");
            eq(true, m.getJMSRedelivered(), "JMSRedelivered");
            m.acknowledge();
        }
        s2.close();
        t.assertOnlyMarkerLeft(q);
    }

    /** 2,000 persistent messages arrive exactly once and in order with AUTO_ACKNOWLEDGE. */
    static void autoAckMany(JmsTests t) throws Exception {
        Connection pc = t.conn(), cc = t.conn();
        Session ps = pc.createSession(false, Session.AUTO_ACKNOWLEDGE);
        Queue q = ps.createQueue(t.name("many"));
        MessageProducer p = ps.createProducer(q);
        p.setDeliveryMode(DeliveryMode.PERSISTENT);
        final int n = 2000;
        for (int i = 0; i < n; i++) {
            TextMessage m = ps.createTextMessage("n" + i);
            m.setIntProperty("seq", i);
            p.send(m);
        }
        Session cs = cc.createSession(false, Session.AUTO_ACKNOWLEDGE);
        MessageConsumer c = cs.createConsumer(q);
        for (int i = 0; i < n; i++) {
            Message m = mustReceive(c, "message " + i + " of " + n);
            eq(i, m.getIntProperty("seq"), "sequence");
            eq("n" + i, text(m), "body");
            eq(false, m.getJMSRedelivered(), "JMSRedelivered");
        }
        cs.close();
        t.assertOnlyMarkerLeft(q);
    }

    /** jms.useAsyncSend=true with non-persistent messages: all 1,000 arrive. */
    static void asyncSend(JmsTests t) throws Exception {
        Connection pc = t.conn("jms.useAsyncSend=true"), cc = t.conn();
        Session cs = cc.createSession(false, Session.AUTO_ACKNOWLEDGE);
        Queue q = cs.createQueue(t.name("async"));
        MessageConsumer c = cs.createConsumer(q);
        Session ps = pc.createSession(false, Session.AUTO_ACKNOWLEDGE);
        MessageProducer p = ps.createProducer(q);
        p.setDeliveryMode(DeliveryMode.NON_PERSISTENT);
        final int n = 1000;
        for (int i = 0; i < n; i++) {
            TextMessage m = ps.createTextMessage("a" + i);
            m.setIntProperty("seq", i);
            p.send(m);
        }
        for (int i = 0; i < n; i++) {
            Message m = mustReceive(c, "async message " + i);
            eq(i, m.getIntProperty("seq"), "sequence");
            eq(DeliveryMode.NON_PERSISTENT, m.getJMSDeliveryMode(), "JMSDeliveryMode");
        }
    }

    /** prefetch 0: every receive is a MessagePull; empty and non-empty queues. */
    static void prefetch0(JmsTests t) throws Exception {
        Connection cc = t.conn("jms.prefetchPolicy.all=0"), pc = t.conn();
        Session cs = cc.createSession(false, Session.AUTO_ACKNOWLEDGE);
        Queue q = cs.createQueue(t.name("pull"));
        MessageConsumer c = cs.createConsumer(q);
        eq(0, ((ActiveMQMessageConsumer) c).getPrefetchNumber(), "consumer prefetch");
        Session ps = pc.createSession(false, Session.AUTO_ACKNOWLEDGE);
        MessageProducer p = ps.createProducer(q);

        eq(null, c.receiveNoWait(), "receiveNoWait on an empty queue");
        long t0 = System.nanoTime();
        eq(null, c.receive(300), "receive(300) on an empty queue");
        long waited = (System.nanoTime() - t0) / 1_000_000;
        check(waited >= 250, "receive(300) returned after only " + waited + " ms");

        p.send(ps.createTextMessage("p1"));
        eq("p1", text(mustReceive(c, "p1 via receive(timeout)")), "receive(timeout)");
        p.send(ps.createTextMessage("p2"));
        Message m = null;
        // receiveNoWait pulls with timeout -1 (the broker answers at once); the message was
        // stored by the synchronous send above, so the first pull must find it.
        m = c.receiveNoWait();
        check(m != null, "receiveNoWait on a non-empty queue returned null");
        eq("p2", text(m), "receiveNoWait");
        p.send(ps.createTextMessage("p3"));
        eq("p3", text(receiveBounded(c)), "receive() with a message waiting");

        // receive() blocked on an empty queue, message sent 300 ms later
        ScheduledExecutorService later = Executors.newSingleThreadScheduledExecutor();
        try {
            ScheduledFuture<?> sent =
                    later.schedule(() -> { p.send(ps.createTextMessage("p4")); return null; }, 300, TimeUnit.MILLISECONDS);
            eq("p4", text(receiveBounded(c)), "receive() blocking until a message arrives");
            sent.get(5, TimeUnit.SECONDS); // the send's response may arrive after the dispatch
        } finally {
            later.shutdown(); // no interrupt: interrupting a sync send closes the session
        }
        eq(null, c.receiveNoWait(), "receiveNoWait after draining");
        // two pulls in a row: both queued messages come out, one per pull
        p.send(ps.createTextMessage("p5"));
        p.send(ps.createTextMessage("p6"));
        eq("p5", text(mustReceive(c, "p5")), "pull 1 of 2");
        eq("p6", text(mustReceive(c, "p6")), "pull 2 of 2");
    }

    /** receive() without timeout, bounded by closing the consumer's connection after 10 s. */
    static Message receiveBounded(MessageConsumer c) throws Exception {
        ExecutorService one = Executors.newSingleThreadExecutor();
        try {
            Future<Message> f = one.submit(() -> c.receive());
            return f.get(10, TimeUnit.SECONDS);
        } catch (TimeoutException e) {
            c.close();
            throw new AssertionError("receive() did not return within 10 s");
        } finally {
            one.shutdownNow();
        }
    }

    /** Transacted producer: rollback discards, commit publishes. */
    static void txSend(JmsTests t) throws Exception {
        Connection pc = t.conn(), cc = t.conn();
        Session ts = pc.createSession(true, Session.SESSION_TRANSACTED);
        Queue q = ts.createQueue(t.name("txsend"));
        MessageProducer p = ts.createProducer(q);
        for (int i = 0; i < 5; i++) p.send(ts.createTextMessage("rolled-back-" + i));
        ts.rollback();
        for (int i = 0; i < 5; i++) p.send(ts.createTextMessage("committed-" + i));
        Session cs = cc.createSession(false, Session.AUTO_ACKNOWLEDGE);
        MessageConsumer c = cs.createConsumer(q);
        eq(null, c.receive(300), "message visible before commit");
        ts.commit();
        for (int i = 0; i < 5; i++) eq("committed-" + i, text(mustReceive(c, "committed " + i)), "committed message");
        cs.close();
        t.assertOnlyMarkerLeft(q);
    }

    /** Transacted consumer: rollback redelivers, commit removes. */
    static void txAck(JmsTests t) throws Exception {
        Connection pc = t.conn(), cc = t.conn();
        Session ps = pc.createSession(false, Session.AUTO_ACKNOWLEDGE);
        Queue q = ps.createQueue(t.name("txack"));
        List<String> sent = sendTexts(ps, q, "x", 3);
        Session ts = cc.createSession(true, Session.SESSION_TRANSACTED);
        MessageConsumer c = ts.createConsumer(q);
        for (String body : sent) {
            Message m = mustReceive(c, body);
            eq(body, text(m), "first delivery");
            eq(false, m.getJMSRedelivered(), "JMSRedelivered first time");
        }
        ts.rollback();
        for (String body : sent) {
            Message m = mustReceive(c, "redelivery of " + body);
            eq(body, text(m), "redelivered after rollback");
            eq(true, m.getJMSRedelivered(), "JMSRedelivered after rollback");
            check(deliveryCount(m) >= 2, "JMSXDeliveryCount >= 2 after rollback, got " + deliveryCount(m));
        }
        ts.commit();
        ts.close();
        t.assertOnlyMarkerLeft(q);
    }

    /** Durable subscription keeps messages while offline; unsubscribe drops it. */
    static void durableSub(JmsTests t) throws Exception {
        String clientId = "ow-client-" + t.id, sub = "sub-" + t.id;
        Connection dc = t.conn(t.factory(""), clientId);
        Session ds = dc.createSession(false, Session.AUTO_ACKNOWLEDGE);
        Topic topic = ds.createTopic(t.name("durable"));
        TopicSubscriber s = ds.createDurableSubscriber(topic, sub);
        s.close();
        dc.close();

        Connection pc = t.conn();
        Session ps = pc.createSession(false, Session.AUTO_ACKNOWLEDGE);
        MessageProducer p = ps.createProducer(topic);
        p.setDeliveryMode(DeliveryMode.PERSISTENT);
        for (int i = 0; i < 10; i++) p.send(ps.createTextMessage("offline-" + i));

        Connection dc2 = t.conn(t.factory(""), clientId);
        Session ds2 = dc2.createSession(false, Session.AUTO_ACKNOWLEDGE);
        TopicSubscriber s2 = ds2.createDurableSubscriber(topic, sub);
        for (int i = 0; i < 10; i++) eq("offline-" + i, text(mustReceive(s2, "offline " + i)), "offline message");
        s2.close();
        ds2.unsubscribe(sub);

        for (int i = 0; i < 3; i++) p.send(ps.createTextMessage("while-unsubscribed-" + i));
        TopicSubscriber s3 = ds2.createDurableSubscriber(topic, sub);
        p.send(ps.createTextMessage("fresh"));
        eq("fresh", text(mustReceive(s3, "fresh")), "first message after re-subscribe");
        s3.close();
        ds2.unsubscribe(sub);
    }

    /** A selector consumer gets only matches; the rest stay for an unfiltered consumer. */
    static void selector(JmsTests t) throws Exception {
        Connection pc = t.conn(), cc = t.conn();
        Session ps = pc.createSession(false, Session.AUTO_ACKNOWLEDGE);
        Queue q = ps.createQueue(t.name("selector"));
        MessageProducer p = ps.createProducer(q);
        Object[][] rows = {
            {"red", 10, true}, {"red", 5, false}, {"blue", 10, false},
            {"red", 6, true}, {null, 9, false}, {"RED", 7, false}, {"red", null, false}};
        List<String> match = new ArrayList<>(), rest = new ArrayList<>();
        for (int i = 0; i < rows.length; i++) {
            TextMessage m = ps.createTextMessage("s" + i);
            if (rows[i][0] != null) m.setStringProperty("color", (String) rows[i][0]);
            if (rows[i][1] != null) m.setIntProperty("weight", (Integer) rows[i][1]);
            p.send(m);
            ((Boolean) rows[i][2] ? match : rest).add("s" + i);
        }
        Session cs = cc.createSession(false, Session.AUTO_ACKNOWLEDGE);
        MessageConsumer sel = cs.createConsumer(q, "color = 'red' AND weight > 5");
        for (String body : match) {
            Message m = mustReceive(sel, body);
            eq(body, text(m), "selected message");
            eq("red", m.getStringProperty("color"), "selected color");
            check(m.getIntProperty("weight") > 5, "selected weight");
        }
        eq(null, sel.receive(500), "selector consumer after the matches");
        sel.close();
        MessageConsumer all = cs.createConsumer(q);
        for (String body : rest) eq(body, text(mustReceive(all, body)), "non-matching message left on the queue");
        all.close();
        t.assertOnlyMarkerLeft(q);
    }

    /**
     * Priorities 0..9 sent shuffled with no consumer. ActiveMQ 5.17 defaults (no
     * prioritizedMessages policy, jms.messagePrioritySupported=false) deliver FIFO, so part 1
     * asserts only that each message keeps its JMSPriority. Part 2 turns on the client's
     * priority ordering (jms.messagePrioritySupported=true) and waits until all 10 sit in the
     * consumer's prefetch buffer: then receive() must return 9..0.
     */
    static void priority(JmsTests t) throws Exception {
        int[] order = {3, 7, 0, 9, 5, 1, 8, 2, 6, 4};
        Connection pc = t.conn();
        Session ps = pc.createSession(false, Session.AUTO_ACKNOWLEDGE);
        for (int part = 1; part <= 2; part++) {
            Queue q = ps.createQueue(t.name("priority" + part));
            MessageProducer p = ps.createProducer(q);
            for (int pr : order) {
                TextMessage m = ps.createTextMessage("prio-" + pr);
                p.send(m, DeliveryMode.PERSISTENT, pr, 0);
            }
            Connection cc = t.conn(part == 1 ? "" : "jms.messagePrioritySupported=true");
            Session cs = cc.createSession(false, Session.AUTO_ACKNOWLEDGE);
            MessageConsumer c = cs.createConsumer(q);
            if (part == 1) {
                Set<Integer> seen = new TreeSet<>();
                for (int i = 0; i < order.length; i++) {
                    Message m = mustReceive(c, "priority message " + i);
                    eq("prio-" + m.getJMSPriority(), text(m), "JMSPriority kept");
                    seen.add(m.getJMSPriority());
                }
                eq(10, seen.size(), "distinct priorities received " + seen);
            } else {
                ActiveMQMessageConsumer ac = (ActiveMQMessageConsumer) c;
                long deadline = System.currentTimeMillis() + 5000;
                while (ac.getMessageSize() < order.length && System.currentTimeMillis() < deadline) Thread.sleep(20);
                eq(order.length, ac.getMessageSize(), "messages in the prefetch buffer");
                for (int pr = 9; pr >= 0; pr--) {
                    Message m = mustReceive(c, "priority " + pr);
                    eq(pr, m.getJMSPriority(), "strict priority order with messagePrioritySupported");
                    eq("prio-" + pr, text(m), "body");
                }
            }
            cs.close();
            t.assertOnlyMarkerLeft(q);
        }
    }

    /**
     * TTL 200 ms message expires after 500 ms; a TTL 0 message sent alongside is delivered.
     * Run twice: with the client's own expiry check (default), and with
     * jms.consumerExpiryCheckEnabled=false so that only the broker can drop the expired message.
     */
    static void expiry(JmsTests t) throws Exception {
        expiryOnce(t, "", "expiry");
        expiryOnce(t, "jms.consumerExpiryCheckEnabled=false", "expiry.brokerside");
    }

    static void expiryOnce(JmsTests t, String consumerOpts, String queueName) throws Exception {
        Connection pc = t.conn(), cc = t.conn(consumerOpts);
        Session ps = pc.createSession(false, Session.AUTO_ACKNOWLEDGE);
        Queue q = ps.createQueue(t.name(queueName));
        MessageProducer p = ps.createProducer(q);
        TextMessage dies = ps.createTextMessage("expires");
        long before = System.currentTimeMillis();
        p.send(dies, DeliveryMode.PERSISTENT, 4, 200);
        check(dies.getJMSExpiration() >= before + 200 && dies.getJMSExpiration() <= System.currentTimeMillis() + 200,
                "JMSExpiration = send time + 200: " + dies.getJMSExpiration());
        TextMessage lives = ps.createTextMessage("lives");
        p.send(lives, DeliveryMode.PERSISTENT, 4, 0);
        TextMessage longLived = ps.createTextMessage("long-ttl");
        p.send(longLived, DeliveryMode.PERSISTENT, 4, 60_000);
        Thread.sleep(500);
        Session cs = cc.createSession(false, Session.AUTO_ACKNOWLEDGE);
        MessageConsumer c = cs.createConsumer(q);
        Message m = mustReceive(c, "TTL 0 message");
        eq("lives", text(m), "first delivered message (the expired one must be skipped)");
        eq(0L, m.getJMSExpiration(), "JMSExpiration of a TTL 0 message");
        m = mustReceive(c, "TTL 60 s message");
        eq("long-ttl", text(m), "message with TTL 60 s");
        eq(longLived.getJMSExpiration(), m.getJMSExpiration(), "JMSExpiration carried");
        cs.close();
        t.assertOnlyMarkerLeft(q);
    }

    /** Request/reply through a temporary queue and JMSReplyTo, responder on another connection. */
    static void tempQueueReply(JmsTests t) throws Exception {
        Connection rc = t.conn(), qc = t.conn();
        Session rs = rc.createSession(false, Session.AUTO_ACKNOWLEDGE);
        Queue service = rs.createQueue(t.name("service"));
        MessageProducer replier = rs.createProducer(null);
        AtomicReference<Throwable> responderError = new AtomicReference<>();
        rs.createConsumer(service).setMessageListener(req -> {
            try {
                TextMessage resp = rs.createTextMessage(text(req).toUpperCase(Locale.ROOT));
                resp.setJMSCorrelationID(req.getJMSMessageID());
                replier.send(req.getJMSReplyTo(), resp);
            } catch (Throwable e) {
                responderError.set(e);
            }
        });
        Session qs = qc.createSession(false, Session.AUTO_ACKNOWLEDGE);
        TemporaryQueue tq = qs.createTemporaryQueue();
        MessageConsumer replies = qs.createConsumer(tq);
        MessageProducer requester = qs.createProducer(service);
        for (int i = 0; i < 3; i++) {
            TextMessage req = qs.createTextMessage("request-" + i);
            req.setJMSReplyTo(tq);
            requester.send(req);
            Message resp = mustReceive(replies, "reply " + i);
            if (responderError.get() != null) throw new AssertionError("responder failed", responderError.get());
            eq("REQUEST-" + i, text(resp), "reply body");
            eq(req.getJMSMessageID(), resp.getJMSCorrelationID(), "reply correlation id");
            check(resp.getJMSDestination() instanceof TemporaryQueue, "reply destination is a TemporaryQueue: "
                    + resp.getJMSDestination());
            eq(tq.getQueueName(), ((Queue) resp.getJMSDestination()).getQueueName(), "reply destination");
        }
        replies.close();
        tq.delete();
    }

    /** QueueBrowser sees the 5 messages in order without consuming them. */
    static void browser(JmsTests t) throws Exception {
        Connection pc = t.conn(), cc = t.conn();
        Session ps = pc.createSession(false, Session.AUTO_ACKNOWLEDGE);
        Queue q = ps.createQueue(t.name("browse"));
        List<String> sent = sendTexts(ps, q, "b", 5);
        Session cs = cc.createSession(false, Session.AUTO_ACKNOWLEDGE);
        for (int round = 0; round < 2; round++) {
            QueueBrowser br = cs.createBrowser(q);
            List<String> seen = new ArrayList<>();
            Enumeration<?> e = br.getEnumeration();
            long deadline = System.currentTimeMillis() + 10_000;
            while (e.hasMoreElements() && System.currentTimeMillis() < deadline) seen.add(text((Message) e.nextElement()));
            br.close();
            eq(sent, seen, "browse round " + (round + 1));
        }
        MessageConsumer c = cs.createConsumer(q);
        for (String body : sent) eq(body, text(mustReceive(c, body)), "consumed after browsing");
        c.close();
        t.assertOnlyMarkerLeft(q);
    }

    /** failover:(url)?maxReconnectAttempts=3 connects and carries a send/receive. */
    static void failoverUrl(JmsTests t) throws Exception {
        String inner = url.startsWith("failover:") ? url : "failover:(" + url + ")?maxReconnectAttempts=3";
        ActiveMQConnectionFactory f = new ActiveMQConnectionFactory(inner);
        Connection c = t.conn(f, null);
        Session s = c.createSession(false, Session.AUTO_ACKNOWLEDGE);
        Queue q = s.createQueue(t.name("failover"));
        MessageConsumer mc = s.createConsumer(q);
        MessageProducer p = s.createProducer(q);
        p.setDeliveryMode(DeliveryMode.PERSISTENT);
        p.send(s.createTextMessage("via-failover"));
        Message m = mustReceive(mc, "via failover");
        eq("via-failover", text(m), "body");
        check(((org.apache.activemq.ActiveMQConnection) c).getTransport()
                .narrow(org.apache.activemq.transport.failover.FailoverTransport.class) != null,
                "connection uses the failover transport");
    }

    // ---- STOMP interop ------------------------------------------------------------------------

    static final class Frame {
        String command;
        final Map<String, String> headers = new LinkedHashMap<>();
        byte[] body = new byte[0];

        String body() { return new String(body, StandardCharsets.UTF_8); }

        String h(String k) { return headers.get(k); }

        @Override public String toString() { return command + " " + headers + " body=" + body(); }
    }

    /** Minimal STOMP 1.1 client over a raw socket; frames are written by hand. */
    static final class Stomp implements Closeable {
        final Socket sock;
        final OutputStream out;
        final InputStream in;

        Stomp(String hostPort) throws IOException {
            int colon = hostPort.lastIndexOf(':');
            sock = new Socket();
            sock.connect(new InetSocketAddress(hostPort.substring(0, colon),
                    Integer.parseInt(hostPort.substring(colon + 1))), 5000);
            sock.setSoTimeout((int) WAIT_MS);
            sock.setTcpNoDelay(true);
            out = new BufferedOutputStream(sock.getOutputStream());
            in = new BufferedInputStream(sock.getInputStream());
        }

        static String esc(String s) {
            return s.replace("\\", "\\\\").replace("\n", "\\n").replace(":", "\\c");
        }

        static String unesc(String s) {
            StringBuilder b = new StringBuilder();
            for (int i = 0; i < s.length(); i++) {
                char c = s.charAt(i);
                if (c == '\\' && i + 1 < s.length()) {
                    char n = s.charAt(++i);
                    b.append(n == 'n' ? '\n' : n == 'c' ? ':' : n == 'r' ? '\r' : n);
                } else b.append(c);
            }
            return b.toString();
        }

        /** Writes a frame; escape=false for CONNECT (STOMP 1.1 does not escape it). */
        void send(String command, String[][] headers, byte[] body, boolean contentLength, boolean escape)
                throws IOException {
            StringBuilder b = new StringBuilder(command).append('\n');
            for (String[] h : headers)
                b.append(escape ? esc(h[0]) : h[0]).append(':').append(escape ? esc(h[1]) : h[1]).append('\n');
            if (contentLength) b.append("content-length:").append(body == null ? 0 : body.length).append('\n');
            b.append('\n');
            out.write(b.toString().getBytes(StandardCharsets.UTF_8));
            if (body != null) out.write(body);
            out.write(0);
            out.flush();
        }

        void send(String command, String[][] headers) throws IOException { send(command, headers, null, false, true); }

        String readLine() throws IOException {
            ByteArrayOutputStream line = new ByteArrayOutputStream();
            while (true) {
                int c = in.read();
                if (c < 0) throw new EOFException("STOMP connection closed");
                if (c == '\n') break;
                line.write(c);
            }
            String s = line.toString(StandardCharsets.UTF_8);
            return s.endsWith("\r") ? s.substring(0, s.length() - 1) : s;
        }

        Frame read() throws IOException {
            Frame f = new Frame();
            String cmd;
            do { cmd = readLine(); } while (cmd.isEmpty()); // heart-beats / EOLs after NUL
            f.command = cmd;
            String line;
            while (!(line = readLine()).isEmpty()) {
                int i = line.indexOf(':');
                String k = unesc(line.substring(0, i)), v = unesc(line.substring(i + 1));
                f.headers.putIfAbsent(k, v); // STOMP: the first occurrence wins
            }
            String cl = f.headers.get("content-length");
            if (cl != null) {
                int n = Integer.parseInt(cl.trim());
                byte[] b = new byte[n];
                int off = 0;
                while (off < n) {
                    int r = in.read(b, off, n - off);
                    if (r < 0) throw new EOFException("short body");
                    off += r;
                }
                f.body = b;
                int nul = in.read();
                if (nul != 0) throw new IOException("frame not NUL-terminated after content-length body: " + nul);
            } else {
                ByteArrayOutputStream b = new ByteArrayOutputStream();
                int c;
                while ((c = in.read()) != 0) {
                    if (c < 0) throw new EOFException("STOMP connection closed in a body");
                    b.write(c);
                }
                f.body = b.toByteArray();
            }
            return f;
        }

        Frame expect(String command) throws IOException {
            Frame f = read();
            if (!command.equals(f.command)) throw new AssertionError("expected STOMP " + command + ", got " + f);
            return f;
        }

        @Override public void close() throws IOException { sock.close(); }
    }

    /**
     * A message the client gives up on (its redelivery policy exhausted: here
     * maximumRedeliveries=0, so the first rollback) is poison-acked and lands in ActiveMQ.DLQ.
     */
    static void poisonDlq(JmsTests t) throws Exception {
        Connection pc = t.conn();
        Session ps = pc.createSession(false, Session.AUTO_ACKNOWLEDGE);
        Queue q = ps.createQueue(t.name("poison"));
        String body = "poison-" + t.id;
        ps.createProducer(q).send(ps.createTextMessage(body));
        Connection cc = t.conn("jms.redeliveryPolicy.maximumRedeliveries=0");
        Session cs = cc.createSession(true, Session.SESSION_TRANSACTED);
        MessageConsumer c = cs.createConsumer(q);
        eq(body, text(mustReceive(c, body)), "first delivery");
        cs.rollback();
        c.close();
        cs.close();
        // The DLQ is shared by every run: look for this run's message among what is there.
        Session ds = pc.createSession(false, Session.CLIENT_ACKNOWLEDGE);
        MessageConsumer dlq = ds.createConsumer(ds.createQueue("ActiveMQ.DLQ"));
        long deadline = System.currentTimeMillis() + 5000;
        boolean found = false;
        while (!found && System.currentTimeMillis() < deadline) {
            Message m = dlq.receive(500);
            if (m instanceof TextMessage && body.equals(((TextMessage) m).getText())) {
                found = true;
                m.acknowledge();
            }
        }
        check(found, "the poisoned message is in ActiveMQ.DLQ");
        t.assertOnlyMarkerLeft(q);
    }

    /**
     * A durable subscription and a transaction mean the same thing over both protocols: a JMS
     * durable subscriber (client id + name) is the subscription a STOMP client reattaches with
     * `client-id` + `activemq.subscriptionName`; STOMP sends in an aborted transaction never
     * reach a JMS consumer, committed ones do.
     */
    static void stompDurableTx(JmsTests t) throws Exception {
        String clientId = "cid-" + t.id, sub = "sub-" + t.id;
        String topicName = t.name("dur.topic"), q = t.name("stomp.tx");
        Connection dc = t.conn(t.factory(""), clientId);
        Session ds = dc.createSession(false, Session.AUTO_ACKNOWLEDGE);
        Topic topic = ds.createTopic(topicName);
        ds.createDurableSubscriber(topic, sub).close();
        dc.close();
        // Published while nobody is attached: kept for the durable subscription.
        Connection pc = t.conn();
        Session ps = pc.createSession(false, Session.AUTO_ACKNOWLEDGE);
        ps.createProducer(topic).send(ps.createTextMessage("kept for the durable"));
        Connection jc = t.conn();
        Session js = jc.createSession(false, Session.AUTO_ACKNOWLEDGE);
        MessageConsumer txIn = js.createConsumer(js.createQueue(q));
        try (Stomp st = new Stomp(stomp)) {
            st.send("CONNECT", new String[][] {{"accept-version", "1.2"}, {"host", "localhost"},
                    {"client-id", clientId}, {"heart-beat", "0,0"}}, null, false, false);
            st.expect("CONNECTED");
            st.send("SUBSCRIBE", new String[][] {{"destination", "/topic/" + topicName}, {"id", "d1"},
                    {"ack", "auto"}, {"activemq.subscriptionName", sub}});
            Frame got = st.expect("MESSAGE");
            eq("kept for the durable", got.body(), "the JMS durable subscription, read over STOMP");
            // Transactions: aborted sends vanish, committed ones arrive.
            st.send("BEGIN", new String[][] {{"transaction", "tx1"}});
            st.send("SEND", new String[][] {{"destination", "/queue/" + q}, {"transaction", "tx1"}},
                    "aborted".getBytes(StandardCharsets.UTF_8), false, true);
            st.send("ABORT", new String[][] {{"transaction", "tx1"}});
            st.send("BEGIN", new String[][] {{"transaction", "tx2"}});
            st.send("SEND", new String[][] {{"destination", "/queue/" + q}, {"transaction", "tx2"}},
                    "committed".getBytes(StandardCharsets.UTF_8), false, true);
            st.send("COMMIT", new String[][] {{"transaction", "tx2"}, {"receipt", "c2"}});
            eq("c2", st.expect("RECEIPT").h("receipt-id"), "commit receipt");
        }
        eq("committed", text(mustReceive(txIn, "the committed STOMP send")), "only the committed send arrives");
    }

    static void stompInterop(JmsTests t) throws Exception {
        Connection c = t.conn();
        Session s = c.createSession(false, Session.AUTO_ACKNOWLEDGE);
        String q1 = t.name("stomp.in"), q2 = t.name("stomp.out"), replyQ = t.name("stomp.reply");
        try (Stomp st = new Stomp(stomp)) {
            st.send("CONNECT", new String[][] {{"accept-version", "1.1"}, {"host", "localhost"},
                    {"heart-beat", "0,0"}}, null, false, false);
            Frame connected = st.expect("CONNECTED");
            eq("1.1", connected.h("version"), "negotiated STOMP version");

            // --- STOMP -> JMS ---
            MessageConsumer in = s.createConsumer(s.createQueue(q1));
            long expires = System.currentTimeMillis() + 60_000;
            st.send("SEND", new String[][] {{"destination", "/queue/" + q1}, {"persistent", "true"},
                    {"priority", "6"}, {"expires", Long.toString(expires)}, {"reply-to", "/queue/" + replyQ},
                    {"correlation-id", "corr-" + t.id}, {"type", "stomp-type"}, {"color", "blue"},
                    {"n", "42"}, {"receipt", "r1"}},
                    "text from stomp \u20ac".getBytes(StandardCharsets.UTF_8), false, true);
            eq("r1", st.expect("RECEIPT").h("receipt-id"), "receipt-id");
            Message m = mustReceive(in, "STOMP SEND without content-length");
            eq("text from stomp \u20ac", text(m), "STOMP text body");
            eq(DeliveryMode.PERSISTENT, m.getJMSDeliveryMode(), "persistent:true -> JMSDeliveryMode");
            eq(6, m.getJMSPriority(), "priority header -> JMSPriority");
            eq(expires, m.getJMSExpiration(), "expires header -> JMSExpiration");
            check(m.getJMSReplyTo() instanceof Queue, "reply-to -> JMSReplyTo queue: " + m.getJMSReplyTo());
            eq(replyQ, ((Queue) m.getJMSReplyTo()).getQueueName(), "reply-to queue name");
            eq("corr-" + t.id, m.getJMSCorrelationID(), "correlation-id -> JMSCorrelationID");
            eq("stomp-type", m.getJMSType(), "type -> JMSType");
            eq("blue", m.getObjectProperty("color"), "custom header -> String property");
            eq("42", m.getObjectProperty("n"), "numeric-looking header stays a String property");
            check(m.getJMSMessageID() != null && m.getJMSMessageID().startsWith("ID:"), "JMSMessageID assigned");

            byte[] bin = {1, 2, 3, 0, 4, (byte) 0xff};
            st.send("SEND", new String[][] {{"destination", "/queue/" + q1}, {"persistent", "false"},
                    {"receipt", "r2"}}, bin, true, true);
            eq("r2", st.expect("RECEIPT").h("receipt-id"), "receipt-id 2");
            m = mustReceive(in, "STOMP SEND with content-length");
            check(m instanceof BytesMessage, "content-length SEND -> BytesMessage, got " + cls(m));
            BytesMessage bm = (BytesMessage) m;
            eq((long) bin.length, bm.getBodyLength(), "BytesMessage length");
            byte[] got = new byte[bin.length];
            bm.readBytes(got);
            check(Arrays.equals(bin, got), "BytesMessage body (with an embedded NUL)");
            eq(DeliveryMode.NON_PERSISTENT, m.getJMSDeliveryMode(), "persistent:false -> NON_PERSISTENT");
            eq(4, m.getJMSPriority(), "default priority");

            // --- JMS -> STOMP ---
            st.send("SUBSCRIBE", new String[][] {{"destination", "/queue/" + q2}, {"id", "sub-1"},
                    {"ack", "client-individual"}, {"receipt", "r3"}});
            eq("r3", st.expect("RECEIPT").h("receipt-id"), "subscribe receipt");
            MessageProducer p = s.createProducer(s.createQueue(q2));
            TextMessage tm = s.createTextMessage("text from jms \u00e9");
            tm.setStringProperty("s", "str");
            tm.setIntProperty("i", 7);
            tm.setBooleanProperty("b", true);
            tm.setJMSCorrelationID("jcorr-" + t.id);
            tm.setJMSType("jms-type");
            tm.setJMSReplyTo(s.createQueue(replyQ));
            p.send(tm, DeliveryMode.PERSISTENT, 8, 0);
            BytesMessage jb = s.createBytesMessage();
            jb.writeBytes(bin);
            p.send(jb, DeliveryMode.NON_PERSISTENT, 4, 0);

            Frame f = st.expect("MESSAGE");
            if (System.getenv("JMS_TESTS_VERBOSE") != null) System.out.println("  stomp got " + f);
            eq("text from jms \u00e9", f.body(), "MESSAGE body");
            eq("/queue/" + q2, f.h("destination"), "destination header");
            eq(tm.getJMSMessageID(), f.h("message-id"), "message-id header");
            eq("sub-1", f.h("subscription"), "subscription header");
            eq("jcorr-" + t.id, f.h("correlation-id"), "correlation-id header");
            eq("jms-type", f.h("type"), "type header");
            eq("/queue/" + replyQ, f.h("reply-to"), "reply-to header");
            eq("8", f.h("priority"), "priority header");
            eq("true", f.h("persistent"), "persistent header");
            eq("0", f.h("expires"), "expires header");
            eq(Long.toString(tm.getJMSTimestamp()), f.h("timestamp"), "timestamp header");
            eq("str", f.h("s"), "string property header");
            eq("7", f.h("i"), "int property header");
            eq("true", f.h("b"), "boolean property header");
            check(f.h("ack") != null || f.h("message-id") != null, "ack id present");
            st.send("ACK", new String[][] {{"subscription", "sub-1"}, {"message-id", f.h("message-id")}});

            Frame fb = st.expect("MESSAGE");
            if (System.getenv("JMS_TESTS_VERBOSE") != null) System.out.println("  stomp got " + fb);
            check(Arrays.equals(bin, fb.body), "JMS BytesMessage -> STOMP body bytes");
            eq(Integer.toString(bin.length), fb.h("content-length"), "content-length of a bytes MESSAGE");
            eq(null, fb.h("persistent"), "no persistent header for a NON_PERSISTENT message");
            st.send("ACK", new String[][] {{"subscription", "sub-1"}, {"message-id", fb.h("message-id")},
                    {"receipt", "r4"}});
            eq("r4", st.expect("RECEIPT").h("receipt-id"), "ack receipt");
            st.send("DISCONNECT", new String[][] {{"receipt", "r5"}});
            eq("r5", st.expect("RECEIPT").h("receipt-id"), "disconnect receipt");
        }
        t.assertOnlyMarkerLeft(s.createQueue(q2)); // both ACKed messages are gone
    }
}
