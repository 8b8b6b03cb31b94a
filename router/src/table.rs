//! The route table: host and path prefix → deployment → weighted split.
//!
//! Built only from a committed `EnvironmentState`, whose validation already
//! guarantees that every split names ready revisions and sums to 10000 bps
//! and that no two live deployments claim the same host and prefix.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Duration;

use deploy::bundle::DeploymentStatus;
use deploy::ids::{BundleId, DeploymentId, EnvId, RevisionId};
use deploy::state::EnvironmentState;

use crate::pick::WeightedPick;

/// Everything needed to route to one deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentRoute {
    pub deployment_id: DeploymentId,
    pub bundle_id: BundleId,
    /// The split's generation; sticky cookies are bound to it.
    pub split_generation: u64,
    pub pick: WeightedPick,
    /// Revisions named by the split (weight zero included), for overrides.
    pub revisions: Vec<RevisionId>,
    /// The split's weights in basis points, in split order.
    pub weights_bps: Vec<u32>,
    /// Tagged revisions: reachable directly whatever their weight.
    pub tags: Vec<(String, RevisionId)>,
}

impl DeploymentRoute {
    /// The revision tagged `tag`, if any.
    pub fn tagged(&self, tag: &str) -> Option<RevisionId> {
        self.tags
            .iter()
            .find(|(name, _)| name == tag)
            .map(|(_, revision)| *revision)
    }

    /// (revision, weight in basis points) of every split entry.
    pub fn weights(&self) -> impl Iterator<Item = (RevisionId, u32)> + '_ {
        self.revisions
            .iter()
            .copied()
            .zip(self.weights_bps.iter().copied())
    }
}

/// How a route matches the request's host, most specific first.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum HostMatch {
    Exact(String),
    /// `*.example.com` stored as `.example.com`.
    Wildcard(String),
    Any,
}

impl HostMatch {
    fn parse(host: &str) -> Self {
        match host.strip_prefix('*') {
            Some(suffix) => HostMatch::Wildcard(suffix.to_owned()),
            None => HostMatch::Exact(host.to_owned()),
        }
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Exact(exact) => exact == host,
            HostMatch::Wildcard(suffix) => {
                host.len() > suffix.len() && host.ends_with(suffix.as_str())
            }
            HostMatch::Any => true,
        }
    }

    /// Sort key: exact hosts, then longer wildcards, then any host.
    fn rank(&self) -> (u8, std::cmp::Reverse<usize>) {
        match self {
            HostMatch::Exact(_) => (0, std::cmp::Reverse(0)),
            HostMatch::Wildcard(suffix) => (1, std::cmp::Reverse(suffix.len())),
            HostMatch::Any => (2, std::cmp::Reverse(0)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Route {
    host: HostMatch,
    prefix: String,
    deployment: usize,
}

/// The routes of one environment at one committed generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTable {
    env_id: EnvId,
    generation: u64,
    routes: Vec<Route>,
    deployments: Vec<DeploymentRoute>,
    index: RouteIndex,
    /// The hold bounds of revisions that scale (their `queue_size` and
    /// `queue_wait_seconds`): a request for one with no ready instance is
    /// held while the autoscaler starts one.
    holds: HashMap<RevisionId, (u32, Duration)>,
}

/// Positions in `routes` (which is in match order) by kind of host, so a
/// lookup reads only the routes of the request's exact host, the wildcard
/// routes and the any-host routes, in that order: with thousands of exact
/// hosts a request never scans the others'.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct RouteIndex {
    exact: HashMap<String, Vec<usize>>,
    wildcard: Vec<usize>,
    any: Vec<usize>,
}

impl RouteIndex {
    fn build(routes: &[Route]) -> Self {
        let mut index = Self::default();
        for (position, route) in routes.iter().enumerate() {
            match &route.host {
                HostMatch::Exact(host) => {
                    index.exact.entry(host.clone()).or_default().push(position)
                }
                HostMatch::Wildcard(_) => index.wildcard.push(position),
                HostMatch::Any => index.any.push(position),
            }
        }
        index
    }
}

/// Lowercases a `Host` header and drops its port and trailing dot.
pub fn normalize_host(host: &str) -> String {
    normalized_host(host).into_owned()
}

/// [`normalize_host`] without copying a host that is already normal (the
/// common case: a lowercase name with or without a port).
fn normalized_host(host: &str) -> Cow<'_, str> {
    let trimmed = host.trim();
    if !trimmed.starts_with('[') {
        let name = trimmed
            .rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|c| c.is_ascii_digit()))
            .map_or(trimmed, |(name, _)| name)
            .trim_end_matches('.');
        if !name.bytes().any(|c| c.is_ascii_uppercase()) {
            return Cow::Borrowed(name);
        }
    }
    Cow::Owned(normalize_owned(host))
}

