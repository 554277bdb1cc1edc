//! `herdguard serve` on a TLS-only redis-server (`--port 0 --tls-port`) with a
//! CA made in the test: three sidecars with `--redis rediss://… --redis-ca`
//! make one origin call for 300 cold GETs; a CA that does not sign the
//! server's certificate, or a missing client certificate where the server
//! requires one, stops start-up with one line naming the URL, exit code 2.
//! `herdguard demo --redis rediss://… --redis-ca` runs its fleet over TLS.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use herdguard_testkit::{RedisServer, TestCa};
use serde_json::Value;

mod common;

/// An origin answering `fresh` (for a minute) after 300 ms, each connection
/// on a thread of its own; counts the requests.
fn origin() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let counted = Arc::clone(&counted);
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                counted.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(300));
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ncontent-length: 5\r\nconnection: close\r\n\r\nfresh"
                );
            });
        }
    });
    (addr, calls)
}

/// A `herdguard serve` process; killed when dropped.
struct Serve {
    child: Child,
    listen: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(origin: &str, redis: &[&str]) -> Serve {
    let mut child = Command::new(env!("CARGO_BIN_EXE_herdguard"))
        .args(["serve", "--listen", "127.0.0.1:0", "--threads", "1"])
        .args(["--origin", &format!("http://{origin}")])
        .args(redis)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The start-up log names the listener: `listening url=http://…`.
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let listen = loop {
        let line = lines.next().expect("serve started").expect("a log line");
        if let Some(rest) = line.split("url=http://").nth(1) {
            break rest.split_whitespace().next().unwrap_or("").to_string();
        }
    };
    // Keep draining the log so the sidecar never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Serve { child, listen }
}

/// A GET of `path`: the status line and the body.
fn get(addr: &str, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: api.example\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let status = text.lines().next().unwrap_or("").to_string();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

/// `herdguard serve` that must stop at start-up: (exit code, stderr).
fn serve_fails(origin: &str, redis: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_herdguard"))
        .args(["serve", "--listen", "127.0.0.1:0", "--threads", "1"])
        .args(["--origin", &format!("http://{origin}")])
        .args(redis)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn three_sidecars_on_tls_redis_make_one_origin_call_for_300_cold_gets() {
    let ca = TestCa::new().unwrap();
    let redis = RedisServer::start_tls(&ca, false).unwrap();
    let url = redis.url();
    let ca_file = ca.ca_file().to_string_lossy().into_owned();
    let (origin, calls) = origin();
    let sidecars: Vec<Serve> = (0..3)
        .map(|_| serve(&origin, &["--redis", &url, "--redis-ca", &ca_file]))
        .collect();
    let gets: Vec<_> = (0..300)
        .map(|i| {
            let listen = sidecars[i % 3].listen.clone();
            std::thread::spawn(move || get(&listen, "/cold"))
        })
        .collect();
    for g in gets {
        let (status, body) = g.join().unwrap();
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        assert_eq!(body, "fresh");
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "one origin call across three sidecars"
    );
}

#[test]
fn a_wrong_ca_stops_start_up_with_one_line_naming_the_url() {
    let ca = TestCa::new().unwrap();
    let other = TestCa::new().unwrap();
    let redis = RedisServer::start_tls(&ca, false).unwrap();
    let url = redis.url().replace("rediss://", "rediss://app:s3cret-pw@");
    let wrong = other.ca_file().to_string_lossy().into_owned();
    let (origin, calls) = origin();
    // A wrong CA, and none (the web PKI roots do not sign a private CA's).
    for redis_args in [
        vec!["--redis", &url, "--redis-ca", &wrong],
        vec!["--redis", &url],
    ] {
        let (code, stderr) = serve_fails(&origin, &redis_args);
        assert_eq!(code, Some(2), "{redis_args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        let expected = format!(
            "error: redis: TLS to Redis at rediss://app:***@127.0.0.1:{}/ failed: invalid peer certificate: ",
            redis.port()
        );
        assert!(stderr.starts_with(&expected), "{stderr}");
        assert!(
            !stderr.contains("s3cret-pw"),
            "the password leaked: {stderr}"
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[test]
fn mutual_tls_without_the_client_certificate_stops_start_up_and_with_it_serves() {
    let ca = TestCa::new().unwrap();
    let redis = RedisServer::start_tls(&ca, true).unwrap();
    let url = redis.url();
    let ca_file = ca.ca_file().to_string_lossy().into_owned();
    let (origin, calls) = origin();
    let (code, stderr) = serve_fails(&origin, &["--redis", &url, "--redis-ca", &ca_file]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!("error: redis: TLS to Redis at {url} failed: ")),
        "{stderr}"
    );
    // Half a pair is bad input of its own.
    let cert = ca.client_cert().to_string_lossy().into_owned();
    let key = ca.client_key().to_string_lossy().into_owned();
    let (code, stderr) = serve_fails(
        &origin,
        &[
            "--redis",
            &url,
            "--redis-ca",
            &ca_file,
            "--redis-cert",
            &cert,
        ],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("redis_key"), "{stderr}");

    let sidecar = serve(
        &origin,
        &[
            "--redis",
            &url,
            "--redis-ca",
            &ca_file,
            "--redis-cert",
            &cert,
            "--redis-key",
            &key,
        ],
    );
    assert_eq!(get(&sidecar.listen, "/m").1, "fresh");
    assert_eq!(get(&sidecar.listen, "/m").1, "fresh");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn the_demo_runs_its_fleet_over_tls_and_refuses_a_wrong_ca() {
    let ca = TestCa::new().unwrap();
    let other = TestCa::new().unwrap();
    let redis = RedisServer::start_tls(&ca, false).unwrap();
    let url = redis.url();
    let demo = |ca_file: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_herdguard"))
            .args(["demo", "--json", "--seed", "7", "--redis", &url])
            .arg("--redis-ca")
            .arg(ca_file)
            .args(["--processes", "3", "--scenario", "cold"])
            .args(["--strategy", "single-flight,fleet"])
            .args(["-t", "10", "-k", "3", "--origin-latency", "150ms"])
            .output()
            .expect("the herdguard binary runs")
    };
    let out = demo(&ca.ca_file());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed: {stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(
        common::calls(&report, "fleet"),
        3,
        "one call per key across three processes"
    );
    assert_eq!(
        common::calls(&report, "single-flight"),
        9,
        "one per key per process"
    );

    let out = demo(&other.ca_file());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!("error: cannot reach Redis at {url}: "))
            && stderr.contains("invalid peer certificate"),
        "{stderr}"
    );
}
