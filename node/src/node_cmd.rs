//! `gtc node run`: one node on the embedded default. It follows the
//! committed state of one environment, runs its revisions' instances,
//! serves live traffic through the router, and answers health and status
//! on an admin listener. It stops cleanly on SIGINT or SIGTERM.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actors::{NodeContext, NodeHandle};
use deploy::error::ErrorKind;
use deploy::ids::EnvId;
use router::RouteTable;
use router::proxy::{ProxyConfig, Published, Router};
use router::span_export::{SpanExport, SpanExportConfig};
use router::sticky::StickyKey;
use store::{EnvironmentStore, LocalFsStore};

use crate::admin::AdminState;
use tokio::net::TcpListener;

use crate::cli::{LogFormat, NodeRunArgs};
use crate::error::CliError;
use crate::node_client::NODE_FILE;

/// The router's listener when the environment names none.
const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GTC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// The sticky-cookie key of this environment, made once and kept so that
/// cookies survive a node restart.
fn sticky_key(env_dir: &Path) -> Result<StickyKey, CliError> {
    let path = env_dir.join("node").join("sticky.key");
    let io = |what: &str, error: std::io::Error| {
        CliError::new(ErrorKind::Io, format!("{what} {}: {error}", path.display()))
    };
    if let Ok(bytes) = std::fs::read(&path)
        && let Ok(key) = <[u8; 32]>::try_from(bytes.as_slice())
    {
        return Ok(StickyKey::new(key));
    }
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut key))
        .map_err(|e| io("cannot read random bytes for", e))?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io("cannot create the folder of", e))?;
    }
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io("cannot write", e))?;
        file.write_all(&key).map_err(|e| io("cannot write", e))?;
    }
    Ok(StickyKey::new(key))
}

async fn bind(addr: SocketAddr, what: &str, hint: &str) -> Result<TcpListener, CliError> {
    TcpListener::bind(addr).await.map_err(|error| {
        let reason = if error.kind() == std::io::ErrorKind::AddrInUse {
            format!(
                "port {} on {} is already in use by another process",
                addr.port(),
                addr.ip()
            )
        } else {
            error.to_string()
        };
        CliError::new(
            ErrorKind::Io,
            format!("cannot listen for {what} on {addr}: {reason}; {hint}"),
        )
    })
}

/// Where instances listen (see `--instance-host`): loopback on a single
/// node; a cluster member's Raft IP, which its peers already reach, unless
/// that is a wildcard address, which names no one interface.
fn instance_host(args: &NodeRunArgs) -> std::net::IpAddr {
    let loopback = std::net::IpAddr::from([127, 0, 0, 1]);
    match (
        args.instance_host,
        args.cluster_dir.as_ref().and(args.raft_listen),
    ) {
        (Some(host), _) => host,
        (None, Some(raft)) if !raft.ip().is_unspecified() => raft.ip(),
        (None, Some(raft)) => {
            tracing::warn!(%raft, "--raft-listen is a wildcard address: instances listen on 127.0.0.1 and other members' routers cannot reach them; set --instance-host");
            loopback
        }
        (None, None) => loopback,
    }
}

/// The admin API's TLS acceptor when a certificate and key are given.
fn admin_tls(args: &NodeRunArgs) -> Result<Option<tokio_rustls::TlsAcceptor>, CliError> {
    match (&args.admin_tls_cert, &args.admin_tls_key) {
        (Some(cert), Some(key)) => Ok(Some(tokio_rustls::TlsAcceptor::from(
            crate::admin::tls::server_config(cert, key)?,
        ))),
        (None, None) => Ok(None),
        _ => Err(CliError::invalid(
            "--admin-tls-cert and --admin-tls-key go together: pass both to serve the admin API over HTTPS",
        )),
    }
}

/// Runs a node until SIGINT or SIGTERM.
pub fn run(args: NodeRunArgs, store_root: Option<PathBuf>) -> Result<(), CliError> {
    init_tracing(args.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            CliError::new(
                ErrorKind::Io,
                format!("cannot start the async runtime: {e}"),
            )
        })?;
    runtime.block_on(run_async(args, store_root))
}

