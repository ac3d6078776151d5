"""A client that never reads its socket: the broker must drop it after `write_timeout_ms` instead
of buffering without bound or stalling everyone else, and give its unacked messages to others."""

import socket
import time

from conftest import WAIT_S, RawClient, unique

MESSAGE_BYTES = 64 * 1024
# 10 MiB: well past the broker's socket send buffer (Linux caps it at a few MiB) plus the
# deliberately tiny receive buffer of the stalled client, so the broker's write must block.
MESSAGE_COUNT = 160


def _fill_queue(port, q):
    """Sends the whole batch in one write from a raw socket (fast), with a receipt at the end."""
    rc = RawClient(port)
    rc.connect()
    body = b"s" * MESSAGE_BYTES
    batch = b"".join(
        rc.frame("SEND", [("destination", q), ("content-length", len(body)), ("seq", i)], body)
        for i in range(MESSAGE_COUNT)
    )
    rc.send(batch + rc.frame("DISCONNECT", [("receipt", "filled")]))
    f = rc.read_frame(timeout=30)
    assert f.command == "RECEIPT" and f.headers.get("receipt-id") == "filled", f
    rc.close()


def _never_reading_client(port, q):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.sendall(b"CONNECT\naccept-version:1.2\nhost:localhost\n\n\x00")
    s.sendall(
        f"SUBSCRIBE\nid:greedy\ndestination:{q}\nack:client-individual\n"
        f"activemq.prefetchSize:1000\n\n\x00".encode()
    )
    return s


def _drain_until_closed(s, timeout):
    """Reads whatever is buffered until EOF or reset; fails if the socket stays open."""
    deadline = time.monotonic() + timeout
    total = 0
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"the broker never closed the stalled connection ({total} bytes read)"
        s.settimeout(remaining)
        try:
            chunk = s.recv(1 << 20)
        except ConnectionResetError:
            return total
        except socket.timeout:
            continue
        if not chunk:
            return total
        total += len(chunk)


def test_client_that_never_reads_is_disconnected_and_its_messages_go_to_another_consumer(
    broker_factory, clients
):
    b = broker_factory({"stomp": {"write_timeout_ms": 500}})
    q = f"/queue/{unique('slow')}"
    _fill_queue(b.port, q)

    bystander = clients(b.port, "1.2")
    other_q = f"/queue/{unique('other')}"
    bystander.subscribe(other_q)

    stalled = _never_reading_client(b.port, q)
    try:
        # Everyone else is served while the stalled client's writes are blocked.
        bystander.send(other_q, b"unaffected")
        assert bystander.wait_messages(1)[0].body == b"unaffected"

        # A second consumer on the same queue gets every message: the broker dropped the
        # stalled connection (nothing was acked), and returned its prefetched messages.
        rescuer = clients(b.port, "1.2")
        rescuer.subscribe(q)
        got = rescuer.wait_messages(MESSAGE_COUNT, timeout=30)
        seqs = sorted(int(m.headers["seq"]) for m in got)
        assert seqs == list(range(MESSAGE_COUNT)), "messages lost or duplicated"
        assert all(len(m.body) == MESSAGE_BYTES for m in got)
        assert any(m.headers.get("redelivered") == "true" for m in got), (
            "no message was marked redelivered, so the stalled client never held any"
        )
        rescuer.assert_no_message()

        # The stalled client's socket reports the close once it finally reads.
        _drain_until_closed(stalled, WAIT_S)
    finally:
        stalled.close()

    bystander.send(other_q, b"after")
    assert bystander.wait_messages(2)[1].body == b"after"
