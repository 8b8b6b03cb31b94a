//! The real `gtc` binary in a temporary GREENTIC_HOME.

mod common;

use std::time::Duration;

use common::{Home, Node, id};
use serde_json::json;

/// Adds a bundle, stages two revisions of the example bundle (something to
/// run) and warms both on a node until they are ready, then stops the node;
/// returns (deployment, v1, v2). Only such revisions may take traffic.
fn two_ready_revisions(home: &Home) -> (String, String, String) {
    home.ok("env", "init", json!({}));
    let deployment = id(
        &home.ok(
            "bundles",
            "add",
            json!({"environment_id": "local", "bundle_id": "shop", "route_binding": {"path_prefixes": ["/shop"]}}),
        ),
        "deployment_id",
    );
    let bundle = common::example_bundle(home, "shop", "shop");
    let node = Node::start(home);
    let stage =
        json!({"environment_id": "local", "deployment_id": deployment, "bundle_path": bundle});
    let v1 = id(&home.ok("revisions", "stage", stage.clone()), "revision_id");
    let v2 = id(&home.ok("revisions", "stage", stage), "revision_id");
    for revision in [&v1, &v2] {
        let warmed = home.ok(
            "revisions",
            "warm",
            json!({"environment_id": "local", "revision_id": revision}),
        );
        assert_eq!(warmed["lifecycle"], "warming");
    }
    common::wait_until("both revisions ready", Duration::from_secs(30), || {
        common::lifecycle(home, &v1) == "ready" && common::lifecycle(home, &v2) == "ready"
    });
    drop(node);
    (deployment, v1, v2)
}

#[test]
fn the_operator_journey_end_to_end() {
    // Proves: init twice, create env, add bundle, stage two revisions, warm
    // them, 99/1 split, rollback, archive refusal while referenced, drain,
    // archive, all through the real binary, with every change audited.
    let home = Home::new();
    let first = home.gtc(&["op", "env", "init"]);
    assert_eq!(first.code, 0);
    assert_eq!(first.stdout["result"]["outcome"], "created");
    let audit_after_init = home.audit_lines("local").len();
    let second = home.gtc(&["op", "env", "init"]);
    assert_eq!(second.stdout["result"]["outcome"], "untouched");
    assert_eq!(
        home.audit_lines("local").len(),
        audit_after_init,
        "no audit churn"
    );

    // A second environment needs a grant; without one it is denied and audited.
    let create =
        json!({"environment_id": "prod-eu", "name": "Production EU", "region": "eu-west-1"});
    let denied = home.mutate("env", "create", create.clone());
    assert_eq!((denied.code, denied.error_kind()), (1, "unauthorized"));
    let root_audit =
        std::fs::read_to_string(home.root().join(".audit/events.jsonl")).expect("root audit");
    assert!(root_audit.contains("\"decision\":\"deny\""));
    std::fs::write(
        home.root().join("policy.json"),
        json!({"schema": "greentic.policy.v1", "grants": [{"environment_id": "prod-eu", "users": ["tester"]}]}).to_string(),
    )
    .expect("policy");
    let created = home.ok("env", "create", create);
    assert_eq!(created["environment_id"], "prod-eu");

    let (deployment, v1, v2) = two_ready_revisions(&home);
    let set = |key: &str, entries: serde_json::Value| {
        home.mutate(
            "traffic",
            "set",
            json!({"environment_id": "local", "deployment_id": deployment, "idempotency_key": key, "entries": entries}),
        )
    };
    let all_v1 = set("k1", json!([{"revision_id": v1, "weight_percent": 100}]));
    assert_eq!(all_v1.code, 0);
    let split = set(
        "k2",
        json!([{"revision_id": v1, "weight_percent": 99}, {"revision_id": v2, "weight_bps": 100}]),
    );
    assert_eq!(
        split.code,
        0,
        "{}",
        String::from_utf8_lossy(&split.raw.stderr)
    );
    assert_eq!(split.stdout["result"]["generation"], 1);
    assert_eq!(split.stdout["result"]["entries"][1]["weight_bps"], 100);
    // A retried set replays the first answer.
    let retry = set(
        "k2",
        json!([{"revision_id": v1, "weight_percent": 99}, {"revision_id": v2, "weight_bps": 100}]),
    );
    assert_eq!(retry.stdout["idempotency"], "replayed");
    assert_eq!(retry.stdout["result"], split.stdout["result"]);

    let shown = home.gtc(&[
        "op",
        "traffic",
        "show",
        "local",
        "--deployment",
        &deployment,
    ]);
    assert_eq!(shown.stdout["result"]["splits"][0]["generation"], 1);

    let rolled = home.ok(
        "traffic",
        "rollback",
        json!({"environment_id": "local", "deployment_id": deployment}),
    );
    assert_eq!(rolled["generation"], 2);
    assert_eq!(
        rolled["entries"],
        json!([{"revision_id": v1, "weight_bps": 10000, "weight_percent": 100.0, "latest": false, "tag": null}])
    );

    let refused = home.mutate(
        "revisions",
        "archive",
        json!({"environment_id": "local", "revision_id": v1}),
    );
    assert_eq!((refused.code, refused.error_kind()), (1, "conflict"));
    assert!(
        refused.error_message().contains("still sends it traffic"),
        "{}",
        refused.error_message()
    );

    let drained = home.ok(
        "revisions",
        "drain",
        json!({"environment_id": "local", "revision_id": v2}),
    );
    assert_eq!(drained["lifecycle"], "draining");
    let archived = home.ok(
        "revisions",
        "archive",
        json!({"environment_id": "local", "revision_id": v2}),
    );
    assert_eq!(archived["lifecycle"], "archived");

    let listed = home.gtc(&["op", "revisions", "list", "local"]);
    let lifecycles: Vec<_> = listed.stdout["result"]["revisions"]
        .as_array()
        .expect("revisions")
        .iter()
        .map(|r| r["lifecycle"].as_str().expect("lifecycle").to_owned())
        .collect();
    assert_eq!(lifecycles, ["ready", "archived"]);

    let doctor = home.gtc(&["op", "env", "doctor", "local"]);
    assert_eq!(doctor.code, 0, "{}", doctor.stdout);
    assert_eq!(doctor.stdout["result"]["audit"]["chain"], "ok");
    assert_eq!(doctor.stdout["result"]["healthy"], true);
}

