"""JMS selectors on SUBSCRIBE, over STOMP headers (which arrive as strings)."""

import pytest

from conftest import unique

# Each message is (name, headers); each case is (selector, names it must select).
MESSAGES = [
    ("red-cheap", {"color": "red", "price": "5", "type": "apple", "qty": "3"}),
    ("red-dear", {"color": "red", "price": "15", "type": "avocado", "qty": "10"}),
    ("blue-dear", {"color": "blue", "price": "25.5", "type": "banana", "qty": "7"}),
    ("green-nocolor-price", {"color": "green", "type": "a%b", "qty": "0"}),
    ("plain", {"type": "cherry"}),
]

CASES = [
    ("color = 'red'", ["red-cheap", "red-dear"]),
    ("color <> 'red'", ["blue-dear", "green-nocolor-price"]),
    ("price > 10", ["red-dear", "blue-dear"]),
    ("price >= 5 AND price <= 15", ["red-cheap", "red-dear"]),
    ("price * qty > 100", ["red-dear", "blue-dear"]),
    ("price + 1 = 6", ["red-cheap"]),
    ("type LIKE 'a%'", ["red-cheap", "red-dear", "green-nocolor-price"]),
    ("type LIKE 'a_p%'", ["red-cheap"]),
    ("type NOT LIKE 'a%'", ["blue-dear", "plain"]),
    ("type LIKE 'a\\%%' ESCAPE '\\'", ["green-nocolor-price"]),
    ("color IN ('blue', 'green')", ["blue-dear", "green-nocolor-price"]),
    ("color NOT IN ('blue', 'green')", ["red-cheap", "red-dear"]),
    ("price BETWEEN 10 AND 20", ["red-dear"]),
    ("price NOT BETWEEN 10 AND 20", ["red-cheap", "blue-dear"]),
    ("price IS NULL", ["green-nocolor-price", "plain"]),
    ("color IS NOT NULL", ["red-cheap", "red-dear", "blue-dear", "green-nocolor-price"]),
    ("color = 'red' AND price > 10", ["red-dear"]),
    ("color = 'blue' OR type = 'cherry'", ["blue-dear", "plain"]),
    ("NOT (color = 'red')", ["blue-dear", "green-nocolor-price"]),
    ("(color = 'red' OR color = 'blue') AND NOT price < 10", ["red-dear", "blue-dear"]),
]


@pytest.mark.parametrize("selector, expected", CASES, ids=[c[0] for c in CASES])
def test_selector_on_queue_subscription_selects_matching_messages(broker, clients, selector, expected):
    q = f"/queue/{unique()}"
    c = clients(broker.port, "1.2")
    c.subscribe(q, selector=selector)
    p = clients(broker.port, "1.2")
    for name, headers in MESSAGES:
        p.send(q, name.encode(), **headers)
    got = c.wait_messages(len(expected))
    assert [m.body.decode() for m in got] == expected
    c.assert_no_message()


def test_messages_not_selected_stay_on_the_queue_for_others(broker, clients):
    q = f"/queue/{unique()}"
    reds = clients(broker.port, "1.2")
    reds.subscribe(q, selector="color = 'red'")
    p = clients(broker.port, "1.2")
    p.send(q, b"r", color="red")
    p.send(q, b"b", color="blue")
    assert reds.wait_messages(1)[0].body == b"r"
    rest = clients(broker.port, "1.2")
    rest.subscribe(q)
    assert rest.wait_messages(1)[0].body == b"b"


@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_selector_works_on_older_protocol_versions(broker, clients, version):
    t = f"/topic/{unique('t')}"
    c = clients(broker.port, version)
    c.subscribe(t, selector="price > 10 AND color IN ('red')")
    p = clients(broker.port, version)
    for name, headers in MESSAGES:
        p.send(t, name.encode(), **headers)
    assert c.wait_messages(1)[0].body == b"red-dear"
    c.assert_no_message()


def test_selector_on_jms_header_priority(broker, clients):
    q = f"/queue/{unique()}"
    c = clients(broker.port, "1.2")
    c.subscribe(q, selector="JMSPriority > 6")
    p = clients(broker.port, "1.2")
    p.send(q, b"low", priority="2")
    p.send(q, b"high", priority="8")
    assert c.wait_messages(1)[0].body == b"high"
    c.assert_no_message()
