//! A corpus of hostile archives, made here: each is refused with the right
//! rule, and nothing is written outside (or inside) the target.

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

use bundle::extract::extract;
use bundle::read::ArchiveError;
use bundle::{BundleFormat, ExtractLimits, Rule};

/// One tar member, written with raw header fields so that names the tar
/// crate's safe setters refuse (`..`, absolute paths) can be produced.
struct Member<'a> {
    name: &'a [u8],
    kind: tar::EntryType,
    data: &'a [u8],
    link: &'a [u8],
}

fn member<'a>(name: &'a str, data: &'a [u8]) -> Member<'a> {
    Member {
        name: name.as_bytes(),
        kind: tar::EntryType::Regular,
        data,
        link: b"",
    }
}

fn tar_bytes(members: &[Member]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for member in members {
        let mut header = tar::Header::new_old();
        let old = header.as_old_mut();
        old.name[..member.name.len()].copy_from_slice(member.name);
        old.linkname[..member.link.len()].copy_from_slice(member.link);
        header.set_entry_type(member.kind);
        header.set_size(member.data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_cksum();
        builder.append(&header, member.data).expect("append");
    }
    builder.into_inner().expect("finish tar")
}

fn zip_bytes(build: impl FnOnce(&mut zip::ZipWriter<Cursor<Vec<u8>>>)) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    build(&mut writer);
    writer.finish().expect("finish zip").into_inner()
}

fn zip_options() -> zip::write::SimpleFileOptions {
    zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated)
}

fn squashfs_bytes(build: impl FnOnce(&mut backhand::FilesystemWriter)) -> Vec<u8> {
    let mut writer = backhand::FilesystemWriter::default();
    build(&mut writer);
    let mut out = Cursor::new(Vec::new());
    writer.write(&mut out).expect("write squashfs");
    out.into_inner()
}

fn header() -> backhand::NodeHeader {
    backhand::NodeHeader::new(0o644, 0, 0, 0)
}

