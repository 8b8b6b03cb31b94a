//! Printing results: compact JSON for scripts, tables for people.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};

use crate::cli::OutputFormat;
use crate::error::CliError;

/// What a verb produced.
pub struct Report {
    pub noun: &'static str,
    pub verb: &'static str,
    pub result: Value,
    pub generation: Option<u64>,
    pub idempotency: Option<&'static str>,
    /// Non-zero when the report itself describes a problem (`env doctor`).
    pub exit_code: i32,
    /// `node` when a running node applied the command.
    pub via: Option<&'static str>,
}

impl Report {
    pub fn new(noun: &'static str, verb: &'static str, result: Value) -> Self {
        Self {
            noun,
            verb,
            result,
            generation: None,
            idempotency: None,
            exit_code: 0,
            via: None,
        }
    }
}

/// Exit code of a verb whose output could not be written because its
/// reader went away (`gtc … | head -1`): what a shell reports for a
/// program ended by SIGPIPE (128 + 13). Rust ignores SIGPIPE, so without
/// this a closed pipe would surface as a write error or a panic.
pub const EXIT_OUTPUT_CLOSED: i32 = 141;

/// Set when stdout was found closed; nothing more is written to it.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);
/// Set when stdout failed otherwise (a full disk); the verb then fails.
static STDOUT_FAILED: AtomicBool = AtomicBool::new(false);

/// Writes `bytes` to stdout. Every byte the binary prints on stdout goes
/// through here, so no command panics when its output is closed early:
/// a closed pipe ends the output quietly (the verb still finishes, so
/// nothing is left half-done) and [`exit_code`] reports it.
pub fn write_stdout(bytes: &[u8]) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {
            STDOUT_CLOSED.store(true, Ordering::Relaxed);
        }
        Err(error) => {
            STDOUT_CLOSED.store(true, Ordering::Relaxed);
            STDOUT_FAILED.store(true, Ordering::Relaxed);
            write_stderr(format!("error: cannot write the output: {error}\n").as_bytes());
        }
    }
}

/// Writes `bytes` to stderr, ignoring failure: a closed stderr has no
/// one left to tell.
pub fn write_stderr(bytes: &[u8]) {
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(bytes).and_then(|()| stderr.flush());
}

/// `println!` that never panics; see [`write_stdout`].
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format!("{}\n", format_args!($($arg)*)).as_bytes())
    };
}
pub(crate) use outln;

/// `eprintln!` that never panics; see [`write_stderr`].
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::output::write_stderr(format!("{}\n", format_args!($($arg)*)).as_bytes())
    };
}
pub(crate) use errln;

/// The process's exit code once the verb returned `code`: a verb that
/// succeeded but whose output was lost does not claim success.
pub fn exit_code(code: i32) -> i32 {
    if code != 0 {
        code
    } else if STDOUT_FAILED.load(Ordering::Relaxed) {
        crate::error::EXIT_FAILURE
    } else if STDOUT_CLOSED.load(Ordering::Relaxed) {
        EXIT_OUTPUT_CLOSED
    } else {
        0
    }
}

/// Prints a success report on stdout.
pub fn print_report(report: &Report, format: OutputFormat) {
    let text = match format {
        OutputFormat::Json => {
            let mut document =
                json!({"op": report.verb, "noun": report.noun, "result": report.result});
            if let Some(generation) = report.generation {
                document["generation"] = json!(generation);
            }
            if let Some(idempotency) = report.idempotency {
                document["idempotency"] = json!(idempotency);
            }
            if let Some(via) = report.via {
                document["via"] = json!(via);
            }
            format!("{document}\n")
        }
        OutputFormat::Table => format!("{}\n", render(&report.result)),
    };
    write_stdout(text.as_bytes());
}

/// Prints an error on stderr.
pub fn print_error(noun: &str, verb: &str, error: &CliError, format: OutputFormat) {
    match format {
        OutputFormat::Json => errln!(
            "{}",
            json!({"op": verb, "noun": noun, "error": error.to_json()})
        ),
        OutputFormat::Table => {
            let field = error
                .field
                .as_deref()
                .map(|f| format!(" [{f}]"))
                .unwrap_or_default();
            errln!("error ({}){field}: {}", error.kind, error.message)
        }
    }
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

/// Renders JSON for people: arrays of objects as aligned tables, objects as
/// `key: value` lines.
pub fn render(value: &Value) -> String {
    match value {
        Value::Array(rows) if rows.iter().all(Value::is_object) && !rows.is_empty() => table(rows),
        Value::Array(rows) if rows.is_empty() => "(none)".to_owned(),
        Value::Object(map) => map
            .iter()
            .map(|(key, value)| match value {
                Value::Array(rows) if rows.iter().all(Value::is_object) && !rows.is_empty() => {
                    format!("{key}:\n{}", indent(&table(rows)))
                }
                Value::Object(_) => format!("{key}:\n{}", indent(&render(value))),
                other => format!("{key}: {}", scalar(other)),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        other => scalar(other),
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|line| format!("  {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn table(rows: &[Value]) -> String {
    let mut columns: Vec<String> = Vec::new();
    for row in rows {
        if let Some(map) = row.as_object() {
            for key in map.keys() {
                if !columns.contains(key) {
                    columns.push(key.clone());
                }
            }
        }
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            columns
                .iter()
                .map(|c| scalar(row.get(c).unwrap_or(&Value::Null)))
                .collect()
        })
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |values: Vec<String>| {
        values
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = vec![line(columns.iter().map(|c| c.to_uppercase()).collect())];
    out.extend(cells.into_iter().map(line));
    out.join("\n")
}

/// A `{environment_id, …}` view for list outputs.
pub fn listing(env: &deploy::ids::EnvId, key: &str, items: serde_json::Value) -> serde_json::Value {
    json!({"environment_id": env, key: items})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_and_fill_gaps() {
        let text = render(&json!([{"a": "x", "b": 1}, {"a": "long", "c": true}]));
        assert_eq!(text, "A     B  C\nx     1  -\nlong  -  true");
    }
}
