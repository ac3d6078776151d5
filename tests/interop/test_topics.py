"""Topics through stomp.py: fan-out, wildcards, durable subscriptions, client ids."""

import pytest

from conftest import VERSIONS, unique


@pytest.mark.parametrize("version", VERSIONS)
def test_topic_fans_out_every_message_to_every_subscriber(broker, clients, version):
    t = f"/topic/{unique('t')}"
    subs = [clients(broker.port, version) for _ in range(3)]
    for s in subs:
        s.subscribe(t)
    p = clients(broker.port, version)
    for i in range(5):
        p.send(t, f"tick-{i}".encode())
    for s in subs:
        got = s.wait_messages(5)
        assert [m.body for m in got] == [f"tick-{i}".encode() for i in range(5)]
        assert all(m.headers["destination"] == t for m in got)


def test_non_durable_topic_subscriber_misses_messages_sent_before_it_subscribed(broker, clients):
    t = f"/topic/{unique('t')}"
    p = clients(broker.port, "1.2")
    p.send(t, b"before")
    s = clients(broker.port, "1.2")
    s.subscribe(t)
    p.send(t, b"after")
    assert s.wait_messages(1)[0].body == b"after"
    s.assert_no_message()


def test_two_subscriptions_on_one_connection_each_get_a_copy(broker, clients):
    t = f"/topic/{unique('t')}"
    s = clients(broker.port, "1.2")
    s.subscribe(t, sub_id="one")
    s.subscribe(t, sub_id="two")
    s.send(t, b"x")
    got = s.wait_messages(2)
    assert sorted(m.headers["subscription"] for m in got) == ["one", "two"]


@pytest.mark.parametrize("version", VERSIONS)
def test_wildcard_gt_matches_every_deeper_topic(broker, clients, version):
    root = unique("PRICE")
    s = clients(broker.port, version)
    s.subscribe(f"/topic/{root}.>")
    p = clients(broker.port, version)
    p.send(f"/topic/{root}", b"root-only")  # '>' needs at least one more element
    p.send(f"/topic/{root}.STOCK", b"one")
    p.send(f"/topic/{root}.STOCK.NASDAQ.ORCL", b"three")
    p.send(f"/topic/OTHER.{root}.STOCK", b"other")
    got = s.wait_messages(2)
    assert [m.body for m in got] == [b"one", b"three"]
    assert [m.headers["destination"] for m in got] == [
        f"/topic/{root}.STOCK",
        f"/topic/{root}.STOCK.NASDAQ.ORCL",
    ]
    s.assert_no_message()


@pytest.mark.parametrize("version", VERSIONS)
def test_wildcard_star_matches_exactly_one_element(broker, clients, version):
    root = unique("PRICE")
    s = clients(broker.port, version)
    s.subscribe(f"/topic/{root}.*")
    p = clients(broker.port, version)
    p.send(f"/topic/{root}.STOCK.NASDAQ", b"too-deep")
    p.send(f"/topic/{root}.STOCK", b"stock")
    p.send(f"/topic/{root}", b"too-shallow")
    p.send(f"/topic/{root}.BOND", b"bond")
    got = s.wait_messages(2)
    assert [m.body for m in got] == [b"stock", b"bond"]
    s.assert_no_message()


def test_wildcard_in_the_middle(broker, clients):
    root = unique("PRICE")
    s = clients(broker.port, "1.2")
    s.subscribe(f"/topic/{root}.*.NASDAQ")
    p = clients(broker.port, "1.2")
    p.send(f"/topic/{root}.STOCK.NYSE", b"no")
    p.send(f"/topic/{root}.STOCK.NASDAQ", b"yes")
    assert s.wait_messages(1)[0].body == b"yes"
    s.assert_no_message()


def _durable(clients, port, version, client_id, topic, name, **headers):
    c = clients(port, version, **{"client-id": client_id})
    c.subscribe(topic, sub_id="durable", **{"activemq.subscriptionName": name}, **headers)
    return c


@pytest.mark.parametrize("version", VERSIONS)
def test_durable_subscription_keeps_messages_while_its_subscriber_is_away(broker, clients, version):
    t = f"/topic/{unique('t')}"
    cid, name = unique("client"), "audit"
    first = _durable(clients, broker.port, version, cid, t, name)
    p = clients(broker.port, version)
    p.send(t, b"while-connected", persistent="true")
    assert first.take_messages(1)[0].body == b"while-connected"
    first.disconnect()
    for i in range(3):
        p.send(t, f"away-{i}".encode(), persistent="true")
    back = _durable(clients, broker.port, version, cid, t, name)
    got = back.wait_messages(3)
    assert [m.body for m in got] == [b"away-0", b"away-1", b"away-2"]
    back.assert_no_message()


def test_durable_subscription_with_client_ack_redelivers_unacked_on_return(broker, clients):
    t = f"/topic/{unique('t')}"
    cid, name = unique("client"), "billing"
    first = _durable(clients, broker.port, "1.2", cid, t, name, ack="client-individual")
    p = clients(broker.port, "1.2")
    p.send(t, b"m0", persistent="true")
    p.send(t, b"m1", persistent="true")
    m0, _m1 = first.wait_messages(2)
    first.ack(m0)
    first.drop()
    back = _durable(clients, broker.port, "1.2", cid, t, name, ack="client-individual")
    again = back.wait_messages(1)[0]
    assert again.body == b"m1"
    assert again.headers.get("redelivered") == "true", again.headers
    back.assert_no_message()


