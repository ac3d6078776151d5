//! The parts of the configuration a running broker takes again without a restart (on SIGHUP,
//! see `src/main.rs`): `[security]` (users, certificate users, destination rules,
//! `max_connections_per_ip`), the `[tls]` certificate, key and CA bundle (`tls.ca`) files, and
//! the replication link's `ha.tls_cert`, `ha.tls_key` and `ha.tls_ca` files.
//!
//! Everything new is built and checked first and swapped in only when all of it is good, so a
//! bad file changes nothing. Connections stay open: each session looks at the
//! [`LiveConfig::generation`] before every frame it handles (one relaxed atomic load) and takes
//! the new [`Security`] when it moved, so a rule change applies from the next SEND of a
//! connection opened before it. A session keeps the user it logged in as: a removed user's open
//! connections stay open under the new rules (which may refuse them everything).
//!
//! Not reloaded (a restart applies them): listeners and every other section,
//! `tls.need_client_auth` and `tls.want_client_auth`, turning TLS on the replication link on
//! or off, and `ha.tls_verify_hostname`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::config::Config;
use crate::security::Security;
use crate::tls::CertResolver;

/// The reloadable configuration of one broker process, shared by its listeners, sessions and
/// admin endpoint (and kept across masterships).
#[derive(Debug)]
pub struct LiveConfig {
    /// Bumped after each successful reload.
    generation: AtomicU64,
    security: RwLock<Arc<Security>>,
    /// The listeners' certificate, when some listener speaks TLS.
    certs: Option<Arc<CertResolver>>,
    /// The replication link's TLS (`ha.tls_*`) when it runs over TLS: the holder the
    /// replication's acceptor and connectors read at each connection, and the
    /// `ha.tls_verify_hostname` it was made with.
    #[cfg(feature = "zk")]
    replication: Option<(ferromq_ha_zk::ReplicationTls, bool)>,
}

/// Why a reload was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// `[security]` does not compile.
    #[error("[security]: {0}")]
    Security(String),
    /// The certificate or key cannot be used.
    #[error("[tls]: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// The replication link's certificate, key or CA bundle cannot be used.
    #[error("[ha]: {0}")]
    Replication(crate::tls::TlsError),
    /// The new configuration drops what the running listeners need.
    #[error("{0}")]
    Unsupported(&'static str),
}

impl LiveConfig {
    /// The reloadable parts of `cfg`, reading the certificate when a listener uses TLS.
    pub fn new(cfg: &Config) -> Result<Arc<LiveConfig>, ReloadError> {
        let security = Security::new(&cfg.security).map_err(ReloadError::Security)?;
        let t = &cfg.transports;
        let tls_wanted = cfg.stomp_ssl_listen_addr().is_some()
            || cfg.openwire_ssl_listen_addr().is_some()
            || t.admin_tls;
        let certs = if tls_wanted {
            Some(Arc::new(CertResolver::load(&cfg.tls)?))
        } else {
            None
        };
        #[cfg(feature = "zk")]
        let replication = if cfg.ha.mode == "replicated" {
            crate::tls::replication_tls(&cfg.ha)
                .map_err(ReloadError::Replication)?
                .map(|t| (t, cfg.ha.tls_verify_hostname))
        } else {
            None
        };
        Ok(Arc::new(LiveConfig {
            generation: AtomicU64::new(0),
            security: RwLock::new(Arc::new(security)),
            certs,
            #[cfg(feature = "zk")]
            replication,
        }))
    }

    /// Takes the reloadable parts of `cfg` (already loaded and validated): all of them, or,
    /// on an error, none.
    pub fn apply(&self, cfg: &Config) -> Result<(), ReloadError> {
        let security = Security::new(&cfg.security).map_err(ReloadError::Security)?;
        #[cfg(feature = "zk")]
        let replication = self.load_replication(cfg)?;
        if let Some(certs) = &self.certs {
            if cfg.tls.cert.as_os_str().is_empty() || cfg.tls.key.as_os_str().is_empty() {
                return Err(ReloadError::Unsupported(
                    "tls.cert and tls.key cannot be removed while TLS listeners run (a restart \
                     removes listeners)",
                ));
            }
            // Last of the checks, so that a failure here leaves the security rules untouched
            // too; it swaps the certificate only when the new pair is usable.
            certs.reload(&cfg.tls)?;
        }
        // Every check passed: nothing below can fail.
        #[cfg(feature = "zk")]
        if let Some((running, fresh)) = replication {
            running.reload(&fresh);
        }
        *self.security.write() = Arc::new(security);
        self.generation.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// The security rules in force now.
    pub fn security(&self) -> Arc<Security> {
        self.security.read().clone()
    }

    /// How many reloads have been applied; sessions compare it to theirs before each frame.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The certificate the TLS listeners present, when some listener speaks TLS.
    pub fn certs(&self) -> Option<Arc<CertResolver>> {
        self.certs.clone()
    }

    /// The replication link's TLS, read from `ha.tls_*` at start, when `ha.mode =
    /// "replicated"` and the link runs over TLS: give it to the replication (clones share it)
    /// for a reload to reach its new connections.
    #[cfg(feature = "zk")]
    pub fn replication_tls(&self) -> Option<ferromq_ha_zk::ReplicationTls> {
        self.replication.as_ref().map(|(t, _)| t.clone())
    }

    /// The running replication TLS and the one `cfg`'s `ha.tls_*` files make now, when the
    /// link runs over TLS; an error when those files are unusable or gone. The running
    /// `ha.tls_verify_hostname` is kept (a restart changes it, like turning TLS on or off).
    #[cfg(feature = "zk")]
    fn load_replication(&self, cfg: &Config) -> Result<Option<ReplicationSwap<'_>>, ReloadError> {
        let Some((running, verify_hostname)) = &self.replication else {
            return Ok(None);
        };
        let ha = crate::config::HaSection {
            tls_verify_hostname: *verify_hostname,
            ..cfg.ha.clone()
        };
        match crate::tls::replication_tls(&ha).map_err(ReloadError::Replication)? {
            Some(fresh) => Ok(Some((running, fresh))),
            None => Err(ReloadError::Unsupported(
                "ha.tls_cert, ha.tls_key and ha.tls_ca cannot be removed while the replication \
                 link runs over TLS (a restart turns TLS off)",
            )),
        }
    }
}

