//! The deployers a node can run, and which one an environment's deployer
//! slot binding selects.

use std::collections::BTreeMap;
use std::sync::Arc;

use deploy::descriptor::CapabilitySlot;
use deploy::environment::Environment;

use super::Deployer;

/// Why no deployer could be selected for an environment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    #[error(
        "environment {env} has no deployer binding; bind one with `gtc op env-packs add` (slot deployer)"
    )]
    Unbound { env: String },
    #[error(
        "environment {env}: the revision runs on deployer {kind} (recorded when it was warmed, or the slot binding), which this node does not run; this node runs: {available}"
    )]
    NotOnThisNode {
        env: String,
        kind: String,
        available: String,
    },
}

/// The node's deployers by descriptor path; one instance each, shared by
/// every revision that runs through it.
#[derive(Clone, Default)]
pub struct Deployers {
    by_path: BTreeMap<String, Arc<dyn Deployer>>,
}

impl Deployers {
    /// No deployers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `deployer` under its descriptor path (replacing one there).
    pub fn with(mut self, deployer: Arc<dyn Deployer>) -> Self {
        self.by_path
            .insert(deployer.descriptor_path().to_owned(), deployer);
        self
    }

    /// Descriptor paths this node runs.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.by_path.keys().map(String::as_str)
    }

    /// The deployer that runs `revision`: the one recorded on it when it
    /// was warmed (`Revision::deployer`), else (a revision warmed before
    /// that was recorded) the one `environment`'s deployer slot is bound
    /// to. Rebinding the slot changes the deployer of revisions warmed
    /// afterwards; running ones keep theirs, across node restarts too.
    pub fn select(
        &self,
        environment: &Environment,
        revision: &deploy::revision::Revision,
    ) -> Result<Arc<dyn Deployer>, SelectError> {
        let kind = match &revision.deployer {
            Some(kind) => kind,
            None => {
                &environment
                    .binding(CapabilitySlot::Deployer)
                    .ok_or_else(|| SelectError::Unbound {
                        env: environment.environment_id.to_string(),
                    })?
                    .kind
            }
        };
        self.by_path
            .get(kind.path())
            .cloned()
            .ok_or_else(|| SelectError::NotOnThisNode {
                env: environment.environment_id.to_string(),
                kind: kind.to_string(),
                available: self.paths().collect::<Vec<_>>().join(", "),
            })
    }
}
