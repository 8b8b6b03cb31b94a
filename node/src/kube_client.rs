//! Whether this `gtc` has the Kubernetes client, and what a path that
//! needs it answers when it does not.
//!
//! The client (`k8s-apply`, over `kube`) is behind `node`'s cargo feature
//! `kube`, on by default. The container image is built without it
//! (`scripts/image.sh`): a node in a container never applies to a cluster,
//! and the client is 4.1 MiB of the 40 MiB static binary (BENCHMARKS.md).
//! The render (`k8s-deployer`: `gtc op env reconcile --render`) is in
//! every build.
//!
//! Three paths talk to a cluster, and each asks here first: `env reconcile`
//! without `--render` (`op/cluster_apply.rs`, audited like its other
//! refusals), the cluster checks of `env preflight` (reported `skipped`,
//! with [`NOT_BUILT`] in the reason) and the credentials contract of a
//! Kubernetes-bound environment (`credentials.rs`: `requirements`,
//! `bootstrap`, `rotate`; `show` reads only the store). Without the client
//! each is refused by [`require`] with kind `not-yet-implemented` (exit 2),
//! before anything is read from a cluster or written.

use deploy::error::ErrorKind;

use crate::error::CliError;

/// Whether this build has the Kubernetes client (cargo feature `kube`).
pub const BUILT: bool = cfg!(feature = "kube");

/// Why a path that needs the client is refused, or a check skipped.
pub const NOT_BUILT: &str =
    "this gtc was built without the Kubernetes client (cargo feature `kube`)";

/// Ok in a build with the Kubernetes client; else `what` (a sentence part:
/// "it cannot apply to a cluster") refused with `fix`, the way to get it
/// done. The message ends with `done`, what the refusal left untouched.
pub fn require(what: &str, fix: &str, done: &str) -> Result<(), CliError> {
    if BUILT {
        Ok(())
    } else {
        Err(refusal(what, fix, done))
    }
}

/// The refusal [`require`] answers without the client.
pub fn refusal(what: &str, fix: &str, done: &str) -> CliError {
    CliError::new(
        ErrorKind::NotYetImplemented,
        format!("{NOT_BUILT}, so {what}; {fix}; {done}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "kube")]
    #[test]
    fn a_build_with_the_client_lets_every_path_through() {
        // Proves `require` refuses nothing when the client is built in.
        assert!(require("it cannot apply", "run it elsewhere", "nothing was applied").is_ok());
    }

    #[cfg(not(feature = "kube"))]
    #[test]
    fn a_build_without_the_client_refuses_as_not_implemented_with_the_fix() {
        // Proves the refusal is kind not-yet-implemented, exits 2 (the
        // CLI's code for "not implemented"), names the missing feature,
        // what cannot be done, the fix and what was left untouched.
        use crate::error::EXIT_NOT_IMPLEMENTED;
        let error = require(
            "it cannot apply to a cluster",
            "run `gtc op env reconcile` from a full build",
            "nothing was applied",
        )
        .expect_err("refused without the client");
        assert_eq!(error.kind, ErrorKind::NotYetImplemented);
        assert_eq!(error.exit_code(), EXIT_NOT_IMPLEMENTED);
        assert_eq!(EXIT_NOT_IMPLEMENTED, 2);
        assert_eq!(
            error.message,
            "this gtc was built without the Kubernetes client (cargo feature `kube`), so it cannot apply to a cluster; run `gtc op env reconcile` from a full build; nothing was applied"
        );
        assert_eq!(error.to_json()["kind"], "not-yet-implemented");
    }
}
