//! `gtc op env reconcile ENV`: the Kubernetes render of an environment,
//! written to a folder (`--render DIR`) or applied to the cluster of the
//! current kubeconfig.
//!
//! Both load the committed environment, read each active revision's
//! staged bundle manifest for its image and call the pure
//! `k8s_deployer::render`. `--render` writes what it returns
//! ([`super::render_dir`]) and is read-only towards the store; without it
//! the render is applied ([`super::cluster_apply`]: preflight of the
//! cluster, server-side apply, prune), in a gtc built with the Kubernetes
//! client (feature `kube`; refused in one without, such as the container
//! image's). The apply path is exercised only against a loopback fake API
//! server in the tests, never a real cluster.

use std::collections::BTreeMap;
use std::path::Path;

use bundle::manifest::ImageSection;
use deploy::error::ErrorKind;
use deploy::ids::{EnvId, RevisionId};
use deploy::revision::Revision;
use k8s_deployer::{RenderError, RenderOptions};
use serde_json::json;

use super::{cluster_apply, render_dir};
use crate::cli::ReconcileArgs;
use crate::context::Context;
use crate::error::CliError;
use crate::output::Report;

/// What to say when `--router-image` is missing.
const ROUTER_IMAGE_NEEDED: &str = "`gtc op env reconcile` needs --router-image: the gtc image the router runs, pinned by digest (registry/gtc@sha256:<64 hex digits>); `bash scripts/image.sh` builds it, and pushing it to your registry gives its digest";

pub fn run(context: &Context, args: &ReconcileArgs) -> Result<Report, CliError> {
    let env_id = crate::checks::parse_env(&args.env)?;
    let router_image = args
        .router_image
        .clone()
        .ok_or_else(|| CliError::usage(ROUTER_IMAGE_NEEDED))?;
    let mut options = RenderOptions {
        router_image,
        worker_images: BTreeMap::new(),
        router_replicas: args.router_replicas,
    };
    // The flags are checked before the store is read, so a wrong command
    // line is a usage error whatever the environment holds.
    options.validate().map_err(option_error)?;
    let state = context.load(env_id.as_str())?;
    let environment = &state.environment;
    let env_dir = context.store.env_dir(&env_id);
    let active = k8s_deployer::workers::active_revisions(environment);
    for revision in &active {
        let image = worker_image(&env_dir, revision)?;
        options.worker_images.insert(revision.revision_id, image);
    }
    let rendered = k8s_deployer::render(environment, &options).map_err(render_error)?;
    let workers: Vec<_> = active
        .iter()
        .map(|revision| {
            json!({
                "revision_id": revision.revision_id,
                "deployment_id": revision.deployment_id,
                "lifecycle": revision.lifecycle,
                "image": options.worker_images.get(&revision.revision_id),
            })
        })
        .collect();
    let Some(dir) = &args.render else {
        let applied = cluster_apply::apply(context, &env_id, &state, &rendered)?;
        let mut report = Report::new(
            "env",
            "reconcile",
            json!({
                "environment_id": env_id,
                "mode": "apply",
                "applied": true,
                "namespace": applied.namespace,
                "server": applied.server,
                "identity": applied.identity,
                "server_version": applied.server_version,
                "router_image": options.router_image,
                "router_replicas": options.router_replicas,
                "workers": workers,
                "applied_objects": applied.applied,
                "pruned_objects": applied.pruned,
                "secret_keys": applied.secret_keys,
            }),
        );
        report.generation = Some(state.generation);
        return Ok(report);
    };
    let written = render_dir::write(dir, &rendered)?;
    let mut report = Report::new(
        "env",
        "reconcile",
        json!({
            "environment_id": env_id,
            "mode": "render",
            "applied": false,
            "namespace": namespace(&env_id),
            "directory": written.directory,
            "replaced_previous_render": written.replaced_previous,
            "router_image": options.router_image,
            "router_replicas": options.router_replicas,
            "workers": workers,
            "files": written.files,
        }),
    );
    report.generation = Some(state.generation);
    Ok(report)
}

/// The namespace the render fills (the render refused any env id that
/// makes no valid one, so this name is the one in its files).
fn namespace(env_id: &EnvId) -> String {
    k8s_deployer::names::namespace_name(env_id).unwrap_or_default()
}