/// Latency buckets in seconds: from a fast local proxy hop to a slow request.
const LATENCY_BUCKETS_SECONDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

pub fn install_metrics() -> Result<metrics_exporter_prometheus::PrometheusHandle, CliError> {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(&LATENCY_BUCKETS_SECONDS)
        .and_then(|builder| builder.install_recorder())
        .map_err(|e| CliError::new(ErrorKind::Io, format!("cannot set up metrics: {e}")))?;
    describe_metrics();
    Ok(handle)
}

/// Registers the HELP text and unit of every metric a node can emit, so
/// `/metrics` passes `promtool check metrics`. Each crate describes its own.
fn describe_metrics() {
    router::describe_metrics();
    actors::describe_metrics();
    consensus::describe_metrics();
    transport::describe_metrics();
    membership::describe_metrics();
    crate::gossip::describe_metrics();
    crate::rollout_controller::describe_metrics();
    crate::autoscaler::describe_metrics();
    crate::admin::console::describe_metrics();
    metrics_process::Collector::default().describe();
}

async fn run_async(args: NodeRunArgs, store_root: Option<PathBuf>) -> Result<(), CliError> {
    let metrics = install_metrics()?;
    let node = RunningNode::start(&args, store_root, metrics).await?;
    crate::output::outln!("{}", node.announcement);
    let stopped = tokio::select! {
        () = wait_for_signal() => None,
        reason = node.raft_stopped() => Some(reason),
    };
    if let Some(reason) = &stopped {
        tracing::error!(%reason, "this member's Raft core stopped; the node stops too");
    }
    node.stop().await;
    match stopped {
        None => Ok(()),
        Some(reason) => Err(CliError::new(
            ErrorKind::Store,
            format!(
                "this member's Raft core stopped ({reason}), so the node stopped: a member \
                 that cannot read or write its own log or replica must not go on serving. \
                 Fix what the error names (disk, permissions, a damaged file), then start \
                 the node again; a supervisor (systemd, Docker's restart policy, \
                 Kubernetes) starts it again by itself"
            ),
        )),
    }
}

/// A node started in this process: its listeners, actors and shutdown.
pub struct RunningNode {
    /// Gossip of a cluster member (dropping it stops gossip).
    gossip: Option<Arc<membership::Membership>>,
    /// The cluster member, stopped after the actors.
    cluster: Option<Arc<consensus::ClusterHandle>>,
    pub router_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub announcement: serde_json::Value,
    shutdown_tx: tokio::sync::watch::Sender<bool>,
    serving: tokio::task::JoinHandle<()>,
    admin: tokio::task::JoinHandle<()>,
    actors: NodeHandle,
    node_file: PathBuf,
    /// The member's announcement at the store root (cluster members only).
    root_node_file: Option<PathBuf>,
    /// The OTLP span exporter (`--otlp-endpoint`), flushed after the
    /// router has drained.
    span_export: Option<SpanExport>,
}

impl RunningNode {
    /// Waits until this cluster member's Raft core stops on its own (a
    /// storage error, a panic inside it), and says why; never returns on
    /// a single node.
    pub async fn raft_stopped(&self) -> String {
        match &self.cluster {
            Some(cluster) => cluster.stopped().await,
            None => std::future::pending().await,
        }
    }

