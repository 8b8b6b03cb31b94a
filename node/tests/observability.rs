//! Metrics, alerts and dashboards as Prometheus itself judges them:
//! `promtool check metrics` on a live node's and a cluster member's
//! `/metrics`, `promtool check rules` on `monitoring/alerts.yml` and on the
//! Grafana dashboard's queries, and a real Prometheus scraping a 3-member
//! cluster, answering PromQL for each router's generation and per-revision
//! request rates, with the alerting rules loaded and healthy.
//!
//! Needs Debian's `prometheus` package (`promtool` and `prometheus`;
//! `.ci/run` installs it); without it the tests say they skipped, and fail
//! when `GTC_REQUIRE_PROMETHEUS` is set.

mod cluster_support;
mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cluster_support::*;
use serde_json::{Value, json};

/// How long Prometheus gets to scrape and answer what the test asks.
const PROMETHEUS_WAIT: Duration = Duration::from_secs(90);

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    })
}

/// `promtool` and `prometheus`, or `None` after saying why the test skips.
fn prometheus_tools() -> Option<(PathBuf, PathBuf)> {
    match (on_path("promtool"), on_path("prometheus")) {
        (Some(promtool), Some(prometheus)) => Some((promtool, prometheus)),
        _ => {
            assert!(
                std::env::var_os("GTC_REQUIRE_PROMETHEUS").is_none(),
                "GTC_REQUIRE_PROMETHEUS is set but promtool or prometheus is missing (apt-get install prometheus)"
            );
            println!(
                "SKIPPED: needs promtool and prometheus (Debian: apt-get install prometheus; .ci/run installs it)"
            );
            None
        }
    }
}

fn monitoring() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .join("monitoring")
}

/// Runs `promtool check metrics` on `text`; its complaints, if any.
fn check_metrics(promtool: &Path, text: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write metrics");
    let output = child.wait_with_output().expect("promtool output");
    let complaints = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() && complaints.trim().is_empty() {
        String::new()
    } else {
        format!("exit {:?}: {complaints}", output.status.code())
    }
}

/// The dashboard's queries as recording rules, so `promtool check rules`
/// parses every one of them.
fn dashboard_queries() -> Vec<String> {
    let text = std::fs::read_to_string(monitoring().join("grafana-dashboard.json"))
        .expect("the dashboard file");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|panel| panel["targets"].as_array().cloned().unwrap_or_default())
        .map(|target| target["expr"].as_str().expect("expr").to_owned())
        .collect()
}

#[test]
fn promtool_accepts_a_nodes_metrics_the_alerts_and_the_dashboard_queries() {
    // Proves: a live single node's /metrics (after traffic and a change)
    // has no problem for promtool, with process_* metrics; the alerting
    // rules and every dashboard query parse.
    let Some((promtool, _)) = prometheus_tools() else {
        return;
    };
    let home = common::Home::new();
    let node = common::Node::start(&home);
    // A request through the router (a 404: no deployment) and the metrics.
    let _ = http_get(node.addr, "/nothing");
    let text = http_get(node.admin, "/metrics").expect("metrics");
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
        "gtc_router_generation",
    ] {
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name} has no HELP: {text}"
        );
    }
    assert_eq!(check_metrics(&promtool, &text), "", "a node's metrics");

    let rules = Command::new(&promtool)
        .args(["check", "rules"])
        .arg(monitoring().join("alerts.yml"))
        .output()
        .expect("promtool check rules");
    assert!(
        rules.status.success(),
        "alerts.yml: {}{}",
        String::from_utf8_lossy(&rules.stdout),
        String::from_utf8_lossy(&rules.stderr)
    );
    let queries = dashboard_queries();
    assert!(queries.len() >= 8, "the dashboard has its panels");
    let rules_file = home.root().join("dashboard-rules.yml");
    let group = json!({"groups": [{"name": "dashboard", "rules": queries.iter().enumerate()
        .map(|(i, expr)| json!({"record": format!("gtc:dashboard_query_{i}"), "expr": expr}))
        .collect::<Vec<_>>()}]});
    std::fs::write(&rules_file, group.to_string()).expect("write rules");
    let checked = Command::new(&promtool)
        .args(["check", "rules"])
        .arg(&rules_file)
        .output()
        .expect("promtool check rules");
    assert!(
        checked.status.success(),
        "dashboard queries: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}

/// The body of `GET <path>` over HTTP/1.0, so Prometheus (Go's server)
/// answers without chunked encoding.
fn prometheus_get(addr: SocketAddr, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).ok()?;
    let text = String::from_utf8_lossy(&answer);
    text.split_once("\r\n\r\n").map(|(_, body)| body.to_owned())
}

