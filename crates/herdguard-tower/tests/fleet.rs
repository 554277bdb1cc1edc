//! Two app processes on one Redis: a stampede on both makes one handler call
//! in the whole fleet.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use common::Client;
use herdguard_testkit::RedisServer;

/// One app process (`herdguard-tower-app`); killed when dropped.
struct App {
    child: Child,
    addr: String,
}

impl App {
    fn start(redis: &str) -> App {
        let mut child = Command::new(env!("CARGO_BIN_EXE_herdguard-tower-app"))
            .args(["--redis", redis, "--delay-ms", "300"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .trim()
            .to_string();
        App { child, addr }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_on_one_redis_make_one_handler_call() {
    let redis = RedisServer::start().unwrap();
    let apps = [App::start(&redis.url()), App::start(&redis.url())];
    let client = Client::new();
    let requests = (0..100).map(|i| {
        let (client, url) = (client.clone(), apps[i % 2].url("/slow/report"));
        tokio::spawn(async move { client.get(&url, &[]).await })
    });
    for reply in futures_util::future::join_all(requests).await {
        let reply = reply.unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, "slow report\n");
    }
    let mut calls = 0;
    for app in &apps {
        calls += client
            .get(&app.url("/calls"), &[])
            .await
            .body
            .parse::<u64>()
            .unwrap();
    }
    assert_eq!(calls, 1, "handler calls in the fleet");
}
