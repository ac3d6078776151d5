//! The admin CLI (`ferromq dstat`, `browse`, `purge`, `query`, `move`, `retry`,
//! `delete-queue`): requests to a broker's `/api/v1` and the tables printed from its answers. Rendering is kept apart from I/O so it is tested
//! without a broker.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use base64::Engine as _;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest answer read (a browse of 1,000 large messages fits; a runaway server does not).
const ANSWER_BYTES_MAX: u64 = 256 * 1024 * 1024;
/// Bound on connecting and on the whole exchange.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Basic-auth credentials for the admin API.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The user.
    pub user: String,
    /// Its password.
    pub password: String,
}

/// An admin address, `host:port`, `http://host:port` or `https://host:port` (the broker's
/// `transports.admin_tls`): the `host:port` and whether it is HTTPS.
pub fn admin_target(addr: &str) -> (&str, bool) {
    let a = addr.trim();
    if let Some(rest) = a.strip_prefix("https://") {
        (rest.trim_end_matches('/'), true)
    } else {
        let rest = a.strip_prefix("http://").unwrap_or(a);
        (rest.trim_end_matches('/'), false)
    }
}

/// One HTTP/1.1 request (`Connection: close`) to `addr` (see [`admin_target`]; `https://`
/// needs `tls`, the CA that signed the broker's certificate); returns the status and the body.
/// A JSON body is sent with `Content-Type: application/json`, as state-changing endpoints
/// require.
pub async fn request(
    addr: &str,
    method: &str,
    path: &str,
    auth: Option<&Credentials>,
    body: Option<&str>,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> anyhow::Result<(u16, String)> {
    let (target, https) = admin_target(addr);
    let exchange = async {
        let s = tokio::net::TcpStream::connect(target)
            .await
            .with_context(|| format!("connect to the admin API at {target}"))?;
        let mut head =
            format!("{method} {path} HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n");
        if let Some(c) = auth {
            let token = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", c.user, c.password));
            head.push_str(&format!("Authorization: Basic {token}\r\n"));
        }
        let body = body.unwrap_or("");
        if !body.is_empty() || method != "GET" {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        head.push_str(body);
        let raw = if https {
            let Some(tls) = tls else {
                bail!(
                    "{addr} is HTTPS: give the CA that signed the broker's certificate (--tls-ca)"
                );
            };
            let name = ferromq_client::tls::server_name(target)
                .with_context(|| format!("admin address {addr}"))?;
            let s = tokio_rustls::TlsConnector::from(tls.clone())
                .connect(name, s)
                .await
                .with_context(|| format!("TLS handshake with the admin API at {target}"))?;
            talk(s, head.as_bytes()).await?
        } else {
            talk(s, head.as_bytes()).await?
        };
        parse_response(&raw)
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow::anyhow!("the admin API at {addr} did not answer within {TIMEOUT:?}"))?
}

/// Writes `request` and reads the answer to the end of the connection (at most
/// [`ANSWER_BYTES_MAX`]).
async fn talk<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    request: &[u8],
) -> anyhow::Result<Vec<u8>> {
    s.write_all(request).await?;
    s.flush().await?;
    let mut raw = Vec::new();
    (&mut s)
        .take(ANSWER_BYTES_MAX)
        .read_to_end(&mut raw)
        .await?;
    Ok(raw)
}

/// Status code and body of a complete HTTP/1.1 response (`Content-Length`, chunked, or up to
/// the end of the connection).
pub fn parse_response(raw: &[u8]) -> anyhow::Result<(u16, String)> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("the admin API's answer has no end of headers")?;
    let head = std::str::from_utf8(&raw[..split]).context("answer headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("not an HTTP status line: {status_line:?}"))?;
    let mut chunked = false;
    let mut length = None;
    for l in lines {
        let Some((name, value)) = l.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        if name == "transfer-encoding" && value.eq_ignore_ascii_case("chunked") {
            chunked = true;
        } else if name == "content-length" {
            length = value.parse::<usize>().ok();
        }
    }
    let rest = &raw[split + 4..];
    let body = if chunked {
        dechunk(rest)?
    } else {
        match length {
            Some(n) if n <= rest.len() => rest[..n].to_vec(),
            Some(n) => bail!("answer cut short: {} of {n} bytes", rest.len()),
            None => rest.to_vec(),
        }
    };
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut rest: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("chunked answer cut short")?;
        let size_text = std::str::from_utf8(&rest[..eol])?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .with_context(|| format!("bad chunk size {size_text:?}"))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if rest.len() < size + 2 {
            bail!("chunked answer cut short");
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// The body of a 2xx answer, or an error carrying the API's `{"error": …}` reason.
pub fn ok_body((status, body): (u16, String)) -> anyhow::Result<String> {
    if (200..300).contains(&status) {
        return Ok(body);
    }
    let reason = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or(body);
    bail!("the admin API answered {status}: {reason}")
}

/// Percent-encodes a destination name for a URL path segment.
pub fn path_segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn num(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

fn text(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// Rows as aligned columns (numbers right-aligned), two spaces apart.
fn table(header: &[&str], rows: &[Vec<String>], numeric: &[bool]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if numeric.get(i).copied().unwrap_or(false) {
                    format!("{c:>w$}", w = widths[i])
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect();
        parts.join("  ").trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r.clone()));
    }
    out
}

/// `ferromq dstat`: one line per queue and topic, like `activemq dstat` (name, size, producers,
/// consumers, enqueued, dequeued, dispatched, expired, memory). `kind` filters: `queues`,
/// `topics` or `all`.
pub fn dstat_table(queues: &str, topics: &str, kind: &str) -> anyhow::Result<String> {
    let q: Value = serde_json::from_str(queues).context("queues answer is not JSON")?;
    let t: Value = serde_json::from_str(topics).context("topics answer is not JSON")?;
    // One row per destination; topics have no producer count (STOMP has no producer objects).
    let row = |scheme: &str, d: &Value, producers: String| {
        let mut r = vec![
            format!("{scheme}://{}", text(d, "name")),
            num(d, "depth").to_string(),
        ];
        r.push(producers);
        for key in [
            "consumers",
            "enqueued",
            "dequeued",
            "dispatched",
            "expired",
            "memory_bytes",
        ] {
            r.push(num(d, key).to_string());
        }
        r
    };
    let mut rows = Vec::new();
    if kind != "topics" {
        for d in q["queues"].as_array().into_iter().flatten() {
            rows.push(row("queue", d, num(d, "producers").to_string()));
        }
    }
    if kind != "queues" {
        for d in t["topics"].as_array().into_iter().flatten() {
            rows.push(row("topic", d, "-".to_string()));
        }
    }
    rows.sort_by(|a, b| a[0].cmp(&b[0]));
    Ok(table(
        &[
            "Name",
            "Queue Size",
            "Producer #",
            "Consumer #",
            "Enqueue #",
            "Dequeue #",
            "Dispatch #",
            "Expired #",
            "Memory B",
        ],
        &rows,
        &[false, true, true, true, true, true, true, true, true],
    ))
}

/// `ferromq browse`: one line per waiting message (id, priority, persistent, timestamp, size,
/// the start of the body).
pub fn browse_table(answer: &str) -> anyhow::Result<String> {
    let v: Value = serde_json::from_str(answer).context("browse answer is not JSON")?;
    let mut rows = Vec::new();
    for m in v["messages"].as_array().into_iter().flatten() {
        let (size, preview) = match m.get("body").and_then(Value::as_str) {
            Some(b) => {
                let one_line: String = b
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .take(60)
                    .collect();
                (b.len(), one_line)
            }
            None => {
                let b64 = text(m, "body_base64");
                let len = base64::engine::general_purpose::STANDARD
                    .decode(b64.as_bytes())
                    .map_or(0, |b| b.len());
                (len, "(binary)".to_string())
            }
        };
        rows.push(vec![
            text(m, "id"),
            num(m, "priority").to_string(),
            m.get("persistent")
                .and_then(Value::as_bool)
                .unwrap_or(false)
                .to_string(),
            num(m, "timestamp_ms").to_string(),
            size.to_string(),
            preview,
        ]);
    }
    Ok(table(
        &[
            "Message ID",
            "Pri",
            "Persistent",
            "Timestamp ms",
            "Bytes",
            "Body",
        ],
        &rows,
        &[false, true, false, true, true, false],
    ))
}

/// Most rounds `move --all` and `retry` make (each a browse of up to [`MOVE_PAGE`] messages, or
/// one bounded retry call): a queue that keeps filling cannot keep the command running forever.
pub const ROUNDS_MAX: usize = 10_000;
/// Messages `move --all` lists per round (the API's default `admin.browse_limit_max`).
pub const MOVE_PAGE: usize = 1000;

/// The admin API at one address, with its credentials.
#[derive(Debug, Clone)]
pub struct Api {
    /// `host:port`.
    pub addr: String,
    /// Basic auth, if any.
    pub credentials: Option<Credentials>,
    /// TLS settings for an `https://` address.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Api {
    /// A request whose answer must be 2xx; its body as JSON.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> anyhow::Result<Value> {
        let answer = request(
            &self.addr,
            method,
            path,
            self.credentials.as_ref(),
            body,
            self.tls.as_ref(),
        )
        .await?;
        let text = ok_body(answer)?;
        serde_json::from_str(&text).with_context(|| format!("{method} {path}: not JSON: {text}"))
    }
}

/// `ferromq move --from Q --to Q2 --all`: moves every waiting message, one API call each, in
/// rounds of a browse. Stops when a round moves nothing (the queue is empty, or what is left is
/// in flight or cannot be moved). Returns `{"moved": n, "failed": m, "last_error": …}`.
pub async fn move_all(api: &Api, from: &str, to: &str) -> anyhow::Result<Value> {
    let body = serde_json::json!({ "to": to }).to_string();
    let (mut moved, mut failed, mut last_error) = (0u64, 0u64, None::<String>);
    for _ in 0..ROUNDS_MAX {
        let page = api
            .call(
                "GET",
                &format!(
                    "/api/v1/queues/{}/messages?limit={MOVE_PAGE}",
                    path_segment(from)
                ),
                None,
            )
            .await?;
        let ids: Vec<String> = page["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| {
                m.get("message_id")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .collect();
        let mut round = 0u64;
        for id in &ids {
            let path = format!(
                "/api/v1/queues/{}/messages/{}/move",
                path_segment(from),
                path_segment(id)
            );
            match api.call("POST", &path, Some(&body)).await {
                Ok(_) => round += 1,
                Err(e) => {
                    failed += 1;
                    last_error = Some(e.to_string());
                }
            }
        }
        moved += round;
        if round == 0 {
            break;
        }
    }
    Ok(serde_json::json!({ "moved": moved, "failed": failed, "last_error": last_error }))
}

/// `ferromq retry --queue DLQ`: calls the bounded retry-all until a call retries nothing or
/// nothing remains. Returns `{"retried": n, "remaining": m}`.
pub async fn retry_all(api: &Api, queue: &str) -> anyhow::Result<Value> {
    let path = format!("/api/v1/queues/{}/retry", path_segment(queue));
    let (mut retried, mut remaining) = (0u64, 0u64);
    for _ in 0..ROUNDS_MAX {
        let v = api.call("POST", &path, Some("{}")).await?;
        let n = num(&v, "retried");
        retried += n;
        remaining = num(&v, "remaining");
        if n == 0 || remaining == 0 {
            break;
        }
    }
    Ok(serde_json::json!({ "retried": retried, "remaining": remaining }))
}

/// Whether `name` matches an `activemq query`-style pattern: `*` matches any run of
/// characters, everything else itself.
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let [first, middle @ .., last] = parts.as_slice() else {
        // No `*`: the name itself.
        return pattern == name;
    };
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    for m in middle {
        match rest.find(m) {
            Some(i) => rest = &rest[i + m.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// `ferromq query -q PATTERN`: every attribute of each matching queue, one `Name = value`
/// line each and a blank line between queues, as `activemq query` prints an MBean.
pub fn query_text(queues: &str, pattern: &str) -> anyhow::Result<String> {
    let v: Value = serde_json::from_str(queues).context("queues answer is not JSON")?;
    let mut out = String::new();
    for q in v["queues"].as_array().into_iter().flatten() {
        if !pattern_matches(pattern, &text(q, "name")) {
            continue;
        }
        if !out.is_empty() {
            out.push('\n');
        }
        // ActiveMQ's attribute names, as `activemq query` prints them.
        for (label, key) in [
            ("Name", "name"),
            ("QueueSize", "depth"),
            ("PendingCount", "pending"),
            ("InFlightCount", "inflight"),
            ("ConsumerCount", "consumers"),
            ("ProducerCount", "producers"),
            ("EnqueueCount", "enqueued"),
            ("DequeueCount", "dequeued"),
            ("DispatchCount", "dispatched"),
            ("ExpiredCount", "expired"),
            ("DeadLetteredCount", "dead_lettered"),
            ("MemoryUsageBytes", "memory_bytes"),
            ("Temporary", "temporary"),
        ] {
            let value = match q.get(key) {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => String::new(),
            };
            out.push_str(&format!("{label} = {value}\n"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_addresses_may_name_http_or_https() {
        assert_eq!(admin_target("127.0.0.1:8161"), ("127.0.0.1:8161", false));
        assert_eq!(admin_target("http://h:8161/"), ("h:8161", false));
        assert_eq!(admin_target("https://h:8161"), ("h:8161", true));
    }

    #[test]
    fn responses_with_length_chunks_or_eof_are_read() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").unwrap();
        assert_eq!(r, (200, "{}".to_string()));
        let r = parse_response(
            b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n3\r\n{\"e\r\n2;x\r\n\"}\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r, (404, "{\"e\"}".to_string()));
        let r = parse_response(b"HTTP/1.1 200 OK\r\n\r\nrest").unwrap();
        assert_eq!(r.1, "rest");
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nab").is_err());
        assert!(parse_response(b"garbage").is_err());
    }

    #[test]
    fn errors_carry_the_api_reason() {
        let e = ok_body((403, "{\"error\":\"needs an admin\"}".into())).unwrap_err();
        assert!(e.to_string().contains("403: needs an admin"), "{e}");
        assert_eq!(ok_body((201, "x".into())).unwrap(), "x");
    }

    #[test]
    fn names_are_escaped_in_paths() {
        assert_eq!(path_segment("orders.eu"), "orders.eu");
        assert_eq!(path_segment("a/b c?"), "a%2Fb%20c%3F");
    }

    #[test]
    fn dstat_aligns_queues_and_topics() {
        let queues = r#"{"queues":[{"name":"orders","depth":12,"producers":1,"consumers":2,
            "enqueued":100,"dequeued":88,"dispatched":90,"expired":0,"memory_bytes":12288},
            {"name":"a","depth":0,"consumers":0,"enqueued":0,"dequeued":0,"dispatched":0,
            "expired":3,"memory_bytes":0}]}"#;
        let topics = r#"{"topics":[{"name":"prices","depth":5,"consumers":3,"enqueued":30,
            "dequeued":25,"dispatched":27,"expired":0,"memory_bytes":5120}]}"#;
        let out = dstat_table(queues, topics, "all").unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].starts_with("Name"));
        assert!(lines[1].starts_with("queue://a "), "sorted by name: {out}");
        assert!(lines[2].starts_with("queue://orders"));
        assert!(lines[3].starts_with("topic://prices"));
        // Columns line up: every line has the "Queue Size" column ending at the same place.
        let end = lines[0].find("Queue Size").unwrap() + "Queue Size".len();
        assert_eq!(&lines[2][end - 2..end], "12");
        assert!(lines[1][..end].ends_with(" 0"));
        assert_eq!(
            dstat_table(queues, topics, "topics")
                .unwrap()
                .lines()
                .count(),
            2
        );
        assert_eq!(
            dstat_table(queues, topics, "queues")
                .unwrap()
                .lines()
                .count(),
            3
        );
    }

    #[test]
    fn query_patterns_match_like_activemq_query() {
        assert!(pattern_matches("orders", "orders"));
        assert!(!pattern_matches("orders", "orders.eu"));
        assert!(pattern_matches("orders*", "orders.eu"));
        assert!(pattern_matches("*.eu", "orders.eu"));
        assert!(pattern_matches("o*s.*u", "orders.eu"));
        assert!(!pattern_matches("o*x", "orders.eu"));
        assert!(pattern_matches("*", ""));
        let queues = r#"{"queues":[{"name":"orders","depth":3,"pending":2,"inflight":1,
            "consumers":1,"producers":0,"enqueued":5,"dequeued":2,"dispatched":3,"expired":0,
            "dead_lettered":0,"memory_bytes":99,"temporary":false},{"name":"other","depth":0}]}"#;
        let out = query_text(queues, "ord*").unwrap();
        assert!(out.starts_with("Name = orders\nQueueSize = 3\n"), "{out}");
        assert!(out.contains("InFlightCount = 1\n"), "{out}");
        assert!(!out.contains("other"), "{out}");
        assert_eq!(
            query_text(queues, "*").unwrap().matches("Name = ").count(),
            2
        );
    }

    #[test]
    fn browse_shows_text_and_binary_bodies() {
        let answer = r#"{"queue":"q","limit":10,"messages":[
            {"id":"ID:1","persistent":true,"priority":4,"timestamp_ms":1,"expires_ms":0,
             "headers":{},"body":"hello\nworld"},
            {"id":"ID:2","persistent":false,"priority":9,"timestamp_ms":2,"expires_ms":0,
             "headers":{},"body_base64":"AAEC"}]}"#;
        let out = browse_table(answer).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[1].contains("ID:1") && lines[1].contains("hello world"),
            "{out}"
        );
        assert!(lines[2].contains("ID:2") && lines[2].contains("(binary)"));
        assert!(lines[2].contains("  3  "), "3 bytes decoded: {out}");
    }
}
