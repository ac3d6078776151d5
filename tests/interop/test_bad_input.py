"""Bad input over a raw socket: each offence gets an ERROR frame with a `message` header, then the
connection is closed, and a well-behaved stomp.py client connected at the same time keeps working.
"""

import socket
import time

import pytest
import stomp.exception

from conftest import WAIT_S, RawClient, expect_error_then_close, unique

LIMITS = {"stomp": {"max_frame_bytes": 65536, "max_headers": 100, "max_header_line_bytes": 4096}}


@pytest.fixture
def limited(broker_factory):
    return broker_factory(LIMITS)


@pytest.fixture
def bystander(limited, clients):
    """A stomp.py client, subscribed to its own queue before the bad client shows up."""
    c = clients(limited.port, "1.2")
    c.queue = f"/queue/{unique('bystander')}"
    c.subscribe(c.queue)
    return c


def assert_still_works(c):
    body = f"still-working-{time.monotonic_ns()}".encode()
    c.send(c.queue, body)
    got = c.take_messages(1)
    assert got[0].body == body
    assert not c.rec.errors, c.error_headers()


def connected(raw, port, version="1.2"):
    rc = raw(port)
    rc.connect(version=version)
    return rc


# (name, needs CONNECT first, bytes to send, words the ERROR message must contain)
BEFORE_CONNECT = [
    ("garbage-bytes", b"\x01\x02\x03garbage\xff\xfe\n\n\x00", None),
    ("binary-noise", bytes(range(1, 256)) * 4, None),
    ("send-before-connect", b"SEND\ndestination:/queue/x\n\nhello\x00", "CONNECT"),
    ("subscribe-before-connect", b"SUBSCRIBE\ndestination:/queue/x\nid:1\n\n\x00", "CONNECT"),
    ("unknown-command-before-connect", b"HELLO\n\n\x00", "HELLO"),
]


@pytest.mark.parametrize("name, data, words", BEFORE_CONNECT, ids=[c[0] for c in BEFORE_CONNECT])
def test_bad_input_before_connect_gets_error_and_close(limited, bystander, raw, name, data, words):
    rc = raw(limited.port)
    rc.send(data)
    err = expect_error_then_close(rc)
    if words:
        assert words in err.headers["message"], err
    assert_still_works(bystander)


def _big_headers(n):
    return "".join(f"h{i}:v\n" for i in range(n)).encode()


AFTER_CONNECT = [
    ("garbage-after-connect", b"\x00\x01\x02\xff\xfe\n\n\x00", None),
    ("unknown-command", b"FROBNICATE\nreceipt:r\n\n\x00", "FROBNICATE"),
    ("server-frame-from-client", b"MESSAGE\ndestination:/queue/x\n\n\x00", "MESSAGE"),
    ("send-without-destination", b"SEND\ncontent-type:text/plain\n\nhello\x00", "Destination"),
    ("send-to-unknown-prefix", b"SEND\ndestination:orders\n\nhello\x00", "orders"),
    ("subscribe-without-destination", b"SUBSCRIBE\nid:1\n\n\x00", "Destination"),
    ("subscribe-without-id-in-1.2", b"SUBSCRIBE\ndestination:/queue/x\n\n\x00", "id"),
    ("invalid-selector", b"SUBSCRIBE\nid:1\ndestination:/queue/x\nselector:color = = 'red'\n\n\x00", "selector"),
    ("invalid-ack-mode", b"SUBSCRIBE\nid:1\ndestination:/queue/x\nack:sometimes\n\n\x00", "sometimes"),
    ("ack-of-unknown-id", b"ACK\nid:12345:678\n\n\x00", None),
    ("ack-of-garbage-id", b"ACK\nid:not-an-ack-id\n\n\x00", None),
    ("nack-of-unknown-id", b"NACK\nid:12345:678\n\n\x00", None),
    ("ack-without-id", b"ACK\n\n\x00", "id"),
    ("commit-of-unknown-transaction", b"COMMIT\ntransaction:nope\n\n\x00", "nope"),
    ("abort-of-unknown-transaction", b"ABORT\ntransaction:nope\n\n\x00", "nope"),
    ("begin-without-transaction", b"BEGIN\n\n\x00", "transaction"),
    ("send-in-unknown-transaction", b"SEND\ndestination:/queue/x\ntransaction:nope\n\nx\x00", "nope"),
    ("unsubscribe-unknown-id", b"UNSUBSCRIBE\nid:nope\n\n\x00", "nope"),
    ("invalid-priority", b"SEND\ndestination:/queue/x\npriority:high\n\nx\x00", "priority"),
    ("bad-content-length", b"SEND\ndestination:/queue/x\ncontent-length:abc\n\nx\x00", None),
    ("content-length-without-nul", b"SEND\ndestination:/queue/x\ncontent-length:1\n\nxy\x00", None),
    ("invalid-escape-1.2", b"SEND\ndestination:/queue/x\nh:bad\\tescape\n\nx\x00", None),
    ("too-many-headers", b"SEND\ndestination:/queue/x\n" + _big_headers(150) + b"\nx\x00", None),
    ("header-line-too-long", b"SEND\ndestination:/queue/x\nlong:" + b"v" * 8000 + b"\n\nx\x00", None),
    ("second-connect", b"CONNECT\naccept-version:1.2\nhost:localhost\n\n\x00", "connected"),
]


