//! The web console: one HTML page, one script and one style sheet, compiled into the binary and
//! served at `GET /` and under `/console/`. It is a client of the JSON API like `ferromq dstat`:
//! the page holds no data, so it is public, and every request the script makes goes through the
//! same access check as any other (basic auth, admins for changes, JSON for the CSRF rule).
//!
//! Nothing is fetched from elsewhere (no CDN, no fonts), so the policy below can forbid every
//! origin but this one, and inline script and style are forbidden too: a message body that slips
//! into the page as markup still cannot run.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// What the browser may load for a console page: this origin's script, style and API, nothing
/// inline, no frames, no form posts (forms are sent by the script with `fetch`).
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// Where the script and the style sheet are served (the page names them).
pub(crate) const SCRIPT_PATH: &str = "/console/console.js";
pub(crate) const STYLE_PATH: &str = "/console/console.css";

/// One embedded file.
struct Asset {
    content_type: &'static str,
    body: &'static [u8],
    /// Of `body`, computed at compile time, so a browser revalidating gets a 304 and a new
    /// binary's changed file a 200.
    etag_hash: u64,
}

impl Asset {
    const fn new(content_type: &'static str, body: &'static [u8]) -> Asset {
        Asset {
            content_type,
            body,
            etag_hash: fnv1a64(body),
        }
    }

    fn etag(&self) -> String {
        format!("\"{:016x}\"", self.etag_hash)
    }

    /// The file, or 304 when the request already holds this version.
    fn serve(&self, req: &HeaderMap) -> Response {
        let etag = self.etag();
        let fresh = req
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
        let mut r = if fresh {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            ([(header::CONTENT_TYPE, self.content_type)], self.body).into_response()
        };
        let h = r.headers_mut();
        // `no-cache` is "revalidate before use", not "do not store": the ETag keeps that cheap,
        // and an upgraded broker's console is never mixed with a cached older script.
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        if let Ok(v) = HeaderValue::from_str(&etag) {
            h.insert(header::ETAG, v);
        }
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        r
    }
}

/// FNV-1a, 64 bits: a cache validator, not a security check.
const fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    h
}

static INDEX: Asset = Asset::new("text/html; charset=utf-8", include_bytes!("index.html"));
static SCRIPT: Asset = Asset::new(
    "text/javascript; charset=utf-8",
    include_bytes!("console.js"),
);
static STYLE: Asset = Asset::new("text/css; charset=utf-8", include_bytes!("console.css"));

/// True for the console's own files, which anyone who reaches the listener may load: they are
/// the same for every broker and hold no data.
pub(crate) fn is_console_file(path: &str) -> bool {
    path == "/" || path == SCRIPT_PATH || path == STYLE_PATH
}

/// The console's routes, to merge into the admin router.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|h: HeaderMap| async move { INDEX.serve(&h) }))
        .route(
            SCRIPT_PATH,
            get(|h: HeaderMap| async move { SCRIPT.serve(&h) }),
        )
        .route(
            STYLE_PATH,
            get(|h: HeaderMap| async move { STYLE.serve(&h) }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_only_its_own_files_and_no_inline_script() {
        let html = std::str::from_utf8(INDEX.body).unwrap();
        assert!(html.contains(&format!("<script src=\"{SCRIPT_PATH}\"")));
        assert!(html.contains(&format!("href=\"{STYLE_PATH}\"")));
        // Every <script> has a src (the policy would block an inline one anyway: this keeps the
        // page from relying on something that silently does not run).
        assert_eq!(
            html.matches("<script").count(),
            html.matches("<script src=").count()
        );
        assert!(!html.contains("http://") && !html.contains("https://"));
        // No inline event handlers (` onclick=`, …): the policy would block them too.
        let inline_handler = html.split(" on").skip(1).any(|rest| {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase())
                .collect();
            !name.is_empty() && rest[name.len()..].starts_with('=')
        });
        assert!(!inline_handler, "an inline event handler in index.html");
    }

    #[test]
    fn the_script_never_assigns_markup() {
        // Everything shown is built with textContent and createElement, so message data can
        // never become markup.
        let js = std::str::from_utf8(SCRIPT.body).unwrap();
        for banned in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!js.contains(banned), "console.js uses {banned}");
        }
    }

    #[test]
    fn a_revalidation_with_the_current_etag_is_not_modified() {
        let mut h = HeaderMap::new();
        let first = SCRIPT.serve(&h);
        assert_eq!(first.status(), StatusCode::OK);
        let etag = first.headers()[header::ETAG].clone();
        h.insert(header::IF_NONE_MATCH, etag);
        assert_eq!(SCRIPT.serve(&h).status(), StatusCode::NOT_MODIFIED);
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"0\""));
        assert_eq!(SCRIPT.serve(&h).status(), StatusCode::OK);
    }

    /// The whole admin router, with users: the console's files are public and typed, the API
    /// behind them is not, and `/status` is still the JSON `ferromq status` reads.
    #[tokio::test]
    async fn the_router_serves_the_console_publicly_and_keeps_status_json() {
        use crate::config::{Config, User};
        use axum::body::Body;
        use tower::ServiceExt;

        let mut cfg = Config::default();
        cfg.security.users = vec![User {
            username: "viewer".into(),
            password: "look".into(),
            groups: vec![],
        }];
        let (_tx, rx) = tokio::sync::watch::channel(super::super::Status::default());
        let app = super::super::api::router(super::super::api::AppState::new(
            rx,
            std::sync::Arc::new(cfg),
        ));
        let get = |path: &str| {
            app.clone()
                .oneshot(axum::http::Request::get(path).body(Body::empty()).unwrap())
        };
        for (path, ty) in [
            ("/", "text/html; charset=utf-8"),
            (SCRIPT_PATH, "text/javascript; charset=utf-8"),
            (STYLE_PATH, "text/css; charset=utf-8"),
        ] {
            let r = get(path).await.unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{path}");
            assert_eq!(r.headers()[header::CONTENT_TYPE], ty, "{path}");
            assert_eq!(
                r.headers()[header::CONTENT_SECURITY_POLICY],
                CONTENT_SECURITY_POLICY,
                "{path}"
            );
        }
        assert_eq!(
            get("/api/v1/queues").await.unwrap().status(),
            StatusCode::UNAUTHORIZED
        );
        let r = get("/status").await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
    }
}
