//! Bundle manifests: `bundle-manifest.json` (`gtbundle-v1`), `bundle.yaml`
//! (what the original platform's bundles carry), and our `runtime` section
//! that tells the local-process deployer how to run a bundle.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The manifest file written by the original bundle builder.
pub const MANIFEST_JSON: &str = "bundle-manifest.json";
/// The workspace description the fixture bundles also carry.
pub const BUNDLE_YAML: &str = "bundle.yaml";
/// `format_version` of a `bundle-manifest.json` we understand.
pub const FORMAT_VERSION: &str = "gtbundle-v1";
/// Largest manifest we parse; real ones are a few KiB.
pub const MANIFEST_BYTES_MAX: usize = 1024 * 1024;

/// How the local-process deployer runs the bundle (our addition).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSection {
    /// argv; the program is a path relative to the bundle root
    /// (e.g. `bin/server` or `./start.sh`).
    pub command: Vec<String>,
    /// Extra environment variables for every instance.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The variable that carries the port the instance must listen on.
    #[serde(default = "default_port_env")]
    pub port_env: String,
    /// HTTP path that answers 2xx when the instance is healthy.
    #[serde(default = "default_health_path")]
    pub health_path: String,
    /// How long an instance may take to pass its first health check.
    #[serde(default = "default_startup_timeout")]
    pub startup_timeout_seconds: u32,
    /// Timeout of one health check request.
    #[serde(default = "default_health_timeout")]
    pub health_timeout_ms: u32,
    /// Instances per revision.
    #[serde(default = "default_instances")]
    pub instances: u32,
}

fn default_port_env() -> String {
    "PORT".to_owned()
}
fn default_health_path() -> String {
    "/healthz".to_owned()
}
fn default_startup_timeout() -> u32 {
    30
}
fn default_health_timeout() -> u32 {
    1000
}
fn default_instances() -> u32 {
    1
}

/// Longest startup we wait for: ten minutes covers JVMs and model loads.
pub const STARTUP_TIMEOUT_SECONDS_MAX: u32 = 600;
/// Most instances of one revision on the local-process deployer.
pub const INSTANCES_MAX: u32 = 64;

/// Why a manifest or runtime section was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ManifestError {
    #[error(
        "the bundle has neither {MANIFEST_JSON} nor {BUNDLE_YAML} at its root; add one (see README: bundle format)"
    )]
    Missing,
    #[error("{file} is {bytes} bytes; the limit is {MANIFEST_BYTES_MAX}")]
    TooLarge { file: &'static str, bytes: usize },
    #[error("{file} is not valid: {reason}")]
    Invalid { file: &'static str, reason: String },
    #[error("{MANIFEST_JSON} has format_version {found:?}; this tool reads {FORMAT_VERSION:?}")]
    UnsupportedFormat { found: String },
    #[error("{MANIFEST_JSON} says bundle_id {json:?} but {BUNDLE_YAML} says {yaml:?}")]
    BundleIdMismatch { json: String, yaml: String },
    #[error(
        "{MANIFEST_JSON} and {BUNDLE_YAML} both have a runtime section and they differ; keep one"
    )]
    RuntimeConflict,
    #[error("runtime.{field}: {message}")]
    Runtime { field: String, message: String },
}

/// `bundle-manifest.json`. Unknown fields from newer builders are kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestJson {
    pub format_version: String,
    pub bundle_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle_name: Option<String>,
    #[serde(default)]
    pub app_packs: Vec<String>,
    #[serde(default)]
    pub extension_providers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeSection>,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// `bundle.yaml`. Unknown fields are kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundleYaml {
    pub schema_version: u32,
    pub bundle_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle_name: Option<String>,
    #[serde(default)]
    pub app_packs: Vec<String>,
    #[serde(default)]
    pub extension_providers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeSection>,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// What a bundle says about itself, from whichever manifests it has.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BundleDescription {
    pub bundle_id: String,
    pub bundle_name: Option<String>,
    /// Which manifest files were present.
    pub sources: Vec<&'static str>,
    pub app_packs: Vec<String>,
    pub extension_providers: Vec<String>,
    pub runtime: Option<RuntimeSection>,
}

impl BundleDescription {
    /// The runtime section, or an error that says what is missing; used
    /// when a revision is warmed.
    pub fn require_runtime(&self) -> Result<&RuntimeSection, ManifestError> {
        self.runtime.as_ref().ok_or_else(|| ManifestError::Runtime {
            field: "command".to_owned(),
            message: format!(
                "bundle {} has no runtime section, so the local-process deployer cannot start it; add `runtime: {{command: [\"bin/server\"], health_path: \"/healthz\"}}` to {BUNDLE_YAML} or a \"runtime\" object to {MANIFEST_JSON}",
                self.bundle_id
            ),
        })
    }
}

fn check_size(file: &'static str, bytes: &[u8]) -> Result<(), ManifestError> {
    if bytes.len() > MANIFEST_BYTES_MAX {
        return Err(ManifestError::TooLarge {
            file,
            bytes: bytes.len(),
        });
    }
    Ok(())
}

