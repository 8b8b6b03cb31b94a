//! The authorization gate: who may change which environment.
//!
//! `local` is open to the local user. Every other environment is denied
//! unless the policy file grants it to the user (fail closed).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::audit::{Actor, Authorization, Decision};
use crate::ids::EnvId;

/// Schema discriminator of a policy file.
pub const POLICY_SCHEMA: &str = "greentic.policy.v1";

/// One grant: these users may change this environment (`*` for any user or
/// any environment).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    pub environment_id: String,
    pub users: Vec<String>,
}

/// The policy file (`policy.json` in the store root).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub schema: String,
    #[serde(default)]
    pub grants: Vec<Grant>,
}

/// Decides whether `actor` may change `env`.
pub fn authorize(policy: Option<&Policy>, actor: &Actor, env: &EnvId) -> Authorization {
    if env.is_local() {
        return Authorization {
            decision: Decision::Allow,
            policy: "local-only".to_owned(),
            reason: "the local environment is open to the local user".to_owned(),
        };
    }
    let user = actor.user.as_deref();
    let grant = policy
        .into_iter()
        .flat_map(|p| p.grants.iter())
        .position(|grant| {
            (grant.environment_id == "*" || grant.environment_id == env.as_str())
                && grant
                    .users
                    .iter()
                    .any(|u| u == "*" || Some(u.as_str()) == user)
        });
    match grant {
        Some(index) => Authorization {
            decision: Decision::Allow,
            policy: "policy-file".to_owned(),
            reason: format!(
                "grant #{index} allows user {} on environment {env}",
                actor.display_name()
            ),
        },
        None => Authorization {
            decision: Decision::Deny,
            policy: "local-only".to_owned(),
            reason: format!(
                "environment {env} is not local and no grant in the policy file allows user {} on it",
                actor.display_name()
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Actor {
        Actor::local_user(Some("alice".into()), Some(1000))
    }

    #[test]
    fn local_is_open_and_everything_else_fails_closed() {
        assert_eq!(
            authorize(None, &alice(), &EnvId::local()).decision,
            Decision::Allow
        );
        let prod: EnvId = "prod-eu".parse().expect("env");
        assert_eq!(authorize(None, &alice(), &prod).decision, Decision::Deny);
        let empty = Policy {
            schema: POLICY_SCHEMA.into(),
            grants: vec![],
        };
        assert_eq!(
            authorize(Some(&empty), &alice(), &prod).decision,
            Decision::Deny
        );
    }

    #[test]
    fn grants_match_environment_and_user() {
        let prod: EnvId = "prod-eu".parse().expect("env");
        let policy = Policy {
            schema: POLICY_SCHEMA.into(),
            grants: vec![Grant {
                environment_id: "prod-eu".into(),
                users: vec!["alice".into()],
            }],
        };
        assert_eq!(
            authorize(Some(&policy), &alice(), &prod).decision,
            Decision::Allow
        );
        let bob = Actor::local_user(Some("bob".into()), None);
        assert_eq!(
            authorize(Some(&policy), &bob, &prod).decision,
            Decision::Deny
        );
        let other: EnvId = "prod-us".parse().expect("env");
        assert_eq!(
            authorize(Some(&policy), &alice(), &other).decision,
            Decision::Deny
        );
        let anyone = Policy {
            schema: POLICY_SCHEMA.into(),
            grants: vec![Grant {
                environment_id: "*".into(),
                users: vec!["*".into()],
            }],
        };
        assert_eq!(
            authorize(Some(&anyone), &bob, &other).decision,
            Decision::Allow
        );
    }
}
