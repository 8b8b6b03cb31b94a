//! The append-only, hash-chained audit log: one compact JSON line per event.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use deploy::audit::{AuditEvent, GENESIS_HASH, line_hash, verify_chain};
use deploy::canonical::{sha256_hex, to_canonical_json};
use serde::Serialize;

use crate::error::StoreError;

/// Largest audit line we write. A larger payload is replaced in the event by
/// its digest, so one enormous request cannot bloat every later read.
pub const AUDIT_LINE_BYTES_MAX: usize = 64 * 1024;

/// First window read from the end of the log to find the last line; doubled
/// until the line fits.
const TAIL_WINDOW_BYTES: u64 = 16 * 1024;

/// The buffer `count` reads the log through.
const COUNT_BUFFER_BYTES: usize = 64 * 1024;

/// Where an appended event sits in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The chain hash of the new line (what the next event carries).
    pub hash: String,
    /// The `prev_hash` the event was written with.
    pub prev_hash: String,
}

/// One environment's (or the store root's) audit log.
#[derive(Debug, Clone)]
pub struct AuditLog {
    path: PathBuf,
}

/// What `env doctor` says about a log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditReport {
    pub path: PathBuf,
    pub events: usize,
    /// `ok`, or why the chain is broken.
    pub chain: String,
    /// Hash of the last event.
    pub head: String,
    /// True when the last line was cut short by a crash (it is dropped on
    /// the next append; its change was never committed).
    pub torn_tail: bool,
}

/// An I/O failure on the audit log. Every failure of the log, reading or
/// writing, is a [`StoreError::Audit`] (kind `audit`, the spec's kind), so
/// a caller learns that the audit log, not the state, failed.
fn audit_io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_owned();
    move |source| StoreError::Audit {
        path,
        reason: format!("cannot {action}: {source}"),
    }
}

