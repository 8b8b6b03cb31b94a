//! The admin API of a real node (`gtc node run`) on loopback: ETags and
//! preconditions, idempotent replay across a restart, token roles and their
//! audit trail, every error kind we can provoke with its status, and HTTPS.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{Home, Node, id};
use serde_json::{Value, json};

/// One answer of the admin API.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn kind(&self) -> &str {
        self.body["error"]["kind"].as_str().unwrap_or("")
    }

    /// The body's etag, quoted as the header carries it.
    fn quoted_etag(&self) -> String {
        format!("\"{}\"", self.body["etag"].as_str().expect("etag in body"))
    }
}

/// A client of one node's admin API, plain or over TLS.
struct Api {
    addr: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
    token: Option<String>,
}

fn exchange(mut stream: impl Read + Write, request: &[u8]) -> std::io::Result<Vec<u8>> {
    stream.write_all(request)?;
    stream.flush()?;
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Ok(_) => Ok(answer),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !answer.is_empty() => Ok(answer),
        Err(e) => Err(e),
    }
}

impl Api {
    fn new(node: &Node, token: &str) -> Self {
        Self {
            addr: node.admin,
            tls: None,
            token: Some(token.to_owned()),
        }
    }

    fn as_token(&self, token: Option<&str>) -> Self {
        Self {
            addr: self.addr,
            tls: self.tls.clone(),
            token: token.map(str::to_owned),
        }
    }

    fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        if let Some(token) = &self.token {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        if !body.is_empty() {
            head.push_str("Content-Type: application/json\r\n");
        }
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        let stream = TcpStream::connect(self.addr).expect("connect admin");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let raw = match &self.tls {
            None => exchange(stream, &request),
            Some(config) => {
                let name = rustls::pki_types::ServerName::IpAddress(self.addr.ip().into());
                let connection =
                    rustls::ClientConnection::new(Arc::clone(config), name).expect("tls client");
                exchange(rustls::StreamOwned::new(connection, stream), &request)
            }
        }
        .expect("admin answer");
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text.split_once("\r\n\r\n").expect("HTTP answer");
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .expect("status");
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let body = serde_json::from_str(body).unwrap_or(Value::String(body.to_owned()));
        Answer {
            status,
            headers,
            body,
        }
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Answer {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        self.send(method, path, headers, body.as_bytes())
    }

    fn get(&self, path: &str) -> Answer {
        self.call("GET", path, &[], None)
    }
}

/// The node file's token: the owner's.
fn owner_token(home: &Home) -> String {
    let text = std::fs::read_to_string(home.root().join("local/node.json")).expect("node file");
    let document: Value = serde_json::from_str(&text).expect("node file json");
    document["token"].as_str().expect("token").to_owned()
}

/// A token made with `gtc node token create`.
fn make_token(home: &Home, id: &str, role: &str, env: &str) -> String {
    let run = home.gtc(&[
        "node", "token", "create", "--id", id, "--role", role, "--env", env,
    ]);
    assert_eq!(run.code, 0, "token create: {}", run.stderr);
    run.stdout["result"]["token"]
        .as_str()
        .expect("token")
        .to_owned()
}

const LOCAL: &str = "/v1/environments/local";

/// Adds a bundle deployment through the API; returns its id.
fn add_bundle(api: &Api, prefix: &str) -> String {
    let etag = api.get(LOCAL).quoted_etag();
    let added = api.call(
        "POST",
        &format!("{LOCAL}/bundles"),
        &[("If-Match", &etag)],
        Some(json!({"bundle_id": "shop", "route_binding": {"path_prefixes": [prefix]}})),
    );
    assert_eq!(added.status, 200, "{:?}", added.body);
    id(&added.body["result"], "deployment_id")
}

/// Asserts the contract's error shape: kind, and a status that is the HTTP one.
fn assert_error(answer: &Answer, status: u16, kind: &str) {
    assert_eq!(answer.status, status, "{kind}: {:?}", answer.body);
    assert_eq!(answer.kind(), kind, "{:?}", answer.body);
    assert_eq!(answer.body["error"]["status"], json!(status));
    assert!(
        !answer.body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .is_empty(),
        "an error says what went wrong"
    );
}

fn audit_events(home: &Home) -> Vec<Value> {
    home.audit_lines("local")
        .iter()
        .map(|line| serde_json::from_str(line).expect("audit json"))
        .collect()
}

#[test]
fn etags_round_trip_and_guard_writes() {
    // Proves: reads and writes carry the committed state's ETag; a guarded
    // write without If-Match is 428, with a stale one 412 naming both.
    let home = Home::new();
    let node = Node::start(&home);
    let api = Api::new(&node, &owner_token(&home));

    let read = api.get(LOCAL);
    assert_eq!(read.status, 200, "{:?}", read.body);
    assert_eq!(read.header("etag"), Some(read.quoted_etag().as_str()));
    let generation = read.body["generation"].as_u64().expect("generation");
    let cli = home.gtc(&["op", "env", "show", "local"]);
    assert_eq!(
        cli.stdout["result"]["etag"], read.body["etag"],
        "the CLI and the API report the same etag"
    );

    let bundle = json!({"bundle_id": "shop", "route_binding": {"path_prefixes": ["/shop"]}});
    let missing = api.call(
        "POST",
        &format!("{LOCAL}/bundles"),
        &[],
        Some(bundle.clone()),
    );
    assert_error(&missing, 428, "precondition-required");

    let stale = api.call(
        "POST",
        &format!("{LOCAL}/bundles"),
        &[("If-Match", "\"1-00000000000000000000000000000000\"")],
        Some(bundle.clone()),
    );
    assert_error(&stale, 412, "precondition-failed");
    let error = &stale.body["error"];
    assert_eq!(
        error["expected_etag"],
        json!("1-00000000000000000000000000000000")
    );
    assert_eq!(error["actual_etag"], read.body["etag"]);
    assert_eq!(error["actual_generation"], json!(generation));

    let written = api.call(
        "POST",
        &format!("{LOCAL}/bundles"),
        &[("If-Match", &read.quoted_etag())],
        Some(bundle),
    );
    assert_eq!(written.status, 200, "{:?}", written.body);
    assert_eq!(written.body["idempotency"], "applied");
    assert_eq!(written.body["generation"], json!(generation + 1));
    assert_eq!(written.header("etag"), Some(written.quoted_etag().as_str()));
    assert_ne!(written.body["etag"], read.body["etag"]);
    assert_eq!(written.body["audit"]["noun"], "bundles");
    assert_eq!(
        written.body["audit"]["new_generation"],
        json!(generation + 1)
    );

    let reread = api.get(LOCAL);
    assert_eq!(reread.body["etag"], written.body["etag"]);
    assert_eq!(reread.header("etag"), written.header("etag"));

    // `*` accepts whatever the state is now.
    let deployment = id(&written.body["result"], "deployment_id");
    let any = api.call(
        "PATCH",
        &format!("{LOCAL}/bundles/{deployment}"),
        &[("If-Match", "*")],
        Some(json!({"status": "paused"})),
    );
    assert_eq!(any.status, 200, "{:?}", any.body);
    assert_eq!(any.body["result"]["status"], "paused");

    // The refusals were audited like any other.
    let events = audit_events(&home);
    assert!(
        events
            .iter()
            .any(|e| e["result"]["kind"] == "precondition-required")
    );
    assert!(
        events
            .iter()
            .any(|e| e["result"]["kind"] == "precondition-failed")
    );
}

#[test]
fn idempotent_replays_survive_a_restart() {
    // Proves: the same key and body replay the first answer verbatim (same
    // audit event id, etag, generation), also after the node restarts; the
    // same key with another body is 409; an empty key is 400.
    let home = Home::new();
    let mut node = Node::start(&home);
    let api = Api::new(&node, &owner_token(&home));
    let read = api.get(LOCAL);
    let etag = read.quoted_etag();
    let path = format!("{LOCAL}/bundles");
    let body = json!({"bundle_id": "shop", "route_binding": {"path_prefixes": ["/shop"]}});
    let headers = [
        ("If-Match", etag.as_str()),
        ("Idempotency-Key", "add-shop-1"),
    ];

    let first = api.call("POST", &path, &headers, Some(body.clone()));
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_eq!(first.body["idempotency"], "applied");
    let event_id = first.body["audit"]["event_id"].clone();
    assert!(event_id.is_string());

    let check_replay = |api: &Api, answer: Answer| {
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        assert_eq!(answer.body["idempotency"], "replayed");
        for field in ["etag", "generation", "audit", "result"] {
            assert_eq!(
                answer.body[field], first.body[field],
                "{field} is replayed verbatim"
            );
        }
        assert_eq!(answer.header("etag"), first.header("etag"));
        // Nothing changed: the state is where the first answer left it.
        assert_eq!(api.get(LOCAL).body["etag"], first.body["etag"]);
    };
    // The retry still carries the If-Match it read before its first attempt.
    check_replay(&api, api.call("POST", &path, &headers, Some(body.clone())));

    let other = json!({"bundle_id": "shop", "route_binding": {"path_prefixes": ["/other"]}});
    let conflict = api.call("POST", &path, &headers, Some(other));
    assert_error(&conflict, 409, "idempotency-conflict");

    let empty = api.call(
        "POST",
        &path,
        &[("If-Match", etag.as_str()), ("Idempotency-Key", "")],
        Some(body.clone()),
    );
    assert_error(&empty, 400, "invalid-request");

    drop(node);
    node = Node::start(&home);
    let api = Api::new(&node, &owner_token(&home));
    check_replay(&api, api.call("POST", &path, &headers, Some(body)));

    // The audit log holds the first event once, and each retry as a replay.
    let events = audit_events(&home);
    assert_eq!(
        events.iter().filter(|e| e["event_id"] == event_id).count(),
        1
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| e["idempotency_key"] == "add-shop-1" && e["replayed"] == true)
            .count(),
        2
    );
    drop(node);
}

