//! Tests of the apply path: scripted scenarios for each guard, and property
//! tests that random command sequences never yield an invalid state.

use proptest::prelude::*;

use super::*;
use crate::audit::{Actor, Authorization, Decision};
use crate::bundle::{DeploymentStatus, RouteBinding};
use crate::command::*;
use crate::descriptor::CapabilitySlot;
use crate::ids::{DeploymentId, EventId, RevisionId};
use crate::lifecycle::Lifecycle;

/// Builds envelopes with a deterministic clock and id counter.
struct Harness {
    counter: u128,
    state: Option<EnvironmentState>,
    /// The idempotency records a store would keep beside the state.
    records: Vec<IdempotencyRecord>,
}

fn defaults() -> Vec<DefaultBinding> {
    [
        (
            CapabilitySlot::Deployer,
            "greentic.deployer.local-process@0.1.0",
        ),
        (CapabilitySlot::Secrets, "greentic.secrets.dev-store@0.1.0"),
        (CapabilitySlot::Telemetry, "greentic.telemetry.stdout@0.1.0"),
        (
            CapabilitySlot::Sessions,
            "greentic.sessions.in-memory@0.1.0",
        ),
        (CapabilitySlot::State, "greentic.state.in-memory@0.1.0"),
    ]
    .into_iter()
    .map(|(slot, kind)| DefaultBinding {
        slot,
        kind: kind.parse().expect("descriptor"),
    })
    .collect()
}

impl Harness {
    fn new() -> Self {
        Self {
            counter: 1,
            state: None,
            records: Vec::new(),
        }
    }

    /// The record a store would hand `apply` for `envelope`'s key.
    fn recorded(&self, envelope: &CommandEnvelope) -> Option<&IdempotencyRecord> {
        let key = envelope.idempotency_key()?;
        self.records.iter().find(|r| r.key == key)
    }

    /// Applies with the record of the envelope's key, as a store does.
    fn apply(&self, envelope: &CommandEnvelope) -> Result<Applied, ApplyError> {
        apply(self.state.as_ref(), self.recorded(envelope), envelope)
    }

    /// Keeps what a store keeps of a successful answer: its state and, for
    /// a new change made with a key, its record.
    fn keep(&mut self, applied: &Applied) {
        self.state = applied.state.clone();
        if let (false, Some(record)) = (applied.replayed, &applied.record) {
            self.records.push(record.clone());
        }
    }

    fn envelope(&mut self, command: Command) -> CommandEnvelope {
        self.counter += 2;
        CommandEnvelope {
            at: chrono::DateTime::UNIX_EPOCH + chrono::Duration::seconds(self.counter as i64),
            actor: Actor::local_user(Some("ops".into()), Some(1000)),
            authorization: Authorization {
                decision: Decision::Allow,
                policy: "local-only".into(),
                reason: "test".into(),
            },
            minted: MintedIds {
                event_id: EventId::from_ulid(ulid::Ulid::from_parts(7, self.counter)),
                object_id: ulid::Ulid::from_parts(9, self.counter + 1),
            },
            command,
            precondition: None,
            idempotency_key: None,
            signed_by: None,
        }
    }

    /// Applies and, on success, keeps the new state.
    fn run(&mut self, command: Command) -> Result<Applied, ApplyError> {
        let envelope = self.envelope(command);
        let applied = self.apply(&envelope)?;
        self.keep(&applied);
        Ok(applied)
    }

    fn env(&self) -> &crate::environment::Environment {
        &self.state.as_ref().expect("state").environment
    }

    fn init(&mut self) {
        self.run(Command::EnvInit {
            answers: EnvInitAnswers::default(),
            defaults: defaults(),
        })
        .expect("init");
    }

    fn add_bundle(&mut self, bundle: &str, prefix: &str) -> DeploymentId {
        let applied = self
            .run(Command::BundleAdd(BundleAddAnswers {
                environment_id: EnvId::local(),
                bundle_id: bundle.parse().expect("bundle"),
                customer_id: None,
                route_binding: RouteBinding {
                    path_prefixes: vec![prefix.into()],
                    ..Default::default()
                },
                revenue_share: None,
                authorization_ref: None,
                config_overrides: None,
                idempotency_key: None,
            }))
            .expect("bundle add");
        applied.result["deployment_id"]
            .as_str()
            .expect("id")
            .parse()
            .expect("ulid")
    }

    /// Stages a revision with something to run: a bundle (as the edge
    /// staged it) whose runtime section asks for one instance.
    fn stage(&mut self, deployment_id: DeploymentId) -> RevisionId {
        let bundle_id = self
            .env()
            .deployment(deployment_id)
            .expect("deployment")
            .bundle_id
            .clone();
        let mut answers = stage_answers(deployment_id);
        answers.bundle_path = Some("bundle.gtbundle".into());
        let staged = StagedBundle {
            revision_id: RevisionId::from_ulid(ulid::Ulid::from_parts(8, self.counter)),
            bundle_id,
            bundle_digest: "sha256:ab".parse().expect("digest"),
            pack_list: vec![],
            pack_list_lock_ref: String::new(),
            runtime_instances: Some(1),
            scaling: None,
            secret_pins: Vec::new(),
            config_reload: Default::default(),
        };
        let applied = self
            .run(Command::RevisionStage {
                answers,
                staged: Some(Box::new(staged)),
            })
            .expect("stage");
        applied.result["revision_id"]
            .as_str()
            .expect("id")
            .parse()
            .expect("ulid")
    }

    fn revision_command(
        &mut self,
        make: fn(RevisionAnswers) -> Command,
        revision_id: RevisionId,
    ) -> Result<Applied, ApplyError> {
        self.run(make(RevisionAnswers {
            environment_id: EnvId::local(),
            revision_id,
            idempotency_key: None,
        }))
    }

    /// Warms `revision_id` the whole way: `warm`, then the runtime's
    /// report that every instance is healthy.
    fn warm(&mut self, revision_id: RevisionId) -> Result<Applied, ApplyError> {
        let warmed = self.revision_command(Command::warm, revision_id)?;
        if warmed.committed_error.is_some() || self.lifecycle(revision_id) != Lifecycle::Warming {
            return Ok(warmed);
        }
        self.run(Command::RevisionReport(RuntimeReport {
            environment_id: EnvId::local(),
            revision_id,
            outcome: RuntimeOutcome::Ready,
        }))
    }

    fn set(
        &mut self,
        deployment_id: DeploymentId,
        key: &str,
        entries: &[(&str, u32)],
    ) -> Result<Applied, ApplyError> {
        self.run(Command::TrafficSet(split_answers(
            deployment_id,
            key,
            entries,
        )))
    }

    fn lifecycle(&self, revision_id: RevisionId) -> Lifecycle {
        self.env()
            .revision(revision_id)
            .expect("revision")
            .lifecycle
    }
}

fn stage_answers(deployment_id: DeploymentId) -> RevisionStageAnswers {
    RevisionStageAnswers::new(EnvId::local(), deployment_id)
}

fn split_answers(
    deployment_id: DeploymentId,
    key: &str,
    entries: &[(&str, u32)],
) -> TrafficSetAnswers {
    TrafficSetAnswers {
        environment_id: EnvId::local(),
        deployment_id,
        entries: entries
            .iter()
            .map(|(revision_id, bps)| TrafficEntryAnswers {
                revision_id: (*revision_id).to_owned(),
                weight_bps: Some(*bps),
                weight_percent: None,
                tag: None,
            })
            .collect(),
        updated_by: None,
        idempotency_key: key.to_owned(),
        authorization_ref: None,
    }
}

#[test]
fn init_creates_then_is_untouched_then_heals() {
    let mut harness = Harness::new();
    let created = harness
        .run(Command::EnvInit {
            answers: EnvInitAnswers::default(),
            defaults: defaults(),
        })
        .expect("init");
    assert_eq!(created.result["outcome"], "created");
    assert_eq!(harness.env().packs.len(), 5);
    let again = harness
        .run(Command::EnvInit {
            answers: EnvInitAnswers::default(),
            defaults: defaults(),
        })
        .expect("init");
    assert_eq!(again.result["outcome"], "untouched");
    assert!(!again.changed && again.event.is_none(), "no audit churn");
    harness
        .run(Command::PackRemove(PackSlotAnswers {
            environment_id: EnvId::local(),
            slot: CapabilitySlot::State,
            idempotency_key: None,
        }))
        .expect("remove");
    let healed = harness
        .run(Command::EnvInit {
            answers: EnvInitAnswers::default(),
            defaults: defaults(),
        })
        .expect("init");
    assert_eq!(healed.result["outcome"], "healed");
    assert_eq!(healed.result["added_slots"], serde_json::json!(["state"]));
}

