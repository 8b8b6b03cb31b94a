//! Why a deployer call was refused or failed, with the facts in fields and
//! a fix in the message.

use deploy::ids::RevisionId;

use super::RevisionPhase;

/// Errors of the [`super::Deployer`] calls.
#[derive(Debug, thiserror::Error)]
pub enum DeployerError {
    /// The split's weights do not sum to 10000 bps, or a revision appears twice.
    #[error(
        "invalid traffic split: {entries} entries over {distinct_revisions} distinct revisions \
         summing to {sum_bps} bps; weights must sum to exactly 10000 and name each revision once"
    )]
    InvalidSplit {
        sum_bps: u64,
        entries: usize,
        distinct_revisions: usize,
    },
    /// The split names a revision this deployer does not run.
    #[error(
        "the split names revision {revision}, which is not warm on {deployer}; warm it before sending traffic to it"
    )]
    RevisionNotWarm {
        revision: RevisionId,
        deployer: String,
    },
    /// `warm_revision` or `scale_revision` before `stage_revision`.
    #[error("revision {revision} is not staged on {deployer}; stage it first")]
    NotStaged {
        revision: RevisionId,
        deployer: String,
    },
    /// `scale_revision` of a revision that is staged but not warm (never
    /// warmed, or drained): there are no instances to resize.
    #[error(
        "revision {revision} is {phase} on {deployer}, not warm, so it cannot be scaled; warm it first"
    )]
    NotWarm {
        revision: RevisionId,
        deployer: String,
        /// What it is instead (staged or drained).
        phase: RevisionPhase,
    },
    /// The spec breaks a precondition.
    #[error("revision {revision}: {field} {message}")]
    InvalidSpec {
        revision: RevisionId,
        field: &'static str,
        message: String,
    },
    /// The artifact to run is not there or not runnable (program missing
    /// from the bundle, image archive absent).
    #[error("revision {revision}: cannot stage: {source}")]
    Artifact {
        revision: RevisionId,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// One instance did not become healthy; those started before it were stopped.
    #[error("revision {revision}: instance {index} did not become ready: {source}")]
    InstanceStart {
        revision: RevisionId,
        index: u32,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The image named by the bundle is not on the engine.
    #[error(
        "image {reference} is not on the container engine; load it first (docker load -i FILE, \
         or docker build -t {reference} .), or name an image archive inside the bundle"
    )]
    ImageMissing { reference: String },
    /// The image found does not have the digest the bundle pins.
    #[error(
        "image {reference} has digest {found}, but the bundle pins {expected}; rebuild the bundle \
         with the image's real digest or load the image the bundle was built for"
    )]
    ImageDigestMismatch {
        reference: String,
        expected: String,
        found: String,
    },
    /// The provider (engine, cloud API) cannot be reached.
    #[error("{provider} at {endpoint} is unreachable: {reason}; {fix}")]
    ProviderUnreachable {
        provider: &'static str,
        endpoint: String,
        reason: String,
        fix: &'static str,
    },
    /// The provider answered with an error.
    #[error("{provider} refused {operation}: {reason}")]
    Provider {
        provider: &'static str,
        operation: String,
        reason: String,
    },
}
