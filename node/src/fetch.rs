//! A cluster member fetches the staged bundle of a revision placed on it
//! from a member that holds it, checks the archive against the committed
//! revision's digest, and stages it exactly as `revisions stage` did where
//! it was first staged.

use std::path::PathBuf;
use std::sync::Arc;

use actors::BundleFetcher;
use bundle::extract::ExtractLimits;
use bundle::stage::{StageRequest, file_digest, stage};
use deploy::ids::EnvId;
use deploy::revision::Revision;

/// Fetches bundles through the cluster's peer transport.
pub struct ClusterBundleFetcher {
    pub cluster: Arc<consensus::ClusterHandle>,
    pub store_root: PathBuf,
    pub env_id: EnvId,
}

impl BundleFetcher for ClusterBundleFetcher {
    fn fetch(
        &self,
        revision: Revision,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>> {
        let cluster = Arc::clone(&self.cluster);
        let env = self.env_id.clone();
        let revisions = deploy::layout::revisions_dir(&self.store_root, &env);
        let revision_dir =
            deploy::layout::revision_dir(&self.store_root, &env, revision.revision_id);
        Box::pin(async move {
            let id = revision.revision_id.to_string();
            std::fs::create_dir_all(&revisions).map_err(|e| e.to_string())?;
            let download = revisions.join(format!(".fetch-{id}.gtbundle"));
            consensus::bundle::fetch_bundle(
                cluster.peers(),
                &cluster.other_members(),
                env.as_str(),
                &id,
                &download,
            )
            .await
            .map_err(|e| e.to_string())?;
            tokio::task::spawn_blocking(move || {
                let outcome = (|| {
                    let digest = file_digest(&download).map_err(|e| e.to_string())?;
                    if digest != revision.bundle_digest {
                        return Err(format!(
                            "the fetched bundle's digest is {digest}, the revision's is {}; refused",
                            revision.bundle_digest
                        ));
                    }
                    stage(&StageRequest {
                        bundle: download.clone(),
                        revision_dir,
                        env_relative_dir: deploy::layout::revision_dir_in_env(
                            revision.revision_id,
                        ),
                        revision_id: revision.revision_id,
                        limits: ExtractLimits::default(),
                    })
                    .map(|_| ())
                    .map_err(|e| e.to_string())
                })();
                let _ = std::fs::remove_file(&download);
                outcome
            })
            .await
            .map_err(|e| e.to_string())?
        })
    }
}
