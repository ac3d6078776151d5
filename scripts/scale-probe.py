#!/usr/bin/env python3
"""Many STOMP connections and destinations against one broker, standard library only.

Used by scripts/bench-scale.sh (issue 16, item 5); also usable alone:

  scale-probe.py connect --addr 127.0.0.1:61613 --count 10000 --hold-file /tmp/hold
      opens COUNT connections (CONNECT with heart-beat 0,0), waits for every CONNECTED, then
      writes "ready <seconds>" to --ready-file (if given) and keeps them open until the
      hold file disappears; with --subscribe, each connection subscribes to
      /queue/<prefix>.<i % queues> (client-individual acks) and, once told by the hold file's
      content "deliver", expects exactly one message per connection, acks it, and reports
      "delivered <n> <seconds>".
  scale-probe.py destinations --addr ... --count 100000
      creates COUNT queues by subscribing to each on a few connections (then unsubscribing),
      and reports how long it took.

Everything is bounded: every wait has a deadline (--timeout seconds), and the process exits
non-zero with a reason when one passes.
"""

import argparse
import os
import selectors
import socket
import sys
import time


def parse_addr(addr):
    host, _, port = addr.rpartition(":")
    return host or "127.0.0.1", int(port)


class Conn:
    """One STOMP connection driven by the selector loop."""

    def __init__(self, sock, index):
        self.sock = sock
        self.index = index
        self.out = bytearray()
        self.inbuf = bytearray()
        self.connected = False
        self.messages = []
        self.receipts = 0

    def frames(self):
        """Complete frames in the input buffer (heart-beat newlines skipped)."""
        found = []
        while True:
            while self.inbuf[:1] in (b"\n", b"\r"):
                del self.inbuf[:1]
            end = self.inbuf.find(b"\0")
            if end < 0:
                # Bodies here never contain NUL; content-length is honoured below when present.
                return found
            head_end = self.inbuf.find(b"\n\n")
            if 0 <= head_end < end:
                head = bytes(self.inbuf[:head_end]).decode("utf-8", "replace")
                length = None
                for line in head.split("\n")[1:]:
                    if line.startswith("content-length:"):
                        length = int(line.split(":", 1)[1])
                        break
                if length is not None:
                    end = head_end + 2 + length
                    if len(self.inbuf) <= end:
                        return found
            frame = bytes(self.inbuf[:end])
            del self.inbuf[: end + 1]
            found.append(frame)


def frame(command, headers, body=b""):
    lines = [command] + ["%s:%s" % (k, v) for k, v in headers]
    data = ("\n".join(lines) + "\n\n").encode()
    return data + body + b"\0"


def header(frame_bytes, name):
    head = frame_bytes.split(b"\n\n", 1)[0].decode("utf-8", "replace")
    for line in head.split("\n")[1:]:
        k, _, v = line.partition(":")
        if k == name:
            return v
    return None


def open_all(addr, count, sel, deadline, login=None):
    """Opens `count` connections, at most 256 connecting at once; returns them all CONNECTED."""
    host, port = parse_addr(addr)
    conns = []
    pending = 0
    ready = 0
    next_index = 0
    headers = [("accept-version", "1.2"), ("host", "localhost"), ("heart-beat", "0,0")]
    if login:
        headers += [("login", login[0]), ("passcode", login[1])]
    connect_frame = frame("CONNECT", headers)
    while ready < count:
        while next_index < count and pending < 256:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                s.connect((host, port))
            except BlockingIOError:
                pass
            c = Conn(s, next_index)
            c.out += connect_frame
            sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, c)
            conns.append(c)
            next_index += 1
            pending += 1
        if time.monotonic() > deadline:
            raise SystemExit("timeout: %d of %d connections CONNECTED" % (ready, count))
        for key, mask in sel.select(timeout=0.5):
            c = key.data
            if mask & selectors.EVENT_WRITE and c.out:
                try:
                    n = c.sock.send(c.out)
                    del c.out[:n]
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError as e:
                    raise SystemExit("connection %d: send failed: %s" % (c.index, e))
                if not c.out:
                    sel.modify(c.sock, selectors.EVENT_READ, c)
            if mask & selectors.EVENT_READ:
                try:
                    data = c.sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as e:
                    raise SystemExit("connection %d: recv failed: %s" % (c.index, e))
                if not data:
                    raise SystemExit("connection %d closed by the broker before CONNECTED" % c.index)
                c.inbuf += data
                for f in c.frames():
                    if f.startswith(b"CONNECTED"):
                        c.connected = True
                        ready += 1
                        pending -= 1
                    elif f.startswith(b"ERROR"):
                        raise SystemExit("connection %d: ERROR %s" % (c.index, f[:200]))
    return conns