#[test]
fn every_audit_event_an_answer_returns_is_the_one_the_log_holds() {
    // Proves (issue 20 item 9): the `audit` of an admin-API answer is the
    // event exactly as the audit log holds it, `prev_hash` included, for a
    // first answer with and without an idempotency key, a replay (whose
    // replicated record keeps no `prev_hash`) and a backup.
    let home = Home::new();
    let node = Node::start(&home);
    let api = Api::new(&node, &owner_token(&home));
    let logged = |answer: &Answer| {
        let audit = &answer.body["audit"];
        assert!(audit["event_id"].is_string(), "{:?}", answer.body);
        let events = audit_events(&home);
        let stored = events
            .iter()
            .find(|e| e["event_id"] == audit["event_id"])
            .expect("the answer's event is in the log");
        assert_eq!(audit, stored, "the answer's event is the stored one");
        let prev_hash = audit["prev_hash"].as_str().unwrap_or("");
        assert_eq!(prev_hash.len(), 64, "a real chain hash: {audit}");
    };

    let etag = api.get(LOCAL).quoted_etag();
    let plain = api.call(
        "POST",
        &format!("{LOCAL}/bundles"),
        &[("If-Match", &etag)],
        Some(json!({"bundle_id": "shop", "route_binding": {"path_prefixes": ["/shop"]}})),
    );
    assert_eq!(plain.status, 200, "{:?}", plain.body);
    logged(&plain);

    let etag = api.get(LOCAL).quoted_etag();
    let headers = [("If-Match", etag.as_str()), ("Idempotency-Key", "add-cart")];
    let body = json!({"bundle_id": "cart", "route_binding": {"path_prefixes": ["/cart"]}});
    let path = format!("{LOCAL}/bundles");
    let first = api.call("POST", &path, &headers, Some(body.clone()));
    assert_eq!(first.status, 200, "{:?}", first.body);
    logged(&first);
    let replay = api.call("POST", &path, &headers, Some(body));
    assert_eq!(replay.body["idempotency"], "replayed", "{:?}", replay.body);
    assert_eq!(replay.body["audit"], first.body["audit"]);
    logged(&replay);

    let backup = api.call("POST", &format!("{LOCAL}/backups"), &[], None);
    assert_eq!(backup.status, 200, "{:?}", backup.body);
    logged(&backup);
    drop(node);
}

