//! The proxy listener: connections accepted within the connection cap and
//! served, HTTP/1.1 by hyper and HTTP/2 (h2c or ALPN) by `h2`, with time limits
//! on the socket itself.
//!
//! # Layout
//!
//! - `acceptor`: the accept loop of each serving thread, the HTTP versions and
//!   their limits, the connection tuning a reload may replace.
//! - `drive`: a connection's life — graceful stop, and the progress rule (a
//!   connection whose answers the client does not take is closed).
//! - `h2`: HTTP/2 connections served with the `h2` crate (it can send 1xx).
//! - `interim`: the origin's interim (1xx) answers written to HTTP/1.1 clients
//!   beside hyper, between its messages.
//! - `limits`: per-connection head, idle and write timeouts on the socket itself.
//! - `tls`: the TLS listener (`--tls-cert` / `--tls-key`), ALPN.

pub(crate) mod acceptor;
pub(crate) mod drive;
pub(crate) mod h2;
pub(crate) mod interim;
pub(crate) mod limits;
pub(crate) mod tls;
