//! `[[security.authorization]]` over STOMP (ActiveMQ's `authorizationPlugin`): each cell of
//! read / write / admin (create) for queues and topics, temporary destinations, a destination
//! no rule covers; a refused SEND stores nothing and its ERROR names the destination. The rule
//! engine itself is unit-tested in `src/authz.rs`; the OpenWire session calls the same check.

mod common;

use common::*;

const CONFIG: &str = r#"
[security]
plaintext_passwords = true

[[security.users]]
username = "alice"
password = "a"
groups = ["writers"]

[[security.users]]
username = "rita"
password = "r"
groups = ["readers"]

[[security.users]]
username = "ada"
password = "d"
groups = ["admins"]

[[security.authorization]]
queue = ">"
read = "admins"
write = "admins"
admin = "admins"

[[security.authorization]]
queue = "orders.>"
read = "readers"
write = "writers"
admin = "admins"

[[security.authorization]]
topic = "prices.>"
read = "readers"
write = "writers"
admin = "admins"
"#;

async fn login(server: &ferromq_server::server::Server, user: &str, pass: &str) -> Raw {
    let mut r = Raw::connect(server).await;
    r.send(
        format!("CONNECT\naccept-version:1.2\nhost:localhost\nlogin:{user}\npasscode:{pass}\n\n\0")
            .as_bytes(),
    )
    .await;
    let f = r.frame().await.expect("CONNECTED");
    assert_eq!(f.command.as_str(), "CONNECTED", "{f:?}");
    r.use_1_2();
    r
}

/// Sends a frame asking for a receipt: `Ok` on RECEIPT, `Err(message)` on ERROR (then the
/// connection is closed by the broker).
async fn try_frame(r: &mut Raw, frame: &str) -> Result<(), String> {
    r.send(format!("{frame}receipt:x\n\n\0").as_bytes()).await;
    let f = r.frame().await.expect("an answer");
    match f.command.as_str() {
        "RECEIPT" => Ok(()),
        "ERROR" => Err(f.header("message").unwrap_or("").to_string()),
        other => panic!("unexpected {other}: {f:?}"),
    }
}

async fn send(
    server: &ferromq_server::server::Server,
    user: &str,
    pass: &str,
    dest: &str,
) -> Result<(), String> {
    let mut r = login(server, user, pass).await;
    try_frame(
        &mut r,
        &format!("SEND\ndestination:{dest}\npersistent:true\n"),
    )
    .await
}

async fn subscribe(
    server: &ferromq_server::server::Server,
    user: &str,
    pass: &str,
    dest: &str,
) -> Result<Raw, String> {
    let mut r = login(server, user, pass).await;
    try_frame(&mut r, &format!("SUBSCRIBE\nid:s\ndestination:{dest}\n")).await?;
    Ok(r)
}

fn queue_exists(server: &ferromq_server::server::Server, name: &str) -> bool {
    server
        .broker
        .snapshot()
        .iter()
        .any(|s| s.name == format!("queue://{name}"))
}

/// A network bridge's demand feed (which destinations have consumers) is for users who may read
/// consumer advisories (`topic://ActiveMQ.Advisory.Consumer`), as ActiveMQ's network connector
/// user needs `ActiveMQ.Advisory.>`.
#[tokio::test]
async fn the_network_demand_feed_needs_read_on_consumer_advisories() {
    let cfg = format!(
        "{CONFIG}\n[[security.users]]\nusername = \"net\"\npassword = \"n\"\ngroups = [\"bridges\"]\n\n[[security.authorization]]\ntopic = \"ActiveMQ.Advisory.>\"\nread = \"bridges\"\nwrite = \"bridges\"\nadmin = \"bridges\"\n"
    );
    let server = start(&cfg).await;
    let e = subscribe(&server, "alice", "a", "/ferromq/network-demand")
        .await
        .err()
        .expect("a writer may not read the demand feed");
    assert_eq!(
        e,
        "User alice is not authorized to read from topic://ActiveMQ.Advisory.Consumer"
    );
    let mut feed = subscribe(&server, "net", "n", "/ferromq/network-demand")
        .await
        .expect("the bridge user gets the feed");
    let f = feed.frame().await.expect("the first demand snapshot");
    assert_eq!(f.command.as_str(), "MESSAGE", "{f:?}");
    assert_eq!(f.header("destination"), Some("/ferromq/network-demand"));
}

