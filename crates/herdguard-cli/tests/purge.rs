//! `herdguard purge` against a real `herdguard serve` process and a real origin
//! (a plain TCP server in this test): the URL, or every answer carrying a
//! surrogate key, is reloaded after the purge; a
//! wrong token is one error line and exit code 1; a bad --admin exit code 2.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const TOKEN: &str = "cli-purge-token-0123456789";

/// An origin answering `body N` (fresh for a minute), one request per connection.
fn origin() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
            let body = format!("body {n}");
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\nsurrogate-key: every-page\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (addr, calls)
}

/// A `herdguard serve` process; killed when dropped.
struct Serve {
    child: Child,
    listen: String,
    admin: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(origin: &str) -> Serve {
    let mut child = Command::new(env!("CARGO_BIN_EXE_herdguard"))
        .args(["serve", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .args(["--origin", &format!("http://{origin}"), "--threads", "1"])
        .args(["--purge-token", TOKEN])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The start-up log events name the two listeners: `listening url=…`, then `admin listening url=…`.
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut next_url = || loop {
        let line = lines.next().expect("serve started").unwrap();
        if let Some(rest) = line.split("url=http://").nth(1) {
            let addr = rest.split_whitespace().next().unwrap_or("");
            return addr.trim_end_matches("/metrics").to_string();
        }
    };
    let listen = next_url();
    let admin = next_url();
    Serve {
        child,
        listen,
        admin,
    }
}

/// A GET of `path` with `Host: api.example`; the body.
fn get(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: api.example\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text.split("\r\n\r\n").nth(1).unwrap_or("").to_string()
}

fn purge(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_herdguard"))
        .arg("purge")
        .args(args)
        .env_remove("HERDGUARD_PURGE_TOKEN")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn herdguard_purge_makes_the_sidecar_reload_the_urls() {
    let (origin, calls) = origin();
    let s = serve(&origin);
    assert_eq!(get(&s.listen, "/a"), "body 1");
    assert_eq!(get(&s.listen, "/b"), "body 2");
    assert_eq!(get(&s.listen, "/a"), "body 1");
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    let (code, stdout, stderr) = purge(&[
        "--admin",
        &s.admin,
        "--token",
        TOKEN,
        "http://api.example/a",
        "http://api.example/b",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    assert!(
        stdout.starts_with("purged http://api.example/a: "),
        "{stdout}"
    );
    assert_eq!(get(&s.listen, "/a"), "body 3");
    assert_eq!(get(&s.listen, "/b"), "body 4");
    // A URL nothing was stored under: said so, never "purged".
    let (code, stdout, stderr) = purge(&["--admin", &s.admin, "--token", TOKEN, "/never"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        stdout.trim(),
        "nothing stored for /never on this instance (keys: 0; fleet: none)"
    );

    let (code, _, stderr) = purge(&[
        "--admin",
        &s.admin,
        "--token",
        "not-the-token-0123456789",
        "http://api.example/a",
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("401"), "{stderr}");
    assert_eq!(get(&s.listen, "/a"), "body 3");

    let (code, _, stderr) = purge(&["--admin", "ftp://x", "--token", TOKEN, "/a"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    // A surrogate key: every answer tagged with it is reloaded.
    let (code, stdout, stderr) =
        purge(&["--admin", &s.admin, "--token", TOKEN, "--tag", "every-page"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.starts_with("purged tag every-page: "), "{stdout}");
    assert!(stdout.contains("(keys: 2;"), "{stdout}");
    assert_eq!(get(&s.listen, "/a"), "body 5");
    assert_eq!(get(&s.listen, "/b"), "body 6");
    // Nothing to purge at all: a usage error.
    let (code, _, _) = purge(&["--admin", &s.admin, "--token", TOKEN]);
    assert_eq!(code, Some(2));
}
