//! Three real `gtc node run` processes forming a cluster on loopback:
//! certificates from `gtc cluster init`/`issue-cert`, joins, a command
//! through a follower replicated everywhere, the leader SIGKILLed with
//! nothing acknowledged lost, and the killed member catching up.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn gtc() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gtc"))
}

fn run(home: &Path, args: &[&str]) -> (bool, Value, String) {
    let output = gtc()
        .args(args)
        .env("GREENTIC_HOME", home)
        .env_remove("GREENTIC_STORE_ROOT")
        .output()
        .expect("run gtc");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let value = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (
        output.status.success(),
        value,
        format!("{stdout}{}", String::from_utf8_lossy(&output.stderr)),
    )
}

fn free_tcp() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
}

fn free_udp() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("port")
}

struct Member {
    name: String,
    dir: PathBuf,
    raft: SocketAddr,
    admin: SocketAddr,
    router: SocketAddr,
    /// Encrypted gossip; `None` runs the member without it.
    gossip: Option<SocketAddr>,
    gossip_seed: Option<SocketAddr>,
    child: Option<Child>,
}

impl Member {
    fn start(&mut self, home: &Path, join: Option<SocketAddr>) {
        let mut command = gtc();
        command
            .args(["node", "run", "--log-format", "json", "--poll-ms", "1000"])
            .arg("--listen")
            .arg(self.router.to_string())
            .arg("--admin")
            .arg(self.admin.to_string())
            .arg("--cluster-dir")
            .arg(&self.dir)
            .arg("--raft-listen")
            .arg(self.raft.to_string())
            .env("GREENTIC_HOME", home)
            .env_remove("GREENTIC_STORE_ROOT")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(join) = join {
            command.arg("--join").arg(join.to_string());
        }
        if let Some(gossip) = self.gossip {
            command.arg("--gossip-listen").arg(gossip.to_string());
        }
        if let Some(seed) = self.gossip_seed {
            command.arg("--gossip-seed").arg(seed.to_string());
        }
        self.child = Some(command.spawn().expect("spawn node"));
        let node_file = self.store().join("local").join("node.json");
        eventually(&format!("{} to serve", self.name), || {
            node_file.exists() && std::net::TcpStream::connect(self.admin).is_ok()
        });
    }