fn normalize_owned(host: &str) -> String {
    let host = host.trim();
    let without_port = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        rest.split(']')
            .next()
            .map_or(host.to_owned(), |v6| format!("[{v6}]"))
    } else {
        host.rsplit_once(':')
            .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
            .map_or(host, |(name, _)| name)
            .to_owned()
    };
    without_port.trim_end_matches('.').to_ascii_lowercase()
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/') || rest.starts_with('?'))
}

impl RouteTable {
    /// The table for `state`: active deployments that have a split.
    pub fn build(state: &EnvironmentState) -> Self {
        let environment = &state.environment;
        let mut deployments = Vec::new();
        let mut routes = Vec::new();
        for bundle in environment
            .bundles
            .iter()
            .filter(|b| b.status == DeploymentStatus::Active)
        {
            let Some(split) = environment.split(bundle.deployment_id) else {
                continue;
            };
            let Some(pick) = WeightedPick::new(&split.entries) else {
                continue;
            };
            let index = deployments.len();
            deployments.push(DeploymentRoute {
                deployment_id: bundle.deployment_id,
                bundle_id: bundle.bundle_id.clone(),
                split_generation: split.generation,
                pick,
                revisions: split.entries.iter().map(|e| e.revision_id).collect(),
                weights_bps: split.entries.iter().map(|e| e.weight_bps).collect(),
                tags: split
                    .entries
                    .iter()
                    .filter_map(|e| e.tag.clone().map(|tag| (tag, e.revision_id)))
                    .collect(),
            });
            for (host, prefix) in bundle.route_binding.claims() {
                routes.push(Route {
                    host: host.map_or(HostMatch::Any, HostMatch::parse),
                    prefix: prefix.to_owned(),
                    deployment: index,
                });
            }
        }
        routes.sort_by(|a, b| {
            a.host
                .rank()
                .cmp(&b.host.rank())
                .then(b.prefix.len().cmp(&a.prefix.len()))
                .then(a.host.cmp(&b.host))
                .then(a.prefix.cmp(&b.prefix))
        });
        let holds = environment
            .revisions
            .iter()
            .filter_map(|revision| {
                let scaling = revision.scaling.as_ref()?;
                Some((
                    revision.revision_id,
                    (
                        scaling.queue_size,
                        Duration::from_secs(u64::from(scaling.queue_wait_seconds)),
                    ),
                ))
            })
            .collect();
        Self {
            env_id: environment.environment_id.clone(),
            generation: state.generation,
            index: RouteIndex::build(&routes),
            routes,
            deployments,
            holds,
        }
    }

    /// How many requests of `revision` may be held and for how long while
    /// it has no ready instance, when it scales (`None`: the router's own
    /// bounds apply).
    pub fn hold_bounds(&self, revision: RevisionId) -> Option<(u32, Duration)> {
        self.holds.get(&revision).copied()
    }

    /// The committed state generation this table was built from.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The environment this table routes for.
    pub fn env_id(&self) -> &EnvId {
        &self.env_id
    }

    /// The deployment that serves `host` (a raw `Host` header) and `path`:
    /// the most specific host first, then the longest path prefix.
    pub fn resolve(&self, host: &str, path: &str) -> Option<&DeploymentRoute> {
        self.resolve_normal(&normalized_host(host), path)
    }

    fn resolve_normal(&self, host: &str, path: &str) -> Option<&DeploymentRoute> {
        self.index
            .exact
            .get(host)
            .into_iter()
            .flatten()
            .chain(&self.index.wildcard)
            .chain(&self.index.any)
            .map(|&position| &self.routes[position])
            .find(|route| route.host.matches(host) && prefix_matches(&route.prefix, path))
            .and_then(|route| self.deployments.get(route.deployment))
    }

