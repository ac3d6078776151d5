//! Which services are alive: a table fed with adverts and the current time, that returns
//! `Up`/`Down` events. Pure code, no I/O, no clock: the caller passes `now`.
//!
//! ActiveMQ's rules (`MulticastDiscoveryAgent.processAlive`, `processDead`,
//! `doExpireOldServices`, `RemoteBrokerData`):
//!
//! - services are identified by their URI alone; the broker name only rides along;
//! - the first `alive` of a service is `Up`; later ones refresh its heartbeat;
//! - a `dead` advert of a known service is `Down` and forgets it;
//! - a service whose last `alive` is older than [`HEARTBEAT_MISS_BEFORE_DEATH`] keep-alive
//!   intervals is `Down` and forgotten (strictly older, as in Java);
//! - adverts of our own service are ignored;
//! - a service reported failed by its user ([`Membership::service_failed`]) while its adverts
//!   still arrive is `Down` at once, and `Up` again at the first `alive` after a back-off.
//!
//! [`HEARTBEAT_MISS_BEFORE_DEATH`]: crate::HEARTBEAT_MISS_BEFORE_DEATH

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::codec::{Advert, AdvertKind};
use crate::config::MulticastConfig;

/// Most services the table tracks. Adverts of further services are ignored (and counted), so
/// a flood of forged adverts costs bounded memory.
pub const SERVICES_MAX: usize = 1024;

/// Reported when a service appears or disappears.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DiscoveryEvent {
    /// A service is alive (ActiveMQ's `onServiceAdd`).
    Up {
        /// The broker name of its adverts.
        broker_name: String,
        /// The service URI, for example `tcp://host:61616`.
        service_uri: String,
    },
    /// A service is gone: it said so, it fell silent, or it was reported failed
    /// (ActiveMQ's `onServiceRemove`).
    Down {
        /// The broker name of its adverts.
        broker_name: String,
        /// The service URI.
        service_uri: String,
    },
}

impl DiscoveryEvent {
    /// The service URI the event is about.
    pub fn service_uri(&self) -> &str {
        match self {
            DiscoveryEvent::Up { service_uri, .. } | DiscoveryEvent::Down { service_uri, .. } => {
                service_uri
            }
        }
    }
}

/// What the table knows about one service (ActiveMQ's `RemoteBrokerData`).
#[derive(Debug, Clone)]
struct Remote {
    broker_name: String,
    last_heartbeat: Instant,
    /// Reported failed and not yet reported up again.
    failed: bool,
    failure_count: u32,
    /// When a failed service may be reported up again; while not failed, the time after which
    /// a heartbeat clears the failure count.
    recovery_time: Instant,
}

/// The back-off settings of [`Membership::service_failed`], from the config.
#[derive(Debug, Clone, Copy)]
struct Recovery {
    initial_delay: Duration,
    max_delay: Duration,
    multiplier: u64,
    exponential: bool,
    max_attempts: u32,
}

/// The services heard of, keyed by service URI.
#[derive(Debug, Clone)]
pub struct Membership {
    own_service: Option<String>,
    expiry: Duration,
    recovery: Recovery,
    services: HashMap<String, Remote>,
    ignored_over_limit: u64,
}

/// A service that has not failed for this long has its failure count reset (Java: 60 s).
const RECOVERED_AFTER: Duration = Duration::from_secs(60);

impl Membership {
    /// An empty table for `config`, ignoring adverts of `own_service` (the service this
    /// process advertises, if any).
    pub fn new(config: &MulticastConfig, own_service: Option<String>) -> Membership {
        Membership {
            own_service,
            expiry: config.expiry(),
            recovery: Recovery {
                initial_delay: Duration::from_millis(config.initial_reconnect_delay_ms),
                max_delay: Duration::from_millis(config.max_reconnect_delay_ms),
                multiplier: config.back_off_multiplier,
                exponential: config.use_exponential_back_off,
                max_attempts: config.max_reconnect_attempts,
            },
            services: HashMap::new(),
            ignored_over_limit: 0,
        }
    }

