//! `gtc op secrets` and the secret routes of a real node on loopback: a
//! marker value never appears anywhere but the reveal it was asked for
//! (logs at debug, /metrics, the audit log, a backup, every file under the
//! store root, every output), a corrupted ciphertext is detected with its
//! own error and exit code, and every bad input is refused with a specific
//! error, a non-zero exit and nothing written.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Stdio};

use base64::Engine;
use common::{Home, Run};
use serde_json::{Value, json};

/// The value every test hides; long and unusual so any copy is found.
const MARKER: &str = "MARKER-7f3a9c1e-do-not-leak-4b2d";

/// Every form in which a copy of `MARKER` would show: plain, hex (both
/// cases), and base64 (standard and URL-safe) at each of the three byte
/// alignments it could have inside a longer encoded string.
fn leak_forms() -> Vec<Vec<u8>> {
    let mut forms = vec![
        MARKER.as_bytes().to_vec(),
        hex::encode(MARKER).into_bytes(),
        hex::encode_upper(MARKER).into_bytes(),
    ];
    for engine in [
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::URL_SAFE,
    ] {
        for offset in 0..3usize {
            let mut bytes = vec![0u8; offset];
            bytes.extend_from_slice(MARKER.as_bytes());
            let encoded = engine.encode(&bytes);
            // Drop the characters the prefix and the padding influence.
            let start = (offset * 4).div_ceil(3) + 1;
            let end = encoded.len().saturating_sub(4);
            forms.push(encoded.as_bytes()[start..end].to_vec());
        }
    }
    forms
}

/// Where `haystack` holds any leak form of the marker.
fn leaks(haystack: &[u8]) -> Vec<String> {
    leak_forms()
        .iter()
        .filter(|form| haystack.windows(form.len()).any(|w| w == form.as_slice()))
        .map(|form| String::from_utf8_lossy(form).into_owned())
        .collect()
}

#[test]
fn the_leak_detector_finds_every_form_of_the_marker() {
    // Proves: the search of the leak test is not vacuous: the marker is
    // found plain, in hex, and inside base64 of a longer text at each
    // alignment, and not in unrelated bytes.
    assert!(leaks(b"nothing here").is_empty());
    assert!(!leaks(format!("x{MARKER}y").as_bytes()).is_empty());
    assert!(!leaks(hex::encode(format!("ab{MARKER}")).as_bytes()).is_empty());
    for prefix in ["", "a", "ab", "abc"] {
        for engine in [
            base64::engine::general_purpose::STANDARD,
            base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ] {
            let encoded = engine.encode(format!("{prefix}{MARKER}!!"));
            assert!(
                !leaks(encoded.as_bytes()).is_empty(),
                "{prefix:?}: {encoded}"
            );
        }
    }
}

/// A node with debug logs captured in a file outside the store root.
struct LoggedNode {
    child: Child,
    admin: SocketAddr,
    log: PathBuf,
}

impl LoggedNode {
    fn start(home: &Home) -> Self {
        let log = home.dir.path().join("node-stderr.log");
        let stderr = std::fs::File::create(&log).expect("log file");
        let mut child = home
            .command()
            .env("GTC_LOG", "debug")
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
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn node");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("announcement");
        let announcement: Value = serde_json::from_str(&line).expect("announcement json");
        let admin = announcement["admin"]
            .as_str()
            .expect("admin")
            .parse()
            .expect("admin addr");
        Self { child, admin, log }
    }

    /// SIGTERM, wait, and the captured log.
    fn stop(mut self) -> Vec<u8> {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
        std::fs::read(&self.log).expect("node log")
    }
}

impl Drop for LoggedNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP exchange with the admin API: status and the raw answer.
fn http(admin: SocketAddr, method: &str, path: &str, token: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(admin).expect("connect");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("write head");
    stream.write_all(body).expect("write body");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, answer)
}

/// The JSON body of a raw HTTP answer.
fn body_of(answer: &[u8]) -> Value {
    let text = String::from_utf8_lossy(answer);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    serde_json::from_str(body).unwrap_or(Value::Null)
}

