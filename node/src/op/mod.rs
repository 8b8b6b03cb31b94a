//! `gtc op <noun> <verb>`: turns parsed arguments into commands for the
//! store, or into reads of it.

mod cluster_apply;
mod env;
mod objects;
mod plan;
mod reconcile;
mod render_dir;

use std::path::Path;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;

use crate::answers::read_answers;
use crate::cli::{
    BundlesVerb, ConfigVerb, CredentialsVerb, EnvVerb, Mutation, Noun, OpArgs, PacksVerb,
    RevisionsVerb, RolloutsVerb, SecretsVerb, TrafficVerb, TrustVerb,
};
use crate::context::Context;
use crate::error::CliError;
use crate::output::Report;
use crate::submit::{Local, Submitter};

/// What `run` returns: a report to print, or a schema to print as is.
pub enum Outcome {
    Report(Report),
    Schema(serde_json::Value),
}

/// The noun and verb names of a parsed command, for output and errors.
pub fn names(noun: &Noun) -> (&'static str, &'static str) {
    match noun {
        Noun::Env(EnvVerb::Trust(verb)) => (
            crate::trust_cmd::NOUN,
            match verb {
                TrustVerb::List(_) => "list",
                TrustVerb::Add(_) => "add",
                TrustVerb::Remove(_) => "remove",
            },
        ),
        Noun::Env(verb) => (
            "env",
            match verb {
                EnvVerb::Init(_) => "init",
                EnvVerb::Create(_) => "create",
                EnvVerb::Update(_) => "update",
                EnvVerb::List => "list",
                EnvVerb::Show(_) => "show",
                EnvVerb::Doctor(_) => "doctor",
                EnvVerb::Reconcile(_) => "reconcile",
                EnvVerb::Preflight(_) => "preflight",
                EnvVerb::Destroy { .. } => "destroy",
                EnvVerb::Backup(_) => "backup",
                EnvVerb::Backups(_) => "backups",
                EnvVerb::Restore(_) => "restore",
                EnvVerb::MigrateDev { .. } => "migrate-dev",
                EnvVerb::MigrateState { .. } => "migrate-state",
                EnvVerb::Trust(_) => "trust",
            },
        ),
        Noun::EnvPacks(verb) => (
            "env-packs",
            match verb {
                PacksVerb::Add(_) => "add",
                PacksVerb::Update(_) => "update",
                PacksVerb::Remove(_) => "remove",
                PacksVerb::Rollback(_) => "rollback",
                PacksVerb::List(_) => "list",
            },
        ),
        Noun::Bundles(verb) => (
            "bundles",
            match verb {
                BundlesVerb::Add(_) => "add",
                BundlesVerb::Update(_) => "update",
                BundlesVerb::Remove(_) => "remove",
                BundlesVerb::List(_) => "list",
            },
        ),
        Noun::Revisions(verb) => (
            "revisions",
            match verb {
                RevisionsVerb::Stage(_) => "stage",
                RevisionsVerb::Warm(_) => "warm",
                RevisionsVerb::Drain(_) => "drain",
                RevisionsVerb::Archive(_) => "archive",
                RevisionsVerb::Scale(_) => "scale",
                RevisionsVerb::List { .. } => "list",
            },
        ),
        Noun::Traffic(verb) => (
            "traffic",
            match verb {
                TrafficVerb::Set(_) => "set",
                TrafficVerb::Plan(_) => "plan",
                TrafficVerb::Show { .. } => "show",
                TrafficVerb::Rollback(_) => "rollback",
                TrafficVerb::Clear(_) => "clear",
            },
        ),
        Noun::Rollouts(verb) => (
            "rollouts",
            match verb {
                RolloutsVerb::Start { .. } => "start",
                RolloutsVerb::Show { .. } => "show",
                RolloutsVerb::List(_) => "list",
                RolloutsVerb::Pause(_) => "pause",
                RolloutsVerb::Resume(_) => "resume",
                RolloutsVerb::Promote(_) => "promote",
                RolloutsVerb::Abort(_) => "abort",
            },
        ),
        Noun::Config(verb) => (
            "config",
            match verb {
                ConfigVerb::Show { .. } => "show",
                ConfigVerb::Set(_) => "set",
            },
        ),
        Noun::Credentials(verb) => (
            "credentials",
            match verb {
                CredentialsVerb::Requirements(_) => "requirements",
                CredentialsVerb::Bootstrap(_) => "bootstrap",
                CredentialsVerb::Rotate(_) => "rotate",
                CredentialsVerb::Show(_) => "show",
            },
        ),
        Noun::Secrets(verb) => (
            "secrets",
            match verb {
                SecretsVerb::List(_) => "list",
                SecretsVerb::Put(_) => "put",
                SecretsVerb::Get(_) => "get",
                SecretsVerb::Rotate(_) => "rotate",
                SecretsVerb::Remove(_) => "remove",
            },
        ),
    }
}