#[test]
fn the_operator_journey_guards_every_step() {
    let mut harness = Harness::new();
    harness.init();
    let deployment = harness.add_bundle("shop", "/shop");
    let v1 = harness.stage(deployment);
    let v2 = harness.stage(deployment);
    assert_eq!(harness.env().revision(v2).expect("v2").sequence, 2);

    // No traffic to a revision that is not ready.
    let refused = harness.set(deployment, "k0", &[(&v1.to_string(), 10_000)]);
    assert!(
        matches!(refused, Err(ApplyError::Conflict { .. })),
        "{refused:?}"
    );

    harness.warm(v1).expect("warm v1");
    harness.warm(v2).expect("warm v2");
    assert_eq!(harness.lifecycle(v1), Lifecycle::Ready);

    let first = harness
        .set(deployment, "k1", &[(&v1.to_string(), 10_000)])
        .expect("set");
    assert_eq!(first.result["generation"], 0);
    let second = harness
        .set(
            deployment,
            "k2",
            &[(&v1.to_string(), 9_900), (&v2.to_string(), 100)],
        )
        .expect("99/1");
    assert_eq!(second.result["generation"], 1);

    // Same key, same entries in another order: replay, generation unchanged.
    let generation = harness.state.as_ref().expect("state").generation;
    let replay = harness
        .set(
            deployment,
            "k2",
            &[(&v2.to_string(), 100), (&v1.to_string(), 9_900)],
        )
        .expect("replay");
    assert!(replay.replayed);
    assert_eq!(replay.result, second.result);
    assert_eq!(
        harness.state.as_ref().expect("state").generation,
        generation
    );
    // Same key, other entries: conflict.
    assert!(matches!(
        harness.set(deployment, "k2", &[(&v1.to_string(), 10_000)]),
        Err(ApplyError::IdempotencyConflict { .. })
    ));

    let rolled = harness
        .run(Command::TrafficRollback(DeploymentAnswers {
            environment_id: EnvId::local(),
            deployment_id: deployment,
            idempotency_key: None,
        }))
        .expect("rollback");
    assert_eq!(rolled.result["generation"], 2);
    assert_eq!(
        rolled.result["entries"].as_array().expect("entries").len(),
        1
    );

    // No archiving what still serves, and no draining either.
    assert!(matches!(
        harness.revision_command(Command::RevisionArchive, v1),
        Err(ApplyError::ActiveTrafficReference { .. })
    ));
    assert!(matches!(
        harness.revision_command(Command::RevisionDrain, v1),
        Err(ApplyError::ActiveTrafficReference { .. })
    ));
    harness
        .revision_command(Command::RevisionDrain, v2)
        .expect("drain v2");
    assert_eq!(harness.lifecycle(v2), Lifecycle::Draining);
    assert!(matches!(
        harness.revision_command(Command::warm, v2),
        Err(ApplyError::InvalidTransition { .. })
    ));
    harness
        .revision_command(Command::RevisionArchive, v2)
        .expect("archive v2");
    assert_eq!(harness.lifecycle(v2), Lifecycle::Archived);
    let deployment_doc = harness.env().deployment(deployment).expect("deployment");
    assert_eq!(deployment_doc.current_revisions, vec![v1]);
}

#[test]
fn a_failed_warm_gate_persists_failed_and_a_retry_recovers() {
    let mut harness = Harness::new();
    harness.init();
    let deployment = harness.add_bundle("shop", "/");
    let revision = harness.stage(deployment);
    harness
        .run(Command::BundleUpdate(BundleUpdateAnswers {
            environment_id: EnvId::local(),
            deployment_id: deployment,
            status: Some(DeploymentStatus::Paused),
            route_binding: None,
            revenue_share: None,
            config_overrides: None,
            idempotency_key: None,
        }))
        .expect("pause");
    let applied = harness
        .revision_command(Command::warm, revision)
        .expect("committed on error");
    assert!(matches!(
        applied.committed_error,
        Some(ApplyError::HealthGateFailed { ref failed_checks, .. }) if failed_checks == &["deployment-active"]
    ));
    assert_eq!(harness.lifecycle(revision), Lifecycle::Failed);
    harness
        .run(Command::BundleUpdate(BundleUpdateAnswers {
            environment_id: EnvId::local(),
            deployment_id: deployment,
            status: Some(DeploymentStatus::Active),
            route_binding: None,
            revenue_share: None,
            config_overrides: None,
            idempotency_key: None,
        }))
        .expect("resume");
    harness.warm(revision).expect("retry");
    assert_eq!(harness.lifecycle(revision), Lifecycle::Ready);
}

#[test]
fn latest_follows_the_newest_ready_revision() {
    let mut harness = Harness::new();
    harness.init();
    let deployment = harness.add_bundle("shop", "/");
    let v1 = harness.stage(deployment);
    harness.warm(v1).expect("warm");
    harness
        .set(deployment, "k1", &[("LATEST", 10_000)])
        .expect("set");
    let v2 = harness.stage(deployment);
    harness.warm(v2).expect("warm");
    let split = harness.env().split(deployment).expect("split");
    assert_eq!(split.entries[0].revision_id, v2);
    assert!(split.entries[0].latest);
    assert_eq!(split.generation, 1);
}

#[test]
fn a_revision_of_another_deployment_is_refused_by_field() {
    let mut harness = Harness::new();
    harness.init();
    let shop = harness.add_bundle("shop", "/shop");
    let blog = harness.add_bundle("blog", "/blog");
    let foreign = harness.stage(blog);
    harness.warm(foreign).expect("warm");
    let error = harness
        .set(shop, "k", &[(&foreign.to_string(), 10_000)])
        .expect_err("foreign");
    assert_eq!(error.field(), Some("entries[0].revision_id"));
}

#[test]
fn route_conflicts_name_the_deployment_that_holds_the_route() {
    // Issue 20's class: a refused route names only deployments that exist
    // (the holder), never the id minted for the refused `bundles add`.
    let mut harness = Harness::new();
    harness.init();
    let shop = harness.add_bundle("shop", "/api");
    let blog = harness.add_bundle("blog", "/blog");
    let error = harness
        .run(Command::BundleAdd(BundleAddAnswers {
            environment_id: EnvId::local(),
            bundle_id: "wiki".parse().expect("bundle"),
            customer_id: None,
            route_binding: RouteBinding {
                path_prefixes: vec!["/docs".into(), "/api".into()],
                ..Default::default()
            },
            revenue_share: None,
            authorization_ref: None,
            config_overrides: None,
            idempotency_key: None,
        }))
        .expect_err("conflict");
    let taken = |error: &ApplyError| match error {
        ApplyError::Validation(crate::environment::ValidationError::RouteTaken {
            holder, ..
        }) => Some(*holder),
        _ => None,
    };
    assert_eq!(taken(&error), Some(shop), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("bundle shop") && message.contains("\"/api\""),
        "{message}"
    );
    // Every id the message names is a deployment that exists.
    for word in message.split(|c: char| !c.is_ascii_alphanumeric()) {
        if word.len() == 26 && word.parse::<DeploymentId>().is_ok() {
            assert!(
                harness
                    .env()
                    .deployment(word.parse().expect("id"))
                    .is_some(),
                "{message} names {word}, which does not exist"
            );
        }
    }
    // Moving another deployment onto the route names the holder too.
    let error = harness
        .run(Command::BundleUpdate(BundleUpdateAnswers {
            environment_id: EnvId::local(),
            deployment_id: blog,
            route_binding: Some(RouteBinding {
                path_prefixes: vec!["/api".into()],
                ..Default::default()
            }),
            status: None,
            revenue_share: None,
            config_overrides: None,
            idempotency_key: None,
        }))
        .expect_err("conflict");
    assert_eq!(taken(&error), Some(shop), "{error}");
    // A deployment may keep its own routes.
    harness
        .run(Command::BundleUpdate(BundleUpdateAnswers {
            environment_id: EnvId::local(),
            deployment_id: shop,
            route_binding: Some(RouteBinding {
                path_prefixes: vec!["/api".into(), "/v2".into()],
                ..Default::default()
            }),
            status: None,
            revenue_share: None,
            config_overrides: None,
            idempotency_key: None,
        }))
        .expect("own route");
}