#[test]
fn roles_decide_and_every_decision_is_audited() {
    // Proves: no or an unknown token is 401; a viewer reads but may not
    // change (403, audited with its id); an operator changes (audited with
    // its id) but may not restore; a token sees only its environments.
    let home = Home::new();
    let node = Node::start(&home);
    let viewer = make_token(&home, "dash", "viewer", "local");
    let operator = make_token(&home, "ci-deployer", "operator", "local");
    let elsewhere = make_token(&home, "prod-only", "admin", "prod-eu");
    let api = Api::new(&node, &viewer);

    assert_error(&api.as_token(None).get(LOCAL), 401, "unauthenticated");
    assert_error(
        &api.as_token(Some("gtc_nope")).get(LOCAL),
        401,
        "unauthenticated",
    );

    let read = api.get(LOCAL);
    assert_eq!(read.status, 200, "{:?}", read.body);
    let listed = api.get("/v1/environments");
    assert_eq!(listed.body["environments"][0]["environment_id"], "local");
    let audit = api.get(&format!("{LOCAL}/audit?limit=5"));
    assert_eq!(audit.status, 200, "{:?}", audit.body);

    let etag = read.quoted_etag();
    let bundle = json!({"bundle_id": "shop", "route_binding": {"path_prefixes": ["/shop"]}});
    let denied = api.call(
        "POST",
        &format!("{LOCAL}/bundles"),
        &[("If-Match", &etag)],
        Some(bundle.clone()),
    );
    assert_error(&denied, 403, "unauthorized");
    let events = audit_events(&home);
    let denial = events.last().expect("denial audited");
    assert_eq!(denial["actor"], json!({"kind": "token", "user": "dash"}));
    assert_eq!(denial["authorization"]["decision"], "deny");
    assert_eq!(denial["authorization"]["policy"], "admin-tokens");
    assert_eq!(
        (denial["noun"].as_str(), denial["verb"].as_str()),
        (Some("bundles"), Some("add"))
    );

    let operator_api = api.as_token(Some(&operator));
    let added = operator_api.call(
        "POST",
        &format!("{LOCAL}/bundles"),
        &[("If-Match", &etag)],
        Some(bundle),
    );
    assert_eq!(added.status, 200, "{:?}", added.body);
    assert_eq!(added.body["audit"]["actor"]["user"], "ci-deployer");
    assert_eq!(added.body["audit"]["authorization"]["decision"], "allow");
    let events = audit_events(&home);
    assert_eq!(
        events.last().expect("event")["actor"]["user"],
        "ci-deployer"
    );

    let restore = operator_api.call(
        "POST",
        &format!("{LOCAL}/restore"),
        &[("If-Match", "*")],
        Some(json!({"backup_id": "01J00000000000000000000000"})),
    );
    assert_error(&restore, 403, "unauthorized");

    let other = api.as_token(Some(&elsewhere));
    assert_error(&other.get(LOCAL), 403, "unauthorized");
    assert_eq!(
        other.get("/v1/environments").body["environments"],
        json!([])
    );

    // Without --id, the token gets a generated one.
    let unnamed = home.gtc(&["node", "token", "create", "--role", "viewer"]);
    assert_eq!(unnamed.code, 0, "{}", unnamed.stderr);
    assert!(
        unnamed.stdout["result"]["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("token-"))
    );
    let listed = home.gtc(&["node", "token", "list"]);
    assert_eq!(
        listed.stdout["result"]["tokens"].as_array().map(Vec::len),
        Some(4)
    );
    assert!(!listed.raw.stdout.windows(6).any(|w| w == b"sha256"));

    // Revoking takes effect without a restart.
    let revoked = home.gtc(&["node", "token", "revoke", "--id", "dash"]);
    assert_eq!(revoked.code, 0, "{}", revoked.stderr);
    assert_error(&api.get(LOCAL), 401, "unauthenticated");
    // The tokens file keeps hashes only, readable by its owner alone.
    let file = home.root().join("tokens.json");
    let text = std::fs::read_to_string(&file).expect("tokens file");
    assert!(!text.contains(&operator));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn every_error_kind_we_can_provoke_has_its_status() {
    // Proves: the kind→status table of the contract, one provoked request
    // per kind, each answered with {error: {kind, message, status}}.
    let home = Home::new();
    let node = Node::start(&home);
    let api = Api::new(&node, &owner_token(&home));
    let deployment = add_bundle(&api, "/shop");
    let any = [("If-Match", "*")];

    let not_json = api.send("POST", &format!("{LOCAL}/bundles"), &any, b"{not json");
    assert_error(&not_json, 400, "invalid-request");
    let unknown_field = api.call(
        "POST",
        &format!("{LOCAL}/bundles"),
        &any,
        Some(json!({"bundle_id": "shop", "colour": "red"})),
    );
    assert_error(&unknown_field, 400, "answers-parse");
    let other_env = api.call(
        "PATCH",
        LOCAL,
        &any,
        Some(json!({"environment_id": "prod-eu", "name": "x"})),
    );
    assert_error(&other_env, 400, "invalid-argument");
    assert_eq!(other_env.body["error"]["field"], "environment_id");
    let bad_id = api.call("POST", &format!("{LOCAL}/revisions/nope/warm"), &any, None);
    assert_error(&bad_id, 400, "invalid-request");

    assert_error(&api.as_token(None).get(LOCAL), 401, "unauthenticated");

    assert_error(&api.get("/v1/environments/nowhere"), 404, "not-found");
    assert_error(&api.get(&format!("{LOCAL}/nothing")), 404, "not-found");
    let missing_revision = api.call(
        "POST",
        &format!("{LOCAL}/revisions/01J00000000000000000000000/drain"),
        &any,
        None,
    );
    assert_error(&missing_revision, 404, "not-found");

    let wrong_method = api.call("PUT", LOCAL, &[], None);
    assert_error(&wrong_method, 405, "method-not-allowed");
    assert_eq!(wrong_method.header("allow"), Some("GET, PATCH, DELETE"));

    let exists = api.call(
        "POST",
        "/v1/environments",
        &[],
        Some(json!({"environment_id": "local", "name": "again"})),
    );
    assert_error(&exists, 409, "already-exists");

    let staged = api.call(
        "POST",
        &format!("{LOCAL}/revisions"),
        &any,
        Some(json!({"deployment_id": deployment})),
    );
    assert_eq!(staged.status, 200, "{:?}", staged.body);
    let revision = id(&staged.body["result"], "revision_id");
    let drain_staged = api.call(
        "POST",
        &format!("{LOCAL}/revisions/{revision}/drain"),
        &any,
        None,
    );
    assert_error(&drain_staged, 409, "conflict");

    let huge = vec![b' '; 2 * 1024 * 1024];
    let too_large = api.send("POST", &format!("{LOCAL}/bundles"), &any, &huge);
    assert_error(&too_large, 413, "payload-too-large");

    // A warm gate that fails persists `failed`: 422 with the new etag.
    let paused = api.call(
        "PATCH",
        &format!("{LOCAL}/bundles/{deployment}"),
        &any,
        Some(json!({"status": "paused"})),
    );
    assert_eq!(paused.status, 200, "{:?}", paused.body);
    let gate = api.call(
        "POST",
        &format!("{LOCAL}/revisions/{revision}/warm"),
        &any,
        None,
    );
    assert_error(&gate, 422, "health-gate-failed");
    assert_eq!(
        gate.header("etag"),
        Some(api.get(LOCAL).quoted_etag().as_str())
    );

    // A backup modified on disk is refused by its digest.
    let backup = api.call("POST", &format!("{LOCAL}/backups"), &[], None);
    assert_eq!(backup.status, 200, "{:?}", backup.body);
    let backup_id = id(&backup.body["result"], "backup_id");
    let listed = api.get(&format!("{LOCAL}/backups"));
    assert_eq!(listed.body["backups"][0]["backup_id"], json!(backup_id));
    let file = home
        .root()
        .join(format!("local/backups/{backup_id}.backup.json"));
    let text = std::fs::read_to_string(&file).expect("backup");
    std::fs::write(&file, text.replacen("\"shop\"", "\"shoq\"", 1)).expect("tamper");
    let restore = api.call(
        "POST",
        &format!("{LOCAL}/restore"),
        &any,
        Some(json!({"backup_id": backup_id})),
    );
    assert_error(&restore, 422, "integrity-mismatch");

    let import = api.call("POST", &format!("{LOCAL}/import"), &[], Some(json!({})));
    assert_error(&import, 501, "not-yet-implemented");
    let upload = api.call(
        "POST",
        &format!("{LOCAL}/revisions"),
        &any,
        Some(json!({"deployment_id": deployment, "bundle_path": "/etc/passwd"})),
    );
    assert_error(&upload, 501, "not-yet-implemented");
    assert_eq!(upload.body["error"]["field"], "bundle_path");
}

#[test]
fn a_whole_deployment_goes_through_the_api_and_gtc_op_still_works() {
    // Proves: stage → warm → traffic → rollback through the contract, and
    // `gtc op` beside it through the same node. The revisions have
    // something to run (the example bundle, staged with `gtc op` through
    // the node, since the API takes no uploads): warm answers `warming`
    // and the node makes them ready; only then may they take traffic.
    let home = Home::new();
    let node = Node::start(&home);
    let api = Api::new(&node, &owner_token(&home));
    let deployment = add_bundle(&api, "/shop");
    let bundle = common::example_bundle(&home, "shop", "shop");
    let any = [("If-Match", "*")];
    let mut revisions = Vec::new();
    for _ in 0..2 {
        let staged = home.mutate(
            "revisions",
            "stage",
            json!({"environment_id": "local", "deployment_id": deployment, "bundle_path": bundle}),
        );
        assert_eq!(staged.code, 0, "{}", staged.stderr);
        assert_eq!(staged.stdout["via"], "node");
        let revision = id(&staged.stdout["result"], "revision_id");
        let warmed = api.call(
            "POST",
            &format!("{LOCAL}/revisions/{revision}/warm"),
            &any,
            None,
        );
        assert_eq!(warmed.status, 200, "{:?}", warmed.body);
        assert_eq!(warmed.body["result"]["lifecycle"], "warming");
        common::wait_until("the revision ready", Duration::from_secs(30), || {
            common::lifecycle(&home, &revision) == "ready"
        });
        revisions.push(revision);
    }
    // A revision staged without a bundle becomes ready on the state checks
    // alone, but nothing runs it: the split is refused, saying why.
    let bare = api.call(
        "POST",
        &format!("{LOCAL}/revisions"),
        &any,
        Some(json!({"deployment_id": deployment})),
    );
    assert_eq!(bare.status, 200, "{:?}", bare.body);
    let bare = id(&bare.body["result"], "revision_id");
    let warmed = api.call(
        "POST",
        &format!("{LOCAL}/revisions/{bare}/warm"),
        &any,
        None,
    );
    assert_eq!(
        warmed.body["result"]["lifecycle"], "ready",
        "{:?}",
        warmed.body
    );
    let refused = api.call(
        "POST",
        &format!("{LOCAL}/traffic"),
        &[("If-Match", "*"), ("Idempotency-Key", "bare")],
        Some(json!({"deployment_id": deployment, "entries": [{"revision_id": bare, "weight_bps": 10000}]})),
    );
    assert_error(&refused, 400, "invalid-argument");
    assert_eq!(refused.body["error"]["field"], "entries[0].revision_id");
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("nothing to run")),
        "{:?}",
        refused.body
    );
    for (key, revision) in [("split-1", &revisions[0]), ("split-2", &revisions[1])] {
        let set = api.call(
            "POST",
            &format!("{LOCAL}/traffic"),
            &[("If-Match", "*"), ("Idempotency-Key", key)],
            Some(json!({"deployment_id": deployment, "entries": [{"revision_id": revision, "weight_bps": 10000}]})),
        );
        assert_eq!(set.status, 200, "{:?}", set.body);
    }
    let rolled = api.call(
        "POST",
        &format!("{LOCAL}/traffic/rollback"),
        &any,
        Some(json!({"deployment_id": deployment})),
    );
    assert_eq!(rolled.status, 200, "{:?}", rolled.body);
    assert_eq!(
        rolled.body["result"]["entries"][0]["revision_id"],
        json!(revisions[0])
    );

    let shown = home.gtc(&["op", "traffic", "show", "local"]);
    assert_eq!(shown.code, 0);
    let via_cli = home.mutate(
        "bundles",
        "update",
        json!({"environment_id": "local", "deployment_id": deployment, "status": "paused"}),
    );
    assert_eq!(via_cli.code, 0, "{}", via_cli.stderr);
    assert_eq!(via_cli.stdout["via"], "node");
    assert_eq!(
        api.get(LOCAL).body["generation"],
        via_cli.stdout["generation"]
    );
}

