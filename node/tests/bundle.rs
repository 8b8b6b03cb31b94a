//! `gtc bundle …` and staging bundle files through `gtc op revisions stage`,
//! with the real binary.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use common::{Home, id};
use serde_json::json;

/// A tiny `.gtpack` (a ZIP with a manifest).
fn gtpack(name: &str) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    writer
        .start_file("manifest.cbor", zip::write::SimpleFileOptions::default())
        .expect("start");
    writer.write_all(name.as_bytes()).expect("write");
    writer.finish().expect("finish").into_inner()
}

/// A bundle source folder with dev secrets that must be left out.
fn source_tree(home: &Home, bundle_id: &str) -> PathBuf {
    let dir = home.dir.path().join(format!("src-{bundle_id}"));
    let write = |relative: &str, bytes: &[u8]| {
        let path = dir.join(relative);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, bytes).expect("write");
    };
    write(
        "bundle.yaml",
        format!("schema_version: 1\nbundle_id: {bundle_id}\nruntime:\n  command: [bin/server]\n  health_path: /healthz\n").as_bytes(),
    );
    write("bin/server", b"#!/bin/sh\necho hello\n");
    write("packs/app.gtpack", &gtpack("app"));
    write("providers/state/state-memory.gtpack", &gtpack("state"));
    write("providers/deployer/terraform.gtpack", &gtpack("terraform"));
    write(".greentic/dev/token", b"this file must never be packed");
    write("config/local.dev.secrets.env", b"DB_PASSWORD=never-packed");
    write(
        "state/setup/answers.json",
        br#"{"secret_values":{"api":"zz"},"answers":{"region":{"value":"eu"}}}"#,
    );
    dir
}

fn build(home: &Home, dir: &Path, out: &Path, format: &str) -> common::Run {
    home.gtc(&[
        "bundle",
        "build",
        dir.to_str().expect("path"),
        "-o",
        out.to_str().expect("path"),
        "--format",
        format,
    ])
}

#[test]
fn build_is_deterministic_and_leaves_dev_secrets_out() {
    // Proves: the same tree gives the same bytes (squashfs and zip), dev
    // secrets are skipped with a reason, and the result inspects cleanly.
    let home = Home::new();
    let dir = source_tree(&home, "shop");
    for format in ["squashfs", "zip"] {
        let first = home.dir.path().join(format!("a.{format}.gtbundle"));
        let second = home.dir.path().join(format!("b.{format}.gtbundle"));
        let built = build(&home, &dir, &first, format);
        assert_eq!(built.code, 0, "{}", built.stderr);
        let skipped = built.stdout["result"]["skipped"].to_string();
        assert!(
            skipped.contains(".greentic/dev") && skipped.contains("local.dev.secrets.env"),
            "{skipped}"
        );
        assert_eq!(
            built.stdout["result"]["sanitized"],
            json!(["state/setup/answers.json"])
        );
        std::thread::sleep(std::time::Duration::from_millis(1100));
        assert_eq!(build(&home, &dir, &second, format).code, 0);
        assert_eq!(
            std::fs::read(&first).expect("first"),
            std::fs::read(&second).expect("second"),
            "{format}: same tree, same bytes"
        );

        let inspected = home.gtc(&["bundle", "inspect", first.to_str().expect("path")]);
        assert_eq!(inspected.code, 0, "{}", inspected.stderr);
        let result = &inspected.stdout["result"];
        assert_eq!(result["manifest"]["bundle_id"], "shop");
        assert_eq!(result["digest"], built.stdout["result"]["digest"]);
        let files = result["files"].to_string();
        assert!(
            !files.contains(".greentic/dev") && !files.contains("dev.secrets"),
            "{files}"
        );
        let packs: Vec<_> = result["packs"]
            .as_array()
            .expect("packs")
            .iter()
            .map(|p| p["pack_id"].clone())
            .collect();
        assert_eq!(packs, [json!("app"), json!("state-memory")]);
        let doctor = home.gtc(&["bundle", "doctor", first.to_str().expect("path")]);
        assert_eq!(doctor.code, 0, "{}", doctor.stdout);
        assert_eq!(doctor.stdout["result"]["runtime"]["status"], "ok");
    }
}