    /// Starts listeners and actors for `args.env`.
    pub async fn start(
        args: &NodeRunArgs,
        store_root: Option<PathBuf>,
        metrics: metrics_exporter_prometheus::PrometheusHandle,
    ) -> Result<Self, CliError> {
        let store_root = match &args.cluster_dir {
            Some(dir) => Some(dir.join("environments")),
            None => store_root,
        };
        let context = crate::context::Context::open(store_root)?;
        let env_id: EnvId = crate::checks::parse_env(&args.env)?;
        let cluster = match &args.cluster_dir {
            Some(dir) => Some(start_cluster(args, dir, context.store.root()).await?),
            None => None,
        };
        // A single node's store says when it committed a change, so its
        // actors reconcile at once (an autoscaler decision, an operator's
        // command), as a member's do from its Raft state machine.
        let (store, local_changes): (Arc<dyn EnvironmentStore + Send + Sync>, _) = match &cluster {
            Some(cluster) => (
                Arc::new(consensus::ReplicatedStore::new(Arc::clone(cluster))),
                None,
            ),
            None => {
                let notifying =
                    store::Notifying::new(Arc::new(LocalFsStore::open(context.store.root())?));
                let changes = notifying.changes();
                (Arc::new(notifying), Some(changes))
            }
        };
        if let Some(cluster) = &cluster {
            ensure_cluster_environment(&context.checks, &env_id, &store, args, cluster).await?;
        } else if context.store.load(&env_id)?.is_none() {
            if env_id.is_local() {
                // The embedded default needs no setup step.
                context.submit(deploy::command::Command::EnvInit {
                    answers: Default::default(),
                    defaults: packs::default_bindings(),
                })?;
            } else {
                return Err(context.missing(&env_id));
            }
        }
        let state = context
            .store
            .load(&env_id)?
            .ok_or_else(|| context.missing(&env_id))?;
        let listen = args
            .listen
            .or(state.environment.host_config.listen_addr)
            .unwrap_or_else(|| {
                DEFAULT_LISTEN
                    .parse()
                    .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080)))
            });
        let env_dir = context.store.env_dir(&env_id);
        // A cluster member is named by its certificate: placements name it so.
        let node_name = match &cluster {
            Some(cluster) => cluster.node().name.clone(),
            None => match args.name.clone() {
                Some(name) => name,
                None => single_node_name(context.store.root())?,
            },
        };
        let span_export = start_span_export(args, &node_name)?;
        let config = ProxyConfig {
            span_export: span_export.as_ref().map(SpanExport::queue),
            admin_token: std::env::var("GTC_ADMIN_TOKEN")
                .ok()
                .filter(|t| !t.is_empty()),
            connections: args.limits.router(),
            connect_timeout: Duration::from_millis(args.upstream_connect_timeout_ms),
            response_timeout: Duration::from_millis(args.upstream_response_timeout_ms),
            first_byte_timeout: (args.upstream_first_byte_timeout_ms > 0)
                .then(|| Duration::from_millis(args.upstream_first_byte_timeout_ms)),
            hold: router::proxy::hold::HoldConfig {
                max_held: args.hold_requests,
                max_wait: Duration::from_millis(args.hold_wait_ms),
            },
            ..ProxyConfig::default()
        };
        let published = Published {
            table: RouteTable::build(&state),
            instances: Default::default(),
        };
        let router = Router::new(published, sticky_key(&env_dir)?, config);
        let hint = "stop the other process, or pass --listen, or change listen_addr with `gtc op env update`";
        let router_listener = bind(listen, "traffic", hint).await?;
        let admin_listener = bind(
            args.admin,
            "the admin API",
            "pass --admin with a free address",
        )
        .await?;
        let local = |listener: &TcpListener| {
            listener
                .local_addr()
                .map_err(|e| CliError::new(ErrorKind::Io, e.to_string()))
        };
        let router_addr = local(&router_listener)?;
        let admin_addr = local(&admin_listener)?;
        let token = random_token()?;
        let tls = admin_tls(args)?;
        let tokens_file = args
            .admin_tokens
            .clone()
            .unwrap_or_else(|| context.store.root().join(crate::admin::TOKENS_FILE));
        let local_store = Arc::new(LocalFsStore::open(context.store.root())?);
        let node_context = NodeContext {
            store: Arc::clone(&store),
            store_root: context.store.root().to_owned(),
            bundles_may_be_elsewhere: cluster.is_some(),
            env_id: env_id.clone(),
            router: Arc::clone(&router),
            node_name,
            bundle_fetcher: cluster.as_ref().map(|cluster| {
                Arc::new(crate::fetch::ClusterBundleFetcher {
                    cluster: Arc::clone(cluster),
                    store_root: context.store.root().to_owned(),
                    env_id: env_id.clone(),
                }) as Arc<dyn actors::BundleFetcher>
            }),
            poll_interval: Duration::from_millis(args.poll_ms),
            state_changes: cluster
                .as_ref()
                .map(|c| c.state_machine().watch_applied())
                .or(local_changes),
            instance_host: instance_host(args),
            deployers: node_deployers(),
        };
        let node_context_name = node_context.node_name.clone();
        let actors = NodeHandle::start(node_context).await.map_err(|e| {
            CliError::new(
                ErrorKind::Store,
                format!("cannot start the node's actors: {e}"),
            )
        })?;
        // Other members' request counts (from gossip), for rollout analysis.
        let remote_counts = crate::rollout_controller::RemoteCounts::default();
        // And their requests in flight, for the autoscaler.
        let remote_in_flight = crate::autoscaler::RemoteInFlight::default();
        let gossip = match (&cluster, args.gossip_listen, &args.cluster_dir) {
            (Some(cluster), Some(listen), Some(node_dir)) => {
                let facts = membership::NodeFacts {
                    capacity: Some(args.capacity),
                    admin_addr: Some(admin_addr),
                    raft_addr: cluster.node().raft_addr.parse().ok(),
                    router_addr: Some(router_addr),
                    ..Default::default()
                };
                let settings = crate::gossip::GossipSettings {
                    node_dir,
                    key_dir: args.identity_dir.as_deref().unwrap_or(node_dir),
                    node_name: cluster.node().name.clone(),
                    listen,
                    seeds: args.gossip_seed.clone(),
                    facts,
                    store: Arc::clone(&store),
                    env_id: env_id.clone(),
                    counts: Arc::clone(&remote_counts),
                    in_flight: Arc::clone(&remote_in_flight),
                    deployers: node_deployers().paths().map(str::to_owned).collect(),
                };
                Some(
                    crate::gossip::start(settings, Arc::clone(&router), Arc::clone(cluster))
                        .await?,
                )
            }
            _ => None,
        };
        let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
        let serving = tokio::spawn(Arc::clone(&router).serve(router_listener, shutdown_rx.clone()));
        tokio::spawn(
            crate::rollout_controller::Controller::new(
                Arc::clone(&store),
                env_id.clone(),
                cluster.clone(),
                Arc::clone(&router),
                remote_counts,
            )
            .run(shutdown_rx.clone()),
        );
        tokio::spawn(
            crate::autoscaler::Autoscaler::new(
                Arc::clone(&store),
                env_id.clone(),
                cluster.clone(),
                Arc::clone(&router),
                remote_in_flight,
            )
            .run(shutdown_rx.clone()),
        );
        let console_state =
            crate::admin::console::ConsoleState::new(node_context_name.clone(), gossip.clone());
        tokio::spawn(crate::admin::console::sample(
            crate::admin::console::Sampled {
                router: Arc::clone(&router),
                window: Arc::clone(&console_state.window),
                store: Arc::clone(&store),
                env_id: env_id.clone(),
            },
            shutdown_rx.clone(),
        ));
        let scheme = if tls.is_some() { "https" } else { "http" };
        let admin_state = Arc::new(AdminState {
            router: Arc::clone(&router),
            env_id: env_id.clone(),
            metrics,
            // Remote readers get linearizable reads; the actors above read as-is.
            store: match &cluster {
                Some(cluster) => {
                    Arc::new(consensus::ReplicatedStore::new(Arc::clone(cluster)).linearizable())
                }
                None => Arc::clone(&store),
            },
            cluster: cluster.clone(),
            local_store,
            node_token: token.clone(),
            tokens_file,
            checks: context.checks,
            console: console_state,
            limits: args.limits.admin(),
            body_timeout: Duration::from_millis(args.limits.body_timeout_ms),
        });
        let admin = tokio::spawn(crate::admin::serve(
            admin_listener,
            admin_state,
            tls,
            shutdown_rx,
        ));
        let node_file = env_dir.join(NODE_FILE);
        let announcement = serde_json::json!({"pid": std::process::id(), "listen": router_addr, "admin": admin_addr, "admin_scheme": scheme, "environment_id": env_id});
        write_node_file(&node_file, &announcement, &token)?;
        // A cluster member's store root is a replica of every environment:
        // announce the member there too, so a command on an environment
        // that has no folder yet (`env create`) goes through Raft instead
        // of being written to this replica alone.
        let root_node_file = match (&cluster, env_dir.parent()) {
            (Some(_), Some(root)) => {
                let path = root.join(NODE_FILE);
                write_node_file(&path, &announcement, &token)?;
                Some(path)
            }
            _ => None,
        };
        tracing::info!(env = %env_id, listen = %router_addr, admin = %admin_addr, "node running");
        Ok(Self {
            gossip,
            cluster,
            router_addr,
            admin_addr,
            announcement,
            shutdown_tx,
            serving,
            admin,
            actors,
            node_file,
            root_node_file,
            span_export,
        })
    }

    /// Stops accepting, lets in-flight requests finish, stops every instance.
    pub async fn stop(self) {
        tracing::info!(
            "shutting down: no new connections, draining in-flight requests, stopping instances"
        );
        let _ = self.shutdown_tx.send(true);
        let _ = self.serving.await;
        let _ = self.admin.await;
        if let Some(span_export) = self.span_export {
            // Flushing waits for the collector (bounded); off the runtime.
            let _ = tokio::task::spawn_blocking(move || span_export.shutdown()).await;
        }
        self.actors.stop().await;
        drop(self.gossip);
        if let Some(cluster) = self.cluster {
            cluster.shutdown().await;
        }
        let _ = std::fs::remove_file(&self.node_file);
        if let Some(path) = &self.root_node_file {
            let _ = std::fs::remove_file(path);
        }
        tracing::info!("node stopped");
    }
}

