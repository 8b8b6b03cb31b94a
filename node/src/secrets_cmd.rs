//! `secrets put|get|rotate|list`: the one core the CLI (on this machine)
//! and the admin API (`/v1/environments/{env}/secrets…`) both call, so
//! checks, audit events and answers are the same on either path.
//!
//! Secrets never go through `deploy::apply`: the environment's state holds
//! no secret, and a value must not enter a command, a Raft entry or an
//! audit target. Each mutation (and each reveal) is audited at the edge
//! with the path and version only, under the secret store's lock, before
//! the version file is written; a failed audit writes nothing.

use std::path::Path;

use consensus::{SecretChange, SecretOutcome};
use deploy::audit::{AUDIT_SCHEMA, Actor, AuditEvent, AuditResult, Authorization, Decision};
use deploy::descriptor::CapabilitySlot;
use deploy::error::ErrorKind;
use deploy::ids::{EnvId, EventId};
use secrets::answers::{
    SecretGetAnswers, SecretPutAnswers, SecretRemoveAnswers, SecretRotateAnswers, ValueSource,
    check_idempotency_key,
};
use secrets::value::{generate, os_random};
use secrets::{Origin, Sealing, SecretPath, SecretStore, SecretsError, WriteRequest};
use serde_json::{Value, json};
use store::EnvironmentStore;

use crate::error::CliError;

/// Who is asking, as decided by the CLI's policy or the API token's role.
pub struct Edge<'a> {
    pub store: &'a dyn EnvironmentStore,
    /// The store root (the secret store lives beside the environments).
    pub root: &'a Path,
    pub actor: Actor,
    /// The decision for the verb (already allowed).
    pub authorization: Authorization,
    /// The `key_id` of the operator key that signed a change, on an
    /// environment with a trust root; recorded in the audit event.
    pub signed_by: Option<String>,
    /// The store is a cluster member's replica.
    pub replicated: bool,
    /// The running member whose log takes this replica's secret changes:
    /// a change is sealed here and committed by every replica
    /// (`consensus::SecretChange`). A replica without it (the CLI on a
    /// member's folder) refuses changes: only the member may write them.
    pub cluster: Option<consensus::ReplicatedStore>,
}

/// How many times a change that lost a race with another (the same next
/// version, idempotency key or first data key) is sealed again before the
/// caller is told to retry.
const STALE_RETRIES: usize = 8;

/// A failed change, and whether its refusal is already in the audit log (a
/// replicated refusal is recorded by every replica's state machine).
struct Failed {
    error: CliError,
    audited: bool,
}

impl From<CliError> for Failed {
    fn from(error: CliError) -> Self {
        Self {
            error,
            audited: false,
        }
    }
}

/// The environment exists and its `secrets` slot is served by this node's
/// store (`greentic.secrets.dev-store`); the binding's descriptor.
fn served_here(store: &dyn EnvironmentStore, root: &Path, env: &EnvId) -> Result<String, CliError> {
    let state = store
        .load(env)?
        .ok_or_else(|| crate::checks::missing_environment(root, env))?;
    match state.environment.binding(CapabilitySlot::Secrets) {
        Some(binding) if binding.kind.path() == secrets::DEV_STORE_PACK_PATH => {
            Ok(binding.kind.to_string())
        }
        Some(binding) => Err(CliError::new(
            ErrorKind::InvalidArgument,
            format!(
                "environment {env} binds its secrets slot to {}; this node's secret store serves {}@^0.1.0 only",
                binding.kind,
                secrets::DEV_STORE_PACK_PATH
            ),
        )),
        None => Err(CliError::new(
            ErrorKind::InvalidArgument,
            format!(
                "environment {env} has no secrets env-pack; bind {}@0.1.0 with `gtc op env-packs add` (or `gtc op env init`)",
                secrets::DEV_STORE_PACK_PATH
            ),
        )),
    }
}

/// The CLI error of a secret store error: a stable kind, the field it is
/// about, and `details.secrets_error`, a code tests and scripts can match.
pub fn cli_error(error: SecretsError) -> CliError {
    let (kind, field, code) = (error.kind(), error.field(), error.code());
    let mut cli =
        CliError::new(kind, error.to_string()).with_details(json!({"secrets_error": code}));
    if let Some(field) = field {
        cli = cli.with_field(field);
    }
    cli
}