#[test]
fn a_leaking_bundle_is_not_written_unless_allowlisted() {
    // Proves: build refuses a tree with a secret (naming file, offset and
    // rule) and writes nothing; an allowlist entry with the finding's
    // fingerprint lets a documented false positive through.
    let home = Home::new();
    let dir = source_tree(&home, "leaky");
    std::fs::write(
        dir.join("config.env"),
        "AWS_ACCESS_KEY_ID=AKIAQ7ZP3KR9TN2WX4LM\n",
    )
    .expect("write");
    let out = home.dir.path().join("leaky.gtbundle");
    let refused = build(&home, &dir, &out, "squashfs");
    assert_eq!(
        (refused.code, refused.error_kind()),
        (1, "secret-leak"),
        "{}",
        refused.stderr
    );
    let finding = &refused.stderr["error"]["details"]["findings"][0];
    assert_eq!(finding["path"], "config.env");
    assert_eq!(finding["rule"], "aws-access-key-id");
    assert_eq!(finding["offset"], 18);
    assert!(!out.exists(), "nothing written");
    assert!(
        !refused.stderr.to_string().contains("AKIAQ7ZP3KR9TN2WX4LM"),
        "the secret itself is never printed"
    );

    let allowlist = json!({"schema": "greentic.scan-allowlist.v1", "allow": [{"fingerprint": finding["fingerprint"], "reason": "documented example key"}]});
    std::fs::write(dir.join(".gtbundle-allowlist.json"), allowlist.to_string()).expect("allowlist");
    let allowed = build(&home, &dir, &out, "squashfs");
    assert_eq!(allowed.code, 0, "{}", allowed.stderr);
    assert_eq!(allowed.stdout["result"]["scan"]["allowed"], 1);
}

#[test]
fn a_symlink_leaving_the_tree_is_refused() {
    let home = Home::new();
    let dir = source_tree(&home, "linky");
    std::os::unix::fs::symlink("/etc/hostname", dir.join("host")).expect("symlink");
    let refused = build(&home, &dir, &home.dir.path().join("x.gtbundle"), "zip");
    assert_eq!(refused.code, 1);
    assert!(
        refused.error_message().contains("leaves the bundle folder"),
        "{}",
        refused.error_message()
    );
}

fn stage_payload(deployment: &str, bundle: &Path) -> serde_json::Value {
    json!({"environment_id": "local", "deployment_id": deployment, "bundle_path": bundle})
}