/// Starts the OTLP span exporter when `--otlp-endpoint` is given.
/// The file that keeps a single node's name across restarts, in the store root.
const NODE_NAME_FILE: &str = "node-name";

/// A single node's name when `--name` is not given: made once per store
/// (`node-<random>`) and kept in [`NODE_NAME_FILE`], so a node started
/// again on the same store is the same node. What it started carries the
/// name (a container's `greentic.node` label), and a restarted node reaps
/// and replaces only what it finds under its own name: a name that changed
/// with every start (the pid) left a SIGKILLed node's containers behind,
/// holding the names the new ones needed.
fn single_node_name(root: &std::path::Path) -> Result<String, CliError> {
    let path = root.join(NODE_NAME_FILE);
    let valid = |name: &str| {
        (1..=63).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
    };
    match std::fs::read_to_string(&path) {
        Ok(text) if valid(text.trim()) => return Ok(text.trim().to_owned()),
        Ok(text) => {
            return Err(CliError::new(
                ErrorKind::Store,
                format!(
                    "{} holds {:?}, which is not a node name (1 to 63 of A-Z a-z 0-9 . - _); fix it, or remove the file to make a new name",
                    path.display(),
                    text.trim()
                ),
            ));
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(CliError::new(
                ErrorKind::Io,
                format!("cannot read {}: {error}", path.display()),
            ));
        }
    }
    let name = format!(
        "node-{}",
        ulid::Ulid::new().to_string().to_ascii_lowercase()
    );
    std::fs::create_dir_all(root)
        .and_then(|()| {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)?;
            file.write_all(name.as_bytes())?;
            file.sync_all()
        })
        .or_else(|error| {
            // Another start made it first: use that one.
            if error.kind() == std::io::ErrorKind::AlreadyExists {
                Ok(())
            } else {
                Err(error)
            }
        })
        .map_err(|error| {
            CliError::new(
                ErrorKind::Io,
                format!("cannot write {}: {error}", path.display()),
            )
        })?;
    let text = std::fs::read_to_string(&path).map_err(|error| {
        CliError::new(
            ErrorKind::Io,
            format!("cannot read {}: {error}", path.display()),
        )
    })?;
    Ok(text.trim().to_owned())
}

