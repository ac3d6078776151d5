//! Stored passwords: Argon2id hashes in PHC format (`ferromq passwd` prints one), or plain text
//! only where the configuration says so (`security.plaintext_passwords = true`).
//!
//! Every protocol (STOMP, OpenWire, the admin API) checks a login with [`authenticate`]. A hash
//! check costs tens of milliseconds of CPU by design: callers on async workers run it with
//! `spawn_blocking` ([`authenticate_async`]). A failed login is answered only after
//! [`FAILED_LOGIN_DELAY`], which slows down guessing on one connection.

use std::time::Duration;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use crate::config::User;

/// How long a failed login waits before its answer.
pub const FAILED_LOGIN_DELAY: Duration = Duration::from_millis(500);

/// True when a stored password is a PHC-format Argon2 hash.
pub fn is_hash(stored: &str) -> bool {
    stored.starts_with("$argon2")
}

/// The Argon2id hash (PHC string, random salt, the crate's default cost) of `password`.
pub fn hash(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("hashing failed: {e}"))
}

/// Whether `given` matches `stored` (a hash, or plain text compared in constant time).
pub fn verify(stored: &str, given: &str) -> bool {
    if is_hash(stored) {
        return PasswordHash::new(stored).is_ok_and(|h| {
            Argon2::default()
                .verify_password(given.as_bytes(), &h)
                .is_ok()
        });
    }
    let (a, b) = (stored.as_bytes(), given.as_bytes());
    // Length leaks; content does not.
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The configured user `login` names, when `password` is theirs.
pub fn authenticate<'a>(users: &'a [User], login: &str, password: &str) -> Option<&'a User> {
    users
        .iter()
        .find(|u| u.username == login)
        .filter(|u| verify(&u.password, password))
}

/// [`authenticate`] off the async workers (a hash check is deliberately slow); a failure is
/// answered after [`FAILED_LOGIN_DELAY`]. Returns the user's name and groups.
pub async fn authenticate_async(
    users: &[User],
    login: &str,
    password: &str,
) -> Option<(String, Vec<String>)> {
    let users = users.to_vec();
    let (login, password) = (login.to_string(), password.to_string());
    let found = tokio::task::spawn_blocking(move || {
        authenticate(&users, &login, &password).map(|u| (u.username.clone(), u.groups.clone()))
    })
    .await
    .ok()
    .flatten();
    if found.is_none() {
        tokio::time::sleep(FAILED_LOGIN_DELAY).await;
    }
    found
}

/// Refuses plain-text passwords unless the configuration allows them explicitly.
pub fn check_config(users: &[User], plaintext_allowed: bool) -> Result<(), String> {
    if plaintext_allowed {
        return Ok(());
    }
    for u in users {
        if !is_hash(&u.password) {
            return Err(format!(
                "security.users: user {:?} has a plain-text password; store the output of \
                 `ferromq passwd` instead, or set security.plaintext_passwords = true",
                u.username
            ));
        }
        let h = PasswordHash::new(&u.password)
            .map_err(|e| format!("security.users: user {:?}: bad hash: {e}", u.username))?;
        if h.salt.is_none() || h.hash.is_none() {
            return Err(format!(
                "security.users: user {:?}: the hash has no salt or no output; paste the whole \
                 line `ferromq passwd` printed",
                u.username
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, password: &str) -> User {
        User {
            username: name.into(),
            password: password.into(),
            groups: vec!["g".into()],
        }
    }

    #[test]
    fn hashes_verify_and_plain_text_needs_permission() {
        let h = hash("s3cret").unwrap();
        assert!(is_hash(&h) && h.starts_with("$argon2id$"), "{h}");
        assert!(verify(&h, "s3cret"));
        assert!(!verify(&h, "s3cret "));
        assert_ne!(hash("s3cret").unwrap(), h, "a random salt each time");
        assert!(verify("plain", "plain"));
        assert!(!verify("plain", "plaiN"));
        assert!(!verify("plain", "plain2"));
        let users = [user("a", &h), user("b", "plain")];
        assert_eq!(authenticate(&users, "a", "s3cret").unwrap().username, "a");
        assert!(authenticate(&users, "a", "wrong").is_none());
        assert!(authenticate(&users, "nobody", "s3cret").is_none());
        assert!(check_config(&users[..1], false).is_ok());
        assert!(check_config(&users, false).unwrap_err().contains("\"b\""));
        assert!(check_config(&users, true).is_ok());
        assert!(check_config(&[user("c", "$argon2id$garbage")], false).is_err());
    }
}
