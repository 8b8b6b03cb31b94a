//! `gtc op … --node URL --token T`: the same verbs against any node's admin
//! API from anywhere, over the remote-store contract (`/v1/environments…`),
//! with an API token and its role instead of the local node file.
//!
//! Reads fetch the environment (`GET /v1/environments/{env}`, linearizable
//! on a cluster member); changes go to the verb's contract route with the
//! answers as the body and `If-Match` set to the environment's current
//! ETag, so a change made meanwhile by someone else is refused (412)
//! rather than silently overwritten.

use deploy::command::Command;
use deploy::error::ErrorKind;
use deploy::ids::EnvId;
use deploy::state::{EnvironmentState, STATE_SCHEMA};
use serde_json::Value;

use crate::error::CliError;
use crate::node_client::NodeClient;
use crate::output::Report;

/// A node reached by URL.
pub struct Remote {
    client: NodeClient,
}

fn error_from(status: u16, document: &Value) -> CliError {
    let error = &document["error"];
    let kind = ErrorKind::parse(error["kind"].as_str().unwrap_or("")).unwrap_or(ErrorKind::Store);
    let mut cli = CliError::new(
        kind,
        error["message"]
            .as_str()
            .map_or_else(|| format!("the node answered {status}"), str::to_owned),
    );
    if let Some(field) = error["field"].as_str() {
        cli = cli.with_field(field);
    }
    cli
}

fn parse<T: serde::de::DeserializeOwned>(value: &Value) -> Result<T, CliError> {
    serde_json::from_value(value.clone()).map_err(|e| {
        CliError::new(
            ErrorKind::Store,
            format!("the node's environment document is not valid: {e}"),
        )
    })
}

fn encode(value: &impl serde::Serialize) -> Result<Value, CliError> {
    serde_json::to_value(value).map_err(|e| CliError::new(ErrorKind::Store, e.to_string()))
}

impl Remote {
    pub fn new(client: NodeClient) -> Self {
        Self { client }
    }

    /// The environment as the node has it, and its ETag.
    fn fetch(&self, env: &EnvId) -> Result<(EnvironmentState, String), CliError> {
        let (status, document) =
            self.client
                .request("GET", &format!("/v1/environments/{env}"), b"")?;
        if status != 200 {
            return Err(error_from(status, &document));
        }
        let state = EnvironmentState {
            schema: STATE_SCHEMA.to_owned(),
            generation: document["generation"].as_u64().unwrap_or(0),
            updated_at: parse(&document["updated_at"])?,
            audit_head: None,
            environment: parse(&document["environment"])?,
            legacy_idempotency: Vec::new(),
        };
        let etag = document["etag"].as_str().unwrap_or_default().to_owned();
        Ok((state, etag))
    }

    /// The environment, for read-only verbs.
    pub fn load(&self, env: &EnvId) -> Result<EnvironmentState, CliError> {
        self.fetch(env).map(|(state, _)| state)
    }

    /// Sends `command` to its contract route; the node authorizes, applies
    /// and audits it with the token's identity.
    ///
    /// The `If-Match` it sends is the ETag it read just before: it carries
    /// no decision the operator made on that state (the node's `apply`
    /// checks the command against the state it applies to). So a 412 from
    /// a change that landed between the read and the write (a revision's
    /// readiness report, a placement, another operator) is retried with the
    /// new ETag, at most [`STALE_ETAG_RETRIES`] times; a 412 means nothing
    /// was applied.
    pub fn submit(&self, command: &Command) -> Result<Report, CliError> {
        let env = command.env_id();
        let (method, path, body) = route(command)?;
        let bytes = serde_json::to_vec(&body)
            .map_err(|e| CliError::new(ErrorKind::Store, e.to_string()))?;
        let current = |env| -> Result<Option<String>, CliError> {
            Ok(match command {
                Command::EnvCreate(_) => None,
                _ => Some(format!("\"{}\"", self.fetch(env)?.1)),
            })
        };
        let mut etag = current(&env)?;
        let mut attempt = 0;
        let document = loop {
            let headers: Vec<(&str, &str)> =
                etag.iter().map(|e| ("If-Match", e.as_str())).collect();
            let (status, document) = self.client.request_with(method, &path, &bytes, &headers)?;
            if (200..300).contains(&status) {
                break document;
            }
            attempt += 1;
            if status != 412 || etag.is_none() || attempt > STALE_ETAG_RETRIES {
                return Err(error_from(status, &document));
            }
            // Only a newer state is worth another try; a 412 with the
            // current ETag is about the payload (an expected generation).
            let newer = current(&env)?;
            if newer == etag {
                return Err(error_from(status, &document));
            }
            etag = newer;
        };
        let mut report = Report::new(command.noun(), command.verb(), document["result"].clone());
        report.generation = document["generation"].as_u64();
        report.idempotency = match document["idempotency"].as_str() {
            Some("replayed") => Some("replayed"),
            Some("unchanged") => Some("unchanged"),
            _ => Some("applied"),
        };
        report.via = Some("node");
        Ok(report)
    }
}

