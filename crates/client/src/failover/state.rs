//! What a [`FailoverClient`](super::FailoverClient) must remember to rebuild a session on a new
//! connection: subscriptions, unconfirmed sends, open transactions and the consumer audit.

use std::collections::{BTreeMap, HashMap, VecDeque};

use ferromq_protocol::stomp::Frame;
use tokio::sync::{mpsc, oneshot};

use super::audit::AckAudit;
use super::UNACKED_TRACKED_MAX;
use crate::client::Client;
use crate::config::AckMode;
use crate::error::ClientError;
use crate::message::ReceivedMessage;

/// The connection a [`FailoverClient`](super::FailoverClient) currently uses.
#[derive(Debug, Clone)]
pub(crate) enum Link {
    /// Between connections: operations wait (bounded by `timeout`).
    Connecting,
    /// Connected; `generation` counts connections, starting at 1.
    Up { client: Client, generation: u64 },
    /// Gave up reconnecting.
    Failed { attempts: u32, last_error: String },
    /// Disconnected by the application, or every handle was dropped.
    Closed,
}

impl Link {
    pub(crate) fn generation(&self) -> Option<u64> {
        match self {
            Link::Up { generation, .. } => Some(*generation),
            _ => None,
        }
    }

    /// The error for an operation attempted on a link that is not (and will not be) up.
    pub(crate) fn terminal_error(&self) -> Option<ClientError> {
        match self {
            Link::Failed {
                attempts,
                last_error,
            } => Some(ClientError::ReconnectFailed {
                attempts: *attempts,
                last_error: last_error.clone(),
            }),
            Link::Closed => Some(ClientError::Closed),
            Link::Connecting | Link::Up { .. } => None,
        }
    }
}

/// One connection's share of a subscription's messages, handed to the
/// [`FailoverSubscription`](super::FailoverSubscription), which drains it before the next.
#[derive(Debug)]
pub(crate) struct Feed {
    pub(crate) generation: u64,
    pub(crate) client: Client,
    pub(crate) rx: mpsc::UnboundedReceiver<ReceivedMessage>,
}

/// A message handed to the application and not yet acknowledged (client ack modes only).
#[derive(Debug, Clone)]
pub(crate) struct Delivered {
    pub(crate) message_id: String,
    /// The MESSAGE's `ack` header (STOMP 1.2): tells apart two deliveries of one message.
    pub(crate) ack_id: Option<String>,
    /// The connection it arrived on: an ACK is only meaningful on that connection.
    pub(crate) generation: u64,
}

/// A subscription to re-create after a failover.
#[derive(Debug)]
pub(crate) struct SubRecord {
    pub(crate) destination: String,
    pub(crate) ack: AckMode,
    /// Every header the application gave, `id` included; replayed as they were.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) feeds: mpsc::UnboundedSender<Feed>,
    /// The connection it is subscribed on now, if any.
    pub(crate) generation: Option<u64>,
    pub(crate) unacked: VecDeque<Delivered>,
}

/// A receipted send that is not confirmed yet.
#[derive(Debug)]
pub(crate) struct PendingSend {
    /// The SEND frame, producer headers included, without a `receipt` header.
    pub(crate) frame: Frame,
    pub(crate) done: Option<oneshot::Sender<Result<(), ClientError>>>,
    /// The connection and receipt id of its latest transmission.
    pub(crate) sent: Option<(u64, String)>,
    /// Set for a send inside a transaction: never resent, failed by a failover instead.
    pub(crate) transaction: Option<String>,
}

impl PendingSend {
    pub(crate) fn finish(mut self, result: Result<(), ClientError>) {
        if let Some(done) = self.done.take() {
            // The caller may have stopped waiting; nothing to do then.
            let _ = done.send(result);
        }
    }
}

/// A transaction begun through the failover client.
#[derive(Debug)]
pub(crate) struct TxState {
    /// The connection it was begun on; it exists on no other.
    pub(crate) generation: u64,
    /// Message ids acknowledged inside it; they enter the audit when it commits.
    pub(crate) acked: Vec<String>,
}