impl Edge<'_> {
    fn event(&self, env: &EnvId, verb: &str, target: Value, result: AuditResult) -> AuditEvent {
        AuditEvent {
            schema: AUDIT_SCHEMA.to_owned(),
            event_id: EventId::from_ulid(ulid::Ulid::new()),
            ts: chrono::Utc::now(),
            actor: self.actor.clone(),
            env_id: env.to_string(),
            noun: "secrets".to_owned(),
            verb: verb.to_owned(),
            target,
            previous_generation: None,
            new_generation: None,
            idempotency_key: None,
            replayed: false,
            authorization: self.authorization.clone(),
            result,
            prev_hash: String::new(),
            signed_by: self.signed_by.clone(),
        }
    }

    fn record(&self, event: AuditEvent) -> Result<(), String> {
        self.store.record(event).map_err(|error| error.to_string())
    }

    /// Audits a refused mutation (the error names no value) and returns it.
    fn refused(&self, env: &EnvId, verb: &str, target: Value, error: CliError) -> CliError {
        let event = self.event(
            env,
            verb,
            target,
            AuditResult::Error {
                kind: error.kind.as_str().to_owned(),
                message: error.message.clone(),
            },
        );
        match self.record(event) {
            Ok(()) => error,
            Err(audit) => CliError::new(
                ErrorKind::Audit,
                format!(
                    "{} (and its audit event could not be written: {audit})",
                    error.message
                ),
            ),
        }
    }

    /// The environment exists and its `secrets` slot is served by this
    /// store; the binding's descriptor.
    pub(crate) fn check_environment(&self, env: &EnvId) -> Result<String, CliError> {
        served_here(self.store, self.root, env)
    }

    /// The secret store of this edge's root: a replica's never makes a
    /// node key of its own (the member installed the cluster's).
    fn secret_store(&self) -> SecretStore {
        if self.replicated {
            SecretStore::replica(self.root)
        } else {
            SecretStore::new(self.root)
        }
    }

    /// The member's log for a change on a replica; on a replica without a
    /// running member the change is refused (this process must not write
    /// a replica behind Raft's back).
    fn log_for_change(&self) -> Result<Option<&consensus::ReplicatedStore>, CliError> {
        match (&self.cluster, self.replicated) {
            (Some(cluster), _) => Ok(Some(cluster)),
            (None, false) => Ok(None),
            (None, true) => Err(CliError::new(
                ErrorKind::InvalidArgument,
                format!(
                    "{} is a cluster member's replica: change secrets through the running member (start it with `gtc node run --cluster-dir …`; `gtc op` then goes through it), nothing was written",
                    self.root.display()
                ),
            )),
        }
    }

    /// Stores `value` as a new version of `path`: here under the store's
    /// lock, or sealed here and committed through the cluster's log.
    fn write_version(
        &self,
        env: &EnvId,
        path: &SecretPath,
        value: &secrets::SecretText,
        origin: Origin,
        idempotency_key: Option<String>,
        verb: &'static str,
    ) -> Result<(Value, bool), Failed> {
        let must_exist = verb == "rotate";
        let Some(cluster) = self.log_for_change()? else {
            let store = SecretStore::new(self.root);
            let request = self.request(origin, idempotency_key);
            let mut audit = audit_write(self, env, verb);
            let written = if must_exist {
                store.rotate(env, path, value, request, &mut audit)
            } else {
                store.put(env, path, value, request, &mut audit)
            };
            return written.map(written_json).map_err(|e| cli_error(e).into());
        };
        let store = self.secret_store();
        for _ in 0..STALE_RETRIES {
            let request = self.request(origin, idempotency_key.clone());
            let sealed = match store.seal(env, path, value, request, must_exist) {
                Ok(Sealing::Replay(meta)) => {
                    let mut audit = audit_write(self, env, verb);
                    audit(&meta, true).map_err(|audit| {
                        CliError::new(
                            ErrorKind::Audit,
                            format!("the replayed write could not be audited: {audit}"),
                        )
                    })?;
                    return Ok((json!(meta), true));
                }
                Ok(Sealing::New(sealed)) => sealed,
                Err(error) => return Err(cli_error(error).into()),
            };
            let event = self.event(
                env,
                verb,
                json!({"environment_id": env, "path": path.as_str()}),
                AuditResult::Ok,
            );
            let outcome = cluster
                .secret_change(&SecretChange::Write(sealed.clone()), &event)
                .map_err(|error| replicated_error(error.to_string()))?;
            match outcome {
                SecretOutcome::Written(meta) => return Ok((json!(meta), false)),
                // Its answer was lost, but the version is there.
                SecretOutcome::Stale { .. } if store.holds(&sealed).map_err(cli_error)? => {
                    return Ok((json!(sealed.meta()), false));
                }
                SecretOutcome::Stale { reason } => {
                    tracing::debug!(%reason, "a sealed secret version lost a race; sealing again");
                }
                SecretOutcome::Refused {
                    code,
                    kind,
                    message,
                    field,
                } => return Err(replicated_refusal(code, &kind, message, field)),
                SecretOutcome::Removed(_) => {
                    return Err(
                        replicated_error("a write was answered as a removal".to_owned()).into(),
                    );
                }
            }
        }
        Err(CliError::new(
            ErrorKind::Conflict,
            format!(
                "{} changed under {STALE_RETRIES} attempts in a row (other writes to it through other members); nothing was written by this one, try again",
                path.reference(env)
            ),
        )
        .into())
    }

    fn path(&self, env: &EnvId, text: &str) -> Result<SecretPath, CliError> {
        secrets::path::parse_for_env(text, env).map_err(|e| cli_error(e.into()))
    }

    fn request(&self, origin: Origin, idempotency_key: Option<String>) -> WriteRequest {
        WriteRequest {
            created_by: self.actor.display_name(),
            origin,
            idempotency_key,
            at: chrono::Utc::now(),
        }
    }
}

