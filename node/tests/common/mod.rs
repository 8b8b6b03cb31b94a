//! Runs the real `gtc` binary against a temporary `GREENTIC_HOME`.
#![allow(dead_code)]

#[path = "../support/wait.rs"]
mod wait;
// Not every test binary that includes this module waits.
#[allow(unused_imports)]
pub use wait::wait_until;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::{Value, json};
use std::time::Duration;

/// A temporary operator home.
pub struct Home {
    pub dir: tempfile::TempDir,
}

/// What one `gtc` run printed.
pub struct Run {
    pub code: i32,
    pub stdout: Value,
    pub stderr: Value,
    pub raw: Output,
}

impl Run {
    /// The `error.kind` on stderr.
    pub fn error_kind(&self) -> &str {
        self.stderr["error"]["kind"].as_str().unwrap_or("")
    }
    /// The `error.message` on stderr.
    pub fn error_message(&self) -> &str {
        self.stderr["error"]["message"].as_str().unwrap_or("")
    }
}

impl Home {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("environments")
    }

    pub fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_gtc"));
        command
            .env("GREENTIC_HOME", self.dir.path())
            .env_remove("GREENTIC_STORE_ROOT")
            .env("USER", "tester");
        command
    }

    /// Runs `gtc` with `args`.
    pub fn gtc(&self, args: &[&str]) -> Run {
        self.gtc_with_env(args, &[])
    }

    /// Runs `gtc` with `args` and the variables `env` set.
    pub fn gtc_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut command = self.command();
        command.envs(env.iter().copied());
        let raw = command.args(args).output().expect("run gtc");
        let parse = |bytes: &[u8]| {
            serde_json::from_slice::<Value>(bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
        };
        Run {
            code: raw.status.code().unwrap_or(-1),
            stdout: parse(&raw.stdout),
            stderr: parse(&raw.stderr),
            raw,
        }
    }

    /// Writes `answers` to a file and runs `gtc op <noun> <verb> --answers FILE`.
    pub fn mutate(&self, noun: &str, verb: &str, answers: Value) -> Run {
        let path = self.write(
            &format!("{noun}-{verb}-{}.json", ulid::Ulid::new()),
            &answers.to_string(),
        );
        self.gtc(&[
            "op",
            noun,
            verb,
            "--answers",
            path.to_str().expect("utf8 path"),
        ])
    }

    /// Like [`mutate`], expecting success; returns `result`.
    pub fn ok(&self, noun: &str, verb: &str, answers: Value) -> Value {
        let run = self.mutate(noun, verb, answers);
        assert_eq!(
            run.code,
            0,
            "{noun} {verb} failed: {}",
            String::from_utf8_lossy(&run.raw.stderr)
        );
        run.stdout["result"].clone()
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join("answers").join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, text).expect("write answers");
        path
    }

    /// Every file under the store root with its bytes.
    pub fn snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut files = BTreeMap::new();
        collect(&self.root(), &self.root(), &mut files);
        files
    }

    pub fn audit_lines(&self, env: &str) -> Vec<String> {
        std::fs::read_to_string(self.root().join(env).join("audit/events.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

fn collect(root: &Path, dir: &Path, files: &mut BTreeMap<PathBuf, Vec<u8>>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(root, &path, files);
        } else {
            let relative = path.strip_prefix(root).expect("under root").to_owned();
            match std::fs::read(&path) {
                Ok(bytes) => {
                    files.insert(relative, bytes);
                }
                // A temporary file renamed into place between the listing
                // and the read (the node rewrites `runtime.json` whatever a
                // test does): not a file of the store at any one moment.
                // What it became is read like every other file.
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => panic!("read {}: {error}", path.display()),
            }
        }
    }
}

/// The id string in `value[key]`.
pub fn id(value: &Value, key: &str) -> String {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key} in {value}"))
        .to_owned()
}

/// A running `gtc node run`, stopped with SIGTERM on drop.
pub struct Node {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
}

impl Node {
    pub fn start(home: &Home) -> Self {
        Self::start_with(home, &[])
    }

