//! Which archive format a bundle is: by magic bytes first, then by suffix.

use std::fmt;
use std::path::Path;

use thiserror::Error;

/// The archive formats a bundle may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BundleFormat {
    /// SquashFS 4.0, little endian (`hsqs`): the default `.gtbundle`.
    Squashfs,
    /// ZIP (`PK\x03\x04`, or `PK\x05\x06` when empty).
    Zip,
    /// Plain POSIX tar.
    Tar,
    /// gzip-compressed tar.
    TarGz,
    /// zstd-compressed tar.
    TarZst,
}

impl fmt::Display for BundleFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BundleFormat::Squashfs => "squashfs",
            BundleFormat::Zip => "zip",
            BundleFormat::Tar => "tar",
            BundleFormat::TarGz => "tar.gz",
            BundleFormat::TarZst => "tar.zst",
        })
    }
}

/// Why no format could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "{path} is not a bundle this tool can read: no SquashFS, ZIP, tar, gzip or zstd signature, and its name does not end in .gtbundle, .zip, .tar, .tar.gz, .tgz or .tar.zst"
)]
pub struct FormatError {
    pub path: String,
}

/// Bytes needed to recognise every format (tar's `ustar` sits at 257).
pub const DETECT_BYTES: usize = 512;

/// Detects the format from the first bytes of the file, falling back to its
/// name when the bytes are not conclusive.
pub fn detect(head: &[u8], path: &Path) -> Result<BundleFormat, FormatError> {
    if head.starts_with(b"hsqs") {
        return Ok(BundleFormat::Squashfs);
    }
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        return Ok(BundleFormat::Zip);
    }
    if head.starts_with(&[0x1f, 0x8b]) {
        return Ok(BundleFormat::TarGz);
    }
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Ok(BundleFormat::TarZst);
    }
    if head.len() >= 262 && &head[257..262] == b"ustar" {
        return Ok(BundleFormat::Tar);
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let by_suffix = [
        (".tar.gz", BundleFormat::TarGz),
        (".tgz", BundleFormat::TarGz),
        (".tar.zst", BundleFormat::TarZst),
        (".tar", BundleFormat::Tar),
        (".zip", BundleFormat::Zip),
        (".gtpack", BundleFormat::Zip),
        (".gtbundle", BundleFormat::Squashfs),
    ];
    by_suffix
        .iter()
        .find(|(suffix, _)| name.ends_with(suffix))
        .map(|(_, format)| *format)
        .ok_or_else(|| FormatError {
            path: path.display().to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_bytes_win_over_the_name() {
        let p = Path::new("x.tar");
        assert_eq!(detect(b"hsqs....", p), Ok(BundleFormat::Squashfs));
        assert_eq!(detect(b"PK\x03\x04..", p), Ok(BundleFormat::Zip));
        assert_eq!(detect(&[0x1f, 0x8b, 8], p), Ok(BundleFormat::TarGz));
        assert_eq!(
            detect(&[0x28, 0xb5, 0x2f, 0xfd], p),
            Ok(BundleFormat::TarZst)
        );
        let mut tar = vec![0u8; 512];
        tar[257..262].copy_from_slice(b"ustar");
        assert_eq!(detect(&tar, Path::new("x.gtbundle")), Ok(BundleFormat::Tar));
    }

    #[test]
    fn the_name_decides_when_bytes_do_not() {
        assert_eq!(
            detect(b"", Path::new("a.GTBUNDLE")),
            Ok(BundleFormat::Squashfs)
        );
        assert_eq!(detect(b"??", Path::new("a.tgz")), Ok(BundleFormat::TarGz));
        assert!(detect(b"??", Path::new("a.txt")).is_err());
    }
}
