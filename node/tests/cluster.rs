//! Three real `gtc node run` processes forming a cluster on loopback:
//! certificates from `gtc cluster init`/`issue-cert`, joins, a command
//! through a follower replicated everywhere, the leader SIGKILLed with
//! nothing acknowledged lost, and the killed member catching up.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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
    child: Option<Child>,
}

impl Member {
    fn start(&mut self, home: &Path, join: Option<SocketAddr>) {
        let mut command = gtc();
        command
            .args([
                "node",
                "run",
                "--log-format",
                "json",
                "--listen",
                "127.0.0.1:0",
            ])
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
