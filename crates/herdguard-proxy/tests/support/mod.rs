//! Test support for the adversarial and limit tests: an origin on raw TCP that
//! records exactly what it receives (head, body bytes, which connection), a proxy
//! started in process from TOML settings, and raw-socket clients.
//!
//! The origin parses HTTP/1.1 itself, the way a simple real server does: it
//! trusts `Content-Length` / `Transfer-Encoding: chunked` to find where a
//! request ends. A proxy that forwards framing not matching the bytes it sends
//! shows up here as an incomplete body or a request made of another's bytes.

#![allow(dead_code)]

pub mod h2raw;
pub mod pki;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herdguard_proxy::{ServeArgs, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// One request as the origin received it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// Which accepted connection it came on (0, 1, ...).
    pub conn: usize,
    /// Its position on that connection (0 = first).
    pub nth_on_conn: usize,
    pub method: String,
    pub target: String,
    /// Header fields in order, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body bytes read, as the framing said.
    pub body: Vec<u8>,
    /// Whether the body the framing announced arrived in full (within 2 s).
    pub complete: bool,
    /// How long reading the body took (until complete, closed, or 2 s).
    pub body_time: Duration,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// What the origin answers.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: ReplyBody,
    pub delay: Duration,
}

pub enum ReplyBody {
    Bytes(Vec<u8>),
    /// This many bytes of `x`, written in 64 KiB chunks with a Content-Length.
    Generated(u64),
    /// These bytes announced (Content-Length), only the first `n` written,
    /// then the connection closed: a body broken off mid-way.
    Cut(Vec<u8>, usize),
}

impl Reply {
    pub fn ok(headers: &[(&str, &str)], body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status: 200,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: ReplyBody::Bytes(body.into()),
            delay: Duration::ZERO,
        }
    }
    pub fn status(mut self, status: u16) -> Reply {
        self.status = status;
        self
    }
    /// The body announced whole, broken off after its first `n` bytes.
    pub fn cut_after(mut self, n: usize) -> Reply {
        if let ReplyBody::Bytes(b) = self.body {
            self.body = ReplyBody::Cut(b, n);
        }
        self
    }
    pub fn delay(mut self, ms: u64) -> Reply {
        self.delay = Duration::from_millis(ms);
        self
    }
}

type Handler = dyn Fn(&Seen, usize) -> Reply + Send + Sync;

/// A recording origin on a free loopback port; stops with the test's runtime.
pub struct Origin {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    count: Arc<AtomicUsize>,
    record: Arc<std::sync::atomic::AtomicBool>,
    gauges: Arc<Gauges>,
}

/// What the origin has open and in hand at once.
#[derive(Default)]
struct Gauges {
    /// Connections open now.
    connections: AtomicUsize,
    /// Requests being answered now (from their whole head to the reply's last byte).
    answering: AtomicUsize,
    /// The most requests answered at once.
    most_answering: AtomicUsize,
}

/// Counts one request in hand while it lives.
struct Answering(Arc<Gauges>);

