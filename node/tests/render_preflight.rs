//! `gtc op env reconcile --render` and `gtc op env preflight` with the real
//! binary: the render written to a folder (byte-identical twice, whole or
//! not at all, read-only towards the store), its refusals, and each
//! deployer's preflight passing or failing with the fix. Run without the
//! cargo feature `kube` (`cargo test -p node --no-default-features --test
//! render_preflight`), the same tests hold the binary built that way (the
//! container image's) to its refusals of every path that needs a cluster.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{Home, Run, id, service_bundle, stage_and_warm};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// A router image pinned by digest.
fn router_image() -> String {
    format!("registry.test/gtc@sha256:{}", "a".repeat(64))
}

/// The image digest the bundles name.
fn image_digest() -> String {
    format!("sha256:{}", "b".repeat(64))
}

/// `local` with deployment `shop` and one warming revision (two instances)
/// staged from a bundle whose runtime is an image when `image_lines` is
/// given, else the example service; (home, revision).
fn warming_revision(image_lines: Option<&str>) -> (Home, String) {
    let home = Home::new();
    assert_eq!(home.gtc(&["op", "env", "init"]).code, 0);
    let deployment = id(
        &home.ok(
            "bundles",
            "add",
            json!({"environment_id": "local", "bundle_id": "shop"}),
        ),
        "deployment_id",
    );
    let bundle = match image_lines {
        Some(lines) => image_bundle(&home, lines),
        None => service_bundle(&home, "shop", "shop", "  instances: 2\n"),
    };
    // No node runs, so the warmed revision stays `warming`: active, so the
    // render gives it a worker.
    let revision = stage_and_warm(&home, &deployment, &bundle);
    (home, revision)
}

/// A bundle for `shop` whose runtime runs an image (`image_lines`, the
/// `image:` mapping indented by two spaces); its program is a path of the
/// image, so the bundle carries no binary.
fn image_bundle(home: &Home, image_lines: &str) -> PathBuf {
    common::build_bundle(
        home,
        "image",
        &format!(
            "schema_version: 1\nbundle_id: shop\nruntime:\n  command: [/bin/server]\n  health_path: /healthz\n  instances: 2\n{image_lines}"
        ),
    )
}

fn image_lines(digest: Option<&str>) -> String {
    let digest = digest
        .map(|d| format!("    digest: \"{d}\"\n"))
        .unwrap_or_default();
    format!("  image:\n    reference: registry.test/shop\n{digest}")
}

fn reconcile(home: &Home, dir: &Path, extra: &[&str]) -> Run {
    let mut args = vec!["op", "env", "reconcile", "local", "--render"];
    args.push(dir.to_str().expect("utf8 path"));
    args.extend_from_slice(extra);
    home.gtc(&args)
}

/// Every file of `dir` with its bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .expect("list render")
        .map(|entry| {
            let entry = entry.expect("entry");
            let name = entry.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(entry.path()).expect("read"))
        })
        .collect()
}

/// `gtc` with `env` set, parsed like [`Home::gtc`].
fn gtc_with(home: &Home, env: &[(&str, &str)], args: &[&str]) -> Run {
    home.gtc_with_env(args, env)
}

/// The check called `name` in a preflight answer.
fn check<'a>(run: &'a Run, name: &str) -> &'a Value {
    run.stdout["result"]["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no check {name} in {}", run.stdout))
}

fn bind_deployer(home: &Home, kind: &str) {
    home.ok(
        "env-packs",
        "update",
        json!({"environment_id": "local", "slot": "deployer", "kind": kind}),
    );
}

