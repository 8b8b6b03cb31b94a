//! The local store end to end: commit protocol, concurrency, backups,
//! audit chain and crash recovery markers.

mod common;

use common::*;
use deploy::ids::{BackupId, EnvId};
use store::{EnvironmentStore, LocalFsStore, SubmitError};

#[test]
fn init_then_updates_persist_audit_and_back_up() {
    // Proves: each change is durable, audited in a verifiable chain anchored
    // by the state, and preceded by a pre-change copy.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LocalFsStore::open(dir.path()).expect("open");
    store.submit(&envelope(init())).expect("init");
    for n in 0..3 {
        store
            .submit(&envelope(set_region(&format!("r{n}"), None)))
            .expect("update");
    }
    let state = store.load(&EnvId::local()).expect("load").expect("exists");
    assert_eq!(state.generation, 4);
    assert_eq!(state.environment.host_config.region.as_deref(), Some("r2"));
    let (report, anchored) = store.verify_audit(&EnvId::local()).expect("verify");
    assert_eq!(
        (report.events, report.chain.as_str(), anchored),
        (4, "ok", true)
    );
    let backups = std::fs::read_dir(dir.path().join("local/backups"))
        .expect("backups")
        .count();
    assert_eq!(backups, 3);
    // Untouched init writes nothing, not even an audit line.
    store.submit(&envelope(init())).expect("init again");
    assert_eq!(store.audit_lines(&EnvId::local()).expect("lines").len(), 4);
}