@pytest.mark.parametrize("name, data, words", AFTER_CONNECT, ids=[c[0] for c in AFTER_CONNECT])
def test_bad_frame_after_connect_gets_error_and_close(limited, bystander, raw, name, data, words):
    rc = connected(raw, limited.port)
    rc.send(data)
    err = expect_error_then_close(rc)
    if words:
        assert words.lower() in err.headers["message"].lower(), err
    assert_still_works(bystander)


@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_ack_of_unknown_message_id_gets_error_and_close_in_older_versions(limited, bystander, raw, version):
    rc = connected(raw, limited.port, version=version)
    rc.send_frame("ACK", [("message-id", "ID:nope-1-1"), ("subscription", "s")])
    err = expect_error_then_close(rc)
    assert "ID" in err.headers["message"], err
    assert_still_works(bystander)


def test_nack_is_refused_in_stomp_1_0(limited, bystander, raw):
    rc = connected(raw, limited.port, version="1.0")
    rc.send_frame("NACK", [("message-id", "ID:nope-1-1")])
    err = expect_error_then_close(rc)
    assert "NACK" in err.headers["message"], err
    assert_still_works(bystander)


def test_error_carries_the_receipt_id_of_the_offending_frame(limited, bystander, raw):
    rc = connected(raw, limited.port)
    rc.send_frame("SEND", [("receipt", "r-77")], b"no destination")
    err = expect_error_then_close(rc)
    assert err.headers.get("receipt-id") == "r-77", err


def test_duplicate_subscription_id_gets_error_and_close(limited, bystander, raw):
    rc = connected(raw, limited.port)
    rc.send_frame("SUBSCRIBE", [("id", "s1"), ("destination", "/queue/a")])
    rc.send_frame("SUBSCRIBE", [("id", "s1"), ("destination", "/queue/b")])
    err = expect_error_then_close(rc)
    assert "s1" in err.headers["message"], err
    assert_still_works(bystander)


def _send_ignoring_close(rc, data):
    """The broker may close while we are still sending; that is the behaviour under test."""
    try:
        rc.send(data)
    except (BrokenPipeError, ConnectionResetError):
        pass


def test_oversized_frame_with_content_length_gets_error_and_close(limited, bystander, raw):
    rc = connected(raw, limited.port)
    body = b"x" * 100_000
    _send_ignoring_close(
        rc, f"SEND\ndestination:/queue/big\ncontent-length:{len(body)}\n\n".encode() + body + b"\x00"
    )
    err = expect_error_then_close(rc)
    assert "65536" in err.headers["message"] or "large" in err.headers["message"].lower(), err
    assert_still_works(bystander)


