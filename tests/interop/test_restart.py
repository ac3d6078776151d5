"""Persistence across a broker restart, through stomp.py.

These run against the store backend named by `FERROMQ_INTEROP_PERSISTENT_BACKEND` (for example
`journal`), with its files in the broker's `data_dir`. Without that variable they are skipped:
the default `memory` store keeps nothing across a restart by design.
"""

import os

import pytest

from conftest import unique

BACKEND = os.environ.get("FERROMQ_INTEROP_PERSISTENT_BACKEND", "")

pytestmark = pytest.mark.skipif(
    not BACKEND,
    reason="FERROMQ_INTEROP_PERSISTENT_BACKEND is unset: name a persistent store backend "
    "(e.g. journal) to run the restart tests",
)

DLQ = "/queue/ActiveMQ.DLQ"


@pytest.fixture
def durable_broker(broker_factory):
    return broker_factory({"store": {"backend": BACKEND, "sync": "always"}})


@pytest.mark.parametrize("graceful", [True, False], ids=["sigterm", "sigkill"])
def test_persistent_queue_messages_survive_a_restart_and_non_persistent_do_not(
    durable_broker, clients, graceful
):
    q = f"/queue/{unique()}"
    p = clients(durable_broker.port, "1.2")
    for i in range(5):
        p.send(q, f"keep-{i}".encode(), persistent="true", **{"x-seq": str(i)})
    p.send(q, b"volatile")
    p.close_quietly()
    # With sync=always a RECEIPT means the message is on disk, so even SIGKILL keeps it.
    durable_broker.restart(graceful=graceful)
    c = clients(durable_broker.port, "1.2")
    c.subscribe(q)
    got = c.wait_messages(5)
    assert [m.body for m in got] == [f"keep-{i}".encode() for i in range(5)]
    assert [m.headers.get("x-seq") for m in got] == [str(i) for i in range(5)]
    assert all(m.headers.get("persistent") == "true" for m in got)
    c.assert_no_message()


def test_acked_messages_do_not_come_back_after_a_restart(durable_broker, clients):
    q = f"/queue/{unique()}"
    p = clients(durable_broker.port, "1.2")
    for i in range(4):
        p.send(q, f"m{i}".encode(), persistent="true")
    c = clients(durable_broker.port, "1.2")
    c.subscribe(q, ack="client-individual")
    got = c.wait_messages(4)
    c.ack(got[0])
    c.ack(got[2])
    durable_broker.restart(graceful=False)
    again = clients(durable_broker.port, "1.2")
    again.subscribe(q)
    assert [m.body for m in again.wait_messages(2)] == [b"m1", b"m3"]
    again.assert_no_message()


def test_priority_order_survives_a_restart(durable_broker, clients):
    q = f"/queue/{unique()}"
    p = clients(durable_broker.port, "1.2")
    p.send(q, b"low", persistent="true", priority="1")
    p.send(q, b"high", persistent="true", priority="9")
    durable_broker.restart()
    c = clients(durable_broker.port, "1.2")
    c.subscribe(q)
    assert [m.body for m in c.wait_messages(2)] == [b"high", b"low"]


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2"])
def test_durable_subscription_and_its_messages_survive_a_restart(durable_broker, clients, version):
    t = f"/topic/{unique('t')}"
    cid, name = unique("client"), "audit"
    sub = clients(durable_broker.port, version, **{"client-id": cid})
    sub.subscribe(t, sub_id="d", **{"activemq.subscriptionName": name})
    sub.disconnect()
    p = clients(durable_broker.port, version)
    for i in range(3):
        p.send(t, f"away-{i}".encode(), persistent="true")
    p.close_quietly()
    durable_broker.restart()
    # Published after the restart: the subscription itself must have survived to catch it.
    clients(durable_broker.port, version).send(t, b"after-restart", persistent="true")
    back = clients(durable_broker.port, version, **{"client-id": cid})
    back.subscribe(t, sub_id="d", **{"activemq.subscriptionName": name})
    got = back.wait_messages(4)
    assert [m.body for m in got] == [b"away-0", b"away-1", b"away-2", b"after-restart"]
    back.assert_no_message()


def test_removed_durable_subscription_stays_removed_after_a_restart(durable_broker, clients):
    t = f"/topic/{unique('t')}"
    cid, name = unique("client"), "gone"
    sub = clients(durable_broker.port, "1.2", **{"client-id": cid})
    sub.subscribe(t, sub_id="d", **{"activemq.subscriptionName": name})
    sub.unsubscribe("d", **{"activemq.subscriptionName": name})
    sub.disconnect()
    durable_broker.restart()
    clients(durable_broker.port, "1.2").send(t, b"nobody", persistent="true")
    back = clients(durable_broker.port, "1.2", **{"client-id": cid})
    back.subscribe(t, sub_id="d", **{"activemq.subscriptionName": name})
    back.assert_no_message()


def test_dead_lettered_message_is_still_in_the_dlq_after_a_restart(broker_factory, clients):
    b = broker_factory(
        {"store": {"backend": BACKEND, "sync": "always"}, "policy": {"maximum_redeliveries": 0}}
    )
    name = unique()
    q = f"/queue/{name}"
    p = clients(b.port, "1.2")
    p.send(q, b"poison", persistent="true")
    c = clients(b.port, "1.2")
    c.subscribe(q, ack="client-individual")
    c.nack(c.take_messages(1)[0])
    c.sync()
    b.restart()
    dlq = clients(b.port, "1.2")
    dlq.subscribe(DLQ)
    dead = dlq.wait_messages(1)[0]
    assert dead.body == b"poison"
    assert dead.headers.get("originalDestination") == f"queue://{name}", dead.headers
    again = clients(b.port, "1.2")
    again.subscribe(q)
    again.assert_no_message()


def test_committed_transaction_survives_a_restart_and_an_open_one_does_not(durable_broker, clients):
    q = f"/queue/{unique()}"
    p = clients(durable_broker.port, "1.2")
    p.conn.begin("committed")
    p.send(q, b"committed", transaction="committed", persistent="true")
    p.conn.commit("committed", headers={"receipt": "c"})
    p.wait_receipt("c")
    p.conn.begin("open")
    p.send(q, b"open", transaction="open", persistent="true")
    durable_broker.restart(graceful=False)
    c = clients(durable_broker.port, "1.2")
    c.subscribe(q)
    assert c.wait_messages(1)[0].body == b"committed"
    c.assert_no_message()
