//! The client of a node's admin API: one HTTP/1.1 request per connection
//! with a bearer token. A running node on this machine is found through
//! the node file it writes (`submit::Local` decides when a command goes
//! through it: when the environment's node file names a live admin API);
//! a node elsewhere is named by URL (`remote`, `gtc cluster`). A node that
//! serves HTTPS is reached with TLS, trusting `--admin-ca`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use deploy::command::CommandEnvelope;
use deploy::error::ErrorKind;

use crate::error::CliError;
use crate::operator_key::{HEADER_DATE, HEADER_KEY, HEADER_SIGNATURE, OperatorKey};
use crate::output::Report;

/// File in the environment folder (and, on a cluster member, in the store
/// root) that tells `gtc` a node is running: its pid, addresses and the
/// owner's admin token. `gtc node run` writes it; this client reads it.
pub const NODE_FILE: &str = "node.json";

/// How long the CLI waits to reach a node before using the store directly.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(300);
/// How long a command may take on the node (staging a large bundle is
/// done by the CLI, so commands themselves are quick).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// How the node serves its admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
}

/// A node that answered on its admin address.
pub struct NodeClient {
    admin: SocketAddr,
    token: String,
    scheme: Scheme,
    /// CA certificates to trust for HTTPS (`--admin-ca`, `GTC_ADMIN_CA`).
    ca: Option<PathBuf>,
    /// The operator key that signs every request but a `GET` (`--node`
    /// only; a node asks for it where a trust root exists).
    /// Boxed: the key is large beside the rest of the client.
    signer: Option<Box<OperatorKey>>,
}

impl NodeClient {
    /// A node named by its admin URL (`http://ip:port` or `https://ip:port`)
    /// and a bearer token, from anywhere (`gtc op --node URL --token T`).
    pub fn remote(url: &str, token: String, ca: Option<PathBuf>) -> Result<Self, CliError> {
        use std::net::ToSocketAddrs;
        let bad = |why: &str| {
            CliError::new(
                ErrorKind::InvalidArgument,
                format!(
                    "--node {url:?} {why}; give the node's admin URL, e.g. http://10.0.0.5:8081"
                ),
            )
            .with_field("--node")
        };
        let (scheme, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (Scheme::Https, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (Scheme::Http, rest)
        } else {
            return Err(bad("does not start with http:// or https://"));
        };
        let authority = rest.split('/').next().unwrap_or_default();
        let admin = authority
            .to_socket_addrs()
            .map_err(|e| bad(&format!("does not name a reachable host and port ({e})")))?
            .next()
            .ok_or_else(|| bad("resolves to no address"))?;
        if token.is_empty() {
            return Err(CliError::new(
                ErrorKind::InvalidArgument,
                "--node needs --token (or GTC_TOKEN): a token from `gtc node token create` on that node",
            )
            .with_field("--token"));
        }
        Ok(Self {
            admin,
            token,
            scheme,
            ca,
            signer: None,
        })
    }

    /// Signs every request but a `GET` with `key` from now on.
    pub fn with_signer(mut self, key: OperatorKey) -> Self {
        self.signer = Some(Box::new(key));
        self
    }
}

/// The running node of the environment in `env_dir`, if there is one.
pub fn running_node(env_dir: &Path, ca: Option<&Path>) -> Option<NodeClient> {
    let text = std::fs::read_to_string(env_dir.join(NODE_FILE)).ok()?;
    let document: serde_json::Value = serde_json::from_str(&text).ok()?;
    let admin: SocketAddr = document["admin"].as_str()?.parse().ok()?;
    let token = document["token"].as_str()?.to_owned();
    let scheme = match document["admin_scheme"].as_str() {
        Some("https") => Scheme::Https,
        _ => Scheme::Http,
    };
    // A node file left by a node that died is ignored.
    TcpStream::connect_timeout(&admin, CONNECT_TIMEOUT).ok()?;
    Some(NodeClient {
        admin,
        token,
        scheme,
        ca: ca.map(Path::to_owned),
        signer: None,
    })
}

fn io(error: std::io::Error) -> CliError {
    CliError::new(
        ErrorKind::Io,
        format!("talking to the running node failed: {error}"),
    )
}

/// Writes the request and reads the whole answer (the request asks the
/// node to close the connection after it).
fn talk(mut stream: impl Read + Write, request: &[u8]) -> std::io::Result<Vec<u8>> {
    stream.write_all(request)?;
    stream.flush()?;
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Ok(_) => Ok(answer),
        // A TLS peer that closes without close_notify after a complete
        // answer: the answer is still whole (its length is checked by the
        // JSON parse that follows).
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof && !answer.is_empty() => {
            Ok(answer)
        }
        Err(error) => Err(error),
    }
}

