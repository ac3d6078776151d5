"""The web console in a real browser, checked against what the broker holds.

Each test puts something into the broker over STOMP (or through the page), then waits for the
page to show it and compares that with the broker's own answer (STOMP, the JSON API).
"""

import os
import socket
import threading
import time
import urllib.parse

from conftest import OPS, VIEWER, unique


def row(q):
    """CSS of the table row of `q` (rows carry their key as data-key)."""
    return f'tr[data-key="{q}"]'


def cell(q, col):
    return f'{row(q)} td[data-col="{col}"]'


def fill_send_form(p, body, queue=None, headers=""):
    if queue is not None:
        p.find("#send-queue").clear()
        p.find("#send-queue").send_keys(queue)
    p.find("#send-body").clear()
    p.find("#send-body").send_keys(body)
    p.find("#send-headers").clear()
    if headers:
        p.find("#send-headers").send_keys(headers)
    p.find("#send-submit").click()


def test_the_console_is_html_with_a_strict_policy_and_status_stays_json(broker):
    status, headers, body = broker.http("GET", "/")
    assert status == 200
    assert headers["Content-Type"].startswith("text/html"), headers
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp, csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, csp
    assert headers["Cache-Control"] == "no-cache" and headers["ETag"], headers
    assert '<script src="/console/console.js"' in body
    status, headers, _ = broker.http("GET", "/console/console.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript"), headers
    status, headers, _ = broker.http("GET", "/console/console.css")
    assert status == 200 and headers["Content-Type"].startswith("text/css"), headers
    status, headers, v = broker.http("GET", "/status")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert v["broker"] == broker.name and v["role"] == "master", v


def test_the_overview_shows_the_brokers_name_and_store(broker, page, stomp_clients):
    c = stomp_clients(broker)
    q = unique("orders")
    for i in range(3):
        c.send(f"/queue/{q}", f"m{i}".encode())
    p = page(broker).open("#/")
    p.wait_text("#broker-name", broker.name)
    p.wait_text('dd[data-field="name"]', broker.name)
    info = broker.api("GET", "/api/v1/broker")
    p.wait_text('dd[data-field="version"]', info["version"])
    p.wait_text('dd[data-field="store_kind"]', "memory")
    p.wait_text('dd[data-field="ha"]', f"{info['ha_mode']} / master / {info['epoch']}")
    # The STOMP connection above is the broker's only one.
    assert broker.api("GET", "/api/v1/broker")["connections"] == 1
    p.wait_text('dd[data-field="connections"]', "1")
    p.wait_text('dd[data-field="destinations"]', lambda t: t.startswith("1 /"))
    p.shot("overview")


def test_the_queues_page_shows_the_depth_the_broker_holds(broker, page, stomp_clients):
    c = stomp_clients(broker)
    big, small = unique("big"), unique("small")
    for i in range(7):
        c.send(f"/queue/{big}", f"b{i}".encode())
    for i in range(3):
        c.send(f"/queue/{small}", f"s{i}".encode())
    depths = {q["name"]: q["depth"] for q in broker.api("GET", "/api/v1/queues")["queues"]}
    assert depths == {big: 7, small: 3}, depths
    p = page(broker).open("#/queues")
    p.wait_text(cell(big, "depth"), "7")
    p.wait_text(cell(small, "depth"), "3")
    p.wait_text(cell(big, "enqueued"), "7")
    # Sorting by depth (numbers sort largest first), then again (smallest first).
    p.find('th[data-col="depth"]').click()
    p.wait(lambda d: [r.get_attribute("data-key") for r in p.finds("table.queues tbody tr")] == [big, small], "big first")
    p.find('th[data-col="depth"]').click()
    p.wait(lambda d: [r.get_attribute("data-key") for r in p.finds("table.queues tbody tr")] == [small, big], "small first")
    p.shot("queues")
    # The filter keeps only names containing the text.
    p.find("input.filter").send_keys("big")
    p.wait(lambda d: [r.get_attribute("data-key") for r in p.finds("table.queues tbody tr")] == [big], "only big")
    # New messages show without a reload.
    c.send(f"/queue/{big}", b"one more")
    p.wait_text(cell(big, "depth"), "8")


