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
    /// The container image, for container deployers
    /// (`greentic.deployer.docker`); `command` is then a path inside the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageSection>,
    /// Request-driven autoscaling: with it, `instances` is ignored and the
    /// revision runs between `scaling.min_instances` and
    /// `scaling.max_instances` with its traffic (0 when idle, if allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<deploy::scaling::ScalingSettings>,
    /// Secrets the instances receive, as variables or files; each is
    /// pinned to an exact version when the bundle is staged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<deploy::secret_pins::SecretUse>,
    /// How a configuration change reaches running instances: `revision`
    /// (the default: configuration is pinned when the revision is staged,
    /// so a change takes a new revision) or `signal` (the node rewrites the
    /// instances' pack-config files in `GTC_CONFIG_DIR` and sends SIGHUP).
    #[serde(
        default,
        skip_serializing_if = "deploy::pack_config::ConfigReload::is_revision"
    )]
    pub reload: deploy::pack_config::ConfigReload,
}

/// Where a container deployer finds the bundle's image: an image already
/// on the engine (`reference`, pinned by `digest` at stage time), or an
/// image archive shipped inside the bundle (`archive`, whose sha256 is
/// `digest`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSection {
    /// An image name or id on the engine, e.g. `shop:1.4`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// A path inside the bundle to an image archive (`docker save` output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<String>,
    /// `sha256:<64 hex>`: the image id or a repository digest of
    /// `reference`, or the archive's sha256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// True for `sha256:` followed by 64 lowercase hex digits.
fn valid_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    })
}

impl ImageSection {
    /// Exactly one of `reference` and `archive`; a well-formed digest,
    /// which an archive must have; an archive path inside the bundle.
    pub fn validate(&self) -> Result<(), ManifestError> {
        match (&self.reference, &self.archive) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(runtime_error(
                    "image",
                    "must name exactly one of reference (an image on the engine) and archive (an image archive in the bundle)",
                ));
            }
            (Some(reference), None)
                if reference.is_empty() || reference.chars().any(char::is_whitespace) =>
            {
                return Err(runtime_error(
                    "image.reference",
                    format!("{reference:?} is not an image name"),
                ));
            }
            (None, Some(archive)) => {
                if archive.is_empty()
                    || archive.starts_with('/')
                    || archive.split('/').any(|part| part == "..")
                {
                    return Err(runtime_error(
                        "image.archive",
                        format!(
                            "{archive:?} must be a path inside the bundle (no absolute paths, no '..')"
                        ),
                    ));
                }
                if self.digest.is_none() {
                    return Err(runtime_error(
                        "image.digest",
                        "is required with an archive: the archive's sha256 as sha256:<64 hex>",
                    ));
                }
            }
            (Some(_), None) => {}
        }
        if let Some(digest) = &self.digest
            && !valid_digest(digest)
        {
            return Err(runtime_error(
                "image.digest",
                format!("{digest:?} must be sha256: followed by 64 lowercase hex digits"),
            ));
        }
        Ok(())
    }
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
        if self.image.is_some() {
            // The program is inside the image; the container deployer
            // checks the image when it stages the revision.
            return Ok(());
        }
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
        if let Some(image) = &self.image {
            image.validate()?;
        }
        // In an image the program is an absolute path of the image; in a
        // bundle, a relative path inside it.
        let outside = if self.image.is_some() {
            !program.starts_with('/')
        } else {
            program.starts_with('/') || !program.contains('/')
        };
        let unsafe_program =
            program.is_empty() || outside || program.split('/').any(|part| part == "..");
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
        if let Some(scaling) = &self.scaling {
            scaling.validate().map_err(|error| {
                runtime_error(&format!("scaling.{}", error.field()), error.detail())
            })?;
        }
        deploy::secret_pins::check_uses(&self.secrets, None).map_err(|error| {
            let field = error
                .index()
                .map_or_else(|| "secrets".to_owned(), |i| format!("secrets[{i}]"));
            runtime_error(&field, error.to_string())
        })?;
        if let Some((index, name)) = self.secrets.iter().enumerate().find_map(|(index, secret)| {
            secret
                .env
                .as_ref()
                .filter(|name| self.env.contains_key(*name) || **name == self.port_env)
                .map(|name| (index, name))
        }) {
            return Err(runtime_error(
                &format!("secrets[{index}].env"),
                format!(
                    "{name} is also set by env or port_env; deliver the secret under another name"
                ),
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
            image: None,
            scaling: None,
            secrets: Vec::new(),
            reload: Default::default(),
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
            (
                "scaling.min_instances",
                RuntimeSection {
                    scaling: Some(deploy::scaling::ScalingSettings {
                        min_instances: 3,
                        max_instances: 2,
                        ..Default::default()
                    }),
                    ..base.clone()
                },
            ),
            (
                "scaling.queue_size",
                RuntimeSection {
                    scaling: Some(deploy::scaling::ScalingSettings {
                        queue_size: 0,
                        ..Default::default()
                    }),
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

    #[test]
    fn image_sections_name_one_source_and_let_the_command_live_in_the_image() {
        // Proves: exactly one of reference/archive, archives need a digest and stay inside the bundle, and an image runtime takes an absolute in-image command.
        let digest = format!("sha256:{}", "a".repeat(64));
        let runtime = |command: &str, image: ImageSection| RuntimeSection {
            command: vec![command.into()],
            env: BTreeMap::new(),
            port_env: default_port_env(),
            health_path: default_health_path(),
            startup_timeout_seconds: 30,
            health_timeout_ms: 1000,
            instances: 1,
            image: Some(image),
            scaling: None,
            secrets: Vec::new(),
            reload: Default::default(),
        };
        let on_engine = ImageSection {
            reference: Some("shop:1".into()),
            archive: None,
            digest: Some(digest.clone()),
        };
        assert!(runtime("/server", on_engine.clone()).validate().is_ok());
        let relative = runtime("bin/server", on_engine.clone()).validate();
        assert!(relative.is_err(), "an image command is absolute");
        let both = ImageSection {
            archive: Some("image.tar".into()),
            ..on_engine.clone()
        };
        assert!(runtime("/server", both).validate().is_err());
        let unpinned_archive = ImageSection {
            reference: None,
            archive: Some("image.tar".into()),
            digest: None,
        };
        assert!(runtime("/server", unpinned_archive).validate().is_err());
        let escaping = ImageSection {
            reference: None,
            archive: Some("../image.tar".into()),
            digest: Some(digest.clone()),
        };
        assert!(runtime("/server", escaping).validate().is_err());
        let root = std::path::Path::new("/nonexistent-bundle");
        assert!(runtime("/server", on_engine).check_program(root).is_ok());
    }

    proptest::proptest! {
        #[test]
        fn only_sha256_and_64_lowercase_hex_is_a_digest(text in "(sha256:)?[0-9a-fA-F]{0,70}") {
            // Proves valid_digest accepts exactly the sha256:<64 lowercase hex> form.
            let expected = text.strip_prefix("sha256:").is_some_and(|hex| {
                hex.len() == 64 && hex.chars().all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
            });
            proptest::prop_assert_eq!(valid_digest(&text), expected);
        }
    }
}