fn owner_token(home: &Home) -> String {
    let text = std::fs::read_to_string(home.root().join("local/node.json")).expect("node file");
    let document: Value = serde_json::from_str(&text).expect("node file json");
    document["token"].as_str().expect("token").to_owned()
}

fn make_token(home: &Home, id: &str, role: &str) -> String {
    let run = home.gtc(&[
        "node", "token", "create", "--id", id, "--role", role, "--env", "local",
    ]);
    assert_eq!(run.code, 0, "token create: {}", run.stderr);
    run.stdout["result"]["token"]
        .as_str()
        .expect("token")
        .to_owned()
}

/// Everything one test printed or was answered, to be searched at the end.
#[derive(Default)]
struct Captured(Vec<(String, Vec<u8>)>);

impl Captured {
    fn run(&mut self, name: &str, run: &Run) {
        self.0
            .push((format!("{name} stdout"), run.raw.stdout.clone()));
        self.0
            .push((format!("{name} stderr"), run.raw.stderr.clone()));
    }

    fn add(&mut self, name: &str, bytes: Vec<u8>) {
        self.0.push((name.to_owned(), bytes));
    }
}

/// Removes `result.value` from a reveal's JSON, which is the one place the
/// marker may be; returns the rest as bytes.
fn without_revealed_value(mut document: Value, expected: &str) -> Vec<u8> {
    assert_eq!(document["result"]["value"], json!(expected), "{document}");
    document["result"]
        .as_object_mut()
        .expect("result")
        .remove("value");
    serde_json::to_vec(&document).expect("json")
}

fn init_local(home: &Home) {
    let run = home.gtc(&["op", "env", "init"]);
    assert_eq!(run.code, 0, "env init: {}", run.stderr);
}

