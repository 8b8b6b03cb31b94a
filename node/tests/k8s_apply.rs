//! `gtc op env reconcile ENV` (no `--render`) and `gtc op env preflight`
//! for the Kubernetes deployer, with the real binary against a fake API
//! server on loopback (plain HTTP, a token user in a kubeconfig written
//! here). The fake records every request and answers /version,
//! SelfSubjectAccessReviews (allowed, or denied for chosen verbs), PATCH
//! (the body echoed back), metadata LISTs (one stale gtc-labelled worker
//! Deployment and one unlabelled Deployment) and DELETE.
//!
//! This is the only cluster the apply path meets on these machines: no
//! real Kubernetes API server runs here.

mod common;
#[path = "support/fake_kube.rs"]
mod fake_kube;

use std::path::PathBuf;

use base64::Engine as _;
use common::{Home, Run, id, stage_and_warm};
use fake_kube::{FakeApi, Recorded};
use serde_json::{Value, json};

/// A router image pinned by digest.
fn router_image() -> String {
    format!("registry.test/gtc@sha256:{}", "a".repeat(64))
}

/// The name of the stale worker the fake lists (a revision archived since).
const STALE_WORKER: &str = "gtc-worker-01hstale0000000000000000000";
/// The unlabelled Deployment the fake lists: someone else's.
const FOREIGN_DEPLOYMENT: &str = "hand-made";

/// A fake API server whose Deployment list holds the stale gtc-labelled
/// worker and the unlabelled Deployment.
fn start_api(denied: &[(&str, &str)]) -> FakeApi {
    let api = FakeApi::start(denied);
    api.lists_deployments(vec![
        json!({"metadata": {"name": STALE_WORKER, "namespace": "gtc-local", "uid": "uid-stale",
                            "labels": {"app.kubernetes.io/managed-by": "gtc"}}}),
        json!({"metadata": {"name": FOREIGN_DEPLOYMENT, "namespace": "gtc-local", "uid": "uid-foreign",
                            "labels": {"app": "mine"}}}),
    ]);
    api
}

/// A kubeconfig whose current context points at `server` with a token user.
fn kubeconfig(home: &Home, server: &str) -> PathBuf {
    let path = home.dir.path().join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\ncontexts:\n- name: fake\n  context: {{cluster: fake, user: tester}}\nclusters:\n- name: fake\n  cluster: {{server: '{server}'}}\nusers:\n- name: tester\n  user: {{token: fake-token}}\n"
        ),
    )
    .expect("kubeconfig");
    path
}

/// `local` with deployment `shop` and one warming revision whose bundle
/// runs an image and uses secret `db/password`, stored with `value`.
fn environment_with_secret(value: &str) -> (Home, String) {
    let home = Home::new();
    assert_eq!(home.gtc(&["op", "env", "init"]).code, 0);
    let put = home.mutate(
        "secrets",
        "put",
        json!({"environment_id": "local", "path": "db/password", "value": value}),
    );
    assert_eq!(put.code, 0, "{}", put.stderr);
    let deployment = id(
        &home.ok(
            "bundles",
            "add",
            json!({"environment_id": "local", "bundle_id": "shop"}),
        ),
        "deployment_id",
    );
    let bundle = common::build_bundle(
        &home,
        "image",
        &format!(
            "schema_version: 1\nbundle_id: shop\nruntime:\n  command: [/bin/server]\n  health_path: /healthz\n  instances: 2\n  image:\n    reference: registry.test/shop\n    digest: \"sha256:{}\"\n  secrets:\n    - ref: secret://local/db/password\n      env: DB_PASSWORD\n",
            "b".repeat(64)
        ),
    );
    let revision = stage_and_warm(&home, &deployment, &bundle);
    (home, revision)
}

fn reconcile(home: &Home, kubeconfig: &std::path::Path) -> Run {
    home.gtc_with_env(
        &[
            "op",
            "env",
            "reconcile",
            "local",
            "--router-image",
            &router_image(),
        ],
        &[("KUBECONFIG", kubeconfig.to_str().expect("utf8"))],
    )
}

