//! Secrets on a real cluster member: not replicated yet, so a member
//! refuses to store one (through its admin API and through `gtc op` on its
//! store root) rather than keep it on one member only.

mod cluster_support;

use std::io::{Read, Write};
use std::net::TcpStream;

use cluster_support::{Member, Reaper, free_tcp, free_udp, run};
use serde_json::Value;

#[test]
fn a_cluster_member_refuses_to_store_a_secret_and_writes_nothing() {
    // Proves: `secrets put` on a cluster member answers 501
    // `not-yet-implemented` (API) and exit 2 (CLI on its store root), is
    // audited, and creates no secret file or node key on the member.
    let temp = tempfile::tempdir().expect("temp");
    let _reaper = Reaper(temp.path().to_owned());
    let home = temp.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let dir = temp.path().join("cluster");
    let dir_text = dir.to_str().expect("utf8");
    let (ok, _, text) = run(
        &home,
        &["cluster", "init", "--dir", dir_text, "--name", "n1"],
    );
    assert!(ok, "cluster init: {text}");
    let mut member = Member {
        name: "n1".to_owned(),
        dir: dir.join("n1"),
        raft: free_udp(),
        admin: free_tcp(),
        router: free_tcp(),
        gossip: None,
        gossip_seed: None,
        child: None,
    };
    member.start(&home, None);
    let node_file: Value = serde_json::from_str(
        &std::fs::read_to_string(member.store().join("local/node.json")).expect("node file"),
    )
    .expect("node json");
    let token = node_file["token"].as_str().expect("token");

    let body = r#"{"path":"db/password","value":"cluster-marker-value"}"#;
    let mut stream = TcpStream::connect(member.admin).expect("connect");
    write!(
        stream,
        "POST /v1/environments/local/secrets HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 501"), "{answer}");
    assert!(
        answer.contains("not-yet-implemented") && !answer.contains("cluster-marker-value"),
        "{answer}"
    );

    let answers = home.join("put.json");
    std::fs::write(
        &answers,
        r#"{"environment_id":"local","path":"db/password","value":"cluster-marker-value"}"#,
    )
    .expect("answers");
    let store = member.store();
    let output = cluster_support::gtc()
        .env("GREENTIC_HOME", &home)
        .env("USER", "tester")
        .args([
            "op",
            "secrets",
            "put",
            "--answers",
            answers.to_str().expect("utf8"),
        ])
        .arg("--store-root")
        .arg(&store)
        .output()
        .expect("gtc");
    assert_eq!(
        output.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    assert!(
        !store.join("secrets-node.key").exists(),
        "no node key on a member"
    );
    assert!(
        !store.join("local/secrets/entries").exists(),
        "no secret stored"
    );
    let audit = member.audit();
    assert!(
        audit.contains("\"noun\":\"secrets\""),
        "the refusal is audited: {audit}"
    );
    assert!(!audit.contains("cluster-marker-value"));
}