/// Every file under `dir`, relative.
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current).into_iter().flatten().flatten() {
            let path = entry.path();
            found.push(path.strip_prefix(dir).expect("under dir").to_owned());
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Extracts `bytes` saved as `name`; returns the outcome and checks that a
/// refusal left the sandbox exactly as it was.
fn try_extract(bytes: &[u8], name: &str, limits: ExtractLimits) -> Result<(), ArchiveError> {
    let sandbox = tempfile::tempdir().expect("tempdir");
    let archive = sandbox.path().join("in").join(name);
    std::fs::create_dir_all(archive.parent().expect("parent")).expect("mkdir");
    std::fs::write(&archive, bytes).expect("write archive");
    let target = sandbox.path().join("env/revisions/r1/bundle");
    std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
    let before = tree(sandbox.path());
    let format = bundle::read::detect_file(&archive)?;
    let result = extract(&archive, format, &target, limits).map(|_| ());
    if result.is_err() {
        assert_eq!(
            tree(sandbox.path()),
            before,
            "{name}: a refused archive must leave nothing behind"
        );
    }
    result
}

fn assert_refused(bytes: &[u8], name: &str, rule: Rule) {
    assert_refused_with(bytes, name, rule, ExtractLimits::default());
}

fn assert_refused_with(bytes: &[u8], name: &str, rule: Rule, limits: ExtractLimits) {
    match try_extract(bytes, name, limits) {
        Err(error) => assert_eq!(error.rule(), Some(rule), "{name}: {error}"),
        Ok(()) => panic!("{name}: a hostile archive was accepted"),
    }
}

#[test]
fn zip_slip_and_absolute_paths_are_refused() {
    let slip = zip_bytes(|z| {
        z.start_file("ok.txt", zip_options()).expect("start");
        z.write_all(b"fine").expect("write");
        z.start_file("../../evil.txt", zip_options())
            .expect("start");
        z.write_all(b"owned").expect("write");
    });
    assert_refused(&slip, "slip.zip", Rule::ParentTraversal);
    let absolute = zip_bytes(|z| {
        z.start_file("/tmp/evil.txt", zip_options()).expect("start");
    });
    assert_refused(&absolute, "absolute.zip", Rule::AbsolutePath);
    let drive = zip_bytes(|z| {
        z.start_file("C:/evil.txt", zip_options()).expect("start");
    });
    assert_refused(&drive, "drive.zip", Rule::DrivePrefix);
}

#[test]
fn tar_slip_absolute_and_bad_names_are_refused() {
    assert_refused(
        &tar_bytes(&[member("a/../../evil.txt", b"x")]),
        "slip.tar",
        Rule::ParentTraversal,
    );
    assert_refused(
        &tar_bytes(&[member("/etc/evil", b"x")]),
        "absolute.tar",
        Rule::AbsolutePath,
    );
    let non_utf8 = Member {
        name: b"bad\xff.txt",
        kind: tar::EntryType::Regular,
        data: b"x",
        link: b"",
    };
    assert_refused(&tar_bytes(&[non_utf8]), "utf8.tar", Rule::NonUtf8Name);
    assert_refused(
        &tar_bytes(&[member("a//b", b"x")]),
        "empty.tar",
        Rule::EmptyName,
    );
}

#[test]
fn symlink_and_hardlink_escapes_are_refused() {
    let link = |name: &'static str, target: &'static str, kind| Member {
        name: name.as_bytes(),
        kind,
        data: b"",
        link: target.as_bytes(),
    };
    let escape = tar_bytes(&[link("link", "../../outside", tar::EntryType::Symlink)]);
    assert_refused(&escape, "symlink.tar", Rule::SymlinkEscape);
    let absolute = tar_bytes(&[link("link", "/etc/passwd", tar::EntryType::Symlink)]);
    assert_refused(&absolute, "symlink-abs.tar", Rule::SymlinkEscape);
    // Each link looks inside on its own; together they climb out:
    // sub/up -> .. (the root), x -> sub/up/../escaped (the root's parent).
    std::fs::create_dir_all(std::env::temp_dir()).expect("tmp");
    let chained = tar_bytes(&[
        Member {
            name: b"sub/",
            kind: tar::EntryType::Directory,
            data: b"",
            link: b"",
        },
        link("sub/up", "..", tar::EntryType::Symlink),
        link("x", "sub/up/..", tar::EntryType::Symlink),
    ]);
    assert_refused(&chained, "chained.tar", Rule::SymlinkEscape);
    let through = tar_bytes(&[
        Member {
            name: b"real/",
            kind: tar::EntryType::Directory,
            data: b"",
            link: b"",
        },
        link("dir", "real", tar::EntryType::Symlink),
        member("dir/file.txt", b"written through a link"),
    ]);
    assert_refused(&through, "through.tar", Rule::WriteThroughSymlink);
    let hard = tar_bytes(&[link("h", "../../etc/passwd", tar::EntryType::Link)]);
    assert_refused(&hard, "hardlink.tar", Rule::HardlinkEscape);
    let dangling = tar_bytes(&[link("h", "not-extracted", tar::EntryType::Link)]);
    assert_refused(&dangling, "hardlink-missing.tar", Rule::HardlinkEscape);
    let zip_link = zip_bytes(|z| {
        z.add_symlink("link", "../../../etc/shadow", zip_options())
            .expect("symlink");
    });
    assert_refused(&zip_link, "symlink.zip", Rule::SymlinkEscape);
    let squash_link = squashfs_bytes(|w| {
        w.push_symlink("../../outside", "/link", header())
            .expect("symlink");
    });
    assert_refused(&squash_link, "symlink.gtbundle", Rule::SymlinkEscape);
}

#[test]
fn links_that_stay_inside_are_kept() {
    let inside = tar_bytes(&[
        member("bin/server", b"#!/bin/sh\n"),
        Member {
            name: b"current",
            kind: tar::EntryType::Symlink,
            data: b"",
            link: b"bin/server",
        },
        Member {
            name: b"copy",
            kind: tar::EntryType::Link,
            data: b"",
            link: b"bin/server",
        },
    ]);
    try_extract(&inside, "inside.tar", ExtractLimits::default()).expect("accepted");
}

#[test]
fn duplicates_devices_and_fifos_are_refused() {
    assert_refused(
        &tar_bytes(&[member("a.txt", b"1"), member("a.txt", b"2")]),
        "dup.tar",
        Rule::DuplicateEntry,
    );
    assert_refused(
        &tar_bytes(&[member("a.txt", b"1"), member("./a.txt", b"2")]),
        "dup-dot.tar",
        Rule::DuplicateEntry,
    );
    let device = Member {
        name: b"dev",
        kind: tar::EntryType::Char,
        data: b"",
        link: b"",
    };
    assert_refused(&tar_bytes(&[device]), "device.tar", Rule::SpecialFile);
    let fifo = Member {
        name: b"fifo",
        kind: tar::EntryType::Fifo,
        data: b"",
        link: b"",
    };
    assert_refused(&tar_bytes(&[fifo]), "fifo.tar", Rule::SpecialFile);
    let squash_fifo = squashfs_bytes(|w| {
        w.push_fifo("/fifo", header()).expect("fifo");
    });
    assert_refused(&squash_fifo, "fifo.gtbundle", Rule::SpecialFile);
}

/// A ZIP whose entries carry `names` in order. The zip writer refuses a
/// repeated name, so each is written under a unique placeholder of the
/// same length and the placeholder bytes are then replaced in the local
/// and central headers (the CRCs cover content, not names).
fn zip_with_names(names: &[(&str, &[u8])]) -> Vec<u8> {
    let placeholders: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(index, (name, _))| {
            let tag = format!("~{index}~");
            assert!(name.len() >= tag.len(), "{name} is too short to patch");
            format!("{tag}{}", "_".repeat(name.len() - tag.len()))
        })
        .collect();
    let mut bytes = zip_bytes(|z| {
        for (placeholder, (_, data)) in placeholders.iter().zip(names) {
            z.start_file(placeholder.as_str(), zip_options())
                .expect("start");
            z.write_all(data).expect("write");
        }
    });
    for (placeholder, (name, _)) in placeholders.iter().zip(names) {
        let mut at = 0;
        let mut patched = 0;
        while let Some(found) = bytes[at..]
            .windows(placeholder.len())
            .position(|w| w == placeholder.as_bytes())
        {
            let start = at + found;
            bytes[start..start + name.len()].copy_from_slice(name.as_bytes());
            at = start + name.len();
            patched += 1;
        }
        assert_eq!(
            patched, 2,
            "{placeholder}: one local and one central header"
        );
    }
    bytes
}