#[tokio::test]
async fn every_permission_cell_is_enforced() {
    let server = start(CONFIG).await;

    // Creating a queue needs admin: a writer's first SEND is refused and stores nothing.
    let e = send(&server, "alice", "a", "/queue/orders.eu")
        .await
        .unwrap_err();
    assert_eq!(
        e,
        "User alice is not authorized to create queue://orders.eu"
    );
    assert!(!queue_exists(&server, "orders.eu"), "nothing stored");
    // An admin creates it (by subscribing); then the writer may write, the reader read.
    subscribe(&server, "ada", "d", "/queue/orders.eu")
        .await
        .unwrap();
    send(&server, "alice", "a", "/queue/orders.eu")
        .await
        .unwrap();
    let mut reader = subscribe(&server, "rita", "r", "/queue/orders.eu")
        .await
        .unwrap();
    let m = reader.frame().await.expect("the writer's message");
    assert_eq!(m.command.as_str(), "MESSAGE");
    // The wrong way round is refused, and the refused SEND stores nothing.
    let before: u64 = server
        .broker
        .snapshot()
        .iter()
        .filter(|s| s.name == "queue://orders.eu")
        .map(|s| s.stats.enqueued)
        .sum();
    let e = send(&server, "rita", "r", "/queue/orders.eu")
        .await
        .unwrap_err();
    assert_eq!(
        e,
        "User rita is not authorized to write to queue://orders.eu"
    );
    let after: u64 = server
        .broker
        .snapshot()
        .iter()
        .filter(|s| s.name == "queue://orders.eu")
        .map(|s| s.stats.enqueued)
        .sum();
    assert_eq!(before, after, "a refused SEND stores nothing");
    let e = subscribe(&server, "alice", "a", "/queue/orders.eu")
        .await
        .err()
        .unwrap();
    assert_eq!(
        e,
        "User alice is not authorized to read from queue://orders.eu"
    );

    // A queue only the catch-all rule covers: admins only.
    assert!(send(&server, "rita", "r", "/queue/payroll").await.is_err());
    assert!(subscribe(&server, "alice", "a", "/queue/payroll")
        .await
        .is_err());
    send(&server, "ada", "d", "/queue/payroll").await.unwrap();

    // Topics: read and write as the rule says; no rule covers other topics.
    let mut sub = subscribe(&server, "rita", "r", "/topic/prices.nyse")
        .await
        .unwrap();
    send(&server, "alice", "a", "/topic/prices.nyse")
        .await
        .unwrap();
    assert_eq!(
        sub.frame().await.expect("a price").command.as_str(),
        "MESSAGE"
    );
    let e = subscribe(&server, "alice", "a", "/topic/prices.nyse")
        .await
        .err()
        .unwrap();
    assert_eq!(
        e,
        "User alice is not authorized to read from topic://prices.nyse"
    );
    let e = send(&server, "rita", "r", "/topic/prices.nyse")
        .await
        .unwrap_err();
    assert_eq!(
        e,
        "User rita is not authorized to write to topic://prices.nyse"
    );
    assert!(
        send(&server, "ada", "d", "/topic/news").await.is_err(),
        "no rule: refused"
    );

    // Temporary destinations are not restricted without a `temp = true` entry.
    let mut r = login(&server, "rita", "r").await;
    try_frame(&mut r, "SUBSCRIBE\nid:t\ndestination:/temp-queue/mine\n")
        .await
        .unwrap();
    try_frame(&mut r, "SEND\ndestination:/temp-queue/mine\n")
        .await
        .unwrap();
    assert_eq!(
        r.frame().await.expect("own temp message").command.as_str(),
        "MESSAGE"
    );
}

#[test]
fn rules_without_users_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ferromq.toml");
    std::fs::write(
        &p,
        "[[security.authorization]]\nqueue = \">\"\nread = \"*\"\nwrite = \"*\"\nadmin = \"*\"\n",
    )
    .unwrap();
    let e = ferromq_server::config::Config::load(Some(&p), Vec::new()).unwrap_err();
    assert!(format!("{e:#}").contains("needs security.users"), "{e:#}");
}

