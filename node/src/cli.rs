//! The clap command tree of `gtc`. Only this crate knows clap.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// gtc: deploy bundles to environments as immutable revisions and split
/// live traffic between them.
#[derive(Debug, Parser)]
#[command(name = "gtc", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: TopCommand,
}

#[derive(Debug, Subcommand)]
pub enum TopCommand {
    /// Operator verbs: `gtc op <noun> <verb>`.
    Op(OpArgs),
    /// Build, inspect and check `.gtbundle` archives.
    Bundle(BundleArgs),
    /// Run a node: serve live traffic and run revisions' instances.
    #[command(subcommand)]
    Node(NodeVerb),
    /// A multi-node cluster: certificates, status, membership.
    #[command(subcommand)]
    Cluster(ClusterVerb),
    /// Deploy two revisions of the example bundle on a throwaway node, split
    /// traffic 90/10, measure it, and shift to 0/100 under load.
    Demo(DemoArgs),
    /// This operator's signing key (`$GREENTIC_HOME/operator/key.pem`):
    /// changes of an environment with a trust root must be signed by it.
    #[command(subcommand)]
    Operator(OperatorNoun),
    /// Print a shell completion script, e.g. `gtc completions bash > /etc/bash_completion.d/gtc`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum OperatorNoun {
    /// The operator key: create it once, show its public half.
    #[command(subcommand)]
    Key(OperatorKeyVerb),
}

#[derive(Debug, Subcommand)]
pub enum OperatorKeyVerb {
    /// Make an Ed25519 key (0600, never overwritten) and print its key_id
    /// and public key.
    Create,
    /// Print the existing key's key_id and public key (never the private key).
    Show,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the node running afterwards and print its URLs.
    #[arg(long)]
    pub keep: bool,
    /// Requests sent to measure the 90/10 split.
    #[arg(long, default_value_t = 4000, value_parser = clap::value_parser!(u64).range(100..=1_000_000))]
    pub requests: u64,
    /// Traffic listener (port 0 picks a free one).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub listen: std::net::SocketAddr,
    /// Admin listener (port 0 picks a free one).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub admin: std::net::SocketAddr,
    /// Run two rollouts under load instead of the split demo: a good
    /// candidate promoted step by step by analysis, and one failing a share
    /// of its requests rolled back by it (about a minute).
    #[arg(long, conflicts_with = "requests")]
    pub rollout: bool,
    /// Show request-driven autoscaling instead: one revision scales to
    /// zero when idle, up under a load generator through a cold start, and
    /// back to zero when the load stops (about 40 s).
    #[arg(long, conflicts_with_all = ["requests", "rollout"])]
    pub autoscale: bool,
}