#[test]
fn concurrent_writers_never_lose_an_update() {
    // Proves: the per-environment lock serializes writers from separate
    // handles (as separate processes would be), so no update is lost.
    let dir = tempfile::tempdir().expect("tempdir");
    LocalFsStore::open(dir.path())
        .expect("open")
        .submit(&envelope(init()))
        .expect("init");
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let root = dir.path().to_owned();
            std::thread::spawn(move || {
                let store = LocalFsStore::open(root).expect("open");
                for n in 0..15 {
                    let key = format!("w{writer}-{n}");
                    store
                        .submit(&envelope(set_region(&key, Some(key.clone()))))
                        .expect("update");
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().expect("writer thread");
    }
    let store = LocalFsStore::open(dir.path()).expect("open");
    let state = store.load(&EnvId::local()).expect("load").expect("exists");
    assert_eq!(state.generation, 1 + 4 * 15);
    // Every writer's key is recorded, beside the state and not in it.
    assert!(state.legacy_idempotency.is_empty());
    for writer in 0..4 {
        for n in 0..15 {
            let key = format!("w{writer}-{n}");
            assert!(
                store
                    .idempotency_record(&EnvId::local(), &key)
                    .expect("lookup")
                    .is_some(),
                "{key} has no record"
            );
        }
    }
    let (report, anchored) = store.verify_audit(&EnvId::local()).expect("verify");
    assert_eq!(
        (report.events, report.chain.as_str(), anchored),
        (61, "ok", true)
    );
}

#[test]
fn refusals_are_audited_and_change_nothing() {
    // Proves: a refused command leaves environment.json byte-for-byte as it
    // was and appends one error event.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LocalFsStore::open(dir.path()).expect("open");
    store.submit(&envelope(init())).expect("init");
    store
        .submit(&envelope(set_region("a", Some("k".into()))))
        .expect("update");
    let before = std::fs::read(dir.path().join("local/environment.json")).expect("read");
    let refused = store.submit(&envelope(set_region("b", Some("k".into()))));
    assert!(matches!(refused, Err(SubmitError::Refused(_))));
    let after = std::fs::read(dir.path().join("local/environment.json")).expect("read");
    assert_eq!(before, after);
    let lines = store.audit_lines(&EnvId::local()).expect("lines");
    assert_eq!(lines.len(), 3);
    assert!(lines[2].contains("idempotency-conflict"));
    // A command for a missing environment goes to the root audit log.
    let missing = deploy::command::Command::EnvDestroy(deploy::command::EnvTargetAnswers {
        environment_id: "ghost".parse().expect("env"),
    });
    assert!(matches!(
        store.submit(&envelope(missing)),
        Err(SubmitError::Refused(_))
    ));
    assert_eq!(store.root_audit_log().lines().expect("lines").len(), 1);
    assert_eq!(store.list().expect("list"), vec![EnvId::local()]);
}

#[test]
fn backups_verify_and_tampering_is_caught() {
    // Proves: a backup round-trips through restore, and a modified backup
    // file fails its integrity check.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LocalFsStore::open(dir.path()).expect("open");
    store.submit(&envelope(init())).expect("init");
    store
        .submit(&envelope(set_region("before", None)))
        .expect("update");
    let backup_id = BackupId::from_ulid(ulid::Ulid::new());
    let manifest = store
        .backup(&EnvId::local(), backup_id, chrono::Utc::now())
        .expect("backup");
    assert_eq!(manifest.generation, 2);
    store
        .submit(&envelope(set_region("after", None)))
        .expect("update");
    let artifact = store
        .load_backup(&EnvId::local(), backup_id)
        .expect("load backup");
    let restore = deploy::command::Command::EnvRestore {
        answers: deploy::command::EnvRestoreAnswers {
            environment_id: EnvId::local(),
            backup_id,
            expected_generation: 3,
        },
        snapshot: Box::new(artifact.snapshot),
    };
    store.submit(&envelope(restore)).expect("restore");
    let state = store.load(&EnvId::local()).expect("load").expect("exists");
    assert_eq!(
        state.environment.host_config.region.as_deref(),
        Some("before")
    );
    assert_eq!(
        state.generation, 4,
        "generations keep moving forward after a restore"
    );

    let path = dir
        .path()
        .join(format!("local/backups/{backup_id}.backup.json"));
    let text = std::fs::read_to_string(&path).expect("read");
    std::fs::write(&path, text.replace("\"before\"", "\"evil\"")).expect("tamper");
    let error = store
        .load_backup(&EnvId::local(), backup_id)
        .expect_err("tampered");
    assert_eq!(error.kind(), deploy::error::ErrorKind::IntegrityMismatch);
}

#[test]
fn an_audited_but_uncommitted_change_gets_an_aborted_marker() {
    // Proves: after a crash between the audit append and the state write,
    // the next change records that the audited change never happened.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LocalFsStore::open(dir.path()).expect("open");
    store.submit(&envelope(init())).expect("init");
    let state_path = dir.path().join("local/environment.json");
    let before = std::fs::read(&state_path).expect("read");
    store
        .submit(&envelope(set_region("lost", None)))
        .expect("update");
    // Simulate the crash: put the old state back, keep the audit line.
    std::fs::write(&state_path, before).expect("rewind");
    store
        .submit(&envelope(set_region("next", None)))
        .expect("update");
    let lines = store.audit_lines(&EnvId::local()).expect("lines");
    assert_eq!(lines.len(), 4);
    assert!(lines[2].contains("\"aborted\""), "{}", lines[2]);
    let (report, _) = store.verify_audit(&EnvId::local()).expect("verify");
    assert_eq!(report.chain, "ok");
}

#[test]
fn a_recorded_event_after_a_crash_is_preceded_by_the_aborted_marker() {
    // Proves: events appended outside `submit` (denials, not-yet-implemented
    // verbs) take the environment lock and reconcile first, so the marker
    // for an uncommitted change always directly follows it.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LocalFsStore::open(dir.path()).expect("open");
    store.submit(&envelope(init())).expect("init");
    let state_path = dir.path().join("local/environment.json");
    let before = std::fs::read(&state_path).expect("read");
    store
        .submit(&envelope(set_region("lost", None)))
        .expect("update");
    std::fs::write(&state_path, before).expect("rewind");
    let lines = store.audit_lines(&EnvId::local()).expect("lines");
    let mut event: deploy::audit::AuditEvent = serde_json::from_str(&lines[0]).expect("event");
    event.event_id = deploy::ids::EventId::from_ulid(ulid::Ulid::new());
    event.verb = "put".into();
    event.new_generation = None;
    store.record(event).expect("record");
    let lines = store.audit_lines(&EnvId::local()).expect("lines");
    assert_eq!(lines.len(), 4);
    assert!(lines[2].contains("\"aborted\""), "{}", lines[2]);
    assert!(lines[3].contains("\"verb\":\"put\""), "{}", lines[3]);
}

#[test]
fn every_audit_write_failure_reports_kind_audit() {
    // Issue 20's class: whichever way an event is written (a change
    // through `submit`, an edge event through `record`, the root log), an
    // audit log that cannot be written is reported as kind `audit` (the
    // spec's kind), never as a plain `io` failure.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LocalFsStore::open(dir.path()).expect("open");
    store.submit(&envelope(init())).expect("init");
    let lines = store.audit_lines(&EnvId::local()).expect("lines");
    let event: deploy::audit::AuditEvent = serde_json::from_str(&lines[0]).expect("event");
    // A folder where the log should be: it cannot be opened for writing.
    let log = dir.path().join("local/audit/events.jsonl");
    std::fs::remove_file(&log).expect("remove log");
    std::fs::create_dir(&log).expect("folder in its place");
    let submitted = store
        .submit(&envelope(set_region("x", None)))
        .expect_err("unwritable log");
    assert_eq!(
        submitted.kind(),
        deploy::error::ErrorKind::Audit,
        "{submitted}"
    );
    let mut edge = event.clone();
    edge.event_id = deploy::ids::EventId::from_ulid(ulid::Ulid::new());
    let recorded = store.record(edge).expect_err("unwritable log");
    assert_eq!(
        recorded.kind(),
        deploy::error::ErrorKind::Audit,
        "{recorded}"
    );
    assert!(recorded.to_string().contains("events.jsonl"), "{recorded}");
    // The root log, for events about environments that do not exist.
    let root_log = store.root_audit_log().path().to_owned();
    std::fs::create_dir_all(&root_log).expect("folder in its place");
    let mut ghost = event;
    ghost.event_id = deploy::ids::EventId::from_ulid(ulid::Ulid::new());
    ghost.env_id = "ghost".into();
    let recorded = store.record(ghost).expect_err("unwritable root log");
    assert_eq!(
        recorded.kind(),
        deploy::error::ErrorKind::Audit,
        "{recorded}"
    );
}

fn keyed(command: deploy::command::Command, key: &str) -> deploy::command::CommandEnvelope {
    let mut envelope = envelope(command);
    envelope.idempotency_key = Some(key.to_owned());
    envelope
}

#[test]
fn a_record_of_a_change_that_never_committed_never_replays() {
    // Proves: a record written for a change whose state write never
    // happened (the process died between the two) is not taken for a
    // committed one, even once another change reaches its generation.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LocalFsStore::open(dir.path()).expect("open");
    store.submit(&envelope(init())).expect("init");
    let env_dir = dir.path().join("local");
    let before = std::fs::read(env_dir.join("environment.json")).expect("state");
    let first = store
        .submit(&keyed(set_region("eu", None), "the-key"))
        .expect("keyed change");
    assert_eq!(first.generation, Some(2));
    // The crash: the record and the audit event are on disk, the state is
    // as it was before the change.
    std::fs::write(env_dir.join("environment.json"), &before).expect("rewind");
    assert_eq!(
        store
            .idempotency_record(&EnvId::local(), "the-key")
            .expect("lookup"),
        None,
        "a record above the committed generation answers nothing"
    );
    // Another change commits generation 2.
    store
        .submit(&envelope(set_region("us", None)))
        .expect("other change");
    assert_eq!(
        store
            .idempotency_record(&EnvId::local(), "the-key")
            .expect("lookup"),
        None,
        "the uncommitted record was forgotten before its generation committed"
    );
    // The client's retry is applied, not answered from a change that never
    // happened.
    let retry = store
        .submit(&keyed(set_region("eu", None), "the-key"))
        .expect("retry");
    assert!(!retry.applied.replayed);
    assert_eq!(retry.generation, Some(3));
    let state = store.load(&EnvId::local()).expect("load").expect("exists");
    assert_eq!(state.environment.host_config.region.as_deref(), Some("eu"));
    let (report, _) = store.verify_audit(&EnvId::local()).expect("verify");
    assert_eq!(report.chain, "ok");
}

#[test]
fn a_state_with_its_records_inside_still_replays_and_moves_them_out() {
    // Proves: a state written before the records moved to their own table
    // (an `idempotency` array in environment.json) answers its keys' retries,
    // and its next change moves the records into the table.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LocalFsStore::open(dir.path()).expect("open");
    store.submit(&envelope(init())).expect("init");
    let first = store
        .submit(&keyed(set_region("eu", None), "old-key"))
        .expect("keyed change");
    let record = first.applied.record.clone().expect("record");
    // Rewrite the folder as the older layout had it.
    let env_dir = dir.path().join("local");
    std::fs::remove_dir_all(env_dir.join("idempotency")).expect("drop the table");
    let path = env_dir.join("environment.json");
    let mut document: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("state")).expect("json");
    document["idempotency"] = serde_json::json!([record]);
    std::fs::write(&path, serde_json::to_vec_pretty(&document).expect("bytes")).expect("write");

    assert_eq!(
        store
            .idempotency_record(&EnvId::local(), "old-key")
            .expect("lookup"),
        Some(record.clone())
    );
    let replay = store
        .submit(&keyed(set_region("eu", None), "old-key"))
        .expect("replay");
    assert!(replay.applied.replayed, "answered from the legacy record");
    assert_eq!(replay.applied.result, first.applied.result);

    store
        .submit(&envelope(set_region("us", None)))
        .expect("next change");
    let document: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("state")).expect("json");
    assert!(
        document.get("idempotency").is_none(),
        "the state no longer carries records: {document}"
    );
    assert_eq!(
        store
            .idempotency_record(&EnvId::local(), "old-key")
            .expect("lookup"),
        Some(record),
        "the record moved into the table"
    );
}
