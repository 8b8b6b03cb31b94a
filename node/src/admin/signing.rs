//! The operator signature of a change through the admin API (spec C2).
//!
//! For an environment with a trust root (never `local`), a change must
//! carry `x-greentic-operator-key`, `x-greentic-operator-signature` and
//! `x-greentic-date`, the signature covering method, path, the body's
//! SHA-256 and the date (`operator_key::canonical_request`). This sits
//! beside the bearer token, not instead of it: the token says who may
//! change the environment, the signature that a listed operator key made
//! this very request. The caller of [`check`] audits a refusal.

use std::sync::Arc;

use deploy::ids::EnvId;
use hyper::header::HeaderMap;

use super::reply::ApiError;
use super::{AdminState, blocking};
use crate::error::CliError;
use crate::operator_key::{HEADER_DATE, HEADER_KEY, HEADER_SIGNATURE, SignedHeaders};

/// One header's value; a header sent twice is refused (which one counts
/// would be a guess).
fn one(headers: &HeaderMap, name: &str) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::invalid_request(format!(
            "the request has more than one {name} header; send exactly one"
        )));
    }
    value
        .to_str()
        .map(|text| Some(text.trim().to_owned()))
        .map_err(|_| ApiError::invalid_request(format!("the {name} header is not ASCII")))
}

/// The signature headers of a request, read before its body; `None`
/// unless all three are there.
pub fn headers(headers: &HeaderMap) -> Result<Option<SignedHeaders>, ApiError> {
    let public_key = one(headers, HEADER_KEY)?;
    let signature = one(headers, HEADER_SIGNATURE)?;
    let date = one(headers, HEADER_DATE)?;
    Ok(match (public_key, signature, date) {
        (Some(public_key), Some(signature), Some(date)) => Some(SignedHeaders {
            public_key,
            signature,
            date,
        }),
        _ => None,
    })
}

/// The request a signature covers: method, path and body.
pub struct Signed<'a> {
    pub headers: Option<&'a SignedHeaders>,
    pub method: &'a str,
    pub path: &'a str,
    pub body: &'a [u8],
}

/// `None` when `env` needs no signature (`local`, or no trust root in this
/// node's store); else the `key_id` of the listed key that signed the
/// request. The trust root is read on every call.
pub async fn check(
    admin: &Arc<AdminState>,
    env: &EnvId,
    request: Signed<'_>,
) -> Result<Option<String>, CliError> {
    if env.is_local() {
        return Ok(None);
    }
    let root = admin.local_store.root().to_owned();
    let id = env.clone();
    let loaded = blocking(move || crate::trust_root::load(&root, &id))
        .await
        .map_err(|error| CliError::new(error.kind, error.message))??;
    let Some(trust) = loaded else {
        return Ok(None);
    };
    crate::trust_root::verify_request(
        &trust,
        env,
        request.headers,
        (request.method, request.path, request.body),
        chrono::Utc::now(),
    )
    .map(Some)
}
