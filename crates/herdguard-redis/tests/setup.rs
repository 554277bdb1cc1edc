//! Bad input and the oversized-value path, against a real redis-server.

use std::time::{Duration, Instant};

use herdguard::{Cache, Remote, RemoteError};
use herdguard_redis::{RedisConfig, RedisRemote, RedisSetupError};
use herdguard_testkit::{free_port, RedisServer};

#[tokio::test]
async fn invalid_url_is_a_typed_error() {
    let err = RedisRemote::<String, String>::connect(RedisConfig::new("http://nope"))
        .await
        .err()
        .expect("must fail");
    assert!(matches!(err, RedisSetupError::InvalidUrl { .. }), "{err}");
    let err = RedisRemote::<String, String>::connect(
        RedisConfig::new("redis://127.0.0.1:1/").prefix("a{b"),
    )
    .await
    .err()
    .expect("must fail");
    assert!(
        matches!(
            err,
            RedisSetupError::InvalidConfig {
                field: "prefix",
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn unreachable_at_start_fails_clearly_within_connect_timeout() {
    let port = free_port().unwrap();
    let limit = Duration::from_millis(500);
    let started = Instant::now();
    let err = RedisRemote::<String, String>::connect(
        RedisConfig::new(format!("redis://127.0.0.1:{port}/")).connect_timeout(limit),
    )
    .await
    .err()
    .expect("nothing listens there");
    // Generous bound: the latency is the behaviour under test.
    assert!(
        started.elapsed() < limit + Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(err, RedisSetupError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains(&port.to_string()), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_value_stays_in_process_and_is_counted() {
    let redis = RedisServer::start().unwrap();
    let remote =
        RedisRemote::<String, String>::connect(RedisConfig::new(redis.url()).max_value_bytes(256))
            .await
            .unwrap();
    let cache: Cache<String, String> = Cache::builder()
        .shared_store(remote.clone())
        .build()
        .unwrap();
    let big = "x".repeat(10_000);
    let v = cache
        .get_or_load("big".to_string(), {
            let big = big.clone();
            || async move { Ok::<_, std::io::Error>(big) }
        })
        .await
        .unwrap();
    assert_eq!(*v, big);
    assert_eq!(cache.metrics().remote_errors, 1);
    assert!(
        remote
            .get(&"big".to_string())
            .await
            .unwrap()
            .entry
            .is_none(),
        "not in Redis"
    );
    // Kept in L1: the next call is a hit.
    let again = cache
        .get_or_load("big".to_string(), || async {
            Ok::<_, std::io::Error>(String::new())
        })
        .await
        .unwrap();
    assert_eq!(*again, big);
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_down_answers_unavailable_quickly() {
    let mut redis = RedisServer::start().unwrap();
    let remote = RedisRemote::<String, String>::connect(
        RedisConfig::new(redis.url()).op_timeout(Duration::from_millis(200)),
    )
    .await
    .unwrap();
    redis.kill();
    let started = Instant::now();
    let err = remote.get(&"k".to_string()).await.expect_err("down");
    assert!(matches!(err, RemoteError::Unavailable(_)), "{err}");
    assert!(matches!(
        remote.try_lease(&"k".to_string()).await,
        Err(RemoteError::Unavailable(_))
    ));
    assert!(matches!(
        remote.ping().await,
        Err(RemoteError::Unavailable(_))
    ));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn broadcasts_reach_every_process_on_the_topic() {
    let redis = RedisServer::start().unwrap();
    let connect = || RedisRemote::<String, String>::connect(RedisConfig::new(redis.url()));
    let (a, b) = (connect().await.unwrap(), connect().await.unwrap());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let other = tx.clone();
    b.on_broadcast("purge", move |p| {
        let _ = tx.send(format!("purge {p}"));
    });
    b.on_broadcast("other", move |p| {
        let _ = other.send(format!("other {p}"));
    });
    a.broadcast("purge", "GET /x?y z").await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(2), rx.recv())
        .await
        .expect("delivered within 2 s");
    assert_eq!(got.as_deref(), Some("purge GET /x?y z"));
    assert!(
        rx.try_recv().is_err(),
        "a listener of another topic got nothing"
    );
    assert!(matches!(
        a.broadcast("two words", "x").await,
        Err(RemoteError::Codec(_))
    ));
}

/// The adversary's surrogate keys: Redis records exactly the ones
/// `valid_tag` accepts (the rule the sidecar reads them by), refuses the rest
/// with a typed error, and gives each recorded one back once.
#[tokio::test]
async fn surrogate_keys_follow_the_one_tag_rule() {
    let redis = RedisServer::start().unwrap();
    let remote = RedisRemote::<String, String>::connect(RedisConfig::new(redis.url()))
        .await
        .unwrap();
    let longest = "t".repeat(herdguard_redis::MAX_TAG_BYTES);
    let too_long = "t".repeat(herdguard_redis::MAX_TAG_BYTES + 1);
    let tags = [
        "product-42",
        "{x}",
        "%41",
        longest.as_str(),
        "",
        "a,b",
        "a b",
        "a\tb",
        "caf\u{e9}",
        too_long.as_str(),
        &"u".repeat(256),
    ];
    let ttl = Duration::from_secs(60);
    for tag in tags {
        let recorded = remote.tag(tag, "/key", ttl).await;
        assert_eq!(
            recorded.is_ok(),
            herdguard_redis::valid_tag(tag),
            "{tag:?}: {recorded:?}"
        );
        if let Err(e) = recorded {
            assert!(matches!(e, RemoteError::Codec(_)), "{tag:?}: {e}");
            assert!(matches!(
                remote.take_tagged(tag).await,
                Err(RemoteError::Codec(_))
            ));
        } else {
            assert_eq!(remote.take_tagged(tag).await.unwrap(), ["/key"], "{tag:?}");
        }
    }
    for (tag, valid) in [
        ("product-42", true),
        ("a,b", false),
        (too_long.as_str(), false),
    ] {
        assert_eq!(herdguard_redis::valid_tag(tag), valid, "{tag:?}");
    }
}
