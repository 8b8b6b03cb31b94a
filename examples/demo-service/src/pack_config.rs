//! The pack configs the platform gives an instance: the `*.pack.json`
//! files of the folder `GTC_CONFIG_DIR` names, read at start and again on
//! every SIGHUP, and shown at `GET /config`.

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use serde_json::{Map, Value};

/// The variable naming the folder.
pub const CONFIG_DIR_VAR: &str = "GTC_CONFIG_DIR";
/// Largest pack-config file read; a bigger one is reported, not loaded.
const FILE_BYTES_MAX: u64 = 1024 * 1024;

/// What the instance loaded last, and how many times it reloaded.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Reloads done on SIGHUP since start.
    pub reloads: u64,
    /// File name → its JSON, or `{"error": …}` for one that could not be read.
    pub packs: Map<String, Value>,
}

/// The folder and what was loaded from it.
#[derive(Debug, Default)]
pub struct PackConfigs {
    pub dir: Option<PathBuf>,
    pub loaded: RwLock<Loaded>,
}

impl PackConfigs {
    /// Reads `GTC_CONFIG_DIR` and loads it once.
    pub fn from_env() -> Self {
        let dir = std::env::var_os(CONFIG_DIR_VAR)
            .filter(|value| !value.is_empty())
            .map(PathBuf::from);
        let packs = dir.as_deref().map(read_dir).unwrap_or_default();
        Self {
            dir,
            loaded: RwLock::new(Loaded { reloads: 0, packs }),
        }
    }

    /// Loads the folder again (on SIGHUP).
    pub fn reload(&self) {
        let packs = self.dir.as_deref().map(read_dir).unwrap_or_default();
        let mut loaded = self
            .loaded
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        loaded.packs = packs;
        loaded.reloads += 1;
    }

    /// `{config_dir, reloads, packs}` for `GET /config`.
    pub fn describe(&self) -> Value {
        let loaded = self
            .loaded
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        serde_json::json!({
            "config_dir": self.dir,
            "reloads": loaded.reloads,
            "packs": loaded.packs,
        })
    }
}

/// Every `*.pack.json` file of `dir` by name; an unreadable folder is empty.
fn read_dir(dir: &Path) -> Map<String, Value> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Map::new();
    };
    let mut packs = Map::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".pack.json") {
            continue;
        }
        packs.insert(name, read_file(&entry.path()));
    }
    packs
}

fn read_file(path: &Path) -> Value {
    let failed = |why: String| serde_json::json!({ "error": why });
    match std::fs::metadata(path) {
        Ok(meta) if meta.len() > FILE_BYTES_MAX => {
            return failed(format!("{} bytes, over {FILE_BYTES_MAX}", meta.len()));
        }
        Err(error) => return failed(error.to_string()),
        Ok(_) => {}
    }
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| failed(e.to_string())),
        Err(error) => failed(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_is_read_by_file_and_a_broken_file_is_reported() {
        // Proves the pack files are loaded by name, other files ignored, and a
        // file that is not JSON shows an error instead of stopping the rest.
        let dir = std::env::temp_dir().join(format!("demo-pack-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("web.pack.json"), r#"{"non_secret":{"a":1}}"#).expect("write");
        std::fs::write(dir.join("bad.pack.json"), "not json").expect("write");
        std::fs::write(dir.join("notes.txt"), "x").expect("write");
        let packs = read_dir(&dir);
        assert_eq!(packs.len(), 2);
        assert_eq!(packs["web.pack.json"]["non_secret"]["a"], 1);
        assert!(packs["bad.pack.json"]["error"].is_string());
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
