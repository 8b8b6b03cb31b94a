//! Request handling: health, echo-as-JSON, slow answers and streamed answers.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use crate::chunks::{MAX_CHUNKS, SlowChunks};
use crate::config::Identity;
use crate::log_line;

/// Longest wait `/slow?ms=N` accepts, so a test typo cannot park a request for hours.
pub const MAX_SLOW_MS: u64 = 60_000;
/// Header naming the revision that answered, so routing tests can see who served them.
const SERVED_BY: HeaderName = HeaderName::from_static("x-served-by");

/// The body type of every response (fixed bodies and streamed ones).
pub type ResBody = UnsyncBoxBody<Bytes, Infallible>;

/// What the service knows about one request once its body has been read.
struct Seen {
    method: Method,
    path: String,
    query: Option<String>,
    body_bytes: u64,
}

/// Serves one request and logs one line for it.
pub async fn handle(
    req: Request<Incoming>,
    identity: Arc<Identity>,
) -> Result<Response<ResBody>, Infallible> {
    let method = req.method().clone();
    let target = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_owned(), |pq| pq.as_str().to_owned());
    let response = route(req, &identity).await;
    log_line(format_args!(
        "demo-service[{}]: {method} {target} -> {}",
        identity.revision,
        response.status().as_u16()
    ));
    Ok(response)
}

async fn route(req: Request<Incoming>, identity: &Identity) -> Response<ResBody> {
    if req.method() == Method::GET && req.uri().path() == "/healthz" {
        return healthz(identity);
    }
    if identity.fail_percent > 0 {
        let n = identity
            .seen
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if n % 100 < identity.fail_percent {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "DEMO_FAIL_PERCENT: failing this request on purpose",
            );
        }
    }
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let body_bytes = match count_body(req.into_body()).await {
        Ok(n) => n,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("reading body: {e}")),
    };
    let seen = Seen {
        method,
        path,
        query,
        body_bytes,
    };
    match (&seen.method, seen.path.as_str()) {
        (&Method::GET, "/slow") => slow(&seen, identity).await,
        (&Method::GET, "/stream") => stream(&seen, identity),
        (&Method::GET, "/config") => {
            let mut json = identity.pack_configs.describe();
            json["revision"] = serde_json::json!(identity.revision);
            json["instance"] = serde_json::json!(identity.instance);
            served_by(full(StatusCode::OK, json.to_string()), identity)
        }
        _ => describe(&seen, identity),
    }
}

fn healthz(identity: &Identity) -> Response<ResBody> {
    if identity.unhealthy {
        return text(StatusCode::SERVICE_UNAVAILABLE, "unhealthy");
    }
    text(StatusCode::OK, "ok")
}

/// Reads the body frame by frame, keeping only a count, so large uploads cost no memory.
async fn count_body(mut body: Incoming) -> Result<u64, hyper::Error> {
    let mut total: u64 = 0;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            total = total.saturating_add(data.len() as u64);
        }
    }
    Ok(total)
}

async fn slow(seen: &Seen, identity: &Identity) -> Response<ResBody> {
    match bounded_param(seen.query.as_deref(), "ms", MAX_SLOW_MS) {
        Ok(ms) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            describe(seen, identity)
        }
        Err(msg) => error(StatusCode::BAD_REQUEST, &msg),
    }
}

fn stream(seen: &Seen, identity: &Identity) -> Response<ResBody> {
    match bounded_param(seen.query.as_deref(), "chunks", u64::from(MAX_CHUNKS)) {
        Ok(n) => {
            // bounded_param capped n at MAX_CHUNKS, which fits in u32.
            let count = u32::try_from(n).unwrap_or(MAX_CHUNKS);
            let mut resp = Response::new(SlowChunks::new(count).boxed_unsync());
            resp.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            served_by(resp, identity)
        }
        Err(msg) => error(StatusCode::BAD_REQUEST, &msg),
    }
}

/// The default answer: who served the request and what it looked like.
fn describe(seen: &Seen, identity: &Identity) -> Response<ResBody> {
    let json = serde_json::json!({
        "revision": identity.revision,
        "instance": identity.instance,
        "method": seen.method.as_str(),
        "path": seen.path,
        "body_bytes": seen.body_bytes,
    });
    let mut resp = full(StatusCode::OK, json.to_string());
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    served_by(resp, identity)
}

fn served_by(mut resp: Response<ResBody>, identity: &Identity) -> Response<ResBody> {
    // A revision name that is not a valid header value only loses the header.
    if let Ok(value) = HeaderValue::from_str(&identity.revision) {
        resp.headers_mut().insert(SERVED_BY, value);
    }
    resp
}

/// Finds `name` in the query and parses it as a number in `0..=max`.
fn bounded_param(query: Option<&str>, name: &str, max: u64) -> Result<u64, String> {
    let raw = query
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find_map(|(key, value)| (key == name).then_some(value))
        .ok_or_else(|| format!("query parameter {name} is required"))?;
    match raw.parse::<u64>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(format!("{name} must be a whole number from 0 to {max}")),
    }
}

fn error(status: StatusCode, msg: &str) -> Response<ResBody> {
    let mut resp = full(status, serde_json::json!({ "error": msg }).to_string());
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn text(status: StatusCode, body: &'static str) -> Response<ResBody> {
    let mut resp = full(status, body);
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<ResBody> {
    let mut resp = Response::new(Full::new(body.into()).boxed_unsync());
    *resp.status_mut() = status;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_found_and_bounded() {
        // Proves /slow and /stream refuse missing, malformed and oversized values.
        assert_eq!(bounded_param(Some("a=1&ms=20"), "ms", 100), Ok(20));
        assert!(bounded_param(Some("ms=101"), "ms", 100).is_err());
        assert!(bounded_param(Some("ms=soon"), "ms", 100).is_err());
        assert!(bounded_param(None, "ms", 100).is_err());
    }
}
