//! One health probe: `GET http://<addr><path>` over a fresh HTTP/1.1
//! connection (no pool, so probing never holds a connection open to a
//! container being stopped).

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper::{Request, header::HOST};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// True if `GET <path>` answers 2xx within `timeout`.
pub(crate) async fn probe(addr: SocketAddr, path: &str, timeout: Duration) -> bool {
    let attempt = async {
        let stream = TcpStream::connect(addr).await.ok()?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .ok()?;
        let path = if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("/{path}")
        };
        let request = Request::get(path)
            .header(HOST, addr.to_string())
            .body(Empty::<Bytes>::new())
            .ok()?;
        let mut conn = std::pin::pin!(conn);
        tokio::select! {
            response = sender.send_request(request) => Some(response.ok()?.status().is_success()),
            _ = conn.as_mut() => None,
        }
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(true)))
}