fn start_span_export(args: &NodeRunArgs, node_name: &str) -> Result<Option<SpanExport>, CliError> {
    let Some(endpoint) = &args.otlp_endpoint else {
        return Ok(None);
    };
    SpanExport::start(SpanExportConfig {
        endpoint: endpoint.clone(),
        node_name: node_name.to_owned(),
    })
    .map(Some)
    .map_err(|e| CliError::new(ErrorKind::Io, e.to_string()))
}

/// How long `gtc node health` waits for the admin API.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(3);

/// `gtc node health`: 0 when `GET /healthz` answers 200, else 1 with the
/// reason on stderr.
pub fn health(admin: SocketAddr) -> i32 {
    use std::io::{Read, Write};
    let answer = (|| -> std::io::Result<String> {
        let mut stream = std::net::TcpStream::connect_timeout(&admin, HEALTH_TIMEOUT)?;
        stream.set_read_timeout(Some(HEALTH_TIMEOUT))?;
        write!(
            stream,
            "GET /healthz HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n"
        )?;
        let mut text = String::new();
        stream.read_to_string(&mut text)?;
        Ok(text)
    })();
    match answer {
        Ok(text) if text.starts_with("HTTP/1.1 200") => 0,
        Ok(text) => {
            crate::output::errln!(
                "unhealthy: {admin} answered {}",
                text.lines().next().unwrap_or("nothing")
            );
            1
        }
        Err(error) => {
            crate::output::errln!("unhealthy: {admin}: {error}");
            1
        }
    }
}

