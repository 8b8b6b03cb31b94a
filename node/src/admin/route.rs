//! The route table of the admin API (the remote-store contract of spec
//! section 6 under `/v1`): which method and path name which operation, what
//! role it needs, and whether it is a guarded write. Pure: no I/O.

use deploy::access::Role;
use deploy::descriptor::CapabilitySlot;
use deploy::ids::{DeploymentId, EnvId, RevisionId};
use hyper::Method;

/// The prefix of every contract route.
pub const ENVIRONMENTS: &str = "/v1/environments";

/// A lifecycle verb of `POST …/revisions/{rid}/<verb>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevisionVerb {
    Warm,
    Drain,
    Archive,
}

/// One operation of the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    ListEnvironments,
    CreateEnvironment,
    GetEnvironment(EnvId),
    UpdateEnvironment(EnvId),
    /// Not in the contract's table; ours, admin only.
    DestroyEnvironment(EnvId),
    StageRevision(EnvId),
    Revision {
        env: EnvId,
        revision: RevisionId,
        verb: RevisionVerb,
    },
    /// `POST …/revisions/{revision}/scale`: `revisions scale`.
    ScaleRevision(EnvId, RevisionId),
    SetTraffic(EnvId),
    RollbackTraffic(EnvId),
    /// `POST …/rollouts`: `rollouts start`.
    StartRollout(EnvId),
    /// `POST …/rollouts/{deployment}/{pause|resume|promote|abort}`.
    RolloutAction(EnvId, DeploymentId, deploy::rollout::PersonAction),
    AddBundle(EnvId),
    UpdateBundle(EnvId, DeploymentId),
    RemoveBundle(EnvId, DeploymentId),
    AddPack(EnvId),
    UpdatePack(EnvId, CapabilitySlot),
    RemovePack(EnvId, CapabilitySlot),
    RollbackPack(EnvId, CapabilitySlot),
    ListBackups(EnvId),
    CreateBackup(EnvId),
    Restore(EnvId),
    Audit(EnvId),
    /// `GET …/secrets`: paths and versions, never values (viewer).
    ListSecrets(EnvId),
    /// `POST …/secrets`: `secrets put` (operator).
    PutSecret(EnvId),
    /// `POST …/secrets/get`: metadata (viewer); with `reveal`, the value
    /// (admin, decided after the body is read).
    GetSecret(EnvId),
    /// `POST …/secrets/rotate`: `secrets rotate` (operator).
    RotateSecret(EnvId),
    /// `POST …/secrets/remove`: `secrets remove` of an old, unpinned
    /// version (admin).
    RemoveSecret(EnvId),
    /// `GET …/trust-root`: `env trust list` (viewer).
    ListTrustRoot(EnvId),
    /// `POST …/trust-root`: `env trust add` (admin; signed once a trust
    /// root exists).
    AddTrustKey(EnvId),
    /// `POST …/trust-root/remove`: `env trust remove` (admin; signed).
    RemoveTrustKey(EnvId),
    /// A route of the contract we do not serve yet (501).
    NotImplemented {
        env: EnvId,
        noun: &'static str,
        verb: &'static str,
        read: bool,
    },
}

/// Why a method and path name no operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    NotFound,
    /// The path exists; these methods are served there.
    MethodNotAllowed {
        allowed: &'static str,
    },
    /// A path segment is not a valid id.
    BadSegment {
        field: &'static str,
        message: String,
    },
}

