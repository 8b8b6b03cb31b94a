//! Three real members on loopback, in one process: QUIC with mutual TLS
//! between them, redb logs and file-store replicas in temp folders.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use consensus::{ClusterConfig, ClusterHandle, RaftSettings};
use deploy::audit::{Actor, Authorization, Decision};
use deploy::command::{Command, CommandEnvelope, EnvCreateAnswers, EnvInitAnswers, MintedIds};
use deploy::ids::{EnvId, EventId};
use store::EnvironmentStore;
use transport::ClusterCa;

fn envelope(command: Command) -> CommandEnvelope {
    CommandEnvelope {
        at: chrono::Utc::now(),
        actor: Actor::local_user(Some("test".into()), None),
        authorization: Authorization {
            decision: Decision::Allow,
            policy: "test".into(),
            reason: "test".into(),
        },
        minted: MintedIds {
            event_id: EventId::from_ulid(ulid::Ulid::new()),
            object_id: ulid::Ulid::new(),
        },
        command,
        precondition: None,
        idempotency_key: None,
        signed_by: None,
    }
}

fn init() -> CommandEnvelope {
    envelope(Command::EnvInit {
        answers: EnvInitAnswers::default(),
        defaults: packs::default_bindings(),
    })
}

fn create(name: &str) -> CommandEnvelope {
    let answers: EnvCreateAnswers =
        serde_json::from_value(serde_json::json!({"environment_id": name, "name": name}))
            .expect("answers");
    envelope(Command::EnvCreate(answers))
}

fn settings() -> RaftSettings {
    RaftSettings {
        heartbeat_interval_ms: 100,
        election_timeout_min_ms: 400,
        election_timeout_max_ms: 800,
        snapshot_every_entries: 5,
        entries_kept_after_snapshot: 0,
    }
}

fn config(
    ca: &ClusterCa,
    root: &Path,
    name: &str,
    listen: SocketAddr,
    join: Option<SocketAddr>,
) -> ClusterConfig {
    let dir = root.join(name);
    ClusterConfig {
        node_name: name.to_owned(),
        data_dir: dir.join("raft"),
        store_root: dir.join("environments"),
        raft_listen: listen,
        raft_advertise: None,
        admin_addr: String::new(),
        identity: ca.issue_node_cert(name).expect("cert"),
        bootstrap: join.is_none(),
        join,
        raft: settings(),
    }
}

async fn start(
    ca: &ClusterCa,
    root: &Path,
    name: &str,
    listen: SocketAddr,
    join: Option<SocketAddr>,
) -> Arc<ClusterHandle> {
    ClusterHandle::start(config(ca, root, name, listen, join))
        .await
        .expect("start")
}

