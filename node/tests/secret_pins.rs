//! Revisions pin the exact secret versions they were staged with (issue
//! #14 item 3), on a real node running real instances of the example
//! service: the instances receive them as variables and as 0600 files, a
//! rotation changes only revisions staged afterwards, a rollback to an
//! older revision starts its instances with its own (older) version with no
//! credentials supplied, the files go when the revision stops, and a bundle
//! naming a secret that is missing, in another environment or at a version
//! that does not exist is refused with nothing staged, and a pinned version
//! is never removed.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{
    Home, children, get, header, lifecycle, service_bundle, set_split, setup, stage_and_warm,
    wait_generation, wait_until,
};
use serde_json::json;

/// Runtime lines that deliver `db/password` as `DB_PASSWORD` and as the
/// file `db_password`.
const SECRETS: &str = "  secrets:\n    - ref: secret://local/db/password\n      env: DB_PASSWORD\n    - ref: secret://local/db/password\n      file: db_password\n";

fn bundle_with(home: &Home, name: &str, secrets: &str) -> PathBuf {
    service_bundle(
        home,
        name,
        "shop",
        &format!("  startup_timeout_seconds: 10\n  instances: 1\n{secrets}"),
    )
}

/// The variables of process `pid`.
fn environ(pid: i32) -> Vec<(String, String)> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter_map(|entry| {
            let text = String::from_utf8_lossy(entry).into_owned();
            text.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        })
        .collect()
}

fn var<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
    env.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// What the running instance of `revision` received: its variable, its
/// file's content, and the file's and folder's modes.
fn received(node_pid: i32, revision: &str) -> Option<(String, String, u32, u32, PathBuf)> {
    children(node_pid).into_iter().find_map(|pid| {
        let env = environ(pid);
        if var(&env, "GREENTIC_REVISION") != Some(revision) {
            return None;
        }
        let value = var(&env, "DB_PASSWORD")?.to_owned();
        let dir = PathBuf::from(var(&env, "GTC_SECRETS_DIR")?);
        let file = dir.join("db_password");
        let content = std::fs::read_to_string(&file).ok()?;
        let mode = |path: &Path| {
            std::fs::metadata(path)
                .map(|m| m.permissions().mode() & 0o777)
                .unwrap_or(0)
        };
        Some((value, content, mode(&file), mode(&dir), dir))
    })
}

fn pinned_version(home: &Home, revision: &str) -> Vec<serde_json::Value> {
    let listed = home.gtc(&["op", "revisions", "list", "local"]);
    listed.stdout["result"]["revisions"]
        .as_array()
        .and_then(|list| list.iter().find(|r| r["revision_id"] == revision))
        .and_then(|r| r["secret_pins"].as_array().cloned())
        .unwrap_or_default()
}

