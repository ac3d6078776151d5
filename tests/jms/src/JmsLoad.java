// Load generator with the real ActiveMQ 5.x JMS client, for benchmarks.
//
//   java JmsLoad --url tcp://127.0.0.1:61616 (--queue NAME | --topic NAME) [--producers 1]
//       [--consumers 1] [--subscribers S] [--messages 10000] [--size 1024] [--persistent true]
//       [--timeout-s 120] [--exact-name]
//
// Every producer and consumer has its own connection and session (AUTO_ACKNOWLEDGE, client
// defaults otherwise: persistent sends are synchronous, non-persistent ones asynchronous).
// --messages is the total sent (split over the producers). Queue: the consumers share the
// messages. Topic: each of the S subscribers (default: --consumers) receives every message;
// subscribers are attached before the first send. The destination name gets a random suffix
// unless --exact-name. Prints one line of JSON; exits 1 if not every message arrived within
// --timeout-s.

import java.util.*;
import java.util.concurrent.*;
import java.util.concurrent.atomic.AtomicLong;

import javax.jms.BytesMessage;
import javax.jms.Connection;
import javax.jms.DeliveryMode;
import javax.jms.Destination;
import javax.jms.MessageConsumer;
import javax.jms.MessageProducer;
import javax.jms.Session;

import org.apache.activemq.ActiveMQConnectionFactory;

public class JmsLoad {
    static void usage(String why) {
        System.err.println("JmsLoad: " + why);
        System.err.println("usage: JmsLoad --url URL (--queue NAME | --topic NAME) [--producers N] [--consumers M]"
                + " [--subscribers S] [--messages K] [--size BYTES] [--persistent true|false] [--timeout-s T]"
                + " [--exact-name]");
        System.exit(2);
    }

