//! The TLS proxy listener (`--tls-cert` / `--tls-key`): rustls with ring (no
//! OpenSSL), ALPN `h2` then `http/1.1`; the protocol the client picks decides
//! how the connection is served ([`Negotiated`]).
//!
//! The handshake runs on the connection's own task, over the timed socket
//! ([`crate::limits::TimedIo`]): it counts as part of the first request head, so
//! a client that connects and sends nothing is closed after the header-read
//! limit and frees its connection slot.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::ConfigError;

/// ALPN identifiers offered, in order of preference.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The listener's certificate chain and key, loaded and checked against each other.
#[derive(Clone)]
pub struct TlsConfig(Arc<rustls::ServerConfig>, String);

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The files' names, never the key (a reload compares them).
        write!(f, "TlsConfig({})", self.1)
    }
}

/// Which HTTP version a TLS connection speaks, from its ALPN result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Negotiated {
    /// ALPN `h2`.
    Http2,
    /// ALPN `http/1.1`.
    Http1,
    /// No ALPN: told by the connection's first bytes (the HTTP/2 preface or not).
    Unknown,
}

impl TlsConfig {
    /// Reads a PEM certificate chain (`cert`, leaf first) and its private key
    /// (`key`: PKCS#8, PKCS#1 or SEC1); an error names the field (`tls_cert` or
    /// `tls_key`), the file and what is wrong.
    pub fn load(cert: &Path, key: &Path) -> Result<TlsConfig, ConfigError> {
        let fail = |field: &str, path: &Path, reason: String| ConfigError {
            field: field.to_string(),
            reason: format!("{}: {reason}", path.display()),
        };
        let cert_pem = std::fs::read(cert).map_err(|e| fail("tls_cert", cert, e.to_string()))?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| fail("tls_cert", cert, format!("not a PEM certificate: {e}")))?;
        if chain.is_empty() {
            return Err(fail(
                "tls_cert",
                cert,
                "no CERTIFICATE block in the PEM".into(),
            ));
        }
        let key_pem = std::fs::read(key).map_err(|e| fail("tls_key", key, e.to_string()))?;
        let private = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| fail("tls_key", key, format!("not a PEM private key: {e}")))?;
        // ring, named explicitly: no process-wide default provider is needed.
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| fail("tls_cert", cert, format!("TLS setup: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| {
            fail(
                "tls_key",
                key,
                format!("unusable with {}: {e}", cert.display()),
            )
        })?;
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        let files = format!("{}, {}", cert.display(), key.display());
        Ok(TlsConfig(Arc::new(config), files))
    }

    /// The acceptor of the listener's connections.
    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(Arc::clone(&self.0))
    }
}

impl Negotiated {
    /// The protocol of an established server connection.
    pub(crate) fn of(conn: &rustls::ServerConnection) -> Negotiated {
        match conn.alpn_protocol() {
            Some(b"h2") => Negotiated::Http2,
            Some(_) => Negotiated::Http1,
            None => Negotiated::Unknown,
        }
    }
}
