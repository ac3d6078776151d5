"""Queues through stomp.py: bodies, headers, priority, expiry, competing and exclusive consumers,
prefetch."""

import time

import pytest

from conftest import VERSIONS, WAIT_S, unique


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("persistent", [False, True], ids=["non-persistent", "persistent"])
def test_queue_delivers_sent_messages_in_order_with_activemq_headers(broker, clients, version, persistent):
    q = f"/queue/{unique()}"
    producer = clients(broker.port, version)
    extra = {"persistent": "true"} if persistent else {}
    for i in range(5):
        producer.send(q, f"body-{i}".encode(), **extra)
    consumer = clients(broker.port, version)
    sub = consumer.subscribe(q, sub_id="sub-a")
    got = consumer.wait_messages(5)
    assert [m.body for m in got] == [f"body-{i}".encode() for i in range(5)]
    ids = set()
    for m in got:
        h = m.headers
        assert h["destination"] == q, h
        assert h["subscription"] == sub, h
        assert h.get("message-id"), h
        ids.add(h["message-id"])
        assert h.get("redelivered") == "false", h
        assert (h.get("persistent") == "true") == persistent, h
        if version == "1.2":
            assert h.get("ack"), f"1.2 MESSAGE without an ack header: {h}"
    assert len(ids) == 5, "message-ids are not unique"
    consumer.assert_no_message()


@pytest.mark.parametrize("version", VERSIONS)
def test_content_length_body_with_nul_bytes_and_binary_data_round_trips(broker, clients, version):
    q = f"/queue/{unique()}"
    body = b"\x00head\x00" + bytes(range(256)) * 8 + b"\x00\n\r\n\x00tail\x00"
    c = clients(broker.port, version)
    c.subscribe(q)
    c.send(q, body)
    c.send(q, b"")
    c.send(q, b"\x00")
    first, empty, nul = c.wait_messages(3)
    assert first.body == body, f"body of {len(first.body)} bytes differs from {len(body)} sent"
    assert first.headers.get("content-length") == str(len(body)), first.headers
    assert empty.body == b""
    assert nul.body == b"\x00"


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_header_values_with_colon_newline_and_backslash_round_trip_escaped(broker, clients, version):
    q = f"/queue/{unique()}"
    values = {
        "x-colon": "a:b::c",
        "x-newline": "line1\nline2",
        "x-backslash": "C:\\path\\to",
        "x-mixed": "k:v\n\\end",
        "x-unicode": "prix: 10 €",
    }
    if version == "1.2":
        values["x-cr"] = "one\rtwo"
    c = clients(broker.port, version)
    c.subscribe(q)
    c.send(q, b"escaped", **values)
    h = c.wait_messages(1)[0].headers
    for k, v in values.items():
        assert h.get(k) == v, f"{k}: sent {v!r}, got {h.get(k)!r}"


@pytest.mark.parametrize("version", VERSIONS)
def test_user_headers_correlation_id_type_reply_to_and_custom_are_preserved(broker, clients, version):
    q = f"/queue/{unique()}"
    sent = {
        "correlation-id": "corr-42",
        "type": "OrderPlaced",
        "reply-to": "/queue/replies.somewhere",
        "x-tenant": "acme",
        "JMSXGroupID": "group-1",
        "content-type": "application/json",
    }
    c = clients(broker.port, version)
    c.subscribe(q)
    c.send(q, b'{"id": 1}', **sent)
    h = c.wait_messages(1)[0].headers
    for k, v in sent.items():
        assert h.get(k) == v, f"{k}: sent {v!r}, got {h.get(k)!r}"


@pytest.mark.parametrize("version", VERSIONS)
def test_priority_higher_first_for_messages_waiting_on_a_queue(broker, clients, version):
    q = f"/queue/{unique()}"
    p = clients(broker.port, version)
    p.send(q, b"low-a", priority="1")
    p.send(q, b"default")
    p.send(q, b"low-b", priority="1")
    p.send(q, b"high", priority="9")
    p.send(q, b"mid", priority="6")
    c = clients(broker.port, version)
    c.subscribe(q)
    got = c.wait_messages(5)
    assert [m.body for m in got] == [b"high", b"mid", b"default", b"low-a", b"low-b"]
    assert [m.headers.get("priority") for m in got] == ["9", "6", "4", "1", "1"]