    public static void main(String[] args) throws Exception {
        String url = null, queue = null, topic = null;
        int producers = 1, consumers = 1, subscribers = -1, size = 1024;
        long messages = 10_000, timeoutS = 120;
        boolean persistent = true, exact = false;
        try {
            for (int i = 0; i < args.length; i++) {
                switch (args[i]) {
                    case "--url": url = args[++i]; break;
                    case "--queue": queue = args[++i]; break;
                    case "--topic": topic = args[++i]; break;
                    case "--producers": producers = Integer.parseInt(args[++i]); break;
                    case "--consumers": consumers = Integer.parseInt(args[++i]); break;
                    case "--subscribers": subscribers = Integer.parseInt(args[++i]); break;
                    case "--messages": messages = Long.parseLong(args[++i]); break;
                    case "--size": size = Integer.parseInt(args[++i]); break;
                    case "--persistent": persistent = Boolean.parseBoolean(args[++i]); break;
                    case "--timeout-s": timeoutS = Long.parseLong(args[++i]); break;
                    case "--exact-name": exact = true; break;
                    case "--help": case "-h": usage("help"); break;
                    default: usage("unknown argument " + args[i]);
                }
            }
        } catch (ArrayIndexOutOfBoundsException | NumberFormatException e) {
            usage("bad arguments: " + e);
        }
        if (url == null) usage("--url is required");
        if ((queue == null) == (topic == null)) usage("exactly one of --queue / --topic");
        if (producers < 1 || messages < 1 || size < 0 || timeoutS < 1) usage("bad numbers");
        boolean isTopic = topic != null;
        int readers = isTopic ? (subscribers >= 0 ? subscribers : consumers) : consumers;
        if (readers < 0) usage("bad consumer count");
        String dest = (isTopic ? topic : queue)
                + (exact ? "" : "." + Long.toString(Math.abs(new Random().nextLong()), 36));
        long expectedReceived = readers == 0 ? 0 : (isTopic ? messages * readers : messages);

        ActiveMQConnectionFactory cf = new ActiveMQConnectionFactory(url);
        List<Connection> conns = Collections.synchronizedList(new ArrayList<>());
        long deadlineNs = System.nanoTime() + timeoutS * 1_000_000_000L;
        AtomicLong received = new AtomicLong();
        AtomicLong lastReceiveNs = new AtomicLong();
        AtomicLong sent = new AtomicLong();
        List<Throwable> errors = Collections.synchronizedList(new ArrayList<>());
        ExecutorService pool = Executors.newFixedThreadPool(producers + Math.max(readers, 1));
        int exitCode = 0;
        try {
            // consumers / subscribers first
            CountDownLatch readersReady = new CountDownLatch(readers);
            List<Future<?>> readerFutures = new ArrayList<>();
            for (int r = 0; r < readers; r++) {
                Connection c = cf.createConnection();
                conns.add(c);
                c.start();
                Session s = c.createSession(false, Session.AUTO_ACKNOWLEDGE);
                Destination d = isTopic ? s.createTopic(dest) : s.createQueue(dest);
                MessageConsumer mc = s.createConsumer(d);
                readersReady.countDown();
                final long mine = isTopic ? messages : -1;
                readerFutures.add(pool.submit(() -> {
                    long got = 0;
                    while (System.nanoTime() < deadlineNs) {
                        if (!isTopic && received.get() >= expectedReceived) break;
                        if (isTopic && got >= mine) break;
                        javax.jms.Message m = mc.receive(200);
                        if (m == null) continue;
                        got++;
                        received.incrementAndGet();
                        lastReceiveNs.accumulateAndGet(System.nanoTime(), Math::max);
                    }
                    return null;
                }));
            }
            readersReady.await();

            byte[] payload = new byte[size];
            new Random(42).nextBytes(payload);
            long[][] lat = new long[producers][];
            List<Future<?>> prodFutures = new ArrayList<>();
            CountDownLatch go = new CountDownLatch(1);
            List<Session> prodSessions = new ArrayList<>();
            List<MessageProducer> prods = new ArrayList<>();
            for (int p = 0; p < producers; p++) {
                Connection c = cf.createConnection();
                conns.add(c);
                c.start();
                Session s = c.createSession(false, Session.AUTO_ACKNOWLEDGE);
                Destination d = isTopic ? s.createTopic(dest) : s.createQueue(dest);
                MessageProducer mp = s.createProducer(d);
                mp.setDeliveryMode(persistent ? DeliveryMode.PERSISTENT : DeliveryMode.NON_PERSISTENT);
                prodSessions.add(s);
                prods.add(mp);
            }
            for (int p = 0; p < producers; p++) {
                final int idx = p;
                final long count = messages / producers + (p < messages % producers ? 1 : 0);
                lat[p] = new long[(int) count];
                prodFutures.add(pool.submit(() -> {
                    Session s = prodSessions.get(idx);
                    MessageProducer mp = prods.get(idx);
                    go.await();
                    for (int i = 0; i < count; i++) {
                        if (System.nanoTime() > deadlineNs) break;
                        BytesMessage m = s.createBytesMessage();
                        m.writeBytes(payload);
                        long t0 = System.nanoTime();
                        mp.send(m);
                        lat[idx][i] = System.nanoTime() - t0;
                        sent.incrementAndGet();
                    }
                    return null;
                }));
            }
            long start = System.nanoTime();
            go.countDown();
            for (Future<?> f : prodFutures) {
                try { f.get(Math.max(1, deadlineNs - System.nanoTime()), TimeUnit.NANOSECONDS); }
                catch (ExecutionException e) { errors.add(e.getCause()); }
                catch (TimeoutException e) { errors.add(new TimeoutException("producer did not finish")); }
            }
            long sendEnd = System.nanoTime();
            for (Future<?> f : readerFutures) {
                try { f.get(Math.max(1, deadlineNs - System.nanoTime() + 1_000_000_000L), TimeUnit.NANOSECONDS); }
                catch (ExecutionException e) { errors.add(e.getCause()); }
                catch (TimeoutException e) { errors.add(new TimeoutException("consumer did not finish")); }
            }
            long end = readers == 0 ? sendEnd : Math.max(sendEnd, lastReceiveNs.get());

            int n = (int) sent.get();
            long[] all = new long[n];
            int k = 0;
            for (long[] l : lat) for (long v : l) if (v > 0 && k < n) all[k++] = v;
            all = Arrays.copyOf(all, k);
            Arrays.sort(all);
            double sendS = (sendEnd - start) / 1e9, totalS = (end - start) / 1e9;
            boolean complete = sent.get() == messages && received.get() >= expectedReceived && errors.isEmpty();
            StringBuilder j = new StringBuilder("{");
            j.append("\"url\":\"").append(url.replace("\\", "\\\\").replace("\"", "\\\"")).append('"');
            j.append(",\"kind\":\"").append(isTopic ? "topic" : "queue").append('"');
            j.append(",\"destination\":\"").append(dest).append('"');
            j.append(",\"producers\":").append(producers);
            j.append(",\"consumers\":").append(readers);
            j.append(",\"messages\":").append(messages);
            j.append(",\"size\":").append(size);
            j.append(",\"persistent\":").append(persistent);
            j.append(",\"sent\":").append(sent.get());
            j.append(",\"received\":").append(received.get());
            j.append(",\"expected_received\":").append(expectedReceived);
            j.append(",\"send_elapsed_s\":").append(String.format(Locale.ROOT, "%.3f", sendS));
            j.append(",\"elapsed_s\":").append(String.format(Locale.ROOT, "%.3f", totalS));
            j.append(",\"sent_msgs_per_s\":").append(String.format(Locale.ROOT, "%.1f", sent.get() / sendS));
            j.append(",\"received_msgs_per_s\":")
                    .append(String.format(Locale.ROOT, "%.1f", totalS > 0 ? received.get() / totalS : 0.0));
            j.append(",\"send_p50_us\":").append(k == 0 ? 0 : all[(int) Math.min(k - 1, (long) (k * 0.50))] / 1000);
            j.append(",\"send_p99_us\":").append(k == 0 ? 0 : all[(int) Math.min(k - 1, (long) (k * 0.99))] / 1000);
            j.append(",\"complete\":").append(complete);
            if (!errors.isEmpty()) j.append(",\"error\":\"").append(String.valueOf(errors.get(0))
                    .replace("\\", "\\\\").replace("\"", "\\\"")).append('"');
            j.append('}');
            System.out.println(j);
            exitCode = complete ? 0 : 1;
        } finally {
            synchronized (conns) {
                for (Connection c : conns) {
                    try { c.close(); } catch (Exception ignored) { }
                }
            }
            pool.shutdownNow();
        }
        System.exit(exitCode);
    }
}
