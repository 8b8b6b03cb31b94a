//! Helpers for tests and benchmarks that run real `gtc` cluster members
//! on loopback.
#![allow(dead_code)]

// A test binary that includes `common` too loads this file twice: the
// same function under two paths, which is harmless.
#[allow(clippy::duplicate_mod)]
#[path = "../support/wait.rs"]
mod wait;
// Not every test binary that includes this module waits.
#[allow(unused_imports)]
pub use wait::wait_until;

use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub fn gtc() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gtc"))
}

pub fn run(home: &Path, args: &[&str]) -> (bool, Value, String) {
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

// Members' ports come from below the kernel's ephemeral range, each handed
// out once per test binary (see `testkit::free_port`).
pub use testkit::{free_tcp, free_udp};

/// The last `lines` lines of a log file (empty when it cannot be read).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub struct Member {
    pub name: String,
    pub dir: PathBuf,
    pub raft: SocketAddr,
    pub admin: SocketAddr,
    pub router: SocketAddr,
    /// Encrypted gossip; `None` runs the member without it.
    pub gossip: Option<SocketAddr>,
    pub gossip_seed: Option<SocketAddr>,
    pub child: Option<Child>,
}

impl Member {
    pub fn start(&mut self, home: &Path, join: Option<SocketAddr>) {
        self.start_with(home, join, &[]);
    }

    /// Starts the member with extra `gtc node run` arguments.
    pub fn start_with(&mut self, home: &Path, join: Option<SocketAddr>, extra: &[&str]) {
        self.start_with_env(home, join, extra, &[]);
    }

    /// Starts the member with extra arguments and environment variables.
    pub fn start_with_env(
        &mut self,
        home: &Path,
        join: Option<SocketAddr>,
        extra: &[&str],
        env: &[(&str, &Path)],
    ) {
        let mut command = gtc();
        command.envs(env.iter().copied());
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
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.join("node.log"))
                    .map_or_else(|_| Stdio::null(), Stdio::from),
            );
        if let Some(join) = join {
            command.arg("--join").arg(join.to_string());
        }
        command.args(extra);
        if let Some(gossip) = self.gossip {
            command.arg("--gossip-listen").arg(gossip.to_string());
        }
        if let Some(seed) = self.gossip_seed {
            command.arg("--gossip-seed").arg(seed.to_string());
        }
        let child = self.child.insert(command.spawn().expect("spawn node"));
        if extra.contains(&"--no-bootstrap") {
            // It serves only once a member added it (`gtc cluster join`).
            return;
        }
        let node_file = self
            .dir
            .join("environments")
            .join("local")
            .join("node.json");
        let (name, admin, log) = (&self.name, self.admin, self.dir.join("node.log"));
        eventually(&format!("{name} to serve"), || {
            // A member that exited (a port another process took meanwhile,
            // say) fails the wait at once, with what it said.
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "{name} exited ({status}) before serving; the end of {}:\n{}",
                    log.display(),
                    log_tail(&log, 30)
                );
            }
            node_file.exists() && std::net::TcpStream::connect(admin).is_ok()
        });
    }

    /// Waits until the member serves its admin API (after it was added).
    pub fn wait_serving(&self) {
        let node_file = self.store().join("local").join("node.json");
        eventually(&format!("{} to serve", self.name), || {
            node_file.exists() && std::net::TcpStream::connect(self.admin).is_ok()
        });
    }

    pub fn store(&self) -> PathBuf {
        self.dir.join("environments")
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn generation(&self) -> Option<u64> {
        let text =
            std::fs::read_to_string(self.store().join("local").join("environment.json")).ok()?;
        serde_json::from_str::<Value>(&text).ok()?["generation"].as_u64()
    }

    pub fn audit(&self) -> String {
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
/// node; a restarted member reaps its own), when the test ends: every
/// instance records a pid file beside its logs, and the deployer's own
/// `reap_orphans` kills the recorded process groups that are still the same
/// processes. Nothing else on the machine is touched.
pub struct Reaper(pub PathBuf);

/// Folders under `root` that hold instance pid files, at most `depth` deep.
fn pid_file_dirs(root: &Path, depth: usize, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    let mut holds_pid_file = false;
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(kind) if kind.is_dir() && depth > 0 => pid_file_dirs(&path, depth - 1, found),
            Ok(kind) if kind.is_file() => {
                holds_pid_file |= path.extension().is_some_and(|ext| ext == "pid");
            }
            _ => {}
        }
    }
    if holds_pid_file {
        found.push(root.to_owned());
    }
}