/// A CA and a certificate for 127.0.0.1 signed by it, as PEM files.
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "gtc test ca");
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let key = rcgen::KeyPair::generate().expect("key");
    let params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("params");
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let cert = params.signed_by(&key, &issuer).expect("cert");
    let paths = (
        dir.join("ca.pem"),
        dir.join("admin.pem"),
        dir.join("admin.key"),
    );
    std::fs::write(&paths.0, ca.pem()).expect("write ca");
    std::fs::write(&paths.1, cert.pem()).expect("write cert");
    std::fs::write(&paths.2, key.serialize_pem()).expect("write key");
    paths
}

#[test]
fn https_when_certificates_are_configured() {
    // Proves: with a certificate the admin API speaks only HTTPS: a client
    // trusting the CA gets answers, plain HTTP gets none, and `gtc op`
    // reaches the node with --admin-ca (and says what to do without it).
    let home = Home::new();
    let (ca, cert, key) = certificates(home.dir.path());
    let node = Node::start_with(
        &home,
        &[
            "--admin-tls-cert",
            cert.to_str().expect("path"),
            "--admin-tls-key",
            key.to_str().expect("path"),
        ],
    );
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(&ca).expect("ca");
    use rustls::pki_types::pem::PemObject;
    for certificate in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(certificate.expect("pem")).expect("root");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut api = Api::new(&node, &owner_token(&home));
    api.tls = Some(Arc::new(config));
    let read = api.get(LOCAL);
    assert_eq!(read.status, 200, "{:?}", read.body);
    assert!(read.header("etag").is_some());

    // Plain HTTP to the TLS port: no HTTP answer comes back.
    let mut stream = TcpStream::connect(node.admin).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    assert!(
        !answer.starts_with(b"HTTP/"),
        "plain HTTP was answered: {}",
        String::from_utf8_lossy(&answer)
    );

    let payload = json!({"environment_id": "local", "bundle_id": "shop", "route_binding": {"path_prefixes": ["/shop"]}});
    let without_ca = home.mutate("bundles", "add", payload.clone());
    assert_ne!(without_ca.code, 0);
    assert!(
        without_ca.error_message().contains("--admin-ca"),
        "{}",
        without_ca.stderr
    );
    let path = home.write("bundle.json", &payload.to_string());
    let with_ca = home.gtc(&[
        "op",
        "bundles",
        "add",
        "--answers",
        path.to_str().expect("path"),
        "--admin-ca",
        ca.to_str().expect("path"),
    ]);
    assert_eq!(with_ca.code, 0, "{}", with_ca.stderr);
    assert_eq!(with_ca.stdout["via"], "node");
}

