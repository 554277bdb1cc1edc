//! `rediss://` against a real TLS-only redis-server (`--port 0 --tls-port`)
//! with a CA made in the test: a private CA, the web PKI default refusing it,
//! a wrong CA, an ACL user in the URL, mutual TLS, and quorum lock servers.

use herdguard::Cache;
use herdguard_redis::{RedisConfig, RedisRemote, RedisSetupError};
use std::time::Duration;

use herdguard_testkit::{RedisCluster, RedisServer, Sentinel, TestCa};

mod common;

async fn connect(
    config: RedisConfig,
) -> Result<std::sync::Arc<RedisRemote<String, String>>, RedisSetupError> {
    RedisRemote::<String, String>::connect(config).await
}

fn caches(remotes: Vec<std::sync::Arc<RedisRemote<String, String>>>) -> Vec<Cache<String, String>> {
    remotes
        .into_iter()
        .map(|r| Cache::builder().shared_store(r).build().expect("cache"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn three_caches_over_tls_with_a_private_ca_make_one_call_per_key() {
    let ca = TestCa::new().unwrap();
    let redis = RedisServer::start_tls(&ca, false).unwrap();
    assert!(redis.url().starts_with("rediss://"));
    let mut remotes = Vec::new();
    for _ in 0..3 {
        remotes.push(
            connect(RedisConfig::new(redis.url()).ca_file(ca.ca_file()))
                .await
                .expect("TLS with the test CA"),
        );
    }
    let nodes = caches(remotes);
    for key in ["a", "b", "c"] {
        let (calls, errors) = common::stampede(&nodes, key, 30).await;
        assert_eq!((calls, errors), (1, 0), "{key}: one origin call, no errors");
    }
}

#[tokio::test]
async fn the_web_pki_default_and_a_wrong_ca_refuse_the_server_clearly() {
    let ca = TestCa::new().unwrap();
    let other = TestCa::new().unwrap();
    let redis = RedisServer::start_tls(&ca, false).unwrap();
    let url = redis.url().replace("rediss://", "rediss://app:s3cret-pw@");
    for config in [
        RedisConfig::new(url.clone()),
        RedisConfig::new(url.clone()).ca_file(other.ca_file()),
    ] {
        let err = connect(config).await.err().expect("an untrusted server");
        assert!(matches!(err, RedisSetupError::Tls { .. }), "{err}");
        assert!(err.is_config(), "{err}");
        let line = err.to_string();
        assert!(
            line.contains(&format!("127.0.0.1:{}", redis.port())),
            "{line}"
        );
        assert!(line.contains("rediss://app:***@"), "{line}");
        assert!(!line.contains("s3cret-pw"), "the password leaked: {line}");
        assert!(!line.contains('\n'), "one line: {line}");
    }
}

#[tokio::test]
async fn an_acl_user_in_the_url_authenticates_over_tls() {
    let ca = TestCa::new().unwrap();
    let redis = RedisServer::start_tls_with(
        &ca,
        false,
        &["--user", "app", "on", ">s3cret-pw", "~*", "&*", "+@all"],
    )
    .unwrap();
    let good = redis.url().replace("rediss://", "rediss://app:s3cret-pw@");
    connect(RedisConfig::new(good).ca_file(ca.ca_file()))
        .await
        .expect("the ACL user over TLS");
    let bad = redis.url().replace("rediss://", "rediss://app:wrong@");
    let err = connect(RedisConfig::new(bad).ca_file(ca.ca_file()))
        .await
        .err()
        .expect("a wrong password");
    assert!(!err.to_string().contains("wrong"), "{err}");
}

#[tokio::test]
async fn mutual_tls_needs_the_client_certificate() {
    let ca = TestCa::new().unwrap();
    let redis = RedisServer::start_tls(&ca, true).unwrap();
    let err = connect(RedisConfig::new(redis.url()).ca_file(ca.ca_file()))
        .await
        .err()
        .expect("no client certificate");
    assert!(matches!(err, RedisSetupError::Tls { .. }), "{err}");
    assert!(err.to_string().contains(&redis.url()), "{err}");
    connect(
        RedisConfig::new(redis.url())
            .ca_file(ca.ca_file())
            .client_cert(ca.client_cert(), ca.client_key()),
    )
    .await
    .expect("with the client certificate");
}

#[tokio::test]
async fn quorum_lock_servers_speak_tls_and_refuse_a_wrong_ca() {
    let ca = TestCa::new().unwrap();
    let store = RedisServer::start_tls(&ca, false).unwrap();
    let locks: Vec<RedisServer> = (0..3)
        .map(|_| RedisServer::start_tls(&ca, false).unwrap())
        .collect();
    let lock_urls: Vec<String> = locks.iter().map(RedisServer::url).collect();
    let remote = connect(
        RedisConfig::new(store.url())
            .ca_file(ca.ca_file())
            .lease_quorum(lock_urls.clone()),
    )
    .await
    .expect("store and lock servers over TLS");
    let nodes = caches(vec![remote]);
    assert_eq!(common::stampede(&nodes, "q", 20).await, (1, 0));

    // One lock server with a certificate of another CA: a misconfiguration,
    // refused at start even though a majority would answer.
    let other = TestCa::new().unwrap();
    let stranger = RedisServer::start_tls(&other, false).unwrap();
    let mut urls = lock_urls;
    urls[2] = stranger.url();
    let err = connect(
        RedisConfig::new(store.url())
            .ca_file(ca.ca_file())
            .lease_quorum(urls),
    )
    .await
    .err()
    .expect("an untrusted lock server");
    assert!(matches!(err, RedisSetupError::Tls { .. }), "{err}");
    assert!(err.to_string().contains(&stranger.url()), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tls_cluster_coordinates_and_refuses_a_wrong_ca() {
    let ca = TestCa::new().unwrap();
    let cluster = RedisCluster::start_single_shard_tls(&ca).unwrap();
    let seeds = cluster.urls();
    assert!(seeds[0].starts_with("rediss://"), "{seeds:?}");
    let mut remotes = Vec::new();
    for _ in 0..2 {
        remotes.push(
            connect(RedisConfig::cluster(seeds.clone()).ca_file(ca.ca_file()))
                .await
                .expect("a cluster over TLS"),
        );
    }
    let nodes = caches(remotes);
    assert_eq!(common::stampede(&nodes, "c", 20).await, (1, 0));
    let other = TestCa::new().unwrap();
    let err = connect(RedisConfig::cluster(seeds).ca_file(other.ca_file()))
        .await
        .err()
        .expect("an untrusted cluster");
    assert!(matches!(err, RedisSetupError::Tls { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sentinel_over_tls_names_the_primary_and_a_wrong_ca_is_refused() {
    let ca = TestCa::new().unwrap();
    let primary = RedisServer::start_tls(&ca, false).unwrap();
    let sentinel =
        Sentinel::start_tls("shop", primary.port(), 1, Duration::from_secs(5), &ca).unwrap();
    let url = format!("rediss+sentinel://127.0.0.1:{}/shop", sentinel.port());
    let mut remotes = Vec::new();
    for _ in 0..2 {
        remotes.push(
            connect(RedisConfig::new(url.clone()).ca_file(ca.ca_file()))
                .await
                .expect("the sentinel and the primary over TLS"),
        );
    }
    let nodes = caches(remotes);
    assert_eq!(common::stampede(&nodes, "s", 20).await, (1, 0));
    let other = TestCa::new().unwrap();
    let err = connect(RedisConfig::new(url.clone()).ca_file(other.ca_file()))
        .await
        .err()
        .expect("an untrusted sentinel");
    assert!(matches!(err, RedisSetupError::Tls { .. }), "{err}");
    assert!(err.to_string().contains(&url), "{err}");
}

#[tokio::test]
async fn tls_files_are_checked_before_connecting() {
    let ca = TestCa::new().unwrap();
    let redis = RedisServer::start_tls(&ca, false).unwrap();
    let plain = RedisServer::start().unwrap();
    let empty = ca.ca_file().with_file_name("empty.pem");
    std::fs::write(&empty, "").unwrap();
    for (config, field) in [
        (
            RedisConfig::new(redis.url()).ca_file(ca.ca_file().with_file_name("missing.pem")),
            "ca_file",
        ),
        (RedisConfig::new(redis.url()).ca_file(&empty), "ca_file"),
        (
            RedisConfig::new(redis.url()).client_cert(ca.client_cert(), ca.ca_file()),
            "client_key",
        ),
        // A CA for a plain redis:// URL would silently go unused.
        (
            RedisConfig::new(plain.url()).ca_file(ca.ca_file()),
            "ca_file",
        ),
    ] {
        let err = connect(config).await.err().expect("bad TLS settings");
        assert!(
            matches!(&err, RedisSetupError::InvalidConfig { field: f, .. } if *f == field),
            "{field}: {err}"
        );
    }
}