    fn store(&self) -> PathBuf {
        self.dir.join("environments")
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn generation(&self) -> Option<u64> {
        let text =
            std::fs::read_to_string(self.store().join("local").join("environment.json")).ok()?;
        serde_json::from_str::<Value>(&text).ok()?["generation"].as_u64()
    }

    fn audit(&self) -> String {
        std::fs::read_to_string(
            self.store()
                .join("local")
                .join("audit")
                .join("events.jsonl"),
        )
        .unwrap_or_default()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Stops instances a SIGKILLed member left running (they belong to no live
/// node; a restarted member reaps its own), when the test ends.
struct Reaper(PathBuf);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = Command::new("pkill")
            .arg("-f")
            .arg(self.0.to_string_lossy().as_ref())
            .status();
    }
}

fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn add_bundle(home: &Path, member: &Member, bundle: &str) -> Value {
    let answers = home.join(format!("{bundle}.json"));
    std::fs::write(
        &answers,
        json!({"environment_id": "local", "bundle_id": bundle, "route_binding": {"path_prefixes": [format!("/{bundle}")]}}).to_string(),
    )
    .expect("answers");
    let store = member.store();
    let (ok, value, text) = run(
        home,
        &[
            "op",
            "bundles",
            "add",
            "--answers",
            answers.to_str().expect("utf8"),
            "--store-root",
            store.to_str().expect("utf8"),
        ],
    );
    assert!(ok, "bundles add through {} failed: {text}", member.name);
    value
}

#[test]
fn a_three_node_cluster_replicates_survives_a_killed_leader_and_catches_up() {
    // Proves: nodes join with certificates from `gtc cluster`, a command on a
    // follower reaches every replica with identical audit chains, killing
    // the leader (SIGKILL) loses no acknowledged command, and the killed
    // member catches up when it restarts.
    let temp = tempfile::tempdir().expect("temp");
    let _reaper = Reaper(temp.path().to_owned());
    let home = temp.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let dir = temp.path().join("cluster");
    let dir_text = dir.to_str().expect("utf8");
    let (ok, _, text) = run(
        &home,
        &["cluster", "init", "--dir", dir_text, "--name", "n1"],
    );
    assert!(ok, "cluster init: {text}");
    for name in ["n2", "n3"] {
        let (ok, _, text) = run(&home, &["cluster", "issue-cert", name, "--dir", dir_text]);
        assert!(ok, "issue-cert: {text}");
    }
    let mut members: Vec<Member> = ["n1", "n2", "n3"]
        .iter()
        .map(|name| Member {
            name: (*name).to_owned(),
            dir: dir.join(name),
            raft: free_udp(),
            admin: free_tcp(),
            router: free_tcp(),
            gossip: None,
            gossip_seed: None,
            child: None,
        })
        .collect();
    let seed = members[0].raft;
    members[0].start(&home, None);
    members[1].start(&home, Some(seed));
    members[2].start(&home, Some(seed));

    let status = |member: &Member| {
        let (ok, value, text) = run(
            &home,
            &[
                "cluster",
                "status",
                "--node-dir",
                member.dir.to_str().expect("utf8"),
            ],
        );
        assert!(ok, "status: {text}");
        value["result"].clone()
    };
    let first = status(&members[2]);
    assert_eq!(first["voters"].as_array().map(Vec::len), Some(3), "{first}");

    // A command through a follower, replicated everywhere.
    add_bundle(&home, &members[2], "shop");
    let target = members[2].generation();
    for member in &members {
        eventually("replication", || member.generation() == target);
    }
    assert_eq!(members[0].audit(), members[1].audit());
    assert_eq!(members[0].audit(), members[2].audit());

    // SIGKILL the leader; the others elect one and keep acknowledging.
    let leader_id = status(&members[0])["leader"].as_u64().expect("leader");
    let leader_name = status(&members[0])["members"][leader_id.to_string()]["name"]
        .as_str()
        .expect("leader name")
        .to_owned();
    let leader = members
        .iter()
        .position(|m| m.name == leader_name)
        .expect("leader member");
    members[leader].kill();
    let survivor = (leader + 1) % 3;
    let mut acknowledged = Vec::new();
    for i in 0..3 {
        let bundle = format!("after-kill-{i}");
        add_bundle(&home, &members[survivor], &bundle);
        acknowledged.push(bundle);
    }
    let other = (leader + 2) % 3;
    let target = members[survivor].generation();
    eventually("the other survivor", || {
        members[other].generation() == target
    });

    // The killed member restarts from its folder and catches up.
    let join = members[survivor].raft;
    members[leader].start(&home, Some(join));
    eventually("the restarted member to catch up", || {
        members[leader].generation() == target
    });
    let state = std::fs::read_to_string(
        members[leader]
            .store()
            .join("local")
            .join("environment.json"),
    )
    .expect("state");
    for bundle in &acknowledged {
        assert!(
            state.contains(bundle.as_str()),
            "{bundle} lost on the restarted member"
        );
    }
    assert_eq!(members[leader].audit(), members[survivor].audit());
}

fn demo_service() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_gtc")).with_file_name("demo-service");
    assert!(
        path.is_file(),
        "{} is missing: run the tests with `cargo test --workspace`",
        path.display()
    );
    path
}

/// A bundle of the example service with one instance.
fn example_bundle(home: &Path) -> PathBuf {
    let dir = home.join("src-shop");
    std::fs::create_dir_all(dir.join("bin")).expect("mkdir");
    std::fs::create_dir_all(dir.join("packs")).expect("mkdir");
    std::fs::copy(demo_service(), dir.join("bin/server")).expect("copy service");
    std::fs::write(
        dir.join("bundle.yaml"),
        "schema_version: 1\nbundle_id: shop\nruntime:\n  command: [bin/server]\n  health_path: /healthz\n  startup_timeout_seconds: 10\n  instances: 1\n",
    )
    .expect("manifest");
    std::fs::write(
        dir.join("packs/app.gtpack"),
        [
            b'P', b'K', 5, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ],
    )
    .expect("pack");
    let out = home.join("shop.gtbundle");
    let (ok, _, text) = run(
        home,
        &[
            "bundle",
            "build",
            dir.to_str().expect("utf8"),
            "-o",
            out.to_str().expect("utf8"),
        ],
    );
    assert!(ok, "bundle build: {text}");
    out
}

fn op(home: &Path, member: &Member, noun: &str, verb: &str, answers: Value) -> Value {
    let file = home.join(format!("{noun}-{verb}-{}.json", ulid_like()));
    std::fs::write(&file, answers.to_string()).expect("answers");
    let store = member.store();
    let (ok, value, text) = run(
        home,
        &[
            "op",
            noun,
            verb,
            "--answers",
            file.to_str().expect("utf8"),
            "--store-root",
            store.to_str().expect("utf8"),
        ],
    );
    assert!(
        ok,
        "op {noun} {verb} through {} failed: {text}",
        member.name
    );
    value
}

fn ulid_like() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// One GET through a router: status, generation header, revision header.
fn get(router: SocketAddr) -> Option<(u16, Option<u64>, Option<String>)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&router, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(b"GET /hello HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).ok()?;
    let text = String::from_utf8_lossy(&answer);
    let head = text.split("\r\n\r\n").next()?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let header = |name: &str| {
        head.lines()
            .find_map(|line| {
                line.split_once(':')
                    .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            })
            .map(|(_, v)| v.trim().to_owned())
    };
    Some((
        status,
        header("x-greentic-generation").and_then(|g| g.parse().ok()),
        header("x-greentic-revision"),
    ))
}

#[test]
fn every_router_serves_a_revision_that_runs_on_one_node_and_no_answer_leaves_the_split() {
    // Proves: with encrypted gossip, a revision whose instance runs on one
    // member is served through every member's router under the committed
    // split; a traffic change made on one member reaches all routers; under
    // load through all three routers while the leader is SIGKILLed, no
    // answer comes from a revision outside the committed split (failed
    // requests are counted and printed).
    let temp = tempfile::tempdir().expect("temp");
    let _reaper = Reaper(temp.path().to_owned());
    let home = temp.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let dir = temp.path().join("cluster");
    let dir_text = dir.to_str().expect("utf8");
    let (ok, _, text) = run(
        &home,
        &["cluster", "init", "--dir", dir_text, "--name", "n1"],
    );
    assert!(ok, "cluster init: {text}");
    for name in ["n2", "n3"] {
        let (ok, _, text) = run(&home, &["cluster", "issue-cert", name, "--dir", dir_text]);
        assert!(ok, "issue-cert: {text}");
    }
    let seed_gossip = free_udp();
    let mut members: Vec<Member> = ["n1", "n2", "n3"]
        .iter()
        .enumerate()
        .map(|(i, name)| Member {
            name: (*name).to_owned(),
            dir: dir.join(name),
            raft: free_udp(),
            admin: free_tcp(),
            router: free_tcp(),
            gossip: Some(if i == 0 { seed_gossip } else { free_udp() }),
            gossip_seed: (i > 0).then_some(seed_gossip),
            child: None,
        })
        .collect();
    let seed = members[0].raft;
    members[0].start(&home, None);
    members[1].start(&home, Some(seed));
    members[2].start(&home, Some(seed));

    // One deployment; two revisions staged and warmed on n1 (their bundles
    // are there), then a 50/50 split set through n2.
    let added = op(
        &home,
        &members[0],
        "bundles",
        "add",
        json!({"environment_id": "local", "bundle_id": "shop"}),
    );
    let deployment = added["result"]["deployment_id"]
        .as_str()
        .expect("deployment")
        .to_owned();
    let bundle = example_bundle(&home);
    let mut revisions = Vec::new();
    for _ in 0..2 {
        let staged = op(
            &home,
            &members[0],
            "revisions",
            "stage",
            json!({"environment_id": "local", "deployment_id": deployment, "bundle_path": bundle}),
        );
        let revision = staged["result"]["revision_id"]
            .as_str()
            .expect("revision")
            .to_owned();
        op(
            &home,
            &members[0],
            "revisions",
            "warm",
            json!({"environment_id": "local", "revision_id": revision}),
        );
        revisions.push(revision);
    }
    let state_of = |member: &Member| -> Value {
        std::fs::read_to_string(member.store().join("local").join("environment.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null)
    };
    eventually("both revisions to be ready", || {
        let state = state_of(&members[1]).to_string();
        state.matches("\"ready\"").count() >= 2
    });
    let split = op(
        &home,
        &members[1],
        "traffic",
        "set",
        json!({"environment_id": "local", "deployment_id": deployment, "idempotency_key": "split-1",
        "entries": [{"revision_id": revisions[0], "weight_percent": 50}, {"revision_id": revisions[1], "weight_percent": 50}]}),
    );
    let generation = split["generation"].as_u64().expect("generation");

    // Every router serves under the new generation, through n1's instances.
    for member in &members {
        eventually(
            &format!("{}'s router to serve generation {generation}", member.name),
            || matches!(get(member.router), Some((200, Some(g), Some(_))) if g >= generation),
        );
    }

    // Constant load through all three routers while the leader is killed.
    let stop = Arc::new(AtomicBool::new(false));
    let allowed: Vec<String> = revisions.clone();
    let loaders: Vec<_> = members
        .iter()
        .map(|member| {
            let router = member.router;
            let stop = Arc::clone(&stop);
            let allowed = allowed.clone();
            std::thread::spawn(move || {
                let (mut ok, mut failed, mut outside) = (0u32, 0u32, 0u32);
                while !stop.load(Ordering::Relaxed) {
                    match get(router) {
                        Some((200, _, Some(revision))) if allowed.contains(&revision) => ok += 1,
                        Some((200, _, _)) => outside += 1,
                        _ => failed += 1,
                    }
                }
                (ok, failed, outside)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let status: Value = {
        let (ok, value, text) = run(
            &home,
            &[
                "cluster",
                "status",
                "--node-dir",
                members[1].dir.to_str().expect("utf8"),
            ],
        );
        assert!(ok, "{text}");
        value["result"].clone()
    };
    let leader_id = status["leader"].as_u64().expect("leader");
    let leader_name = status["members"][leader_id.to_string()]["name"]
        .as_str()
        .expect("name")
        .to_owned();
    let leader = members
        .iter()
        .position(|m| m.name == leader_name)
        .expect("leader");
    members[leader].kill();
    std::thread::sleep(Duration::from_secs(4));
    stop.store(true, Ordering::Relaxed);
    let mut outside_total = 0;
    for (member, loader) in members.iter().zip(loaders) {
        let (ok, failed, outside) = loader.join().expect("loader");
        println!(
            "router {}: {ok} answered in the split, {failed} failed, {outside} outside the split",
            member.name
        );
        outside_total += outside;
    }
    assert_eq!(
        outside_total, 0,
        "an answer came from a revision outside the committed split"
    );
}