/// Stored passwords are Argon2 hashes (`ferromq passwd`): the right password logs in, a wrong
/// one is refused; a plain-text password is refused at start unless explicitly allowed.
#[tokio::test]
async fn hashed_passwords_log_in_and_plain_text_needs_permission() {
    let hash = ferromq_server::passwords::hash("open sesame").unwrap();
    let server = start(&format!(
        "[[security.users]]\nusername = \"hal\"\npassword = \"{hash}\"\n"
    ))
    .await;
    let mut r = Raw::connect(&server).await;
    r.send(b"CONNECT\naccept-version:1.2\nhost:localhost\nlogin:hal\npasscode:open sesame\n\n\0")
        .await;
    assert_eq!(
        r.frame().await.expect("an answer").command.as_str(),
        "CONNECTED"
    );
    let mut r = Raw::connect(&server).await;
    r.send(b"CONNECT\naccept-version:1.2\nhost:localhost\nlogin:hal\npasscode:open sesame!\n\n\0")
        .await;
    assert_error(r.frame().await, "User name [hal] or password is invalid.");
    // The hash itself is not a password.
    let mut r = Raw::connect(&server).await;
    r.send(
        format!("CONNECT\naccept-version:1.2\nhost:localhost\nlogin:hal\npasscode:{hash}\n\n\0")
            .as_bytes(),
    )
    .await;
    assert_error(r.frame().await, "or password is invalid");

    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ferromq.toml");
    std::fs::write(
        &p,
        "[[security.users]]\nusername = \"x\"\npassword = \"plain\"\n",
    )
    .unwrap();
    let e = ferromq_server::config::Config::load(Some(&p), Vec::new()).unwrap_err();
    assert!(format!("{e:#}").contains("plain-text password"), "{e:#}");
}

/// ActiveMQ's `anonymousAccessAllowed`: with it, a client that gives no credentials logs in as
/// `anonymous` in group `anonymous`, and rules decide what it may use; without it (the
/// default) such a client is refused. A wrong password, or a login without a password, is
/// refused either way.
#[tokio::test]
async fn anonymous_access_only_when_allowed_and_only_where_the_rules_say() {
    async fn connect(server: &ferromq_server::server::Server, creds: &str) -> (Raw, String) {
        let mut r = Raw::connect(server).await;
        r.send(format!("CONNECT\naccept-version:1.2\nhost:localhost\n{creds}\n\0").as_bytes())
            .await;
        let f = r.frame().await.expect("an answer");
        let what = match f.command.as_str() {
            "ERROR" => format!("ERROR {}", f.header("message").unwrap_or("")),
            other => other.to_owned(),
        };
        r.use_1_2();
        (r, what)
    }
    let closed = start(CONFIG).await;
    let (_, what) = connect(&closed, "").await;
    assert_eq!(what, "ERROR User name [] or password is invalid.");

    let open = start(&format!(
        "{}\n[[security.authorization]]\nqueue = \"public.>\"\nread = \"anonymous\"\nwrite = \"anonymous\"\nadmin = \"anonymous\"\n",
        CONFIG.replace(
            "plaintext_passwords = true",
            "plaintext_passwords = true\nanonymous_access_allowed = true"
        )
    ))
    .await;
    let (mut anon, what) = connect(&open, "").await;
    assert_eq!(what, "CONNECTED");
    try_frame(
        &mut anon,
        "SEND\ndestination:/queue/public.news\npersistent:true\n",
    )
    .await
    .expect("the anonymous group may write public.>");
    assert!(queue_exists(&open, "public.news"));
    let e = try_frame(
        &mut anon,
        "SEND\ndestination:/queue/orders.x\npersistent:true\n",
    )
    .await
    .expect_err("anonymous may not write orders.>");
    assert_eq!(
        e,
        "User anonymous is not authorized to write to queue://orders.x"
    );
    assert!(!queue_exists(&open, "orders.x"), "nothing stored");
    let (_, what) = connect(&open, "login:alice\npasscode:wrong\n").await;
    assert_eq!(what, "ERROR User name [alice] or password is invalid.");
    let (_, what) = connect(&open, "login:alice\n").await;
    assert_eq!(what, "ERROR User name [alice] or password is invalid.");
    // The password users still log in as themselves.
    login(&open, "alice", "a").await;
}

#[test]
fn an_anonymous_login_that_is_also_a_password_user_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ferromq.toml");
    std::fs::write(
        &p,
        "[security]\nplaintext_passwords = true\nanonymous_access_allowed = true\nanonymous_user = \"ops\"\n\n[[security.users]]\nusername = \"ops\"\npassword = \"x\"\ngroups = [\"admins\"]\n",
    )
    .unwrap();
    let e = ferromq_server::config::Config::load(Some(&p), Vec::new()).unwrap_err();
    assert!(
        format!("{e:#}").contains("anonymous_user \"ops\" is also a [[security.users]] login"),
        "{e:#}"
    );
}