fn marker() -> String {
    format!("k8s-apply-marker-{}", ulid::Ulid::new())
}

/// Fails when `value` (or its base64) is in `run`'s output or the audit log.
fn assert_nowhere(home: &Home, run: &Run, value: &str) {
    let encoded = base64::engine::general_purpose::STANDARD.encode(value);
    let outputs = [
        String::from_utf8_lossy(&run.raw.stdout).into_owned(),
        String::from_utf8_lossy(&run.raw.stderr).into_owned(),
        home.audit_lines("local").join("\n"),
    ];
    for text in outputs {
        assert!(!text.contains(value), "the value leaked: {text}");
        assert!(
            !text.contains(&encoded),
            "the value's base64 leaked: {text}"
        );
    }
}

#[test]
fn reconcile_applies_every_object_prunes_the_stale_one_and_fills_the_secret() {
    // Proves: every rendered object is PATCHed (server-side apply, field
    // manager gtc, forced, apply content type, the token sent) in the
    // render's order, the namespace first; the prune lists metadata only
    // and DELETEs the stale gtc-labelled worker but not the unlabelled
    // Deployment; gtc-dev-secrets carries the latest stored value (base64)
    // and the worker's own Secret the version its revision pinned (the
    // secret was rotated after the revision was staged), while no output or
    // audit line carries either; the apply is audited with the objects.
    let value = marker();
    let (home, revision) = environment_with_secret(&value);
    let rotated = marker();
    let rotate = home.mutate(
        "secrets",
        "rotate",
        json!({"environment_id": "local", "path": "db/password", "value": rotated}),
    );
    assert_eq!(rotate.code, 0, "{}", rotate.stderr);
    let api = start_api(&[]);
    let config = kubeconfig(&home, &api.url());
    let render_dir = home.dir.path().join("render");
    let rendered = home.gtc(&[
        "op",
        "env",
        "reconcile",
        "local",
        "--render",
        render_dir.to_str().expect("utf8"),
        "--router-image",
        &router_image(),
    ]);
    assert_eq!(rendered.code, 0, "{}", rendered.stderr);
    let run = reconcile(&home, &config);
    assert_eq!(run.code, 0, "stdout {} stderr {}", run.stdout, run.stderr);
    let result = &run.stdout["result"];
    assert_eq!(result["mode"], "apply");
    assert_eq!(result["namespace"], "gtc-local");
    let pinned_key = format!("{}.env.DB_PASSWORD", revision.to_lowercase());
    assert_eq!(result["secret_keys"], json!(["db.password", pinned_key]));

    let requests = api.requests();
    let patches: Vec<&Recorded> = requests.iter().filter(|r| r.method == "PATCH").collect();
    let files = rendered.stdout["result"]["files"]
        .as_array()
        .expect("files")
        .len()
        - 1; // all.yaml is no object
    assert_eq!(patches.len(), files, "one PATCH per rendered object");
    assert_eq!(
        result["applied_objects"].as_array().map(Vec::len),
        Some(files)
    );
    assert_eq!(patches[0].path, "/api/v1/namespaces/gtc-local");
    for patch in &patches {
        assert!(patch.query.contains("fieldManager=gtc"), "{patch:?}");
        assert!(patch.query.contains("force=true"), "{patch:?}");
        assert_eq!(patch.content_type, "application/apply-patch+yaml");
        assert_eq!(patch.authorization, "Bearer fake-token");
    }
    let worker = format!("gtc-worker-{}", revision.to_lowercase());
    assert!(
        patches
            .iter()
            .any(|p| p.path == format!("/apis/apps/v1/namespaces/gtc-local/deployments/{worker}")),
        "the worker's Deployment was applied"
    );
    // Every object of the written render was sent as rendered, in its
    // order (the files' names sort in apply order), the Secret apart from
    // its values.
    let encoded = base64::engine::general_purpose::STANDARD.encode(&value);
    let encoded_latest = base64::engine::general_purpose::STANDARD.encode(&rotated);
    let mut names: Vec<PathBuf> = std::fs::read_dir(&render_dir)
        .expect("render")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| !path.ends_with("all.yaml"))
        .collect();
    names.sort();
    assert_eq!(names.len(), patches.len());
    for (path, patch) in names.iter().zip(&patches) {
        let text = std::fs::read_to_string(path).expect("read");
        let mut want: Value = serde_norway::from_str(&text).expect("yaml");
        if want["metadata"]["name"] == "gtc-dev-secrets" {
            assert_eq!(want["data"]["db.password"], "", "the render holds no value");
            want["data"]["db.password"] = json!(encoded_latest);
        } else if want["kind"] == "Secret" {
            assert_eq!(want["data"][&pinned_key], "", "the render holds no value");
            want["data"][&pinned_key] = json!(encoded);
        }
        assert_eq!(patch.json(), want, "{}", path.display());
    }
    let secret = patches
        .iter()
        .find(|p| p.path == "/api/v1/namespaces/gtc-local/secrets/gtc-dev-secrets")
        .expect("the Secret was applied");
    assert_eq!(
        secret.json()["data"]["db.password"],
        encoded_latest.as_str()
    );
    let pinned = patches
        .iter()
        .find(|p| p.path == format!("/api/v1/namespaces/gtc-local/secrets/{worker}-secrets"))
        .expect("the worker's Secret was applied");
    assert_eq!(
        pinned.json()["data"][&pinned_key],
        encoded.as_str(),
        "the worker gets the version its revision pinned, not the latest"
    );

    let deletes: Vec<&Recorded> = requests.iter().filter(|r| r.method == "DELETE").collect();
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    assert_eq!(
        deletes[0].path,
        format!("/apis/apps/v1/namespaces/gtc-local/deployments/{STALE_WORKER}")
    );
    assert_eq!(deletes[0].json()["preconditions"]["uid"], "uid-stale");
    assert!(
        !requests
            .iter()
            .any(|r| r.path.ends_with(FOREIGN_DEPLOYMENT)),
        "the unlabelled Deployment was left alone"
    );
    let pruned = format!("Deployment gtc-local/{STALE_WORKER}");
    assert_eq!(result["pruned_objects"], json!([pruned]));
    let lists: Vec<&Recorded> = requests
        .iter()
        .filter(|r| r.method == "GET" && r.query.contains("labelSelector"))
        .collect();
    assert_eq!(lists.len(), 6, "one list per namespaced kind");
    for list in &lists {
        assert!(
            list.accept.contains("PartialObjectMetadataList"),
            "{list:?}"
        );
        assert!(
            list.query
                .contains("labelSelector=app.kubernetes.io%2Fmanaged-by%3Dgtc"),
            "{list:?}"
        );
    }
    // The access review came first, and all of it before any PATCH.
    let first_patch = requests
        .iter()
        .position(|r| r.method == "PATCH")
        .expect("patch");
    let reviews = requests[..first_patch]
        .iter()
        .filter(|r| r.path.ends_with("/selfsubjectaccessreviews"))
        .count();
    assert_eq!(reviews, 26);

    assert_nowhere(&home, &run, &value);
    assert_nowhere(&home, &run, &rotated);
    let audit = home.audit_lines("local");
    let event = audit
        .iter()
        .rev()
        .map(|line| serde_json::from_str::<Value>(line).expect("audit json"))
        .find(|event| event["noun"] == "env" && event["verb"] == "reconcile")
        .expect("the reconcile is audited");
    assert_eq!(event["result"]["outcome"], "ok", "{event}");
    assert_eq!(event["target"]["pruned"], json!([pruned]));
    assert!(
        audit
            .iter()
            .any(|line| line.contains("\"for\":\"env reconcile\"")),
        "the reveal is audited"
    );
}

