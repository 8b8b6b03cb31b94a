//! The admin API's HTTP edge: JSON answers with their ETag, the error body
//! of the contract (`{error: {kind, message, status, …facts}}`), and the
//! request headers it reads (`If-Match`, `Idempotency-Key`).

use bytes::Bytes;
use deploy::error::ErrorKind;
use http_body_util::Full;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::{Map, Value, json};

use crate::error::CliError;

/// An answer of the admin API.
pub type Reply = Response<Full<Bytes>>;

/// Longest `Idempotency-Key` accepted (the same bound `apply` holds an
/// answers file's key to).
use deploy::state::IDEMPOTENCY_KEY_LEN_MAX;

/// A refusal as the admin API answers it.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
    /// The payload field the error is about.
    pub field: Option<String>,
    /// Facts merged into the error object (a 412's etags and generation).
    pub facts: Map<String, Value>,
    /// The ETag of a state committed together with the error (a failed
    /// warm gate persists the revision as `failed`).
    pub etag: Option<String>,
    /// The methods a path serves, for a 405.
    pub allow: Option<&'static str>,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            field: None,
            facts: Map::new(),
            etag: None,
            allow: None,
        }
    }

    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidRequest, message)
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn with_fact(mut self, key: &str, value: Value) -> Self {
        self.facts.insert(key.to_owned(), value);
        self
    }

    /// The answer: the kind's status, the error object, and the ETag of a
    /// committed state if there is one.
    pub fn into_reply(self) -> Reply {
        let status = self.kind.http_status();
        let mut error =
            json!({"kind": self.kind.as_str(), "message": self.message, "status": status});
        if let Some(field) = &self.field {
            error["field"] = json!(field);
        }
        for (key, value) in self.facts {
            error[key] = value;
        }
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut reply = json_reply(status, &json!({ "error": error }), self.etag.as_deref());
        if let Some(allow) = self.allow
            && let Ok(value) = HeaderValue::from_str(allow)
        {
            reply.headers_mut().insert(header::ALLOW, value);
        }
        reply
    }
}

impl From<CliError> for ApiError {
    fn from(error: CliError) -> Self {
        let mut api = ApiError::new(error.kind, error.message);
        api.field = error.field;
        if let Some(details) = error.details {
            api.facts.insert("details".to_owned(), details);
        }
        api
    }
}

/// An ETag as a header value: quoted, as HTTP wants entity tags.
pub fn quoted(etag: &str) -> String {
    format!("\"{etag}\"")
}

/// A JSON answer, with an `ETag` header when `etag` is given.
pub fn json_reply(status: StatusCode, body: &Value, etag: Option<&str>) -> Reply {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(etag) = etag
        && let Ok(value) = HeaderValue::from_str(&quoted(etag))
    {
        headers.insert(header::ETAG, value);
    }
    response
}

/// A plain-text answer (health, metrics).
pub fn text_reply(status: StatusCode, body: String) -> Reply {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    headers
        .get(name)
        .map(|value| {
            value.to_str().map_err(|_| {
                ApiError::invalid_request(format!("the {name} header must be visible ASCII"))
            })
        })
        .transpose()
}

/// The entity tag of `If-Match`, unquoted (`*` stays `*`, a weak tag keeps
/// its `W/`, so it never matches: `If-Match` compares strongly). A list of
/// tags is refused: a writer names the one state it read.
pub fn if_match(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(text) = header_text(headers, "if-match")? else {
        return Ok(None);
    };
    let text = text.trim();
    if text == deploy::precondition::ANY_ETAG {
        return Ok(Some(text.to_owned()));
    }
    if text.contains(',') {
        return Err(ApiError::invalid_request(
            "If-Match must name one entity tag: the ETag of the environment you read",
        ));
    }
    let (weak, tag) = match text.strip_prefix("W/") {
        Some(tag) => ("W/", tag),
        None => ("", text),
    };
    let inner = tag
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .ok_or_else(|| {
            ApiError::invalid_request(format!(
                "If-Match {text:?} is not a quoted entity tag; send the ETag header value as it was received, quotes included"
            ))
        })?;
    Ok(Some(format!("{weak}{inner}")))
}

/// The `Idempotency-Key`, if given; an empty or oversized key is refused.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(text) = header_text(headers, "idempotency-key")? else {
        return Ok(None);
    };
    let key = text.trim();
    if key.is_empty() {
        return Err(ApiError::invalid_request(
            "Idempotency-Key is empty; send a fresh unique value (a ULID, say) or leave the header out",
        ));
    }
    if key.len() > IDEMPOTENCY_KEY_LEN_MAX {
        return Err(ApiError::invalid_request(format!(
            "Idempotency-Key is {} bytes; the limit is {IDEMPOTENCY_KEY_LEN_MAX}",
            key.len()
        )));
    }
    Ok(Some(key.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: &'static str, value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn if_match_takes_one_quoted_tag_or_a_star() {
        let parse = |value| if_match(&headers("if-match", value));
        assert_eq!(parse("\"3-ab\"").ok().flatten().as_deref(), Some("3-ab"));
        assert_eq!(parse("*").ok().flatten().as_deref(), Some("*"));
        assert_eq!(
            parse("W/\"3-ab\"").ok().flatten().as_deref(),
            Some("W/3-ab")
        );
        assert!(parse("3-ab").is_err());
        assert!(parse("\"a\", \"b\"").is_err());
        assert_eq!(if_match(&HeaderMap::new()).ok().flatten(), None);
    }

    #[test]
    fn an_empty_idempotency_key_is_refused() {
        let parse = |value| idempotency_key(&headers("idempotency-key", value));
        assert!(parse("").is_err());
        assert!(parse("   ").is_err());
        assert_eq!(parse("k-1").ok().flatten().as_deref(), Some("k-1"));
    }

    #[test]
    fn errors_carry_kind_status_and_facts() {
        let reply = ApiError::new(ErrorKind::PreconditionFailed, "stale")
            .with_fact("actual_generation", json!(4))
            .into_reply();
        assert_eq!(reply.status(), StatusCode::PRECONDITION_FAILED);
    }
}