#[derive(Debug, Subcommand)]
pub enum ClusterVerb {
    /// Create a cluster CA and the first node's certificate in DIR
    /// (`DIR/ca/`, `DIR/<name>/`). The CA key stays in `DIR/ca/`: keep it
    /// off the nodes.
    Init {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The first node's name (its certificate name and Raft identity).
        #[arg(long, default_value = "node-1")]
        name: String,
        /// Also issue certificates for these nodes (repeatable), e.g. for a
        /// Compose file that makes every node's certificate in one step.
        #[arg(long, value_name = "NAME")]
        issue: Vec<String>,
        /// Succeed without changing anything when DIR already holds a CA
        /// (a container that runs at every start).
        #[arg(long)]
        if_missing: bool,
    },
    /// Issue a certificate for a new node NAME, signed by the CA in DIR.
    IssueCert {
        name: String,
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
    /// Leader, term, commit and applied index per node, and lag, as one
    /// running member sees them.
    Status {
        /// The member's node folder (`gtc node run --cluster-dir`).
        #[arg(long, value_name = "DIR")]
        node_dir: PathBuf,
        /// The environment the node serves.
        #[arg(long, default_value = "local")]
        env: String,
    },
    /// Add a member through the running member of NODE_DIR: the leader adds
    /// it as a learner, waits for it to catch up, then makes it a voter.
    /// Start the new member first with `--no-bootstrap` (or let it join by
    /// itself with `gtc node run --join`).
    Join {
        /// A running member's node folder.
        #[arg(long, value_name = "DIR")]
        node_dir: PathBuf,
        #[arg(long, default_value = "local")]
        env: String,
        /// The new member's name (its certificate name).
        #[arg(long)]
        name: String,
        /// The new member's `--raft-listen` address.
        #[arg(long, value_name = "ADDR")]
        raft_addr: std::net::SocketAddr,
        /// The new member's admin API address.
        #[arg(long, value_name = "ADDR")]
        admin_addr: Option<std::net::SocketAddr>,
    },
    /// Remove the member running from NODE_DIR from the cluster (its
    /// replica stays on disk).
    Leave {
        #[arg(long, value_name = "DIR")]
        node_dir: PathBuf,
        #[arg(long, default_value = "local")]
        env: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum NodeVerb {
    /// Run a node on this machine until SIGINT or SIGTERM.
    Run(Box<NodeRunArgs>),
    /// Bearer tokens of the admin API, with a role per environment.
    #[command(subcommand)]
    Token(TokenVerb),
    /// Exit 0 when the node's admin API answers `/healthz`, 1 otherwise:
    /// the container image's HEALTHCHECK (there is no shell or curl in it).
    Health {
        /// The node's admin address.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8081")]
        admin: std::net::SocketAddr,
    },
}

/// A role of an admin API token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    /// GET only.
    Viewer,
    /// Every change except destroying or restoring an environment.
    Operator,
    /// Everything.
    Admin,
}

/// Where the tokens file is.
#[derive(Debug, Args, Clone)]
pub struct TokensFileArgs {
    /// The tokens file [default: tokens.json in the store root].
    #[arg(long, value_name = "FILE", env = "GTC_ADMIN_TOKENS")]
    pub tokens: Option<PathBuf>,
    /// Folder holding one sub-folder per environment.
    #[arg(long, value_name = "DIR", env = "GREENTIC_STORE_ROOT")]
    pub store_root: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum TokenVerb {
    /// Make a token, store its hash, and print the token (once: it is not kept).
    Create {
        /// Names the token's holder in audit events, e.g. `ci-deployer` [default: token-<random>].
        #[arg(long)]
        id: Option<String>,
        #[arg(long, value_enum)]
        role: RoleArg,
        /// The environment the role is for (`*` for every environment).
        #[arg(long, default_value = "local")]
        env: String,
        #[command(flatten)]
        file: TokensFileArgs,
    },
    /// List tokens: ids and grants (hashes are never printed).
    List {
        #[command(flatten)]
        file: TokensFileArgs,
    },
    /// Remove a token; requests bearing it are refused from then on.
    Revoke {
        #[arg(long)]
        id: String,
        #[command(flatten)]
        file: TokensFileArgs,
    },
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

#[derive(Debug, Args)]
pub struct NodeRunArgs {
    /// The environment this node serves.
    #[arg(long, default_value = "local")]
    pub env: String,
    /// Traffic listener [default: the environment's listen_addr, else 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
    /// Admin listener: /healthz, /readyz, /status, /metrics and the /v1 admin API.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8081")]
    pub admin: std::net::SocketAddr,
    /// PEM certificate chain: serve the admin API over HTTPS (with --admin-tls-key).
    #[arg(long, value_name = "FILE", requires = "admin_tls_key")]
    pub admin_tls_cert: Option<PathBuf>,
    /// PEM private key of --admin-tls-cert.
    #[arg(long, value_name = "FILE", requires = "admin_tls_cert")]
    pub admin_tls_key: Option<PathBuf>,
    /// API tokens with their roles [default: tokens.json in the store root].
    #[arg(long, value_name = "FILE", env = "GTC_ADMIN_TOKENS")]
    pub admin_tokens: Option<PathBuf>,
    /// Log format (logs go to stderr; GTC_LOG sets the filter, e.g. debug).
    #[arg(long, value_enum, default_value_t)]
    pub log_format: LogFormat,
    /// How often the committed state is checked for changes, in milliseconds.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(10..=10_000))]
    pub poll_ms: u64,
    /// Name of this node in audit events and on what it starts (container
    /// labels); default: a name made once per store and kept in
    /// `<store root>/node-name`.
    #[arg(long)]
    pub name: Option<String>,
    /// Connection limits of the traffic and admin listeners.
    #[command(flatten)]
    pub limits: ConnectionLimitArgs,
    /// Per-try time for the router to open a connection to an instance;
    /// a request that could not reach one goes to another instance of the
    /// same revision. Raise it when instances are far away.
    #[arg(long, value_name = "MS", default_value_t = router::proxy::DEFAULT_CONNECT_TIMEOUT.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub upstream_connect_timeout_ms: u64,
    /// Per-try time to the first byte of an instance's response: after it,
    /// a request that is safe to send twice (idempotent method, body of at
    /// most 64 KiB) is also sent to another instance of the same revision
    /// and the first answer wins (bounded by the retry budget). 0 turns
    /// hedging off; raise it above the p99 of slow endpoints.
    #[arg(long, value_name = "MS", default_value_t = router::proxy::DEFAULT_FIRST_BYTE_TIMEOUT.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub upstream_first_byte_timeout_ms: u64,
    /// Time from sending a request to an instance to its response head,
    /// all tries together; past it the client gets 504.
    #[arg(long, value_name = "MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub upstream_response_timeout_ms: u64,
    /// Requests the router holds per revision while that revision has no
    /// ready instance (its only instance restarting, or starting), answered
    /// as soon as one is ready; past it, 503 with Retry-After. 0 (the
    /// default) answers such requests 503 at once.
    #[arg(long, value_name = "N", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub hold_requests: u32,
    /// Longest the router holds one such request; past it, 503 with
    /// Retry-After.
    #[arg(long, value_name = "MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub hold_wait_ms: u64,
    /// Folder holding one sub-folder per environment.
    #[arg(long, value_name = "DIR", env = "GREENTIC_STORE_ROOT")]
    pub store_root: Option<PathBuf>,
    /// Run as a cluster member from this node folder (made by `gtc cluster
    /// init` or `issue-cert`): its certificate, Raft log and replica live
    /// there. Without it the node runs on the embedded local store.
    #[arg(long, value_name = "DIR", requires = "raft_listen")]
    pub cluster_dir: Option<PathBuf>,
    /// Read the certificate, key and gossip key from this folder instead of
    /// the cluster folder (a read-only mount in a container, say).
    #[arg(long, value_name = "DIR", requires = "cluster_dir")]
    pub identity_dir: Option<PathBuf>,
    /// UDP address of the node's QUIC endpoint for Raft and forwarding.
    #[arg(long, value_name = "ADDR")]
    pub raft_listen: Option<std::net::SocketAddr>,
    /// Join the cluster through the member at this Raft address; without
    /// it a new cluster member bootstraps a one-voter cluster.
    #[arg(long, value_name = "ADDR", requires = "cluster_dir")]
    pub join: Option<std::net::SocketAddr>,
    /// Neither bootstrap a new cluster nor ask to join: wait until a member
    /// adds this one (`gtc cluster join`).
    #[arg(long, requires = "cluster_dir", conflicts_with = "join")]
    pub no_bootstrap: bool,
    /// UDP address for encrypted gossip (membership, liveness and where
    /// ready instances run, so every router can reach every revision).
    /// Needs the cluster's `gossip.key` in the node folder.
    #[arg(long, value_name = "ADDR", requires = "cluster_dir")]
    pub gossip_listen: Option<std::net::SocketAddr>,
    /// Gossip address of another member to meet the cluster through
    /// (repeatable).
    #[arg(long, value_name = "ADDR", requires = "gossip_listen")]
    pub gossip_seed: Vec<std::net::SocketAddr>,
    /// Instances this cluster member accepts in all; the leader never
    /// places more on it.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub capacity: u32,
    /// The address instances listen on (given to them as `HOST`) and that
    /// routers reach them at. Default: 127.0.0.1 on a single node; on a
    /// cluster member, the IP of --raft-listen, so the other members'
    /// routers can reach this member's instances.
    #[arg(long, value_name = "IP")]
    pub instance_host: Option<std::net::IpAddr>,
    /// Raft heartbeat interval of a cluster member. The default suits
    /// loopback, a LAN and a container network; raise it with the round
    /// trip between members (about one round trip).
    #[arg(long, value_name = "MS", default_value_t = 100, env = "GTC_RAFT_HEARTBEAT_MS",
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub raft_heartbeat_ms: u64,
    /// Raft election timeout range of a cluster member, `MIN-MAX` in
    /// milliseconds. A dead leader is replaced MAX plus a draw from MIN-MAX
    /// after its last heartbeat; MIN must exceed the heartbeat (3-10
    /// heartbeats).
    #[arg(
        long,
        value_name = "MIN-MAX",
        default_value = "300-600",
        env = "GTC_RAFT_ELECTION_TIMEOUT_MS"
    )]
    pub raft_election_timeout_ms: String,
    /// Export each request the router proxies as an OpenTelemetry span
    /// (`gtc.route`) over OTLP/HTTP protobuf to this collector, e.g.
    /// http://127.0.0.1:4318 (spans are POSTed to URL/v1/traces). Off when
    /// absent: no exporter is created.
    #[arg(long, value_name = "URL", env = "GTC_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<router::span_export::OtlpEndpoint>,
}

/// Connection limits of `gtc node run`'s two listeners (README: "Connection
/// limits"). Each one that trips is counted in
/// `gtc_connection_limit_trips_total{listener, limit}`.
#[derive(Debug, Clone, Args)]
pub struct ConnectionLimitArgs {
    /// Time a client gets to send a whole request head, from the accept
    /// (or the first byte of a later request); past it the connection is
    /// closed. Both listeners.
    #[arg(long, value_name = "MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(100..=300_000))]
    pub header_timeout_ms: u64,
    /// Time a keep-alive connection may wait for its next request. Both
    /// listeners.
    #[arg(long, value_name = "MS", default_value_t = 60_000,
          value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub idle_timeout_ms: u64,
    /// Time the admin API waits for a request body it reads, after the head.
    #[arg(long, value_name = "MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub body_timeout_ms: u64,
    /// Connections the router holds at once; past it the oldest idle one
    /// is closed, or the new one refused if every one is serving a request.
    #[arg(long, value_name = "N", default_value_t = router::proxy::DEFAULT_MAX_CONNECTIONS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    pub max_connections: usize,
    /// Connections the router holds at once from one client IP address
    /// (raise it behind a load balancer that connects from one address).
    #[arg(long, value_name = "N", default_value_t = router::proxy::DEFAULT_MAX_CONNECTIONS_PER_IP,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    pub max_connections_per_ip: usize,
    /// Connections the admin API holds at once.
    #[arg(long, value_name = "N", default_value_t = crate::admin::DEFAULT_MAX_CONNECTIONS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(2..=100_000))]
    pub admin_max_connections: usize,
    /// Connections the admin API holds at once from one client IP address.
    #[arg(long, value_name = "N", default_value_t = crate::admin::DEFAULT_MAX_CONNECTIONS_PER_IP,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=100_000))]
    pub admin_max_connections_per_ip: usize,
    /// Admin connections kept for /healthz and /readyz: other requests get
    /// 503 once all but this many connections are serving one.
    #[arg(long, value_name = "N", default_value_t = crate::admin::DEFAULT_HEALTH_RESERVE,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000))]
    pub admin_health_reserve: usize,
}

impl Default for ConnectionLimitArgs {
    fn default() -> Self {
        Self {
            header_timeout_ms: router::connections::DEFAULT_HEADER_TIMEOUT.as_millis() as u64,
            idle_timeout_ms: router::connections::DEFAULT_IDLE_TIMEOUT.as_millis() as u64,
            body_timeout_ms: crate::admin::DEFAULT_BODY_TIMEOUT.as_millis() as u64,
            max_connections: router::proxy::DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: router::proxy::DEFAULT_MAX_CONNECTIONS_PER_IP,
            admin_max_connections: crate::admin::DEFAULT_MAX_CONNECTIONS,
            admin_max_connections_per_ip: crate::admin::DEFAULT_MAX_CONNECTIONS_PER_IP,
            admin_health_reserve: crate::admin::DEFAULT_HEALTH_RESERVE,
        }
    }
}

impl ConnectionLimitArgs {
    /// The router listener's limits.
    pub fn router(&self) -> router::connections::ConnectionLimits {
        router::connections::ConnectionLimits {
            header_timeout: std::time::Duration::from_millis(self.header_timeout_ms),
            idle_timeout: std::time::Duration::from_millis(self.idle_timeout_ms),
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            reserved_for_priority: 0,
        }
    }

    /// The admin listener's limits.
    pub fn admin(&self) -> router::connections::ConnectionLimits {
        router::connections::ConnectionLimits {
            header_timeout: std::time::Duration::from_millis(self.header_timeout_ms),
            idle_timeout: std::time::Duration::from_millis(self.idle_timeout_ms),
            max_connections: self.admin_max_connections,
            max_connections_per_ip: self.admin_max_connections_per_ip,
            reserved_for_priority: self
                .admin_health_reserve
                .min(self.admin_max_connections.saturating_sub(1)),
        }
    }
}

#[derive(Debug, Args)]
pub struct BundleArgs {
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t)]
    pub output: OutputFormat,
    #[command(subcommand)]
    pub verb: BundleVerb,
}

