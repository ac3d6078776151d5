//! TLS on the client listeners (`transports.stomp_ssl`, `transports.openwire_ssl`) and the
//! admin endpoint (`transports.admin_tls`), with rustls and its `ring` provider.
//!
//! The `[tls]` files are read at start: a missing or malformed file stops the broker with the key
//! and path that are wrong, instead of failing every handshake later. The certificate and key,
//! and the check of client certificates against `tls.ca`, sit in a [`CertResolver`] that every
//! TLS listener's configuration shares; a SIGHUP reload ([`crate::reload`]) swaps them there,
//! so handshakes after it present the new certificate and check client certificates against
//! the new CA bundle, while connections already open keep theirs. Each accepted
//! connection then runs its handshake in its own task, under `tls.handshake_timeout_ms`, holding
//! one of its listener's connection permits: a client that connects and sends nothing costs a
//! permit for that long at most, and a failed handshake ends that connection alone.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::UnixTime;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::config::TlsSection;

/// A server-side TLS connection over TCP.
pub type TlsStream = tokio_rustls::server::TlsStream<TcpStream>;

/// Accepts TLS connections with the `[tls]` certificate.
pub use tokio_rustls::TlsAcceptor;

/// What is wrong with the `[tls]` configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("cannot read {key} = {}: {source}", path.display())]
    Read {
        /// The configuration key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A PEM file is malformed or holds nothing of the kind expected.
    #[error("{key} = {}: {why}", path.display())]
    Pem {
        /// The configuration key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The keys contradict each other or miss one another.
    #[error("{0}")]
    Config(String),
    /// rustls refused the certificate, the key or the trust store.
    #[error("{what}: {source}")]
    Rustls {
        /// What was being set up.
        what: &'static str,
        /// rustls's reason.
        source: rustls::Error,
    },
}

/// The certificate and private key the TLS listeners present, and their check of client
/// certificates (`tls.ca`), swappable while they run: each handshake takes the ones current
/// when it reaches them.
#[derive(Debug)]
pub struct CertResolver {
    current: parking_lot::RwLock<Arc<CertifiedKey>>,
    clients: Arc<ClientCheck>,
    /// `tls.need_client_auth` and `tls.want_client_auth` as started: a reload keeps them (a
    /// restart changes them, see [`crate::reload::needs_restart`]) and re-reads only `tls.ca`.
    client_auth: (bool, bool),
}

impl CertResolver {
    /// Reads `tls.cert`, `tls.key` and `tls.ca`.
    pub fn load(t: &TlsSection) -> Result<CertResolver, TlsError> {
        let provider = ferromq_client::tls::crypto_provider();
        Ok(CertResolver {
            current: parking_lot::RwLock::new(certified_key(t)?),
            clients: Arc::new(ClientCheck {
                current: parking_lot::RwLock::new(client_verifier(t, &provider)?),
            }),
            client_auth: (t.need_client_auth, t.want_client_auth),
        })
    }

    /// Reads `tls.cert`, `tls.key` and `tls.ca` again and, when all are usable, presents the
    /// pair and checks client certificates against the bundle from the next handshake on;
    /// otherwise keeps both and says why.
    pub fn reload(&self, t: &TlsSection) -> Result<(), TlsError> {
        let fresh = certified_key(t)?;
        let running = TlsSection {
            need_client_auth: self.client_auth.0,
            want_client_auth: self.client_auth.1,
            ..t.clone()
        };
        let provider = ferromq_client::tls::crypto_provider();
        let verifier = client_verifier(&running, &provider)?;
        *self.current.write() = fresh;
        *self.clients.current.write() = verifier;
        Ok(())
    }

    /// The DER of the certificate presented now (leaf first).
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.current.read().cert.clone()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().clone())
    }
}

/// The check of client certificates the listeners share: the verifier `tls.ca` makes, swapped
/// by [`CertResolver::reload`]. Each call delegates to the one current then.
#[derive(Debug)]
struct ClientCheck {
    current: parking_lot::RwLock<Arc<dyn ClientCertVerifier>>,
}

impl ClientCheck {
    fn get(&self) -> Arc<dyn ClientCertVerifier> {
        self.current.read().clone()
    }
}