/// The JSON of a written version, and whether it was a replay.
fn written_json(written: secrets::Written) -> (Value, bool) {
    (json!(written.meta), written.replayed)
}

/// The cluster could not take or answer a change (no leader, a dead
/// member): nothing known was written.
fn replicated_error(reason: String) -> CliError {
    CliError::new(
        ErrorKind::Store,
        format!("the cluster did not apply the secret change: {reason}"),
    )
}

/// A refusal every replica recorded (so it is not audited again here).
fn replicated_refusal(code: String, kind: &str, message: String, field: Option<String>) -> Failed {
    let mut error = CliError::new(ErrorKind::parse(kind).unwrap_or(ErrorKind::Store), message)
        .with_details(json!({"secrets_error": code}));
    if let Some(field) = field {
        error = error.with_field(field);
    }
    Failed {
        error,
        audited: true,
    }
}

/// `secrets put`: a new version from `value` or `value_file`.
pub fn put(edge: &Edge<'_>, answers: SecretPutAnswers) -> Result<(Value, bool), CliError> {
    let env = answers.environment_id.clone();
    let target = json!({"environment_id": env, "path": answers.path});
    let attempt = || -> Result<(Value, bool), Failed> {
        edge.check_environment(&env)?;
        edge.log_for_change()?;
        let path = edge.path(&env, &answers.path)?;
        check_idempotency_key(answers.idempotency_key.as_deref()).map_err(cli_error)?;
        let key = answers.idempotency_key.clone();
        let value = answers.into_value().map_err(cli_error)?;
        edge.write_version(&env, &path, &value, Origin::Put, key, "put")
    };
    attempt().map_err(|error| refuse_unless_audited(edge, &env, "put", target, error))
}

/// `secrets rotate`: a new version of an existing path, given or generated.
pub fn rotate(edge: &Edge<'_>, answers: SecretRotateAnswers) -> Result<(Value, bool), CliError> {
    let env = answers.environment_id.clone();
    let target = json!({"environment_id": env, "path": answers.path});
    let attempt = || -> Result<(Value, bool), Failed> {
        edge.check_environment(&env)?;
        edge.log_for_change()?;
        let path = edge.path(&env, &answers.path)?;
        check_idempotency_key(answers.idempotency_key.as_deref()).map_err(cli_error)?;
        let key = answers.idempotency_key.clone();
        let (value, origin, generated) = match answers.into_source().map_err(cli_error)? {
            ValueSource::Given(value) => (value, Origin::Rotate, None),
            ValueSource::Generated(spec) => (
                generate(spec, &mut os_random).map_err(|e| cli_error(e.into()))?,
                Origin::Generated,
                Some(spec),
            ),
        };
        let (mut meta, replayed) =
            edge.write_version(&env, &path, &value, origin, key, "rotate")?;
        if let Some(spec) = generated {
            meta["generated"] = json!(spec);
        }
        Ok((meta, replayed))
    };
    attempt().map_err(|error| refuse_unless_audited(edge, &env, "rotate", target, error))
}

