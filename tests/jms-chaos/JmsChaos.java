import java.io.*;
import java.nio.file.*;
import java.util.*;
import java.util.concurrent.*;
import java.util.concurrent.atomic.*;
import javax.jms.*;
import org.apache.activemq.ActiveMQConnection;
import org.apache.activemq.ActiveMQConnectionFactory;
import org.apache.activemq.transport.TransportListener;

/**
 * Chaos load for the OpenWire failover tests: JMS producers and consumers on a failover URI
 * while the test kills brokers. Each producer sends persistent TextMessages "p<i>-<seq>" and
 * records every one whose send() returned (confirmed); consumers (CLIENT_ACKNOWLEDGE with
 * synchronous acks, `sendAcksAsync=false`) record every receive as "seq body redelivered ackOk":
 * a message received again after its acknowledge() returned is a duplicate; one received again
 * after a failed acknowledge (the ack was lost in a failover) is JMS's at-least-once. A fifth
 * field "raced" is 1 when the consumer's connection was interrupted between the receive() call
 * and the end of acknowledge() (plus 100 ms): the client itself may then report an ack as done
 * that never reached a broker (its FailoverTransport answers a MessageAck sent while disconnected, and a
 * CLIENT_ACKNOWLEDGE consumer drops its delivered list on an interruption).
 * When the producers are done (or the time is up) the consumers drain until the queue has been
 * quiet for --quiet-ms, then the program writes confirmed.txt and received.txt into --out and
 * prints a one-line summary. Judging is the caller's job (it has the broker's side too).
 *
 * Progress lines ("progress confirmed=N received=M") go to stdout every 200 ms so that the
 * caller can time its faults on positive events.
 */
