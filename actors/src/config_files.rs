//! A revision's pack-config files on the node that runs it (issue #14).
//!
//! Two folders inside the revision's folder:
//! - `pack-configs/<pack>.pack.json`: the pack configs the revision pinned
//!   when it was staged (`greentic.pack-config.v1`), where its
//!   `pack_config_refs` and the environment's `runtime-config.json` point.
//!   Written once; they never change.
//! - `run-config/<pack>.pack.json`: what its instances read now, given to
//!   them as `GTC_CONFIG_DIR`. The pinned configs, or, for a bundle that
//!   declared `reload: signal`, its deployment's current ones, rewritten
//!   on a change before the instances are sent SIGHUP.
//!
//! Each file is replaced whole (written beside, then renamed), so an
//! instance reading during a rewrite sees the old file or the new one,
//! never a mix; files of packs no longer configured are removed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use deploy::pack_config::{PackConfig, file_name};

/// Writes `configs` as the files of `dir` (created 0755) and removes any
/// other `*.pack.json` there. With no configs: `Ok(None)` and no folder
/// left behind, unless `keep` (a `reload: signal` revision keeps its
/// folder, empty, so instances already know where a later configuration
/// will appear).
pub fn write_folder(
    dir: &Path,
    configs: &[PackConfig],
    keep: bool,
) -> std::io::Result<Option<PathBuf>> {
    if configs.is_empty() && !keep {
        remove_folder(dir);
        return Ok(None);
    }
    std::fs::create_dir_all(dir)?;
    let mut names = BTreeSet::new();
    for config in configs {
        let name = file_name(&config.pack_id);
        let bytes = serde_json::to_vec_pretty(config).map_err(std::io::Error::other)?;
        store::write_file_atomically(&dir.join(&name), &bytes).map_err(std::io::Error::other)?;
        names.insert(name);
    }
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".pack.json") && !names.contains(&name) {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(Some(dir.to_owned()))
}

/// Writes the pinned configs into `dir` unless they are there already:
/// they never change, so a restarted node does not rewrite them.
pub fn write_pinned(dir: &Path, configs: &[PackConfig]) -> std::io::Result<()> {
    let complete = configs
        .iter()
        .all(|config| dir.join(file_name(&config.pack_id)).is_file());
    if configs.is_empty() || complete {
        return Ok(());
    }
    write_folder(dir, configs, false).map(|_| ())
}

/// Deletes `dir`, if it is there; a failure is logged (nothing depends on
/// the folder being gone but tidiness).
pub fn remove_folder(dir: &Path) {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            tracing::warn!(dir = %dir.display(), %error, "could not remove a revision's config files")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn config(pack: &str, greeting: &str) -> PackConfig {
        PackConfig {
            schema: deploy::pack_config::PACK_CONFIG_SCHEMA.to_owned(),
            pack_id: pack.parse().expect("pack"),
            revision_id: deploy::ids::RevisionId::from_ulid(ulid::Ulid::from_parts(1, 1)),
            non_secret: BTreeMap::from([("greeting".to_owned(), serde_json::json!(greeting))]),
            secret_refs: BTreeMap::new(),
            runtime_refs: BTreeMap::new(),
        }
    }

    fn read(dir: &Path, pack: &str) -> serde_json::Value {
        let text = std::fs::read_to_string(dir.join(format!("{pack}.pack.json"))).expect("read");
        serde_json::from_str(&text).expect("json")
    }

    #[test]
    fn a_rewrite_replaces_changed_files_and_removes_dropped_packs() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("run-config");
        let written = write_folder(&dir, &[config("web", "hello"), config("api", "x")], false)
            .expect("write");
        assert_eq!(written.as_deref(), Some(dir.as_path()));
        assert_eq!(read(&dir, "web")["non_secret"]["greeting"], "hello");
        write_folder(&dir, &[config("web", "bye")], false).expect("rewrite");
        assert_eq!(read(&dir, "web")["non_secret"]["greeting"], "bye");
        assert!(!dir.join("api.pack.json").exists());
        assert_eq!(
            write_folder(&dir, &[], true).expect("kept"),
            Some(dir.clone())
        );
        assert!(dir.is_dir() && !dir.join("web.pack.json").exists());
        assert_eq!(write_folder(&dir, &[], false).expect("empty"), None);
        assert!(!dir.exists());
    }

    #[test]
    fn pinned_files_are_written_once() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("pack-configs");
        write_pinned(&dir, &[config("web", "hello")]).expect("write");
        write_pinned(&dir, &[config("web", "changed")]).expect("again");
        assert_eq!(read(&dir, "web")["non_secret"]["greeting"], "hello");
    }
}
