//! The checks a command meets at the edge, before `apply`, wherever it
//! comes from: `gtc op` on this machine and the admin API of a running node
//! call the same code. The identity of the operator who owns this store,
//! the authorization decision from the store's policy file (and the words
//! of a refusal), the warm-gate checks only the edge can run (the staged
//! bundle file), and the env-pack registry that says which kinds a slot
//! accepts.
//!
//! Nothing here knows how a command travels (see `submit`) or speaks HTTP.

use std::path::{Path, PathBuf};

use deploy::audit::{Actor, Authorization, Decision};
use deploy::command::{
    Command, CommandEnvelope, FailedCheck, MintedIds, PackBindAnswers, RevisionAnswers,
};
use deploy::error::ErrorKind;
use deploy::ids::{EnvId, EventId};
use deploy::policy::{POLICY_SCHEMA, Policy, authorize};
use deploy::state::EnvironmentState;
use packs::EnvPackRegistry;

use crate::error::CliError;

/// Name of the policy file in the store root.
pub const POLICY_FILE: &str = "policy.json";

/// The error for an environment that does not exist in the store at
/// `store_root` (it says how to create it, or to use `local` for `dev`).
pub fn missing_environment(store_root: &Path, env_id: &EnvId) -> CliError {
    CliError::new(
        ErrorKind::NotFound,
        format!(
            "environment {env_id} does not exist in {}; {}",
            store_root.display(),
            match env_id.legacy_dev_hint() {
                Some(hint) => hint,
                None if env_id.is_local() => "create it with `gtc op env init`",
                None => "create it with `gtc op env create`",
            }
        ),
    )
}

/// The edge checks of one store root, for its owner.
pub struct Checks {
    /// The store root: it holds the policy file, and refusals name it.
    store_root: PathBuf,
    /// The operator who owns this store (the local user): the actor of
    /// `gtc op` on this machine and of the node file's token.
    pub actor: Actor,
    /// The env packs this build knows, for slot and binding checks.
    pub registry: EnvPackRegistry,
}

impl Checks {
    /// The checks of the store at `store_root`, for the local user, with
    /// the built-in env packs.
    pub fn for_local_user(store_root: &Path) -> Self {
        Self {
            store_root: store_root.to_owned(),
            actor: local_actor(),
            registry: packs::with_builtins(),
        }
    }

    fn policy(&self) -> Result<Option<Policy>, String> {
        let path = self.store_root.join(POLICY_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => {
                return Err(format!(
                    "cannot read policy file {}: {error}",
                    path.display()
                ));
            }
        };
        let policy: Policy = serde_json::from_str(&text)
            .map_err(|error| format!("policy file {} is invalid: {error}", path.display()))?;
        if policy.schema != POLICY_SCHEMA {
            return Err(format!(
                "policy file {} has schema {:?}; expected {POLICY_SCHEMA:?}",
                path.display(),
                policy.schema
            ));
        }
        Ok(Some(policy))
    }

    /// The owner's authorization decision for changing `env`; fails closed
    /// when the policy file cannot be read.
    pub fn authorize(&self, env: &EnvId) -> Authorization {
        match self.policy() {
            Ok(policy) => authorize(policy.as_ref(), &self.actor, env),
            Err(_) if env.is_local() => authorize(None, &self.actor, env),
            Err(reason) => Authorization {
                decision: Decision::Deny,
                policy: "policy-file".to_owned(),
                reason,
            },
        }
    }

    /// Wraps `command` with the time, the owner, the decision and fresh ids.
    pub fn envelope(&self, command: Command) -> CommandEnvelope {
        let authorization = self.authorize(&command.env_id());
        CommandEnvelope {
            at: chrono::Utc::now(),
            actor: self.actor.clone(),
            authorization,
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

    /// The error for a denied change of `env`, naming the grant to add.
    pub fn denial(&self, authorization: &Authorization, env: &EnvId) -> CliError {
        let example = deploy::policy::suggested_grant(&self.actor, env);
        CliError::new(
            ErrorKind::Unauthorized,
            format!(
                "{}; grant it in {} (schema {POLICY_SCHEMA}), e.g. {}",
                authorization.reason,
                self.store_root.join(POLICY_FILE).display(),
                serde_json::to_string(&example).unwrap_or_default()
            ),
        )
    }

    /// The error for an environment that does not exist.
    pub fn missing(&self, env_id: &EnvId) -> CliError {
        missing_environment(&self.store_root, env_id)
    }

    /// Why the registry cannot drive the pack a binding names in its slot,
    /// if it cannot.
    pub fn binding_refusal(&self, answers: &PackBindAnswers) -> Option<String> {
        self.registry
            .resolve_for_slot(&answers.kind, answers.slot)
            .err()
            .map(|error| error.to_string())
    }

    /// Warm-gate checks only the edge can run: a revision staged from a
    /// bundle file must have a runnable runtime section, and its bundle copy
    /// must still match the recorded digest. `state` is the environment as
    /// the caller just read it; `env_dir` is its folder in this store.
    pub fn warm_checks(
        &self,
        env_dir: &Path,
        state: &EnvironmentState,
        answers: &RevisionAnswers,
    ) -> Vec<FailedCheck> {
        let Some(revision) = state.environment.revision(answers.revision_id) else {
            return Vec::new(); // apply reports the missing revision
        };
        let revision_dir = env_dir.join(deploy::layout::revision_dir_in_env(revision.revision_id));
        if !deploy::layout::staged_bundle(&revision_dir).is_file() {
            return Vec::new(); // staged without a bundle file: nothing to check here
        }
        let mut failed = Vec::new();
        if let Err(error) = bundle::stage::verify(&revision_dir, &revision.bundle_digest) {
            failed.push(FailedCheck {
                check: "bundle-digest".to_owned(),
                message: error.to_string(),
            });
        }
        if let Err(message) = runnable(&deploy::layout::extracted_bundle(&revision_dir)) {
            failed.push(FailedCheck {
                check: "runtime-section".to_owned(),
                message,
            });
        }
        failed
    }
}

/// Whether the extracted bundle at `root` has something that can run: a
/// runtime section whose program is a file of the bundle. Warming and
/// `bundle doctor` both ask this, so they refuse with the same words.
pub fn runnable(root: &Path) -> Result<bundle::manifest::RuntimeSection, String> {
    let manifest = bundle::stage::read_manifest(root).map_err(|e| e.to_string())?;
    let runtime = manifest.require_runtime().map_err(|e| e.to_string())?;
    runtime.check_program(root).map_err(|e| e.to_string())?;
    Ok(runtime.clone())
}

/// Parses a positional environment id with a clear error.
pub fn parse_env(text: &str) -> Result<EnvId, CliError> {
    text.parse::<EnvId>()
        .map_err(|error| CliError::invalid(error.to_string()).with_field("environment_id"))
}

fn local_actor() -> Actor {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .ok()
        .filter(|u| !u.is_empty());
    // /proc/self belongs to the process's effective uid on Linux.
    #[cfg(unix)]
    let uid = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").ok().map(|m| m.uid())
    };
    #[cfg(not(unix))]
    let uid = None;
    Actor::local_user(user, uid)
}
