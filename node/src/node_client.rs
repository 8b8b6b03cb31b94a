//! `gtc op` talking to a running node: when the environment's node file
//! names a live admin API, commands go through the node (which applies them
//! with the same store and apply path); otherwise straight to the store.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use deploy::command::CommandEnvelope;
use deploy::error::ErrorKind;

use crate::error::CliError;
use crate::output::Report;

/// How long the CLI waits to reach a node before using the store directly.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(300);
/// How long a command may take on the node (staging a large bundle is
/// done by the CLI, so commands themselves are quick).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// A node that answered on its admin address.
pub struct NodeClient {
    admin: SocketAddr,
    token: String,
}

/// The running node of the environment in `env_dir`, if there is one.
pub fn running_node(env_dir: &Path) -> Option<NodeClient> {
    let text = std::fs::read_to_string(env_dir.join(crate::node_cmd::NODE_FILE)).ok()?;
    let document: serde_json::Value = serde_json::from_str(&text).ok()?;
    let admin: SocketAddr = document["admin"].as_str()?.parse().ok()?;
    let token = document["token"].as_str()?.to_owned();
    // A node file left by a node that died is ignored.
    TcpStream::connect_timeout(&admin, CONNECT_TIMEOUT).ok()?;
    Some(NodeClient { admin, token })
}

fn io(error: std::io::Error) -> CliError {
    CliError::new(
        ErrorKind::Io,
        format!("talking to the running node failed: {error}"),
    )
}

impl NodeClient {
    /// One HTTP/1.1 request to the node's admin API with its bearer token;
    /// the answer's status and JSON body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<(u16, serde_json::Value), CliError> {
        let mut stream = TcpStream::connect_timeout(&self.admin, CONNECT_TIMEOUT).map_err(io)?;
        stream
            .set_read_timeout(Some(RESPONSE_TIMEOUT))
            .map_err(io)?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.admin,
            self.token,
            body.len()
        );
        stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(body))
            .map_err(io)?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).map_err(io)?;
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