#[test]
fn staging_a_bundle_file_records_digest_and_pinned_packs() {
    // Proves: `revisions stage` with bundle_path copies, verifies, extracts
    // and pins; a hostile or mismatched bundle leaves no trace.
    let home = Home::new();
    home.gtc(&["op", "env", "init"]);
    let deployment = id(
        &home.ok("bundles", "add", json!({"environment_id": "local", "bundle_id": "shop", "route_binding": {"path_prefixes": ["/shop"]}})),
        "deployment_id",
    );
    let bundle = home.dir.path().join("shop.gtbundle");
    assert_eq!(
        build(&home, &source_tree(&home, "shop"), &bundle, "squashfs").code,
        0
    );
    let staged = home.ok("revisions", "stage", stage_payload(&deployment, &bundle));
    let revision = id(&staged, "revision_id");
    let folder = home.root().join("local/revisions").join(&revision);
    assert!(folder.join("bundle.gtbundle").is_file() && folder.join("pack-list.lock").is_file());
    assert!(folder.join("bundle/bin/server").is_file());
    let shown = home.gtc(&["op", "env", "show", "local"]);
    let stored = &shown.stdout["result"]["revisions"][0];
    assert_eq!(stored["bundle_digest"], staged["bundle_digest"]);
    assert_eq!(
        stored["pack_list_lock_ref"],
        format!("revisions/{revision}/pack-list.lock")
    );
    let pinned: Vec<_> = stored["pack_list"]
        .as_array()
        .expect("pack list")
        .iter()
        .map(|p| p["pack_id"].clone())
        .collect();
    assert_eq!(pinned, [json!("app"), json!("state-memory")]);

    // The bundle's manifest names another bundle: refused, nothing kept.
    let other = home.dir.path().join("blog.gtbundle");
    assert_eq!(
        build(&home, &source_tree(&home, "blog"), &other, "zip").code,
        0
    );
    let mismatch = home.mutate("revisions", "stage", stage_payload(&deployment, &other));
    assert_eq!(
        mismatch.error_kind(),
        "invalid-argument",
        "{}",
        mismatch.stderr
    );
    assert!(
        mismatch.error_message().contains("declares bundle_id blog"),
        "{}",
        mismatch.error_message()
    );

    // A zip-slip bundle: refused with its rule, nothing kept.
    let slip = home.dir.path().join("slip.gtbundle");
    let mut writer = zip::ZipWriter::new(std::fs::File::create(&slip).expect("create"));
    writer
        .start_file("../../escape.txt", zip::write::SimpleFileOptions::default())
        .expect("start");
    writer.write_all(b"owned").expect("write");
    writer.finish().expect("finish");
    let hostile = home.mutate("revisions", "stage", stage_payload(&deployment, &slip));
    assert_eq!(hostile.error_kind(), "bundle-refused", "{}", hostile.stderr);
    assert_eq!(
        hostile.stderr["error"]["details"]["rule"],
        "parent-traversal"
    );
    let kept: Vec<_> = std::fs::read_dir(home.root().join("local/revisions"))
        .expect("revisions")
        .flatten()
        .collect();
    assert_eq!(kept.len(), 1, "only the good revision's folder remains");
    assert!(
        !home.root().join("escape.txt").exists() && !home.root().join("local/escape.txt").exists()
    );
    let revisions = home.gtc(&["op", "revisions", "list", "local"]);
    assert_eq!(
        revisions.stdout["result"]["revisions"]
            .as_array()
            .expect("list")
            .len(),
        1
    );
}

#[test]
fn fixture_bundles_stage_through_the_cli() {
    let fixtures =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/greentic-bundles");
    if !fixtures.is_dir() {
        eprintln!(
            "SKIPPED: {} is missing (it ships with the project's shared folder)",
            fixtures.display()
        );
        return;
    }
    let home = Home::new();
    home.gtc(&["op", "env", "init"]);
    let deployment = id(
        &home.ok(
            "bundles",
            "add",
            json!({"environment_id": "local", "bundle_id": "provider-packs-bundle"}),
        ),
        "deployment_id",
    );
    let staged = home.ok(
        "revisions",
        "stage",
        stage_payload(
            &deployment,
            &fixtures.join("provider-packs-bundle.gtbundle"),
        ),
    );
    let packs: Vec<_> = staged["packs"]
        .as_array()
        .expect("packs")
        .iter()
        .map(|p| p["pack_id"].clone())
        .collect();
    assert_eq!(
        packs,
        [
            json!("app"),
            json!("messaging-webchat-gui"),
            json!("state-memory")
        ]
    );
    assert_eq!(
        staged["runtime"], false,
        "the fixtures carry no runtime section"
    );
}