#[test]
fn bad_input_is_refused_specifically_and_changes_no_state() {
    // Proves: each kind of bad input gets its own error kind and message,
    // a non-zero exit, and leaves every state file byte-for-byte unchanged;
    // the audit logs only gain the refusal events of requests that reached
    // the apply path.
    let home = Home::new();
    let (deployment, v1, _v2) = two_ready_revisions(&home);
    let blog = id(
        &home.ok("bundles", "add", json!({"environment_id": "local", "bundle_id": "blog", "route_binding": {"path_prefixes": ["/blog"]}})),
        "deployment_id",
    );
    let foreign = id(
        &home.ok(
            "revisions",
            "stage",
            json!({"environment_id": "local", "deployment_id": blog}),
        ),
        "revision_id",
    );
    home.ok(
        "revisions",
        "warm",
        json!({"environment_id": "local", "revision_id": foreign}),
    );

    /// (what, how to run it, expected error kind, expected message part)
    type Case<'a> = (&'a str, Box<dyn Fn() -> common::Run + 'a>, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (
            "malformed JSON",
            Box::new(|| {
                let path = home.write("broken.json", "{\"environment_id\": \"local\",");
                home.gtc(&[
                    "op",
                    "traffic",
                    "set",
                    "--answers",
                    path.to_str().expect("path"),
                ])
            }),
            "answers-parse",
            "is not valid JSON",
        ),
        (
            "unknown field",
            Box::new(|| {
                home.mutate("traffic", "set", json!({"environment_id": "local", "deployment_id": deployment, "idempotency_key": "u", "entries": [], "weights": 1}))
            }),
            "answers-parse",
            "unknown field `weights`",
        ),
        (
            "wrong schema",
            Box::new(|| {
                home.mutate("traffic", "set", json!({"environment_id": "local", "deployment_id": deployment, "idempotency_key": "w", "entries": [{"revision_id": v1, "weight_bps": "all"}]}))
            }),
            "answers-parse",
            "entries[0].weight_bps",
        ),
        (
            "weights not summing to 100%",
            Box::new(|| {
                home.mutate("traffic", "set", json!({"environment_id": "local", "deployment_id": deployment, "idempotency_key": "s", "entries": [{"revision_id": v1, "weight_percent": 90}]}))
            }),
            "invalid-argument",
            "sum to 9000 bps (90%)",
        ),
        (
            "a revision from another deployment",
            Box::new(|| {
                home.mutate("traffic", "set", json!({"environment_id": "local", "deployment_id": deployment, "idempotency_key": "f", "entries": [{"revision_id": foreign, "weight_percent": 100}]}))
            }),
            "invalid-argument",
            "belongs to deployment",
        ),
        (
            "an env id with ..",
            Box::new(|| {
                home.mutate(
                    "env",
                    "create",
                    json!({"environment_id": "..", "name": "x"}),
                )
            }),
            "answers-parse",
            "starts with '.'",
        ),
        (
            "an env id with /",
            Box::new(|| {
                home.mutate(
                    "env",
                    "create",
                    json!({"environment_id": "a/b", "name": "x"}),
                )
            }),
            "answers-parse",
            "contains '/'",
        ),
        (
            "a missing answers file",
            Box::new(|| {
                home.gtc(&[
                    "op",
                    "traffic",
                    "set",
                    "--answers",
                    "/nonexistent/answers.json",
                ])
            }),
            "io",
            "cannot read answers file",
        ),
        (
            "a positional env id with ..",
            Box::new(|| home.gtc(&["op", "env", "show", "../etc"])),
            "invalid-argument",
            "environment id",
        ),
    ];
    for (name, run, kind, message) in cases {
        let before = home.snapshot();
        let result = run();
        assert_ne!(result.code, 0, "{name}: exit code");
        assert_eq!(result.error_kind(), kind, "{name}: {}", result.stderr);
        assert!(
            result.error_message().contains(message),
            "{name}: {}",
            result.error_message()
        );
        let after = home.snapshot();
        for (path, bytes) in &before {
            let now = after
                .get(path)
                .unwrap_or_else(|| panic!("{name}: {} vanished", path.display()));
            if path.ends_with("audit/events.jsonl") {
                assert!(
                    now.starts_with(bytes),
                    "{name}: audit log {} was rewritten",
                    path.display()
                );
                let added = String::from_utf8_lossy(&now[bytes.len()..]).into_owned();
                assert!(
                    added.lines().all(|l| l.contains("\"outcome\":\"error\"")),
                    "{name}: {added}"
                );
            } else {
                assert_eq!(now, bytes, "{name}: {} changed", path.display());
            }
        }
        let new_files: Vec<_> = after.keys().filter(|p| !before.contains_key(*p)).collect();
        assert!(new_files.is_empty(), "{name}: new files {new_files:?}");
    }
}