/// Archive formats `bundle build` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum BuildFormat {
    /// SquashFS (zlib), the standard `.gtbundle`.
    #[default]
    Squashfs,
    /// ZIP (deflate).
    Zip,
}

#[derive(Debug, Subcommand)]
pub enum BundleVerb {
    /// Pack a folder into a deterministic bundle; dev secrets are left out and
    /// a bundle that would leak a secret is not written.
    Build {
        /// The folder with bundle-manifest.json or bundle.yaml at its root.
        dir: PathBuf,
        /// Where to write the bundle.
        #[arg(short = 'o', long = "out", value_name = "FILE")]
        out: PathBuf,
        #[arg(long, value_enum, default_value_t)]
        format: BuildFormat,
        /// Allowlist of known false positives [default: DIR/.gtbundle-allowlist.json if present].
        #[arg(long, value_name = "FILE")]
        allowlist: Option<PathBuf>,
    },
    /// Show a bundle's manifest, files, packs and digest.
    Inspect { file: PathBuf },
    /// Check a bundle: archive safety, manifest, packs, runtime section and secret leaks.
    Doctor {
        file: PathBuf,
        /// Allowlist of known false positives.
        #[arg(long, value_name = "FILE")]
        allowlist: Option<PathBuf>,
    },
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum OutputFormat {
    /// One compact JSON document on stdout (for scripts).
    #[default]
    Json,
    /// Aligned columns for people.
    Table,
}

#[derive(Debug, Args)]
pub struct OpArgs {
    /// Folder holding one sub-folder per environment [default: $GREENTIC_HOME/environments, else ~/.greentic/environments].
    #[arg(long, global = true, value_name = "DIR", env = "GREENTIC_STORE_ROOT")]
    pub store_root: Option<PathBuf>,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t)]
    pub output: OutputFormat,
    /// CA certificates (PEM) to trust when the running node serves its admin API over HTTPS.
    #[arg(long, global = true, value_name = "FILE", env = "GTC_ADMIN_CA")]
    pub admin_ca: Option<PathBuf>,
    /// Read this member's replica as it is, without first waiting until it
    /// has applied everything the cluster had committed (a read index).
    /// Faster, and works without a quorum, but may miss the latest changes.
    #[arg(long, global = true)]
    pub stale_ok: bool,
    /// Talk to this node's admin API from anywhere (`http://ip:port` or
    /// `https://ip:port`) instead of the local store; needs --token.
    #[arg(long, global = true, value_name = "URL", env = "GTC_NODE")]
    pub node: Option<String>,
    /// API token for --node (`gtc node token create` on the node).
    #[arg(
        long,
        global = true,
        value_name = "TOKEN",
        env = "GTC_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    #[command(subcommand)]
    pub noun: Noun,
}