#[test]
fn weights_in_percent_convert_exactly() {
    let mut harness = Harness::new();
    harness.init();
    let deployment = harness.add_bundle("shop", "/");
    let v1 = harness.stage(deployment);
    let v2 = harness.stage(deployment);
    harness.warm(v1).expect("warm");
    harness.warm(v2).expect("warm");
    let percent = |revision: RevisionId, percent: f64| TrafficEntryAnswers {
        revision_id: revision.to_string(),
        weight_bps: None,
        weight_percent: Some(percent),
        tag: None,
    };
    let mut answers = split_answers(deployment, "p", &[]);
    answers.entries = vec![percent(v1, 99.5), percent(v2, 0.5)];
    let applied = harness
        .run(Command::TrafficSet(answers.clone()))
        .expect("percent");
    assert_eq!(applied.result["entries"][0]["weight_bps"], 9_950);
    answers.idempotency_key = "q".into();
    answers.entries = vec![percent(v1, 99.0), percent(v2, 0.5)];
    let error = harness
        .run(Command::TrafficSet(answers.clone()))
        .expect_err("sum");
    assert!(error.to_string().contains("9950 bps"), "{error}");
    answers.entries = vec![percent(v1, 33.333), percent(v2, 66.667)];
    assert_eq!(
        harness
            .run(Command::TrafficSet(answers))
            .expect_err("decimals")
            .field(),
        Some("entries[0].weight_percent")
    );
}

#[test]
fn an_entry_with_both_weights_is_refused_not_decided() {
    let mut harness = Harness::new();
    harness.init();
    let deployment = harness.add_bundle("shop", "/");
    let v1 = harness.stage(deployment);
    harness.revision_command(Command::warm, v1).expect("warm");
    let mut answers = split_answers(deployment, "both", &[]);
    answers.entries = vec![TrafficEntryAnswers {
        revision_id: v1.to_string(),
        weight_bps: Some(10_000),
        weight_percent: Some(50.0),
        tag: None,
    }];
    let error = harness
        .run(Command::TrafficSet(answers))
        .expect_err("both weights");
    assert_eq!(error.field(), Some("entries[0]"));
    assert!(error.to_string().contains("not both"), "{error}");
}

#[test]
fn an_update_with_nothing_to_change_is_refused() {
    let mut harness = Harness::new();
    harness.init();
    let deployment = harness.add_bundle("shop", "/");
    let error = harness
        .run(Command::EnvUpdate(EnvUpdateAnswers {
            environment_id: EnvId::local(),
            name: None,
            region: None,
            tenant_org_id: None,
            listen_addr: None,
            public_base_url: None,
            gui_enabled: None,
            credentials_ref: None,
            idempotency_key: None,
        }))
        .expect_err("empty env update");
    assert!(error.to_string().contains("nothing to change"), "{error}");
    let error = harness
        .run(Command::BundleUpdate(BundleUpdateAnswers {
            environment_id: EnvId::local(),
            deployment_id: deployment,
            status: None,
            route_binding: None,
            revenue_share: None,
            config_overrides: None,
            idempotency_key: None,
        }))
        .expect_err("empty bundle update");
    assert!(error.to_string().contains("nothing to change"), "{error}");
}

#[test]
fn destroy_removes_the_state() {
    let mut harness = Harness::new();
    harness.init();
    let applied = harness
        .run(Command::EnvDestroy(EnvTargetAnswers {
            environment_id: EnvId::local(),
        }))
        .expect("destroy");
    assert!(applied.state.is_none());
}

fn bundle_update(key: Option<&str>, deployment_id: DeploymentId, paused: bool) -> Command {
    Command::BundleUpdate(BundleUpdateAnswers {
        environment_id: EnvId::local(),
        deployment_id,
        status: Some(if paused {
            DeploymentStatus::Paused
        } else {
            DeploymentStatus::Active
        }),
        route_binding: None,
        revenue_share: None,
        config_overrides: None,
        idempotency_key: key.map(str::to_owned),
    })
}

#[test]
fn an_envelope_key_replays_the_first_etag_and_audit_event() {
    let mut harness = Harness::new();
    harness.init();
    let deployment = harness.add_bundle("shop", "/");
    let mut first = harness.envelope(bundle_update(None, deployment, true));
    first.idempotency_key = Some("k-1".into());
    let applied = harness.apply(&first).expect("first");
    let state = applied.state.clone().expect("state");
    let record = applied.record.clone().expect("record");
    assert_eq!(record.key, "k-1");
    assert_eq!(record.generation, state.generation);
    assert_eq!(record.etag.as_deref(), Some(state.etag().as_str()));
    assert_eq!(record.event, applied.event);
    assert!(
        state.legacy_idempotency.is_empty(),
        "the record is kept beside the state, not in it"
    );
    harness.keep(&applied);

    // The retry carries a stale If-Match (its own first attempt moved the
    // etag) and still replays, with the first answer's facts.
    let mut retry = harness.envelope(bundle_update(None, deployment, true));
    retry.idempotency_key = Some("k-1".into());
    retry.precondition = Some(crate::precondition::Precondition::if_match("1-stale"));
    let replayed = harness.apply(&retry).expect("retry");
    assert!(replayed.replayed);
    assert_eq!(replayed.result, applied.result);
    assert_eq!(replayed.record.as_ref(), Some(&record));
    assert_eq!(
        replayed.state.as_ref(),
        Some(&state),
        "a replay changes nothing"
    );

    // Without its record (a store that lost it, or a key never seen) the
    // same envelope is a new change; a record of another key answers
    // nothing.
    let mut stranger = record.clone();
    stranger.key = "k-2".into();
    let fresh = apply(harness.state.as_ref(), Some(&stranger), &retry);
    assert!(
        !matches!(&fresh, Ok(applied) if applied.replayed),
        "{fresh:?}"
    );

    let mut other = harness.envelope(bundle_update(None, deployment, false));
    other.idempotency_key = Some("k-1".into());
    assert!(matches!(
        harness.apply(&other),
        Err(ApplyError::IdempotencyConflict { .. })
    ));
}

#[test]
fn a_guarded_write_needs_a_precondition_that_holds() {
    let mut harness = Harness::new();
    harness.init();
    let deployment = harness.add_bundle("shop", "/");
    let etag = harness.state.as_ref().expect("state").etag();

    let mut empty = harness.envelope(bundle_update(None, deployment, true));
    empty.precondition = Some(Default::default());
    assert!(matches!(
        harness.apply(&empty),
        Err(ApplyError::PreconditionRequired { .. })
    ));

    let mut stale = harness.envelope(bundle_update(None, deployment, true));
    stale.precondition = Some(crate::precondition::Precondition::if_match("2-stale"));
    match harness.apply(&stale) {
        Err(ApplyError::PreconditionFailed {
            actual_etag,
            actual_generation,
            ..
        }) => {
            assert_eq!(actual_etag, etag);
            assert_eq!(actual_generation, 2);
        }
        other => panic!("expected precondition-failed, got {other:?}"),
    }

    let mut fresh = harness.envelope(bundle_update(None, deployment, true));
    fresh.precondition = Some(crate::precondition::Precondition::if_match(etag.clone()));
    let applied = harness.apply(&fresh).expect("fresh");
    let next = applied.state.expect("state");
    assert_ne!(next.etag(), etag, "every change moves the etag");
    assert!(next.etag().starts_with("3-"));
}

