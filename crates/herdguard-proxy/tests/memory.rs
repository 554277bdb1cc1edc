//! Issue 9, item 8: bodies are streamed, so the proxy's memory stays bounded
//! whatever the body size. Its own test binary (one process, one test), so the
//! resident set measured is this transfer's and nothing else's.

mod support;

use herdguard_testkit::rss;

use std::time::Duration;

use support::{origin, proxy, Reply, ReplyBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_256_mib_down_and_128_mib_up_keeps_memory_bounded() {
    const DOWN: u64 = 256 << 20;
    const UP: u64 = 128 << 20;
    let o = origin(|s, _| {
        if s.method == "POST" {
            return Reply::ok(&[], format!("got {}", s.body.len()));
        }
        Reply {
            status: 200,
            headers: vec![("cache-control".into(), "max-age=60".into())],
            body: ReplyBody::Generated(DOWN),
            delay: Duration::ZERO,
        }
    })
    .await;
    let p = proxy(
        &format!("http://{}", o.addr),
        &["max_request_body_bytes = 1073741824"],
    )
    .await;
    let baseline = rss();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(baseline));
    let sampler = {
        let peak = std::sync::Arc::clone(&peak);
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss(), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    // Download: read the head, then count body bytes as they come.
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"GET /big HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let mut received: Vec<u8> = Vec::new();
    let mut head_end = None;
    let mut body: u64 = 0;
    let download = async {
        loop {
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            match head_end {
                Some(_) => body += n as u64,
                None => {
                    received.extend_from_slice(&buf[..n]);
                    if let Some(i) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                        head_end = Some(i);
                        body += (received.len() - i - 4) as u64;
                    }
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), download)
        .await
        .expect("download within 60 s");
    let head = String::from_utf8_lossy(&received[..head_end.unwrap_or(0)]).into_owned();

    // Upload: a chunked POST streamed from here.
    let mut u = TcpStream::connect(p.addr).await.unwrap();
    u.write_all(b"POST /upload HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let chunk = vec![b'u'; 1 << 16];
    let upload = async {
        let mut sent = 0;
        while sent < UP {
            u.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                .await?;
            u.write_all(&chunk).await?;
            u.write_all(b"\r\n").await?;
            sent += chunk.len() as u64;
        }
        u.write_all(b"0\r\n\r\n").await?;
        let mut answer = Vec::new();
        u.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&answer).into_owned())
    };
    let answer = tokio::time::timeout(Duration::from_secs(60), upload)
        .await
        .expect("upload within 60 s")
        .unwrap_or_else(|e| format!("upload failed: {e}"));
    sampler.abort();
    let grew = peak
        .load(std::sync::atomic::Ordering::Relaxed)
        .saturating_sub(baseline);
    let uploaded = o
        .seen()
        .iter()
        .find(|r| r.method == "POST")
        .map(|r| (r.complete, r.header("content-length").map(str::to_string)));
    eprintln!(
        "streaming: download head {:?}, {body} of {DOWN} body bytes; upload answer {:?}, origin saw {uploaded:?}; RSS grew by {} MiB at peak",
        head.lines().next(),
        answer.lines().next(),
        grew >> 20
    );
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, DOWN);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(uploaded.is_some_and(|(complete, _)| complete));
    assert!(grew < 64 << 20, "RSS grew by {} MiB", grew >> 20);
}
