"""A third-party client through failover: a stomp.py producer with a host list of two brokers
in shared-file master/slave, whose master is killed (-9) repeatedly. The app reconnects through
its host list and resends whatever was not receipted with the same `_AMQ_DUPL_ID`; the broker's
duplicate detection makes the outcome exactly-once: every message is delivered, none twice.
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import stomp

from conftest import _binary, _free_port, render_config

MESSAGES = 300
KILLS = 3
DEADLINE_S = 90


def _accepts(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Member:
    """One broker of a shared-file group (may be a slave: no port until it is master)."""

    def __init__(self, binary, workdir, shared, port, name):
        self.binary, self.port, self.name = binary, port, name
        self.config = os.path.join(workdir, f"{name}.toml")
        self.log = os.path.join(workdir, f"{name}.log")
        with open(self.config, "w") as f:
            f.write(
                render_config(
                    {
                        "broker": {"name": "group", "data_dir": shared},
                        "transports": {"stomp": f"127.0.0.1:{port}"},
                        "store": {"backend": "journal"},
                        "ha": {"mode": "shared-file", "lock_keepalive_ms": 100},
                    }
                )
            )
        self.proc = None

    def start(self):
        log = open(self.log, "a")
        self.proc = subprocess.Popen(
            [self.binary, "serve", "--config", self.config], stdout=log, stderr=subprocess.STDOUT
        )
        log.close()

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


class Receipts(stomp.ConnectionListener):
    def __init__(self):
        self.cond = threading.Condition()
        self.receipts = set()
        self.messages = []

    def on_receipt(self, frame):
        with self.cond:
            self.receipts.add(frame.headers.get("receipt-id"))
            self.cond.notify_all()

    def on_message(self, frame):
        with self.cond:
            self.messages.append(frame)
            self.cond.notify_all()

    def on_disconnected(self):
        with self.cond:
            self.cond.notify_all()

    def wait_receipt(self, rid, conn, timeout):
        end = time.monotonic() + timeout
        with self.cond:
            while rid not in self.receipts:
                left = end - time.monotonic()
                if left <= 0 or not conn.is_connected():
                    return False
                self.cond.wait(min(left, 0.05))
            return True


def _connect(hosts, listener, deadline):
    """Connects through the host list (stomp.py tries each host), retrying until `deadline`."""
    while time.monotonic() < deadline:
        conn = stomp.Connection12(hosts, reconnect_attempts_max=1, reconnect_sleep_initial=0.01)
        conn.set_listener("r", listener)
        try:
            conn.connect(wait=True)
            if conn.is_connected():
                return conn
        except Exception:
            pass
        time.sleep(0.05)
    raise AssertionError("could not reconnect to any broker of the group before the deadline")


def test_stomp_py_producer_through_repeated_master_kills_is_exactly_once():
    binary = _binary()
    workdir = tempfile.mkdtemp(prefix="ferromq-failover-")
    shared = os.path.join(workdir, "shared")
    ports = [_free_port(), _free_port()]
    members = [Member(binary, workdir, shared, p, f"m{i}") for i, p in enumerate(ports)]
    try:
        members[0].start()
        end = time.monotonic() + 30
        while not _accepts(ports[0]):
            assert time.monotonic() < end, "first broker never became master"
            time.sleep(0.02)
        members[1].start()
        hosts = [("127.0.0.1", p) for p in ports]
        deadline = time.monotonic() + DEADLINE_S

        stop_killing = threading.Event()
        kills = []

        def killer():
            for _ in range(KILLS):
                if stop_killing.wait(0.8):
                    return
                master = next((m for m in members if _accepts(m.port)), None)
                if master is None:
                    continue
                master.kill9()
                kills.append(time.monotonic())
                master.start()  # comes back as the slave

        t = threading.Thread(target=killer, daemon=True)
        t.start()

        listener = Receipts()
        conn = _connect(hosts, listener, deadline)
        resends = 0
        for i in range(MESSAGES):
            rid = f"r-{i}"
            while True:
                assert time.monotonic() < deadline, f"message {i} never confirmed"
                try:
                    conn.send(
                        "/queue/failover.py",
                        f"m-{i}",
                        headers={"persistent": "true", "_AMQ_DUPL_ID": f"app-1:{i}", "receipt": rid},
                    )
                    if listener.wait_receipt(rid, conn, timeout=3.0):
                        break
                except Exception:
                    pass
                # Not confirmed: reconnect through the host list and resend the same message
                # with the same duplicate id.
                resends += 1
                try:
                    conn.disconnect()
                except Exception:
                    pass
                conn = _connect(hosts, listener, deadline)
            time.sleep(0.01)
        stop_killing.set()
        t.join(timeout=30)
        try:
            conn.disconnect()
        except Exception:
            pass
        assert len(kills) >= 1, "the master was never killed: the test proved nothing"

        # Drain from whoever is master now.
        consumer = Receipts()
        c = _connect(hosts, consumer, time.monotonic() + 30)
        c.subscribe("/queue/failover.py", id="d", ack="auto")
        end = time.monotonic() + 30
        while time.monotonic() < end:
            with consumer.cond:
                n = len(consumer.messages)
            if n >= MESSAGES:
                time.sleep(0.3)  # anything extra (a duplicate) would arrive now
                break
            time.sleep(0.02)
        c.disconnect()
        bodies = [m.body for m in consumer.messages]
        counts = {}
        for b in bodies:
            counts[b] = counts.get(b, 0) + 1
        missing = [f"m-{i}" for i in range(MESSAGES) if f"m-{i}" not in counts]
        dups = {b: n for b, n in counts.items() if n > 1}
        print(f"kills={len(kills)} resends={resends} delivered={len(bodies)}")
        assert not missing, f"lost {len(missing)} messages: {missing[:5]}"
        assert not dups, f"duplicates: {dups}"
    finally:
        for m in members:
            m.stop()
        shutil.rmtree(workdir, ignore_errors=True)
