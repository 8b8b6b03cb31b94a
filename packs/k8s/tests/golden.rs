//! The render of the fixture environment (three active revisions), compared
//! byte for byte with `tests/golden/`. After an intended change, regenerate
//! with `UPDATE_GOLDEN=1 cargo test -p k8s-deployer --test golden` and
//! review the diff; `scripts/validate-k8s.sh` validates the files.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use k8s_deployer::{ALL_FILE_NAME, render};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

#[test]
fn the_render_matches_the_golden_files() {
    // Proves the rendered bytes of every file and of all.yaml are unchanged,
    // and that the golden folder holds no file the render no longer makes.
    let rendered = render(&common::environment(), &common::options()).expect("render");
    let mut expected: Vec<(String, String)> = rendered.files.clone();
    expected.push((ALL_FILE_NAME.to_owned(), rendered.all.clone()));
    let dir = golden_dir();
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(&dir).expect("golden dir");
        for entry in std::fs::read_dir(&dir).expect("read golden dir") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "yaml") {
                std::fs::remove_file(&path).expect("remove stale golden file");
            }
        }
        for (name, yaml) in &expected {
            std::fs::write(dir.join(name), yaml).expect("write golden file");
        }
        eprintln!("golden files rewritten in {}", dir.display());
        return;
    }
    let mut mismatched = Vec::new();
    for (name, yaml) in &expected {
        match std::fs::read_to_string(dir.join(name)) {
            Ok(golden) if golden == *yaml => {}
            Ok(_) => mismatched.push(format!("{name}: differs")),
            Err(error) => mismatched.push(format!("{name}: {error}")),
        }
    }
    let rendered_names: BTreeSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
    for entry in std::fs::read_dir(&dir).expect("read golden dir") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if name.ends_with(".yaml") && !rendered_names.contains(name.as_str()) {
            mismatched.push(format!(
                "{name}: in the golden folder but no longer rendered"
            ));
        }
    }
    assert!(
        mismatched.is_empty(),
        "the render differs from tests/golden ({}); if intended, run UPDATE_GOLDEN=1 cargo test -p k8s-deployer --test golden and review the diff",
        mismatched.join(", ")
    );
}
