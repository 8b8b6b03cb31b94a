//! Operator keys and per-environment trust roots (spec C2), through the
//! real binary: on this machine (`gtc op` checks the operator's key file
//! against the trust root) and through a node's admin API (`--node`: the
//! node checks the request's signature).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Home, Node, Run};
use serde_json::{Value, json};

const PROD: &str = "prod";

/// Grants `tester` the `prod` environment and creates it.
fn with_prod(home: &Home) {
    std::fs::create_dir_all(home.root()).expect("root");
    std::fs::write(
        home.root().join("policy.json"),
        json!({"schema": "greentic.policy.v1", "grants": [{"environment_id": PROD, "users": ["tester"]}]})
            .to_string(),
    )
    .expect("policy");
    home.ok(
        "env",
        "create",
        json!({"environment_id": PROD, "name": "Production"}),
    );
}

/// `gtc` run as the operator whose home is `operator`, on the store of `store`.
fn as_operator(store: &Home, operator: &Path, args: &[&str]) -> Run {
    let mut command: Command = store.command();
    command.env("GREENTIC_HOME", operator);
    let root = store.root();
    let mut full: Vec<&str> = vec![args[0], "--store-root", root.to_str().expect("utf8")];
    full.extend_from_slice(&args[1..]);
    let raw = command.args(&full).output().expect("run gtc");
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

/// Runs `gtc op <args…> --answers FILE` as `operator` on `store`.
fn change(store: &Home, operator: &Path, args: &[&str], answers: Value) -> Run {
    let file = store.write(
        &format!("answers-{}.json", ulid::Ulid::new()),
        &answers.to_string(),
    );
    let mut full = vec!["op"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["--answers", file.to_str().expect("utf8")]);
    as_operator(store, operator, &full)
}

/// Creates an operator key in `home`; returns `(key_id, public_key)`.
fn create_key(home: &Path) -> (String, String) {
    let run = Command::new(env!("CARGO_BIN_EXE_gtc"))
        .env("GREENTIC_HOME", home)
        .args(["operator", "key", "create"])
        .output()
        .expect("run gtc");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report: Value = serde_json::from_slice(&run.stdout).expect("json");
    let result = &report["result"];
    (
        result["key_id"].as_str().expect("key_id").to_owned(),
        result["public_key"]
            .as_str()
            .expect("public_key")
            .to_owned(),
    )
}

fn events(home: &Home, env: &str) -> Vec<Value> {
    home.audit_lines(env)
        .iter()
        .map(|line| serde_json::from_str(line).expect("audit json"))
        .collect()
}

fn last_event(home: &Home, env: &str) -> Value {
    events(home, env).pop().expect("an audit event")
}

fn bundle(prefix: &str) -> Value {
    let bundle_id = format!("shop-{}", prefix.trim_start_matches('/'));
    json!({"environment_id": PROD, "bundle_id": bundle_id, "customer_id": "acme", "route_binding": {"path_prefixes": [prefix]}})
}

#[test]
fn operator_keys_are_made_once_and_shown_without_the_private_key() {
    // Proves: create writes a private PEM and prints {key_id, public_key};
    // a second create refuses and says how to see the key; show prints
    // the same public half and never the private key.
    let home = Home::new();
    let (key_id, public_key) = create_key(home.dir.path());
    assert_eq!(key_id.len(), 16);
    let path = home.dir.path().join("operator/key.pem");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).expect("key").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let again = home.gtc(&["operator", "key", "create"]);
    assert_ne!(again.code, 0);
    assert!(
        again.error_message().contains("gtc operator key show"),
        "{}",
        again.stderr
    );
    let shown = home.gtc(&["operator", "key", "show"]);
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    assert_eq!(shown.stdout["result"]["key_id"], json!(key_id));
    assert_eq!(shown.stdout["result"]["public_key"], json!(public_key));
    let pem = std::fs::read_to_string(&path).expect("pem");
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(!String::from_utf8_lossy(&shown.raw.stdout).contains(&body));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let open = home.gtc(&["operator", "key", "show"]);
    assert_eq!(open.error_kind(), "operator-key", "{}", open.stderr);
}