/// Transactions and durable subscriptions go through the same rules: a SEND inside a
/// transaction to a destination the user may not write is refused at once (and the
/// transaction, with the connection, is gone: nothing is stored even for the SENDs before it);
/// a durable subscription (`activemq.subscriptionName`) needs `read` on its topic and is not
/// created when refused.
#[tokio::test]
async fn transactions_and_durable_subscriptions_respect_the_rules() {
    let server = start(CONFIG).await;
    subscribe(&server, "ada", "d", "/queue/orders.tx")
        .await
        .expect("an admin creates the queue");
    let depth = |server: &ferromq_server::server::Server| {
        server
            .broker
            .snapshot()
            .iter()
            .find(|s| s.name == "queue://orders.tx")
            .map(|s| s.stats.enqueued)
    };
    // rita may read orders.>, not write it: her transactional SEND is refused.
    let mut rita = login(&server, "rita", "r").await;
    try_frame(&mut rita, "BEGIN\ntransaction:t1\n")
        .await
        .unwrap();
    let e = try_frame(
        &mut rita,
        "SEND\ndestination:/queue/orders.tx\ntransaction:t1\npersistent:true\n",
    )
    .await
    .expect_err("a reader may not send, in a transaction either");
    assert_eq!(
        e,
        "User rita is not authorized to write to queue://orders.tx"
    );
    assert!(rita.closed_by_server().await);
    // alice may: her transaction stores at COMMIT.
    let mut alice = login(&server, "alice", "a").await;
    try_frame(&mut alice, "BEGIN\ntransaction:t2\n")
        .await
        .unwrap();
    try_frame(
        &mut alice,
        "SEND\ndestination:/queue/orders.tx\ntransaction:t2\npersistent:true\n",
    )
    .await
    .unwrap();
    assert_eq!(depth(&server), Some(0), "nothing before COMMIT");
    try_frame(&mut alice, "COMMIT\ntransaction:t2\n")
        .await
        .unwrap();
    assert_eq!(depth(&server), Some(1), "the writer's committed SEND only");

    // Durable subscriptions: alice (a writer) may not read prices.>, rita may.
    let durable = |user: &'static str, pass: &'static str| {
        let server = &server;
        async move {
            let mut r = Raw::connect(server).await;
            r.send(
                format!(
                    "CONNECT\naccept-version:1.2\nhost:localhost\nlogin:{user}\npasscode:{pass}\nclient-id:cid-{user}\n\n\0"
                )
                .as_bytes(),
            )
            .await;
            assert_eq!(
                r.frame().await.expect("CONNECTED").command.as_str(),
                "CONNECTED"
            );
            r.use_1_2();
            try_frame(
                &mut r,
                "SUBSCRIBE\nid:d\ndestination:/topic/prices.eu\nactivemq.subscriptionName:sub\n",
            )
            .await
        }
    };
    let e = durable("alice", "a")
        .await
        .expect_err("a writer may not subscribe");
    assert_eq!(
        e,
        "User alice is not authorized to read from topic://prices.eu"
    );
    durable("rita", "r").await.expect("a reader may");
    let durables = server.broker.durable_subscriptions();
    assert!(
        durables.iter().any(|d| d.client_id == "cid-rita"),
        "rita's durable subscription exists: {durables:?}"
    );
    assert!(
        !durables.iter().any(|d| d.client_id == "cid-alice"),
        "no durable subscription for the refused one: {durables:?}"
    );
}

/// ActiveMQ's `tempDestinationAuthorizationEntry`: with a `temp = true` entry, only its groups
/// may create (admin), read and write temporary destinations.
#[tokio::test]
async fn a_temp_entry_restricts_temporary_destinations() {
    let server = start(&format!(
        "{CONFIG}\n[[security.authorization]]\ntemp = true\nread = \"readers\"\nwrite = \"readers\"\nadmin = \"readers\"\n"
    ))
    .await;
    let mut r = login(&server, "rita", "r").await;
    try_frame(&mut r, "SUBSCRIBE\nid:t\ndestination:/temp-queue/mine\n")
        .await
        .expect("a reader may create and read a temporary queue");
    try_frame(&mut r, "SEND\ndestination:/temp-queue/mine\n")
        .await
        .expect("and write it");
    assert_eq!(
        r.frame().await.expect("own temp message").command.as_str(),
        "MESSAGE"
    );
    let mut a = login(&server, "alice", "a").await;
    let e = try_frame(&mut a, "SUBSCRIBE\nid:t\ndestination:/temp-queue/hers\n")
        .await
        .expect_err("a writer is not in the temp entry");
    assert!(
        e.starts_with("User alice is not authorized to read from temp-queue://"),
        "{e}"
    );
}
