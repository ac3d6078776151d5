//! ActiveMQ's STOMP destination names: `/queue/X`, `/topic/X`, `/temp-queue/X`, `/temp-topic/X`
//! and, for another connection's temporary destinations, `/remote-temp-queue/ID` and
//! `/remote-temp-topic/ID`.

use ferromq_broker::{Broker, Destination, DestinationKind};

/// What a STOMP destination header names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StompDest {
    /// A queue or topic, or another connection's temporary destination, by broker name.
    Named(Destination),
    /// This connection's temporary destination, by its local name.
    LocalTemp(DestinationKind, String),
}

/// Parses a destination header; the error is the text of the ERROR frame (ActiveMQ's words).
pub fn parse(s: &str) -> Result<StompDest, String> {
    let named = |kind, name: &str| -> Result<StompDest, String> {
        if name.is_empty() {
            return Err(format!(
                "Illegal destination name: [{s}] -- the name is empty"
            ));
        }
        Ok(StompDest::Named(Destination {
            kind,
            name: name.into(),
        }))
    };
    if let Some(n) = s.strip_prefix("/queue/") {
        named(DestinationKind::Queue, n)
    } else if let Some(n) = s.strip_prefix("/topic/") {
        named(DestinationKind::Topic, n)
    } else if let Some(n) = s.strip_prefix("/remote-temp-queue/") {
        named(DestinationKind::TempQueue, n)
    } else if let Some(n) = s.strip_prefix("/remote-temp-topic/") {
        named(DestinationKind::TempTopic, n)
    } else if let Some(n) = s.strip_prefix("/temp-queue/") {
        local(DestinationKind::TempQueue, n, s)
    } else if let Some(n) = s.strip_prefix("/temp-topic/") {
        local(DestinationKind::TempTopic, n, s)
    } else {
        Err(format!(
            "Illegal destination name: [{s}] -- ActiveMQ STOMP destinations must begin with one of: /queue/ /topic/ /temp-queue/ /temp-topic/"
        ))
    }
}

fn local(kind: DestinationKind, n: &str, s: &str) -> Result<StompDest, String> {
    if n.is_empty() {
        return Err(format!(
            "Illegal destination name: [{s}] -- the name is empty"
        ));
    }
    Ok(StompDest::LocalTemp(kind, n.to_string()))
}

/// Resolves a parsed destination for `connection`, creating its temporary destination on
/// first use (as ActiveMQ does for `/temp-queue/…`).
pub fn resolve(broker: &Broker, connection: u64, d: StompDest) -> Destination {
    match d {
        StompDest::Named(dest) => dest,
        StompDest::LocalTemp(kind, local) => {
            let dest = Destination {
                kind,
                name: format!("{}{}", broker.temp_prefix(connection), local).into(),
            };
            if broker.temp_exists(&dest) {
                dest
            } else {
                broker.create_temp(kind, connection, &local)
            }
        }
    }
}

/// Renders a destination by its broker-wide name (temporary ones as `/remote-temp-…/`), as
/// it must appear in a `reply-to` that other connections will read.
pub fn render_global(dest: &Destination) -> String {
    match dest.kind {
        DestinationKind::TempQueue => format!("/remote-temp-queue/{}", dest.name),
        DestinationKind::TempTopic => format!("/remote-temp-topic/{}", dest.name),
        _ => render(dest, ""),
    }
}

/// Renders a destination for a client: its own temporary destinations by their local names,
/// everyone else's as `/remote-temp-…/`.
pub fn render(dest: &Destination, own_temp_prefix: &str) -> String {
    match dest.kind {
        DestinationKind::Queue => format!("/queue/{}", dest.name),
        DestinationKind::Topic => format!("/topic/{}", dest.name),
        DestinationKind::TempQueue => match dest.name.strip_prefix(own_temp_prefix) {
            Some(local) => format!("/temp-queue/{local}"),
            None => format!("/remote-temp-queue/{}", dest.name),
        },
        DestinationKind::TempTopic => match dest.name.strip_prefix(own_temp_prefix) {
            Some(local) => format!("/temp-topic/{local}"),
            None => format!("/remote-temp-topic/{}", dest.name),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_activemq_prefixes() {
        assert_eq!(
            parse("/queue/a.b").unwrap(),
            StompDest::Named(Destination::queue("a.b"))
        );
        assert_eq!(
            parse("/topic/t").unwrap(),
            StompDest::Named(Destination::topic("t"))
        );
        assert_eq!(
            parse("/temp-queue/r").unwrap(),
            StompDest::LocalTemp(DestinationKind::TempQueue, "r".into())
        );
        assert!(parse("orders").unwrap_err().contains("must begin with"));
        assert!(parse("/queue/").is_err());
    }

    #[test]
    fn renders_own_and_remote_temps() {
        let d = Destination {
            kind: DestinationKind::TempQueue,
            name: "ID:b-1-7:reply".into(),
        };
        assert_eq!(render(&d, "ID:b-1-7:"), "/temp-queue/reply");
        assert_eq!(render(&d, "ID:b-1-8:"), "/remote-temp-queue/ID:b-1-7:reply");
    }
}
