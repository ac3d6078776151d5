//! TLS on the replication link (`ha.tls_cert`, `ha.tls_key`, `ha.tls_ca`): both connections a
//! slave opens to its master (the stream and the fast-failover watch) run over mutually
//! authenticated TLS. Every member presents the same certificate as server (when master) and
//! as client (when slave), and accepts a peer only when `ca` signed its certificate; the
//! master refuses, in the handshake, a slave without such a certificate, so a stranger never
//! reaches the security token check (which still runs, inside TLS).
//!
//! Without TLS the connections are plain TCP, as in ActiveMQ's replicated LevelDB: fit for a
//! trusted network only, since the token and every message cross it in clear.
//!
//! Connection setup lives here so that `master` and `slave` only see read and write halves,
//! whatever the transport.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::ZkError;

/// The reading half of a replication connection (TCP or TLS).
pub(crate) type Reader = Box<dyn AsyncRead + Send + Unpin>;
/// The writing half of a replication connection (TCP or TLS).
pub(crate) type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// What a member needs to run the replication link over TLS: the server side (when master)
/// and the client side (when slave).
///
/// Clones share one holder: [`ReplicationTls::reload`] on any of them (the broker's SIGHUP
/// reload of `ha.tls_*`) changes the configurations every clone hands to connections opened or
/// accepted after it, while connections already open keep the session they made.
#[derive(Clone)]
pub struct ReplicationTls {
    current: Arc<parking_lot::RwLock<Configs>>,
}

/// One consistent pair: both sides of one certificate, key and CA bundle.
#[derive(Clone)]
struct Configs {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

impl std::fmt::Debug for ReplicationTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The configurations hold the private key: print nothing of them.
        f.debug_struct("ReplicationTls").finish_non_exhaustive()
    }
}

impl ReplicationTls {
    /// Mutual TLS with the certificate `chain` (leaf first) and its `key`, trusting the CAs in
    /// `ca` to sign every member's certificate. With `verify_hostname`, a slave also checks
    /// that the master's certificate names the host (DNS name or IP address) the master
    /// published in ZooKeeper; without it, only that `ca` signed the certificate (see
    /// [`ChainOnly`]).
    pub fn new(
        provider: Arc<CryptoProvider>,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        ca: Vec<CertificateDer<'static>>,
        verify_hostname: bool,
    ) -> Result<ReplicationTls, ZkError> {
        let setup =
            |what: &'static str| move |source: rustls::Error| ZkError::TlsSetup { what, source };
        let mut roots = RootCertStore::empty();
        for c in ca {
            roots
                .add(c)
                .map_err(setup("a CA certificate of tls_ca is not usable"))?;
        }
        let roots = Arc::new(roots);
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|e| ZkError::TlsSetup {
                    what: "checking slave certificates against tls_ca",
                    source: rustls::Error::General(e.to_string()),
                })?;
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(setup("TLS protocol versions"))?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(setup("tls_cert and tls_key do not make a usable pair"))?;
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(setup("TLS protocol versions"))?;
        let builder = if verify_hostname {
            builder.with_root_certificates(roots)
        } else {
            let inner = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| ZkError::TlsSetup {
                    what: "checking master certificates against tls_ca",
                    source: rustls::Error::General(e.to_string()),
                })?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly(inner)))
        };
        let client = builder
            .with_client_auth_cert(chain, key)
            .map_err(setup("tls_cert and tls_key do not make a usable pair"))?;
        Ok(ReplicationTls::from_configs(
            Arc::new(server),
            Arc::new(client),
        ))
    }

    /// From configurations built elsewhere (the master side must require client
    /// certificates: nothing here checks that it does).
    pub fn from_configs(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> ReplicationTls {
        ReplicationTls {
            current: Arc::new(parking_lot::RwLock::new(Configs { server, client })),
        }
    }

    /// Takes `fresh`'s certificate, key and CA bundle (built, and so checked, by
    /// [`ReplicationTls::new`]) for every connection this member and its clones open or accept
    /// from now on, both sides at once; open connections keep theirs.
    pub fn reload(&self, fresh: &ReplicationTls) {
        let configs = fresh.configs();
        *self.current.write() = configs;
    }

    fn configs(&self) -> Configs {
        self.current.read().clone()
    }

    /// The master's side, as it is now.
    fn server(&self) -> Arc<ServerConfig> {
        self.current.read().server.clone()
    }

    /// The slave's side, as it is now.
    fn client(&self) -> Arc<ClientConfig> {
        self.current.read().client.clone()
    }
}

