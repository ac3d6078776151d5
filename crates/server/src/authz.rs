//! Destination authorisation (ActiveMQ's `authorizationPlugin`): `[[security.authorization]]`
//! entries name a queue or topic pattern (ActiveMQ wildcards `*` and `>`) and the groups that
//! may `read` (consume, browse), `write` (send) and `admin` it (create it when it does not exist
//! yet). As in ActiveMQ's `DefaultAuthorizationMap`, the groups of **every** entry that matches
//! a destination are united; group `*` means every authenticated user; a destination no entry
//! matches is refused. Temporary destinations are governed by the entries with `temp = true`
//! (ActiveMQ's `tempDestinationAuthorizationEntry`), united likewise; without such an entry they
//! are not restricted. Without any entry, authorisation is off.
//!
//! Sans-I/O: the sessions ask [`Authorizer::check`] before a send or a subscription and turn a
//! refusal into their protocol's error (a STOMP ERROR, an OpenWire `SecurityException`).

use ferromq_broker::{wildcard_matches, Destination, DestinationKind};
use serde::Deserialize;

/// One `[[security.authorization]]` entry.
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthorizationEntry {
    /// Queue name pattern (exactly one of `queue`, `topic` and `temp`).
    pub queue: Option<String>,
    /// Topic name pattern.
    pub topic: Option<String>,
    /// The entry covers every temporary queue and topic (ActiveMQ's
    /// `tempDestinationAuthorizationEntry`): `read` and `write` to use one, `admin` to create a
    /// temporary queue.
    pub temp: bool,
    /// Groups that may consume (comma-separated; `*` = everyone authenticated).
    pub read: String,
    /// Groups that may send.
    pub write: String,
    /// Groups that may create the destination.
    pub admin: String,
}

/// What a client wants to do to a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Consume or browse.
    Read,
    /// Send.
    Write,
    /// Create (a destination that does not exist yet).
    Admin,
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Action::Read => "read from",
            Action::Write => "write to",
            Action::Admin => "create",
        }
    }
}

#[derive(Debug, Clone)]
struct Rule {
    kind: DestinationKind,
    pattern: String,
    read: Vec<String>,
    write: Vec<String>,
    admin: Vec<String>,
}

/// The compiled rules of a broker.
#[derive(Debug, Clone, Default)]
pub struct Authorizer {
    rules: Vec<Rule>,
    /// The `temp = true` entries, united; `None`: temporary destinations are unrestricted.
    temp: Option<Groups>,
}

/// The groups of one action each.
#[derive(Debug, Clone, Default)]
struct Groups {
    read: Vec<String>,
    write: Vec<String>,
    admin: Vec<String>,
}

impl Groups {
    fn of(&self, action: Action) -> &[String] {
        match action {
            Action::Read => &self.read,
            Action::Write => &self.write,
            Action::Admin => &self.admin,
        }
    }
}

fn groups(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .map(str::to_owned)
        .collect()
}

impl Authorizer {
    /// Compiles the entries; an entry naming more or fewer than one of `queue`, `topic` and
    /// `temp` is an error.
    pub fn new(entries: &[AuthorizationEntry]) -> Result<Authorizer, String> {
        let mut rules = Vec::with_capacity(entries.len());
        let mut temp: Option<Groups> = None;
        for (i, e) in entries.iter().enumerate() {
            let (kind, pattern) = match (&e.queue, &e.topic, e.temp) {
                (Some(q), None, false) => (DestinationKind::Queue, q.clone()),
                (None, Some(t), false) => (DestinationKind::Topic, t.clone()),
                (None, None, true) => {
                    let t = temp.get_or_insert_with(Groups::default);
                    t.read.extend(groups(&e.read));
                    t.write.extend(groups(&e.write));
                    t.admin.extend(groups(&e.admin));
                    continue;
                }
                _ => {
                    return Err(format!(
                        "security.authorization[{i}]: give exactly one of `queue`, `topic` or \
                         `temp = true`"
                    ))
                }
            };
            if pattern.is_empty() {
                return Err(format!("security.authorization[{i}]: empty pattern"));
            }
            rules.push(Rule {
                kind,
                pattern,
                read: groups(&e.read),
                write: groups(&e.write),
                admin: groups(&e.admin),
            });
        }
        Ok(Authorizer { rules, temp })
    }

