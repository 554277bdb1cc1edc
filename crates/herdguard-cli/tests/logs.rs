//! `herdguard serve --log-format json --access-log` as a real process, with a
//! real origin and a real redis-server that the test kills and restarts: the
//! shared store's degraded and recovered events come once per transition, not
//! per request, and the access log has one JSON line per request. And SIGHUP:
//! the file's rules, access log and log level change while the process serves.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herdguard_testkit::{free_port, RedisServer};
use serde_json::Value;

/// An HTTP/1.1 origin on a loopback port: every GET gets a small cacheable
/// answer after `delay`. Its threads end with the test process.
fn origin(delay: Duration) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("origin binds");
    let port = listener.local_addr().expect("origin address").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || serve_origin(stream, delay));
        }
    });
    port
}

fn serve_origin(stream: TcpStream, delay: Duration) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(stream);
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" => break,
                Ok(_) => head.push_str(&line),
            }
        }
        std::thread::sleep(delay);
        let body = "hello";
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\ncache-control: max-age=60\r\n\r\n{body}",
            body.len()
        );
        if reader.get_mut().write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

/// A port that answers whatever it is sent with plain HTTP bytes and closes:
/// not a TLS server. Its thread ends with the test process.
fn not_tls() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binds");
    let port = listener.local_addr().expect("address").port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
        }
    });
    port
}

