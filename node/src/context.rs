//! Everything a `gtc` verb needs from the outside world: this machine's
//! store, the edge checks of its owner (identity, policy, env-pack
//! registry; see `checks`) and the submitter chosen when the command
//! started (see `submit`). The clock and id minting live in `checks`, so
//! `deploy` stays pure.

use std::path::{Path, PathBuf};

use deploy::apply::event_for;
use deploy::audit::{AUDIT_SCHEMA, AuditEvent, AuditResult, Authorization, Decision};
use deploy::command::{Command, CommandEnvelope};
use deploy::error::ErrorKind;
use deploy::ids::{EnvId, EventId};
use deploy::state::EnvironmentState;
use store::{EnvironmentStore, LocalFsStore};

use crate::checks::Checks;
use crate::checks::parse_env;
use crate::error::CliError;
use crate::output::Report;
use crate::submit::{Local, Submitter};

/// The operator's session.
pub struct Context {
    pub store: LocalFsStore,
    pub home: PathBuf,
    /// The owner's identity, policy and env-pack registry.
    pub checks: Checks,
    /// Where reads and changes go, chosen when the command started.
    pub submitter: Submitter,
}

/// `GREENTIC_HOME`, else `~/.greentic`.
pub fn greentic_home() -> Result<PathBuf, CliError> {
    if let Some(home) = std::env::var_os("GREENTIC_HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(home));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|home| Path::new(&home).join(".greentic"))
        .ok_or_else(|| {
            CliError::new(
                ErrorKind::InvalidArgument,
                "neither GREENTIC_HOME nor HOME is set; set GREENTIC_HOME to the folder that should hold gtc's state",
            )
        })
}

impl Context {
    /// Opens the store at `store_root`, or under `GREENTIC_HOME`.
    pub fn open(store_root: Option<PathBuf>) -> Result<Self, CliError> {
        let home = greentic_home()?;
        let root = store_root.unwrap_or_else(|| home.join("environments"));
        let store = LocalFsStore::open(root)?;
        Ok(Self {
            checks: Checks::for_local_user(store.root()),
            store,
            home,
            submitter: Submitter::Local(Local::default()),
        })
    }

    /// The remote node, when the command goes to one (`--node`).
    pub fn remote(&self) -> Option<&crate::remote::Remote> {
        self.submitter.remote()
    }

    /// The owner's authorization decision for changing `env`.
    pub fn authorize(&self, env: &EnvId) -> Authorization {
        self.checks.authorize(env)
    }

    /// Wraps `command` with the time, the operator, the decision and fresh ids.
    pub fn envelope(&self, command: Command) -> CommandEnvelope {
        self.checks.envelope(command)
    }

    /// The error for an environment that does not exist.
    pub fn missing(&self, env_id: &EnvId) -> CliError {
        self.checks.missing(env_id)
    }

    /// Authorizes, applies and persists `command`; every outcome is audited.
    pub fn submit(&self, command: Command) -> Result<Report, CliError> {
        let local = match &self.submitter {
            // The node authorizes with the token's role and audits.
            Submitter::Remote(remote) => return remote.submit(&command),
            Submitter::Local(local) => local,
        };
        let (noun, verb) = (command.noun(), command.verb());
        let mut envelope = self.envelope(command);
        if envelope.authorization.decision == Decision::Deny {
            let error = self
                .checks
                .denial(&envelope.authorization, &envelope.command.env_id());
            self.record_refusal(&envelope, &error)?;
            return Err(error);
        }
        // An environment with a trust root takes changes signed by a
        // listed operator key only; a refusal is audited as a denial.
        match self.signer(&envelope.command.env_id()) {
            Ok(signed_by) => envelope.signed_by = signed_by,
            Err(error) => {
                envelope.authorization = crate::trust_root::denial(&error);
                self.record_refusal(&envelope, &error)?;
                return Err(error);
            }
        }
        if let Some(node) = local.running_node(&self.store, &envelope.command.env_id()) {
            return node.submit(&envelope, noun, verb);
        }
        self.not_a_stopped_replica()?;
        let submitted = self.store.submit(&envelope)?;
        let applied = submitted.applied;
        let mut report = Report::new(noun, verb, applied.result);
        report.generation = submitted.generation;
        report.idempotency = match (applied.replayed, applied.changed) {
            (true, _) => Some("replayed"),
            (false, true) => Some("applied"),
            (false, false) => Some("unchanged"),
        };
        Ok(report)
    }

    /// The `key_id` that signs a change of `env` from this machine: `None`
    /// when the environment has no trust root (or is `local`); an error
    /// when this operator's key is missing or not listed.
    pub fn signer(&self, env: &EnvId) -> Result<Option<String>, CliError> {
        crate::trust_root::local_signer(&self.home, self.store.root(), env)
    }

    /// Audits a refusal decided at the edge (before `apply`) and returns it.
    pub fn refuse(&self, command: Command, error: CliError) -> CliError {
        let envelope = self.envelope(command);
        match self.record_refusal(&envelope, &error) {
            Ok(()) => error,
            Err(audit) => audit,
        }
    }

    /// Refuses a change of a cluster member's replica whose member is not
    /// running: only the member writes it (through Raft), so nothing is
    /// written here, not even an audit event, which would make this
    /// replica's chain differ from the others'.
    fn not_a_stopped_replica(&self) -> Result<(), CliError> {
        let root = self.store.root();
        if root.join(crate::node_client::NODE_FILE).is_file() {
            return Err(CliError::new(
                ErrorKind::InvalidArgument,
                format!(
                    "{} is a cluster member's replica and its member is not running: changes go through the member (start it with `gtc node run --cluster-dir …`), so nothing was written",
                    root.display()
                ),
            ));
        }
        Ok(())
    }

    fn record_refusal(&self, envelope: &CommandEnvelope, error: &CliError) -> Result<(), CliError> {
        let event = event_for(
            envelope,
            None,
            None,
            false,
            AuditResult::Error {
                kind: error.kind.as_str().to_owned(),
                message: error.message.clone(),
            },
        );
        // A running node records it in its store: on a cluster member the
        // replicated log, never the replica's file behind Raft's back.
        if let Submitter::Local(local) = &self.submitter
            && let Some(node) = local.running_node(&self.store, &envelope.command.env_id())
        {
            return node.record(&event).map_err(|audit| {
                CliError::new(
                    ErrorKind::Audit,
                    format!(
                        "{} (and its audit event could not be written: {})",
                        error.message, audit.message
                    ),
                )
            });
        }
        if self.not_a_stopped_replica().is_err() {
            return Err(CliError::new(
                error.kind,
                format!(
                    "{} (not audited: {} is a cluster member's replica whose member is not running, and only the member writes its audit log)",
                    error.message,
                    self.store.root().display()
                ),
            ));
        }
        self.store.record(event).map_err(|audit| {
            CliError::new(
                ErrorKind::Audit,
                format!(
                    "{} (and its audit event could not be written: {audit})",
                    error.message
                ),
            )
        })
    }

    /// Audits a verb that does not go through `apply` (backups, migrations,
    /// not-yet-implemented verbs). Fails closed: an unwritable audit log
    /// fails the verb.
    pub fn audit_edge(
        &self,
        env: &EnvId,
        noun: &str,
        verb: &str,
        target: serde_json::Value,
        result: AuditResult,
    ) -> Result<Authorization, CliError> {
        let authorization = self.authorize(env);
        let result = if authorization.decision == Decision::Deny {
            AuditResult::Error {
                kind: ErrorKind::Unauthorized.as_str().to_owned(),
                message: authorization.reason.clone(),
            }
        } else {
            result
        };
        let event = AuditEvent {
            schema: AUDIT_SCHEMA.to_owned(),
            event_id: EventId::from_ulid(ulid::Ulid::new()),
            ts: chrono::Utc::now(),
            actor: self.checks.actor.clone(),
            env_id: env.to_string(),
            noun: noun.to_owned(),
            verb: verb.to_owned(),
            target,
            previous_generation: None,
            new_generation: None,
            idempotency_key: None,
            replayed: false,
            authorization: authorization.clone(),
            result,
            prev_hash: String::new(),
            signed_by: None,
        };
        self.store.record(event).map_err(|error| {
            CliError::new(
                ErrorKind::Audit,
                format!("the audit event could not be written: {error}"),
            )
        })?;
        if authorization.decision == Decision::Deny {
            return Err(self.checks.denial(&authorization, env));
        }
        Ok(authorization)
    }

    /// Parses a positional environment id and loads it.
    pub fn load(&self, env: &str) -> Result<EnvironmentState, CliError> {
        let env_id = parse_env(env)?;
        match &self.submitter {
            Submitter::Remote(remote) => return remote.load(&env_id),
            Submitter::Local(local) => local.read_index(&self.store, &env_id)?,
        }
        self.store
            .load(&env_id)?
            .ok_or_else(|| self.missing(&env_id))
    }

    /// The idempotency record `env` (which must exist) keeps of `key`: a
    /// request with that key would be answered from it. Through a remote
    /// node this is never known ahead (`None`): the node answers the replay
    /// itself.
    pub fn idempotency_record(
        &self,
        env: &str,
        key: &str,
    ) -> Result<Option<deploy::state::IdempotencyRecord>, CliError> {
        let env_id = parse_env(env)?;
        self.load(env)?;
        match &self.submitter {
            Submitter::Remote(_) => Ok(None),
            Submitter::Local(_) => Ok(self.store.idempotency_record(&env_id, key)?),
        }
    }

    /// The warm-gate checks of `answers`' revision on the environment as it
    /// is now (see [`Checks::warm_checks`]).
    pub fn warm_checks(
        &self,
        answers: &deploy::command::RevisionAnswers,
    ) -> Result<Vec<deploy::command::FailedCheck>, CliError> {
        let state = self.load(answers.environment_id.as_str())?;
        let env_dir = self.store.env_dir(&answers.environment_id);
        Ok(self.checks.warm_checks(&env_dir, &state, answers))
    }
}
