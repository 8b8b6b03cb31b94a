//! `gtc op env trust list|add|remove` and `gtc operator key create|show`:
//! an environment's trust root and this operator's key (spec C2).
//!
//! Trust roots are files beside the environment's state, not part of it,
//! so these verbs do not go through `deploy::apply`: each is authorized (the
//! CLI's policy, or the admin API's role), audited at the edge (fail
//! closed: the event is written before the file), and written atomically.
//! Adding the first key is the bootstrap anyone allowed may do; once a
//! trust root exists, adding and removing keys are signed changes like
//! every other. On a cluster member the new document goes through Raft
//! (`consensus::TrustRootChange`, written by every replica over the file it
//! was built from), so every member enforces the same keys; the CLI on a
//! member's folder goes through the running member, and `--node` through
//! the node's API (`/v1/environments/{env}/trust-root`).

use std::path::Path;

use deploy::audit::{AUDIT_SCHEMA, Actor, AuditEvent, AuditResult, Authorization, Decision};
use deploy::error::ErrorKind;
use deploy::ids::{EnvId, EventId};
use serde_json::{Value, json};
use store::EnvironmentStore;

use crate::cli::{OperatorKeyVerb, TrustVerb};
use crate::context::{Context, greentic_home};
use crate::error::CliError;
use crate::operator_key::{OperatorKey, PublicKey};
use crate::output::Report;
use crate::trust_root::{
    self, TRUST_ROOT_KEYS_MAX, TrustAddAnswers, TrustRemoveAnswers, TrustRoot, TrustedKey,
};

pub use crate::trust_root::NOUN;
/// Longest label of a trusted key.
const LABEL_CHARS_MAX: usize = 128;

/// `gtc operator key create|show`.
pub fn operator_key(verb: OperatorKeyVerb) -> Result<Report, CliError> {
    let home = greentic_home()?;
    let (name, key) = match verb {
        OperatorKeyVerb::Create => ("create", OperatorKey::create(&home)),
        OperatorKeyVerb::Show => ("show", OperatorKey::load(&home)),
    };
    let key = key.map_err(trust_root::key_error)?;
    let mut result = key.public().describe();
    result["path"] = json!(crate::operator_key::key_path(&home));
    Ok(Report::new("operator-key", name, result))
}

/// The name of an operator-key verb.
pub fn operator_key_verb(verb: &OperatorKeyVerb) -> &'static str {
    match verb {
        OperatorKeyVerb::Create => "create",
        OperatorKeyVerb::Show => "show",
    }
}

/// `gtc op env trust …`.
pub fn run(context: &Context, verb: TrustVerb) -> Result<Report, CliError> {
    if let Some(remote) = context.remote() {
        return remote_trust(remote, verb);
    }
    // A cluster member's replica changes only through its running member.
    if context
        .store
        .root()
        .join(crate::node_client::NODE_FILE)
        .is_file()
        && let Some(member) = crate::remote::member(context.store.root(), &context.home)?
    {
        return remote_trust(&member, verb);
    }
    match verb {
        TrustVerb::List(env) => list(context, &env.env),
        TrustVerb::Add(mutation) => {
            let answers: TrustAddAnswers = super_answers(&mutation, "add")?;
            add(context, answers)
        }
        TrustVerb::Remove(mutation) => {
            let answers: TrustRemoveAnswers = super_answers(&mutation, "remove")?;
            remove(context, answers)
        }
    }
}

fn super_answers<T: serde::de::DeserializeOwned>(
    mutation: &crate::cli::Mutation,
    verb: &str,
) -> Result<T, CliError> {
    crate::answers::from_mutation(mutation, "env trust", verb)
}

fn list(context: &Context, env: &str) -> Result<Report, CliError> {
    let env_id = context.load(env)?.env_id().clone();
    Ok(Report::new(
        NOUN,
        "list",
        listing(context.store.root(), &env_id)?,
    ))
}

/// What `trust list` answers for `env` of the store at `root`.
pub fn listing(root: &Path, env_id: &EnvId) -> Result<Value, CliError> {
    let trust = trust_root::load(root, env_id)?;
    Ok(json!({
        "environment_id": env_id,
        "path": trust_root::path(root, env_id),
        "signing": trust.is_some() && !env_id.is_local(),
        "keys": trust.map(|t| t.keys).unwrap_or_default(),
    }))
}

