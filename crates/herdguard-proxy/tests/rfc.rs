//! RFC 9110 / 9111 / 5861 corners against a real origin (the recording raw
//! origin of `support`, which sends exactly the fields each test gives it).

mod support;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use support::{get, origin, proxy, Reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LM: &str = "Wed, 21 Oct 2015 07:28:00 GMT";

fn http_date(t: SystemTime) -> String {
    httpdate::fmt_http_date(t)
}

#[tokio::test]
async fn if_modified_since_is_answered_304_from_a_fresh_stored_response() {
    let o = origin(|_, n| {
        Reply::ok(
            &[
                ("cache-control", "max-age=60"),
                ("last-modified", LM),
                ("etag", "\"v1\""),
            ],
            format!("body {n}"),
        )
    })
    .await;
    let p = proxy(&format!("http://{}", o.addr), &[]).await;
    assert_eq!(get(p.addr, "/r", &[]).await.text(), "body 1");
    let r = get(p.addr, "/r", &[("if-modified-since", LM)]).await;
    assert_eq!((r.status, r.text().as_str()), (304, ""));
    assert_eq!(r.header("etag"), Some("\"v1\""));
    let later = "Thu, 22 Oct 2015 07:28:00 GMT";
    assert_eq!(
        get(p.addr, "/r", &[("if-modified-since", later)])
            .await
            .status,
        304
    );
    let earlier = "Tue, 20 Oct 2015 07:28:00 GMT";
    let r = get(p.addr, "/r", &[("if-modified-since", earlier)]).await;
    assert_eq!((r.status, r.text().as_str()), (200, "body 1"));
    // If-None-Match takes precedence: a tag that does not match wins over a date that would.
    let r = get(
        p.addr,
        "/r",
        &[("if-none-match", "\"other\""), ("if-modified-since", later)],
    )
    .await;
    assert_eq!(r.status, 200);
    let r = get(
        p.addr,
        "/r",
        &[("if-none-match", "\"v1\""), ("if-modified-since", earlier)],
    )
    .await;
    assert_eq!(r.status, 304);
    // An invalid date is ignored.
    assert_eq!(
        get(p.addr, "/r", &[("if-modified-since", "yesterday")])
            .await
            .status,
        200
    );
    // The origin never saw the client's conditionals.
    assert_eq!(o.calls(), 1);
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` in RFC 850 and asctime forms.
fn other_formats(imf: &str) -> (String, String) {
    let parts: Vec<&str> = imf.split([' ', ',']).filter(|p| !p.is_empty()).collect();
    let [wd, day, mon, year, time, _gmt] = parts[..] else {
        panic!("{imf}")
    };
    let long = match wd {
        "Mon" => "Monday",
        "Tue" => "Tuesday",
        "Wed" => "Wednesday",
        "Thu" => "Thursday",
        "Fri" => "Friday",
        "Sat" => "Saturday",
        _ => "Sunday",
    };
    let rfc850 = format!("{long}, {day}-{mon}-{} {time} GMT", &year[2..]);
    let asctime = format!(
        "{wd} {mon} {:>2} {time} {year}",
        day.trim_start_matches('0')
    );
    (rfc850, asctime)
}

#[tokio::test]
async fn http_dates_in_all_three_formats_any_case_give_freshness() {
    let o = origin(|s, _| {
        let now = SystemTime::now();
        let date = http_date(now);
        let expires = http_date(now + Duration::from_secs(120));
        let (date850, date_asc) = other_formats(&date);
        let (exp850, exp_asc) = other_formats(&expires);
        let (d, e) = match s.target.as_str() {
            "/imf" => (date.to_lowercase(), expires.to_uppercase()),
            "/rfc850" => (date850.to_uppercase(), exp850.to_lowercase()),
            _ => (date_asc.to_lowercase(), exp_asc.to_uppercase()),
        };
        Reply::ok(&[("date", &d), ("expires", &e)], "dated")
    })
    .await;
    let p = proxy(&format!("http://{}", o.addr), &[]).await;
    for path in ["/imf", "/rfc850", "/asctime"] {
        get(p.addr, path, &[]).await;
        let r = get(p.addr, path, &[]).await;
        assert!(r.cache_status().contains("hit"), "{path}: {r:?}");
    }
    assert_eq!(o.calls(), 3);
}

#[tokio::test]
async fn a_stored_response_without_date_gets_one() {
    let o = origin(|_, _| Reply::ok(&[("cache-control", "max-age=60")], "undated")).await;
    let p = proxy(&format!("http://{}", o.addr), &[]).await;
    let first = get(p.addr, "/d", &[]).await;
    let stored_date = first.header("date").map(str::to_string);
    assert!(stored_date.is_some(), "{first:?}");
    // Past the second: a Date made per answer would differ now.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let hit = get(p.addr, "/d", &[]).await;
    assert!(hit.cache_status().contains("hit"), "{hit:?}");
    assert_eq!(hit.header("date").map(str::to_string), stored_date);
    assert_eq!(o.calls(), 1);
}

#[tokio::test]
async fn the_age_of_a_304_is_taken() {
    let o = origin(|_, n| {
        if n == 1 {
            Reply::ok(&[("cache-control", "max-age=0"), ("etag", "\"a\"")], "aged")
        } else {
            Reply::ok(
                &[
                    ("cache-control", "max-age=600"),
                    ("etag", "\"a\""),
                    ("age", "300"),
                ],
                "",
            )
            .status(304)
        }
    })
    .await;
    let p = proxy(&format!("http://{}", o.addr), &[]).await;
    get(p.addr, "/a", &[]).await;
    let r = get(p.addr, "/a", &[]).await;
    assert_eq!((r.status, r.text().as_str()), (200, "aged"));
    assert_eq!(o.seen()[1].header("if-none-match"), Some("\"a\""));
    let age: u64 = r.header("age").unwrap().parse().unwrap();
    assert!((300..310).contains(&age), "{r:?}");
    let hit = get(p.addr, "/a", &[]).await;
    assert!(hit.cache_status().contains("hit"), "{hit:?}");
    assert!(hit.header("age").unwrap().parse::<u64>().unwrap() >= 300);
    assert_eq!(o.calls(), 2);
}

#[tokio::test]
async fn a_request_stale_if_error_lets_a_stale_response_stand_in() {
    let o = origin(|_, n| {
        if n == 1 {
            // Stale on arrival: generated 100 s ago, fresh for 10.
            let date = http_date(SystemTime::now() - Duration::from_secs(100));
            Reply::ok(&[("cache-control", "max-age=10"), ("date", &date)], "old")
        } else {
            Reply::ok(&[], "down").status(500)
        }
    })
    .await;
    let p = proxy(&format!("http://{}", o.addr), &[]).await;
    assert_eq!(get(p.addr, "/s", &[]).await.text(), "old");
    let r = get(p.addr, "/s", &[("cache-control", "stale-if-error=3600")]).await;
    assert_eq!((r.status, r.text().as_str()), (200, "old"), "{r:?}");
    assert!(r.cache_status().contains("stale"), "{r:?}");
    // No window (staleness counts from arrival for a response stale on arrival): the error.
    let r = get(p.addr, "/s", &[("cache-control", "stale-if-error=0")]).await;
    assert_eq!(r.status, 500, "{r:?}");
    let r = get(p.addr, "/s", &[]).await;
    assert_eq!(r.status, 500, "{r:?}");
}

#[tokio::test]
async fn server_errors_with_explicit_freshness_are_stored_and_served_while_fresh() {
    let o = origin(|s, n| match s.target.as_str() {
        "/explicit" => {
            Reply::ok(&[("cache-control", "max-age=60")], format!("down {n}")).status(503)
        }
        _ => Reply::ok(&[], format!("plain {n}")).status(500),
    })
    .await;
    let p = proxy(&format!("http://{}", o.addr), &[]).await;
    let first = get(p.addr, "/explicit", &[]).await;
    assert_eq!((first.status, first.text().as_str()), (503, "down 1"));
    let second = get(p.addr, "/explicit", &[]).await;
    assert_eq!((second.status, second.text().as_str()), (503, "down 1"));
    assert!(second.cache_status().contains("hit"), "{second:?}");
    assert_eq!(o.calls(), 1);
    // Without explicit freshness a 5xx is never stored.
    assert_eq!(get(p.addr, "/plain", &[]).await.status, 500);
    assert_eq!(get(p.addr, "/plain", &[]).await.text(), "plain 3");
}

#[tokio::test]
async fn a_304_is_merged_only_into_the_response_it_validates() {
    let o = origin(|s, n| match n {
        1 => Reply::ok(&[("cache-control", "max-age=0"), ("etag", "\"a\"")], "A"),
        // A 304 for another representation ("b"): it validates nothing stored.
        2 => Reply::ok(&[("cache-control", "max-age=60"), ("etag", "\"b\"")], "").status(304),
        _ => {
            assert_eq!(
                s.header("if-none-match"),
                None,
                "the refetch is unconditional"
            );
            Reply::ok(&[("cache-control", "max-age=60"), ("etag", "\"b\"")], "B")
        }
    })
    .await;
    let p = proxy(&format!("http://{}", o.addr), &[]).await;
    assert_eq!(get(p.addr, "/m", &[]).await.text(), "A");
    let r = get(p.addr, "/m", &[]).await;
    assert_eq!((r.status, r.text().as_str()), (200, "B"), "{r:?}");
    assert_eq!(r.header("etag"), Some("\"b\""));
    assert_eq!(o.calls(), 3);
    assert_eq!(get(p.addr, "/m", &[]).await.text(), "B");
    assert_eq!(o.calls(), 3);
}

#[tokio::test]
async fn ranges_are_answered_206_from_the_stored_response() {
    let o = origin(|_, _| {
        Reply::ok(
            &[("cache-control", "max-age=60"), ("etag", "\"r\"")],
            "0123456789",
        )
    })
    .await;
    let p = proxy(&format!("http://{}", o.addr), &[]).await;
    let r = get(p.addr, "/bytes", &[("range", "bytes=2-5")]).await;
    assert_eq!((r.status, r.text().as_str()), (206, "2345"), "{r:?}");
    assert_eq!(r.header("content-range"), Some("bytes 2-5/10"));
    assert_eq!(r.header("content-length"), Some("4"));
    // The origin was asked for the whole object.
    assert_eq!(o.seen()[0].header("range"), None);
    for (range, body, content_range) in [
        ("bytes=-3", "789", "bytes 7-9/10"),
        ("bytes=7-", "789", "bytes 7-9/10"),
        ("bytes=8-100", "89", "bytes 8-9/10"),
        ("BYTES = 0-0", "0", "bytes 0-0/10"),
    ] {
        let r = get(p.addr, "/bytes", &[("range", range)]).await;
        assert_eq!((r.status, r.text().as_str()), (206, body), "{range}");
        assert_eq!(r.header("content-range"), Some(content_range), "{range}");
    }
    let r = get(p.addr, "/bytes", &[("range", "bytes=20-")]).await;
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */10"));
    // Several ranges, another unit, or an If-Range that does not match: the whole object.
    for headers in [
        vec![("range", "bytes=0-1,3-4")],
        vec![("range", "items=0-1")],
        vec![("range", "bytes=2-5"), ("if-range", "\"old\"")],
    ] {
        let r = get(p.addr, "/bytes", &headers).await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "0123456789"),
            "{headers:?}"
        );
    }
    let r = get(
        p.addr,
        "/bytes",
        &[("range", "bytes=2-5"), ("if-range", "\"r\"")],
    )
    .await;
    assert_eq!((r.status, r.text().as_str()), (206, "2345"));
    assert_eq!(o.calls(), 1);
}

/// RFC 9110 §13.1.5: If-Range holds only for a strong validator — an entity-tag
/// equal by the strong comparison (a weak one never matches), or a date exactly
/// the stored `Last-Modified` when that is strong (§8.8.2.2: at least a second
/// before the stored `Date`). Otherwise the whole object, never a part of another.
#[tokio::test]
async fn if_range_needs_a_strong_validator() {
    let now = SystemTime::now();
    let date = herdguard_http::freshness::format_http_date(now);
    let earlier = herdguard_http::freshness::format_http_date(now - Duration::from_secs(10));
    let (date, earlier) = (
        date.to_str().unwrap().to_string(),
        earlier.to_str().unwrap().to_string(),
    );
    let (d, e) = (date.clone(), earlier.clone());
    let o = origin(move |seen, _| {
        let (etag, last_modified) = match seen.target.as_str() {
            "/weak" => ("W/\"w\"", d.as_str()),
            _ => ("\"s\"", e.as_str()),
        };
        Reply::ok(
            &[
                ("cache-control", "max-age=60"),
                ("date", d.as_str()),
                ("etag", etag),
                ("last-modified", last_modified),
            ],
            "0123456789",
        )
    })
    .await;
    let p = proxy(&format!("http://{}", o.addr), &[]).await;
    let range = |path: &'static str, if_range: String| {
        let addr = p.addr;
        async move {
            let r = get(
                addr,
                path,
                &[("range", "bytes=2-5"), ("if-range", &if_range)],
            )
            .await;
            (r.status, r.text())
        }
    };
    let whole = (200, "0123456789".to_string());
    let part = (206, "2345".to_string());
    // A weak ETag, named weak or strong, and a Last-Modified equal to Date.
    assert_eq!(range("/weak", "W/\"w\"".into()).await, whole, "weak tag");
    assert_eq!(
        range("/weak", "\"w\"".into()).await,
        whole,
        "weak stored tag"
    );
    assert_eq!(range("/weak", date.clone()).await, whole, "weak date");
    // A strong ETag, and a Last-Modified ten seconds before Date.
    assert_eq!(range("/strong", "\"s\"".into()).await, part, "strong tag");
    assert_eq!(
        range("/strong", "W/\"s\"".into()).await,
        whole,
        "weak given"
    );
    assert_eq!(range("/strong", earlier).await, part, "strong date");
    assert_eq!(range("/strong", date).await, whole, "another date");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranged_misses_are_coalesced_into_one_full_fetch() {
    let o = origin(|_, _| {
        Reply::ok(
            &[("cache-control", "max-age=60")],
            "abcdefghijklmnopqrstuvwxyz",
        )
        .delay(200)
    })
    .await;
    let p = proxy(&format!("http://{}", o.addr), &[]).await;
    let addr = p.addr;
    let calls: Vec<_> = (0..26)
        .map(|i| {
            tokio::spawn(async move {
                let range = format!("bytes={i}-{i}");
                let r = get(addr, "/abc", &[("range", &range)]).await;
                (i, r.status, r.text())
            })
        })
        .collect();
    for c in calls {
        let (i, status, text) = c.await.unwrap();
        assert_eq!(status, 206);
        assert_eq!(text.as_bytes(), &[b'a' + i as u8]);
    }
    assert_eq!(o.calls(), 1);
}

/// A 304 without validators of its own (as many servers send) validates the
/// stored response its conditional request was made from: one origin request
/// per revalidation, not a second, unconditional one. A 304 whose validator
/// contradicts the stored one still forces the refetch (the test above).
#[tokio::test]
async fn a_304_without_validators_validates_the_stored_response_it_was_asked_for() {
    let o = origin(|s, n| match (s.target.as_str(), n) {
        (_, 1 | 2) => Reply::ok(
            &[
                ("cache-control", "max-age=0"),
                ("etag", "\"x\""),
                ("last-modified", LM),
            ],
            format!("full {n}"),
        ),
        _ => {
            let asked =
                s.header("if-none-match").is_some() || s.header("if-modified-since").is_some();
            if asked {
                Reply::ok(&[("cache-control", "max-age=60"), ("x-checked", "yes")], "").status(304)
            } else {
                Reply::ok(&[("cache-control", "max-age=60")], format!("refetch {n}"))
            }
        }
    })
    .await;
    let p = proxy(&format!("http://{}", o.addr), &[]).await;
    for path in ["/etag", "/lm"] {
        get(p.addr, path, &[]).await;
    }
    for path in ["/etag", "/lm"] {
        let before = o.calls();
        let r = get(p.addr, path, &[]).await;
        assert_eq!(r.status, 200, "{path}: {r:?}");
        assert!(r.text().starts_with("full"), "{path}: {r:?}");
        assert_eq!(r.header("x-checked"), Some("yes"), "{path}: {r:?}");
        assert_eq!(
            o.calls() - before,
            1,
            "{path}: origin requests for one revalidation"
        );
        // The refreshed response is fresh now: a hit.
        let hit = get(p.addr, path, &[]).await;
        assert!(hit.cache_status().contains("hit"), "{path}: {hit:?}");
    }
    assert_eq!(o.seen()[2].header("if-none-match"), Some("\"x\""));
}

/// RFC 9111 §5.2.2.3: a cache that understands the status ignores `no-store`
/// when `must-understand` is present; one that does not, does not store.
#[tokio::test]
async fn must_understand_overrides_no_store_for_understood_statuses() {
    let o = origin(|s, n| {
        let status = if s.target == "/odd" { 299 } else { 200 };
        Reply::ok(
            &[("cache-control", "must-understand, no-store, max-age=60")],
            format!("v{n}"),
        )
        .status(status)
    })
    .await;
    let p = proxy(&format!("http://{}", o.addr), &[]).await;
    assert_eq!(get(p.addr, "/mu", &[]).await.text(), "v1");
    let hit = get(p.addr, "/mu", &[]).await;
    assert_eq!(hit.text(), "v1");
    assert!(hit.cache_status().contains("hit"), "{hit:?}");
    assert_eq!(get(p.addr, "/odd", &[]).await.text(), "v2");
    assert_eq!(get(p.addr, "/odd", &[]).await.text(), "v3");
}

/// `DELETE` and `OPTIONS` carry bodies (Elasticsearch, bulk endpoints): the
/// origin receives exactly the bytes their framing says, uncached, within the
/// request-body limit; `GET` and `HEAD` with a body stay refused (see
/// `attack_1_get_with_a_body_never_desyncs_the_origin`).
#[tokio::test]
async fn delete_and_options_bodies_are_forwarded_with_their_framing() {
    let o = origin(|s, n| {
        Reply::ok(
            &[("cache-control", "max-age=60")],
            format!(
                "{} {} got {}",
                n,
                s.method,
                String::from_utf8_lossy(&s.body)
            ),
        )
    })
    .await;
    let p = proxy(
        &format!("http://{}", o.addr),
        &["max_request_body_bytes = 64"],
    )
    .await;
    let sent: [&[u8]; 3] = [
        b"DELETE /idx HTTP/1.1\r\nhost: api.example\r\ncontent-length: 11\r\nconnection: close\r\n\r\n{\"q\":\"del\"}",
        b"DELETE /idx HTTP/1.1\r\nhost: api.example\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nchunk\r\n3\r\ned!\r\n0\r\n\r\n",
        b"OPTIONS /idx HTTP/1.1\r\nhost: api.example\r\ncontent-length: 4\r\nconnection: close\r\n\r\nopts",
    ];
    let mut texts = Vec::new();
    for bytes in sent {
        let a = support::raw(p.addr, bytes, Duration::from_secs(5))
            .await
            .expect("an answer");
        assert_eq!(a.status, 200, "{a:?}");
        texts.push(a.text());
    }
    assert_eq!(
        texts,
        [
            "1 DELETE got {\"q\":\"del\"}",
            "2 DELETE got chunked!",
            "3 OPTIONS got opts"
        ]
    );
    for s in o.seen() {
        assert!(s.complete, "{s:?}");
        let framed = s.header("content-length").map(str::to_string);
        let chunked = s.header("transfer-encoding").is_some();
        assert!(
            framed == Some(s.body.len().to_string()) || (chunked && framed.is_none()),
            "{s:?}"
        );
    }
    // Not stored: the next DELETE reaches the origin.
    let a = support::raw(p.addr, sent[0], Duration::from_secs(5))
        .await
        .unwrap();
    assert!(a.text().starts_with("4 DELETE"), "{a:?}");
    // Past the request-body limit: 413, and the origin sees nothing.
    let big = format!(
        "DELETE /idx HTTP/1.1\r\nhost: api.example\r\ncontent-length: 65\r\nconnection: close\r\n\r\n{}",
        "x".repeat(65)
    );
    let a = support::raw(p.addr, big.as_bytes(), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(a.status, 413, "{a:?}");
    let chunked_big = format!(
        "OPTIONS /idx HTTP/1.1\r\nhost: api.example\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n41\r\n{}\r\n0\r\n\r\n",
        "y".repeat(65)
    );
    let a = support::raw(p.addr, chunked_big.as_bytes(), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(a.status, 413, "{a:?}");
    assert!(
        o.seen().iter().all(|s| s.body.len() <= 64),
        "{:?}",
        o.seen()
    );
}

/// The credentials an answer of the `token_origin` was made for.
fn made_for(answer: &support::Answer) -> String {
    answer
        .text()
        .split(" for ")
        .nth(1)
        .unwrap_or("")
        .split(" #")
        .next()
        .unwrap_or("")
        .to_string()
}

/// An origin that answers each request for its `Authorization` ("anon"
/// without), `public` or not by path: `/pub` always, `/own` never, `/mixed`
/// only for the token `pub`.
async fn token_origin(delay_ms: u64) -> support::Origin {
    origin(move |s, n| {
        let token = s
            .header("authorization")
            .unwrap_or("anon")
            .trim_start_matches("Bearer ")
            .to_string();
        let public = match s.target.as_str() {
            "/pub" => true,
            "/mixed" => token == "pub",
            _ => false,
        };
        let cc = if public {
            "public, max-age=60"
        } else {
            "max-age=60"
        };
        Reply::ok(
            &[("cache-control", cc)],
            format!("{} for {token} #{n}", s.target),
        )
        .delay(delay_ms)
    })
    .await
}

/// RFC 9111 §3.5: an answer to a request with `Authorization` is stored when
/// it says `public` (or `s-maxage`, `must-revalidate`), and then serves
/// everyone; one that does not is never stored, nor served to anyone else —
/// and a stored answer not so marked is never served to a request with
/// credentials (it may have been made for others).
#[tokio::test]
async fn authorized_answers_marked_shareable_are_stored_private_ones_never_cross() {
    let o = token_origin(0).await;
    let p = proxy(&format!("http://{}", o.addr), &[]).await;
    let alice = ("authorization", "Bearer alice");
    let bob = ("authorization", "Bearer bob");
    let a = get(p.addr, "/pub", &[alice]).await;
    assert_eq!(made_for(&a), "alice");
    assert!(a.cache_status().contains("stored"), "{a:?}");
    for who in [vec![bob], vec![]] {
        let r = get(p.addr, "/pub", &who).await;
        assert_eq!(r.text(), a.text(), "{who:?}");
        assert!(r.cache_status().contains("; hit"), "{r:?}");
    }
    assert_eq!(o.calls(), 1);
    // Not marked: each gets its own answer, every time; nobody another's.
    for (who, name) in [
        (vec![alice], "alice"),
        (vec![bob], "bob"),
        (vec![], "anon"),
        (vec![alice], "alice"),
    ] {
        let r = get(p.addr, "/own", &who).await;
        assert_eq!(made_for(&r), name, "{r:?}");
    }
    assert_eq!(o.calls(), 5);
    // The anonymous answer was stored; it serves anonymous requests only.
    assert!(get(p.addr, "/own", &[])
        .await
        .cache_status()
        .contains("; hit"));
    assert_eq!(made_for(&get(p.addr, "/own", &[bob]).await), "bob");
    assert_eq!(o.calls(), 6);
}

/// The adversary: many credentials and anonymous requests at once on a URL
/// whose origin marks the answer shareable for one token only — cold, and
/// with an anonymous answer stored. No request gets an answer made for other
/// credentials, unless it was marked shareable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_credentials_never_get_each_others_private_answers() {
    let o = token_origin(200).await;
    let p = proxy(&format!("http://{}", o.addr), &[]).await;
    let tokens = [
        "pub", "t1", "t2", "t3", "t4", "t5", "anon", "anon", "anon", "anon",
    ];
    let mut leaked = Vec::new();
    for round in 0..4 {
        if round == 2 {
            // A stored anonymous answer (not marked): for anonymous requests only.
            get(p.addr, "/own", &[]).await;
        }
        let path = if round < 2 { "/mixed" } else { "/own" };
        let calls: Vec<_> = tokens
            .iter()
            .map(|&t| {
                let addr = p.addr;
                tokio::spawn(async move {
                    let bearer = format!("Bearer {t}");
                    let headers: Vec<(&str, &str)> = if t == "anon" {
                        vec![]
                    } else {
                        vec![("authorization", bearer.as_str())]
                    };
                    (t, made_for(&get(addr, path, &headers).await))
                })
            })
            .collect();
        for c in calls {
            let (asked, got) = c.await.unwrap();
            if got != asked && got != "pub" {
                leaked.push((round, asked, got));
            }
        }
    }
    eprintln!("answers made for other credentials and not marked shareable: {leaked:?}");
    assert!(leaked.is_empty(), "{leaked:?}");
}

/// Refreshes of a stored answer marked shareable are coalesced across
/// credentials (one origin request, not one per token); when the origin stops
/// marking it, each request gets its own answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshes_of_shareable_answers_coalesce_across_credentials() {
    let o = origin(|s, n| {
        let token = s
            .header("authorization")
            .unwrap_or("anon")
            .trim_start_matches("Bearer ")
            .to_string();
        match (s.target.as_str(), n) {
            (_, 1 | 2) => Reply::ok(
                &[("cache-control", "public, max-age=0"), ("etag", "\"a\"")],
                format!("{} for {token} #{n}", s.target),
            ),
            ("/shared", _) => Reply::ok(
                &[("cache-control", "public, max-age=60"), ("etag", "\"a\"")],
                "",
            )
            .status(304)
            .delay(300),
            _ => Reply::ok(
                &[("cache-control", "max-age=60")],
                format!("{} for {token} #{n}", s.target),
            )
            .delay(300),
        }
    })
    .await;
    let p = proxy(&format!("http://{}", o.addr), &[]).await;
    get(p.addr, "/shared", &[("authorization", "Bearer first")]).await;
    get(p.addr, "/revoked", &[("authorization", "Bearer first")]).await;
    for path in ["/shared", "/revoked"] {
        let before = o.calls();
        let calls: Vec<_> = (0..8)
            .map(|i| {
                let addr = p.addr;
                tokio::spawn(async move {
                    let bearer = format!("Bearer t{i}");
                    (
                        format!("t{i}"),
                        get(addr, path, &[("authorization", &bearer)]).await,
                    )
                })
            })
            .collect();
        for c in calls {
            let (token, r) = c.await.unwrap();
            assert_eq!(r.status, 200, "{path}: {r:?}");
            match path {
                "/shared" => assert_eq!(made_for(&r), "first", "{r:?}"),
                _ => assert_eq!(made_for(&r), token, "{r:?}"),
            }
        }
        let calls = o.calls() - before;
        eprintln!("{path}: 8 concurrent refreshes with 8 tokens made {calls} origin requests");
        match path {
            "/shared" => assert_eq!(calls, 1),
            _ => assert!(calls >= 8, "{calls}"),
        }
    }
}

/// RFC 9110 §9.3.3 / RFC 9111 §4: the answer to a `POST` with explicit
/// freshness and a `Content-Location` equal to its target is the current
/// answer to a `GET` of it: stored, and later `GET`s are hits. Without either,
/// or with another location, it is not — and a `POST` still invalidates.
#[tokio::test]
async fn post_answers_with_freshness_and_their_own_content_location_serve_gets() {
    let o = origin(|s, n| {
        let location = match s.target.as_str() {
            "/items/1" => "/items/1",
            "/items/2" => "http://api.example/items/2",
            "/items/3" => "/items/other",
            _ => "",
        };
        let mut headers = vec![("cache-control", "max-age=60")];
        if !location.is_empty() {
            headers.push(("content-location", location));
        }
        if s.target == "/items/5" {
            headers.push(("content-location", "/items/5"));
            headers.push(("set-cookie", "session=1"));
        }
        Reply::ok(&headers, format!("{} {} #{n}", s.method, s.target))
    })
    .await;
    let p = proxy(&format!("http://{}", o.addr), &[]).await;
    for (path, stored) in [
        ("/items/1", true),
        ("/items/2", true),
        ("/items/3", false),
        ("/items/4", false),
        ("/items/5", false),
    ] {
        let posted = support::request(p.addr, "POST", path, &[("content-length", "0")]).await;
        assert!(posted.text().starts_with("POST"), "{posted:?}");
        let r = get(p.addr, path, &[]).await;
        assert_eq!(r.text() == posted.text(), stored, "{path}: {r:?}");
        assert_eq!(r.cache_status().contains("; hit"), stored, "{path}: {r:?}");
    }
    // Stored GET answers are still invalidated by a POST that is not reusable.
    get(p.addr, "/items/4", &[]).await;
    assert!(get(p.addr, "/items/4", &[])
        .await
        .cache_status()
        .contains("; hit"));
    support::request(p.addr, "POST", "/items/4", &[("content-length", "0")]).await;
    assert!(get(p.addr, "/items/4", &[])
        .await
        .text()
        .starts_with("GET /items/4 #"));
}

/// An origin's `103 Early Hints` with a `Link` field.
const EARLY_HINTS: &str = "HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n";

/// An origin that answers every request with `interim` heads at once and
/// the final answer (with `cache_control`) only when released (one permit a
/// request); its call count.
async fn hinting_origin(
    interim: &'static str,
    cache_control: &'static str,
) -> (
    std::net::SocketAddr,
    Arc<tokio::sync::Semaphore>,
    Arc<std::sync::atomic::AtomicUsize>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (r, c) = (Arc::clone(&release), Arc::clone(&calls));
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (release, calls) = (Arc::clone(&r), Arc::clone(&c));
            tokio::spawn(async move {
                loop {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => buf.extend_from_slice(&chunk[..k]),
                        }
                    }
                    let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    if s.write_all(interim.as_bytes()).await.is_err() {
                        return;
                    }
                    let Ok(permit) = release.acquire().await else {
                        return;
                    };
                    permit.forget();
                    let body = format!("final {n}");
                    let text = format!(
                        "HTTP/1.1 200 OK\r\ncache-control: {cache_control}\r\netag: \"h\"\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if s.write_all(text.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, release, calls)
}

/// Reads one head (up to the blank line) off `s` within 5 s: `None` if none came.
async fn read_head(s: &mut tokio::net::TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    let read = async {
        while !head.ends_with(b"\r\n\r\n") {
            match s.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => return false,
            }
        }
        true
    };
    match tokio::time::timeout(Duration::from_secs(5), read).await {
        Ok(true) => Some(String::from_utf8_lossy(&head).into_owned()),
        _ => None,
    }
}

/// Reads `n` body bytes off `s`.
async fn read_body(s: &mut tokio::net::TcpStream, n: usize) -> String {
    let mut body = vec![0u8; n];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut body))
        .await
        .expect("body within 5 s")
        .unwrap();
    String::from_utf8(body).unwrap()
}

fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0)
}

/// RFC 9110 §15.2: the origin's `103 Early Hints` reaches the HTTP/1.1
/// client that caused the load as it arrives — before the origin has even
/// sent its final answer — and nobody else: not a waiter on the same load,
/// not a later hit, not an HTTP/1.0 client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_hints_reach_the_client_that_caused_the_load_as_they_arrive() {
    let (addr, release, calls) = hinting_origin(EARLY_HINTS, "max-age=60").await;
    let p = proxy(&format!("http://{addr}"), &[]).await;
    let request =
        |path: &str, version: &str| format!("GET {path} {version}\r\nhost: api.example\r\n\r\n");
    let mut leader = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    leader
        .write_all(request("/hinted", "HTTP/1.1").as_bytes())
        .await
        .unwrap();
    // The final answer is held at the origin until the hints were read here.
    let hints = read_head(&mut leader)
        .await
        .expect("the 103 before the final answer");
    assert!(
        hints.starts_with("HTTP/1.1 103 Early Hints\r\n"),
        "{hints:?}"
    );
    assert!(
        hints
            .to_ascii_lowercase()
            .contains("link: </style.css>; rel=preload"),
        "{hints:?}"
    );
    // A second client joins the load in flight: it waits, and gets no hints.
    let mut waiter = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    waiter
        .write_all(request("/hinted", "HTTP/1.1").as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    release.add_permits(1);
    for s in [&mut leader, &mut waiter] {
        let head = read_head(s).await.expect("the final answer");
        assert!(head.starts_with("HTTP/1.1 200"), "{head:?}");
        assert_eq!(read_body(s, content_length(&head)).await, "final 1");
    }
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    // The same keep-alive connection goes on cleanly: a hit, no hints.
    leader
        .write_all(request("/hinted", "HTTP/1.1").as_bytes())
        .await
        .unwrap();
    let head = read_head(&mut leader).await.unwrap();
    assert!(
        head.starts_with("HTTP/1.1 200") && head.contains("hit"),
        "{head:?}"
    );
    assert!(
        !head.contains("link"),
        "interim fields are not stored: {head:?}"
    );
    assert_eq!(
        read_body(&mut leader, content_length(&head)).await,
        "final 1"
    );
    // An HTTP/1.0 client's own load: the final answer only.
    let mut old = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    old.write_all(request("/old", "HTTP/1.0").as_bytes())
        .await
        .unwrap();
    release.add_permits(1);
    let head = read_head(&mut old).await.unwrap();
    assert!(
        head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
        "{head:?}"
    );
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// Interim answers pass through on every origin request a client causes
/// alone: a pass-through (`Authorization`), and a `POST`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_hints_reach_clients_of_passed_requests() {
    let (addr, release, _) = hinting_origin(EARLY_HINTS, "max-age=60").await;
    let p = proxy(&format!("http://{addr}"), &[]).await;
    for text in [
        "GET /own HTTP/1.1\r\nhost: api.example\r\nauthorization: Bearer a\r\n\r\n",
        "POST /form HTTP/1.1\r\nhost: api.example\r\ncontent-length: 2\r\n\r\nhi",
    ] {
        let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
        s.write_all(text.as_bytes()).await.unwrap();
        let hints = read_head(&mut s).await.expect("hints");
        assert!(hints.starts_with("HTTP/1.1 103"), "{text}: {hints:?}");
        release.add_permits(1);
        let head = read_head(&mut s).await.expect("final");
        assert!(head.starts_with("HTTP/1.1 200"), "{text}: {head:?}");
    }
}

/// The adversary: hints that arrive after their request was answered — a
/// background refresh's, started by a stale hit — are dropped, never written
/// in front of the next answer on that connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_hints_never_precede_another_answer() {
    let (addr, release, calls) =
        hinting_origin(EARLY_HINTS, "max-age=0, stale-while-revalidate=60").await;
    let p = proxy(&format!("http://{addr}"), &[]).await;
    let request = "GET /swr HTTP/1.1\r\nhost: api.example\r\n\r\n";
    let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    assert!(read_head(&mut s).await.unwrap().starts_with("HTTP/1.1 103"));
    release.add_permits(1);
    let head = read_head(&mut s).await.unwrap();
    read_body(&mut s, content_length(&head)).await;
    // Stale at once: served, and refreshed in the background; the refresh's
    // hints reach the proxy while this connection goes on.
    s.write_all(request.as_bytes()).await.unwrap();
    let head = read_head(&mut s).await.unwrap();
    assert!(
        head.starts_with("HTTP/1.1 200") && head.contains("stale-while-revalidate"),
        "{head:?}"
    );
    read_body(&mut s, content_length(&head)).await;
    for _ in 0..50 {
        if calls.load(std::sync::atomic::Ordering::SeqCst) == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.write_all(request.as_bytes()).await.unwrap();
    let head = read_head(&mut s).await.unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head:?}");
    release.add_permits(1);
}

/// Over TLS (ALPN http/1.1) the hints reach the client too, ahead of the
/// final answer (seen by hyper's client); an HTTP/2 client (h2c) that takes
/// no interim answers (hyper's, without a callback) gets its final answer intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_hints_over_tls_and_http2_answers_intact() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let (addr, release, _) = hinting_origin(EARLY_HINTS, "max-age=60").await;
    let tls_proxy = tls_proxy(&format!("http://{addr}"), "h1").await;
    let tls = tls_proxy.connect(b"http/1.1").await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut req = http::Request::get("/tls")
        .header("host", "api.example")
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    hyper::ext::on_informational(&mut req, move |r| {
        let _ = tx.send((r.status().as_u16(), r.headers().get("link").cloned()));
    });
    let answer = tokio::spawn(async move { sender.send_request(req).await });
    let (status, link) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("a 1xx within 5 s")
        .unwrap();
    assert_eq!(
        (status, link.as_ref().map(|l| l.to_str().unwrap())),
        (103, Some("</style.css>; rel=preload"))
    );
    release.add_permits(1);
    let resp = answer.await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        &resp.into_body().collect().await.unwrap().to_bytes()[..],
        b"final 1"
    );

    let plain = proxy(&format!("http://{addr}"), &[]).await;
    let tcp = tokio::net::TcpStream::connect(plain.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("http://api.example/h2")
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    release.add_permits(1);
    let resp = tokio::time::timeout(Duration::from_secs(5), sender.send_request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (resp.status().as_u16(), resp.version()),
        (200, http::Version::HTTP_2)
    );
    assert_eq!(
        &resp.into_body().collect().await.unwrap().to_bytes()[..],
        b"final 2"
    );
}

/// A TLS proxy listener (`tls_cert` / `tls_key`, a private CA's
/// certificate for `localhost`) in front of `origin`; `name` tells its files
/// from other tests'.
async fn tls_proxy(origin: &str, name: &str) -> TlsProxy {
    use rustls_pki_types::pem::PemObject;
    let pki = support::pki::pki();
    let dir = support::TempDir(
        std::env::temp_dir().join(format!("hg-rfc-tls-{name}-{}", std::process::id())),
    );
    std::fs::create_dir_all(&dir.0).unwrap();
    let (cert, key) = (dir.0.join("cert.pem"), dir.0.join("key.pem"));
    std::fs::write(&cert, &pki.leaf_pem).unwrap();
    std::fs::write(&key, &pki.leaf_key_pem).unwrap();
    let proxy = proxy(
        origin,
        &[
            &format!("tls_cert = {cert:?}"),
            &format!("tls_key = {key:?}"),
        ],
    )
    .await;
    let mut roots = rustls::RootCertStore::empty();
    for ca in rustls_pki_types::CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
        roots.add(ca.unwrap()).unwrap();
    }
    TlsProxy {
        proxy,
        roots: Arc::new(roots),
    }
}

struct TlsProxy {
    proxy: support::Proxy,
    roots: Arc<rustls::RootCertStore>,
}

impl TlsProxy {
    /// A TLS connection to the listener offering ALPN `alpn`.
    async fn connect(&self, alpn: &[u8]) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(Arc::clone(&self.roots))
        .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        let tcp = tokio::net::TcpStream::connect(self.proxy.addr)
            .await
            .unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn));
        tls
    }
}

/// An HTTP/2 client connection (the `h2` crate's: it hands over interim answers).
async fn h2_session<T>(io: T) -> h2::client::SendRequest<bytes::Bytes>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = h2::client::handshake(io).await.expect("HTTP/2 handshake");
    tokio::spawn(conn);
    sender
}

/// `GET path` on `sender`, sent now: its answer as it comes.
async fn h2_request(
    sender: &h2::client::SendRequest<bytes::Bytes>,
    path: &str,
) -> h2::client::ResponseFuture {
    let req = http::Request::get(format!("https://api.example{path}"))
        .body(())
        .unwrap();
    let mut sender = sender.clone().ready().await.unwrap();
    sender.send_request(req, true).unwrap().0
}

/// The interim answers of `answer` (status and `Link`) that came before its
/// final one, waiting at most 5 s for each; `until` of them, or all of them
/// and the final answer's status and body.
async fn h2_interim(
    answer: &mut h2::client::ResponseFuture,
    until: usize,
) -> (Vec<(u16, Option<String>)>, Option<(u16, String)>) {
    let mut interim = Vec::new();
    loop {
        let next = std::future::poll_fn(|cx| match answer.poll_informational(cx) {
            std::task::Poll::Ready(Some(r)) => std::task::Poll::Ready(Ok(r.unwrap())),
            // The final answer is next (or the stream ended).
            std::task::Poll::Ready(None) => {
                std::future::Future::poll(std::pin::Pin::new(&mut *answer), cx).map(Err)
            }
            std::task::Poll::Pending => std::task::Poll::Pending,
        });
        let next = tokio::time::timeout(Duration::from_secs(5), next)
            .await
            .expect("an answer within 5 s");
        match next {
            Ok(head) => {
                let link = head.headers().get("link");
                interim.push((
                    head.status().as_u16(),
                    link.map(|l| l.to_str().unwrap().to_string()),
                ));
                if interim.len() == until {
                    return (interim, None);
                }
            }
            Err(last) => {
                let last = last.unwrap();
                let status = last.status().as_u16();
                let mut body = last.into_body();
                let mut text = Vec::new();
                while let Some(chunk) = body.data().await {
                    let chunk = chunk.unwrap();
                    let _ = body.flow_control().release_capacity(chunk.len());
                    text.extend_from_slice(&chunk);
                }
                return (interim, Some((status, String::from_utf8(text).unwrap())));
            }
        }
    }
}

/// RFC 9110 §15.2 over HTTP/2, h2c and TLS (ALPN h2): the client whose
/// request caused the load gets the origin's `102 Processing` and
/// `103 Early Hints` (with its `Link`) on its stream as they arrive, before
/// the origin has even sent its final answer; a waiter on the same load —
/// another stream of the same connection, or another connection — gets the
/// final answer only, and nothing 1xx is stored (a later hit has none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interim_answers_reach_the_http2_client_that_caused_the_load() {
    use std::sync::atomic::Ordering::SeqCst;
    const PROCESSING_THEN_HINTS: &str = "HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n";
    let (addr, release, calls) = hinting_origin(PROCESSING_THEN_HINTS, "max-age=60").await;
    let origin = format!("http://{addr}");
    let plain = proxy(&origin, &[]).await;
    let tls = tls_proxy(&origin, "h2").await;
    let hints = vec![
        (102, None),
        (103, Some("</style.css>; rel=preload".to_string())),
    ];
    for (n, transport) in ["h2c", "tls"].into_iter().enumerate() {
        let session = || async {
            if transport == "h2c" {
                h2_session(tokio::net::TcpStream::connect(plain.addr).await.unwrap()).await
            } else {
                h2_session(tls.connect(b"h2").await).await
            }
        };
        let (leader_conn, other_conn) = (session().await, session().await);
        let path = format!("/hinted-{transport}");
        let mut leader = h2_request(&leader_conn, &path).await;
        // The final answer is held at the origin until the hints were seen here.
        assert_eq!(h2_interim(&mut leader, 2).await.0, hints, "{transport}");
        let mut waiters = [
            h2_request(&leader_conn, &path).await,
            h2_request(&other_conn, &path).await,
        ];
        tokio::time::sleep(Duration::from_millis(200)).await;
        release.add_permits(1);
        let last = Some((200, format!("final {}", n + 1)));
        assert_eq!(
            h2_interim(&mut leader, 0).await,
            (vec![], last.clone()),
            "{transport}"
        );
        for waiter in &mut waiters {
            assert_eq!(
                h2_interim(waiter, 0).await,
                (vec![], last.clone()),
                "{transport} waiter"
            );
        }
        assert_eq!(calls.load(SeqCst), n + 1, "{transport}: one origin call");
        // A hit on the leader's connection: no interim answer, no `Link`.
        let mut hit = h2_request(&leader_conn, &path).await;
        assert_eq!(
            h2_interim(&mut hit, 0).await,
            (vec![], last),
            "{transport} hit"
        );
    }
}

/// The adversary: an origin that sends interim heads without end (5000 of
/// ~140 bytes) before its answer. Over HTTP/2 they are not flow-controlled, so
/// a request's stream forwards a bounded amount (16 KiB of heads) and drops
/// the rest; the final answer comes through intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origins_endless_interim_answers_are_bounded_over_http2() {
    let flood: String = (0..5000)
        .map(|i| format!("HTTP/1.1 102 Processing\r\nx-pad: {i:0>100}\r\n\r\n"))
        .collect();
    let (addr, release, _) = hinting_origin(flood.leak(), "max-age=60").await;
    let p = proxy(&format!("http://{addr}"), &[]).await;
    let session = h2_session(tokio::net::TcpStream::connect(p.addr).await.unwrap()).await;
    let mut answer = h2_request(&session, "/flood").await;
    release.add_permits(1);
    let (interim, last) = h2_interim(&mut answer, usize::MAX).await;
    assert_eq!(last, Some((200, "final 1".to_string())));
    assert!(
        !interim.is_empty() && interim.len() < 200,
        "{} interim answers forwarded",
        interim.len()
    );
}

/// RFC 9111 §5.2.2.4: with `no-cache="field"` the response may be reused
/// without validation if the listed fields are left out — as
/// `private="field"` has a shared cache do. Unqualified `no-cache` still means
/// validate on every use.
#[tokio::test]
async fn qualified_no_cache_reuses_the_response_without_the_listed_fields() {
    let o = origin(|s, n| {
        let cc = if s.target == "/plain" {
            "max-age=60, no-cache"
        } else {
            "max-age=60, no-cache=\"x-user, x-session\""
        };
        Reply::ok(
            &[
                ("cache-control", cc),
                ("x-user", "alice"),
                ("x-session", "s1"),
                ("x-kept", "k"),
                ("etag", "\"q\""),
            ],
            format!("v{n}"),
        )
    })
    .await;
    let p = proxy(&format!("http://{}", o.addr), &[]).await;
    for _ in 0..3 {
        let r = get(p.addr, "/qualified", &[]).await;
        assert_eq!(r.text(), "v1", "{r:?}");
        assert_eq!(
            (r.header("x-user"), r.header("x-session")),
            (None, None),
            "{r:?}"
        );
        assert_eq!(r.header("x-kept"), Some("k"));
    }
    assert_eq!(o.calls(), 1);
    get(p.addr, "/plain", &[]).await;
    let r = get(p.addr, "/plain", &[]).await;
    assert!(!r.cache_status().contains("; hit"), "{r:?}");
    assert_eq!(o.calls(), 3);
}

/// RFC 9111 §3.3: an answer that ends before its framing says is not stored
/// (nor answered as if whole).
#[tokio::test]
async fn incomplete_answers_are_never_stored() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let text =
                "HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ncontent-length: 10\r\n\r\nhalf!";
            let _ = s.write_all(text.as_bytes()).await;
            // Closed with 5 of the 10 bytes sent.
        }
    });
    let p = proxy(&format!("http://{addr}"), &[]).await;
    for n in 1..=2 {
        let r = support::raw(
            p.addr,
            b"GET /cut HTTP/1.1\r\nhost: api.example\r\nconnection: close\r\n\r\n",
            Duration::from_secs(5),
        )
        .await;
        assert!(
            r.as_ref()
                .is_none_or(|r| r.status != 200 || r.body.len() < 10),
            "{r:?}"
        );
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), n);
    }
}

/// RFC 9111 §5.2.1.5: nothing of a `no-store` request is stored — not its
/// answer, though the origin says it may be; an answer another request stored
/// may still serve it.
#[tokio::test]
async fn a_no_store_request_stores_nothing() {
    let o = origin(|_, n| Reply::ok(&[("cache-control", "max-age=60")], format!("v{n}"))).await;
    let p = proxy(&format!("http://{}", o.addr), &[]).await;
    let no_store = [("cache-control", "no-store")];
    assert_eq!(get(p.addr, "/ns", &no_store).await.text(), "v1");
    let r = get(p.addr, "/ns", &[]).await;
    assert_eq!(r.text(), "v2", "{r:?}");
    assert_eq!(get(p.addr, "/ns", &no_store).await.text(), "v2");
    assert_eq!(get(p.addr, "/ns", &[]).await.text(), "v2");
    assert_eq!(o.calls(), 2);
}

const ALPHABET: &str = "abcdefghijklmnopqrstuvwxyz";

/// The representation `"v1"` of every path: the alphabet, with a strong tag.
fn v1(extra: &[(&str, &str)]) -> Reply {
    let mut headers = vec![("cache-control", "max-age=60"), ("etag", "\"v1\"")];
    headers.extend_from_slice(extra);
    Reply::ok(&headers, ALPHABET)
}

/// The `206` of bytes `first..` of the alphabet, tagged `etag`.
fn rest_of_v1(first: usize, etag: &str) -> Reply {
    let range = format!("bytes {first}-25/26");
    Reply::ok(
        &[
            ("cache-control", "max-age=60"),
            ("etag", etag),
            ("content-range", &range),
        ],
        &ALPHABET.as_bytes()[first..],
    )
    .status(206)
}

/// RFC 9111 §3.3: the prefix of a `200` (strong `ETag`, `Content-Length`)
/// that broke off is kept marked incomplete: a range wholly within it is
/// answered `206` from it; anything else goes to the origin (a whole request,
/// a range past it, several ranges, an `If-Range` that does not hold, a
/// conditional); an unsafe method drops it; with a weak tag none is kept.
#[tokio::test]
async fn an_incomplete_answer_serves_the_ranges_within_it() {
    let o = origin(|s, _| {
        match (s.method.as_str(), s.target.as_str(), s.header("range")) {
            ("POST", ..) => Reply::ok(&[], "posted"),
            (_, "/weak", _) => Reply::ok(
                &[("cache-control", "max-age=60"), ("etag", "W/\"v1\"")],
                ALPHABET,
            )
            .cut_after(10),
            (_, "/not-found", _) => v1(&[]).status(404).cut_after(10),
            // Asked for whole: broken off after ten bytes.
            (_, _, None) => v1(&[]).cut_after(10),
            (_, _, Some(_)) => rest_of_v1(10, "\"v1\""),
        }
    })
    .await;
    let p = proxy(&format!("http://{}", o.addr), &[]).await;
    let first = get(p.addr, "/p", &[]).await;
    assert_ne!((first.status, first.text().len()), (200, 26), "{first:?}");
    assert_eq!(o.calls(), 1);
    for (headers, part, content_range) in [
        (vec![("range", "bytes=2-5")], "cdef", "bytes 2-5/26"),
        (vec![("range", "bytes=0-9")], "abcdefghij", "bytes 0-9/26"),
        (vec![("range", "bytes=9-9")], "j", "bytes 9-9/26"),
        (
            vec![("range", "bytes=2-5"), ("if-range", "\"v1\"")],
            "cdef",
            "bytes 2-5/26",
        ),
    ] {
        let r = get(p.addr, "/p", &headers).await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (206, part),
            "{headers:?}: {r:?}"
        );
        assert_eq!(r.header("content-range"), Some(content_range));
        assert_eq!(
            r.header("content-length"),
            Some(part.len().to_string().as_str())
        );
        assert!(r.cache_status().contains("hit; detail=incomplete"), "{r:?}");
    }
    assert_eq!(o.calls(), 1, "{:?}", o.seen());
    // Anything else: the origin (each on a path of its own, broken off first).
    let whole = (200, ALPHABET.to_string());
    for (n, (headers, answer)) in [
        (vec![], whole.clone()),
        (vec![("range", "bytes=5-10")], (206, "fghijk".to_string())),
        (vec![("range", "bytes=0-")], (206, ALPHABET.to_string())),
        (vec![("range", "bytes=-3")], (206, "xyz".to_string())),
        (vec![("range", "bytes=0-1,3-4")], whole.clone()),
        (vec![("range", "bytes=2-5"), ("if-range", "\"v0\"")], whole),
        (
            vec![("range", "bytes=2-5"), ("if-none-match", "\"v1\"")],
            (304, String::new()),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let path = format!("/q{n}");
        get(p.addr, &path, &[]).await;
        let r = get(p.addr, &path, &headers).await;
        assert_eq!((r.status, r.text()), answer, "{headers:?}: {r:?}");
        assert!(!r.cache_status().contains("incomplete"), "{r:?}");
        assert_eq!(o.calls(), 1 + 2 * (n + 1), "{headers:?}");
    }
    let calls = o.calls();
    // An unsafe method invalidates the prefix with the rest.
    support::request(p.addr, "POST", "/p", &[("content-length", "0")]).await;
    let r = get(p.addr, "/p", &[("range", "bytes=2-5")]).await;
    assert!(!r.cache_status().contains("incomplete"), "{r:?}");
    assert_eq!(o.calls(), calls + 2);
    // A weak tag, or another status than 200: nothing kept.
    for (n, path) in ["/weak", "/not-found"].into_iter().enumerate() {
        get(p.addr, path, &[]).await;
        let r = get(p.addr, path, &[("range", "bytes=2-5")]).await;
        assert!(!r.cache_status().contains("incomplete"), "{path}: {r:?}");
        assert_eq!(o.calls(), calls + 2 + 2 * (n + 1), "{path}");
    }
}

/// RFC 9111 §3.4: a load of a key whose prefix is kept asks for the rest
/// (`Range: bytes=10-` with `If-Range` of its strong tag), and a `206` that
/// continues it makes the whole answer, stored and served — one origin call
/// for every request that waited on it, whole or ranged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_prefix_is_completed_by_the_206_that_continues_it() {
    let o = origin(|s, _| match s.header("range") {
        None => v1(&[("x-from", "200")]).cut_after(10),
        Some(_) => rest_of_v1(10, "\"v1\"").delay(300),
    })
    .await;
    let p = proxy(&format!("http://{}", o.addr), &[]).await;
    get(p.addr, "/c", &[]).await;
    assert_eq!(o.calls(), 1);
    let addr = p.addr;
    let waiters: Vec<_> = (0..8)
        .map(|i| {
            tokio::spawn(async move {
                let range = format!("bytes={}-{}", i, 15 + i);
                let headers: Vec<(&str, &str)> = match i % 2 {
                    0 => vec![],
                    _ => vec![("range", range.as_str())],
                };
                (i, get(addr, "/c", &headers).await)
            })
        })
        .collect();
    for w in waiters {
        let (i, r) = w.await.unwrap();
        if i % 2 == 0 {
            assert_eq!((r.status, r.text().as_str()), (200, ALPHABET), "{r:?}");
            assert_eq!(r.header("content-length"), Some("26"));
            assert_eq!(r.header("content-range"), None);
            // The stored fields are the 200's, updated by the 206's.
            assert_eq!(r.header("x-from"), Some("200"));
        } else {
            let want = &ALPHABET[i..=15 + i];
            assert_eq!((r.status, r.text().as_str()), (206, want), "{r:?}");
        }
    }
    assert_eq!(o.calls(), 2, "{:?}", o.seen());
    let rest = &o.seen()[1];
    assert_eq!(rest.header("range"), Some("bytes=10-"));
    assert_eq!(rest.header("if-range"), Some("\"v1\""));
    let r = get(p.addr, "/c", &[]).await;
    assert_eq!(r.text(), ALPHABET);
    assert!(r.cache_status().contains("hit"), "{r:?}");
    assert_eq!(o.calls(), 2);
}

/// RFC 9111 §3.4 against a hostile origin: a `206` is joined to the kept
/// prefix only with the same strong tag, the same complete length, and a
/// `Content-Range` that continues it to the end with the same bytes. Anything
/// else drops the prefix and the answer is fetched whole (one more request,
/// never a loop). No client ever gets bytes of two representations.
#[tokio::test]
async fn a_206_that_does_not_continue_the_prefix_is_never_joined() {
    const WHOLE: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let with = |etag: &str, range: &str, body: &[u8]| {
        let mut headers = vec![("cache-control", "max-age=60"), ("content-range", range)];
        if !etag.is_empty() {
            headers.push(("etag", etag));
        }
        Reply::ok(&headers, body).status(206)
    };
    let tail = &ALPHABET.as_bytes()[10..];
    let cases: Vec<(&str, Reply)> = vec![
        ("/other-tag", rest_of_v1(10, "\"v2\"")),
        ("/weak-tag", rest_of_v1(10, "W/\"v1\"")),
        ("/no-tag", with("", "bytes 10-25/26", tail)),
        (
            "/longer",
            with("\"v1\"", "bytes 10-29/30", b"klmnopqrstuvwxyz1234"),
        ),
        ("/total-changed", with("\"v1\"", "bytes 10-25/30", tail)),
        ("/gap", rest_of_v1(12, "\"v1\"")),
        ("/short", with("\"v1\"", "bytes 10-24/26", &tail[..15])),
        ("/unknown-length", with("\"v1\"", "bytes 10-25/*", tail)),
        (
            "/overlap-differs",
            with("\"v1\"", "bytes 5-25/26", b"FGHIJklmnopqrstuvwxyz"),
        ),
        (
            "/body-longer",
            with("\"v1\"", "bytes 10-25/26", b"klmnopqrstuvwxyzEXTRA"),
        ),
        (
            "/unsatisfiable",
            Reply::ok(&[("content-range", "bytes */26")], "").status(416),
        ),
    ];
    let paths: Vec<&'static str> = cases.iter().map(|(p, _)| *p).collect();
    let rests: std::collections::HashMap<&str, Reply> = cases.into_iter().collect();
    let rests = std::sync::Mutex::new(rests);
    let broken = std::sync::Mutex::new(std::collections::HashSet::new());
    let o = origin(move |s, _| {
        let path = s.target.clone();
        if s.header("range").is_some() {
            let mut rests = rests.lock().unwrap();
            return rests.remove(path.as_str()).unwrap_or_else(|| {
                Reply::ok(&[], format!("asked for a range of {path} twice")).status(500)
            });
        }
        // The first whole request of a path breaks off; the next is whole,
        // another representation.
        if broken.lock().unwrap().insert(path) {
            return v1(&[]).cut_after(10);
        }
        Reply::ok(
            &[("cache-control", "max-age=60"), ("etag", "\"v2\"")],
            WHOLE,
        )
    })
    .await;
    let p = proxy(&format!("http://{}", o.addr), &[]).await;
    for (n, path) in paths.iter().enumerate() {
        get(p.addr, path, &[]).await;
        let r = get(p.addr, path, &[]).await;
        assert_eq!((r.status, r.text().as_str()), (200, WHOLE), "{path}: {r:?}");
        assert_eq!(o.calls(), 3 * (n + 1), "{path}");
        let seen = o.seen();
        let [.., asked_rest, whole] = &seen[..] else {
            unreachable!()
        };
        assert_eq!(asked_rest.header("range"), Some("bytes=10-"), "{path}");
        assert_eq!(whole.header("range"), None, "{path}");
        assert_eq!(whole.header("if-range"), None, "{path}");
        // What was fetched whole is stored.
        let r = get(p.addr, path, &[("range", "bytes=8-11")]).await;
        assert_eq!((r.status, r.text().as_str()), (206, "IJKL"), "{path}");
        assert_eq!(o.calls(), 3 * (n + 1), "{path}");
    }
}

/// RFC 9111 §3.4: a `200` to the request for the rest is a whole answer: it
/// replaces the prefix. An origin that answers every request with a `206`
/// (also the one for the whole) gets two requests a load and nothing stored.
#[tokio::test]
async fn a_200_replaces_the_prefix_and_endless_206s_store_nothing() {
    let o = origin(|s, n| match (s.target.as_str(), s.header("range"), n) {
        ("/new", None, _) => v1(&[]).cut_after(10),
        ("/new", Some(_), _) => Reply::ok(
            &[("cache-control", "max-age=60"), ("etag", "\"v2\"")],
            "a new representation",
        ),
        (_, None, 3) => v1(&[]).cut_after(10),
        // A gap: never joined.
        _ => rest_of_v1(12, "\"v1\""),
    })
    .await;
    let p = proxy(&format!("http://{}", o.addr), &[]).await;
    get(p.addr, "/new", &[]).await;
    let r = get(p.addr, "/new", &[]).await;
    assert_eq!((r.status, r.text().as_str()), (200, "a new representation"));
    let r = get(p.addr, "/new", &[("range", "bytes=2-4")]).await;
    assert_eq!((r.status, r.text().as_str()), (206, "new"));
    assert_eq!(o.calls(), 2);
    // The third call breaks off; every later one is a 206, asked for or not.
    get(p.addr, "/endless", &[]).await;
    assert_eq!(o.calls(), 3);
    for round in 1..=3 {
        let r = get(p.addr, "/endless", &[]).await;
        assert_ne!((r.status, r.text().len()), (200, 26), "{r:?}");
        assert!(!r.cache_status().contains("; hit"), "{r:?}");
        // The first round asks for the rest, then whole; later rounds, whole.
        assert_eq!(o.calls(), 3 + 1 + round, "{round}");
    }
}

/// Prefixes are bounded: one of an answer announced past the object limit is
/// never kept, and together they hold at most 1/16 of `max_memory` (here
/// 64 KiB of 1 MiB), the oldest dropped first.
#[tokio::test]
async fn incomplete_prefixes_stay_within_the_object_limit_and_their_share() {
    let o = origin(|s, _| {
        let length = match s.target.as_str() {
            "/big" => 200_000,
            _ => 50_000,
        };
        let body: Vec<u8> = (0..length).map(|i| b'a' + (i % 26) as u8).collect();
        Reply::ok(&[("cache-control", "max-age=60"), ("etag", "\"v1\"")], body).cut_after(40_000)
    })
    .await;
    let p = proxy(&format!("http://{}", o.addr), &["max_memory = \"1MiB\""]).await;
    let from_prefix = |path: &'static str| {
        let addr = p.addr;
        async move {
            let r = get(addr, path, &[("range", "bytes=0-3")]).await;
            r.cache_status().contains("incomplete")
        }
    };
    get(p.addr, "/big", &[]).await;
    assert!(!from_prefix("/big").await, "past the object limit");
    get(p.addr, "/a", &[]).await;
    assert!(from_prefix("/a").await);
    get(p.addr, "/b", &[]).await;
    assert!(from_prefix("/b").await);
    assert!(!from_prefix("/a").await, "two of 40 KB within 64 KiB");
}

/// With a shared store no prefix is kept: the fleet's invalidations reach the
/// core's copies in every instance, not this process's prefixes (and Redis
/// never holds one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_shared_store_no_prefix_is_kept() {
    let redis = herdguard_testkit::RedisServer::start().unwrap();
    let o = origin(|s, _| match s.header("range") {
        None => v1(&[]).cut_after(10),
        Some(_) => rest_of_v1(10, "\"v1\""),
    })
    .await;
    let redis_url = format!("redis = \"{}\"", redis.url());
    let p = proxy(&format!("http://{}", o.addr), &[&redis_url]).await;
    get(p.addr, "/f", &[]).await;
    let r = get(p.addr, "/f", &[("range", "bytes=2-5")]).await;
    assert!(!r.cache_status().contains("incomplete"), "{r:?}");
    assert_eq!(o.calls(), 2);
    // Nothing was asked for but the whole answer.
    assert!(o.seen().iter().all(|s| s.header("range").is_none()));
}

/// RFC 9111 §4.3.5: a `HEAD` the cache forwards as `HEAD` (here: a request that
/// says `no-store`) and whose answer carries other validators removes the
/// stored `GET` answer, which would otherwise still be served stale.
#[tokio::test]
async fn a_head_answer_that_contradicts_the_stored_get_answer_removes_it() {
    let o = origin(|s, _| {
        let current = if s.target.starts_with("/changed") {
            "v2"
        } else {
            "v1"
        };
        let etag = format!("\"{current}\"");
        match (s.method.as_str(), s.target.as_str()) {
            // Stale on arrival, usable stale for ten minutes.
            ("GET", _) if s.header("x-first").is_some() => Reply::ok(
                &[
                    ("cache-control", "max-age=5, stale-while-revalidate=600"),
                    ("age", "10"),
                    ("etag", "\"v1\""),
                    ("x-rev", "1"),
                ],
                "v1",
            ),
            ("HEAD", "/same-silent") => Reply::ok(&[("x-rev", "3")], "v1"),
            ("HEAD", _) => Reply::ok(&[("etag", etag.as_str()), ("x-rev", "2")], current),
            _ => Reply::ok(
                &[("cache-control", "max-age=60"), ("etag", etag.as_str())],
                current,
            ),
        }
    })
    .await;
    let p = proxy(&format!("http://{}", o.addr), &[]).await;
    let no_store = [("cache-control", "no-store")];
    let first = [("x-first", "1")];

    // Another ETag (and Content-Length): the stored answer is gone, here and fleet-wide.
    assert_eq!(get(p.addr, "/changed", &first).await.text(), "v1");
    let r = support::request(p.addr, "HEAD", "/changed", &no_store).await;
    assert_eq!((r.status, r.header("etag")), (200, Some("\"v2\"")));
    let r = get(p.addr, "/changed", &[]).await;
    assert_eq!(r.text(), "v2", "the stale v1 was still served: {r:?}");
    assert_eq!(o.calls(), 3);

    // The same ETag: the stored answer stands, and nothing of a no-store
    // request's answer is stored (its x-rev never reaches the stored answer).
    assert_eq!(get(p.addr, "/same", &first).await.text(), "v1");
    let r = support::request(p.addr, "HEAD", "/same", &no_store).await;
    assert_eq!(r.header("x-rev"), Some("2"));
    let r = get(p.addr, "/same", &[]).await;
    assert_eq!(
        (r.text().as_str(), r.header("x-rev")),
        ("v1", Some("1")),
        "{r:?}"
    );

    // A HEAD answer with nothing to compare (no validator) evicts nothing.
    assert_eq!(get(p.addr, "/same-silent", &first).await.text(), "v1");
    let r = support::request(p.addr, "HEAD", "/same-silent", &no_store).await;
    assert_eq!(r.header("x-rev"), Some("3"));
    let r = get(p.addr, "/same-silent", &[]).await;
    assert_eq!(
        (r.text().as_str(), r.header("x-rev")),
        ("v1", Some("1")),
        "{r:?}"
    );
}

/// The adversary of §4.3.5: a logged-in client's `HEAD` (`no-store`, so it
/// passes as `HEAD`) gets the origin's logged-in answer — other tag, other
/// length, no `Vary: Authorization` (§3.5 lets origins rely on credentials
/// never sharing). It says nothing of the anonymous answer everyone is served,
/// which stays stored however often it is sent.
#[tokio::test]
async fn a_head_with_credentials_never_evicts_the_shared_answer() {
    let o = origin(|s, _| {
        if s.header("authorization").is_some() {
            return Reply::ok(&[("etag", "\"user\"")], "logged-in page");
        }
        Reply::ok(
            &[("cache-control", "max-age=60"), ("etag", "\"anon\"")],
            "anon",
        )
    })
    .await;
    let p = proxy(&format!("http://{}", o.addr), &[]).await;
    assert_eq!(get(p.addr, "/page", &[]).await.text(), "anon");
    let logged_in = [("cache-control", "no-store"), ("authorization", "Bearer u")];
    for _ in 0..3 {
        let r = support::request(p.addr, "HEAD", "/page", &logged_in).await;
        assert_eq!((r.status, r.header("etag")), (200, Some("\"user\"")));
    }
    let r = get(p.addr, "/page", &[]).await;
    assert_eq!(r.text(), "anon");
    assert!(r.cache_status().contains("hit"), "evicted: {r:?}");
    assert_eq!(o.calls(), 4, "{:?}", o.seen());
}

/// RFC 9111 §4.1: with `Vary: Accept-Encoding`, a request whose own variant is
/// not stored is answered from a stored one whose coding it accepts (q > 0),
/// the most wanted first; a coding it refuses (`q=0`, `*;q=0`, not named) is
/// never served to it.
#[tokio::test]
async fn variants_are_chosen_by_q_value_and_a_refused_coding_is_never_served() {
    // Boxed: the answers' read buffers would not all fit the test thread's stack.
    Box::pin(async {
        let o = origin(|s, _| {
            // The origin's own choice: the first coding named, if it has it.
            let ae = s.header("accept-encoding").unwrap_or("");
            let (coding, body) = if ae == "gzip" {
                (Some("gzip"), "GZ")
            } else if ae == "br" {
                (Some("br"), "BR")
            } else {
                (None, "ID")
            };
            let mut fields = vec![("cache-control", "max-age=60"), ("vary", "Accept-Encoding")];
            fields.extend(coding.map(|c| ("content-encoding", c)));
            if coding == Some("gzip") {
                fields.push(("age", "30"));
            }
            Reply::ok(&fields, body)
        })
        .await;
        let p = proxy(&format!("http://{}", o.addr), &[]).await;
        let ask = |ae: &'static str| {
            let addr = p.addr;
            async move {
                let r = get(addr, "/v", &[("accept-encoding", ae)]).await;
                (r.text(), r.header("content-encoding").map(str::to_string))
            }
        };
        let gz = ("GZ".to_string(), Some("gzip".to_string()));
        let br = ("BR".to_string(), Some("br".to_string()));
        let id = ("ID".to_string(), None);
        assert_eq!(ask("gzip").await, gz);
        assert_eq!(ask("br").await, br);
        assert_eq!(o.calls(), 2);
        // Chosen from what is stored, by q-value: no origin call.
        assert_eq!(ask("br;q=0.5, gzip").await, gz);
        assert_eq!(ask("gzip;q=0.2, br;q=0.9, deflate").await, br);
        assert_eq!(ask("*;q=0.1, gzip;q=0.05").await, br);
        assert_eq!(o.calls(), 2);
        // A stored variant older than the request's max-age is not chosen.
        let r = get(
            p.addr,
            "/v",
            &[
                ("accept-encoding", "gzip, br;q=0.1"),
                ("cache-control", "max-age=5"),
            ],
        )
        .await;
        assert_eq!(r.text(), "BR", "{r:?}");
        assert_eq!(o.calls(), 2);
        // The adversary: whoever refuses a coding never gets it from the cache.
        for refusing in [
            "gzip;q=0, br;q=0, identity",
            "*;q=0",
            "gzip;q=0, br;q=0, *",
            "deflate",
            "identity",
        ] {
            let (body, coding) = ask(refusing).await;
            assert!(
                coding.is_none() && body == "ID",
                "{refusing} got {body} {coding:?}"
            );
        }
        // No Accept-Encoding: never a compressed variant by negotiation.
        let r = get(p.addr, "/v", &[]).await;
        assert_eq!(
            (r.text().as_str(), r.header("content-encoding")),
            ("ID", None)
        );
        let calls = o.calls();
        // Identity is stored now, and chosen when it is the most wanted.
        assert_eq!(ask("identity, gzip;q=0.5").await, id);
        assert_eq!(ask("x-gzip;q=0.9, identity;q=0.1").await, gz);
        assert_eq!(o.calls(), calls);
    })
    .await;
}

/// RFC 9111 §4.3.2: a load its caller alone consumes (a request with
/// `Authorization`) carries the caller's entity tags, merged with the stored
/// response's when it may have that one; a 304 naming only the caller's goes
/// to it alone and is never stored, one naming the stored tag refreshes the
/// stored response for everyone.
#[tokio::test]
async fn a_lone_load_merges_the_clients_tags_and_their_304_stays_with_that_client() {
    let o = origin(|s, _| {
        let inm = s.header("if-none-match").unwrap_or("");
        let fields = [("cache-control", "public, max-age=0"), ("etag", "\"s\"")];
        if s.header("x-only-client").is_some() && inm.contains("\"c\"") {
            Reply::ok(&[("etag", "\"c\"")], "").status(304)
        } else if inm.contains("\"s\"") {
            Reply::ok(&fields, "").status(304)
        } else {
            Reply::ok(&fields, "stored body")
        }
    })
    .await;
    let p = proxy(&format!("http://{}", o.addr), &[]).await;
    // Stored (public), stale at once.
    assert_eq!(get(p.addr, "/t", &[]).await.text(), "stored body");
    let lone = [
        ("authorization", "Bearer a"),
        ("cache-control", "no-cache"),
        ("if-none-match", "\"c\""),
        ("x-only-client", "1"),
    ];
    let r = get(p.addr, "/t", &lone).await;
    assert_eq!((r.status, r.header("etag")), (304, Some("\"c\"")), "{r:?}");
    let seen = o.seen();
    assert_eq!(seen[1].header("if-none-match"), Some("\"s\", \"c\""));
    // Nothing stored changed: the next load revalidates the stored tag alone.
    let r = get(p.addr, "/t", &[]).await;
    assert_eq!((r.status, r.text().as_str()), (200, "stored body"), "{r:?}");
    assert_eq!(o.seen()[2].header("if-none-match"), Some("\"s\""));
    // A 304 naming the stored tag refreshes it; the client's own tag does not
    // match it, so the client gets the whole answer.
    let r = get(p.addr, "/t", &lone[..3]).await;
    assert_eq!((r.status, r.text().as_str()), (200, "stored body"), "{r:?}");
    assert_eq!(o.seen()[3].header("if-none-match"), Some("\"s\", \"c\""));
    // Without a stored response it may have, only its own tags go.
    let r = get(p.addr, "/other", &lone).await;
    assert_eq!(r.status, 304, "{r:?}");
    assert_eq!(o.seen()[4].header("if-none-match"), Some("\"c\""));
    assert_eq!(o.calls(), 5);
}

/// The adversary of merging: conditional and unconditional clients of one
/// stale key at once, the origin answering 304 to any request naming the
/// conditional client's tag. A shared load never carries a client's tag, no
/// unconditional client ever gets a 304, and the store never holds one.
#[tokio::test]
async fn no_waiter_ever_gets_a_304_it_did_not_ask_for() {
    let o = origin(|s, n| {
        let inm = s.header("if-none-match").unwrap_or("");
        if inm.contains("\"c\"") {
            return Reply::ok(&[("etag", "\"c\"")], "").status(304).delay(200);
        }
        let max_age = if n == 1 { "max-age=0" } else { "max-age=60" };
        Reply::ok(
            &[("cache-control", max_age), ("etag", "\"n\"")],
            format!("body {n}"),
        )
        .delay(200)
    })
    .await;
    let p = proxy(&format!("http://{}", o.addr), &[]).await;
    assert_eq!(get(p.addr, "/w", &[]).await.text(), "body 1");
    let mut tasks = Vec::new();
    for i in 0..12 {
        let addr = p.addr;
        tasks.push(tokio::spawn(async move {
            let headers: &[(&str, &str)] = match i % 4 {
                // Shared loads: the proxy answers its conditional itself.
                0 => &[("if-none-match", "\"c\"")],
                // A load of its own, which carries its tag.
                1 => &[("authorization", "Bearer y"), ("if-none-match", "\"c\"")],
                2 => &[("authorization", "Bearer x")],
                _ => &[],
            };
            (i % 4, get(addr, "/w", headers).await)
        }));
    }
    for t in tasks {
        let (kind, r) = t.await.unwrap();
        match kind {
            1 => assert_eq!(r.status, 304, "{r:?}"),
            // Answered by the proxy from the whole answer the shared load stored.
            0 => assert_eq!(r.status, 200, "a shared load's 304: {r:?}"),
            _ => {
                assert_eq!(r.status, 200, "an unasked-for 304: {r:?}");
                assert!(r.text().starts_with("body "), "{r:?}");
            }
        }
    }
    for s in o.seen() {
        let shared = s.header("authorization").is_none();
        assert!(
            !(shared && s.header("if-none-match").unwrap_or("").contains("\"c\"")),
            "a client's tag on a load others share: {:?}",
            s.headers
        );
    }
    let r = get(p.addr, "/w", &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.text().starts_with("body "));
}

/// A request's own variant, stored but stale (on arrival: `Age` past `max-age`), is
/// revalidated (here: served stale while it is) rather than passed over for another variant by q-value.
#[tokio::test]
async fn a_stale_own_variant_is_not_passed_over_for_another() {
    let o = origin(|s, n| {
        let vary = ("vary", "Accept-Encoding");
        if s.header("accept-encoding") == Some("gzip") {
            Reply::ok(
                &[
                    ("cache-control", "max-age=60"),
                    vary,
                    ("content-encoding", "gzip"),
                ],
                "GZ",
            )
        } else {
            let swr = ("cache-control", "max-age=5, stale-while-revalidate=600");
            Reply::ok(
                &[swr, ("age", "10"), vary, ("content-encoding", "br")],
                format!("BR-{n}"),
            )
        }
    })
    .await;
    let p = proxy(&format!("http://{}", o.addr), &[]).await;
    let own = [("accept-encoding", "br, gzip;q=0.9")];
    assert_eq!(get(p.addr, "/s", &own).await.text(), "BR-1");
    let gzip = get(p.addr, "/s", &[("accept-encoding", "gzip")]).await;
    assert_eq!(gzip.text(), "GZ");
    let r = get(p.addr, "/s", &own).await;
    assert_eq!(r.text(), "BR-1", "{r:?}");
    assert!(r.cache_status().contains("stale-while-revalidate"), "{r:?}");
}

/// §4.3.5 across a fleet: the stored answer a contradicting `HEAD` removes on one
/// sidecar is gone from the shared store too, so another sidecar that never held
/// it locally loads the current one instead of serving the old one from Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contradicting_head_on_one_sidecar_removes_the_answer_from_the_fleet() {
    let redis = herdguard_testkit::RedisServer::start().unwrap();
    let o = origin(|s, _| {
        if s.method == "HEAD" {
            return Reply::ok(&[("etag", "\"v2\"")], "v2");
        }
        if s.header("x-first").is_some() {
            let stale = ("cache-control", "max-age=5, stale-while-revalidate=600");
            return Reply::ok(&[stale, ("age", "10"), ("etag", "\"v1\"")], "v1");
        }
        Reply::ok(&[("cache-control", "max-age=60"), ("etag", "\"v2\"")], "v2")
    })
    .await;
    let redis_line = format!("redis = {:?}", redis.url());
    let settings = [redis_line.as_str(), "redis_op_timeout_ms = 2000"];
    let p0 = proxy(&format!("http://{}", o.addr), &settings).await;
    let p1 = proxy(&format!("http://{}", o.addr), &settings).await;
    assert_eq!(
        get(p0.addr, "/fleet", &[("x-first", "1")]).await.text(),
        "v1"
    );
    let r = support::request(p0.addr, "HEAD", "/fleet", &[("cache-control", "no-store")]).await;
    assert_eq!(r.header("etag"), Some("\"v2\""));
    let r = get(p1.addr, "/fleet", &[]).await;
    assert_eq!(
        r.text(),
        "v2",
        "the old answer came from the shared store: {r:?}"
    );
}

/// `redis-cli` against the test's server.
fn redis_cli(redis: &herdguard_testkit::RedisServer, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port().to_string()])
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The ids of the server's pub/sub connections (the sidecars' change feeds).
fn feed_connections(redis: &herdguard_testkit::RedisServer) -> Vec<String> {
    let list = redis_cli(redis, &["CLIENT", "LIST", "TYPE", "pubsub"]);
    let mut ids: Vec<String> = list
        .lines()
        .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
        .map(str::to_string)
        .collect();
    ids.sort();
    ids
}

/// §4.1 across a fleet: a variant chosen by q-value is held to the same trust
/// as a hit. The adversary's order: a sidecar holds two variants; they are
/// purged from the shared store while its change feed hears nothing (here:
/// removed without a notice, then the feed cut); a client of a third variant
/// must not be given the purged ones unchecked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_variant_that_may_have_missed_a_purge_is_not_chosen_by_q_value() {
    let redis = herdguard_testkit::RedisServer::start().unwrap();
    let o = origin(|s, n| {
        let ae = s.header("accept-encoding").unwrap_or("");
        let coding = if ae.starts_with("gzip") { "gzip" } else { "br" };
        Reply::ok(
            &[
                ("cache-control", "max-age=60"),
                ("vary", "Accept-Encoding"),
                ("content-encoding", coding),
            ],
            format!("{coding}-{n}"),
        )
    })
    .await;
    let redis_line = format!("redis = {:?}", redis.url());
    let settings = [redis_line.as_str(), "redis_op_timeout_ms = 2000"];
    let p = proxy(&format!("http://{}", o.addr), &settings).await;
    assert_eq!(
        get(p.addr, "/n", &[("accept-encoding", "gzip")])
            .await
            .text(),
        "gzip-1"
    );
    assert_eq!(
        get(p.addr, "/n", &[("accept-encoding", "br")]).await.text(),
        "br-2"
    );
    let before = feed_connections(&redis);
    assert_eq!(before.len(), 1, "one change feed");
    redis_cli(&redis, &["FLUSHALL"]);
    redis_cli(&redis, &["CLIENT", "KILL", "TYPE", "pubsub"]);
    // Bounded: the feed is back on a new connection (a new epoch) within 5 s.
    for _ in 0..500 {
        let now = feed_connections(&redis);
        if !now.is_empty() && now != before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_ne!(feed_connections(&redis), before, "the feed never came back");
    let r = get(p.addr, "/n", &[("accept-encoding", "gzip, br;q=0.5")]).await;
    assert_eq!(
        r.text(),
        "gzip-3",
        "a purged variant served unchecked: {r:?}"
    );
    assert_eq!(o.calls(), 3);
}

/// `Vary` changed by the origin, seen in the second round: sidecar 1 learns
/// from the shared store that `/lang` varies on `Accept-Encoding`, and under
/// the variant key it then looks up finds what sidecar 0 stored after the
/// origin began to vary on `Accept-Language` too — French. A German client
/// must not be given it: the request passes through to the origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vary_that_changes_between_rounds_passes_the_request_through() {
    let redis = herdguard_testkit::RedisServer::start().unwrap();
    let o = origin(|s, _| {
        let ae = s.header("accept-encoding").unwrap_or("").to_string();
        match s.header("accept-language") {
            None => Reply::ok(
                &[("cache-control", "max-age=60"), ("vary", "Accept-Encoding")],
                format!("{ae}-any"),
            ),
            Some(lang) => Reply::ok(
                &[
                    ("cache-control", "max-age=60"),
                    ("vary", "Accept-Encoding, Accept-Language"),
                    ("content-language", lang),
                ],
                format!("{ae}-{lang}"),
            ),
        }
    })
    .await;
    let redis_line = format!("redis = {:?}", redis.url());
    let settings = [redis_line.as_str(), "redis_op_timeout_ms = 2000"];
    let p0 = proxy(&format!("http://{}", o.addr), &settings).await;
    let p1 = proxy(&format!("http://{}", o.addr), &settings).await;
    let gzip = [("accept-encoding", "gzip")];
    assert_eq!(get(p0.addr, "/lang", &gzip).await.text(), "gzip-any");
    let br_fr = [("accept-encoding", "br"), ("accept-language", "fr")];
    assert_eq!(get(p0.addr, "/lang", &br_fr).await.text(), "br-fr");
    let br_de = [("accept-encoding", "br"), ("accept-language", "de")];
    let r = get(p1.addr, "/lang", &br_de).await;
    assert_eq!(r.text(), "br-de", "another language's answer: {r:?}");
    assert_eq!(r.header("content-language"), Some("de"));
}

/// RFC 9111 §3.3 against a newer representation: a `GET` whose body breaks
/// off after a `POST` stored its own answer (RFC 9110 §9.3.3) keeps a prefix
/// of the older one. Once the `POST`'s answer is stale, a range must come from
/// it (revalidated or served stale), never from the older prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_older_than_the_stored_answer_never_answers_a_range() {
    let o = origin(|s, _| match s.method.as_str() {
        "POST" => Reply::ok(
            &[
                ("cache-control", "max-age=5, stale-while-revalidate=600"),
                ("age", "10"),
                ("etag", "\"v2\""),
                ("content-location", "/np"),
            ],
            "ZYXWVUTSRQPONMLKJIHGFEDCBA",
        ),
        // The older representation, broken off once the POST is answered.
        _ => v1(&[]).cut_after(10).delay(400),
    })
    .await;
    let p = proxy(&format!("http://{}", o.addr), &[]).await;
    let addr = p.addr;
    let older = tokio::spawn(async move { get(addr, "/np", &[]).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let posted = support::request(p.addr, "POST", "/np", &[("content-length", "0")]).await;
    assert!(posted.cache_status().contains("stored"), "{posted:?}");
    let first = older.await.unwrap();
    assert_ne!(first.text(), ALPHABET, "{first:?}");
    let r = get(p.addr, "/np", &[("range", "bytes=2-5")]).await;
    assert_eq!((r.status, r.text().as_str()), (206, "XWVU"), "{r:?}");
    assert!(!r.cache_status().contains("incomplete"), "{r:?}");
}

/// RFC 9111 §3.3 against a contradicting `HEAD` (§4.3.5), the other order:
/// a load begins, a `HEAD` then says the stored answer is out of date and
/// empties the key, and only then does the load's body break off. Its prefix
/// is of a load begun before that word, as a whole answer of it would be, so
/// it is not kept: a range after it comes from the origin, never the prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_begun_before_a_contradicting_head_keeps_no_prefix() {
    let o = origin(|s, n| {
        let current = [("cache-control", "max-age=60"), ("etag", "\"c\"")];
        match (s.method.as_str(), n) {
            ("HEAD", _) => Reply::ok(&current, ALPHABET.to_uppercase()),
            // Stored, stale on arrival: the next GET loads.
            (_, 1) => v1(&[("age", "120")]),
            // That load: another tag, broken off once the HEAD is answered.
            (_, 2) => Reply::ok(
                &[("cache-control", "max-age=60"), ("etag", "\"b\"")],
                ALPHABET,
            )
            .cut_after(10)
            .delay(400),
            _ => Reply::ok(&current, ALPHABET.to_uppercase()),
        }
    })
    .await;
    let p = proxy(&format!("http://{}", o.addr), &[]).await;
    assert_eq!(get(p.addr, "/hp", &[]).await.text(), ALPHABET);
    let addr = p.addr;
    let load = tokio::spawn(async move { get(addr, "/hp", &[]).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let head = support::request(p.addr, "HEAD", "/hp", &[("cache-control", "no-store")]).await;
    assert_eq!(head.header("etag"), Some("\"c\""), "{head:?}");
    let broken = load.await.unwrap();
    assert_ne!(broken.text(), ALPHABET, "{broken:?}");
    let r = get(p.addr, "/hp", &[("range", "bytes=2-5")]).await;
    assert_eq!((r.status, r.text().as_str()), (206, "CDEF"), "{r:?}");
    assert!(!r.cache_status().contains("incomplete"), "{r:?}");
}
