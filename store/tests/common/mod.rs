//! Helpers shared by the store's integration tests.
#![allow(dead_code)]

use deploy::audit::{Actor, Authorization, Decision};
use deploy::command::{
    BundleAddAnswers, Command, CommandEnvelope, EnvInitAnswers, EnvUpdateAnswers, MintedIds,
};
use deploy::ids::{EnvId, EventId};

/// An envelope with the current time and fresh ids, as the CLI builds it.
pub fn envelope(command: Command) -> CommandEnvelope {
    CommandEnvelope {
        at: chrono::Utc::now(),
        actor: Actor::local_user(Some("tester".into()), None),
        authorization: Authorization {
            decision: Decision::Allow,
            policy: "local-only".into(),
            reason: "test".into(),
        },
        minted: MintedIds {
            event_id: EventId::from_ulid(ulid::Ulid::new()),
            object_id: ulid::Ulid::new(),
        },
        command,
        precondition: None,
        idempotency_key: None,
        signed_by: None,
    }
}

pub fn init() -> Command {
    Command::EnvInit {
        answers: EnvInitAnswers::default(),
        defaults: packs::default_bindings(),
    }
}

pub fn set_region(region: &str, key: Option<String>) -> Command {
    Command::EnvUpdate(EnvUpdateAnswers {
        environment_id: EnvId::local(),
        name: None,
        region: Some(region.into()),
        tenant_org_id: None,
        listen_addr: None,
        public_base_url: None,
        gui_enabled: None,
        credentials_ref: None,
        idempotency_key: key,
    })
}

pub fn add_bundle(index: usize) -> Command {
    Command::BundleAdd(BundleAddAnswers {
        environment_id: EnvId::local(),
        bundle_id: format!("b{index}").parse().expect("bundle id"),
        customer_id: None,
        route_binding: deploy::bundle::RouteBinding {
            path_prefixes: vec![format!("/b{index}")],
            ..Default::default()
        },
        revenue_share: None,
        authorization_ref: None,
        config_overrides: None,
        idempotency_key: None,
    })
}