def _now_ms():
    return int(time.time() * 1000)


@pytest.mark.parametrize("version", VERSIONS)
def test_message_already_expired_is_never_delivered(broker, clients, version):
    q = f"/queue/{unique()}"
    p = clients(broker.port, version)
    p.send(q, b"stale", expires=str(_now_ms() - 60_000))
    p.send(q, b"fresh", expires=str(_now_ms() + 3_600_000))
    p.send(q, b"forever", expires="0")
    c = clients(broker.port, version)
    c.subscribe(q)
    got = c.wait_messages(2)
    assert [m.body for m in got] == [b"fresh", b"forever"]
    c.assert_no_message()


def test_expired_persistent_message_goes_to_the_dlq_with_its_cause(broker, clients):
    q_name = unique()
    q = f"/queue/{q_name}"
    p = clients(broker.port, "1.2")
    p.send(q, b"stale", persistent="true", expires=str(_now_ms() - 60_000), **{"x-id": "e1"})
    p.send(q, b"fresh", persistent="true")
    c = clients(broker.port, "1.2")
    c.subscribe(q)
    assert c.wait_messages(1)[0].body == b"fresh"
    dlq = clients(broker.port, "1.2")
    dlq.subscribe("/queue/ActiveMQ.DLQ")
    m = dlq.wait_messages(1)[0]
    assert m.body == b"stale"
    assert m.headers.get("x-id") == "e1"
    assert m.headers.get("dlqDeliveryFailureCause"), m.headers
    assert m.headers.get("originalDestination") == f"queue://{q_name}", m.headers
    c.assert_no_message()


def test_expired_non_persistent_message_is_dropped_not_dead_lettered(broker, clients):
    """ActiveMQ's default processNonPersistent=false: non-persistent dead messages are dropped."""
    q = f"/queue/{unique()}"
    p = clients(broker.port, "1.2")
    p.send(q, b"stale", expires=str(_now_ms() - 60_000))
    p.send(q, b"marker")
    c = clients(broker.port, "1.2")
    c.subscribe(q)
    assert c.wait_messages(1)[0].body == b"marker"
    dlq = clients(broker.port, "1.2")
    dlq.subscribe("/queue/ActiveMQ.DLQ")
    dlq.assert_no_message()


def _ack_until(consumers, total, deadline_s=WAIT_S):
    """Acks every message each consumer receives until `total` arrived across them all."""
    acked = [0] * len(consumers)
    deadline = time.monotonic() + deadline_s
    while sum(len(c.rec.messages) for c in consumers) < total:
        assert time.monotonic() < deadline, (
            f"only {sum(len(c.rec.messages) for c in consumers)} of {total} messages arrived"
        )
        progressed = False
        for i, c in enumerate(consumers):
            with c.rec.cond:
                pending = c.rec.messages[acked[i] :]
            for m in pending:
                c.ack(m, receipt=False)
                acked[i] += 1
                progressed = True
        if not progressed:
            time.sleep(0.01)


@pytest.mark.parametrize("version", VERSIONS)
def test_competing_consumers_share_a_queue_and_each_message_is_delivered_once(broker, clients, version):
    q = f"/queue/{unique()}"
    a = clients(broker.port, version)
    b = clients(broker.port, version)
    for c in (a, b):
        c.subscribe(q, ack="client-individual", **{"activemq.prefetchSize": "1"})
    p = clients(broker.port, version)
    n = 20
    for i in range(n):
        p.send(q, f"m{i}".encode())
    # Each consumer may hold one unacked message, so the first two must be split one each.
    assert len(a.wait_messages(1)) == 1 and len(b.wait_messages(1)) == 1
    _ack_until([a, b], n)
    bodies = a.bodies() + b.bodies()
    assert sorted(bodies) == sorted(f"m{i}".encode() for i in range(n)), "a message was lost or duplicated"
    a.assert_no_message()
    b.assert_no_message()


