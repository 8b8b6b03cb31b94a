//! The environment a bundle's process gets.
//!
//! The child does not inherit the manager's environment: the manager runs with
//! operator credentials (cloud keys, tokens, database URLs) that must not leak
//! into code shipped by bundles. Only a few harmless variables that ordinary
//! programs need to run at all are passed through.

use std::collections::BTreeMap;
use std::ffi::OsString;

use crate::spec::InstanceSpec;

/// Variables copied from the manager's environment: program lookup, home folder
/// and locale. Everything else the process sees comes from the spec.
pub const INHERITED_ENV: [&str; 3] = ["PATH", "HOME", "LANG"];
/// The variable that tells the process which address to listen on.
pub const HOST_ENV: &str = "HOST";

/// Builds the child's full environment. Later layers win: inherited, then
/// `spec.env`, then the pinned secrets (and `GTC_SECRETS_DIR` when the
/// revision has secret files, `GTC_CONFIG_DIR` when it has pack configs), then `spec.labels`, then `spec.port_env=<port>` (the platform's
/// port assignment cannot be overridden by the bundle's configuration), and
/// [`HOST_ENV`]`=<spec.host>` likewise.
pub(crate) fn child_env(
    spec: &InstanceSpec,
    port: u16,
    parent: impl Fn(&str) -> Option<OsString>,
) -> BTreeMap<OsString, OsString> {
    let mut env: BTreeMap<OsString, OsString> = INHERITED_ENV
        .iter()
        .filter_map(|name| parent(name).map(|value| (OsString::from(name), value)))
        .collect();
    env.extend(
        spec.env
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v))),
    );
    env.extend(spec.secrets.env.iter().map(|(name, value)| {
        use secrecy::ExposeSecret;
        (OsString::from(name), OsString::from(value.expose_secret()))
    }));
    if let Some(dir) = &spec.secrets.files_dir {
        env.insert(
            OsString::from(packs::deployer::SECRETS_DIR_ENV),
            dir.as_os_str().to_owned(),
        );
    }
    if let Some(dir) = &spec.config_dir {
        env.insert(
            OsString::from(packs::deployer::CONFIG_DIR_ENV),
            dir.as_os_str().to_owned(),
        );
    }
    env.extend(
        spec.labels
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v))),
    );
    env.insert(
        OsString::from(&spec.port_env),
        OsString::from(port.to_string()),
    );
    env.insert(
        OsString::from(HOST_ENV),
        OsString::from(spec.host.to_string()),
    );
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::time::Duration;

    fn spec() -> InstanceSpec {
        InstanceSpec {
            bundle_root: PathBuf::from("/bundle"),
            command: vec!["bin/server".into()],
            env: BTreeMap::from([
                ("PORT".into(), "1".into()),
                ("GREENTIC_REVISION".into(), "from-env".into()),
                ("LOG".into(), "debug".into()),
                ("HOST".into(), "0.0.0.0".into()),
            ]),
            port_env: "PORT".into(),
            host: std::net::IpAddr::from([127, 0, 0, 2]),
            health_path: "/healthz".into(),
            startup_timeout: Duration::from_secs(1),
            health_timeout: Duration::from_secs(1),
            log_dir: PathBuf::from("/logs"),
            index: 0,
            labels: BTreeMap::from([("GREENTIC_REVISION".into(), "rev-1".into())]),
            secrets: packs::deployer::SecretMaterial::default(),
            config_dir: None,
        }
    }

    #[test]
    fn only_allowed_parent_variables_pass_and_layers_override_in_order() {
        // Proves operator secrets are not passed through and port/host > labels > env.
        let parent = |name: &str| match name {
            "PATH" => Some(OsString::from("/usr/bin")),
            "AWS_SECRET_ACCESS_KEY" => Some(OsString::from("hunter2")),
            _ => None,
        };
        let env = child_env(&spec(), 4242, parent);
        let get = |k: &str| env.get(&OsString::from(k)).cloned();
        assert_eq!(get("PATH"), Some("/usr/bin".into()));
        assert_eq!(get("AWS_SECRET_ACCESS_KEY"), None);
        assert_eq!(get("HOME"), None);
        assert_eq!(get("PORT"), Some("4242".into()));
        assert_eq!(get("GREENTIC_REVISION"), Some("rev-1".into()));
        assert_eq!(get("LOG"), Some("debug".into()));
        assert_eq!(
            get("HOST"),
            Some("127.0.0.2".into()),
            "the platform's host wins"
        );
        assert_eq!(env.len(), 5);
    }

    #[test]
    fn pinned_secrets_are_variables_and_a_folder_and_never_shown_by_debug() {
        // Proves secret variables reach the child after `env`, the files'
        // folder arrives as GTC_SECRETS_DIR, and the spec's Debug output
        // (what a log line would print) holds names, never values.
        let mut spec = spec();
        spec.env.insert("DB_PASSWORD".into(), "from-env".into());
        spec.secrets = packs::deployer::SecretMaterial {
            env: vec![(
                "DB_PASSWORD".into(),
                secrecy::SecretString::from("pinned-value-7".to_owned()),
            )],
            files_dir: Some(PathBuf::from("/revs/r/run-secrets")),
        };
        let env = child_env(&spec, 1, |_| None);
        let get = |k: &str| env.get(&OsString::from(k)).cloned();
        assert_eq!(get("DB_PASSWORD"), Some("pinned-value-7".into()));
        assert_eq!(
            get(packs::deployer::SECRETS_DIR_ENV),
            Some("/revs/r/run-secrets".into())
        );
        let shown = format!("{spec:?}");
        assert!(shown.contains("DB_PASSWORD"), "{shown}");
        assert!(!shown.contains("pinned-value-7"), "{shown}");
    }
}
