"""Wire-format details that real clients rely on: CRLF line endings, repeated headers, heart-beat
EOLs between frames, and no header escaping on CONNECT."""

import pytest

from conftest import unique


def test_crlf_line_endings_are_accepted_in_stomp_1_2(broker, raw):
    q = f"/queue/{unique()}"
    rc = raw(broker.port)
    rc.send(b"CONNECT\r\naccept-version:1.2\r\nhost:localhost\r\n\r\n\x00")
    assert rc.read_frame().command == "CONNECTED"
    rc.send(f"SUBSCRIBE\r\nid:s\r\ndestination:{q}\r\n\r\n\x00".encode())
    rc.send(f"SEND\r\ndestination:{q}\r\nx-h:v\r\n\r\ncrlf body\x00".encode())
    m = rc.read_frame()
    assert m.command == "MESSAGE", m
    assert m.headers.get("x-h") == "v", m
    assert m.body == b"crlf body"


def test_repeated_header_first_value_wins(broker, raw):
    q = f"/queue/{unique()}"
    rc = raw(broker.port)
    rc.connect()
    rc.send_frame("SUBSCRIBE", [("id", "s"), ("destination", q)])
    rc.send_frame("SEND", [("destination", q), ("x-h", "first"), ("x-h", "second")], b"b")
    m = rc.read_frame()
    assert m.headers.get("x-h") == "first", m


def test_heartbeat_eols_between_frames_are_ignored(broker, raw):
    q = f"/queue/{unique()}"
    rc = raw(broker.port)
    rc.send(b"\n\r\n\nCONNECT\naccept-version:1.2\nhost:localhost\n\n\x00\n\n")
    assert rc.read_frame().command == "CONNECTED"
    rc.send(b"\n" + rc.frame("SUBSCRIBE", [("id", "s"), ("destination", q)]) + b"\n\r\n")
    rc.send(rc.frame("SEND", [("destination", q), ("receipt", "r")], b"x") + b"\n")
    frames = [rc.read_frame(), rc.read_frame()]
    assert sorted(f.command for f in frames) == ["MESSAGE", "RECEIPT"], frames


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_connect_headers_are_not_unescaped(broker_factory, clients, version):
    """A login with a backslash and a passcode with a colon are taken literally on CONNECT."""
    b = broker_factory({"security": {"plaintext_passwords": True, "users": [{"username": "dom\\user", "password": "p:ss\\n"}]}})
    c = clients(b.port, version, login="dom\\user", passcode="p:ss\\n")
    assert c.connected_frame is not None


def test_message_frame_headers_are_escaped_for_stomp_1_2_readers(broker, raw):
    q = f"/queue/{unique()}"
    rc = raw(broker.port)
    rc.connect()
    rc.send_frame("SUBSCRIBE", [("id", "s"), ("destination", q)])
    rc.send_frame("SEND", [("destination", q), ("x-h", "a\\cb\\nc\\\\d")], b"b")
    m = rc.read_frame()
    # The raw reader does not unescape: the broker must send the escaped form back.
    assert m.headers.get("x-h") == "a\\cb\\nc\\\\d", m


def test_stomp_1_0_header_values_are_taken_literally(broker, raw):
    q = f"/queue/{unique()}"
    rc = raw(broker.port)
    rc.connect(version="1.0")
    rc.send_frame("SUBSCRIBE", [("id", "s"), ("destination", q)])
    rc.send_frame("SEND", [("destination", q), ("x-h", "a\\cb:c")], b"b")
    m = rc.read_frame()
    assert m.headers.get("x-h") == "a\\cb:c", m
