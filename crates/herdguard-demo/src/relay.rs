//! The store-outage scenario's Redis "outage": a TCP relay the demo controls, in
//! front of the real `--redis` server.
//!
//! The demo cannot stop a Redis server it did not start, and must not: it may be
//! shared. So the strategies of that scenario reach Redis through this relay on a
//! loopback port, and the relay plays the outage — it drops every connection it
//! carries and closes each new one at once — and then forwards again. To the
//! clients that is exactly a Redis server going away and coming back.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::{bad, runtime, DemoError};

/// Longest the relay waits to reach the real server for one client connection.
const UPSTREAM_CONNECT: Duration = Duration::from_secs(2);

/// A TCP relay to a Redis server that can be made to fail; stops when dropped.
pub struct Relay {
    url: String,
    up: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Relay {
    /// Starts a relay on a free loopback port in front of the server of `url`
    /// (a `redis://` URL); [`Relay::url`] is the same URL pointing at the relay.
    pub async fn start(url: &str) -> Result<Relay, DemoError> {
        let mut parsed = url::Url::parse(url).map_err(|e| bad(format!("--redis {url}: {e}")))?;
        if parsed.scheme() != "redis" {
            return Err(bad(format!(
                "the store-outage scenario relays plain TCP: --redis must be a redis:// URL, got {url}"
            )));
        }
        let host = parsed
            .host_str()
            .ok_or_else(|| bad(format!("--redis {url}: no host")))?
            .trim_matches(|c| c == '[' || c == ']')
            .to_string();
        let port = parsed.port().unwrap_or(6379);
        let upstream = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| bad(format!("--redis {url}: cannot resolve {host}: {e}")))?
            .next()
            .ok_or_else(|| bad(format!("--redis {url}: {host} has no address")))?;
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| runtime(format!("cannot start the Redis relay: {e}")))?;
        let local = listener
            .local_addr()
            .map_err(|e| runtime(format!("cannot start the Redis relay: {e}")))?;
        parsed
            .set_host(Some("127.0.0.1"))
            .map_err(|e| runtime(format!("cannot point {url} at the relay: {e}")))?;
        parsed
            .set_port(Some(local.port()))
            .map_err(|()| runtime(format!("cannot point {url} at the relay")))?;
        let (up, watch_up) = watch::channel(true);
        let accept = tokio::spawn(accept_loop(listener, upstream, watch_up));
        Ok(Relay {
            url: parsed.to_string(),
            up,
            tasks: vec![accept],
        })
    }

    /// The `--redis` URL with the relay's address in place of the server's.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Plays the outage: from `from` until `until` every connection is dropped
    /// and every new one closed at once; then the relay forwards again.
    pub fn outage_between(&mut self, from: Instant, until: Instant) {
        let up = self.up.clone();
        self.tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(from.into()).await;
            up.send_replace(false);
            tokio::time::sleep_until(until.into()).await;
            up.send_replace(true);
        }));
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        // Ends every connection task: their `wait_for` sees the sender gone.
        self.up.send_replace(false);
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, up: watch::Receiver<bool>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // Out of descriptors or similar: back off a little rather than spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if !*up.borrow() {
            drop(client); // refused: closed at once
            continue;
        }
        tokio::spawn(forward(client, upstream, up.clone()));
    }
}

/// Carries one client connection to the server until either side closes it or
/// the outage begins (then both sockets are dropped, as a dying server would).
async fn forward(mut client: TcpStream, upstream: SocketAddr, mut up: watch::Receiver<bool>) {
    let _ = client.set_nodelay(true);
    let Ok(Ok(mut server)) =
        tokio::time::timeout(UPSTREAM_CONNECT, TcpStream::connect(upstream)).await
    else {
        return;
    };
    let _ = server.set_nodelay(true);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = up.wait_for(|up| !*up) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An echo server stands in for Redis: the relay forwards, drops, refuses,
    /// and forwards again.
    #[tokio::test]
    async fn forwards_then_drops_then_forwards_again() {
        let echo = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = echo.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let mut relay = Relay::start(&format!("redis://127.0.0.1:{port}/3"))
            .await
            .expect("relay");
        assert!(relay.url().ends_with("/3"), "{}", relay.url());
        let addr = relay
            .url()
            .trim_start_matches("redis://")
            .trim_end_matches("/3")
            .to_string();
        let round_trip = |addr: String| async move {
            let mut s = TcpStream::connect(&addr).await.ok()?;
            s.write_all(b"ping").await.ok()?;
            let mut buf = [0u8; 4];
            tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut buf))
                .await
                .ok()?
                .ok()?;
            Some((s, buf))
        };
        let (mut held, buf) = round_trip(addr.clone()).await.expect("forwards");
        assert_eq!(&buf, b"ping");

        let now = Instant::now();
        relay.outage_between(now, now + Duration::from_millis(400));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut buf = [0u8; 4];
        let read = tokio::time::timeout(Duration::from_secs(2), held.read(&mut buf))
            .await
            .expect("the held connection is closed, not left hanging");
        assert!(matches!(read, Ok(0) | Err(_)), "dropped: {read:?}");
        assert!(round_trip(addr.clone()).await.is_none(), "refused");

        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(round_trip(addr).await.is_some(), "forwards again");
    }
}
