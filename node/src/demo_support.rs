//! What `gtc demo` and its `--rollout` and `--autoscale` modes share: the
//! example bundle, deploying and warming it, splits, waiting for the router,
//! and the HTTP client that measures what the router answers. A leaf: the
//! demos use it, it uses none of them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bundle::build::{BuildOptions, build};
use bundle::scan::Allowlist;
use bytes::Bytes;
use deploy::command::{
    BundleAddAnswers, Command, RevisionAnswers, RevisionStageAnswers, TrafficEntryAnswers,
    TrafficSetAnswers,
};
use deploy::error::ErrorKind;
use deploy::ids::{DeploymentId, EnvId, RevisionId};
use deploy::lifecycle::Lifecycle;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use store::EnvironmentStore;

use crate::context::Context;
use crate::error::CliError;

/// How long the demo waits for revisions to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) type HttpClient = Client<HttpConnector, Empty<Bytes>>;

pub(crate) fn fail(message: impl Into<String>) -> CliError {
    CliError::new(ErrorKind::Store, message)
}

/// The example service binary shipped with gtc (built from `examples/demo-service`).
pub(crate) fn demo_service_binary() -> Result<PathBuf, CliError> {
    let exe = std::env::current_exe()
        .map_err(|e| fail(format!("cannot find the gtc executable: {e}")))?;
    let candidate = exe.with_file_name("demo-service");
    if candidate.is_file() {
        return Ok(candidate);
    }
    Err(CliError::new(
        ErrorKind::NotFound,
        format!(
            "the example service is not built next to {}: run `cargo build --release --workspace` (or `bash scripts/demo.sh`, which does)",
            exe.display()
        ),
    ))
}

/// Writes the example bundle's source folder for `version`, its runtime
/// given `env` besides `DEMO_VERSION`.
fn example_tree(
    dir: &Path,
    version: &str,
    service: &Path,
    env: &[(&str, &str)],
    runtime_tail: &str,
) -> Result<(), CliError> {
    let io = |e: std::io::Error| {
        fail(format!(
            "cannot write the example bundle in {}: {e}",
            dir.display()
        ))
    };
    std::fs::create_dir_all(dir.join("bin")).map_err(io)?;
    std::fs::create_dir_all(dir.join("packs")).map_err(io)?;
    std::fs::copy(service, dir.join("bin/server")).map_err(io)?;
    let extra_env: String = env
        .iter()
        .map(|(name, value)| format!("    {name}: \"{value}\"\n"))
        .collect();
    let manifest = format!(
        "schema_version: 1\nbundle_id: gtc-demo\nbundle_name: gtc demo ({version})\nruntime:\n  command: [bin/server]\n  env:\n    DEMO_VERSION: {version}\n{extra_env}  health_path: /healthz\n{runtime_tail}"
    );
    std::fs::write(dir.join("bundle.yaml"), manifest).map_err(io)?;
    // An empty ZIP stands in for the app pack: the runtime set must not be empty.
    let empty_zip = [
        b'P', b'K', 5, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    std::fs::write(dir.join("packs/demo.gtpack"), empty_zip).map_err(io)
}

pub(crate) fn build_example(
    work: &Path,
    version: &str,
    service: &Path,
) -> Result<PathBuf, CliError> {
    build_example_with_env(work, version, service, &[])
}

/// The example bundle for `version` whose runtime also gets `env`.
pub(crate) fn build_example_with_env(
    work: &Path,
    version: &str,
    service: &Path,
    env: &[(&str, &str)],
) -> Result<PathBuf, CliError> {
    build_example_with_runtime(work, version, service, env, "  instances: 2\n")
}

/// The example bundle for `version` whose runtime section ends with
/// `runtime_tail` (YAML lines indented by two spaces) instead of two
/// instances.
pub(crate) fn build_example_with_runtime(
    work: &Path,
    version: &str,
    service: &Path,
    env: &[(&str, &str)],
    runtime_tail: &str,
) -> Result<PathBuf, CliError> {
    let source = work.join(format!("src-{version}"));
    example_tree(&source, version, service, env, runtime_tail)?;
    let out = work.join(format!("gtc-demo-{version}.gtbundle"));
    let options = BuildOptions {
        format: bundle::BundleFormat::Squashfs,
        allowlist: Allowlist::empty(),
    };
    build(&source, &out, options, &mut |_, _| {})
        .map_err(|e| fail(format!("building the example bundle failed: {e}")))?;
    Ok(out)
}

fn id_of<T: std::str::FromStr>(value: &serde_json::Value, key: &str) -> Result<T, CliError> {
    value[key]
        .as_str()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| fail(format!("the answer has no {key}: {value}")))
}

