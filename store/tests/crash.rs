//! SIGKILL in the middle of a stream of mutations, repeatedly.
//!
//! The test re-runs its own binary as a worker (`GTC_CRASH_WORKER=<dir>`)
//! that adds bundle deployments `b0, b1, …` one per command and prints
//! `ack <n>` after each acknowledged change. The parent kills the worker at
//! a random moment, then checks that the store loads, validates, verifies
//! its audit chain, and holds exactly a prefix `b0..bk` that includes every
//! acknowledged change. Each change carries an idempotency key; the parent
//! also checks that exactly the stored changes have records, before and
//! after a change of its own moves the environment past a killed write.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use deploy::ids::EnvId;
use store::{EnvironmentStore, LocalFsStore};

const WORKER_VAR: &str = "GTC_CRASH_WORKER";
/// Kill cycles; each kills one worker mid-stream.
const CYCLES: u64 = 25;
/// Upper bound on changes per worker, so a slow kill still ends.
const CHANGES_PER_WORKER_MAX: usize = 400;

fn key(index: usize) -> String {
    format!("add-b{index}")
}

/// Exactly the stored changes have records: the last few stored ones do,
/// the one a kill may have interrupted does not.
fn records_match(store: &LocalFsStore, stored: usize, cycle: u64) {
    let recorded = |index: usize| {
        store
            .idempotency_record(&EnvId::local(), &key(index))
            .expect("the table reads")
            .is_some()
    };
    for index in stored.saturating_sub(3)..stored {
        assert!(
            recorded(index),
            "cycle {cycle}: stored change b{index} has no record"
        );
    }
    assert!(
        !recorded(stored),
        "cycle {cycle}: change b{stored} is not stored but has a record"
    );
}

fn bundle_count(store: &LocalFsStore) -> usize {
    store
        .load(&EnvId::local())
        .expect("state loads and validates")
        .map_or(0, |state| state.environment.bundles.len())
}

/// A keyless change that always changes something.
fn init_region(cycle: u64) -> deploy::command::Command {
    set_region(&format!("r{cycle}"), None)
}

#[test]
fn crash_worker() {
    // Not a test on its own: the body of the worker process.
    let Ok(root) = std::env::var(WORKER_VAR) else {
        return;
    };
    let store = LocalFsStore::open(root).expect("open");
    store.submit(&envelope(init())).expect("init");
    let start = bundle_count(&store);
    for index in start..start + CHANGES_PER_WORKER_MAX {
        let mut change = envelope(add_bundle(index));
        change.idempotency_key = Some(key(index));
        store.submit(&change).expect("add bundle");
        println!("ack {index}");
    }
}

#[test]
fn sigkill_mid_stream_never_corrupts_or_loses_acknowledged_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let executable = std::env::current_exe().expect("test binary");
    let mut acknowledged: usize = 0;
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for cycle in 0..CYCLES {
        let mut child = Command::new(&executable)
            .args(["--exact", "crash_worker", "--nocapture", "--test-threads=1"])
            .env(WORKER_VAR, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn worker");
        let stdout = child.stdout.take().expect("stdout");
        let highest = Arc::new(Mutex::new(None::<usize>));
        let reader = {
            let highest = Arc::clone(&highest);
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if let Some(n) = line.strip_prefix("ack ").and_then(|n| n.parse().ok()) {
                        *highest.lock().expect("lock") = Some(n);
                    }
                }
            })
        };
        // xorshift: a deterministic spread of kill moments from 5 to 80 ms
        // after start, including during init and mid-write.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(5 + seed % 76));
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        reader.join().expect("reader");
        if let Some(n) = *highest.lock().expect("lock") {
            acknowledged = acknowledged.max(n + 1);
        }

        let store = LocalFsStore::open(dir.path()).expect("open");
        let Some(state) = store.load(&EnvId::local()).expect("loads and validates") else {
            assert_eq!(
                acknowledged, 0,
                "cycle {cycle}: acknowledged changes but no state"
            );
            continue;
        };
        let names: Vec<String> = state
            .environment
            .bundles
            .iter()
            .map(|b| b.bundle_id.to_string())
            .collect();
        let prefix: Vec<String> = (0..names.len()).map(|i| format!("b{i}")).collect();
        assert_eq!(
            names, prefix,
            "cycle {cycle}: the store holds a prefix of the stream"
        );
        assert!(
            names.len() >= acknowledged,
            "cycle {cycle}: {} changes stored but {acknowledged} were acknowledged",
            names.len()
        );
        records_match(&store, names.len(), cycle);
        // A change without a key takes the generation an interrupted keyed
        // change had claimed; its record must not come back to life.
        store
            .submit(&envelope(init_region(cycle)))
            .expect("a change after the kill");
        records_match(&store, names.len(), cycle);
        let (report, anchored) = store.verify_audit(&EnvId::local()).expect("verify");
        assert_eq!(report.chain, "ok", "cycle {cycle}");
        assert!(anchored, "cycle {cycle}: audit head is in the log");
    }
    eprintln!("{CYCLES} kill cycles, {acknowledged} acknowledged changes survived");
    assert!(
        acknowledged > 0,
        "the workers must have made progress for the test to mean anything"
    );
}
