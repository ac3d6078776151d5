//! The replication core's ZooKeeper session task (`group_session`) against a real ZooKeeper:
//! the events it feeds the core, in order, through claims, a lost connection and an expired
//! session. A proxy in front of ZooKeeper cuts one member's connection (and refuses new ones)
//! for as long as a test needs.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use ferromq_ha_zk::group_session::{GroupSession, SessionConfig};
use ferromq_ha_zk::proto::{Event, GroupState, Session, ZkFail, ZkOp};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

/// Every wait here ends on an event; this only bounds a hung test.
const T: Duration = Duration::from_secs(60);

fn config(zk_address: String, path: &str, me: u32) -> SessionConfig {
    SessionConfig {
        zk_address,
        session_timeout: Duration::from_secs(4),
        zk_password: None,
        zk_path: path.to_string(),
        group: "g".into(),
        me,
        advertise: Some(format!("127.0.0.1:{}", 7000 + me)),
    }
}

use common::group_state as state;

/// A member's task and the events it reported so far.
struct Member {
    session: GroupSession,
    events: mpsc::Receiver<Event>,
    seen: Vec<String>,
}

impl Member {
    fn start(cfg: SessionConfig) -> Member {
        let (tx, events) = mpsc::channel(1024);
        Member {
            session: GroupSession::spawn(cfg, tx),
            events,
            seen: Vec::new(),
        }
    }

    /// Reads events until one matches; returns it. Fails with the events seen on a timeout.
    async fn until(&mut self, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
        let deadline = tokio::time::Instant::now() + T;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(e)) => {
                    self.seen.push(format!("{e:?}"));
                    if pred(&e) {
                        return e;
                    }
                }
                Ok(None) => panic!("the task ended while waiting for {what}: {:#?}", self.seen),
                Err(_) => panic!("no {what} within {T:?}; events: {:#?}", self.seen),
            }
        }
    }

    async fn group(
        &mut self,
        what: &str,
        pred: impl Fn(&Option<GroupState>, bool, bool) -> bool,
    ) -> (Option<GroupState>, u64, bool, bool) {
        match self
            .until(what, |e| matches!(e, Event::Group { state, leader_alive, leader_mine, .. } if pred(state, *leader_alive, *leader_mine)))
            .await
        {
            Event::Group {
                state,
                version,
                leader_alive,
                leader_mine,
            } => (state, version, leader_alive, leader_mine),
            _ => unreachable!(),
        }
    }

    async fn op(&mut self, req: u64, op: ZkOp) -> Result<u64, ZkFail> {
        assert!(self.session.submit(req, op).await, "the task is running");
        match self
            .until(
                "the operation's answer",
                |e| matches!(e, Event::ZkDone { req: r, .. } if *r == req),
            )
            .await
        {
            Event::ZkDone { result, .. } => result,
            _ => unreachable!(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_task_reports_the_group_and_answers_every_operation() {
    let path = common::unique_path("group-session");
    let mut a = Member::start(config(common::zk(), &path, 1));
    let mut b = Member::start(config(common::zk(), &path, 2));

    // Connected comes first, then the first read: no group yet.
    for m in [&mut a, &mut b] {
        let first = m.until("an event", |_| true).await;
        assert!(
            matches!(first, Event::Session(Session::Connected)),
            "{first:?}"
        );
        let (s, _, alive, _) = m.group("the first read", |_, _, _| true).await;
        assert_eq!((s, alive), (None, false));
    }

    // A creates the group; both read it through their watches.
    assert_eq!(a.op(1, ZkOp::Create(state(0, None, &[]))).await, Ok(0));
    for m in [&mut a, &mut b] {
        m.group("the created state", |s, _, _| s.is_some()).await;
    }
    // B's second create is refused, not applied.
    assert_eq!(
        b.op(1, ZkOp::Create(state(0, None, &[]))).await,
        Err(ZkFail::Conflict)
    );

    // A claims epoch 1: A sees its own leader node, B someone else's.
    let claim = |version, s| ZkOp::Claim { version, state: s };
    assert_eq!(a.op(2, claim(0, state(1, Some(1), &[1]))).await, Ok(1));
    let (s, v, _, mine) = a.group("A's own claim", |_, alive, _| alive).await;
    assert_eq!((s, v, mine), (Some(state(1, Some(1), &[1])), 1, true));
    let (_, _, _, mine) = b.group("A's claim, seen by B", |_, alive, _| alive).await;
    assert!(!mine, "B does not own A's leader node");
    // B's claim at the old version is a conflict; an ISR write at the current one applies.
    assert_eq!(
        b.op(2, claim(0, state(1, Some(2), &[2]))).await,
        Err(ZkFail::Conflict)
    );
    assert_eq!(
        a.op(
            3,
            ZkOp::Set {
                version: 1,
                state: state(1, Some(1), &[1, 2])
            }
        )
        .await,
        Ok(2)
    );
    b.group("the new ISR", |s, _, _| {
        s.as_ref().is_some_and(|s| s.isr == [1, 2])
    })
    .await;

    // Each finds the other's replication address; an unknown member has none.
    assert_eq!(a.session.lookup(2).await.as_deref(), Some("127.0.0.1:7002"));
    assert_eq!(b.session.lookup(1).await.as_deref(), Some("127.0.0.1:7001"));
    assert_eq!(a.session.lookup(9).await, None);

    // A stops: its session closes, and B's watch reports the leader node gone.
    a.session.stop().await;
    let (s, _, alive, _) = b.group("the leader node gone", |_, alive, _| !alive).await;
    assert_eq!(s, Some(state(1, Some(1), &[1, 2])), "the state stays");
    assert!(!alive);
    // ...and its address with it (the registration is ephemeral).
    assert_eq!(b.session.lookup(1).await, None);
    b.session.stop().await;
}

/// A TCP relay to ZooKeeper that can cut its connections and refuse new ones.
struct Proxy {
    addr: SocketAddr,
    open: watch::Sender<bool>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (open, rx) = watch::channel(true);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if !*rx.borrow() {
                    // Refused: closed at once, as an unreachable server would look.
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                tokio::spawn(relay(client, server, rx.clone()));
            }
        });
        Proxy { addr, open }
    }

    fn cut(&self) {
        self.open.send_replace(false);
    }

    fn restore(&self) {
        self.open.send_replace(true);
    }
}