impl ClientCertVerifier for ClientCheck {
    fn offer_client_auth(&self) -> bool {
        self.get().offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.get().client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // rustls borrows the hints from `self` for the whole handshake, which a bundle that a
        // reload may replace cannot lend. No hints tells clients "any CA" (the list is
        // advisory in TLS 1.2 and 1.3); the chain is still checked against the bundle.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.get()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.get().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.get().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.get().supported_verify_schemes()
    }
}

/// The pair of `tls.cert` and `tls.key`, checked to belong together.
fn certified_key(t: &TlsSection) -> Result<Arc<CertifiedKey>, TlsError> {
    let provider = ferromq_client::tls::crypto_provider();
    let certs = load_certs("tls.cert", &t.cert)?;
    let key = load_key("tls.key", &t.key)?;
    let ck = CertifiedKey::from_der(certs, key, &provider).map_err(|source| TlsError::Rustls {
        what: "tls.cert and tls.key do not make a usable certificate and key pair",
        source,
    })?;
    Ok(Arc::new(ck))
}

/// The rustls server configuration `[tls]` describes, offering `alpn` (e.g. `http/1.1` for the
/// admin endpoint; empty for STOMP and OpenWire, which have no ALPN names), with a certificate
/// of its own (start-up checks; listeners use [`server_config_with`]).
pub fn server_config(t: &TlsSection, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, TlsError> {
    server_config_with(t, alpn, Arc::new(CertResolver::load(t)?))
}

/// [`server_config`] presenting whatever `certs` holds at each handshake and checking client
/// certificates against its CA bundle then.
pub fn server_config_with(
    t: &TlsSection,
    alpn: &[&[u8]],
    certs: Arc<CertResolver>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = ferromq_client::tls::crypto_provider();
    // Checked at start like the rest; `certs` was loaded from the same section.
    client_verifier(t, &provider)?;
    let verifier: Arc<dyn ClientCertVerifier> = certs.clients.clone();
    let mut sc = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls {
            what: "TLS protocol versions",
            source,
        })?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(certs);
    sc.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(sc))
}

/// The acceptor for `[tls]`, see [`server_config`].
pub fn acceptor(t: &TlsSection, alpn: &[&[u8]]) -> Result<TlsAcceptor, TlsError> {
    Ok(TlsAcceptor::from(server_config(t, alpn)?))
}

/// The acceptor for `[tls]` presenting the certificate `certs` holds, see
/// [`server_config_with`].
pub fn acceptor_with(
    t: &TlsSection,
    alpn: &[&[u8]],
    certs: Arc<CertResolver>,
) -> Result<TlsAcceptor, TlsError> {
    Ok(TlsAcceptor::from(server_config_with(t, alpn, certs)?))
}

/// The subject of the certificate the client presented and `tls.ca` verified, when it sent
/// one (`need_client_auth` / `want_client_auth`); `None` without one or when it cannot be
/// read (logged).
pub(crate) fn peer_subject(stream: &TlsStream) -> Option<crate::dn::Dn> {
    let leaf = stream.get_ref().1.peer_certificates()?.first()?;
    match crate::dn::Dn::from_certificate(leaf) {
        Ok(dn) => Some(dn),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the subject of a client certificate");
            None
        }
    }
}

/// `need_client_auth`: every client must present a certificate signed by `ca`;
/// `want_client_auth`: one that presents a certificate must have it signed by `ca`.
fn client_verifier(
    t: &TlsSection,
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let has_ca = !t.ca.as_os_str().is_empty();
    if !t.need_client_auth && !t.want_client_auth {
        if has_ca {
            // A trust store nobody uses is most likely a forgotten need_client_auth: say so
            // rather than run without the client checks the operator expects.
            return Err(TlsError::Config(
                "tls.ca is set but neither tls.need_client_auth nor tls.want_client_auth: set \
                 one of them to check client certificates, or remove tls.ca"
                    .into(),
            ));
        }
        return Ok(WebPkiClientVerifier::no_client_auth());
    }
    if !has_ca {
        return Err(TlsError::Config(
            "tls.need_client_auth and tls.want_client_auth need tls.ca (PEM bundle of the CAs \
             that sign client certificates)"
                .into(),
        ));
    }
    let mut roots = RootCertStore::empty();
    for c in load_certs("tls.ca", &t.ca)? {
        roots.add(c).map_err(|e| TlsError::Pem {
            key: "tls.ca",
            path: t.ca.clone(),
            why: format!("not a usable CA certificate: {e}"),
        })?;
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    let builder = if t.need_client_auth {
        builder
    } else {
        builder.allow_unauthenticated()
    };
    builder.build().map_err(|e| TlsError::Pem {
        key: "tls.ca",
        path: t.ca.clone(),
        why: format!("cannot check client certificates with it: {e}"),
    })
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        key,
        path: path.to_path_buf(),
        source,
    })
}

