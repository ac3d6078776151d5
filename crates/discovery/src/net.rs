//! The tokio glue: an [`Advertiser`] that sends alive adverts, a [`Listener`] that receives
//! adverts and reports [`DiscoveryEvent`]s. The format lives in [`crate::codec`] and the rules
//! in [`crate::membership`]; this file only moves datagrams and reads the clock.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket as StdUdpSocket};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::Instrument;

use crate::codec::{self, DecodeError, EncodeError, DATAGRAM_BYTES_MAX};
use crate::config::MulticastConfig;
use crate::membership::{DiscoveryEvent, Membership};

/// Events a [`Listener`] buffers before it waits for its receiver.
pub const EVENTS_CHANNEL_CAPACITY: usize = 256;

/// Why an advertiser or listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// Not called from within a tokio runtime.
    #[error("multicast discovery must be started from within a tokio runtime")]
    NoRuntime,
    /// The advert cannot be encoded (bad broker name, empty or oversized service URI).
    #[error("cannot advertise: {0}")]
    Encode(#[from] EncodeError),
    /// A socket call failed; `what` names it.
    #[error("multicast socket: {what} failed for {group}: {source}")]
    Socket {
        /// The step that failed, for example `join group on 127.0.0.1`.
        what: String,
        /// The group address and port.
        group: SocketAddrV4,
        /// The OS error.
        source: io::Error,
    },
}

fn socket_error(
    cfg: &MulticastConfig,
    what: impl Into<String>,
) -> impl FnOnce(io::Error) -> DiscoveryError {
    let what = what.into();
    let group = cfg.group_socket_addr();
    move |source| DiscoveryError::Socket {
        what,
        group,
        source,
    }
}

fn runtime() -> Result<tokio::runtime::Handle, DiscoveryError> {
    tokio::runtime::Handle::try_current().map_err(|_| DiscoveryError::NoRuntime)
}

/// A UDP socket with the TTL, loopback and outgoing interface of `cfg`.
fn multicast_socket(cfg: &MulticastConfig) -> Result<Socket, DiscoveryError> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
        .map_err(socket_error(cfg, "socket"))?;
    socket
        .set_multicast_ttl_v4(cfg.time_to_live)
        .map_err(socket_error(cfg, "IP_MULTICAST_TTL"))?;
    // Java's loopBackMode=true disables loopback.
    socket
        .set_multicast_loop_v4(!cfg.loop_back_mode)
        .map_err(socket_error(cfg, "IP_MULTICAST_LOOP"))?;
    if let Some(interface) = cfg.interface {
        socket
            .set_multicast_if_v4(&interface)
            .map_err(socket_error(cfg, format!("IP_MULTICAST_IF {interface}")))?;
    }
    socket
        .set_nonblocking(true)
        .map_err(socket_error(cfg, "O_NONBLOCK"))?;
    Ok(socket)
}

fn into_tokio(cfg: &MulticastConfig, socket: Socket) -> Result<UdpSocket, DiscoveryError> {
    UdpSocket::from_std(StdUdpSocket::from(socket))
        .map_err(socket_error(cfg, "register with tokio"))
}

/// Sends this process's alive adverts (ActiveMQ's `registerService` side of the agent).
#[derive(Debug)]
pub struct Advertiser;

/// A running [`Advertiser`]. [`AdvertiserHandle::stop`] sends a `dead` advert and ends it.
/// Dropping the handle ends it *without* a `dead` advert, as a crash would: listeners then
/// declare the service dead after 10 keep-alive intervals.
#[derive(Debug)]
pub struct AdvertiserHandle {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    service_uri: String,
}