fn segment<T: std::str::FromStr>(text: &str, field: &'static str) -> Result<T, RouteError>
where
    T::Err: std::fmt::Display,
{
    text.parse::<T>().map_err(|error| RouteError::BadSegment {
        field,
        message: format!("{field} {text:?} in the path is not valid: {error}"),
    })
}

fn slot(text: &str) -> Result<CapabilitySlot, RouteError> {
    serde_json::from_value(serde_json::Value::String(text.to_owned())).map_err(|_| {
        RouteError::BadSegment {
            field: "slot",
            message: format!(
                "slot {text:?} in the path is not a capability slot (deployer, secrets, telemetry, sessions, state, revocation)"
            ),
        }
    })
}

/// Picks the route for `method` on `allowed` methods, or says which are.
fn pick(
    method: &Method,
    allowed: &'static str,
    choices: Vec<(Method, Route)>,
) -> Result<Route, RouteError> {
    choices
        .into_iter()
        .find(|(m, _)| m == method)
        .map(|(_, route)| route)
        .ok_or(RouteError::MethodNotAllowed { allowed })
}

/// The route of `method` on `path` (query string already removed).
pub fn parse(method: &Method, path: &str) -> Result<Route, RouteError> {
    let Some(rest) = path.strip_prefix(ENVIRONMENTS) else {
        return Err(RouteError::NotFound);
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() {
        return pick(
            method,
            "GET, POST",
            vec![
                (Method::GET, Route::ListEnvironments),
                (Method::POST, Route::CreateEnvironment),
            ],
        );
    }
    let Some(rest) = rest.strip_prefix('/') else {
        return Err(RouteError::NotFound);
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let Some((first, rest)) = segments.split_first() else {
        return Err(RouteError::NotFound);
    };
    let env: EnvId = segment(first, "environment_id")?;
    environment_route(method, env, rest)
}

fn environment_route(method: &Method, env: EnvId, rest: &[&str]) -> Result<Route, RouteError> {
    let e = || env.clone();
    let post = |route: Route| pick(method, "POST", vec![(Method::POST, route)]);
    let not_implemented = |noun, verb, read| Route::NotImplemented {
        env: env.clone(),
        noun,
        verb,
        read,
    };
    match rest {
        [] => pick(
            method,
            "GET, PATCH, DELETE",
            vec![
                (Method::GET, Route::GetEnvironment(e())),
                (Method::PATCH, Route::UpdateEnvironment(e())),
                (Method::DELETE, Route::DestroyEnvironment(e())),
            ],
        ),
        ["revisions"] => post(Route::StageRevision(e())),
        ["revisions", revision, verb] => {
            let verb = match *verb {
                "warm" => RevisionVerb::Warm,
                "drain" => RevisionVerb::Drain,
                "archive" => RevisionVerb::Archive,
                "scale" => {
                    let revision = segment(revision, "revision_id")?;
                    return post(Route::ScaleRevision(e(), revision));
                }
                _ => return Err(RouteError::NotFound),
            };
            let revision = segment(revision, "revision_id")?;
            post(Route::Revision {
                env: e(),
                revision,
                verb,
            })
        }
        ["traffic"] => post(Route::SetTraffic(e())),
        ["traffic", "rollback"] => post(Route::RollbackTraffic(e())),
        ["rollouts"] => post(Route::StartRollout(e())),
        ["rollouts", deployment, action] => {
            use deploy::rollout::PersonAction;
            let action = match *action {
                "pause" => PersonAction::Pause,
                "resume" => PersonAction::Resume,
                "promote" => PersonAction::Promote,
                "abort" => PersonAction::Abort,
                _ => return Err(RouteError::NotFound),
            };
            let deployment: DeploymentId = segment(deployment, "deployment_id")?;
            post(Route::RolloutAction(e(), deployment, action))
        }
        ["bundles"] => post(Route::AddBundle(e())),
        ["bundles", deployment] => {
            let deployment: DeploymentId = segment(deployment, "deployment_id")?;
            pick(
                method,
                "PATCH, DELETE",
                vec![
                    (Method::PATCH, Route::UpdateBundle(e(), deployment)),
                    (Method::DELETE, Route::RemoveBundle(e(), deployment)),
                ],
            )
        }
        ["packs"] => post(Route::AddPack(e())),
        ["packs", name] => {
            let slot = slot(name)?;
            pick(
                method,
                "PATCH, DELETE",
                vec![
                    (Method::PATCH, Route::UpdatePack(e(), slot)),
                    (Method::DELETE, Route::RemovePack(e(), slot)),
                ],
            )
        }
        ["packs", name, "rollback"] => post(Route::RollbackPack(e(), slot(name)?)),
        ["backups"] => pick(
            method,
            "GET, POST",
            vec![
                (Method::GET, Route::ListBackups(e())),
                (Method::POST, Route::CreateBackup(e())),
            ],
        ),
        ["backups", _] => pick(
            method,
            "DELETE",
            vec![(
                Method::DELETE,
                not_implemented("env", "backup-delete", false),
            )],
        ),
        ["backups", _, "export"] => pick(
            method,
            "GET",
            vec![(Method::GET, not_implemented("env", "backup-export", true))],
        ),
        ["restore"] => post(Route::Restore(e())),
        ["import"] => post(not_implemented("env", "import", false)),
        ["audit"] => pick(method, "GET", vec![(Method::GET, Route::Audit(e()))]),
        ["secrets"] => pick(
            method,
            "GET, POST",
            vec![
                (Method::GET, Route::ListSecrets(e())),
                (Method::POST, Route::PutSecret(e())),
            ],
        ),
        ["secrets", "get"] => post(Route::GetSecret(e())),
        ["secrets", "rotate"] => post(Route::RotateSecret(e())),
        ["secrets", "remove"] => post(Route::RemoveSecret(e())),
        ["extensions", ..] => pick(
            method,
            "POST, PATCH, DELETE",
            vec![
                (Method::POST, not_implemented("extensions", "add", false)),
                (
                    Method::PATCH,
                    not_implemented("extensions", "update", false),
                ),
                (
                    Method::DELETE,
                    not_implemented("extensions", "remove", false),
                ),
            ],
        ),
        ["messaging", ..] => post(not_implemented("messaging", "change", false)),
        ["trust-root"] => pick(
            method,
            "GET, POST",
            vec![
                (Method::GET, Route::ListTrustRoot(e())),
                (Method::POST, Route::AddTrustKey(e())),
            ],
        ),
        ["trust-root", "remove"] => post(Route::RemoveTrustKey(e())),
        ["reconcile"] => post(not_implemented("env", "reconcile", false)),
        ["reconcile", "complete"] => post(not_implemented("env", "reconcile-complete", false)),
        _ => Err(RouteError::NotFound),
    }
}

impl Route {
    /// The environment the route is about (`None` for the collection).
    pub fn env(&self) -> Option<&EnvId> {
        match self {
            Route::ListEnvironments | Route::CreateEnvironment => None,
            Route::GetEnvironment(env)
            | Route::UpdateEnvironment(env)
            | Route::DestroyEnvironment(env)
            | Route::StageRevision(env)
            | Route::Revision { env, .. }
            | Route::ScaleRevision(env, _)
            | Route::SetTraffic(env)
            | Route::RollbackTraffic(env)
            | Route::StartRollout(env)
            | Route::RolloutAction(env, ..)
            | Route::AddBundle(env)
            | Route::UpdateBundle(env, _)
            | Route::RemoveBundle(env, _)
            | Route::AddPack(env)
            | Route::UpdatePack(env, _)
            | Route::RemovePack(env, _)
            | Route::RollbackPack(env, _)
            | Route::ListBackups(env)
            | Route::CreateBackup(env)
            | Route::Restore(env)
            | Route::Audit(env)
            | Route::ListSecrets(env)
            | Route::PutSecret(env)
            | Route::GetSecret(env)
            | Route::RotateSecret(env)
            | Route::RemoveSecret(env)
            | Route::ListTrustRoot(env)
            | Route::AddTrustKey(env)
            | Route::RemoveTrustKey(env)
            | Route::NotImplemented { env, .. } => Some(env),
        }
    }

    /// The CLI noun and verb of the operation, for audit events.
    pub fn names(&self) -> (&'static str, &'static str) {
        match self {
            Route::ListEnvironments => ("env", "list"),
            Route::CreateEnvironment => ("env", "create"),
            Route::GetEnvironment(_) => ("env", "show"),
            Route::UpdateEnvironment(_) => ("env", "update"),
            Route::DestroyEnvironment(_) => ("env", "destroy"),
            Route::StageRevision(_) => ("revisions", "stage"),
            Route::Revision { verb, .. } => (
                "revisions",
                match verb {
                    RevisionVerb::Warm => "warm",
                    RevisionVerb::Drain => "drain",
                    RevisionVerb::Archive => "archive",
                },
            ),
            Route::ScaleRevision(..) => ("revisions", "scale"),
            Route::SetTraffic(_) => ("traffic", "set"),
            Route::RollbackTraffic(_) => ("traffic", "rollback"),
            Route::StartRollout(_) => ("rollouts", "start"),
            Route::RolloutAction(_, _, action) => ("rollouts", action.as_str()),
            Route::AddBundle(_) => ("bundles", "add"),
            Route::UpdateBundle(..) => ("bundles", "update"),
            Route::RemoveBundle(..) => ("bundles", "remove"),
            Route::AddPack(_) => ("env-packs", "add"),
            Route::UpdatePack(..) => ("env-packs", "update"),
            Route::RemovePack(..) => ("env-packs", "remove"),
            Route::RollbackPack(..) => ("env-packs", "rollback"),
            Route::ListBackups(_) => ("env", "backups"),
            Route::CreateBackup(_) => ("env", "backup"),
            Route::Restore(_) => ("env", "restore"),
            Route::Audit(_) => ("env", "audit"),
            Route::ListSecrets(_) => ("secrets", "list"),
            Route::PutSecret(_) => ("secrets", "put"),
            Route::GetSecret(_) => ("secrets", "get"),
            Route::RotateSecret(_) => ("secrets", "rotate"),
            Route::RemoveSecret(_) => ("secrets", "remove"),
            Route::ListTrustRoot(_) => (crate::trust_root::NOUN, "list"),
            Route::AddTrustKey(_) => (crate::trust_root::NOUN, "add"),
            Route::RemoveTrustKey(_) => (crate::trust_root::NOUN, "remove"),
            Route::NotImplemented { noun, verb, .. } => (noun, verb),
        }
    }

    /// The least role that may call the route: reads need viewer, changes
    /// operator, and destroying or restoring an environment admin.
    pub fn required_role(&self) -> Role {
        match self {
            Route::ListEnvironments
            | Route::GetEnvironment(_)
            | Route::ListBackups(_)
            | Route::Audit(_)
            | Route::ListSecrets(_)
            | Route::GetSecret(_)
            | Route::ListTrustRoot(_)
            | Route::NotImplemented { read: true, .. } => Role::Viewer,
            Route::DestroyEnvironment(_)
            | Route::Restore(_)
            | Route::RemoveSecret(_)
            | Route::AddTrustKey(_)
            | Route::RemoveTrustKey(_) => Role::Admin,
            _ => Role::Operator,
        }
    }

    /// True for a write to an existing environment, which needs `If-Match`
    /// (a missing one is refused with 428 by `apply`). Creating needs none
    /// (it checks existence), nor does writing a backup, which changes no
    /// state.
    pub fn guarded(&self) -> bool {
        !matches!(
            self,
            Route::ListEnvironments
                | Route::CreateEnvironment
                | Route::GetEnvironment(_)
                | Route::ListBackups(_)
                | Route::CreateBackup(_)
                | Route::Audit(_)
                | Route::ListSecrets(_)
                | Route::PutSecret(_)
                | Route::GetSecret(_)
                | Route::RotateSecret(_)
                | Route::RemoveSecret(_)
                | Route::ListTrustRoot(_)
                | Route::AddTrustKey(_)
                | Route::RemoveTrustKey(_)
                | Route::NotImplemented { .. }
        )
    }

    /// Payload fields the path fixes, so the body may leave them out.
    pub fn path_fields(&self) -> Vec<(&'static str, serde_json::Value)> {
        use serde_json::json;
        let mut fields = Vec::new();
        if let Some(env) = self.env() {
            fields.push(("environment_id", json!(env)));
        }
        match self {
            Route::Revision { revision, .. } | Route::ScaleRevision(_, revision) => {
                fields.push(("revision_id", json!(revision)))
            }
            Route::UpdateBundle(_, deployment)
            | Route::RemoveBundle(_, deployment)
            | Route::RolloutAction(_, deployment, _) => {
                fields.push(("deployment_id", json!(deployment)));
            }
            Route::UpdatePack(_, slot)
            | Route::RemovePack(_, slot)
            | Route::RollbackPack(_, slot) => {
                fields.push(("slot", json!(slot)));
            }
            _ => {}
        }
        fields
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REVISION: &str = "01J0000000000000000000000R";

    #[test]
    fn every_contract_path_maps_to_its_operation() {
        let env = EnvId::local();
        let cases = [
            (Method::GET, "/v1/environments", Route::ListEnvironments),
            (Method::POST, "/v1/environments/", Route::CreateEnvironment),
            (
                Method::PATCH,
                "/v1/environments/local",
                Route::UpdateEnvironment(env.clone()),
            ),
            (
                Method::POST,
                "/v1/environments/local/traffic/rollback",
                Route::RollbackTraffic(env.clone()),
            ),
            (
                Method::DELETE,
                "/v1/environments/local/packs/secrets",
                Route::RemovePack(env.clone(), CapabilitySlot::Secrets),
            ),
        ];
        for (method, path, route) in cases {
            assert_eq!(parse(&method, path), Ok(route), "{method} {path}");
        }
        let warm = parse(
            &Method::POST,
            &format!("/v1/environments/local/revisions/{REVISION}/warm"),
        )
        .expect("warm");
        assert_eq!(warm.names(), ("revisions", "warm"));
        assert!(warm.guarded());
    }

    #[test]
    fn wrong_methods_unknown_paths_and_bad_ids_are_told_apart() {
        assert_eq!(
            parse(&Method::PUT, "/v1/environments/local"),
            Err(RouteError::MethodNotAllowed {
                allowed: "GET, PATCH, DELETE"
            })
        );
        assert_eq!(
            parse(&Method::GET, "/v1/environments/local/nothing"),
            Err(RouteError::NotFound)
        );
        assert_eq!(parse(&Method::GET, "/v1/other"), Err(RouteError::NotFound));
        assert!(matches!(
            parse(
                &Method::POST,
                "/v1/environments/local/revisions/not-a-ulid/warm"
            ),
            Err(RouteError::BadSegment {
                field: "revision_id",
                ..
            })
        ));
        assert!(matches!(
            parse(&Method::GET, "/v1/environments/..%2f"),
            Err(RouteError::BadSegment { .. })
        ));
    }

    #[test]
    fn roles_follow_reads_changes_and_dangerous_changes() {
        let env = EnvId::local();
        assert_eq!(Route::Audit(env.clone()).required_role(), Role::Viewer);
        assert_eq!(
            Route::SetTraffic(env.clone()).required_role(),
            Role::Operator
        );
        assert_eq!(Route::Restore(env.clone()).required_role(), Role::Admin);
        assert_eq!(
            Route::DestroyEnvironment(env.clone()).required_role(),
            Role::Admin
        );
        assert!(!Route::CreateEnvironment.guarded());
        assert!(Route::SetTraffic(env).guarded());
    }

    #[test]
    fn the_contract_routes_we_do_not_serve_are_501_routes() {
        for (method, path) in [
            (Method::POST, "/v1/environments/local/import"),
            (Method::POST, "/v1/environments/local/extensions"),
            (Method::POST, "/v1/environments/local/reconcile/complete"),
            (Method::GET, "/v1/environments/local/backups/x/export"),
        ] {
            assert!(
                matches!(parse(&method, path), Ok(Route::NotImplemented { .. })),
                "{method} {path}"
            );
        }
    }
}
