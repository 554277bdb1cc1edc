//! Test support: real servers on free loopback ports, stopped on drop.
//!
//! ```no_run
//! let redis = herdguard_testkit::RedisServer::start().expect("redis-server");
//! println!("{}", redis.url()); // redis://127.0.0.1:PORT/
//! ```

#![warn(missing_docs)]

mod logs;
pub use logs::LogRecorder;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Resident set size of this process, bytes (Linux `/proc/self/status`; 0
/// where it cannot be read): for tests that bound a process's memory.
pub fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

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
    extra: Vec<String>,
    /// TLS only (`--port 0 --tls-port`), when set.
    tls: Option<TlsListener>,
}

/// The TLS settings of a [`RedisServer::start_tls`] server.
#[derive(Clone)]
struct TlsListener {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
    auth_clients: bool,
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

    /// Starts one with these extra `redis-server` arguments (kept for
    /// [`RedisServer::restart`]), e.g. `["--replicaof", "127.0.0.1", "6379"]`.
    pub fn start_with(args: &[&str]) -> std::io::Result<Self> {
        let mut server = Self::prepare(free_port()?, false)?;
        server.extra = args.iter().map(|a| a.to_string()).collect();
        server.spawn()?;
        Ok(server)
    }

    /// Starts one that speaks TLS only (`--port 0 --tls-port PORT`), with the
    /// server certificate of `ca` (for `127.0.0.1` and `localhost`); with
    /// `require_client_cert` (`--tls-auth-clients yes`) it refuses clients
    /// without a certificate `ca` signed, otherwise it asks for none. Ready
    /// when it accepts connections (at most 10 s). [`RedisServer::url`] is
    /// `rediss://127.0.0.1:PORT/`.
    pub fn start_tls(ca: &TestCa, require_client_cert: bool) -> std::io::Result<Self> {
        Self::start_tls_with(ca, require_client_cert, &[])
    }

    /// [`RedisServer::start_tls`] with these extra `redis-server` arguments,
    /// e.g. an ACL user: `["--user", "app", "on", ">secret", "~*", "&*", "+@all"]`.
    pub fn start_tls_with(
        ca: &TestCa,
        require_client_cert: bool,
        args: &[&str],
    ) -> std::io::Result<Self> {
        let mut server = Self::prepare(free_port()?, false)?;
        server.extra = args.iter().map(|a| a.to_string()).collect();
        server.tls = Some(TlsListener {
            cert: ca.server_cert(),
            key: ca.server_key(),
            ca: ca.ca_file(),
            auth_clients: require_client_cert,
        });
        server.spawn()?;
        Ok(server)
    }

    fn launch(port: u16, durable: bool) -> std::io::Result<Self> {
        let mut server = Self::prepare(port, durable)?;
        server.spawn()?;
        Ok(server)
    }