/// Three members on loopback: n1 bootstraps and leads, n2 and n3 join it.
async fn three_members(ca: &ClusterCa, root: &Path) -> (Vec<SocketAddr>, [Arc<ClusterHandle>; 3]) {
    let addrs: Vec<SocketAddr> = (0..3).map(|_| free_udp_addr()).collect();
    let n1 = start(ca, root, "n1", addrs[0], None).await;
    eventually("n1 to lead", || n1.is_leader()).await;
    let n2 = start(ca, root, "n2", addrs[1], Some(addrs[0])).await;
    let n3 = start(ca, root, "n3", addrs[2], Some(addrs[0])).await;
    (addrs, [n1, n2, n3])
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn free_udp_addr() -> SocketAddr {
    testkit::free_udp()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_members_replicate_forward_survive_the_leader_and_catch_up_from_a_snapshot() {
    // Proves: writes on a follower are forwarded and applied everywhere with
    // identical audit chains; losing the leader loses nothing acknowledged;
    // a restarted member catches up from a snapshot after the log was purged,
    // idempotency records included.
    let temp = tempfile::tempdir().expect("temp");
    let ca = ClusterCa::create("test").expect("ca");
    let (addrs, [n1, n2, n3]) = three_members(&ca, temp.path()).await;
    assert_eq!(n1.status().voters.len(), 3);

    // A write on a follower.
    n3.submit(&init()).await.expect("init through a follower");
    for i in 0..3 {
        n2.submit(&create(&format!("env-{i}")))
            .await
            .expect("create");
    }
    let members = [&n1, &n2, &n3];
    for member in members {
        let store = member.state_machine().store();
        eventually("replicas to apply", || {
            store.list().map(|l| l.len()).ok() == Some(4)
        })
        .await;
    }
    let lines = |member: &ClusterHandle| {
        member
            .state_machine()
            .store()
            .audit_lines(&EnvId::local())
            .expect("audit")
    };
    assert_eq!(lines(&n1), lines(&n2));
    assert_eq!(lines(&n1), lines(&n3));

    // Every member holds the cluster secrets key (the node installs it from
    // its node folder); a version sealed on a follower opens everywhere.
    let key_file = temp.path().join("secrets.key");
    std::fs::write(&key_file, [42u8; 32]).expect("key");
    std::fs::set_permissions(
        &key_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("mode");
    let replica = |member: &ClusterHandle| {
        secrets::SecretStore::replica(member.state_machine().store().root())
    };
    for member in members {
        replica(member)
            .install_cluster_key(&key_file)
            .expect("install");
    }
    let first = put_secret(&n2, "before-n1-left").await;
    assert_eq!(first.version, 1);
    for member in members {
        eventually("the version to apply everywhere", || {
            replica(member)
                .get(&EnvId::local(), &db_password(), None)
                .is_ok()
        })
        .await;
        let (_, value) = replica(member)
            .reveal(&EnvId::local(), &db_password(), None)
            .expect("reveal");
        assert_eq!(value.expose(), "before-n1-left");
    }

    // Lose the leader; the other two elect one and keep accepting writes.
    n1.shutdown().await;
    drop(n1);
    // A keyed change n1 misses, before the changes that make the next
    // snapshot: its record reaches n1 only inside that snapshot.
    let mut keyed = envelope(Command::EnvUpdate(
        serde_json::from_value(serde_json::json!({"environment_id": "local", "region": "eu"}))
            .expect("answers"),
    ));
    keyed.idempotency_key = Some("while-n1-was-away".into());
    n3.submit(&keyed).await.expect("keyed change");
    let recorded = |member: &ClusterHandle| {
        member
            .state_machine()
            .store()
            .idempotency_record(&EnvId::local(), "while-n1-was-away")
            .expect("the table reads")
    };
    // A secret version and a trust root n1 misses: they reach n1 only
    // inside the snapshot.
    assert_eq!(put_secret(&n3, "while-n1-was-away").await.version, 2);
    let trust_root = r#"{"schema":"greentic.trust-root.v1","keys":[]}"#.to_owned();
    let change = consensus::TrustRootChange {
        env_id: EnvId::local(),
        previous_sha256: None,
        document: trust_root.clone(),
    };
    let event = audit_event("trust-root", "add");
    assert_eq!(
        n3.trust_root_change(&change, &event)
            .await
            .expect("replicated"),
        consensus::TrustRootOutcome::Written
    );
    // Built from a file that is no longer there: stale, written nowhere.
    let stale = consensus::TrustRootChange {
        document: r#"{"schema":"greentic.trust-root.v1","keys":[{"x":1}]}"#.to_owned(),
        ..change
    };
    assert!(matches!(
        n2.trust_root_change(&stale, &audit_event("trust-root", "add"))
            .await
            .expect("replicated"),
        consensus::TrustRootOutcome::Stale { .. }
    ));
    for i in 3..10 {
        n2.submit(&create(&format!("env-{i}")))
            .await
            .expect("create without n1");
    }
    eventually("n3 to apply", || {
        n3.state_machine().store().list().map(|l| l.len()).ok() == Some(11)
    })
    .await;
    let status = n2.status();
    assert!(
        status.snapshot_index.is_some(),
        "a snapshot was built: {status:?}"
    );

    // n1 comes back with its old data and catches up (from a snapshot: the
    // log it missed was purged behind one).
    let n1 = start(&ca, temp.path(), "n1", addrs[0], Some(addrs[1])).await;
    // Caught up: n1 has applied (or installed) everything the leader had
    // applied when n1 came back, not merely written some of its files.
    let leader_applied = n2.state_machine().applied_index();
    eventually("n1 to catch up", || {
        n1.state_machine().applied_index() >= leader_applied
    })
    .await;
    assert_eq!(
        n1.state_machine().store().list().map(|l| l.len()).ok(),
        Some(11)
    );
    assert!(recorded(&n2).is_some(), "the leader keeps the record");
    assert_eq!(recorded(&n1), recorded(&n2), "the snapshot carried it");
    assert_eq!(lines(&n1), lines(&n2));
    let (meta, value) = replica(&n1)
        .reveal(&EnvId::local(), &db_password(), None)
        .expect("the snapshot carried the secret");
    assert_eq!((meta.version, value.expose()), (2, "while-n1-was-away"));
    assert_eq!(
        replica(&n1).image(&EnvId::local()).expect("image"),
        replica(&n2).image(&EnvId::local()).expect("image"),
        "n1's secret store is n2's"
    );
    let trust_file = |member: &ClusterHandle| {
        std::fs::read_to_string(deploy::layout::trust_root(
            member.state_machine().store().root(),
            &EnvId::local(),
        ))
        .expect("trust root")
    };
    assert_eq!(
        trust_file(&n1),
        trust_root,
        "the snapshot carried the trust root"
    );
    assert_eq!(trust_file(&n2), trust_root);
    for member in [&n1, &n2, &n3] {
        member.shutdown().await;
    }
}

fn db_password() -> secrets::SecretPath {
    secrets::SecretPath::parse("db/password").expect("path")
}

/// Seals `value` as the next version of `db/password` on `member` and
/// commits it through the cluster, as the node's `secrets put` does.
async fn put_secret(member: &ClusterHandle, value: &str) -> secrets::VersionMeta {
    let store = secrets::SecretStore::replica(member.state_machine().store().root());
    let request = secrets::WriteRequest {
        created_by: "test".to_owned(),
        origin: secrets::Origin::Put,
        idempotency_key: None,
        at: chrono::Utc::now(),
    };
    let text = secrets::SecretText::new(value.to_owned()).expect("value");
    let secrets::Sealing::New(sealed) = store
        .seal(&EnvId::local(), &db_password(), &text, request, false)
        .expect("seal")
    else {
        panic!("a new value is never a replay");
    };
    let event = audit_event("secrets", "put");
    match member
        .secret_change(&consensus::SecretChange::Write(sealed), &event)
        .await
        .expect("replicated")
    {
        consensus::SecretOutcome::Written(meta) => meta,
        other => panic!("unexpected {other:?}"),
    }
}

/// An allowed audit event about `local` by `noun verb`.
fn audit_event(noun: &str, verb: &str) -> deploy::audit::AuditEvent {
    deploy::audit::AuditEvent {
        schema: deploy::audit::AUDIT_SCHEMA.to_owned(),
        event_id: EventId::from_ulid(ulid::Ulid::new()),
        ts: chrono::Utc::now(),
        actor: Actor::local_user(Some("test".into()), None),
        env_id: "local".to_owned(),
        noun: noun.to_owned(),
        verb: verb.to_owned(),
        target: serde_json::json!({}),
        previous_generation: None,
        new_generation: None,
        idempotency_key: None,
        replayed: false,
        authorization: Authorization {
            decision: Decision::Allow,
            policy: "test".into(),
            reason: "test".into(),
        },
        result: deploy::audit::AuditResult::Ok,
        prev_hash: String::new(),
        signed_by: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_with_a_certificate_from_another_ca_cannot_join() {
    // Proves: mutual TLS refuses a peer the cluster CA did not sign.
    let temp = tempfile::tempdir().expect("temp");
    let ca = ClusterCa::create("test").expect("ca");
    let other = ClusterCa::create("other").expect("ca");
    let addrs: Vec<SocketAddr> = (0..2).map(|_| free_udp_addr()).collect();
    let n1 = start(&ca, temp.path(), "n1", addrs[0], None).await;
    eventually("n1 to lead", || n1.is_leader()).await;
    let dir = temp.path().join("intruder");
    let joined = tokio::time::timeout(
        Duration::from_secs(30),
        ClusterHandle::start(ClusterConfig {
            node_name: "intruder".to_owned(),
            data_dir: dir.join("raft"),
            store_root: dir.join("environments"),
            raft_listen: addrs[1],
            raft_advertise: None,
            admin_addr: String::new(),
            identity: other.issue_node_cert("intruder").expect("cert"),
            bootstrap: false,
            join: Some(addrs[0]),
            raft: settings(),
        }),
    )
    .await;
    assert!(
        !matches!(joined, Ok(Ok(_))),
        "a node with a foreign certificate joined"
    );
    assert_eq!(n1.status().members.len(), 1);
    n1.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_members_lose_two_and_change_membership_without_losing_writes() {
    // Proves: a 5-voter cluster keeps committing with two members down
    // (quorum 3), a member can be removed and a new one added while it
    // runs, and every acknowledged write is on every remaining replica.
    let temp = tempfile::tempdir().expect("temp");
    let ca = ClusterCa::create("test").expect("ca");
    let addrs: Vec<SocketAddr> = (0..6).map(|_| free_udp_addr()).collect();
    let first = start(&ca, temp.path(), "m1", addrs[0], None).await;
    eventually("m1 to lead", || first.is_leader()).await;
    let mut members = vec![first];
    for i in 1..5 {
        members.push(
            start(
                &ca,
                temp.path(),
                &format!("m{}", i + 1),
                addrs[i],
                Some(addrs[0]),
            )
            .await,
        );
    }
    assert_eq!(members[0].status().voters.len(), 5);
    members[4].submit(&init()).await.expect("init");

    // Two members go down; three still form a quorum.
    let down: Vec<_> = members.drain(3..).collect();
    for member in &down {
        member.shutdown().await;
    }
    for i in 0..3 {
        members[i % 3]
            .submit(&create(&format!("during-{i}")))
            .await
            .expect("a write with two members down");
    }

    // Remove one of the dead members, add a new one.
    let removed = down[0].node_id();
    members[1].remove(removed).await.expect("remove");
    eventually("the removal to commit", || {
        !members[0].status().voters.contains(&removed)
    })
    .await;
    let newcomer = start(&ca, temp.path(), "m6", addrs[5], Some(addrs[1])).await;
    eventually("the newcomer to become a voter", || {
        newcomer.status().voters.contains(&newcomer.node_id())
    })
    .await;
    members[2]
        .submit(&create("after-change"))
        .await
        .expect("write after the change");
    members.push(newcomer);
    for member in &members {
        let store = member.state_machine().store();
        eventually("every replica to hold all writes", || {
            store.list().map(|l| l.len()).ok() == Some(5)
        })
        .await;
    }
    let lines = |member: &ClusterHandle| {
        member
            .state_machine()
            .store()
            .audit_lines(&EnvId::local())
            .expect("audit")
    };
    for member in &members[1..] {
        assert_eq!(lines(&members[0]), lines(member));
    }
    for member in &members {
        member.shutdown().await;
    }
}

/// A placement naming `revision`, decided in `term`.
fn placement(term: u64, revision: deploy::ids::RevisionId) -> CommandEnvelope {
    envelope(Command::RevisionPlace(deploy::command::PlacementAnswers {
        environment_id: EnvId::local(),
        placements: std::collections::BTreeMap::from([(revision, vec!["n2".to_owned()])]),
        decided_in_term: Some(term),
    }))
}

/// The kind of a replicated refusal, and its message.
fn refusal(result: Result<store::Submitted, store::SubmitError>) -> (String, String) {
    match result {
        Err(store::SubmitError::Replicated { kind, message, .. }) => {
            (kind.as_str().to_owned(), message)
        }
        Err(other) => panic!("expected a replicated refusal, got {other}"),
        Ok(submitted) => panic!("expected a refusal, got {:?}", submitted.applied.result),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_placement_is_applied_only_in_the_term_its_leader_decided_it() {
    // Proves: a leader's decision that reaches the log under a later leader
    // (forwarded after its leader was deposed, as an isolated leader's
    // pending placement is when the partition heals) is refused by every
    // replica, while one decided in the entry's own term goes on to `apply`
    // (here refused there, for naming no revision, which shows it passed
    // the term check); and a leader-only submission is never forwarded.
    let temp = tempfile::tempdir().expect("temp");
    let ca = ClusterCa::create("test").expect("ca");
    let (_, [n1, n2, n3]) = three_members(&ca, temp.path()).await;
    n2.submit(&init()).await.expect("init");
    let revision = deploy::ids::RevisionId::from_ulid(ulid::Ulid::new());
    let first_term = n1.status().term;

    // Decided in the current term, forwarded by a follower: past the check.
    let (kind, message) = refusal(n2.submit(&placement(first_term, revision)).await);
    assert_eq!(kind, "not-found", "{message}");

    // A follower does not propose a leader's decision, nor forward it.
    let (_, message) = refusal(
        n3.submit_as_leader(&placement(first_term, revision), Duration::from_secs(2))
            .await,
    );
    assert!(message.contains("no longer leads"), "{message}");

    // The leader goes; a decision of its term now reaches the log in the
    // next one and is refused, on every replica alike.
    n1.shutdown().await;
    drop(n1);
    eventually("a new leader", || n2.is_leader() || n3.is_leader()).await;
    let (leader, other) = if n2.is_leader() {
        (&n2, &n3)
    } else {
        (&n3, &n2)
    };
    let second_term = leader.status().term;
    assert!(second_term > first_term);
    let (kind, message) = refusal(other.submit(&placement(first_term, revision)).await);
    assert_eq!(kind, "conflict", "{message}");
    assert!(
        message.contains(&format!("decided by the leader of term {first_term}")),
        "{message}"
    );

    // The new leader's own decision passes the check.
    let (kind, message) = refusal(
        leader
            .submit_as_leader(&placement(second_term, revision), Duration::from_secs(5))
            .await,
    );
    assert_eq!(kind, "not-found", "{message}");
    for member in [&n2, &n3] {
        member.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_is_answered_with_its_first_answer_and_the_state_as_it_is_now() {
    // Proves: an envelope sent again (a client's retry across a leader
    // change) is not applied twice and gets its first answer (result,
    // event, generation), with the environment's current state: the
    // window of remembered outcomes keeps no states (4096 whole
    // environments held a node at gigabytes), so the state is read again.
    let temp = tempfile::tempdir().expect("temp");
    let ca = ClusterCa::create("test").expect("ca");
    let n1 = start(&ca, temp.path(), "n1", free_udp_addr(), None).await;
    eventually("n1 to lead", || n1.is_leader()).await;
    n1.submit(&init()).await.expect("init");
    let first = create("staging");
    let answered = n1.submit(&first).await.expect("create");
    let renamed: deploy::command::EnvUpdateAnswers = serde_json::from_value(
        serde_json::json!({"environment_id": "staging", "name": "Staging, renamed"}),
    )
    .expect("answers");
    let later = n1
        .submit(&envelope(Command::EnvUpdate(renamed)))
        .await
        .expect("a later change");
    assert!(later.generation > answered.generation);
    let again = n1.submit(&first).await.expect("the duplicate's answer");
    assert_eq!(again.applied.result, answered.applied.result);
    assert_eq!(again.generation, answered.generation);
    assert_eq!(
        again.applied.event.as_ref().map(|e| e.event_id.to_string()),
        answered
            .applied
            .event
            .as_ref()
            .map(|e| e.event_id.to_string())
    );
    let env: EnvId = "staging".parse().expect("env");
    let now = n1
        .state_machine()
        .store()
        .load(&env)
        .expect("load")
        .expect("staging exists");
    assert_eq!(again.applied.state.as_ref(), Some(&now));
    assert_eq!(now.generation, later.generation.expect("generation"));
    let event_id = answered
        .applied
        .event
        .as_ref()
        .map(|e| e.event_id.to_string())
        .expect("an audited create");
    let lines = n1
        .state_machine()
        .store()
        .audit_tail(&env, 100)
        .expect("audit");
    assert_eq!(
        lines.iter().filter(|line| line.contains(&event_id)).count(),
        1,
        "the duplicate was applied again"
    );
    n1.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_whose_snapshot_file_is_damaged_rewrites_it_and_one_whose_applied_index_is_damaged_names_it()
 {
    // Proves: the snapshot file is derived data, so a member that finds its
    // own unreadable (a disk fault, a hand edit) starts anyway: the file is
    // moved aside, written again from the replica, and the member applies
    // what comes next. The applied-index file is not derived: a member that
    // finds it unreadable refuses to start, naming it, and writes nothing.
    let temp = tempfile::tempdir().expect("temp");
    let ca = ClusterCa::create("test").expect("ca");
    let (addrs, [n1, n2, n3]) = three_members(&ca, temp.path()).await;
    n1.submit(&init()).await.expect("init");
    for i in 0..12 {
        n1.submit(&create(&format!("env-{i}")))
            .await
            .expect("create");
    }
    let listed =
        |member: &ClusterHandle| member.state_machine().store().list().map(|l| l.len()).ok();
    eventually("n3 to apply", || listed(&n3) == Some(13)).await;
    let raft_dir = temp.path().join("n3/raft");
    let snapshot = raft_dir.join("raft-snapshot.json");
    eventually("n3 to build a snapshot", || snapshot.exists()).await;
    n3.shutdown().await;
    drop(n3);

    // Damaged snapshot: truncated mid-document.
    let whole = std::fs::read(&snapshot).expect("snapshot");
    std::fs::write(&snapshot, &whole[..whole.len() / 2]).expect("damage");
    let n3 = start(&ca, temp.path(), "n3", addrs[2], Some(addrs[0])).await;
    let aside = raft_dir.join("raft-snapshot.json.unreadable");
    assert_eq!(
        std::fs::read(&aside).expect("the damaged file is kept aside"),
        whole[..whole.len() / 2]
    );
    let rewritten: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&snapshot).expect("rewritten"))
            .expect("the rewritten snapshot parses");
    assert!(rewritten["meta"]["last_log_id"].is_object(), "{rewritten}");
    for i in 12..20 {
        n2.submit(&create(&format!("env-{i}")))
            .await
            .expect("create");
    }
    eventually("n3 to apply after its restart", || listed(&n3) == Some(21)).await;
    n3.shutdown().await;
    drop(n3);

    // Damaged applied index: the member refuses to start and names it.
    let applied = raft_dir.join("raft-applied.json");
    let before = std::fs::read(&applied).expect("applied index");
    std::fs::write(&applied, b"{\"last_applied\": ").expect("damage");
    let error = match ClusterHandle::start(config(&ca, temp.path(), "n3", addrs[2], Some(addrs[0])))
        .await
    {
        Ok(_) => panic!("a member without its applied index started"),
        Err(error) => format!("{error:#}"),
    };
    assert!(error.contains("raft-applied.json"), "{error}");
    assert!(error.contains("does not parse"), "{error}");
    assert_eq!(
        std::fs::read(&applied).expect("kept"),
        b"{\"last_applied\": ",
        "left as found"
    );
    assert!(!before.is_empty());
}