#[test]
fn create_checks_existence_and_restore_needs_admin_and_a_precondition() {
    // Proves: creating needs no If-Match and replays by Idempotency-Key
    // (the payload has no key field: the envelope carries it); a backup
    // restores through the API for an admin, guarded by If-Match.
    let home = Home::new();
    let node = Node::start(&home);
    let fleet = make_token(&home, "fleet", "admin", "*");
    let api = Api::new(&node, &fleet);
    let body = json!({"environment_id": "staging-eu", "name": "Staging"});
    let key = [("Idempotency-Key", "create-staging")];
    let created = api.call("POST", "/v1/environments", &key, Some(body.clone()));
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(created.body["idempotency"], "applied");
    assert_eq!(created.body["generation"], json!(1));
    let again = api.call("POST", "/v1/environments", &key, Some(body));
    assert_eq!(again.status, 201, "{:?}", again.body);
    assert_eq!(again.body["idempotency"], "replayed");
    assert_eq!(again.body["audit"], created.body["audit"]);
    let without_key = api.call(
        "POST",
        "/v1/environments",
        &[],
        Some(json!({"environment_id": "staging-eu", "name": "Staging"})),
    );
    assert_error(&without_key, 409, "already-exists");

    let staging = "/v1/environments/staging-eu";
    let backup = api.call("POST", &format!("{staging}/backups"), &[], None);
    assert_eq!(backup.status, 200, "{:?}", backup.body);
    let backup_id = id(&backup.body["result"], "backup_id");
    let etag = api.get(staging).quoted_etag();
    let renamed = api.call(
        "PATCH",
        staging,
        &[("If-Match", &etag)],
        Some(json!({"name": "Renamed"})),
    );
    assert_eq!(renamed.status, 200, "{:?}", renamed.body);
    let restore = format!("{staging}/restore");
    let unguarded = api.call("POST", &restore, &[], Some(json!({"backup_id": backup_id})));
    assert_error(&unguarded, 428, "precondition-required");
    let stale = api.call(
        "POST",
        &restore,
        &[("If-Match", &etag)],
        Some(json!({"backup_id": backup_id})),
    );
    assert_error(&stale, 412, "precondition-failed");
    let restored = api.call(
        "POST",
        &restore,
        &[("If-Match", &renamed.quoted_etag())],
        Some(json!({"backup_id": backup_id})),
    );
    assert_eq!(restored.status, 200, "{:?}", restored.body);
    assert_eq!(api.get(staging).body["environment"]["name"], "Staging");

    // Destroying is ours, admin only, and guarded too.
    let destroyed = api.call("DELETE", staging, &[("If-Match", "*")], None);
    assert_eq!(destroyed.status, 200, "{:?}", destroyed.body);
    assert_eq!(destroyed.body["etag"], Value::Null);
    assert_error(&api.get(staging), 404, "not-found");
}

