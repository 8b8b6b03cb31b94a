//! Printing results: compact JSON for scripts, tables for people.

use std::io::Write;

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

/// Prints a success report on stdout.
pub fn print_report(report: &Report, format: OutputFormat) {
    let mut stdout = std::io::stdout().lock();
    let _ = match format {
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
            writeln!(stdout, "{document}")
        }
        OutputFormat::Table => writeln!(stdout, "{}", render(&report.result)),
    };
}

/// Prints an error on stderr.
pub fn print_error(noun: &str, verb: &str, error: &CliError, format: OutputFormat) {
    let mut stderr = std::io::stderr().lock();
    let _ = match format {
        OutputFormat::Json => writeln!(
            stderr,
            "{}",
            json!({"op": verb, "noun": noun, "error": error.to_json()})
        ),
        OutputFormat::Table => {
            let field = error
                .field
                .as_deref()
                .map(|f| format!(" [{f}]"))
                .unwrap_or_default();
            writeln!(stderr, "error ({}){field}: {}", error.kind, error.message)
        }
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_and_fill_gaps() {
        let text = render(&json!([{"a": "x", "b": 1}, {"a": "long", "c": true}]));
        assert_eq!(text, "A     B  C\nx     1  -\nlong  -  true");
    }
}
