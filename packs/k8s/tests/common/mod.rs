//! The environment the tests render, built through deploy's own apply path
//! with fixed ids and a fixed clock, so every run renders the same bytes.
//!
//! Environment `prod`, deployments `shop` and `api`:
//! - shop R1 ready (2 instances, 9000 bps), R2 ready (scales, min 3: 3
//!   instances, 1000 bps), R3 staged, R4 archived;
//! - api R5 warming (1 instance), R6 drained (inactive), R7 ready with
//!   nothing to run (staged without a runtime section).
//!
//! So three revisions are active (R1, R2, R5). The environment names two
//! secret refs: its `credentials_ref` and a config override of `api`.

#![allow(dead_code)]

use std::collections::BTreeMap;

use deploy::apply::apply;
use deploy::audit::{Actor, Authorization, Decision};
use deploy::bundle::{ConfigOverrides, RouteBinding};
use deploy::command::*;
use deploy::environment::Environment;
use deploy::ids::{DeploymentId, EnvId, RevisionId};
use deploy::scaling::ScalingSettings;
use deploy::state::EnvironmentState;
use k8s_deployer::RenderOptions;

/// The secret ref on `credentials_ref`.
pub const CREDENTIALS_REF: &str = "secret://prod/cloud/credentials";
/// The secret ref in `api`'s config overrides.
pub const API_TOKEN_REF: &str = "secret://prod/api/token";

/// Revision `n` of the fixture (1..=7): a fixed ULID.
pub fn revision(n: u128) -> RevisionId {
    RevisionId::from_ulid(ulid::Ulid::from_parts(1_700_000_000_000, 0xAB00 + n))
}

/// The revisions that get a worker.
pub fn active() -> Vec<RevisionId> {
    vec![revision(1), revision(2), revision(5)]
}

/// A digest-pinned image per revision `1..=7`, and a router image.
pub fn options() -> RenderOptions {
    RenderOptions {
        router_image: format!("ghcr.io/greentic/gtc@sha256:{}", "0".repeat(64)),
        worker_images: (1..=7)
            .map(|n| {
                let digest = format!("{n:064x}");
                (
                    revision(n),
                    format!("registry.example/bundles/r{n}@sha256:{digest}"),
                )
            })
            .collect(),
        router_replicas: 2,
    }
}

struct Builder {
    state: Option<EnvironmentState>,
    counter: u128,
}

fn env() -> EnvId {
    "prod".parse().expect("env id")
}

