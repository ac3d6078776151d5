//! Transactions across a failover: the broker rolled them back, so COMMIT must say so.

mod failover_support;

use failover_support::{config, uri, wait_for_connection, Broker, STEP};
use ferromq_client::{ClientError, FailoverClient};
use ferromq_protocol::stomp::Command;

#[tokio::test]
async fn commit_of_a_transaction_open_during_failover_fails_and_a_retry_succeeds() {
    let a = Broker::bind().await;
    let b = Broker::bind().await;
    let uri = uri(&[&a.addr, &b.addr], "");
    let broker_a = tokio::spawn(async move {
        let (mut peer, _) = a.accept_once().await;
        let begin = peer.expect(Command::Begin).await;
        peer.receipt_for(&begin).await;
        let plain = peer.expect(Command::Send).await;
        // The receipted send in the transaction is never confirmed: the broker dies.
        let receipted = peer.expect(Command::Send).await;
        (begin, plain, receipted)
    });
    let broker_b = tokio::spawn(async move {
        let (mut peer, _) = b.accept().await;
        let mut seen = Vec::new();
        loop {
            let frame = peer.recv_frame().await;
            if frame.header("receipt").is_some() {
                peer.receipt_for(&frame).await;
            }
            let done = frame.command == Command::Commit;
            seen.push(frame);
            if done {
                return seen;
            }
        }
    });

    let client = FailoverClient::connect(&uri, config()).await.unwrap();
    client.begin("tx-1").await.unwrap();
    client
        .send("/queue/a", "in-tx", &[("transaction", "tx-1")])
        .await
        .unwrap();
    let err = client
        .send_with_receipt("/queue/a", "in-tx-receipted", &[("transaction", "tx-1")])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::TransactionRolledBack { transaction } if transaction == "tx-1"),
        "{err:?}"
    );
    let (begin_a, plain_a, receipted_a) = broker_a.await.unwrap();
    assert_eq!(begin_a.header("transaction"), Some("tx-1"));
    assert_eq!(plain_a.header("transaction"), Some("tx-1"));
    assert_eq!(receipted_a.header("transaction"), Some("tx-1"));

    wait_for_connection(&client, 2).await;
    // Work inside the dead transaction is refused, and so is its COMMIT.
    let err = client
        .send("/queue/a", "late", &[("transaction", "tx-1")])
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::TransactionRolledBack { .. }),
        "{err:?}"
    );
    let err = client.commit("tx-1").await.unwrap_err();
    assert!(
        matches!(&err, ClientError::TransactionRolledBack { transaction } if transaction == "tx-1"),
        "{err:?}"
    );
    assert!(err.to_string().contains("rolled back"), "{err}");

    // The application retries the whole transaction on the new connection.
    client.begin("tx-2").await.unwrap();
    client
        .send_with_receipt("/queue/a", "retry", &[("transaction", "tx-2")])
        .await
        .unwrap();
    tokio::time::timeout(STEP, client.commit("tx-2"))
        .await
        .unwrap()
        .unwrap();

    let seen_b = broker_b.await.unwrap();
    let commands: Vec<_> = seen_b.iter().map(|f| f.command).collect();
    assert_eq!(commands, [Command::Begin, Command::Send, Command::Commit]);
    // Nothing of tx-1 reached the new broker: it would not know the transaction.
    assert!(seen_b
        .iter()
        .all(|f| f.header("transaction") == Some("tx-2")));
    assert_eq!(seen_b[1].body, "retry");
}

#[tokio::test]
async fn abort_of_a_transaction_voided_by_failover_succeeds_locally() {
    let a = Broker::bind().await;
    let b = Broker::bind().await;
    let uri = uri(&[&a.addr, &b.addr], "");
    let broker_a = tokio::spawn(async move {
        let (mut peer, _) = a.accept_once().await;
        let begin = peer.expect(Command::Begin).await;
        peer.receipt_for(&begin).await;
    });
    let broker_b = tokio::spawn(async move {
        let (mut peer, _) = b.accept().await;
        // The first frame B sees is the DISCONNECT: no ABORT for a transaction it never had.
        let frame = peer.recv_frame().await;
        peer.receipt_for(&frame).await;
        frame.command
    });
    let client = FailoverClient::connect(&uri, config()).await.unwrap();
    client.begin("tx-1").await.unwrap();
    broker_a.await.unwrap();
    wait_for_connection(&client, 2).await;
    client.abort("tx-1").await.unwrap();
    client.disconnect().await.unwrap();
    assert_eq!(broker_b.await.unwrap(), Command::Disconnect);
}