/// Keeps the test's folder (and the members' `node.log`) when set, for
/// debugging: `GTC_KEEP_CLUSTER_TEST=1`.
pub fn keep_folder() -> bool {
    std::env::var_os("GTC_KEEP_CLUSTER_TEST").is_some()
}

impl Drop for Reaper {
    fn drop(&mut self) {
        // members/<name>/environments/<env>/revisions/<id>/logs, with room.
        let mut dirs = Vec::new();
        pid_file_dirs(&self.0, 10, &mut dirs);
        for dir in dirs {
            local_process::reap_orphans(&dir);
        }
    }
}

/// How long a cluster test waits for a condition: elections, replication
/// and gossip on a loaded machine take seconds, not milliseconds.
pub const CLUSTER_WAIT: Duration = Duration::from_secs(60);

/// [`wait_until`] with the cluster tests' [`CLUSTER_WAIT`].
pub fn eventually(what: &str, check: impl FnMut() -> bool) {
    wait_until(what, CLUSTER_WAIT, check);
}

pub fn add_bundle(home: &Path, member: &Member, bundle: &str) -> Value {
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

pub fn demo_service() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_gtc")).with_file_name("demo-service");
    assert!(
        path.is_file(),
        "{} is missing: run the tests with `cargo test --workspace`",
        path.display()
    );
    path
}

/// A bundle of the example service with one instance.
pub fn example_bundle(home: &Path) -> PathBuf {
    example_bundle_with(home, 1)
}

/// A bundle of the example service asking for `instances` instances.
pub fn example_bundle_with(home: &Path, instances: u32) -> PathBuf {
    bundle_of(home, &demo_service(), instances)
}

/// A bundle running `service` (a build of the example service) with
/// `instances` instances.
pub fn bundle_of(home: &Path, service: &Path, instances: u32) -> PathBuf {
    bundle_with(
        home,
        service,
        &format!("shop-{instances}"),
        &format!("  startup_timeout_seconds: 10\n  instances: {instances}\n"),
    )
}

/// A bundle `name` of `shop` running `service`, whose runtime section ends
/// with `runtime_tail` (YAML lines indented by two spaces).
pub fn bundle_with(home: &Path, service: &Path, name: &str, runtime_tail: &str) -> PathBuf {
    let dir = home.join(format!("src-{name}"));
    std::fs::create_dir_all(dir.join("bin")).expect("mkdir");
    std::fs::copy(service, dir.join("bin/server")).expect("copy service");
    build_bundle(
        home,
        name,
        &format!(
            "schema_version: 1\nbundle_id: shop\nruntime:\n  command: [bin/server]\n  health_path: /healthz\n{runtime_tail}"
        ),
    )
}