    /// Whether any rule is configured (without one, everything is allowed).
    pub fn enabled(&self) -> bool {
        !self.rules.is_empty() || self.temp.is_some()
    }

    /// `Ok` when a user in `user_groups` may do `action` to `dest`; otherwise the reason, in
    /// ActiveMQ's words (`User alice is not authorized to write to: queue://orders`).
    pub fn check(
        &self,
        user: &str,
        user_groups: &[String],
        dest: &Destination,
        action: Action,
    ) -> Result<(), String> {
        if !self.enabled() {
            return Ok(());
        }
        let member = |g: &String| g == "*" || user_groups.iter().any(|ug| ug == g);
        let allowed = if dest.kind.is_temporary() {
            match &self.temp {
                None => true,
                Some(t) => t.of(action).iter().any(member),
            }
        } else {
            self.rules
                .iter()
                .filter(|r| r.kind == dest.kind && wildcard_matches(&r.pattern, &dest.name))
                .flat_map(|r| match action {
                    Action::Read => r.read.iter(),
                    Action::Write => r.write.iter(),
                    Action::Admin => r.admin.iter(),
                })
                .any(member)
        };
        if allowed {
            Ok(())
        } else {
            Err(format!(
                "User {user} is not authorized to {} {dest}",
                action.verb()
            ))
        }
    }
}