/// The payload of a mutating verb.
#[derive(Debug, Args, Clone)]
pub struct Mutation {
    /// The verb's payload as a JSON or YAML file (chosen by extension).
    #[arg(long, value_name = "FILE", required_unless_present = "schema")]
    pub answers: Option<PathBuf>,
    /// Print the JSON Schema (draft 2020-12) of the payload and exit.
    #[arg(long)]
    pub schema: bool,
}

/// The payload of a verb whose payload is optional (`env init`).
#[derive(Debug, Args, Clone)]
pub struct OptionalMutation {
    /// The verb's payload as a JSON or YAML file (optional).
    #[arg(long, value_name = "FILE")]
    pub answers: Option<PathBuf>,
    /// Print the JSON Schema (draft 2020-12) of the payload and exit.
    #[arg(long)]
    pub schema: bool,
}

/// The payload of a verb that only names its target environment: the id
/// as a positional argument (`gtc op env migrate-dev local --check`) or
/// `--answers FILE`, not both.
#[derive(Debug, Args, Clone)]
pub struct TargetMutation {
    /// Target environment id (instead of --answers).
    #[arg(value_name = "ENV", conflicts_with = "answers")]
    pub env: Option<String>,
    /// The verb's payload as a JSON or YAML file (chosen by extension).
    #[arg(long, value_name = "FILE", required_unless_present_any = ["schema", "env"])]
    pub answers: Option<PathBuf>,
    /// Print the JSON Schema (draft 2020-12) of the payload and exit.
    #[arg(long)]
    pub schema: bool,
}