/// The running replication TLS holder and what a reload puts in it.
#[cfg(feature = "zk")]
type ReplicationSwap<'a> = (
    &'a ferromq_ha_zk::ReplicationTls,
    ferromq_ha_zk::ReplicationTls,
);

/// The settings that differ between the running configuration and `new` but are not reloaded
/// (a restart applies them), by section or key, for the reload's log line.
pub fn needs_restart(running: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let mut check = |name: &'static str, differs: bool| {
        if differs {
            changed.push(name);
        }
    };
    check("[broker]", running.broker != new.broker);
    check("[transports]", running.transports != new.transports);
    check("[store]", running.store != new.store);
    check("[policy]", running.policy != new.policy);
    check("[stomp]", running.stomp != new.stomp);
    check("[openwire]", running.openwire != new.openwire);
    check("[admin]", running.admin != new.admin);
    // The replication link's certificate, key and CA files are reloaded (whatever their
    // paths); turning TLS on the link on or off is not.
    let ha_rest = |h: &crate::config::HaSection| crate::config::HaSection {
        tls_cert: Default::default(),
        tls_key: Default::default(),
        tls_ca: Default::default(),
        ..h.clone()
    };
    check("[ha]", ha_rest(&running.ha) != ha_rest(&new.ha));
    let link_tls = |h: &crate::config::HaSection| {
        [&h.tls_cert, &h.tls_key, &h.tls_ca]
            .iter()
            .any(|p| !p.as_os_str().is_empty())
    };
    check(
        "ha.tls_* (TLS on the replication link on or off)",
        link_tls(&running.ha) != link_tls(&new.ha),
    );
    check(
        "[[network_connectors]]",
        running.network_connectors != new.network_connectors,
    );
    check("[log]", running.log != new.log);
    let (r, n) = (&running.tls, &new.tls);
    check(
        "tls.need_client_auth / want_client_auth",
        (r.need_client_auth, r.want_client_auth) != (n.need_client_auth, n.want_client_auth),
    );
    check(
        "tls.handshake_timeout_ms",
        r.handshake_timeout_ms != n.handshake_timeout_ms,
    );
    changed
}

/// A session's copy of the security rules, refreshed when a reload moved the generation.
#[derive(Debug, Clone)]
pub(crate) struct SecurityView {
    generation: u64,
    current: Arc<Security>,
}

impl SecurityView {
    /// The rules in force now.
    pub(crate) fn new(live: &LiveConfig) -> SecurityView {
        // Generation first: a reload between the two loads is then seen again next time.
        let generation = live.generation();
        SecurityView {
            generation,
            current: live.security(),
        }
    }

    /// Takes the new rules after a reload.
    pub(crate) fn refresh(&mut self, live: &LiveConfig) {
        if live.generation() != self.generation {
            *self = SecurityView::new(live);
        }
    }

    /// The rules this session applies now.
    pub(crate) fn get(&self) -> &Security {
        &self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_replication_tls_files_need_no_restart_but_turning_the_tls_on_does() {
        let mut running = Config::default();
        running.ha.tls_cert = "/etc/repl/a.crt".into();
        running.ha.tls_key = "/etc/repl/a.key".into();
        running.ha.tls_ca = "/etc/repl/ca.crt".into();
        let mut renewed = running.clone();
        renewed.ha.tls_cert = "/etc/repl/a-2027.crt".into();
        renewed.ha.tls_key = "/etc/repl/a-2027.key".into();
        renewed.ha.tls_ca = "/etc/repl/ca-2027.crt".into();
        assert_eq!(needs_restart(&running, &renewed), Vec::<&str>::new());
        assert_eq!(
            needs_restart(&Config::default(), &running),
            ["ha.tls_* (TLS on the replication link on or off)"]
        );
        renewed.ha.tls_verify_hostname = !running.ha.tls_verify_hostname;
        assert_eq!(needs_restart(&running, &renewed), ["[ha]"]);
    }
}
