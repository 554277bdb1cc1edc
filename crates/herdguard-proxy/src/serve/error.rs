//! Why `herdguard serve` stops: the error of [`run`](super::run) and
//! [`Server::bind`](super::Server::bind), and its exit code.

use std::net::SocketAddr;

use crate::config::error::ConfigError;

/// Why `herdguard serve` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A setting is invalid (exit code 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listener could not be opened.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The shared store could not be set up (exit code 2 when its settings
    /// are at fault: a bad URL or TLS file, a certificate the CA does not sign).
    #[error("redis: {0}")]
    Redis(herdguard_redis::RedisSetupError),
    /// The async runtime could not be started.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

impl ServeError {
    /// The process exit code for this error: 2 for bad configuration, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            ServeError::Config(_) => 2,
            ServeError::Redis(e) if e.is_config() => 2,
            _ => 1,
        }
    }
}
