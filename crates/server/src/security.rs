//! The `[security]` rules one connection is judged by, compiled once: users and their
//! password hashes, certificate users, destination rules and the per-address connection limit.
//!
//! A [`Security`] is immutable; a SIGHUP reload builds a new one and swaps it in whole
//! ([`crate::reload`]), so a session never sees users of one file version with rules of
//! another.

use crate::authz::Authorizer;
use crate::config::{SecuritySection, User};
use crate::dn::Dn;

/// A `[[security.certificate_users]]` entry with its subject parsed.
#[derive(Debug, Clone)]
pub struct CertificateUser {
    /// The login.
    pub username: String,
    /// The certificate subject that logs in as it.
    pub subject: Dn,
    /// Its groups.
    pub groups: Vec<String>,
}

/// The compiled `[security]` section.
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// Password users.
    pub users: Vec<User>,
    /// Certificate users.
    pub certificate_users: Vec<CertificateUser>,
    /// Destination rules.
    pub authz: Authorizer,
    /// Most connections from one address at once; 0 = no limit.
    pub max_connections_per_ip: usize,
    /// The login and group of a client that gives no credentials, when
    /// `anonymous_access_allowed`.
    pub anonymous: Option<(String, String)>,
}

impl Security {
    /// Compiles and checks `[security]`: password hashes, rule syntax, certificate subjects.
    pub fn new(s: &SecuritySection) -> Result<Security, String> {
        let authz = Authorizer::new(&s.authorization)?;
        crate::passwords::check_config(&s.users, s.plaintext_passwords)?;
        let mut certificate_users = Vec::with_capacity(s.certificate_users.len());
        for (i, c) in s.certificate_users.iter().enumerate() {
            if c.username.is_empty() {
                return Err(format!("security.certificate_users[{i}]: empty username"));
            }
            let subject = Dn::parse(&c.subject)
                .map_err(|e| format!("security.certificate_users[{i}].subject: {e}"))?;
            if certificate_users
                .iter()
                .any(|u: &CertificateUser| u.subject == subject)
            {
                return Err(format!(
                    "security.certificate_users[{i}]: subject {:?} is mapped twice",
                    c.subject
                ));
            }
            certificate_users.push(CertificateUser {
                username: c.username.clone(),
                subject,
                groups: c.groups.clone(),
            });
        }
        let anonymous = if s.anonymous_access_allowed {
            let (user, group) = (s.anonymous_user.trim(), s.anonymous_group.trim());
            if user.is_empty() || group.is_empty() {
                return Err(
                    "security.anonymous_user and anonymous_group must not be empty".to_owned(),
                );
            }
            if s.users.iter().any(|u| u.username == user) {
                // Otherwise a client without credentials would act as that password user.
                return Err(format!(
                    "security.anonymous_user {user:?} is also a [[security.users]] login"
                ));
            }
            Some((user.to_owned(), group.to_owned()))
        } else {
            None
        };
        Ok(Security {
            users: s.users.clone(),
            certificate_users,
            authz,
            max_connections_per_ip: s.max_connections_per_ip,
            anonymous,
        })
    }

    /// Whether a connection goes through [`login`]: some user (password or certificate) is
    /// configured, or anonymous access is (so that a client without credentials gets the
    /// anonymous user's group, which rules can name).
    pub fn authentication_required(&self) -> bool {
        !self.users.is_empty() || !self.certificate_users.is_empty() || self.anonymous.is_some()
    }

    /// The certificate user a verified client certificate with this subject logs in as.
    pub fn certificate_user(&self, subject: &Dn) -> Option<&CertificateUser> {
        self.certificate_users
            .iter()
            .find(|u| &u.subject == subject)
    }
}

/// Who a connection logs in as: its certificate's user when it presented a mapped certificate
/// and gave no password (and no login, or that user's); otherwise the password user `login`
/// names, when `passcode` is theirs; with neither login nor passcode (nor a mapped
/// certificate), the anonymous user when `anonymous_access_allowed`. A failure is answered
/// after [`crate::passwords::FAILED_LOGIN_DELAY`]. Returns the user's name and groups.
pub async fn login(
    security: &Security,
    subject: Option<&Dn>,
    login: &str,
    passcode: &str,
) -> Option<(String, Vec<String>)> {
    if passcode.is_empty() {
        if let Some(u) = subject.and_then(|s| security.certificate_user(s)) {
            if login.is_empty() || login == u.username {
                tracing::debug!(user = %u.username, "logged in by client certificate");
                return Some((u.username.clone(), u.groups.clone()));
            }
        }
        if let (true, Some((user, group))) = (login.is_empty(), &security.anonymous) {
            tracing::debug!(user = %user, "logged in anonymously");
            return Some((user.clone(), vec![group.clone()]));
        }
    }
    crate::passwords::authenticate_async(&security.users, login, passcode).await
}