    /// Applies one advert received at `now`; returns the event it causes, if any. The caller
    /// has already checked the group ([`crate::decode_for_group`]).
    pub fn on_advert(&mut self, advert: Advert, now: Instant) -> Option<DiscoveryEvent> {
        if self.own_service.as_deref() == Some(advert.service_uri.as_str()) {
            return None;
        }
        match advert.kind {
            AdvertKind::Alive => self.on_alive(advert.broker_name, advert.service_uri, now),
            AdvertKind::Dead => self.forget(&advert.service_uri),
        }
    }

    fn on_alive(
        &mut self,
        broker_name: String,
        service_uri: String,
        now: Instant,
    ) -> Option<DiscoveryEvent> {
        if let Some(remote) = self.services.get_mut(&service_uri) {
            remote.last_heartbeat = now;
            if !remote.failed
                && remote.failure_count > 0
                && now.saturating_duration_since(remote.recovery_time) > RECOVERED_AFTER
            {
                remote.failure_count = 0;
            }
            if remote.failed
                && now >= remote.recovery_time
                && (self.recovery.max_attempts == 0
                    || remote.failure_count <= self.recovery.max_attempts)
            {
                remote.failed = false;
                return Some(DiscoveryEvent::Up {
                    broker_name: remote.broker_name.clone(),
                    service_uri,
                });
            }
            return None;
        }
        if self.services.len() >= SERVICES_MAX {
            self.ignored_over_limit = self.ignored_over_limit.saturating_add(1);
            return None;
        }
        self.services.insert(
            service_uri.clone(),
            Remote {
                broker_name: broker_name.clone(),
                last_heartbeat: now,
                failed: false,
                failure_count: 0,
                recovery_time: now,
            },
        );
        Some(DiscoveryEvent::Up {
            broker_name,
            service_uri,
        })
    }

    /// Forgets `service_uri`; `Down` unless it was unknown or already reported down.
    fn forget(&mut self, service_uri: &str) -> Option<DiscoveryEvent> {
        let remote = self.services.remove(service_uri)?;
        (!remote.failed).then(|| DiscoveryEvent::Down {
            broker_name: remote.broker_name,
            service_uri: service_uri.to_owned(),
        })
    }

    /// Forgets every service silent for longer than the expiry (10 keep-alive intervals) at
    /// `now`; returns a `Down` for each (in service URI order, for determinism).
    pub fn expire(&mut self, now: Instant) -> Vec<DiscoveryEvent> {
        let mut expired: Vec<String> = self
            .services
            .iter()
            .filter(|(_, r)| now.saturating_duration_since(r.last_heartbeat) > self.expiry)
            .map(|(uri, _)| uri.clone())
            .collect();
        expired.sort();
        expired.iter().filter_map(|uri| self.forget(uri)).collect()
    }

    /// Reports that `service_uri` failed (a connection to it broke) while it may still be
    /// advertising (ActiveMQ's `serviceFailed`): returns `Down` now, and the first `alive`
    /// after the back-off (`initialReconnectDelay`, or `backOffMultiplier ^ failures` ms capped
    /// by `maxReconnectDelay` with `useExponentialBackOff`) reports it `Up` again, unless it has
    /// failed more than `maxReconnectAttempts` times (when that is not 0).
    pub fn service_failed(&mut self, service_uri: &str, now: Instant) -> Option<DiscoveryEvent> {
        let recovery = self.recovery;
        let remote = self.services.get_mut(service_uri)?;
        if remote.failed {
            return None;
        }
        remote.failed = true;
        remote.failure_count = remote.failure_count.saturating_add(1);
        let delay = if recovery.exponential {
            let ms = recovery
                .multiplier
                .checked_pow(remote.failure_count)
                .unwrap_or(u64::MAX);
            Duration::from_millis(ms).min(recovery.max_delay)
        } else {
            recovery.initial_delay
        };
        remote.recovery_time = now.checked_add(delay).unwrap_or(now);
        Some(DiscoveryEvent::Down {
            broker_name: remote.broker_name.clone(),
            service_uri: service_uri.to_owned(),
        })
    }