/// `gtc op env trust … --node URL` (or on a member's folder): the verbs
/// through the node's admin API, signed with this operator's key.
fn remote_trust(remote: &crate::remote::Remote, verb: TrustVerb) -> Result<Report, CliError> {
    match verb {
        TrustVerb::List(env) => {
            let env = crate::checks::parse_env(&env.env)?;
            remote.trust_list(&env)
        }
        TrustVerb::Add(mutation) => {
            let answers: TrustAddAnswers = super_answers(&mutation, "add")?;
            let env = answers.environment_id.clone();
            let body = json!({"public_key": answers.public_key, "label": answers.label});
            remote.trust_change(&env, "", "add", &body)
        }
        TrustVerb::Remove(mutation) => {
            let answers: TrustRemoveAnswers = super_answers(&mutation, "remove")?;
            let env = answers.environment_id.clone();
            remote.trust_change(
                &env,
                "/remove",
                "remove",
                &json!({"key_id": answers.key_id}),
            )
        }
    }
}

/// Who changes a trust root, and where the change is written.
pub struct TrustEdge<'a> {
    pub store: &'a dyn EnvironmentStore,
    /// The store root (the trust root files live beside the states).
    pub root: &'a Path,
    pub actor: Actor,
    /// The running member whose log takes the change on a cluster.
    pub cluster: Option<consensus::ReplicatedStore>,
}

/// How many times a change built from a trust root that another change
/// replaced meanwhile is built again.
const STALE_RETRIES: usize = 8;

/// One trust-root change as the audit log sees it.
pub struct Change<'a> {
    edge: &'a TrustEdge<'a>,
    env: EnvId,
    verb: &'static str,
    target: Value,
    authorization: Authorization,
    signed_by: Option<String>,
}

impl<'a> Change<'a> {
    /// A change of `env`'s trust root by `verb`, decided by
    /// `authorization` and signed by `signed_by` (set later by the CLI
    /// once it knows the signer).
    pub fn new(
        edge: &'a TrustEdge<'a>,
        env: &EnvId,
        verb: &'static str,
        target: Value,
        authorization: Authorization,
        signed_by: Option<String>,
    ) -> Self {
        Self {
            edge,
            env: env.clone(),
            verb,
            target,
            authorization,
            signed_by,
        }
    }

    fn event(&self, result: AuditResult) -> AuditEvent {
        AuditEvent {
            schema: AUDIT_SCHEMA.to_owned(),
            event_id: EventId::from_ulid(ulid::Ulid::new()),
            ts: chrono::Utc::now(),
            actor: self.edge.actor.clone(),
            env_id: self.env.to_string(),
            noun: NOUN.to_owned(),
            verb: self.verb.to_owned(),
            target: self.target.clone(),
            previous_generation: None,
            new_generation: None,
            idempotency_key: None,
            replayed: false,
            authorization: self.authorization.clone(),
            result,
            signed_by: self.signed_by.clone(),
            prev_hash: String::new(),
        }
    }

    fn record(&self, result: AuditResult) -> Result<(), CliError> {
        let event = self.event(result);
        self.edge.store.record(event).map_err(|error| {
            CliError::new(
                ErrorKind::Audit,
                format!("the audit event could not be written: {error}"),
            )
        })
    }

    /// Takes the admin API's signature check: the key that signed, or the
    /// refusal, audited as a denial.
    pub fn signed(&mut self, signed_by: Result<Option<String>, CliError>) -> Result<(), CliError> {
        match signed_by {
            Ok(signed_by) => {
                self.signed_by = signed_by;
                Ok(())
            }
            Err(error) => {
                self.authorization = trust_root::denial(&error);
                Err(self.refuse(error))
            }
        }
    }

    /// Audits `error` and returns it (or the audit's own failure).
    pub fn refuse(&self, error: CliError) -> CliError {
        let result = AuditResult::Error {
            kind: error.kind.as_str().to_owned(),
            message: error.message.clone(),
        };
        match self.record(result) {
            Ok(()) => error,
            Err(audit) => audit,
        }
    }

    /// The CLI's policy decision, then (once a trust root exists) this
    /// operator's signature; each refusal audited as a denial.
    fn authorize(&mut self, context: &Context) -> Result<(), CliError> {
        if self.authorization.decision == Decision::Deny {
            let error = context.checks.denial(&self.authorization, &self.env);
            return Err(self.refuse(error));
        }
        if trust_root::load(self.edge.root, &self.env)?.is_none() {
            return Ok(());
        }
        match context.signer(&self.env) {
            Ok(signed_by) => {
                self.signed_by = signed_by;
                Ok(())
            }
            Err(error) => {
                self.authorization = trust_root::denial(&error);
                Err(self.refuse(error))
            }
        }
    }
}

