//! Reading `--answers` files: JSON, or YAML by extension, into a typed
//! payload, with errors that name the file, the field and the fix.

use std::path::Path;

use deploy::error::ErrorKind;
use serde::de::DeserializeOwned;

use crate::error::CliError;

/// Largest answers file we read. Payloads are small documents; a larger
/// file is a mistake (a bundle passed as answers, say).
pub const ANSWERS_BYTES_MAX: u64 = 1024 * 1024;

fn is_yaml(path: &Path) -> bool {
    matches!(
        path.extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("yaml" | "yml")
    )
}

/// Reads and parses `path` as the payload `T`.
pub fn read_answers<T: DeserializeOwned>(
    path: &Path,
    noun: &str,
    verb: &str,
) -> Result<T, CliError> {
    let hint = format!("print the expected shape with `gtc op {noun} {verb} --schema`");
    let metadata = std::fs::metadata(path).map_err(|error| {
        CliError::new(
            ErrorKind::Io,
            format!("cannot read answers file {}: {error}; pass the path of a JSON or YAML file ({hint})", path.display()),
        )
    })?;
    if !metadata.is_file() {
        return Err(CliError::new(
            ErrorKind::Io,
            format!(
                "answers path {} is not a file; pass a JSON or YAML file",
                path.display()
            ),
        ));
    }
    if metadata.len() > ANSWERS_BYTES_MAX {
        return Err(CliError::new(
            ErrorKind::AnswersParse,
            format!(
                "answers file {} is {} bytes; the limit is {ANSWERS_BYTES_MAX}",
                path.display(),
                metadata.len()
            ),
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|error| {
        CliError::new(
            ErrorKind::Io,
            format!("cannot read answers file {}: {error}", path.display()),
        )
    })?;
    if is_yaml(path) {
        let deserializer = serde_norway::Deserializer::from_str(&text);
        serde_path_to_error::deserialize(deserializer).map_err(|error| {
            let field = error.path().to_string();
            CliError::new(
                ErrorKind::AnswersParse,
                format!(
                    "{}: field `{field}`: {}; {hint}",
                    path.display(),
                    error.inner()
                ),
            )
            .with_field(field)
        })
    } else {
        let mut deserializer = serde_json::Deserializer::from_str(&text);
        let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
            let field = error.path().to_string();
            let inner = error.inner();
            let location = if inner.is_syntax() || inner.is_eof() {
                format!("is not valid JSON ({inner})")
            } else {
                format!("field `{field}`: {inner}")
            };
            CliError::new(
                ErrorKind::AnswersParse,
                format!("{} {location}; {hint}", path.display()),
            )
            .with_field(if inner.is_data() {
                field
            } else {
                String::new()
            })
        })?;
        deserializer.end().map_err(|error| {
            CliError::new(
                ErrorKind::AnswersParse,
                format!(
                    "{} has text after the JSON document ({error})",
                    path.display()
                ),
            )
        })?;
        Ok(value)
    }
}

/// Reads the payload of a mutating verb (`--answers` is required by clap
/// unless `--schema` was given, which `gtc op` handled already).
pub fn from_mutation<T: DeserializeOwned>(
    mutation: &crate::cli::Mutation,
    noun: &str,
    verb: &str,
) -> Result<T, CliError> {
    let path = mutation.answers.as_deref().ok_or_else(|| {
        CliError::invalid(format!(
            "`gtc op {noun} {verb}` needs --answers FILE (see --schema)"
        ))
    })?;
    read_answers(path, noun, verb)
}