impl Answering {
    fn new(gauges: &Arc<Gauges>) -> Self {
        let now = gauges.answering.fetch_add(1, Ordering::SeqCst) + 1;
        gauges.most_answering.fetch_max(now, Ordering::SeqCst);
        Answering(Arc::clone(gauges))
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.answering.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Origin {
    /// Requests received so far (complete or not).
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
    /// Stops keeping the requests (counting goes on): for tests that measure
    /// memory over many requests.
    pub fn stop_recording(&self) {
        self.record.store(false, Ordering::SeqCst);
        self.seen.lock().unwrap().clear();
    }
    /// How many requests arrived.
    pub fn calls(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.gauges.connections.load(Ordering::SeqCst)
    }
    /// Requests it is answering now (its reply not yet written whole).
    pub fn answering(&self) -> usize {
        self.gauges.answering.load(Ordering::SeqCst)
    }
    /// The most requests it answered at once so far.
    pub fn most_concurrent(&self) -> usize {
        self.gauges.most_answering.load(Ordering::SeqCst)
    }
}

pub async fn origin(handler: impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static) -> Origin {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let handler: Arc<Handler> = Arc::new(handler);
    let record = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let gauges = Arc::new(Gauges::default());
    let (seen2, count2, record2, gauges2) = (
        Arc::clone(&seen),
        Arc::clone(&count),
        Arc::clone(&record),
        Arc::clone(&gauges),
    );
    tokio::spawn(async move {
        let mut conn = 0;
        while let Ok((stream, _)) = listener.accept().await {
            let (seen, count, handler, record, gauges) = (
                Arc::clone(&seen2),
                Arc::clone(&count2),
                Arc::clone(&handler),
                Arc::clone(&record2),
                Arc::clone(&gauges2),
            );
            tokio::spawn(async move {
                gauges.connections.fetch_add(1, Ordering::SeqCst);
                let served = serve_conn(stream, conn, (seen, count), handler, record, &gauges);
                served.await;
                gauges.connections.fetch_sub(1, Ordering::SeqCst);
            });
            conn += 1;
        }
    });
    Origin {
        addr,
        seen,
        count,
        record,
        gauges,
    }
}

async fn serve_conn(
    mut stream: TcpStream,
    conn: usize,
    (seen, count): (Arc<Mutex<Vec<Seen>>>, Arc<AtomicUsize>),
    handler: Arc<Handler>,
    record: Arc<std::sync::atomic::AtomicBool>,
    gauges: &Arc<Gauges>,
) {
    let _ = stream.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::new();
    for nth in 0.. {
        // The head: bounded, and the connection may idle between requests.
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i;
            }
            if buf.len() > 256 * 1024 {
                return;
            }
            let mut chunk = [0u8; 16 * 1024];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let _answering = Answering::new(gauges);
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        buf.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let mut request_line = lines.next().unwrap_or("").split(' ');
        let method = request_line.next().unwrap_or("").to_string();
        let target = request_line.next().unwrap_or("").to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let mut s = Seen {
            conn,
            nth_on_conn: nth,
            method,
            target,
            headers,
            body: Vec::new(),
            complete: true,
            body_time: Duration::ZERO,
        };
        let chunked = s
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let length: usize = s
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let read = async {
            if chunked {
                read_chunked(&mut stream, &mut buf, &mut s.body).await
            } else {
                while buf.len() < length {
                    let mut chunk = vec![0u8; 64 * 1024];
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                s.body = buf.drain(..length).collect();
                true
            }
        };
        let started = std::time::Instant::now();
        s.complete = tokio::time::timeout(Duration::from_secs(2), read)
            .await
            .unwrap_or(false);
        s.body_time = started.elapsed();
        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
        if record.load(Ordering::SeqCst) {
            seen.lock().unwrap().push(s.clone());
        }
        if !s.complete {
            return;
        }
        let reply = handler(&s, n);
        tokio::time::sleep(reply.delay).await;
        let head_only = s.method == "HEAD";
        let length = match &reply.body {
            ReplyBody::Bytes(b) | ReplyBody::Cut(b, _) => b.len() as u64,
            ReplyBody::Generated(n) => *n,
        };
        let mut out = format!("HTTP/1.1 {} X\r\n", reply.status);
        let mut has_length = false;
        for (k, v) in &reply.headers {
            has_length |= k.eq_ignore_ascii_case("content-length");
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        if !has_length {
            out.push_str(&format!("content-length: {length}\r\n"));
        }
        out.push_str("\r\n");
        if stream.write_all(out.as_bytes()).await.is_err() {
            return;
        }
        if !head_only {
            let ok = match reply.body {
                ReplyBody::Bytes(b) => stream.write_all(&b).await.is_ok(),
                ReplyBody::Cut(b, n) => {
                    let _ = stream.write_all(&b[..n.min(b.len())]).await;
                    let _ = stream.flush().await;
                    false
                }
                ReplyBody::Generated(mut left) => {
                    let chunk = vec![b'x'; 64 * 1024];
                    let mut ok = true;
                    while left > 0 && ok {
                        let n = left.min(chunk.len() as u64) as usize;
                        ok = stream.write_all(&chunk[..n]).await.is_ok();
                        left -= n as u64;
                    }
                    ok
                }
            };
            if !ok {
                return;
            }
        }
        if s.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
        {
            return;
        }
    }
}

async fn read_chunked(stream: &mut TcpStream, buf: &mut Vec<u8>, body: &mut Vec<u8>) -> bool {
    loop {
        let line_end = loop {
            if let Some(i) = find(buf, b"\r\n") {
                break i;
            }
            let mut chunk = vec![0u8; 64 * 1024];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let size_text = String::from_utf8_lossy(&buf[..line_end]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16);
        let Ok(size) = size else { return false };
        buf.drain(..line_end + 2);
        while buf.len() < size + 2 {
            let mut chunk = vec![0u8; 64 * 1024];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        if size == 0 {
            buf.drain(..2);
            return true;
        }
        // Large bodies are only counted, not kept, to keep the test's memory flat.
        if body.len() < 1 << 20 {
            body.extend_from_slice(&buf[..size]);
        }
        buf.drain(..size + 2);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A proxy in process; stops when dropped.
pub struct Proxy {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    _stop: oneshot::Sender<()>,
    _dir: Option<TempDir>,
    /// What it was started with (with [`proxy`], its `config` is the TOML file).
    args: ServeArgs,
    reloader: herdguard_proxy::Reloader,
}

#[allow(dead_code)] // Not every test binary reloads.
impl Proxy {
    /// Rewrites the TOML file with `settings` and reloads it, as SIGHUP does.
    pub fn reload(
        &self,
        settings: &[&str],
    ) -> Result<herdguard_proxy::Reloaded, herdguard_proxy::ConfigError> {
        let path = self
            .args
            .config
            .as_ref()
            .expect("support proxies have a file");
        std::fs::write(path, settings.join("\n")).unwrap();
        self.reloader.reload(self.args.resolve()?)
    }
}

pub struct TempDir(pub std::path::PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

static CONFIGS: AtomicUsize = AtomicUsize::new(0);

/// A proxy in front of `origin` (a base URL), with `settings` as TOML lines
/// (`key = value`), as an operator would write them.
pub async fn proxy(origin: &str, settings: &[&str]) -> Proxy {
    let dir = std::env::temp_dir().join(format!(
        "hg-attacks-{}-{}",
        std::process::id(),
        CONFIGS.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("serve.toml");
    std::fs::write(&path, settings.join("\n")).unwrap();
    let mut proxy = start(ServeArgs {
        origin: Some(origin.to_string()),
        config: Some(path),
        ..ServeArgs::default()
    })
    .await;
    proxy._dir = Some(TempDir(dir));
    proxy
}

/// A proxy started in process with `args`; it and its admin listener take
/// free loopback ports unless `args` names them. Stops when dropped.
pub async fn start(mut args: ServeArgs) -> Proxy {
    args.listen.get_or_insert_with(|| "127.0.0.1:0".into());
    args.admin.get_or_insert_with(|| "127.0.0.1:0".into());
    let server = Server::bind(args.resolve().unwrap()).await.unwrap();
    let (addr, admin) = (server.local_addr().unwrap(), server.admin_addr().unwrap());
    let reloader = server.reloader(None);
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(server.serve(async move {
        let _ = rx.await;
    }));
    Proxy {
        addr,
        admin,
        _stop: tx,
        _dir: None,
        args,
        reloader,
    }
}

/// An answer read off a raw socket.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn cache_status(&self) -> String {
        self.header("cache-status").unwrap_or("").to_string()
    }
}

/// Sends `raw` bytes on a new connection and reads one answer (Content-Length
/// framed) within `limit`; `None` if none came.
pub async fn raw(addr: SocketAddr, raw: &[u8], limit: Duration) -> Option<Answer> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    s.write_all(raw).await.ok()?;
    tokio::time::timeout(limit, read_answer(&mut s, false))
        .await
        .ok()
        .flatten()
}

/// Reads one answer off `s` (Content-Length framed, or until close).
pub async fn read_answer(s: &mut TcpStream, head_request: bool) -> Option<Answer> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        let mut chunk = [0u8; 8192];
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut body = buf.split_off(head_end + 4);
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok());
    let want = if head_request { Some(0) } else { length };
    loop {
        if want.is_some_and(|w| body.len() >= w) {
            break;
        }
        let mut chunk = [0u8; 64 * 1024];
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    if let Some(w) = want {
        body.truncate(w);
    }
    Some(Answer {
        status,
        headers,
        body,
    })
}

/// `GET path` with `headers` on a new connection (5 s limit).
pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Answer {
    request(addr, "GET", path, headers).await
}

pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let mut text = format!("{method} {path} HTTP/1.1\r\nhost: api.example\r\n");
    for (k, v) in headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    text.push_str("connection: close\r\n\r\n");
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(text.as_bytes()).await.unwrap();
    tokio::time::timeout(
        Duration::from_secs(5),
        read_answer(&mut s, method == "HEAD"),
    )
    .await
    .unwrap_or_else(|_| panic!("no answer to {method} {path} within 5 s"))
    .unwrap_or_else(|| panic!("connection closed without an answer to {method} {path}"))
}

/// The admin listener's metrics text.
pub async fn metrics(admin: SocketAddr) -> String {
    get(admin, "/metrics", &[]).await.text()
}