/// Writes `manifest` as the `bundle.yaml` of bundle `name`'s folder
/// (`src-<name>`, beside whatever the caller put there) with an empty ZIP
/// as its one pack, and builds it with `gtc bundle build`; the bundle.
pub fn build_bundle(home: &Path, name: &str, manifest: &str) -> PathBuf {
    let dir = home.join(format!("src-{name}"));
    std::fs::create_dir_all(dir.join("packs")).expect("mkdir");
    std::fs::write(dir.join("bundle.yaml"), manifest).expect("manifest");
    // An empty ZIP archive as the bundle's one pack.
    let mut empty_zip = vec![b'P', b'K', 5, 6];
    empty_zip.resize(22, 0);
    std::fs::write(dir.join("packs/app.gtpack"), empty_zip).expect("pack");
    let out = home.join(format!("{name}.gtbundle"));
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

pub fn op(home: &Path, member: &Member, noun: &str, verb: &str, answers: Value) -> Value {
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

/// `revisions stage` of `bundle` for `deployment` through `member`; the
/// new revision's id.
pub fn stage(home: &Path, member: &Member, deployment: &str, bundle: &Path) -> String {
    let staged = op(
        home,
        member,
        "revisions",
        "stage",
        json!({"environment_id": "local", "deployment_id": deployment, "bundle_path": bundle}),
    );
    staged["result"]["revision_id"]
        .as_str()
        .expect("revision")
        .to_owned()
}

pub fn ulid_like() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// One GET through a router: status, generation header, revision header.
pub fn get(router: SocketAddr) -> Option<(u16, Option<u64>, Option<String>)> {
    get_answer(router).map(|answer| (answer.status, answer.generation, answer.revision))
}

/// What one `GET /hello` through a router brought back.
pub struct Answer {
    pub status: u16,
    /// `x-greentic-generation`.
    pub generation: Option<u64>,
    /// `x-greentic-revision`.
    pub revision: Option<String>,
    /// The `error.kind` of a router's own error answer (`no-ready-instance`, ...).
    pub error_kind: Option<String>,
}

/// [`get`], with the router's error kind when it answered with an error.
pub fn get_answer(router: SocketAddr) -> Option<Answer> {
    get_answer_at(router, "/hello")
}

/// [`get_answer`] for `GET <path>` (e.g. the example service's
/// `/slow?ms=N`).
pub fn get_answer_at(router: SocketAddr, path: &str) -> Option<Answer> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&router, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n"
    )
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
    let error_kind = text
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(body.trim()).ok())
        .and_then(|body| body["error"]["kind"].as_str().map(str::to_owned));
    Some(Answer {
        status,
        generation: header("x-greentic-generation").and_then(|g| g.parse().ok()),
        revision: header("x-greentic-revision"),
        error_kind,
    })
}

/// `gtc cluster init` plus certificates for n2 and n3, and three started
/// members (n2 and n3 join through n1), with or without gossip.
pub fn three_members(root: &Path, gossip: bool) -> (PathBuf, Vec<Member>) {
    three_members_n3_env(root, gossip, &[])
}

/// [`three_members`], with n3 started with `n3_env` added to its
/// environment (a switch or a setting only it has).
pub fn three_members_n3_env(
    root: &Path,
    gossip: bool,
    n3_env: &[(&str, &Path)],
) -> (PathBuf, Vec<Member>) {
    let home = root.join("home");
    std::fs::create_dir_all(&home).expect("home");
    let dir = root.join("cluster");
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
            gossip: gossip.then(|| if i == 0 { seed_gossip } else { free_udp() }),
            gossip_seed: (gossip && i > 0).then_some(seed_gossip),
            child: None,
        })
        .collect();
    let seed = members[0].raft;
    members[0].start(&home, None);
    members[1].start(&home, Some(seed));
    members[2].start_with_env(&home, Some(seed), &[], n3_env);
    (home, members)
}

/// One deployment with two revisions of the example service staged and
/// warmed on n1 (where their bundles are), waited until ready everywhere.
pub fn two_ready_revisions(home: &Path, members: &[Member]) -> (String, Vec<String>) {
    let added = op(
        home,
        &members[0],
        "bundles",
        "add",
        json!({"environment_id": "local", "bundle_id": "shop"}),
    );
    let deployment = added["result"]["deployment_id"]
        .as_str()
        .expect("deployment")
        .to_owned();
    let bundle = example_bundle(home);
    let mut revisions = Vec::new();
    for _ in 0..2 {
        let revision = stage(home, &members[0], &deployment, &bundle);
        op(
            home,
            &members[0],
            "revisions",
            "warm",
            json!({"environment_id": "local", "revision_id": revision}),
        );
        revisions.push(revision);
    }
    for member in members {
        eventually("both revisions to be ready", || {
            let state =
                std::fs::read_to_string(member.store().join("local").join("environment.json"))
                    .unwrap_or_default();
            state.matches("\"ready\"").count() >= 2
        });
    }
    (deployment, revisions)
}

