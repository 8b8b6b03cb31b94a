//! The bundle manifest's image section as the deployer contract names it.

use std::path::Path;

use bundle::manifest::RuntimeSection;
use packs::deployer::ContainerImage;

/// The container image a bundle's runtime names, if any. The manifest was
/// validated when the bundle was staged: exactly one source is set.
pub(crate) fn container_image(
    runtime: &RuntimeSection,
    bundle_root: &Path,
) -> Option<ContainerImage> {
    let image = runtime.image.as_ref()?;
    match (&image.reference, &image.archive) {
        (Some(reference), _) => Some(ContainerImage::OnEngine {
            reference: reference.clone(),
            digest: image.digest.clone(),
        }),
        (None, Some(archive)) => Some(ContainerImage::Archive {
            path: bundle_root.join(archive),
            digest: image.digest.clone().unwrap_or_default(),
        }),
        (None, None) => None,
    }
}
