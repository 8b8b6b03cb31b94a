//! A real node (`gtc node run`) running real instances of the example
//! service on loopback: warming that passes and fails, a measured 99/1
//! split, sticky sessions, a drain with requests in flight, a crashed
//! instance coming back, and the demo's zero-failure traffic shift.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{
    Home, Node, children, get, header, lifecycle, set_split, setup, setup_with, stage_and_warm,
    wait_generation, wait_until,
};
use serde_json::json;

/// A bundle of the example service; `env` goes into its runtime section.
fn example_bundle(home: &Home, name: &str, env: &[(&str, &str)], instances: u32) -> PathBuf {
    let env: String = env
        .iter()
        .map(|(k, v)| format!("    {k}: \"{v}\"\n"))
        .collect();
    let env = if env.is_empty() {
        String::new()
    } else {
        format!("  env:\n{env}")
    };
    common::service_bundle(
        home,
        name,
        "shop",
        &format!("{env}  startup_timeout_seconds: 5\n  instances: {instances}\n"),
    )
}

/// A revision of the example service with `instances`, ready and at 100 %
/// of `deployment` on `node`'s router; its id.
fn serve_at_full_weight(home: &Home, node: &Node, deployment: &str, instances: u32) -> String {
    let v1 = stage_and_warm(
        home,
        deployment,
        &example_bundle(home, "v1", &[], instances),
    );
    wait_until("ready", Duration::from_secs(20), || {
        lifecycle(home, &v1) == "ready"
    });
    let generation = set_split(
        home,
        deployment,
        "k",
        json!([{"revision_id": v1, "weight_percent": 100}]),
    );
    wait_generation(node, generation);
    v1
}

/// SIGKILLs the instance process `pid`.
fn kill_instance(pid: i32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill instance");
}

#[test]
fn warming_passes_for_a_healthy_bundle_and_fails_with_its_last_log_lines() {
    let (home, _node, deployment) = setup();
    let good = example_bundle(&home, "good", &[], 2);
    let revision = stage_and_warm(&home, &deployment, &good);
    wait_until("ready", Duration::from_secs(20), || {
        lifecycle(&home, &revision) == "ready"
    });

    let broken = example_bundle(&home, "broken", &[("DEMO_MODE", "exit-immediately")], 1);
    let failing = stage_and_warm(&home, &deployment, &broken);
    wait_until("failed", Duration::from_secs(20), || {
        lifecycle(&home, &failing) == "failed"
    });
    let listed = home.gtc(&["op", "revisions", "list", "local"]);
    let reason = listed.stdout["result"]["revisions"].to_string();
    assert!(
        reason.contains("exiting as asked"),
        "the failure carries the instance's last log lines: {reason}"
    );
}

#[test]
fn a_99_1_split_is_measured_and_sticky_sessions_hold() {
    let (home, node, deployment) = setup();
    let v1 = stage_and_warm(
        &home,
        &deployment,
        &example_bundle(&home, "v1", &[("DEMO_VERSION", "v1")], 1),
    );
    let v2 = stage_and_warm(
        &home,
        &deployment,
        &example_bundle(&home, "v2", &[("DEMO_VERSION", "v2")], 1),
    );
    wait_until("ready", Duration::from_secs(20), || {
        lifecycle(&home, &v1) == "ready" && lifecycle(&home, &v2) == "ready"
    });
    let generation = set_split(
        &home,
        &deployment,
        "k1",
        json!([{"revision_id": v1, "weight_bps": 9900}, {"revision_id": v2, "weight_bps": 100}]),
    );
    wait_generation(&node, generation);

    let total = 10_000;
    let mut canary = 0;
    for _ in 0..total {
        let (status, headers, _) = get(node.addr, "/", None).expect("request");
        assert_eq!(status, 200);
        if header(&headers, "x-greentic-revision") == Some(v2.as_str()) {
            canary += 1;
        }
    }
    // ±0.1 percentage point of 10 000 requests is ±10.
    assert!(
        (90..=110).contains(&canary),
        "the 1% revision served {canary} of {total}"
    );

    let (_, headers, _) = get(node.addr, "/", None).expect("request");
    let cookie = header(&headers, "set-cookie")
        .expect("cookie")
        .split(';')
        .next()
        .expect("pair")
        .to_owned();
    let pinned = header(&headers, "x-greentic-revision")
        .expect("revision")
        .to_owned();
    for _ in 0..1_000 {
        let (_, headers, _) = get(node.addr, "/", Some(&cookie)).expect("request");
        assert_eq!(
            header(&headers, "x-greentic-revision"),
            Some(pinned.as_str()),
            "sticky session flipped"
        );
    }
    let generation = set_split(
        &home,
        &deployment,
        "k2",
        json!([{"revision_id": v1, "weight_bps": 5000}, {"revision_id": v2, "weight_bps": 5000}]),
    );
    wait_generation(&node, generation);
    let (_, headers, _) = get(node.addr, "/", Some(&cookie)).expect("request");
    assert!(
        header(&headers, "set-cookie").is_some(),
        "a new split re-samples the session"
    );
}

