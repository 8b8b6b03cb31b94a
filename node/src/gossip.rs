//! A cluster member's gossip: publishes this node's facts and ready local
//! instances, and hands other members' ready instances to the router.
//!
//! Gossip is a hint channel: which instances are ready where. What traffic
//! goes to which revision is never decided here (the router's table comes
//! only from committed state).

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use deploy::command::Command;
use deploy::error::ErrorKind;
use deploy::ids::RevisionId;
use deploy::placement::NodeCapacity;
use membership::{
    ClusterKey, FactKey, Generation, Keyring, Membership, MembershipConfig, NodeFacts, NodeRole,
    SharedKeyring, encrypted_udp,
};
use router::proxy::Router;

use crate::error::CliError;

/// File in a node folder with the cluster's gossip keys, one base64 key per
/// line, the primary first (`gtc cluster init` writes it).
pub const GOSSIP_KEY_FILE: &str = "gossip.key";
/// How often facts are published and remote instances refreshed: a small
/// multiple of the gossip interval, so a change is seen within a second.
pub const FACTS_INTERVAL: Duration = Duration::from_millis(250);

/// Every how many rounds of [`FACTS_INTERVAL`] the router's request counts
/// are published (once a second).
const COUNTS_EVERY: u64 = 4;

/// HELP text of the metrics this module emits.
pub fn describe_metrics() {
    metrics::describe_gauge!(
        "gtc_gossip_members",
        metrics::Unit::Count,
        "Cluster members gossip currently considers live or dead, by state."
    );
}

/// Reads the keyring of a node folder.
pub fn load_keyring(node_dir: &Path) -> Result<Keyring, CliError> {
    let path = node_dir.join(GOSSIP_KEY_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        CliError::new(
            ErrorKind::InvalidArgument,
            format!("cannot read the gossip key {}: {e}; copy it from the cluster folder (`gtc cluster init` writes ca/{GOSSIP_KEY_FILE})", path.display()),
        )
    })?;
    let mut keys = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(|line| {
            ClusterKey::from_base64(line).map_err(|e| {
                CliError::new(
                    ErrorKind::InvalidArgument,
                    format!("{}: {e}", path.display()),
                )
            })
        });
    let primary = keys.next().ok_or_else(|| {
        CliError::new(
            ErrorKind::InvalidArgument,
            format!("{} holds no key", path.display()),
        )
    })??;
    let secondary = keys.collect::<Result<Vec<_>, _>>()?;
    Keyring::new(primary, secondary)
        .map_err(|e| CliError::new(ErrorKind::InvalidArgument, e.to_string()))
}

/// What a member gossips about itself.
pub struct GossipSettings<'a> {
    /// Where the generation counter is kept (writable).
    pub node_dir: &'a Path,
    /// Where `gossip.key` is read from.
    pub key_dir: &'a Path,
    pub node_name: String,
    pub listen: SocketAddr,
    pub seeds: Vec<SocketAddr>,
    pub facts: NodeFacts,
    /// The (replicated) store the leader commits placements through.
    pub store: Arc<dyn store::EnvironmentStore + Send + Sync>,
    pub env_id: deploy::ids::EnvId,
    /// Where the other members' request counts go, for rollout analysis.
    pub counts: crate::rollout_controller::RemoteCounts,
    /// Where the other members' requests in flight go, for the autoscaler.
    pub in_flight: crate::autoscaler::RemoteInFlight,
    /// Descriptor paths of the deployers this node runs; which of them can
    /// run instances now is probed and gossiped (`deployers`).
    pub deployers: Vec<String>,
}

/// Starts gossip and the loop that keeps facts and remote instances fresh.
pub async fn start(
    settings: GossipSettings<'_>,
    router: Arc<Router>,
    cluster: Arc<consensus::ClusterHandle>,
) -> Result<Arc<Membership>, CliError> {
    let keyring = SharedKeyring::new(load_keyring(settings.key_dir)?);
    let generation = Generation::next_persisted(settings.node_dir)
        .map_err(|e| CliError::new(ErrorKind::Io, e.to_string()))?;
    let mut config =
        MembershipConfig::new(settings.node_name, "greentic", settings.listen, generation);
    config.seed_addrs = settings.seeds;
    let transport = encrypted_udp(keyring);
    let docker = docker_deployer::Engine::new(docker_deployer::socket_from_env());
    let facts = with_deployers(settings.facts, &settings.deployers, &docker).await;
    let deployers_said = facts.deployers.clone();
    if let Some(said) = &deployers_said {
        tracing::info!(deployers = %said.join(","), "the deployers this member can run");
    }
    let membership = Membership::start(config, &facts, &transport)
        .await
        .map_err(|e| {
            CliError::new(
                ErrorKind::Io,
                format!("gossip could not start on {}: {e}", settings.listen),
            )
        })?;
    let membership = Arc::new(membership);
    let placer = Placer {
        store: settings.store,
        env_id: settings.env_id,
        last: None,
        in_flight: None,
    };
    tokio::spawn(publish_deployers(
        Arc::clone(&membership),
        settings.deployers,
        docker,
        deployers_said,
    ));
    tokio::spawn(refresh(
        Arc::clone(&membership),
        router,
        cluster,
        placer,
        Shared {
            counts: settings.counts,
            in_flight: settings.in_flight,
        },
    ));
    Ok(membership)
}

