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

use serde_json::Value;

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
        let raw = self.command().args(args).output().expect("run gtc");
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
            files.insert(relative, std::fs::read(&path).expect("read"));
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
    let dir = home.dir.path().join(format!("src-{name}"));
    std::fs::create_dir_all(dir.join("bin")).expect("mkdir");
    std::fs::create_dir_all(dir.join("packs")).expect("mkdir");
    std::fs::copy(demo_service(), dir.join("bin/server")).expect("copy service");
    std::fs::write(
        dir.join("bundle.yaml"),
        format!("schema_version: 1\nbundle_id: {bundle_id}\nruntime:\n  command: [bin/server]\n  health_path: /healthz\n  startup_timeout_seconds: 10\n  instances: 1\n"),
    )
    .expect("manifest");
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