#[test]
fn a_secret_value_never_leaks_through_any_verb_log_metric_audit_or_backup() {
    // Proves: with debug logs, after every secrets verb through the CLI,
    // through `--node`, and through the admin API with every role (and
    // their error paths), /metrics, the audit log and a backup, no file
    // under the store root and no output holds the marker in plain, hex or
    // base64 form, except the `value` field of the reveals that asked for it.
    let home = Home::new();
    let node = LoggedNode::start(&home);
    let owner = owner_token(&home);
    let viewer = make_token(&home, "viewer-1", "viewer");
    let operator = make_token(&home, "operator-1", "operator");
    let admin = make_token(&home, "admin-1", "admin");
    let mut captured = Captured::default();
    let mut cli = |name: &str, verb: &str, answers: Value| {
        let run = home.mutate("secrets", verb, answers);
        captured.run(name, &run);
        run
    };

    // The CLI on this machine.
    let put = cli(
        "put",
        "put",
        json!({"environment_id": "local", "path": "db/password", "value": MARKER}),
    );
    assert_eq!(put.code, 0, "{}", put.stderr);
    assert_eq!(put.stdout["result"]["version"], 1);
    assert_eq!(
        put.stdout["result"]["reference"],
        "secret://local/db/password"
    );
    let value_file = home.dir.path().join("value.txt");
    std::fs::write(&value_file, format!("{MARKER}\n")).expect("value file");
    let from_file = cli(
        "put file",
        "put",
        json!({"environment_id": "local", "path": "secret://local/api/key", "value_file": value_file, "idempotency_key": "k-1"}),
    );
    assert_eq!(from_file.code, 0, "{}", from_file.stderr);
    let replay = cli(
        "put replay",
        "put",
        json!({"environment_id": "local", "path": "api/key", "value": MARKER, "idempotency_key": "k-1"}),
    );
    assert_eq!(
        (replay.code, replay.stdout["idempotency"].as_str()),
        (0, Some("replayed"))
    );
    let conflict = cli(
        "put conflict",
        "put",
        json!({"environment_id": "local", "path": "api/key", "value": format!("{MARKER}-2"), "idempotency_key": "k-1"}),
    );
    assert_eq!(
        (conflict.code, conflict.error_kind()),
        (1, "idempotency-conflict")
    );
    let metadata = cli(
        "get",
        "get",
        json!({"environment_id": "local", "path": "db/password"}),
    );
    assert_eq!(metadata.code, 0, "{}", metadata.stderr);
    assert!(metadata.stdout["result"].get("value").is_none());
    let rotated = cli(
        "rotate",
        "rotate",
        json!({"environment_id": "local", "path": "db/password", "value": format!("{MARKER}-rotated")}),
    );
    assert_eq!(rotated.stdout["result"]["version"], 2, "{}", rotated.stderr);
    let generated = cli(
        "rotate generated",
        "rotate",
        json!({"environment_id": "local", "path": "api/key", "generate": {"length": 40, "alphabet": "hex"}}),
    );
    assert_eq!(
        generated.stdout["result"]["origin"], "generated",
        "{}",
        generated.stderr
    );
    for (name, answers) in [
        (
            "dots",
            json!({"environment_id": "local", "path": "a/../b", "value": MARKER}),
        ),
        (
            "empty segment",
            json!({"environment_id": "local", "path": "a//b", "value": MARKER}),
        ),
        (
            "cross env",
            json!({"environment_id": "local", "path": "secret://prod/db", "value": MARKER}),
        ),
        (
            "oversize",
            json!({"environment_id": "local", "path": "big", "value": MARKER.repeat(3000)}),
        ),
        (
            "unknown field",
            json!({"environment_id": "local", "path": "x", "value": MARKER, "extra": 1}),
        ),
    ] {
        let run = cli(name, "put", answers);
        assert_ne!(run.code, 0, "{name} must fail");
    }
    // remove: the latest is refused; an old version goes (the marker it
    // held must leave no trace in the output or the audit either).
    let latest = cli(
        "remove latest",
        "remove",
        json!({"environment_id": "local", "path": "db/password", "version": 2}),
    );
    assert_eq!(latest.error_kind(), "conflict", "{}", latest.stderr);
    let third = cli(
        "rotate third",
        "rotate",
        json!({"environment_id": "local", "path": "db/password", "value": format!("{MARKER}-third")}),
    );
    assert_eq!(third.code, 0, "{}", third.stderr);
    let removed = cli(
        "remove old",
        "remove",
        json!({"environment_id": "local", "path": "db/password", "version": 2}),
    );
    assert_eq!(removed.code, 0, "{}", removed.stderr);
    let missing_version = cli(
        "get missing version",
        "get",
        json!({"environment_id": "local", "path": "db/password", "version": 9, "reveal": true}),
    );
    assert_eq!(missing_version.error_kind(), "not-found");
    let listed = home.gtc(&["op", "secrets", "list", "local"]);
    captured.run("list", &listed);
    assert_eq!(
        listed.stdout["result"]["secrets"].as_array().map(Vec::len),
        Some(2)
    );
    let revealed = home.mutate(
        "secrets",
        "get",
        json!({"environment_id": "local", "path": "db/password", "version": 1, "reveal": true}),
    );
    assert_eq!(revealed.code, 0, "{}", revealed.stderr);
    assert!(
        !leaks(&revealed.raw.stdout).is_empty(),
        "the reveal holds the value"
    );
    captured.add(
        "cli reveal",
        without_revealed_value(revealed.stdout.clone(), MARKER),
    );
    captured.add("cli reveal stderr", revealed.raw.stderr.clone());

    // `gtc op … --node` as an operator: put and rotate pass, reveal is refused.
    let url = format!("http://{}", node.admin);
    let remote = |verb: &str, token: &str, answers: Value| {
        let path = home.write(
            &format!("remote-{verb}-{}.json", ulid::Ulid::new()),
            &answers.to_string(),
        );
        home.gtc(&[
            "op",
            "secrets",
            verb,
            "--answers",
            path.to_str().expect("utf8"),
            "--node",
            &url,
            "--token",
            token,
        ])
    };
    let remote_put = remote(
        "put",
        &operator,
        json!({"environment_id": "local", "path": "remote/one", "value_file": value_file}),
    );
    captured.run("remote put", &remote_put);
    assert_eq!(
        (remote_put.code, remote_put.stdout["via"].as_str()),
        (0, Some("node")),
        "{}",
        remote_put.stderr
    );
    let remote_reveal = remote(
        "get",
        &operator,
        json!({"environment_id": "local", "path": "remote/one", "reveal": true}),
    );
    captured.run("remote reveal as operator", &remote_reveal);
    assert_eq!(remote_reveal.error_kind(), "unauthorized");
    let remote_list = home.gtc(&[
        "op", "secrets", "list", "local", "--node", &url, "--token", &viewer,
    ]);
    captured.run("remote list", &remote_list);
    assert_eq!(remote_list.code, 0, "{}", remote_list.stderr);

    // The admin API with each role.
    let base = "/v1/environments/local/secrets";
    let mut api = |name: &str, method: &str, path: &str, token: &str, body: Value| {
        let (status, answer) = http(node.admin, method, path, token, body.to_string().as_bytes());
        captured.add(name, answer.clone());
        (status, body_of(&answer))
    };
    let put_body = json!({"path": "api/second", "value": MARKER});
    assert_eq!(
        api("viewer put", "POST", base, &viewer, put_body.clone()).0,
        403
    );
    assert_eq!(
        api("operator put", "POST", base, &operator, put_body).0,
        200
    );
    let (status, body) = api(
        "operator rotate",
        "POST",
        &format!("{base}/rotate"),
        &operator,
        json!({"path": "api/second", "value": MARKER}),
    );
    assert_eq!(
        (status, &body["result"]["version"]),
        (200, &json!(2)),
        "{body}"
    );
    assert_eq!(
        api(
            "viewer get",
            "POST",
            &format!("{base}/get"),
            &viewer,
            json!({"path": "api/second"})
        )
        .0,
        200
    );
    let reveal = json!({"path": "api/second", "reveal": true});
    assert_eq!(
        api(
            "viewer reveal",
            "POST",
            &format!("{base}/get"),
            &viewer,
            reveal.clone()
        )
        .0,
        403
    );
    assert_eq!(
        api(
            "operator reveal",
            "POST",
            &format!("{base}/get"),
            &operator,
            reveal.clone()
        )
        .0,
        403
    );
    assert_eq!(api("viewer list", "GET", base, &viewer, json!({})).0, 200);
    let (status, _) = api(
        "api bad path",
        "POST",
        base,
        &operator,
        json!({"path": "../x", "value": MARKER}),
    );
    assert_eq!(status, 400);
    let (status, _) = api(
        "api cross env",
        "POST",
        base,
        &operator,
        json!({"path": "secret://prod/x", "value": MARKER}),
    );
    assert_eq!(status, 400);
    let (status, _) = api(
        "api value_file",
        "POST",
        base,
        &operator,
        json!({"path": "x", "value": MARKER, "value_file": "/etc/passwd"}),
    );
    assert_eq!(status, 400);
    let (status, answer) = http(
        node.admin,
        "POST",
        &format!("{base}/get"),
        &admin,
        reveal.to_string().as_bytes(),
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    captured.add(
        "admin reveal",
        without_revealed_value(body_of(&answer), MARKER),
    );
    let (status, answer) = http(
        node.admin,
        "POST",
        &format!("{base}/get"),
        &owner,
        reveal.to_string().as_bytes(),
    );
    assert_eq!(status, 200, "the node's owner is an admin of local");
    captured.add(
        "owner reveal",
        without_revealed_value(body_of(&answer), MARKER),
    );
    let (_, metrics) = http(node.admin, "GET", "/metrics", &owner, b"");
    assert!(
        String::from_utf8_lossy(&metrics).contains("# TYPE"),
        "metrics are served"
    );
    captured.add("metrics", metrics);
    let (_, audit) = http(
        node.admin,
        "GET",
        "/v1/environments/local/audit?limit=1000",
        &owner,
        b"",
    );
    captured.add("audit route", audit);

    // A backup of the environment.
    let backup = home.mutate("env", "backup", json!({"environment_id": "local"}));
    assert_eq!(backup.code, 0, "{}", backup.stderr);
    captured.run("backup", &backup);
    let backup_id = backup.stdout["result"]["backup_id"]
        .as_str()
        .expect("backup id")
        .to_owned();
    let shown = home.gtc(&["op", "env", "show", "local"]);
    let generation = shown.stdout["result"]["generation"]
        .as_u64()
        .expect("generation");
    let restore = home.mutate(
        "env",
        "restore",
        json!({"environment_id": "local", "backup_id": backup_id, "expected_generation": generation}),
    );
    assert_eq!(restore.code, 0, "{}", restore.stderr);
    captured.run("restore", &restore);
    // A backup holds the state document, not the secret store: after a
    // restore the secrets are as they were.
    let after_restore = home.mutate(
        "secrets",
        "get",
        json!({"environment_id": "local", "path": "db/password", "version": 1, "reveal": true}),
    );
    captured.add(
        "reveal after restore",
        without_revealed_value(after_restore.stdout.clone(), MARKER),
    );

    captured.add("node log", node.stop());
    let log = &captured.0.last().expect("log").1;
    assert!(
        String::from_utf8_lossy(log).contains("DEBUG"),
        "the node ran with debug logging"
    );

    // The audit names every mutation and reveal, never a value.
    let audit = home.audit_lines("local").join("\n");
    for verb in [
        "\"verb\":\"put\"",
        "\"verb\":\"rotate\"",
        "\"verb\":\"get\"",
    ] {
        assert!(audit.contains(verb), "{verb} audited");
    }
    let mut found = Vec::new();
    for (path, bytes) in home.snapshot() {
        for form in leaks(&bytes) {
            found.push(format!("file {}: {form}", path.display()));
        }
    }
    for (name, bytes) in &captured.0 {
        for form in leaks(bytes) {
            found.push(format!("{name}: {form}"));
        }
    }
    assert!(found.is_empty(), "the marker leaked: {found:#?}");
}

/// The bytes of every file under the store root.
type Files = BTreeMap<PathBuf, Vec<u8>>;

/// Asserts nothing changed between two snapshots except error lines
/// appended to audit logs.
fn assert_nothing_written(name: &str, before: &Files, after: &Files) {
    for (path, bytes) in after {
        let Some(old) = before.get(path) else {
            panic!("{name}: {} was created", path.display());
        };
        if path.ends_with("audit/events.jsonl") {
            assert!(
                old.len() <= bytes.len() && bytes.starts_with(old),
                "{name}: audit rewritten"
            );
            let added = String::from_utf8_lossy(&bytes[old.len()..]).into_owned();
            assert!(
                added.lines().all(|l| l.contains("\"outcome\":\"error\"")),
                "{name}: {added}"
            );
        } else {
            assert_eq!(old, bytes, "{name}: {} changed", path.display());
        }
    }
    assert_eq!(before.len(), after.len(), "{name}: a file vanished");
}

fn version_file(home: &Home, path: &str, version: u32) -> PathBuf {
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(path.as_bytes()));
    home.root()
        .join("local/secrets/entries")
        .join(digest)
        .join(format!("{version:010}.json"))
}

