//! A fresh render of the fixture, checked against the Kubernetes 1.33 API
//! schemas in strict mode by `kubernetes-validate` (through
//! `scripts/validate-k8s.sh` when its venv exists, else a `python3` that has
//! the module). Without a validator the test says it skipped; with
//! `GTC_REQUIRE_K8S_VALIDATE=1` it fails instead. Run
//! `scripts/validate-k8s.sh` once to create the venv.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_deployer::{ALL_FILE_NAME, render};

/// The Kubernetes version validated against (k8s-openapi's `v1_33`).
const K8S_VERSION: &str = "1.33";

fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// How to validate: the script (its venv is ready), or a system python3.
enum Validator {
    Script(PathBuf),
    SystemPython,
}

fn find_validator() -> Option<Validator> {
    let root = repository_root();
    let venv = std::env::var_os("K8S_VALIDATE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/k8s-validate-venv"));
    let venv = if venv.is_absolute() {
        venv
    } else {
        root.join(venv)
    };
    let has_module = |python: &Path| {
        Command::new(python)
            .args(["-c", "import kubernetes_validate"])
            .output()
            .is_ok_and(|output| output.status.success())
    };
    if has_module(&venv.join("bin/python")) {
        return Some(Validator::Script(venv));
    }
    has_module(Path::new("python3")).then_some(Validator::SystemPython)
}

#[test]
fn a_fresh_render_passes_strict_schema_validation() {
    // Proves every rendered object (and all.yaml) is valid Kubernetes 1.33
    // with no unknown field; fails when the validator reports any problem.
    let Some(validator) = find_validator() else {
        let required = std::env::var_os("GTC_REQUIRE_K8S_VALIDATE").is_some_and(|v| v == "1");
        assert!(
            !required,
            "GTC_REQUIRE_K8S_VALIDATE=1 but kubernetes-validate is not available; run scripts/validate-k8s.sh once to install it into target/k8s-validate-venv"
        );
        eprintln!(
            "skipped: kubernetes-validate is not available (run scripts/validate-k8s.sh once to install it)"
        );
        return;
    };
    let rendered = render(&common::environment(), &common::options()).expect("render");
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, yaml) in &rendered.files {
        std::fs::write(dir.path().join(name), yaml).expect("write");
    }
    std::fs::write(dir.path().join(ALL_FILE_NAME), &rendered.all).expect("write");
    let output = match &validator {
        Validator::Script(venv) => Command::new("bash")
            .arg(repository_root().join("scripts/validate-k8s.sh"))
            .arg(dir.path())
            .env("K8S_VALIDATE_VENV", venv)
            .env("K8S_VERSION", K8S_VERSION)
            .output(),
        Validator::SystemPython => {
            let mut files: Vec<PathBuf> = rendered
                .files
                .iter()
                .map(|(name, _)| dir.path().join(name))
                .collect();
            files.push(dir.path().join(ALL_FILE_NAME));
            Command::new("python3")
                .args(["-m", "kubernetes_validate", "--strict", "-k", K8S_VERSION])
                .args(&files)
                .output()
        }
    }
    .expect("run the validator");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let problems: Vec<&str> = report
        .lines()
        .filter(|line| line.starts_with("ERROR") || line.starts_with("WARN"))
        .collect();
    assert!(
        output.status.success() && problems.is_empty(),
        "kubernetes-validate refused the render:\n{report}"
    );
    // Each object file and every document of all.yaml was checked.
    let passed = report.lines().filter(|l| l.starts_with("INFO")).count();
    assert_eq!(passed, 2 * rendered.files.len(), "{report}");
}