impl Remote {
    /// `GET path`, refusing anything but 200.
    fn get(&self, path: &str) -> Result<Value, CliError> {
        let (status, document) = self.client.request("GET", path, b"")?;
        if status != 200 {
            return Err(error_from(status, &document));
        }
        Ok(document)
    }

    /// `env list`: the environments the token has a role on.
    pub fn list(&self) -> Result<Report, CliError> {
        let document = self.get(ENVIRONMENTS_PATH)?;
        let mut report = Report::new("env", "list", document["environments"].clone());
        report.via = Some("node");
        Ok(report)
    }

    /// `env backups ENV`: the node's backups of the environment.
    pub fn backups(&self, env: &EnvId) -> Result<Report, CliError> {
        let document = self.get(&format!("{ENVIRONMENTS_PATH}/{env}/backups"))?;
        let mut report = Report::new(
            "env",
            "backups",
            crate::output::listing(env, "backups", document["backups"].clone()),
        );
        report.via = Some("node");
        Ok(report)
    }

    /// `env backup`: the node writes a backup into its own store and
    /// audits it.
    pub fn backup(&self, env: &EnvId) -> Result<Report, CliError> {
        let (status, document) =
            self.client
                .request("POST", &format!("{ENVIRONMENTS_PATH}/{env}/backups"), b"{}")?;
        if !(200..300).contains(&status) {
            return Err(error_from(status, &document));
        }
        let mut report = Report::new("env", "backup", document["result"].clone());
        report.generation = document["generation"].as_u64();
        report.idempotency = Some("applied");
        report.via = Some("node");
        Ok(report)
    }
}

/// `gtc op secrets … --node`: the secret routes. Values are put into the
/// request body here and nowhere else; a `value_file` is read on this
/// machine first.
impl Remote {
    fn secrets_call(
        &self,
        env: &EnvId,
        suffix: &str,
        verb: &'static str,
        body: &serde_json::Map<String, Value>,
    ) -> Result<Report, CliError> {
        let bytes = zeroize::Zeroizing::new(
            serde_json::to_vec(body).map_err(|e| CliError::new(ErrorKind::Store, e.to_string()))?,
        );
        let path = format!("{ENVIRONMENTS_PATH}/{env}/secrets{suffix}");
        let (status, document) = self.client.request("POST", &path, &bytes)?;
        if !(200..300).contains(&status) {
            return Err(error_from(status, &document));
        }
        let mut report = Report::new("secrets", verb, document["result"].clone());
        report.idempotency = match document["idempotency"].as_str() {
            Some("replayed") => Some("replayed"),
            Some("applied") => Some("applied"),
            _ => None,
        };
        report.via = Some("node");
        Ok(report)
    }

    /// `secrets list ENV`.
    pub fn secrets_list(&self, env: &EnvId) -> Result<Report, CliError> {
        let document = self.get(&format!("{ENVIRONMENTS_PATH}/{env}/secrets"))?;
        let mut report = Report::new("secrets", "list", document["result"].clone());
        report.via = Some("node");
        Ok(report)
    }