/// Refuses on a cluster member's replica whose member is not running: its
/// trust root changes only through the member (and Raft).
fn not_a_stopped_replica(context: &Context) -> Result<(), CliError> {
    let root = context.store.root();
    if root.join(crate::node_client::NODE_FILE).is_file() {
        return Err(CliError::new(
            ErrorKind::InvalidArgument,
            format!(
                "{} is a cluster member's replica and its member is not running: trust roots change through the member (start it with `gtc node run --cluster-dir …`), so nothing was written",
                root.display()
            ),
        ));
    }
    Ok(())
}

/// The edge of a CLI change on this machine's own store.
fn cli_edge(context: &Context) -> TrustEdge<'_> {
    TrustEdge {
        store: &context.store,
        root: context.store.root(),
        actor: context.checks.actor.clone(),
        cluster: None,
    }
}

fn add(context: &Context, answers: TrustAddAnswers) -> Result<Report, CliError> {
    not_a_stopped_replica(context)?;
    context.load(answers.environment_id.as_str())?;
    let edge = cli_edge(context);
    let env = answers.environment_id.clone();
    let mut change = Change::new(
        &edge,
        &env,
        "add",
        json!({"environment_id": env, "label": answers.label}),
        context.authorize(&env),
        None,
    );
    let public = checked_key(&env, &answers).map_err(|error| change.refuse(error))?;
    change.target["key_id"] = json!(public.key_id());
    change.authorize(context)?;
    add_key(&change, &public, &answers.label)
}

/// Adds `public` to the trust root (the first key makes it), audited and
/// written here or through the cluster; the caller authorized the change.
pub fn add_key(change: &Change<'_>, public: &PublicKey, label: &str) -> Result<Report, CliError> {
    let env = change.env.clone();
    let added_by = change.edge.actor.display_name();
    let label = label.to_owned();
    let (trust, bootstrap) = commit(change, |existing| {
        let bootstrap = existing.is_none();
        let mut trust = existing.unwrap_or_default();
        if trust.find(public).is_some() {
            return Err(CliError::new(
                ErrorKind::AlreadyExists,
                format!(
                    "operator key {} is already in the trust root of {env}",
                    public.key_id()
                ),
            ));
        }
        if trust.keys.len() >= TRUST_ROOT_KEYS_MAX {
            return Err(CliError::new(
                ErrorKind::Conflict,
                format!(
                    "the trust root of {env} holds {TRUST_ROOT_KEYS_MAX} keys already; remove one first"
                ),
            ));
        }
        trust.keys.push(TrustedKey {
            key_id: public.key_id(),
            public_key: public.to_base64(),
            label: label.clone(),
            added_at: chrono::Utc::now(),
            added_by: added_by.clone(),
        });
        Ok((trust, bootstrap))
    })?;
    let mut report = Report::new(
        NOUN,
        "add",
        json!({
            "environment_id": change.env,
            "key_id": public.key_id(),
            "label": label,
            "bootstrap": bootstrap,
            "keys": trust.keys.len(),
            "signed_by": change.signed_by,
        }),
    );
    report.idempotency = Some("applied");
    Ok(report)
}

