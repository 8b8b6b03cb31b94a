//! `gtc node token create|list|revoke`: the admin API's bearer tokens.
//!
//! The tokens file keeps the SHA-256 of each token, never the token: it is
//! printed once by `create` and cannot be recovered (make a new one). The
//! file is written atomically with mode 0600, under a lock so two `create`s
//! do not lose one another's token. A running node reads it on every
//! request, so changes apply without a restart.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use deploy::access::{ANY_ENVIRONMENT, Role, TokenEntry, TokenFile, TokenGrant, valid_token_id};
use deploy::error::ErrorKind;
use serde_json::json;

use crate::admin::{TOKENS_FILE, token_hash};
use crate::cli::{RoleArg, TokenVerb, TokensFileArgs};
use crate::error::CliError;
use crate::output::Report;

/// Prefix of every API token, so a leaked one is recognisable (and
/// scanners can flag it).
const TOKEN_PREFIX: &str = "gtc_";

pub fn verb_name(verb: &TokenVerb) -> &'static str {
    match verb {
        TokenVerb::Create { .. } => "create",
        TokenVerb::List { .. } => "list",
        TokenVerb::Revoke { .. } => "revoke",
    }
}

pub fn run(verb: TokenVerb) -> Result<Report, CliError> {
    match verb {
        TokenVerb::Create {
            id,
            role,
            env,
            file,
        } => {
            let id = id.unwrap_or_else(|| {
                // The ULID's random part: unique enough to tell tokens apart.
                let random = ulid::Ulid::new().to_string().to_ascii_lowercase();
                let tail = random
                    .get(random.len().saturating_sub(8)..)
                    .unwrap_or(&random);
                format!("token-{tail}")
            });
            create(&id, role, &env, &path(&file)?)
        }
        TokenVerb::List { file } => {
            let path = path(&file)?;
            let tokens = read(&path)?;
            let rows: Vec<_> = tokens
                .tokens
                .iter()
                .map(|t| json!({"id": t.id, "grants": t.grants, "created_at": t.created_at}))
                .collect();
            Ok(Report::new(
                "token",
                "list",
                json!({"tokens_file": path, "tokens": rows}),
            ))
        }
        TokenVerb::Revoke { id, file } => {
            let path = path(&file)?;
            let removed = update(&path, |tokens| {
                let before = tokens.tokens.len();
                tokens.tokens.retain(|t| t.id != id);
                if tokens.tokens.len() == before {
                    return Err(CliError::new(
                        ErrorKind::NotFound,
                        format!("no token {id:?} in {}", path.display()),
                    ));
                }
                Ok(())
            });
            removed.map(|()| {
                Report::new(
                    "token",
                    "revoke",
                    json!({"id": id, "revoked": true, "tokens_file": path}),
                )
            })
        }
    }
}

/// The tokens file: `--tokens`, else `tokens.json` in the store root.
fn path(file: &TokensFileArgs) -> Result<PathBuf, CliError> {
    if let Some(path) = &file.tokens {
        return Ok(path.clone());
    }
    let root = match &file.store_root {
        Some(root) => root.clone(),
        None => crate::context::greentic_home()?.join("environments"),
    };
    Ok(root.join(TOKENS_FILE))
}

fn role(arg: RoleArg) -> Role {
    match arg {
        RoleArg::Viewer => Role::Viewer,
        RoleArg::Operator => Role::Operator,
        RoleArg::Admin => Role::Admin,
    }
}

fn create(id: &str, role_arg: RoleArg, env: &str, path: &Path) -> Result<Report, CliError> {
    if !valid_token_id(id) {
        return Err(CliError::invalid(format!(
            "token id {id:?} must be 1 to 64 letters, digits, '.', '_' or '-'"
        ))
        .with_field("id"));
    }
    if env != ANY_ENVIRONMENT {
        crate::checks::parse_env(env)?;
    }
    let token = format!("{TOKEN_PREFIX}{}", crate::node_cmd::random_token()?);
    let role = role(role_arg);
    update(path, |tokens| {
        if tokens.tokens.iter().any(|t| t.id == id) {
            return Err(CliError::new(
                ErrorKind::AlreadyExists,
                format!(
                    "token {id:?} already exists in {}; revoke it first or pick another id",
                    path.display()
                ),
            ));
        }
        tokens.tokens.push(TokenEntry {
            id: id.to_owned(),
            sha256: token_hash(&token),
            grants: vec![TokenGrant {
                environment_id: env.to_owned(),
                role,
            }],
            created_at: Some(chrono::Utc::now()),
        });
        Ok(())
    })?;
    Ok(Report::new(
        "token",
        "create",
        json!({
            "id": id,
            "token": token,
            "role": role,
            "environment_id": env,
            "tokens_file": path,
            "note": "the token is shown only now; send it as Authorization: Bearer <token>",
        }),
    ))
}

fn io(what: &str, path: &Path, error: std::io::Error) -> CliError {
    CliError::new(ErrorKind::Io, format!("{what} {}: {error}", path.display()))
}

fn read(path: &Path) -> Result<TokenFile, CliError> {
    crate::admin::load_tokens(path)
        .map_err(|reason| CliError::new(ErrorKind::InvalidArgument, reason))
}

/// Changes the tokens file under its lock and replaces it atomically.
fn update(
    path: &Path,
    change: impl FnOnce(&mut TokenFile) -> Result<(), CliError>,
) -> Result<(), CliError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| io("cannot create the folder of", path, e))?;
    }
    let lock_path = path.with_extension("lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|e| io("cannot open", &lock_path, e))?;
    lock.lock().map_err(|e| io("cannot lock", &lock_path, e))?;
    let mut tokens = read(path)?;
    change(&mut tokens)?;
    tokens
        .validate()
        .map_err(|error| CliError::invalid(error.to_string()))?;
    let mut bytes = serde_json::to_vec_pretty(&tokens)
        .map_err(|e| CliError::new(ErrorKind::Internal, e.to_string()))?;
    bytes.push(b'\n');
    let temp = path.with_extension("json.tmp");
    let written = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&temp)
        .and_then(|mut file| {
            file.write_all(&bytes)?;
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(&temp, path))
        .and_then(
            |()| match path.parent().filter(|p| !p.as_os_str().is_empty()) {
                // The rename is durable once the folder is.
                Some(parent) => std::fs::File::open(parent)?.sync_all(),
                None => Ok(()),
            },
        );
    written.map_err(|e| io("cannot write", path, e))
}
