//! `gtc op --node` reads the environment's ETag, then sends its change with
//! `If-Match`. A change that lands between the two (a revision's readiness
//! report, another operator) makes the node answer 412; the CLI sends the
//! change again with the new ETag. A loopback proxy in front of a real node
//! makes that happen deterministically: before it forwards the CLI's first
//! change, it commits another change on the node itself.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use common::{Home, Node};
use serde_json::json;

/// One whole HTTP/1.1 request (head and its Content-Length body).
fn read_request(stream: &mut TcpStream) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let read = stream.read(&mut buffer).expect("read request");
        if read == 0 {
            return bytes;
        }
        bytes.extend_from_slice(&buffer[..read]);
        let text = String::from_utf8_lossy(&bytes);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if body.len() >= length {
                return bytes;
            }
        }
    }
}

/// Sends `request` to `node` and returns its whole answer.
fn exchange(node: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut upstream = TcpStream::connect(node).expect("connect node");
    upstream.write_all(request).expect("forward");
    let mut answer = Vec::new();
    let _ = upstream.read_to_end(&mut answer);
    answer
}

fn status(answer: &[u8]) -> u16 {
    String::from_utf8_lossy(answer)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_change_that_lands_between_the_read_and_the_write_is_sent_again() {
    // Proves: the CLI's change succeeds although the node refused its first
    // attempt with 412 (the proxy saw exactly one 412 and then a 200), both
    // changes are in the audit log, and a 412 that a newer ETag cannot cure
    // (a stale `expected_generation`) is not sent again.
    let home = Home::new();
    home.gtc(&["op", "env", "init"]);
    let node = Node::start(&home);
    let text = std::fs::read_to_string(home.root().join("local/node.json")).expect("node file");
    let token = serde_json::from_str::<serde_json::Value>(&text).expect("json")["token"]
        .as_str()
        .expect("token")
        .to_owned();

    let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
    let proxy = listener.local_addr().expect("proxy addr");
    let statuses: Arc<Mutex<Vec<(String, u16)>>> = Arc::default();
    let seen = Arc::clone(&statuses);
    let admin = node.admin;
    let interpose_token = token.clone();
    std::thread::spawn(move || {
        let mut interposed = false;
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let request = read_request(&mut stream);
            let line = String::from_utf8_lossy(&request)
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned();
            if line.starts_with("POST /v1/environments/local/bundles") && !interposed {
                interposed = true;
                // Another change commits after the CLI read its ETag.
                let body =
                    json!({"bundle_id": "other", "route_binding": {"path_prefixes": ["/other"]}})
                        .to_string();
                let other = format!(
                    "POST /v1/environments/local/bundles HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {interpose_token}\r\nIf-Match: *\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let answer = exchange(admin, other.as_bytes());
                assert_eq!(status(&answer), 200, "the interposed change");
            }
            let answer = exchange(admin, &request);
            seen.lock().expect("statuses").push((line, status(&answer)));
            let _ = stream.write_all(&answer);
        }
    });

    let url = format!("http://{proxy}");
    // `gtc op NOUN VERB --answers <answers> --node <proxy> --token <owner>`.
    let through_proxy = |noun: &str, verb: &str, answers: serde_json::Value| {
        let file = home.write(&format!("{noun}-{verb}.json"), &answers.to_string());
        let file = file.to_str().expect("utf8");
        home.gtc(&[
            "op",
            noun,
            verb,
            "--answers",
            file,
            "--node",
            &url,
            "--token",
            &token,
        ])
    };
    let run = through_proxy(
        "bundles",
        "add",
        json!({"environment_id": "local", "bundle_id": "shop", "route_binding": {"path_prefixes": ["/shop"]}}),
    );
    assert_eq!(run.code, 0, "{} {}", run.stdout, run.stderr);
    let posts: Vec<u16> = statuses
        .lock()
        .expect("statuses")
        .iter()
        .filter(|(line, _)| line.starts_with("POST "))
        .map(|(_, status)| *status)
        .collect();
    assert_eq!(posts, vec![412, 200], "one stale attempt, then the change");
    let audit = home.audit_lines("local").join("\n");
    assert!(
        audit.contains("\"other\"") && audit.contains("\"shop\""),
        "{audit}"
    );

    // A stale expected generation stays stale with the newest ETag: one
    // attempt, refused.
    statuses.lock().expect("statuses").clear();
    let backup = through_proxy("env", "backup", json!({"environment_id": "local"}));
    let backup_id = backup.stdout["result"]["backup_id"]
        .as_str()
        .unwrap_or_else(|| panic!("backup: {} {}", backup.stdout, backup.stderr))
        .to_owned();
    let refused = through_proxy(
        "env",
        "restore",
        json!({"environment_id": "local", "backup_id": backup_id, "expected_generation": 1}),
    );
    assert_eq!(
        refused.error_kind(),
        "precondition-failed",
        "{}",
        refused.stderr
    );
    let posts = statuses
        .lock()
        .expect("statuses")
        .iter()
        .filter(|(line, _)| line.contains("/restore"))
        .count();
    assert_eq!(posts, 1, "a payload's stale generation is not sent again");
    drop(node);
}