/// How often a member checks which of its deployers can run instances now.
pub const DEPLOYERS_PROBE_INTERVAL: Duration = Duration::from_secs(5);
/// The longest a probe of a deployer's engine may take; no answer within it
/// counts as unreachable.
pub const DEPLOYER_PROBE_WAIT: Duration = Duration::from_secs(2);

/// Which of `paths` can run instances now: local processes always; Docker
/// when its engine answers (its API version) within [`DEPLOYER_PROBE_WAIT`].
/// A deployer this node does not know how to probe is listed as it is.
async fn runnable(paths: &[String], docker: &docker_deployer::Engine) -> Vec<String> {
    let mut runnable = Vec::new();
    for path in paths {
        let up = if path == docker_deployer::DESCRIPTOR_PATH {
            matches!(
                tokio::time::timeout(DEPLOYER_PROBE_WAIT, docker.api_version()).await,
                Ok(Ok(_))
            )
        } else {
            true
        };
        if up {
            runnable.push(path.clone());
        }
    }
    runnable
}

/// `facts` with the `deployers` fact probed now: a member joins gossip
/// already saying which deployers it can run. Without it the leader would
/// see the member (and its capacity) for a moment before its first probe
/// was gossiped, and a member that has not said may run any deployer: it
/// could be handed Docker instances its engine cannot start.
async fn with_deployers(
    mut facts: NodeFacts,
    paths: &[String],
    docker: &docker_deployer::Engine,
) -> NodeFacts {
    facts.deployers = Some(runnable(paths, docker).await);
    facts
}

/// Publishes the `deployers` fact every [`DEPLOYERS_PROBE_INTERVAL`] (when
/// it changed from `last`, what the member said so far), so the leader
/// places a revision only on members that can run its deployer now, and
/// moves instances off a member whose engine stopped answering.
async fn publish_deployers(
    membership: Arc<Membership>,
    paths: Vec<String>,
    docker: docker_deployer::Engine,
    mut last: Option<Vec<String>>,
) {
    let mut ticker = tokio::time::interval(DEPLOYERS_PROBE_INTERVAL);
    loop {
        ticker.tick().await;
        if Arc::strong_count(&membership) == 1 {
            return;
        }
        let now = runnable(&paths, &docker).await;
        if last.as_ref() == Some(&now) {
            continue;
        }
        match membership
            .set_fact(FactKey::Deployers, &now.join(","))
            .await
        {
            Ok(()) => {
                if last.is_some() {
                    tracing::info!(deployers = %now.join(","), "the deployers this member can run changed");
                }
                last = Some(now);
            }
            Err(error) => tracing::warn!(%error, "the deployers fact could not be published"),
        }
    }
}

/// What the gossip loop hands to the node's deciders from other members.
struct Shared {
    counts: crate::rollout_controller::RemoteCounts,
    in_flight: crate::autoscaler::RemoteInFlight,
}