/// Verbs the admin API has no route for (they read or write the store
/// folder on the node's own machine), so `--node` cannot carry them.
/// Every verb with a route works through `--node`; the test below holds
/// this list to the route table. (`revisions stage` has a route, but a
/// `bundle_path` names a file on this machine: that form is refused.)
const LOCAL_ONLY_WITH_NODE: [(&str, &str); 10] = [
    ("env", "init"),
    ("env", "doctor"),
    // Both read this machine's staged bundles (and its Docker socket or
    // kubeconfig): what they check or render is here, not on the node.
    ("env", "reconcile"),
    ("env", "preflight"),
    ("env", "migrate-dev"),
    ("env", "migrate-state"),
    // The credentials contract probes this machine (process spawn, the
    // Docker socket, the kubeconfig) and reads admin material from it.
    ("credentials", "requirements"),
    ("credentials", "bootstrap"),
    ("credentials", "rotate"),
    ("credentials", "show"),
];

/// Runs one operator verb.
pub fn run(args: OpArgs) -> Result<Outcome, CliError> {
    let (noun_name, verb_name) = names(&args.noun);
    // `--schema` never touches the store, so it works without GREENTIC_HOME.
    if let Some(schema) = schema_request(&args.noun) {
        return Ok(Outcome::Schema(schema));
    }
    let mut context = Context::open(args.store_root)?;
    // How this command's reads and changes travel, decided once here.
    context.submitter = if let Some(url) = &args.node {
        if LOCAL_ONLY_WITH_NODE.contains(&(noun_name, verb_name)) {
            return Err(CliError::new(
                deploy::error::ErrorKind::NotYetImplemented,
                format!(
                    "`gtc op {noun_name} {verb_name}` works on the node's machine only, not with --node yet"
                ),
            ));
        }
        let mut client = crate::node_client::NodeClient::remote(
            url,
            args.token.clone().unwrap_or_default(),
            args.admin_ca.clone(),
        )?;
        client = crate::remote::signed_client(client, &context.home)?;
        Submitter::Remote(crate::remote::Remote::new(client))
    } else {
        Submitter::Local(Local {
            admin_ca: args.admin_ca,
            stale_ok: args.stale_ok,
        })
    };
    let report = match args.noun {
        Noun::Env(EnvVerb::Trust(verb)) => crate::trust_cmd::run(&context, verb)?,
        Noun::Env(verb) => env::run(&context, verb)?,
        Noun::EnvPacks(verb) => objects::packs(&context, verb)?,
        Noun::Bundles(verb) => objects::bundles(&context, verb)?,
        Noun::Revisions(verb) => objects::revisions(&context, verb)?,
        Noun::Traffic(verb) => objects::traffic(&context, verb)?,
        Noun::Rollouts(verb) => objects::rollouts(&context, verb)?,
        Noun::Config(verb) => objects::config(&context, verb)?,
        Noun::Credentials(verb) => objects::credentials(&context, verb)?,
        Noun::Secrets(verb) => objects::secrets(&context, verb)?,
    };
    debug_assert_eq!((report.noun, report.verb), (noun_name, verb_name));
    Ok(Outcome::Report(report))
}

fn schema_of<T: JsonSchema>(mutation: &Mutation) -> Option<serde_json::Value> {
    mutation.schema.then(deploy::schema::schema_for::<T>)
}