/// An abstract operator action; indices pick among what exists at the time.
#[derive(Debug, Clone)]
enum Action {
    AddBundle(u8),
    Stage(u8),
    /// Stages a revision without a bundle (nothing to run).
    StageBare(u8),
    Warm(u8),
    /// The runtime's report on a revision: ready, failed or drained.
    Report(u8, u8),
    Drain(u8),
    Archive(u8),
    Set(u8, Vec<(u8, u16)>, u8),
    SetLatest(u8),
    SetPair(u8, u8, u8, u16, u8),
    Rollback(u8),
    Clear(u8),
    RemoveBundle(u8),
    Pause(u8, bool),
    RemovePack(u8),
    Init,
    /// Deployment, candidate, stable (or the split's), first weight.
    RolloutStart(u8, u8, Option<u8>, u16),
    /// Deployment, pause/resume/promote/abort.
    RolloutAct(u8, u8),
    /// Deployment, step, advance/hold/roll back/hold limit, requests, errors.
    RolloutDecide(u8, u8, u8, u16, u16),
    /// Revision, min_instances, max_instances (either may be out of range).
    Scale(u8, u8, u8),
    /// Revision, desired count (in or out of the bounds).
    ScaleDecide(u8, u8),
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        (0u8..4).prop_map(Action::AddBundle),
        any::<u8>().prop_map(Action::Stage),
        any::<u8>().prop_map(Action::StageBare),
        any::<u8>().prop_map(Action::Warm),
        (any::<u8>(), 0u8..3).prop_map(|(r, o)| Action::Report(r, o)),
        any::<u8>().prop_map(Action::Drain),
        any::<u8>().prop_map(Action::Archive),
        (
            any::<u8>(),
            proptest::collection::vec((any::<u8>(), 0u16..10_001), 1..4),
            0u8..6
        )
            .prop_map(|(d, e, k)| Action::Set(d, e, k)),
        any::<u8>().prop_map(Action::SetLatest),
        (any::<u8>(), any::<u8>(), any::<u8>(), 0u16..10_001, 0u8..6)
            .prop_map(|(d, a, b, w, k)| Action::SetPair(d, a, b, w, k)),
        any::<u8>().prop_map(Action::Rollback),
        any::<u8>().prop_map(Action::Clear),
        any::<u8>().prop_map(Action::RemoveBundle),
        (any::<u8>(), any::<bool>()).prop_map(|(d, p)| Action::Pause(d, p)),
        (0u8..5).prop_map(Action::RemovePack),
        Just(Action::Init),
        (
            any::<u8>(),
            any::<u8>(),
            proptest::option::of(any::<u8>()),
            1u16..10_000
        )
            .prop_map(|(d, c, s, w)| Action::RolloutStart(d, c, s, w)),
        (any::<u8>(), 0u8..4).prop_map(|(d, a)| Action::RolloutAct(d, a)),
        (any::<u8>(), 0u8..3, 0u8..4, 0u16..300, 0u16..30)
            .prop_map(|(d, s, k, r, e)| Action::RolloutDecide(d, s, k, r, e)),
        (any::<u8>(), 0u8..5, 0u8..5).prop_map(|(r, min, max)| Action::Scale(r, min, max)),
        (any::<u8>(), 0u8..6).prop_map(|(r, n)| Action::ScaleDecide(r, n)),
    ]
}

/// The moves scaling depends on, and scaling itself.
fn scaling_action() -> impl Strategy<Value = Action> {
    prop_oneof![
        (0u8..3).prop_map(Action::Stage),
        (0u8..3).prop_map(Action::Warm),
        (0u8..3, 0u8..3).prop_map(|(r, o)| Action::Report(r, o)),
        (0u8..3).prop_map(Action::Drain),
        (0u8..3, 0u8..5, 0u8..5).prop_map(|(r, min, max)| Action::Scale(r, min, max)),
        (0u8..3, 0u8..6).prop_map(|(r, n)| Action::ScaleDecide(r, n)),
        (0u8..3, 0u8..6).prop_map(|(r, n)| Action::ScaleDecide(r, n)),
    ]
}

/// The analysis every generated rollout uses: 100 requests, at most 1 %
/// errors, 60 s windows.
fn rollout_analysis() -> crate::rollout::AnalysisSettings {
    crate::rollout::AnalysisSettings {
        window_seconds: 60,
        min_requests: 100,
        checks: vec![crate::rollout::MetricCheck::ErrorRate {
            max_bps: 100,
            relative_to_stable: false,
        }],
        hold_limit_seconds: 10,
        on_hold_limit: crate::rollout::HoldLimitAction::Abort,
    }
}

/// Steps at `first` bps (a 4 s pause), then twice that (analysis), then
/// 10000 (manual): a pause, an analysis and a person in every rollout.
fn rollout_steps(first: u32) -> Vec<crate::rollout::RolloutStep> {
    use crate::rollout::{RolloutStep, StepGate};
    let second = (first * 2).min(9_999).max(first + 1);
    vec![
        RolloutStep {
            weight_bps: first,
            until: StepGate::Pause { seconds: 4 },
        },
        RolloutStep {
            weight_bps: second,
            until: StepGate::Analysis,
        },
        RolloutStep {
            weight_bps: 10_000,
            until: StepGate::Manual,
        },
    ]
}

fn pick<T: Copy>(items: &[T], index: u8) -> Option<T> {
    (!items.is_empty()).then(|| items[usize::from(index) % items.len()])
}