async fn refresh(
    membership: Arc<Membership>,
    router: Arc<Router>,
    cluster: Arc<consensus::ClusterHandle>,
    mut placer: Placer,
    shared: Shared,
) {
    let Shared { counts, in_flight } = shared;
    let mut published: BTreeSet<RevisionId> = BTreeSet::new();
    let mut counted: BTreeSet<RevisionId> = BTreeSet::new();
    // The in-flight numbers last published per revision: a value is sent
    // again only when it changed (every round, 250 ms, so a cold start on
    // another member is seen within a round).
    let mut flying: HashMap<RevisionId, [u64; 2]> = HashMap::new();
    let mut round: u64 = 0;
    let mut ticker = tokio::time::interval(FACTS_INTERVAL);
    loop {
        ticker.tick().await;
        if Arc::strong_count(&membership) == 1 {
            return;
        }
        let role = if cluster.status().voters.contains(&cluster.node_id()) {
            NodeRole::Voter
        } else {
            NodeRole::Learner
        };
        let local = router.local_instances();
        let healthy: usize = local.values().map(Vec::len).sum();
        let facts = [
            (FactKey::Role, role.as_str().to_owned()),
            (
                FactKey::AppliedIndex,
                cluster
                    .state_machine()
                    .applied_index()
                    .unwrap_or(0)
                    .to_string(),
            ),
            (FactKey::TrafficGeneration, router.generation().to_string()),
            (FactKey::InstancesHealthy, healthy.to_string()),
        ];
        for (key, value) in facts {
            if let Err(error) = membership.set_fact(key, &value).await {
                tracing::warn!(%error, "a gossip fact could not be published");
            }
        }
        for (revision, addrs) in &local {
            if let Err(error) = membership.set_endpoints(&revision.to_string(), addrs).await {
                tracing::warn!(%revision, %error, "instances could not be published");
            }
        }
        for gone in published.iter().filter(|r| !local.contains_key(r)) {
            let _ = membership.set_endpoints(&gone.to_string(), &[]).await;
        }
        published = local.keys().copied().collect();
        // This router's counts of the revisions its table routes to, for
        // the rollout controller on the leader: once a second (every
        // COUNTS_EVERY rounds), which analysis windows of 10 s and more
        // hardly notice, and a fourth of the gossip a change per round
        // would cost.
        round += 1;
        let mine = if round.is_multiple_of(COUNTS_EVERY) {
            router.revision_counts()
        } else {
            HashMap::new()
        };
        let serving: BTreeSet<RevisionId> = router
            .serving_revisions()
            .into_iter()
            .filter(|revision| mine.contains_key(revision))
            .collect();
        for revision in &serving {
            if let Some(numbers) = mine.get(revision).map(|c| c.to_numbers())
                && let Err(error) = membership.set_counts(&revision.to_string(), &numbers).await
            {
                tracing::warn!(%revision, %error, "request counts could not be published");
            }
        }
        if round.is_multiple_of(COUNTS_EVERY) {
            for gone in counted.difference(&serving) {
                let _ = membership.set_counts(&gone.to_string(), &[]).await;
            }
            counted = serving;
        }

        let now_flying: HashMap<RevisionId, [u64; 2]> = router
            .in_flight()
            .into_iter()
            .filter(|(_, f)| f.served + f.held > 0)
            .map(|(revision, f)| (revision, [f.served, f.held]))
            .collect();
        for (revision, numbers) in &now_flying {
            if flying.get(revision) != Some(numbers)
                && let Err(error) = membership
                    .set_in_flight(&revision.to_string(), numbers)
                    .await
            {
                tracing::warn!(%revision, %error, "requests in flight could not be published");
            }
        }
        for gone in flying.keys().filter(|r| !now_flying.contains_key(r)) {
            let _ = membership.set_in_flight(&gone.to_string(), &[]).await;
        }
        flying = now_flying;

        let me = membership.self_node_id().clone();
        let live = membership.live_members().await;
        let dead = membership.dead_members().await;
        metrics::gauge!("gtc_gossip_members", "state" => "live").set(live.len() as f64);
        metrics::gauge!("gtc_gossip_members", "state" => "dead").set(dead.len() as f64);
        let mut remote: HashMap<RevisionId, Vec<SocketAddr>> = HashMap::new();
        for member in live.iter().filter(|m| m.node_id != me) {
            for (revision, addrs) in &member.endpoints {
                if let Ok(revision) = revision.parse::<RevisionId>() {
                    remote
                        .entry(revision)
                        .or_default()
                        .extend(addrs.iter().copied());
                }
            }
        }
        router.set_remote_instances(remote);
        let remote_counts = live
            .iter()
            .filter(|m| m.node_id != me)
            .map(|member| {
                let per_revision = member
                    .counts
                    .iter()
                    .filter_map(|(revision, numbers)| {
                        Some((
                            revision.parse::<RevisionId>().ok()?,
                            deploy::rollout::WindowCounts::from_numbers(numbers)?,
                        ))
                    })
                    .collect();
                (member.node_id.to_string(), per_revision)
            })
            .collect();
        if let Ok(mut shared) = counts.write() {
            *shared = remote_counts;
        }
        let remote_in_flight = live
            .iter()
            .filter(|m| m.node_id != me)
            .map(|member| {
                let per_revision = member
                    .in_flight
                    .iter()
                    .filter_map(|(revision, numbers)| {
                        let [served, held] = numbers.as_slice() else {
                            return None;
                        };
                        Some((
                            revision.parse::<RevisionId>().ok()?,
                            router::proxy::InFlight {
                                served: *served,
                                held: *held,
                            },
                        ))
                    })
                    .collect();
                (member.node_id.to_string(), per_revision)
            })
            .collect();
        if let Ok(mut shared) = in_flight.write() {
            *shared = remote_in_flight;
        }
        if cluster.is_leader() {
            let nodes = live
                .iter()
                .map(|member| NodeCapacity {
                    name: member.node_id.name.clone(),
                    // A member that has not said yet takes nothing.
                    capacity: member.facts.capacity.unwrap_or(0),
                    deployers: member
                        .facts
                        .deployers
                        .as_ref()
                        .map(|paths| paths.iter().cloned().collect()),
                })
                .collect::<Vec<_>>();
            placer.place(&cluster, nodes).await;
        }
    }
}

