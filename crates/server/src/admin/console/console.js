// The ferromq web console: a single page over the JSON admin API (docs/operations.md).
//
// Rules this file keeps:
// - Nothing from the broker becomes markup: every node is made with createElement and filled
//   with textContent, so a message body or a queue name can hold "<script>" harmlessly. (The
//   server's Content-Security-Policy forbids inline script as a second wall.)
// - Every state change is a fetch with Content-Type: application/json: the broker refuses
//   anything else, which is what stops a cross-site form from posting here (CSRF).
// - Every error answer ({"error": ...}) is shown to the user as the broker wrote it.
// - The page polls only while it is visible, one request chain at a time.
"use strict";

(function () {
  const POLL_MS = 1000;
  // Chart history: two minutes at one poll a second.
  const CHART_POINTS = 120;
  const AUTH_KEY = "ferromq.console.auth";
  const PAGE_SIZES = [20, 50, 100];

  // ----------------------------------------------------------------------------------------
  // DOM helpers: text only, never HTML.

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "text") e.textContent = String(v);
      else if (k === "on") for (const [ev, fn] of Object.entries(v)) e.addEventListener(ev, fn);
      else if (k === "class") e.className = v;
      else if (k === "hidden" || k === "disabled" || k === "checked") e[k] = true;
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      e.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
    }
    return e;
  }

  const $ = (id) => document.getElementById(id);

  function setText(e, text) {
    const t = String(text);
    if (e.textContent !== t) e.textContent = t;
  }

  // ----------------------------------------------------------------------------------------
  // Formatting.

  function num(n) {
    return typeof n === "number" ? n.toLocaleString("en-US") : "–";
  }

  function bytes(n) {
    if (typeof n !== "number") return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    let v = n;
    while (v >= 1024 && i < units.length - 1) {
      v /= 1024;
      i += 1;
    }
    return (i === 0 ? String(v) : v.toFixed(1)) + " " + units[i];
  }

  function duration(ms) {
    let s = Math.floor(ms / 1000);
    const d = Math.floor(s / 86400);
    s -= d * 86400;
    const h = Math.floor(s / 3600);
    s -= h * 3600;
    const m = Math.floor(s / 60);
    s -= m * 60;
    const parts = [];
    if (d) parts.push(d + "d");
    if (d || h) parts.push(h + "h");
    if (d || h || m) parts.push(m + "m");
    parts.push(s + "s");
    return parts.join(" ");
  }

  function when(ms) {
    if (!ms) return "–";
    const d = new Date(ms);
    return isNaN(d.getTime()) ? String(ms) : d.toISOString().replace("T", " ").replace("Z", " UTC");
  }

  function rate(v) {
    return v === null || v === undefined ? "–" : v.toFixed(1) + "/s";
  }

  // ----------------------------------------------------------------------------------------
  // Banners: errors and notices.

  let errorSource = null;

  function showError(message, source) {
    errorSource = source || "action";
    setText($("error-text"), message);
    $("error").hidden = false;
  }

  function clearError(source) {
    if (source && errorSource !== source) return;
    errorSource = null;
    $("error").hidden = true;
    setText($("error-text"), "");
  }

  let noticeTimer = null;

  function notice(message) {
    setText($("notice"), message);
    $("notice").hidden = false;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => {
      $("notice").hidden = true;
    }, 8000);
  }

  // ----------------------------------------------------------------------------------------
  // The API.

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  function credentials() {
    try {
      return sessionStorage.getItem(AUTH_KEY);
    } catch (_) {
      return null;
    }
  }

  function utf8Base64(text) {
    const b = new TextEncoder().encode(text);
    let s = "";
    for (const x of b) s += String.fromCharCode(x);
    return btoa(s);
  }

  // One request. Resolves to the parsed JSON answer; rejects with an ApiError whose message is
  // the broker's own reason when it gave one.
  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    const auth = credentials();
    if (auth) headers.Authorization = "Basic " + auth;
    if (method !== "GET") headers["Content-Type"] = "application/json";
    let resp;
    try {
      // credentials "omit": the console sends its own Authorization header, and a 401 must come
      // back to this script rather than open the browser's login dialog.
      resp = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: "omit",
        cache: "no-store",
      });
    } catch (e) {
      throw new ApiError(0, "the broker did not answer (" + e.message + ")");
    }
    const text = await resp.text();
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch (_) {
      json = null;
    }
    if (!resp.ok) {
      const reason =
        json && typeof json.error === "string" ? json.error : text.trim() || resp.statusText;
      if (resp.status === 401) askLogin(reason);
      throw new ApiError(resp.status, resp.status + ": " + reason);
    }
    return json;
  }

  const seg = encodeURIComponent;

  // A state change started by a button: shows the broker's answer, either way.
  async function act(what, method, path, body, done) {
    try {
      const v = await api(method, path, body);
      clearError("action");
      if (done) done(v);
      else notice(what + ": done");
      refreshNow();
      return v;
    } catch (e) {
      showError(what + " failed: " + e.message, "action");
      return null;
    }
  }

  // ----------------------------------------------------------------------------------------
  // Login (only when the broker has [security] users).

  function askLogin(reason) {
    const form = $("login");
    setText($("login-reason"), reason);
    if (form.hidden) {
      form.hidden = false;
      $("view").hidden = true;
      $("login-user").focus();
    }
  }

  function setupLogin() {
    $("login").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const user = $("login-user").value;
      const password = $("login-password").value;
      try {
        sessionStorage.setItem(AUTH_KEY, utf8Base64(user + ":" + password));
      } catch (_) {
        showError("this browser refuses session storage: cannot keep the login", "action");
        return;
      }
      $("login-password").value = "";
      $("login").hidden = true;
      $("view").hidden = false;
      showWho();
      clearError();
      route();
    });
    $("logout").addEventListener("click", () => {
      try {
        sessionStorage.removeItem(AUTH_KEY);
      } catch (_) {
        // Nothing kept, nothing to forget.
      }
      showWho();
      route();
    });
    $("error-close").addEventListener("click", () => clearError());
  }

  function showWho() {
    const auth = credentials();
    let user = "";
    if (auth) {
      try {
        const raw = atob(auth);
        const bytes = Uint8Array.from(raw, (c) => c.charCodeAt(0));
        user = new TextDecoder().decode(bytes).split(":")[0];
      } catch (_) {
        user = "?";
      }
    }
    setText($("who"), user ? "logged in as " + user : "");
    $("logout").hidden = !auth;
  }

  // ----------------------------------------------------------------------------------------
  // A table whose rows are kept across refreshes (keyed), so that a row's buttons stay the
  // same elements while the numbers change under them.
  //
  // columns: [{key, label, num?, fmt?(row), link?(row)}]; actions(row) -> [button]

  function table(opts) {
    const state = { sort: opts.sort || opts.key, dir: opts.dir || 1, filter: "", rows: [] };
    const rows = new Map();
    const tbody = el("tbody");
    const heads = opts.columns.map((c) => {
      const th = el("th", { "data-col": c.key, class: c.num ? "num sortable" : "sortable", title: "sort" }, c.label);
      th.addEventListener("click", () => {
        state.dir = state.sort === c.key ? -state.dir : c.num ? -1 : 1;
        state.sort = c.key;
        render();
      });
      return th;
    });
    if (opts.actions) heads.push(el("th", {}, ""));
    const empty = el("p", { class: "muted empty", hidden: true }, opts.empty || "nothing here");
    const filter = opts.filter
      ? el("input", { type: "search", placeholder: "filter by name", class: "filter", "aria-label": "filter by name" })
      : null;
    if (filter)
      filter.addEventListener("input", () => {
        state.filter = filter.value.toLowerCase();
        render();
      });
    const t = el("table", { class: "grid " + (opts.cls || "") }, el("thead", {}, el("tr", {}, heads)), tbody);
    const root = el("div", { class: "table-wrap" }, filter, t, empty);

    function cellValue(c, r) {
      return c.fmt ? c.fmt(r) : c.num ? num(r[c.key]) : r[c.key] === null || r[c.key] === undefined ? "–" : String(r[c.key]);
    }

    function makeRow(r) {
      const tr = el("tr", { "data-key": r[opts.key] });
      const cells = opts.columns.map((c) => {
        const td = el("td", { "data-col": c.key, class: c.num ? "num" : "" });
        if (c.link) {
          const a = el("a", { href: c.link(r) });
          td.appendChild(a);
        }
        tr.appendChild(td);
        return td;
      });
      if (opts.actions) tr.appendChild(el("td", { class: "actions" }, opts.actions(r, () => tr.row)));
      return { tr, cells };
    }

    function render() {
      const f = state.filter;
      const shown = state.rows.filter((r) => !f || String(r[opts.key]).toLowerCase().includes(f));
      const col = opts.columns.find((c) => c.key === state.sort) || opts.columns[0];
      shown.sort((a, b) => {
        const x = a[col.key];
        const y = b[col.key];
        let d;
        if (typeof x === "number" && typeof y === "number") d = x - y;
        else d = String(x === null || x === undefined ? "" : x).localeCompare(String(y === null || y === undefined ? "" : y));
        if (d === 0) d = String(a[opts.key]).localeCompare(String(b[opts.key]));
        return d * state.dir;
      });
      const keep = new Set();
      for (const r of shown) {
        const k = String(r[opts.key]);
        keep.add(k);
        let row = rows.get(k);
        if (!row) {
          row = makeRow(r);
          rows.set(k, row);
        }
        row.tr.row = r;
        opts.columns.forEach((c, i) => {
          const target = c.link ? row.cells[i].firstChild : row.cells[i];
          setText(target, cellValue(c, r));
        });
        // appendChild moves an existing row: the same element, now in sorted position.
        tbody.appendChild(row.tr);
      }
      for (const [k, row] of rows) {
        if (!keep.has(k)) {
          row.tr.remove();
          rows.delete(k);
        }
      }
      heads.forEach((th) => {
        const key = th.getAttribute("data-col");
        th.classList.toggle("sorted-asc", key === state.sort && state.dir > 0);
        th.classList.toggle("sorted-desc", key === state.sort && state.dir < 0);
      });
      empty.hidden = shown.length > 0;
    }

    return {
      root,
      update(list) {
        state.rows = list;
        render();
      },
    };
  }

  function button(label, onClick, cls) {
    const b = el("button", { type: "button", class: cls || "" }, label);
    b.addEventListener("click", onClick);
    return b;
  }

  // ----------------------------------------------------------------------------------------
  // Rate charts: per-second rates from successive polls of cumulative counters, drawn on a
  // canvas.

  function rateSeries(names) {
    let prev = null;
    const points = [];
    return {
      names,
      points,
      // counters: {name: cumulative count}; at: ms (monotonic)
      add(counters, at) {
        if (prev) {
          const dt = (at - prev.at) / 1000;
          const p = { at };
          let reset = false;
          for (const n of names) {
            const d = counters[n] - prev.counters[n];
            // A counter going down means a new broker (failover, restart): not a rate.
            if (d < 0) reset = true;
            p[n] = dt > 0 ? d / dt : 0;
          }
          if (!reset && dt > 0) points.push(p);
          while (points.length > CHART_POINTS) points.shift();
        }
        prev = { at, counters };
      },
      // A pause in polling (hidden page): the next sample starts a new interval.
      gap() {
        prev = null;
      },
      last() {
        return points.length ? points[points.length - 1] : null;
      },
    };
  }

  const SERIES_COLOURS = { enqueued: "#2f6fdf", dequeued: "#e07b00" };

  function chart(series, title) {
    const canvas = el("canvas", { class: "chart", width: 640, height: 180, role: "img", "aria-label": title });
    const readout = el("div", { class: "chart-readout" });
    const legend = series.names.map((n) => {
      const value = el("span", { class: "value", "data-series": n }, "–");
      readout.appendChild(el("span", { class: "legend" }, el("span", { class: "swatch swatch-" + n }), n + " ", value));
      return value;
    });
    const root = el("section", { class: "card chart-card" }, el("h3", {}, title), canvas, readout);

    function draw() {
      const ratio = window.devicePixelRatio || 1;
      const cssW = canvas.clientWidth || 640;
      const cssH = canvas.clientHeight || 180;
      if (canvas.width !== Math.round(cssW * ratio)) canvas.width = Math.round(cssW * ratio);
      if (canvas.height !== Math.round(cssH * ratio)) canvas.height = Math.round(cssH * ratio);
      const g = canvas.getContext("2d");
      if (!g) return;
      g.setTransform(ratio, 0, 0, ratio, 0, 0);
      g.clearRect(0, 0, cssW, cssH);
      const left = 52;
      const right = 8;
      const top = 8;
      const bottom = 20;
      const w = cssW - left - right;
      const h = cssH - top - bottom;
      let max = 0;
      for (const p of series.points) for (const n of series.names) max = Math.max(max, p[n]);
      // A round top for the scale: 1, 2 or 5 × 10^k, at least 1 message/s.
      const top10 = Math.pow(10, Math.floor(Math.log10(Math.max(max, 1))));
      const f = Math.max(max, 1) / top10;
      const scale = (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * top10;
      g.font = "11px sans-serif";
      g.fillStyle = "#666";
      g.strokeStyle = "#ddd";
      g.lineWidth = 1;
      for (let i = 0; i <= 4; i += 1) {
        const y = top + h - (h * i) / 4;
        g.beginPath();
        g.moveTo(left, y + 0.5);
        g.lineTo(left + w, y + 0.5);
        g.stroke();
        const v = (scale * i) / 4;
        g.fillText(String(Number(v.toFixed(2))), 4, y + 4);
      }
      g.fillText("last " + Math.round((CHART_POINTS * POLL_MS) / 1000) + " s, messages/s", left, cssH - 4);
      for (const n of series.names) {
        g.strokeStyle = SERIES_COLOURS[n] || "#333";
        g.lineWidth = 2;
        g.beginPath();
        series.points.forEach((p, i) => {
          const x = left + w - ((series.points.length - 1 - i) * w) / (CHART_POINTS - 1);
          const y = top + h - (p[n] / scale) * h;
          if (i === 0) g.moveTo(x, y);
          else g.lineTo(x, y);
        });
        g.stroke();
      }
      const last = series.last();
      series.names.forEach((n, i) => setText(legend[i], rate(last ? last[n] : null)));
    }

    return { root, draw };
  }

  // ----------------------------------------------------------------------------------------
  // The send form, on the queues page (with a queue name field) and on a queue's page.

  function sendForm(fixedQueue) {
    const queue = fixedQueue
      ? null
      : el("input", { name: "queue", id: "send-queue", required: true, placeholder: "queue name" });
    const body = el("textarea", { name: "body", id: "send-body", rows: 4, placeholder: "message body (text)" });
    const headers = el("textarea", { name: "headers", id: "send-headers", rows: 2, placeholder: "headers, one per line: name: value" });
    const priority = el("input", { name: "priority", id: "send-priority", type: "number", min: 0, max: 9, value: 4 });
    const ttl = el("input", { name: "ttl_ms", id: "send-ttl", type: "number", min: 0, placeholder: "never" });
    const persistent = el("input", { name: "persistent", id: "send-persistent", type: "checkbox", checked: true });
    const submit = el("button", { type: "submit", id: "send-submit" }, "Send");
    const form = el(
      "form",
      { class: "card send", id: "send-form" },
      el("h3", {}, fixedQueue ? "Send a message to " + fixedQueue : "Send a message"),
      queue ? el("label", {}, "Queue ", queue) : null,
      el("label", { class: "wide" }, "Body ", body),
      el("label", { class: "wide" }, "Headers ", headers),
      el("label", {}, "Priority ", priority),
      el("label", {}, "TTL (ms) ", ttl),
      el("label", { class: "check" }, persistent, " persistent"),
      submit,
    );
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const name = fixedQueue || queue.value.trim();
      const msg = { body: body.value, persistent: persistent.checked };
      const hs = {};
      for (const line of headers.value.split("\n")) {
        if (!line.trim()) continue;
        const i = line.indexOf(":");
        if (i <= 0) {
          showError("send failed: a header line needs \"name: value\": " + line, "action");
          return;
        }
        hs[line.slice(0, i).trim()] = line.slice(i + 1).trim();
      }
      if (Object.keys(hs).length) msg.headers = hs;
      if (priority.value !== "") msg.priority = Number(priority.value);
      if (ttl.value !== "") msg.ttl_ms = Number(ttl.value);
      submit.disabled = true;
      try {
        await act("send to " + name, "POST", "/api/v1/queues/" + seg(name) + "/messages", msg, (v) =>
          notice("sent " + v.id + " to " + name),
        );
      } finally {
        submit.disabled = false;
      }
    });
    return form;
  }

  // ----------------------------------------------------------------------------------------
  // Pages. Each has mount(view) once and refresh() on every poll; refresh rejects on an API
  // error, which the poll loop shows.

  function dl(pairs) {
    const d = el("dl", { class: "facts" });
    const values = {};
    for (const [key, label] of pairs) {
      const dd = el("dd", { "data-field": key }, "–");
      values[key] = dd;
      d.appendChild(el("dt", {}, label));
      d.appendChild(dd);
    }
    return { root: d, set: (key, v) => setText(values[key], v) };
  }

  function queueTotals(queues) {
    let enqueued = 0;
    let dequeued = 0;
    for (const q of queues) {
      enqueued += q.enqueued;
      dequeued += q.dequeued;
    }
    return { enqueued, dequeued };
  }

  function overviewPage() {
    const facts = dl([
      ["name", "Broker"],
      ["version", "Version"],
      ["uptime", "Uptime"],
      ["ha", "HA mode / role / epoch"],
      ["stomp", "STOMP"],
      ["connections", "Connections"],
      ["destinations", "Queues / topic subscriptions"],
      ["dispatch", "Dispatch"],
    ]);
    const store = dl([
      ["store_kind", "Backend"],
      ["store_usage", "Usage / limit"],
      ["memory_used", "Memory held by destinations"],
      ["memory_limits", "Limit per queue / per subscriber"],
    ]);
    const bar = el("div", { class: "bar" }, el("div", { class: "bar-fill" }));
    const series = rateSeries(["enqueued", "dequeued"]);
    const c = chart(series, "Queue messages per second (all queues)");
    return {
      series,
      mount(view) {
        view.appendChild(el("h2", {}, "Overview"));
        view.appendChild(
          el(
            "div",
            { class: "cards" },
            el("section", { class: "card" }, el("h3", {}, "Broker"), facts.root),
            el("section", { class: "card" }, el("h3", {}, "Store and memory"), store.root, bar),
          ),
        );
        view.appendChild(c.root);
      },
      async refresh() {
        const b = await api("GET", "/api/v1/broker");
        setText($("broker-name"), b.name);
        facts.set("name", b.name);
        facts.set("version", b.version);
        facts.set("uptime", duration(b.uptime_ms));
        facts.set("ha", b.ha_mode + " / " + b.role + " / " + b.epoch);
        facts.set("stomp", b.stomp || "–");
        facts.set("connections", b.connections === undefined ? "– (not serving)" : num(b.connections));
        facts.set(
          "destinations",
          b.destinations ? num(b.destinations.queues) + " / " + num(b.destinations.topic_subscriptions) : "–",
        );
        facts.set("dispatch", b.dispatch_paused === undefined ? "–" : b.dispatch_paused ? "paused" : "running");
        if (b.store) {
          const lim = b.store.usage_limit_bytes;
          store.set("store_kind", b.store.kind);
          store.set("store_usage", bytes(b.store.usage_bytes) + " / " + (lim ? bytes(lim) : "no limit"));
          const pct = lim ? Math.min(100, (100 * b.store.usage_bytes) / lim) : 0;
          bar.firstChild.style.width = pct.toFixed(1) + "%";
          bar.hidden = !lim;
        } else {
          store.set("store_kind", "– (the master's store)");
          store.set("store_usage", "–");
          bar.hidden = true;
        }
        if (b.memory) {
          store.set("memory_used", bytes(b.memory.used_bytes));
          store.set(
            "memory_limits",
            bytes(b.memory.destination_limit_bytes) + " / " + bytes(b.memory.topic_subscriber_limit_bytes),
          );
        } else {
          store.set("memory_used", "–");
          store.set("memory_limits", "–");
        }
        if (b.role === "master") {
          const q = await api("GET", "/api/v1/queues");
          series.add(queueTotals(q.queues), performance.now());
        }
        c.draw();
      },
    };
  }

  function queuesPage() {
    const t = table({
      key: "name",
      filter: true,
      cls: "queues",
      empty: "no queues",
      columns: [
        { key: "name", label: "Name", link: (r) => "#/queue/" + seg(r.name) },
        { key: "depth", label: "Depth", num: true },
        { key: "pending", label: "Pending", num: true },
        { key: "inflight", label: "In flight", num: true },
        { key: "consumers", label: "Consumers", num: true },
        { key: "producers", label: "Producers", num: true },
        { key: "enqueued", label: "Enqueued", num: true },
        { key: "dequeued", label: "Dequeued", num: true },
        { key: "dispatched", label: "Dispatched", num: true },
        { key: "expired", label: "Expired", num: true },
        { key: "dead_lettered", label: "Dead-lettered", num: true },
        { key: "memory_bytes", label: "Memory", num: true, fmt: (r) => bytes(r.memory_bytes) },
      ],
      actions: (r, current) => [
        button("Purge", () => purgeQueue(current().name), "purge"),
        button("Delete", () => deleteQueue(current().name), "danger delete"),
      ],
    });
    return {
      mount(view) {
        view.appendChild(el("h2", {}, "Queues"));
        view.appendChild(t.root);
        view.appendChild(sendForm(null));
      },
      async refresh() {
        const v = await api("GET", "/api/v1/queues");
        t.update(v.queues);
      },
    };
  }

  function purgeQueue(name) {
    if (!window.confirm("Purge every waiting message of " + name + "?")) return;
    act("purge " + name, "POST", "/api/v1/queues/" + seg(name) + "/purge", {}, (v) =>
      notice("purged " + v.purged + " message(s) from " + v.queue),
    );
  }

  function deleteQueue(name) {
    if (!window.confirm("Delete queue " + name + " and its messages?")) return;
    act("delete queue " + name, "DELETE", "/api/v1/queues/" + seg(name), undefined, () => {
      notice("deleted queue " + name);
      if (location.hash.startsWith("#/queue/")) location.hash = "#/queues";
    });
  }

  function topicsPage() {
    const t = table({
      key: "name",
      filter: true,
      cls: "topics",
      empty: "no topics (a topic is listed while it has subscriptions)",
      columns: [
        { key: "name", label: "Name" },
        { key: "subscriptions", label: "Subscriptions", num: true },
        { key: "durable_subscriptions", label: "Durable", num: true },
        { key: "consumers", label: "Consumers", num: true },
        { key: "depth", label: "Depth", num: true },
        { key: "inflight", label: "In flight", num: true },
        { key: "enqueued", label: "Enqueued", num: true },
        { key: "dequeued", label: "Dequeued", num: true },
        { key: "dispatched", label: "Dispatched", num: true },
        { key: "expired", label: "Expired", num: true },
        { key: "dead_lettered", label: "Dead-lettered", num: true },
        { key: "discarded", label: "Discarded", num: true },
        { key: "memory_bytes", label: "Memory", num: true, fmt: (r) => bytes(r.memory_bytes) },
      ],
      actions: (r, current) => [
        button(
          "Delete",
          () => {
            const name = current().name;
            if (!window.confirm("Delete topic " + name + "?")) return;
            act("delete topic " + name, "DELETE", "/api/v1/topics/" + seg(name));
          },
          "danger delete",
        ),
      ],
    });
    return {
      mount(view) {
        view.appendChild(el("h2", {}, "Topics"));
        view.appendChild(t.root);
      },
      async refresh() {
        const v = await api("GET", "/api/v1/topics");
        t.update(v.topics);
      },
    };
  }

  function subscriptionsPage() {
    const problem = el("p", { class: "page-error", id: "page-error", hidden: true });
    const t = table({
      key: "key",
      filter: false,
      cls: "subscriptions",
      empty: "no durable subscriptions",
      sort: "topic",
      columns: [
        { key: "client_id", label: "Client id" },
        { key: "name", label: "Subscription" },
        { key: "topic", label: "Topic" },
        { key: "selector", label: "Selector" },
        { key: "active", label: "Active", fmt: (r) => (r.active ? "yes" : "no") },
        { key: "pending", label: "Pending", num: true },
      ],
      actions: (r, current) => [
        button(
          "Delete",
          () => {
            const s = current();
            if (!window.confirm("Delete durable subscription " + s.client_id + "/" + s.name + "?")) return;
            act(
              "delete subscription " + s.client_id + "/" + s.name,
              "DELETE",
              "/api/v1/subscriptions/" + seg(s.client_id) + "/" + seg(s.name),
            );
          },
          "danger delete",
        ),
      ],
    });
    return {
      mount(view) {
        view.appendChild(el("h2", {}, "Durable topic subscribers"));
        view.appendChild(problem);
        view.appendChild(t.root);
      },
      async refresh() {
        let v;
        try {
          v = await api("GET", "/api/v1/subscriptions");
        } catch (e) {
          // Shown on the page too: this endpoint is newer than the others, and an older broker
          // answers 404 here.
          setText(problem, "cannot list subscriptions: " + e.message);
          problem.hidden = false;
          throw e;
        }
        problem.hidden = true;
        const list = Array.isArray(v) ? v : (v && v.subscriptions) || [];
        t.update(list.map((s) => Object.assign({ key: s.client_id + "/" + s.name }, s)));
      },
    };
  }

  function connectionsPage() {
    const t = table({
      key: "key",
      filter: false,
      cls: "connections",
      empty: "no client connections",
      sort: "since_ms",
      columns: [
        { key: "protocol", label: "Protocol" },
        { key: "remote", label: "Remote" },
        { key: "since_ms", label: "Since", fmt: (r) => when(r.since_ms) },
        { key: "login", label: "Login" },
        { key: "client_id", label: "Client id" },
      ],
      actions: (r, current) => [
        button(
          "Close",
          () => {
            const c = current();
            if (!window.confirm("Close connection " + c.remote + "?")) return;
            act("close connection " + c.remote, "DELETE", "/api/v1/connections/" + seg(String(c.key)));
          },
          "danger close",
        ),
      ],
    });
    return {
      mount(view) {
        view.appendChild(el("h2", {}, "Connections"));
        view.appendChild(t.root);
      },
      async refresh() {
        const v = await api("GET", "/api/v1/connections");
        // A connection's id names it for closing; a broker that lists none is named by the
        // remote address (its answer to the close then says what it thinks of that).
        t.update(v.connections.map((c) => Object.assign({ key: c.id === undefined ? c.remote : c.id }, c)));
      },
    };
  }

  // HA (mode, role, epoch; the failover history; a replicating master's slaves with their lag)
  // and the network bridges, from /api/v1/ha and /api/v1/bridges.
  function clusterPage() {
    const facts = dl([
      ["mode", "HA mode"],
      ["role", "Role"],
      ["epoch", "Epoch"],
      ["sync", "Sync / replicas"],
      ["log", "Log position (assigned / local)"],
      ["masterships", "Masterships / lost"],
      ["last_master", "Last became master"],
      ["suspended", "Suspended (now / times / total)"],
      ["history", "History since / this process since"],
    ]);
    const slaves = table({
      key: "member",
      filter: false,
      cls: "slaves",
      empty: "no slaves connected (or this broker does not replicate)",
      columns: [
        { key: "member", label: "Slave" },
        { key: "acked_lsn", label: "Acknowledged", num: true },
        { key: "lag_entries", label: "Lag (entries)", num: true },
        { key: "queued_bytes", label: "Queued", num: true, fmt: (r) => bytes(r.queued_bytes) },
      ],
    });
    // The recent failover events, newest first (failover.history; at most 20 kept).
    const events = table({
      key: "key",
      sort: "at_unix_ms",
      dir: -1,
      filter: false,
      cls: "ha-events",
      empty: "no failover events recorded",
      columns: [
        { key: "at_unix_ms", label: "When", fmt: (r) => when(r.at_unix_ms) },
        { key: "kind", label: "Event", fmt: (r) => r.kind.replace("_", " ") },
        { key: "epoch", label: "Epoch", num: true, fmt: (r) => (r.epoch === undefined ? "–" : String(r.epoch)) },
        { key: "detail", label: "Detail" },
      ],
    });
    const bridges = table({
      key: "name",
      filter: false,
      cls: "bridges",
      empty: "no network bridges",
      columns: [
        { key: "name", label: "Bridge" },
        { key: "remote", label: "Remote", fmt: (r) => (r.remote || "?") + " (" + r.addrs.join(", ") + ")" },
        { key: "state", label: "State" },
        { key: "connects", label: "Connects", num: true },
        { key: "network_consumers", label: "Network consumers", num: true },
        { key: "forwarded", label: "Forwarded", num: true },
        { key: "pulled", label: "Pulled", num: true },
      ],
    });
    return {
      mount(view) {
        view.appendChild(el("h2", {}, "Cluster"));
        view.appendChild(el("section", { class: "card" }, el("h3", {}, "High availability"), facts.root));
        view.appendChild(el("h3", {}, "Failover history (newest first)"));
        view.appendChild(events.root);
        view.appendChild(el("h3", {}, "Slaves"));
        view.appendChild(slaves.root);
        view.appendChild(el("h3", {}, "Network bridges"));
        view.appendChild(bridges.root);
      },
      async refresh() {
        const h = await api("GET", "/api/v1/ha");
        facts.set("mode", h.mode);
        facts.set("role", h.role);
        facts.set("epoch", String(h.epoch));
        facts.set("sync", h.sync ? h.sync + " / " + h.replicas : "–");
        const r = h.replication;
        facts.set("log", r ? num(r.last_lsn) + " / " + num(r.local_lsn) : "–");
        const f = h.failover;
        facts.set("masterships", num(f.masterships) + " / " + num(f.lost_masterships));
        const became = f.last_became_master;
        facts.set("last_master", became ? when(became.at_unix_ms) + ", epoch " + became.epoch + ": " + became.reason : "–");
        const suspended = f.suspended_now ? "yes, since " + when(f.suspended_since_unix_ms) : "no";
        facts.set("suspended", suspended + " / " + num(f.suspensions) + " / " + duration(f.suspended_ms_total));
        facts.set("history", when(f.since_unix_ms) + " / " + when(f.process_started_unix_ms));
        events.update(
          (f.history || []).map((e, i) => {
            const at = e.kind === "suspension" ? e.from_unix_ms : e.at_unix_ms;
            let detail = e.reason || "";
            if (e.kind === "became_master" && e.takeover_ms !== null) detail += " (takeover " + duration(e.takeover_ms) + ")";
            if (e.kind === "suspension") {
              if (e.duration_ms === null) detail = "suspended; the process ended during it";
              else detail = "suspended " + duration(e.duration_ms) + (e.to_unix_ms === null ? ", ongoing" : "");
            }
            return { key: String(i), at_unix_ms: at, kind: e.kind, epoch: e.epoch, detail: detail };
          })
        );
        slaves.update(r ? r.slaves : []);
        const b = await api("GET", "/api/v1/bridges");
        bridges.update(b.bridges);
      },
    };
  }

  function queuePage(name) {
    const base = "/api/v1/queues/" + seg(name);
    const facts = dl([
      ["depth", "Depth"],
      ["pending", "Pending"],
      ["inflight", "In flight"],
      ["consumers", "Consumers"],
      ["enqueued", "Enqueued"],
      ["dequeued", "Dequeued"],
      ["dead_lettered", "Dead-lettered"],
      ["memory", "Memory"],
      ["paged_out", "Paged out to the store"],
    ]);
    const series = rateSeries(["enqueued", "dequeued"]);
    const c = chart(series, "Messages per second in " + name);
    let page = 0;
    let pageSize = PAGE_SIZES[0];
    const target = el("input", { id: "target-queue", placeholder: "to queue", "aria-label": "target queue for move and copy" });
    const range = el("span", { class: "muted", id: "browse-range" });
    const prev = button("◀ Previous", () => {
      page = Math.max(0, page - 1);
      refreshNow();
    });
    prev.id = "browse-prev";
    const next = button("Next ▶", () => {
      page += 1;
      refreshNow();
    });
    next.id = "browse-next";
    const size = el("select", { id: "browse-size", "aria-label": "messages per page" }, PAGE_SIZES.map((n) => el("option", { value: n }, String(n))));
    size.addEventListener("change", () => {
      pageSize = Number(size.value);
      page = 0;
      refreshNow();
    });
    const detail = el("section", { class: "card detail", id: "message-detail", hidden: true });

    function messageAction(label, cls, fn) {
      return (r, current) => button(label, () => fn(current()), cls);
    }

    function needTarget(what) {
      const to = target.value.trim();
      if (!to) showError(what + ": enter the target queue first", "action");
      return to;
    }

    const msgPath = (m) => base + "/messages/" + seg(m.id);
    const actions = [
      messageAction("View", "view", (m) => showMessage(m)),
      messageAction("Delete", "danger delete", (m) => {
        if (!window.confirm("Delete message " + m.id + "?")) return;
        act("delete " + m.id, "DELETE", msgPath(m));
      }),
      messageAction("Move", "move", (m) => {
        const to = needTarget("move " + m.id);
        if (to) act("move " + m.id + " to " + to, "POST", msgPath(m) + "/move", { to });
      }),
      messageAction("Copy", "copy", (m) => {
        const to = needTarget("copy " + m.id);
        if (to) act("copy " + m.id + " to " + to, "POST", msgPath(m) + "/copy", { to });
      }),
      messageAction("Retry", "retry", (m) => act("retry " + m.id, "POST", msgPath(m) + "/retry", {})),
    ];
    const t = table({
      key: "id",
      filter: false,
      cls: "messages",
      empty: "no messages waiting (messages in flight to a consumer are not shown)",
      sort: "order",
      columns: [
        { key: "order", label: "#", num: true },
        { key: "id", label: "Message id" },
        { key: "priority", label: "Priority", num: true },
        { key: "persistent", label: "Persistent", fmt: (r) => (r.persistent ? "yes" : "no") },
        { key: "timestamp_ms", label: "Sent", fmt: (r) => when(r.timestamp_ms) },
        { key: "preview", label: "Body" },
      ],
      actions: (r, current) => actions.map((a) => a(r, current)),
    });

    function showMessage(m) {
      detail.textContent = "";
      detail.hidden = false;
      const rows = [
        ["id", m.id],
        ["persistent", String(m.persistent)],
        ["priority", String(m.priority)],
        ["timestamp", when(m.timestamp_ms)],
        ["expires", m.expires_ms ? when(m.expires_ms) : "never"],
      ];
      for (const [k, v] of Object.entries(m.headers || {})) rows.push([k, v]);
      const body = m.body !== undefined ? m.body : m.body_base64;
      detail.appendChild(el("h3", {}, "Message ", el("code", { id: "detail-id" }, m.id)));
      detail.appendChild(
        el(
          "table",
          { class: "grid headers", id: "detail-headers" },
          el("tbody", {}, rows.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v)))),
        ),
      );
      detail.appendChild(el("h4", {}, m.body !== undefined ? "Body" : "Body (binary, base64)"));
      detail.appendChild(el("pre", { class: "body", id: "detail-body" }, body || ""));
      detail.appendChild(button("Close", () => (detail.hidden = true)));
    }

    return {
      series,
      mount(view) {
        view.appendChild(el("p", { class: "crumbs" }, el("a", { href: "#/queues" }, "Queues"), " / "));
        view.appendChild(el("h2", {}, "Queue ", el("span", { id: "queue-name" }, name)));
        view.appendChild(
          el(
            "div",
            { class: "toolbar" },
            button("Purge", () => purgeQueue(name), "purge"),
            button("Retry all", () => act("retry the messages of " + name, "POST", base + "/retry", {}), "retry-all"),
            button("Delete queue", () => deleteQueue(name), "danger delete"),
          ),
        );
        view.appendChild(el("div", { class: "cards" }, el("section", { class: "card" }, el("h3", {}, "Counters"), facts.root), c.root));
        view.appendChild(
          el(
            "section",
            { class: "card" },
            el("h3", {}, "Messages"),
            el("div", { class: "toolbar" }, prev, range, next, size, el("span", { class: "spacer" }), "Move / copy to ", target),
            t.root,
          ),
        );
        view.appendChild(detail);
        view.appendChild(sendForm(name));
      },
      async refresh() {
        const q = await api("GET", base);
        facts.set("depth", num(q.depth));
        facts.set("pending", num(q.pending));
        facts.set("inflight", num(q.inflight));
        facts.set("consumers", num(q.consumers));
        facts.set("enqueued", num(q.enqueued));
        facts.set("dequeued", num(q.dequeued));
        facts.set("dead_lettered", num(q.dead_lettered));
        facts.set("memory", bytes(q.memory_bytes) + (q.memory_limit_bytes ? " of " + bytes(q.memory_limit_bytes) : ""));
        facts.set("paged_out", num(q.paged_out));
        series.add({ enqueued: q.enqueued, dequeued: q.dequeued }, performance.now());
        c.draw();
        // The API browses the first N messages; a page is a slice of them.
        const want = (page + 1) * pageSize;
        const v = await api("GET", base + "/messages?limit=" + want);
        const from = page * pageSize;
        const slice = v.messages.slice(from, want).map((m, i) => {
          const text = m.body !== undefined ? m.body : "(binary, " + m.body_base64.length + " base64 chars)";
          return Object.assign({ order: from + i + 1, preview: text.length > 80 ? text.slice(0, 80) + "…" : text }, m);
        });
        t.update(slice);
        setText(range, slice.length ? "messages " + (from + 1) + "–" + (from + slice.length) : "no messages on this page");
        prev.disabled = page === 0;
        // A full page may have more behind it.
        next.disabled = v.messages.length < want;
      },
    };
  }

  // ----------------------------------------------------------------------------------------
  // Routing and polling.

  let current = null;
  let generation = 0;
  let timer = null;
  // One request chain at a time: a poll asked for while one runs is run right after it.
  let polling = false;
  let pollAgain = false;

  function parseRoute() {
    const h = location.hash || "#/";
    if (h.startsWith("#/queue/")) {
      let name;
      try {
        name = decodeURIComponent(h.slice("#/queue/".length));
      } catch (_) {
        name = null;
      }
      return name ? { id: "queues", page: () => queuePage(name) } : { id: "overview", page: overviewPage };
    }
    const pages = {
      "#/": ["overview", overviewPage],
      "#/queues": ["queues", queuesPage],
      "#/topics": ["topics", topicsPage],
      "#/subscriptions": ["subscriptions", subscriptionsPage],
      "#/connections": ["connections", connectionsPage],
      "#/cluster": ["cluster", clusterPage],
    };
    const [id, page] = pages[h] || pages["#/"];
    return { id, page };
  }

  function route() {
    generation += 1;
    clearTimeout(timer);
    const r = parseRoute();
    for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.getAttribute("data-route") === r.id);
    const view = $("view");
    view.textContent = "";
    current = r.page();
    current.mount(view);
    clearError("poll");
    poll();
    if (!$("broker-name").textContent) showBrokerName();
  }

  // The header names the broker on every page; the overview keeps it current.
  async function showBrokerName() {
    try {
      const b = await api("GET", "/api/v1/broker");
      setText($("broker-name"), b.name);
    } catch (_) {
      // The page's own poll shows the same failure.
    }
  }

  async function poll() {
    if (polling) {
      pollAgain = true;
      return;
    }
    const gen = generation;
    const page = current;
    // A timer may fire after the tab was hidden but before its visibilitychange event ran;
    // the event's handler starts polling again when the tab is shown.
    if (!page || !$("login").hidden || document.visibilityState !== "visible") return;
    polling = true;
    pollAgain = false;
    clearTimeout(timer);
    try {
      await page.refresh();
      if (gen === generation) clearError("poll");
    } catch (e) {
      if (gen === generation && e.status !== 401) showError(e.message, "poll");
    } finally {
      polling = false;
    }
    if (pollAgain || gen !== generation) {
      pollAgain = false;
      poll();
      return;
    }
    if (document.visibilityState === "visible") timer = setTimeout(poll, POLL_MS);
  }

  // After a change: show its effect now rather than at the next tick.
  function refreshNow() {
    poll();
  }

  function start() {
    setupLogin();
    showWho();
    window.addEventListener("hashchange", route);
    document.addEventListener("visibilitychange", () => {
      clearTimeout(timer);
      if (!current) return;
      if (document.visibilityState === "visible") {
        if (current.series) current.series.gap();
        poll();
      }
    });
    route();
  }

  start();
})();