#[test]
fn warming_needs_a_runtime_section() {
    // Proves: a bundle without a runtime section stages, but warming it
    // persists `failed` with an error that says what to add; a bundle with
    // one moves on to warming, for the node's deployer to finish.
    let home = Home::new();
    home.gtc(&["op", "env", "init"]);
    let add = |bundle: &str| {
        id(
            &home.ok("bundles", "add", json!({"environment_id": "local", "bundle_id": bundle, "route_binding": {"path_prefixes": [format!("/{bundle}")]}})),
            "deployment_id",
        )
    };
    let bare_dir = source_tree(&home, "bare");
    std::fs::write(
        bare_dir.join("bundle.yaml"),
        "schema_version: 1\nbundle_id: bare\n",
    )
    .expect("no runtime");
    let bare = home.dir.path().join("bare.gtbundle");
    assert_eq!(build(&home, &bare_dir, &bare, "squashfs").code, 0);
    let deployment = add("bare");
    let revision = id(
        &home.ok("revisions", "stage", stage_payload(&deployment, &bare)),
        "revision_id",
    );
    let warm = home.mutate(
        "revisions",
        "warm",
        json!({"environment_id": "local", "revision_id": revision}),
    );
    assert_eq!(
        (warm.code, warm.error_kind()),
        (1, "health-gate-failed"),
        "{}",
        warm.stderr
    );
    assert!(
        warm.error_message().contains("runtime-section")
            && warm.error_message().contains("command"),
        "{}",
        warm.error_message()
    );
    let listed = home.gtc(&["op", "revisions", "list", "local"]);
    assert_eq!(
        listed.stdout["result"]["revisions"][0]["lifecycle"],
        "failed"
    );

    let good = home.dir.path().join("shop.gtbundle");
    assert_eq!(
        build(&home, &source_tree(&home, "shop"), &good, "zip").code,
        0
    );
    let deployment = add("shop");
    let revision = id(
        &home.ok("revisions", "stage", stage_payload(&deployment, &good)),
        "revision_id",
    );
    let warmed = home.ok(
        "revisions",
        "warm",
        json!({"environment_id": "local", "revision_id": revision}),
    );
    // It has instances to run: the node's deployer takes it from here.
    assert_eq!(warmed["lifecycle"], "warming");
}

#[test]
fn doctor_finds_a_secret_inside_a_nested_pack() {
    // Proves: the doctor scans inside nested .gtpack ZIPs and exits 1 with
    // the file, offset and rule of each finding.
    let home = Home::new();
    let mut inner = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    inner
        .start_file("config/keys.txt", zip::write::SimpleFileOptions::default())
        .expect("start");
    inner
        .write_all(b"token: ghp_R4nd0mL00k1ngT0k3nV4lu3Abcdefgh123456\n")
        .expect("write");
    let pack = inner.finish().expect("finish").into_inner();
    let bundle = home.dir.path().join("nested.gtbundle");
    let mut outer = zip::ZipWriter::new(std::fs::File::create(&bundle).expect("create"));
    let options = zip::write::SimpleFileOptions::default();
    outer.start_file("bundle.yaml", options).expect("start");
    outer
        .write_all(b"schema_version: 1\nbundle_id: nested\n")
        .expect("write");
    outer
        .start_file("packs/app.gtpack", options)
        .expect("start");
    outer.write_all(&pack).expect("write");
    outer.finish().expect("finish");
    let doctor = home.gtc(&["bundle", "doctor", bundle.to_str().expect("path")]);
    assert_eq!(doctor.code, 1, "{}", doctor.stdout);
    let findings = doctor.stdout["result"]["secrets"]["findings"]
        .as_array()
        .expect("findings")
        .clone();
    let nested = findings
        .iter()
        .find(|f| f["path"] == "packs/app.gtpack!config/keys.txt")
        .unwrap_or_else(|| panic!("no nested finding in {findings:?}"));
    assert_eq!(nested["rule"], "github-token");
    assert_eq!(nested["offset"], 7);
    assert!(
        !doctor.stdout.to_string().contains("R4nd0mL00k1ng"),
        "the secret is never printed"
    );
}

