//! Bundles: the `.gtbundle` archives operators push.
//!
//! Owns: format detection (SquashFS, ZIP, tar, tar.gz, tar.zst), reading
//! every format through one entry model, safe extraction with limits,
//! deterministic writing (SquashFS and ZIP), the manifest and our `runtime`
//! section, the pack list of a staged revision, building a bundle from a
//! folder without its dev secrets, and the secret-leak scanner.
//!
//! Must not touch: environment state. Staging writes only inside the
//! revision folder it is given and removes it on failure; recording the
//! revision is the caller's job (through `store`).

pub mod build;
pub mod entry;
pub mod extract;
pub mod format;
pub mod inspect;
pub mod manifest;
pub mod packlist;
pub mod read;
pub mod scan;
pub mod stage;
pub mod write;

pub use extract::{ExtractLimits, Rule};
pub use format::{BundleFormat, FormatError};
pub use read::ArchiveError;