/// How often the leader may commit a new placement: often enough to move
/// instances off a dead node within a couple of seconds, rarely enough that
/// a flapping member does not flood the log.
pub const PLACEMENT_INTERVAL: Duration = Duration::from_secs(1);

/// The longest a placement waits to be committed: a leader that lost its
/// quorum (cut off by a partition) gives up on it, and whoever leads next
/// places from its own view.
pub const PLACEMENT_COMMIT_BOUND: Duration = Duration::from_secs(3);

/// The leader's placement loop state.
struct Placer {
    store: Arc<dyn store::EnvironmentStore + Send + Sync>,
    env_id: deploy::ids::EnvId,
    last: Option<tokio::time::Instant>,
    /// The placement being committed: the gossip loop never waits for it
    /// (it keeps publishing this node's facts and instances meanwhile), and
    /// no new round starts before it ends.
    in_flight: Option<tokio::task::JoinHandle<()>>,
}

impl Placer {
    async fn place(&mut self, cluster: &Arc<consensus::ClusterHandle>, nodes: Vec<NodeCapacity>) {
        if self
            .in_flight
            .as_ref()
            .is_some_and(|task| !task.is_finished())
            || self
                .last
                .is_some_and(|last| last.elapsed() < PLACEMENT_INTERVAL)
        {
            return;
        }
        self.last = Some(tokio::time::Instant::now());
        let Ok(Some(state)) = self.store.load(&self.env_id) else {
            return;
        };
        let Some(mut answers) = deploy::placement::changes(&state, &nodes) else {
            return;
        };
        // The decision holds for this leader's term only: the state machine
        // refuses it if it reaches the log under another leader.
        answers.decided_in_term = Some(cluster.status().term);
        let name = &cluster.node().name;
        let envelope = actors::node_envelope(
            name,
            format!("placement by the cluster leader {name}"),
            Command::RevisionPlace(answers),
        );
        let cluster = Arc::clone(cluster);
        self.in_flight = Some(tokio::spawn(async move {
            match cluster
                .submit_as_leader(&envelope, PLACEMENT_COMMIT_BOUND)
                .await
            {
                Ok(_) => tracing::info!("placement committed"),
                Err(error) => {
                    tracing::warn!(%error, "placement not committed; recomputing next round")
                }
            }
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::{runnable, with_deployers};

    #[tokio::test]
    async fn a_deployer_whose_engine_does_not_answer_is_not_listed() {
        // Proves: local processes are always runnable; Docker only when its
        // engine answers, so an engine that is down (here a socket that
        // does not exist) takes Docker off the member's list within one
        // probe, and the leader stops placing Docker revisions there.
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("docker.sock");
        let engine = docker_deployer::Engine::new(missing.to_string_lossy().into_owned());
        let paths = vec![
            "greentic.deployer.local-process".to_owned(),
            docker_deployer::DESCRIPTOR_PATH.to_owned(),
        ];
        assert_eq!(
            runnable(&paths, &engine).await,
            vec!["greentic.deployer.local-process".to_owned()]
        );
    }

    #[tokio::test]
    async fn a_member_joins_gossip_already_saying_what_it_can_run() {
        // Proves: the facts a member starts gossip with carry its probed
        // deployers (Docker left out when its engine does not answer), so
        // no leader ever sees it without them, which would let placement
        // hand it instances of any deployer; the other facts are kept.
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = docker_deployer::Engine::new(
            dir.path()
                .join("docker.sock")
                .to_string_lossy()
                .into_owned(),
        );
        let paths = vec![
            "greentic.deployer.local-process".to_owned(),
            docker_deployer::DESCRIPTOR_PATH.to_owned(),
        ];
        let facts = membership::NodeFacts {
            capacity: Some(16),
            ..Default::default()
        };
        let said = with_deployers(facts, &paths, &engine).await;
        assert_eq!(
            said.deployers,
            Some(vec!["greentic.deployer.local-process".to_owned()])
        );
        assert_eq!(said.capacity, Some(16));
    }
}