    /// The services reported up and not yet down, sorted by URI.
    pub fn alive(&self) -> Vec<&str> {
        let mut up: Vec<&str> = self
            .services
            .iter()
            .filter(|(_, r)| !r.failed)
            .map(|(uri, _)| uri.as_str())
            .collect();
        up.sort_unstable();
        up
    }

    /// Adverts of new services ignored because the table held [`SERVICES_MAX`] services.
    pub fn ignored_over_limit(&self) -> u64 {
        self.ignored_over_limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(keep_alive_ms: u64) -> MulticastConfig {
        MulticastConfig {
            keep_alive_interval_ms: keep_alive_ms,
            ..MulticastConfig::default()
        }
    }

    fn advert(kind: AdvertKind, uri: &str) -> Advert {
        Advert {
            group: "default".into(),
            kind,
            broker_name: "localhost".into(),
            service_uri: uri.into(),
        }
    }

    fn alive(uri: &str) -> Advert {
        advert(AdvertKind::Alive, uri)
    }

    fn dead(uri: &str) -> Advert {
        advert(AdvertKind::Dead, uri)
    }

    fn up(uri: &str) -> DiscoveryEvent {
        DiscoveryEvent::Up {
            broker_name: "localhost".into(),
            service_uri: uri.into(),
        }
    }

    fn down(uri: &str) -> DiscoveryEvent {
        DiscoveryEvent::Down {
            broker_name: "localhost".into(),
            service_uri: uri.into(),
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_first_alive_is_up_and_repeats_are_silent() {
        let t0 = Instant::now();
        let mut m = Membership::new(&config(500), None);
        assert_eq!(m.on_advert(alive("tcp://a:1"), t0), Some(up("tcp://a:1")));
        assert_eq!(m.on_advert(alive("tcp://a:1"), t0 + ms(500)), None);
        assert_eq!(
            m.on_advert(alive("tcp://b:1"), t0 + ms(600)),
            Some(up("tcp://b:1"))
        );
        assert_eq!(m.alive(), ["tcp://a:1", "tcp://b:1"]);
    }

    #[test]
    fn a_dead_advert_is_down_once_and_an_unknown_dead_is_nothing() {
        let t0 = Instant::now();
        let mut m = Membership::new(&config(500), None);
        m.on_advert(alive("tcp://a:1"), t0);
        assert_eq!(m.on_advert(dead("tcp://a:1"), t0), Some(down("tcp://a:1")));
        assert_eq!(m.on_advert(dead("tcp://a:1"), t0), None);
        assert_eq!(m.on_advert(dead("tcp://never:1"), t0), None);
        assert!(m.alive().is_empty());
        // A service that comes back is up again.
        assert_eq!(
            m.on_advert(alive("tcp://a:1"), t0 + ms(1)),
            Some(up("tcp://a:1"))
        );
    }

    #[test]
    fn silence_longer_than_ten_keep_alive_intervals_is_down() {
        let t0 = Instant::now();
        let mut m = Membership::new(&config(500), None);
        m.on_advert(alive("tcp://a:1"), t0);
        m.on_advert(alive("tcp://b:1"), t0);
        m.on_advert(alive("tcp://b:1"), t0 + ms(3000));
        // Exactly 10 intervals of silence is not yet more than 10 (Java compares strictly).
        assert_eq!(m.expire(t0 + ms(5000)), []);
        assert_eq!(m.expire(t0 + ms(5001)), [down("tcp://a:1")]);
        assert_eq!(m.expire(t0 + ms(5001)), []);
        assert_eq!(m.alive(), ["tcp://b:1"]);
        assert_eq!(m.expire(t0 + ms(8001)), [down("tcp://b:1")]);
        assert!(m.alive().is_empty());
    }

    #[test]
    fn expiry_follows_the_configured_keep_alive_interval() {
        let t0 = Instant::now();
        let mut m = Membership::new(&config(20), None);
        m.on_advert(alive("tcp://a:1"), t0);
        assert_eq!(m.expire(t0 + ms(200)), []);
        assert_eq!(m.expire(t0 + ms(201)), [down("tcp://a:1")]);
    }

    #[test]
    fn our_own_service_is_ignored() {
        let t0 = Instant::now();
        let mut m = Membership::new(&config(500), Some("tcp://me:1".into()));
        assert_eq!(m.on_advert(alive("tcp://me:1"), t0), None);
        assert_eq!(m.on_advert(dead("tcp://me:1"), t0), None);
        assert!(m.alive().is_empty());
        assert_eq!(
            m.on_advert(alive("tcp://other:1"), t0),
            Some(up("tcp://other:1"))
        );
    }

    #[test]
    fn the_table_is_bounded_and_counts_what_it_ignored() {
        let t0 = Instant::now();
        let mut m = Membership::new(&config(500), None);
        for i in 0..SERVICES_MAX {
            assert!(m.on_advert(alive(&format!("tcp://h{i}:1")), t0).is_some());
        }
        assert_eq!(m.on_advert(alive("tcp://one-too-many:1"), t0), None);
        assert_eq!(m.ignored_over_limit(), 1);
        // Known services still refresh, and a freed slot is usable.
        assert_eq!(m.on_advert(alive("tcp://h0:1"), t0), None);
        m.on_advert(dead("tcp://h0:1"), t0);
        assert!(m.on_advert(alive("tcp://one-too-many:1"), t0).is_some());
    }

    #[test]
    fn a_failed_service_is_down_then_up_again_after_the_back_off() {
        let t0 = Instant::now();
        let mut cfg = config(500);
        cfg.initial_reconnect_delay_ms = 1000;
        let mut m = Membership::new(&cfg, None);
        m.on_advert(alive("tcp://a:1"), t0);
        assert_eq!(m.service_failed("tcp://a:1", t0), Some(down("tcp://a:1")));
        assert_eq!(m.service_failed("tcp://a:1", t0), None);
        assert_eq!(m.service_failed("tcp://unknown:1", t0), None);
        assert!(m.alive().is_empty());
        // Its adverts keep it from expiring but do not report it up during the back-off.
        assert_eq!(m.on_advert(alive("tcp://a:1"), t0 + ms(999)), None);
        assert_eq!(
            m.on_advert(alive("tcp://a:1"), t0 + ms(1000)),
            Some(up("tcp://a:1"))
        );
        // A failed service that then expires or says dead is not reported down twice.
        m.service_failed("tcp://a:1", t0 + ms(1001));
        assert_eq!(m.expire(t0 + ms(9000)), []);
        assert!(m.alive().is_empty());
    }

    #[test]
    fn exponential_back_off_and_the_attempt_limit_are_activemqs() {
        let t0 = Instant::now();
        let mut cfg = config(500);
        cfg.use_exponential_back_off = true;
        cfg.back_off_multiplier = 10;
        cfg.max_reconnect_delay_ms = 500;
        cfg.max_reconnect_attempts = 2;
        let mut m = Membership::new(&cfg, None);
        m.on_advert(alive("tcp://a:1"), t0);
        // First failure: 10^1 ms.
        m.service_failed("tcp://a:1", t0);
        assert_eq!(m.on_advert(alive("tcp://a:1"), t0 + ms(9)), None);
        assert_eq!(
            m.on_advert(alive("tcp://a:1"), t0 + ms(10)),
            Some(up("tcp://a:1"))
        );
        // Second failure: 10^2 ms.
        let t1 = t0 + ms(20);
        m.service_failed("tcp://a:1", t1);
        assert_eq!(m.on_advert(alive("tcp://a:1"), t1 + ms(99)), None);
        assert_eq!(
            m.on_advert(alive("tcp://a:1"), t1 + ms(100)),
            Some(up("tcp://a:1"))
        );
        // Third failure: capped at 500 ms, and past maxReconnectAttempts: never up again.
        let t2 = t1 + ms(200);
        m.service_failed("tcp://a:1", t2);
        assert_eq!(m.on_advert(alive("tcp://a:1"), t2 + ms(500)), None);
        assert_eq!(m.on_advert(alive("tcp://a:1"), t2 + ms(5000)), None);
    }
}