#[test]
fn a_trust_root_admits_listed_keys_and_refuses_and_audits_the_others() {
    // Proves: without a trust root nothing changes; the first key is a
    // bootstrap; then a change by a listed key passes with `signed_by`, one
    // by an unlisted key or without a key is refused, audited as a denial
    // naming the key_id, and changes nothing; trust add/remove are signed
    // changes and the last key stays; `local` is never signed.
    let store = Home::new();
    with_prod(&store);
    let (a, b, none) = (Home::new(), Home::new(), Home::new());
    let (key_a, public_a) = create_key(a.dir.path());
    let (key_b, public_b) = create_key(b.dir.path());

    // No trust root: as before, no key needed, no signed_by.
    let plain = change(&store, none.dir.path(), &["bundles", "add"], bundle("/one"));
    assert_eq!(plain.code, 0, "{}", plain.stderr);
    assert!(last_event(&store, PROD).get("signed_by").is_none());

    // Bootstrap: anyone the policy allows adds the first key.
    let trust_add = ["env", "trust", "add"];
    let added = change(
        &store,
        none.dir.path(),
        &trust_add,
        json!({"environment_id": PROD, "public_key": public_a, "label": "alice"}),
    );
    assert_eq!(added.code, 0, "{}", added.stderr);
    assert_eq!(added.stdout["result"]["bootstrap"], json!(true));
    let event = last_event(&store, PROD);
    assert_eq!(
        (event["noun"].as_str(), event["verb"].as_str()),
        (Some("trust-root"), Some("add"))
    );
    let listed = as_operator(
        &store,
        none.dir.path(),
        &["op", "env", "trust", "list", PROD],
    );
    assert_eq!(
        listed.stdout["result"]["signing"],
        json!(true),
        "{}",
        listed.stdout
    );
    assert_eq!(listed.stdout["result"]["keys"][0]["key_id"], json!(key_a));

    // Key A passes and is recorded.
    let by_a = change(&store, a.dir.path(), &["bundles", "add"], bundle("/two"));
    assert_eq!(by_a.code, 0, "{}", by_a.stderr);
    assert_eq!(last_event(&store, PROD)["signed_by"], json!(key_a));

    // Key B is refused, audited with its key_id, and nothing changes.
    let state = store.root().join(PROD).join("environment.json");
    let before = std::fs::read(&state).expect("state");
    let by_b = change(&store, b.dir.path(), &["bundles", "add"], bundle("/three"));
    assert_ne!(by_b.code, 0);
    assert_eq!(by_b.error_kind(), "trust-root", "{}", by_b.stderr);
    assert!(by_b.error_message().contains(&key_b), "{}", by_b.stderr);
    assert_eq!(std::fs::read(&state).expect("state"), before);
    let denial = last_event(&store, PROD);
    assert_eq!(
        denial["authorization"]["decision"],
        json!("deny"),
        "{denial}"
    );
    assert_eq!(denial["authorization"]["policy"], json!("trust-root"));
    assert!(
        denial["result"]["message"]
            .as_str()
            .unwrap_or("")
            .contains(&key_b)
    );
    let log = store.audit_lines(PROD).join("\n");
    assert!(!log.contains(&public_b), "no key material in the audit log");

    // No key at all: refused with how to make one.
    let unsigned = change(
        &store,
        none.dir.path(),
        &["bundles", "add"],
        bundle("/four"),
    );
    assert_eq!(unsigned.error_kind(), "operator-key", "{}", unsigned.stderr);
    assert!(unsigned.error_message().contains("gtc operator key create"));
    assert!(unsigned.error_message().contains("gtc op env trust add"));
    let secret = change(
        &store,
        none.dir.path(),
        &["secrets", "put"],
        json!({"environment_id": PROD, "path": "db/password", "value": "x"}),
    );
    assert_eq!(secret.error_kind(), "operator-key", "{}", secret.stderr);
    assert_eq!(last_event(&store, PROD)["noun"], json!("secrets"));

    // Once a trust root exists, adding a key is itself signed.
    let add_b = json!({"environment_id": PROD, "public_key": public_b, "label": "bob"});
    let self_added = change(&store, b.dir.path(), &trust_add, add_b.clone());
    assert_eq!(
        self_added.error_kind(),
        "trust-root",
        "{}",
        self_added.stderr
    );
    let added_b = change(&store, a.dir.path(), &trust_add, add_b);
    assert_eq!(added_b.code, 0, "{}", added_b.stderr);
    assert_eq!(last_event(&store, PROD)["signed_by"], json!(key_a));
    let by_b = change(&store, b.dir.path(), &["bundles", "add"], bundle("/five"));
    assert_eq!(by_b.code, 0, "{}", by_b.stderr);
    assert_eq!(last_event(&store, PROD)["signed_by"], json!(key_b));

    // Removing is signed; the last key is refused with why.
    let trust_remove = ["env", "trust", "remove"];
    let unsigned_remove = change(
        &store,
        none.dir.path(),
        &trust_remove,
        json!({"environment_id": PROD, "key_id": key_a}),
    );
    assert_eq!(unsigned_remove.error_kind(), "operator-key");
    let removed = change(
        &store,
        b.dir.path(),
        &trust_remove,
        json!({"environment_id": PROD, "key_id": key_a}),
    );
    assert_eq!(removed.code, 0, "{}", removed.stderr);
    let last = change(
        &store,
        b.dir.path(),
        &trust_remove,
        json!({"environment_id": PROD, "key_id": key_b}),
    );
    assert_eq!(last.error_kind(), "conflict", "{}", last.stderr);
    assert!(
        last.error_message().contains("turn signing off"),
        "{}",
        last.stderr
    );

    // `local` is never signed, even with a trust-root file in its folder.
    let init = as_operator(&store, none.dir.path(), &["op", "env", "init"]);
    assert_eq!(init.code, 0, "{}", init.stderr);
    std::fs::copy(
        store.root().join(PROD).join("trust-root.json"),
        store.root().join("local").join("trust-root.json"),
    )
    .expect("copy");
    let local = change(
        &store,
        none.dir.path(),
        &["bundles", "add"],
        json!({"environment_id": "local", "bundle_id": "shop", "route_binding": {"path_prefixes": ["/l"]}}),
    );
    assert_eq!(local.code, 0, "{}", local.stderr);
    let refused = change(
        &store,
        a.dir.path(),
        &trust_add,
        json!({"environment_id": "local", "public_key": public_a, "label": "alice"}),
    );
    assert_eq!(
        refused.error_kind(),
        "invalid-argument",
        "{}",
        refused.stderr
    );
}