impl Advertiser {
    /// Starts advertising `service_uri` under `broker_name` to `cfg`'s group: one alive advert
    /// at once, then one every `keepAliveInterval`. Must be called within a tokio runtime.
    ///
    /// ActiveMQ brokers always send the broker name `localhost`; any name without `%` is
    /// accepted here.
    pub fn start(
        cfg: &MulticastConfig,
        broker_name: &str,
        service_uri: &str,
    ) -> Result<AdvertiserHandle, DiscoveryError> {
        let runtime = runtime()?;
        let alive = codec::encode_alive(&cfg.group, broker_name, service_uri)?;
        let dead = codec::encode_dead(&cfg.group, broker_name, service_uri)?;
        let socket = multicast_socket(cfg)?;
        let local = SocketAddrV4::new(cfg.interface_addr(), 0);
        socket
            .bind(&SocketAddr::V4(local).into())
            .map_err(socket_error(cfg, format!("bind {local}")))?;
        let socket = {
            let _guard = runtime.enter();
            into_tokio(cfg, socket)?
        };
        let (stop_tx, stop_rx) = oneshot::channel();
        let span =
            tracing::info_span!("discovery_advertiser", group = %cfg.group, service = %service_uri);
        let task = runtime.spawn(
            advertise(
                socket,
                cfg.group_socket_addr(),
                cfg.keep_alive_interval(),
                alive,
                dead,
                stop_rx,
            )
            .instrument(span),
        );
        tracing::info!(group = %cfg.group, to = %cfg.group_socket_addr(), service = %service_uri, "advertising service");
        Ok(AdvertiserHandle {
            stop: Some(stop_tx),
            task,
            service_uri: service_uri.to_owned(),
        })
    }
}

async fn advertise(
    socket: UdpSocket,
    to: SocketAddrV4,
    every: std::time::Duration,
    alive: Vec<u8>,
    dead: Vec<u8>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Like Java, report a failing send once, not every interval.
    let mut reported = false;
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                match socket.send_to(&alive, to).await {
                    Ok(_) => reported = false,
                    Err(e) if !reported => {
                        reported = true;
                        tracing::error!(error = %e, "Failed to advertise our service");
                    }
                    Err(e) => tracing::trace!(error = %e, "advert send failed"),
                }
            }
            stopped = &mut stop => {
                if stopped.is_ok() {
                    if let Err(e) = socket.send_to(&dead, to).await {
                        tracing::warn!(error = %e, "failed to send the dead advert");
                    }
                }
                // Else the handle was dropped: end silently, as a crash would.
                return;
            }
        }
    }
}

impl AdvertiserHandle {
    /// Sends a `dead` advert, so that listeners report the service down at once, and ends.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = &mut self.task;
        if let Err(e) = task.await {
            tracing::warn!(error = %e, "advertiser task ended abnormally");
        }
        tracing::info!(service = %self.service_uri, "stopped advertising service");
    }

    /// The advertised service URI.
    pub fn service_uri(&self) -> &str {
        &self.service_uri
    }
}

/// Receives adverts of a group and reports services coming and going (ActiveMQ's
/// `DiscoveryListener` side of the agent).
#[derive(Debug)]
pub struct Listener;