pub async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers, run until the process is killed.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
}

/// 32 random bytes as 64 hex digits (the node token, API tokens).
pub fn random_token() -> Result<String, CliError> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .map_err(|e| {
            CliError::new(
                ErrorKind::Io,
                format!("cannot read random bytes for a token: {e}"),
            )
        })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The node file: where the admin API listens and its token, readable by
/// the node's owner only.
fn write_node_file(
    path: &Path,
    announcement: &serde_json::Value,
    token: &str,
) -> Result<(), CliError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut document = announcement.clone();
    document["token"] = serde_json::json!(token);
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut file| file.write_all(format!("{document}\n").as_bytes()))
        .map_err(|e| {
            CliError::new(
                ErrorKind::Io,
                format!("cannot write {}: {e}", path.display()),
            )
        })
}
/// Starts this node's cluster member from its node folder.
async fn start_cluster(
    args: &NodeRunArgs,
    dir: &std::path::Path,
    store_root: &std::path::Path,
) -> Result<Arc<consensus::ClusterHandle>, CliError> {
    let identity_dir = args.identity_dir.as_deref().unwrap_or(dir);
    let identity = transport::NodeIdentity::load_from_dir(identity_dir)
        .map_err(|e| CliError::new(ErrorKind::InvalidArgument, e.to_string()))?;
    let node_name = identity
        .validate()
        .map_err(|e| CliError::new(ErrorKind::InvalidArgument, e.to_string()))?
        .to_string();
    let raft_listen = args.raft_listen.ok_or_else(|| {
        CliError::new(
            ErrorKind::InvalidArgument,
            "--cluster-dir needs --raft-listen ADDR",
        )
    })?;
    crate::cluster_cmd::install_secrets_key(identity_dir, store_root)?;
    consensus::ClusterHandle::start(consensus::ClusterConfig {
        node_name,
        data_dir: dir.join("raft"),
        store_root: store_root.to_owned(),
        raft_listen,
        raft_advertise: None,
        admin_addr: args.admin.to_string(),
        identity,
        bootstrap: args.join.is_none() && !args.no_bootstrap,
        join: args.join,
        raft: raft_settings(args)?,
    })
    .await
    .map_err(|e| {
        CliError::new(
            ErrorKind::Store,
            format!("cannot start the cluster member: {e}"),
        )
    })
}