/// The schema a `--schema` flag asks for, if any.
fn schema_request(noun: &Noun) -> Option<serde_json::Value> {
    use deploy::command::*;
    match noun {
        Noun::Env(verb) => match verb {
            EnvVerb::Init(m) => m.schema.then(deploy::schema::schema_for::<EnvInitAnswers>),
            EnvVerb::Create(m) => schema_of::<EnvCreateAnswers>(m),
            EnvVerb::Update(m) => schema_of::<EnvUpdateAnswers>(m),
            EnvVerb::Destroy { mutation, .. } => {
                schema_of::<EnvTargetAnswers>(&mutation.mutation())
            }
            EnvVerb::Backup(mutation) => schema_of::<EnvTargetAnswers>(mutation),
            EnvVerb::MigrateDev { mutation, .. } => {
                schema_of::<EnvTargetAnswers>(&mutation.mutation())
            }
            EnvVerb::Restore(m) => schema_of::<EnvRestoreAnswers>(m),
            EnvVerb::MigrateState { mutation, .. } => {
                schema_of::<EnvMigrateStateAnswers>(&mutation.mutation())
            }
            EnvVerb::Trust(TrustVerb::Add(m)) => schema_of::<crate::trust_root::TrustAddAnswers>(m),
            EnvVerb::Trust(TrustVerb::Remove(m)) => {
                schema_of::<crate::trust_root::TrustRemoveAnswers>(m)
            }
            EnvVerb::List
            | EnvVerb::Show(_)
            | EnvVerb::Doctor(_)
            | EnvVerb::Reconcile(_)
            | EnvVerb::Preflight(_)
            | EnvVerb::Backups(_)
            | EnvVerb::Trust(TrustVerb::List(_)) => None,
        },
        Noun::EnvPacks(verb) => match verb {
            PacksVerb::Add(m) | PacksVerb::Update(m) => schema_of::<PackBindAnswers>(m),
            PacksVerb::Remove(m) | PacksVerb::Rollback(m) => schema_of::<PackSlotAnswers>(m),
            PacksVerb::List(_) => None,
        },
        Noun::Bundles(verb) => match verb {
            BundlesVerb::Add(m) => schema_of::<BundleAddAnswers>(m),
            BundlesVerb::Update(m) => schema_of::<BundleUpdateAnswers>(m),
            BundlesVerb::Remove(m) => schema_of::<DeploymentAnswers>(m),
            BundlesVerb::List(_) => None,
        },
        Noun::Revisions(verb) => match verb {
            RevisionsVerb::Stage(m) => schema_of::<RevisionStageAnswers>(m),
            RevisionsVerb::Warm(m) | RevisionsVerb::Drain(m) | RevisionsVerb::Archive(m) => {
                schema_of::<RevisionAnswers>(m)
            }
            RevisionsVerb::Scale(m) => schema_of::<deploy::command::RevisionScaleAnswers>(m),
            RevisionsVerb::List { .. } => None,
        },
        Noun::Traffic(verb) => match verb {
            TrafficVerb::Set(m) | TrafficVerb::Plan(m) => schema_of::<TrafficSetAnswers>(m),
            TrafficVerb::Rollback(m) | TrafficVerb::Clear(m) => schema_of::<DeploymentAnswers>(m),
            TrafficVerb::Show { .. } => None,
        },
        Noun::Rollouts(verb) => match verb {
            RolloutsVerb::Start { mutation, .. } => schema_of::<RolloutStartAnswers>(mutation),
            RolloutsVerb::Pause(m)
            | RolloutsVerb::Resume(m)
            | RolloutsVerb::Promote(m)
            | RolloutsVerb::Abort(m) => schema_of::<RolloutActionAnswers>(m),
            RolloutsVerb::Show { .. } | RolloutsVerb::List(_) => None,
        },
        Noun::Config(verb) => match verb {
            ConfigVerb::Set(m) => schema_of::<EnvUpdateAnswers>(m),
            ConfigVerb::Show { .. } => None,
        },
        Noun::Credentials(verb) => match verb {
            CredentialsVerb::Requirements(m) => schema_of::<EnvTargetAnswers>(m),
            CredentialsVerb::Bootstrap(m) => schema_of::<CredentialsBootstrapAnswers>(m),
            CredentialsVerb::Rotate(m) => schema_of::<CredentialsRotateAnswers>(m),
            CredentialsVerb::Show(_) => None,
        },
        Noun::Secrets(verb) => match verb {
            SecretsVerb::Put(m) => schema_of::<secrets::answers::SecretPutAnswers>(m),
            SecretsVerb::Get(m) => schema_of::<secrets::answers::SecretGetAnswers>(m),
            SecretsVerb::Rotate(m) => schema_of::<secrets::answers::SecretRotateAnswers>(m),
            SecretsVerb::Remove(m) => schema_of::<secrets::answers::SecretRemoveAnswers>(m),
            SecretsVerb::List(_) => None,
        },
    }
}

