//! The discovery registry against a real ZooKeeper: publish, watch, replace, remove only one's
//! own znode.

mod common;

use std::time::{Duration, Instant};

use ferromq_ha_zk::registry::{register, watch_children, Children, RegistryConfig};

fn cfg() -> RegistryConfig {
    RegistryConfig {
        zk_address: common::zk(),
        session_timeout: Duration::from_secs(4),
    }
}

/// Waits (bounded) until the watch shows `want`.
async fn wait_for(rx: &mut tokio::sync::watch::Receiver<Children>, want: &[(&str, &str)]) {
    let want: Children = want
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if *rx.borrow_and_update() == want {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "watch shows {:?}, want {want:?}",
            *rx.borrow()
        );
        let _ = tokio::time::timeout(left, rx.changed()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishers_appear_replace_stale_entries_and_remove_only_their_own() {
    let base = common::unique_path("registry");
    let mut w = watch_children(cfg(), base.clone());
    let g1 = register(cfg(), format!("{base}/group1"), b"tcp://a:1".to_vec());
    let g2 = register(cfg(), format!("{base}/group2"), b"tcp://b:1".to_vec());
    wait_for(
        &mut w.rx,
        &[("group1", "tcp://a:1"), ("group2", "tcp://b:1")],
    )
    .await;
    // A new master of group1 publishes at once, over the old master's live znode.
    let g1_new = register(cfg(), format!("{base}/group1"), b"tcp://a:2".to_vec());
    wait_for(
        &mut w.rx,
        &[("group1", "tcp://a:2"), ("group2", "tcp://b:1")],
    )
    .await;
    // The deposed master stopping late must not remove its successor's address.
    g1.stop().await;
    g2.stop().await;
    wait_for(&mut w.rx, &[("group1", "tcp://a:2")]).await;
    g1_new.stop().await;
    wait_for(&mut w.rx, &[]).await;
}
