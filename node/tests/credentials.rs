//! `gtc op credentials requirements|bootstrap|rotate|show` with the real
//! binary: the local-process contract on this machine, and the Kubernetes
//! contract against a fake API server on loopback (plain HTTP, token
//! users). The fake records every request and answers /version,
//! SelfSubjectAccessReviews (allowed, or denied for chosen verbs), PATCH
//! (server-side apply, the body echoed back) and TokenRequests for
//! `gtc-deployer` (a numbered token, expiring when the request asked, or
//! a few seconds after issue when the test says so).
//!
//! No real Kubernetes API server runs on these machines: this fake is the
//! only cluster the bootstrap meets.

mod common;
#[path = "support/fake_kube.rs"]
mod fake_kube;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Home, Run};
use fake_kube::{FakeApi, Recorded};
use serde_json::{Value, json};

const GENERATED_REF: &str = "secret://local/deployer/k8s/kubeconfig";

/// A kubeconfig for `server` whose user holds `token`, written to `path`.
fn kubeconfig_at(path: &Path, server: &str, token: &str) -> PathBuf {
    std::fs::write(
        path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: admin\ncontexts:\n- name: admin\n  context: {{cluster: fake, user: root}}\nclusters:\n- name: fake\n  cluster: {{server: '{server}'}}\nusers:\n- name: root\n  user: {{token: {token}}}\n"
        ),
    )
    .expect("kubeconfig");
    path.to_owned()
}

fn marker() -> String {
    format!("admin-marker-{}", ulid::Ulid::new())
}

/// `local`, its deployer bound to `kind`.
fn environment(kind: &str) -> Home {
    let home = Home::new();
    assert_eq!(home.gtc(&["op", "env", "init"]).code, 0);
    if kind != "greentic.deployer.local-process@0.1.0" {
        home.ok(
            "env-packs",
            "update",
            json!({"environment_id": "local", "slot": "deployer", "kind": kind}),
        );
    }
    home
}

fn requirements(home: &Home, kubeconfig: Option<&Path>) -> Run {
    let answers = home.write(
        &format!("requirements-{}.json", ulid::Ulid::new()),
        &json!({"environment_id": "local"}).to_string(),
    );
    let args = [
        "op",
        "credentials",
        "requirements",
        "--answers",
        answers.to_str().expect("utf8"),
    ];
    match kubeconfig {
        Some(path) => home.gtc_with_env(&args, &[("KUBECONFIG", path.to_str().expect("utf8"))]),
        None => home.gtc_with_env(&args, &[("KUBECONFIG", "/nonexistent/kubeconfig")]),
    }
}

/// The check of `id` in a requirements report.
fn check<'a>(run: &'a Run, id: &str) -> &'a Value {
    run.stdout["result"]["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|check| check["capability"]["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in {}", run.stdout))
}

fn document(home: &Home) -> Value {
    let text = std::fs::read_to_string(home.root().join("local/credentials.json"))
        .expect("credentials.json");
    serde_json::from_str(&text).expect("json")
}

fn reveal_generated(home: &Home) -> Value {
    let revealed = home.ok(
        "secrets",
        "get",
        json!({"environment_id": "local", "path": "deployer/k8s/kubeconfig", "reveal": true}),
    );
    let text = revealed["value"].as_str().expect("value");
    serde_norway::from_str(text).expect("the generated kubeconfig parses as YAML")
}

/// Every file under `dir`, with its bytes.
fn files_under(dir: &Path, found: &mut Vec<(PathBuf, Vec<u8>)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, found);
        } else if let Ok(bytes) = std::fs::read(&path) {
            found.push((path, bytes));
        }
    }
}

/// The store's files apart from the audit logs and the empty lock files
/// the audit takes: what a refused verb must leave as it was.
fn store_files(home: &Home) -> Vec<(PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    files_under(&home.root(), &mut found);
    found.retain(|(path, _)| {
        !path.components().any(|c| c.as_os_str() == "audit") && !path.ends_with(".lock")
    });
    found.sort();
    found
}