public class JmsChaos {
    public static void main(String[] args) throws Exception {
        Map<String, String> a = new HashMap<>();
        for (int i = 0; i + 1 < args.length; i += 2) a.put(args[i], args[i + 1]);
        String url = a.get("--url");
        String queue = a.getOrDefault("--queue", "chaos");
        int producers = Integer.parseInt(a.getOrDefault("--producers", "4"));
        int consumers = Integer.parseInt(a.getOrDefault("--consumers", "2"));
        int perProducer = Integer.parseInt(a.getOrDefault("--messages", "2000"));
        long maxMs = Long.parseLong(a.getOrDefault("--max-ms", "120000"));
        long quietMs = Long.parseLong(a.getOrDefault("--quiet-ms", "5000"));
        Path out = Paths.get(a.getOrDefault("--out", "."));
        Files.createDirectories(out);
        long deadline = System.currentTimeMillis() + maxMs;

        ActiveMQConnectionFactory f = new ActiveMQConnectionFactory(url);
        ActiveMQConnectionFactory cf = new ActiveMQConnectionFactory(url);
        cf.setSendAcksAsync(false);
        AtomicInteger ackErrors = new AtomicInteger();
        AtomicLong seq = new AtomicLong();
        Set<String> confirmed = ConcurrentHashMap.newKeySet();
        java.util.Queue<Rec> received = new ConcurrentLinkedQueue<>();
        AtomicLong lastReceive = new AtomicLong(System.currentTimeMillis());
        AtomicBool producing = new AtomicBool(true);
        AtomicInteger sendErrors = new AtomicInteger();
        List<Thread> threads = new ArrayList<>();
        List<Connection> conns = new CopyOnWriteArrayList<>();

        for (int c = 0; c < consumers; c++) {
            Connection conn = cf.createConnection();
            conns.add(conn);
            // This connection's interruptions, as [start, end] in nanoTime (end open until
            // the transport resumes; the client also reports its first connect as a resume).
            List<long[]> outages = Collections.synchronizedList(new ArrayList<>());
            ((ActiveMQConnection) conn).addTransportListener(new TransportListener() {
                public void onCommand(Object command) { }
                public void onException(IOException error) { }
                public void transportInterupted() {
                    outages.add(new long[] {System.nanoTime(), Long.MAX_VALUE});
                }
                public void transportResumed() {
                    synchronized (outages) {
                        if (!outages.isEmpty()) outages.get(outages.size() - 1)[1] = System.nanoTime();
                    }
                }
            });
            conn.start();
            Session s = conn.createSession(false, Session.CLIENT_ACKNOWLEDGE);
            MessageConsumer mc = s.createConsumer(s.createQueue(queue));
            Thread t = new Thread(() -> {
                try {
                    while (System.currentTimeMillis() < deadline) {
                        long t0 = System.nanoTime();
                        Message m = mc.receive(200);
                        if (m == null) {
                            if (!producing.get() && System.currentTimeMillis() - lastReceive.get() > quietMs) break;
                            continue;
                        }
                        lastReceive.set(System.currentTimeMillis());
                        long n = seq.incrementAndGet();
                        String body = ((TextMessage) m).getText();
                        String redelivered = m.getJMSRedelivered() ? "1" : "0";
                        boolean acked;
                        try {
                            m.acknowledge();
                            acked = true;
                        } catch (JMSException e) {
                            ackErrors.incrementAndGet();
                            acked = false;
                        }
                        received.add(new Rec(n + " " + body + " " + redelivered + (acked ? " 1" : " 0"),
                            outages, t0, System.nanoTime()));
                    }
                } catch (Exception e) {
                    System.out.println("consumer error: " + e);
                }
            });
            threads.add(t);
        }
        List<Thread> prods = new ArrayList<>();
        for (int p = 0; p < producers; p++) {
            final int pi = p;
            Thread t = new Thread(() -> {
                try {
                    Connection conn = f.createConnection();
                    conns.add(conn);
                    conn.start();
                    Session s = conn.createSession(false, Session.AUTO_ACKNOWLEDGE);
                    MessageProducer mp = s.createProducer(s.createQueue(queue));
                    mp.setDeliveryMode(DeliveryMode.PERSISTENT);
                    for (int i = 0; i < perProducer && System.currentTimeMillis() < deadline; i++) {
                        String body = "p" + pi + "-" + i;
                        try {
                            mp.send(s.createTextMessage(body));
                            confirmed.add(body);
                        } catch (JMSException e) {
                            sendErrors.incrementAndGet();
                        }
                    }
                } catch (Exception e) {
                    System.out.println("producer error: " + e);
                }
            });
            prods.add(t);
        }
        threads.forEach(Thread::start);
        prods.forEach(Thread::start);
        Thread progress = new Thread(() -> {
            while (true) {
                System.out.println("progress confirmed=" + confirmed.size() + " received=" + received.size());
                System.out.flush();
                try { Thread.sleep(200); } catch (InterruptedException e) { return; }
            }
        });
        progress.setDaemon(true);
        progress.start();
        for (Thread t : prods) t.join();
        producing.set(false);
        lastReceive.set(System.currentTimeMillis());
        for (Thread t : threads) t.join();
        progress.interrupt();
        List<String> rec = new ArrayList<>();
        for (Rec r : received) rec.add(r.line + (r.raced() ? " 1" : " 0"));
        Files.write(out.resolve("confirmed.txt"), new TreeSet<>(confirmed));
        Files.write(out.resolve("received.txt"), rec);
        Map<String, Integer> counts = new HashMap<>();
        for (String r : rec) counts.merge(r.split(" ")[1], 1, Integer::sum);
        long dups = counts.values().stream().filter(v -> v > 1).count();
        long missing = confirmed.stream().filter(x -> !counts.containsKey(x)).count();
        System.out.println("summary confirmed=" + confirmed.size() + " received=" + rec.size()
            + " distinct=" + counts.size() + " received_twice=" + dups + " missing=" + missing
            + " send_errors=" + sendErrors.get() + " ack_errors=" + ackErrors.get());
        for (Connection c : conns) { try { c.close(); } catch (Exception e) { } }
        System.exit(0);
    }

    /** One receive, judged "raced" once every interruption of its connection is known. */
    static final class Rec {
        /** The client tells its listeners of an interruption a little after the transport is
         * gone (an ack sent in between is answered by the client itself), later still on a
         * loaded machine: a margin. */
        static final long SLACK_NS = 100_000_000L;
        final String line;
        final List<long[]> outages;
        final long t0, t1;
        Rec(String line, List<long[]> outages, long t0, long t1) {
            this.line = line; this.outages = outages; this.t0 = t0; this.t1 = t1;
        }
        boolean raced() {
            synchronized (outages) {
                for (long[] o : outages) if (o[0] <= t1 + SLACK_NS && o[1] >= t0) return true;
            }
            return false;
        }
    }

    static final class AtomicBool {
        private volatile boolean v;
        AtomicBool(boolean v) { this.v = v; }
        boolean get() { return v; }
        void set(boolean x) { v = x; }
    }
}
