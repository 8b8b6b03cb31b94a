//! `gtc op env trust list|add|remove` and `gtc operator key create|show`:
//! an environment's trust root and this operator's key (spec C2).
//!
//! Trust roots are files beside the environment's state, not part of it,
//! so these verbs do not go through `deploy::apply`: each is authorized by
//! the policy, audited at the edge (fail closed: the event is written
//! before the file), and written atomically. Adding the first key is the
//! bootstrap anyone the policy allows may do; once a trust root exists,
//! adding and removing keys are signed changes like every other.

use deploy::audit::{AUDIT_SCHEMA, AuditEvent, AuditResult, Authorization, Decision};
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

/// The noun of the trust verbs in reports and audit events (the spec's).
pub const NOUN: &str = "trust-root";
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
    let trust = trust_root::load(context.store.root(), &env_id)?;
    let result = json!({
        "environment_id": env_id,
        "path": trust_root::path(context.store.root(), &env_id),
        "signing": trust.is_some() && !env_id.is_local(),
        "keys": trust.map(|t| t.keys).unwrap_or_default(),
    });
    Ok(Report::new(NOUN, "list", result))
}

/// One trust-root change as the audit log sees it.
struct Change<'a> {
    context: &'a Context,
    env: EnvId,
    verb: &'static str,
    target: Value,
    authorization: Authorization,
    signed_by: Option<String>,
}

impl<'a> Change<'a> {
    /// A change of `env`'s trust root by `verb`, authorized by the owner's
    /// policy; `signed_by` is set once the signer is known.
    fn new(context: &'a Context, env: &EnvId, verb: &'static str, target: Value) -> Self {
        Self {
            context,
            env: env.clone(),
            verb,
            target,
            authorization: context.authorize(env),
            signed_by: None,
        }
    }

    fn record(&self, result: AuditResult) -> Result<(), CliError> {
        let event = AuditEvent {
            schema: AUDIT_SCHEMA.to_owned(),
            event_id: EventId::from_ulid(ulid::Ulid::new()),
            ts: chrono::Utc::now(),
            actor: self.context.checks.actor.clone(),
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
        };
        self.context.store.record(event).map_err(|error| {
            CliError::new(
                ErrorKind::Audit,
                format!("the audit event could not be written: {error}"),
            )
        })
    }

    /// Audits `error` and returns it (or the audit's own failure).
    fn refuse(&self, error: CliError) -> CliError {
        let result = AuditResult::Error {
            kind: error.kind.as_str().to_owned(),
            message: error.message.clone(),
        };
        match self.record(result) {
            Ok(()) => error,
            Err(audit) => audit,
        }
    }

    /// The policy's decision, then (once a trust root exists) the
    /// operator's signature; each refusal audited as a denial.
    fn authorize(&mut self, existing: Option<&TrustRoot>) -> Result<(), CliError> {
        if self.authorization.decision == Decision::Deny {
            let error = self.context.checks.denial(&self.authorization, &self.env);
            return Err(self.refuse(error));
        }
        if existing.is_none() {
            return Ok(());
        }
        match self.context.signer(&self.env) {
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

/// Refuses on a cluster member's replica: trust roots are files of this
/// machine's store and are not replicated.
fn single_node(context: &Context) -> Result<(), CliError> {
    let root = context.store.root();
    if root.join(crate::node_client::NODE_FILE).is_file() {
        return Err(CliError::new(
            ErrorKind::NotYetImplemented,
            format!(
                "{} is a cluster member's replica and trust roots are not replicated between members yet; nothing was written",
                root.display()
            ),
        ));
    }
    Ok(())
}

fn add(context: &Context, answers: TrustAddAnswers) -> Result<Report, CliError> {
    let env = answers.environment_id.clone();
    single_node(context)?;
    context.load(env.as_str())?;
    let mut change = Change::new(
        context,
        &env,
        "add",
        json!({"environment_id": env, "label": answers.label}),
    );
    let public = match checked_key(&env, &answers) {
        Ok(public) => public,
        Err(error) => return Err(change.refuse(error)),
    };
    change.target["key_id"] = json!(public.key_id());
    let existing = trust_root::load(context.store.root(), &env)?;
    change.authorize(existing.as_ref())?;
    let bootstrap = existing.is_none();
    let mut trust = existing.unwrap_or_default();
    if trust.find(&public).is_some() {
        return Err(change.refuse(CliError::new(
            ErrorKind::AlreadyExists,
            format!(
                "operator key {} is already in the trust root of {env}",
                public.key_id()
            ),
        )));
    }
    if trust.keys.len() >= TRUST_ROOT_KEYS_MAX {
        return Err(change.refuse(CliError::new(
            ErrorKind::Conflict,
            format!(
                "the trust root of {env} holds {TRUST_ROOT_KEYS_MAX} keys already; remove one first"
            ),
        )));
    }
    trust.keys.push(TrustedKey {
        key_id: public.key_id(),
        public_key: public.to_base64(),
        label: answers.label.clone(),
        added_at: chrono::Utc::now(),
        added_by: context.checks.actor.display_name(),
    });
    change.record(AuditResult::Ok)?;
    trust_root::save(context.store.root(), &env, &trust)?;
    let mut report = Report::new(
        NOUN,
        "add",
        json!({
            "environment_id": env,
            "key_id": public.key_id(),
            "label": answers.label,
            "bootstrap": bootstrap,
            "keys": trust.keys.len(),
            "signed_by": change.signed_by,
        }),
    );
    report.idempotency = Some("applied");
    Ok(report)
}

/// The payload's key and label, checked.
fn checked_key(env: &EnvId, answers: &TrustAddAnswers) -> Result<PublicKey, CliError> {
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
    let env = answers.environment_id.clone();
    single_node(context)?;
    context.load(env.as_str())?;
    let mut change = Change::new(
        context,
        &env,
        "remove",
        json!({"environment_id": env, "key_id": answers.key_id}),
    );
    let path = trust_root::path(context.store.root(), &env);
    let Some(mut trust) = trust_root::load(context.store.root(), &env)? else {
        return Err(change.refuse(CliError::new(
            ErrorKind::NotFound,
            format!(
                "environment {env} has no trust root ({}), so there is no key to remove",
                path.display()
            ),
        )));
    };
    change.authorize(Some(&trust))?;
    let Some(index) = trust.keys.iter().position(|k| k.key_id == answers.key_id) else {
        return Err(change.refuse(
            CliError::new(
                ErrorKind::NotFound,
                format!(
                    "key {} is not in the trust root of {env}; `gtc op env trust list {env}` shows its keys",
                    answers.key_id
                ),
            )
            .with_field("key_id"),
        ));
    };
    if trust.keys.len() == 1 {
        return Err(change.refuse(CliError::new(
            ErrorKind::Conflict,
            format!(
                "key {} is the last key of the trust root of {env}: removing it would turn signing off for {env}. To turn signing off, delete {} by hand on the store's machine",
                answers.key_id,
                path.display()
            ),
        )));
    }
    let removed = trust.keys.remove(index);
    change.record(AuditResult::Ok)?;
    trust_root::save(context.store.root(), &env, &trust)?;
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
