//! Pure builders for the frames the client sends: no I/O, so they are unit-tested directly.

use bytes::Bytes;
use ferromq_protocol::stomp::{Command, Frame, Version};

use crate::config::{AckMode, ClientConfig};
use crate::error::ClientError;
use crate::message::ReceivedMessage;

/// The CONNECT frame for `config`. The `heart-beat` header is always sent (`0,0` when
/// heart-beating is disabled) so the server never falls back to a default of its own.
pub(crate) fn connect(config: &ClientConfig) -> Frame {
    let mut frame = Frame::new(Command::Connect)
        .with_header("accept-version", config.accept_version.as_str())
        .with_header("host", config.host.as_str())
        .with_header("heart-beat", config.heart_beat.to_header());
    if let Some(login) = &config.login {
        frame.push_header("login", login.as_str());
    }
    if let Some(passcode) = &config.passcode {
        frame.push_header("passcode", passcode.as_str());
    }
    if let Some(client_id) = &config.client_id {
        frame.push_header("client-id", client_id.as_str());
    }
    for (name, value) in &config.extra_connect_headers {
        frame.push_header(name.as_str(), value.as_str());
    }
    frame
}

/// A SEND frame. `destination` comes first, so it wins over a `destination` in `headers`.
pub(crate) fn send(destination: &str, body: Bytes, headers: &[(&str, &str)]) -> Frame {
    let mut frame = Frame::new(Command::Send).with_header("destination", destination);
    push_all(&mut frame, headers.iter().copied());
    frame.with_body(body)
}

/// A SUBSCRIBE frame for subscription `id`.
pub(crate) fn subscribe(
    destination: &str,
    id: &str,
    ack: AckMode,
    headers: &[(&str, &str)],
) -> Frame {
    let mut frame = Frame::new(Command::Subscribe)
        .with_header("destination", destination)
        .with_header("id", id)
        .with_header("ack", ack.as_header());
    // `id` is already set from `headers` when the caller chose one (see `Client::subscribe`).
    push_all(
        &mut frame,
        headers.iter().filter(|(n, _)| *n != "id").copied(),
    );
    frame
}

/// An UNSUBSCRIBE frame for subscription `id`.
pub(crate) fn unsubscribe(id: &str, headers: &[(&str, &str)]) -> Frame {
    let mut frame = Frame::new(Command::Unsubscribe).with_header("id", id);
    push_all(&mut frame, headers.iter().copied());
    frame
}

/// A transaction frame (BEGIN, COMMIT or ABORT).
pub(crate) fn transaction(command: Command, tx: &str) -> Frame {
    Frame::new(command).with_header("transaction", tx)
}

/// The ACK or NACK for `msg` in the shape `version` requires:
/// 1.2 quotes the MESSAGE's `ack` header as `id`; 1.1 sends `message-id` and `subscription`;
/// 1.0 sends `message-id` and has no NACK.
pub(crate) fn ack(
    command: Command,
    version: Version,
    msg: &ReceivedMessage,
    transaction: Option<&str>,
) -> Result<Frame, ClientError> {
    debug_assert!(matches!(command, Command::Ack | Command::Nack));
    let missing = |header: &str| {
        ClientError::Protocol(format!(
            "cannot {command} a MESSAGE without a {header:?} header"
        ))
    };
    let mut frame = Frame::new(command);
    match version {
        Version::V1_2 => {
            let id = msg.ack_id().ok_or_else(|| missing("ack"))?;
            frame.push_header("id", id);
        }
        Version::V1_1 => {
            let message_id = msg.message_id().ok_or_else(|| missing("message-id"))?;
            let subscription = msg.subscription().ok_or_else(|| missing("subscription"))?;
            frame.push_header("message-id", message_id);
            frame.push_header("subscription", subscription);
        }
        Version::V1_0 => {
            if command == Command::Nack {
                return Err(ClientError::Unsupported("NACK"));
            }
            let message_id = msg.message_id().ok_or_else(|| missing("message-id"))?;
            frame.push_header("message-id", message_id);
        }
    }
    if let Some(tx) = transaction {
        frame.push_header("transaction", tx);
    }
    Ok(frame)
}

