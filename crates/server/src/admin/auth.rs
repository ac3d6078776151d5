//! Who may do what on the admin endpoint.
//!
//! With no `[security]` users the endpoint is open (as the STOMP and OpenWire ports are), so
//! its listen address is what protects it. With users, every request but `GET /status` needs
//! HTTP basic auth of one of them; state-changing requests need a member of
//! [`crate::config::ADMIN_GROUP`]. Whatever the users, a state-changing request must be a
//! `POST` or `DELETE` with `Content-Type: application/json`: a browser cannot send that
//! cross-origin without a CORS preflight, which this endpoint never answers, so a web page an
//! operator visits cannot purge a queue behind their back (CSRF).

use axum::http::{header, HeaderMap, Method, StatusCode};
use base64::Engine;

use crate::config::User;

/// What a request may not do, as an HTTP status and a reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// 401, 403 or 415.
    pub status: StatusCode,
    /// Why, for the JSON error body.
    pub reason: &'static str,
}

/// True for the methods that may change broker state.
pub(crate) fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// True for paths anyone who reaches the listener may read: `ferromq status` sends no
/// credentials, and the role alone reveals little; the web console's files hold no data (its
/// script asks the API, with the user's credentials, for everything it shows).
pub(crate) fn is_public(method: &Method, path: &str) -> bool {
    matches!(*method, Method::GET | Method::HEAD)
        && (path == "/status" || super::console::is_console_file(path))
}

/// Decides whether a request may proceed.
pub(crate) fn check(
    users: &[User],
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Result<(), Refusal> {
    if is_public(method, path) {
        return Ok(());
    }
    if !users.is_empty() {
        let user = authenticate(users, headers).ok_or(Refusal {
            status: StatusCode::UNAUTHORIZED,
            reason: "authentication required: HTTP basic auth of a [security] user",
        })?;
        if changes_state(method) && !user.is_admin() {
            return Err(Refusal {
                status: StatusCode::FORBIDDEN,
                reason: "this operation needs a user in the \"admins\" group",
            });
        }
    }
    if changes_state(method) && !is_json(headers) {
        return Err(Refusal {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            reason: "state-changing requests need Content-Type: application/json",
        });
    }
    Ok(())
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

/// The configured user whose name and password the `Authorization: Basic` header carries.
fn authenticate<'a>(users: &'a [User], headers: &HeaderMap) -> Option<&'a User> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (name, password) = decoded.split_once(':')?;
    // Every user's password is compared, in time independent of where it differs, so the
    // answer's timing tells nothing about which names exist or how much of a password matched.
    // (A stored hash is checked only for the user the name matches: an Argon2 check per user
    // would cost every request tens of milliseconds per configured user.)
    let mut found = None;
    for u in users {
        if constant_time_eq(u.username.as_bytes(), name.as_bytes()) && found.is_none() {
            found = Some(u);
        }
    }
    found.filter(|u| crate::passwords::verify(&u.password, password))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> Vec<User> {
        vec![
            User {
                username: "ops".into(),
                password: "secret".into(),
                groups: vec!["admins".into()],
            },
            User {
                username: "viewer".into(),
                password: "look".into(),
                groups: vec![],
            },
        ]
    }

    fn basic(user: &str, password: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        h.insert(
            header::AUTHORIZATION,
            format!("Basic {token}").parse().unwrap(),
        );
        h
    }

    fn json(mut h: HeaderMap) -> HeaderMap {
        h.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        h
    }

    const PURGE: &str = "/api/v1/queues/q/purge";

    #[test]
    fn without_users_reads_are_open_and_writes_need_json() {
        assert!(check(&[], &Method::GET, "/api/v1/queues", &HeaderMap::new()).is_ok());
        let r = check(&[], &Method::POST, PURGE, &HeaderMap::new()).unwrap_err();
        assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(check(&[], &Method::POST, PURGE, &json(HeaderMap::new())).is_ok());
    }

    #[test]
    fn with_users_reads_need_a_login_and_writes_an_admin() {
        let u = users();
        let r = check(&u, &Method::GET, "/metrics", &HeaderMap::new()).unwrap_err();
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        let r = check(&u, &Method::GET, "/metrics", &basic("ops", "wrong")).unwrap_err();
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert!(check(&u, &Method::GET, "/metrics", &basic("viewer", "look")).is_ok());
        let r = check(&u, &Method::POST, PURGE, &json(basic("viewer", "look"))).unwrap_err();
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert!(check(&u, &Method::POST, PURGE, &json(basic("ops", "secret"))).is_ok());
        let r = check(
            &u,
            &Method::DELETE,
            "/api/v1/queues/q",
            &basic("ops", "secret"),
        );
        assert_eq!(r.unwrap_err().status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }

    #[test]
    fn status_stays_public_for_ferromq_status() {
        assert!(check(&users(), &Method::GET, "/status", &HeaderMap::new()).is_ok());
        // The console's files too (they hold no data), but not the API they call.
        assert!(check(&users(), &Method::GET, "/", &HeaderMap::new()).is_ok());
        assert!(check(
            &users(),
            &Method::GET,
            "/console/console.js",
            &HeaderMap::new()
        )
        .is_ok());
        let r = check(&users(), &Method::GET, "/console/other", &HeaderMap::new()).unwrap_err();
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        let r = check(&users(), &Method::POST, "/status", &HeaderMap::new()).unwrap_err();
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
}
