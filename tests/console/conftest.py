"""Fixtures for the web console's browser tests.

Each test gets its own `ferromq serve` (the binary named by `FERROMQ_BIN`) with a STOMP and an
admin port on loopback, and drives the console at `http://<admin>/` in headless chromium through
selenium. What the page shows is compared with what the broker holds, read over STOMP (the
stomp.py helpers of tests/interop) and the JSON API.

Every wait is for a positive condition and bounded; no sleep decides an outcome.

`FERROMQ_CONSOLE_SCREENSHOTS=<dir>` saves screenshots of the pages into <dir> (docs/console holds
the committed ones). `FERROMQ_CHROMEDRIVER` / `FERROMQ_CHROMIUM` name the driver and browser
(default: `chromedriver` and `chromium` on PATH, as scripts/browser.sh installs them).
"""

import base64
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import pytest

# The stomp.py client with bounded waits that the interop tests use, loaded under its own name
# so pytest does not see a second conftest module.
_spec = importlib.util.spec_from_file_location(
    "interop_helpers", os.path.join(os.path.dirname(__file__), "..", "interop", "conftest.py")
)
interop = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(interop)
Client = interop.Client
unique = interop.unique

# How long anything the page should show may take to appear. The page polls once a second.
WAIT_S = 15.0

OPS = ("ops", "ops-secret")
VIEWER = ("viewer", "look")

USERS_TOML = """
[security]
plaintext_passwords = true

[[security.users]]
username = "ops"
password = "ops-secret"
groups = ["admins"]

[[security.users]]
username = "viewer"
password = "look"
"""


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """One `ferromq serve` with STOMP and the admin endpoint on free loopback ports."""

    def __init__(self, binary, workdir, name, users, extra=""):
        self.binary = binary
        self.workdir = workdir
        self.name = name
        self.port = _free_port()
        self.admin_port = _free_port()
        self.url = f"http://127.0.0.1:{self.admin_port}"
        self.users = users
        self.log_path = os.path.join(workdir, "ferromq.log")
        data = os.path.join(workdir, "data")
        os.makedirs(data, exist_ok=True)
        config = (
            f'[broker]\nname = "{name}"\ndata_dir = "{data}"\n'
            f'[transports]\nstomp = "127.0.0.1:{self.port}"\nadmin = "127.0.0.1:{self.admin_port}"\n'
            '[store]\nbackend = "memory"\n' + (USERS_TOML if users else "") + extra
        )
        self.config_path = os.path.join(workdir, "ferromq.toml")
        with open(self.config_path, "w") as f:
            f.write(config)
        self.proc = None

    def start(self):
        log = open(self.log_path, "a")
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        self.proc = subprocess.Popen(
            [self.binary, "serve", "--config", self.config_path], stdout=log, stderr=subprocess.STDOUT, env=env
        )
        log.close()
        deadline = time.monotonic() + 15
        pending = [self.port, self.admin_port]
        while pending and time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"ferromq exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", pending[0]), timeout=0.5):
                    pending.pop(0)
            except OSError:
                time.sleep(0.02)
        if pending:
            raise AssertionError(f"ferromq did not accept on {pending}:\n{self.log_tail()}")
        return self

    def stop(self):
        """SIGTERM; returns a problem to report, or None."""
        if self.proc is None:
            return None
        problem = None
        if self.proc.poll() is not None:
            problem = f"exited with {self.proc.returncode} during the test"
        else:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                problem = "did not exit within 10 s of SIGTERM"
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
        return problem

    def log_tail(self, n=40):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return "(no log)"

    # --- the JSON API, as the tests' own view of the broker

    def http(self, method, path, body=None, auth=None, content_type="application/json"):
        """(status, headers, parsed JSON or raw text) of one request."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if method != "GET":
            req.add_header("Content-Type", content_type)
        auth = auth or (OPS if self.users else None)
        if auth:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                status, headers, raw = r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            status, headers, raw = e.code, e.headers, e.read()
        text = raw.decode(errors="replace")
        try:
            return status, headers, json.loads(text)
        except ValueError:
            return status, headers, text

    def api(self, method, path, body=None, auth=None):
        status, _, v = self.http(method, path, body, auth)
        assert 200 <= status < 300, f"{method} {path}: {status} {v}"
        return v

    def stomp(self, login=None):
        c = Client(self.port, "1.2")
        creds = login or (OPS if self.users else None)
        if creds:
            c.connect(login=creds[0], passcode=creds[1])
        else:
            c.connect()
        return c


def _binary():
    path = os.environ.get("FERROMQ_BIN")
    if not path or not os.access(path, os.X_OK):
        pytest.fail(f"FERROMQ_BIN must name a built ferromq binary (got {path!r})", pytrace=False)
    return path


@pytest.fixture
def broker_factory():
    """`make(users=False, name=..., extra=...)`: a started broker (`extra`: more TOML at the end
    of its config), stopped (and checked) at the end."""
    binary = _binary()
    made = []

    def make(users=False, name="console-test", extra=""):
        d = tempfile.mkdtemp(prefix="ferromq-console-")
        b = Broker(binary, d, name, users, extra)
        made.append((b, d))
        return b.start()

    yield make
    problems = []
    for b, d in made:
        p = b.stop()
        if p:
            problems.append(f"broker on {b.port}: {p}\n{b.log_tail()}")
        shutil.rmtree(d, ignore_errors=True)
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def broker(broker_factory):
    return broker_factory()


@pytest.fixture
def stomp_clients():
    made = []

    def make(broker, login=None):
        c = broker.stomp(login)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close_quietly()


@pytest.fixture(scope="session")
def _chrome():
    """One headless chromium for the whole run (a start costs about a second); each test
    works on its own broker, hence its own origin and session storage."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    # Never let selenium try to download a driver or a browser.
    os.environ.setdefault("SE_OFFLINE", "true")
    driver_path = os.environ.get("FERROMQ_CHROMEDRIVER") or shutil.which("chromedriver")
    browser_path = os.environ.get("FERROMQ_CHROMIUM") or shutil.which("chromium")
    if not driver_path or not browser_path:
        pytest.fail("chromium and chromedriver are needed: run scripts/browser.sh", pytrace=False)
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser_path
    for a in (
        "--headless=new",
        # CI runs as root, where chromium's sandbox cannot start.
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,900",
        "--force-device-scale-factor=1",
        "--lang=en-US",
    ):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # Dialogs (confirm) are accepted or dismissed by the tests themselves.
    opts.unhandled_prompt_behavior = "ignore"
    d = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    d.set_page_load_timeout(30)
    yield d
    d.quit()


