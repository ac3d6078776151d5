"""Connecting with stomp.py: receipts, version negotiation, heart-beats, authentication."""

import pytest

from conftest import VERSIONS, expect_error_then_close, unique


@pytest.mark.parametrize("version", VERSIONS)
def test_connect_negotiates_the_requested_version_and_disconnect_gets_its_receipt(broker, clients, version):
    c = clients(broker.port, version)
    connected = c.connected_frame.headers
    assert connected.get("version") == version, connected
    assert connected.get("session"), f"CONNECTED without a session header: {connected}"
    assert connected.get("server", "").startswith("ferromq/"), connected
    c.disconnect()
    assert not c.rec.errors, c.error_headers()


@pytest.mark.parametrize(
    "accept, expected",
    [("1.0,1.1,1.2", "1.2"), ("1.1,1.0", "1.1"), ("1.0", "1.0"), ("1.2,9.9", "1.2")],
)
def test_connect_picks_the_highest_common_version(broker, raw, accept, expected):
    rc = raw(broker.port)
    f = rc.connect(version=accept)
    assert f.headers.get("version") == expected, f


def test_connect_without_accept_version_is_stomp_1_0_without_a_version_header(broker, raw):
    rc = raw(broker.port)
    rc.send_frame("CONNECT", [("login", "")])
    f = rc.read_frame()
    assert f.command == "CONNECTED", f
    assert "version" not in f.headers, f


def test_connect_with_only_unsupported_versions_gets_an_error_listing_supported_ones(broker, raw):
    rc = raw(broker.port)
    rc.send_frame("CONNECT", [("accept-version", "2.0,3.1"), ("host", "localhost")])
    err = expect_error_then_close(rc)
    assert "1.2" in err.headers.get("version", ""), err


def test_frames_before_a_disconnect_receipt_are_all_handled(broker, clients):
    """The RECEIPT of DISCONNECT comes after everything sent before it took effect."""
    q = f"/queue/{unique()}"
    producer = clients(broker.port, "1.2")
    for i in range(20):
        producer.send(q, f"m{i}".encode(), receipt=False)
    producer.disconnect()
    consumer = clients(broker.port, "1.2")
    consumer.subscribe(q)
    got = consumer.wait_messages(20)
    assert [m.body for m in got] == [f"m{i}".encode() for i in range(20)]


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_heartbeats_are_negotiated_and_keep_an_idle_connection_alive(broker_factory, clients, version):
    b = broker_factory({"stomp": {"heart_beat_min_ms": 500}})
    c = clients(b.port, version, heartbeats=(500, 500))
    hb = c.connected_frame.headers.get("heart-beat")
    assert hb == "500,500", f"CONNECTED heart-beat: {hb!r}"
    # Several heart-beat intervals with no frames at all, either way: only heart-beats flow.
    # The broker expects ours every 500 ms (times its grace), so this outlasts that many times.
    c.rec.wait_until(lambda: c.rec.heartbeats >= 5, "5 heart-beats from the broker")
    assert c.rec.heartbeat_timeouts == 0
    assert c.conn.is_connected()
    assert not c.rec.disconnected and not c.rec.errors, c.error_headers()
    q = f"/queue/{unique()}"
    c.subscribe(q)
    c.send(q, b"still here")
    assert c.wait_messages(1)[0].body == b"still here"


def test_heartbeat_offer_below_the_broker_minimum_is_raised_to_it(broker_factory, clients):
    b = broker_factory({"stomp": {"heart_beat_min_ms": 1000}})
    c = clients(b.port, "1.2", heartbeats=(200, 300))
    assert c.connected_frame.headers.get("heart-beat") == "1000,1000", c.connected_frame.headers


def test_a_client_that_promised_heartbeats_and_went_silent_is_closed(broker_factory, raw):
    b = broker_factory({"stomp": {"heart_beat_min_ms": 500}})
    silent = raw(b.port)
    f = silent.connect(version="1.2", **{"heart-beat": "500,0"})
    assert f.headers.get("heart-beat", "").split(",")[1] == "500", f
    err = expect_error_then_close(silent)
    assert "heart-beat" in err.headers["message"], err


def test_connection_without_heartbeats_negotiates_zero(broker, clients):
    c = clients(broker.port, "1.2")
    assert c.connected_frame.headers.get("heart-beat") == "0,0", c.connected_frame.headers


USERS = {"security": {"plaintext_passwords": True, "users": [{"username": "app", "password": "s3cret"}]}}


@pytest.mark.parametrize("version", VERSIONS)
def test_login_with_a_configured_user_is_accepted(broker_factory, clients, version):
    b = broker_factory(USERS)
    c = clients(b.port, version, login="app", passcode="s3cret")
    assert c.connected_frame is not None
    q = f"/queue/{unique()}"
    c.subscribe(q)
    c.send(q, b"authenticated")
    assert c.wait_messages(1)[0].body == b"authenticated"


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    "login, passcode", [("app", "wrong"), ("nobody", "s3cret"), (None, None)], ids=["bad-pass", "bad-user", "none"]
)
def test_login_rejected_gets_error_with_message_and_close(broker_factory, clients, version, login, passcode):
    b = broker_factory(USERS)
    c = clients(b.port, version, connect=False)
    c.connect(login=login, passcode=passcode, wait=False)
    err = c.wait_error()
    assert err.headers.get("message"), f"ERROR without message: {err.headers}"
    assert "invalid" in err.headers["message"].lower(), err.headers
    c.wait_closed()
    assert not c.rec.connected_frames, "CONNECTED sent for rejected credentials"


def test_rejected_login_leaves_other_clients_working(broker_factory, clients):
    b = broker_factory(USERS)
    good = clients(b.port, "1.2", login="app", passcode="s3cret")
    q = f"/queue/{unique()}"
    good.subscribe(q)
    bad = clients(b.port, "1.2", connect=False)
    bad.connect(login="app", passcode="nope", wait=False)
    bad.wait_error()
    bad.wait_closed()
    good.send(q, b"after")
    assert good.wait_messages(1)[0].body == b"after"
