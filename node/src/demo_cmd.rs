//! `gtc demo`: the whole product in one command. It starts a node on a
//! fresh temporary store, builds and deploys two revisions of the example
//! bundle, splits traffic 90/10, measures the split, shifts to 0/100 under
//! load without dropping a request, and stops (or keeps running with
//! `--keep`). With `--rollout` it runs two rollouts on that node instead
//! (`demo_rollout`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
use hyper_util::rt::TokioExecutor;
use store::EnvironmentStore;

use crate::cli::{DemoArgs, LogFormat, NodeRunArgs};
use crate::context::Context;
use crate::error::CliError;
use crate::node_cmd::RunningNode;

/// How long the demo waits for revisions to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Concurrent clients while measuring.
const CLIENTS: usize = 8;
/// Load duration after the traffic shift, to show nothing is dropped.
const SHIFT_LOAD: Duration = Duration::from_millis(1500);
/// The observed split may differ from the desired one by this much (points).
const SPLIT_TOLERANCE_PERCENT: f64 = 1.0;

pub(crate) type HttpClient = Client<HttpConnector, Empty<Bytes>>;

pub(crate) fn fail(message: impl Into<String>) -> CliError {
    CliError::new(ErrorKind::Store, message)
}

/// The example service binary shipped with gtc (built from `examples/demo-service`).
fn demo_service_binary() -> Result<PathBuf, CliError> {
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

fn build_example(work: &Path, version: &str, service: &Path) -> Result<PathBuf, CliError> {
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

/// Sends `total` requests from `CLIENTS` concurrent clients; counts by revision.
async fn measure(client: &HttpClient, addr: SocketAddr, total: u64) -> (HashMap<String, u64>, u64) {
    let counts = Arc::new(std::sync::Mutex::new(HashMap::new()));
    let failed = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (client, counts, failed, next) = (
            client.clone(),
            Arc::clone(&counts),
            Arc::clone(&failed),
            Arc::clone(&next),
        );
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < total {
                match request(&client, addr).await {
                    Ok((200, (revision, _))) => {
                        if let Ok(mut counts) = counts.lock() {
                            *counts.entry(revision).or_insert(0) += 1;
                        }
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let counts = counts.lock().map(|c| c.clone()).unwrap_or_default();
    (counts, failed.load(Ordering::Relaxed))
}

/// Runs the demo.
pub fn run(args: DemoArgs) -> Result<i32, CliError> {
    crate::node_cmd::init_tracing(LogFormat::Human);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: DemoArgs) -> Result<i32, CliError> {
    let service = demo_service_binary()?;
    let work = tempfile::Builder::new()
        .prefix("gtc-demo-")
        .tempdir()
        .map_err(|e| fail(format!("cannot create a temporary folder: {e}")))?;
    let store_root = work.path().join("environments");
    crate::output::outln!("gtc demo: a fresh store in {}", work.path().display());
    let bundles = [
        build_example(work.path(), "v1", &service)?,
        build_example(work.path(), "v2", &service)?,
    ];
    crate::output::outln!(
        "built two revisions of the example bundle: {}, {}",
        bundles[0].display(),
        bundles[1].display()
    );

    let metrics = crate::node_cmd::install_metrics()?;
    let node_args = NodeRunArgs {
        env: "local".to_owned(),
        listen: Some(args.listen),
        admin: args.admin,
        log_format: LogFormat::Human,
        poll_ms: 50,
        name: Some("demo".to_owned()),
        limits: crate::cli::ConnectionLimitArgs::default(),
        upstream_connect_timeout_ms: router::proxy::DEFAULT_CONNECT_TIMEOUT.as_millis() as u64,
        upstream_first_byte_timeout_ms: router::proxy::DEFAULT_FIRST_BYTE_TIMEOUT.as_millis()
            as u64,
        upstream_response_timeout_ms: 30_000,
        hold_requests: 0,
        hold_wait_ms: 30_000,
        store_root: Some(store_root.clone()),
        cluster_dir: None,
        raft_listen: None,
        join: None,
        gossip_listen: None,
        gossip_seed: Vec::new(),
        capacity: 16,
        instance_host: None,
        no_bootstrap: false,
        identity_dir: None,
        admin_tls_cert: None,
        admin_tls_key: None,
        admin_tokens: None,
        raft_heartbeat_ms: consensus::RaftSettings::default().heartbeat_interval_ms,
        raft_election_timeout_ms: String::new(),
        otlp_endpoint: None,
    };
    let node = RunningNode::start(&node_args, Some(store_root.clone()), metrics).await?;
    let outcome = if args.rollout {
        crate::demo_rollout::drive(&node, &store_root, work.path(), &bundles, &service).await
    } else if args.autoscale {
        crate::demo_autoscale::drive(&node, &store_root, work.path(), &service).await
    } else {
        drive(&node, &store_root, &bundles, args.requests).await
    };
    if args.keep && outcome.is_ok() {
        crate::output::outln!(
            "\nkept running: traffic on http://{} , metrics on http://{}/metrics ; Ctrl-C to stop",
            node.router_addr,
            node.admin_addr
        );
        let _ = work.keep();
        crate::node_cmd::wait_for_signal().await;
    }
    node.stop().await;
    outcome
}

async fn drive(
    node: &RunningNode,
    store_root: &Path,
    bundles: &[PathBuf; 2],
    requests: u64,
) -> Result<i32, CliError> {
    let context = Context::open(Some(store_root.to_owned()))?;
    let (deployment, [v1, v2]) = deploy_two_revisions(&context, bundles)?;
    crate::output::outln!(
        "deployment {deployment}: revision v1 {v1}, revision v2 {v2}; warming (2 instances each)..."
    );
    wait_ready(&context, &[v1, v2]).await?;
    let client: HttpClient = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let addr = node.router_addr;

    let generation = split(&context, deployment, "demo-90-10", &[(v1, 90), (v2, 10)])?;
    wait_generation(&client, addr, generation).await?;
    let (counts, failed) = measure(&client, addr, requests).await;
    crate::output::outln!("\nsplit 90/10 (generation {generation}), {requests} requests:");
    crate::output::outln!(
        "  {:<28} {:>8} {:>9} {:>9}",
        "revision",
        "desired",
        "observed",
        "requests"
    );
    let mut off_target = false;
    for (label, revision, desired) in [("v1", v1, 90.0), ("v2", v2, 10.0)] {
        let served = counts.get(&revision.to_string()).copied().unwrap_or(0);
        let observed = 100.0 * served as f64 / requests.max(1) as f64;
        off_target |= (observed - desired).abs() > SPLIT_TOLERANCE_PERCENT;
        crate::output::outln!(
            "  {:<28} {:>7.2}% {:>8.2}% {:>9}",
            format!("{label} {revision}"),
            desired,
            observed,
            served
        );
    }
    crate::output::outln!("  failed requests: {failed}");

    // Shift everything to v2 while clients keep sending.
    let stop = Arc::new(AtomicBool::new(false));
    let shifted_failures = Arc::new(AtomicU64::new(0));
    let shifted_total = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for _ in 0..CLIENTS / 2 {
        let (client, stop, failures, total) = (
            client.clone(),
            Arc::clone(&stop),
            Arc::clone(&shifted_failures),
            Arc::clone(&shifted_total),
        );
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                total.fetch_add(1, Ordering::Relaxed);
                if !matches!(request(&client, addr).await, Ok((200, _))) {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let shifted = split(&context, deployment, "demo-0-100", &[(v1, 0), (v2, 100)])?;
    wait_generation(&client, addr, shifted).await?;
    tokio::time::sleep(SHIFT_LOAD).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        let _ = task.await;
    }
    let (after, _) = measure(&client, addr, 200).await;
    let all_v2 = after.get(&v2.to_string()).copied().unwrap_or(0) == 200;
    let dropped = shifted_failures.load(Ordering::Relaxed);
    crate::output::outln!(
        "\nshifted to 0/100 (generation {shifted}) under load: {} requests, {dropped} failed; afterwards {} of 200 went to v2",
        shifted_total.load(Ordering::Relaxed),
        after.get(&v2.to_string()).copied().unwrap_or(0)
    );
    let healthy = !off_target && failed == 0 && dropped == 0 && all_v2;
    crate::output::outln!(
        "\n{}",
        if healthy {
            "demo OK"
        } else {
            "demo FAILED: see the figures above"
        }
    );
    Ok(if healthy {
        0
    } else {
        crate::error::EXIT_FAILURE
    })
}