    /// `secrets put`.
    pub fn secrets_put(
        &self,
        answers: secrets::answers::SecretPutAnswers,
    ) -> Result<Report, CliError> {
        let env = answers.environment_id.clone();
        let mut body = serde_json::Map::new();
        body.insert("path".to_owned(), Value::String(answers.path.clone()));
        if let Some(key) = &answers.idempotency_key {
            body.insert("idempotency_key".to_owned(), Value::String(key.clone()));
        }
        let value = answers
            .into_value()
            .map_err(crate::secrets_cmd::cli_error)?;
        body.insert("value".to_owned(), Value::String(value.expose().to_owned()));
        let report = self.secrets_call(&env, "", "put", &body);
        // The body's copy of the value is zeroed before it is dropped.
        if let Some(Value::String(text)) = body.get_mut("value") {
            zeroize::Zeroize::zeroize(text);
        }
        report
    }

    /// `secrets get`.
    pub fn secrets_get(
        &self,
        answers: &secrets::answers::SecretGetAnswers,
    ) -> Result<Report, CliError> {
        let mut body = serde_json::Map::new();
        body.insert("path".to_owned(), Value::String(answers.path.clone()));
        if let Some(version) = answers.version {
            body.insert("version".to_owned(), Value::from(version));
        }
        body.insert("reveal".to_owned(), Value::Bool(answers.reveal));
        self.secrets_call(&answers.environment_id, "/get", "get", &body)
    }

    /// `secrets remove`.
    pub fn secrets_remove(
        &self,
        answers: &secrets::answers::SecretRemoveAnswers,
    ) -> Result<Report, CliError> {
        let mut body = serde_json::Map::new();
        body.insert("path".to_owned(), Value::String(answers.path.clone()));
        body.insert("version".to_owned(), Value::from(answers.version));
        self.secrets_call(&answers.environment_id, "/remove", "remove", &body)
    }

    /// `secrets rotate`.
    pub fn secrets_rotate(
        &self,
        answers: secrets::answers::SecretRotateAnswers,
    ) -> Result<Report, CliError> {
        let env = answers.environment_id.clone();
        let mut body = serde_json::Map::new();
        body.insert("path".to_owned(), Value::String(answers.path.clone()));
        if let Some(key) = &answers.idempotency_key {
            body.insert("idempotency_key".to_owned(), Value::String(key.clone()));
        }
        match answers
            .into_source()
            .map_err(crate::secrets_cmd::cli_error)?
        {
            secrets::answers::ValueSource::Given(value) => {
                body.insert("value".to_owned(), Value::String(value.expose().to_owned()));
            }
            secrets::answers::ValueSource::Generated(spec) => {
                body.insert("generate".to_owned(), encode(&spec)?);
            }
        }
        let report = self.secrets_call(&env, "/rotate", "rotate", &body);
        if let Some(Value::String(text)) = body.get_mut("value") {
            zeroize::Zeroize::zeroize(text);
        }
        report
    }
}

impl Remote {
    /// `env trust list ENV`.
    pub fn trust_list(&self, env: &EnvId) -> Result<Report, CliError> {
        let document = self.get(&format!("{ENVIRONMENTS_PATH}/{env}/trust-root"))?;
        let mut report = Report::new(crate::trust_root::NOUN, "list", document["result"].clone());
        report.via = Some("node");
        Ok(report)
    }

    /// `env trust add|remove` (`suffix` "" or "/remove"), signed when this
    /// operator has a key.
    pub fn trust_change(
        &self,
        env: &EnvId,
        suffix: &str,
        verb: &'static str,
        body: &Value,
    ) -> Result<Report, CliError> {
        let bytes =
            serde_json::to_vec(body).map_err(|e| CliError::new(ErrorKind::Store, e.to_string()))?;
        let path = format!("{ENVIRONMENTS_PATH}/{env}/trust-root{suffix}");
        let (status, document) = self.client.request("POST", &path, &bytes)?;
        if !(200..300).contains(&status) {
            return Err(error_from(status, &document));
        }
        let mut report = Report::new(crate::trust_root::NOUN, verb, document["result"].clone());
        report.idempotency = Some("applied");
        report.via = Some("node");
        Ok(report)
    }
}

/// `client`, signing changes with this operator's key (in `home`) when
/// there is one; a node asks for the signature only where a trust root
/// exists.
pub fn signed_client(client: NodeClient, home: &std::path::Path) -> Result<NodeClient, CliError> {
    match crate::operator_key::OperatorKey::load(home) {
        Ok(key) => Ok(client.with_signer(key)),
        Err(crate::operator_key::KeyError::Missing { .. }) => Ok(client),
        Err(error) => Err(crate::trust_root::key_error(error)),
    }
}

