//! The render's rules, driven through its public function on the fixture
//! environment (`common`): determinism, the router's floor, which revisions
//! get a worker, the refusals, and that no secret value is ever rendered.

mod common;

use deploy::lifecycle::Lifecycle;
use k8s_deployer::names::worker_name;
use k8s_deployer::{ALL_FILE_NAME, RenderError, Rendered, render};

fn documents(rendered: &Rendered) -> Vec<serde_json::Value> {
    rendered
        .files
        .iter()
        .map(|(name, yaml)| serde_norway::from_str(yaml).unwrap_or_else(|e| panic!("{name}: {e}")))
        .collect()
}

fn of_kind<'a>(documents: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    documents.iter().filter(|d| d["kind"] == kind).collect()
}

#[test]
fn rendering_twice_gives_identical_bytes() {
    // Proves the render is deterministic: two renders of equal inputs (the
    // environment built twice, from scratch) are byte-identical.
    let first = render(&common::environment(), &common::options()).expect("render");
    let second = render(&common::environment(), &common::options()).expect("render");
    assert_eq!(first, second);
    assert!(!first.all.is_empty());
    // all.yaml is exactly the files, in order, as separate documents.
    let joined: Vec<&str> = first.files.iter().map(|(_, yaml)| yaml.as_str()).collect();
    assert_eq!(first.all, joined.join("---\n"));
    assert!(
        first.file(ALL_FILE_NAME).is_none(),
        "all.yaml is not a per-object file"
    );
}

#[test]
fn the_objects_are_the_files_as_json_in_the_same_order() {
    // Proves `Rendered::objects` (what the apply path sends) holds exactly
    // the documents of the files, in their order, the namespace first, so
    // what is applied is what `--render` writes.
    let rendered = render(&common::environment(), &common::options()).expect("render");
    assert_eq!(rendered.objects.len(), rendered.files.len());
    assert_eq!(rendered.objects, documents(&rendered));
    assert_eq!(rendered.objects[0]["kind"], "Namespace");
}

#[test]
fn the_router_is_refused_below_two_replicas() {
    // Proves router_replicas 0 and 1 are refused and 2 renders 2 replicas.
    let environment = common::environment();
    for replicas in [0, 1] {
        let mut options = common::options();
        options.router_replicas = replicas;
        assert_eq!(
            render(&environment, &options),
            Err(RenderError::RouterReplicas { replicas })
        );
    }
    let rendered = render(&environment, &common::options()).expect("render");
    let documents = documents(&rendered);
    let router = of_kind(&documents, "Deployment")
        .into_iter()
        .find(|d| d["metadata"]["name"] == "gtc-router")
        .expect("router deployment");
    assert_eq!(router["spec"]["replicas"], 2);
}