#[test]
fn duplicate_entries_after_normalisation_are_refused_in_every_format() {
    // Proves the class of issue 20 item 1: two entries that name the same
    // file once normalized are refused by one rule, whatever the format
    // (ZIP's reader keys entries by name and used to hide the first copy),
    // by extraction and by inspection alike, and nothing is written.
    let manifest = |id: &str| format!(r#"{{"schema_version":1,"bundle_id":"{id}"}}"#);
    let (first, second) = (manifest("first"), manifest("second"));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "exact.zip",
            zip_with_names(&[
                ("bundle-manifest.json", first.as_bytes()),
                ("bundle-manifest.json", second.as_bytes()),
            ]),
        ),
        (
            "dot.zip",
            zip_with_names(&[("a/b.txt", b"1"), ("./a/b.txt", b"2")]),
        ),
        (
            "dot-dir.zip",
            zip_with_names(&[("a/b.txt", b"1"), ("a/./b.txt", b"2")]),
        ),
        (
            "exact-late.zip",
            zip_with_names(&[("x.txt", b"1"), ("y.txt", b"2"), ("x.txt", b"3")]),
        ),
        (
            "exact.tar",
            tar_bytes(&[member("a.txt", b"1"), member("a.txt", b"2")]),
        ),
        (
            "dot.tar",
            tar_bytes(&[member("a.txt", b"1"), member("./a.txt", b"2")]),
        ),
        (
            "exact.tar.gz",
            gzip(&tar_bytes(&[
                member("bundle-manifest.json", first.as_bytes()),
                member("bundle-manifest.json", second.as_bytes()),
            ])),
        ),
    ];
    for (name, bytes) in &cases {
        assert_refused(bytes, name, Rule::DuplicateEntry);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).expect("write");
        let inspected = bundle::inspect::inspect(&path, ExtractLimits::default());
        match inspected {
            Err(error) => {
                assert_eq!(error.rule(), Some(Rule::DuplicateEntry), "{name}: {error}");
                assert!(
                    error.to_string().contains("appears more than once"),
                    "{name}: {error}"
                );
            }
            Ok(inspection) => panic!("{name}: inspect accepted a duplicate: {inspection:?}"),
        }
    }
    // The same names without the repeat are accepted: the rule is about
    // the repeat, not about the names.
    let single = zip_with_names(&[("bundle-manifest.json", first.as_bytes())]);
    assert!(try_extract(&single, "single.zip", ExtractLimits::default()).is_ok());
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).expect("gzip");
    encoder.finish().expect("gzip")
}

