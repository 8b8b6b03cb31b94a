//! The on-disk layout of a store root: where an environment's folder, its
//! revisions, a staged bundle and an instance's logs live.
//!
//! ```text
//! <root>/<env>/                                  layout::env_dir
//! <root>/<env>/revisions/                        layout::revisions_dir
//! <root>/<env>/revisions/<rev>/                  layout::revision_dir
//! <root>/<env>/revisions/<rev>/bundle.gtbundle   layout::staged_bundle (STAGED_BUNDLE_FILE)
//! <root>/<env>/revisions/<rev>/bundle/           layout::extracted_bundle (EXTRACTED_BUNDLE_DIR)
//! <root>/<env>/revisions/<rev>/pack-list.lock    layout::pack_list_lock (PACK_LIST_LOCK_FILE)
//! <root>/<env>/revisions/<rev>/logs/             layout::instance_logs (INSTANCE_LOGS_DIR)
//! <root>/<env>/secrets/                          layout::secrets_dir (SECRETS_DIR)
//! <root>/<env>/secrets/.lock                     layout::secrets_lock
//! <root>/<env>/secrets/data-key.json             layout::secrets_data_key (wrapped data key)
//! <root>/<env>/secrets/entries/<sha256(path)>/   layout::secret_entry_dir
//! <root>/<env>/secrets/entries/<…>/<version>.json layout::secret_version_file
//! <root>/secrets-node.key                        layout::secrets_node_key (0600)
//! <root>/<env>/trust-root.json                   layout::trust_root (TRUST_ROOT_FILE)
//! ```
//!
//! The one owner of these names: the store, the bundle stager, the node's
//! fetcher and admin API and the actors all ask here. Pure path arithmetic,
//! no I/O (this crate touches no files), so a path computed on one member
//! is the path every member computes.

use std::path::{Path, PathBuf};

use crate::ids::{EnvId, RevisionId};

/// The folder of an environment's revisions, inside the environment's folder.
pub const REVISIONS_DIR: &str = "revisions";
/// The immutable copy of the staged bundle inside a revision folder; its
/// digest is the revision's `bundle_digest`.
pub const STAGED_BUNDLE_FILE: &str = "bundle.gtbundle";
/// The safely extracted bundle inside a revision folder.
pub const EXTRACTED_BUNDLE_DIR: &str = "bundle";
/// The pinned runtime packs inside a revision folder.
pub const PACK_LIST_LOCK_FILE: &str = "pack-list.lock";
/// The instances' stdout/stderr logs (and pid files) inside a revision folder.
pub const INSTANCE_LOGS_DIR: &str = "logs";
/// The revision's secret files (0600, in a 0700 folder) while its
/// instances run on this node, inside its revision folder; removed when
/// the revision stops here.
pub const RUN_SECRETS_DIR: &str = "run-secrets";
/// `<env>/runtime-config.json`: the materialized runtime config
/// (`greentic.runtime-config.v1`) a runtime reads, written by the node.
pub const RUNTIME_CONFIG_FILE: &str = "runtime-config.json";
/// The folder of a revision's pack-config files on the node that runs it
/// (given to its instances as `GTC_CONFIG_DIR`).
pub const RUN_CONFIG_DIR: &str = "run-config";
/// The spec's folder of a revision's pack configs.
pub const PACK_CONFIGS_DIR: &str = "pack-configs";

/// The folder of an environment's secret store, inside the environment's folder.
pub const SECRETS_DIR: &str = "secrets";
/// The secret store's lock file inside [`SECRETS_DIR`].
pub const SECRETS_LOCK_FILE: &str = ".lock";
/// The environment's data key, wrapped by the node key, inside [`SECRETS_DIR`].
pub const SECRETS_DATA_KEY_FILE: &str = "data-key.json";
/// The folder of one folder per secret path inside [`SECRETS_DIR`].
pub const SECRETS_ENTRIES_DIR: &str = "entries";
/// The node key that wraps every environment's data key, in the store root
/// (beside, never inside, the environment folders a backup copies).
pub const SECRETS_NODE_KEY_FILE: &str = "secrets-node.key";

/// The environment's trust root (the operator keys allowed to sign its
/// changes), inside the environment's folder.
pub const TRUST_ROOT_FILE: &str = "trust-root.json";

/// `<root>/<env>`.
pub fn env_dir(root: &Path, env: &EnvId) -> PathBuf {
    root.join(env.as_str())
}

/// `<root>/<env>/revisions`.
pub fn revisions_dir(root: &Path, env: &EnvId) -> PathBuf {
    env_dir(root, env).join(REVISIONS_DIR)
}

/// `<root>/<env>/revisions/<rev>`.
pub fn revision_dir(root: &Path, env: &EnvId, revision: RevisionId) -> PathBuf {
    revisions_dir(root, env).join(revision.to_string())
}

/// `revisions/<rev>`: a revision folder relative to its environment's
/// folder (how staged files are named inside the environment).
pub fn revision_dir_in_env(revision: RevisionId) -> String {
    format!("{REVISIONS_DIR}/{revision}")
}