impl TargetMutation {
    /// The `--answers`/`--schema` half, for code shared with [`Mutation`].
    pub fn mutation(&self) -> Mutation {
        Mutation {
            answers: self.answers.clone(),
            schema: self.schema,
        }
    }
}

/// `--check` or `--apply`, exactly one.
#[derive(Debug, Args, Clone)]
#[group(required = true, multiple = false)]
pub struct CheckOrApply {
    /// Report what would change; change nothing.
    #[arg(long)]
    pub check: bool,
    /// Make the change (re-checks first).
    #[arg(long)]
    pub apply: bool,
}

#[derive(Debug, Subcommand)]
pub enum Noun {
    /// Environments: the places bundles are deployed to.
    #[command(subcommand)]
    Env(EnvVerb),
    /// Env-pack bindings of an environment's capability slots.
    #[command(name = "env-packs", subcommand)]
    EnvPacks(PacksVerb),
    /// Bundle deployments: which bundle runs for which customer on which routes.
    #[command(subcommand)]
    Bundles(BundlesVerb),
    /// Revisions: immutable versions of a deployment and their lifecycle.
    #[command(subcommand)]
    Revisions(RevisionsVerb),
    /// Traffic splits between ready revisions.
    #[command(subcommand)]
    Traffic(TrafficVerb),
    /// Rollouts: a deployment's traffic moved to a candidate revision in steps.
    #[command(subcommand)]
    Rollouts(RolloutsVerb),
    /// Host configuration and pack answers of an environment.
    #[command(subcommand)]
    Config(ConfigVerb),
    /// Deployer credentials (not implemented yet).
    #[command(subcommand)]
    Credentials(CredentialsVerb),
    /// Secrets of an environment.
    #[command(subcommand)]
    Secrets(SecretsVerb),
}

