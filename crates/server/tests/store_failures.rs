//! What a STOMP client is told when the store refuses a write, and what becomes of the messages
//! concerned.

mod common;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use ferromq_protocol::stomp::Frame;
use ferromq_server::server::Server;
use ferromq_store::{
    Batch, Completer, Completion, MemoryStore, MessageStore, Recovery, StoreError, StoredMessage,
};

/// A memory store whose writes fail while `failing` is set. A failed batch is not applied and
/// its completion resolves asynchronously, as a real store's does.
#[derive(Debug, Default)]
struct Switchable {
    inner: MemoryStore,
    failing: AtomicBool,
}

impl MessageStore for Switchable {
    fn kind(&self) -> &'static str {
        "switchable"
    }
    fn submit(&self, batch: Batch) -> Completion {
        if !self.failing.load(Ordering::SeqCst) {
            return self.inner.submit(batch);
        }
        let (completer, completion) = Completion::pair();
        completer.complete(Err(StoreError::Failed("test: the disk went away".into())));
        completion
    }
    fn recover(&self) -> Result<Recovery, StoreError> {
        self.inner.recover()
    }
    fn load(&self, l: &str, a: Option<u64>, m: usize) -> Result<Vec<StoredMessage>, StoreError> {
        self.inner.load(l, a, m)
    }
    fn usage_bytes(&self) -> u64 {
        self.inner.usage_bytes()
    }
    fn close(&self) -> Result<(), StoreError> {
        self.inner.close()
    }
}

/// Reads frames until one with this command, which it returns (panics if the connection ends).
async fn until(raw: &mut Raw, command: &str) -> Frame {
    loop {
        let f = raw
            .frame()
            .await
            .unwrap_or_else(|| panic!("connection ended before a {command}"));
        if f.command.as_str() == command {
            return f;
        }
    }
}

#[tokio::test]
async fn a_commit_the_store_refuses_is_reported_and_its_acked_message_is_delivered_again() {
    let store = Arc::new(Switchable::default());
    let server = Server::start_with_store(config(""), store.clone())
        .await
        .unwrap();
    let mut raw = Raw::connected(&server).await;
    raw.send(b"SUBSCRIBE\nid:s\ndestination:/queue/txf\nack:client-individual\n\n\0")
        .await;
    raw.send(b"SEND\ndestination:/queue/txf\npersistent:true\nreceipt:r1\n\nm\0")
        .await;
    let msg = until(&mut raw, "MESSAGE").await;
    let ack = msg.header("ack").unwrap().to_string();
    raw.send(b"BEGIN\ntransaction:t1\n\n\0").await;
    raw.send(format!("ACK\nid:{ack}\ntransaction:t1\n\n\0").as_bytes())
        .await;
    store.failing.store(true, Ordering::SeqCst);
    raw.send(b"COMMIT\ntransaction:t1\nreceipt:c1\n\n\0").await;
    let err = until(&mut raw, "ERROR").await;
    assert_eq!(err.header("receipt-id"), Some("c1"));
    assert_error(Some(err), "Transaction not committed");
    assert!(raw.closed_by_server().await);

    // The store still holds the message; the broker must offer it again.
    store.failing.store(false, Ordering::SeqCst);
    let mut raw = Raw::connected(&server).await;
    raw.send(b"SUBSCRIBE\nid:s2\ndestination:/queue/txf\nack:client-individual\n\n\0")
        .await;
    let again = until(&mut raw, "MESSAGE").await;
    assert_eq!(&again.body[..], b"m");
    assert_eq!(again.header("message-id"), msg.header("message-id"));
    server.shutdown().await.unwrap();
}

/// A memory store whose writes complete when the test says so, in submission order; a batch is
/// applied only when released with `Ok`.
#[derive(Debug, Default)]
struct Held {
    inner: MemoryStore,
    held: Mutex<VecDeque<(Batch, Completer)>>,
}

impl Held {
    fn held(&self) -> usize {
        self.held.lock().unwrap().len()
    }

    /// Waits (bounded) until `n` batches are held: the broker has handled what wrote them.
    async fn until_held(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.held() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the store never got write {n}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn release_next(&self, result: Result<(), StoreError>) {
        let (batch, completer) = self.held.lock().unwrap().pop_front().unwrap();
        if result.is_ok() {
            self.inner.submit(batch).wait_blocking().unwrap();
        }
        completer.complete(result);
    }
}

impl MessageStore for Held {
    fn kind(&self) -> &'static str {
        "held"
    }
    fn submit(&self, batch: Batch) -> Completion {
        let (completer, completion) = Completion::pair();
        self.held.lock().unwrap().push_back((batch, completer));
        completion
    }
    fn recover(&self) -> Result<Recovery, StoreError> {
        self.inner.recover()
    }
    fn load(&self, l: &str, a: Option<u64>, m: usize) -> Result<Vec<StoredMessage>, StoreError> {
        self.inner.load(l, a, m)
    }
    fn usage_bytes(&self) -> u64 {
        self.inner.usage_bytes()
    }
    fn close(&self) -> Result<(), StoreError> {
        self.inner.close()
    }
}

#[tokio::test]
async fn a_resend_of_a_message_whose_write_fails_gets_an_error_not_a_receipt() {
    let store = Arc::new(Held::default());
    let server = Server::start_with_store(config(""), store.clone())
        .await
        .unwrap();
    let send = |id: &str, receipt: &str, body: &str| {
        format!(
            "SEND\ndestination:/queue/dup\npersistent:true\n_AMQ_DUPL_ID:{id}\nreceipt:{receipt}\n\n{body}\0"
        )
    };
    let mut original = Raw::connected(&server).await;
    original.send(send("p:1", "a1", "o").as_bytes()).await;
    store.until_held(1).await;
    // The producer failed over before its receipt came and resends on a new connection; then
    // sends its next message, whose write shows the resend was handled.
    let mut resend = Raw::connected(&server).await;
    resend.send(send("p:1", "b1", "o").as_bytes()).await;
    resend.send(send("p:2", "b2", "n").as_bytes()).await;
    store.until_held(2).await;
    store.release_next(Err(StoreError::Failed("test: the disk went away".into())));
    store.release_next(Ok(()));

    let f = original.frame().await;
    assert_eq!(f.as_ref().and_then(|f| f.header("receipt-id")), Some("a1"));
    assert_error(f, "Message not stored");
    let f = resend.frame().await;
    assert_eq!(
        f.as_ref().map(|f| f.command.as_str()),
        Some("ERROR"),
        "the resend of a message that was never stored got {f:?}"
    );
    assert_eq!(f.as_ref().and_then(|f| f.header("receipt-id")), Some("b1"));

    // The id was forgotten: the next resend is stored and delivered.
    let mut again = Raw::connected(&server).await;
    again.send(send("p:1", "c1", "o").as_bytes()).await;
    store.until_held(1).await;
    store.release_next(Ok(()));
    let f = until(&mut again, "RECEIPT").await;
    assert_eq!(f.header("receipt-id"), Some("c1"));
    again
        .send(b"SUBSCRIBE\nid:s\ndestination:/queue/dup\nack:auto\n\n\0")
        .await;
    let mut bodies = vec![
        until(&mut again, "MESSAGE").await.body.to_vec(),
        until(&mut again, "MESSAGE").await.body.to_vec(),
    ];
    bodies.sort();
    assert_eq!(bodies, [b"n".to_vec(), b"o".to_vec()]);
    server.shutdown().await.unwrap();
}
