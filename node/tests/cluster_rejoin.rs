//! A member that dies or returns costs the cluster about one heartbeat
//! (issue #12): a killed leader or follower, started again on the same
//! addresses, serves the committed generation within the bound, and its
//! return moves no term while a leader is healthy; staleness shows in
//! `/readyz` and `/status`.

mod cluster_support;

use std::time::{Duration, Instant};

use cluster_support::*;
use serde_json::Value;

/// A restarted member serves the committed split this soon after its start
/// (the target; its goal is one second).
const REJOIN_BOUND: Duration = Duration::from_secs(2);

/// How long the test watches the term after a member returned: several
/// election timeouts (at most 0.6 s each, after a 0.6 s lease, by
/// default), so a returning member that campaigned would have moved it.
const TERM_WATCH: Duration = Duration::from_secs(4);

fn status(member: &Member) -> Option<Value> {
    http_get(member.admin, "/status").and_then(|body| serde_json::from_str(&body).ok())
}

fn term(member: &Member) -> Option<u64> {
    status(member)?["cluster"]["term"].as_u64()
}

fn is_leader(member: &Member) -> bool {
    status(member).is_some_and(|s| s["cluster"]["state"] == "leader")
}

fn leader_index(members: &[Member]) -> usize {
    let mut found = None;
    eventually("a leader", || {
        found = members.iter().position(is_leader);
        found.is_some()
    });
    found.expect("a leader")
}

/// The generation the member's router serves (every answer carries it).
fn served_generation(member: &Member) -> Option<u64> {
    get(member.router).and_then(|(_, generation, _)| generation)
}