impl NodeClient {
    /// Sends `request` over a fresh connection, with TLS when the node
    /// serves HTTPS, and returns the raw answer.
    fn exchange(&self, request: &[u8]) -> Result<Vec<u8>, CliError> {
        let stream = TcpStream::connect_timeout(&self.admin, CONNECT_TIMEOUT).map_err(io)?;
        stream
            .set_read_timeout(Some(RESPONSE_TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(RESPONSE_TIMEOUT)))
            .map_err(io)?;
        if self.scheme == Scheme::Http {
            return talk(stream, request).map_err(io);
        }
        let ca = self.ca.as_deref().ok_or_else(|| {
            CliError::new(
                ErrorKind::InvalidArgument,
                format!(
                    "the running node serves its admin API over HTTPS at {}; pass --admin-ca FILE (or set GTC_ADMIN_CA) with the CA that signed its certificate",
                    self.admin
                ),
            )
        })?;
        let config = crate::admin::tls::client_config(ca)?;
        let name = rustls::pki_types::ServerName::IpAddress(self.admin.ip().into());
        let connection = rustls::ClientConnection::new(config, name).map_err(|e| {
            CliError::new(ErrorKind::Io, format!("cannot start TLS to the node: {e}"))
        })?;
        talk(rustls::StreamOwned::new(connection, stream), request).map_err(io)
    }

    /// One HTTP/1.1 request to the node's admin API with its bearer token;
    /// the answer's status and JSON body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<(u16, serde_json::Value), CliError> {
        self.request_with(method, path, body, &[])
    }

    /// [`NodeClient::request`] with extra headers (`If-Match`, say).
    pub fn request_with(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        headers: &[(&str, &str)],
    ) -> Result<(u16, serde_json::Value), CliError> {
        let mut extra: String = headers
            .iter()
            .map(|(name, value)| format!("{name}: {value}\r\n"))
            .collect();
        if let Some(key) = self.signer.as_ref().filter(|_| method != "GET") {
            let date = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let signed = key.sign_request(method, path, body, &date);
            extra.push_str(&format!(
                "{HEADER_KEY}: {}\r\n{HEADER_SIGNATURE}: {}\r\n{HEADER_DATE}: {}\r\n",
                signed.public_key, signed.signature, signed.date
            ));
        }
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
            self.admin,
            self.token,
            body.len()
        );
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        let answer = self.exchange(&request)?;
        let text = String::from_utf8_lossy(&answer);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| io(std::io::Error::other("no HTTP answer")))?;
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(500);
        let document: serde_json::Value = serde_json::from_str(body).map_err(|e| {
            io(std::io::Error::other(format!(
                "the node's answer is not JSON: {e}"
            )))
        })?;
        Ok((status, document))
    }

    /// Sends `envelope` to the node and turns its answer into a report.
    /// Records an audit event `gtc op` made for a refusal it decided, in
    /// the node's store (the replicated log on a cluster member).
    pub fn record(&self, event: &deploy::audit::AuditEvent) -> Result<(), CliError> {
        let body = serde_json::to_vec(event)
            .map_err(|e| CliError::new(ErrorKind::Store, e.to_string()))?;
        let (status, document) = self.request("POST", "/admin/v1/events", &body)?;
        if status == 200 {
            return Ok(());
        }
        Err(CliError::new(
            ErrorKind::Audit,
            document["error"]["message"]
                .as_str()
                .unwrap_or("the node did not record the audit event")
                .to_owned(),
        ))
    }

    pub fn submit(
        &self,
        envelope: &CommandEnvelope,
        noun: &'static str,
        verb: &'static str,
    ) -> Result<Report, CliError> {
        let body = serde_json::to_vec(envelope)
            .map_err(|e| CliError::new(ErrorKind::Store, e.to_string()))?;
        let (status, document) = self.request("POST", "/admin/v1/commands", &body)?;
        if status != 200 {
            let error = &document["error"];
            let kind =
                ErrorKind::parse(error["kind"].as_str().unwrap_or("")).unwrap_or(ErrorKind::Store);
            let mut cli = CliError::new(
                kind,
                error["message"]
                    .as_str()
                    .unwrap_or("the node refused the command")
                    .to_owned(),
            );
            if let Some(field) = error["field"].as_str() {
                cli = cli.with_field(field);
            }
            return Err(cli);
        }
        let mut report = Report::new(noun, verb, document["result"].clone());
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
