//! The TLS proxy listener (`--tls-cert` / `--tls-key`): rustls with ring (no
//! OpenSSL), ALPN `h2` then `http/1.1`; the protocol the client picks decides
//! how the connection is served ([`Negotiated`]).
//!
//! The handshake runs on the connection's own task, over the timed socket
//! (`limits::TimedIo`): it counts as part of the first request head, so
//! a client that connects and sends nothing is closed after the header-read
//! limit and frees its connection slot.

use std::fmt;
use std::sync::Arc;

use rustls_pki_types::{CertificateDer, PrivateKeyDer};

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
    /// The listener's configuration: `chain` (leaf first) and its private
    /// `key`, ALPN `h2` then `http/1.1`; `files` names where they came from
    /// (its `Debug`, so a reload compares the names, never the key).
    pub(crate) fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        files: String,
    ) -> Result<TlsConfig, rustls::Error> {
        // ring, named explicitly: no process-wide default provider is needed.
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
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