#[test]
fn a_denied_access_review_refuses_with_the_verb_and_applies_nothing() {
    // Proves: a review denying patch on deployments exits 1 naming the
    // verb, resource and namespace and the fix, with no PATCH or DELETE
    // sent, and the refusal audited; preflight fails apply-permissions.
    let value = marker();
    let (home, _) = environment_with_secret(&value);
    let api = start_api(&[("patch", "deployments")]);
    let config = kubeconfig(&home, &api.url());
    let run = reconcile(&home, &config);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert_eq!(run.error_kind(), "unauthorized");
    let message = run.error_message();
    assert!(
        message.contains("grant patch on deployments in gtc-local"),
        "{message}"
    );
    assert!(message.contains("context fake"), "{message}");
    assert!(message.contains("nothing was applied"), "{message}");
    let requests = api.requests();
    assert!(
        !requests
            .iter()
            .any(|r| r.method == "PATCH" || r.method == "DELETE"),
        "{requests:?}"
    );
    assert_nowhere(&home, &run, &value);
    let refused = home
        .audit_lines("local")
        .iter()
        .rev()
        .map(|line| serde_json::from_str::<Value>(line).expect("audit json"))
        .find(|event| event["verb"] == "reconcile")
        .expect("the refusal is audited");
    assert_eq!(refused["result"]["outcome"], "error", "{refused}");
    assert_eq!(refused["result"]["kind"], "unauthorized");

    bind_k8s(&home);
    let preflight = home.gtc_with_env(
        &["op", "env", "preflight", "local"],
        &[("KUBECONFIG", config.to_str().expect("utf8"))],
    );
    assert_eq!(preflight.code, 1, "{}", preflight.stdout);
    assert_eq!(check(&preflight, "cluster-reachable")["status"], "pass");
    let permissions = check(&preflight, "apply-permissions");
    assert_eq!(permissions["status"], "fail");
    let fix = permissions["fix"].as_str().expect("fix");
    assert!(
        fix.contains("grant patch on deployments in gtc-local"),
        "{fix}"
    );
}