/// One request over its own connection (`extra`: more header lines, each
/// ending in CRLF); the status code and the whole answer.
fn request(port: u16, method: &str, path: &str, extra: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connects to the proxy");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: test\r\n{extra}content-length: 0\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).expect("an answer");
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// One GET over its own connection; the status code.
fn get(port: u16, path: &str) -> u16 {
    request(port, "GET", path, "").0
}

/// The sidecar, its stderr lines collected as they come.
struct Serve {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    port: u16,
    admin: u16,
}

impl Serve {
    fn start(origin: u16, redis: Option<&str>, extra: &[&str]) -> Serve {
        Serve::start_for(&format!("http://127.0.0.1:{origin}"), redis, extra)
    }

    fn start_for(origin: &str, redis: Option<&str>, extra: &[&str]) -> Serve {
        let (port, admin) = (free_port().unwrap(), free_port().unwrap());
        let redis = redis.map(|url| ["--redis", url]);
        let mut child = Command::new(env!("CARGO_BIN_EXE_herdguard"))
            .args(["serve", "--log-format", "json", "--threads", "1"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin", &format!("127.0.0.1:{admin}")])
            .args(["--origin", origin])
            .args(redis.iter().flatten())
            .args(extra)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("herdguard serve starts");
        let stderr = child.stderr.take().expect("stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let serve = Serve {
            child,
            lines,
            port,
            admin,
        };
        serve.wait_for("listening", 1);
        serve
    }

    /// Every stderr line so far, each one a JSON object.
    fn events(&self) -> Vec<Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }

    fn count(&self, message: &str) -> usize {
        self.events()
            .iter()
            .filter(|e| e["fields"]["message"] == message)
            .count()
    }

    /// The first event with `message` (waiting for it as `wait_for` does).
    fn event(&self, message: &str) -> Value {
        self.wait_for(message, 1);
        self.events()
            .into_iter()
            .find(|e| e["fields"]["message"] == message)
            .expect("logged")
    }

    /// Waits (at most 15 s) until `message` was logged `n` times.
    fn wait_for(&self, message: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.count(message) < n {
            assert!(
                Instant::now() < deadline,
                "no {message:?} ×{n} in {:#?}",
                self.lines.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn metric(&self, name: &str) -> f64 {
        let mut s = TcpStream::connect(("127.0.0.1", self.admin)).expect("admin");
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_redis_outage_logs_one_degraded_and_one_recovered_event_and_every_request_one_line() {
    let mut redis = RedisServer::start().expect("redis-server starts");
    let origin = origin(Duration::from_millis(5));
    let serve = Serve::start(origin, Some(&redis.url()), &["--access-log"]);
    let mut sent = 0;
    let mut send = |path: &str| {
        assert_eq!(get(serve.port, path), 200, "{path}");
        sent += 1;
    };
    for i in 0..10 {
        send(&format!("/before/{i}"));
        send(&format!("/before/{i}")); // a hit
    }

    redis.kill();
    serve.wait_for("shared store degraded", 1);
    for i in 0..20 {
        send(&format!("/during/{i}"));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        serve.count("shared store degraded"),
        1,
        "once per transition, not per request"
    );

    redis.restart().expect("redis-server restarts");
    serve.wait_for("shared store recovered", 1);
    for i in 0..10 {
        send(&format!("/after/{i}"));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(serve.count("shared store recovered"), 1);
    assert_eq!(serve.count("shared store degraded"), 1);
    assert_eq!(
        serve.metric("herdguard_shared_store_degradations_total"),
        1.0
    );
    assert_eq!(serve.metric("herdguard_shared_store_recoveries_total"), 1.0);

    let events = serve.events();
    let degraded = serve.event("shared store degraded");
    assert_eq!(degraded["target"], "herdguard::fleet");
    assert_eq!(degraded["level"], "WARN");
    assert!(degraded["fields"]["error"].is_string(), "{degraded}");

    let access: Vec<&Value> = events
        .iter()
        .filter(|e| e["target"] == "herdguard::access")
        .collect();
    assert_eq!(access.len(), sent, "one access line per request");
    for line in &access {
        let f = &line["fields"];
        assert_eq!(f["method"], "GET", "{line}");
        assert_eq!(f["status"], 200, "{line}");
        assert_eq!(f["bytes"], 5, "{line}");
        assert!(f["path"].as_str().unwrap().starts_with('/'), "{line}");
        assert!(f["total_ms"].as_f64().unwrap() >= 0.0, "{line}");
        assert!(f["coalesced"].is_boolean(), "{line}");
        assert!(
            f["cache_status"].as_str().unwrap().starts_with("herdguard"),
            "{line}"
        );
    }
    let result = |path: &str| {
        access
            .iter()
            .filter(|l| l["fields"]["path"] == path)
            .map(|l| l["fields"]["result"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(result("/before/3"), ["miss", "hit"]);
    let miss = access
        .iter()
        .find(|l| l["fields"]["path"] == "/before/3")
        .unwrap();
    assert!(
        miss["fields"]["origin_ms"].as_f64().unwrap() >= 5.0,
        "the origin's 5 ms: {miss}"
    );
}

#[test]
fn the_start_logs_the_cache_key_once() {
    let origin = origin(Duration::ZERO);
    for (flags, parts, client_host) in [
        (&[][..], "path,query", "left out"),
        (
            &["--forward-host"][..],
            "host,path,query",
            "X-Forwarded-Host",
        ),
        (
            &["--cache-key", "host,path"][..],
            "host,path",
            "as configured",
        ),
    ] {
        let serve = Serve::start(origin, None, flags);
        let key = serve.event("cache key");
        assert_eq!(key["target"], "herdguard::serve", "{key}");
        assert_eq!(key["level"], "INFO");
        assert_eq!(key["fields"]["parts"], parts, "{flags:?}: {key}");
        let why = key["fields"]["client_host"].as_str().unwrap_or("");
        assert!(why.contains(client_host), "{flags:?}: {key}");
        assert_eq!(serve.count("cache key"), 1);
    }
}

#[test]
fn without_access_log_no_request_is_logged() {
    let redis = RedisServer::start().expect("redis-server starts");
    let origin = origin(Duration::ZERO);
    let serve = Serve::start(origin, Some(&redis.url()), &[]);
    for i in 0..5 {
        assert_eq!(get(serve.port, &format!("/x/{i}")), 200);
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(access_lines(&serve), 0);
}

/// Writes the sidecar's TOML file.
fn write_config(path: &std::path::Path, lines: &[&str]) {
    std::fs::write(path, lines.join("\n")).expect("config written");
}

fn access_lines(serve: &Serve) -> usize {
    serve
        .events()
        .iter()
        .filter(|e| e["target"] == "herdguard::access")
        .count()
}

/// Waits (at most 5 s) until `n` access lines were collected from stderr.
fn wait_access(serve: &Serve, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while access_lines(serve) < n {
        assert!(
            Instant::now() < deadline,
            "{} access lines, not {n}",
            access_lines(serve)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(access_lines(serve), n);
}

#[test]
fn sighup_reloads_rules_access_log_and_log_level_and_names_what_needs_a_restart() {
    let dir = std::env::temp_dir().join(format!("hg-reload-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("serve.toml");
    write_config(&config, &["log_level = \"info\""]);
    let origin = origin(Duration::ZERO);
    let config_arg = config.to_string_lossy().into_owned();
    let serve = Serve::start(origin, None, &["--config", &config_arg]);
    let calls = || serve.metric("herdguard_proxy_origin_requests_total");
    assert_eq!(get(serve.port, "/live/a"), 200);
    assert_eq!(get(serve.port, "/live/a"), 200);
    assert_eq!(calls(), 1.0, "cached before the reload");
    assert_eq!(access_lines(&serve), 0);

    write_config(
        &config,
        &[
            "log_level = \"info\"",
            "access_log = true",
            "max_connections = 10",
            "[[rule]]",
            "prefix = \"/live/\"",
            "bypass = true",
        ],
    );
    hangup(&serve);
    // Two events, the second logged after the first: wait for both.
    serve.wait_for("configuration reloaded", 1);
    serve.wait_for(
        "configuration reloaded: these changes need a restart and are not in force",
        1,
    );
    let events = serve.events();
    let reloaded = events
        .iter()
        .find(|e| e["fields"]["message"] == "configuration reloaded")
        .unwrap();
    assert_eq!(
        reloaded["fields"]["applied"], "access_log,rule",
        "{reloaded}"
    );
    let restart = events
        .iter()
        .find(|e| e["level"] == "WARN" && e["fields"]["settings"] == "max_connections");
    assert!(restart.is_some(), "no restart warning in {events:#?}");
    assert_eq!(get(serve.port, "/live/a"), 200);
    assert_eq!(get(serve.port, "/live/a"), 200);
    assert_eq!(
        calls(),
        3.0,
        "bypassed after the reload, same process and port"
    );
    wait_access(&serve, 2);

    // A broken file: one error, and the running configuration stays.
    write_config(&config, &["[[rule]]", "ttl_secs = 5"]);
    hangup(&serve);
    serve.wait_for("configuration not reloaded: the running one stays", 1);
    assert_eq!(get(serve.port, "/live/a"), 200);
    assert_eq!(calls(), 4.0, "the bypass rule still applies");
    wait_access(&serve, 3);

    // The log level from the file: at warn, no access line any more.
    write_config(
        &config,
        &[
            "log_level = \"warn\"",
            "access_log = true",
            "max_connections = 10",
        ],
    );
    hangup(&serve);
    // The reload's own info line is filtered already; wait for the effect.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert_eq!(get(serve.port, "/quiet"), 200);
        std::thread::sleep(Duration::from_millis(50));
        let before = access_lines(&serve);
        assert_eq!(get(serve.port, "/quiet"), 200);
        std::thread::sleep(Duration::from_millis(50));
        if access_lines(&serve) == before {
            break;
        }
        assert!(Instant::now() < deadline, "the log level did not change");
    }
    // And it stays quiet: five more requests, no line in half a second.
    let quiet = access_lines(&serve);
    for _ in 0..5 {
        assert_eq!(get(serve.port, "/quiet"), 200);
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        access_lines(&serve),
        quiet,
        "access lines at log level warn"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Sends SIGHUP to the sidecar.
fn hangup(serve: &Serve) {
    let status = Command::new("kill")
        .args(["-HUP", &serve.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

#[test]
fn origin_tls_and_purge_warnings_have_their_targets_and_name_no_url() {
    let mut redis = RedisServer::start().expect("redis-server starts");
    let tls = Serve::start_for(
        &format!("https://127.0.0.1:{}", not_tls()),
        Some(&redis.url()),
        &[],
    );
    assert_eq!(get(tls.port, "/a"), 502);
    let handshake = tls.event("origin TLS handshake failed");
    assert_eq!(handshake["target"], "herdguard::origin", "{handshake}");
    assert_eq!(handshake["level"], "WARN");

    let token = "purge-token-for-tests-0123";
    let serve = Serve::start(
        origin(Duration::ZERO),
        Some(&redis.url()),
        &["--purge-token", token],
    );
    let auth = format!("authorization: Bearer {token}\r\n");
    let secret = "/purge?url=http%3A%2F%2Ftest%2Fitem%3Ftoken%3Dhunter2";
    let (status, answer) = request(serve.admin, "POST", secret, &auth);
    assert_eq!(status, 200, "{answer}");
    let json: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap().trim())
        .unwrap_or_else(|e| panic!("{e}: {answer}"));
    let key = json["key"].as_str().expect("the purged key").to_string();
    redis.kill();
    let (status, answer) = request(serve.admin, "POST", secret, &auth);
    assert_eq!(status, 503, "{answer}");
    let failed = serve.event("purge not confirmed beyond this instance");
    assert_eq!(failed["target"], "herdguard::purge", "{failed}");
    assert_eq!(failed["level"], "WARN");
    assert_eq!(
        failed["fields"]["key_hash"],
        herdguard::key_hash(&key),
        "{failed}"
    );
    assert!(failed["fields"]["error"].is_string(), "{failed}");
    for line in serve.lines.lock().unwrap().iter() {
        assert!(
            !line.contains("hunter2"),
            "a URL's query in the log: {line}"
        );
    }
}