def test_oversized_frame_without_content_length_gets_error_and_close(limited, bystander, raw):
    rc = connected(raw, limited.port)
    _send_ignoring_close(rc, b"SEND\ndestination:/queue/big\n\n" + b"y" * 100_000 + b"\x00")
    expect_error_then_close(rc)
    assert_still_works(bystander)


def test_frame_just_under_the_limit_is_accepted(limited, clients):
    c = clients(limited.port, "1.2")
    q = f"/queue/{unique()}"
    c.subscribe(q)
    body = b"z" * 60_000
    c.send(q, body)
    assert c.wait_messages(1)[0].body == body


def test_unterminated_frame_is_not_an_error_until_it_completes(limited, bystander, raw):
    """A frame split across writes is reassembled (an incomplete frame is not an error)."""
    rc = connected(raw, limited.port)
    frame = rc.frame("SEND", [("destination", bystander.queue), ("receipt", "split")], b"in pieces")
    for i in range(len(frame)):
        rc.send(frame[i : i + 1])
    f = rc.read_frame()
    assert f.command == "RECEIPT" and f.headers.get("receipt-id") == "split", f
    assert bystander.wait_messages(1)[0].body == b"in pieces"


def test_no_connect_within_the_connect_timeout_gets_error_and_close(broker_factory, raw):
    b = broker_factory({"stomp": {"connect_timeout_ms": 300}})
    rc = raw(b.port)
    err = expect_error_then_close(rc)
    assert "CONNECT" in err.headers["message"], err


def test_connection_over_the_limit_gets_error_and_close(broker_factory, clients, raw):
    b = broker_factory({"stomp": {"max_connections": 2}})

    def admitted():
        # The fixture's readiness probe (a bare TCP connect) holds a slot until the broker
        # sees it close; retry briefly rather than race it.
        # The refusal can also reach stomp.py before it sent its CONNECT (the broker closes
        # right after its ERROR): NotConnectedException, the same refusal seen earlier.
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                return clients(b.port, "1.2")
            except (AssertionError, stomp.exception.NotConnectedException) as e:
                refused = isinstance(e, stomp.exception.NotConnectedException) or (
                    "Connection limit" in str(e)
                )
                if not refused or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    first = admitted()
    second = admitted()
    third = raw(b.port)
    err = expect_error_then_close(third)
    assert "2" in err.headers["message"], err
    # The two admitted connections keep working.
    q = f"/queue/{unique()}"
    first.subscribe(q)
    second.send(q, b"fine")
    assert first.wait_messages(1)[0].body == b"fine"
    # Once one leaves, a new connection is admitted again.
    second.disconnect()
    deadline = time.monotonic() + WAIT_S
    while True:
        rc = RawClient(b.port)
        try:
            rc.send_frame("CONNECT", [("accept-version", "1.2"), ("host", "localhost")])
            f = rc.read_frame()
        except (AssertionError, OSError) as e:
            f = e
        finally:
            rc.close()
        if getattr(f, "command", None) == "CONNECTED":
            break
        assert time.monotonic() < deadline, f"no connection admitted after one left: last {f}"
        time.sleep(0.05)


def test_many_bad_clients_in_a_row_leave_the_broker_serving(limited, bystander, raw):
    for data in [b"\xff" * 64, b"NOPE\n\n\x00", b"SEND\n\nx\x00"] * 10:
        rc = raw(limited.port)
        rc.send(data)
        expect_error_then_close(rc)
    assert_still_works(bystander)


def test_half_sent_frame_then_disconnect_does_not_disturb_others(limited, bystander):
    s = socket.create_connection(("127.0.0.1", limited.port))
    s.sendall(b"CONNECT\naccept-version:1.2\nhost:x\n\n\x00SEND\ndestination:" + bystander.queue.encode())
    s.close()
    assert_still_works(bystander)
