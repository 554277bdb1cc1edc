//! The live views in a real browser (Debian's headless `chromium`, driven over
//! the DevTools protocol): the dashboard of `herdguard serve` against a real
//! origin and a real Redis, and the web demonstrator of `herdguard demo --web`.
//! Screenshots are saved under the target directory for a person to look at.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
use headless_chrome::{Browser, LaunchOptions, Tab};
use herdguard_testkit::{free_port, RedisServer};
use serde_json::Value;

mod common;
use common::{chromium, colours};

/// A child process killed when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A real HTTP origin on a loopback port, counting the requests it answers:
/// `/hot` is fresh for a minute, `/private` is `no-store`, anything else is
/// fresh for a minute under its own URL. Each answer takes 50 ms.
fn origin() -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("an origin port");
    let addr = listener.local_addr().expect("its address");
    let calls = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&calls);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let calls = Arc::clone(&counted);
            std::thread::spawn(move || answer(stream, &calls));
        }
    });
    (addr, calls)
}

fn answer(stream: TcpStream, calls: &AtomicU64) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split(' ').nth(1).unwrap_or("/").to_string();
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header == "\r\n" {
                break;
            }
        }
        calls.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(50));
        let control = if path == "/private" {
            "no-store"
        } else {
            "max-age=60"
        };
        let body = format!("{{\"path\":\"{path}\"}}");
        let head = format!(
            "HTTP/1.1 200 OK\r\nCache-Control: {control}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let stream = reader.get_mut();
        if stream.write_all(head.as_bytes()).is_err() || stream.write_all(body.as_bytes()).is_err()
        {
            return;
        }
    }
}

