//! HTTP/2 from clients: h2c (prior knowledge) on the plain listener, h2 and
//! http/1.1 by ALPN on the TLS listener (`tls_cert` / `tls_key`), with real
//! hyper clients against a real recording origin (tests/support); the TLS
//! listener's handshake limit; HTTP/2's idle rule; and raw-frame adversaries
//! (more streams than allowed, rapid resets).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use herdguard_proxy::{ServeArgs, ServeError};
use http::{Request, Version};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

mod support;
use support::h2raw as raw;
use support::pki::{pki, Pki};
use support::{origin, proxy, Reply, TempDir};

/// An origin answering `body N` for its Nth call, storable for a minute, after `delay_ms`.
async fn cacheable_origin(delay_ms: u64) -> support::Origin {
    origin(move |_, n| {
        Reply::ok(&[("cache-control", "max-age=60")], format!("body {n}")).delay(delay_ms)
    })
    .await
}

type Sender = http2::SendRequest<Empty<Bytes>>;

/// An HTTP/2 client connection over `io` (prior knowledge, or after ALPN h2).
async fn h2_client<T>(io: T) -> Sender
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(io))
        .await
        .expect("HTTP/2 handshake");
    tokio::spawn(conn);
    sender
}

async fn h2c(addr: SocketAddr) -> Sender {
    h2_client(TcpStream::connect(addr).await.unwrap()).await
}

/// `GET path` on `sender`: status, version, body, Cache-Status (5 s limit).
async fn h2_get(mut sender: Sender, path: &str) -> (u16, Version, String, String) {
    let req = Request::get(format!("http://api.example{path}"))
        .body(Empty::new())
        .unwrap();
    let answer = async move {
        let resp = sender.send_request(req).await.expect("HTTP/2 request");
        let (status, version) = (resp.status().as_u16(), resp.version());
        let cache_status = resp
            .headers()
            .get("cache-status")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = resp.into_body().collect().await.expect("HTTP/2 body");
        let text = String::from_utf8_lossy(&body.to_bytes()).into_owned();
        (status, version, text, cache_status)
    };
    tokio::time::timeout(Duration::from_secs(5), answer)
        .await
        .unwrap_or_else(|_| panic!("no HTTP/2 answer to {path} within 5 s"))
}

#[tokio::test]
async fn h2c_hits_are_served_from_the_cache() {
    let o = cacheable_origin(0).await;
    let p = proxy(&format!("http://{}", o.addr), &[]).await;
    let sender = h2c(p.addr).await;
    for i in 0..20 {
        let (status, version, body, cache_status) = h2_get(sender.clone(), "/hit").await;
        assert_eq!(
            (status, version, body.as_str()),
            (200, Version::HTTP_2, "body 1")
        );
        if i > 0 {
            assert!(cache_status.contains("hit"), "{cache_status}");
        }
    }
    assert_eq!(o.calls(), 1);
    assert_eq!(o.seen()[0].header("x-forwarded-proto"), Some("http"));
    // HTTP/1.1 on the same listener, from the same cache.
    let answer = support::get(p.addr, "/hit", &[]).await;
    assert_eq!((answer.status, answer.text().as_str()), (200, "body 1"));
    assert_eq!(o.calls(), 1);
}

#[tokio::test]
async fn h2_header_lists_get_the_http1_head_limit() {
    let o = cacheable_origin(0).await;
    let p = proxy(&format!("http://{}", o.addr), &[]).await;
    let sender = h2c(p.addr).await;
    let send = |size: usize| {
        let mut sender = sender.clone();
        let req = Request::get("http://api.example/big-head")
            .header("x-big", "a".repeat(size))
            .body(Empty::new())
            .unwrap();
        async move {
            match sender.send_request(req).await {
                Ok(resp) => Some(resp.status().as_u16()),
                Err(_) => None,
            }
        }
    };
    // 20 KiB of fields, within the 64 KiB head limit HTTP/1.1 allows (hyper's
    // HTTP/2 default alone would refuse past 16 KiB).
    assert_eq!(send(20 << 10).await, Some(200));
    // Past it: refused (431 from the server, or the client declines to send).
    assert_ne!(send(80 << 10).await, Some(200));
    assert_eq!(h2_get(sender, "/after-big").await.0, 200);
}