pub(crate) fn deploy_two_revisions(
    context: &Context,
    bundles: &[PathBuf; 2],
) -> Result<(DeploymentId, [RevisionId; 2]), CliError> {
    let deployment = add_deployment(context)?;
    let first = stage_and_warm(context, deployment, &bundles[0])?;
    let second = stage_and_warm(context, deployment, &bundles[1])?;
    Ok((deployment, [first, second]))
}

/// Adds the demo's deployment (bundle `gtc-demo`, any host, `/`).
pub(crate) fn add_deployment(context: &Context) -> Result<DeploymentId, CliError> {
    let added = context.submit(Command::BundleAdd(BundleAddAnswers {
        environment_id: EnvId::local(),
        bundle_id: "gtc-demo".parse().map_err(|_| fail("bad demo bundle id"))?,
        customer_id: None,
        route_binding: Default::default(),
        revenue_share: None,
        authorization_ref: None,
        config_overrides: None,
        idempotency_key: None,
    }))?;
    id_of(&added.result, "deployment_id")
}

/// Stages `bundle` as a new revision of `deployment` and asks for it warm.
pub(crate) fn stage_and_warm(
    context: &Context,
    deployment: DeploymentId,
    bundle: &Path,
) -> Result<RevisionId, CliError> {
    let answers = RevisionStageAnswers {
        drain_seconds: Some(5),
        bundle_path: Some(bundle.display().to_string()),
        ..RevisionStageAnswers::new(EnvId::local(), deployment)
    };
    let staged =
        crate::bundle_cmd::stage_revision(context, answers, &bundle.display().to_string())?;
    let revision: RevisionId = id_of(&staged.result, "revision_id")?;
    let warm = RevisionAnswers {
        environment_id: EnvId::local(),
        revision_id: revision,
        idempotency_key: None,
    };
    let failed_checks = context.warm_checks(&warm)?;
    context.submit(Command::RevisionWarm {
        answers: warm,
        failed_checks,
    })?;
    Ok(revision)
}

pub(crate) async fn wait_ready(
    context: &Context,
    revisions: &[RevisionId],
) -> Result<(), CliError> {
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        let state = context
            .store
            .load(&EnvId::local())?
            .ok_or_else(|| fail("the local environment vanished"))?;
        let lifecycles: Vec<Lifecycle> = revisions
            .iter()
            .filter_map(|id| state.environment.revision(*id).map(|r| r.lifecycle))
            .collect();
        if lifecycles.iter().all(|l| *l == Lifecycle::Ready) {
            return Ok(());
        }
        if let Some(failed) = state
            .environment
            .revisions
            .iter()
            .find(|r| revisions.contains(&r.revision_id) && r.lifecycle == Lifecycle::Failed)
        {
            return Err(fail(format!(
                "revision {} failed to warm: {}",
                failed.revision_id,
                failed.failure_reason.clone().unwrap_or_default()
            )));
        }
        if tokio::time::Instant::now() > deadline {
            return Err(fail(format!(
                "revisions were not ready within {READY_TIMEOUT:?}: {lifecycles:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) fn split(
    context: &Context,
    deployment: DeploymentId,
    key: &str,
    weights: &[(RevisionId, u32)],
) -> Result<u64, CliError> {
    let report = context.submit(Command::TrafficSet(TrafficSetAnswers {
        environment_id: EnvId::local(),
        deployment_id: deployment,
        entries: weights
            .iter()
            .map(|(revision, percent)| TrafficEntryAnswers {
                revision_id: revision.to_string(),
                weight_bps: None,
                weight_percent: Some(f64::from(*percent)),
                tag: None,
            })
            .collect(),
        updated_by: Some("gtc demo".to_owned()),
        idempotency_key: key.to_owned(),
        authorization_ref: None,
    }))?;
    report
        .generation
        .ok_or_else(|| fail("traffic set returned no generation"))
}

/// Waits until the router serves `generation` (read from its answers).
pub(crate) async fn wait_generation(
    client: &HttpClient,
    addr: SocketAddr,
    generation: u64,
) -> Result<(), CliError> {
    for _ in 0..200 {
        if let Ok((_, served)) = request(client, addr).await
            && served.1 >= generation
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Err(fail(format!(
        "the router did not reach generation {generation} within 5 s"
    )))
}

/// One request: (status, (revision served, generation)).
pub(crate) async fn request(
    client: &HttpClient,
    addr: SocketAddr,
) -> Result<(u16, (String, u64)), String> {
    request_path(client, addr, "/").await
}

/// One request for `path`: (status, (revision served, generation)).
pub(crate) async fn request_path(
    client: &HttpClient,
    addr: SocketAddr,
    path: &str,
) -> Result<(u16, (String, u64)), String> {
    let uri = format!("http://{addr}{path}")
        .parse::<hyper::Uri>()
        .map_err(|e| e.to_string())?;
    let response = client.get(uri).await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let revision = header("x-greentic-revision");
    let generation = header("x-greentic-generation").parse().unwrap_or(0);
    response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok((status, (revision, generation)))
}