/// Starts `member` again on its addresses and returns how long it took
/// until its router served `generation`.
fn restart_and_time(home: &std::path::Path, member: &mut Member, generation: u64) -> Duration {
    let started = Instant::now();
    member.start(home, None);
    let deadline = started + Duration::from_secs(30);
    loop {
        if served_generation(member).is_some_and(|served| served >= generation) {
            return started.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "{} never served generation {generation} after its restart",
            member.name
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asserts every live member keeps `expected` as its term for [`TERM_WATCH`].
fn assert_term_stays(members: &[Member], live: &[usize], expected: u64, what: &str) {
    let until = Instant::now() + TERM_WATCH;
    while Instant::now() < until {
        for &index in live {
            if let Some(term) = term(&members[index]) {
                assert_eq!(
                    term, expected,
                    "{what}: {} moved to term {term} (was {expected})",
                    members[index].name
                );
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_restarted_leader_or_follower_serves_the_committed_split_within_the_bound_without_a_new_term() {
    // Proves the rejoin targets of issue #12 on real processes: after a
    // SIGKILL and a write it missed, the member started again on the same
    // addresses serves the committed generation in < 2 s, and no term moves
    // while it returns (pre-vote, and the leader reaching it on its next
    // heartbeat instead of after the 30 s idle timeout of a stale connection).
    let temp = tempfile::tempdir().expect("temp");
    let temp_path = if keep_folder() {
        temp.keep()
    } else {
        temp.path().to_owned()
    };
    eprintln!("cluster folder: {}", temp_path.display());
    let _reaper = Reaper(temp_path.clone());
    let (home, mut members) = three_members(&temp_path, false);
    add_bundle(&home, &members[0], "before");

    // The leader dies; a write through a survivor is acknowledged.
    let leader = leader_index(&members);
    members[leader].kill();
    let survivor = (leader + 1) % 3;
    let killed_at = Instant::now();
    add_bundle(&home, &members[survivor], "while-the-leader-is-down");
    eprintln!(
        "leader {} killed: a write through {} was acknowledged after {:?}",
        members[leader].name,
        members[survivor].name,
        killed_at.elapsed()
    );
    let generation = members[survivor].generation().expect("generation");
    let term_before = term(&members[survivor]).expect("term");

    let took = restart_and_time(&home, &mut members[leader], generation);
    eprintln!("the old leader served generation {generation} {took:?} after its start");
    assert!(
        took < REJOIN_BOUND,
        "the restarted leader took {took:?} to serve the committed generation"
    );
    assert_term_stays(
        &members,
        &[0, 1, 2],
        term_before,
        "after the leader returned",
    );

    // A follower dies, misses a write, and returns.
    let leader = leader_index(&members);
    let follower = (leader + 1) % 3;
    members[follower].kill();
    add_bundle(&home, &members[leader], "while-a-follower-is-down");
    let generation = members[leader].generation().expect("generation");
    let took = restart_and_time(&home, &mut members[follower], generation);
    eprintln!("the follower served generation {generation} {took:?} after its start");
    assert!(
        took < REJOIN_BOUND,
        "the restarted follower took {took:?} to serve the committed generation"
    );
    assert_term_stays(
        &members,
        &[0, 1, 2],
        term_before,
        "after the follower returned",
    );
}

#[test]
fn a_member_cut_off_from_every_leader_reports_itself_unready() {
    // Proves: /readyz turns 503 (and /status says why) once a member has
    // heard from no leader for longer than the documented bound (3 election
    // timeouts), while /healthz stays 200 and its router keeps answering.
    let temp = tempfile::tempdir().expect("temp");
    let _reaper = Reaper(temp.path().to_owned());
    let (home, mut members) = three_members(temp.path(), false);
    add_bundle(&home, &members[0], "shop");
    for member in &members {
        eventually(&format!("{} to be ready", member.name), || {
            http_status(member, "/readyz") == Some(200)
        });
    }
    // Two members die: the last one has no leader and no quorum.
    let alone = 2;
    let cut_off = Instant::now();
    members[0].kill();
    members[1].kill();
    eventually("the lone member to report itself unready", || {
        http_status(&members[alone], "/readyz") == Some(503)
    });
    let took = cut_off.elapsed();
    let bound = consensus::RaftSettings::default().leader_contact_stale_after();
    // The last heartbeat arrived at most one interval (100 ms) before the
    // first kill, so the member may turn unready that much before `bound`
    // after it.
    assert!(
        took + Duration::from_millis(200) >= bound,
        "unready after only {took:?}: the bound is {bound:?} (3 election timeouts)"
    );
    let status = status(&members[alone]).expect("status");
    assert_eq!(status["cluster"]["ready"], false, "{status}");
    assert!(
        status["cluster"]["leader_contact_age_ms"].as_u64()
            >= Some(u64::try_from(bound.as_millis()).unwrap_or(u64::MAX)),
        "{status}"
    );
    assert_eq!(http_status(&members[alone], "/healthz"), Some(200));
    assert!(
        served_generation(&members[alone]).is_some(),
        "the router keeps serving its last split"
    );
    // A leader returns: the member is ready again.
    members[0].start(&home, None);
    members[1].start(&home, None);
    eventually("the member to be ready again", || {
        http_status(&members[alone], "/readyz") == Some(200)
    });
}

fn http_status(member: &Member, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect_timeout(&member.admin, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).ok()?;
    String::from_utf8_lossy(&answer)
        .split(' ')
        .nth(1)?
        .parse()
        .ok()
}

#[test]
fn a_member_whose_replica_fails_under_it_stops_and_says_why_while_the_others_go_on() {
    // Proves: when a member's Raft core stops on a storage error (here
    // n3's replica cannot append to its audit log: the file was replaced by
    // a directory under the running node), the node does not linger as a
    // member that answers /healthz but takes no part in the cluster: it
    // stops, exits 1 and says why, so a supervisor starts it again; the two
    // others keep accepting writes. Started again once the fault is gone,
    // it catches up.
    let temp = tempfile::tempdir().expect("temp");
    let _reaper = Reaper(temp.path().to_owned());
    let (home, mut members) = three_members(temp.path(), false);
    let region = |region: &str| serde_json::json!({"environment_id": "local", "region": region});
    op(&home, &members[0], "env", "update", region("eu-1"));
    let audit = members[2]
        .store()
        .join("local")
        .join("audit")
        .join("events.jsonl");
    eventually("n3 to apply the first change", || {
        std::fs::read_to_string(&audit).is_ok_and(|text| text.contains("eu-1"))
    });
    let kept = audit.with_extension("jsonl.kept");
    std::fs::rename(&audit, &kept).expect("move n3's audit log aside");
    std::fs::create_dir(&audit).expect("a directory where n3's audit log was");

    op(&home, &members[0], "env", "update", region("eu-2"));
    let child = members[2].child.as_mut().expect("n3 runs");
    let mut exited = None;
    eventually("n3 to stop after its replica failed", || {
        exited = child.try_wait().expect("wait");
        exited.is_some()
    });
    assert_eq!(exited.and_then(|status| status.code()), Some(1));
    let log = log_tail(&members[2].dir.join("node.log"), 40);
    assert!(log.contains("Raft core stopped"), "{log}");
    assert!(
        log.contains("events.jsonl"),
        "the failing file is named:\n{log}"
    );

    // The others go on without it.
    op(&home, &members[1], "env", "update", region("eu-3"));

    // The fault gone, n3 starts again and catches up.
    std::fs::remove_dir(&audit).expect("remove the directory");
    std::fs::rename(&kept, &audit).expect("put the audit log back");
    members[2].child = None;
    let seed = members[0].raft;
    members[2].start(&home, Some(seed));
    eventually("n3 to apply what it missed", || {
        std::fs::read_to_string(&audit).is_ok_and(|text| text.contains("eu-3"))
    });
}
