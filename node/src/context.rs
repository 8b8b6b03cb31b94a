//! Everything a verb needs from the outside world: the store, the operator's
//! identity, the policy and the env-pack registry. The clock and id minting
//! live here too, so `deploy` stays pure.

use std::path::{Path, PathBuf};

use deploy::apply::event_for;
use deploy::audit::{AUDIT_SCHEMA, Actor, AuditEvent, AuditResult, Authorization, Decision};
use deploy::command::{Command, CommandEnvelope, MintedIds};
use deploy::error::ErrorKind;
use deploy::ids::{EnvId, EventId};
use deploy::policy::{POLICY_SCHEMA, Policy, authorize};
use deploy::state::EnvironmentState;
use packs::EnvPackRegistry;
use store::{EnvironmentStore, LocalFsStore};

use crate::error::CliError;
use crate::output::Report;

/// Name of the policy file in the store root.
pub const POLICY_FILE: &str = "policy.json";

/// The operator's session.
pub struct Context {
    pub store: LocalFsStore,
    pub home: PathBuf,
    pub actor: Actor,
    pub registry: EnvPackRegistry,
    /// CA certificates to trust when a running node's admin API is HTTPS.
    pub admin_ca: Option<PathBuf>,
    /// Read replicas without a read index (`--stale-ok`).
    pub stale_ok: bool,
    /// A node reached by URL (`--node`): reads and changes go there.
    pub remote: Option<crate::remote::Remote>,
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

impl Context {
    /// Opens the store at `store_root`, or under `GREENTIC_HOME`.
    pub fn open(store_root: Option<PathBuf>) -> Result<Self, CliError> {
        let home = greentic_home()?;
        let root = store_root.unwrap_or_else(|| home.join("environments"));
        Ok(Self {
            store: LocalFsStore::open(root)?,
            home,
            actor: local_actor(),
            registry: packs::with_builtins(),
            admin_ca: None,
            stale_ok: false,
            remote: None,
        })
    }

    fn policy(&self) -> Result<Option<Policy>, String> {
        let path = self.store.root().join(POLICY_FILE);
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

    /// The authorization decision for changing `env`; fails closed when the
    /// policy file cannot be read.
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

    /// Wraps `command` with the time, the operator, the decision and fresh ids.
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
        }
    }

    fn denial(&self, authorization: &Authorization, env: &EnvId) -> CliError {
        let example = deploy::policy::suggested_grant(&self.actor, env);
        CliError::new(
            ErrorKind::Unauthorized,
            format!(
                "{}; grant it in {} (schema {POLICY_SCHEMA}), e.g. {}",
                authorization.reason,
                self.store.root().join(POLICY_FILE).display(),
                serde_json::to_string(&example).unwrap_or_default()
            ),
        )
    }

    /// Authorizes, applies and persists `command`; every outcome is audited.
    pub fn submit(&self, command: Command) -> Result<Report, CliError> {
        if let Some(remote) = &self.remote {
            // The node authorizes with the token's role and audits.
            return remote.submit(&command);
        }
        let (noun, verb) = (command.noun(), command.verb());
        let envelope = self.envelope(command);
        if envelope.authorization.decision == Decision::Deny {
            let error = self.denial(&envelope.authorization, &envelope.command.env_id());
            self.record_refusal(&envelope, &error)?;
            return Err(error);
        }
        if let Some(node) = self.running_node(&envelope.command.env_id()) {
            return node.submit(&envelope, noun, verb);
        }
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

    /// Audits a refusal decided at the edge (before `apply`) and returns it.
    pub fn refuse(&self, command: Command, error: CliError) -> CliError {
        let envelope = self.envelope(command);
        match self.record_refusal(&envelope, &error) {
            Ok(()) => error,
            Err(audit) => audit,
        }
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
            actor: self.actor.clone(),
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
        };
        self.store.record(event).map_err(|error| {
            CliError::new(
                ErrorKind::Audit,
                format!("the audit event could not be written: {error}"),
            )
        })?;
        if authorization.decision == Decision::Deny {
            return Err(self.denial(&authorization, env));
        }
        Ok(authorization)
    }

    /// Parses a positional environment id and loads it.
    pub fn load(&self, env: &str) -> Result<EnvironmentState, CliError> {
        let env_id = parse_env(env)?;
        if let Some(remote) = &self.remote {
            return remote.load(&env_id);
        }
        self.read_index(&env_id)?;
        self.store
            .load(&env_id)?
            .ok_or_else(|| self.missing(&env_id))
    }

    /// The running node that owns changes to `env`: the node serving that
    /// environment, else a cluster member serving this store root (every
    /// environment of a member's replica, including one not created yet,
    /// changes only through Raft).
    fn running_node(&self, env: &EnvId) -> Option<crate::node_client::NodeClient> {
        let ca = self.admin_ca.as_deref();
        crate::node_client::running_node(&self.store.env_dir(env), ca).or_else(|| {
            let root = self.store.env_dir(env).parent()?.to_owned();
            crate::node_client::running_node(&root, ca)
        })
    }

    /// Before a read of a cluster member's replica: waits (through the
    /// running member) until the replica holds everything the cluster had
    /// committed when the read began, so the read is linearizable. Nothing
    /// to do with `--stale-ok`, or without a running cluster member.
    fn read_index(&self, env: &EnvId) -> Result<(), CliError> {
        if self.stale_ok {
            return Ok(());
        }
        let Some(node) = self.running_node(env) else {
            return Ok(());
        };
        match node.request("POST", "/admin/v1/cluster/read-index", b"")? {
            (200, _) => Ok(()),
            // Not a cluster member: its store is the only copy.
            (404, _) => Ok(()),
            (_, document) => Err(CliError::new(
                ErrorKind::parse(document["error"]["kind"].as_str().unwrap_or(""))
                    .unwrap_or(ErrorKind::Store),
                format!(
                    "the cluster could not confirm this replica is current ({}); retry, or read it as it is with --stale-ok",
                    document["error"]["message"].as_str().unwrap_or("no answer")
                ),
            )),
        }
    }

    /// The error for an environment that does not exist.
    pub fn missing(&self, env_id: &EnvId) -> CliError {
        CliError::new(
            ErrorKind::NotFound,
            format!(
                "environment {env_id} does not exist in {}; {}",
                self.store.root().display(),
                match env_id.legacy_dev_hint() {
                    Some(hint) => hint,
                    None if env_id.is_local() => "create it with `gtc op env init`",
                    None => "create it with `gtc op env create`",
                }
            ),
        )
    }
}

/// Parses a positional environment id with a clear error.
pub fn parse_env(text: &str) -> Result<EnvId, CliError> {
    text.parse::<EnvId>()
        .map_err(|error| CliError::invalid(error.to_string()).with_field("environment_id"))
}