def test_two_durable_subscriptions_are_independent(broker, clients):
    t = f"/topic/{unique('t')}"
    a = _durable(clients, broker.port, "1.2", unique("a"), t, "sub")
    b = _durable(clients, broker.port, "1.2", unique("b"), t, "sub")
    a.disconnect()
    clients(broker.port, "1.2").send(t, b"x", persistent="true")
    assert b.wait_messages(1)[0].body == b"x"


@pytest.mark.parametrize("version", VERSIONS)
def test_unsubscribe_with_subscription_name_removes_the_durable_subscription(broker, clients, version):
    t = f"/topic/{unique('t')}"
    cid, name = unique("client"), "gone"
    c = _durable(clients, broker.port, version, cid, t, name)
    c.unsubscribe("durable", **{"activemq.subscriptionName": name})
    c.disconnect()
    clients(broker.port, version).send(t, b"nobody-keeps-this", persistent="true")
    back = _durable(clients, broker.port, version, cid, t, name)
    back.assert_no_message()


def test_plain_unsubscribe_keeps_the_durable_subscription(broker, clients):
    t = f"/topic/{unique('t')}"
    cid, name = unique("client"), "kept"
    c = _durable(clients, broker.port, "1.2", cid, t, name)
    c.unsubscribe("durable")
    c.disconnect()
    clients(broker.port, "1.2").send(t, b"kept-for-you", persistent="true")
    back = _durable(clients, broker.port, "1.2", cid, t, name)
    assert back.wait_messages(1)[0].body == b"kept-for-you"


def test_inactive_durable_subscription_can_be_removed_by_name(broker, clients):
    t = f"/topic/{unique('t')}"
    cid, name = unique("client"), "offline"
    c = _durable(clients, broker.port, "1.2", cid, t, name)
    c.disconnect()
    remover = clients(broker.port, "1.2", **{"client-id": cid})
    remover.unsubscribe("whatever", **{"activemq.subscriptionName": name})
    remover.disconnect()
    clients(broker.port, "1.2").send(t, b"dropped", persistent="true")
    back = _durable(clients, broker.port, "1.2", cid, t, name)
    back.assert_no_message()


def test_durable_subscription_without_client_id_is_refused(broker, clients):
    c = clients(broker.port, "1.2")
    c.conn.subscribe(f"/topic/{unique('t')}", "d", headers={"activemq.subscriptionName": "x"})
    err = c.wait_error()
    assert "client-id" in err.headers.get("message", ""), err.headers
    c.wait_closed()


@pytest.mark.parametrize("version", VERSIONS)
def test_duplicate_client_id_is_refused_while_the_first_is_connected(broker, clients, version):
    cid = unique("client")
    first = clients(broker.port, version, **{"client-id": cid})
    dup = clients(broker.port, version, connect=False)
    dup.connect(wait=False, **{"client-id": cid})
    err = dup.wait_error()
    assert cid in err.headers.get("message", ""), err.headers
    dup.wait_closed()
    assert not dup.rec.connected_frames
    # The first connection is unaffected, and the id is free again once it leaves.
    first.sync()
    first.disconnect()
    again = clients(broker.port, version, **{"client-id": cid})
    assert again.connected_frame is not None


def test_no_local_subscriber_does_not_get_its_own_messages(broker, clients):
    t = f"/topic/{unique('t')}"
    me = clients(broker.port, "1.2")
    me.subscribe(t, **{"activemq.noLocal": "true"})
    other = clients(broker.port, "1.2")
    me.send(t, b"mine")
    other.send(t, b"theirs")
    assert me.wait_messages(1)[0].body == b"theirs"
    me.assert_no_message()


def test_durable_subscription_with_selector_keeps_only_matching_messages(broker, clients):
    t = f"/topic/{unique('t')}"
    cid, name = unique("client"), "reds"
    first = _durable(clients, broker.port, "1.2", cid, t, name, selector="color = 'red'")
    first.disconnect()
    p = clients(broker.port, "1.2")
    p.send(t, b"r1", persistent="true", color="red")
    p.send(t, b"b1", persistent="true", color="blue")
    p.send(t, b"r2", persistent="true", color="red")
    back = _durable(clients, broker.port, "1.2", cid, t, name, selector="color = 'red'")
    assert [m.body for m in back.wait_messages(2)] == [b"r1", b"r2"]
    back.assert_no_message()


def test_transacted_publish_to_a_topic_fans_out_on_commit(broker, clients):
    t = f"/topic/{unique('t')}"
    subs = [clients(broker.port, "1.2") for _ in range(2)]
    for s in subs:
        s.subscribe(t)
    p = clients(broker.port, "1.2")
    p.conn.begin("tx")
    p.send(t, b"in-tx", transaction="tx")
    p.send(t, b"outside")
    for s in subs:
        assert s.take_messages(1)[0].body == b"outside"
    p.conn.commit("tx", headers={"receipt": "c"})
    p.wait_receipt("c")
    for s in subs:
        assert s.take_messages(1)[0].body == b"in-tx"