#[test]
fn a_server_that_is_down_refuses_with_a_clear_message_and_nothing_applied() {
    // Proves: with nothing listening at the kubeconfig's server, reconcile
    // exits 1 saying the API server cannot be reached and how to check it,
    // and preflight fails cluster-reachable with a fix; the fake started on
    // that port afterwards would see nothing (the port is free).
    let (home, _) = environment_with_secret(&marker());
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let config = kubeconfig(&home, &format!("http://127.0.0.1:{port}"));
    let run = reconcile(&home, &config);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert_eq!(run.error_kind(), "precondition-failed");
    let message = run.error_message();
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    assert!(message.contains("kubectl cluster-info"), "{message}");
    assert!(message.contains("nothing was applied"), "{message}");

    bind_k8s(&home);
    let preflight = home.gtc_with_env(
        &["op", "env", "preflight", "local"],
        &[("KUBECONFIG", config.to_str().expect("utf8"))],
    );
    assert_eq!(preflight.code, 1, "{}", preflight.stdout);
    let reachable = check(&preflight, "cluster-reachable");
    assert_eq!(reachable["status"], "fail");
    assert!(
        reachable["fix"]
            .as_str()
            .expect("fix")
            .contains("kubectl cluster-info")
    );
    assert_eq!(check(&preflight, "apply-permissions")["status"], "skipped");
}

#[test]
fn a_missing_secret_refuses_before_the_cluster_is_asked() {
    // Proves: a secret ref the environment names (here in a deployment's
    // config overrides) with no stored version refuses the reconcile
    // (exit 1, not-found) naming the ref and `gtc op secrets put`, before
    // a single request reaches the API server.
    let home = Home::new();
    assert_eq!(home.gtc(&["op", "env", "init"]).code, 0);
    home.ok(
        "bundles",
        "add",
        json!({"environment_id": "local", "bundle_id": "shop",
               "config_overrides": {"db": {"password": "secret://local/db/missing"}}}),
    );
    let api = start_api(&[]);
    let config = kubeconfig(&home, &api.url());
    let run = reconcile(&home, &config);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert_eq!(run.error_kind(), "not-found");
    let message = run.error_message();
    assert!(message.contains("secret://local/db/missing"), "{message}");
    assert!(message.contains("gtc op secrets put"), "{message}");
    assert!(message.contains("nothing was applied"), "{message}");
    assert!(api.requests().is_empty(), "{:?}", api.requests());
}