#[test]
fn draining_lets_in_flight_requests_finish_then_goes_inactive() {
    let (home, node, deployment) = setup();
    let v1 = stage_and_warm(&home, &deployment, &example_bundle(&home, "v1", &[], 1));
    let v2 = stage_and_warm(&home, &deployment, &example_bundle(&home, "v2", &[], 1));
    wait_until("ready", Duration::from_secs(20), || {
        lifecycle(&home, &v1) == "ready" && lifecycle(&home, &v2) == "ready"
    });
    let generation = set_split(
        &home,
        &deployment,
        "all-v1",
        json!([{"revision_id": v1, "weight_percent": 100}]),
    );
    wait_generation(&node, generation);
    // Five slow responses in flight on v1: each streams for about 1.5 s,
    // and its thread says so once v1's response head has arrived...
    let addr = node.addr;
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let slow: Vec<_> = (0..5)
        .map(|_| {
            let started_tx = started_tx.clone();
            std::thread::spawn(move || stream_after_head(addr, STREAM_CHUNKS, started_tx))
        })
        .collect();
    for _ in 0..slow.len() {
        started_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("every slow response started on v1");
    }
    // ...while traffic moves to v2 and v1 drains.
    let generation = set_split(
        &home,
        &deployment,
        "all-v2",
        json!([{"revision_id": v2, "weight_percent": 100}]),
    );
    wait_generation(&node, generation);
    home.ok(
        "revisions",
        "drain",
        json!({"environment_id": "local", "revision_id": v1}),
    );
    for request in slow {
        let (status, headers, body) = request.join().expect("thread").expect("slow request");
        assert_eq!(status, 200, "an in-flight request was cut");
        assert_eq!(header(&headers, "x-greentic-revision"), Some(v1.as_str()));
        assert!(
            body.len() >= STREAM_CHUNKS * STREAM_CHUNK_BYTES,
            "an in-flight response was cut after {} bytes",
            body.len()
        );
    }
    wait_until("inactive", Duration::from_secs(20), || {
        lifecycle(&home, &v1) == "inactive"
    });
    let (status, headers, _) = get(node.addr, "/", None).expect("request");
    assert_eq!(
        (status, header(&headers, "x-greentic-revision")),
        (200, Some(v2.as_str()))
    );
}

/// Chunks of a slow `/stream` response: the demo service sends one every
/// 10 ms, so about 1.5 s in flight.
const STREAM_CHUNKS: usize = 150;
/// Bytes of one chunk of the demo service's `/stream`.
const STREAM_CHUNK_BYTES: usize = 1024;

/// Status, headers and raw (chunked) body of a streamed answer.
type StreamAnswer = (u16, Vec<(String, String)>, Vec<u8>);

/// `GET /stream?chunks=N`: sends `()` on `started` once the response head
/// has arrived (the request is then in flight on the revision it names),
/// then reads the whole (chunked) response.
fn stream_after_head(
    addr: SocketAddr,
    chunks: usize,
    started: std::sync::mpsc::Sender<()>,
) -> Result<StreamAnswer, String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET /stream?chunks={chunks} HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    let head_end = loop {
        let read = stream.read(&mut buffer).map_err(|e| e.to_string())?;
        if read == 0 {
            return Err("the connection closed before the response head".to_owned());
        }
        response.extend_from_slice(&buffer[..read]);
        if let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
    };
    let _ = started.send(());
    stream
        .read_to_end(&mut response)
        .map_err(|e| e.to_string())?;
    let (status, headers) = common::parse_head(&String::from_utf8_lossy(&response[..head_end]))?;
    Ok((status, headers, response[head_end + 4..].to_vec()))
}