    pub fn start_with(home: &Home, extra: &[&str]) -> Self {
        let mut child = home
            .command()
            .args([
                "node",
                "run",
                "--listen",
                "127.0.0.1:0",
                "--admin",
                "127.0.0.1:0",
                "--poll-ms",
                "50",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn node");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("announcement");
        let announcement: serde_json::Value =
            serde_json::from_str(&line).expect("announcement json");
        let addr = announcement["listen"]
            .as_str()
            .expect("listen")
            .parse()
            .expect("addr");
        let admin = announcement["admin"]
            .as_str()
            .expect("admin")
            .parse()
            .expect("admin addr");
        Self { child, addr, admin }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

/// The example service built beside `gtc` (`cargo build -p demo-service`).
pub fn demo_service() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_gtc")).with_file_name("demo-service");
    assert!(
        path.is_file(),
        "{} is missing: run the tests with `cargo test --workspace` (or `cargo build -p demo-service` first)",
        path.display()
    );
    path
}

/// A bundle of the example service for `bundle_id` with a runtime section
/// (one instance): a revision staged from it has something to run.
pub fn example_bundle(home: &Home, name: &str, bundle_id: &str) -> PathBuf {
    service_bundle(
        home,
        name,
        bundle_id,
        "  startup_timeout_seconds: 10\n  instances: 1\n",
    )
}

/// A bundle `name` of the example service for `bundle_id`, whose runtime
/// section has `command` and `health_path` followed by `runtime_lines`
/// (YAML lines indented by two spaces: instances, env, scaling, …).
pub fn service_bundle(home: &Home, name: &str, bundle_id: &str, runtime_lines: &str) -> PathBuf {
    let dir = bundle_dir(home, name);
    std::fs::create_dir_all(dir.join("bin")).expect("mkdir");
    std::fs::copy(demo_service(), dir.join("bin/server")).expect("copy service");
    build_bundle(
        home,
        name,
        &format!(
            "schema_version: 1\nbundle_id: {bundle_id}\nruntime:\n  command: [bin/server]\n  health_path: /healthz\n{runtime_lines}"
        ),
    )
}

/// The source folder of bundle `name` (`src-<name>` in the home).
pub fn bundle_dir(home: &Home, name: &str) -> PathBuf {
    home.dir.path().join(format!("src-{name}"))
}

/// Writes `manifest` as the `bundle.yaml` of bundle `name`'s folder (beside
/// whatever the caller put there) with an empty ZIP as its one pack, and
/// runs `gtc bundle build`: the run, and where the bundle goes.
pub fn try_build_bundle(home: &Home, name: &str, manifest: &str) -> (Run, PathBuf) {
    let dir = bundle_dir(home, name);
    std::fs::create_dir_all(dir.join("packs")).expect("mkdir");
    std::fs::write(dir.join("bundle.yaml"), manifest).expect("manifest");
    // An empty ZIP archive as the bundle's one pack.
    let mut empty_zip = vec![b'P', b'K', 5, 6];
    empty_zip.resize(22, 0);
    std::fs::write(dir.join("packs/app.gtpack"), empty_zip).expect("pack");
    let out = home.dir.path().join(format!("{name}.gtbundle"));
    let built = home.gtc(&[
        "bundle",
        "build",
        dir.to_str().expect("path"),
        "-o",
        out.to_str().expect("path"),
    ]);
    (built, out)
}

/// [`try_build_bundle`], which must succeed; the bundle's path.
pub fn build_bundle(home: &Home, name: &str, manifest: &str) -> PathBuf {
    let (built, out) = try_build_bundle(home, name, manifest);
    assert_eq!(built.code, 0, "{}", built.stderr);
    out
}

/// The lifecycle of `revision` in `local`, as `revisions list` says.
pub fn lifecycle(home: &Home, revision: &str) -> String {
    let listed = home.gtc(&["op", "revisions", "list", "local"]);
    listed.stdout["result"]["revisions"]
        .as_array()
        .and_then(|list| list.iter().find(|r| r["revision_id"] == revision))
        .and_then(|r| r["lifecycle"].as_str())
        .unwrap_or("")
        .to_owned()
}

/// (status, lowercase headers, body) of one answer.
pub type Answer = (u16, Vec<(String, String)>, String);

/// A minimal HTTP/1.1 GET over a fresh connection.
pub fn get(addr: SocketAddr, path: &str, cookie: Option<&str>) -> Result<Answer, String> {
    get_with(addr, "shop.test", path, cookie)
}

/// A minimal HTTP/1.1 GET for `host` over a fresh connection.
pub fn get_at_host(addr: SocketAddr, host: &str, path: &str) -> Result<Answer, String> {
    get_with(addr, host, path, None)
}

fn get_with(
    addr: SocketAddr,
    host: &str,
    path: &str,
    cookie: Option<&str>,
) -> Result<Answer, String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let cookie = cookie
        .map(|c| format!("Cookie: {c}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\n{cookie}Connection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    let (head, body) = response.split_once("\r\n\r\n").ok_or("no header end")?;
    let (status, headers) = parse_head(head)?;
    Ok((status, headers, body.to_owned()))
}

/// The status and the lowercase headers of an HTTP/1.1 response head.
pub fn parse_head(head: &str) -> Result<(u16, Vec<(String, String)>), String> {
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or("no status")?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok((status, headers))
}

pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

pub fn stage_and_warm(home: &Home, deployment: &str, bundle: &Path) -> String {
    let staged = home.ok(
        "revisions",
        "stage",
        json!({"environment_id": "local", "deployment_id": deployment, "bundle_path": bundle}),
    );
    let revision = id(&staged, "revision_id");
    home.ok(
        "revisions",
        "warm",
        json!({"environment_id": "local", "revision_id": revision}),
    );
    revision
}

pub fn set_split(home: &Home, deployment: &str, key: &str, entries: serde_json::Value) -> u64 {
    let run = home.mutate("traffic", "set", json!({"environment_id": "local", "deployment_id": deployment, "idempotency_key": key, "entries": entries}));
    assert_eq!(run.code, 0, "{}", run.stderr);
    run.stdout["generation"].as_u64().expect("generation")
}

/// Waits until the router answers under `generation`.
pub fn wait_generation(node: &Node, generation: u64) {
    wait_until(
        "the router to serve the new split",
        Duration::from_secs(10),
        || {
            get(node.addr, "/healthz-probe", None)
                .ok()
                .and_then(|(_, headers, _)| {
                    header(&headers, "x-greentic-generation").and_then(|g| g.parse::<u64>().ok())
                })
                .is_some_and(|g| g >= generation)
        },
    );
}

pub fn setup() -> (Home, Node, String) {
    setup_with(&[])
}

/// An initialized store with one deployment, and a node started with
/// `extra` flags.
pub fn setup_with(extra: &[&str]) -> (Home, Node, String) {
    let home = Home::new();
    home.gtc(&["op", "env", "init"]);
    let deployment = id(
        &home.ok(
            "bundles",
            "add",
            json!({"environment_id": "local", "bundle_id": "shop"}),
        ),
        "deployment_id",
    );
    let node = Node::start_with(&home, extra);
    (home, node, deployment)
}

/// Pids of the node's child processes (its instances).
pub fn children(node_pid: i32) -> Vec<i32> {
    let mut pids = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{node_pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            pids.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
    }
    pids
}