#[test]
fn preflight_passes_against_a_cluster_that_allows_everything() {
    // Proves: with a reachable fake that allows every review, both cluster
    // checks pass (exit 0), the version is reported and 26 reviews were
    // asked; without a usable kubeconfig both are skipped.
    let home = Home::new();
    assert_eq!(home.gtc(&["op", "env", "init"]).code, 0);
    bind_k8s(&home);
    let api = start_api(&[]);
    let config = kubeconfig(&home, &api.url());
    let run = home.gtc_with_env(
        &["op", "env", "preflight", "local"],
        &[("KUBECONFIG", config.to_str().expect("utf8"))],
    );
    assert_eq!(run.code, 0, "{}", run.stdout);
    let reachable = check(&run, "cluster-reachable");
    assert_eq!(reachable["status"], "pass");
    assert!(
        reachable["detail"]
            .as_str()
            .expect("detail")
            .contains("v1.33.0-fake")
    );
    assert_eq!(check(&run, "apply-permissions")["status"], "pass");
    let reviews = api
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/selfsubjectaccessreviews"))
        .count();
    assert_eq!(reviews, 26);
    assert!(
        !api.requests()
            .iter()
            .any(|r| r.method != "GET" && r.method != "POST")
    );

    let missing = home.dir.path().join("no-kubeconfig");
    let run = home.gtc_with_env(
        &["op", "env", "preflight", "local"],
        &[("KUBECONFIG", missing.to_str().expect("utf8"))],
    );
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert_eq!(check(&run, "cluster-reachable")["status"], "skipped");
    assert_eq!(check(&run, "apply-permissions")["status"], "skipped");
}

fn bind_k8s(home: &Home) {
    home.ok(
        "env-packs",
        "update",
        json!({"environment_id": "local", "slot": "deployer", "kind": "greentic.deployer.k8s@1.0.0"}),
    );
}

/// The check called `name` in a preflight answer.
fn check<'a>(run: &'a Run, name: &str) -> &'a Value {
    run.stdout["result"]["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no check {name} in {}", run.stdout))
}

#[test]
fn a_namespace_or_object_gtc_did_not_make_for_this_environment_is_refused_with_nothing_applied() {
    // Proves the ownership check: a namespace gtc-local made by another
    // tool (no gtc label), or a gtc-router of another gtc environment,
    // refuses the reconcile (exit 1, `conflict`) naming each object and
    // why, with the fix, and no PATCH or DELETE is sent; the same objects
    // labelled as this environment's are applied over.
    let value = marker();
    let (home, _) = environment_with_secret(&value);
    let api = start_api(&[]);
    api.holds("/api/v1/namespaces/gtc-local", json!({"team": "payments"}));
    api.holds(
        "/apis/apps/v1/namespaces/gtc-local/deployments/gtc-router",
        json!({"app.kubernetes.io/managed-by": "gtc", "greentic.ai/environment": "staging"}),
    );
    let config = kubeconfig(&home, &api.url());
    let run = reconcile(&home, &config);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert_eq!(run.error_kind(), "conflict");
    let message = run.error_message();
    assert!(message.contains("Namespace gtc-local"), "{message}");
    assert!(message.contains("gtc did not make it"), "{message}");
    assert!(message.contains("gtc-router"), "{message}");
    assert!(message.contains("\"staging\""), "{message}");
    assert!(message.contains("nothing was applied"), "{message}");
    assert!(
        message.contains("greentic.ai/environment=<env>"),
        "{message}"
    );
    let requests = api.requests();
    assert!(
        !requests
            .iter()
            .any(|r| r.method == "PATCH" || r.method == "DELETE"),
        "{requests:?}"
    );
    assert_nowhere(&home, &run, &value);

    let owned = start_api(&[]);
    owned.holds(
        "/api/v1/namespaces/gtc-local",
        json!({"app.kubernetes.io/managed-by": "gtc", "greentic.ai/environment": "local"}),
    );
    let config = kubeconfig(&home, &owned.url());
    let run = reconcile(&home, &config);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(owned.requests().iter().any(|r| r.method == "PATCH"));
}
