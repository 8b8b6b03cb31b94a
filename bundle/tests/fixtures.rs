//! Every real bundle from the original platform inspects and stages, with
//! the right pinned packs. The fixtures live in ../shared (not copied into
//! the repo); where that folder is missing the test says it was skipped.

use std::path::{Path, PathBuf};

use bundle::ExtractLimits;
use bundle::inspect::inspect;
use bundle::stage::{StageRequest, stage, verify};
use deploy::ids::RevisionId;

fn fixtures() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/greentic-bundles");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "SKIPPED: {} is missing (it ships with the project's shared folder, not the repo)",
            dir.display()
        );
        None
    }
}

/// (fixture, compression, pinned pack ids in path order)
const EXPECTED: [(&str, &str, &[&str]); 5] = [
    (
        "provider-packs-bundle",
        "zlib",
        &["app", "messaging-webchat-gui", "state-memory"],
    ),
    ("provider-only-bundle", "zlib", &["messaging-webchat-gui"]),
    ("perf-smoke-bundle", "zlib", &["perf-smoke-pack"]),
    ("templates-bundle", "xz", &["templates-pack"]),
    (
        "telegram-bundle",
        "xz",
        &["messaging-telegram", "quickstart"],
    ),
];

#[test]
fn every_fixture_inspects_and_stages_with_its_pack_list() {
    let Some(dir) = fixtures() else { return };
    let env = tempfile::tempdir().expect("tempdir");
    for (name, _compression, packs) in EXPECTED {
        let path = dir.join(format!("{name}.gtbundle"));
        let inspection =
            inspect(&path, ExtractLimits::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(inspection.format, bundle::BundleFormat::Squashfs, "{name}");
        assert!(
            inspection.manifest_error.is_none(),
            "{name}: {:?}",
            inspection.manifest_error
        );
        let inspected: Vec<String> = inspection
            .packs
            .iter()
            .map(|p| p.pack_id.to_string())
            .collect();
        assert_eq!(inspected, packs, "{name}: inspect pack list");

        let revision_id = RevisionId::from_ulid(ulid::Ulid::new());
        let request = StageRequest {
            bundle: path.clone(),
            revision_dir: env.path().join("revisions").join(revision_id.to_string()),
            env_relative_dir: format!("revisions/{revision_id}"),
            revision_id,
            limits: ExtractLimits::default(),
        };
        let staged = stage(&request).unwrap_or_else(|e| panic!("{name}: {e}"));
        let pinned: Vec<String> = staged
            .lock
            .packs
            .iter()
            .map(|p| p.pack_id.to_string())
            .collect();
        assert_eq!(pinned, packs, "{name}: staged pack list");
        assert_eq!(staged.digest, inspection.digest, "{name}: digest");
        for pack in &staged.lock.packs {
            assert!(
                pack.path
                    .starts_with(&format!("revisions/{revision_id}/bundle/")),
                "{}",
                pack.path
            );
            assert!(
                env.path().join(&pack.path).is_file(),
                "{} exists",
                pack.path
            );
        }
        assert!(request.revision_dir.join("pack-list.lock").is_file());
        verify(&request.revision_dir, &staged.digest).expect("digest verifies");
        // Staging the same revision again with the same bytes is a no-op.
        let again = stage(&request).expect("restage");
        assert!(again.already_staged);
        assert_eq!(again.lock, staged.lock);
    }
}

#[test]
fn provider_packs_bundle_ignores_the_deployer_pack_and_strays() {
    let Some(dir) = fixtures() else { return };
    let inspection = inspect(
        &dir.join("provider-packs-bundle.gtbundle"),
        ExtractLimits::default(),
    )
    .expect("inspect");
    let paths: Vec<&str> = inspection.packs.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "packs/app.gtpack",
            "providers/messaging/messaging-webchat-gui.gtpack",
            "providers/state/state-memory.gtpack"
        ]
    );
    assert!(
        inspection
            .files
            .iter()
            .any(|f| f.path == "providers/deployer/deployer-terraform.gtpack")
    );
    assert!(
        inspection
            .files
            .iter()
            .any(|f| f.path == "resolved/stray.gtpack")
    );
}

#[test]
fn restaging_with_other_bytes_is_refused_and_keeps_the_revision() {
    let Some(dir) = fixtures() else { return };
    let env = tempfile::tempdir().expect("tempdir");
    let revision_id = RevisionId::from_ulid(ulid::Ulid::new());
    let mut request = StageRequest {
        bundle: dir.join("provider-only-bundle.gtbundle"),
        revision_dir: env.path().join("rev"),
        env_relative_dir: "revisions/rev".into(),
        revision_id,
        limits: ExtractLimits::default(),
    };
    stage(&request).expect("stage");
    request.bundle = dir.join("perf-smoke-bundle.gtbundle");
    let error = stage(&request).expect_err("other bytes");
    assert!(
        matches!(error, bundle::stage::StageError::DigestMismatch { .. }),
        "{error}"
    );
    assert!(
        request.revision_dir.join("bundle.gtbundle").is_file(),
        "the first staging is untouched"
    );
}