#[test]
fn every_corrupt_archive_error_says_why() {
    // Issue 20's class "honest reports": a refusal of an unreadable archive
    // always carries a reason (backhand displays some errors as "", which
    // used to end the message at "is not a readable squashfs archive: ").
    // Incompressible, so every cut lands in data the image needs.
    let mut state = 0x2545_f491_u32;
    let noise: Vec<u8> = (0..256 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect();
    let good_squash = squashfs_bytes(|w| {
        w.push_file(Cursor::new(noise), "/a.txt", header())
            .expect("file");
    });
    let good_zip = zip_bytes(|z| {
        z.start_file("a.txt", zip_options()).expect("start");
        z.write_all(&[7u8; 10_000]).expect("write");
    });
    let mut cases: Vec<(String, Vec<u8>)> = vec![
        ("hsqs.gtbundle".into(), b"hsqs".to_vec()),
        (
            "zeros.gtbundle".into(),
            [b"hsqs".as_slice(), &[0u8; 200]].concat(),
        ),
        (
            "ones.gtbundle".into(),
            [b"hsqs".as_slice(), &[0xffu8; 200]].concat(),
        ),
        ("zip-head.zip".into(), good_zip[..30].to_vec()),
    ];
    for cut in [8, 64, 96, 200, good_squash.len() / 3] {
        cases.push((format!("cut-{cut}.gtbundle"), good_squash[..cut].to_vec()));
    }
    for (name, bytes) in &cases {
        let Err(error) = try_extract(bytes, name, ExtractLimits::default()) else {
            panic!("{name}: a corrupt archive was accepted");
        };
        let reason = match &error {
            ArchiveError::Corrupt { reason, .. } | ArchiveError::Truncated { reason, .. } => {
                reason.clone()
            }
            other => other.to_string(),
        };
        assert!(
            !reason.trim().is_empty() && !error.to_string().trim_end().ends_with(':'),
            "{name}: the refusal does not say why: {error}"
        );
    }
}

#[test]
fn zip_bombs_and_oversized_archives_are_refused() {
    // 16 MiB of zeros deflates to ~16 KiB: a ratio near 1000.
    let zeros = vec![0u8; 16 * 1024 * 1024];
    let bomb = zip_bytes(|z| {
        z.start_file("bomb.bin", zip_options()).expect("start");
        z.write_all(&zeros).expect("write");
    });
    let small_floor = ExtractLimits {
        ratio_floor_bytes: 1024 * 1024,
        ..ExtractLimits::default()
    };
    assert_refused_with(&bomb, "bomb.zip", Rule::CompressionRatio, small_floor);
    let small_total = ExtractLimits {
        total_bytes_max: 1024 * 1024,
        ..ExtractLimits::default()
    };
    assert_refused_with(&bomb, "large.zip", Rule::TooLarge, small_total);
    let many: Vec<String> = (0..11).map(|i| format!("f{i}")).collect();
    let members: Vec<Member> = many.iter().map(|n| member(n, b"x")).collect();
    let few = ExtractLimits {
        entries_max: 10,
        ..ExtractLimits::default()
    };
    assert_refused_with(&tar_bytes(&members), "many.tar", Rule::TooManyEntries, few);
}

#[test]
fn truncated_and_corrupted_archives_are_refused_cleanly() {
    // Incompressible content, so that the damage lands in compressed data.
    let mut state = 0x9e37_79b9_u32;
    let noise: Vec<u8> = (0..64 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect();
    let good_zip = zip_bytes(|z| {
        z.start_file("a.txt", zip_options()).expect("start");
        z.write_all(&noise).expect("write");
    });
    let truncated = &good_zip[..good_zip.len() / 2];
    assert!(matches!(
        try_extract(truncated, "truncated.zip", ExtractLimits::default()),
        Err(ArchiveError::Corrupt { .. })
    ));
    let mut flipped = good_zip.clone();
    for byte in &mut flipped[2000..2200] {
        *byte ^= 0x5a;
    }
    let error =
        try_extract(&flipped, "flipped.zip", ExtractLimits::default()).expect_err("corrupt");
    assert!(
        matches!(
            error,
            ArchiveError::Corrupt { .. } | ArchiveError::Truncated { .. }
        ),
        "{error}"
    );

    let good_tar = tar_bytes(&[member("a.txt", &[b'a'; 4096])]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&good_tar).expect("gzip");
    let gz = gz.finish().expect("gzip");
    let error = try_extract(
        &gz[..gz.len() - 20],
        "truncated.tar.gz",
        ExtractLimits::default(),
    )
    .expect_err("truncated");
    assert!(
        matches!(
            error,
            ArchiveError::Corrupt { .. } | ArchiveError::Truncated { .. }
        ),
        "{error}"
    );

    let mut bad_superblock = b"hsqs".to_vec();
    bad_superblock.extend_from_slice(&[0xff; 200]);
    let error = try_extract(&bad_superblock, "bad.gtbundle", ExtractLimits::default())
        .expect_err("bad superblock");
    assert!(
        matches!(
            error,
            ArchiveError::Corrupt {
                format: BundleFormat::Squashfs,
                ..
            }
        ),
        "{error}"
    );
    let good_squash = squashfs_bytes(|w| {
        w.push_file(Cursor::new(noise.repeat(5)), "/a.txt", header())
            .expect("file");
    });
    let error = try_extract(
        &good_squash[..good_squash.len() / 3],
        "cut.gtbundle",
        ExtractLimits::default(),
    )
    .expect_err("cut");
    assert!(
        matches!(
            error,
            ArchiveError::Corrupt { .. } | ArchiveError::Truncated { .. }
        ),
        "{error}"
    );
}

#[test]
fn permissions_are_normalized() {
    use std::os::unix::fs::PermissionsExt;
    let mut script = tar::Header::new_gnu();
    script.set_path("bin/start.sh").expect("path");
    script.set_size(3);
    script.set_mode(0o4777);
    script.set_cksum();
    let mut plain = tar::Header::new_gnu();
    plain.set_path("etc/config").expect("path");
    plain.set_size(3);
    plain.set_mode(0o666);
    plain.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    builder.append(&script, &b"#!x"[..]).expect("append");
    builder.append(&plain, &b"a=b"[..]).expect("append");
    let bytes = builder.into_inner().expect("tar");
    let sandbox = tempfile::tempdir().expect("tempdir");
    let archive = sandbox.path().join("perm.tar");
    std::fs::write(&archive, bytes).expect("write");
    let target = sandbox.path().join("out");
    extract(
        &archive,
        BundleFormat::Tar,
        &target,
        ExtractLimits::default(),
    )
    .expect("extract");
    let mode = |p: &str| {
        std::fs::metadata(target.join(p))
            .expect("stat")
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(
        mode("bin/start.sh"),
        0o755,
        "setuid and world-write dropped, execute kept"
    );
    assert_eq!(mode("etc/config"), 0o644);
    assert_eq!(mode("bin"), 0o755);
}

#[test]
fn every_format_extracts_the_same_tree() {
    // Proves: tar, tar.gz, tar.zst, zip and squashfs all reach the same
    // content through the one entry model.
    let members = [
        member("bundle.yaml", b"schema_version: 1\nbundle_id: x\n"),
        member("packs/app.gtpack", b"PK"),
    ];
    let tar = tar_bytes(&members);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).expect("gzip");
    let gz = gz.finish().expect("gzip");
    let zst = zstd::encode_all(tar.as_slice(), 3).expect("zstd");
    let zip = zip_bytes(|z| {
        z.start_file("bundle.yaml", zip_options()).expect("start");
        z.write_all(b"schema_version: 1\nbundle_id: x\n")
            .expect("write");
        z.start_file("packs/app.gtpack", zip_options())
            .expect("start");
        z.write_all(b"PK").expect("write");
    });
    let squash = squashfs_bytes(|w| {
        w.push_file(
            Cursor::new(b"schema_version: 1\nbundle_id: x\n".to_vec()),
            "/bundle.yaml",
            header(),
        )
        .expect("file");
        w.push_dir("/packs", backhand::NodeHeader::new(0o755, 0, 0, 0))
            .expect("dir");
        w.push_file(Cursor::new(b"PK".to_vec()), "/packs/app.gtpack", header())
            .expect("file");
    });
    for (bytes, name) in [
        (tar, "b.tar"),
        (gz, "b.tar.gz"),
        (zst, "b.tar.zst"),
        (zip, "b.zip"),
        (squash, "b.gtbundle"),
    ] {
        let sandbox = tempfile::tempdir().expect("tempdir");
        let archive = sandbox.path().join(name);
        std::fs::write(&archive, &bytes).expect("write");
        let format = bundle::read::detect_file(&archive).expect("detect");
        let target = sandbox.path().join("out");
        extract(&archive, format, &target, ExtractLimits::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            std::fs::read(target.join("packs/app.gtpack")).expect("pack"),
            b"PK",
            "{name}"
        );
        assert!(target.join("bundle.yaml").is_file(), "{name}");
    }
}