/// Every certificate of a PEM file; none is an error.
pub fn load_certs(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(key, path)?;
    let bad = |why: String| TlsError::Pem {
        key,
        path: path.to_path_buf(),
        why,
    };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("invalid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(bad("no \"BEGIN CERTIFICATE\" block in the file".into()));
    }
    Ok(certs)
}

/// The first private key of a PEM file.
pub fn load_key(key: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(key, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Pem {
        key,
        path: path.to_path_buf(),
        why: format!("no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
    })
}

/// Runs the server side of the handshake on an accepted connection, bounded by `timeout` and
/// cut short by `shutdown` when given. A failure is logged with the peer and ends this
/// connection only.
pub(crate) async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    timeout: Duration,
    protocol: &'static str,
    shutdown: Option<watch::Receiver<bool>>,
) -> Option<TlsStream> {
    let stopped = async {
        match shutdown {
            // An error means the server is gone: stop too.
            Some(mut s) => {
                let _ = s.changed().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        r = tokio::time::timeout(timeout, acceptor.accept(stream)) => match r {
            Ok(Ok(s)) => Some(s),
            Ok(Err(e)) => {
                tracing::info!(%peer, protocol, error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::info!(
                    %peer,
                    protocol,
                    timeout_ms = timeout.as_millis() as u64,
                    "TLS handshake not finished within tls.handshake_timeout_ms; closing"
                );
                None
            }
        },
        _ = stopped => None,
    }
}

/// The replication link's TLS (`ha.tls_cert`, `ha.tls_key`, `ha.tls_ca`): `None` when none of
/// them is set (plain TCP); an error when only some are, or when a file is unreadable or
/// malformed, so that a half-configured group fails at start rather than at its first
/// handshake (or, worse, runs in clear by mistake).
#[cfg(feature = "zk")]
pub fn replication_tls(
    h: &crate::config::HaSection,
) -> Result<Option<ferromq_ha_zk::ReplicationTls>, TlsError> {
    let keys = [
        ("ha.tls_cert", &h.tls_cert),
        ("ha.tls_key", &h.tls_key),
        ("ha.tls_ca", &h.tls_ca),
    ];
    let (set, unset): (Vec<&str>, Vec<&str>) = (
        keys.iter()
            .filter(|(_, p)| !p.as_os_str().is_empty())
            .map(|(k, _)| *k)
            .collect(),
        keys.iter()
            .filter(|(_, p)| p.as_os_str().is_empty())
            .map(|(k, _)| *k)
            .collect(),
    );
    if set.is_empty() {
        return Ok(None);
    }
    if !unset.is_empty() {
        return Err(TlsError::Config(format!(
            "TLS on the replication link needs ha.tls_cert, ha.tls_key and ha.tls_ca together: {} set but {} missing",
            set.join(", "),
            unset.join(", ")
        )));
    }
    let chain = load_certs("ha.tls_cert", &h.tls_cert)?;
    let key = load_key("ha.tls_key", &h.tls_key)?;
    let ca = load_certs("ha.tls_ca", &h.tls_ca)?;
    ferromq_ha_zk::ReplicationTls::new(
        ferromq_client::tls::crypto_provider(),
        chain,
        key,
        ca,
        h.tls_verify_hostname,
    )
    .map(Some)
    .map_err(|e| TlsError::Config(format!("ha.tls_cert, ha.tls_key, ha.tls_ca: {e}")))
}