pub use crate::answers::from_mutation as answers;

/// Reads the payload of a verb that takes its target environment either
/// positionally or in `--answers`.
pub fn target_answers<T: DeserializeOwned>(
    mutation: &crate::cli::TargetMutation,
    noun: &str,
    verb: &str,
) -> Result<T, CliError> {
    match &mutation.env {
        Some(env) => serde_json::from_value(serde_json::json!({ "environment_id": env }))
            .map_err(|e| CliError::invalid(format!("environment id {env:?}: {e}"))),
        None => answers(&mutation.mutation(), noun, verb),
    }
}

/// Reads an optional payload.
pub fn optional_answers<T: DeserializeOwned + Default>(
    path: Option<&Path>,
    noun: &str,
    verb: &str,
) -> Result<T, CliError> {
    match path {
        Some(path) => read_answers(path, noun, verb),
        None => Ok(T::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::LOCAL_ONLY_WITH_NODE;
    use crate::admin::route::parse;
    use hyper::Method;

    #[test]
    fn every_verb_with_an_api_route_works_through_node() {
        // Issue 20's class: `--node` refuses only verbs the admin API has
        // no route for. One request per route of the table.
        let env = "/v1/environments/local";
        let rid = "01JD8X4A0000000000000000AA";
        let requests = [
            (Method::GET, "/v1/environments".to_owned()),
            (Method::POST, "/v1/environments".to_owned()),
            (Method::GET, env.to_owned()),
            (Method::PATCH, env.to_owned()),
            (Method::DELETE, env.to_owned()),
            (Method::POST, format!("{env}/revisions")),
            (Method::POST, format!("{env}/revisions/{rid}/warm")),
            (Method::POST, format!("{env}/revisions/{rid}/drain")),
            (Method::POST, format!("{env}/revisions/{rid}/archive")),
            (Method::POST, format!("{env}/revisions/{rid}/scale")),
            (Method::POST, format!("{env}/traffic")),
            (Method::POST, format!("{env}/traffic/rollback")),
            (Method::POST, format!("{env}/bundles")),
            (Method::PATCH, format!("{env}/bundles/{rid}")),
            (Method::DELETE, format!("{env}/bundles/{rid}")),
            (Method::POST, format!("{env}/packs")),
            (Method::PATCH, format!("{env}/packs/state")),
            (Method::DELETE, format!("{env}/packs/state")),
            (Method::POST, format!("{env}/packs/state/rollback")),
            (Method::GET, format!("{env}/backups")),
            (Method::POST, format!("{env}/backups")),
            (Method::POST, format!("{env}/restore")),
            (Method::GET, format!("{env}/audit")),
            (Method::GET, format!("{env}/secrets")),
            (Method::POST, format!("{env}/secrets")),
            (Method::POST, format!("{env}/secrets/get")),
            (Method::POST, format!("{env}/secrets/rotate")),
            (Method::POST, format!("{env}/secrets/remove")),
            (Method::POST, format!("{env}/rollouts")),
            (Method::POST, format!("{env}/rollouts/{rid}/pause")),
            (Method::POST, format!("{env}/rollouts/{rid}/resume")),
            (Method::POST, format!("{env}/rollouts/{rid}/promote")),
            (Method::POST, format!("{env}/rollouts/{rid}/abort")),
        ];
        let mut routed = Vec::new();
        for (method, path) in &requests {
            let route = parse(method, path).unwrap_or_else(|e| panic!("{method} {path}: {e:?}"));
            routed.push(route.names());
        }
        for local in LOCAL_ONLY_WITH_NODE {
            assert!(
                !routed.contains(&local),
                "{local:?} has an admin API route, so it must work through --node"
            );
        }
        // And the verbs this issue named are among the routed ones.
        for verb in ["list", "backup", "backups", "restore"] {
            assert!(routed.contains(&("env", verb)), "env {verb}");
        }
        for verb in ["list", "put", "get", "rotate", "remove"] {
            assert!(routed.contains(&("secrets", verb)), "secrets {verb}");
        }
        for verb in ["start", "pause", "resume", "promote", "abort"] {
            assert!(routed.contains(&("rollouts", verb)), "rollouts {verb}");
        }
        assert!(routed.contains(&("revisions", "scale")), "revisions scale");
    }
}