/// Fails naming the first file added, removed or changed since `before`.
fn assert_unchanged(home: &Home, before: &[(PathBuf, Vec<u8>)]) {
    let after = store_files(home);
    let paths =
        |files: &[(PathBuf, Vec<u8>)]| files.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>();
    assert_eq!(paths(&after), paths(before), "files were added or removed");
    for ((path, old), (_, new)) in before.iter().zip(&after) {
        assert!(old == new, "{} changed", path.display());
    }
}

#[test]
fn local_process_requirements_pass_and_are_recorded_and_audited() {
    // Proves the local-process contract on this machine: process-spawn,
    // store-writable and loopback-bind pass, exit 0, and the outcome is in
    // credentials.json (requirements mode) and the audit log.
    let home = environment("greentic.deployer.local-process@0.1.0");
    let run = requirements(&home, None);
    assert_eq!(run.code, 0, "{} {}", run.stdout, run.stderr);
    let result = &run.stdout["result"];
    assert_eq!(result["passed"], true);
    let ids: Vec<&str> = result["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter_map(|check| check["capability"]["id"].as_str())
        .collect();
    assert_eq!(ids, ["process-spawn", "store-writable", "loopback-bind"]);
    for id in ids {
        assert_eq!(check(&run, id)["status"], "pass", "{id}");
    }
    let stored = document(&home);
    assert_eq!(stored["schema"], "greentic.credentials.v1");
    assert_eq!(stored["mode"], "requirements");
    assert_eq!(stored["validation"]["result"], "pass");
    assert_eq!(stored["validation"]["missing_capabilities"], json!([]));
    let audit = home.audit_lines("local");
    let last: Value = serde_json::from_str(audit.last().expect("audited")).expect("json");
    assert_eq!(
        (last["noun"].as_str(), last["verb"].as_str()),
        (Some("credentials"), Some("requirements"))
    );
    assert_eq!(last["target"]["result"], "pass");
}

#[test]
fn local_process_requirements_fail_with_a_fix_when_the_revisions_folder_cannot_be_written() {
    // Proves store-writable fails (exit 1) with the folder named and a fix
    // when the revisions folder cannot be written, and the document
    // records the failure. A file stands where the folder should be, which
    // refuses writes even to root (a chmod does not).
    let home = environment("greentic.deployer.local-process@0.1.0");
    let revisions = home.root().join("local/revisions");
    let _ = std::fs::remove_dir_all(&revisions);
    std::fs::write(&revisions, b"not a folder").expect("block the folder");
    let run = requirements(&home, None);
    assert_eq!(run.code, 1, "{} {}", run.stdout, run.stderr);
    assert_eq!(run.stdout["result"]["passed"], false);
    let failed = check(&run, "store-writable");
    assert_eq!(failed["status"], "fail");
    assert!(
        failed["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("revisions"),
        "{failed}"
    );
    assert!(
        failed["fix"].as_str().unwrap_or_default().contains("chmod"),
        "{failed}"
    );
    assert_eq!(check(&run, "process-spawn")["status"], "pass");
    let stored = document(&home);
    assert_eq!(stored["validation"]["result"], "fail");
    assert_eq!(
        stored["validation"]["missing_capabilities"],
        json!(["store-writable"])
    );
}

#[test]
fn k8s_requirements_check_every_permission_the_apply_needs() {
    // Proves the Kubernetes contract: kubeconfig, cluster-reachable and one
    // capability per permission of the apply (26); a denied one fails with
    // the `kubectl auth can-i` line, exit 1; without a kubeconfig the
    // kubeconfig capability fails and the cluster ones are skipped.
    let home = environment("greentic.deployer.k8s@1.0.0");
    let api = FakeApi::start(&[("delete", "secrets")]);
    let config = kubeconfig_at(
        &home.dir.path().join("kubeconfig"),
        &api.url(),
        "ambient-token",
    );
    let run = requirements(&home, Some(&config));
    assert_eq!(run.code, 1, "{} {}", run.stdout, run.stderr);
    let checks = run.stdout["result"]["checks"].as_array().expect("checks");
    assert_eq!(checks.len(), 28);
    assert_eq!(check(&run, "kubeconfig")["status"], "pass");
    assert_eq!(check(&run, "cluster-reachable")["status"], "pass");
    assert_eq!(check(&run, "patch-deployments")["status"], "pass");
    assert_eq!(check(&run, "patch-namespaces")["status"], "pass");
    assert_eq!(check(&run, "get-namespaces")["status"], "pass");
    let denied = check(&run, "delete-secrets");
    assert_eq!(denied["status"], "fail");
    assert!(
        denied["fix"]
            .as_str()
            .unwrap_or_default()
            .contains("kubectl auth can-i delete secrets -n gtc-local"),
        "{denied}"
    );
    assert_eq!(
        document(&home)["validation"]["missing_capabilities"],
        json!(["delete-secrets"])
    );
    let reviews = api
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/selfsubjectaccessreviews"))
        .count();
    assert_eq!(reviews, 26);

    let without = requirements(&home, None);
    assert_eq!(without.code, 1);
    assert_eq!(check(&without, "kubeconfig")["status"], "fail");
    assert!(check(&without, "kubeconfig")["fix"].as_str().is_some());
    assert_eq!(check(&without, "cluster-reachable")["status"], "skipped");
    assert_eq!(check(&without, "patch-deployments")["status"], "skipped");
}

/// Runs `credentials bootstrap` with `answers`.
fn bootstrap(home: &Home, answers: Value) -> Run {
    home.mutate("credentials", "bootstrap", answers)
}

#[test]
fn k8s_bootstrap_makes_least_privilege_credentials_drops_the_admin_material_and_rotates() {
    // Proves the bootstrap: the ServiceAccount, Role (exactly the apply's
    // verbs plus its own token), ClusterRole limited to gtc-local and the
    // bindings are applied with the admin's token; a token is requested;
    // the generated kubeconfig (server of the admin's, the SA token) is a
    // secret; the admin marker is nowhere (home, outputs, audit); the
    // document validates with expiry at 80 %; bind sets credentials_ref
    // and later checks use the generated identity. Then rotate mints the
    // next token with the current one and stores version 2.
    let home = environment("greentic.deployer.k8s@1.0.0");
    let api = FakeApi::start(&[]);
    let admin_marker = marker();
    let outside = tempfile::tempdir().expect("tempdir");
    let admin = kubeconfig_at(
        &outside.path().join("admin.yaml"),
        &api.url(),
        &admin_marker,
    );
    let run = bootstrap(
        &home,
        json!({"environment_id": "local", "admin_profile": "cluster-admin",
               "admin_material_path": admin, "bind": true}),
    );
    assert_eq!(run.code, 0, "{} {}", run.stdout, run.stderr);
    let result = &run.stdout["result"];
    assert_eq!(result["generated_credentials_ref"], GENERATED_REF);
    assert_eq!(result["secret_version"], 1);
    assert_eq!(result["bound"], true);
    assert_eq!(result["validation"]["result"], "pass");

    let requests = api.requests();
    let patch = |path: &str| {
        requests
            .iter()
            .find(|r| r.method == "PATCH" && r.path == path)
            .unwrap_or_else(|| panic!("no PATCH {path}"))
            .clone()
    };
    let service_account = patch("/api/v1/namespaces/gtc-local/serviceaccounts/gtc-deployer");
    assert_eq!(
        service_account.authorization,
        format!("Bearer {admin_marker}")
    );
    let role = patch("/apis/rbac.authorization.k8s.io/v1/namespaces/gtc-local/roles/gtc-deployer");
    let rules = role.json()["rules"].clone();
    assert_eq!(rules.as_array().map(Vec::len), Some(7), "{rules}");
    assert!(rules.as_array().expect("rules").contains(&json!({
        "apiGroups": ["apps"], "resources": ["deployments"],
        "verbs": ["patch", "get", "list", "delete"]})));
    assert!(rules.as_array().expect("rules").contains(&json!({
        "apiGroups": [""], "resources": ["serviceaccounts/token"],
        "resourceNames": ["gtc-deployer"], "verbs": ["create"]})));
    let binding =
        patch("/apis/rbac.authorization.k8s.io/v1/namespaces/gtc-local/rolebindings/gtc-deployer");
    assert_eq!(binding.json()["subjects"][0]["name"], "gtc-deployer");
    let cluster_role =
        patch("/apis/rbac.authorization.k8s.io/v1/clusterroles/gtc-deployer-gtc-local");
    assert_eq!(
        cluster_role.json()["rules"],
        json!([{"apiGroups": [""], "resources": ["namespaces"],
                "resourceNames": ["gtc-local"], "verbs": ["get", "patch"]}])
    );
    patch("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/gtc-deployer-gtc-local");
    let token = requests
        .iter()
        .find(|r| r.path.ends_with("/serviceaccounts/gtc-deployer/token"))
        .expect("a token request");
    assert_eq!(token.authorization, format!("Bearer {admin_marker}"));
    assert_eq!(token.json()["spec"]["expirationSeconds"], 86400);
    // The validation after the bootstrap asked as the ServiceAccount.
    assert!(
        requests
            .iter()
            .any(|r| r.path.ends_with("/selfsubjectaccessreviews")
                && r.authorization == "Bearer sa-token-1")
    );

    let generated = reveal_generated(&home);
    assert_eq!(generated["users"][0]["user"]["token"], "sa-token-1");
    assert_eq!(generated["clusters"][0]["cluster"]["server"], api.url());
    assert_eq!(
        generated["contexts"][0]["context"]["namespace"],
        "gtc-local"
    );

    let stored = document(&home);
    assert_eq!(stored["mode"], "bootstrap");
    assert_eq!(stored["provided_credentials_ref"], GENERATED_REF);
    assert_eq!(
        stored["bootstrap"]["generated_credentials_ref"],
        GENERATED_REF
    );
    assert_eq!(
        stored["bootstrap"]["rules_pack_ref"],
        "rules/greentic.deployer.k8s"
    );
    assert!(stored["bootstrap"]["admin_credential_consumed_at"].is_string());
    let expires: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(stored["expiry"]["expires_at"].clone()).expect("expires_at");
    let rotate: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(stored["expiry"]["rotate_at"].clone()).expect("rotate_at");
    let consumed: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(stored["bootstrap"]["admin_credential_consumed_at"].clone())
            .expect("consumed");
    assert!(rotate < expires);
    let lifetime = (expires - consumed).num_seconds();
    assert!((86390..=86410).contains(&lifetime), "{lifetime}");
    let to_rotation = (rotate - consumed).num_seconds();
    assert!((69110..=69130).contains(&to_rotation), "{to_rotation}");
    let rules = std::fs::read_to_string(
        home.root()
            .join("local/rules/greentic.deployer.k8s/rbac.yaml"),
    )
    .expect("rules pack");
    assert!(
        rules.contains("kind: ClusterRole\n") && rules.contains("- gtc-local\n"),
        "{rules}"
    );
    let shown = home.gtc(&["op", "env", "show", "local"]);
    assert_eq!(shown.stdout["result"]["credentials_ref"], GENERATED_REF);

    // The admin material was consumed and dropped: not in any file under
    // the home folder, nor in any output or audit line.
    let mut found = Vec::new();
    files_under(home.dir.path(), &mut found);
    for (path, bytes) in &found {
        assert!(
            !String::from_utf8_lossy(bytes).contains(&admin_marker),
            "the admin material is in {}",
            path.display()
        );
    }
    for text in [
        String::from_utf8_lossy(&run.raw.stdout).into_owned(),
        String::from_utf8_lossy(&run.raw.stderr).into_owned(),
        home.audit_lines("local").join("\n"),
    ] {
        assert!(!text.contains(&admin_marker), "{text}");
    }
    let audited: Vec<Value> = home
        .audit_lines("local")
        .iter()
        .map(|line| serde_json::from_str(line).expect("json"))
        .collect();
    let event = audited
        .iter()
        .rev()
        .find(|event| event["noun"] == "credentials" && event["verb"] == "bootstrap")
        .expect("the bootstrap is audited");
    assert_eq!(event["target"]["admin_profile"], "cluster-admin");
    assert_eq!(event["target"]["generated_credentials_ref"], GENERATED_REF);

    // `env reconcile` applies as the generated identity too: with no
    // ambient kubeconfig, its requests carry the ServiceAccount's token.
    let reconcile = home.gtc_with_env(
        &[
            "op",
            "env",
            "reconcile",
            "local",
            "--router-image",
            &format!("registry.test/gtc@sha256:{}", "a".repeat(64)),
        ],
        &[("KUBECONFIG", "/nonexistent/kubeconfig")],
    );
    let version_asks: Vec<String> = api
        .requests()
        .iter()
        .skip(requests.len())
        .filter(|r| r.path == "/version")
        .map(|r| r.authorization.clone())
        .collect();
    assert_eq!(
        version_asks,
        ["Bearer sa-token-1"],
        "reconcile: {} {}",
        reconcile.stdout,
        reconcile.stderr
    );

    // Later checks use the generated identity, not the ambient kubeconfig.
    let checked = requirements(&home, None);
    assert_eq!(checked.code, 0, "{} {}", checked.stdout, checked.stderr);
    assert_eq!(checked.stdout["result"]["validated_with"], GENERATED_REF);
    assert_eq!(checked.stdout["result"]["rotation_due"], false);

    let rotated = home.mutate("credentials", "rotate", json!({"environment_id": "local"}));
    assert_eq!(rotated.code, 0, "{} {}", rotated.stdout, rotated.stderr);
    assert_eq!(rotated.stdout["result"]["secret_version"], 2);
    let tokens: Vec<Recorded> = api
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/serviceaccounts/gtc-deployer/token"))
        .collect();
    assert_eq!(tokens.len(), 2);
    assert_eq!(
        tokens[1].authorization, "Bearer sa-token-1",
        "minted with the current token"
    );
    assert_eq!(
        reveal_generated(&home)["users"][0]["user"]["token"],
        "sa-token-2"
    );
    let after = document(&home);
    assert_ne!(after["expiry"], stored["expiry"]);
    assert_eq!(after["bootstrap"], stored["bootstrap"]);
}

#[test]
fn rotation_is_reported_due_once_its_time_passed() {
    // Proves rotation_due: a token that lives 3 s is due for rotation
    // 2.4 s after issue; `credentials show` says so once that passed.
    let home = environment("greentic.deployer.k8s@1.0.0");
    let api = FakeApi::start(&[]);
    api.token_lifetime(3);
    let outside = tempfile::tempdir().expect("tempdir");
    let admin = kubeconfig_at(
        &outside.path().join("admin.yaml"),
        &api.url(),
        "admin-token",
    );
    let run = bootstrap(
        &home,
        json!({"environment_id": "local", "admin_material_path": admin}),
    );
    assert_eq!(run.code, 0, "{} {}", run.stdout, run.stderr);
    assert_eq!(run.stdout["result"]["bound"], false);
    let due = || {
        home.gtc(&["op", "credentials", "show", "local"]).stdout["result"]["rotation_due"].clone()
    };
    assert_eq!(due(), false);
    common::wait_until("rotation to be due", Duration::from_secs(10), || {
        due() == true
    });
}

#[test]
fn bad_admin_material_and_other_deployers_are_refused_and_write_nothing() {
    // Proves each refusal names what is wrong and changes nothing but the
    // audit log: both path and inline, neither, an unreadable path, text
    // that is not a kubeconfig, a lifetime out of bounds; and a bootstrap
    // or rotation of a local-process environment (no provider account).
    let home = environment("greentic.deployer.k8s@1.0.0");
    let api = FakeApi::start(&[]);
    let outside = tempfile::tempdir().expect("tempdir");
    let admin = kubeconfig_at(
        &outside.path().join("admin.yaml"),
        &api.url(),
        "admin-token",
    );
    let before = store_files(&home);
    let admin_text = std::fs::read_to_string(&admin).expect("admin");
    let cases = [
        (
            json!({"environment_id": "local", "admin_material_path": admin, "admin_material_inline": admin_text}),
            "admin_material_inline",
            "not both",
        ),
        (
            json!({"environment_id": "local"}),
            "admin_material_path",
            "give the admin kubeconfig",
        ),
        (
            json!({"environment_id": "local", "admin_material_path": outside.path().join("missing.yaml")}),
            "admin_material_path",
            "cannot be read",
        ),
        (
            json!({"environment_id": "local", "admin_material_inline": "hello: world\n"}),
            "admin_material_inline",
            "not an admin kubeconfig",
        ),
        (
            json!({"environment_id": "local", "admin_material_path": admin, "token_ttl_seconds": 60}),
            "token_ttl_seconds",
            "600 to 604800",
        ),
    ];
    for (answers, field, message) in cases {
        let run = bootstrap(&home, answers.clone());
        assert_eq!(run.code, 1, "{answers}: {}", run.stderr);
        assert_eq!(
            run.error_kind(),
            "invalid-argument",
            "{answers}: {}",
            run.stderr
        );
        assert_eq!(
            run.stderr["error"]["field"], field,
            "{answers}: {}",
            run.stderr
        );
        assert!(
            run.error_message().contains(message),
            "{answers}: {}",
            run.error_message()
        );
        assert!(!run.error_message().contains("admin-token"));
    }
    assert!(api.requests().is_empty(), "nothing was sent to the cluster");
    assert_unchanged(&home, &before);

    let local = environment("greentic.deployer.local-process@0.1.0");
    let local_admin = kubeconfig_at(
        &outside.path().join("local-admin.yaml"),
        &api.url(),
        "admin-token",
    );
    let before = store_files(&local);
    let refused = bootstrap(
        &local,
        json!({"environment_id": "local", "admin_material_path": local_admin}),
    );
    assert_eq!(
        (refused.code, refused.error_kind()),
        (1, "spec"),
        "{}",
        refused.stderr
    );
    assert!(
        refused
            .error_message()
            .contains("no provider account to bootstrap")
    );
    let rotate = local.mutate("credentials", "rotate", json!({"environment_id": "local"}));
    assert_eq!(
        (rotate.code, rotate.error_kind()),
        (1, "spec"),
        "{}",
        rotate.stderr
    );
    assert_unchanged(&local, &before);
    assert!(api.requests().is_empty());
}

#[test]
fn credentials_verbs_print_their_schema_and_are_local_only_with_node() {
    // Proves --schema for the mutating verbs and that --node refuses them
    // as local-only (exit 2) before anything is sent.
    let home = Home::new();
    let schema = home.gtc(&["op", "credentials", "bootstrap", "--schema"]);
    assert_eq!(schema.code, 0);
    assert!(
        schema.stdout.to_string().contains("token_ttl_seconds"),
        "{}",
        schema.stdout
    );
    let rotate = home.gtc(&["op", "credentials", "rotate", "--schema"]);
    assert!(rotate.stdout.to_string().contains("admin_material_path"));
    assert!(!rotate.stdout.to_string().contains("\"bind\""));
    let remote = home.gtc(&[
        "op",
        "--node",
        "http://127.0.0.1:9",
        "credentials",
        "show",
        "local",
    ]);
    assert_eq!(remote.code, 2, "{}", remote.stderr);
    assert!(
        remote
            .error_message()
            .contains("works on the node's machine only")
    );
}

#[test]
fn a_bootstrap_the_cluster_forbids_is_unauthorized_and_stores_nothing() {
    // Proves an admin kubeconfig whose user may not create the RBAC gets
    // `unauthorized` naming the object, and no secret, document or rules
    // pack is written.
    let home = environment("greentic.deployer.k8s@1.0.0");
    let api = FakeApi::start(&[]);
    api.forbid("not-an-admin");
    let outside = tempfile::tempdir().expect("tempdir");
    let admin = kubeconfig_at(
        &outside.path().join("admin.yaml"),
        &api.url(),
        "not-an-admin",
    );
    let before = store_files(&home);
    let run = bootstrap(
        &home,
        json!({"environment_id": "local", "admin_material_path": admin}),
    );
    assert_eq!(
        (run.code, run.error_kind()),
        (1, "unauthorized"),
        "{}",
        run.stderr
    );
    assert!(
        run.error_message().contains("Namespace gtc-local"),
        "{}",
        run.error_message()
    );
    assert_unchanged(&home, &before);
    assert!(!api.requests().iter().any(|r| r.path.ends_with("/token")));
}