#[test]
fn gtc_op_reaches_a_node_by_url_with_an_api_token() {
    // Proves: from elsewhere (an empty GREENTIC_HOME, no node file),
    // `gtc op --node URL --token T` reads and changes through the contract
    // with the token's role; a viewer cannot change anything; nothing is
    // written in the caller's own home.
    let home = Home::new();
    let node = Node::start(&home);
    let operator = make_token(&home, "ci", "operator", "local");
    let viewer = make_token(&home, "dash", "viewer", "local");
    let elsewhere = Home::new();
    let url = format!("http://{}", node.admin);
    let answers = elsewhere.write(
        "bundle.json",
        r#"{"environment_id":"local","bundle_id":"shop","route_binding":{"path_prefixes":["/shop"]}}"#,
    );
    let answers = answers.to_str().expect("utf8");
    let added = elsewhere.gtc(&[
        "op",
        "bundles",
        "add",
        "--answers",
        answers,
        "--node",
        &url,
        "--token",
        &operator,
    ]);
    assert_eq!(added.code, 0, "{}", added.stderr);
    assert_eq!(added.stdout["via"], "node", "{}", added.stdout);
    let listed = elsewhere.gtc(&[
        "op", "bundles", "list", "local", "--node", &url, "--token", &viewer,
    ]);
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    assert!(
        listed.stdout.to_string().contains("shop"),
        "{}",
        listed.stdout
    );
    let other = elsewhere.write(
        "other.json",
        r#"{"environment_id":"local","bundle_id":"cart","route_binding":{"path_prefixes":["/cart"]}}"#,
    );
    let refused = elsewhere.gtc(&[
        "op",
        "bundles",
        "add",
        "--answers",
        other.to_str().expect("utf8"),
        "--node",
        &url,
        "--token",
        &viewer,
    ]);
    assert_ne!(refused.code, 0);
    assert_eq!(refused.error_kind(), "unauthorized", "{}", refused.stdout);
    // Every verb with an API route works through --node (issue 20): the
    // environment list, a backup written by the node, its backups.
    let listed = elsewhere.gtc(&["op", "env", "list", "--node", &url, "--token", &viewer]);
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    assert_eq!(
        listed.stdout["result"][0]["environment_id"], "local",
        "{}",
        listed.stdout
    );
    let target = elsewhere.write("target.json", r#"{"environment_id":"local"}"#);
    let backup = elsewhere.gtc(&[
        "op",
        "env",
        "backup",
        "--answers",
        target.to_str().expect("utf8"),
        "--node",
        &url,
        "--token",
        &operator,
    ]);
    assert_eq!(backup.code, 0, "{}", backup.stderr);
    let backup_id = backup.stdout["result"]["backup_id"].clone();
    assert!(backup_id.is_string(), "{}", backup.stdout);
    let backups = elsewhere.gtc(&[
        "op", "env", "backups", "local", "--node", &url, "--token", &viewer,
    ]);
    assert_eq!(backups.code, 0, "{}", backups.stderr);
    assert_eq!(
        backups.stdout["result"]["backups"][0]["backup_id"],
        backup_id
    );
    let admin = make_token(&home, "ops", "admin", "local");
    let restore = elsewhere.write(
        "restore.json",
        &json!({"environment_id": "local", "backup_id": backup_id, "expected_generation": listed.stdout["result"][0]["generation"]}).to_string(),
    );
    let restored = elsewhere.gtc(&[
        "op",
        "env",
        "restore",
        "--answers",
        restore.to_str().expect("utf8"),
        "--node",
        &url,
        "--token",
        &admin,
    ]);
    assert_eq!(restored.code, 0, "{}", restored.stderr);
    assert_eq!(restored.stdout["via"], "node", "{}", restored.stdout);
    let still_local = elsewhere.gtc(&[
        "op", "env", "doctor", "local", "--node", &url, "--token", &viewer,
    ]);
    assert_eq!(still_local.error_kind(), "not-yet-implemented");
    assert!(
        !elsewhere.root().join("local").exists(),
        "nothing was written locally"
    );
}