impl Authorizer {
    /// [`Authorizer::check`] of `action`, and of `admin` too when `dest` is a queue that does
    /// not exist yet (a send or a subscription creates it): what a protocol session asks.
    pub fn check_use(
        &self,
        user: &str,
        user_groups: &[String],
        dest: &Destination,
        action: Action,
        queue_exists: impl FnOnce() -> bool,
    ) -> Result<(), String> {
        if !self.enabled() {
            return Ok(());
        }
        self.check(user, user_groups, dest, action)?;
        if dest.kind.is_queue() && !queue_exists() {
            self.check(user, user_groups, dest, Action::Admin)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(
        queue: Option<&str>,
        topic: Option<&str>,
        r: &str,
        w: &str,
        a: &str,
    ) -> AuthorizationEntry {
        AuthorizationEntry {
            temp: false,
            queue: queue.map(str::to_owned),
            topic: topic.map(str::to_owned),
            read: r.into(),
            write: w.into(),
            admin: a.into(),
        }
    }

    fn g(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn every_cell_of_read_write_admin_for_queues_and_topics() {
        let a = Authorizer::new(&[
            entry(Some(">"), None, "admins", "admins", "admins"),
            entry(Some("orders.>"), None, "readers", "writers", "creators"),
            entry(None, Some("prices.*"), "readers, *", "writers", ""),
        ])
        .unwrap();
        let orders = Destination::queue("orders.eu");
        let other = Destination::queue("payroll");
        let prices = Destination::topic("prices.nyse");
        // (groups, dest, action, allowed)
        let cases = [
            (g(&["readers"]), &orders, Action::Read, true),
            (g(&["readers"]), &orders, Action::Write, false),
            (g(&["readers"]), &orders, Action::Admin, false),
            (g(&["writers"]), &orders, Action::Write, true),
            (g(&["writers"]), &orders, Action::Read, false),
            (g(&["creators"]), &orders, Action::Admin, true),
            (g(&["admins"]), &orders, Action::Read, true),
            (g(&["admins"]), &other, Action::Write, true),
            (g(&["readers"]), &other, Action::Read, false),
            (g(&[]), &prices, Action::Read, true),
            (g(&["readers"]), &prices, Action::Write, false),
            (g(&["writers"]), &prices, Action::Write, true),
            (g(&["admins"]), &prices, Action::Admin, false),
            (
                g(&["admins"]),
                &Destination::topic("prices.a.b"),
                Action::Read,
                false,
            ),
        ];
        for (groups, dest, action, allowed) in cases {
            let r = a.check("u", &groups, dest, action);
            assert_eq!(r.is_ok(), allowed, "{groups:?} {action:?} {dest:?}: {r:?}");
        }
        let refusal = a
            .check("bob", &g(&["readers"]), &orders, Action::Write)
            .unwrap_err();
        assert_eq!(
            refusal,
            "User bob is not authorized to write to queue://orders.eu"
        );
    }

    #[test]
    fn off_without_entries_and_temporaries_are_free() {
        let off = Authorizer::new(&[]).unwrap();
        assert!(off
            .check("u", &[], &Destination::queue("x"), Action::Write)
            .is_ok());
        let on = Authorizer::new(&[entry(Some(">"), None, "a", "a", "a")]).unwrap();
        let temp = Destination {
            kind: DestinationKind::TempQueue,
            name: "ID:c-1".into(),
        };
        assert!(on.check("u", &[], &temp, Action::Write).is_ok());
        assert!(on
            .check("u", &[], &Destination::queue("x"), Action::Write)
            .is_err());
    }

    #[test]
    fn using_a_queue_that_does_not_exist_needs_admin_too() {
        let a = Authorizer::new(&[entry(Some("q.>"), None, "r", "w", "a")]).unwrap();
        let q = Destination::queue("q.1");
        assert!(a
            .check_use("u", &g(&["w"]), &q, Action::Write, || true)
            .is_ok());
        let e = a
            .check_use("u", &g(&["w"]), &q, Action::Write, || false)
            .unwrap_err();
        assert_eq!(e, "User u is not authorized to create queue://q.1");
        assert!(a
            .check_use("u", &g(&["w", "a"]), &q, Action::Write, || false)
            .is_ok());
        // Topics are not checked for creation.
        let t = Authorizer::new(&[entry(None, Some(">"), "r", "w", "")]).unwrap();
        assert!(t
            .check_use(
                "u",
                &g(&["w"]),
                &Destination::topic("x"),
                Action::Write,
                || false
            )
            .is_ok());
    }

    /// ActiveMQ's `tempDestinationAuthorizationEntry`: with a `temp = true` entry, temporary
    /// queues and topics need its groups (admin to create a temporary queue); its groups do not
    /// reach ordinary destinations, nor theirs temporary ones.
    #[test]
    fn temp_entries_govern_temporary_destinations() {
        let temp = |r: &str, w: &str, a: &str| AuthorizationEntry {
            temp: true,
            ..entry(None, None, r, w, a)
        };
        let a = Authorizer::new(&[
            entry(Some(">"), None, "admins", "admins", "admins"),
            temp("apps", "apps", "apps"),
            temp("auditors", "", ""),
        ])
        .unwrap();
        let tq = Destination {
            kind: DestinationKind::TempQueue,
            name: "ID:c-1:1".into(),
        };
        let tt = Destination {
            kind: DestinationKind::TempTopic,
            name: "ID:c-1:2".into(),
        };
        assert!(a.check("u", &g(&["apps"]), &tq, Action::Write).is_ok());
        assert!(a.check("u", &g(&["apps"]), &tt, Action::Read).is_ok());
        assert!(
            a.check("u", &g(&["auditors"]), &tq, Action::Read).is_ok(),
            "united"
        );
        assert!(a.check("u", &g(&["auditors"]), &tq, Action::Write).is_err());
        assert_eq!(
            a.check("eve", &g(&["admins"]), &tq, Action::Write)
                .unwrap_err(),
            "User eve is not authorized to write to temp-queue://ID:c-1:1"
        );
        assert!(a
            .check("u", &g(&["apps"]), &Destination::queue("x"), Action::Read)
            .is_err());
        // Creating a temporary queue needs the temp entry's admin groups.
        let creators = Authorizer::new(&[temp("apps", "apps", "owners")]).unwrap();
        assert!(creators.enabled());
        assert_eq!(
            creators
                .check_use("u", &g(&["apps"]), &tq, Action::Read, || false)
                .unwrap_err(),
            "User u is not authorized to create temp-queue://ID:c-1:1"
        );
        assert!(creators
            .check_use("u", &g(&["apps"]), &tq, Action::Read, || true)
            .is_ok());
        assert!(creators
            .check_use("u", &g(&["apps", "owners"]), &tq, Action::Read, || false)
            .is_ok());
        let both = AuthorizationEntry {
            temp: true,
            ..entry(Some("q"), None, "", "", "")
        };
        assert!(Authorizer::new(&[both]).is_err());
    }

    #[test]
    fn entries_name_exactly_one_destination_kind() {
        assert!(Authorizer::new(&[entry(Some("a"), Some("b"), "", "", "")]).is_err());
        assert!(Authorizer::new(&[entry(None, None, "", "", "")]).is_err());
        assert!(Authorizer::new(&[entry(Some(""), None, "", "", "")]).is_err());
    }
}