fn push_all<'a>(frame: &mut Frame, headers: impl IntoIterator<Item = (&'a str, &'a str)>) {
    for (name, value) in headers {
        frame.push_header(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> ReceivedMessage {
        ReceivedMessage {
            frame: Frame::new(Command::Message)
                .with_header("destination", "/queue/a")
                .with_header("message-id", "ID:broker-1:1:1:1")
                .with_header("subscription", "sub-7")
                .with_header("ack", "ack-42"),
        }
    }

    #[test]
    fn ack_on_1_2_quotes_the_ack_header_as_id() {
        let frame = ack(Command::Ack, Version::V1_2, &message(), Some("tx1")).unwrap();
        assert_eq!(frame.command, Command::Ack);
        assert_eq!(
            frame.headers.to_vec(),
            vec![
                ("id".to_owned(), "ack-42".to_owned()),
                ("transaction".to_owned(), "tx1".to_owned())
            ]
        );
    }

    #[test]
    fn ack_on_1_1_sends_message_id_and_subscription() {
        let frame = ack(Command::Nack, Version::V1_1, &message(), None).unwrap();
        assert_eq!(frame.command, Command::Nack);
        assert_eq!(
            frame.headers.to_vec(),
            vec![
                ("message-id".to_owned(), "ID:broker-1:1:1:1".to_owned()),
                ("subscription".to_owned(), "sub-7".to_owned())
            ]
        );
    }

    #[test]
    fn ack_on_1_0_sends_message_id_only_and_nack_is_unsupported() {
        let frame = ack(Command::Ack, Version::V1_0, &message(), None).unwrap();
        assert_eq!(
            frame.headers.to_vec(),
            vec![("message-id".to_owned(), "ID:broker-1:1:1:1".to_owned())]
        );
        let err = ack(Command::Nack, Version::V1_0, &message(), None).unwrap_err();
        assert!(matches!(err, ClientError::Unsupported("NACK")), "{err:?}");
    }

    #[test]
    fn ack_on_1_2_without_ack_header_is_a_protocol_error() {
        let mut msg = message();
        msg.frame.remove_header("ack");
        let err = ack(Command::Ack, Version::V1_2, &msg, None).unwrap_err();
        assert!(matches!(err, ClientError::Protocol(_)), "{err:?}");
    }

    #[test]
    fn connect_carries_handshake_and_identity_headers() {
        let config = ClientConfig {
            login: Some("admin".into()),
            passcode: Some("secret".into()),
            client_id: Some("durable-1".into()),
            extra_connect_headers: vec![("x-extra".into(), "1".into())],
            ..ClientConfig::default()
        };
        let frame = connect(&config);
        assert_eq!(frame.command, Command::Connect);
        assert_eq!(frame.header("accept-version"), Some("1.0,1.1,1.2"));
        assert_eq!(frame.header("host"), Some("localhost"));
        assert_eq!(frame.header("heart-beat"), Some("10000,10000"));
        assert_eq!(frame.header("login"), Some("admin"));
        assert_eq!(frame.header("passcode"), Some("secret"));
        assert_eq!(frame.header("client-id"), Some("durable-1"));
        assert_eq!(frame.header("x-extra"), Some("1"));
    }

    #[test]
    fn config_debug_redacts_the_passcode() {
        let config = ClientConfig {
            passcode: Some("hunter2".into()),
            ..ClientConfig::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn subscribe_does_not_repeat_a_caller_chosen_id() {
        let frame = subscribe(
            "/topic/t",
            "mine",
            AckMode::ClientIndividual,
            &[("id", "mine"), ("selector", "a = 1")],
        );
        assert_eq!(frame.headers.iter().filter(|(n, _)| *n == "id").count(), 1);
        assert_eq!(frame.header("ack"), Some("client-individual"));
        assert_eq!(frame.header("selector"), Some("a = 1"));
    }
}