def test_a_message_sent_from_the_page_is_consumed_over_stomp(broker, page, stomp_clients):
    q = unique("sent")
    body = "hello <b>from</b> the console & ünïcode"
    p = page(broker).open("#/queues")
    p.wait(lambda d: p.finds("#send-form"), "the send form")
    fill_send_form(p, body, queue=q, headers="type: greeting\ncolour: blue")
    p.wait_text("#notice", lambda t: t.startswith("sent ID:") and t.endswith(" to " + q))
    c = stomp_clients(broker)
    c.subscribe(f"/queue/{q}")
    [m] = c.wait_messages(1)
    assert m.body.decode() == body
    assert m.headers["type"] == "greeting" and m.headers["colour"] == "blue", m.headers
    sent_id = p.text("#notice").split()[1]
    assert m.headers["message-id"] == sent_id, (m.headers, sent_id)


def test_purge_from_the_page_empties_the_queue(broker, page, stomp_clients):
    c = stomp_clients(broker)
    q = unique("purged")
    for i in range(5):
        c.send(f"/queue/{q}", f"old {i}".encode())
    p = page(broker).open("#/queues")
    p.wait_text(cell(q, "depth"), "5")
    p.find(f"{row(q)} button.purge").click()
    p.accept_confirm()
    p.wait_text("#notice", f"purged 5 message(s) from {q}")
    p.wait_text(cell(q, "depth"), "0")
    assert broker.api("GET", f"/api/v1/queues/{q}")["depth"] == 0
    # A STOMP consumer then finds only what is sent after the purge.
    c.send(f"/queue/{q}", b"after the purge")
    c.subscribe(f"/queue/{q}")
    [m] = c.wait_messages(1)
    assert m.body == b"after the purge"


def test_the_queue_page_browses_message_ids_pages_and_shows_one_message(broker, page, stomp_clients):
    c = stomp_clients(broker)
    q = unique("browse")
    for i in range(25):
        c.send(f"/queue/{q}", f"body {i}".encode(), **{"order-no": str(i)})
    hostile = "<script>document.title='owned'</script><img src=x>"
    c.send(f"/queue/{q}", hostile.encode(), kind="hostile")
    ids = [m["id"] for m in broker.api("GET", f"/api/v1/queues/{urllib.parse.quote(q)}/messages?limit=100")["messages"]]
    assert len(ids) == 26
    p = page(broker).open(f"#/queue/{urllib.parse.quote(q, safe='')}")
    p.wait_text("#queue-name", q)
    p.wait_text('dd[data-field="depth"]', "26")
    # Nothing paged out in a 64 MiB window; the window is shown beside the memory held.
    p.wait_text('dd[data-field="paged_out"]', "0")
    p.wait_text('dd[data-field="memory"]', lambda t: t.endswith(" of 64.0 MiB"))

    def shown():
        return [r.get_attribute("data-key") for r in p.finds("table.messages tbody tr")]

    p.wait(lambda d: shown() == ids[:20], "the first page of 20 message ids in order")
    p.shot("queue")
    p.find("#browse-next").click()
    p.wait(lambda d: shown() == ids[20:], "the second page: the last 6 ids")
    p.wait_text("#browse-range", "messages 21–26")
    assert not p.find("#browse-next").is_enabled()
    # The hostile body is shown as text, not run or rendered.
    p.find(f'{row(ids[25])} button.view').click()
    p.wait_text("#detail-id", ids[25])
    assert p.text("#detail-body") == hostile
    assert p.finds("#message-detail img") == [] and p.finds("#view script") == []
    assert p.d.title == "ferromq console"
    headers = {
        r.find_element("css selector", "th").get_attribute("textContent"): r.find_element("css selector", "td").get_attribute("textContent")
        for r in p.finds("#detail-headers tr")
    }
    assert headers["kind"] == "hostile" and headers["id"] == ids[25], headers
    p.find("#browse-prev").click()
    p.wait(lambda d: shown() == ids[:20], "the first page again")
    p.find(f'{row(ids[3])} button.view').click()
    p.wait_text("#detail-body", "body 3")
    assert headers_of(p)["order-no"] == "3"


def headers_of(p):
    return {
        r.find_element("css selector", "th").get_attribute("textContent"): r.find_element("css selector", "td").get_attribute("textContent")
        for r in p.finds("#detail-headers tr")
    }


def test_an_error_answer_is_shown_to_the_user(broker, page):
    p = page(broker).open("#/queues")
    p.wait(lambda d: p.finds("#send-form"), "the send form")
    bad = "orders.*"
    status, _, v = broker.http("POST", f"/api/v1/queues/{urllib.parse.quote(bad)}/messages", {"body": "x"})
    assert status == 400, v
    fill_send_form(p, "x", queue=bad)
    p.wait_text("#error-text", f"send to {bad} failed: 400: {v['error']}")
    assert p.find("#error").is_displayed()
    # A queue that does not exist: the page says what the API says.
    status, _, v = broker.http("GET", "/api/v1/queues/nope")
    assert status == 404
    p.go("#/queue/nope")
    p.wait_text("#error-text", f"404: {v['error']}")


