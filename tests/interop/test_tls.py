"""STOMP over TLS (`transports.stomp_ssl`, ActiveMQ's `stomp+ssl://`) with stomp.py's
`set_ssl`: sends and receipts over TLS, mutual TLS (`tls.need_client_auth`), and a persistent
message sent over TLS surviving a restart (with `FERROMQ_INTEROP_PERSISTENT_BACKEND`).

The CA, the broker's certificate (localhost, 127.0.0.1) and a client certificate are made with
the `openssl` command line for each test run, in a temporary directory; no key is committed.
"""

import os
import shutil
import subprocess

import pytest

from conftest import _free_port, unique

BACKEND = os.environ.get("FERROMQ_INTEROP_PERSISTENT_BACKEND", "")

pytestmark = pytest.mark.skipif(
    shutil.which("openssl") is None, reason="the openssl command line makes the test certificates"
)


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("pki"))
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    _openssl("req", "-x509", *ec, "-days", "2", "-subj", "/CN=interop CA",
             "-keyout", "ca.key", "-out", "ca.pem",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    for name, ext in [
        ("broker", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ]:
        _openssl("req", *ec, "-subj", f"/CN={name}", "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", cwd=d)
        with open(os.path.join(d, f"{name}.ext"), "w") as f:
            f.write(ext + "basicConstraints=CA:FALSE\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-out", f"{name}.pem",
                 "-extfile", f"{name}.ext", cwd=d)
    return {
        "ca": os.path.join(d, "ca.pem"),
        "broker": os.path.join(d, "broker.pem"),
        "broker_key": os.path.join(d, "broker.key"),
        "client": os.path.join(d, "client.pem"),
        "client_key": os.path.join(d, "client.key"),
    }


def tls_broker(broker_factory, pki, tls_extra=None, store=None):
    port = _free_port()
    tls = {"cert": pki["broker"], "key": pki["broker_key"]}
    tls.update(tls_extra or {})
    overrides = {"transports": {"stomp_ssl": f"127.0.0.1:{port}"}, "tls": tls}
    if store:
        overrides["store"] = store
    b = broker_factory(overrides)
    return b, port


def tls_client(clients, port, pki, cert=False, version="1.2"):
    c = clients(port, version, connect=False)
    kwargs = {"for_hosts": [("127.0.0.1", port)], "ca_certs": pki["ca"]}
    if cert:
        kwargs.update(cert_file=pki["client"], key_file=pki["client_key"])
    c.conn.set_ssl(**kwargs)
    return c


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_stomp_py_over_tls_sends_subscribes_and_receives_with_receipts(
    broker_factory, clients, pki, version
):
    b, port = tls_broker(broker_factory, pki)
    q = f"/queue/{unique()}"
    c = tls_client(clients, port, pki, version=version).connect()
    assert c.connected_frame.headers.get("version") == version
    c.subscribe(q, ack="client-individual")
    c.send(q, b"over TLS", persistent="true")
    (m,) = c.wait_messages(1)
    assert m.body == b"over TLS"
    c.ack(m)
    c.disconnect()
    # The plain listener next to it still speaks plain STOMP.
    plain = clients(b.port, "1.2")
    plain.send(q, b"in the clear")


def test_mutual_tls_refuses_stomp_py_without_a_client_certificate_and_accepts_it_with_one(
    broker_factory, clients, pki
):
    b, port = tls_broker(
        broker_factory, pki, {"ca": pki["ca"], "need_client_auth": True}
    )
    anonymous = tls_client(clients, port, pki)
    with pytest.raises(Exception):
        anonymous.connect()
    assert not anonymous.rec.connected_frames, "no CONNECTED without a client certificate"
    q = f"/queue/{unique()}"
    c = tls_client(clients, port, pki, cert=True).connect()
    c.subscribe(q)
    c.send(q, b"mutual")
    (m,) = c.wait_messages(1)
    assert m.body == b"mutual"


@pytest.mark.skipif(not BACKEND, reason="FERROMQ_INTEROP_PERSISTENT_BACKEND is unset")
def test_a_persistent_message_sent_over_tls_survives_a_restart(broker_factory, clients, pki):
    b, port = tls_broker(broker_factory, pki, store={"backend": BACKEND, "sync": "always"})
    q = f"/queue/{unique()}"
    p = tls_client(clients, port, pki).connect()
    p.send(q, b"kept", persistent="true")
    p.close_quietly()
    b.restart()
    c = tls_client(clients, port, pki).connect()
    c.subscribe(q)
    (m,) = c.wait_messages(1)
    assert m.body == b"kept"