#[test]
fn a_crashed_instance_is_restarted() {
    let (home, node, deployment) = setup();
    serve_at_full_weight(&home, &node, &deployment, 2);
    let before = children(node.pid());
    assert_eq!(before.len(), 2, "two instances run: {before:?}");
    kill_instance(before[0]);
    // Requests keep succeeding on the surviving instance (refused connections are retried)...
    for _ in 0..50 {
        let (status, _, body) = get(node.addr, "/", None).expect("request");
        assert_eq!(status, 200, "{body}");
    }
    // ...and the crashed one comes back as a new process.
    wait_until("the instance to come back", Duration::from_secs(20), || {
        let now = children(node.pid());
        now.len() == 2 && !now.contains(&before[0])
    });
    // The new process serves once it passed its health check.
    wait_until(
        "both instances to serve again",
        Duration::from_secs(20),
        || {
            let mut instances = std::collections::BTreeSet::new();
            for _ in 0..20 {
                if let Ok((200, _, body)) = get(node.addr, "/", None)
                    && let Ok(answer) = serde_json::from_str::<serde_json::Value>(&body)
                {
                    instances.insert(answer["instance"].as_str().unwrap_or("").to_owned());
                }
            }
            instances.len() == 2
        },
    );
    let (_, _, metrics) = get(node.admin, "/metrics", None).expect("metrics");
    assert!(
        metrics.contains("gtc_instance_restarts_total{"),
        "the restart is counted:\n{metrics}"
    );
}

#[test]
fn requests_are_held_while_the_only_instance_restarts() {
    // Proves: with `--hold-requests`, requests that arrive while a
    // revision's only instance is down (crashed, not yet restarted) wait
    // for the restarted instance instead of failing (0 failed), and the
    // wait is measured in gtc_router_cold_start_seconds.
    let (home, node, deployment) =
        setup_with(&["--hold-requests", "50", "--hold-wait-ms", "20000"]);
    let v1 = serve_at_full_weight(&home, &node, &deployment, 1);
    let before = children(node.pid());
    assert_eq!(before.len(), 1, "one instance runs: {before:?}");
    kill_instance(before[0]);
    // The router knows the revision has no ready instance...
    let none_ready = format!("gtc_instances_ready{{revision=\"{v1}\"}} 0");
    wait_until(
        "the router to drop the instance",
        Duration::from_secs(10),
        || get(node.admin, "/metrics", None).is_ok_and(|(_, _, text)| text.contains(&none_ready)),
    );
    // ...and requests sent now wait for the restarted one.
    let addr = node.addr;
    let clients: Vec<_> = (0..10)
        .map(|_| std::thread::spawn(move || get(addr, "/", None)))
        .collect();
    for client in clients {
        let (status, _, body) = client.join().expect("client").expect("answer");
        assert_eq!(status, 200, "{body}");
    }
    assert!(
        !children(node.pid()).contains(&before[0]),
        "a new process answered"
    );
    let (_, _, metrics) = get(node.admin, "/metrics", None).expect("metrics");
    let held = metrics
        .lines()
        .find(|line| line.starts_with("gtc_router_cold_start_seconds_count"))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|count| count.parse::<f64>().ok());
    assert!(
        held.is_some_and(|count| count >= 1.0),
        "held requests are measured: {held:?}\n{metrics}"
    );
}

#[test]
fn metrics_show_the_requests_in_flight_per_revision() {
    // Proves: /metrics reports the requests a revision has in flight at
    // the router when scraped (what autoscaling will measure), and 0 once
    // they are answered.
    let (home, node, deployment) = setup();
    let v1 = serve_at_full_weight(&home, &node, &deployment, 1);
    let series = |state: &str| {
        format!("gtc_router_in_flight_requests{{revision=\"{v1}\",state=\"{state}\"}}")
    };
    let value = |text: &str, state: &str| -> Option<f64> {
        let wanted = series(state);
        text.lines()
            .find(|line| line.starts_with(&wanted))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse().ok())
    };
    let addr = node.addr;
    let slow: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(move || get(addr, "/slow?ms=2000", None)))
        .collect();
    wait_until("two requests in flight", Duration::from_secs(5), || {
        get(node.admin, "/metrics", None)
            .is_ok_and(|(_, _, text)| value(&text, "served") == Some(2.0))
    });
    let (_, _, text) = get(node.admin, "/metrics", None).expect("metrics");
    assert_eq!(value(&text, "held"), Some(0.0), "{text}");
    for request in slow {
        let (status, _, body) = request.join().expect("client").expect("answer");
        assert_eq!(status, 200, "{body}");
    }
    let (_, _, text) = get(node.admin, "/metrics", None).expect("metrics");
    assert_eq!(value(&text, "served"), Some(0.0), "{text}");
}

#[test]
fn the_demo_shifts_traffic_without_a_failed_request() {
    let home = Home::new();
    let demo = home.gtc(&["demo", "--requests", "2000"]);
    let text = String::from_utf8_lossy(&demo.raw.stdout).into_owned();
    assert_eq!(
        demo.code,
        0,
        "{text}\n{}",
        String::from_utf8_lossy(&demo.raw.stderr)
    );
    assert!(
        text.contains("failed requests: 0")
            && text.contains(", 0 failed;")
            && text.contains("demo OK"),
        "{text}"
    );
}

