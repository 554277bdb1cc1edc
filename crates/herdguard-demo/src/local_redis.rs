//! `--fleet`: a private `redis-server` of the demo's own, on a free loopback
//! port, without persistence, stopped when the run ends (or is interrupted, or
//! fails: the guard kills it when dropped).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{bad, runtime, DemoError};

/// What to say when `redis-server` is not on `PATH`: one line.
pub const MISSING: &str =
    "--fleet needs redis-server on PATH: install it (apt-get install redis-server), or pass --redis URL for a Redis of your own";

/// How long the server gets to answer PING after it is started.
const READY_WITHIN: Duration = Duration::from_secs(5);

/// A running private `redis-server`; killed when dropped.
pub struct LocalRedis {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl LocalRedis {
    /// Finds `redis-server` on `PATH`, starts it on a free port of 127.0.0.1 and
    /// waits until it answers PING. Not found: [`DemoError::BadInput`] with
    /// [`MISSING`].
    pub fn start() -> Result<LocalRedis, DemoError> {
        let exe = find_on_path("redis-server").ok_or_else(|| bad(MISSING))?;
        let mut last = String::new();
        // A free port can be taken by someone else between the probe and the
        // server's bind: try a few.
        for _ in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| runtime(format!("no free loopback port for redis-server: {e}")))?
                .port();
            match Self::launch(&exe, port) {
                Ok(server) => return Ok(server),
                Err(e) => last = e,
            }
        }
        Err(runtime(format!("cannot start redis-server: {last}")))
    }

    fn launch(exe: &Path, port: u16) -> Result<LocalRedis, String> {
        let dir = std::env::temp_dir().join(format!(
            "herdguard-demo-redis-{}-{port}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let child = Command::new(exe)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("{}: {e}", exe.display()))?;
        // From here on the guard stops it, whatever happens.
        let mut server = LocalRedis { child, port, dir };
        let until = Instant::now() + READY_WITHIN;
        loop {
            if ping(port) {
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("it exited ({status}) on port {port}"));
            }
            if Instant::now() >= until {
                return Err(format!("no answer on port {port} within {READY_WITHIN:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for LocalRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether a Redis server answers PING on `127.0.0.1:port`.
fn ping(port: u16) -> bool {
    let Ok(mut conn) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
    if conn.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut answer = [0u8; 7];
    conn.read_exact(&mut answer).is_ok() && &answer == b"+PONG\r\n"
}

/// The first executable file called `name` in a directory of `PATH`.
fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_is_not_found_and_sh_is() {
        assert!(find_on_path("herdguard-no-such-program").is_none());
        assert!(find_on_path("sh").is_some());
    }
}
