//! Issue 9, item 8: resource bounds. Each limit is set low and shown to hold
//! against a client that misbehaves in exactly that way; the slowloris test
//! shows 1,000 idle connections do not stop a normal client.

mod support;

use std::time::{Duration, Instant};

use support::{get, origin, proxy, raw, read_answer, Reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

fn base(o: &support::Origin) -> String {
    format!("http://{}", o.addr)
}

/// How long until the peer closes `s` (reading and dropping whatever it sends),
/// or `None` if it is still open after `limit`.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit.saturating_sub(started.elapsed()), s.read(&mut buf)).await
        {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn limit_max_connections_holds_new_ones_until_a_slot_frees() {
    let o = origin(|_, _| Reply::ok(&[("cache-control", "max-age=60")], "ok")).await;
    let p = proxy(
        &base(&o),
        &["max_connections = 3", "header_read_timeout_ms = 10000"],
    )
    .await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(TcpStream::connect(p.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let fourth = tokio::spawn(raw(
        p.addr,
        b"GET /c HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
        Duration::from_secs(5),
    ));
    tokio::time::sleep(Duration::from_millis(600)).await;
    let served_early = fourth.is_finished();
    eprintln!("limit max_connections=3: a 4th client served while 3 were open: {served_early}");
    assert!(
        !served_early,
        "the 4th connection was served past the limit"
    );
    drop(idle.pop());
    let a = fourth.await.unwrap();
    assert_eq!(a.map(|a| a.status), Some(200));
}

#[tokio::test]
async fn limit_header_read_timeout_closes_a_slow_head() {
    let o = origin(|_, _| Reply::ok(&[], "ok")).await;
    let p = proxy(&base(&o), &["header_read_timeout_ms = 300"]).await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n").await.unwrap();
    let closed = closed_within(&mut s, Duration::from_secs(3)).await;
    eprintln!("limit header_read_timeout=300ms: half a head closed after {closed:?}");
    assert!(
        closed.is_some_and(|d| d < Duration::from_secs(2)),
        "{closed:?}"
    );
}

#[tokio::test]
async fn limit_idle_keep_alive_timeout_closes_idle_connections() {
    let o = origin(|_, _| Reply::ok(&[("cache-control", "max-age=60")], "ok")).await;
    let p = proxy(
        &base(&o),
        &["idle_timeout_ms = 300", "header_read_timeout_ms = 10000"],
    )
    .await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"GET /k HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        read_answer(&mut s, false).await.map(|a| a.status),
        Some(200)
    );
    let closed = closed_within(&mut s, Duration::from_secs(3)).await;
    eprintln!("limit idle_timeout=300ms: idle keep-alive connection closed after {closed:?}");
    assert!(
        closed.is_some_and(|d| d < Duration::from_secs(2)),
        "{closed:?}"
    );
}

/// The idle limit runs from the end of the latest answer, and only then:
/// an answer slower than the limit is not cut off, a request made within the
/// limit starts it anew, and a silent connection is closed after it whatever
/// came before (no wake-up at the answer's end is needed for that).
#[tokio::test]
async fn limit_idle_runs_from_the_end_of_the_latest_answer() {
    let o = origin(|seen, _| {
        let slow = seen.target.starts_with("/slow");
        Reply::ok(&[("cache-control", "max-age=60")], "ok").delay(if slow { 700 } else { 0 })
    })
    .await;
    let p = proxy(
        &base(&o),
        &["idle_timeout_ms = 300", "header_read_timeout_ms = 10000"],
    )
    .await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    // Slower than the idle limit: answered, not closed while it is made.
    s.write_all(b"GET /slow HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        read_answer(&mut s, false).await.map(|a| a.status),
        Some(200)
    );
    // Within the limit, twice (a miss, then a hit): each starts it anew.
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        s.write_all(b"GET /k HTTP/1.1\r\nhost: a\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(
            read_answer(&mut s, false).await.map(|a| a.status),
            Some(200)
        );
    }
    let closed = closed_within(&mut s, Duration::from_secs(3)).await;
    eprintln!("limit idle_timeout=300ms: closed {closed:?} after the latest answer");
    assert!(
        closed.is_some_and(|d| d >= Duration::from_millis(250) && d < Duration::from_secs(2)),
        "{closed:?}"
    );
}

#[tokio::test]
async fn limit_request_body_timeout_stops_a_stalled_upload() {
    let o = origin(|_, _| Reply::ok(&[], "stored")).await;
    let p = proxy(&base(&o), &["body_read_timeout_ms = 300"]).await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"POST /u HTTP/1.1\r\nhost: a\r\ncontent-length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let started = Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(3), read_answer(&mut s, false)).await;
    let status = answer.ok().flatten().map(|a| a.status);
    eprintln!(
        "limit body_read_timeout=300ms: stalled upload answered {status:?} after {:?}",
        started.elapsed()
    );
    assert_eq!(status, Some(408));
    // The origin got the upload as it came, and was not left waiting on the rest:
    // the proxy closed that connection when the client's body stalled.
    for _ in 0..100 {
        if o.calls() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = o.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(
        !seen[0].complete && seen[0].body_time < Duration::from_secs(1),
        "{seen:?}"
    );
}

#[tokio::test]
async fn limit_write_timeout_drops_a_client_that_stops_reading() {
    const SIZE: u64 = 24 << 20;
    let o = origin(|_, _| Reply {
        status: 200,
        headers: vec![("cache-control".into(), "max-age=60".into())],
        body: support::ReplyBody::Generated(SIZE),
        delay: Duration::ZERO,
    })
    .await;
    let p = proxy(
        &base(&o),
        &["write_timeout_ms = 300", "max_body_bytes = 33554432"],
    )
    .await;
    // Cached first, so only the client side is slow.
    assert_eq!(get(p.addr, "/big", &[]).await.body.len() as u64, SIZE);
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(p.addr).await.unwrap();
    s.write_all(b"GET /big HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut got: u64 = 0;
    let mut buf = vec![0u8; 1 << 16];
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        match tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got += n as u64,
            _ => break,
        }
    }
    eprintln!("limit write_timeout=300ms: a client that stalled 2 s then read got {got} of {SIZE} body bytes");
    assert!(got < SIZE, "the proxy kept the stalled connection");
}

#[tokio::test]
async fn limit_admin_listener_closes_slow_and_idle_connections() {
    let o = origin(|_, _| Reply::ok(&[], "ok")).await;
    let p = proxy(
        &base(&o),
        &["header_read_timeout_ms = 300", "idle_timeout_ms = 300"],
    )
    .await;
    let mut slow = TcpStream::connect(p.admin).await.unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\n").await.unwrap();
    let mut silent = TcpStream::connect(p.admin).await.unwrap();
    let (a, b) = tokio::join!(
        closed_within(&mut slow, Duration::from_secs(3)),
        closed_within(&mut silent, Duration::from_secs(3))
    );
    eprintln!("limit admin: slow head closed after {a:?}, silent connection after {b:?}");
    assert!(a.is_some_and(|d| d < Duration::from_secs(2)), "{a:?}");
    assert!(b.is_some_and(|d| d < Duration::from_secs(2)), "{b:?}");
}

#[tokio::test]
async fn limit_answers_over_the_object_size_pass_through_uncached() {
    const SIZE: u64 = 4 << 20;
    let o = origin(|_, _| Reply {
        status: 200,
        headers: vec![("cache-control".into(), "max-age=60".into())],
        body: support::ReplyBody::Generated(SIZE),
        delay: Duration::ZERO,
    })
    .await;
    let p = proxy(&base(&o), &["max_body_bytes = 1048576"]).await;
    let first = get(p.addr, "/large", &[]).await;
    let second = get(p.addr, "/large", &[]).await;
    eprintln!(
        "limit max_body_bytes=1MiB, 4 MiB answer: status {} with {} bytes ({}); origin calls for two requests: {}",
        first.status,
        first.body.len(),
        first.cache_status(),
        o.calls()
    );
    assert_eq!((first.status, first.body.len() as u64), (200, SIZE));
    assert_eq!((second.status, second.body.len() as u64), (200, SIZE));
    assert!(
        !first.cache_status().contains("stored"),
        "{}",
        first.cache_status()
    );
    assert_eq!(o.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_1000_idle_connections_do_not_stop_a_normal_client() {
    let o = origin(|_, _| Reply::ok(&[("cache-control", "max-age=60")], "served")).await;
    let p = proxy(&base(&o), &[]).await;
    let mut idle = Vec::with_capacity(1000);
    for i in 0..1000 {
        let mut s = TcpStream::connect(p.addr).await.unwrap();
        // Half send nothing, half a partial head, as slowloris does.
        if i % 2 == 0 {
            s.write_all(b"GET / HTTP/1.1\r\nhost: a\r\nx-a: ")
                .await
                .unwrap();
        }
        idle.push(s);
    }
    let started = Instant::now();
    let a = get(p.addr, "/normal", &[]).await;
    let took = started.elapsed();
    eprintln!("slowloris: with 1000 idle connections open, a normal request took {took:?}");
    assert_eq!((a.status, a.text().as_str()), (200, "served"));
    assert!(took < Duration::from_secs(1), "{took:?}");
    drop(idle);
}
