//! Deterministic archive writers: the same tree always gives the same bytes
//! (entries sorted, timestamps, owners and modes fixed), so a bundle's
//! digest identifies its content.

use std::fs::File;
use std::io::{Cursor, Seek, Write};
use std::path::PathBuf;

use thiserror::Error;

use crate::format::BundleFormat;

/// Content of a file in a tree to archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// Read from this file when the archive is written.
    Path(PathBuf),
    /// Already in memory (a sanitized setup file, say).
    Bytes(Vec<u8>),
}

/// One node of a tree to archive; paths are relative, `/`-separated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir {
        path: String,
    },
    File {
        path: String,
        content: Content,
        executable: bool,
    },
    Symlink {
        path: String,
        target: String,
    },
}

impl Node {
    /// The node's path.
    pub fn path(&self) -> &str {
        match self {
            Node::Dir { path } | Node::File { path, .. } | Node::Symlink { path, .. } => path,
        }
    }
}

/// Why writing failed.
#[derive(Debug, Error)]
pub enum WriteError {
    #[error("{format} bundles cannot be written; build squashfs or zip")]
    Unsupported { format: BundleFormat },
    #[error("writing the squashfs image failed: {0}")]
    Squashfs(String),
    #[error("writing the zip archive failed: {0}")]
    Zip(String),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Writes `nodes` (sorted here) as `format` into `out`.
pub fn write(nodes: &[Node], format: BundleFormat, out: &mut File) -> Result<(), WriteError> {
    let mut sorted: Vec<&Node> = nodes.iter().collect();
    sorted.sort_by(|a, b| a.path().cmp(b.path()));
    match format {
        BundleFormat::Squashfs => write_squashfs(&sorted, out),
        BundleFormat::Zip => write_zip(&sorted, out),
        other => Err(WriteError::Unsupported { format: other }),
    }
}

fn read_content(content: &Content) -> Result<Vec<u8>, WriteError> {
    match content {
        Content::Bytes(bytes) => Ok(bytes.clone()),
        Content::Path(path) => std::fs::read(path).map_err(|source| WriteError::Io {
            action: "read",
            path: path.display().to_string(),
            source,
        }),
    }
}

fn write_squashfs(nodes: &[&Node], out: &mut File) -> Result<(), WriteError> {
    use backhand::compression::Compressor;
    use backhand::{FilesystemCompressor, FilesystemWriter, NodeHeader};

    let error = |e: backhand::BackhandError| WriteError::Squashfs(e.to_string());
    let mut writer = FilesystemWriter::default();
    // zlib, like the reference bundles; fixed time and owner for determinism.
    writer.set_compressor(FilesystemCompressor::new(Compressor::Gzip, None).map_err(error)?);
    writer.set_time(0);
    writer.set_root_mode(0o755);
    writer.set_root_uid(0);
    writer.set_root_gid(0);
    writer.set_only_root_id();
    let header = |mode: u16| NodeHeader::new(mode, 0, 0, 0);
    for node in nodes {
        let path = format!("/{}", node.path());
        match node {
            Node::Dir { .. } => writer.push_dir(&path, header(0o755)).map_err(error)?,
            Node::File {
                content,
                executable,
                ..
            } => {
                let bytes = read_content(content)?;
                let mode = if *executable { 0o755 } else { 0o644 };
                writer
                    .push_file(Cursor::new(bytes), &path, header(mode))
                    .map_err(error)?;
            }
            Node::Symlink { target, .. } => writer
                .push_symlink(target.as_str(), &path, header(0o777))
                .map_err(error)?,
        }
    }
    writer.write(&mut *out).map_err(error)?;
    Ok(())
}

fn write_zip(nodes: &[&Node], out: &mut File) -> Result<(), WriteError> {
    use zip::write::SimpleFileOptions;
    use zip::{CompressionMethod, DateTime, ZipWriter};

    let error = |e: zip::result::ZipError| WriteError::Zip(e.to_string());
    let options = |mode: u32| {
        SimpleFileOptions::default()
            .compression_method(CompressionMethod::Deflated)
            .last_modified_time(DateTime::default())
            .unix_permissions(mode)
    };
    out.rewind().map_err(|source| WriteError::Io {
        action: "rewind",
        path: "output".into(),
        source,
    })?;
    let mut zip = ZipWriter::new(&mut *out);
    for node in nodes {
        match node {
            Node::Dir { path } => zip
                .add_directory(format!("{path}/"), options(0o755))
                .map_err(error)?,
            Node::File {
                path,
                content,
                executable,
            } => {
                zip.start_file(
                    path.as_str(),
                    options(if *executable { 0o755 } else { 0o644 }),
                )
                .map_err(error)?;
                zip.write_all(&read_content(content)?)
                    .map_err(|source| WriteError::Io {
                        action: "write",
                        path: path.clone(),
                        source,
                    })?;
            }
            Node::Symlink { path, target } => zip
                .add_symlink(path.as_str(), target.as_str(), options(0o777))
                .map_err(error)?,
        }
    }
    zip.finish().map_err(error)?;
    Ok(())
}