#[test]
fn a_bundle_without_runtime_packs_builds_with_a_warning_and_fails_the_doctor() {
    // Proves: `bundle build` writes a bundle staging would refuse (no
    // runtime packs) but warns, saying what to add; `bundle doctor` fails
    // on it; a bundle with a pack gets no warning.
    let home = Home::new();
    let dir = home.dir.path().join("src-nopacks");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(
        dir.join("bundle.yaml"),
        "schema_version: 1\nbundle_id: empty\n",
    )
    .expect("manifest");
    let out = home.dir.path().join("empty.gtbundle");
    let built = build(&home, &dir, &out, "zip");
    assert_eq!(built.code, 0, "{:?}", built.raw);
    let warnings = built.stdout["result"]["warnings"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(warnings.len(), 1, "{}", built.stdout);
    let warning = warnings[0].as_str().unwrap_or_default();
    assert!(
        warning.contains("no runtime packs") && warning.contains("packs/"),
        "{warning}"
    );
    let stderr = String::from_utf8_lossy(&built.raw.stderr);
    assert!(
        stderr.contains("warning: staging will refuse this bundle"),
        "{stderr}"
    );

    let doctor = home.gtc(&["bundle", "doctor", out.to_str().expect("utf8")]);
    assert_eq!(doctor.code, 1, "{:?}", doctor.raw);
    assert_eq!(
        doctor.stdout["result"]["packs"]["status"], "error",
        "{}",
        doctor.stdout
    );

    let good = source_tree(&home, "shop");
    let good_out = home.dir.path().join("good.gtbundle");
    let built = build(&home, &good, &good_out, "zip");
    assert_eq!(built.code, 0);
    assert_eq!(
        built.stdout["result"]["warnings"],
        serde_json::json!([]),
        "{}",
        built.stdout
    );
}

/// A ZIP holding `entries` in order, repeated names included: the zip
/// writer refuses a repeat, so each entry is written under a same-length
/// placeholder that is then patched in the local and central headers.
fn zip_with_repeated_names(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let placeholder = |index: usize, name: &str| {
        let tag = format!("~{index}~");
        format!("{tag}{}", "_".repeat(name.len() - tag.len()))
    };
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (index, (name, data)) in entries.iter().enumerate() {
        writer
            .start_file(
                placeholder(index, name),
                zip::write::SimpleFileOptions::default(),
            )
            .expect("start");
        writer.write_all(data).expect("write");
    }
    let mut bytes = writer.finish().expect("finish").into_inner();
    for (index, (name, _)) in entries.iter().enumerate() {
        let from = placeholder(index, name);
        let mut patched = 0;
        while let Some(at) = bytes.windows(from.len()).position(|w| w == from.as_bytes()) {
            bytes[at..at + name.len()].copy_from_slice(name.as_bytes());
            patched += 1;
        }
        assert_eq!(patched, 2, "one local and one central header");
    }
    bytes
}

#[test]
fn duplicate_entries_are_refused_alike_by_inspect_doctor_and_stage() {
    // Proves the class of issue 20 item 1 through the binary: a bundle
    // whose entries name one file twice (after normalisation) is refused
    // by `bundle inspect`, `bundle doctor` and staging with the same rule,
    // and staging keeps nothing.
    let home = Home::new();
    home.gtc(&["op", "env", "init"]);
    let deployment = id(
        &home.ok("bundles", "add", json!({"environment_id": "local", "bundle_id": "first", "route_binding": {"path_prefixes": ["/first"]}})),
        "deployment_id",
    );
    let manifest = |bundle: &str| {
        format!(
            r#"{{"schema_version":1,"bundle_id":"{bundle}","runtime":{{"command":["bin/server"]}}}}"#
        )
    };
    let (first, second) = (manifest("first"), manifest("second"));
    let app = gtpack("app");
    let exact = zip_with_repeated_names(&[
        ("bundle-manifest.json", first.as_bytes()),
        ("packs/app.gtpack", &app),
        ("bundle-manifest.json", second.as_bytes()),
    ]);
    let dotted = zip_with_repeated_names(&[
        ("bundle-manifest.json", first.as_bytes()),
        ("packs/app.gtpack", &app),
        ("./packs/app.gtpack", &app),
    ]);
    // Tar's repeats are refused by the same rule; bundle/tests/hostile.rs
    // covers every format at the library level.
    for (name, bytes) in [("exact.zip", exact), ("dotted.zip", dotted)] {
        let path = home.dir.path().join(name);
        std::fs::write(&path, bytes).expect("write");
        let file = path.to_str().expect("utf8");
        for verb in ["inspect", "doctor"] {
            let run = home.gtc(&["bundle", verb, file]);
            assert_eq!(run.code, 1, "{name} {verb}: {:?}", run.raw);
            assert_eq!(run.error_kind(), "bundle-refused", "{name} {verb}");
            assert_eq!(
                run.stderr["error"]["details"]["rule"], "duplicate-entry",
                "{name} {verb}: {}",
                run.stderr
            );
        }
        let staged = home.mutate("revisions", "stage", stage_payload(&deployment, &path));
        assert_eq!(
            staged.error_kind(),
            "bundle-refused",
            "{name}: {}",
            staged.stderr
        );
        assert_eq!(
            staged.stderr["error"]["details"]["rule"], "duplicate-entry",
            "{name}"
        );
        let kept = std::fs::read_dir(home.root().join("local/revisions"))
            .map(|entries| entries.count())
            .unwrap_or(0);
        assert_eq!(
            kept, 0,
            "{name}: a refused bundle leaves no revision folder"
        );
    }
}

/// A ZIP bundle of `files` (name, bytes) and `links` (name, target).
fn zip_bundle(path: &Path, files: &[(&str, &[u8])], links: &[(&str, &str)]) {
    let mut writer = zip::ZipWriter::new(std::fs::File::create(path).expect("create"));
    let options = zip::write::SimpleFileOptions::default().unix_permissions(0o755);
    for (name, data) in files {
        writer.start_file(*name, options).expect("start");
        writer.write_all(data).expect("write");
    }
    for (name, target) in links {
        writer
            .add_symlink(*name, *target, zip::write::SimpleFileOptions::default())
            .expect("link");
    }
    writer.finish().expect("finish");
}

#[test]
fn doctor_fails_on_everything_staging_or_the_dev_secret_rule_refuses() {
    // Issue 20's class: `bundle doctor` is unhealthy (exit 1) on every
    // bundle that staging or warming would refuse, or that carries what the
    // dev-secret rule leaves out, and says so in the words those use.
    let home = Home::new();
    home.gtc(&["op", "env", "init"]);
    let deployment = id(
        &home.ok("bundles", "add", json!({"environment_id": "local", "bundle_id": "doc", "route_binding": {"path_prefixes": ["/doc"]}})),
        "deployment_id",
    );
    let yaml = b"schema_version: 1\nbundle_id: doc\nruntime:\n  command: [bin/server]\n";
    let app = gtpack("app");
    let server: &[u8] = b"#!/bin/sh\n";
    let doctor = |name: &str, files: &[(&str, &[u8])], links: &[(&str, &str)]| {
        let path = home.dir.path().join(name);
        zip_bundle(&path, files, links);
        let run = home.gtc(&["bundle", "doctor", path.to_str().expect("utf8")]);
        (path, run)
    };

    // A healthy bundle, for contrast.
    let (_, good) = doctor(
        "good.zip",
        &[
            ("bundle.yaml", yaml),
            ("bin/server", server),
            ("packs/app.gtpack", &app),
        ],
        &[],
    );
    assert_eq!(good.code, 0, "{}", good.stdout);

    // runtime.command names a file the bundle lacks: warming refuses it.
    let (path, run) = doctor(
        "no-program.zip",
        &[("bundle.yaml", yaml), ("packs/app.gtpack", &app)],
        &[],
    );
    assert_eq!(run.code, 1, "{}", run.stdout);
    let message = run.stdout["result"]["runtime"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.contains("is not a file in the bundle"),
        "{}",
        run.stdout
    );
    let staged = home.ok("revisions", "stage", stage_payload(&deployment, &path));
    let warm = home.mutate(
        "revisions",
        "warm",
        json!({"environment_id": "local", "revision_id": staged["revision_id"]}),
    );
    assert_eq!(warm.code, 1, "{}", warm.stdout);
    assert!(
        warm.error_message().contains(&message),
        "warming and the doctor say the same: {} / {message}",
        warm.error_message()
    );

    // No runtime section: warming refuses it.
    let (_, run) = doctor(
        "no-runtime.zip",
        &[
            ("bundle.yaml", b"schema_version: 1\nbundle_id: doc\n"),
            ("packs/app.gtpack", &app),
        ],
        &[],
    );
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert_eq!(run.stdout["result"]["runtime"]["status"], "error");

    // No runtime packs: staging refuses it, with the same message.
    let (path, run) = doctor(
        "no-packs.zip",
        &[("bundle.yaml", yaml), ("bin/server", server)],
        &[],
    );
    assert_eq!(run.code, 1, "{}", run.stdout);
    let refused = home.mutate("revisions", "stage", stage_payload(&deployment, &path));
    assert_eq!(refused.code, 1);
    assert_eq!(
        run.stdout["result"]["staging"]["message"], refused.stderr["error"]["message"],
        "staging and the doctor say the same"
    );

    // What the dev-secret rule leaves out, with content no scanner rule
    // matches, and a link to such a file that the archive does not hold.
    let dev_rule = |relative: &str| -> String {
        let source = home
            .dir
            .path()
            .join(format!("src-{}", relative.replace('/', "_")));
        let file = source.join(relative);
        std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
        std::fs::write(&file, b"harmless").expect("write");
        std::fs::write(source.join("bundle.yaml"), yaml).expect("yaml");
        let out = home
            .dir
            .path()
            .join(format!("{}.gtbundle", relative.replace('/', "_")));
        let built = build(&home, &source, &out, "zip");
        built.stdout["result"]["skipped"][0]["reason"]
            .as_str()
            .unwrap_or_else(|| panic!("build did not skip {relative}: {}", built.stdout))
            .to_owned()
    };
    for (name, relative, dev_file) in [
        ("dev-dir.zip", ".greentic/dev/token", true),
        ("dev-env.zip", "config/app.dev.secrets.env", true),
        ("dev-link.zip", "config/app.dev.secrets.env", false),
    ] {
        let reason = dev_rule(relative);
        let mut files: Vec<(&str, &[u8])> = vec![
            ("bundle.yaml", yaml),
            ("bin/server", server),
            ("packs/app.gtpack", &app),
        ];
        let links: Vec<(&str, &str)> = if dev_file {
            files.push((relative, b"harmless"));
            vec![]
        } else {
            vec![("app.env", relative)]
        };
        let (_, run) = doctor(name, &files, &links);
        assert_eq!(run.code, 1, "{name}: {}", run.stdout);
        let problems = run.stdout["result"]["dev_secrets"].to_string();
        assert!(
            problems.contains(&reason),
            "{name}: {problems} lacks {reason:?}"
        );
    }
}

#[test]
fn a_build_never_packs_an_earlier_build_output() {
    // Issue 20 item 11's class: outputs written into the source folder,
    // under any name and format, are left out of later builds (and listed
    // as skipped); the packs in the folder are still packed, and the result
    // is the same bundle as a build written outside the folder.
    let home = Home::new();
    let dir = source_tree(&home, "outputs");
    let path = |name: &str| dir.join(name);
    assert_eq!(build(&home, &dir, &path("v1.gtbundle"), "squashfs").code, 0);
    assert_eq!(build(&home, &dir, &path("v2.zip"), "zip").code, 0);
    let latest = build(&home, &dir, &path("v3.gtbundle"), "squashfs");
    assert_eq!(latest.code, 0, "{:?}", latest.raw);
    let skipped: Vec<String> = latest.stdout["result"]["skipped"]
        .as_array()
        .expect("skipped")
        .iter()
        .map(|s| s["path"].as_str().unwrap_or_default().to_owned())
        .collect();
    for output in ["v1.gtbundle", "v2.zip"] {
        assert!(
            skipped.contains(&output.to_owned()),
            "{output}: {skipped:?}"
        );
    }
    let inspected = home.gtc(&[
        "bundle",
        "inspect",
        path("v3.gtbundle").to_str().expect("utf8"),
    ]);
    let files = inspected.stdout["result"]["files"].to_string();
    assert!(
        !files.contains("v1.gtbundle") && !files.contains("v2.zip"),
        "{files}"
    );
    assert!(
        files.contains("packs/app.gtpack"),
        "packs are still packed: {files}"
    );
    // The same bytes as a build whose output lies outside the folder, once
    // the earlier outputs are gone from the folder too.
    let outside = home.dir.path().join("outside.gtbundle");
    std::fs::remove_file(path("v1.gtbundle")).expect("rm");
    std::fs::remove_file(path("v2.zip")).expect("rm");
    std::fs::rename(path("v3.gtbundle"), home.dir.path().join("v3.gtbundle")).expect("mv");
    let clean = build(&home, &dir, &outside, "squashfs");
    assert_eq!(
        clean.stdout["result"]["digest"],
        latest.stdout["result"]["digest"]
    );
}