/// `n` concurrent GETs of `path` on `sender`; every body.
async fn concurrent(sender: &Sender, path: &'static str, n: usize) -> Vec<String> {
    let tasks: Vec<_> = (0..n)
        .map(|_| tokio::spawn(h2_get(sender.clone(), path)))
        .collect();
    let mut bodies = Vec::new();
    for t in tasks {
        let (status, _, body, _) = t.await.unwrap();
        assert_eq!(status, 200);
        bodies.push(body);
    }
    bodies
}

#[tokio::test]
async fn fifty_cold_misses_multiplexed_on_one_connection_make_one_origin_call() {
    let o = cacheable_origin(300).await;
    let p = proxy(&format!("http://{}", o.addr), &[]).await;
    let sender = h2c(p.addr).await;
    let bodies = concurrent(&sender, "/cold", 50).await;
    assert!(bodies.iter().all(|b| b == "body 1"), "{bodies:?}");
    assert_eq!(o.calls(), 1);
}

#[tokio::test]
async fn cold_misses_over_several_h2_connections_make_one_origin_call() {
    let o = cacheable_origin(300).await;
    let p = proxy(&format!("http://{}", o.addr), &[]).await;
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let sender = h2c(p.addr).await;
        tasks.push(tokio::spawn(async move {
            concurrent(&sender, "/cold-many", 10).await
        }));
    }
    for t in tasks {
        let bodies = t.await.unwrap();
        assert!(bodies.iter().all(|b| b == "body 1"), "{bodies:?}");
    }
    assert_eq!(o.calls(), 1);
}

/// The PKI's leaf and key written as PEM files in `dir`.
fn write_pem(dir: &Path, pki: &Pki) -> (String, String) {
    std::fs::create_dir_all(dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, &pki.leaf_pem).unwrap();
    std::fs::write(&key, &pki.leaf_key_pem).unwrap();
    (cert.display().to_string(), key.display().to_string())
}

fn temp_dir(name: &str) -> TempDir {
    TempDir(std::env::temp_dir().join(format!("hg-h2-{name}-{}", std::process::id())))
}