/// The member's Raft timings from its flags, checked by openraft's own
/// validation (the election timeout's minimum above the heartbeat, below its
/// maximum), so a bad combination is refused before anything starts.
fn raft_settings(args: &NodeRunArgs) -> Result<consensus::RaftSettings, CliError> {
    let invalid = |message: String| {
        CliError::new(ErrorKind::InvalidArgument, message).with_field("--raft-election-timeout-ms")
    };
    let range = args.raft_election_timeout_ms.trim();
    let (min, max) = range.split_once('-').ok_or_else(|| {
        invalid(format!(
            "--raft-election-timeout-ms {range:?} is not MIN-MAX in milliseconds (e.g. 500-1000)"
        ))
    })?;
    let parse = |text: &str| {
        text.trim().parse::<u64>().map_err(|_| {
            invalid(format!(
                "--raft-election-timeout-ms {range:?}: {text:?} is not a number of milliseconds"
            ))
        })
    };
    let settings = consensus::RaftSettings {
        heartbeat_interval_ms: args.raft_heartbeat_ms,
        election_timeout_min_ms: parse(min)?,
        election_timeout_max_ms: parse(max)?,
        ..consensus::RaftSettings::default()
    };
    consensus::raft_config(&settings).map_err(|error| {
        invalid(format!(
            "--raft-heartbeat-ms {} with --raft-election-timeout-ms {range}: {error}",
            args.raft_heartbeat_ms
        ))
    })?;
    Ok(settings)
}

/// Bounds the wait of a joining member for the environment to replicate.
const REPLICATION_WAIT: Duration = Duration::from_secs(60);

/// The bootstrapping member creates `local` through the cluster; a joining
/// one waits until the environment has replicated to it.
async fn ensure_cluster_environment(
    checks: &crate::checks::Checks,
    env_id: &EnvId,
    store: &Arc<dyn EnvironmentStore + Send + Sync>,
    args: &NodeRunArgs,
    cluster: &consensus::ClusterHandle,
) -> Result<(), CliError> {
    let bootstrap = args.join.is_none() && !args.no_bootstrap;
    if args.no_bootstrap {
        tracing::info!(raft = %cluster.node().raft_addr, "waiting to be added with `gtc cluster join`");
    }
    // A member waiting to be added waits as long as it takes.
    let wait = if args.no_bootstrap {
        Duration::from_secs(u64::from(u32::MAX))
    } else {
        REPLICATION_WAIT
    };
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if store.load(env_id)?.is_some() {
            return Ok(());
        }
        if bootstrap && env_id.is_local() && cluster.is_leader() {
            let envelope = checks.envelope(deploy::command::Command::EnvInit {
                answers: Default::default(),
                defaults: packs::default_bindings(),
            });
            store.submit(&envelope)?;
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(CliError::new(
                ErrorKind::NotFound,
                format!(
                    "environment {env_id} did not reach this member within {REPLICATION_WAIT:?}; create it through any member"
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The deployers this node runs, by descriptor path; an environment's
/// deployer slot binding picks one per revision.
fn node_deployers() -> packs::deployer::Deployers {
    packs::deployer::Deployers::new()
        .with(Arc::new(local_process::local_process_deployer()))
        .with(Arc::new(docker_deployer::docker_deployer(
            docker_deployer::socket_from_env(),
        )))
}

#[cfg(test)]
mod node_name_tests {
    use super::{NODE_NAME_FILE, single_node_name};

    #[test]
    fn a_single_node_keeps_its_name_across_starts_and_a_bad_file_is_refused() {
        // Proves: the first start makes a name and keeps it; later starts
        // read the same one; a file that holds no valid name is refused
        // (never silently replaced, which would orphan what the old name
        // started).
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("environments");
        let first = single_node_name(&root).expect("made");
        assert!(first.starts_with("node-"), "{first}");
        assert_eq!(single_node_name(&root).expect("read"), first);
        std::fs::write(root.join(NODE_NAME_FILE), "a name/with a slash\n").expect("write");
        let error = single_node_name(&root).expect_err("refused");
        assert!(
            error.message.contains("not a node name"),
            "{}",
            error.message
        );
    }
}
