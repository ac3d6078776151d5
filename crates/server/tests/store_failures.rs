//! What a STOMP client is told when the store refuses a write, and what becomes of the messages
//! concerned.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;
use ferromq_protocol::stomp::Frame;
use ferromq_server::server::Server;
use ferromq_store::{
    Batch, Completion, MemoryStore, MessageStore, Recovery, StoreError, StoredMessage,
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