/// A TLS client trusting `pki`'s CA, offering `alpn`; what the server picked.
async fn tls_connect(
    addr: SocketAddr,
    pki: &Pki,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(
        Duration::from_secs(5),
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .expect("TLS handshake within 5 s")
    .expect("TLS handshake")
}

#[tokio::test]
async fn tls_listener_speaks_h2_and_http1_by_alpn() {
    let o = cacheable_origin(0).await;
    let pki = pki();
    let dir = temp_dir("alpn");
    let (cert, key) = write_pem(&dir.0, &pki);
    let p = proxy(
        &format!("http://{}", o.addr),
        &[
            &format!("tls_cert = {cert:?}"),
            &format!("tls_key = {key:?}"),
        ],
    )
    .await;

    let tls = tls_connect(p.addr, &pki, &[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let sender = h2_client(tls).await;
    let bodies = concurrent(&sender, "/secure", 20).await;
    assert!(bodies.iter().all(|b| b == "body 1"), "{bodies:?}");
    let (_, version, _, cache_status) = h2_get(sender, "/secure").await;
    assert_eq!(version, Version::HTTP_2);
    assert!(cache_status.contains("hit"), "{cache_status}");

    let tls = tls_connect(p.addr, &pki, &[b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut sender, conn) = http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let req = Request::get("/secure")
        .header("host", "api.example")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(
        (resp.status().as_u16(), resp.version()),
        (200, Version::HTTP_11)
    );
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"body 1");
    assert_eq!(o.calls(), 1);
    // The origin learns the client came over TLS.
    assert_eq!(o.seen()[0].header("x-forwarded-proto"), Some("https"));
}

/// Whether the server closes `tcp` within `limit` (reads EOF or an error).
async fn closed_within(tcp: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let read = async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, read).await.is_ok()
}

#[tokio::test]
async fn tls_client_that_sends_nothing_is_closed_after_the_header_timeout() {
    let o = cacheable_origin(0).await;
    let pki = pki();
    let dir = temp_dir("silent");
    let (cert, key) = write_pem(&dir.0, &pki);
    let p = proxy(
        &format!("http://{}", o.addr),
        &[
            &format!("tls_cert = {cert:?}"),
            &format!("tls_key = {key:?}"),
            "header_read_timeout_ms = 300",
            // The silent client holds the only slot until it is closed.
            "max_connections = 1",
            "threads = 1",
        ],
    )
    .await;
    let started = Instant::now();
    let mut silent = TcpStream::connect(p.addr).await.unwrap();
    assert!(
        closed_within(&mut silent, Duration::from_secs(3)).await,
        "a client that never started its TLS handshake still holds its connection"
    );
    assert!(started.elapsed() >= Duration::from_millis(250));
    // Its slot is free again: a client that trusts the CA is served.
    let sender = h2_client(tls_connect(p.addr, &pki, &[b"h2"]).await).await;
    assert_eq!(h2_get(sender, "/after").await.0, 200);
    let metrics = support::metrics(p.admin).await;
    assert!(
        metrics.contains("herdguard_proxy_tls_handshake_failures_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn bad_tls_files_are_configuration_errors_naming_the_field_and_file() {
    let pki = pki();
    let other = support::pki::pki();
    let dir = temp_dir("bad");
    let (cert, key) = write_pem(&dir.0, &pki);
    let junk = dir.0.join("junk.pem");
    std::fs::write(&junk, "not a PEM file\n").unwrap();
    let other_key = dir.0.join("other-key.pem");
    std::fs::write(&other_key, &other.leaf_key_pem).unwrap();
    let missing = dir.0.join("missing.pem");
    let (junk, other_key, missing) = (
        junk.display().to_string(),
        other_key.display().to_string(),
        missing.display().to_string(),
    );
    for (tls_cert, tls_key, field, file) in [
        (Some(&missing), Some(&key), "tls_cert", Some(&missing)),
        (Some(&junk), Some(&key), "tls_cert", Some(&junk)),
        (Some(&cert), Some(&junk), "tls_key", Some(&junk)),
        (Some(&cert), Some(&missing), "tls_key", Some(&missing)),
        // A key that is not the certificate's.
        (Some(&cert), Some(&other_key), "tls_key", Some(&other_key)),
        (Some(&cert), None, "tls_key", None),
        (None, Some(&key), "tls_cert", None),
    ] {
        let args = ServeArgs {
            listen: Some("127.0.0.1:0".into()),
            origin: Some("http://127.0.0.1:9".into()),
            tls_cert: tls_cert.map(Into::into),
            tls_key: tls_key.map(Into::into),
            ..ServeArgs::default()
        };
        let e = args.resolve().expect_err("bad TLS files must be refused");
        let text = e.to_string();
        assert_eq!(e.field, field, "{text}");
        assert!(
            text.starts_with(&format!("invalid configuration: {field}: ")),
            "{text}"
        );
        if let Some(file) = file {
            assert!(text.contains(file.as_str()), "{text}");
        }
        assert_eq!(ServeError::from(e).exit_code(), 2);
    }
    // The good pair resolves.
    let args = ServeArgs {
        listen: Some("127.0.0.1:0".into()),
        origin: Some("http://127.0.0.1:9".into()),
        tls_cert: Some(cert.into()),
        tls_key: Some(key.into()),
        ..ServeArgs::default()
    };
    assert!(args.resolve().unwrap().tls.is_some());
}

#[tokio::test]
async fn an_h2_connection_with_a_stream_in_flight_is_not_idle() {
    // A slow miss and, beside it, a hit answered at once: the hit's end must
    // not start the idle limit while the miss is still answered.
    let o = origin(|seen, n| {
        let delay = if seen.target == "/slow" { 1500 } else { 0 };
        Reply::ok(&[("cache-control", "max-age=60")], format!("body {n}")).delay(delay)
    })
    .await;
    let p = proxy(
        &format!("http://{}", o.addr),
        &["idle_timeout_ms = 300", "header_read_timeout_ms = 300"],
    )
    .await;
    let sender = h2c(p.addr).await;
    let slow = tokio::spawn(h2_get(sender.clone(), "/slow"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..3 {
        assert_eq!(h2_get(sender.clone(), "/fast").await.0, 200);
    }
    let (status, _, body, _) = slow.await.unwrap();
    assert_eq!((status, body.as_str()), (200, "body 1"));
}

/// A peer that vanished with a request in flight (it reads, but answers no
/// ping): the idle limit does not run while the request is answered, so the
/// server's ping, unanswered within the write limit, closes the connection —
/// long before the slow origin answers.
#[tokio::test]
async fn a_peer_that_answers_no_ping_is_closed_while_its_request_is_in_flight() {
    let o = cacheable_origin(5000).await;
    let p = proxy(
        &format!("http://{}", o.addr),
        &["idle_timeout_ms = 300", "write_timeout_ms = 300"],
    )
    .await;
    let mut tcp = raw::connect(p.addr).await;
    tcp.write_all(&raw::get(1, "/slow")).await.unwrap();
    let started = Instant::now();
    let (mut pinged, mut closed) = (false, None);
    while started.elapsed() < Duration::from_secs(4) {
        match tokio::time::timeout(Duration::from_secs(4), raw::read(&mut tcp)).await {
            Ok(Some((kind, flags, _, _))) => pinged |= kind == raw::PING && flags & 1 == 0,
            Ok(None) => {
                closed = Some(started.elapsed());
                break;
            }
            Err(_) => break,
        }
    }
    assert!(pinged, "no ping came");
    let closed = closed.expect("still open after 4 s though no ping was answered");
    assert!(
        o.calls() == 1 && closed < Duration::from_secs(2),
        "closed after {closed:?}"
    );
}

/// An upload and an answer each larger than every flow-control window, on
/// one HTTP/2 stream: the upload reaches the origin whole (the server gives
/// the window back as the body is read), the answer reaches the client whole
/// (sent as the client's window allows).
#[tokio::test]
async fn h2_uploads_and_answers_larger_than_the_windows_go_through_whole() {
    const SIZE: usize = 3 << 20;
    let o = origin(|_, _| support::Reply {
        status: 200,
        headers: vec![("cache-control".into(), "no-store".into())],
        body: support::ReplyBody::Generated(SIZE as u64),
        delay: Duration::ZERO,
    })
    .await;
    let p = proxy(&format!("http://{}", o.addr), &[]).await;
    let tcp = TcpStream::connect(p.addr).await.unwrap();
    let (mut sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let upload: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
    let req = Request::post("http://api.example/upload")
        .body(http_body_util::Full::new(Bytes::from(upload.clone())))
        .unwrap();
    let answer = async {
        let resp = sender.send_request(req).await.expect("HTTP/2 answer");
        let status = resp.status().as_u16();
        (
            status,
            resp.into_body().collect().await.unwrap().to_bytes().len(),
        )
    };
    let (status, received) = tokio::time::timeout(Duration::from_secs(10), answer)
        .await
        .expect("an answer within 10 s");
    assert_eq!((status, received), (200, SIZE));
    let seen = o.seen();
    assert!(
        seen[0].complete && seen[0].body == upload,
        "the upload arrived cut or changed"
    );
}

#[tokio::test]
async fn an_idle_h2_connection_is_closed_though_it_keeps_pinging() {
    let o = cacheable_origin(0).await;
    let p = proxy(
        &format!("http://{}", o.addr),
        &["idle_timeout_ms = 300", "header_read_timeout_ms = 5000"],
    )
    .await;
    let tcp = TcpStream::connect(p.addr).await.unwrap();
    // The client pings every 50 ms, idle or not: frames, not requests.
    let (sender, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_millis(50))
        .keep_alive_while_idle(true)
        .handshake::<_, Empty<Bytes>>(TokioIo::new(tcp))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    // The client keeps its side open (a connection whose senders are all gone closes itself).
    assert_eq!(h2_get(sender.clone(), "/x").await.0, 200);
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(3), conn)
        .await
        .expect("an idle HTTP/2 connection was not closed")
        .unwrap()
        .ok();
    assert!(started.elapsed() >= Duration::from_millis(250));
    drop(sender);
}

#[tokio::test]
async fn graceful_shutdown_lets_h2_requests_in_flight_finish_then_closes() {
    let o = cacheable_origin(500).await;
    let p = proxy(&format!("http://{}", o.addr), &[]).await;
    let tcp = TcpStream::connect(p.addr).await.unwrap();
    let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let in_flight = {
        let sender = sender.clone();
        tokio::spawn(async move { concurrent(&sender, "/draining", 5).await })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    // Dropping the handle stops the proxy.
    drop(p);
    let bodies = in_flight.await.unwrap();
    assert!(bodies.iter().all(|b| b == "body 1"), "{bodies:?}");
    // Then the server ends the connection (GOAWAY), though the client keeps it open.
    tokio::time::timeout(Duration::from_secs(3), conn)
        .await
        .expect("the connection stayed open after a graceful shutdown")
        .unwrap()
        .ok();
    drop(sender);
}

#[tokio::test]
async fn the_plain_listener_tells_the_preface_from_http1_whatever_the_first_read_holds() {
    let o = cacheable_origin(0).await;
    let p = proxy(&format!("http://{}", o.addr), &[]).await;
    // The preface in two writes: the first bytes alone cannot tell.
    let mut tcp = TcpStream::connect(p.addr).await.unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut rest = b"\r\nSM\r\n\r\n".to_vec();
    rest.extend(raw::frame(raw::SETTINGS, 0, 0, &[]));
    tcp.write_all(&rest).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), raw::read(&mut tcp))
        .await
        .unwrap();
    assert_eq!(first.map(|f| f.0), Some(raw::SETTINGS));
    // HTTP/1.1 methods that start like the preface.
    for method in ["POST", "PUT", "PATCH"] {
        let answer = support::request(p.addr, method, "/p", &[]).await;
        assert_eq!(answer.status, 200, "{method}");
        assert!(
            o.seen().iter().any(|s| s.method == method),
            "{method} did not reach the origin"
        );
    }
}

#[tokio::test]
async fn streams_past_the_limit_are_refused_and_others_still_served() {
    let o = cacheable_origin(500).await;
    let p = proxy(
        &format!("http://{}", o.addr),
        &["h2_max_concurrent_streams = 4"],
    )
    .await;
    let mut tcp = raw::connect(p.addr).await;
    // 20 streams at once on distinct URLs, ignoring the server's limit of 4.
    let mut burst = Vec::new();
    for i in 0..20u32 {
        burst.extend(raw::get(2 * i + 1, &format!("/many/{i}")));
    }
    tcp.write_all(&burst).await.unwrap();
    let (mut refused, mut answered) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(5);
    while refused + answered < 20 && Instant::now() < deadline {
        let Ok(Some((kind, _, stream, payload))) =
            tokio::time::timeout_at(deadline.into(), raw::read(&mut tcp)).await
        else {
            break;
        };
        match kind {
            raw::RST_STREAM if raw::code(&payload, 0) == raw::REFUSED_STREAM => refused += 1,
            raw::HEADERS if stream != 0 => answered += 1,
            _ => {}
        }
    }
    assert_eq!((answered, refused), (4, 16));
    assert_eq!(o.calls(), 4, "refused streams must not reach the origin");
    // Another client is served meanwhile.
    assert_eq!(h2_get(h2c(p.addr).await, "/other").await.0, 200);
    assert_eq!(support::get(p.addr, "/other", &[]).await.status, 200);
}

#[tokio::test]
async fn rapid_resets_get_goaway_and_others_still_served() {
    let o = cacheable_origin(200).await;
    let p = proxy(&format!("http://{}", o.addr), &[]).await;
    let mut tcp = raw::connect(p.addr).await;
    // Open and cancel 1000 streams in one write (CVE-2023-44487).
    let mut burst = Vec::new();
    for i in 0..1000u32 {
        let stream = 2 * i + 1;
        burst.extend(raw::get(stream, &format!("/reset/{i}")));
        burst.extend(raw::reset(stream));
    }
    // The server may close before reading it all.
    let _ = tcp.write_all(&burst).await;
    let mut goaway = None;
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Ok(Some((kind, _, _, payload))) =
        tokio::time::timeout_at(deadline.into(), raw::read(&mut tcp)).await
    {
        if kind == raw::GOAWAY {
            goaway = Some(raw::code(&payload, 4));
            break;
        }
    }
    assert_eq!(goaway, Some(raw::ENHANCE_YOUR_CALM));
    assert_eq!(h2_get(h2c(p.addr).await, "/other").await.0, 200);
    assert_eq!(support::get(p.addr, "/other", &[]).await.status, 200);
}
