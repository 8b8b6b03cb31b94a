//! The web console in a real browser: headless Chromium driven over
//! WebDriver (chromedriver) against a 3-member cluster with 100
//! deployments. It checks the DOM for the revisions, split, routers and
//! members; changes the split through the page and sees every router serve
//! it; checks a viewer sees no action buttons and that the API refuses a
//! viewer's change anyway; measures the first paint; and saves screenshots
//! under `target/console-screenshots/`.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs
//! them); without them it says it skipped, and fails when
//! `GTC_REQUIRE_BROWSER` is set.

mod cluster_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cluster_support::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// Deployments in the environment for the first-paint measurement.
const DEPLOYMENTS: usize = 100;
/// Longest wait for something the page should show.
const PAGE_WAIT: Duration = Duration::from_secs(30);

/// The path of `name` on PATH.
pub fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    })
}

/// One HTTP/1.1 request to `addr`: status and body.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("write");
    stream.write_all(body.as_bytes()).expect("write");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("read");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn node_token(member: &Member) -> String {
    let text =
        std::fs::read_to_string(member.store().join("local").join("node.json")).expect("node file");
    serde_json::from_str::<Value>(&text).expect("json")["token"]
        .as_str()
        .expect("token")
        .to_owned()
}

/// chromedriver on a free port, stopped when dropped.
struct Driver(Child, u16);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_driver(driver: &Path) -> Driver {
    let port = free_tcp().port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    eventually("chromedriver to listen", || {
        std::net::TcpStream::connect(addr).is_ok()
    });
    Driver(child, port)
}

async fn browser(driver: &Driver, chromium: &Path) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".to_owned(),
        json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1100"],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{}", driver.1))
        .await
        .expect("a WebDriver session")
}