/// Prometheus on a free port with `config`, stopped on drop.
struct Prometheus(Child, SocketAddr);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_prometheus(binary: &Path, dir: &Path, targets: &[SocketAddr]) -> Prometheus {
    std::fs::copy(monitoring().join("alerts.yml"), dir.join("alerts.yml")).expect("rules");
    let config = json!({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["alerts.yml"],
        "scrape_configs": [{"job_name": "gtc", "static_configs": [{"targets": targets.iter().map(ToString::to_string).collect::<Vec<_>>()}]}],
    });
    // JSON is YAML: Prometheus reads it as its configuration.
    std::fs::write(dir.join("prometheus.yml"), config.to_string()).expect("config");
    let listen = free_tcp();
    let child = Command::new(binary)
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={listen}"))
        .stdout(Stdio::null())
        .stderr(
            std::fs::File::create(dir.join("prometheus.log"))
                .map_or_else(|_| Stdio::null(), Stdio::from),
        )
        .spawn()
        .expect("start prometheus");
    eventually("prometheus to listen", || {
        prometheus_get(listen, "/-/ready").is_some_and(|body| body.contains("Ready"))
    });
    Prometheus(child, listen)
}

/// The `data.result` of an instant PromQL query, when it succeeded.
fn query(prometheus: SocketAddr, promql: &str) -> Option<Vec<Value>> {
    let mut encoded = String::new();
    for byte in promql.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    let body = prometheus_get(prometheus, &format!("/api/v1/query?query={encoded}"))?;
    let answer: Value = serde_json::from_str(body.trim()).ok()?;
    (answer["status"] == "success").then(|| {
        answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    })
}

#[test]
fn a_real_prometheus_scrapes_a_three_member_cluster() {
    // Proves: a cluster member's /metrics passes promtool (Raft and gossip
    // included); Prometheus scraping all three members answers each
    // router's generation and per-revision request rates; the alerting
    // rules load healthy and none fires on a healthy cluster; every
    // dashboard query runs.
    let Some((promtool, prometheus_binary)) = prometheus_tools() else {
        return;
    };
    let temp = tempfile::tempdir().expect("temp");
    let _reaper = Reaper(temp.path().to_owned());
    let (home, members) = three_members(temp.path(), true);
    let (deployment, revisions) = two_ready_revisions(&home, &members);
    let generation = set_split(&home, &members[0], &deployment, &revisions, 50, "prom-50");
    for member in &members {
        eventually("the router to serve the split", || {
            get(member.router).is_some_and(|(status, g, _)| status == 200 && g >= Some(generation))
        });
    }
    let member_metrics = http_get(members[1].admin, "/metrics").expect("member metrics");
    assert!(
        member_metrics.contains("# HELP gtc_raft_term "),
        "{member_metrics}"
    );
    assert_eq!(
        check_metrics(&promtool, &member_metrics),
        "",
        "a cluster member's metrics"
    );

    // Steady traffic through every router while Prometheus scrapes.
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = members
        .iter()
        .map(|member| {
            let (router, stop) = (member.router, Arc::clone(&stop));
            std::thread::spawn(move || {
                let deadline = Instant::now() + PROMETHEUS_WAIT;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    get(router);
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        })
        .collect();
    let dir = temp.path().join("prometheus");
    std::fs::create_dir_all(&dir).expect("prometheus folder");
    let admins: Vec<SocketAddr> = members.iter().map(|m| m.admin).collect();
    let prometheus = start_prometheus(&prometheus_binary, &dir, &admins);

    let committed = members[0].generation().expect("generation");
    let deadline = Instant::now() + PROMETHEUS_WAIT;
    let (generations, rates) = loop {
        let generations = query(prometheus.1, "gtc_router_generation").unwrap_or_default();
        let rates = query(
            prometheus.1,
            "sum by (instance, revision) (rate(gtc_http_requests_total[5s]))",
        )
        .unwrap_or_default();
        let on_committed = generations
            .iter()
            .filter(|s| {
                s["value"][1].as_str().and_then(|v| v.parse::<f64>().ok()) == Some(committed as f64)
            })
            .count();
        let flowing = rates
            .iter()
            .filter(|s| {
                s["value"][1]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok())
                    .is_some_and(|v| v > 0.0)
            })
            .count();
        if on_committed == 3 && flowing == 6 {
            break (generations, rates);
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not see 3 routers on generation {committed} and 2 revisions flowing through each: {generations:?} {rates:?} (log: {})",
            dir.join("prometheus.log").display()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    stop.store(true, Ordering::Relaxed);
    for thread in load {
        let _ = thread.join();
    }
    println!("each router's generation: {}", Value::Array(generations));
    println!(
        "per-revision request rates per router: {}",
        Value::Array(rates.clone())
    );
    for revision in &revisions {
        assert_eq!(
            rates
                .iter()
                .filter(|s| s["metric"]["revision"] == revision.as_str())
                .count(),
            3,
            "every router serves revision {revision}"
        );
    }

    let rules = prometheus_get(prometheus.1, "/api/v1/rules").expect("rules");
    let rules: Value = serde_json::from_str(rules.trim()).expect("rules json");
    let loaded: Vec<&Value> = rules["data"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|group| group["rules"].as_array().into_iter().flatten())
        .collect();
    assert_eq!(loaded.len(), 4, "{rules}");
    for rule in &loaded {
        assert_eq!(rule["health"], "ok", "{rule}");
        assert_ne!(
            rule["state"], "firing",
            "no alert fires on a healthy cluster: {rule}"
        );
    }
    for promql in dashboard_queries() {
        assert!(
            query(prometheus.1, &promql).is_some(),
            "the dashboard query {promql} failed"
        );
    }
}