    /// Every routed deployment.
    pub fn deployments(&self) -> &[DeploymentRoute] {
        &self.deployments
    }

    /// Like [`resolve`](Self::resolve) for a host of the form
    /// `<tag>---<host>`: the deployment and the tag, when the host has one.
    pub fn resolve_tagged(&self, host: &str, path: &str) -> Option<(&DeploymentRoute, String)> {
        let host = normalized_host(host);
        let (tag, rest) = host.split_once("---")?;
        let route = self.resolve_normal(rest, path)?;
        Some((route, tag.to_owned()))
    }

    /// [`resolve_tagged`](Self::resolve_tagged), else [`resolve`](Self::resolve),
    /// normalizing the host once: the deployment and the tag the host names.
    pub fn resolve_any<'a>(
        &'a self,
        host: &str,
        path: &str,
    ) -> Option<(&'a DeploymentRoute, Option<String>)> {
        let host = normalized_host(host);
        if let Some((tag, rest)) = host.split_once("---")
            && let Some(route) = self.resolve_normal(rest, path)
        {
            return Some((route, Some(tag.to_owned())));
        }
        self.resolve_normal(&host, path).map(|route| (route, None))
    }

    /// The route of one deployment, if it is served.
    pub fn deployment(&self, id: DeploymentId) -> Option<&DeploymentRoute> {
        self.deployments.iter().find(|d| d.deployment_id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deploy::apply::apply;
    use deploy::audit::{Actor, Authorization, Decision};
    use deploy::bundle::RouteBinding;
    use deploy::command::*;

    struct Env {
        state: Option<EnvironmentState>,
        counter: u128,
    }

    impl Env {
        fn run(&mut self, command: Command) -> serde_json::Value {
            self.counter += 1;
            let envelope = CommandEnvelope {
                at: chrono::DateTime::UNIX_EPOCH,
                actor: Actor::local_user(None, None),
                authorization: Authorization {
                    decision: Decision::Allow,
                    policy: "t".into(),
                    reason: "t".into(),
                },
                minted: MintedIds {
                    event_id: deploy::ids::EventId::from_ulid(ulid::Ulid::from_parts(
                        1,
                        self.counter,
                    )),
                    object_id: ulid::Ulid::from_parts(2, self.counter),
                },
                command,
                precondition: None,
                idempotency_key: None,
                signed_by: None,
            };
            let applied = apply(self.state.as_ref(), None, &envelope).expect("apply");
            self.state = applied.state;
            applied.result
        }

        fn deploy(&mut self, bundle: &str, hosts: &[&str], prefixes: &[&str]) -> DeploymentId {
            let result = self.run(Command::BundleAdd(BundleAddAnswers {
                environment_id: EnvId::local(),
                bundle_id: bundle.parse().expect("bundle"),
                customer_id: None,
                route_binding: RouteBinding {
                    hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
                    path_prefixes: prefixes.iter().map(|p| (*p).to_owned()).collect(),
                    tenant_selector: None,
                },
                revenue_share: None,
                authorization_ref: None,
                config_overrides: None,
                idempotency_key: None,
            }));
            let deployment: DeploymentId = result["deployment_id"]
                .as_str()
                .expect("id")
                .parse()
                .expect("ulid");
            // Something to run (a bundle with a runtime section), warmed
            // and reported healthy as a node would.
            let mut answers = RevisionStageAnswers::new(EnvId::local(), deployment);
            answers.bundle_path = Some(format!("{bundle}.gtbundle"));
            let staged = self.run(Command::RevisionStage {
                answers,
                staged: Some(Box::new(StagedBundle {
                    revision_id: RevisionId::from_ulid(ulid::Ulid::new()),
                    bundle_id: bundle.parse().expect("bundle"),
                    bundle_digest: "sha256:ab".parse().expect("digest"),
                    pack_list: Vec::new(),
                    pack_list_lock_ref: String::new(),
                    runtime_instances: Some(1),
                    scaling: None,
                    secret_pins: Vec::new(),
                    config_reload: Default::default(),
                })),
            });
            let revision = staged["revision_id"].as_str().expect("id").to_owned();
            self.run(Command::warm(RevisionAnswers {
                environment_id: EnvId::local(),
                revision_id: revision.parse().expect("ulid"),
                idempotency_key: None,
            }));
            self.run(Command::RevisionReport(RuntimeReport {
                environment_id: EnvId::local(),
                revision_id: revision.parse().expect("ulid"),
                outcome: RuntimeOutcome::Ready,
            }));
            self.run(Command::TrafficSet(TrafficSetAnswers {
                environment_id: EnvId::local(),
                deployment_id: deployment,
                entries: vec![TrafficEntryAnswers {
                    revision_id: revision,
                    weight_bps: Some(10_000),
                    weight_percent: None,
                    tag: None,
                }],
                updated_by: None,
                idempotency_key: format!("k-{bundle}"),
                authorization_ref: None,
            }));
            deployment
        }
    }

    fn environment() -> Env {
        let mut env = Env {
            state: None,
            counter: 0,
        };
        env.run(Command::EnvInit {
            answers: EnvInitAnswers::default(),
            defaults: vec![DefaultBinding {
                slot: deploy::descriptor::CapabilitySlot::Deployer,
                kind: "greentic.deployer.local-process@0.1.0"
                    .parse()
                    .expect("descriptor"),
            }],
        });
        env
    }

    #[test]
    fn the_most_specific_host_then_the_longest_prefix_wins() {
        let mut env = environment();
        let catch_all = env.deploy("catch-all", &[], &["/"]);
        let api = env.deploy("api", &[], &["/api"]);
        let shop = env.deploy("shop", &["shop.example.com"], &["/"]);
        let wild = env.deploy("wild", &["*.example.com"], &["/"]);
        let table = RouteTable::build(env.state.as_ref().expect("state"));
        let resolve = |host: &str, path: &str| table.resolve(host, path).map(|d| d.deployment_id);
        assert_eq!(resolve("other.test", "/"), Some(catch_all));
        assert_eq!(resolve("other.test", "/api"), Some(api));
        assert_eq!(resolve("other.test", "/api/v1?x=1"), Some(api));
        assert_eq!(
            resolve("other.test", "/apix"),
            Some(catch_all),
            "prefixes match whole segments"
        );
        assert_eq!(
            resolve("SHOP.example.com:8080", "/api"),
            Some(shop),
            "host beats path, case and port ignored"
        );
        assert_eq!(resolve("blog.example.com", "/"), Some(wild));
        assert_eq!(
            resolve("example.com", "/"),
            Some(catch_all),
            "a wildcard needs a subdomain"
        );
        assert_eq!(
            table.generation(),
            env.state.as_ref().expect("state").generation
        );
    }

    #[test]
    fn deployments_without_a_split_or_paused_are_not_routed() {
        let mut env = environment();
        let served = env.deploy("served", &[], &["/served"]);
        env.run(Command::BundleAdd(BundleAddAnswers {
            environment_id: EnvId::local(),
            bundle_id: "idle".parse().expect("bundle"),
            customer_id: None,
            route_binding: RouteBinding {
                path_prefixes: vec!["/idle".into()],
                ..Default::default()
            },
            revenue_share: None,
            authorization_ref: None,
            config_overrides: None,
            idempotency_key: None,
        }));
        let table = RouteTable::build(env.state.as_ref().expect("state"));
        assert!(table.resolve("h", "/idle").is_none());
        assert_eq!(
            table.resolve("h", "/served").map(|d| d.deployment_id),
            Some(served)
        );
        env.run(Command::BundleUpdate(BundleUpdateAnswers {
            environment_id: EnvId::local(),
            deployment_id: served,
            status: Some(DeploymentStatus::Paused),
            route_binding: None,
            revenue_share: None,
            config_overrides: None,
            idempotency_key: None,
        }));
        let paused = RouteTable::build(env.state.as_ref().expect("state"));
        assert!(paused.resolve("h", "/served").is_none());
    }

    #[test]
    fn hosts_normalize() {
        assert_eq!(normalize_host("Shop.Example.COM:443"), "shop.example.com");
        assert_eq!(normalize_host("example.com."), "example.com");
        assert_eq!(normalize_host("[::1]:8080"), "[::1]");
        assert_eq!(normalize_host("localhost"), "localhost");
    }
}