#[test]
fn yaml_answers_and_table_output_work() {
    // Proves: answers may be YAML (by extension) and `--output table` prints columns.
    let home = Home::new();
    home.gtc(&["op", "env", "init"]);
    let path = home.write(
        "bundle.yaml",
        "environment_id: local\nbundle_id: docs\nroute_binding:\n  hosts: [docs.example.com]\n",
    );
    let added = home.gtc(&[
        "op",
        "bundles",
        "add",
        "--answers",
        path.to_str().expect("path"),
    ]);
    assert_eq!(added.code, 0, "{}", added.stderr);
    let table = home.gtc(&["op", "bundles", "list", "local", "--output", "table"]);
    let text = String::from_utf8_lossy(&table.raw.stdout);
    assert!(
        text.contains("BUNDLE_ID") && text.contains("docs"),
        "{text}"
    );
}

#[test]
fn credentials_bootstrap_on_local_process_is_refused_and_audited_without_material() {
    // Proves: the local-process deployer has no provider account, so a
    // bootstrap is a spec error (exit 1) saying `credentials requirements`
    // is its contract; it is audited without recording admin material.
    let home = Home::new();
    home.gtc(&["op", "env", "init"]);
    let before = home.audit_lines("local").len();
    let bootstrap = home.mutate(
        "credentials",
        "bootstrap",
        json!({"environment_id": "local", "admin_profile": "root", "admin_material_inline": "hunter2"}),
    );
    assert_eq!((bootstrap.code, bootstrap.error_kind()), (1, "spec"));
    assert!(
        bootstrap
            .error_message()
            .contains("`gtc op credentials requirements` is its whole credentials contract"),
        "{}",
        bootstrap.error_message()
    );
    let lines = home.audit_lines("local");
    assert_eq!(lines.len(), before + 1);
    assert!(lines.iter().all(|l| !l.contains("hunter2")));
    assert!(!home.root().join("local/credentials.json").exists());
    let list = home.gtc(&["op", "secrets", "list", "local"]);
    assert_eq!(
        list.stdout["result"]["backend"],
        "greentic.secrets.dev-store@0.1.0"
    );
}