/// Sends raw bytes, returns whatever the node answers before closing.
fn raw(addr: SocketAddr, bytes: &[u8], pause: Duration) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let _ = stream.write_all(bytes);
    std::thread::sleep(pause);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn bad_input_gets_a_4xx_and_never_takes_the_node_down() {
    let home = Home::new();
    home.gtc(&["op", "env", "init"]);
    let node = Node::start_with(&home, &["--header-timeout-ms", "500"]);
    let addr = node.addr;

    let malformed = raw(addr, b"THIS IS NOT HTTP\r\n\r\n", Duration::ZERO);
    assert!(
        malformed.starts_with("HTTP/1.1 400"),
        "malformed request: {malformed:?}"
    );
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(200 * 1024)
    );
    let oversized = raw(addr, huge.as_bytes(), Duration::ZERO);
    assert!(
        oversized.starts_with("HTTP/1.1 431") || oversized.starts_with("HTTP/1.1 400"),
        "oversized headers: {:?}",
        &oversized[..oversized.len().min(80)]
    );
    let slow = raw(
        addr,
        b"GET / HTTP/1.1\r\nHost: x\r\n",
        Duration::from_millis(1500),
    );
    assert!(
        slow.starts_with("HTTP/1.1 408") || slow.is_empty(),
        "slow client: {slow:?}"
    );
    // The node still answers.
    let (status, _, body) = get(node.addr, "/", None).expect("request after bad input");
    assert!(
        status == 404 && body.contains("no-route"),
        "{status} {body}"
    );
}

#[test]
fn a_port_already_in_use_is_named() {
    let home = Home::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let run = home
        .command()
        .args([
            "node",
            "run",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin",
            "127.0.0.1:0",
        ])
        .output()
        .expect("run");
    assert_ne!(run.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains(&format!("port {port}")) && stderr.contains("already in use"),
        "{stderr}"
    );
}

#[test]
fn op_goes_through_a_running_node_and_falls_back_to_the_store() {
    // Proves: with a node running, `gtc op` sends its command to the node
    // (which applies it through the same store); errors keep their kind;
    // without a node, the store is used directly.
    let (home, node, _deployment) = setup();
    let through = home.mutate(
        "env",
        "update",
        json!({"environment_id": "local", "region": "eu"}),
    );
    assert_eq!(through.code, 0, "{}", through.stderr);
    assert_eq!(through.stdout["via"], "node");
    let refused = home.mutate(
        "env",
        "update",
        json!({"environment_id": "local", "public_base_url": "ftp://x"}),
    );
    assert_eq!(
        (refused.code, refused.error_kind()),
        (1, "spec"),
        "{}",
        refused.stderr
    );
    let node_file = home.root().join("local/node.json");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&node_file)
            .expect("node file")
            .permissions(),
    );
    assert_eq!(
        mode & 0o777,
        0o600,
        "the node file holds a token: owner only"
    );
    drop(node);
    let direct = home.mutate(
        "env",
        "update",
        json!({"environment_id": "local", "region": "us"}),
    );
    assert_eq!(direct.code, 0, "{}", direct.stderr);
    assert!(direct.stdout.get("via").is_none(), "{}", direct.stdout);
    assert!(!node_file.exists(), "a stopped node removes its node file");
}

#[test]
fn metrics_report_requests_split_and_generation() {
    // Proves: /metrics on the admin listener exposes Prometheus series for
    // requests by revision and status class, the desired split, ready
    // instances and the committed generation.
    let (home, node, deployment) = setup();
    let v1 = stage_and_warm(&home, &deployment, &example_bundle(&home, "v1", &[], 1));
    wait_until("ready", Duration::from_secs(20), || {
        lifecycle(&home, &v1) == "ready"
    });
    let generation = set_split(
        &home,
        &deployment,
        "m",
        json!([{"revision_id": v1, "weight_percent": 100}]),
    );
    wait_generation(&node, generation);
    for _ in 0..5 {
        get(node.addr, "/", None).expect("request");
    }
    let (status, _, text) = get(node.admin, "/metrics", None).expect("metrics");
    assert_eq!(status, 200);
    for needle in [
        "gtc_http_requests_total{",
        &format!("revision=\"{v1}\""),
        "status_class=\"2xx\"",
        "gtc_http_request_duration_seconds_bucket",
        "gtc_split_desired_ratio",
        "gtc_instances_ready",
        &format!("gtc_instances{{revision=\"{v1}\",state=\"ready\"}} 1"),
        "gtc_router_generation",
        "gtc_store_generation",
    ] {
        assert!(text.contains(needle), "/metrics lacks {needle}:\n{text}");
    }
}