#[test]
fn one_worker_per_active_revision_with_its_committed_count() {
    // Proves warming/ready revisions get a worker Deployment and Service
    // with their instance count, and staged, archived, inactive and
    // nothing-to-run revisions get none.
    let rendered = render(&common::environment(), &common::options()).expect("render");
    let documents = documents(&rendered);
    let workers: Vec<(String, i64)> = of_kind(&documents, "Deployment")
        .into_iter()
        .filter(|d| d["metadata"]["name"] != "gtc-router")
        .map(|d| {
            let name = d["metadata"]["name"].as_str().expect("name").to_owned();
            (name, d["spec"]["replicas"].as_i64().expect("replicas"))
        })
        .collect();
    let expected: Vec<(String, i64)> = [(1, 2), (2, 3), (5, 1)]
        .into_iter()
        .map(|(n, replicas)| (worker_name(common::revision(n)).expect("name"), replicas))
        .collect();
    assert_eq!(workers, expected);
    let services: Vec<&str> = of_kind(&documents, "Service")
        .into_iter()
        .map(|d| d["metadata"]["name"].as_str().expect("name"))
        .collect();
    assert_eq!(services.len(), 1 + common::active().len());
    for (name, _) in &expected {
        assert!(services.contains(&name.as_str()), "{name} has a Service");
    }
    // Budgets: the router's, and the workers with more than one replica.
    let budgets: Vec<&str> = of_kind(&documents, "PodDisruptionBudget")
        .into_iter()
        .map(|d| d["metadata"]["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        budgets,
        vec![
            "gtc-router".to_owned(),
            expected[0].0.clone(),
            expected[1].0.clone()
        ]
    );
}

#[test]
fn a_draining_revision_keeps_its_worker() {
    // Proves draining counts as active: it still finishes in-flight requests.
    let mut environment = common::environment();
    let drained = environment
        .revisions
        .iter_mut()
        .find(|r| r.revision_id == common::revision(6))
        .expect("r6");
    assert_eq!(drained.lifecycle, Lifecycle::Inactive);
    drained.lifecycle = Lifecycle::Draining;
    let rendered = render(&environment, &common::options()).expect("render");
    let name = worker_name(common::revision(6)).expect("name");
    assert!(
        rendered
            .file(&format!("50-deployment-{name}.yaml"))
            .is_some()
    );
}

#[test]
fn a_missing_worker_image_names_the_revision() {
    // Proves an active revision without an image is refused, by id.
    let mut options = common::options();
    options.worker_images.remove(&common::revision(5));
    assert_eq!(
        render(&common::environment(), &options),
        Err(RenderError::MissingWorkerImage {
            revision_id: common::revision(5),
            lifecycle: Lifecycle::Warming,
        })
    );
    // An image for a revision with no worker is not needed.
    let mut options = common::options();
    options.worker_images.remove(&common::revision(3));
    assert!(render(&common::environment(), &options).is_ok());
    // A worker image must be pinned by digest.
    let mut options = common::options();
    options.worker_images.insert(
        common::revision(1),
        "registry.example/shop:latest".to_owned(),
    );
    assert!(matches!(
        render(&common::environment(), &options),
        Err(RenderError::ImageNotPinned { .. })
    ));
}

#[test]
fn an_env_id_that_makes_no_namespace_is_refused() {
    // Proves a valid store env id that breaks the namespace grammar is refused,
    // naming the namespace and its fix.
    let mut environment = deploy::environment::Environment::new(
        "Prod_EU".parse().expect("env id"),
        "prod".to_owned(),
    );
    environment.host_config.env_id = environment.environment_id.clone();
    match render(&environment, &common::options()) {
        Err(RenderError::InvalidName {
            kind, name, fix, ..
        }) => {
            assert_eq!((kind, name.as_str()), ("Namespace", "gtc-Prod_EU"));
            assert!(fix.contains("lowercase"), "{fix}");
        }
        other => panic!("expected InvalidName, got {other:?}"),
    }
    let long: String = "p".repeat(60);
    let environment =
        deploy::environment::Environment::new(long.parse().expect("env id"), "long".to_owned());
    assert!(matches!(
        render(&environment, &common::options()),
        Err(RenderError::InvalidName {
            kind: "Namespace",
            ..
        })
    ));
}

#[test]
fn no_secret_value_is_rendered() {
    // Proves gtc-dev-secrets holds one empty value per ref the environment
    // names and nothing else; the one active api worker's Secret holds one
    // empty value per pinned secret, its annotation naming each pin's ref
    // and exact version; and no rendered file carries secret data.
    let rendered = render(&common::environment(), &common::options()).expect("render");
    let documents = documents(&rendered);
    let secrets = of_kind(&documents, "Secret");
    assert_eq!(secrets.len(), 2);
    for secret in &secrets {
        assert!(secret.get("stringData").is_none());
        let data = secret["data"].as_object().expect("data");
        assert!(data.values().all(|value| value == ""), "{data:?}");
    }
    let secret = secrets
        .iter()
        .find(|s| s["metadata"]["name"] == "gtc-dev-secrets")
        .expect("gtc-dev-secrets");
    let data = secret["data"].as_object().expect("data");
    let keys: Vec<&str> = data.keys().map(String::as_str).collect();
    assert_eq!(keys, vec!["api.token", "cloud.credentials", "db.password"]);
    let worker = secrets
        .iter()
        .find(|s| s["metadata"]["name"] != "gtc-dev-secrets")
        .expect("the worker's Secret");
    let name = worker["metadata"]["name"].as_str().expect("name");
    let prefix = name
        .strip_prefix("gtc-worker-")
        .and_then(|rest| rest.strip_suffix("-secrets"))
        .expect("gtc-worker-<rev>-secrets");
    let worker_keys: Vec<&str> = worker["data"]
        .as_object()
        .expect("data")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        worker_keys,
        vec![
            format!("{prefix}.env.DB_PASSWORD"),
            format!("{prefix}.file.db_password")
        ]
    );
    let pins: serde_json::Value = serde_json::from_str(
        worker["metadata"]["annotations"]["greentic.ai/secret-pins"]
            .as_str()
            .expect("annotation"),
    )
    .expect("json");
    assert_eq!(
        pins[format!("{prefix}.file.db_password")],
        serde_json::json!({"ref": "secret://prod/db/password", "version": 1})
    );
    assert_eq!(
        pins[format!("{prefix}.env.DB_PASSWORD")]["ref"],
        "secret://prod/db/password"
    );
    let refs: serde_json::Value = serde_json::from_str(
        secret["metadata"]["annotations"]["greentic.ai/secret-refs"]
            .as_str()
            .expect("annotation"),
    )
    .expect("json");
    assert_eq!(
        refs,
        serde_json::json!({"api.token": common::API_TOKEN_REF, "cloud.credentials": common::CREDENTIALS_REF, "db.password": "secret://prod/db/password"})
    );
    // No other object carries secret material.
    for document in &documents {
        if document["kind"] != "Secret" {
            assert!(document.get("data").is_none() || document["kind"] == "ConfigMap");
        }
    }
}

#[test]
fn an_invalid_environment_is_not_rendered() {
    // Proves the render validates the document first.
    let mut environment = common::environment();
    environment.schema = "something.else".to_owned();
    assert!(matches!(
        render(&environment, &common::options()),
        Err(RenderError::InvalidEnvironment(_))
    ));
}

#[test]
fn the_runtime_config_carries_the_splits_in_basis_points() {
    // Proves the runtime-config ConfigMap holds each split entry's weight.
    let rendered = render(&common::environment(), &common::options()).expect("render");
    let documents = documents(&rendered);
    let config = of_kind(&documents, "ConfigMap")
        .into_iter()
        .find(|d| d["metadata"]["name"] == "gtc-runtime-config")
        .expect("configmap");
    let runtime: serde_json::Value = serde_json::from_str(
        config["data"]["runtime-config.json"]
            .as_str()
            .expect("json"),
    )
    .expect("json");
    assert_eq!(runtime["schema"], "greentic.runtime-config.v1");
    let weights: Vec<(String, u64)> = runtime["revisions"]
        .as_array()
        .expect("revisions")
        .iter()
        .map(|r| {
            (
                r["revision_id"].as_str().expect("id").to_owned(),
                r["weight_bps"].as_u64().expect("bps"),
            )
        })
        .collect();
    assert_eq!(
        weights,
        vec![
            (common::revision(1).to_string(), 9_000),
            (common::revision(2).to_string(), 1_000)
        ]
    );
}