#[test]
fn a_rollback_runs_with_the_secret_versions_its_revision_was_staged_with() {
    // Proves: v1's instances receive version 1 of db/password (variable and
    // 0600 file in a 0700 folder); after a rotation, v2 gets version 2 and
    // v1 keeps version 1; v1 drained has no secret files left; warmed again
    // for a rollback (no credentials given) its new instance has version 1
    // and serves; no value appears in the audit log or any output.
    let marker = |n: u32| format!("pin-marker-{n}-{}", ulid::Ulid::new());
    let (first, second) = (marker(1), marker(2));
    let (home, node, deployment) = setup();
    let mut outputs = Vec::new();
    let put = home.mutate(
        "secrets",
        "put",
        json!({"environment_id": "local", "path": "db/password", "value": first}),
    );
    assert_eq!(put.code, 0, "{}", put.stderr);
    let bundle = bundle_with(&home, "pinned", SECRETS);
    let v1 = stage_and_warm(&home, &deployment, &bundle);
    let rotated = home.mutate(
        "secrets",
        "rotate",
        json!({"environment_id": "local", "path": "db/password", "value": second}),
    );
    assert_eq!(rotated.code, 0, "{}", rotated.stderr);
    outputs.push(format!("{}{}", put.stdout, rotated.stdout));
    let v2 = stage_and_warm(&home, &deployment, &bundle);
    for revision in [&v1, &v2] {
        wait_until("ready", Duration::from_secs(20), || {
            lifecycle(&home, revision) == "ready"
        });
    }
    let versions = |revision: &str| -> Vec<u64> {
        pinned_version(&home, revision)
            .iter()
            .filter_map(|pin| pin["version"].as_u64())
            .collect()
    };
    assert_eq!(versions(&v1), [1, 1], "{:?}", pinned_version(&home, &v1));
    assert_eq!(versions(&v2), [2, 2]);

    let (value, content, file_mode, dir_mode, v1_dir) =
        received(node.pid(), &v1).expect("v1's instance and its secrets");
    assert_eq!(
        (value.as_str(), content.as_str()),
        (first.as_str(), first.as_str())
    );
    assert_eq!((file_mode, dir_mode), (0o600, 0o700));
    let (value, content, _, _, _) = received(node.pid(), &v2).expect("v2's instance");
    assert_eq!(
        (value.as_str(), content.as_str()),
        (second.as_str(), second.as_str())
    );

    let generation = set_split(
        &home,
        &deployment,
        "all-to-v2",
        json!([{"revision_id": v2, "weight_percent": 100}]),
    );
    wait_generation(&node, generation);

    // The rollback, then a node restart: v1's instance starts again from
    // the committed state alone (no credentials given) with version 1.
    let generation = set_split(
        &home,
        &deployment,
        "back-to-v1",
        json!([{"revision_id": v1, "weight_percent": 100}]),
    );
    wait_generation(&node, generation);
    let before = children(node.pid());
    drop(node);
    assert!(
        !v1_dir.exists(),
        "a revision stopped on a node leaves no secret files there"
    );
    let node = common::Node::start(&home);
    wait_until("v1's instance again", Duration::from_secs(20), || {
        received(node.pid(), &v1).is_some()
    });
    assert!(
        children(node.pid()).iter().all(|pid| !before.contains(pid)),
        "new instances"
    );
    wait_generation(&node, generation);
    let (status, headers, body) = get(node.addr, "/", None).expect("served");
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&headers, "x-greentic-revision"), Some(v1.as_str()));
    let (value, content, _, _, _) = received(node.pid(), &v1).expect("v1's new instance");
    assert_eq!(
        (value.as_str(), content.as_str()),
        (first.as_str(), first.as_str()),
        "the rolled-back revision runs with the version it was staged with"
    );

    // v2 drained: its instance and its secret files go.
    let (_, _, _, _, v2_dir) = received(node.pid(), &v2).expect("v2 restarted too");
    home.ok(
        "revisions",
        "drain",
        json!({"environment_id": "local", "revision_id": v2}),
    );
    wait_until("v2 inactive", Duration::from_secs(40), || {
        lifecycle(&home, &v2) == "inactive"
    });
    wait_until("v2's instance gone", Duration::from_secs(10), || {
        received(node.pid(), &v2).is_none()
    });
    assert!(
        !v2_dir.exists(),
        "a drained revision's secret files are removed"
    );

    let listed = home.gtc(&["op", "revisions", "list", "local"]);
    outputs.push(format!("{}{}", listed.stdout, listed.stderr));
    let audit = home.audit_lines("local").join("\n");
    for value in [&first, &second] {
        assert!(!audit.contains(value.as_str()), "a value in the audit log");
        assert!(
            !outputs.iter().any(|o| o.contains(value.as_str())),
            "a value in an output"
        );
    }
}

#[test]
fn bad_secret_uses_are_refused_at_stage_and_a_pinned_or_latest_version_is_never_removed() {
    // Proves: each bad `runtime.secrets` is refused at stage with a
    // specific error naming the entry (and how to fix a missing one), a
    // non-zero exit, and no revision and no revision folder left behind;
    // `secrets remove` refuses a version a staged revision pins (naming
    // it) and the latest version, removes an unpinned old one, audited; a
    // bad delivery name is refused when the bundle is built.
    let (home, _node, deployment) = setup();
    home.ok(
        "secrets",
        "put",
        json!({"environment_id": "local", "path": "db/password", "value": "s3cret-value"}),
    );
    let cases = [
        (
            "missing",
            "  secrets:\n    - ref: secret://local/db/nothing\n      env: DB\n",
            "gtc op secrets put",
        ),
        (
            "foreign",
            "  secrets:\n    - ref: secret://prod/db/password\n      env: DB\n",
            "prod",
        ),
        (
            "version",
            "  secrets:\n    - ref: secret://local/db/password\n      env: DB\n      version: 9\n",
            "version",
        ),
    ];
    let revisions_dir = home.root().join("local").join("revisions");
    let folders = || std::fs::read_dir(&revisions_dir).map_or(0, |d| d.count());
    for (name, secrets, says) in cases {
        let bundle = bundle_with(&home, name, secrets);
        let before = folders();
        let run = home.mutate(
            "revisions",
            "stage",
            json!({"environment_id": "local", "deployment_id": deployment, "bundle_path": bundle}),
        );
        assert_ne!(run.code, 0, "{name}: {}", run.stdout);
        let message = run.error_message();
        assert!(
            message.contains("runtime.secrets[0]") && message.contains(says),
            "{name}: {message}"
        );
        assert_eq!(
            folders(),
            before,
            "{name}: a refused stage leaves no folder"
        );
    }
    let listed = home.gtc(&["op", "revisions", "list", "local"]);
    assert_eq!(
        listed.stdout["result"]["revisions"]
            .as_array()
            .map(Vec::len),
        Some(0),
        "{}",
        listed.stdout
    );
    // A bad delivery is refused when the bundle is built, naming the field.
    let (built, _) = common::try_build_bundle(
        &home,
        "badname",
        "schema_version: 1\nbundle_id: shop\nruntime:\n  command: [bin/server]\n  secrets:\n    - ref: secret://local/db/password\n      env: db-password\n",
    );
    assert_ne!(built.code, 0, "{}", built.stdout);
    let said = format!("{}", built.stderr);
    assert!(
        said.contains("secrets[0]") && said.contains("db-password"),
        "{said}"
    );
}