/// A positional environment id for read verbs.
#[derive(Debug, Args, Clone)]
pub struct EnvArg {
    /// Environment id, e.g. `local`.
    pub env: String,
}

/// `gtc op env reconcile ENV --render DIR`.
#[derive(Debug, Args, Clone)]
pub struct ReconcileArgs {
    /// Environment id, e.g. `local`.
    pub env: String,
    /// Write the manifests into this folder (created; a folder holding only
    /// a previous render is replaced) instead of applying them.
    #[arg(long, value_name = "DIR")]
    pub render: Option<PathBuf>,
    /// The `gtc` image the router runs, pinned by digest
    /// (`registry/gtc@sha256:<64 hex>`); `bash scripts/image.sh` builds it.
    #[arg(long, value_name = "IMAGE")]
    pub router_image: Option<String>,
    /// Router replicas (2 to 100).
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub router_replicas: u32,
}

#[derive(Debug, Subcommand)]
pub enum EnvVerb {
    /// Create the `local` environment with the default env-packs, or fill in missing slots.
    Init(OptionalMutation),
    /// Create an environment.
    Create(Mutation),
    /// Change an environment's name or host configuration.
    Update(Mutation),
    /// List environments.
    List,
    /// Show one environment in full.
    Show(EnvArg),
    /// Check an environment: validation, env-packs, audit chain.
    Doctor(EnvArg),
    /// Apply an environment's Kubernetes manifests to the cluster of the
    /// current kubeconfig (server-side apply, then prune), or write them
    /// into a folder with `--render DIR`.
    Reconcile(ReconcileArgs),
    /// Check the tools, reachability and credentials of the deployer the
    /// environment's deployer slot binds.
    Preflight(EnvArg),
    /// Destroy an environment (its folder is kept aside under .destroyed/).
    Destroy {
        #[command(flatten)]
        mutation: TargetMutation,
        /// Required: destroying is not undoable from the CLI.
        #[arg(long)]
        confirm: bool,
    },
    /// Write a backup of an environment's state with an integrity digest.
    Backup(Mutation),
    /// List the backups of an environment.
    Backups(EnvArg),
    /// Restore an environment from one of its backups.
    Restore(Mutation),
    /// Merge the legacy `dev` environment's env-packs into a target.
    #[command(name = "migrate-dev")]
    MigrateDev {
        #[command(flatten)]
        mutation: TargetMutation,
        #[command(flatten)]
        mode: CheckOrApply,
    },
    /// The environment's trust root: the operator keys whose signature its
    /// changes need (none: no signing).
    #[command(subcommand)]
    Trust(TrustVerb),
    /// Move the legacy `state/deploy/` tree aside.
    #[command(name = "migrate-state")]
    MigrateState {
        #[command(flatten)]
        mutation: TargetMutation,
        #[command(flatten)]
        mode: CheckOrApply,
    },
}