#[test]
fn instances_left_by_a_killed_node_are_stopped_when_it_restarts() {
    // Proves: instances outlive a SIGKILLed node (they keep serving), and a
    // node restarted on the same store stops them and starts its own, so no
    // orphan is left holding a port.
    let (home, mut node, deployment) = setup();
    let v1 = stage_and_warm(&home, &deployment, &example_bundle(&home, "v1", &[], 1));
    wait_until("ready", Duration::from_secs(20), || {
        lifecycle(&home, &v1) == "ready"
    });
    let orphans = children(node.pid());
    assert_eq!(orphans.len(), 1, "one instance runs: {orphans:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(node.pid()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill node");
    let _ = node.child.wait();
    let alive = |pid: i32| std::path::Path::new(&format!("/proc/{pid}")).exists();
    assert!(alive(orphans[0]), "the instance outlived its node");
    let restarted = Node::start(&home);
    wait_until("the orphan to be stopped", Duration::from_secs(20), || {
        !alive(orphans[0])
            || std::fs::read_to_string(format!("/proc/{}/stat", orphans[0]))
                .is_ok_and(|stat| stat.contains(") Z "))
    });
    wait_until("a new instance", Duration::from_secs(20), || {
        children(restarted.pid()).len() == 1
    });
    drop(node);
}

