"""Ack modes, NACK, redelivery and the dead-letter queue, through stomp.py."""

import pytest

from conftest import VERSIONS, unique

DLQ = "/queue/ActiveMQ.DLQ"


def _fill(clients, port, q, n, version="1.2", **headers):
    p = clients(port, version)
    for i in range(n):
        p.send(q, f"m{i}".encode(), **headers)
    return p


@pytest.mark.parametrize("version", VERSIONS)
def test_auto_ack_messages_are_gone_once_delivered(broker, clients, version):
    q = f"/queue/{unique()}"
    _fill(clients, broker.port, q, 3)
    first = clients(broker.port, version)
    first.subscribe(q, ack="auto")
    assert len(first.wait_messages(3)) == 3
    first.drop()
    second = clients(broker.port, version)
    second.subscribe(q)
    second.assert_no_message()


@pytest.mark.parametrize("version", VERSIONS)
def test_client_ack_is_cumulative(broker, clients, version):
    q = f"/queue/{unique()}"
    _fill(clients, broker.port, q, 4)
    first = clients(broker.port, version)
    first.subscribe(q, ack="client")
    got = first.wait_messages(4)
    first.ack(got[2])  # covers m0, m1 and m2
    first.drop()
    second = clients(broker.port, version)
    second.subscribe(q)
    m = second.wait_messages(1)[0]
    assert m.body == b"m3"
    assert m.headers.get("redelivered") == "true", m.headers
    second.assert_no_message()


@pytest.mark.parametrize("version", VERSIONS)
def test_client_individual_ack_covers_only_the_acked_message(broker, clients, version):
    q = f"/queue/{unique()}"
    _fill(clients, broker.port, q, 4)
    first = clients(broker.port, version)
    first.subscribe(q, ack="client-individual")
    got = first.wait_messages(4)
    first.ack(got[1])
    first.ack(got[3])
    first.drop()
    second = clients(broker.port, version)
    second.subscribe(q)
    again = second.wait_messages(2)
    assert [m.body for m in again] == [b"m0", b"m2"]
    assert all(m.headers.get("redelivered") == "true" for m in again), [m.headers for m in again]
    second.assert_no_message()


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("how", ["drop-socket", "disconnect"])
def test_unacked_message_is_redelivered_to_another_consumer_when_its_consumer_leaves(
    broker, clients, version, how
):
    q = f"/queue/{unique()}"
    _fill(clients, broker.port, q, 1)
    first = clients(broker.port, version)
    first.subscribe(q, ack="client-individual")
    m = first.wait_messages(1)[0]
    assert m.headers.get("redelivered") == "false"
    waiting = clients(broker.port, version)
    waiting.subscribe(q)
    waiting.assert_no_message()  # the message is held by `first`
    if how == "drop-socket":
        first.drop()
    else:
        first.disconnect()
    again = waiting.wait_messages(1)[0]
    assert again.body == b"m0"
    assert again.headers.get("message-id") == m.headers.get("message-id")
    assert again.headers.get("redelivered") == "true", again.headers


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_nack_redelivers_with_redelivered_true(broker, clients, version):
    q = f"/queue/{unique()}"
    _fill(clients, broker.port, q, 1)
    c = clients(broker.port, version)
    c.subscribe(q, ack="client-individual")
    m = c.take_messages(1)[0]
    assert m.headers.get("redelivered") == "false"
    c.nack(m)
    again = c.take_messages(1)[0]
    assert again.body == b"m0"
    assert again.headers.get("redelivered") == "true", again.headers
    c.ack(again)
    c.assert_no_message()


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_nack_past_maximum_redeliveries_moves_the_message_to_the_dlq(broker_factory, clients, version):
    b = broker_factory({"policy": {"maximum_redeliveries": 6}})
    name = unique()
    q = f"/queue/{name}"
    _fill(clients, b.port, q, 1, persistent="true", **{"x-order": "17"})
    c = clients(b.port, version)
    c.subscribe(q, ack="client-individual")
    deliveries = 0
    # One delivery plus maximumRedeliveries (6) redeliveries; the 7th NACK dead-letters it.
    for _ in range(7):
        m = c.take_messages(1)[0]
        deliveries += 1
        assert m.body == b"m0"
        assert m.headers.get("redelivered") == ("false" if deliveries == 1 else "true"), m.headers
        c.nack(m)
    assert deliveries == 7
    c.assert_no_message()
    dlq = clients(b.port, version)
    dlq.subscribe(DLQ)
    dead = dlq.wait_messages(1)[0]
    assert dead.body == b"m0"
    assert dead.headers.get("x-order") == "17", dead.headers
    assert dead.headers.get("persistent") == "true", dead.headers
    assert "maximumRedeliveries=6" in dead.headers.get("dlqDeliveryFailureCause", ""), dead.headers
    assert dead.headers.get("originalDestination") == f"queue://{name}", dead.headers


