//! `https://` origins: a TLS origin the test starts on a free loopback port with
//! a private CA made by rcgen, served by tokio-rustls and hyper (HTTP/2 and
//! HTTP/1.1 by ALPN); the proxy reaches it with `--origin-ca`, and without it
//! answers 502 with a clear body and a log line.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use herdguard_proxy::ServeArgs;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;

mod support;
use support::pki::{pki, Pki};
use support::Proxy;

/// What the TLS origin saw of each request: SNI, ALPN protocol, `Host`.
#[derive(Clone, Debug, Default)]
struct SeenTls {
    sni: Option<String>,
    alpn: Option<Vec<u8>>,
    host: Option<String>,
    /// How many `Host` fields came (HTTP/2: none, the authority is `:authority`).
    host_fields: usize,
    version: Option<http::Version>,
}

struct TlsOrigin {
    port: u16,
    calls: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<SeenTls>>>,
}

/// TLS with the test PKI's leaf certificate, offering `alpn`.
fn acceptor(pki: &Pki, alpn: &[&[u8]]) -> tokio_rustls::TlsAcceptor {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![pki.leaf.clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.leaf_key.clone())),
    )
    .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// A TLS origin answering `tls body N` (max-age=60) after 200 ms, offering `alpn`.
async fn tls_origin(pki: &Pki, alpn: &[&[u8]]) -> TlsOrigin {
    let acceptor = acceptor(pki, alpn);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (calls2, seen2) = (Arc::clone(&calls), Arc::clone(&seen));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let (calls, seen) = (Arc::clone(&calls2), Arc::clone(&seen2));
            tokio::spawn(async move {
                // A failed handshake (the proxy refusing the certificate) just ends here.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let (_, conn) = tls.get_ref();
                let base = SeenTls {
                    sni: conn.server_name().map(str::to_string),
                    alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
                    ..SeenTls::default()
                };
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                    let host = req
                        .headers()
                        .get(http::header::HOST)
                        .map(|h| h.to_str().unwrap().to_string())
                        // HTTP/2 carries the authority in the URI instead.
                        .or_else(|| req.uri().authority().map(|a| a.to_string()));
                    let host_fields = req.headers().get_all(http::header::HOST).iter().count();
                    seen.lock().unwrap().push(SeenTls {
                        host,
                        host_fields,
                        version: Some(req.version()),
                        ..base.clone()
                    });
                    async move {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        let mut r = Response::new(Full::new(Bytes::from(format!("tls body {n}"))));
                        r.headers_mut()
                            .insert("cache-control", "max-age=60".parse().unwrap());
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    TlsOrigin { port, calls, seen }
}

async fn proxy(origin: &str, ca: Option<&str>) -> Proxy {
    let ca_path = ca.map(|pem| {
        let path = std::env::temp_dir().join(format!(
            "hg-origin-ca-{}-{}.pem",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::write(&path, pem).unwrap();
        path
    });
    let proxy = support::start(ServeArgs {
        origin: Some(origin.to_string()),
        origin_ca: ca_path.clone(),
        threads: Some(1),
        ..ServeArgs::default()
    })
    .await;
    // The CA is read once, at start.
    if let Some(p) = ca_path {
        std::fs::remove_file(p).unwrap();
    }
    proxy
}

fn rand_suffix() -> u64 {
    static N: AtomicUsize = AtomicUsize::new(0);
    N.fetch_add(1, Ordering::SeqCst) as u64
}

async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = Request::get(format!("http://{addr}{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let status = resp.status().as_u16();
    let cache_status = resp
        .headers()
        .get("cache-status")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        String::from_utf8_lossy(&body).into_owned(),
        cache_status,
    )
}

/// 50 concurrent misses → one origin call; then a hit.
async fn coalesces_and_hits(p: &Proxy, o: &TlsOrigin) {
    let calls: Vec<_> = (0..50)
        .map(|_| tokio::spawn(get(p.addr, "/secure")))
        .collect();
    for c in calls {
        let (status, body, _) = c.await.unwrap();
        assert_eq!((status, body.as_str()), (200, "tls body 1"));
    }
    assert_eq!(o.calls.load(Ordering::SeqCst), 1);
    let (status, body, cache_status) = get(p.addr, "/secure").await;
    assert_eq!((status, body.as_str()), (200, "tls body 1"));
    assert!(cache_status.contains("hit"), "{cache_status}");
    assert_eq!(o.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_origin_with_private_ca_over_h2_gets_coalesced_misses_and_hits() {
    let pki = pki();
    let o = tls_origin(&pki, &[b"h2", b"http/1.1"]).await;
    let p = proxy(&format!("https://localhost:{}", o.port), Some(&pki.ca_pem)).await;
    coalesces_and_hits(&p, &o).await;
    let seen = o.seen.lock().unwrap().clone();
    assert_eq!(seen[0].sni.as_deref(), Some("localhost"));
    assert_eq!(seen[0].alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(seen[0].version, Some(http::Version::HTTP_2));
    assert_eq!(
        seen[0].host.as_deref(),
        Some(format!("localhost:{}", o.port).as_str())
    );
    // No Host beside :authority: nginx refuses the pair as a duplicate Host (400).
    assert_eq!(seen[0].host_fields, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_origin_offering_only_http1_is_reached_over_http1() {
    let pki = pki();
    let o = tls_origin(&pki, &[b"http/1.1"]).await;
    let p = proxy(&format!("https://localhost:{}", o.port), Some(&pki.ca_pem)).await;
    coalesces_and_hits(&p, &o).await;
    let seen = o.seen.lock().unwrap().clone();
    assert_eq!(seen[0].version, Some(http::Version::HTTP_11));
    assert_eq!(seen[0].sni.as_deref(), Some("localhost"));
    assert_eq!(
        seen[0].host.as_deref(),
        Some(format!("localhost:{}", o.port).as_str())
    );
    assert_eq!(seen[0].host_fields, 1);
}

// A current-thread runtime: the proxy's tasks run on this thread, under the recorder.
#[tokio::test]
async fn https_origin_with_an_untrusted_certificate_is_a_clear_502_and_a_log_line() {
    let log = herdguard_testkit::LogRecorder::start();
    let pki = pki();
    let o = tls_origin(&pki, &[b"h2", b"http/1.1"]).await;
    // The bundled web PKI roots do not vouch for the test CA.
    let p = proxy(&format!("https://localhost:{}", o.port), None).await;
    let (status, body, _) = get(p.addr, "/secure").await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body.starts_with("herdguard: origin TLS handshake failed: invalid peer certificate"),
        "{body}"
    );
    assert!(body.contains("UnknownIssuer"), "{body}");
    assert_eq!(o.calls.load(Ordering::SeqCst), 0);
    let (_, metrics, _) = get(p.admin, "/metrics").await;
    assert!(
        metrics.contains("herdguard_proxy_origin_errors_total{kind=\"tls\"} 1"),
        "{metrics}"
    );
    let lines = log.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("WARN") && l.contains("origin TLS handshake failed")),
        "{lines:?}"
    );
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused() {
    let pki = pki();
    let o = tls_origin(&pki, &[b"http/1.1"]).await;
    // Trusted CA, but the certificate names localhost, not 127.0.0.1.
    let p = proxy(&format!("https://127.0.0.1:{}", o.port), Some(&pki.ca_pem)).await;
    let (status, body, _) = get(p.addr, "/secure").await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("TLS handshake failed"), "{body}");
    assert!(body.contains("not valid for name"), "{body}");
    assert_eq!(o.calls.load(Ordering::SeqCst), 0);
}

#[test]
fn origin_ca_must_be_a_pem_certificate_for_an_https_origin() {
    let path = std::env::temp_dir().join(format!("hg-bad-ca-{}.pem", std::process::id()));
    std::fs::write(&path, "not a certificate\n").unwrap();
    let args = |origin: &str| ServeArgs {
        listen: Some("127.0.0.1:0".into()),
        origin: Some(origin.into()),
        origin_ca: Some(path.clone()),
        ..ServeArgs::default()
    };
    let e = args("https://localhost:1").resolve().unwrap_err();
    assert_eq!(e.field, "origin_ca", "{e}");
    assert!(e.to_string().contains("no CERTIFICATE"), "{e}");
    let e = args("http://localhost:1").resolve().unwrap_err();
    assert_eq!(e.field, "origin_ca", "{e}");
    std::fs::remove_file(&path).unwrap();
    let e = args("https://localhost:1").resolve().unwrap_err();
    assert_eq!(e.field, "origin_ca", "{e}");
}

/// An HTTP/2 origin (TLS, ALPN h2, the `h2` crate) that refuses every other
/// stream unprocessed (`REFUSED_STREAM`) and answers the rest `ok N`; returns
/// its port and the streams it answered.
async fn refusing_h2_origin(pki: &Pki) -> (u16, Arc<AtomicUsize>) {
    let acceptor = acceptor(pki, &[b"h2"]);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (streams, answered) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let counted = Arc::clone(&answered);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, streams, answered) =
                (acceptor.clone(), Arc::clone(&streams), Arc::clone(&counted));
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut conn) = h2::server::handshake(tls).await else {
                    return;
                };
                while let Some(Ok((_request, mut respond))) = conn.accept().await {
                    if streams.fetch_add(1, Ordering::SeqCst) % 2 == 0 {
                        respond.send_reset(h2::Reason::REFUSED_STREAM);
                        continue;
                    }
                    let n = answered.fetch_add(1, Ordering::SeqCst) + 1;
                    let head = Response::builder()
                        .header("cache-control", "max-age=60")
                        .body(())
                        .unwrap();
                    if let Ok(mut body) = respond.send_response(head, false) {
                        let _ = body.send_data(Bytes::from(format!("ok {n}")), true);
                    }
                }
            });
        }
    });
    (port, answered)
}

/// An HTTP/2 origin that refuses a stream unprocessed (`REFUSED_STREAM`, RFC
/// 9113 §8.7; a `GOAWAY` past the stream is the same, as when nginx rotates a
/// connection after `keepalive_requests`) left it free to be sent again: a
/// GET is, on another stream, and its client gets the answer, not a 502.
#[tokio::test]
async fn a_get_an_h2_origin_refused_unprocessed_is_sent_again() {
    let pki = pki();
    let (port, answered) = refusing_h2_origin(&pki).await;
    let p = proxy(&format!("https://localhost:{port}"), Some(&pki.ca_pem)).await;
    for (i, path) in ["/a", "/b", "/c"].iter().enumerate() {
        let (status, body, _) = get(p.addr, path).await;
        assert_eq!(
            (status, body.as_str()),
            (200, format!("ok {}", i + 1).as_str()),
            "{path}"
        );
    }
    assert_eq!(answered.load(Ordering::SeqCst), 3);
}
