//! `gtc op env preflight ENV`: can this machine run the deployer the
//! environment's deployer slot binds?
//!
//! Each deployer has its own checks, in its own module: tools, reachability
//! and credentials, each a [`Check`] that passes, fails with what to
//! install or grant and how, or is skipped with the reason. The verb exits
//! 1 when any check fails (as `env doctor` does on a problem it finds), 0
//! otherwise. It changes nothing.
//!
//! The checks live here rather than behind `packs::EnvPackHandler::preflight`:
//! that hook is synchronous and takes no environment, and the handlers are
//! descriptions in `packs`, which cannot reach the Docker engine client
//! (`docker-deployer` depends on `packs`, not the reverse) nor the store's
//! bundle folders. The node, which wires all of them, can.

// Their checks are reused by the credentials contract (`crate::credentials`).
pub(crate) mod docker;
pub(crate) mod k8s;
pub(crate) mod local;

use deploy::command::FailedCheck;
use deploy::descriptor::CapabilitySlot;
use serde::Serialize;
use serde_json::json;

use crate::context::Context;
use crate::error::CliError;
use crate::output::Report;

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    /// Not checked, and the check says why.
    Skipped,
}

/// One check of a deployer's preflight.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// A stable name, e.g. `docker-socket`.
    pub name: &'static str,
    pub status: Status,
    /// What was found, or why the check was skipped.
    pub detail: String,
    /// For a failure: what to install or grant, and how.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    pub fn pass(name: &'static str, detail: impl Into<String>) -> Self {
        Self {
            name,
            status: Status::Pass,
            detail: detail.into(),
            fix: None,
        }
    }

    pub fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name,
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    pub fn skipped(name: &'static str, reason: impl Into<String>) -> Self {
        Self {
            name,
            status: Status::Skipped,
            detail: reason.into(),
            fix: None,
        }
    }
}

/// The preflight `revisions warm` runs before it warms a revision on this
/// machine, for a bound deployer that needs one: the Docker engine must
/// answer, or every container start would fail one by one after the
/// revision went `warming`. Each failed check becomes a warm-gate failure
/// (`preflight-<check>`) with what was found and the fix, so the warm is
/// refused and nothing changes. The local-process deployer needs no tools
/// beyond this machine, and a Kubernetes environment is not warmed here
/// (`gtc op env reconcile` applies it), so neither is checked.
pub fn warm_gate(
    context: &Context,
    env: &deploy::ids::EnvId,
) -> Result<Vec<FailedCheck>, CliError> {
    // It runs where the revision will run: on this machine, unless a
    // remote node or a cluster (whose placement picks members whose engine
    // answers) decides that.
    let member = context
        .store
        .root()
        .join(crate::node_client::NODE_FILE)
        .is_file();
    if context.remote().is_some() || member {
        return Ok(Vec::new());
    }
    let state = context.load(env.as_str())?;
    let checks = match state.environment.binding(CapabilitySlot::Deployer) {
        Some(binding) if binding.kind.path() == docker_deployer::DESCRIPTOR_PATH => {
            docker::checks()
        }
        _ => return Ok(Vec::new()),
    };
    Ok(checks
        .into_iter()
        .filter(|check| check.status == Status::Fail)
        .map(|check| FailedCheck {
            check: format!("preflight-{}", check.name),
            message: match &check.fix {
                Some(fix) => format!("{}; {fix}", check.detail),
                None => check.detail.clone(),
            },
        })
        .collect())
}

/// How to bind a deployer, for a failure that needs one.
const BIND_FIX: &str = "bind a deployer: `gtc op env-packs add --answers FILE` with {\"environment_id\": ENV, \"slot\": \"deployer\", \"kind\": \"greentic.deployer.local-process@0.1.0\"} (or greentic.deployer.docker@0.1.0, greentic.deployer.k8s@1.0.0); see `gtc op env-packs add --schema`";

pub fn run(context: &Context, env: &str) -> Result<Report, CliError> {
    let env_id = crate::checks::parse_env(env)?;
    let state = context.load(env_id.as_str())?;
    let environment = &state.environment;
    let binding = environment.binding(CapabilitySlot::Deployer);
    let checks = match binding {
        None => vec![Check::fail(
            "deployer-bound",
            format!("environment {env_id} binds no deployer"),
            BIND_FIX,
        )],
        Some(binding) => match binding.kind.path() {
            local_process::DESCRIPTOR_PATH => {
                local::checks(&context.store.env_dir(&env_id), environment)
            }
            docker_deployer::DESCRIPTOR_PATH => docker::checks(),
            k8s_deployer::DESCRIPTOR_PATH => {
                let credentials = context
                    .checks
                    .registry
                    .resolve(&binding.kind)
                    .ok()
                    .and_then(|handler| handler.deployer_credentials())
                    .unwrap_or_default();
                k8s::checks(&credentials, &env_id)
            }
            other => vec![Check::fail(
                "deployer-known",
                format!("gtc has no preflight for deployer {other}"),
                BIND_FIX,
            )],
        },
    };
    let passed = checks.iter().all(|check| check.status != Status::Fail);
    let mut report = Report::new(
        "env",
        "preflight",
        json!({
            "environment_id": env_id,
            "deployer": binding.map(|binding| &binding.kind),
            "passed": passed,
            "checks": checks,
            "checked_at": chrono::Utc::now(),
        }),
    );
    report.exit_code = if passed {
        0
    } else {
        crate::error::EXIT_FAILURE
    };
    Ok(report)
}