def test_maximum_redeliveries_is_configurable(broker_factory, clients):
    b = broker_factory({"policy": {"maximum_redeliveries": 1}})
    q = f"/queue/{unique()}"
    _fill(clients, b.port, q, 1, persistent="true")
    c = clients(b.port, "1.2")
    c.subscribe(q, ack="client-individual")
    c.nack(c.take_messages(1)[0])
    c.nack(c.take_messages(1)[0])
    c.assert_no_message()
    dlq = clients(b.port, "1.2")
    dlq.subscribe(DLQ)
    dead = dlq.wait_messages(1)[0]
    assert "maximumRedeliveries=1" in dead.headers.get("dlqDeliveryFailureCause", ""), dead.headers


def test_redeliveries_by_disconnect_also_count_towards_the_dlq(broker_factory, clients):
    b = broker_factory({"policy": {"maximum_redeliveries": 2}})
    q = f"/queue/{unique()}"
    _fill(clients, b.port, q, 1, persistent="true")
    for attempt in range(3):
        c = clients(b.port, "1.2")
        c.subscribe(q, ack="client-individual")
        m = c.wait_messages(1)[0]
        assert m.headers.get("redelivered") == ("false" if attempt == 0 else "true"), m.headers
        c.drop()
    dlq = clients(b.port, "1.2")
    dlq.subscribe(DLQ)
    assert dlq.wait_messages(1)[0].body == b"m0"
    last = clients(b.port, "1.2")
    last.subscribe(q)
    last.assert_no_message()


def test_poison_non_persistent_message_is_dropped_not_dead_lettered(broker_factory, clients):
    """ActiveMQ's default processNonPersistent=false."""
    b = broker_factory({"policy": {"maximum_redeliveries": 0}})
    q = f"/queue/{unique()}"
    _fill(clients, b.port, q, 1)
    c = clients(b.port, "1.2")
    c.subscribe(q, ack="client-individual")
    c.nack(c.take_messages(1)[0])
    c.assert_no_message()
    dlq = clients(b.port, "1.2")
    dlq.subscribe(DLQ)
    dlq.assert_no_message()


def test_stomp_1_0_subscription_without_id_acks_by_message_id_and_unsubscribes_by_destination(
    broker, clients
):
    """The classic ActiveMQ 1.0 app: no subscription id anywhere."""
    q = f"/queue/{unique()}"
    _fill(clients, broker.port, q, 2, version="1.0")
    c = clients(broker.port, "1.0")
    c.conn.subscribe(q, ack="client", headers={"receipt": "sub"})
    c.wait_receipt("sub")
    first, second = c.wait_messages(2)
    c.conn.ack(first.headers["message-id"], receipt="ack")
    c.wait_receipt("ack")
    c.conn.unsubscribe(destination=q, headers={"receipt": "unsub"})
    c.wait_receipt("unsub")
    assert not c.rec.errors, c.error_headers()
    other = clients(broker.port, "1.0")
    other.subscribe(q)
    again = other.wait_messages(1)[0]
    assert again.body == second.body
    other.assert_no_message()


def test_stomp_1_1_ack_by_message_id_alone_is_accepted(broker, clients, raw):
    q = f"/queue/{unique()}"
    _fill(clients, broker.port, q, 1)
    rc = raw(broker.port)
    rc.connect(version="1.1")
    rc.send_frame("SUBSCRIBE", [("id", "s"), ("destination", q), ("ack", "client-individual")])
    m = rc.read_frame()
    assert m.command == "MESSAGE", m
    rc.send_frame("ACK", [("message-id", m.headers["message-id"]), ("receipt", "a")])
    r = rc.read_frame()
    assert r.command == "RECEIPT" and r.headers.get("receipt-id") == "a", r


@pytest.mark.parametrize("version", VERSIONS)
def test_unsubscribe_returns_unacked_messages_to_the_queue(broker, clients, version):
    q = f"/queue/{unique()}"
    _fill(clients, broker.port, q, 2)
    c = clients(broker.port, version)
    sub = c.subscribe(q, ack="client-individual")
    first, _second = c.wait_messages(2)
    c.ack(first)
    c.unsubscribe(sub)
    other = clients(broker.port, version)
    other.subscribe(q)
    again = other.wait_messages(1)[0]
    assert again.body == b"m1"
    assert again.headers.get("redelivered") == "true", again.headers
    other.assert_no_message()
    c.assert_no_message()