/// Every string in `value` with its JSON path.
fn strings<'a>(value: &'a serde_json::Value, path: String, out: &mut Vec<(String, &'a str)>) {
    match value {
        serde_json::Value::String(text) => out.push((path, text)),
        serde_json::Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                strings(item, format!("{path}[{index}]"), out);
            }
        }
        serde_json::Value::Object(map) => {
            for (key, item) in map {
                strings(item, format!("{path}.{key}"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn no_placeholder_values_in_committed_state() {
    // Proves (issue 20 item 8): while a node serves the environment,
    // `env doctor` says `has_runtime: true` and `config show` shows the
    // runtime the node's deployer wrote (its revisions and instances); no
    // digest in the committed state is the `sha256:00` placeholder; every
    // revision's `config_digest` is the hash of its configuration and pack
    // list; every `revenue_policy_ref` names a file that exists and holds
    // the deployment's revenue share, and a changed share is a new version.
    // When the node stops, the runtime is gone again.
    let (home, node, deployment) = setup();
    let revision = stage_and_warm(
        &home,
        &deployment,
        &example_bundle(&home, "placeholders", &[], 1),
    );
    wait_until("ready", Duration::from_secs(20), || {
        lifecycle(&home, &revision) == "ready"
    });
    let generation = set_split(
        &home,
        &deployment,
        "all",
        json!([{"revision_id": revision, "weight_bps": 10000}]),
    );
    wait_generation(&node, generation);
    let (status, _, _) = get(node.addr, "/", None).expect("request");
    assert_eq!(status, 200, "the node serves the environment");

    wait_until("runtime.json", Duration::from_secs(10), || {
        home.gtc(&["op", "env", "doctor", "local"]).stdout["result"]["has_runtime"] == true
    });
    let shown = home.gtc(&["op", "config", "show", "local"]);
    let runtime = &shown.stdout["result"]["runtime"];
    assert_eq!(runtime["schema"], "greentic.environment-runtime.v1");
    assert_eq!(runtime["environment_id"], "local");
    assert!(
        runtime["generated_by"]
            .as_str()
            .is_some_and(|kind| kind.starts_with("greentic.deployer.")),
        "{runtime}"
    );
    wait_until(
        "the runtime lists the instance",
        Duration::from_secs(10),
        || {
            let shown = home.gtc(&["op", "config", "show", "local"]);
            shown.stdout["result"]["runtime"]["discovered"]["revisions"][&revision]["instances"]
                .as_array()
                .is_some_and(|instances| instances.len() == 1)
        },
    );

    // A changed revenue share is a new version of the policy.
    home.ok(
        "bundles",
        "update",
        json!({"environment_id": "local", "deployment_id": deployment, "revenue_share": [{"party_id": "greentic", "basis_points": 7000}, {"party_id": "acme", "basis_points": 3000}]}),
    );

    let env_dir = home.root().join("local");
    let text = std::fs::read_to_string(env_dir.join("environment.json")).expect("state");
    let state: serde_json::Value = serde_json::from_str(&text).expect("state json");
    let mut found = Vec::new();
    strings(&state, String::new(), &mut found);
    let placeholders: Vec<_> = found
        .iter()
        .filter(|(_, text)| *text == "sha256:00")
        .collect();
    assert!(
        placeholders.is_empty(),
        "placeholder digests: {placeholders:?}"
    );
    for revision in state["environment"]["revisions"]
        .as_array()
        .expect("revisions")
    {
        let digest = revision["config_digest"].as_str().expect("config_digest");
        assert_eq!(digest.len(), "sha256:".len() + 64, "{digest}");
    }
    let deployments = state["environment"]["bundles"].as_array().expect("bundles");
    assert!(!deployments.is_empty());
    for deployment in deployments {
        let reference = deployment["revenue_policy_ref"].as_str().expect("ref");
        assert!(reference.ends_with("/v2.json"), "{reference}");
        let policy: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(env_dir.join(reference))
                .unwrap_or_else(|error| panic!("{reference} is written: {error}")),
        )
        .expect("policy json");
        assert_eq!(policy["revenue_share"], deployment["revenue_share"]);
        assert_eq!(policy["version"], 2);
        let first = reference.replace("/v2.json", "/v1.json");
        let first: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(env_dir.join(&first)).expect("v1 stays"))
                .expect("policy json");
        assert_eq!(
            first["revenue_share"],
            json!([{"party_id": "greentic", "basis_points": 10000}])
        );
    }

    drop(node);
    let doctor = home.gtc(&["op", "env", "doctor", "local"]);
    assert_eq!(
        doctor.stdout["result"]["has_runtime"], false,
        "the node stopped"
    );
}

/// The environment's committed generation, as `env show` reads it.
fn state_generation_of(home: &Home) -> u64 {
    home.gtc(&["op", "env", "show", "local"]).stdout["result"]["generation"]
        .as_u64()
        .expect("generation")
}

/// Which revision answered each of `count` requests: (v1's, v2's).
fn shares(node: &Node, v1: &str, v2: &str, count: usize) -> (usize, usize) {
    let (mut first, mut second) = (0, 0);
    for _ in 0..count {
        let (status, headers, _) = get(node.addr, "/", None).expect("request");
        assert_eq!(status, 200);
        match header(&headers, "x-greentic-revision") {
            Some(r) if r == v1 => first += 1,
            Some(r) if r == v2 => second += 1,
            other => panic!("answered by {other:?}"),
        }
    }
    (first, second)
}

#[test]
fn a_rollout_moves_the_router_step_by_step_and_an_abort_sends_everything_back() {
    let (home, node, deployment) = setup();
    let v1 = stage_and_warm(
        &home,
        &deployment,
        &example_bundle(&home, "v1", &[("DEMO_VERSION", "v1")], 1),
    );
    let v2 = stage_and_warm(
        &home,
        &deployment,
        &example_bundle(&home, "v2", &[("DEMO_VERSION", "v2")], 1),
    );
    wait_until("ready", Duration::from_secs(20), || {
        lifecycle(&home, &v1) == "ready" && lifecycle(&home, &v2) == "ready"
    });
    let generation = set_split(
        &home,
        &deployment,
        "k1",
        json!([{"revision_id": v1, "weight_bps": 10_000}]),
    );
    wait_generation(&node, generation);
    let start = |key: &str, steps: serde_json::Value| {
        json!({"environment_id": "local", "deployment_id": deployment, "candidate_revision_id": v2,
               "idempotency_key": key, "steps": steps,
               "analysis": {"min_requests": 100, "checks": [{"metric": "error-rate", "max_bps": 100}]}})
    };

    // Bad input: steps that do not increase.
    let bad = home.mutate(
        "rollouts",
        "start",
        start(
            "r0",
            json!([{"weight_bps": 500, "until": {"kind": "manual"}}, {"weight_bps": 500, "until": {"kind": "manual"}}]),
        ),
    );
    assert_ne!(bad.code, 0);
    assert!(
        bad.error_message().contains("steps[1].weight_bps"),
        "{}",
        bad.error_message()
    );

    // The plan first: what would change, nothing written.
    let generation_before = state_generation_of(&home);
    let planned = home.gtc(&[
        "op",
        "rollouts",
        "start",
        "--plan",
        "--answers",
        home.write(
            "plan.json",
            &start(
                "r1",
                json!([{"weight_bps": 1_000, "until": {"kind": "pause", "seconds": 1}},
                       {"weight_bps": 5_000, "until": {"kind": "manual"}}]),
            )
            .to_string(),
        )
        .to_str()
        .expect("utf8"),
    ]);
    assert_eq!(planned.code, 0, "{}", planned.error_message());
    let change = &planned.stdout["result"]["changes"][0];
    assert_eq!(
        change["before"],
        json!([{"revision_id": v1, "weight_bps": 10_000, "tag": null}])
    );
    assert_eq!(
        change["after"],
        json!([{"revision_id": v1, "weight_bps": 9_000, "tag": null}, {"revision_id": v2, "weight_bps": 1_000, "tag": null}])
    );
    assert_eq!(planned.stdout["result"]["written"], false);
    assert_eq!(
        state_generation_of(&home),
        generation_before,
        "a plan writes nothing"
    );
    // A plan of a split with a revision that is not there is the refusal.
    let refused = home.gtc(&[
        "op",
        "traffic",
        "plan",
        "--answers",
        home.write(
            "bad-plan.json",
            &json!({"environment_id": "local", "deployment_id": deployment, "idempotency_key": "p",
                    "entries": [{"revision_id": "01J0000000000000000000000R", "weight_bps": 10_000}]})
            .to_string(),
        )
        .to_str()
        .expect("utf8"),
    ]);
    assert_ne!(refused.code, 0);
    assert_eq!(
        refused.error_kind(),
        "not-found",
        "{}",
        refused.error_message()
    );

    // 10 % for a 1 s pause, then 50 % until a person resumes.
    home.ok(
        "rollouts",
        "start",
        start(
            "r1",
            json!([{"weight_bps": 1_000, "until": {"kind": "pause", "seconds": 1}},
                   {"weight_bps": 5_000, "until": {"kind": "manual"}}]),
        ),
    );
    let show = || {
        home.gtc(&[
            "op",
            "rollouts",
            "show",
            "local",
            "--deployment",
            &deployment,
        ])
    };
    wait_until(
        "the controller to end the pause",
        Duration::from_secs(20),
        || {
            let shown = show();
            shown.stdout["result"]["step"] == 1 && shown.stdout["result"]["state"] == "paused"
        },
    );
    let shown = show().stdout["result"].clone();
    let advanced = shown["history"]
        .as_array()
        .and_then(|h| h.iter().find(|e| e["what"] == "advanced"))
        .expect("the advance is in the history")
        .clone();
    assert_eq!(advanced["by"], format!("rollout:{deployment}"));
    assert!(
        home.audit_lines("local")
            .iter()
            .any(|line| line.contains(&format!("rollout:{deployment}")) && line.contains("decide")),
        "the controller's step is audited as the rollout's"
    );
    // The rollout owns the split: a person's own split is refused.
    let manual = home.mutate(
        "traffic",
        "set",
        json!({"environment_id": "local", "deployment_id": deployment, "idempotency_key": "k2",
               "entries": [{"revision_id": v1, "weight_bps": 10_000}]}),
    );
    assert_ne!(manual.code, 0);
    assert!(
        manual.error_message().contains("owns its split"),
        "{}",
        manual.error_message()
    );
    let state_generation = |home: &Home| {
        home.gtc(&["op", "env", "show", "local"]).stdout["result"]["generation"]
            .as_u64()
            .expect("generation")
    };
    wait_generation(&node, state_generation(&home));
    let (_, candidate) = shares(&node, &v1, &v2, 2_000);
    assert!(
        (980..=1_020).contains(&candidate),
        "the 50 % step sent {candidate} of 2000 to the candidate"
    );

    // An abort: everything back to the stable revision, at once.
    let aborted = home.mutate(
        "rollouts",
        "abort",
        json!({"environment_id": "local", "deployment_id": deployment, "reason": "test"}),
    );
    assert_eq!(aborted.code, 0, "{}", aborted.error_message());
    wait_generation(
        &node,
        aborted.stdout["generation"].as_u64().expect("generation"),
    );
    assert_eq!(shares(&node, &v1, &v2, 200), (200, 0));
    assert_eq!(show().stdout["result"]["state"], "aborted");
    let listed = home.gtc(&["op", "rollouts", "list", "local"]);
    assert_eq!(listed.stdout["result"]["rollouts"][0]["state"], "aborted");
}

/// Sends GETs through the node's router until dropped.
struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = get(addr, "/", None);
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn analysis_promotes_a_good_candidate_rolls_back_a_bad_one_and_holds_on_too_little_data() {
    let (home, node, deployment) = setup();
    let stable = stage_and_warm(
        &home,
        &deployment,
        &example_bundle(&home, "v1", &[("DEMO_VERSION", "v1")], 1),
    );
    let good = stage_and_warm(
        &home,
        &deployment,
        &example_bundle(&home, "v2", &[("DEMO_VERSION", "v2")], 1),
    );
    let bad = stage_and_warm(
        &home,
        &deployment,
        &example_bundle(&home, "v3", &[("DEMO_FAIL_PERCENT", "10")], 1),
    );
    wait_until("ready", Duration::from_secs(30), || {
        [&stable, &good, &bad]
            .iter()
            .all(|r| lifecycle(&home, r) == "ready")
    });
    let generation = set_split(
        &home,
        &deployment,
        "k1",
        json!([{"revision_id": stable, "weight_bps": 10_000}]),
    );
    wait_generation(&node, generation);
    let _load = Load::start(node.addr);
    let show = || {
        home.gtc(&[
            "op",
            "rollouts",
            "show",
            "local",
            "--deployment",
            &deployment,
        ])
        .stdout["result"]
            .clone()
    };
    let start = |key: &str, candidate: &str, min_requests: u64| {
        home.ok(
            "rollouts",
            "start",
            json!({"environment_id": "local", "deployment_id": deployment, "candidate_revision_id": candidate,
                   "idempotency_key": key,
                   "steps": [{"weight_bps": 5_000, "until": {"kind": "analysis"}}],
                   "analysis": {"window_seconds": 10, "min_requests": min_requests, "hold_limit_seconds": 600,
                                "checks": [{"metric": "error-rate", "max_bps": 100},
                                           {"metric": "p99-latency", "max_ms": 2_000}]}}),
        )
    };
    let wait_state = |state: &str| {
        wait_until(
            &format!("the rollout to be {state}"),
            Duration::from_secs(60),
            || show()["state"] == state,
        );
    };

    // A clean candidate passes its window and is promoted.
    start("good", &good, 50);
    wait_state("promoted");
    let history = show()["history"].clone();
    let advanced = history
        .as_array()
        .and_then(|h| h.iter().find(|e| e["what"] == "advanced"))
        .expect("advanced")
        .clone();
    assert_eq!(advanced["by"], format!("rollout:{deployment}"));
    assert!(
        advanced["analysis"]["candidate"]["requests"]
            .as_u64()
            .is_some_and(|n| n >= 50),
        "{advanced}"
    );

    // One failing 10 % of its requests is rolled back within two analysis
    // windows (mid-window, as soon as the part measured fails), and then
    // gets none.
    let started = Instant::now();
    start("bad", &bad, 50);
    wait_state("rolled-back");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(20),
        "rolled back after {took:?}, more than two 10 s windows"
    );
    let rolled = show()["history"]
        .as_array()
        .and_then(|h| h.iter().find(|e| e["what"] == "rolled-back"))
        .expect("rolled back")
        .clone();
    assert!(
        rolled["reason"]
            .as_str()
            .is_some_and(|r| r.contains("error rate")),
        "{rolled}"
    );
    let generation = home.gtc(&["op", "env", "show", "local"]).stdout["result"]["generation"]
        .as_u64()
        .expect("generation");
    wait_generation(&node, generation);
    let (to_good, to_bad) = shares(&node, &good, &bad, 200);
    assert_eq!(
        (to_good, to_bad),
        (200, 0),
        "the stable revision serves all"
    );

    // Too little data for a verdict: holding, never promoted.
    start("thin", &stable, 1_000_000_000);
    wait_state("holding");
    let held = show();
    assert_eq!(held["step"], 0);
    assert_eq!(held["candidate_weight_bps"], 5_000);
    home.ok(
        "rollouts",
        "abort",
        json!({"environment_id": "local", "deployment_id": deployment}),
    );
}

#[test]
fn an_archived_revision_reports_no_instances_in_its_gauges() {
    // Proves: once a ready revision is archived (its actor stopped without
    // a drain) its instance gauges read 0 for every state; they used to
    // keep the last count after the instances had gone, as if it still ran.
    let (home, node, deployment) = setup();
    let v1 = stage_and_warm(&home, &deployment, &example_bundle(&home, "v1", &[], 1));
    wait_until("ready", Duration::from_secs(20), || {
        lifecycle(&home, &v1) == "ready"
    });
    let ready_line =
        |count: u32| format!("gtc_instances{{revision=\"{v1}\",state=\"ready\"}} {count}");
    let shows = |line: &str| {
        get(node.admin, "/metrics", None).is_ok_and(|(_, _, text)| text.contains(line))
    };
    wait_until(
        "one ready instance counted",
        Duration::from_secs(10),
        || shows(&ready_line(1)),
    );
    home.ok(
        "revisions",
        "archive",
        json!({"environment_id": "local", "revision_id": v1}),
    );
    wait_until("archived", Duration::from_secs(30), || {
        lifecycle(&home, &v1) == "archived"
    });
    wait_until("the gauges at 0", Duration::from_secs(10), || {
        shows(&ready_line(0))
            && shows(&format!(
                "gtc_instances{{revision=\"{v1}\",state=\"running\"}} 0"
            ))
    });
}