/// Waits until `script` (a JS expression) is truthy in the page.
async fn until(client: &Client, what: &str, script: &str) -> Value {
    let deadline = Instant::now() + PAGE_WAIT;
    loop {
        let value = client
            .execute(&format!("return ({script});"), vec![])
            .await
            .unwrap_or(Value::Null);
        let truthy = match &value {
            Value::Null | Value::Bool(false) => false,
            Value::Number(n) => n.as_f64() != Some(0.0),
            Value::String(s) => !s.is_empty(),
            _ => true,
        };
        if truthy {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what} ({script})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn count(client: &Client, selector: &str) -> usize {
    client
        .find_all(Locator::Css(selector))
        .await
        .map_or(0, |found| found.len())
}

fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map_or_else(|| PathBuf::from("target"), Path::to_owned)
        .join("console-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot folder");
    dir
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("screenshot");
    let path = screenshots().join(name);
    std::fs::write(&path, png).expect("write screenshot");
    println!("screenshot: {}", path.display());
}

async fn sign_in(client: &Client, admin: SocketAddr, token: &str) {
    client
        .goto(&format!("http://{admin}/ui/"))
        .await
        .expect("open the console");
    client
        .execute("sessionStorage.clear(); return 1;", vec![])
        .await
        .expect("clear");
    client.refresh().await.expect("reload");
    let field = client
        .wait()
        .at_most(PAGE_WAIT)
        .for_element(Locator::Id("token"))
        .await
        .expect("token field");
    until(
        client,
        "the sign-in form",
        "!document.getElementById('sign-in').hidden",
    )
    .await;
    field.send_keys(token).await.expect("type the token");
    client
        .find(Locator::Css("#sign-in button[type=submit]"))
        .await
        .expect("open button")
        .click()
        .await
        .expect("click open");
    until(
        client,
        "the first render",
        "document.body.dataset.ready === 'true'",
    )
    .await;
}

#[test]
fn the_console_shows_the_cluster_and_moves_traffic_through_the_api() {
    // Proves: the console renders revisions, split, routers and members of a
    // real 3-member cluster with 100 deployments; a split change made in the
    // page reaches every router; a viewer gets no action buttons and the API
    // refuses the viewer's change; the first paint is measured.
    let (Some(chromium), Some(driver)) = (on_path("chromium"), on_path("chromedriver")) else {
        assert!(
            std::env::var_os("GTC_REQUIRE_BROWSER").is_none(),
            "GTC_REQUIRE_BROWSER is set but chromium or chromedriver is missing (apt-get install chromium chromium-driver)"
        );
        println!(
            "SKIPPED: the console browser test needs chromium and chromedriver (Debian: apt-get install chromium chromium-driver; .ci/run installs them)"
        );
        return;
    };
    let temp = tempfile::tempdir().expect("temp");
    let _reaper = Reaper(temp.path().to_owned());
    let (home, members) = three_members(temp.path(), true);
    let (deployment, revisions) = two_ready_revisions(&home, &members);
    let generation = set_split(
        &home,
        &members[0],
        &deployment,
        &revisions,
        50,
        "console-50",
    );
    let token = node_token(&members[0]);
    let auth = format!("Bearer {token}");
    for i in 1..DEPLOYMENTS {
        let (status, body) = http(
            members[0].admin,
            "POST",
            "/v1/environments/local/bundles",
            &[("Authorization", &auth), ("If-Match", "*"), ("Content-Type", "application/json")],
            &json!({"bundle_id": format!("app-{i:03}"), "route_binding": {"path_prefixes": [format!("/app-{i:03}")]}}).to_string(),
        );
        assert_eq!(status, 200, "bundles add {i}: {body}");
    }
    let tokens = members[0].store().join("tokens.json");
    let (ok, made, text) = run(
        &home,
        &[
            "node",
            "token",
            "create",
            "--id",
            "console-viewer",
            "--role",
            "viewer",
            "--env",
            "local",
            "--tokens",
            tokens.to_str().expect("utf8"),
        ],
    );
    assert!(ok, "token create: {text}");
    let viewer = made["result"]["token"]
        .as_str()
        .expect("viewer token")
        .to_owned();
    // Some traffic through every router, so each has observed shares.
    for member in &members {
        eventually("the router to serve the split", || {
            get(member.router).is_some_and(|(status, g, _)| status == 200 && g >= Some(generation))
        });
        for _ in 0..20 {
            get(member.router);
        }
    }

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let driver_process = start_driver(&driver);
    runtime.block_on(async {
        let client = browser(&driver_process, &chromium).await;
        sign_in(&client, members[0].admin, &token).await;

        // First paint on a fresh load of the page, token already in the tab.
        client.refresh().await.expect("reload");
        until(&client, "the first render after reload", "document.body.dataset.ready === 'true'").await;
        let timing = client
            .execute(
                "const fcp = performance.getEntriesByName('first-contentful-paint')[0];
                 return {fcp: fcp ? fcp.startTime : null, render: window.gtcFirstRender,
                         sections: document.querySelectorAll('[data-deployment]').length};",
                vec![],
            )
            .await
            .expect("timing");
        println!(
            "console first paint with {} deployments on a 3-member cluster: first contentful paint {:.0} ms, data rendered {:.0} ms after navigation",
            timing["sections"], timing["fcp"].as_f64().unwrap_or(-1.0), timing["render"].as_f64().unwrap_or(-1.0)
        );
        assert_eq!(timing["sections"].as_u64(), Some(DEPLOYMENTS as u64));

        // The DOM holds the revisions, the split, the routers and the members.
        for revision in &revisions {
            let lifecycle = until(
                &client,
                "a revision row",
                &format!("document.querySelector('[data-revision=\"{revision}\"] .lifecycle')?.textContent"),
            )
            .await;
            assert_eq!(lifecycle, json!("ready"));
            let desired = until(
                &client,
                "the desired weight",
                &format!("document.querySelector('[data-split-revision=\"{revision}\"] .desired')?.textContent"),
            )
            .await;
            assert_eq!(desired, json!("50.00 %"));
        }
        for member in &members {
            until(&client, "a router row", &format!("document.querySelector('#routers [data-router=\"{}\"]')", member.name)).await;
            until(&client, "a member row", &format!("document.querySelector('#members [data-member=\"{}\"]')", member.name)).await;
        }
        assert_eq!(count(&client, "#members tr.leader").await, 1, "one leader");
        until(&client, "every router's observed share", &format!(
            "Array.from(document.querySelectorAll('[data-split=\"{deployment}\"] td.observed')).filter(td => td.textContent !== '–').length >= 3"
        )).await;
        until(&client, "the audit chain status", "document.getElementById('chain').textContent.startsWith('chain intact')").await;
        screenshot(&client, "cluster-overview.png").await;

        // One split change through the page: 100 / 0.
        let first = client
            .find(Locator::Css(&format!("input[data-weight-for=\"{}\"]", revisions[0])))
            .await
            .expect("weight input");
        first.clear().await.expect("clear");
        first.send_keys("100").await.expect("type");
        let second = client
            .find(Locator::Css(&format!("input[data-weight-for=\"{}\"]", revisions[1])))
            .await
            .expect("weight input");
        second.clear().await.expect("clear");
        second.send_keys("0").await.expect("type");
        client
            .find(Locator::Css(&format!("[data-deployment=\"{deployment}\"] [data-action=set-split]")))
            .await
            .expect("set split button")
            .click()
            .await
            .expect("click");
        let outcome = until(
            &client,
            "the page to report the change",
            &format!("(m => m && /^(done|[a-z-]+:)/.test(m.textContent) && m.textContent)(document.querySelector('[data-deployment=\"{deployment}\"] .actions .message'))"),
        )
        .await;
        assert!(outcome.as_str().is_some_and(|m| m.starts_with("done")), "the split change was refused: {outcome}");
        let role = until(
            &client,
            "the new split in the page",
            &format!("(document.querySelector('[data-split-revision=\"{}\"] .desired')?.textContent === '100.00 %') && document.body.dataset.role", revisions[0]),
        )
        .await;
        assert_eq!(role, json!("admin"), "the node's owner is an admin of local");
        let committed = members[0].generation().expect("generation");
        // Every router row reaches the committed generation…
        until(
            &client,
            "every router on the new generation",
            &format!("Array.from(document.querySelectorAll('#routers tr')).filter(tr => Number(tr.querySelector('.generation')?.textContent) >= {committed}).length === 3"),
        )
        .await;
        screenshot(&client, "after-split-change.png").await;
        client.close().await.expect("close");
    });
    // …and every router serves only the first revision under it.
    for member in &members {
        eventually("the router to serve the new split", || {
            (0..10).all(|_| {
                get(member.router).is_some_and(|(status, g, revision)| {
                    status == 200
                        && g.is_some_and(|g| g > generation)
                        && revision.as_deref() == Some(revisions[0].as_str())
                })
            })
        });
    }

    // A viewer: no action buttons, and the API refuses the change anyway.
    runtime.block_on(async {
        let client = browser(&driver_process, &chromium).await;
        sign_in(&client, members[0].admin, &viewer).await;
        until(
            &client,
            "the viewer's role",
            "document.body.dataset.role === 'viewer'",
        )
        .await;
        assert_eq!(count(&client, "[data-action=set-split]").await, 0);
        assert_eq!(count(&client, "[data-action=drain]").await, 0);
        assert_eq!(count(&client, "[data-action=rollback]").await, 0);
        assert_eq!(count(&client, "input[data-weight-for]").await, 0);
        assert!(
            count(&client, "[data-action=logs]").await > 0,
            "a viewer reads logs"
        );
        screenshot(&client, "viewer.png").await;
        client.close().await.expect("close");
    });
    let (status, body) = http(
        members[0].admin,
        "POST",
        "/v1/environments/local/traffic",
        &[("Authorization", &format!("Bearer {viewer}")), ("If-Match", "*"), ("Idempotency-Key", "viewer-try")],
        &json!({"deployment_id": deployment, "entries": [{"revision_id": revisions[1], "weight_percent": 100}]}).to_string(),
    );
    assert_eq!(status, 403, "a viewer's change is refused: {body}");
}