/// Builds the new trust root from the current one with `build` and writes
/// it: here (audit, then the file) or through the cluster, where every
/// replica writes it over the file it was built from, and a change built
/// from a file another change replaced meanwhile is built again. A refusal
/// of `build` is audited.
fn commit<T>(
    change: &Change<'_>,
    build: impl Fn(Option<TrustRoot>) -> Result<(TrustRoot, T), CliError>,
) -> Result<(TrustRoot, T), CliError> {
    let (root, env) = (change.edge.root, &change.env);
    let Some(cluster) = &change.edge.cluster else {
        let existing = trust_root::load(root, env)?;
        let (trust, built) = build(existing).map_err(|error| change.refuse(error))?;
        change.record(AuditResult::Ok)?;
        trust_root::save(root, env, &trust)?;
        return Ok((trust, built));
    };
    for _ in 0..STALE_RETRIES {
        let previous = match std::fs::read(trust_root::path(root, env)) {
            Ok(bytes) => Some(consensus::trust_root_digest(&bytes)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => {
                return Err(CliError::new(
                    ErrorKind::Io,
                    format!("cannot read the trust root of {env}: {error}"),
                ));
            }
        };
        let existing = trust_root::load(root, env)?;
        let (trust, built) = build(existing).map_err(|error| change.refuse(error))?;
        let document = trust_root::document(&trust)?;
        let request = consensus::TrustRootChange {
            env_id: env.clone(),
            previous_sha256: previous,
            document,
        };
        let outcome = cluster
            .trust_root_change(&request, &change.event(AuditResult::Ok))
            .map_err(|error| {
                CliError::new(
                    ErrorKind::Store,
                    format!("the cluster did not apply the trust root change: {error}"),
                )
            })?;
        match outcome {
            consensus::TrustRootOutcome::Written => return Ok((trust, built)),
            consensus::TrustRootOutcome::Stale { reason } => {
                tracing::debug!(%reason, "a trust root change was built from a replaced file; building it again");
            }
            // Recorded by every replica already.
            consensus::TrustRootOutcome::Refused { kind, message } => {
                return Err(CliError::new(
                    ErrorKind::parse(&kind).unwrap_or(ErrorKind::Store),
                    message,
                ));
            }
        }
    }
    Err(CliError::new(
        ErrorKind::Conflict,
        format!(
            "the trust root of {env} changed under {STALE_RETRIES} attempts in a row (other changes through other members); nothing was written by this one, try again"
        ),
    ))
}

/// The payload's key and label, checked.
pub fn checked_key(env: &EnvId, answers: &TrustAddAnswers) -> Result<PublicKey, CliError> {
    if env.is_local() {
        return Err(CliError::invalid(
            "the local environment is never signed, so it has no trust root; add keys to the other environments",
        )
        .with_field("environment_id"));
    }
    let label = answers.label.trim();
    if label.is_empty() || label.chars().count() > LABEL_CHARS_MAX {
        return Err(CliError::invalid(format!(
            "label must name whose key this is, in 1 to {LABEL_CHARS_MAX} characters"
        ))
        .with_field("label"));
    }
    PublicKey::from_base64(&answers.public_key).map_err(|error| {
        CliError::invalid(format!(
            "{error}; give the public_key `gtc operator key show` prints"
        ))
        .with_field("public_key")
    })
}

fn remove(context: &Context, answers: TrustRemoveAnswers) -> Result<Report, CliError> {
    not_a_stopped_replica(context)?;
    context.load(answers.environment_id.as_str())?;
    let edge = cli_edge(context);
    let env = answers.environment_id.clone();
    let mut change = Change::new(
        &edge,
        &env,
        "remove",
        json!({"environment_id": env, "key_id": answers.key_id}),
        context.authorize(&env),
        None,
    );
    change.authorize(context)?;
    remove_key(&change, &answers.key_id)
}

/// Removes `key_id` from the trust root (never its last key), audited and
/// written here or through the cluster; the caller authorized the change.
pub fn remove_key(change: &Change<'_>, key_id: &str) -> Result<Report, CliError> {
    let env = change.env.clone();
    let path = trust_root::path(change.edge.root, &env);
    let (trust, removed) = commit(change, |existing| {
        let Some(mut trust) = existing else {
            return Err(CliError::new(
                ErrorKind::NotFound,
                format!(
                    "environment {env} has no trust root ({}), so there is no key to remove",
                    path.display()
                ),
            ));
        };
        let Some(index) = trust.keys.iter().position(|k| k.key_id == key_id) else {
            return Err(CliError::new(
                ErrorKind::NotFound,
                format!(
                    "key {key_id} is not in the trust root of {env}; `gtc op env trust list {env}` shows its keys"
                ),
            )
            .with_field("key_id"));
        };
        if trust.keys.len() == 1 {
            return Err(CliError::new(
                ErrorKind::Conflict,
                format!(
                    "key {key_id} is the last key of the trust root of {env}: removing it would turn signing off for {env}. To turn signing off, delete {} by hand on the store's machine (every member's, on a cluster)",
                    path.display()
                ),
            ));
        }
        let removed = trust.keys.remove(index);
        Ok((trust, removed))
    })?;
    let mut report = Report::new(
        NOUN,
        "remove",
        json!({
            "environment_id": env,
            "key_id": removed.key_id,
            "label": removed.label,
            "keys": trust.keys.len(),
            "signed_by": change.signed_by,
        }),
    );
    report.idempotency = Some("applied");
    Ok(report)
}