/// `<revision_dir>/bundle.gtbundle`.
pub fn staged_bundle(revision_dir: &Path) -> PathBuf {
    revision_dir.join(STAGED_BUNDLE_FILE)
}

/// `<revision_dir>/bundle`.
pub fn extracted_bundle(revision_dir: &Path) -> PathBuf {
    revision_dir.join(EXTRACTED_BUNDLE_DIR)
}

/// `<revision_dir>/pack-list.lock`.
pub fn pack_list_lock(revision_dir: &Path) -> PathBuf {
    revision_dir.join(PACK_LIST_LOCK_FILE)
}

/// `<revision_dir>/logs`.
pub fn instance_logs(revision_dir: &Path) -> PathBuf {
    revision_dir.join(INSTANCE_LOGS_DIR)
}

/// `<revision_dir>/run-secrets`.
pub fn run_secrets(revision_dir: &Path) -> PathBuf {
    revision_dir.join(RUN_SECRETS_DIR)
}

/// `<revision_dir>/run-config`.
pub fn run_config(revision_dir: &Path) -> PathBuf {
    revision_dir.join(RUN_CONFIG_DIR)
}

/// `revisions/<rev>/pack-configs/<pack>.pack.json`: where the spec's
/// layout names a revision's pack config, relative to its environment's
/// folder (the revision's `pack_config_refs`).
pub fn pack_config_ref(revision: RevisionId, pack: &crate::ids::PackId) -> String {
    format!(
        "{}/{PACK_CONFIGS_DIR}/{}",
        revision_dir_in_env(revision),
        crate::pack_config::file_name(pack)
    )
}

/// `<root>/<env>/secrets`.
pub fn secrets_dir(root: &Path, env: &EnvId) -> PathBuf {
    env_dir(root, env).join(SECRETS_DIR)
}

/// `<secrets_dir>/.lock`.
pub fn secrets_lock(secrets_dir: &Path) -> PathBuf {
    secrets_dir.join(SECRETS_LOCK_FILE)
}

/// `<secrets_dir>/data-key.json`.
pub fn secrets_data_key(secrets_dir: &Path) -> PathBuf {
    secrets_dir.join(SECRETS_DATA_KEY_FILE)
}

/// `<secrets_dir>/entries/<path_digest>`: one folder per secret path,
/// named by the lowercase hex SHA-256 of the path so that no path shape
/// (`a` beside `a/b`) can collide with another on disk.
pub fn secret_entry_dir(secrets_dir: &Path, path_digest: &str) -> PathBuf {
    secrets_dir.join(SECRETS_ENTRIES_DIR).join(path_digest)
}

/// `<entry_dir>/<version>.json`, the version zero-padded to ten digits so
/// that names sort by version.
pub fn secret_version_file(entry_dir: &Path, version: u32) -> PathBuf {
    entry_dir.join(format!("{version:010}.json"))
}

/// `<root>/<env>/trust-root.json`.
pub fn trust_root(root: &Path, env: &EnvId) -> PathBuf {
    env_dir(root, env).join(TRUST_ROOT_FILE)
}

/// `<root>/secrets-node.key`.
pub fn secrets_node_key(root: &Path) -> PathBuf {
    root.join(SECRETS_NODE_KEY_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_sits_under_the_revision_folder_of_its_environment() {
        // Proves: the documented layout, and that the relative form names
        // the same folder as the absolute one.
        let root = Path::new("/store");
        let env = EnvId::local();
        let revision = RevisionId::from_ulid(ulid::Ulid::from_parts(7, 9));
        let folder = revision_dir(root, &env, revision);
        assert_eq!(
            folder,
            Path::new("/store/local/revisions").join(revision.to_string())
        );
        assert_eq!(
            env_dir(root, &env).join(revision_dir_in_env(revision)),
            folder
        );
        assert_eq!(
            staged_bundle(&folder),
            folder.join("bundle.gtbundle"),
            "the staged archive keeps its name: members fetch it from each other by it"
        );
        assert_eq!(extracted_bundle(&folder), folder.join("bundle"));
        assert_eq!(pack_list_lock(&folder), folder.join("pack-list.lock"));
        assert_eq!(instance_logs(&folder), folder.join("logs"));
    }

    #[test]
    fn secrets_live_in_their_environment_and_the_node_key_beside_them() {
        // Proves: the secret store's files sit under the environment's
        // folder, and the node key outside every environment folder.
        let root = Path::new("/store");
        let env = EnvId::local();
        let secrets = secrets_dir(root, &env);
        assert_eq!(secrets, Path::new("/store/local/secrets"));
        assert_eq!(secrets_lock(&secrets), secrets.join(".lock"));
        assert_eq!(secrets_data_key(&secrets), secrets.join("data-key.json"));
        let entry = secret_entry_dir(&secrets, "ab12");
        assert_eq!(entry, secrets.join("entries/ab12"));
        assert_eq!(
            secret_version_file(&entry, 7),
            entry.join("0000000007.json")
        );
        assert_eq!(secrets_node_key(root), Path::new("/store/secrets-node.key"));
        assert!(!secrets_node_key(root).starts_with(env_dir(root, &env)));
        assert_eq!(
            trust_root(root, &env),
            Path::new("/store/local/trust-root.json")
        );
    }
}