/// `secrets remove`: deletes one old version of a path. Refused for the
/// latest version and for a version that a revision not yet archived pins
/// (named in the error: a rollback to it needs that version); checked
/// under the store's lock, which a stage that pins versions also holds, and
/// audited before the file goes.
pub fn remove(edge: &Edge<'_>, answers: SecretRemoveAnswers) -> Result<Value, CliError> {
    let env = answers.environment_id.clone();
    let target = json!({"environment_id": env, "path": answers.path, "version": answers.version});
    let attempt = || -> Result<Value, Failed> {
        edge.check_environment(&env)?;
        let log = edge.log_for_change()?;
        let path = edge.path(&env, &answers.path)?;
        if let Some(cluster) = log {
            return remove_replicated(edge, cluster, &env, &path, answers.version);
        }
        let mut check = |meta: &secrets::VersionMeta| -> Result<(), SecretsError> {
            let state = edge.store.load(&env).map_err(|error| SecretsError::Audit {
                reason: format!("reading the environment's revisions: {error}"),
            })?;
            secrets::check_unpinned(meta, state.as_ref().map(|s| &s.environment))?;
            let event = edge.event(
                &env,
                "remove",
                json!({"environment_id": env, "path": meta.path, "reference": meta.reference, "version": meta.version}),
                AuditResult::Ok,
            );
            edge.record(event)
                .map_err(|reason| SecretsError::Audit { reason })
        };
        let removed = edge
            .secret_store()
            .remove(&env, &path, answers.version, &mut check)
            .map_err(cli_error)?;
        Ok(json!({"removed": removed}))
    };
    attempt().map_err(|error| refuse_unless_audited(edge, &env, "remove", target, error))
}

/// `secrets remove` on a cluster member: every replica checks the pins
/// against its committed state and removes the version alike.
fn remove_replicated(
    edge: &Edge<'_>,
    cluster: &consensus::ReplicatedStore,
    env: &EnvId,
    path: &SecretPath,
    version: u32,
) -> Result<Value, Failed> {
    // The version exists here (else the answer is the same not-found a
    // single node gives, without a round through the log).
    let before = edge
        .secret_store()
        .get(env, path, Some(version))
        .map_err(cli_error)?;
    let event = edge.event(
        env,
        "remove",
        json!({"environment_id": env, "path": path.as_str(), "version": version}),
        AuditResult::Ok,
    );
    let change = SecretChange::Remove {
        env_id: env.clone(),
        path: path.as_str().to_owned(),
        version,
    };
    match cluster
        .secret_change(&change, &event)
        .map_err(|error| replicated_error(error.to_string()))?
    {
        SecretOutcome::Removed(meta) => Ok(json!({"removed": meta})),
        SecretOutcome::Refused {
            code,
            kind,
            message,
            field,
        } => Err(replicated_refusal(code, &kind, message, field)),
        // Applied before, with its answer lost: removed if it is gone now.
        SecretOutcome::Stale { reason } => {
            match edge.secret_store().get(env, path, Some(version)) {
                Err(SecretsError::VersionNotFound { .. }) => Ok(json!({"removed": before})),
                _ => Err(replicated_error(format!(
                    "{reason}; `gtc op secrets list {env}` shows whether version {version} remains"
                ))
                .into()),
            }
        }
        SecretOutcome::Written(_) => {
            Err(replicated_error("a removal was answered as a write".to_owned()).into())
        }
    }
}

/// Holds `env`'s secret store lock while a stage pins versions and commits
/// the revision (see [`secrets::SecretStore::hold`]); `None` when the
/// bundle pins nothing, and on a cluster member's replica. There the
/// replica's state machine takes the same lock to commit a secret change
/// that may precede the stage in the log, so holding it across the stage's
/// commit would stall both until the write timed out. A removal racing a
/// stage on a cluster can therefore leave a revision pinning a removed
/// version: its warm then fails, naming the version (secrets/README.md).
pub fn hold_for_pinning(
    root: &Path,
    env: &EnvId,
    uses: &[deploy::secret_pins::SecretUse],
) -> Result<Option<secrets::StoreGuard>, CliError> {
    if uses.is_empty() || root.join(crate::node_client::NODE_FILE).is_file() {
        return Ok(None);
    }
    SecretStore::new(root)
        .hold(env)
        .map(Some)
        .map_err(cli_error)
}

