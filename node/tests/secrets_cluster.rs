//! Secrets on a real three-member cluster (issue 14): a version sealed on
//! one member is committed through Raft by every replica, revealed by any
//! member, pinned by revisions whose instances run on any member, and never
//! written in plain text anywhere under the cluster's folders or logs.

mod cluster_support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use cluster_support::{
    Member, Reaper, add_bundle, bundle_with, demo_service, eventually, gtc, op, stage,
};
use serde_json::{Value, json};

/// `gtc op secrets VERB --answers A --store-root <member's replica>`: with
/// the member running, the verb goes through it. (exit code, output JSON
/// or error text).
fn secrets(answers_dir: &Path, member: &Member, verb: &str, answers: Value) -> (i32, Value) {
    let file = answers_dir.join(format!("{verb}-{}.json", cluster_support::ulid_like()));
    std::fs::write(&file, answers.to_string()).expect("answers");
    let output = gtc()
        .env("GREENTIC_HOME", answers_dir)
        .env("USER", "tester")
        .args(["op", "secrets", verb, "--answers"])
        .arg(&file)
        .arg("--store-root")
        .arg(member.store())
        .output()
        .expect("gtc");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let value = serde_json::from_str(&text).unwrap_or_else(
        |_| json!({"stderr": String::from_utf8_lossy(&output.stderr).into_owned(), "stdout": text}),
    );
    (output.status.code().unwrap_or(-1), value)
}

fn reveal(answers_dir: &Path, member: &Member, path: &str, version: Option<u32>) -> (u32, String) {
    let (code, answer) = secrets(
        answers_dir,
        member,
        "get",
        json!({"environment_id": "local", "path": path, "version": version, "reveal": true}),
    );
    assert_eq!(code, 0, "reveal through {}: {answer}", member.name);
    let result = &answer["result"];
    (
        result["version"].as_u64().expect("version") as u32,
        result["value"].as_str().expect("value").to_owned(),
    )
}

fn listed(answers_dir: &Path, member: &Member) -> Value {
    let output = gtc()
        .env("GREENTIC_HOME", answers_dir)
        .args(["op", "secrets", "list", "local", "--store-root"])
        .arg(member.store())
        .output()
        .expect("gtc");
    assert!(output.status.success(), "list through {}", member.name);
    let value: Value = serde_json::from_slice(&output.stdout).expect("json");
    value["result"]["secrets"].clone()
}

/// Every file under `dir` with its bytes (relative paths), without lock
/// files.
fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(folder) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if !path.ends_with(".lock") {
                let bytes = std::fs::read(&path).unwrap_or_default();
                out.push((path.strip_prefix(dir).expect("inside").to_owned(), bytes));
            }
        }
    }
    out.sort();
    out
}

/// The variables of each running process that serves `revision`.
fn instance_vars(revision: &str) -> Vec<Vec<(String, String)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(bytes) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let vars: Vec<(String, String)> = bytes
            .split(|b| *b == 0)
            .filter_map(|pair| {
                let text = String::from_utf8_lossy(pair).into_owned();
                text.split_once('=')
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
            })
            .collect();
        if vars
            .iter()
            .any(|(k, v)| k == "GREENTIC_REVISION" && v == revision)
        {
            found.push(vars);
        }
    }
    found
}