#[test]
fn backup_restore_and_doctor_catch_tampering() {
    // Proves: backup → change → restore round-trips; a stale expected
    // generation is refused; an edited audit log makes doctor fail.
    let home = Home::new();
    home.gtc(&["op", "env", "init"]);
    home.ok(
        "env",
        "update",
        json!({"environment_id": "local", "region": "before"}),
    );
    let backup = home.ok("env", "backup", json!({"environment_id": "local"}));
    let backup_id = id(&backup, "backup_id");
    home.ok(
        "env",
        "update",
        json!({"environment_id": "local", "region": "after"}),
    );
    let stale = home.mutate(
        "env",
        "restore",
        json!({"environment_id": "local", "backup_id": backup_id, "expected_generation": 1}),
    );
    assert_eq!(stale.error_kind(), "precondition-failed");
    let restored = home.ok(
        "env",
        "restore",
        json!({"environment_id": "local", "backup_id": backup_id, "expected_generation": 3}),
    );
    assert_eq!(restored["restored_from_generation"], 2);
    let shown = home.gtc(&["op", "env", "show", "local"]);
    assert_eq!(shown.stdout["result"]["host_config"]["region"], "before");
    let backups = home.gtc(&["op", "env", "backups", "local"]);
    assert_eq!(
        backups.stdout["result"]["backups"][0]["backup_id"],
        backup_id
    );

    let log = home.root().join("local/audit/events.jsonl");
    let text = std::fs::read_to_string(&log).expect("audit");
    std::fs::write(
        &log,
        text.replacen("\"region\":\"before\"", "\"region\":\"elsewhere\"", 1),
    )
    .expect("tamper");
    let doctor = home.gtc(&["op", "env", "doctor", "local"]);
    assert_eq!(doctor.code, 1);
    assert_ne!(doctor.stdout["result"]["audit"]["chain"], "ok");
}

#[test]
fn env_packs_are_checked_against_the_registry() {
    // Proves: binding an unknown pack or a pack into the wrong slot is refused
    // with the registry's reason; update keeps a rollback target.
    let home = Home::new();
    home.gtc(&["op", "env", "init"]);
    let wrong_slot = home.mutate("env-packs", "update", json!({"environment_id": "local", "slot": "secrets", "kind": "greentic.state.in-memory@0.1.0"}));
    assert_eq!(wrong_slot.error_kind(), "invalid-argument");
    assert!(
        wrong_slot
            .error_message()
            .contains("cannot be bound to the secrets slot")
    );
    let unknown = home.mutate(
        "env-packs",
        "update",
        json!({"environment_id": "local", "slot": "state", "kind": "acme.state.redis@1.0.0"}),
    );
    assert!(
        unknown
            .error_message()
            .contains("no env-pack handler is registered"),
        "{}",
        unknown.error_message()
    );
    let updated = home.ok("env-packs", "update", json!({"environment_id": "local", "slot": "state", "kind": "greentic.state.in-memory@0.1.5"}));
    assert_eq!(
        (
            updated["generation"].as_u64(),
            updated["has_previous"].as_bool()
        ),
        (Some(1), Some(true))
    );
    let rolled = home.ok(
        "env-packs",
        "rollback",
        json!({"environment_id": "local", "slot": "state"}),
    );
    assert_eq!(rolled["kind"], "greentic.state.in-memory@0.1.0");
}