/// The audit callback of a write: the event names the path and version.
fn audit_write<'a>(
    edge: &'a Edge<'_>,
    env: &'a EnvId,
    verb: &'static str,
) -> impl FnMut(&secrets::VersionMeta, bool) -> Result<(), String> + 'a {
    move |meta, replayed| {
        let mut event = edge.event(
            env,
            verb,
            json!({"environment_id": env, "path": meta.path, "reference": meta.reference, "version": meta.version}),
            AuditResult::Ok,
        );
        event.replayed = replayed;
        edge.record(event)
    }
}

/// A failure that was not the audit's own, nor recorded by the cluster:
/// audit it as a refusal.
fn refuse_unless_audited(
    edge: &Edge<'_>,
    env: &EnvId,
    verb: &str,
    target: Value,
    failed: Failed,
) -> CliError {
    if failed.audited || failed.error.kind == ErrorKind::Audit {
        return failed.error;
    }
    edge.refused(env, verb, target, failed.error)
}

/// `secrets get`: metadata; the value too with `reveal` (the caller checked
/// the role: admin through the API). A reveal is audited before the value
/// is returned, and refused if the audit cannot be written.
pub fn get(edge: &Edge<'_>, answers: SecretGetAnswers) -> Result<Value, CliError> {
    let env = answers.environment_id.clone();
    edge.check_environment(&env)?;
    let path = edge.path(&env, &answers.path)?;
    let store = edge.secret_store();
    let latest = store.get(&env, &path, None).map_err(cli_error)?.version;
    if !answers.reveal {
        let meta = store.get(&env, &path, answers.version).map_err(cli_error)?;
        let mut body = json!(meta);
        body["latest"] = json!(latest);
        return Ok(body);
    }
    let target = json!({"environment_id": env, "path": path.as_str(), "version": answers.version, "reveal": true});
    let (meta, value) = reveal_audited(edge, &env, &path, answers.version, target)?;
    let mut body = json!(meta);
    body["latest"] = json!(latest);
    body["value"] = json!(value.expose());
    Ok(body)
}

/// The latest value of `reference` for a verb that hands it on rather than
/// printing it (`env reconcile` fills the cluster's `gtc-dev-secrets`
/// Secret): the environment's secret store must serve it, and the reveal
/// is audited like `secrets get --reveal` (verb `get`, the path and `for`
/// naming the verb, never the value) and refused if the audit cannot be
/// written. A missing secret is `not-found`, naming the ref.
pub fn reveal_latest(
    edge: &Edge<'_>,
    env: &EnvId,
    reference: &str,
    purpose: &str,
) -> Result<(secrets::VersionMeta, secrets::SecretText), CliError> {
    reveal_for(edge, env, reference, None, purpose)
}

/// Like [`reveal_latest`], for the exact `version` a revision pinned (`env
/// reconcile` fills a worker's Secret with its revision's versions).
pub fn reveal_for(
    edge: &Edge<'_>,
    env: &EnvId,
    reference: &str,
    version: Option<u32>,
    purpose: &str,
) -> Result<(secrets::VersionMeta, secrets::SecretText), CliError> {
    edge.check_environment(env)?;
    let path = edge.path(env, reference)?;
    let target = json!({"environment_id": env, "path": path.as_str(), "version": version, "reveal": true, "for": purpose});
    reveal_audited(edge, env, &path, version, target)
}

/// The metadata of `reference`'s latest version (no value, no key needed):
/// whether it can be revealed later.
#[cfg_attr(
    not(feature = "kube"),
    expect(dead_code, reason = "used by the Kubernetes apply only")
)]
pub fn latest_meta(
    edge: &Edge<'_>,
    env: &EnvId,
    reference: &str,
) -> Result<secrets::VersionMeta, CliError> {
    edge.check_environment(env)?;
    let path = edge.path(env, reference)?;
    edge.secret_store().get(env, &path, None).map_err(cli_error)
}

/// Opens `version` of `path` and audits the reveal before returning it.
fn reveal_audited(
    edge: &Edge<'_>,
    env: &EnvId,
    path: &SecretPath,
    version: Option<u32>,
    target: Value,
) -> Result<(secrets::VersionMeta, secrets::SecretText), CliError> {
    let (meta, value) = match edge.secret_store().reveal(env, path, version) {
        Ok(opened) => opened,
        Err(error) => return Err(edge.refused(env, "get", target, cli_error(error))),
    };
    let event = edge.event(env, "get", target, AuditResult::Ok);
    edge.record(event).map_err(|audit| {
        CliError::new(
            ErrorKind::Audit,
            format!("the reveal could not be audited, so the value is not returned: {audit}"),
        )
    })?;
    Ok((meta, value))
}

