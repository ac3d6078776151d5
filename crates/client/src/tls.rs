//! TLS for `ssl://` and `stomp+ssl://` brokers (ActiveMQ's `stomp+ssl://` transport), with
//! rustls and its `ring` provider.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::error::ClientError;

/// The URI schemes that mean STOMP over TLS.
pub(crate) const TLS_SCHEMES: [&str; 3] = ["ssl://", "stomp+ssl://", "stomp+tls://"];

/// True when `addr` names a TLS transport (`ssl://`, `stomp+ssl://`, `stomp+tls://`).
pub fn is_tls_addr(addr: &str) -> bool {
    let a = addr.trim().to_ascii_lowercase();
    TLS_SCHEMES.iter().any(|s| a.starts_with(s))
}

/// The rustls crypto provider of ferromq's clients and listeners: `ring`.
///
/// rustls 0.23.48 deprecates ring's provider because it has no post-quantum key exchange; the
/// project uses it anyway because its alternative, aws-lc-rs, needs a long C/cmake build on
/// every machine that builds the broker. Classical X25519/P-256 key exchange remains.
#[allow(deprecated)]
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls client configuration trusting the CAs in the PEM file `ca` (a private CA, as
/// brokers usually have; the system roots are not read), presenting the certificate chain and
/// key of `client` when given (for brokers with `tls.need_client_auth`).
pub fn client_config(
    ca: &Path,
    client: Option<(&Path, &Path)>,
) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(ca)? {
        roots
            .add(c)
            .map_err(|e| tls_error(ca, &format!("not a usable CA certificate: {e}")))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = certs(cert)?;
            let pem = read(key)?;
            let key_der = PrivateKeyDer::from_pem_slice(&pem)
                .map_err(|e| tls_error(key, &format!("no usable PEM private key: {e}")))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| ClientError::Tls(format!("client certificate and key: {e}")))?
        }
    };
    Ok(Arc::new(config))
}

/// The name the server's certificate must carry: the host of `host:port` (an IP address is
/// checked against the certificate's IP entries).
pub fn server_name(target: &str) -> Result<ServerName<'static>, ClientError> {
    let host = target.rsplit_once(':').map_or(target, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned())
        .map_err(|_| ClientError::InvalidAddress(target.to_owned()))
}

fn read(path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|e| tls_error(path, &format!("cannot read: {e}")))
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(path, &format!("invalid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(tls_error(
            path,
            "no \"BEGIN CERTIFICATE\" block in the file",
        ));
    }
    Ok(certs)
}

fn tls_error(path: &Path, why: &str) -> ClientError {
    ClientError::Tls(format!("{}: {why}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_schemes_are_recognised_and_plain_ones_are_not() {
        assert!(is_tls_addr("ssl://b:61612"));
        assert!(is_tls_addr("stomp+ssl://b:61612"));
        assert!(is_tls_addr("STOMP+SSL://b:61612"));
        assert!(!is_tls_addr("tcp://b:61613"));
        assert!(!is_tls_addr("b:61613"));
    }

    #[test]
    fn the_server_name_is_the_host_without_port_or_brackets() {
        assert_eq!(
            server_name("broker.example:61612").unwrap(),
            ServerName::try_from("broker.example").unwrap()
        );
        assert_eq!(
            server_name("[::1]:61612").unwrap(),
            ServerName::try_from("::1").unwrap()
        );
    }

    #[test]
    fn a_missing_ca_file_is_an_error_naming_it() {
        let err = client_config(Path::new("/nonexistent/ca.pem"), None).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }
}