def send_all(sel, conns, deadline):
    """Flushes every connection's output."""
    busy = [c for c in conns if c.out]
    for c in busy:
        sel.modify(c.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, c)
    while any(c.out for c in busy):
        if time.monotonic() > deadline:
            raise SystemExit("timeout while sending")
        for key, mask in sel.select(timeout=0.5):
            c = key.data
            if mask & selectors.EVENT_WRITE and c.out:
                n = c.sock.send(c.out)
                del c.out[:n]
                if not c.out:
                    sel.modify(c.sock, selectors.EVENT_READ, c)
            if mask & selectors.EVENT_READ:
                data = c.sock.recv(65536)
                if not data:
                    raise SystemExit("connection %d closed by the broker" % c.index)
                c.inbuf += data


def handle_frames(sel, c):
    """Handles every complete frame buffered on `c`: MESSAGEs are recorded and ACKed."""
    for f in c.frames():
        if f.startswith(b"MESSAGE"):
            c.messages.append(f)
            ack = header(f, "ack")
            if ack is not None:
                c.out += frame("ACK", [("id", ack)])
                sel.modify(c.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, c)
        elif f.startswith(b"RECEIPT"):
            c.receipts += 1
        elif f.startswith(b"ERROR"):
            raise SystemExit("connection %d: ERROR %s" % (c.index, f[:300]))


def pump_until(sel, conns, done, deadline, what):
    """Reads until done() holds; answers MESSAGEs with ACKs."""
    # Frames that arrived while nobody was looking (e.g. during an idle hold) count too.
    for c in conns:
        handle_frames(sel, c)
    while not done():
        if time.monotonic() > deadline:
            raise SystemExit("timeout waiting for %s" % what)
        for key, mask in sel.select(timeout=0.5):
            c = key.data
            if mask & selectors.EVENT_WRITE and c.out:
                n = c.sock.send(c.out)
                del c.out[:n]
                if not c.out:
                    sel.modify(c.sock, selectors.EVENT_READ, c)
            if mask & selectors.EVENT_READ:
                try:
                    data = c.sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                if not data:
                    raise SystemExit("connection %d closed by the broker" % c.index)
                c.inbuf += data
                handle_frames(sel, c)