/// `secrets list ENV`: paths and versions, never values.
pub fn list(edge: &Edge<'_>, env: &EnvId) -> Result<Value, CliError> {
    let backend = edge.check_environment(env)?;
    let rows = edge.secret_store().list(env).map_err(cli_error)?;
    Ok(json!({
        "environment_id": env,
        "namespace": format!("secret://{env}/"),
        "backend": backend,
        "secrets": rows,
    }))
}

/// A denial of a known caller, audited like every other.
pub fn denied(edge: &Edge<'_>, env: &EnvId, verb: &str, target: Value) -> Result<(), CliError> {
    let mut event = edge.event(
        env,
        verb,
        target,
        AuditResult::Error {
            kind: ErrorKind::Unauthorized.as_str().to_owned(),
            message: edge.authorization.reason.clone(),
        },
    );
    event.authorization.decision = Decision::Deny;
    edge.record(event)
        .map_err(|audit| CliError::new(ErrorKind::Audit, audit))
}

/// Audits a change the environment's trust root refused (unsigned, or by
/// a key it does not list) as a denial, and returns `error`.
pub fn unsigned(
    edge: &Edge<'_>,
    env: &EnvId,
    verb: &str,
    target: Value,
    error: CliError,
) -> CliError {
    let mut event = edge.event(
        env,
        verb,
        target,
        AuditResult::Error {
            kind: error.kind.as_str().to_owned(),
            message: error.message.clone(),
        },
    );
    event.authorization = crate::trust_root::denial(&error);
    match edge.record(event) {
        Ok(()) => error,
        Err(audit) => CliError::new(
            ErrorKind::Audit,
            format!(
                "{} (and its audit event could not be written: {audit})",
                error.message
            ),
        ),
    }
}

/// Resolves a bundle's `runtime.secrets` for `env` to the exact versions a
/// revision staged now pins: the named `version`, else the latest. The
/// values are not read (only metadata), so staging needs no key; a use
/// whose secret or version does not exist is refused with its entry named
/// and how to store it.
pub fn pin_uses(
    store: &dyn EnvironmentStore,
    root: &Path,
    env: &EnvId,
    uses: &[deploy::secret_pins::SecretUse],
) -> Result<Vec<deploy::secret_pins::SecretPin>, CliError> {
    if uses.is_empty() {
        return Ok(Vec::new());
    }
    let field = |index: Option<usize>| {
        index.map_or_else(
            || "runtime.secrets".to_owned(),
            |i| format!("runtime.secrets[{i}]"),
        )
    };
    deploy::secret_pins::check_uses(uses, Some(env)).map_err(|error| {
        let (code, kind) = match &error {
            deploy::secret_pins::SecretUseError::Scope { .. } => {
                ("cross-env-ref", ErrorKind::InvalidArgument)
            }
            _ => ("invalid-secret-use", ErrorKind::InvalidArgument),
        };
        CliError::new(
            kind,
            format!("the bundle's {}: {error}", field(error.index())),
        )
        .with_field("bundle_path")
        .with_details(json!({"secrets_error": code, "entry": field(error.index())}))
    })?;
    served_here(store, root, env)?;
    let secrets = SecretStore::new(root);
    uses.iter()
        .enumerate()
        .map(|(index, secret)| {
            let path = secrets::path::parse_for_env(secret.reference.as_str(), env)
                .map_err(|e| cli_error(e.into()))?;
            let meta = secrets.get(env, &path, secret.version).map_err(|error| {
                let fix = match &error {
                    SecretsError::NotFound { .. } | SecretsError::VersionNotFound { .. } => format!(
                        "; store it first with `gtc op secrets put` ({} is what the bundle's {} names)",
                        secret.reference,
                        field(Some(index))
                    ),
                    _ => String::new(),
                };
                let mut cli = cli_error(error);
                cli.message = format!("{}: {}{fix}", field(Some(index)), cli.message);
                cli.with_field("bundle_path")
            })?;
            Ok(deploy::secret_pins::SecretPin {
                reference: secret.reference.clone(),
                version: meta.version,
                env: secret.env.clone(),
                file: secret.file.clone(),
            })
        })
        .collect()
}