#[derive(Debug, Subcommand)]
pub enum TrustVerb {
    /// List the keys of an environment's trust root.
    List(EnvArg),
    /// Add an operator's public key (the first key turns signing on; after
    /// that, adding is itself a signed change).
    Add(Mutation),
    /// Remove a key (a signed change; the last key cannot be removed).
    Remove(Mutation),
}

#[derive(Debug, Subcommand)]
pub enum PacksVerb {
    /// Bind an env-pack into an empty slot.
    Add(Mutation),
    /// Replace a slot's binding (the previous one is kept for rollback).
    Update(Mutation),
    /// Unbind a slot.
    Remove(Mutation),
    /// Restore a slot's previous binding.
    Rollback(Mutation),
    /// List an environment's bindings.
    List(EnvArg),
}

#[derive(Debug, Subcommand)]
pub enum BundlesVerb {
    /// Add a bundle deployment.
    Add(Mutation),
    /// Change a deployment's status, routes, revenue share or overrides.
    Update(Mutation),
    /// Remove a deployment whose revisions are all archived.
    Remove(Mutation),
    /// List an environment's deployments.
    List(EnvArg),
}

#[derive(Debug, Subcommand)]
pub enum RevisionsVerb {
    /// Freeze a new revision of a deployment.
    Stage(Mutation),
    /// Start a revision and make it ready (staged or failed → ready).
    Warm(Mutation),
    /// Stop sending new requests to a revision (ready → draining).
    Drain(Mutation),
    /// Archive a revision that serves no traffic.
    Archive(Mutation),
    /// Set how a revision scales with its traffic (instances between
    /// min_instances and max_instances, 0 when idle if allowed); not a
    /// redeploy: the instances that stay keep serving.
    Scale(Mutation),
    /// List an environment's revisions.
    List {
        #[command(flatten)]
        env: EnvArg,
        /// Only revisions of this deployment.
        #[arg(long)]
        deployment: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TrafficVerb {
    /// Set a deployment's split (weights in bps or percent; `LATEST` follows the newest ready revision).
    Set(Mutation),
    /// Print what `traffic set` with these answers would do (splits before and after, revisions that must be ready, a refusal); change nothing.
    Plan(Mutation),
    /// Show traffic splits.
    Show {
        #[command(flatten)]
        env: EnvArg,
        /// Only the split of this deployment.
        #[arg(long)]
        deployment: Option<String>,
    },
    /// Undo the last `traffic set` of a deployment.
    Rollback(Mutation),
    /// Remove a deployment's split (it stops serving).
    Clear(Mutation),
}

#[derive(Debug, Subcommand)]
pub enum RolloutsVerb {
    /// Start moving a deployment's traffic to a ready candidate in steps (each a weight and a pause, a manual gate or analysis).
    Start {
        #[command(flatten)]
        mutation: Mutation,
        /// Print the split before and after and what would be refused; change nothing.
        #[arg(long)]
        plan: bool,
    },
    /// Show a deployment's latest rollout: state, step, weights and history.
    Show {
        #[command(flatten)]
        env: EnvArg,
        /// The deployment.
        #[arg(long)]
        deployment: String,
    },
    /// List an environment's rollouts, running and finished.
    List(EnvArg),
    /// Hold a running rollout at its step (the split stays as it is).
    Pause(Mutation),
    /// Continue a paused rollout (ends a manual step).
    Resume(Mutation),
    /// Send the candidate 100 % now and finish the rollout.
    Promote(Mutation),
    /// Send the stable revision 100 % now and finish the rollout.
    Abort(Mutation),
}

#[derive(Debug, Subcommand)]
pub enum ConfigVerb {
    /// Show host configuration, bindings and which pack answers exist.
    Show {
        #[command(flatten)]
        env: EnvArg,
        /// Only this slot's pack answers.
        #[arg(long)]
        slot: Option<String>,
    },
    /// Change host configuration (same payload as `env update`).
    Set(Mutation),
}

#[derive(Debug, Subcommand)]
pub enum CredentialsVerb {
    /// Check the deployer's identity against every capability its
    /// credentials contract requires (pass, fail with a fix, or skipped);
    /// exits 1 when one fails.
    Requirements(Mutation),
    /// Kubernetes: make a least-privilege ServiceAccount, its RBAC and a
    /// bounded token from an admin kubeconfig, which is then dropped.
    Bootstrap(Mutation),
    /// Kubernetes: issue a fresh token for the generated credentials.
    Rotate(Mutation),
    /// Show the environment's credentials document and whether rotation is due.
    Show(EnvArg),
}

#[derive(Debug, Subcommand)]
pub enum SecretsVerb {
    /// Show the secrets namespace and backend of an environment.
    List(EnvArg),
    /// Store a secret as a new version (encrypted at rest).
    Put(Mutation),
    /// Show a secret's metadata; its value only with `reveal` (admin).
    Get(Mutation),
    /// Make a new version of a secret, from a value or generated.
    Rotate(Mutation),
    /// Delete an old version (never the latest, never one a revision that
    /// is not archived pins).
    Remove(Mutation),
}