#[test]
fn secrets_replicate_between_members_and_pinned_versions_run_on_every_member() {
    // Proves: a put on one member is revealed by the others with the same
    // version; a rotate on another follows; concurrent puts through all
    // three members each get their own version (the sealed change that
    // loses a race is sealed again); an idempotent put replays through
    // another member and a conflicting one is refused; a removal applies
    // everywhere; a revision pins the version it was staged with and its
    // instances, placed on several members, receive exactly that version
    // after a later rotation; every member's secret files are
    // byte-identical; no value appears in any file under the cluster's
    // folders, logs or audit logs; a member's replica refuses changes
    // while its member is stopped.
    let temp = tempfile::tempdir().expect("temp");
    let _reaper = Reaper(temp.path().to_owned());
    let (home, mut members) = cluster_support::three_members(temp.path(), true);
    for member in &members {
        member.wait_serving();
    }
    // Answers files hold values in plain text: kept outside the folders
    // the leak check reads.
    let answers = temp.path().join("answers");
    std::fs::create_dir_all(&answers).expect("answers dir");
    let markers = [
        "marker-one-5c1d7e",
        "marker-two-9a4f02",
        "marker-three-e6b318",
    ];

    // A put through n2, revealed through n1 and n3.
    let (code, put) = secrets(
        &answers,
        &members[1],
        "put",
        json!({"environment_id": "local", "path": "db/password", "value": markers[0]}),
    );
    assert_eq!(code, 0, "put through n2: {put}");
    assert_eq!(put["result"]["version"], 1, "{put}");
    for member in [&members[0], &members[2]] {
        assert_eq!(
            reveal(&answers, member, "db/password", None),
            (1, markers[0].to_owned())
        );
    }
    // A rotate through n3; n1 reveals both versions.
    let (code, rotated) = secrets(
        &answers,
        &members[2],
        "rotate",
        json!({"environment_id": "local", "path": "db/password", "value": markers[1]}),
    );
    assert_eq!(code, 0, "rotate through n3: {rotated}");
    assert_eq!(
        reveal(&answers, &members[0], "db/password", Some(1)),
        (1, markers[0].to_owned())
    );
    assert_eq!(
        reveal(&answers, &members[0], "db/password", None),
        (2, markers[1].to_owned())
    );

    // Concurrent puts to one path through all three members.
    let values: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = members
            .iter()
            .enumerate()
            .map(|(m, member)| {
                let answers = &answers;
                scope.spawn(move || {
                    (0..4)
                        .map(|i| {
                            let value = format!("race-{m}-{i}-3b7c");
                            let (code, answer) = secrets(
                                answers,
                                member,
                                "put",
                                json!({"environment_id": "local", "path": "race/key", "value": value}),
                            );
                            assert_eq!(code, 0, "concurrent put through {}: {answer}", member.name);
                            value
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("thread"))
            .collect()
    });
    let mut seen = BTreeSet::new();
    for version in 1..=12u32 {
        let member = &members[version as usize % 3];
        let (number, value) = reveal(&answers, member, "race/key", Some(version));
        assert_eq!(number, version);
        assert!(
            values.contains(&value),
            "version {version} is one put: {value}"
        );
        assert!(seen.insert(value), "each put has its own version");
    }
    assert_eq!(seen.len(), 12, "twelve puts, twelve versions");

    // An idempotent put replays through another member; the same key with
    // another value is refused (and audited) through a third.
    let keyed = |value: &str| json!({"environment_id": "local", "path": "api/token", "value": value, "idempotency_key": "once"});
    let (code, first) = secrets(&answers, &members[0], "put", keyed("token-value-4d2e"));
    assert_eq!(code, 0, "{first}");
    let (code, again) = secrets(&answers, &members[1], "put", keyed("token-value-4d2e"));
    assert_eq!(code, 0, "{again}");
    assert_eq!(again["idempotency"], "replayed", "{again}");
    assert_eq!(again["result"]["version"], 1);
    let (code, conflict) = secrets(&answers, &members[2], "put", keyed("other-value-71aa"));
    assert_ne!(code, 0, "{conflict}");
    assert!(conflict.to_string().contains("idempotency"), "{conflict}");

    // A revision pins version 2; its instances, placed across the members,
    // run with version 2 after a rotation to version 3.
    let added = add_bundle(&home, &members[0], "shop");
    let deployment = added["result"]["deployment_id"]
        .as_str()
        .expect("deployment")
        .to_owned();
    let bundle = bundle_with(
        &home,
        &demo_service(),
        "pinned",
        "  startup_timeout_seconds: 10\n  instances: 3\n  secrets:\n    - ref: secret://local/db/password\n      env: DB_PASSWORD\n",
    );
    let revision = stage(&home, &members[0], &deployment, &bundle);
    let (code, rotated) = secrets(
        &answers,
        &members[1],
        "rotate",
        json!({"environment_id": "local", "path": "db/password", "value": markers[2]}),
    );
    assert_eq!(code, 0, "{rotated}");
    assert_eq!(rotated["result"]["version"], 3);
    op(
        &home,
        &members[0],
        "revisions",
        "warm",
        json!({"environment_id": "local", "revision_id": revision}),
    );
    eventually("three instances of the pinned revision", || {
        instance_vars(&revision).len() == 3
    });
    let placed: BTreeSet<String> = cluster_support::placement(&members[0], &revision)
        .into_iter()
        .collect();
    assert!(placed.len() >= 2, "placed on several members: {placed:?}");
    for vars in instance_vars(&revision) {
        let value = vars
            .iter()
            .find(|(k, _)| k == "DB_PASSWORD")
            .map(|(_, v)| v.as_str());
        assert_eq!(value, Some(markers[1]), "every instance runs version 2");
    }

    // A removal through n2 applies everywhere; a pinned version is refused.
    let (code, removed) = secrets(
        &answers,
        &members[1],
        "remove",
        json!({"environment_id": "local", "path": "db/password", "version": 1}),
    );
    assert_eq!(code, 0, "{removed}");
    let (code, pinned) = secrets(
        &answers,
        &members[2],
        "remove",
        json!({"environment_id": "local", "path": "db/password", "version": 2}),
    );
    assert_ne!(code, 0, "{pinned}");
    assert!(
        pinned.to_string().contains(&revision),
        "names the revision: {pinned}"
    );
    for member in &members {
        eventually("the removal to apply", || {
            let list = listed(&answers, member);
            let versions: Vec<u64> = list
                .as_array()
                .and_then(|paths| paths.iter().find(|p| p["path"] == "db/password"))
                .and_then(|p| p["versions"].as_array())
                .map(|v| v.iter().filter_map(|v| v["version"].as_u64()).collect())
                .unwrap_or_default();
            versions == [2, 3]
        });
    }

    // Every replica's secret files are byte-identical.
    let secret_tree = |member: &Member| tree(&member.store().join("local").join("secrets"));
    for member in &members[1..] {
        eventually("identical secret stores", || {
            secret_tree(member) == secret_tree(&members[0])
        });
    }

    // A stopped member's replica refuses a change; nothing is written.
    members[2].kill();
    let before = secret_tree(&members[2]);
    let (code, refused) = secrets(
        &answers,
        &members[2],
        "put",
        json!({"environment_id": "local", "path": "db/password", "value": "never-stored-0e9d"}),
    );
    assert_eq!(code, 1, "{refused}");
    assert!(refused.to_string().contains("not running"), "{refused}");
    assert_eq!(secret_tree(&members[2]), before);

    // No value anywhere under the cluster's folders (replicas, audit logs,
    // Raft logs and snapshots, node logs) or the operator's home.
    let mut needles: Vec<String> = markers.iter().map(|m| (*m).to_owned()).collect();
    needles.extend(values.iter().cloned());
    needles.push("token-value-4d2e".to_owned());
    needles.push("other-value-71aa".to_owned());
    needles.push("never-stored-0e9d".to_owned());
    for root in [temp.path().join("cluster"), home.clone()] {
        for (path, bytes) in tree(&root) {
            let text = String::from_utf8_lossy(&bytes);
            for needle in &needles {
                assert!(
                    !text.contains(needle.as_str()),
                    "{needle} found in {}",
                    root.join(&path).display()
                );
            }
        }
    }
}

/// `gtc op NOUN VERB --answers A --store-root <member's replica>` as the
/// operator whose home is `operator`: (exit code, output or error JSON).
fn op_as(operator: &Path, member: &Member, args: &[&str], answers: Value) -> (i32, Value) {
    let file = operator.join(format!("answers-{}.json", cluster_support::ulid_like()));
    std::fs::write(&file, answers.to_string()).expect("answers");
    let output = gtc()
        .env("GREENTIC_HOME", operator)
        .env("USER", "tester")
        .arg("op")
        .args(args)
        .arg("--answers")
        .arg(&file)
        .arg("--store-root")
        .arg(member.store())
        .output()
        .expect("gtc");
    let parse = |bytes: &[u8]| serde_json::from_slice::<Value>(bytes).ok();
    let value = parse(&output.stdout)
        .or_else(|| parse(&output.stderr))
        .unwrap_or_else(|| json!(String::from_utf8_lossy(&output.stderr).into_owned()));
    (output.status.code().unwrap_or(-1), value)
}

/// A new operator home with a key; (home, key_id, public_key).
fn operator(root: &Path, name: &str) -> (PathBuf, String, String) {
    let home = root.join(name);
    std::fs::create_dir_all(&home).expect("operator home");
    let output = gtc()
        .env("GREENTIC_HOME", &home)
        .args(["operator", "key", "create"])
        .output()
        .expect("gtc");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("json");
    let result = &report["result"];
    (
        home,
        result["key_id"].as_str().expect("key_id").to_owned(),
        result["public_key"]
            .as_str()
            .expect("public_key")
            .to_owned(),
    )
}

#[test]
fn a_trust_root_set_through_one_member_is_enforced_by_every_member() {
    // Proves: `env trust add` through one member reaches every member's
    // replica (the same file), so another member refuses an unsigned
    // change through its API and a change by an unlisted key from the CLI,
    // each audited as a denial, and takes one signed by the listed key; a
    // key added through a third member by a listed key is seen by all; the
    // last key is never removed; a stopped member's replica refuses a
    // change.
    let temp = tempfile::tempdir().expect("temp");
    let _reaper = Reaper(temp.path().to_owned());
    let (home, mut members) = cluster_support::three_members(temp.path(), false);
    for member in &members {
        member.wait_serving();
    }
    let (alice, alice_key, alice_public) = operator(temp.path(), "alice");
    let (bob, bob_key, bob_public) = operator(temp.path(), "bob");
    // `prod` is granted by each store's policy to the operator (`tester`,
    // the CLI's user) and to the member's owner (the node file's token,
    // which the CLI on a member's folder goes through, named by its uid).
    let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(temp.path()).expect("temp"));
    let owner = format!("uid:{uid}");
    for member in &members {
        std::fs::write(
            member.store().join("policy.json"),
            json!({"schema": "greentic.policy.v1", "grants": [{"environment_id": "prod", "users": ["tester", owner]}]})
                .to_string(),
        )
        .expect("policy");
    }
    let (code, created) = op_as(
        &home,
        &members[0],
        &["env", "create"],
        json!({"environment_id": "prod", "name": "Production"}),
    );
    assert_eq!(code, 0, "{created}");

    // Bootstrap through n1.
    let (code, added) = op_as(
        &home,
        &members[0],
        &["env", "trust", "add"],
        json!({"environment_id": "prod", "public_key": alice_public, "label": "alice"}),
    );
    assert_eq!(code, 0, "{added}");
    assert_eq!(added["result"]["bootstrap"], json!(true), "{added}");
    let trust_file = |member: &Member| std::fs::read(member.store().join("prod/trust-root.json"));
    for member in &members {
        eventually("the trust root on every member", || {
            trust_file(member).ok() == trust_file(&members[0]).ok()
        });
    }

    // n2 refuses an unsigned change through its API (403, audited).
    let (status, body) = cluster_support::admin_post(
        &members[1],
        "/v1/environments/prod/bundles",
        "unsigned-1",
        &json!({"bundle_id": "shop"}),
    );
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["kind"], "operator-key", "{body}");
    // Bob's key is not listed: the CLI on n2's folder refuses it.
    let bundle = json!({"environment_id": "prod", "bundle_id": "shop", "customer_id": "acme", "route_binding": {"path_prefixes": ["/shop"]}});
    let (code, by_bob) = op_as(&bob, &members[1], &["bundles", "add"], bundle.clone());
    assert_ne!(code, 0, "{by_bob}");
    assert!(by_bob.to_string().contains(&bob_key), "{by_bob}");
    // Alice's passes through n3 and is recorded with her key.
    let (code, by_alice) = op_as(&alice, &members[2], &["bundles", "add"], bundle);
    assert_eq!(code, 0, "{by_alice}");
    let audit = |member: &Member| {
        std::fs::read_to_string(member.store().join("prod/audit/events.jsonl")).unwrap_or_default()
    };
    eventually("n1's audit log to name alice's signed change", || {
        audit(&members[0]).contains(&format!("\"signed_by\":\"{alice_key}\""))
    });
    // The refusals were audited as denials in the replicated log.
    assert!(
        audit(&members[0]).contains(&bob_key),
        "bob's denial is audited"
    );

    // Alice adds Bob through n3 (signed); n1 lists both.
    let (code, added) = op_as(
        &alice,
        &members[2],
        &["env", "trust", "add"],
        json!({"environment_id": "prod", "public_key": bob_public, "label": "bob"}),
    );
    assert_eq!(code, 0, "{added}");
    eventually("n1 to list both keys", || {
        std::fs::read_to_string(members[0].store().join("prod/trust-root.json"))
            .is_ok_and(|text| text.contains(&alice_key) && text.contains(&bob_key))
    });
    // Bob removes Alice through n2; the last key (his own) stays.
    let (code, removed) = op_as(
        &bob,
        &members[1],
        &["env", "trust", "remove"],
        json!({"environment_id": "prod", "key_id": alice_key}),
    );
    assert_eq!(code, 0, "{removed}");
    let (code, last) = op_as(
        &bob,
        &members[0],
        &["env", "trust", "remove"],
        json!({"environment_id": "prod", "key_id": bob_key}),
    );
    assert_ne!(code, 0, "{last}");
    assert!(last.to_string().contains("last key"), "{last}");
    for member in &members {
        eventually("the same trust root everywhere", || {
            trust_file(member).ok() == trust_file(&members[0]).ok()
        });
    }

    // A stopped member's replica refuses a change; nothing is written.
    members[2].kill();
    let before = trust_file(&members[2]).expect("trust root");
    let (code, refused) = op_as(
        &bob,
        &members[2],
        &["env", "trust", "add"],
        json!({"environment_id": "prod", "public_key": alice_public, "label": "alice again"}),
    );
    assert_eq!(code, 1, "{refused}");
    assert!(refused.to_string().contains("not running"), "{refused}");
    assert_eq!(trust_file(&members[2]).expect("trust root"), before);
}