#[test]
fn bad_input_is_refused_with_a_specific_error_and_writes_nothing() {
    // Proves: each bad input of issue 14 gets its own error kind and code,
    // a non-zero exit, and leaves every file under the store root as it
    // was (the audit log only gains error lines).
    let home = Home::new();
    init_local(&home);
    let first = home.mutate(
        "secrets",
        "put",
        json!({"environment_id": "local", "path": "db/password", "value": "v1"}),
    );
    assert_eq!(first.code, 0, "{}", first.stderr);
    let cases = [
        (
            "dot-dot path",
            "put",
            json!({"environment_id": "local", "path": "db/../x", "value": "v"}),
            "invalid-argument",
            "dot-segment",
        ),
        (
            "empty segment",
            "put",
            json!({"environment_id": "local", "path": "db//x", "value": "v"}),
            "invalid-argument",
            "empty-segment",
        ),
        (
            "cross-env ref",
            "put",
            json!({"environment_id": "local", "path": "secret://prod-eu/db", "value": "v"}),
            "invalid-argument",
            "cross-env-ref",
        ),
        (
            "oversize value",
            "put",
            json!({"environment_id": "local", "path": "big", "value": "x".repeat(64 * 1024 + 1)}),
            "answers-parse",
            "",
        ),
        (
            "rotate unknown path",
            "rotate",
            json!({"environment_id": "local", "path": "nope", "value": "v"}),
            "not-found",
            "not-found",
        ),
        (
            "generated too short",
            "rotate",
            json!({"environment_id": "local", "path": "db/password", "generate": {"length": 4}}),
            "invalid-argument",
            "generated-length",
        ),
        (
            "two value sources",
            "put",
            json!({"environment_id": "local", "path": "db/password", "value": "v", "value_file": "/dev/null"}),
            "invalid-argument",
            "value-source",
        ),
    ];
    for (name, verb, answers, kind, code) in cases {
        let before = home.snapshot();
        let run = home.mutate("secrets", verb, answers);
        assert_eq!(
            (run.code, run.error_kind()),
            (1, kind),
            "{name}: {}",
            run.stderr
        );
        if !code.is_empty() {
            assert_eq!(
                run.stderr["error"]["details"]["secrets_error"], code,
                "{name}"
            );
        }
        assert_nothing_written(name, &before, &home.snapshot());
    }
    // An oversize value_file is refused by size too.
    let big = home.dir.path().join("big.txt");
    std::fs::write(&big, "y".repeat(64 * 1024 + 10)).expect("big file");
    let before = home.snapshot();
    let run = home.mutate(
        "secrets",
        "put",
        json!({"environment_id": "local", "path": "big", "value_file": big}),
    );
    assert_eq!(
        (run.code, run.error_kind()),
        (1, "payload-too-large"),
        "{}",
        run.stderr
    );
    assert_nothing_written("oversize value file", &before, &home.snapshot());

    // A missing node key: refused, and never silently replaced.
    let key = home.root().join("secrets-node.key");
    let key_bytes = std::fs::read(&key).expect("node key");
    std::fs::remove_file(&key).expect("remove key");
    let before = home.snapshot();
    for (verb, answers) in [
        (
            "put",
            json!({"environment_id": "local", "path": "db/password", "value": "v2"}),
        ),
        (
            "get",
            json!({"environment_id": "local", "path": "db/password", "reveal": true}),
        ),
    ] {
        let run = home.mutate("secrets", verb, answers);
        assert_eq!(
            (run.code, run.error_kind()),
            (1, "secret-key-unavailable"),
            "{verb}: {}",
            run.stderr
        );
        assert_eq!(
            run.stderr["error"]["details"]["secrets_error"],
            "node-key-missing"
        );
    }
    assert_nothing_written("missing node key", &before, &home.snapshot());
    std::fs::write(&key, &key_bytes).expect("restore key");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let back = home.mutate(
        "secrets",
        "get",
        json!({"environment_id": "local", "path": "db/password", "reveal": true}),
    );
    assert_eq!(back.stdout["result"]["value"], "v1", "{}", back.stderr);
}