async fn relay(client: TcpStream, server: TcpStream, mut open: watch::Receiver<bool>) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    tokio::select! {
        _ = tokio::io::copy(&mut cr, &mut sw) => {}
        _ = tokio::io::copy(&mut sr, &mut cw) => {}
        _ = open.wait_for(|o| !*o) => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_and_an_expired_session_are_reported_in_order_and_a_new_session_follows()
{
    let path = common::unique_path("group-session-expiry");
    let proxy = Proxy::start(common::zk()).await;
    let mut a = Member::start(config(proxy.addr.to_string(), &path, 1));
    let mut b = Member::start(config(common::zk(), &path, 2));
    a.group("A's first read", |_, _, _| true).await;
    b.group("B's first read", |_, _, _| true).await;
    assert_eq!(a.op(1, ZkOp::Create(state(0, None, &[]))).await, Ok(0));
    let claim = ZkOp::Claim {
        version: 0,
        state: state(1, Some(1), &[1, 2]),
    };
    assert_eq!(a.op(2, claim).await, Ok(1));
    b.group("A's leader node", |_, alive, _| alive).await;

    // Cut A off: the core hears `Disconnected` (the session is still alive on the server).
    proxy.cut();
    a.until("Disconnected", |e| {
        matches!(e, Event::Session(Session::Disconnected))
    })
    .await;
    // An operation without a connection is answered, not left hanging: it may have been
    // applied (it was not, here: the proxy refuses), so `Unknown`.
    let set = ZkOp::Set {
        version: 1,
        state: state(1, Some(1), &[1]),
    };
    assert!(a.session.submit(3, set).await);

    // The server expires A's session after its timeout: B sees the leader node go (a positive
    // event, not a wait).
    b.group("A's leader node gone with its session", |_, alive, _| {
        !alive
    })
    .await;
    let answer = a
        .until("the answer to the operation sent while cut off", |e| {
            matches!(e, Event::ZkDone { req: 3, .. })
        })
        .await;
    assert!(
        matches!(
            answer,
            Event::ZkDone {
                result: Err(ZkFail::Unknown),
                ..
            }
        ),
        "{answer:?}"
    );

    // Back in touch: A learns its session expired, then gets a new one and reads the group
    // (the ISR write was never applied; no leader node).
    proxy.restore();
    a.until("Expired", |e| matches!(e, Event::Session(Session::Expired)))
        .await;
    let next = a.until("the next event", |_| true).await;
    assert!(
        matches!(next, Event::Session(Session::Connected)),
        "a new session is reported before anything read through it: {next:?}"
    );
    let (s, v, alive, mine) = a.group("the read of the new session", |_, _, _| true).await;
    assert_eq!(s, Some(state(1, Some(1), &[1, 2])));
    assert_eq!((v, alive, mine), (1, false, false));
    // The new session works: A can claim again at the version it read.
    let claim = ZkOp::Claim {
        version: 1,
        state: state(2, Some(1), &[1, 2]),
    };
    assert_eq!(a.op(4, claim).await, Ok(2));
    a.group("A's new leader node", |_, alive, mine| alive && mine)
        .await;
    // The new session registered A's address again (the old registration went with the
    // expired session).
    assert_eq!(b.session.lookup(1).await.as_deref(), Some("127.0.0.1:7001"));
    a.session.stop().await;
    b.session.stop().await;
}