/// Sets a two-revision split through `member`; the committed generation.
pub fn set_split(
    home: &Path,
    member: &Member,
    deployment: &str,
    revisions: &[String],
    first_percent: u32,
    key: &str,
) -> u64 {
    let answer = op(
        home,
        member,
        "traffic",
        "set",
        json!({"environment_id": "local", "deployment_id": deployment, "idempotency_key": key,
        "entries": [{"revision_id": revisions[0], "weight_percent": first_percent}, {"revision_id": revisions[1], "weight_percent": 100 - first_percent}]}),
    );
    answer["generation"].as_u64().expect("generation")
}

/// The body of `GET <path>` on `addr`, if it answered.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).ok()?;
    let text = String::from_utf8_lossy(&answer);
    text.split_once("\r\n\r\n").map(|(_, body)| body.to_owned())
}

/// `gtc_instances{revision,state="ready"}` on a member's /metrics.
pub fn ready_instances(member: &Member, revision: &str) -> u32 {
    http_get(member.admin, "/metrics")
        .and_then(|text| {
            let needle = format!("gtc_instances{{revision=\"{revision}\",state=\"ready\"}} ");
            text.lines()
                .find_map(|line| line.strip_prefix(needle.as_str()).map(str::to_owned))
        })
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map_or(0, |value| value as u32)
}

/// The committed placement of `revision` in a member's replica.
pub fn placement(member: &Member, revision: &str) -> Vec<String> {
    let text = std::fs::read_to_string(member.store().join("local").join("environment.json"))
        .unwrap_or_default();
    let state: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    state["environment"]["revisions"]
        .as_array()
        .and_then(|list| list.iter().find(|r| r["revision_id"] == revision))
        .and_then(|r| r["placement"].as_array())
        .map(|nodes| {
            nodes
                .iter()
                .filter_map(|n| n.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The owner token of a member's node file.
pub fn node_token(member: &Member) -> String {
    let text =
        std::fs::read_to_string(member.store().join("local").join("node.json")).expect("node file");
    let document: Value = serde_json::from_str(&text).expect("node file json");
    document["token"].as_str().expect("token").to_owned()
}

/// `POST <path>` on a member's admin API with the owner token, `If-Match: *`
/// and `Idempotency-Key: key`; (status, body).
pub fn admin_post(member: &Member, path: &str, key: &str, body: &Value) -> (u16, Value) {
    use std::io::{Read, Write};
    let token = node_token(member);
    let body = body.to_string();
    let mut stream = std::net::TcpStream::connect_timeout(&member.admin, Duration::from_secs(2))
        .expect("connect admin");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nIf-Match: *\r\nIdempotency-Key: {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        member.admin,
        body.len()
    )
    .expect("request");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("answer");
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP answer");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// The name of the Raft leader, as `gtc cluster status` on `member` sees it.
pub fn leader_name(home: &Path, member: &Member) -> String {
    let (ok, status, text) = run(
        home,
        &[
            "cluster",
            "status",
            "--node-dir",
            member.dir.to_str().expect("utf8"),
        ],
    );
    assert!(ok, "cluster status: {text}");
    let leader_id = status["result"]["leader"].as_u64().expect("leader");
    status["result"]["members"][leader_id.to_string()]["name"]
        .as_str()
        .expect("name")
        .to_owned()
}

/// `gtc op rollouts show local --deployment <deployment>` read from
/// `member`'s replica: the latest rollout of the deployment.
pub fn rollout_show(home: &Path, member: &Member, deployment: &str) -> Value {
    let (_, shown, _) = run(
        home,
        &[
            "op",
            "rollouts",
            "show",
            "local",
            "--deployment",
            deployment,
            "--store-root",
            member.store().to_str().expect("utf8"),
        ],
    );
    shown["result"].clone()
}