@pytest.mark.parametrize("version", VERSIONS)
def test_prefetch_one_with_client_ack_holds_the_next_message_until_the_ack(broker, clients, version):
    q = f"/queue/{unique()}"
    p = clients(broker.port, version)
    for i in range(3):
        p.send(q, f"m{i}".encode())
    c = clients(broker.port, version)
    c.subscribe(q, ack="client", **{"activemq.prefetchSize": "1"})
    first = c.take_messages(1)[0]
    assert first.body == b"m0"
    c.assert_no_message()
    c.ack(first)
    second = c.take_messages(1)[0]
    assert second.body == b"m1"
    c.assert_no_message()
    c.ack(second)
    assert c.take_messages(1)[0].body == b"m2"


def test_prefetch_one_leaves_the_rest_of_the_queue_to_another_consumer(broker, clients):
    q = f"/queue/{unique()}"
    p = clients(broker.port, "1.2")
    for i in range(4):
        p.send(q, f"m{i}".encode())
    slow = clients(broker.port, "1.2")
    slow.subscribe(q, ack="client-individual", **{"activemq.prefetchSize": "1"})
    assert slow.wait_messages(1)[0].body == b"m0"
    other = clients(broker.port, "1.2")
    other.subscribe(q)
    assert [m.body for m in other.wait_messages(3)] == [b"m1", b"m2", b"m3"]
    slow.assert_no_message()


@pytest.mark.parametrize("version", VERSIONS)
def test_exclusive_consumer_gets_every_message_until_it_leaves(broker, clients, version):
    q = f"/queue/{unique()}"
    exclusive = clients(broker.port, version)
    exclusive.subscribe(q, **{"activemq.exclusive": "true", "activemq.prefetchSize": "1"})
    backup = clients(broker.port, version)
    backup.subscribe(q, **{"activemq.exclusive": "true", "activemq.prefetchSize": "1"})
    p = clients(broker.port, version)
    for i in range(10):
        p.send(q, f"m{i}".encode())
    got = exclusive.wait_messages(10)
    assert [m.body for m in got] == [f"m{i}".encode() for i in range(10)]
    backup.assert_no_message()
    exclusive.disconnect()
    p.send(q, b"after")
    assert backup.wait_messages(1)[0].body == b"after"


def test_exclusive_consumer_wins_over_a_plain_consumer_on_the_same_queue(broker, clients):
    q = f"/queue/{unique()}"
    plain = clients(broker.port, "1.2")
    plain.subscribe(q, **{"activemq.prefetchSize": "1"})
    exclusive = clients(broker.port, "1.2")
    exclusive.subscribe(q, **{"activemq.exclusive": "true"})
    p = clients(broker.port, "1.2")
    for i in range(10):
        p.send(q, f"m{i}".encode())
    assert len(exclusive.wait_messages(10)) == 10
    plain.assert_no_message()


def test_persistent_delivery_switch_makes_every_message_persistent(broker_factory, clients):
    b = broker_factory({"broker": {"persistent_delivery": True}})
    q = f"/queue/{unique()}"
    c = clients(b.port, "1.2")
    c.subscribe(q)
    c.send(q, b"no header")
    assert c.wait_messages(1)[0].headers.get("persistent") == "true"


def test_one_producer_one_consumer_keeps_order_over_many_messages(broker, clients):
    q = f"/queue/{unique()}"
    c = clients(broker.port, "1.2")
    c.subscribe(q)
    p = clients(broker.port, "1.2")
    n = 1000
    for i in range(n):
        p.send(q, str(i).encode(), receipt=(i == n - 1), persistent="true" if i % 2 else "false")
    got = c.wait_messages(n, timeout=20)
    assert [int(m.body) for m in got] == list(range(n))


@pytest.mark.parametrize("version", ["1.0", "1.2"])
def test_multi_megabyte_message_round_trips(broker, clients, version):
    q = f"/queue/{unique()}"
    body = bytes(range(256)) * (4 * 1024 * 1024 // 256)
    c = clients(broker.port, version)
    c.subscribe(q)
    c.send(q, body, persistent="true")
    got = c.wait_messages(1, timeout=20)[0]
    assert len(got.body) == len(body) and got.body == body