class Page:
    """The browser on one broker's console, with bounded waits."""

    def __init__(self, driver, broker):
        self.d = driver
        self.broker = broker

    def open(self, route="#/"):
        self.d.get(self.broker.url + "/" + route)
        return self

    def go(self, route):
        """Navigates within the page (a hash change, no reload)."""
        self.d.execute_script("location.hash = arguments[0]", route)
        return self

    def wait(self, predicate, what, timeout=WAIT_S):
        from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
        from selenium.webdriver.support.ui import WebDriverWait

        last = [None]

        def check(d):
            v = predicate(d)
            last[0] = v
            return v

        try:
            return WebDriverWait(
                self.d, timeout, poll_frequency=0.05, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)
            ).until(check)
        except Exception as e:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what} (last: {last[0]!r}); error banner: "
                f"{self.text('#error-text')!r}; notice: {self.text('#notice')!r}"
            ) from e

    def find(self, css):
        from selenium.webdriver.common.by import By

        return self.d.find_element(By.CSS_SELECTOR, css)

    def finds(self, css):
        from selenium.webdriver.common.by import By

        return self.d.find_elements(By.CSS_SELECTOR, css)

    def text(self, css):
        """The element's text content (hidden or not), or None when absent."""
        els = self.finds(css)
        return els[0].get_attribute("textContent") if els else None

    def wait_text(self, css, expected, timeout=WAIT_S):
        """Waits until `css` holds exactly `expected` (or, for a callable, until it is true of
        the text); returns the text."""
        ok = expected if callable(expected) else (lambda t: t == expected)
        return self.wait(lambda d: (t := self.text(css)) is not None and ok(t) and t, f"{css} to be {expected!r}", timeout)

    def accept_confirm(self):
        from selenium.webdriver.support import expected_conditions as EC
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(self.d, WAIT_S).until(EC.alert_is_present())
        self.d.switch_to.alert.accept()

    def shot(self, name):
        """Saves a screenshot when FERROMQ_CONSOLE_SCREENSHOTS names a directory."""
        out = os.environ.get("FERROMQ_CONSOLE_SCREENSHOTS")
        if not out:
            return
        os.makedirs(out, exist_ok=True)
        self.d.save_screenshot(os.path.join(out, name + ".png"))

    def problems(self):
        """Script errors and policy violations the browser logged (failed API answers, which
        the page shows on purpose, are not problems)."""
        out = []
        for e in self.d.get_log("browser"):
            if e.get("level") != "SEVERE":
                continue
            m = e.get("message", "")
            if "Failed to load resource" in m:
                continue
            out.append(m)
        return out


@pytest.fixture
def page(_chrome):
    """`page(broker)`: the browser, fresh, on that broker's console. At the end, any script
    error or Content-Security-Policy violation the browser logged fails the test."""
    made = []

    def make(broker):
        # A blank page first, so nothing from the previous test's page (its polls) runs on.
        _chrome.get("about:blank")
        _chrome.get_log("browser")
        p = Page(_chrome, broker)
        made.append(p)
        return p

    yield make
    if made:
        problems = made[-1].problems()
        _chrome.get("about:blank")
        assert not problems, f"the browser logged: {problems}"