def test_the_subscribers_page_shows_the_list_or_the_apis_error(broker, page, stomp_clients):
    # GET /api/v1/subscriptions is being added separately: until it exists the page must show
    # the API's answer (404); once it does, the list, without an error.
    status, _, v = broker.http("GET", "/api/v1/subscriptions")
    p = page(broker).open("#/subscriptions")
    if status == 200:
        p.wait(lambda d: p.finds("table.subscriptions"), "the subscriptions table")
        p.wait(lambda d: not p.find("#error").is_displayed(), "no error")
    else:
        p.wait_text("#page-error", f"cannot list subscriptions: {status}: {v['error']}")
        p.wait_text("#error-text", f"{status}: {v['error']}")


def test_topics_and_connections_pages_list_what_the_broker_has(broker, page, stomp_clients):
    c = stomp_clients(broker)
    topic = unique("prices")
    c.subscribe(f"/topic/{topic}")
    c.send(f"/topic/{topic}", b"tick")
    c.wait_messages(1)
    p = page(broker).open("#/topics")
    p.wait_text(cell(topic, "subscriptions"), "1")
    p.wait_text(cell(topic, "enqueued"), "1")
    conns = broker.api("GET", "/api/v1/connections")["connections"]
    assert len(conns) == 1
    p.go("#/connections")
    key = conns[0].get("id", conns[0]["remote"])
    p.wait_text(cell(key, "remote"), conns[0]["remote"])
    p.wait_text(cell(key, "protocol"), "stomp")


def test_the_cluster_page_shows_ha_and_the_bridges_the_broker_runs(broker_factory, page):
    # A connector to a port nobody listens on: its bridge keeps connecting.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    b = broker_factory(
        extra=(
            '[[network_connectors]]\nname = "to-nowhere"\n'
            f'uri = "static:(tcp://127.0.0.1:{dead})"\n'
            "initial_reconnect_delay_ms = 50\nmax_reconnect_delay_ms = 200\n"
        )
    )
    ha = b.api("GET", "/api/v1/ha")
    assert ha["mode"] == "none" and ha["role"] == "master" and ha["replication"] is None, ha
    bridges = b.api("GET", "/api/v1/bridges")["bridges"]
    assert [x["name"] for x in bridges] == ["to-nowhere"], bridges
    assert bridges[0]["state"] == "connecting", bridges
    p = page(b).open("#/cluster")
    p.wait_text('dd[data-field="mode"]', "none")
    p.wait_text('dd[data-field="role"]', "master")
    p.wait_text('dd[data-field="epoch"]', "0")
    # The failover history: one mastership (this run's), never lost, never suspended.
    p.wait_text('dd[data-field="masterships"]', "1 / 0")
    p.wait_text('dd[data-field="suspended"]', "no / 0 / 0s")
    assert "epoch 0: no HA" in p.text('dd[data-field="last_master"]')
    # The recent failover events: this run's mastership, the one row.
    p.wait_text('table.ha-events td[data-col="kind"]', "became master")
    assert p.text('table.ha-events td[data-col="epoch"]') == "0"
    assert "no HA" in p.text('table.ha-events td[data-col="detail"]')
    assert len(p.finds("table.ha-events tbody tr")) == 1
    p.wait_text(cell("to-nowhere", "state"), "connecting")
    p.wait_text(cell("to-nowhere", "forwarded"), "0")
    assert f"127.0.0.1:{dead}" in p.text(cell("to-nowhere", "remote"))
    assert p.finds("table.slaves tbody tr") == [], "a standalone broker has no slaves"
    p.shot("cluster")