/// The running member whose replica is the store at `root` (its node file
/// at the root), as a remote signing with the operator key in `home`;
/// `None` when the store is not a member's replica or its member is not
/// running. Changes on a replica go through it.
pub fn member(root: &std::path::Path, home: &std::path::Path) -> Result<Option<Remote>, CliError> {
    if !root.join(crate::node_client::NODE_FILE).is_file() {
        return Ok(None);
    }
    let ca = std::env::var_os("GTC_ADMIN_CA").map(std::path::PathBuf::from);
    let Some(member) = crate::node_client::running_node(root, ca.as_deref()) else {
        return Ok(None);
    };
    Ok(Some(Remote::new(signed_client(member, home)?)))
}

/// How many times a change refused for a stale ETag (another change landed
/// between the read and the write) is sent again with the new one.
const STALE_ETAG_RETRIES: u32 = 5;

/// The collection route of the remote-store contract.
const ENVIRONMENTS_PATH: &str = "/v1/environments";

/// The contract route of a command: method, path and body.
fn route(command: &Command) -> Result<(&'static str, String, Value), CliError> {
    let env = command.env_id();
    let base = format!("/v1/environments/{env}");
    Ok(match command {
        Command::EnvCreate(a) => ("POST", "/v1/environments".to_owned(), encode(a)?),
        Command::EnvUpdate(a) => ("PATCH", base, encode(a)?),
        Command::EnvDestroy(a) => ("DELETE", base, encode(a)?),
        Command::BundleAdd(a) => ("POST", format!("{base}/bundles"), encode(a)?),
        Command::BundleUpdate(a) => (
            "PATCH",
            format!("{base}/bundles/{}", a.deployment_id),
            encode(a)?,
        ),
        Command::BundleRemove(a) => (
            "DELETE",
            format!("{base}/bundles/{}", a.deployment_id),
            encode(a)?,
        ),
        Command::RevisionStage { answers, .. } => {
            ("POST", format!("{base}/revisions"), encode(answers)?)
        }
        Command::RevisionWarm { answers, .. } => (
            "POST",
            format!("{base}/revisions/{}/warm", answers.revision_id),
            encode(answers)?,
        ),
        Command::RevisionDrain(a) => (
            "POST",
            format!("{base}/revisions/{}/drain", a.revision_id),
            encode(a)?,
        ),
        Command::RevisionArchive(a) => (
            "POST",
            format!("{base}/revisions/{}/archive", a.revision_id),
            encode(a)?,
        ),
        Command::RevisionScale(a) => (
            "POST",
            format!("{base}/revisions/{}/scale", a.revision_id),
            encode(a)?,
        ),
        Command::TrafficSet(a) => ("POST", format!("{base}/traffic"), encode(a)?),
        Command::TrafficRollback(a) => ("POST", format!("{base}/traffic/rollback"), encode(a)?),
        Command::RolloutStart(a) => ("POST", format!("{base}/rollouts"), encode(a)?),
        Command::RolloutAct { action, answers } => (
            "POST",
            format!(
                "{base}/rollouts/{}/{}",
                answers.deployment_id,
                action.as_str()
            ),
            encode(answers)?,
        ),
        Command::PackAdd(a) => ("POST", format!("{base}/packs"), encode(a)?),
        Command::PackUpdate(a) => ("PATCH", format!("{base}/packs/{}", a.slot), encode(a)?),
        Command::PackRemove(a) => ("DELETE", format!("{base}/packs/{}", a.slot), encode(a)?),
        Command::PackRollback(a) => (
            "POST",
            format!("{base}/packs/{}/rollback", a.slot),
            encode(a)?,
        ),
        // The node loads the backup from its own store.
        Command::EnvRestore { answers, .. } => {
            ("POST", format!("{base}/restore"), encode(answers)?)
        }
        other => {
            return Err(CliError::new(
                ErrorKind::NotYetImplemented,
                format!(
                    "`{} {}` is not available with --node yet; run it on the node's machine",
                    other.noun(),
                    other.verb()
                ),
            ));
        }
    })
}