    fn prepare(port: u16, durable: bool) -> std::io::Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("herdguard-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(RedisServer {
            child: None,
            port,
            dir,
            durable,
            extra: Vec::new(),
            tls: None,
        })
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let persistence: &[&str] = if self.durable {
            &["--appendonly", "yes", "--appendfsync", "always"]
        } else {
            &["--appendonly", "no"]
        };
        let port = self.port.to_string();
        let listen: Vec<&std::ffi::OsStr> = match &self.tls {
            None => vec!["--port".as_ref(), port.as_ref()],
            Some(tls) => vec![
                "--port".as_ref(),
                "0".as_ref(),
                "--tls-port".as_ref(),
                port.as_ref(),
                "--tls-cert-file".as_ref(),
                tls.cert.as_os_str(),
                "--tls-key-file".as_ref(),
                tls.key.as_os_str(),
                "--tls-ca-cert-file".as_ref(),
                tls.ca.as_os_str(),
                "--tls-auth-clients".as_ref(),
                if tls.auth_clients { "yes" } else { "no" }.as_ref(),
            ],
        };
        let child = Command::new("redis-server")
            .args(&listen)
            .args(["--bind", "127.0.0.1", "--save", ""])
            .args(persistence)
            // DEBUG SLEEP pauses the server in fault tests; from loopback only.
            .args(["--enable-debug-command", "local"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
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
            // A TLS-only server cannot be pinged in plain RESP: accepting
            // connections is its sign of life.
            let up = match self.tls {
                None => ping(self.addr()).is_ok(),
                Some(_) => {
                    TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)).is_ok()
                }
            };
            if up {
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

    /// Its URL, `redis://127.0.0.1:PORT/` (`rediss://` when it speaks TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}/", self.port)
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

/// A private CA made for one test, and certificates it signed, as PEM files
/// in a directory of its own (removed on drop): the server's (for
/// `127.0.0.1` and `localhost`) and a client's (for mutual TLS).
pub struct TestCa {
    dir: PathBuf,
}

impl TestCa {
    /// Makes a new CA (its own key: no other `TestCa` signs what it signs)
    /// and its two certificates.
    pub fn new() -> std::io::Result<Self> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "herdguard-ca-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        let ca = TestCa { dir };
        ca.make().map_err(std::io::Error::other)?;
        Ok(ca)
    }

    fn make(&self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        };
        let ca_key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "herdguard test CA");
        let ca = params.self_signed(&ca_key)?;
        std::fs::write(self.ca_file(), ca.pem())?;
        for (name, purpose, cert, key) in [
            (
                "redis server",
                ExtendedKeyUsagePurpose::ServerAuth,
                self.server_cert(),
                self.server_key(),
            ),
            (
                "redis client",
                ExtendedKeyUsagePurpose::ClientAuth,
                self.client_cert(),
                self.client_key(),
            ),
        ] {
            let key_pair = KeyPair::generate()?;
            let mut params =
                CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
            params.distinguished_name.push(DnType::CommonName, name);
            params.extended_key_usages = vec![purpose];
            let signed = params.signed_by(&key_pair, &ca, &ca_key)?;
            std::fs::write(cert, signed.pem())?;
            std::fs::write(key, key_pair.serialize_pem())?;
        }
        Ok(())
    }

    /// The CA's certificate (PEM): what a client trusts.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The server's certificate (PEM).
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }

    /// The server's private key (PEM).
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }

    /// A client's certificate (PEM), for mutual TLS.
    pub fn client_cert(&self) -> PathBuf {
        self.dir.join("client.pem")
    }

    /// That client's private key (PEM).
    pub fn client_key(&self) -> PathBuf {
        self.dir.join("client.key")
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Sentinel of its own (`redis-server <config> --sentinel`) on a free
/// loopback port, monitoring one primary; killed when dropped.
///
/// Its configuration file is written into a directory of its own (Sentinel
/// rewrites it as it learns the topology).
pub struct Sentinel {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl Sentinel {
    /// Starts one that monitors the primary at `primary_port` under `name`,
    /// agreeing with `quorum` sentinels that it is down after `down_after`
    /// without an answer; waits until it answers PING (at most 10 s).
    pub fn start(
        name: &str,
        primary_port: u16,
        quorum: u32,
        down_after: Duration,
    ) -> std::io::Result<Self> {
        Self::launch(name, primary_port, quorum, down_after, None)
    }

    /// [`Sentinel::start`] speaking TLS only (to clients and to the primary,
    /// a [`RedisServer::start_tls`] server), with the server certificate of
    /// `ca`; ready when it accepts connections.
    pub fn start_tls(
        name: &str,
        primary_port: u16,
        quorum: u32,
        down_after: Duration,
        ca: &TestCa,
    ) -> std::io::Result<Self> {
        Self::launch(name, primary_port, quorum, down_after, Some(ca))
    }

    fn launch(
        name: &str,
        primary_port: u16,
        quorum: u32,
        down_after: Duration,
        tls: Option<&TestCa>,
    ) -> std::io::Result<Self> {
        let port = free_port()?;
        let dir =
            std::env::temp_dir().join(format!("herdguard-sentinel-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("sentinel.conf");
        let down_ms = down_after.as_millis();
        let listen = match tls {
            None => format!("port {port}\n"),
            Some(ca) => format!(
                "port 0\ntls-port {port}\ntls-cert-file {}\ntls-key-file {}\n\
                 tls-ca-cert-file {}\ntls-auth-clients no\ntls-replication yes\n",
                ca.server_cert().display(),
                ca.server_key().display(),
                ca.ca_file().display(),
            ),
        };
        std::fs::write(
            &config,
            format!(
                "{listen}bind 127.0.0.1\ndaemonize no\ndir {dir}\n\
                 sentinel monitor {name} 127.0.0.1 {primary_port} {quorum}\n\
                 sentinel down-after-milliseconds {name} {down_ms}\n\
                 sentinel failover-timeout {name} {failover}\n\
                 sentinel parallel-syncs {name} 1\n",
                dir = dir.display(),
                failover = (down_ms * 4).max(2000),
            ),
        )?;
        let child = Command::new("redis-server")
            .arg(&config)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut sentinel = Sentinel {
            child: Some(child),
            port,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let up = |addr: SocketAddr| match tls {
            None => ping(addr).is_ok(),
            Some(_) => TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok(),
        };
        while !up(sentinel.addr()) {
            if let Some(status) = sentinel.child.as_mut().and_then(|c| c.try_wait().ok()?) {
                return Err(std::io::Error::other(format!("sentinel exited: {status}")));
            }
            if Instant::now() >= deadline {
                return Err(std::io::Error::other(
                    "sentinel did not answer PING within 10 s",
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(sentinel)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Kills it at once (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A free port whose cluster-bus port (10000 above it) is free too.
fn free_cluster_port() -> std::io::Result<u16> {
    for _ in 0..200 {
        let port = 20000 + fastrand_port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", port + 10000)).is_ok()
        {
            return Ok(port);
        }
    }
    Err(std::io::Error::other(
        "no free port pair for a cluster node",
    ))
}

/// A pseudo-random offset below 20000 (no dependency: the clock's nanoseconds
/// mixed with a counter).
fn fastrand_port() -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mixed = (u64::from(nanos) ^ (u64::from(std::process::id()) << 20))
        .wrapping_add(COUNTER.fetch_add(0x9E37_79B9, Ordering::Relaxed))
        .wrapping_mul(0x2545_F491_4F6C_DD1D);
    u16::try_from((mixed >> 33) % 20000).unwrap_or(0)
}

/// A local Redis Cluster of six `redis-server`s (three primaries, one replica
/// each) on free loopback ports, created with `redis-cli --cluster create`;
/// every node killed when dropped.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts six nodes, creates the cluster and waits until every node says
    /// `cluster_state:ok`, knows the three replicas and, if a replica, is in
    /// sync with its primary (at most 30 s): a primary killed before its
    /// replica joined would never fail over.
    pub fn start() -> std::io::Result<Self> {
        let mut nodes = Vec::new();
        for _ in 0..6 {
            let port = free_cluster_port()?;
            let mut server = RedisServer::prepare(port, false)?;
            server.extra = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
            ]
            .iter()
            .map(|a| a.to_string())
            .collect();
            server.spawn()?;
            nodes.push(server);
        }
        let status = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if !status.success() {
            return Err(std::io::Error::other(format!(
                "redis-cli --cluster create: {status}"
            )));
        }
        let cluster = RedisCluster { nodes };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cluster.nodes.iter().all(|n| cluster_ok(n.addr())) {
            if Instant::now() >= deadline {
                return Err(std::io::Error::other(
                    "the cluster was not up with its replicas within 30 s",
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(cluster)
    }

    /// A cluster of one node that owns every slot (one shard, no replica):
    /// the same cluster client and protocol as [`RedisCluster::start`] on a
    /// single server, the peer of a benchmark that measures what more shards buy.
    /// `redis-cli --cluster create` wants three primaries, so the node is given
    /// the slots with `CLUSTER ADDSLOTSRANGE 0 16383`.
    pub fn start_single_shard() -> std::io::Result<Self> {
        let mut server = RedisServer::prepare(free_cluster_port()?, false)?;
        server.extra = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        server.spawn()?;
        let status = Command::new("redis-cli")
            .args(["-p", &server.port().to_string()])
            .args(["CLUSTER", "ADDSLOTSRANGE", "0", "16383"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if !status.success() {
            return Err(std::io::Error::other(format!(
                "redis-cli CLUSTER ADDSLOTSRANGE: {status}"
            )));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !bulk_reply(server.addr(), &["CLUSTER", "INFO"])
            .is_some_and(|info| info.contains("cluster_state:ok"))
        {
            if Instant::now() >= deadline {
                return Err(std::io::Error::other(
                    "the one-node cluster was not ok within 10 s",
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(RedisCluster {
            nodes: vec![server],
        })
    }

    /// [`RedisCluster::start_single_shard`] speaking TLS only, with the server
    /// certificate of `ca` (clients and the cluster bus alike): its
    /// [`RedisCluster::urls`] are `rediss://`.
    pub fn start_single_shard_tls(ca: &TestCa) -> std::io::Result<Self> {
        let mut server = RedisServer::prepare(free_cluster_port()?, false)?;
        server.tls = Some(TlsListener {
            cert: ca.server_cert(),
            key: ca.server_key(),
            ca: ca.ca_file(),
            auth_clients: false,
        });
        server.extra = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--tls-cluster",
            "yes",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        server.spawn()?;
        let cli = |args: &[&str]| {
            Command::new("redis-cli")
                .args(["--tls", "--cacert"])
                .arg(ca.ca_file())
                .args(["-p", &server.port().to_string()])
                .args(args)
                .stderr(Stdio::null())
                .output()
        };
        let added = cli(&["CLUSTER", "ADDSLOTSRANGE", "0", "16383"])?;
        if !added.status.success() || !String::from_utf8_lossy(&added.stdout).contains("OK") {
            return Err(std::io::Error::other(format!(
                "redis-cli --tls CLUSTER ADDSLOTSRANGE: {} {}",
                added.status,
                String::from_utf8_lossy(&added.stdout)
            )));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !String::from_utf8_lossy(&cli(&["CLUSTER", "INFO"])?.stdout)
            .contains("cluster_state:ok")
        {
            if Instant::now() >= deadline {
                return Err(std::io::Error::other(
                    "the one-node TLS cluster was not ok within 10 s",
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(RedisCluster {
            nodes: vec![server],
        })
    }

    /// `redis://127.0.0.1:PORT/` of every node (seeds for a cluster client).
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// Its nodes.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// Kills node `i` at once (SIGKILL), as a crash would.
    pub fn kill(&mut self, i: usize) {
        if let Some(node) = self.nodes.get_mut(i) {
            node.kill();
        }
    }
}

/// The bulk-string reply of the node at `addr` to the command `args`, or `None`.
fn bulk_reply(addr: SocketAddr, args: &[&str]) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    let mut request = format!("*{}\r\n", args.len());
    for a in args {
        request.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    stream.write_all(request.as_bytes()).ok()?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = reply.windows(2).position(|w| w == b"\r\n") {
            let header = std::str::from_utf8(reply.get(1..end)?).ok()?;
            if reply.first() != Some(&b'$') {
                return None;
            }
            let len: usize = header.parse().ok()?;
            if reply.len() >= end + 2 + len {
                return String::from_utf8(reply[end + 2..end + 2 + len].to_vec()).ok();
            }
        }
        let n = stream.read(&mut buf).ok()?;
        if n == 0 || reply.len() > 1 << 20 {
            return None;
        }
        reply.extend_from_slice(&buf[..n]);
    }
}

/// Whether the node at `addr` sees the whole cluster up: `cluster_state:ok`,
/// three replicas known, and, if it is a replica, its replication link up.
fn cluster_ok(addr: SocketAddr) -> bool {
    let Some(info) = bulk_reply(addr, &["CLUSTER", "INFO"]) else {
        return false;
    };
    let Some(nodes) = bulk_reply(addr, &["CLUSTER", "NODES"]) else {
        return false;
    };
    let Some(replication) = bulk_reply(addr, &["INFO", "replication"]) else {
        return false;
    };
    info.contains("cluster_state:ok")
        && nodes.matches(" slave ").count() + nodes.matches(",slave ").count() == 3
        && (replication.contains("role:master") || replication.contains("master_link_status:up"))
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