impl AuditLog {
    /// The log at `path` (created on first append).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Where the log lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `event` after the current last line, fsyncs, and returns the
    /// event's chain hash and the `prev_hash` it was written with. A torn last line (a crash mid-append) is cut off
    /// first: its change was never committed, because events are written
    /// before the state they describe.
    pub fn append(&self, mut event: AuditEvent) -> Result<Appended, StoreError> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(audit_io("create audit folder", dir))?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&self.path)
            .map_err(audit_io("open audit log", &self.path))?;
        file.lock()
            .map_err(audit_io("lock audit log", &self.path))?;
        let (last, valid_len) = self.read_tail(&mut file)?;
        let length = file.metadata().map_err(audit_io("stat", &self.path))?.len();
        if valid_len < length {
            file.set_len(valid_len)
                .map_err(audit_io("cut torn tail of", &self.path))?;
        }
        event.prev_hash = match &last {
            Some(line) => line_hash(line).map_err(|error| self.corrupt(error.to_string()))?,
            None => GENESIS_HASH.to_owned(),
        };
        let mut line = serde_json::to_string(&event).map_err(|e| self.corrupt(e.to_string()))?;
        if line.len() > AUDIT_LINE_BYTES_MAX {
            let digest = sha256_hex(to_canonical_json(&event.target).as_bytes());
            event.target = serde_json::json!({"truncated": true, "sha256": digest});
            line = serde_json::to_string(&event).map_err(|e| self.corrupt(e.to_string()))?;
        }
        let hash = line_hash(&line).map_err(|e| self.corrupt(e.to_string()))?;
        line.push('\n');
        file.seek(SeekFrom::End(0))
            .map_err(audit_io("seek", &self.path))?;
        file.write_all(line.as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(audit_io("append to", &self.path))?;
        Ok(Appended {
            hash,
            prev_hash: event.prev_hash,
        })
    }

    fn corrupt(&self, reason: String) -> StoreError {
        StoreError::Audit {
            path: self.path.clone(),
            reason,
        }
    }

    /// The last complete line and the length of the log without a torn tail.
    fn read_tail(&self, file: &mut File) -> Result<(Option<String>, u64), StoreError> {
        let length = file.metadata().map_err(audit_io("stat", &self.path))?.len();
        let mut window = TAIL_WINDOW_BYTES;
        loop {
            let start = length.saturating_sub(window);
            let mut buffer = Vec::new();
            file.seek(SeekFrom::Start(start))
                .map_err(audit_io("seek", &self.path))?;
            Read::by_ref(file)
                .take(length - start)
                .read_to_end(&mut buffer)
                .map_err(audit_io("read", &self.path))?;
            // Complete data ends after the last newline.
            let complete_end = match buffer.iter().rposition(|b| *b == b'\n') {
                Some(position) => position + 1,
                None if start == 0 => return Ok((None, 0)),
                None => {
                    window = window.saturating_mul(2);
                    continue;
                }
            };
            let valid_len = start + complete_end as u64;
            let body = &buffer[..complete_end - 1];
            match body.iter().rposition(|b| *b == b'\n') {
                Some(position) => {
                    let line = String::from_utf8_lossy(&body[position + 1..]).into_owned();
                    return Ok((Some(line), valid_len));
                }
                None if start == 0 => {
                    let line = String::from_utf8_lossy(body).into_owned();
                    return Ok((Some(line), valid_len));
                }
                None => window = window.saturating_mul(2),
            }
        }
    }

    /// Every complete line, oldest first; a torn last line is left out.
    pub fn lines(&self) -> Result<Vec<String>, StoreError> {
        let text = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(audit_io("read", &self.path)(error)),
        };
        let complete = match text.iter().rposition(|b| *b == b'\n') {
            Some(position) => &text[..position],
            None => return Ok(Vec::new()),
        };
        Ok(String::from_utf8_lossy(complete)
            .lines()
            .map(str::to_owned)
            .collect())
    }

    /// The last `limit` complete lines, oldest first; a torn last line is
    /// left out. Reads from the end of the file, a window that doubles until
    /// it holds `limit` lines, so a long log costs what its tail costs.
    pub fn tail(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut file = match File::open(&self.path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(audit_io("open", &self.path)(error)),
        };
        let length = file.metadata().map_err(audit_io("stat", &self.path))?.len();
        let mut window = TAIL_WINDOW_BYTES;
        loop {
            let start = length.saturating_sub(window);
            let mut buffer = Vec::new();
            file.seek(SeekFrom::Start(start))
                .map_err(audit_io("seek", &self.path))?;
            Read::by_ref(&mut file)
                .take(length - start)
                .read_to_end(&mut buffer)
                .map_err(audit_io("read", &self.path))?;
            let complete_end = buffer.iter().rposition(|b| *b == b'\n');
            let mut lines: Vec<&[u8]> = match complete_end {
                Some(end) => buffer[..end].split(|b| *b == b'\n').collect(),
                None => Vec::new(),
            };
            // The first piece of a window that starts mid-file may be the
            // end of a longer line: it is not a line of its own.
            if start > 0 && !lines.is_empty() {
                lines.remove(0);
            }
            if lines.len() >= limit || start == 0 {
                let skip = lines.len().saturating_sub(limit);
                return Ok(lines[skip..]
                    .iter()
                    .map(|line| String::from_utf8_lossy(line).into_owned())
                    .collect());
            }
            window = window.saturating_mul(2);
        }
    }

    /// How many complete lines the log holds, counted in a fixed-size buffer
    /// (the lines are not kept).
    pub fn count(&self) -> Result<usize, StoreError> {
        let mut file = match File::open(&self.path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(error) => return Err(audit_io("open", &self.path)(error)),
        };
        let mut buffer = vec![0u8; COUNT_BUFFER_BYTES];
        let mut count = 0;
        loop {
            let read = file
                .read(&mut buffer)
                .map_err(audit_io("read", &self.path))?;
            if read == 0 {
                return Ok(count);
            }
            count += buffer[..read].iter().filter(|b| **b == b'\n').count();
        }
    }

    /// The last complete event, if any.
    pub fn last_event(&self) -> Result<Option<AuditEvent>, StoreError> {
        let Ok(mut file) = File::open(&self.path) else {
            return Ok(None);
        };
        let (last, _) = self.read_tail(&mut file)?;
        last.map(|line| serde_json::from_str(&line).map_err(|e| self.corrupt(e.to_string())))
            .transpose()
    }

    /// Verifies the whole chain.
    pub fn verify(&self) -> Result<AuditReport, StoreError> {
        let lines = self.lines()?;
        let length = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        let complete: u64 = lines.iter().map(|l| l.len() as u64 + 1).sum();
        let (chain, head) = match verify_chain(lines.iter().map(String::as_str)) {
            Ok(head) => ("ok".to_owned(), head),
            Err(error) => (error.to_string(), String::new()),
        };
        Ok(AuditReport {
            path: self.path.clone(),
            events: lines.len(),
            chain,
            head,
            torn_tail: complete < length,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deploy::audit::{Actor, AuditResult, Authorization, Decision};
    use deploy::ids::EventId;

    fn event(n: u128) -> AuditEvent {
        AuditEvent {
            schema: deploy::audit::AUDIT_SCHEMA.into(),
            event_id: EventId::from_ulid(ulid::Ulid::from_parts(1, n)),
            ts: chrono::DateTime::UNIX_EPOCH,
            actor: Actor::local_user(None, None),
            env_id: "local".into(),
            noun: "env".into(),
            verb: "update".into(),
            target: serde_json::json!({"n": n as u64, "pad": "x".repeat((n as usize * 997) % 40_000)}),
            previous_generation: None,
            new_generation: None,
            idempotency_key: None,
            replayed: false,
            authorization: Authorization {
                decision: Decision::Allow,
                policy: "p".into(),
                reason: "r".into(),
            },
            result: AuditResult::Ok,
            prev_hash: String::new(),
            signed_by: None,
        }
    }

    #[test]
    fn appends_chain_and_verify_including_lines_longer_than_the_tail_window() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = AuditLog::new(dir.path().join("audit/events.jsonl"));
        for n in 0..40 {
            log.append(event(n)).expect("append");
        }
        let report = log.verify().expect("verify");
        assert_eq!(report.events, 40);
        assert_eq!(report.chain, "ok");
        assert!(!report.torn_tail);
    }

    #[test]
    fn a_torn_tail_is_reported_and_cut_on_the_next_append() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = AuditLog::new(dir.path().join("events.jsonl"));
        log.append(event(1)).expect("append");
        let mut file = OpenOptions::new()
            .append(true)
            .open(log.path())
            .expect("open");
        file.write_all(b"{\"schema\":\"greentic.au")
            .expect("torn write");
        drop(file);
        assert!(log.verify().expect("verify").torn_tail);
        assert_eq!(log.lines().expect("lines").len(), 1);
        log.append(event(2)).expect("append after torn tail");
        let report = log.verify().expect("verify");
        assert_eq!(
            (report.events, report.chain.as_str(), report.torn_tail),
            (2, "ok", false)
        );
    }

    #[test]
    fn an_oversized_target_is_replaced_by_its_digest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = AuditLog::new(dir.path().join("events.jsonl"));
        let mut big = event(1);
        big.target = serde_json::json!({"blob": "y".repeat(AUDIT_LINE_BYTES_MAX * 2)});
        log.append(big).expect("append");
        let last = log.last_event().expect("read").expect("event");
        assert_eq!(last.target["truncated"], true);
        assert!(log.lines().expect("lines")[0].len() < AUDIT_LINE_BYTES_MAX);
    }

    #[test]
    fn the_tail_is_the_last_lines_of_the_whole_log_whatever_their_length() {
        // Proves: `tail(n)` equals the last n of `lines()` for every n, with
        // lines both shorter and longer than the first read window, and
        // `count` equals the number of lines.
        let dir = tempfile::tempdir().expect("tempdir");
        let log = AuditLog::new(dir.path().join("events.jsonl"));
        assert!(log.tail(5).expect("tail of nothing").is_empty());
        assert_eq!(log.count().expect("count of nothing"), 0);
        for n in 0..60 {
            log.append(event(n)).expect("append");
        }
        let all = log.lines().expect("lines");
        assert_eq!(log.count().expect("count"), all.len());
        for limit in [0, 1, 2, 3, 17, 59, 60, 61, 1000] {
            let expected = &all[all.len().saturating_sub(limit)..];
            assert_eq!(log.tail(limit).expect("tail"), expected, "limit {limit}");
        }
    }

    #[test]
    fn the_tail_leaves_out_a_torn_last_line() {
        // Proves: a line cut short by a crash is not returned by `tail` (as
        // by `lines`), nor counted.
        let dir = tempfile::tempdir().expect("tempdir");
        let log = AuditLog::new(dir.path().join("events.jsonl"));
        log.append(event(1)).expect("append");
        log.append(event(2)).expect("append");
        let mut file = OpenOptions::new()
            .append(true)
            .open(log.path())
            .expect("open");
        file.write_all(b"{\"schema\":\"greentic.au")
            .expect("torn write");
        drop(file);
        assert_eq!(log.tail(1).expect("tail"), log.lines().expect("lines")[1..]);
        assert_eq!(log.tail(10).expect("tail").len(), 2);
        assert_eq!(log.count().expect("count"), 2);
    }
}