/// A master certificate verifier that checks the chain up to `tls_ca`, its validity dates
/// and the handshake signatures, but not the name (`tls_verify_hostname = false`): for groups
/// whose members' certificates do not carry the names or addresses they publish (NAT,
/// addresses given by DHCP), as ActiveMQ/Artemis cluster connections are often run. Trust
/// then rests on the CA signing only the group's members.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            // webpki checks the name last, after the chain, the dates and the key usage: a
            // name mismatch therefore means everything else passed.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The name the master's certificate must carry: the host of the `host:port` it published (an
/// IP address is checked against the certificate's IP entries).
fn server_name(addr: &str) -> Result<ServerName<'static>, ZkError> {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned()).map_err(|_| {
        ZkError::Replication(format!(
            "the master's address {addr:?} has no host usable as a TLS server name"
        ))
    })
}

/// Opens a replication connection to the master at `addr`: TCP, then the TLS handshake when
/// `tls` is set, both within `timeout`. `what` says which connection, for errors.
pub(crate) async fn connect(
    addr: &str,
    tls: Option<&ReplicationTls>,
    timeout: Duration,
    what: &str,
) -> Result<(Reader, Writer), ZkError> {
    let open = async {
        let sock = TcpStream::connect(addr)
            .await
            .map_err(|e| ZkError::Replication(format!("{what} at {addr}: {e}")))?;
        let _ = sock.set_nodelay(true);
        let Some(tls) = tls else {
            let (rd, wr) = sock.into_split();
            return Ok::<(Reader, Writer), ZkError>((Box::new(rd), Box::new(wr)));
        };
        // Read at each connection: a reload applies from the next one.
        let stream = tokio_rustls::TlsConnector::from(tls.client())
            .connect(server_name(addr)?, sock)
            .await
            .map_err(|source| ZkError::Tls {
                peer: addr.to_string(),
                source,
            })?;
        // The TLS session is one state for both directions: split shares it between the
        // reader and the writer (TCP's owned halves would not).
        let (rd, wr) = tokio::io::split(stream);
        Ok((Box::new(rd), Box::new(wr)))
    };
    tokio::time::timeout(timeout, open)
        .await
        .map_err(|_| ZkError::Replication(format!("{what} at {addr} timed out")))?
}

/// Takes an accepted replication connection: as is, or after the TLS handshake (which must
/// finish within `timeout`, so a peer that connects and sends nothing costs little) with the
/// master's side of `tls` as it is when the connection arrives.
pub(crate) async fn accept(
    sock: TcpStream,
    peer: std::net::SocketAddr,
    tls: Option<&ReplicationTls>,
    timeout: Duration,
) -> Result<(Reader, Writer), ZkError> {
    let Some(tls) = tls else {
        let (rd, wr) = sock.into_split();
        return Ok((Box::new(rd), Box::new(wr)));
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server());
    let stream = tokio::time::timeout(timeout, acceptor.accept(sock))
        .await
        .map_err(|_| ZkError::Replication(format!("no TLS handshake from {peer} in time")))?
        .map_err(|source| ZkError::Tls {
            peer: peer.to_string(),
            source,
        })?;
    let (rd, wr) = tokio::io::split(stream);
    Ok((Box::new(rd), Box::new(wr)))
}
