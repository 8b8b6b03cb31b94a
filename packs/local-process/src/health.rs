//! One health probe: `GET http://<addr><path>` over a fresh HTTP/1.1 connection.
//!
//! A fresh connection per probe (instead of a pooled client) keeps no idle
//! connection open to the instance, so probing never delays its shutdown.

use std::error::Error;
use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper::header::HOST;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

type ProbeError = Box<dyn Error + Send + Sync>;

/// True if `GET <path>` answers 2xx within `timeout`. Every failure (refused,
/// timeout, bad answer) is just "not healthy"; the caller decides what that means.
pub(crate) async fn probe(addr: SocketAddr, path: &str, timeout: Duration) -> bool {
    match tokio::time::timeout(timeout, status_of(addr, path)).await {
        Ok(Ok(status)) => status.is_success(),
        Ok(Err(e)) => {
            tracing::trace!(%addr, path, error = %e, "health probe failed");
            false
        }
        Err(_) => {
            tracing::trace!(%addr, path, ?timeout, "health probe timed out");
            false
        }
    }
}

async fn status_of(addr: SocketAddr, path: &str) -> Result<StatusCode, ProbeError> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let request = Request::builder()
        .method(Method::GET)
        .uri(normalize(path))
        .header(HOST, addr.to_string())
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request);
    // The connection future must be driven for the request to progress; both are
    // polled here (no spawned task), so a timeout drops everything at once.
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        response = response => Ok(response?.status()),
        closed = conn.as_mut() => {
            closed?;
            Err("connection closed before a response".into())
        }
    }
}

/// Health paths are absolute; tolerate a spec that left out the leading slash.
fn normalize(path: &str) -> String {
    if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    }
}