/// Everything the failover layer tracks, under one lock.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) subscriptions: HashMap<String, SubRecord>,
    /// By producer sequence number, so resends go out in the original order.
    pub(crate) pending: BTreeMap<u64, PendingSend>,
    pub(crate) transactions: HashMap<String, TxState>,
    pub(crate) audit: AckAudit,
    pub(crate) check_for_duplicates: bool,
}

/// What [`State::admit`] decided about a message that arrived for a subscription.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Hand it to the application.
    Deliver,
    /// A redelivery of a message the application already consumed: drop it.
    Duplicate {
        /// ACK it now, so the broker stops redelivering it.
        ack_now: bool,
    },
}

impl State {
    pub(crate) fn new(audit_depth: usize, check_for_duplicates: bool) -> State {
        State {
            subscriptions: HashMap::new(),
            pending: BTreeMap::new(),
            transactions: HashMap::new(),
            audit: AckAudit::new(audit_depth),
            check_for_duplicates,
        }
    }

    /// Decides whether a message that arrived on connection `generation` reaches the
    /// application, and records its delivery.
    pub(crate) fn admit(&mut self, sub_id: &str, generation: u64, msg: &ReceivedMessage) -> Admit {
        let Some(message_id) = msg.message_id() else {
            return Admit::Deliver;
        };
        let Some(sub) = self.subscriptions.get_mut(sub_id) else {
            return Admit::Deliver;
        };
        if self.check_for_duplicates && self.audit.contains(message_id) {
            let ack_now = match sub.ack {
                AckMode::Auto => false,
                AckMode::ClientIndividual => true,
                // A cumulative ACK now would also acknowledge messages the application holds
                // unacknowledged on this connection; let its next ACK cover this one instead.
                AckMode::Client => {
                    let covered_later = sub.unacked.iter().any(|d| d.generation == generation);
                    if covered_later {
                        push_bounded(
                            &mut sub.unacked,
                            Delivered {
                                message_id: message_id.to_owned(),
                                ack_id: msg.ack_id().map(str::to_owned),
                                generation,
                            },
                        );
                    }
                    !covered_later
                }
            };
            return Admit::Duplicate { ack_now };
        }
        match sub.ack {
            // The broker forgets an auto-acknowledged message once it is sent.
            AckMode::Auto => self.audit.record(message_id),
            AckMode::Client | AckMode::ClientIndividual => push_bounded(
                &mut sub.unacked,
                Delivered {
                    message_id: message_id.to_owned(),
                    ack_id: msg.ack_id().map(str::to_owned),
                    generation,
                },
            ),
        }
        Admit::Deliver
    }

    /// Removes what an ACK or NACK of `msg` settles from the subscription's unacked list:
    /// that message (client-individual) or it and everything before it (client). Returns the
    /// ids settled and the connection `msg` arrived on (`None` if it is not tracked).
    pub(crate) fn settle(&mut self, msg: &ReceivedMessage) -> (Vec<String>, Option<u64>) {
        let (Some(sub_id), Some(message_id)) = (msg.subscription(), msg.message_id()) else {
            return (Vec::new(), None);
        };
        let Some(sub) = self.subscriptions.get_mut(sub_id) else {
            return (vec![message_id.to_owned()], None);
        };
        let Some(pos) = sub
            .unacked
            .iter()
            .position(|d| d.message_id == message_id && d.ack_id.as_deref() == msg.ack_id())
        else {
            return (vec![message_id.to_owned()], None);
        };
        let generation = sub.unacked[pos].generation;
        let settled: Vec<String> = match sub.ack {
            AckMode::Client => sub.unacked.drain(..=pos).map(|d| d.message_id).collect(),
            AckMode::Auto | AckMode::ClientIndividual => sub
                .unacked
                .remove(pos)
                .map(|d| d.message_id)
                .into_iter()
                .collect(),
        };
        (settled, Some(generation))
    }
}

