"""Temporary destinations and request/reply, the ActiveMQ STOMP way."""

import pytest

from conftest import VERSIONS, unique


@pytest.mark.parametrize("version", VERSIONS)
def test_request_reply_through_a_temp_queue(broker, clients, version):
    service_q = f"/queue/{unique('service')}"
    server = clients(broker.port, version)
    server.subscribe(service_q)
    requester = clients(broker.port, version)
    requester.subscribe("/temp-queue/replies")
    requester.send(service_q, b"ping", **{"reply-to": "/temp-queue/replies", "correlation-id": "c-1"})

    request = server.wait_messages(1)[0]
    reply_to = request.headers.get("reply-to", "")
    assert reply_to.startswith("/remote-temp-queue/"), f"reply-to seen by another client: {reply_to!r}"
    server.send(reply_to, b"pong", **{"correlation-id": request.headers["correlation-id"]})

    reply = requester.wait_messages(1)[0]
    assert reply.body == b"pong"
    assert reply.headers.get("correlation-id") == "c-1"
    assert reply.headers.get("destination") == "/temp-queue/replies", reply.headers


def test_temp_queues_of_two_connections_with_the_same_name_are_separate(broker, clients):
    service_q = f"/queue/{unique('service')}"
    server = clients(broker.port, "1.2")
    server.subscribe(service_q)
    a = clients(broker.port, "1.2")
    b = clients(broker.port, "1.2")
    for who in (a, b):
        who.subscribe("/temp-queue/replies")
    a.send(service_q, b"from-a", **{"reply-to": "/temp-queue/replies"})
    b.send(service_q, b"from-b", **{"reply-to": "/temp-queue/replies"})
    requests = server.wait_messages(2)
    assert requests[0].headers["reply-to"] != requests[1].headers["reply-to"]
    for r in requests:
        server.send(r.headers["reply-to"], b"re:" + r.body)
    assert a.wait_messages(1)[0].body == b"re:from-a"
    assert b.wait_messages(1)[0].body == b"re:from-b"
    a.assert_no_message()
    b.assert_no_message()


def test_temp_topic_reply_reaches_its_owner(broker, clients):
    service_q = f"/queue/{unique('service')}"
    server = clients(broker.port, "1.2")
    server.subscribe(service_q)
    owner = clients(broker.port, "1.2")
    owner.subscribe("/temp-topic/events")
    owner.send(service_q, b"subscribe-me", **{"reply-to": "/temp-topic/events"})
    reply_to = server.wait_messages(1)[0].headers["reply-to"]
    assert reply_to.startswith("/remote-temp-topic/"), reply_to
    server.send(reply_to, b"event-1")
    assert owner.wait_messages(1)[0].body == b"event-1"


def test_temp_queue_goes_away_with_its_connection(broker, clients):
    service_q = f"/queue/{unique('service')}"
    server = clients(broker.port, "1.2")
    server.subscribe(service_q)
    requester = clients(broker.port, "1.2")
    requester.subscribe("/temp-queue/replies")
    requester.send(service_q, b"ping", **{"reply-to": "/temp-queue/replies"})
    reply_to = server.wait_messages(1)[0].headers["reply-to"]
    requester.disconnect()
    # ActiveMQ refuses a send to a deleted temporary destination.
    server.conn.send(reply_to, b"too late", headers={"receipt": "late"})
    server.rec.wait_until(lambda: server.rec.errors or "late" in server.rec.receipts, "ERROR or RECEIPT")
    assert server.rec.errors, "a send to a deleted temp queue was accepted"
    assert server.rec.errors[0].headers.get("message"), server.error_headers()
