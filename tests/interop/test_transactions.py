"""BEGIN / COMMIT / ABORT over sends and acks, through stomp.py."""

import pytest

from conftest import VERSIONS, unique


@pytest.mark.parametrize("version", VERSIONS)
def test_transacted_sends_are_invisible_until_commit(broker, clients, version):
    q = f"/queue/{unique()}"
    consumer = clients(broker.port, version)
    consumer.subscribe(q)
    p = clients(broker.port, version)
    tx = p.conn.begin("tx-1")
    p.send(q, b"tx-a", transaction=tx)
    p.send(q, b"tx-b", transaction=tx)
    # Same destination, later, outside the transaction: it arrives first only if the
    # transacted messages are held back.
    p.send(q, b"outside")
    assert consumer.take_messages(1)[0].body == b"outside"
    consumer.assert_no_message()
    rid = "commit-receipt"
    p.conn.commit(tx, headers={"receipt": rid})
    p.wait_receipt(rid)
    assert [m.body for m in consumer.take_messages(2)] == [b"tx-a", b"tx-b"]


@pytest.mark.parametrize("version", VERSIONS)
def test_abort_discards_transacted_sends(broker, clients, version):
    q = f"/queue/{unique()}"
    p = clients(broker.port, version)
    tx = p.conn.begin("tx-abort")
    p.send(q, b"discarded", transaction=tx, persistent="true")
    rid = "abort-receipt"
    p.conn.abort(tx, headers={"receipt": rid})
    p.wait_receipt(rid)
    p.send(q, b"kept")
    consumer = clients(broker.port, version)
    consumer.subscribe(q)
    assert consumer.take_messages(1)[0].body == b"kept"
    consumer.assert_no_message()


@pytest.mark.parametrize("version", VERSIONS)
def test_transaction_open_at_disconnect_is_rolled_back(broker, clients, version):
    q = f"/queue/{unique()}"
    p = clients(broker.port, version)
    tx = p.conn.begin("tx-dangling")
    p.send(q, b"never", transaction=tx)
    p.disconnect()
    consumer = clients(broker.port, version)
    consumer.subscribe(q)
    consumer.assert_no_message()


@pytest.mark.parametrize("version", VERSIONS)
def test_ack_in_aborted_transaction_is_undone_and_the_message_redelivered(broker, clients, version):
    q = f"/queue/{unique()}"
    p = clients(broker.port, version)
    p.send(q, b"m0")
    c = clients(broker.port, version)
    c.subscribe(q, ack="client-individual")
    m = c.take_messages(1)[0]
    tx = c.conn.begin("tx-ack")
    c.ack(m, transaction=tx)
    c.conn.abort(tx, headers={"receipt": "abort"})
    c.wait_receipt("abort")
    again = c.take_messages(1)[0]
    assert again.body == b"m0"
    assert again.headers.get("redelivered") == "true", again.headers
    c.ack(again)
    c.drop()
    other = clients(broker.port, version)
    other.subscribe(q)
    other.assert_no_message()


@pytest.mark.parametrize("version", VERSIONS)
def test_ack_in_committed_transaction_consumes_the_message(broker, clients, version):
    q = f"/queue/{unique()}"
    p = clients(broker.port, version)
    p.send(q, b"m0")
    p.send(q, b"m1")
    c = clients(broker.port, version)
    c.subscribe(q, ack="client-individual")
    first, second = c.wait_messages(2)
    tx = c.conn.begin("tx-ack")
    c.ack(first, transaction=tx)
    c.conn.commit(tx, headers={"receipt": "commit"})
    c.wait_receipt("commit")
    c.drop()
    other = clients(broker.port, version)
    other.subscribe(q)
    again = other.wait_messages(1)[0]
    assert again.body == b"m1", "only the unacked message comes back"
    other.assert_no_message()


def test_transaction_covers_sends_and_acks_together(broker, clients):
    """Consume-transform-produce: the ack of the input and the send of the output commit as one."""
    q_in = f"/queue/{unique('in')}"
    q_out = f"/queue/{unique('out')}"
    p = clients(broker.port, "1.2")
    p.send(q_in, b"order-1")
    worker = clients(broker.port, "1.2")
    worker.subscribe(q_in, ack="client-individual")
    m = worker.take_messages(1)[0]
    out = clients(broker.port, "1.2")
    out.subscribe(q_out)

    tx = worker.conn.begin("tx-1")
    worker.ack(m, transaction=tx)
    worker.send(q_out, b"invoice-1", transaction=tx)
    worker.conn.abort(tx, headers={"receipt": "abort"})
    worker.wait_receipt("abort")
    out.assert_no_message()
    m = worker.take_messages(1)[0]
    assert m.headers.get("redelivered") == "true"

    tx = worker.conn.begin("tx-2")
    worker.ack(m, transaction=tx)
    worker.send(q_out, b"invoice-1", transaction=tx)
    worker.conn.commit(tx, headers={"receipt": "commit"})
    worker.wait_receipt("commit")
    assert out.wait_messages(1)[0].body == b"invoice-1"
    worker.assert_no_message()