/// One GET over its own connection; the status code and body.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("a timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: api.example\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("an answer");
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Waits until `addr` answers `/healthz` (bounded).
fn wait_healthy(admin: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(admin).is_ok() && get(admin, "/healthz").0 == 200 {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{admin} did not come up");
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// `herdguard serve` in front of `origin`, with an admin listener; the
/// proxy's and the admin's addresses.
fn serve(origin: SocketAddr, redis: Option<&str>) -> (Running, SocketAddr, SocketAddr) {
    let (listen, admin) = (
        addr(free_port().expect("a port")),
        addr(free_port().expect("a port")),
    );
    let mut command = Command::new(env!("CARGO_BIN_EXE_herdguard"));
    command
        .args(["serve", "--listen", &listen.to_string()])
        .args(["--origin", &format!("http://{origin}")])
        .args(["--admin", &admin.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(url) = redis {
        command.args(["--redis", url]);
    }
    let child = Running(command.spawn().expect("herdguard serve starts"));
    wait_healthy(admin);
    (child, listen, admin)
}

/// `herdguard_proxy_requests_total` by result, and
/// `herdguard_proxy_origin_requests_total` as `origin`, from `/metrics`.
fn metrics(admin: SocketAddr) -> BTreeMap<String, u64> {
    let (_, text) = get(admin, "/metrics");
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<u64>() else {
            continue;
        };
        if let Some(result) = name
            .strip_prefix("herdguard_proxy_requests_total{result=\"")
            .and_then(|r| r.strip_suffix("\"}"))
        {
            out.insert(result.to_string(), value);
        } else if name == "herdguard_proxy_origin_requests_total" {
            out.insert("origin".to_string(), value);
        }
    }
    out
}

fn browser() -> Browser {
    let options = LaunchOptions::default_builder()
        .path(Some(chromium()))
        .sandbox(false)
        .window_size(Some((1280, 1400)))
        .idle_browser_timeout(Duration::from_secs(120))
        .args(
            [
                "--disable-gpu",
                "--hide-scrollbars",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ]
            .iter()
            .map(std::ffi::OsStr::new)
            .collect(),
        )
        .build()
        .expect("browser options");
    Browser::new(options).expect("chromium starts (headless)")
}

/// Runs `script` in the page and returns its value as text.
fn eval(tab: &Tab, script: &str) -> String {
    let value = tab.evaluate(script, false).expect("the script runs").value;
    match value {
        Some(Value::String(s)) => s,
        Some(v) => v.to_string(),
        None => String::new(),
    }
}

/// Polls `check` every 100 ms until it gives `Some`, for at most `limit`.
fn within<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Saves a screenshot of `tab` under the target directory and checks it shows
/// something (text and coloured lines, not a blank page).
fn screenshot(tab: &Tab, name: &str) -> PathBuf {
    let png = tab
        .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
        .expect("a screenshot");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).expect("a screenshot directory");
    let path = dir.join(name);
    std::fs::write(&path, png).expect("the screenshot is written");
    let (distinct, _, _) = colours(&path);
    assert!(distinct > 50, "{name} shows a page ({distinct} colours)");
    println!("screenshot: {}", path.display());
    path
}

/// The DOM's totals of the row whose cells have ids `{prefix}-{field}`.
fn dom_totals(tab: &Tab, prefix: &str) -> BTreeMap<String, u64> {
    let text = eval(
        tab,
        &format!(
            "JSON.stringify(Object.fromEntries([...document.querySelectorAll('[id^=\"{prefix}-\"]')].map(e => [e.id.slice({}), Number(e.textContent)])))",
            prefix.len() + 1
        ),
    );
    serde_json::from_str(&text).unwrap_or_default()
}

#[test]
fn the_dashboard_shows_what_metrics_counts_within_one_refresh() {
    let (origin, _) = origin();
    let (_serve, proxy, admin) = serve(origin, None);
    let browser = browser();
    let tab = browser.new_tab().expect("a tab");
    tab.navigate_to(&format!("http://{admin}/"))
        .expect("the dashboard")
        .wait_until_navigated()
        .expect("it loads");
    tab.wait_for_element("#me-total-hit")
        .expect("the totals row");

    // Hits, misses, coalesced callers and bypasses.
    let hot: Vec<_> = (0..20)
        .map(|_| std::thread::spawn(move || get(proxy, "/hot")))
        .collect();
    for h in hot {
        assert_eq!(h.join().expect("a client").0, 200);
    }
    for i in 0..30 {
        assert_eq!(get(proxy, "/hot").0, 200);
        assert_eq!(get(proxy, &format!("/n/{i}")).0, 200);
    }
    for _ in 0..5 {
        assert_eq!(get(proxy, "/private").0, 200);
    }
    let expected = metrics(admin);
    assert!(
        expected["hit"] >= 30 && expected["miss"] >= 30,
        "{expected:?}"
    );
    assert!(expected["coalesced"] > 0, "{expected:?}");
    assert!(expected["bypass"] >= 1, "{expected:?}");

    // Within one refresh (a second) and a margin, the page shows the same totals.
    let updates_before: u64 = eval(&tab, "document.body.dataset.updates || '0'")
        .parse()
        .unwrap_or(0);
    let started = Instant::now();
    let shown = within(
        Duration::from_millis(2500),
        "the page shows /metrics",
        || {
            let shown = dom_totals(&tab, "me-total");
            expected
                .iter()
                .all(|(k, v)| shown.get(k) == Some(v))
                .then_some(shown)
        },
    );
    println!(
        "DOM matched /metrics after {:?}: {shown:?}",
        started.elapsed()
    );
    // And it keeps updating, at least once a second.
    std::thread::sleep(Duration::from_millis(2100));
    let updates_after: u64 = eval(&tab, "document.body.dataset.updates")
        .parse()
        .unwrap_or(0);
    assert!(
        updates_after >= updates_before + 2,
        "updates at least once a second ({updates_before} → {updates_after})"
    );
    // One update is at most 1 KB.
    let (_, update) = get(admin, "/dashboard.json");
    assert!(
        update.len() <= 1024,
        "{} bytes per update: {update}",
        update.len()
    );
    screenshot(&tab, "dashboard-one.png");
}

#[test]
fn every_dashboard_of_a_fleet_shows_every_instance_and_the_fleet_totals() {
    let redis = RedisServer::start().expect("redis-server (the test command installs it)");
    let (origin, origin_calls) = origin();
    let fleet: Vec<_> = (0..3).map(|_| serve(origin, Some(&redis.url()))).collect();
    // What a hostile client of the same Redis could leave in the fleet view:
    // fields that are not records, a record that does not parse, one that
    // claims to be an instance of the fleet. None of it may show, nor hide
    // the real instances.
    let key = within(Duration::from_secs(5), "the fleet view's key", || {
        let out = redis_cli(&redis, &["--scan", "--pattern", "*instances"]);
        let key = out.lines().next()?.trim().to_string();
        (!key.is_empty()).then_some(key)
    });
    for (field, value) in [
        ("junk", "not a record".to_string()),
        ("broken", format!("{} {{\"id\":", now_ms())),
        (
            "evil",
            format!("{} {{\"id\":\"evil\",\"rate\":[1e308]}}", now_ms()),
        ),
    ] {
        redis_cli(&redis, &["HSET", &key, field, &value]);
    }
    let browser = browser();
    let tab = browser.new_tab().expect("a tab");
    let admin = fleet[0].2;
    tab.navigate_to(&format!("http://{admin}/"))
        .expect("the dashboard")
        .wait_until_navigated()
        .expect("it loads");

    // While the page watches: for 5 s, steady hits on every instance and,
    // each second, a stampede of 60 concurrent cold requests for a new URL
    // spread over the three — one origin call for the fleet each time.
    let stampedes = 5;
    let hits: Vec<_> = fleet
        .iter()
        .enumerate()
        .map(|(n, (_, proxy, _))| {
            let proxy = *proxy;
            std::thread::spawn(move || {
                let until = Instant::now() + Duration::from_secs(stampedes);
                while Instant::now() < until {
                    assert_eq!(get(proxy, "/hot").0, 200);
                    std::thread::sleep(Duration::from_millis(5 * (n as u64 + 1)));
                }
            })
        })
        .collect();
    for second in 0..stampedes {
        let cold: Vec<_> = (0..60)
            .map(|i| {
                let proxy = fleet[i % 3].1;
                std::thread::spawn(move || get(proxy, &format!("/cold/{second}")).0)
            })
            .collect();
        for c in cold {
            assert_eq!(c.join().expect("a client"), 200);
        }
        std::thread::sleep(Duration::from_millis(900));
        if second == stampedes - 2 {
            // What a person sees while it runs (the README's picture).
            screenshot(&tab, "dashboard.png");
        }
    }
    for h in hits {
        h.join().expect("a client");
    }
    // /hot once, and each cold URL once, for the whole fleet.
    assert_eq!(origin_calls.load(Ordering::SeqCst), 1 + stampedes);

    let expected = fleet
        .iter()
        .fold(BTreeMap::<String, u64>::new(), |mut m, f| {
            for (k, v) in metrics(f.2) {
                *m.entry(k).or_default() += v;
            }
            m
        });
    assert_eq!(expected["origin"], 1 + stampedes, "{expected:?}");
    let rows = within(
        Duration::from_secs(4),
        "three instances and the fleet totals",
        || {
            let rows: usize = eval(&tab, "document.querySelectorAll('#fleet tbody tr').length")
                .parse()
                .unwrap_or(0);
            let shown = dom_totals(&tab, "fleet-total");
            (rows == 4 && expected.iter().all(|(k, v)| shown.get(k) == Some(v))).then_some(rows)
        },
    );
    assert_eq!(rows, 4, "three instances and the totals; the junk left out");
    // A well-formed record whose text is markup: shown, as text.
    let (field, value) = (
        "markup",
        format!(
            "{} {{\"id\":\"<b id=injected>x</b>\",\"up_s\":0,\"rate\":[0,0,0,0,0,0,0],\"total\":[0,0,0,0,0,0,0],\"wait_p50_ms\":null,\"wait_p99_ms\":null,\"in_flight\":0,\"lease\":[0,0,0,0],\"breaker\":\"<i id=injected2>open</i>\",\"store\":\"ok\"}}",
            now_ms() + 60_000
        ),
    );
    redis_cli(&redis, &["HSET", &key, field, &value]);
    within(Duration::from_secs(4), "the stranger's row", || {
        (eval(&tab, "document.querySelectorAll('#fleet tbody tr').length") == "5").then_some(())
    });
    assert_eq!(
        eval(&tab, "String(document.getElementById('injected') === null && document.getElementById('injected2') === null)"),
        "true",
        "a record's text never becomes markup"
    );
    let (_, update) = get(admin, "/dashboard.json");
    assert!(
        !update.contains("evil"),
        "a bad record is left out: {update}"
    );
    let update: Value = serde_json::from_str(&update).expect("JSON");
    let ours: String = update["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .filter(|r| !r["id"].as_str().unwrap_or("").contains("injected"))
        .map(|r| r.to_string())
        .collect();
    // The lease figures: one grant per origin call for the whole fleet, and
    // the other instances waited on it.
    let lease = |i: usize| -> u64 {
        update["instances"]
            .as_array()
            .expect("instances")
            .iter()
            .map(|r| r["lease"][i].as_u64().unwrap_or(0))
            .sum()
    };
    assert_eq!(lease(0), 1 + stampedes, "leases acquired: {update}");
    assert!(lease(1) >= 1, "lease waits: {update}");
    assert_eq!(lease(2), 0, "no take-over in a healthy fleet: {update}");
    assert!(
        ours.len() <= 1024,
        "three instances in at most 1 KB per update: {} bytes",
        ours.len()
    );
    screenshot(&tab, "dashboard-after.png");
}

fn redis_cli(redis: &RedisServer, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &redis.port().to_string()])
        .args(args)
        .output()
        .expect("redis-cli (the test command installs redis-tools)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// `herdguard demo --web` on a free port; its address.
fn demonstrator(extra: &[&str]) -> (Running, SocketAddr) {
    let listen = addr(free_port().expect("a port"));
    let child = Command::new(env!("CARGO_BIN_EXE_herdguard"))
        .args(["demo", "--web", "--listen", &listen.to_string()])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("herdguard demo --web starts");
    let running = Running(child);
    within(Duration::from_secs(20), "the demonstrator listens", || {
        TcpStream::connect(listen).ok()
    });
    (running, listen)
}

fn open(browser: &Browser, addr: SocketAddr) -> Arc<Tab> {
    let tab = browser.new_tab().expect("a tab");
    tab.navigate_to(&format!("http://{addr}/"))
        .expect("the demonstrator")
        .wait_until_navigated()
        .expect("it loads");
    within(Duration::from_secs(5), "the page is set up", || {
        (eval(
            &tab,
            "document.querySelectorAll('#strategies input').length",
        ) != "0")
            .then_some(())
    });
    tab
}

/// Origin calls per strategy in the page's run table.
fn run_table(tab: &Tab) -> BTreeMap<String, u64> {
    let text = eval(
        tab,
        "JSON.stringify(Object.fromEntries([...document.querySelectorAll('#run-table tbody tr')].map(r => [r.dataset.strategy, Number(r.querySelector('[data-field=\"origin-calls\"]')?.textContent)])))",
    );
    serde_json::from_str(&text).unwrap_or_default()
}

#[test]
fn the_demonstrator_runs_a_scenario_live_and_ends_on_the_numbers_the_cli_prints() {
    let (_demo, web) = demonstrator(&[]);
    let browser = browser();
    let tab = open(&browser, web);
    // A person sets the run up and presses Run.
    eval(
        &tab,
        "document.getElementById('scenario').value = 'cold'; document.getElementById('scenario').onchange(); \
         document.getElementById('keys').value = 4; document.getElementById('threads').value = 25; \
         document.getElementById('latency').value = 300; document.getElementById('seed').value = 7; 'set'",
    );
    tab.find_element("#run")
        .expect("the Run button")
        .click()
        .expect("a click");
    // While it runs, the table fills in (answered counts below the total).
    let running = within(Duration::from_secs(3), "the live table", || {
        let rows = eval(
            &tab,
            "document.querySelectorAll('#run-table tbody tr').length",
        );
        (rows == "4").then_some(rows)
    });
    assert_eq!(running, "4");
    within(Duration::from_secs(15), "the run ends", || {
        (eval(&tab, "document.body.dataset.reports || ''") == "1").then_some(())
    });
    let shown = run_table(&tab);
    screenshot(&tab, "demonstrator-run.png");

    // The command line, same settings and seed: the same origin calls.
    let out = Command::new(env!("CARGO_BIN_EXE_herdguard"))
        .args([
            "demo",
            "--json",
            "--scenario",
            "cold",
            "-k",
            "4",
            "-t",
            "25",
        ])
        .args(["--origin-latency", "300ms", "--seed", "7"])
        .output()
        .expect("herdguard demo runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let cli: BTreeMap<String, u64> = report["scenarios"][0]["strategies"]
        .as_array()
        .expect("strategies")
        .iter()
        .map(|s| {
            (
                s["name"].as_str().expect("a name").to_string(),
                s["origin_calls"].as_u64().expect("a count"),
            )
        })
        .collect();
    assert_eq!(shown, cli, "page vs CLI, origin calls per strategy");
    assert_eq!(shown["none"], 100, "every caller of none called the origin");
    assert_eq!(shown["herdguard"], 4, "one call per key");
}

/// The live table's `field` per strategy.
fn live_field(tab: &Tab, field: &str) -> BTreeMap<String, f64> {
    let text = eval(
        tab,
        &format!("JSON.stringify(Object.fromEntries([...document.querySelectorAll('#live-table tbody tr')].map(r => [r.dataset.strategy, Number(r.querySelector('[data-field=\"{field}\"]')?.textContent.replace(/,/g, ''))])))"),
    );
    serde_json::from_str(&text).unwrap_or_default()
}

#[test]
fn the_live_load_shows_a_stampede_and_a_partition_as_they_happen() {
    let (_demo, web) = demonstrator(&["--seed", "7"]);
    let browser = browser();
    let tab = open(&browser, web);
    // First the cold scenario as it comes (for the screenshot: a finished run
    // above the live load).
    tab.find_element("#run")
        .expect("the Run button")
        .click()
        .expect("a click");
    within(Duration::from_secs(15), "the run ends", || {
        (eval(&tab, "document.body.dataset.reports || ''") == "1").then_some(())
    });
    eval(
        &tab,
        "document.getElementById('live-keys').value = 4; document.getElementById('live-rate').value = 100; \
         document.getElementById('live-threads').value = 50; document.getElementById('live-ttl').value = 1000; \
         document.getElementById('live-latency').value = 200; 'set'",
    );
    tab.find_element("#live-start")
        .expect("Start")
        .click()
        .expect("a click");
    let before = within(Duration::from_secs(5), "live figures", || {
        let totals = live_field(&tab, "origin-total");
        (totals.len() == 3).then_some(totals)
    });

    // The stampede: none calls the origin for (nearly) every caller,
    // herdguard about once per key.
    tab.find_element("#stampede")
        .expect("Cache stampede")
        .click()
        .expect("a click");
    std::thread::sleep(Duration::from_millis(2500));
    let after = live_field(&tab, "origin-total");
    let grew = |name: &str| after[name] - before[name];
    assert!(
        grew("none") >= 150.0,
        "none: {} origin calls after the stampede",
        grew("none")
    );
    assert!(
        grew("herdguard") <= 20.0,
        "herdguard: {} origin calls after the stampede",
        grew("herdguard")
    );
    assert!(
        eval(&tab, "document.getElementById('live-events').textContent").contains("stampede"),
        "the stampede is in the event list"
    );

    // The partition (the origin, without Redis): none's callers get errors,
    // herdguard serves its last good values.
    let errors_before = live_field(&tab, "errors-total");
    tab.find_element("#partition")
        .expect("Network partition")
        .click()
        .expect("a click");
    std::thread::sleep(Duration::from_millis(2500));
    let errors = live_field(&tab, "errors-total");
    assert!(
        errors["none"] > errors_before["none"],
        "none's callers see the partition: {errors:?}"
    );
    assert_eq!(
        errors["herdguard"], errors_before["herdguard"],
        "herdguard serves stale through it: {errors:?}"
    );
    screenshot(&tab, "demonstrator-live.png");
    tab.find_element("#live-stop")
        .expect("Stop")
        .click()
        .expect("a click");
}