fn to_command(harness: &Harness, action: &Action) -> Option<Command> {
    let env = harness.env();
    let deployments: Vec<DeploymentId> = env.bundles.iter().map(|b| b.deployment_id).collect();
    let revisions: Vec<RevisionId> = env.revisions.iter().map(|r| r.revision_id).collect();
    let local = EnvId::local;
    let revision = |make: fn(RevisionAnswers) -> Command, index: u8| {
        pick(&revisions, index).map(|revision_id| {
            make(RevisionAnswers {
                environment_id: local(),
                revision_id,
                idempotency_key: None,
            })
        })
    };
    let deployment = |index: u8| {
        pick(&deployments, index).map(|deployment_id| DeploymentAnswers {
            environment_id: local(),
            deployment_id,
            idempotency_key: None,
        })
    };
    Some(match action {
        Action::AddBundle(n) => Command::BundleAdd(BundleAddAnswers {
            environment_id: local(),
            bundle_id: format!("bundle-{n}").parse().ok()?,
            customer_id: None,
            route_binding: RouteBinding {
                path_prefixes: vec![format!("/b{n}")],
                ..Default::default()
            },
            revenue_share: None,
            authorization_ref: None,
            config_overrides: None,
            idempotency_key: None,
        }),
        Action::Stage(d) => {
            let deployment_id = pick(&deployments, *d)?;
            let mut answers = stage_answers(deployment_id);
            answers.bundle_path = Some("bundle.gtbundle".into());
            Command::RevisionStage {
                answers,
                staged: Some(Box::new(StagedBundle {
                    // The next envelope's counter: unique per stage.
                    revision_id: RevisionId::from_ulid(ulid::Ulid::from_parts(
                        8,
                        harness.counter + 2,
                    )),
                    bundle_id: env.deployment(deployment_id)?.bundle_id.clone(),
                    bundle_digest: "sha256:ab".parse().ok()?,
                    pack_list: vec![],
                    pack_list_lock_ref: String::new(),
                    runtime_instances: Some(1),
                    scaling: None,
                    secret_pins: Vec::new(),
                    config_reload: Default::default(),
                })),
            }
        }
        Action::StageBare(d) => Command::RevisionStage {
            answers: stage_answers(pick(&deployments, *d)?),
            staged: None,
        },
        Action::Warm(r) => revision(Command::warm, *r)?,
        Action::Report(r, outcome) => Command::RevisionReport(RuntimeReport {
            environment_id: local(),
            revision_id: pick(&revisions, *r)?,
            outcome: match outcome {
                0 => RuntimeOutcome::Ready,
                1 => RuntimeOutcome::Failed {
                    reason: "health check timed out".into(),
                },
                _ => RuntimeOutcome::Drained,
            },
        }),
        Action::Scale(r, min, max) => {
            Command::RevisionScale(crate::command::RevisionScaleAnswers {
                environment_id: local(),
                revision_id: pick(&revisions, *r)?,
                scaling: crate::scaling::ScalingSettings {
                    min_instances: u32::from(*min),
                    max_instances: u32::from(*max),
                    ..Default::default()
                },
                idempotency_key: None,
            })
        }
        Action::ScaleDecide(r, desired) => {
            Command::ScaleDecide(crate::command::ScaleDecisionAnswers {
                environment_id: local(),
                revision_id: pick(&revisions, *r)?,
                desired: u32::from(*desired),
                mode: "stable".to_owned(),
                stable_concurrency: 0.0,
                panic_concurrency: 0.0,
                queued: 0,
                decided_in_term: None,
            })
        }
        Action::Drain(r) => revision(Command::RevisionDrain, *r)?,
        Action::Archive(r) => revision(Command::RevisionArchive, *r)?,
        Action::Set(d, entries, key) => {
            let entries: Vec<(String, u32)> = entries
                .iter()
                .filter_map(|(r, w)| Some((pick(&revisions, *r)?.to_string(), u32::from(*w))))
                .collect();
            let borrowed: Vec<(&str, u32)> =
                entries.iter().map(|(r, w)| (r.as_str(), *w)).collect();
            Command::TrafficSet(split_answers(
                pick(&deployments, *d)?,
                &format!("key-{key}"),
                &borrowed,
            ))
        }
        Action::SetPair(d, a, b, weight, key) => {
            let first = pick(&revisions, *a)?.to_string();
            let second = pick(&revisions, *b)?.to_string();
            let weight = u32::from(*weight);
            Command::TrafficSet(split_answers(
                pick(&deployments, *d)?,
                &format!("pair-{key}"),
                &[(&first, weight), (&second, 10_000 - weight)],
            ))
        }
        Action::SetLatest(d) => Command::TrafficSet(split_answers(
            pick(&deployments, *d)?,
            &format!("latest-{d}"),
            &[("LATEST", 10_000)],
        )),
        Action::Rollback(d) => Command::TrafficRollback(deployment(*d)?),
        Action::Clear(d) => Command::TrafficClear(deployment(*d)?),
        Action::RemoveBundle(d) => Command::BundleRemove(deployment(*d)?),
        Action::Pause(d, paused) => Command::BundleUpdate(BundleUpdateAnswers {
            environment_id: local(),
            deployment_id: pick(&deployments, *d)?,
            status: Some(if *paused {
                DeploymentStatus::Paused
            } else {
                DeploymentStatus::Active
            }),
            route_binding: None,
            revenue_share: None,
            config_overrides: None,
            idempotency_key: None,
        }),
        Action::RemovePack(slot) => Command::PackRemove(PackSlotAnswers {
            environment_id: local(),
            slot: CapabilitySlot::CORE[usize::from(*slot) % 5],
            idempotency_key: None,
        }),
        Action::Init => Command::EnvInit {
            answers: EnvInitAnswers::default(),
            defaults: defaults(),
        },
        Action::RolloutStart(d, c, s, first) => Command::RolloutStart(RolloutStartAnswers {
            environment_id: local(),
            deployment_id: pick(&deployments, *d)?,
            candidate_revision_id: pick(&revisions, *c)?,
            stable_revision_id: match s {
                Some(s) => Some(pick(&revisions, *s)?),
                None => None,
            },
            steps: rollout_steps(u32::from(*first)),
            analysis: Some(rollout_analysis()),
            stable_grace_seconds: Some(4),
            idempotency_key: format!("rollout-{}", harness.counter),
        }),
        Action::RolloutAct(d, action) => Command::RolloutAct {
            action: [
                crate::rollout::PersonAction::Pause,
                crate::rollout::PersonAction::Resume,
                crate::rollout::PersonAction::Promote,
                crate::rollout::PersonAction::Abort,
            ][usize::from(*action) % 4],
            answers: RolloutActionAnswers {
                environment_id: local(),
                deployment_id: pick(&deployments, *d)?,
                reason: None,
                idempotency_key: None,
            },
        },
        Action::RolloutDecide(d, step, kind, requests, errors) => {
            use crate::rollout::{AnalysisRecord, ControllerDecision, WindowCounts};
            let record = AnalysisRecord {
                step: u32::from(*step),
                window_seconds: 60,
                candidate: WindowCounts {
                    requests: u64::from(*requests),
                    server_errors: u64::from((*errors).min(*requests)),
                    upstream_errors: 0,
                    latency_buckets: Vec::new(),
                },
                stable: WindowCounts::default(),
            };
            Command::RolloutDecide(RolloutDecisionAnswers {
                environment_id: local(),
                deployment_id: pick(&deployments, *d)?,
                step: u32::from(*step),
                decision: match kind {
                    0 => ControllerDecision::Advance {
                        analysis: Some(record),
                    },
                    1 => ControllerDecision::Hold { analysis: record },
                    2 => ControllerDecision::RollBack { analysis: record },
                    _ => ControllerDecision::HoldLimit,
                },
                decided_in_term: None,
            })
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random operator sequences never produce a state that fails
    /// validation; generations move by exactly one per change; refused
    /// commands change nothing; every split only names ready revisions.
    #[test]
    fn random_command_sequences_keep_the_state_valid(actions in proptest::collection::vec(action(), 1..60)) {
        let mut harness = Harness::new();
        harness.init();
        for action in &actions {
            let Some(command) = to_command(&harness, action) else { continue };
            let before = harness.state.clone().expect("state");
            let envelope = harness.envelope(command);
            match apply(Some(&before), harness.recorded(&envelope), &envelope) {
                Ok(applied) => {
                    let state = applied.state.clone().expect("environment survives");
                    prop_assert!(state.validate(&EnvId::local()).is_ok(), "{:?}", state.validate(&EnvId::local()));
                    if applied.changed {
                        prop_assert_eq!(state.generation, before.generation + 1);
                        prop_assert!(applied.event.is_some());
                    } else {
                        prop_assert_eq!(&state, &before);
                    }
                    for split in &state.environment.traffic_splits {
                        for entry in &split.entries {
                            let revision = state.environment.revision(entry.revision_id).expect("exists");
                            prop_assert_eq!(revision.lifecycle, Lifecycle::Ready);
                            prop_assert!(revision.has_something_to_run(), "a split names a revision with nothing to run");
                        }
                    }
                    harness.keep(&applied);
                    prop_assert_eq!(harness.state.as_ref(), Some(&state));
                }
                Err(error) => {
                    prop_assert!(!error.to_string().is_empty());
                    prop_assert!(harness.state.as_ref() == Some(&before));
                }
            }
        }
    }

    /// Scaling commands among the lifecycle moves they depend on: whatever
    /// a person or an autoscaler (right, stale or wrong) sends, every
    /// committed count stays within its revision's bounds (the state
    /// validates), and a refused command changes nothing.
    #[test]
    fn random_scaling_sequences_keep_every_count_within_its_bounds(actions in proptest::collection::vec(scaling_action(), 1..40)) {
        let mut harness = Harness::new();
        harness.init();
        harness.add_bundle("shop", "/");
        for action in &actions {
            let Some(command) = to_command(&harness, action) else { continue };
            let before = harness.state.clone().expect("state");
            let envelope = harness.envelope(command);
            match apply(Some(&before), harness.recorded(&envelope), &envelope) {
                Ok(applied) => {
                    let state = applied.state.clone().expect("environment survives");
                    prop_assert!(state.validate(&EnvId::local()).is_ok(), "{:?}", state.validate(&EnvId::local()));
                    for revision in &state.environment.revisions {
                        if let (Some(scaling), Some(count)) = (revision.scaling, revision.instance_count())
                            && matches!(revision.lifecycle, Lifecycle::Warming | Lifecycle::Ready)
                        {
                            prop_assert!(count <= scaling.max_instances, "{count} > max");
                            prop_assert!(count >= scaling.min_instances.min(1).max(scaling.min_instances), "{count} < min");
                        }
                    }
                    if !applied.changed {
                        prop_assert_eq!(&state, &before);
                    }
                    harness.keep(&applied);
                }
                Err(_) => prop_assert!(harness.state.as_ref() == Some(&before)),
            }
        }
    }

    /// Applying the same envelope to the same state twice gives identical
    /// results: `apply` is deterministic, which replication relies on.
    #[test]
    fn apply_is_deterministic(actions in proptest::collection::vec(action(), 1..30)) {
        let mut harness = Harness::new();
        harness.init();
        for action in &actions {
            let Some(command) = to_command(&harness, action) else { continue };
            let envelope = harness.envelope(command);
            let first = harness.apply(&envelope);
            let second = harness.apply(&envelope);
            prop_assert_eq!(&first, &second);
            if let Ok(applied) = first {
                harness.keep(&applied);
            }
        }
    }
}

#[test]
fn a_staged_bundle_must_match_its_deployment_and_payload() {
    let mut harness = Harness::new();
    harness.init();
    let deployment = harness.add_bundle("shop", "/");
    let staged = |bundle: &str| StagedBundle {
        revision_id: RevisionId::from_ulid(ulid::Ulid::from_parts(5, 5)),
        bundle_id: bundle.parse().expect("bundle"),
        bundle_digest: "sha256:ab".parse().expect("digest"),
        pack_list: vec![],
        pack_list_lock_ref: "revisions/x/pack-list.lock".into(),
        runtime_instances: None,
        scaling: None,
        secret_pins: Vec::new(),
        config_reload: Default::default(),
    };
    let mut answers = stage_answers(deployment);
    answers.bundle_path = Some("shop.gtbundle".into());
    let stage =
        |answers: RevisionStageAnswers, staged: Option<StagedBundle>| Command::RevisionStage {
            answers,
            staged: staged.map(Box::new),
        };

    let wrong = harness
        .run(stage(answers.clone(), Some(staged("blog"))))
        .expect_err("wrong bundle");
    assert_eq!(wrong.field(), Some("bundle_path"));
    let unstaged = harness
        .run(stage(answers.clone(), None))
        .expect_err("not staged");
    assert_eq!(unstaged.field(), Some("bundle_path"));
    let mut computed = answers.clone();
    computed.bundle_digest = Some("sha256:cd".parse().expect("digest"));
    let both = harness
        .run(stage(computed, Some(staged("shop"))))
        .expect_err("computed field given");
    assert_eq!(both.field(), Some("bundle_digest"));

    let applied = harness
        .run(stage(answers, Some(staged("shop"))))
        .expect("staged");
    let revision_id: RevisionId = applied.result["revision_id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("ulid");
    let revision = harness.env().revision(revision_id).expect("revision");
    assert_eq!(revision.bundle_digest.as_str(), "sha256:ab");
    assert_eq!(revision.pack_list_lock_ref, "revisions/x/pack-list.lock");
}

#[test]
fn a_revision_with_something_to_run_warms_through_the_runtime() {
    // Proves: with a runtime, warm stops at `warming`; the runtime's report
    // makes it ready (and moves LATEST) or failed; drain ends at inactive
    // only when the runtime says the drain finished; stale reports change nothing.
    let mut harness = Harness::new();
    harness.init();
    let deployment = harness.add_bundle("shop", "/");
    let staged = |n: u128| StagedBundle {
        revision_id: RevisionId::from_ulid(ulid::Ulid::from_parts(8, n)),
        bundle_id: "shop".parse().expect("bundle"),
        bundle_digest: "sha256:ab".parse().expect("digest"),
        pack_list: vec![],
        pack_list_lock_ref: String::new(),
        runtime_instances: Some(2),
        scaling: None,
        secret_pins: Vec::new(),
        config_reload: Default::default(),
    };
    let mut answers = stage_answers(deployment);
    answers.bundle_path = Some("shop.gtbundle".into());
    let stage = |answers: RevisionStageAnswers, n| Command::RevisionStage {
        answers,
        staged: Some(Box::new(staged(n))),
    };
    harness.run(stage(answers.clone(), 1)).expect("stage v1");
    harness.run(stage(answers, 2)).expect("stage v2");
    let v1 = RevisionId::from_ulid(ulid::Ulid::from_parts(8, 1));
    let v2 = RevisionId::from_ulid(ulid::Ulid::from_parts(8, 2));
    let report = |revision_id, outcome| {
        Command::RevisionReport(RuntimeReport {
            environment_id: EnvId::local(),
            revision_id,
            outcome,
        })
    };

    harness.revision_command(Command::warm, v1).expect("warm");
    assert_eq!(harness.lifecycle(v1), Lifecycle::Warming);
    assert!(
        matches!(
            harness.set(deployment, "early", &[(&v1.to_string(), 10_000)]),
            Err(ApplyError::Conflict { .. })
        ),
        "no traffic while warming"
    );
    assert!(
        matches!(
            harness.run(report(v1, RuntimeOutcome::Drained)),
            Err(ApplyError::Conflict { .. })
        ),
        "stale report"
    );
    harness
        .run(report(v1, RuntimeOutcome::Ready))
        .expect("ready");
    assert_eq!(harness.lifecycle(v1), Lifecycle::Ready);
    harness
        .set(deployment, "k", &[("LATEST", 10_000)])
        .expect("split");

    harness.revision_command(Command::warm, v2).expect("warm");
    harness
        .run(report(
            v2,
            RuntimeOutcome::Failed {
                reason: "health check timed out".into(),
            },
        ))
        .expect("failed");
    assert_eq!(harness.lifecycle(v2), Lifecycle::Failed);
    assert_eq!(
        harness.env().split(deployment).expect("split").entries[0].revision_id,
        v1,
        "LATEST ignores failed revisions"
    );
    harness.revision_command(Command::warm, v2).expect("retry");
    harness
        .run(report(v2, RuntimeOutcome::Ready))
        .expect("ready");
    assert_eq!(
        harness.env().split(deployment).expect("split").entries[0].revision_id,
        v2,
        "LATEST follows the newest ready"
    );

    harness
        .revision_command(Command::RevisionDrain, v1)
        .expect("drain");
    assert_eq!(harness.lifecycle(v1), Lifecycle::Draining);
    harness
        .run(report(v1, RuntimeOutcome::Drained))
        .expect("drained");
    assert_eq!(harness.lifecycle(v1), Lifecycle::Inactive);
}

#[test]
fn placements_are_recorded_for_running_revisions_only() {
    // Proves: the leader's placement lands on a warming revision, a repeat
    // changes nothing (no new generation), and placements of a revision
    // that does not run, or with a bad node name, are refused.
    let mut harness = Harness::new();
    harness.init();
    let deployment = harness.add_bundle("shop", "/");
    let revision = harness.stage(deployment);
    let place = |nodes: &[&str]| {
        Command::RevisionPlace(PlacementAnswers {
            environment_id: EnvId::local(),
            placements: std::collections::BTreeMap::from([(
                revision,
                nodes.iter().map(|n| (*n).to_owned()).collect(),
            )]),
            decided_in_term: None,
        })
    };
    assert!(matches!(
        harness.run(place(&["n1"])),
        Err(ApplyError::Conflict { .. })
    ));
    harness
        .revision_command(Command::warm, revision)
        .expect("warm");
    let placed = harness.run(place(&["n1", "n2"])).expect("place");
    assert!(placed.changed);
    let again = harness.run(place(&["n1", "n2"])).expect("place again");
    assert!(!again.changed, "the same placement is not a change");
    assert!(matches!(
        harness.run(place(&["N1"])),
        Err(ApplyError::InvalidField { .. })
    ));
}

#[test]
fn a_revision_with_nothing_to_run_takes_no_traffic() {
    // Proves (issue 20 item 3): a revision staged without a bundle becomes
    // `ready` on the state checks alone, but no node can serve it, so
    // `traffic set` refuses it by field with an error that says why, LATEST
    // never resolves to it, and a split of revisions that run is untouched.
    let mut harness = Harness::new();
    harness.init();
    let deployment = harness.add_bundle("shop", "/");
    let bare = harness
        .run(Command::RevisionStage {
            answers: stage_answers(deployment),
            staged: None,
        })
        .expect("stage without a bundle");
    let bare: RevisionId = bare.result["revision_id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("ulid");
    harness.warm(bare).expect("warm");
    assert_eq!(harness.lifecycle(bare), Lifecycle::Ready);

    let error = harness
        .set(deployment, "bare", &[(&bare.to_string(), 10_000)])
        .expect_err("nothing to run");
    assert_eq!(error.field(), Some("entries[0].revision_id"));
    let message = error.to_string();
    assert!(
        message.contains("nothing to run") && message.contains("runtime section"),
        "{message}"
    );
    assert!(
        harness.env().split(deployment).is_none(),
        "nothing was committed"
    );
    let latest = harness
        .set(deployment, "latest", &[("LATEST", 10_000)])
        .expect_err("no revision with something to run");
    assert!(latest.to_string().contains("something to run"), "{latest}");

    let runs = harness.stage(deployment);
    harness.warm(runs).expect("warm");
    harness
        .set(deployment, "latest", &[("LATEST", 10_000)])
        .expect("split");
    let error = harness
        .set(
            deployment,
            "mixed",
            &[(&runs.to_string(), 9_000), (&bare.to_string(), 1_000)],
        )
        .expect_err("mixed");
    assert_eq!(error.field(), Some("entries[1].revision_id"));
    let split = harness.env().split(deployment).expect("split");
    assert_eq!(split.entries.len(), 1);
    assert_eq!(split.entries[0].revision_id, runs);
    // A bare revision staged later never becomes LATEST.
    let later = harness
        .run(Command::RevisionStage {
            answers: stage_answers(deployment),
            staged: None,
        })
        .expect("stage");
    let later: RevisionId = later.result["revision_id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("ulid");
    harness.warm(later).expect("warm");
    let split = harness.env().split(deployment).expect("split");
    assert_eq!(
        split.entries[0].revision_id, runs,
        "LATEST stays on what runs"
    );
}

#[test]
fn a_rollout_owns_the_split_from_start_to_abort_and_refuses_what_would_break_it() {
    use crate::rollout::{ControllerDecision, PersonAction, RolloutState};
    let mut harness = Harness::new();
    harness.init();
    let deployment = harness.add_bundle("shop", "/");
    let v1 = harness.stage(deployment);
    let v2 = harness.stage(deployment);
    let v3 = harness.stage(deployment);
    harness.warm(v1).expect("warm v1");
    harness.warm(v2).expect("warm v2");
    harness
        .set(deployment, "all-v1", &[(&v1.to_string(), 10_000)])
        .expect("split");
    let start = |candidate: RevisionId, key: &str| {
        Command::RolloutStart(RolloutStartAnswers {
            environment_id: EnvId::local(),
            deployment_id: deployment,
            candidate_revision_id: candidate,
            stable_revision_id: None,
            steps: rollout_steps(100),
            analysis: Some(rollout_analysis()),
            stable_grace_seconds: Some(4),
            idempotency_key: key.to_owned(),
        })
    };
    // A candidate that is not ready is refused, and nothing changes.
    let before = harness.state.clone();
    assert!(matches!(
        harness.run(start(v3, "r0")),
        Err(ApplyError::Conflict { message }) if message.contains("candidate_revision_id")
    ));
    assert_eq!(harness.state, before);

    let started = harness.run(start(v2, "r1")).expect("start");
    assert_eq!(started.result["rollout"]["state"], "progressing");
    // The controller: a 4 s pause (each envelope is 2 s later) must end first.
    let decide = |step: u32, decision: ControllerDecision| {
        Command::RolloutDecide(RolloutDecisionAnswers {
            environment_id: EnvId::local(),
            deployment_id: deployment,
            step,
            decision,
            decided_in_term: None,
        })
    };
    let advance = || decide(0, ControllerDecision::Advance { analysis: None });
    assert!(harness.run(advance()).is_err(), "2 s into a 4 s pause");
    let split = harness.env().split(deployment).expect("split").clone();
    let weights: Vec<(RevisionId, u32)> = split
        .entries
        .iter()
        .map(|e| (e.revision_id, e.weight_bps))
        .collect();
    assert_eq!(weights, [(v1, 9_900), (v2, 100)]);

    // While it runs: no second rollout, no manual split, no drain of either.
    assert!(matches!(
        harness.run(start(v2, "r2")),
        Err(ApplyError::Conflict { message }) if message.contains("already has a rollout")
    ));
    assert!(matches!(
        harness.set(deployment, "manual", &[(&v1.to_string(), 10_000)]),
        Err(ApplyError::Conflict { message }) if message.contains("owns its split")
    ));
    assert!(
        harness
            .run(Command::TrafficRollback(DeploymentAnswers {
                environment_id: EnvId::local(),
                deployment_id: deployment,
                idempotency_key: None,
            }))
            .is_err()
    );
    harness
        .run(start(v2, "r1"))
        .expect("the same start replays");

    harness.run(advance()).expect("the pause is over");
    let rollout = harness.env().active_rollout(deployment).expect("runs");
    assert_eq!((rollout.step, rollout.candidate_weight_bps()), (1, 200));
    assert_eq!(
        harness.env().split(deployment).expect("split").updated_by,
        crate::rollout::Rollout::controller_actor(deployment)
    );
    assert!(harness.run(advance()).is_err(), "step 0 is over");

    // A person aborts: 100 % stable, the rollout finished, the split free.
    harness
        .run(Command::RolloutAct {
            action: PersonAction::Abort,
            answers: RolloutActionAnswers {
                environment_id: EnvId::local(),
                deployment_id: deployment,
                reason: Some("latency".into()),
                idempotency_key: None,
            },
        })
        .expect("abort");
    let split = harness.env().split(deployment).expect("split");
    assert_eq!(split.entries.len(), 1);
    assert_eq!(
        (split.entries[0].revision_id, split.entries[0].weight_bps),
        (v1, 10_000)
    );
    assert_eq!(
        harness
            .env()
            .latest_rollout(deployment)
            .expect("kept")
            .state,
        RolloutState::Aborted
    );
    assert!(harness.env().active_rollout(deployment).is_none());
    harness
        .revision_command(Command::RevisionDrain, v2)
        .expect("the candidate can go once the rollout ended");
}

fn rollout_action() -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => (Just(0u8), any::<u8>(), proptest::option::of(any::<u8>()), 1u16..10_000)
            .prop_map(|(d, c, s, w)| Action::RolloutStart(d, c, s, w)),
        3 => (Just(0u8), 0u8..4).prop_map(|(d, a)| Action::RolloutAct(d, a)),
        6 => (Just(0u8), 0u8..3, 0u8..4, 0u16..300, 0u16..30)
            .prop_map(|(d, s, k, r, e)| Action::RolloutDecide(d, s, k, r, e)),
        1 => any::<u8>().prop_map(Action::Drain),
        1 => any::<u8>().prop_map(Action::Archive),
        1 => (any::<u8>(), 0u8..3).prop_map(|(r, o)| Action::Report(r, o)),
        1 => (Just(0u8), any::<u8>(), any::<u8>(), 0u16..10_001, 0u8..6)
            .prop_map(|(d, a, b, w, k)| Action::SetPair(d, a, b, w, k)),
        1 => Just(Action::Rollback(0)),
        1 => Just(Action::RemoveBundle(0)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// From a deployment with three ready revisions (the first serving),
    /// random rollout starts, people's actions and controller decisions
    /// mixed with traffic and lifecycle commands: the state stays valid (a
    /// running rollout's split is exactly its weights, its revisions stay
    /// ready), refusals change nothing, and a rollout that ends aborted or
    /// rolled back leaves its stable revision at 100 %.
    #[test]
    fn random_rollout_sequences_keep_the_rollout_invariants(
        actions in proptest::collection::vec(rollout_action(), 1..60)
    ) {
        let mut harness = Harness::new();
        harness.init();
        let deployment = harness.add_bundle("shop", "/");
        let revisions: Vec<RevisionId> = (0..3).map(|_| harness.stage(deployment)).collect();
        for revision in &revisions {
            harness.warm(*revision).expect("warm");
        }
        harness
            .set(deployment, "first", &[(&revisions[0].to_string(), 10_000)])
            .expect("split");
        for action in &actions {
            let Some(command) = to_command(&harness, action) else { continue };
            let before = harness.state.clone().expect("state");
            let envelope = harness.envelope(command);
            match apply(Some(&before), harness.recorded(&envelope), &envelope) {
                Ok(applied) => {
                    let state = applied.state.clone().expect("environment survives");
                    prop_assert!(state.validate(&EnvId::local()).is_ok(), "{:?}", state.validate(&EnvId::local()));
                    if applied.changed {
                        prop_assert_eq!(state.generation, before.generation + 1);
                    } else {
                        prop_assert_eq!(&state, &before);
                    }
                    let ended = |env: &crate::environment::Environment| env.latest_rollout(deployment).filter(|r| matches!(r.state, crate::rollout::RolloutState::Aborted | crate::rollout::RolloutState::RolledBack)).map(|r| r.stable_revision_id);
                    let was_running = before.environment.active_rollout(deployment).is_some();
                    if let (true, Some(stable)) = (was_running, ended(&state.environment)) {
                        let split = state.environment.split(deployment).expect("split");
                        prop_assert_eq!(split.entries.len(), 1);
                        prop_assert_eq!(split.entries[0].revision_id, stable);
                        prop_assert_eq!(split.entries[0].weight_bps, 10_000);
                    }
                    harness.keep(&applied);
                    prop_assert_eq!(harness.state.as_ref(), Some(&state));
                }
                Err(error) => {
                    prop_assert!(!error.to_string().is_empty());
                    prop_assert!(harness.state.as_ref() == Some(&before));
                }
            }
        }
    }
}

#[test]
fn a_promoted_rollout_keeps_its_stable_revision_ready_for_its_grace() {
    use crate::rollout::PersonAction;
    let mut harness = Harness::new();
    harness.init();
    let deployment = harness.add_bundle("shop", "/");
    let v1 = harness.stage(deployment);
    let v2 = harness.stage(deployment);
    harness.warm(v1).expect("warm v1");
    harness.warm(v2).expect("warm v2");
    harness
        .set(deployment, "all-v1", &[(&v1.to_string(), 10_000)])
        .expect("split");
    harness
        .run(Command::RolloutStart(RolloutStartAnswers {
            environment_id: EnvId::local(),
            deployment_id: deployment,
            candidate_revision_id: v2,
            stable_revision_id: None,
            steps: rollout_steps(100),
            analysis: Some(rollout_analysis()),
            stable_grace_seconds: Some(6),
            idempotency_key: "r".to_owned(),
        }))
        .expect("start");
    harness
        .run(Command::RolloutAct {
            action: PersonAction::Promote,
            answers: RolloutActionAnswers {
                environment_id: EnvId::local(),
                deployment_id: deployment,
                reason: None,
                idempotency_key: None,
            },
        })
        .expect("promote");
    // Each envelope is 2 s later: the drains at +2 and +4 s are refused,
    // the one at +6 s goes through.
    for _ in 0..2 {
        assert!(matches!(
            harness.revision_command(Command::RevisionDrain, v1),
            Err(ApplyError::Conflict { message }) if message.contains("stable_grace_seconds")
        ));
    }
    harness
        .revision_command(Command::RevisionDrain, v1)
        .expect("the grace is over");
}

#[test]
fn an_oversized_idempotency_key_is_refused_and_changes_nothing() {
    // Proves: a key longer than the bound, from an answers file's payload
    // (where no header limit applies), is refused with its field named.
    let mut harness = Harness::new();
    harness.init();
    let deployment = harness.add_bundle("shop", "/");
    let before = harness.state.clone();
    let long = "k".repeat(crate::state::IDEMPOTENCY_KEY_LEN_MAX + 1);
    let envelope = harness.envelope(bundle_update(Some(&long), deployment, true));
    match harness.apply(&envelope) {
        Err(error) => {
            assert_eq!(error.field(), Some("idempotency_key"), "{error}");
            assert!(error.to_string().contains("129 bytes"), "{error}");
        }
        Ok(applied) => panic!("an oversized key was accepted: {applied:?}"),
    }
    assert_eq!(harness.state, before);
    let longest = "k".repeat(crate::state::IDEMPOTENCY_KEY_LEN_MAX);
    let envelope = harness.envelope(bundle_update(Some(&longest), deployment, true));
    assert!(
        harness.apply(&envelope).is_ok(),
        "the bound itself is accepted"
    );
}

#[test]
fn scaling_is_set_by_a_person_and_moved_by_the_autoscaler_within_its_bounds() {
    // Proves: `revisions scale` records validated settings (a bad field is
    // refused by name, changing nothing) and brings the count within the
    // bounds; the autoscaler's decision moves the count only within
    // min..=max, only for a warming or ready revision that scales; warming
    // again starts from the initial count.
    use crate::command::{RevisionScaleAnswers, ScaleDecisionAnswers};
    use crate::scaling::ScalingSettings;
    let mut harness = Harness::new();
    harness.init();
    let deployment = harness.add_bundle("shop", "/");
    let revision = harness.stage(deployment);
    let scale = |scaling: ScalingSettings| {
        Command::RevisionScale(RevisionScaleAnswers {
            environment_id: EnvId::local(),
            revision_id: revision,
            scaling,
            idempotency_key: None,
        })
    };
    let decide = |desired: u32| {
        Command::ScaleDecide(ScaleDecisionAnswers {
            environment_id: EnvId::local(),
            revision_id: revision,
            desired,
            mode: "stable".into(),
            stable_concurrency: 1.0,
            panic_concurrency: 1.0,
            queued: 0,
            decided_in_term: None,
        })
    };
    assert!(
        matches!(harness.run(decide(1)), Err(ApplyError::Conflict { .. })),
        "no settings yet"
    );
    let generation = harness.state.as_ref().expect("state").generation;
    match harness.run(scale(ScalingSettings {
        min_instances: 3,
        max_instances: 2,
        ..Default::default()
    })) {
        Err(ApplyError::InvalidField { field, .. }) => assert_eq!(field, "scaling.min_instances"),
        other => panic!("min above max: {other:?}"),
    }
    assert_eq!(
        harness.state.as_ref().expect("state").generation,
        generation
    );
    let settings = ScalingSettings {
        min_instances: 0,
        max_instances: 4,
        ..Default::default()
    };
    harness
        .run(scale(settings))
        .expect("scale a staged revision");
    let staged = harness.env().revision(revision).expect("revision");
    assert_eq!(staged.instance_count(), Some(1), "warms with one instance");

    harness.warm(revision).expect("warm and report ready");
    assert_eq!(harness.lifecycle(revision), Lifecycle::Ready);
    for desired in [4, 0, 2] {
        harness.run(decide(desired)).expect("within bounds");
        let count = harness
            .env()
            .revision(revision)
            .and_then(|r| r.instance_count());
        assert_eq!(count, Some(desired));
    }
    match harness.run(decide(5)) {
        Err(ApplyError::InvalidField { field, .. }) => assert_eq!(field, "desired"),
        other => panic!("above max: {other:?}"),
    }
    // Narrower bounds pull the count in at once.
    harness
        .run(scale(ScalingSettings {
            min_instances: 3,
            max_instances: 4,
            ..Default::default()
        }))
        .expect("rescale");
    let count = harness
        .env()
        .revision(revision)
        .and_then(|r| r.instance_count());
    assert_eq!(count, Some(3));
    assert!(matches!(
        harness.run(decide(2)),
        Err(ApplyError::InvalidField { .. })
    ));
}

#[test]
fn a_staged_revision_records_its_secret_pins_and_refuses_foreign_or_invalid_ones() {
    // Proves: the pins the edge resolved are recorded on the revision as
    // they came; a pin to another environment, a version 0 or a delivery
    // name given twice is refused naming the entry, and nothing is staged.
    let mut harness = Harness::new();
    harness.init();
    let deployment = harness.add_bundle("shop", "/");
    let pin = |reference: &str, version: u32, env: &str| crate::secret_pins::SecretPin {
        reference: reference.parse().expect("ref"),
        version,
        env: Some(env.to_owned()),
        file: None,
    };
    let staged = |n: u128, secret_pins: Vec<crate::secret_pins::SecretPin>| StagedBundle {
        revision_id: RevisionId::from_ulid(ulid::Ulid::from_parts(9, n)),
        bundle_id: "shop".parse().expect("bundle"),
        bundle_digest: "sha256:ab".parse().expect("digest"),
        pack_list: vec![],
        pack_list_lock_ref: String::new(),
        runtime_instances: Some(1),
        scaling: None,
        secret_pins,
        config_reload: Default::default(),
    };
    let mut answers = stage_answers(deployment);
    answers.bundle_path = Some("shop.gtbundle".into());
    let good = vec![pin("secret://local/db/password", 3, "DB_PASSWORD")];
    harness
        .run(Command::RevisionStage {
            answers: answers.clone(),
            staged: Some(Box::new(staged(1, good.clone()))),
        })
        .expect("stage");
    let revision = RevisionId::from_ulid(ulid::Ulid::from_parts(9, 1));
    assert_eq!(
        harness
            .env()
            .revision(revision)
            .expect("staged")
            .secret_pins,
        good
    );
    let count = harness.env().revisions.len();
    for (n, pins, field) in [
        (
            2,
            vec![pin("secret://prod/db/password", 1, "DB")],
            "runtime.secrets[0]",
        ),
        (
            3,
            vec![pin("secret://local/db/password", 0, "DB")],
            "runtime.secrets[0]",
        ),
        (
            4,
            vec![
                pin("secret://local/a", 1, "DB"),
                pin("secret://local/b", 1, "DB"),
            ],
            "runtime.secrets[1]",
        ),
    ] {
        match harness.run(Command::RevisionStage {
            answers: answers.clone(),
            staged: Some(Box::new(staged(n, pins))),
        }) {
            Err(ApplyError::InvalidField { field: got, .. }) => assert_eq!(got, field),
            other => panic!("case {n}: expected InvalidField, got {other:?}"),
        }
    }
    assert_eq!(harness.env().revisions.len(), count, "nothing staged");
}

#[test]
fn a_warmed_revision_records_its_deployer_and_keeps_it_when_the_slot_is_rebound() {
    // Proves: warming records the deployer the slot binds; after the slot
    // is rebound, the running revision keeps its deployer and a revision
    // warmed afterwards records the new one.
    let mut harness = Harness::new();
    harness.init();
    let deployment = harness.add_bundle("shop", "/");
    let first = harness.stage(deployment);
    harness.warm(first).expect("warm");
    let bound = |harness: &Harness| {
        harness
            .env()
            .binding(CapabilitySlot::Deployer)
            .map(|b| b.kind.clone())
    };
    let before = bound(&harness);
    assert!(before.is_some());
    assert_eq!(
        harness.env().revision(first).expect("first").deployer,
        before
    );
    let docker: crate::descriptor::PackDescriptor = "greentic.deployer.docker@0.1.0"
        .parse()
        .expect("descriptor");
    harness
        .run(Command::PackUpdate(crate::command::PackBindAnswers {
            environment_id: EnvId::local(),
            slot: CapabilitySlot::Deployer,
            kind: docker.clone(),
            pack_ref: None,
            answers_ref: None,
            idempotency_key: None,
        }))
        .expect("rebind");
    assert_eq!(
        harness.env().revision(first).expect("first").deployer,
        before
    );
    let second = harness.stage(deployment);
    harness.warm(second).expect("warm");
    assert_eq!(
        harness.env().revision(second).expect("second").deployer,
        Some(docker)
    );
}