#[test]
fn a_corrupted_ciphertext_is_detected_and_never_returned() {
    // Proves: one changed ciphertext byte makes `get --reveal` fail with
    // `secret-corrupt` and exit code 3 through the CLI, and 500 with the
    // same kind through the admin API; no output holds the value, and
    // nothing but audit error lines is written.
    let home = Home::new();
    init_local(&home);
    let put = home.mutate(
        "secrets",
        "put",
        json!({"environment_id": "local", "path": "db/password", "value": MARKER}),
    );
    assert_eq!(put.code, 0, "{}", put.stderr);
    let file = version_file(&home, "db/password", 1);
    let mut document: Value =
        serde_json::from_slice(&std::fs::read(&file).expect("version file")).expect("json");
    let engine = base64::engine::general_purpose::STANDARD;
    let mut ciphertext = engine
        .decode(document["ciphertext"].as_str().expect("ciphertext"))
        .expect("base64");
    ciphertext[3] ^= 0x40;
    document["ciphertext"] = json!(engine.encode(&ciphertext));
    std::fs::write(&file, serde_json::to_vec_pretty(&document).expect("json")).expect("corrupt");

    let before = home.snapshot();
    let run = home.mutate(
        "secrets",
        "get",
        json!({"environment_id": "local", "path": "db/password", "reveal": true}),
    );
    assert_eq!(
        (run.code, run.error_kind()),
        (3, "secret-corrupt"),
        "{}",
        run.stderr
    );
    assert!(
        run.error_message().contains("integrity"),
        "{}",
        run.error_message()
    );
    assert!(leaks(&run.raw.stdout).is_empty() && leaks(&run.raw.stderr).is_empty());
    assert_nothing_written("corrupt reveal", &before, &home.snapshot());
    // Metadata needs no key and no plaintext: still served.
    let metadata = home.mutate(
        "secrets",
        "get",
        json!({"environment_id": "local", "path": "db/password"}),
    );
    assert_eq!(metadata.code, 0, "{}", metadata.stderr);

    let node = LoggedNode::start(&home);
    let owner = owner_token(&home);
    let (status, answer) = http(
        node.admin,
        "POST",
        "/v1/environments/local/secrets/get",
        &owner,
        json!({"path": "db/password", "reveal": true})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(status, 500, "{}", String::from_utf8_lossy(&answer));
    assert_eq!(body_of(&answer)["error"]["kind"], "secret-corrupt");
    assert!(leaks(&answer).is_empty());
    let log = node.stop();
    assert!(leaks(&log).is_empty());
}

#[test]
fn schemas_are_generated_for_every_mutating_verb() {
    // Proves: `--schema` prints each payload's JSON Schema, with the value
    // field marked write-only.
    let home = Home::new();
    for verb in ["put", "get", "rotate"] {
        let run = home.gtc(&["op", "secrets", verb, "--schema"]);
        assert_eq!(run.code, 0, "{verb}: {}", run.stderr);
        assert!(
            run.stdout["properties"]["path"].is_object(),
            "{verb}: {}",
            run.stdout
        );
    }
    let put = home.gtc(&["op", "secrets", "put", "--schema"]);
    assert!(
        put.stdout.to_string().contains("writeOnly"),
        "{}",
        put.stdout
    );
}

#[test]
fn a_wrong_role_through_the_admin_api_is_refused_and_writes_nothing() {
    // Proves: a viewer cannot put or rotate and an operator cannot reveal
    // (403 `unauthorized`, audited), and every file under the store root
    // is as it was but for the audit log's error lines.
    let home = Home::new();
    let node = LoggedNode::start(&home);
    let owner = owner_token(&home);
    let viewer = make_token(&home, "viewer-2", "viewer");
    let operator = make_token(&home, "operator-2", "operator");
    let base = "/v1/environments/local/secrets";
    let put = json!({"path": "db/password", "value": MARKER}).to_string();
    assert_eq!(
        http(node.admin, "POST", base, &owner, put.as_bytes()).0,
        200
    );
    let before = home.snapshot();
    let cases = [
        ("viewer put", base.to_owned(), &viewer, put.clone()),
        (
            "viewer rotate",
            format!("{base}/rotate"),
            &viewer,
            json!({"path": "db/password"}).to_string(),
        ),
        (
            "operator reveal",
            format!("{base}/get"),
            &operator,
            json!({"path": "db/password", "reveal": true}).to_string(),
        ),
        (
            "viewer reveal",
            format!("{base}/get"),
            &viewer,
            json!({"path": "db/password", "reveal": true}).to_string(),
        ),
    ];
    for (name, path, token, body) in cases {
        let (status, answer) = http(node.admin, "POST", &path, token, body.as_bytes());
        assert_eq!(status, 403, "{name}: {}", String::from_utf8_lossy(&answer));
        assert_eq!(body_of(&answer)["error"]["kind"], "unauthorized", "{name}");
        assert!(leaks(&answer).is_empty(), "{name}");
    }
    let after = home.snapshot();
    let audit: Vec<String> = home.audit_lines("local");
    assert!(
        audit
            .iter()
            .rev()
            .take(4)
            .all(|line| line.contains("\"decision\":\"deny\"")),
        "each refusal is audited as a denial: {audit:#?}"
    );
    drop(node);
    assert_nothing_written("wrong roles", &before, &after);
}
