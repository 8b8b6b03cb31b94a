//! A cluster member whose Raft writes stall keeps publishing what it applies
//! (issue 18: no blocking inside actors).

mod cluster_support;

use std::path::Path;
use std::time::{Duration, Instant};

use cluster_support::*;

/// How long n3's writes are held once its runtime report is stalled.
const STALL: Duration = Duration::from_secs(10);
/// Longest n3's router may take to serve a change n3 has applied. Far
/// below `STALL`: an actor blocked on its write would miss it.
const PUBLISH_WITHIN: Duration = Duration::from_secs(3);
/// Traffic changes committed through n1 while n3's writes stall.
const CHANGES: usize = 4;

/// The test-only stall switch of `consensus::replicated_store`.
const STALL_WRITES_FILE_VAR: &str = "GTC_TEST_STALL_WRITES_FILE";

/// Like `three_members`, with gossip, but n3 runs with the stall switch
/// pointing at `stall_file`.
fn three_members_n3_stallable(root: &Path, stall_file: &Path) -> (std::path::PathBuf, Vec<Member>) {
    three_members_n3_env(root, true, &[(STALL_WRITES_FILE_VAR, stall_file)])
}

/// The generation n3's router serves under, if it answers.
fn served_generation(member: &Member) -> Option<u64> {
    match get(member.router) {
        Some((200, Some(generation), _)) => Some(generation),
        _ => None,
    }
}

#[test]
fn a_member_whose_writes_stall_for_ten_seconds_still_publishes_every_change_it_applies() {
    // Proves: while n3's runtime report is held in a stalled Raft write for
    // 10 s (consensus's test-only stall file), n3 keeps following the state
    // it applies: every traffic change committed through n1 meanwhile is
    // applied by n3 and served by n3's router within 3 s, before the stall
    // ends; and the held report commits once the stall is released.
    let temp = tempfile::tempdir().expect("temp");
    let temp_path = if keep_folder() {
        temp.keep()
    } else {
        temp.path().to_owned()
    };
    let _reaper = Reaper(temp_path.clone());
    let stall_file = temp_path.join("stall-n3");
    let (home, members) = three_members_n3_stallable(&temp_path, &stall_file);
    let (deployment, revisions) = two_ready_revisions(&home, &members);
    let generation = set_split(&home, &members[0], &deployment, &revisions, 50, "before");
    eventually("n3's router to serve the split", || {
        served_generation(&members[2]).is_some_and(|g| g >= generation)
    });
    let reports_from_n3 = || {
        members[0]
            .audit()
            .matches("runtime report from node n3")
            .count()
    };
    let reports_before = reports_from_n3();

    // Hold n3's writes, then give it a revision to warm: a third revision
    // of one instance goes to the member with the fewest instances, n3
    // (placement's spread rule), which alone can report it ready, and that
    // report stalls.
    std::fs::write(&stall_file, b"held by the test").expect("stall file");
    let bundle = example_bundle(&home);
    let third = stage(&home, &members[0], &deployment, &bundle);
    op(
        &home,
        &members[0],
        "revisions",
        "warm",
        serde_json::json!({"environment_id": "local", "revision_id": third}),
    );
    eventually("the third revision to be placed", || {
        !placement(&members[0], &third).is_empty()
    });
    assert_eq!(placement(&members[0], &third), vec!["n3"], "placement");
    let n3_log = members[2].dir.join("node.log");
    eventually("n3's runtime report to stall", || {
        std::fs::read_to_string(&n3_log)
            .unwrap_or_default()
            .contains("write stalled by the test-only stall file")
    });
    let stalled_at = Instant::now();

    // Changes committed through n1 during the stall reach n3's router.
    let mut lags = Vec::new();
    for change in 0..CHANGES {
        let percent = [20, 80, 35, 65][change % 4];
        let key = format!("during-stall-{change}");
        let committed = set_split(&home, &members[0], &deployment, &revisions, percent, &key);
        let began = Instant::now();
        loop {
            let applied = members[2].generation().is_some_and(|g| g >= committed);
            if applied && served_generation(&members[2]).is_some_and(|g| g >= committed) {
                break;
            }
            assert!(
                began.elapsed() < PUBLISH_WITHIN,
                "n3's router did not serve generation {committed} within {PUBLISH_WITHIN:?} \
                 while its writes stalled (applied by n3: {applied})"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        lags.push(began.elapsed());
    }
    assert!(
        stalled_at.elapsed() < STALL,
        "the changes must all be served while the write is still held ({:?})",
        stalled_at.elapsed()
    );
    assert_eq!(
        reports_from_n3(),
        reports_before,
        "n3's report must still be held"
    );
    let lags_ms: Vec<u128> = lags.iter().map(Duration::as_millis).collect();
    println!(
        "n3's router served each change committed during the stall after {lags_ms:?} ms \
         (all within {:?} of the stall's start)",
        stalled_at.elapsed()
    );
    std::thread::sleep(STALL.saturating_sub(stalled_at.elapsed()));

    // Released: the held report commits.
    std::fs::remove_file(&stall_file).expect("release the stall");
    let released_at = Instant::now();
    eventually("n3's held report to commit", || {
        reports_from_n3() > reports_before
    });
    println!(
        "n3's held report committed {} ms after the stall was released",
        released_at.elapsed().as_millis()
    );
}