/// Parses `bundle-manifest.json`.
pub fn parse_manifest_json(bytes: &[u8]) -> Result<ManifestJson, ManifestError> {
    check_size(MANIFEST_JSON, bytes)?;
    let manifest: ManifestJson =
        serde_json::from_slice(bytes).map_err(|error| ManifestError::Invalid {
            file: MANIFEST_JSON,
            reason: error.to_string(),
        })?;
    if manifest.format_version != FORMAT_VERSION {
        return Err(ManifestError::UnsupportedFormat {
            found: manifest.format_version,
        });
    }
    check_bundle_id(MANIFEST_JSON, &manifest.bundle_id)?;
    if let Some(runtime) = &manifest.runtime {
        runtime.validate()?;
    }
    Ok(manifest)
}

/// Parses `bundle.yaml`.
pub fn parse_bundle_yaml(bytes: &[u8]) -> Result<BundleYaml, ManifestError> {
    check_size(BUNDLE_YAML, bytes)?;
    let text = std::str::from_utf8(bytes).map_err(|error| ManifestError::Invalid {
        file: BUNDLE_YAML,
        reason: error.to_string(),
    })?;
    let yaml: BundleYaml =
        serde_norway::from_str(text).map_err(|error| ManifestError::Invalid {
            file: BUNDLE_YAML,
            reason: error.to_string(),
        })?;
    check_bundle_id(BUNDLE_YAML, &yaml.bundle_id)?;
    if let Some(runtime) = &yaml.runtime {
        runtime.validate()?;
    }
    Ok(yaml)
}

fn check_bundle_id(file: &'static str, bundle_id: &str) -> Result<(), ManifestError> {
    bundle_id
        .parse::<deploy::ids::BundleId>()
        .map(|_| ())
        .map_err(|error| ManifestError::Invalid {
            file,
            reason: format!("bundle_id: {error}"),
        })
}

/// Combines whichever manifests a bundle has into one description.
pub fn describe(
    json: Option<&[u8]>,
    yaml: Option<&[u8]>,
) -> Result<BundleDescription, ManifestError> {
    let json = json.map(parse_manifest_json).transpose()?;
    let yaml = yaml.map(parse_bundle_yaml).transpose()?;
    match (json, yaml) {
        (None, None) => Err(ManifestError::Missing),
        (Some(json), None) => Ok(BundleDescription {
            bundle_id: json.bundle_id,
            bundle_name: json.bundle_name,
            sources: vec![MANIFEST_JSON],
            app_packs: json.app_packs,
            extension_providers: json.extension_providers,
            runtime: json.runtime,
        }),
        (None, Some(yaml)) => Ok(BundleDescription {
            bundle_id: yaml.bundle_id,
            bundle_name: yaml.bundle_name,
            sources: vec![BUNDLE_YAML],
            app_packs: yaml.app_packs,
            extension_providers: yaml.extension_providers,
            runtime: yaml.runtime,
        }),
        (Some(json), Some(yaml)) => {
            if json.bundle_id != yaml.bundle_id {
                return Err(ManifestError::BundleIdMismatch {
                    json: json.bundle_id,
                    yaml: yaml.bundle_id,
                });
            }
            let runtime = match (json.runtime, yaml.runtime) {
                (Some(a), Some(b)) if a != b => return Err(ManifestError::RuntimeConflict),
                (a, b) => a.or(b),
            };
            Ok(BundleDescription {
                bundle_id: json.bundle_id,
                bundle_name: json.bundle_name.or(yaml.bundle_name),
                sources: vec![MANIFEST_JSON, BUNDLE_YAML],
                app_packs: json.app_packs,
                extension_providers: json.extension_providers,
                runtime,
            })
        }
    }
}

fn runtime_error(field: &str, message: impl Into<String>) -> ManifestError {
    ManifestError::Runtime {
        field: field.to_owned(),
        message: message.into(),
    }
}

fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl RuntimeSection {
    /// Checks that the program `command[0]` names is a file of the
    /// extracted bundle at `root`; warming and `bundle doctor` both refuse
    /// a runtime that could not start with this message.
    pub fn check_program(&self, root: &std::path::Path) -> Result<(), ManifestError> {
        let Some(program) = self.command.first() else {
            return Err(runtime_error("command", "is empty"));
        };
        let relative = program.strip_prefix("./").unwrap_or(program);
        let path = root.join(relative);
        // The program must resolve inside the bundle (extraction proved
        // links stay inside; this also catches a link to a folder).
        if !path.is_file() {
            return Err(runtime_error(
                "command[0]",
                format!(
                    "{program:?} is not a file in the bundle, so no instance could start; add it or fix runtime.command"
                ),
            ));
        }
        Ok(())
    }

    /// Checks the command, variables, health path and bounds.
    pub fn validate(&self) -> Result<(), ManifestError> {
        let Some(program) = self.command.first() else {
            return Err(runtime_error(
                "command",
                "is empty; give the program and its arguments, e.g. [\"bin/server\", \"--flag\"]",
            ));
        };
        let unsafe_program = program.is_empty()
            || program.starts_with('/')
            || program.split('/').any(|part| part == "..")
            || !program.contains('/');
        if unsafe_program {
            return Err(runtime_error(
                "command[0]",
                format!(
                    "{program:?} must be a path inside the bundle such as \"bin/server\" or \"./start.sh\" (no absolute paths, no '..')"
                ),
            ));
        }
        if self.command.iter().any(|arg| arg.contains('\0')) {
            return Err(runtime_error(
                "command",
                "arguments must not contain NUL bytes",
            ));
        }
        if !valid_env_name(&self.port_env) {
            return Err(runtime_error(
                "port_env",
                format!(
                    "{:?} is not a valid environment variable name",
                    self.port_env
                ),
            ));
        }
        if let Some(name) = self.env.keys().find(|name| !valid_env_name(name)) {
            return Err(runtime_error(
                "env",
                format!("{name:?} is not a valid environment variable name"),
            ));
        }
        if self.env.contains_key(&self.port_env) {
            return Err(runtime_error(
                "env",
                format!(
                    "{} is set by the deployer to the instance's port; remove it from env",
                    self.port_env
                ),
            ));
        }
        if !self.health_path.starts_with('/') || self.health_path.chars().any(char::is_whitespace) {
            return Err(runtime_error(
                "health_path",
                format!(
                    "{:?} must be an absolute URL path such as /healthz",
                    self.health_path
                ),
            ));
        }
        if !(1..=STARTUP_TIMEOUT_SECONDS_MAX).contains(&self.startup_timeout_seconds) {
            return Err(runtime_error(
                "startup_timeout_seconds",
                format!("must be 1 to {STARTUP_TIMEOUT_SECONDS_MAX}"),
            ));
        }
        if !(1..=60_000).contains(&self.health_timeout_ms) {
            return Err(runtime_error("health_timeout_ms", "must be 1 to 60000"));
        }
        if !(1..=INSTANCES_MAX).contains(&self.instances) {
            return Err(runtime_error(
                "instances",
                format!("must be 1 to {INSTANCES_MAX}"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_yaml_combine_and_must_agree() {
        let json =
            br#"{"format_version":"gtbundle-v1","bundle_id":"shop","app_packs":[],"future":1}"#;
        let yaml = b"schema_version: 1\nbundle_id: shop\nruntime:\n  command: [bin/server]\n";
        let described = describe(Some(json), Some(yaml)).expect("valid");
        assert_eq!(described.bundle_id, "shop");
        assert_eq!(described.runtime.expect("runtime").port_env, "PORT");
        let other = b"schema_version: 1\nbundle_id: blog\n";
        assert!(matches!(
            describe(Some(json), Some(other)),
            Err(ManifestError::BundleIdMismatch { .. })
        ));
        assert_eq!(describe(None, None), Err(ManifestError::Missing));
        let v2 = br#"{"format_version":"gtbundle-v2","bundle_id":"shop"}"#;
        assert!(matches!(
            describe(Some(v2), None),
            Err(ManifestError::UnsupportedFormat { .. })
        ));
    }

    #[test]
    fn runtime_sections_are_checked_field_by_field() {
        let base = RuntimeSection {
            command: vec!["bin/server".into()],
            env: BTreeMap::new(),
            port_env: default_port_env(),
            health_path: default_health_path(),
            startup_timeout_seconds: 30,
            health_timeout_ms: 1000,
            instances: 1,
        };
        assert!(base.validate().is_ok());
        let cases: Vec<(&str, RuntimeSection)> = vec![
            (
                "command",
                RuntimeSection {
                    command: vec![],
                    ..base.clone()
                },
            ),
            (
                "command[0]",
                RuntimeSection {
                    command: vec!["/bin/sh".into()],
                    ..base.clone()
                },
            ),
            (
                "command[0]",
                RuntimeSection {
                    command: vec!["../x/y".into()],
                    ..base.clone()
                },
            ),
            (
                "command[0]",
                RuntimeSection {
                    command: vec!["python3".into()],
                    ..base.clone()
                },
            ),
            (
                "port_env",
                RuntimeSection {
                    port_env: "1PORT".into(),
                    ..base.clone()
                },
            ),
            (
                "env",
                RuntimeSection {
                    env: BTreeMap::from([("PORT".into(), "1".into())]),
                    ..base.clone()
                },
            ),
            (
                "health_path",
                RuntimeSection {
                    health_path: "healthz".into(),
                    ..base.clone()
                },
            ),
            (
                "instances",
                RuntimeSection {
                    instances: 0,
                    ..base.clone()
                },
            ),
            (
                "startup_timeout_seconds",
                RuntimeSection {
                    startup_timeout_seconds: 601,
                    ..base.clone()
                },
            ),
        ];
        for (field, section) in cases {
            match section.validate() {
                Err(ManifestError::Runtime { field: found, .. }) => assert_eq!(found, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_missing_runtime_says_what_to_add() {
        let described =
            describe(None, Some(b"schema_version: 1\nbundle_id: shop\n")).expect("valid");
        let error = described.require_runtime().expect_err("no runtime");
        assert!(error.to_string().contains("runtime: {command:"), "{error}");
    }
}
