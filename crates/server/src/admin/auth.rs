//! Who may do what on the admin endpoint.
//!
//! With no `[security]` users the endpoint is open (as the STOMP and OpenWire ports are), so
//! its listen address is what protects it. With users (password or certificate users), every
//! request but `GET /status` needs HTTP basic auth of a password user or, over HTTPS, a client
//! certificate that `tls.ca` verified and `[[security.certificate_users]]` maps to a user (the
//! rule of the STOMP and OpenWire listeners, [`crate::security::login`]); state-changing
//! requests need a member of [`crate::config::ADMIN_GROUP`]. Whatever the users, a state-changing request must be a
//! `POST` or `DELETE` with `Content-Type: application/json`: a browser cannot send that
//! cross-origin without a CORS preflight, which this endpoint never answers, so a web page an
//! operator visits cannot purge a queue behind their back (CSRF).

use axum::http::{header, HeaderMap, Method, StatusCode};
use base64::Engine;

use crate::config::{User, ADMIN_GROUP};
use crate::dn::Dn;
use crate::security::Security;

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

/// Decides whether a request may proceed. `client_cert` is the subject of the client
/// certificate the connection's TLS handshake verified, if any.
pub(crate) fn check(
    security: &Security,
    client_cert: Option<&Dn>,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Result<(), Refusal> {
    if is_public(method, path) {
        return Ok(());
    }
    if security.authentication_required() {
        let is_admin = login(security, client_cert, headers).ok_or(Refusal {
            status: StatusCode::UNAUTHORIZED,
            reason: "authentication required: HTTP basic auth of a [security] user, or a \
                     client certificate mapped to one",
        })?;
        if changes_state(method) && !is_admin {
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

/// Whether the request's user is an admin, when it names one: by HTTP basic auth when it
/// sends an `Authorization` header (a wrong password is refused whatever the certificate, as a
/// STOMP login with a passcode is), otherwise by its mapped client certificate.
fn login(security: &Security, client_cert: Option<&Dn>, headers: &HeaderMap) -> Option<bool> {
    if headers.contains_key(header::AUTHORIZATION) {
        return authenticate(&security.users, headers).map(User::is_admin);
    }
    let u = security.certificate_user(client_cert?)?;
    tracing::debug!(user = %u.username, "admin request authenticated by client certificate");
    Some(u.groups.iter().any(|g| g == ADMIN_GROUP))
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

    fn users() -> Security {
        Security {
            users: password_users(),
            ..Security::default()
        }
    }

    fn password_users() -> Vec<User> {
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

    /// The password users, and certificate users `CN=ops-cert` (admin) and `CN=viewer-cert`.
    fn with_certificate_users() -> Security {
        let cert_user = |name: &str, groups: Vec<String>| crate::security::CertificateUser {
            username: name.into(),
            subject: Dn::parse(&format!("CN={name}-cert")).unwrap(),
            groups,
        };
        Security {
            users: password_users(),
            certificate_users: vec![
                cert_user("ops", vec!["admins".into()]),
                cert_user("viewer", vec![]),
            ],
            ..Security::default()
        }
    }

    #[test]
    fn without_users_reads_are_open_and_writes_need_json() {
        let open = Security::default();
        let check = |m: &Method, p: &str, h: &HeaderMap| check(&open, None, m, p, h);
        assert!(check(&Method::GET, "/api/v1/queues", &HeaderMap::new()).is_ok());
        let r = check(&Method::POST, PURGE, &HeaderMap::new()).unwrap_err();
        assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(check(&Method::POST, PURGE, &json(HeaderMap::new())).is_ok());
    }

    #[test]
    fn with_users_reads_need_a_login_and_writes_an_admin() {
        let u = users();
        let check = |u: &Security, m: &Method, p: &str, h: &HeaderMap| check(u, None, m, p, h);
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
    fn a_mapped_client_certificate_logs_in_as_its_user() {
        let s = with_certificate_users();
        let ops = Dn::parse("CN=ops-cert").unwrap();
        let viewer = Dn::parse("CN=viewer-cert").unwrap();
        let stranger = Dn::parse("CN=stranger").unwrap();
        let none = HeaderMap::new();
        assert!(check(&s, Some(&viewer), &Method::GET, "/metrics", &none).is_ok());
        let r = check(&s, Some(&viewer), &Method::POST, PURGE, &json(none.clone())).unwrap_err();
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert!(check(&s, Some(&ops), &Method::POST, PURGE, &json(none.clone())).is_ok());
        // The CSRF rule holds for certificate users too.
        let r = check(&s, Some(&ops), &Method::POST, PURGE, &none).unwrap_err();
        assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let r = check(&s, Some(&stranger), &Method::GET, "/metrics", &none).unwrap_err();
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        // Basic auth, when sent, decides: a wrong password is not rescued by the certificate,
        // and a right one is judged as its own user.
        let r = check(
            &s,
            Some(&ops),
            &Method::GET,
            "/metrics",
            &basic("ops", "wrong"),
        );
        assert_eq!(r.unwrap_err().status, StatusCode::UNAUTHORIZED);
        let r = check(
            &s,
            Some(&ops),
            &Method::POST,
            PURGE,
            &json(basic("viewer", "look")),
        );
        assert_eq!(r.unwrap_err().status, StatusCode::FORBIDDEN);
    }

    #[test]
    fn certificate_users_alone_close_the_endpoint() {
        let s = Security {
            certificate_users: with_certificate_users().certificate_users,
            ..Security::default()
        };
        let r = check(&s, None, &Method::GET, "/metrics", &HeaderMap::new()).unwrap_err();
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn status_stays_public_for_ferromq_status() {
        let check = |u: &Security, m: &Method, p: &str, h: &HeaderMap| check(u, None, m, p, h);
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
