//! Test support: real servers on free loopback ports, stopped on drop.
//!
//! ```no_run
//! let redis = herdguard_testkit::RedisServer::start().expect("redis-server");
//! println!("{}", redis.url()); // redis://127.0.0.1:PORT/
//! ```

#![warn(missing_docs)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound, then released for the caller to use).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A `redis-server` of its own, on a free loopback port, without persistence
/// (or, from [`RedisServer::start_durable`], with every write fsynced to an
/// append-only file that survives a kill and [`RedisServer::restart`]); killed
/// when dropped.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    durable: bool,
}

impl RedisServer {
    /// Starts one and waits until it answers PING (at most 10 s).
    pub fn start() -> std::io::Result<Self> {
        let port = free_port()?;
        Self::start_on(port)
    }

    /// Starts one on `port` (e.g. to restart a killed server on the same port).
    pub fn start_on(port: u16) -> std::io::Result<Self> {
        Self::launch(port, false)
    }

    /// Starts one whose writes survive a crash: `appendonly yes`,
    /// `appendfsync always` (an acknowledged write is on disk).
    pub fn start_durable() -> std::io::Result<Self> {
        Self::launch(free_port()?, true)
    }

    fn launch(port: u16, durable: bool) -> std::io::Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("herdguard-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let mut server = RedisServer {
            child: None,
            port,
            dir,
            durable,
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let persistence: &[&str] = if self.durable {
            &["--appendonly", "yes", "--appendfsync", "always"]
        } else {
            &["--appendonly", "no"]
        };
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(persistence)
            // DEBUG SLEEP pauses the server in fault tests; from loopback only.
            .args(["--enable-debug-command", "local"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot start redis-server ({e}): install it (Debian: apt-get install redis-server)"),
                )
            })?;
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(10))
    }

    fn wait_ready(&mut self, limit: Duration) -> std::io::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if ping(self.addr()).is_ok() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    return Err(std::io::Error::other(format!(
                        "redis-server exited: {status}"
                    )));
                }
            }
            if Instant::now() >= deadline {
                return Err(std::io::Error::other(
                    "redis-server did not answer PING within 10 s",
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Its URL, `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills it at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        // A frozen process dies on SIGKILL too; thaw it anyway so nothing lingers.
        let _ = self.resume();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Freezes it (SIGSTOP): connections stay open, nothing is answered, as in a
    /// long GC or VM pause. [`RedisServer::resume`] thaws it.
    pub fn pause(&self) -> std::io::Result<()> {
        self.signal("-STOP")
    }

    /// Thaws it after [`RedisServer::pause`] (SIGCONT).
    pub fn resume(&self) -> std::io::Result<()> {
        self.signal("-CONT")
    }

    fn signal(&self, which: &str) -> std::io::Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| std::io::Error::other("redis-server is not running"))?;
        let status = Command::new("kill")
            .arg(which)
            .arg(pid.to_string())
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(format!(
                "kill {which} {pid}: {status}"
            )))
        }
    }

    /// Starts it again on the same port (and directory) after [`RedisServer::kill`].
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.kill();
        // Same port, same directory: a durable server reads its append-only file.
        self.spawn()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sends PING in RESP and expects +PONG.
fn ping(addr: SocketAddr) -> std::io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    stream.write_all(b"*1\r\n$4\r\nPING\r\n")?;
    let mut buf = [0u8; 7];
    stream.read_exact(&mut buf)?;
    if &buf == b"+PONG\r\n" {
        Ok(())
    } else {
        Err(std::io::Error::other("unexpected PING reply"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_answers_and_stops() {
        let mut redis = RedisServer::start().expect("redis-server must be installed for the tests");
        assert!(ping(redis.addr()).is_ok());
        redis.kill();
        assert!(ping(redis.addr()).is_err(), "killed server must not answer");
        redis.restart().unwrap();
        assert!(ping(redis.addr()).is_ok());
        redis.pause().unwrap();
        assert!(
            ping(redis.addr()).is_err(),
            "a frozen server must not answer"
        );
        redis.resume().unwrap();
        assert!(ping(redis.addr()).is_ok());
    }
}