/// `revision`'s worker image, `reference@digest`, from its staged bundle's
/// manifest. The image is taken as the bundle names it: a reference the
/// cluster can pull, pinned by the digest the bundle gives.
fn worker_image(env_dir: &Path, revision: &Revision) -> Result<String, CliError> {
    let revision_id = revision.revision_id;
    let folder = env_dir.join(deploy::layout::revision_dir_in_env(revision_id));
    let bundle_root = deploy::layout::extracted_bundle(&folder);
    let manifest = bundle::stage::read_manifest(&bundle_root).map_err(|error| {
        image_error(
            revision_id,
            format!(
                "its staged bundle at {} cannot be read ({error}); stage the revision on this machine, whose store the render reads",
                bundle_root.display()
            ),
        )
    })?;
    let image = manifest
        .runtime
        .as_ref()
        .and_then(|runtime| runtime.image.as_ref());
    let Some(image) = image else {
        return Err(image_error(
            revision_id,
            format!(
                "bundle {} names no container image; give runtime.image.reference (an image your cluster can pull) and runtime.image.digest (sha256:<64 hex digits>) in the bundle, then stage and warm a new revision",
                manifest.bundle_id
            ),
        ));
    };
    pinned_reference(image).map_err(|reason| image_error(revision_id, reason))
}

/// `reference@digest` of a bundle's image section, or why it has none.
fn pinned_reference(image: &ImageSection) -> Result<String, String> {
    let Some(reference) = &image.reference else {
        return Err("its bundle ships an image archive, which a cluster cannot pull; push the image to a registry and give runtime.image.reference and runtime.image.digest in the bundle instead of runtime.image.archive".to_owned());
    };
    let Some(digest) = &image.digest else {
        return Err(format!(
            "its bundle's image {reference:?} has no digest, so the render could not name exact bytes; give runtime.image.digest in the bundle (sha256:<64 hex digits>, the image's repository digest)"
        ));
    };
    match reference.split_once('@') {
        None => Ok(format!("{reference}@{digest}")),
        Some((_, pinned)) if pinned == digest => Ok(reference.clone()),
        Some((_, pinned)) => Err(format!(
            "its bundle's image reference {reference:?} is pinned to {pinned}, but runtime.image.digest is {digest}; make them agree in the bundle"
        )),
    }
}

fn image_error(revision_id: RevisionId, reason: String) -> CliError {
    CliError::new(
        ErrorKind::Spec,
        format!("revision {revision_id} gets a worker but has no image to render: {reason}"),
    )
    .with_details(json!({"revision_id": revision_id}))
}

/// A refused `--router-image` or `--router-replicas`: the command line.
fn option_error(error: RenderError) -> CliError {
    let flag = match &error {
        RenderError::RouterReplicas { .. } => "--router-replicas",
        _ => "--router-image",
    };
    CliError::usage(format!("{flag}: {error}"))
}

/// A render refused for what the environment holds.
fn render_error(error: RenderError) -> CliError {
    let kind = match error {
        RenderError::Serialize { .. } => ErrorKind::Internal,
        _ => ErrorKind::Spec,
    };
    CliError::new(kind, format!("the environment cannot be rendered: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(reference: Option<&str>, digest: Option<&str>) -> ImageSection {
        ImageSection {
            reference: reference.map(str::to_owned),
            archive: reference.is_none().then(|| "image.tar".to_owned()),
            digest: digest.map(str::to_owned),
        }
    }

    #[test]
    fn a_worker_image_is_the_reference_pinned_by_the_bundles_digest() {
        // Proves reference@digest, an already pinned reference kept when it
        // agrees, and refusals for no digest, an archive, or a disagreement.
        let digest = format!("sha256:{}", "a".repeat(64));
        let other = format!("sha256:{}", "b".repeat(64));
        assert_eq!(
            pinned_reference(&image(Some("r.io/shop:1"), Some(&digest))),
            Ok(format!("r.io/shop:1@{digest}"))
        );
        let pinned = format!("r.io/shop@{digest}");
        assert_eq!(
            pinned_reference(&image(Some(&pinned), Some(&digest))),
            Ok(pinned.clone())
        );
        let no_digest = pinned_reference(&image(Some("r.io/shop:1"), None));
        assert!(no_digest.is_err_and(|e| e.contains("give runtime.image.digest")));
        let archive = pinned_reference(&image(None, Some(&digest)));
        assert!(archive.is_err_and(|e| e.contains("image archive")));
        assert!(pinned_reference(&image(Some(&pinned), Some(&other))).is_err());
    }
}