def test_the_rate_chart_shows_messages_flowing(broker, page, stomp_clients):
    c = stomp_clients(broker)
    q = unique("flow")
    c.send(f"/queue/{q}", b"first")
    p = page(broker).open(f"#/queue/{q}")
    p.wait_text('dd[data-field="depth"]', "1")
    rate = 'span.value[data-series="enqueued"]'
    # The first poll only has counters; the rate needs two, so it reads 0 before anything new.
    p.wait_text(rate, "0.0/s")
    for i in range(10):
        c.send(f"/queue/{q}", f"m{i}".encode())
    p.wait_text(rate, lambda t: t.endswith("/s") and float(t[:-2]) > 0)
    # Consuming shows as a dequeue rate.
    sub = c.subscribe(f"/queue/{q}")
    c.wait_messages(11)
    p.wait_text('span.value[data-series="dequeued"]', lambda t: t.endswith("/s") and float(t[:-2]) > 0)
    if os.environ.get("FERROMQ_CONSOLE_SCREENSHOTS"):
        # Only for the documentation's picture: some seconds of varying traffic on the overview.
        p.go("#/")
        p.wait_text("#broker-name", broker.name)
        stop = threading.Event()

        def traffic():
            prod = broker.stomp()
            n = 0
            while not stop.is_set():
                burst = 5 + (n % 7) * 4
                for i in range(burst):
                    prod.send(f"/queue/{q}", b"x", receipt=(i == burst - 1))
                n += 1
                time.sleep(0.25)
            prod.close_quietly()

        t = threading.Thread(target=traffic, daemon=True)
        t.start()
        # Pictures only, nothing asserted: some seconds consumed as fast as sent, then some with
        # the consumer gone (the dequeue rate drops to 0 while messages keep coming).
        time.sleep(8)
        c.unsubscribe(sub)
        time.sleep(6)
        p.shot("chart")
        stop.set()
        t.join(timeout=10)


def test_with_users_a_viewer_may_not_purge_and_sees_why(broker_factory, page, stomp_clients):
    b = broker_factory(users=True)
    c = stomp_clients(b, login=OPS)
    q = unique("guarded")
    for i in range(4):
        c.send(f"/queue/{q}", f"keep {i}".encode())
    p = page(b).open("#/queues")
    # The page is public; the API is not: the console asks for a login.
    p.wait(lambda d: p.find("#login").is_displayed(), "the login form")
    p.wait_text("#login-reason", lambda t: "authentication required" in t)
    p.find("#login-user").send_keys(VIEWER[0])
    p.find("#login-password").send_keys(VIEWER[1])
    p.find("#login-submit").click()
    p.wait_text("#who", "logged in as viewer")
    p.wait_text(cell(q, "depth"), "4")
    p.find(f"{row(q)} button.purge").click()
    p.accept_confirm()
    status, _, v = b.http("POST", f"/api/v1/queues/{q}/purge", {}, auth=VIEWER)
    assert status == 403, v
    p.wait_text("#error-text", f"purge {q} failed: 403: {v['error']}")
    assert b.api("GET", f"/api/v1/queues/{q}", auth=VIEWER)["depth"] == 4
    # An admin may.
    p.find("#logout").click()
    p.wait(lambda d: p.find("#login").is_displayed(), "the login form again")
    p.find("#login-user").clear()
    p.find("#login-user").send_keys(OPS[0])
    p.find("#login-password").send_keys(OPS[1])
    p.find("#login-submit").click()
    p.wait_text("#who", "logged in as ops")
    p.wait_text(cell(q, "depth"), "4")
    p.find(f"{row(q)} button.purge").click()
    p.accept_confirm()
    p.wait_text("#notice", f"purged 4 message(s) from {q}")
    assert b.api("GET", f"/api/v1/queues/{q}", auth=VIEWER)["depth"] == 0


# How long the console's tab stays hidden in the visibility test: a few poll periods. Only
# bounds a false pass (a console that polls while hidden is caught if it polls in this time).
HIDDEN_S = 2.5


def test_the_page_polls_only_while_visible(broker, page):
    p = page(broker).open("#/queues")
    p.wait(lambda d: p.finds("#send-form"), "the queues page")
    # Records each API request and each visibility change of the console's tab, in order.
    p.d.execute_script(
        """
        window.__log = [];
        const f = window.fetch;
        window.fetch = function () { window.__log.push("fetch"); return f.apply(this, arguments); };
        // On the window, capturing: before the console's own handler (which polls at once).
        window.addEventListener("visibilitychange", () => window.__log.push(document.visibilityState), true);
        """
    )
    p.wait(lambda d: d.execute_script("return window.__log.length") >= 1, "a poll")
    console_tab = p.d.current_window_handle
    p.d.switch_to.new_window("tab")
    try:
        time.sleep(HIDDEN_S)
    finally:
        p.d.close()
        p.d.switch_to.window(console_tab)
    log = p.wait(
        lambda d: (lg := d.execute_script("return window.__log")) and "visible" in lg and lg[-1] == "fetch" and lg,
        "a poll after the tab is visible again",
    )
    hidden = log.index("hidden")
    assert log[hidden + 1] == "visible", f"requests while the tab was hidden: {log}"