/// One raw HTTP/1.1 request; the status and JSON body.
fn send(
    admin: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Value) {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    let mut stream = TcpStream::connect(admin).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    stream.write_all(&request).expect("write");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("read");
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP answer");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[test]
fn through_the_admin_api_a_signature_by_a_listed_key_is_needed() {
    // Proves: with --node, a change of an environment with a trust root is
    // accepted signed by a listed key (audited with signed_by), refused
    // 403 and audited for another key or none, and refused for a stale
    // x-greentic-date even when the signature is right.
    let store = Home::new();
    with_prod(&store);
    let (a, b, none) = (Home::new(), Home::new(), Home::new());
    let (key_a, public_a) = create_key(a.dir.path());
    let (key_b, _) = create_key(b.dir.path());
    let added = change(
        &store,
        none.dir.path(),
        &["env", "trust", "add"],
        json!({"environment_id": PROD, "public_key": public_a, "label": "alice"}),
    );
    assert_eq!(added.code, 0, "{}", added.stderr);
    let node = Node::start(&store);
    let token_run = store.gtc(&[
        "node", "token", "create", "--id", "ci", "--role", "operator", "--env", PROD,
    ]);
    assert_eq!(token_run.code, 0, "{}", token_run.stderr);
    let token = token_run.stdout["result"]["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let url = format!("http://{}", node.admin);
    let remote = |operator: &Home, prefix: &str| {
        let file = operator.write(
            &format!("b-{}.json", ulid::Ulid::new()),
            &bundle(prefix).to_string(),
        );
        operator.gtc(&[
            "op",
            "bundles",
            "add",
            "--answers",
            file.to_str().expect("utf8"),
            "--node",
            &url,
            "--token",
            &token,
        ])
    };

    let by_a = remote(&a, "/a");
    assert_eq!(by_a.code, 0, "{}", by_a.stderr);
    assert_eq!(by_a.stdout["via"], json!("node"));
    assert_eq!(last_event(&store, PROD)["signed_by"], json!(key_a));

    let by_b = remote(&b, "/b");
    assert_ne!(by_b.code, 0);
    assert_eq!(by_b.error_kind(), "trust-root", "{}", by_b.stderr);
    let denial = last_event(&store, PROD);
    assert_eq!(
        denial["authorization"]["decision"],
        json!("deny"),
        "{denial}"
    );
    assert!(
        denial["result"]["message"]
            .as_str()
            .unwrap_or("")
            .contains(&key_b),
        "{denial}"
    );
    assert_eq!(denial["actor"]["user"], json!("ci"));

    let unsigned = remote(&none, "/n");
    assert_eq!(unsigned.error_kind(), "operator-key", "{}", unsigned.stderr);
    assert!(unsigned.error_message().contains("gtc operator key create"));

    // A correct signature with a date outside the window is refused.
    let path = format!("/v1/environments/{PROD}/bundles");
    let bearer = format!("Bearer {token}");
    let (status, shown) = send(
        node.admin,
        "GET",
        &format!("/v1/environments/{PROD}"),
        &[("Authorization", &bearer)],
        b"",
    );
    assert_eq!(status, 200, "{shown}");
    let etag = format!("\"{}\"", shown["etag"].as_str().expect("etag"));
    let key = node::operator_key::OperatorKey::load(a.dir.path()).expect("key a");
    let body = bundle("/stale").to_string();
    let stale_date = (chrono::Utc::now() - chrono::Duration::minutes(10)).to_rfc3339();
    let signed = key.sign_request("POST", &path, body.as_bytes(), &stale_date);
    let headers = [
        ("Authorization", bearer.as_str()),
        ("If-Match", etag.as_str()),
        ("Content-Type", "application/json"),
        ("x-greentic-operator-key", signed.public_key.as_str()),
        ("x-greentic-operator-signature", signed.signature.as_str()),
        ("x-greentic-date", signed.date.as_str()),
    ];
    let (status, answer) = send(node.admin, "POST", &path, &headers, body.as_bytes());
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["error"]["kind"], json!("trust-root"));
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("x-greentic-date"),
        "{answer}"
    );
    // The same request signed now passes: only the date was wrong.
    let now = chrono::Utc::now().to_rfc3339();
    let fresh = key.sign_request("POST", &path, body.as_bytes(), &now);
    let headers = [
        ("Authorization", bearer.as_str()),
        ("If-Match", etag.as_str()),
        ("Content-Type", "application/json"),
        ("x-greentic-operator-key", fresh.public_key.as_str()),
        ("x-greentic-operator-signature", fresh.signature.as_str()),
        ("x-greentic-date", fresh.date.as_str()),
    ];
    let (status, answer) = send(node.admin, "POST", &path, &headers, body.as_bytes());
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["audit"]["signed_by"], json!(key_a));
}