def cmd_connect(args):
    sel = selectors.DefaultSelector()
    deadline = time.monotonic() + args.timeout
    t0 = time.monotonic()
    login = (args.login, args.passcode) if args.login else None
    conns = open_all(args.addr, args.count, sel, deadline, login)
    took = time.monotonic() - t0
    if args.subscribe:
        for c in conns:
            q = "/queue/%s.%d" % (args.prefix, c.index % args.queues)
            c.out += frame("SUBSCRIBE", [("id", "s"), ("destination", q),
                                         ("ack", "client-individual"), ("receipt", "sub")])
        send_all(sel, conns, deadline)
        pump_until(sel, conns, lambda: all(c.receipts >= 1 for c in conns), deadline,
                   "every SUBSCRIBE's receipt")
    report(args.ready_file, "ready %d %.3f" % (len(conns), took))
    # Hold the connections (idle) until told otherwise through the hold file.
    hold_deadline = time.monotonic() + args.hold_timeout
    while os.path.exists(args.hold_file):
        if time.monotonic() > hold_deadline:
            raise SystemExit("hold timeout: nobody removed %s" % args.hold_file)
        content = open(args.hold_file).read().strip()
        if args.subscribe and content == "deliver":
            t1 = time.monotonic()
            pump_until(sel, conns, lambda: all(len(c.messages) >= 1 for c in conns),
                       time.monotonic() + args.timeout, "one MESSAGE on every connection")
            # Nothing more than one each may arrive: give stragglers no chance to hide.
            extra = sum(len(c.messages) - 1 for c in conns)
            report(args.ready_file, "delivered %d %.3f extra %d" % (
                sum(len(c.messages) for c in conns), time.monotonic() - t1, extra))
            with open(args.hold_file, "w") as fh:
                fh.write("delivered\n")
        # Idle: drain anything the broker sends (nothing is expected), without busy-waiting.
        for key, mask in sel.select(timeout=0.2):
            c = key.data
            if mask & selectors.EVENT_READ:
                data = c.sock.recv(65536)
                if not data:
                    raise SystemExit("connection %d closed by the broker while idle" % c.index)
                c.inbuf += data
    for c in conns:
        c.sock.close()


def report(path, line):
    print(line, flush=True)
    if path:
        with open(path, "a") as fh:
            fh.write(line + "\n")


def cmd_destinations(args):
    """Creates COUNT queues (a SUBSCRIBE, then an UNSUBSCRIBE each) over a few connections."""
    sel = selectors.DefaultSelector()
    deadline = time.monotonic() + args.timeout
    login = (args.login, args.passcode) if args.login else None
    conns = open_all(args.addr, args.connections, sel, deadline, login)
    t0 = time.monotonic()
    per_round = 1000
    created = 0
    while created < args.count:
        n = min(per_round, args.count - created)
        last = {}
        for k in range(n):
            i = created + k
            last[i % len(conns)] = i
        for k in range(n):
            i = created + k
            ci = i % len(conns)
            c = conns[ci]
            q = "/queue/%s.%d" % (args.prefix, i)
            sid = "d%d" % i
            c.out += frame("SUBSCRIBE", [("id", sid), ("destination", q)])
            # The last UNSUBSCRIBE of the round on each connection asks for a receipt: when it
            # comes, the broker has handled everything before it on that connection.
            extra = [("receipt", "r%d" % i)] if last[ci] == i else []
            c.out += frame("UNSUBSCRIBE", [("id", sid)] + extra)
        want = {id(conns[ci]): conns[ci].receipts + 1 for ci in last}
        send_all(sel, conns, deadline)
        pump_until(sel, conns, lambda: all(c.receipts >= want.get(id(c), 0) for c in conns),
                   deadline, "round receipts")
        created += n
    report(args.ready_file, "destinations %d %.3f" % (created, time.monotonic() - t0))
    for c in conns:
        c.sock.close()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("connect")
    c.add_argument("--addr", required=True)
    c.add_argument("--count", type=int, required=True)
    c.add_argument("--hold-file", required=True)
    c.add_argument("--ready-file")
    c.add_argument("--subscribe", action="store_true")
    c.add_argument("--queues", type=int, default=100)
    c.add_argument("--prefix", default="scale")
    c.add_argument("--timeout", type=float, default=120)
    c.add_argument("--hold-timeout", type=float, default=1800)
    c.add_argument("--login")
    c.add_argument("--passcode", default="")
    d = sub.add_parser("destinations")
    d.add_argument("--addr", required=True)
    d.add_argument("--count", type=int, required=True)
    d.add_argument("--connections", type=int, default=4)
    d.add_argument("--prefix", default="dest")
    d.add_argument("--ready-file")
    d.add_argument("--timeout", type=float, default=600)
    d.add_argument("--login")
    d.add_argument("--passcode", default="")
    args = p.parse_args()
    if args.cmd == "connect":
        cmd_connect(args)
    else:
        cmd_destinations(args)


if __name__ == "__main__":
    sys.exit(main())