fn push_bounded(list: &mut VecDeque<Delivered>, d: Delivered) {
    if list.len() >= UNACKED_TRACKED_MAX {
        if let Some(old) = list.pop_front() {
            tracing::warn!(
                message_id = %old.message_id,
                "too many unacknowledged messages tracked; forgetting the oldest"
            );
        }
    }
    list.push_back(d);
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferromq_protocol::stomp::Command;

    fn state_with(ack: AckMode) -> State {
        let mut st = State::new(16, true);
        st.subscriptions.insert(
            "s".into(),
            SubRecord {
                destination: "/queue/a".into(),
                ack,
                headers: Vec::new(),
                feeds: mpsc::unbounded_channel().0,
                generation: Some(1),
                unacked: VecDeque::new(),
            },
        );
        st
    }

    fn msg(id: &str) -> ReceivedMessage {
        ReceivedMessage {
            frame: Frame::new(Command::Message)
                .with_header("subscription", "s")
                .with_header("message-id", id),
        }
    }

    #[test]
    fn client_individual_ack_settles_one_and_redelivery_is_dropped_and_acked() {
        let mut st = state_with(AckMode::ClientIndividual);
        assert_eq!(st.admit("s", 1, &msg("m1")), Admit::Deliver);
        assert_eq!(st.admit("s", 1, &msg("m2")), Admit::Deliver);
        let (settled, generation) = st.settle(&msg("m2"));
        assert_eq!(
            (settled.as_slice(), generation),
            (&["m2".to_owned()][..], Some(1))
        );
        for id in &settled {
            st.audit.record(id);
        }
        // After a failover both come again: m2 was consumed, m1 was not.
        assert_eq!(st.admit("s", 2, &msg("m1")), Admit::Deliver);
        assert_eq!(
            st.admit("s", 2, &msg("m2")),
            Admit::Duplicate { ack_now: true }
        );
    }

    #[test]
    fn two_deliveries_of_one_message_are_told_apart_by_their_ack_header() {
        let mut st = state_with(AckMode::ClientIndividual);
        let first = ReceivedMessage {
            frame: msg("m1").frame.with_header("ack", "a-1"),
        };
        let again = ReceivedMessage {
            frame: msg("m1").frame.with_header("ack", "a-2"),
        };
        st.admit("s", 1, &first);
        st.admit("s", 2, &again);
        assert_eq!(st.settle(&again).1, Some(2));
        assert_eq!(st.settle(&first).1, Some(1));
    }

    #[test]
    fn client_ack_settles_everything_up_to_the_message() {
        let mut st = state_with(AckMode::Client);
        for id in ["m1", "m2", "m3"] {
            st.admit("s", 1, &msg(id));
        }
        let (settled, _) = st.settle(&msg("m2"));
        assert_eq!(settled, ["m1", "m2"]);
        let (settled, _) = st.settle(&msg("m3"));
        assert_eq!(settled, ["m3"]);
    }

    #[test]
    fn cumulative_duplicate_waits_for_the_next_ack_when_others_are_unacked() {
        let mut st = state_with(AckMode::Client);
        st.audit.record("old");
        st.admit("s", 2, &msg("fresh"));
        assert_eq!(
            st.admit("s", 2, &msg("old")),
            Admit::Duplicate { ack_now: false }
        );
        let (settled, _) = st.settle(&msg("old"));
        assert_eq!(settled, ["fresh", "old"]);
    }

    #[test]
    fn auto_mode_records_on_delivery_and_never_acks_duplicates() {
        let mut st = state_with(AckMode::Auto);
        assert_eq!(st.admit("s", 1, &msg("m1")), Admit::Deliver);
        assert_eq!(
            st.admit("s", 2, &msg("m1")),
            Admit::Duplicate { ack_now: false }
        );
    }

    #[test]
    fn duplicate_check_can_be_disabled() {
        let mut st = state_with(AckMode::Auto);
        st.check_for_duplicates = false;
        st.admit("s", 1, &msg("m1"));
        assert_eq!(st.admit("s", 2, &msg("m1")), Admit::Deliver);
    }
}