/// A running [`Listener`]. [`ListenerHandle::stop`] ends it; so does dropping the handle or
/// the event receiver.
#[derive(Debug)]
pub struct ListenerHandle {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Listener {
    /// Joins `cfg`'s group on its interface and reports `Up`/`Down` events on the returned
    /// channel (bounded: [`EVENTS_CHANNEL_CAPACITY`]; while it is full, the listener waits).
    /// Adverts of `own_service` are ignored. Several listeners of one group may run on one
    /// host (`SO_REUSEADDR`, `SO_REUSEPORT`). Must be called within a tokio runtime.
    pub fn start(
        cfg: &MulticastConfig,
        own_service: Option<String>,
    ) -> Result<(ListenerHandle, mpsc::Receiver<DiscoveryEvent>), DiscoveryError> {
        let runtime = runtime()?;
        let socket = multicast_socket(cfg)?;
        socket
            .set_reuse_address(true)
            .map_err(socket_error(cfg, "SO_REUSEADDR"))?;
        #[cfg(unix)]
        socket
            .set_reuse_port(true)
            .map_err(socket_error(cfg, "SO_REUSEPORT"))?;
        // On Linux, binding to the group address keeps datagrams of other groups on the same
        // port out (a wildcard bind receives every group any socket of the host joined).
        let bind_ip = if cfg!(target_os = "linux") {
            cfg.group_addr
        } else {
            Ipv4Addr::UNSPECIFIED
        };
        let local = SocketAddrV4::new(bind_ip, cfg.port);
        socket
            .bind(&SocketAddr::V4(local).into())
            .map_err(socket_error(cfg, format!("bind {local}")))?;
        let interface = cfg.interface_addr();
        socket
            .join_multicast_v4(&cfg.group_addr, &interface)
            .map_err(socket_error(cfg, format!("join group on {interface}")))?;
        let socket = {
            let _guard = runtime.enter();
            into_tokio(cfg, socket)?
        };
        let (events_tx, events_rx) = mpsc::channel(EVENTS_CHANNEL_CAPACITY);
        let (stop_tx, stop_rx) = oneshot::channel();
        let membership = Membership::new(cfg, own_service);
        let span = tracing::info_span!("discovery_listener", group = %cfg.group, on = %cfg.group_socket_addr());
        let task = runtime
            .spawn(listen(socket, cfg.clone(), membership, events_tx, stop_rx).instrument(span));
        tracing::info!(group = %cfg.group, on = %cfg.group_socket_addr(), interface = %interface, "listening for discovery adverts");
        Ok((
            ListenerHandle {
                stop: Some(stop_tx),
                task,
            },
            events_rx,
        ))
    }
}

async fn listen(
    socket: UdpSocket,
    cfg: MulticastConfig,
    mut membership: Membership,
    events: mpsc::Sender<DiscoveryEvent>,
    mut stop: oneshot::Receiver<()>,
) {
    // One byte more than the limit, so that an oversized datagram shows as oversized instead
    // of arriving cut to a length that looks valid.
    let mut buf = vec![0u8; DATAGRAM_BYTES_MAX + 1];
    let mut ticks = tokio::time::interval(cfg.keep_alive_interval());
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut dropped: u64 = 0;
    loop {
        let produced: Vec<DiscoveryEvent> = tokio::select! {
            _ = &mut stop => return,
            _ = events.closed() => return,
            _ = ticks.tick() => membership.expire(Instant::now().into_std()),
            received = socket.recv_from(&mut buf) => match received {
                Ok((len, from)) => {
                    let datagram = buf.get(..len).unwrap_or_default();
                    match codec::decode_for_group(&cfg.group, datagram) {
                        Ok(advert) => {
                            tracing::trace!(%from, ?advert, "advert");
                            membership.on_advert(advert, Instant::now().into_std()).into_iter().collect()
                        }
                        Err(DecodeError::WrongGroup | DecodeError::NotActiveMq) => Vec::new(),
                        Err(e) => {
                            dropped = dropped.saturating_add(1);
                            // Rate-limited: the first, then every 1000th.
                            if dropped % 1000 == 1 {
                                tracing::debug!(%from, error = %e, dropped, "dropping datagram");
                            }
                            Vec::new()
                        }
                    }
                }
                Err(e) => {
                    // ICMP errors and the like; the socket stays usable.
                    tracing::debug!(error = %e, "multicast receive failed");
                    Vec::new()
                }
            },
        };
        for event in produced {
            match &event {
                DiscoveryEvent::Up { service_uri, .. } => {
                    tracing::info!(service = %service_uri, "discovered service")
                }
                DiscoveryEvent::Down { service_uri, .. } => {
                    tracing::info!(service = %service_uri, "service gone")
                }
            }
            tokio::select! {
                _ = &mut stop => return,
                sent = events.send(event) => if sent.is_err() { return },
            }
        }
    }
}

impl ListenerHandle {
    /// Leaves the group and ends; the event channel then closes.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Err(e) = (&mut self.task).await {
            tracing::warn!(error = %e, "listener task ended abnormally");
        }
    }
}
