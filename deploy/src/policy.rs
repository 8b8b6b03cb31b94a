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
    let names = actor.policy_names();
    let grant = policy
        .into_iter()
        .flat_map(|p| p.grants.iter())
        .position(|grant| {
            (grant.environment_id == "*" || grant.environment_id == env.as_str())
                && grant
                    .users
                    .iter()
                    .any(|u| u == "*" || names.iter().any(|name| name == u))
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

/// The policy file a denial suggests: it grants `env` to the name the
/// actor is best known by (`*` when the actor has no name a grant can
/// use). [`authorize`] allows `actor` on `env` under it, whatever the way
/// the actor's identity was formed.
pub fn suggested_grant(actor: &Actor, env: &EnvId) -> Policy {
    let user = actor
        .policy_names()
        .into_iter()
        .next()
        .unwrap_or_else(|| "*".to_owned());
    Policy {
        schema: POLICY_SCHEMA.to_owned(),
        grants: vec![Grant {
            environment_id: env.to_string(),
            users: vec![user],
        }],
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
    fn every_identity_a_denial_suggests_is_matched_by_the_policy() {
        // Issue 20's class: each way a local (or API) identity is formed,
        // the grant the denial suggests is one the policy matches, on the
        // environment that was denied; and a grant naming any of the
        // actor's names (`uid:N` included) matches it.
        let actors = [
            Actor::local_user(Some("alice".into()), Some(1000)),
            Actor::local_user(Some("alice".into()), None),
            Actor::local_user(None, Some(0)),
            Actor::local_user(None, Some(65532)),
            Actor::local_user(None, None),
            Actor::token("ci-deployer"),
        ];
        for env in ["staging", "prod-eu"] {
            let env: EnvId = env.parse().expect("env");
            for actor in &actors {
                assert_eq!(
                    authorize(None, actor, &env).decision,
                    Decision::Deny,
                    "{actor:?}"
                );
                let suggested = suggested_grant(actor, &env);
                assert_eq!(suggested.grants[0].environment_id, env.as_str());
                // The suggestion survives the trip through the policy file.
                let text = serde_json::to_string(&suggested).expect("json");
                let reread: Policy = serde_json::from_str(&text).expect("policy");
                assert_eq!(
                    authorize(Some(&reread), actor, &env).decision,
                    Decision::Allow,
                    "{actor:?} was denied under the grant its denial suggested: {text}"
                );
                for name in actor.policy_names() {
                    let named = Policy {
                        schema: POLICY_SCHEMA.into(),
                        grants: vec![Grant {
                            environment_id: env.to_string(),
                            users: vec![name.clone()],
                        }],
                    };
                    assert_eq!(
                        authorize(Some(&named), actor, &env).decision,
                        Decision::Allow,
                        "{actor:?} by {name}"
                    );
                }
            }
        }
        // Another uid is not matched by a uid grant.
        let root_only = suggested_grant(
            &Actor::local_user(None, Some(0)),
            &"prod-eu".parse().expect("env"),
        );
        assert_eq!(
            authorize(
                Some(&root_only),
                &Actor::local_user(None, Some(1000)),
                &"prod-eu".parse().expect("env")
            )
            .decision,
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