impl Builder {
    fn run(&mut self, command: Command) -> serde_json::Value {
        self.counter += 1;
        let at = chrono::DateTime::UNIX_EPOCH + chrono::Duration::seconds(1_700_000_000);
        let envelope = CommandEnvelope {
            at: at + chrono::Duration::seconds(i64::try_from(self.counter).expect("small")),
            actor: Actor::local_user(None, None),
            authorization: Authorization {
                decision: Decision::Allow,
                policy: "test".into(),
                reason: "test".into(),
            },
            minted: MintedIds {
                event_id: deploy::ids::EventId::from_ulid(ulid::Ulid::from_parts(1, self.counter)),
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

    fn deployment(&mut self, bundle: &str, overrides: Option<ConfigOverrides>) -> DeploymentId {
        let result = self.run(Command::BundleAdd(BundleAddAnswers {
            environment_id: env(),
            bundle_id: bundle.parse().expect("bundle"),
            customer_id: Some("acme".parse().expect("customer id")),
            route_binding: RouteBinding {
                path_prefixes: vec![format!("/{bundle}")],
                ..RouteBinding::default()
            },
            revenue_share: None,
            authorization_ref: None,
            config_overrides: overrides,
            idempotency_key: None,
        }));
        result["deployment_id"]
            .as_str()
            .expect("id")
            .parse()
            .expect("ulid")
    }

    fn stage(
        &mut self,
        deployment: DeploymentId,
        bundle: &str,
        n: u128,
        runtime_instances: Option<u32>,
        scaling: Option<ScalingSettings>,
    ) {
        let mut answers = RevisionStageAnswers::new(env(), deployment);
        answers.revision_id = Some(revision(n));
        answers.bundle_path = Some(format!("{bundle}-{n}.gtbundle"));
        self.run(Command::RevisionStage {
            answers,
            staged: Some(Box::new(StagedBundle {
                revision_id: revision(n),
                bundle_id: bundle.parse().expect("bundle"),
                bundle_digest: format!("sha256:{n:064x}").parse().expect("digest"),
                pack_list: Vec::new(),
                pack_list_lock_ref: String::new(),
                runtime_instances,
                scaling,
                secret_pins: pins(bundle, n),
                config_reload: Default::default(),
            })),
        });
    }

    fn answers(n: u128) -> RevisionAnswers {
        RevisionAnswers {
            environment_id: env(),
            revision_id: revision(n),
            idempotency_key: None,
        }
    }

    fn warm(&mut self, n: u128) {
        self.run(Command::warm(Self::answers(n)));
    }

    fn report(&mut self, n: u128, outcome: RuntimeOutcome) {
        self.run(Command::RevisionReport(RuntimeReport {
            environment_id: env(),
            revision_id: revision(n),
            outcome,
        }));
    }
}

/// The fixture environment (see the module comment).
pub fn environment() -> Environment {
    let mut builder = Builder {
        state: None,
        counter: 0,
    };
    builder.run(Command::EnvCreate(EnvCreateAnswers {
        environment_id: env(),
        name: "production".to_owned(),
        region: Some("eu-west".to_owned()),
        tenant_org_id: None,
        listen_addr: None,
        public_base_url: None,
        gui_enabled: None,
    }));
    builder.run(Command::PackAdd(PackBindAnswers {
        environment_id: env(),
        slot: deploy::descriptor::CapabilitySlot::Deployer,
        kind: "greentic.deployer.k8s@1.0.0".parse().expect("descriptor"),
        pack_ref: None,
        answers_ref: None,
        idempotency_key: None,
    }));
    let shop = builder.deployment("shop", None);
    let overrides: ConfigOverrides = BTreeMap::from([(
        "greentic.api-pack".parse().expect("pack id"),
        BTreeMap::from([("token".to_owned(), serde_json::json!(API_TOKEN_REF))]),
    )]);
    let api = builder.deployment("api", Some(overrides));

    builder.stage(shop, "shop", 1, Some(2), None);
    builder.warm(1);
    builder.report(1, RuntimeOutcome::Ready);
    let scaling = ScalingSettings {
        min_instances: 3,
        ..ScalingSettings::default()
    };
    builder.stage(shop, "shop", 2, Some(1), Some(scaling));
    builder.warm(2);
    builder.report(2, RuntimeOutcome::Ready);
    builder.stage(shop, "shop", 3, Some(1), None);
    builder.stage(shop, "shop", 4, Some(1), None);
    builder.run(Command::RevisionArchive(Builder::answers(4)));
    builder.run(Command::TrafficSet(TrafficSetAnswers {
        environment_id: env(),
        deployment_id: shop,
        entries: vec![entry(1, 9_000), entry(2, 1_000)],
        updated_by: None,
        idempotency_key: "split-shop".to_owned(),
        authorization_ref: None,
    }));

    builder.stage(api, "api", 5, Some(1), None);
    builder.warm(5);
    builder.stage(api, "api", 6, Some(1), None);
    builder.warm(6);
    builder.report(6, RuntimeOutcome::Ready);
    builder.run(Command::RevisionDrain(Builder::answers(6)));
    builder.report(6, RuntimeOutcome::Drained);
    builder.stage(api, "api", 7, None, None);
    builder.warm(7);

    let mut environment = builder.state.expect("state").environment;
    environment.credentials_ref = Some(CREDENTIALS_REF.parse().expect("secret ref"));
    environment
        .validate()
        .expect("the fixture is a valid environment");
    environment
}

fn entry(n: u128, weight_bps: u32) -> TrafficEntryAnswers {
    TrafficEntryAnswers {
        revision_id: revision(n).to_string(),
        weight_bps: Some(weight_bps),
        weight_percent: None,
        tag: None,
    }
}

/// The secrets an `api` revision pins: its password as a variable, at the
/// version numbered like the revision (a rotation between stages), and as a
/// file at version 1; a `shop` revision pins none.
fn pins(bundle: &str, n: u128) -> Vec<deploy::secret_pins::SecretPin> {
    if bundle != "api" {
        return Vec::new();
    }
    let reference: deploy::refs::SecretRef = "secret://prod/db/password".parse().expect("ref");
    vec![
        deploy::secret_pins::SecretPin {
            reference: reference.clone(),
            version: u32::try_from(n).expect("small"),
            env: Some("DB_PASSWORD".to_owned()),
            file: None,
        },
        deploy::secret_pins::SecretPin {
            reference,
            version: 1,
            env: None,
            file: Some("db_password".to_owned()),
        },
    ]
}
