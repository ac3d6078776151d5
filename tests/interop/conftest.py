"""Fixtures and helpers for the third-party-client interop tests.

Every test talks to a real `ferromq serve` process (the binary named by `FERROMQ_BIN`) over a
loopback socket, through the python `stomp.py` client or a raw socket. Each test gets its own
broker, so that one test's leftovers (messages, client ids, the DLQ) cannot decide another's
outcome, and so that a broker crash is charged to the test that caused it.

Every wait is bounded: a helper that waits for something raises `AssertionError` with a message
saying what did not arrive. The only fixed-length waits are "nothing more arrives" checks
(`Client.assert_no_message`), which can give a false pass but never a false failure.
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid

import pytest
import stomp

# How long any single expected event may take before the test fails. Generous, because a
# loaded CI machine can be slow; it only costs time when a test is failing anyway.
WAIT_S = 5.0
# How long an "it does not happen" check watches. Only bounds a false pass.
QUIET_S = 0.25

VERSIONS = ["1.0", "1.1", "1.2"]
CONNECTION_CLASSES = {
    "1.0": stomp.Connection10,
    "1.1": stomp.Connection11,
    "1.2": stomp.Connection12,
}


def unique(prefix="q"):
    """A destination-name-safe unique name."""
    return f"{prefix}.{uuid.uuid4().hex[:12]}"


# --------------------------------------------------------------------------------------------
# The broker process
# --------------------------------------------------------------------------------------------


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    s = str(v).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{s}"'


def render_config(sections):
    """Renders `{section: {key: value}}` as TOML; `security.users` is a list of dicts."""
    lines = []
    for section, keys in sections.items():
        plain = {k: v for k, v in keys.items() if not isinstance(v, list)}
        lines.append(f"[{section}]")
        for k, v in plain.items():
            lines.append(f"{k} = {_toml_value(v)}")
        for k, v in keys.items():
            if isinstance(v, list):
                for item in v:
                    lines.append(f"[[{section}.{k}]]")
                    for ik, iv in item.items():
                        lines.append(f"{ik} = {_toml_value(iv)}")
        lines.append("")
    return "\n".join(lines)


class Broker:
    """One `ferromq serve` process on a free loopback port, with its own data directory."""

    def __init__(self, binary, workdir, overrides=None):
        self.binary = binary
        self.workdir = workdir
        self.data_dir = os.path.join(workdir, "data")
        os.makedirs(self.data_dir, exist_ok=True)
        self.port = _free_port()
        self.sections = {
            "broker": {"name": "interop", "data_dir": self.data_dir},
            "transports": {"stomp": f"127.0.0.1:{self.port}"},
            "store": {"backend": "memory"},
            "policy": {"maximum_redeliveries": 6},
        }
        for section, keys in (overrides or {}).items():
            self.sections.setdefault(section, {}).update(keys)
        self.config_path = os.path.join(workdir, "ferromq.toml")
        self.log_path = os.path.join(workdir, "ferromq.log")
        self.proc = None
        self.starts = 0
        self.shutdown_problem = None

    def start(self):
        with open(self.config_path, "w") as f:
            f.write(render_config(self.sections))
        self.starts += 1
        log = open(self.log_path, "a")
        log.write(f"===== start #{self.starts} =====\n")
        log.flush()
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        self.proc = subprocess.Popen(
            [self.binary, "serve", "--config", self.config_path],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        log.close()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"ferromq exited with {self.proc.returncode} during startup:\n{self.log_tail()}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.02)
        raise AssertionError(f"ferromq did not accept on port {self.port}:\n{self.log_tail()}")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, graceful=True):
        """Stops the broker: SIGTERM (a clean shutdown) or SIGKILL (a crash)."""
        if self.proc is None:
            return None
        self.shutdown_problem = None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM if graceful else signal.SIGKILL)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.shutdown_problem = "did not exit within 10 s of SIGTERM"
                self.proc.kill()
                self.proc.wait(timeout=10)
            if graceful and self.shutdown_problem is None and self.proc.returncode != 0:
                self.shutdown_problem = f"exited with {self.proc.returncode} on SIGTERM"
        rc = self.proc.returncode
        self.proc = None
        return rc

    def restart(self, graceful=True):
        """Stops the broker and starts it again on the same port, config and data directory."""
        self.stop(graceful=graceful)
        if self.shutdown_problem:
            raise AssertionError(f"broker {self.shutdown_problem}:\n{self.log_tail()}")
        return self.start()

    def log_tail(self, n=60):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return "(no log)"


def _binary():
    path = os.environ.get("FERROMQ_BIN")
    if not path:
        pytest.fail(
            "FERROMQ_BIN is not set: point it at a built ferromq binary, e.g. "
            "FERROMQ_BIN=target/debug/ferromq",
            pytrace=False,
        )
    if not os.access(path, os.X_OK):
        pytest.fail(f"FERROMQ_BIN={path} is not an executable file", pytrace=False)
    return path


@pytest.fixture
def broker_factory():
    """Starts brokers with config overrides, `{section: {key: value}}`; stops them at the end.

    A broker that died during the test (rather than by the test's own `stop`), or that does not
    exit cleanly on SIGTERM at the end, fails the test.
    """
    binary = _binary()
    started = []
    dirs = []

    def make(overrides=None, start=True):
        d = tempfile.mkdtemp(prefix="ferromq-interop-")
        dirs.append(d)
        b = Broker(binary, d, overrides)
        started.append(b)
        return b.start() if start else b

    yield make

    crashed = []
    for b in started:
        if b.proc is not None and b.proc.poll() is not None:
            crashed.append(f"broker on port {b.port} exited with {b.proc.returncode}:\n{b.log_tail()}")
        b.stop(graceful=True)
        if b.shutdown_problem:
            crashed.append(f"broker on port {b.port} {b.shutdown_problem}:\n{b.log_tail()}")
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)
    if crashed:
        pytest.fail("\n".join(crashed), pytrace=False)


@pytest.fixture
def broker(broker_factory):
    """A broker with the default interop configuration (memory store, maximumRedeliveries 6)."""
    return broker_factory()


# --------------------------------------------------------------------------------------------
# stomp.py clients
# --------------------------------------------------------------------------------------------


class Recorder(stomp.ConnectionListener):
    """Records everything a stomp.py connection receives, with bounded waits on it."""

    def __init__(self):
        self.cond = threading.Condition()
        self.messages = []
        self.errors = []
        self.receipts = []
        self.connected_frames = []
        self.heartbeats = 0
        self.heartbeat_timeouts = 0
        self.disconnected = False

    def _add(self, attr, value):
        with self.cond:
            getattr(self, attr).append(value)
            self.cond.notify_all()

    def on_connected(self, frame):
        self._add("connected_frames", frame)

    def on_message(self, frame):
        self._add("messages", frame)

    def on_error(self, frame):
        self._add("errors", frame)

    def on_receipt(self, frame):
        self._add("receipts", frame.headers.get("receipt-id"))

    def on_heartbeat(self):
        with self.cond:
            self.heartbeats += 1
            self.cond.notify_all()

    def on_heartbeat_timeout(self):
        with self.cond:
            self.heartbeat_timeouts += 1
            self.cond.notify_all()

    def on_disconnected(self):
        with self.cond:
            self.disconnected = True
            self.cond.notify_all()

    def wait_until(self, predicate, what, timeout=WAIT_S):
        with self.cond:
            if not self.cond.wait_for(predicate, timeout=timeout):
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Client:
    """A stomp.py connection plus its recorder, with version-aware ack/nack helpers.

    Bodies are bytes (`auto_decode=False`), so binary payloads survive unchanged.
    """

    def __init__(self, port, version, heartbeats=(0, 0)):
        self.version = version
        cls = CONNECTION_CLASSES[version]
        kwargs = dict(
            host_and_ports=[("127.0.0.1", port)],
            reconnect_attempts_max=1,
            auto_decode=False,
        )
        if version != "1.0":
            kwargs["heartbeats"] = heartbeats
        self.conn = cls(**kwargs)
        self.rec = Recorder()
        self.conn.set_listener("recorder", self.rec)
        self._next = 0
        self.connected_frame = None

    def _id(self, prefix):
        self._next += 1
        return f"{prefix}-{self._next}"

    # --- lifecycle

    def connect(self, login=None, passcode=None, wait=True, **headers):
        self.conn.connect(login, passcode, wait=False, headers=headers)
        if wait:
            self.rec.wait_until(
                lambda: self.rec.connected_frames or self.rec.errors or self.rec.disconnected,
                "CONNECTED",
            )
            if not self.rec.connected_frames:
                detail = self.rec.errors[0].headers if self.rec.errors else "connection closed"
                raise AssertionError(f"CONNECT refused: {detail}")
            self.connected_frame = self.rec.connected_frames[0]
        return self

    def disconnect(self):
        """DISCONNECT with a receipt and wait for it; returns once the broker confirmed."""
        rid = self._id("disconnect")
        # Not `conn.disconnect(receipt=...)`: that blocks without a bound if no RECEIPT comes.
        self.conn.set_receipt(rid, "DISCONNECT")
        self.conn.send_frame("DISCONNECT", {"receipt": rid})
        self.wait_receipt(rid)
        self.rec.wait_until(lambda: self.rec.disconnected, "the socket to close after DISCONNECT")

    def drop(self):
        """Closes the socket without DISCONNECT (a crashed or vanished client)."""
        try:
            self.conn.transport.disconnect_socket()
        except Exception:
            pass
        self.rec.wait_until(lambda: self.rec.disconnected, "the client socket to close")

    def close_quietly(self):
        try:
            if self.conn.is_connected():
                self.conn.transport.disconnect_socket()
        except Exception:
            pass

    # --- frames

    def wait_receipt(self, rid, timeout=WAIT_S):
        self.rec.wait_until(
            lambda: rid in self.rec.receipts or self.rec.errors,
            f"RECEIPT {rid}",
            timeout,
        )
        assert rid in self.rec.receipts, f"got ERROR instead of RECEIPT {rid}: {self.error_headers()}"

    def error_headers(self):
        return [e.headers for e in self.rec.errors]

    def sync(self):
        """A round trip: once it returns, the broker has handled every frame sent before it."""
        tx = self._id("sync")
        rid = self._id("sync-receipt")
        self.conn.begin(tx)
        self.conn.abort(tx, headers={"receipt": rid})
        self.wait_receipt(rid)

    def send(self, destination, body=b"", receipt=True, **headers):
        """SENDs; with `receipt`, waits for the broker to confirm (stored, if persistent)."""
        if receipt:
            rid = self._id("send")
            headers["receipt"] = rid
        self.conn.send(destination, body, headers=headers)
        if receipt:
            self.wait_receipt(rid)

    def subscribe(self, destination, sub_id=None, ack="auto", receipt=True, **headers):
        sub_id = sub_id or self._id("sub")
        if receipt:
            rid = self._id("subscribe")
            headers["receipt"] = rid
        if self.version == "1.0":
            self.conn.subscribe(destination, id=sub_id, ack=ack, headers=headers)
        else:
            self.conn.subscribe(destination, sub_id, ack=ack, headers=headers)
        if receipt:
            self.wait_receipt(rid)
        return sub_id

    def unsubscribe(self, sub_id, receipt=True, **headers):
        if receipt:
            rid = self._id("unsubscribe")
            headers["receipt"] = rid
        if self.version == "1.0":
            self.conn.unsubscribe(id=sub_id, headers=headers)
        else:
            self.conn.unsubscribe(sub_id, headers=headers)
        if receipt:
            self.wait_receipt(rid)

    def ack(self, msg, transaction=None, receipt=True):
        """ACKs `msg` the way its version names a delivery (1.2: `ack`; 1.1: message-id +
        subscription; 1.0: message-id)."""
        rid = self._id("ack") if receipt else None
        h = msg.headers
        if self.version == "1.2":
            self.conn.ack(h["ack"], transaction=transaction, receipt=rid)
        elif self.version == "1.1":
            self.conn.ack(h["message-id"], h["subscription"], transaction=transaction, receipt=rid)
        else:
            self.conn.ack(h["message-id"], transaction=transaction, receipt=rid)
        if rid:
            self.wait_receipt(rid)

    def nack(self, msg, receipt=True):
        assert self.version != "1.0", "NACK is not part of STOMP 1.0"
        rid = self._id("nack") if receipt else None
        h = msg.headers
        if self.version == "1.2":
            self.conn.nack(h["ack"], receipt=rid)
        else:
            self.conn.nack(h["message-id"], h["subscription"], receipt=rid)
        if rid:
            self.wait_receipt(rid)

    # --- what arrived

    def wait_messages(self, n, timeout=WAIT_S):
        """Waits until at least `n` MESSAGE frames have arrived in total; returns the first `n`."""
        self.rec.wait_until(
            lambda: len(self.rec.messages) >= n,
            f"{n} MESSAGE frame(s) (got {len(self.rec.messages)}: "
            f"{[m.body[:40] for m in self.rec.messages]})",
            timeout,
        )
        return list(self.rec.messages[:n])

    def take_messages(self, n, timeout=WAIT_S):
        """Waits for `n` messages and removes them from the record."""
        got = self.wait_messages(n, timeout)
        with self.rec.cond:
            del self.rec.messages[:n]
        return got

    def bodies(self):
        with self.rec.cond:
            return [m.body for m in self.rec.messages]

    def assert_no_message(self, quiet_s=QUIET_S):
        """Asserts nothing (more) arrives; round-trips first so that in-flight frames land."""
        before = len(self.rec.messages)
        self.sync()
        time.sleep(quiet_s)
        with self.rec.cond:
            extra = self.rec.messages[before:]
        assert not extra, f"unexpected MESSAGE(s): {[(m.headers, m.body[:60]) for m in extra]}"

    def wait_error(self, timeout=WAIT_S):
        self.rec.wait_until(lambda: self.rec.errors, "an ERROR frame", timeout)
        return self.rec.errors[0]

    def wait_closed(self, timeout=WAIT_S):
        self.rec.wait_until(lambda: self.rec.disconnected, "the broker to close the connection", timeout)


@pytest.fixture
def clients():
    """Makes stomp.py clients: `clients(port, version, heartbeats=...)`, closed at the end."""
    made = []

    def make(port, version="1.2", connect=True, heartbeats=(0, 0), **connect_headers):
        c = Client(port, version, heartbeats=heartbeats)
        made.append(c)
        if connect:
            c.connect(**connect_headers)
        return c

    yield make
    for c in made:
        c.close_quietly()


# --------------------------------------------------------------------------------------------
# Raw sockets, for what a well-behaved client library will not send
# --------------------------------------------------------------------------------------------


class RawFrame:
    def __init__(self, command, headers, body):
        self.command = command
        self.headers = headers
        self.body = body

    def __repr__(self):
        return f"RawFrame({self.command!r}, {self.headers!r}, {self.body[:80]!r})"


class RawClient:
    """A plain TCP socket speaking hand-written STOMP, with a small frame reader (no header
    unescaping: the tests using it look at ERROR frames and CONNECTED only)."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
        self.buf = b""
        self.closed = False

    def send(self, data):
        self.sock.sendall(data)

    def frame(self, command, headers=(), body=b""):
        out = command.encode() + b"\n"
        for k, v in headers:
            out += f"{k}:{v}\n".encode()
        return out + b"\n" + body + b"\x00"

    def send_frame(self, command, headers=(), body=b""):
        self.send(self.frame(command, headers, body))

    def connect(self, version="1.2", **extra):
        headers = [("accept-version", version), ("host", "localhost")] + list(extra.items())
        self.send_frame("CONNECT", headers)
        f = self.read_frame()
        assert f.command == "CONNECTED", f"expected CONNECTED, got {f}"
        return f

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"timed out reading from the broker (buffered: {self.buf[:200]!r})")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise AssertionError(f"timed out reading from the broker (buffered: {self.buf[:200]!r})")
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.closed = True
        self.buf += chunk
        return chunk

    def read_frame(self, timeout=WAIT_S):
        """Reads the next frame (skipping heart-beat EOLs); AssertionError on timeout or EOF."""
        deadline = time.monotonic() + timeout
        while True:
            self.buf = self.buf.lstrip(b"\r\n")
            head_end = self.buf.find(b"\n\n")
            if head_end >= 0:
                head = self.buf[:head_end].decode(errors="replace").replace("\r", "")
                lines = head.split("\n")
                headers = {}
                for line in lines[1:]:
                    k, _, v = line.partition(":")
                    headers.setdefault(k, v)
                start = head_end + 2
                if "content-length" in headers:
                    end = start + int(headers["content-length"])
                    if len(self.buf) > end:
                        body = self.buf[start:end]
                        self.buf = self.buf[end + 1 :]
                        return RawFrame(lines[0], headers, body)
                else:
                    nul = self.buf.find(b"\x00", start)
                    if nul >= 0:
                        body = self.buf[start:nul]
                        self.buf = self.buf[nul + 1 :]
                        return RawFrame(lines[0], headers, body)
            if self.closed:
                raise AssertionError(f"connection closed before a whole frame (buffered: {self.buf[:200]!r})")
            self._fill(deadline)

    def expect_closed(self, timeout=WAIT_S):
        """Asserts the broker closes the connection (EOF or reset) within `timeout`; frames
        still buffered or arriving before the close are returned."""
        deadline = time.monotonic() + timeout
        frames = []
        while not self.closed:
            self._fill(deadline)
        while self.buf.strip(b"\r\n"):
            try:
                frames.append(self.read_frame(timeout=0.1))
            except AssertionError:
                break
        return frames

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


@pytest.fixture
def raw():
    """Makes raw socket clients: `raw(port)`, closed at the end."""
    made = []

    def make(port):
        c = RawClient(port)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def expect_error_then_close(rc, timeout=WAIT_S):
    """The bad-input contract: the next frame is an ERROR with a `message` header, then the
    broker closes the connection. Returns the ERROR frame."""
    f = rc.read_frame(timeout)
    assert f.command == "ERROR", f"expected ERROR, got {f}"
    assert f.headers.get("message"), f"ERROR without a message header: {f}"
    rest = rc.expect_closed(timeout)
    assert all(x.command == "ERROR" for x in rest), f"frames after ERROR: {rest}"
    return f