#[test]
fn a_render_is_written_whole_and_byte_identical_each_time() {
    // Proves the render of a warming revision with an image digest names
    // the worker's pinned image, lists every file with its sha256, writes
    // the same bytes twice (into a new folder and over its own previous
    // render), and changes nothing in the store.
    let (home, revision) = warming_revision(Some(&image_lines(Some(&image_digest()))));
    let before = home.snapshot();
    let image = router_image();
    let first_dir = home.dir.path().join("render-1");
    let first = reconcile(&home, &first_dir, &["--router-image", &image]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let result = &first.stdout["result"];
    assert_eq!(result["applied"], false);
    assert_eq!(result["replaced_previous_render"], false);
    assert_eq!(result["namespace"], "gtc-local");
    assert_eq!(result["workers"][0]["revision_id"], revision.as_str());
    let pinned = format!("registry.test/shop@{}", image_digest());
    assert_eq!(result["workers"][0]["image"], pinned.as_str());

    let written = files(&first_dir);
    let worker = format!("50-deployment-gtc-worker-{}.yaml", revision.to_lowercase());
    let worker_yaml = String::from_utf8(written[&worker].clone()).expect("utf8");
    assert!(worker_yaml.contains(&pinned), "{worker_yaml}");
    assert!(worker_yaml.contains("replicas: 2"), "{worker_yaml}");
    assert!(written.contains_key("all.yaml"));
    assert!(written.contains_key("10-namespace.yaml"));
    let listed = result["files"].as_array().expect("files");
    assert_eq!(listed.len(), written.len());
    for file in listed {
        let name = file["name"].as_str().expect("name");
        let digest = hex::encode(Sha256::digest(&written[name]));
        assert_eq!(file["sha256"], digest.as_str(), "{name}");
    }

    let second_dir = home.dir.path().join("render-2");
    let second = reconcile(&home, &second_dir, &["--router-image", &image]);
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert_eq!(
        files(&second_dir),
        written,
        "a second render is byte-identical"
    );
    assert_eq!(second.stdout["result"]["files"], result["files"]);

    let again = reconcile(&home, &first_dir, &["--router-image", &image]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(again.stdout["result"]["replaced_previous_render"], true);
    assert_eq!(files(&first_dir), written);
    assert_eq!(home.snapshot(), before, "reconcile --render is read-only");

    // A folder holding anything but a previous render is refused as it is.
    std::fs::write(first_dir.join("notes.txt"), "mine").expect("write");
    let refused = reconcile(&home, &first_dir, &["--router-image", &image]);
    assert_eq!(refused.code, 1, "{}", refused.stdout);
    assert_eq!(refused.error_kind(), "conflict");
    assert!(refused.error_message().contains("previous render"));
    assert_eq!(
        std::fs::read_to_string(first_dir.join("notes.txt")).expect("kept"),
        "mine"
    );
}

#[test]
fn reconcile_refuses_without_a_router_image_or_a_usable_kubeconfig_and_writes_nothing() {
    // Proves a missing --router-image is a usage error naming the image
    // script, an unpinned one is refused, and none creates the folder or
    // changes the store; without --render and without a usable kubeconfig
    // the apply is refused (exit 1) with the fix, and only that refusal is
    // recorded (in the audit log). A gtc built without the Kubernetes
    // client (no feature `kube`) refuses the apply as not implemented
    // (exit 2), naming the feature and `--render`, and records only that.
    // The apply itself is tested against a fake API server in k8s_apply.rs.
    let (home, _) = warming_revision(Some(&image_lines(Some(&image_digest()))));
    let before = home.snapshot();
    let dir = home.dir.path().join("render");
    let missing = reconcile(&home, &dir, &[]);
    assert_eq!(missing.code, 2, "{}", missing.stdout);
    assert!(missing.error_message().contains("--router-image"));
    assert!(missing.error_message().contains("bash scripts/image.sh"));
    let unpinned = reconcile(&home, &dir, &["--router-image", "registry.test/gtc:1.0"]);
    assert_eq!(unpinned.code, 2, "{}", unpinned.stdout);
    assert!(unpinned.error_message().contains("pinned by digest"));
    let one_router = reconcile(
        &home,
        &dir,
        &["--router-image", &router_image(), "--router-replicas", "1"],
    );
    assert_eq!(one_router.code, 2, "{}", one_router.stdout);
    assert!(one_router.error_message().contains("--router-replicas"));

    assert!(!dir.exists(), "no refused render created its folder");
    assert_eq!(home.snapshot(), before);

    let missing = home.dir.path().join("no-kubeconfig");
    let apply = gtc_with(
        &home,
        &[("KUBECONFIG", missing.to_str().expect("utf8"))],
        &[
            "op",
            "env",
            "reconcile",
            "local",
            "--router-image",
            &router_image(),
        ],
    );
    if cfg!(feature = "kube") {
        assert_eq!(apply.code, 1, "{}", apply.stdout);
        assert_eq!(apply.error_kind(), "precondition-failed");
        assert!(
            apply
                .error_message()
                .contains("no usable Kubernetes configuration")
        );
        assert!(apply.error_message().contains("set KUBECONFIG"));
    } else {
        assert_eq!(apply.code, 2, "{}", apply.stdout);
        assert_eq!(apply.error_kind(), "not-yet-implemented");
        assert!(apply.error_message().starts_with(
            "this gtc was built without the Kubernetes client (cargo feature `kube`), so it cannot apply to a cluster; run `gtc op env reconcile` from a full build, or write the manifests with `--render DIR`"
        ), "{}", apply.error_message());
    }
    assert!(apply.error_message().contains("nothing was applied"));
    let audited: Value =
        serde_json::from_str(home.audit_lines("local").last().expect("audited")).expect("json");
    assert_eq!(
        (audited["noun"].as_str(), audited["verb"].as_str()),
        (Some("env"), Some("reconcile"))
    );
    assert_eq!(audited["result"]["outcome"], "error");
    assert_eq!(audited["result"]["kind"], apply.error_kind());
    assert_only_the_audit_log_changed(&home, &before, "only the audit log records the refusal");
}

#[test]
fn a_revision_whose_bundle_gives_no_image_digest_is_named() {
    // Proves a warming revision whose bundle's image has no digest, or
    // whose bundle names no image at all, refuses the render naming the
    // revision and the fix, and leaves no folder.
    for (lines, fix) in [
        (
            Some(image_lines(None)),
            "give runtime.image.digest in the bundle",
        ),
        (None, "names no container image"),
    ] {
        let (home, revision) = warming_revision(lines.as_deref());
        let dir: PathBuf = home.dir.path().join("render");
        let run = reconcile(&home, &dir, &["--router-image", &router_image()]);
        assert_eq!(run.code, 1, "{}", run.stdout);
        assert_eq!(run.error_kind(), "spec");
        let message = run.error_message();
        assert!(message.contains(&revision), "{message}");
        assert!(message.contains(fix), "{message}");
        assert!(!dir.exists());
    }
}

#[test]
fn preflight_of_the_local_process_deployer_passes_and_names_an_unreadable_bundle() {
    // Proves the local-process preflight passes on a fresh environment with
    // a staged bundle, and fails (exit 1) naming the revision whose bundle
    // folder is gone, with a fix.
    let (home, revision) = warming_revision(Some(&image_lines(Some(&image_digest()))));
    let run = home.gtc(&["op", "env", "preflight", "local"]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert_eq!(run.stdout["result"]["passed"], true);
    assert_eq!(
        run.stdout["result"]["deployer"],
        "greentic.deployer.local-process@0.1.0"
    );
    assert_eq!(check(&run, "spawn-process")["status"], "pass");
    assert_eq!(check(&run, "bundle-folders-readable")["status"], "pass");

    let revision_dir = home
        .root()
        .join("local")
        .join(deploy::layout::revision_dir_in_env(
            revision.parse().expect("id"),
        ));
    std::fs::remove_dir_all(deploy::layout::extracted_bundle(&revision_dir)).expect("remove");
    let run = home.gtc(&["op", "env", "preflight", "local"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    let failed = check(&run, "bundle-folders-readable");
    assert_eq!(failed["status"], "fail");
    assert!(
        failed["detail"]
            .as_str()
            .expect("detail")
            .contains(&revision)
    );
    assert!(
        failed["fix"]
            .as_str()
            .expect("fix")
            .contains("revisions stage")
    );
}

#[test]
fn preflight_of_the_docker_deployer_fails_on_a_missing_socket_with_the_fix() {
    // Proves DOCKER_HOST naming a socket that does not exist fails the
    // socket check (exit 1) with the install fix, and the API check is
    // skipped rather than guessed.
    let home = Home::new();
    assert_eq!(home.gtc(&["op", "env", "init"]).code, 0);
    bind_deployer(&home, "greentic.deployer.docker@0.1.0");
    let absent = home.dir.path().join("absent.sock");
    let host = format!("unix://{}", absent.display());
    let run = gtc_with(
        &home,
        &[("DOCKER_HOST", &host)],
        &["op", "env", "preflight", "local"],
    );
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert_eq!(run.stdout["result"]["passed"], false);
    let socket = check(&run, "docker-socket");
    assert_eq!(socket["status"], "fail");
    assert!(
        socket["detail"]
            .as_str()
            .expect("detail")
            .contains(absent.to_str().expect("utf8"))
    );
    let fix = socket["fix"].as_str().expect("fix");
    assert!(fix.contains("apt-get install docker.io"), "{fix}");
    assert!(fix.contains("start it"), "{fix}");
    assert_eq!(check(&run, "docker-api-version")["status"], "skipped");
}

#[test]
fn preflight_of_the_k8s_deployer_reads_the_kubeconfig_then_asks_its_cluster() {
    // Proves KUBECONFIG naming a missing file fails with the fix (exit 1)
    // and skips the cluster checks; a kubeconfig whose current context it
    // defines passes that check, and then its API server is asked: nothing
    // listens there, so reachability fails (exit 1) and RBAC is skipped.
    // A gtc built without the Kubernetes client (no feature `kube`) skips
    // both cluster checks instead, saying why (exit 0: nothing failed).
    // (A reachable fake API server is in k8s_apply.rs.)
    let home = Home::new();
    assert_eq!(home.gtc(&["op", "env", "init"]).code, 0);
    bind_deployer(&home, "greentic.deployer.k8s@1.0.0");
    let missing = home.dir.path().join("no-kubeconfig");
    let preflight = |kubeconfig: &Path| {
        gtc_with(
            &home,
            &[("KUBECONFIG", kubeconfig.to_str().expect("utf8"))],
            &["op", "env", "preflight", "local"],
        )
    };
    let run = preflight(&missing);
    assert_eq!(run.code, 1, "{}", run.stdout);
    let config = check(&run, "kubeconfig");
    assert_eq!(config["status"], "fail");
    let fix = config["fix"].as_str().expect("fix");
    assert!(
        fix.contains("set KUBECONFIG to a kubeconfig with a current-context"),
        "{fix}"
    );
    for skipped in ["cluster-reachable", "apply-permissions"] {
        assert_eq!(check(&run, skipped)["status"], "skipped");
    }

    // A loopback port nothing listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port();
    let kubeconfig = home.dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!("apiVersion: v1\nkind: Config\ncurrent-context: dev\ncontexts:\n- name: dev\n  context: {{cluster: dev, user: dev}}\nclusters:\n- name: dev\n  cluster: {{server: 'https://127.0.0.1:{port}'}}\nusers:\n- name: dev\n  user: {{}}\n"),
    )
    .expect("kubeconfig");
    let run = preflight(&kubeconfig);
    assert_eq!(check(&run, "kubeconfig")["status"], "pass");
    assert_eq!(check(&run, "kubeconfig-current-context")["status"], "pass");
    let reachable = check(&run, "cluster-reachable");
    if cfg!(feature = "kube") {
        assert_eq!(run.code, 1, "{}", run.stdout);
        assert_eq!(reachable["status"], "fail");
        assert!(
            reachable["detail"]
                .as_str()
                .expect("detail")
                .contains(&format!("127.0.0.1:{port}"))
        );
    } else {
        assert_eq!(run.code, 0, "{}", run.stdout);
        assert_eq!(run.stdout["result"]["passed"], true);
        for name in ["cluster-reachable", "apply-permissions"] {
            let skipped = check(&run, name);
            assert_eq!(skipped["status"], "skipped", "{name}");
            let reason = skipped["detail"].as_str().expect("detail");
            assert!(
                reason.starts_with(
                    "this gtc was built without the Kubernetes client (cargo feature `kube`)"
                ),
                "{reason}"
            );
            assert!(reason.contains("from a full build"), "{reason}");
        }
    }
    assert_eq!(check(&run, "apply-permissions")["status"], "skipped");

    std::fs::write(&kubeconfig, "contexts: [}\n").expect("broken kubeconfig");
    let run = preflight(&kubeconfig);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert_eq!(check(&run, "kubeconfig")["status"], "fail");
}

#[test]
fn warming_on_a_docker_bound_environment_fails_its_gate_when_the_preflight_finds_no_engine() {
    // Proves `revisions warm` runs the Docker deployer's preflight itself:
    // with DOCKER_HOST naming a socket that does not exist, the warm gate
    // fails (non-zero, the failed check named with its fix), the revision
    // goes `failed` with that reason and never `warming`, so no container
    // start is tried; warming it again once the preflight can pass
    // (local-process bound) succeeds.
    let home = Home::new();
    assert_eq!(home.gtc(&["op", "env", "init"]).code, 0);
    let deployment = id(
        &home.ok(
            "bundles",
            "add",
            json!({"environment_id": "local", "bundle_id": "shop"}),
        ),
        "deployment_id",
    );
    let bundle = image_bundle(&home, &image_lines(Some(&image_digest())));
    let revision = id(
        &home.ok(
            "revisions",
            "stage",
            json!({"environment_id": "local", "deployment_id": deployment, "bundle_path": bundle}),
        ),
        "revision_id",
    );
    bind_deployer(&home, "greentic.deployer.docker@0.1.0");
    let absent = home.dir.path().join("absent.sock");
    let host = format!("unix://{}", absent.display());
    let answers = home.write(
        "warm.json",
        &json!({"environment_id": "local", "revision_id": revision}).to_string(),
    );
    let answers = answers.to_str().expect("utf8 path");
    let run = gtc_with(
        &home,
        &[("DOCKER_HOST", &host)],
        &["op", "revisions", "warm", "--answers", answers],
    );
    assert_ne!(run.code, 0, "{}", run.stdout);
    let error = run.stderr.to_string();
    assert!(error.contains("preflight-docker-socket"), "{error}");
    assert!(error.contains(absent.to_str().expect("utf8")), "{error}");
    assert!(error.contains("apt-get install docker.io"), "{error}");
    let row = |home: &Home| {
        let list = home.gtc(&["op", "revisions", "list", "local"]);
        list.stdout["result"]["revisions"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["revision_id"] == revision.as_str()))
            .cloned()
            .unwrap_or_else(|| panic!("revision {revision} not listed: {}", list.stdout))
    };
    let failed = row(&home);
    assert_eq!(failed["lifecycle"], "failed");
    let reason = failed["failure_reason"].as_str().expect("failure reason");
    assert!(reason.contains("apt-get install docker.io"), "{reason}");
    bind_deployer(&home, "greentic.deployer.local-process@0.1.0");
    let run = gtc_with(
        &home,
        &[("DOCKER_HOST", &host)],
        &["op", "revisions", "warm", "--answers", answers],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(row(&home)["lifecycle"], "warming");
}

#[cfg(not(feature = "kube"))]
#[test]
fn without_the_kubernetes_client_a_k8s_environments_credentials_are_refused_but_shown() {
    // Proves a gtc built without the Kubernetes client (no feature `kube`,
    // as in the container image) refuses `credentials requirements`,
    // `bootstrap` and `rotate` of a Kubernetes-bound environment as not
    // implemented (exit 2) with the fix, before the admin material or any
    // kubeconfig is read, and writes nothing but the audit of each refusal;
    // `credentials show`, which reads only the store, still answers.
    let home = Home::new();
    assert_eq!(home.gtc(&["op", "env", "init"]).code, 0);
    bind_deployer(&home, "greentic.deployer.k8s@1.0.0");
    let material = home.write("admin-kubeconfig", "not: [a kubeconfig");
    let before = home.snapshot();
    let with_material = json!({
        "environment_id": "local",
        "admin_material_path": material.to_str().expect("utf8"),
    });
    for (verb, answers) in [
        ("requirements", json!({"environment_id": "local"})),
        ("bootstrap", with_material.clone()),
        ("rotate", with_material),
    ] {
        let run = home.mutate("credentials", verb, answers);
        assert_eq!(run.code, 2, "{verb}: {}", run.stdout);
        assert_eq!(run.error_kind(), "not-yet-implemented", "{verb}");
        assert_eq!(
            run.error_message(),
            "this gtc was built without the Kubernetes client (cargo feature `kube`), so it cannot check, bootstrap or rotate a Kubernetes deployer's credentials; run `gtc op credentials requirements|bootstrap|rotate` for this environment from a full build (`gtc op credentials show` works in any); nothing was changed",
            "{verb}"
        );
        let audited: Value =
            serde_json::from_str(home.audit_lines("local").last().expect("audited")).expect("json");
        assert_eq!(
            (audited["noun"].as_str(), audited["verb"].as_str()),
            (Some("credentials"), Some(verb))
        );
        assert_eq!(audited["result"]["outcome"], "error", "{verb}");
        assert_eq!(audited["result"]["kind"], "not-yet-implemented", "{verb}");
    }
    assert_only_the_audit_log_changed(&home, &before, "only the audit log records the refusals");
    let shown = home.gtc(&["op", "credentials", "show", "local"]);
    assert_eq!(shown.code, 0, "{}", shown.stdout);
    assert_eq!(shown.stdout["result"]["credentials"], Value::Null);
}

/// Of the store's files, only the local audit log differs from `before`.
fn assert_only_the_audit_log_changed(home: &Home, before: &BTreeMap<PathBuf, Vec<u8>>, what: &str) {
    let after = home.snapshot();
    let changed: Vec<_> = after
        .keys()
        .filter(|path| before.get(*path) != after.get(*path))
        .collect();
    assert_eq!(
        changed,
        [&PathBuf::from("local/audit/events.jsonl")],
        "{what}"
    );
}