#[test]
fn help_version_completions_and_schema() {
    // Proves: the interfaces a user reaches for first are there and useful.
    let home = Home::new();
    let help = home.gtc(&["op", "traffic", "--help"]);
    let text = String::from_utf8_lossy(&help.raw.stdout);
    assert!(
        text.contains("set") && text.contains("rollback") && text.contains("LATEST"),
        "{text}"
    );
    let version = home.gtc(&["--version"]);
    assert!(String::from_utf8_lossy(&version.raw.stdout).starts_with("gtc "));
    let completions = home.gtc(&["completions", "bash"]);
    assert!(String::from_utf8_lossy(&completions.raw.stdout).contains("_gtc"));
    let schema = home.gtc(&["op", "revisions", "stage", "--schema"]);
    assert_eq!(schema.code, 0);
    assert_eq!(
        schema.stdout["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert!(!home.root().exists(), "--schema never touches the store");
    let missing = home.gtc(&["op", "revisions", "stage"]);
    assert_eq!(missing.code, 2, "clap usage error");
}

#[test]
fn migrations_and_destroy() {
    // Proves: migrate-dev checks, then merges dev's bindings into empty
    // slots and moves dev aside; migrate-state moves the legacy tree aside;
    // destroy needs --confirm and keeps the folder under .destroyed/.
    let home = Home::new();
    home.gtc(&["op", "env", "init"]);
    std::fs::write(
        home.root().join("policy.json"),
        json!({"schema": "greentic.policy.v1", "grants": [{"environment_id": "*", "users": ["tester"]}]}).to_string(),
    )
    .expect("policy");
    home.ok(
        "env",
        "create",
        json!({"environment_id": "dev", "name": "legacy dev"}),
    );
    home.ok(
        "env-packs",
        "add",
        json!({"environment_id": "dev", "slot": "state", "kind": "greentic.state.in-memory@0.1.2"}),
    );
    home.ok(
        "env-packs",
        "remove",
        json!({"environment_id": "local", "slot": "state"}),
    );
    let target = json!({"environment_id": "local"});
    let path = home.write("target.json", &target.to_string());
    let path = path.to_str().expect("path");
    let check = home.gtc(&["op", "env", "migrate-dev", "--answers", path, "--check"]);
    assert_eq!(check.stdout["result"]["clean"], true, "{}", check.stdout);
    assert_eq!(check.stdout["result"]["would_merge"], json!(["state"]));
    let applied = home.gtc(&["op", "env", "migrate-dev", "--answers", path, "--apply"]);
    assert_eq!(applied.code, 0, "{}", applied.stderr);
    assert_eq!(applied.stdout["result"]["merged_slots"], json!(["state"]));
    let bindings = home.gtc(&["op", "env-packs", "list", "local"]);
    assert!(
        bindings
            .stdout
            .to_string()
            .contains("greentic.state.in-memory@0.1.2")
    );
    let listed = home.gtc(&["op", "env", "list"]);
    let ids: Vec<_> = listed.stdout["result"]
        .as_array()
        .expect("list")
        .iter()
        .map(|e| e["environment_id"].clone())
        .collect();
    assert_eq!(ids, vec![json!("local")], "dev was moved aside");
    let neither = home.gtc(&["op", "env", "migrate-dev", "--answers", path]);
    assert_eq!(neither.code, 2, "--check or --apply is required");

    let legacy = home.dir.path().join("state/deploy");
    std::fs::create_dir_all(&legacy).expect("legacy tree");
    let state = home.gtc(&["op", "env", "migrate-state", "--answers", path, "--check"]);
    assert_eq!(state.stdout["result"]["clean"], false);
    let state = home.gtc(&["op", "env", "migrate-state", "--answers", path, "--apply"]);
    assert_eq!(state.code, 0, "{}", state.stderr);
    assert!(!legacy.exists());

    let unconfirmed = home.gtc(&["op", "env", "destroy", "--answers", path]);
    assert_eq!(
        (unconfirmed.code, unconfirmed.error_kind()),
        (2, "invalid-argument"),
        "a missing --confirm is a usage error (README exit-code table)"
    );
    assert!(home.root().join("local/environment.json").exists());
    let destroyed = home.gtc(&["op", "env", "destroy", "--answers", path, "--confirm"]);
    assert_eq!(destroyed.code, 0, "{}", destroyed.stderr);
    assert!(!home.root().join("local").exists());
    let kept: Vec<_> = std::fs::read_dir(home.root().join(".destroyed"))
        .expect("graveyard")
        .flatten()
        .collect();
    assert_eq!(kept.len(), 1);
    assert!(kept[0].path().join("audit/events.jsonl").exists());
}

#[test]
fn every_identity_a_denial_suggests_is_matched_by_the_policy() {
    // Issue 20's class through the binary: for each way the CLI forms the
    // local identity ($USER, $USERNAME, neither so only the uid), the
    // denial's example grant names the denied environment, and writing
    // exactly that example to policy.json lets the same change through.
    let identities: [(&str, &[(&str, &str)]); 3] = [
        ("user", &[("USER", "tester")]),
        ("username", &[("USERNAME", "winuser")]),
        ("uid only", &[]),
    ];
    for (label, vars) in identities {
        let home = Home::new();
        home.ok("env", "init", json!({}));
        let answers = home.write(
            "create.json",
            &json!({"environment_id": "staging-7", "name": "staging"}).to_string(),
        );
        let run = || {
            let mut command = home.command();
            command.env_remove("USER").env_remove("USERNAME");
            for (key, value) in vars {
                command.env(key, value);
            }
            command
                .args(["op", "env", "create", "--answers"])
                .arg(&answers)
                .output()
                .expect("run gtc")
        };
        let denied = run();
        assert_eq!(denied.status.code(), Some(1), "{label}");
        let stderr: serde_json::Value = serde_json::from_slice(&denied.stderr).expect("json error");
        assert_eq!(stderr["error"]["kind"], "unauthorized", "{label}: {stderr}");
        let message = stderr["error"]["message"].as_str().expect("message");
        let example = message
            .split_once("e.g. ")
            .map(|(_, example)| example)
            .unwrap_or_else(|| panic!("{label}: no example in {message}"));
        let policy: serde_json::Value = serde_json::from_str(example)
            .unwrap_or_else(|e| panic!("{label}: the example is not JSON ({e}): {example}"));
        assert_eq!(
            policy["grants"][0]["environment_id"], "staging-7",
            "{label}: the example names the denied environment"
        );
        let user = policy["grants"][0]["users"][0].as_str().expect("user");
        match label {
            "user" => assert_eq!(user, "tester"),
            "username" => assert_eq!(user, "winuser"),
            _ => assert!(user.starts_with("uid:"), "{label}: {user}"),
        }
        std::fs::write(home.root().join("policy.json"), example).expect("policy");
        let allowed = run();
        assert_eq!(
            allowed.status.code(),
            Some(0),
            "{label}: the suggested grant {example} did not allow the change: {}",
            String::from_utf8_lossy(&allowed.stderr)
        );
    }
}

#[test]
fn every_change_to_disk_is_audited_and_its_answer_says_what_changed() {
    // Issue 20's class: migrate-dev that only moves dev aside (nothing to
    // merge) and migrate-state both change the disk; each is audited and
    // its answer says what changed, unlike the check before it.
    let home = Home::new();
    home.ok("env", "init", json!({}));
    std::fs::write(
        home.root().join("policy.json"),
        json!({"schema": "greentic.policy.v1", "grants": [{"environment_id": "dev", "users": ["tester"]}]}).to_string(),
    )
    .expect("policy");
    home.ok(
        "env",
        "create",
        json!({"environment_id": "dev", "name": "legacy dev"}),
    );
    let before = home.audit_lines("local").len();
    let applied = home.gtc(&["op", "env", "migrate-dev", "local", "--apply"]);
    assert_eq!(applied.code, 0, "{}", applied.stderr);
    assert_ne!(
        applied.stdout["idempotency"], "unchanged",
        "moving dev aside is a change: {}",
        applied.stdout
    );
    let moved_to = applied.stdout["result"]["source_moved_to"]
        .as_str()
        .expect("source_moved_to")
        .to_owned();
    assert!(std::path::Path::new(&moved_to).is_dir(), "{moved_to}");
    assert!(!home.root().join("dev").exists());
    let lines = home.audit_lines("local");
    let audited = lines[before..]
        .iter()
        .any(|line| line.contains("\"migrate-dev\"") && line.contains(".dev-migrated-"));
    assert!(audited, "the move is audited: {:?}", &lines[before..]);

    let legacy = home.dir.path().join("state/deploy");
    std::fs::create_dir_all(&legacy).expect("legacy tree");
    let check = home.gtc(&["op", "env", "migrate-state", "local", "--check"]);
    let before = home.audit_lines("local").len();
    let apply = home.gtc(&["op", "env", "migrate-state", "local", "--apply"]);
    assert_eq!(apply.code, 0, "{}", apply.stderr);
    assert_ne!(
        apply.stdout["result"], check.stdout["result"],
        "the answer says what changed, not what would"
    );
    assert_eq!(apply.stdout["result"]["changed"], true, "{}", apply.stdout);
    let moved_to = apply.stdout["result"]["moved_to"]
        .as_str()
        .expect("moved_to");
    assert!(std::path::Path::new(moved_to).is_dir() && !legacy.exists());
    let lines = home.audit_lines("local");
    assert!(
        lines[before..]
            .iter()
            .any(|line| line.contains("\"migrate-state\"") && line.contains(".deploy-migrated-")),
        "{:?}",
        &lines[before..]
    );
    // Nothing left to move: the answer says so.
    let again = home.gtc(&["op", "env", "migrate-state", "local", "--apply"]);
    assert_eq!(again.stdout["result"]["changed"], false, "{}", again.stdout);
}

#[test]
fn the_legacy_dev_name_is_refused_everywhere_with_an_error_that_names_local() {
    // Proves (issue 20 item 12): `dev` is not an alias of `local` (the spec
    // describes none): every verb that names an environment, read or write,
    // refuses `dev` with not-found and an error that says to use `local`
    // and how to migrate a legacy `dev` folder, and nothing is created.
    let home = Home::new();
    home.ok("env", "init", json!({}));
    std::fs::write(
        home.root().join("policy.json"),
        json!({"schema": "greentic.policy.v1", "grants": [{"environment_id": "*", "users": ["tester"]}]}).to_string(),
    )
    .expect("policy");
    let refused = |what: &str, run: common::Run| {
        assert_eq!(
            (run.code, run.error_kind()),
            (1, "not-found"),
            "{what}: {:?}",
            run.stderr
        );
        let message = run.error_message();
        assert!(
            message.contains("use `local`") && message.contains("migrate-dev local"),
            "{what}: the error names `local`: {message}"
        );
    };
    let reads: &[&[&str]] = &[
        &["op", "env", "show", "dev"],
        &["op", "env", "doctor", "dev"],
        &["op", "env", "backups", "dev"],
        &["op", "env-packs", "list", "dev"],
        &["op", "bundles", "list", "dev"],
        &["op", "revisions", "list", "dev"],
        &["op", "traffic", "show", "dev"],
        &["op", "config", "show", "dev"],
        &["op", "secrets", "list", "dev"],
        &["op", "env", "destroy", "dev", "--confirm"],
    ];
    for args in reads {
        refused(&args.join(" "), home.gtc(args));
    }
    let dev = json!({"environment_id": "dev"});
    let writes = [
        (
            "env",
            "update",
            json!({"environment_id": "dev", "name": "x"}),
        ),
        ("env", "backup", dev.clone()),
        (
            "config",
            "set",
            json!({"environment_id": "dev", "name": "x"}),
        ),
        (
            "env-packs",
            "add",
            json!({"environment_id": "dev", "slot": "state", "kind": "greentic.state.in-memory@0.1.2"}),
        ),
        (
            "bundles",
            "add",
            json!({"environment_id": "dev", "bundle_id": "shop", "customer_id": "acme", "route_binding": {"path_prefixes": ["/shop"]}}),
        ),
        (
            "revisions",
            "stage",
            json!({"environment_id": "dev", "deployment_id": "01J0000000000000000000000A"}),
        ),
        (
            "traffic",
            "set",
            json!({"environment_id": "dev", "deployment_id": "01J0000000000000000000000A", "idempotency_key": "k", "entries": []}),
        ),
    ];
    for (noun, verb, answers) in writes {
        refused(&format!("{noun} {verb}"), home.mutate(noun, verb, answers));
    }
    assert!(!home.root().join("dev").exists(), "nothing was created");
}
