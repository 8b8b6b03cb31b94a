//! The deployer credentials contract (seed spec C1): what a deployer needs
//! from the identity it runs as, how to check it, and how least-privilege
//! credentials are made from an admin credential and kept fresh.
//!
//! Only the vocabulary and the pure decisions live here: the report a
//! validation answers, the rotation maths. Implementations do I/O (they
//! spawn a probe, ask a Docker engine, send access reviews to an API
//! server), so they live in the node, which wires the clients; `packs`
//! cannot reach them (the deployer crates depend on `packs`, not the
//! reverse). The caller persists what a bootstrap produced (secret store,
//! rules pack, `greentic.credentials.v1` document); an implementation
//! never writes anything itself, and never keeps the admin material.

use deploy::Timestamp;
use deploy::credentials::CredentialsExpiry;
use secrecy::SecretString;
use serde::Serialize;
use thiserror::Error;

/// Share of a credential's lifetime after which it is due for rotation:
/// 80 %, so a daily token is renewed with almost five hours to spare.
pub const ROTATE_AT_PERCENT: i32 = 80;

/// One thing the deployer's identity must be able to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Capability {
    /// A stable kebab-case id, e.g. `process-spawn`, `patch-deployments`.
    pub id: String,
    /// What it allows and why the deployer needs it.
    pub description: String,
}

impl Capability {
    pub fn new(id: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            description: description.into(),
        }
    }
}

/// Whether the identity has one capability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum CapabilityStatus {
    /// It has it; `detail` says what was found.
    Pass { detail: String },
    /// It lacks it: why, and what to grant or install to fix it.
    Fail { reason: String, fix: String },
    /// Not checked, and why (e.g. no cluster to ask).
    Skipped { reason: String },
}

/// One capability and its status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CapabilityCheck {
    pub capability: Capability,
    #[serde(flatten)]
    pub status: CapabilityStatus,
}

/// What `validate` answers: every required capability, checked in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RequirementsReport {
    pub checks: Vec<CapabilityCheck>,
}

impl RequirementsReport {
    /// True when no capability failed (skipped ones do not fail).
    pub fn passed(&self) -> bool {
        self.missing_capabilities().is_empty()
    }

    /// The ids of the capabilities that failed, in check order.
    pub fn missing_capabilities(&self) -> Vec<String> {
        self.checks
            .iter()
            .filter(|check| matches!(check.status, CapabilityStatus::Fail { .. }))
            .map(|check| check.capability.id.clone())
            .collect()
    }

    /// The document's `validation.result` for this report.
    pub fn result(&self) -> deploy::credentials::ValidationResult {
        if self.passed() {
            deploy::credentials::ValidationResult::Pass
        } else {
            deploy::credentials::ValidationResult::Fail
        }
    }
}

/// The admin credential a bootstrap (or rotation) consumes. Held wrapped:
/// zeroed on drop, never in `Debug`.
pub struct AdminMaterial(pub SecretString);

/// What a bootstrap or a rotation produced, for the caller to persist.
pub struct Issued {
    /// The least-privilege credentials (e.g. a kubeconfig with a token).
    pub credentials: SecretString,
    /// When they were issued and when they stop working.
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
    /// The rules pack: `(file name, contents)`, rendered deterministically;
    /// empty for a rotation (the rules did not change).
    pub rules_pack: Vec<(String, String)>,
}

/// Why a bootstrap or a rotation did not happen.
#[derive(Debug, Error)]
pub enum CredentialsContractError {
    #[error(
        "deployer {deployer} has no provider account to bootstrap: `gtc op credentials requirements` is its whole credentials contract"
    )]
    NotSupported { deployer: String },
    #[error("the admin material cannot be used: {reason}")]
    AdminMaterial { reason: String },
    /// The provider refused the identity used (HTTP 403 and the like).
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Provider(String),
}

/// The contract every deployer plugs into (seed spec C1).
pub trait DeployerCredentials {
    /// What the deployer's identity must be able to do, in check order.
    fn required_capabilities(&self) -> Vec<Capability>;

    /// Checks every required capability against the identity at hand.
    fn validate(&self) -> RequirementsReport;

    /// Makes least-privilege credentials from `admin`, valid for
    /// `ttl_seconds`. The default refuses: a deployer without a provider
    /// account has nothing to bootstrap.
    fn bootstrap(
        &self,
        admin: AdminMaterial,
        ttl_seconds: u64,
    ) -> Result<Issued, CredentialsContractError> {
        let _ = (admin, ttl_seconds);
        Err(CredentialsContractError::NotSupported {
            deployer: self.deployer().to_owned(),
        })
    }

    /// Issues fresh credentials with `minting` (the current generated
    /// credentials, or admin material), valid for `ttl_seconds`. The
    /// default refuses, as [`DeployerCredentials::bootstrap`] does.
    fn rotate(
        &self,
        minting: SecretString,
        ttl_seconds: u64,
    ) -> Result<Issued, CredentialsContractError> {
        let _ = (minting, ttl_seconds);
        Err(CredentialsContractError::NotSupported {
            deployer: self.deployer().to_owned(),
        })
    }

    /// The descriptor path of the deployer, for messages.
    fn deployer(&self) -> &str;

    /// When credentials issued at `issued_at` and expiring at `expires_at`
    /// are due for rotation.
    fn rotate_at(&self, issued_at: Timestamp, expires_at: Timestamp) -> Timestamp {
        rotate_at(issued_at, expires_at)
    }

    /// True once `expiry`'s rotation time (or, without one, its expiry)
    /// has passed at `now`.
    fn rotation_due(&self, expiry: &CredentialsExpiry, now: Timestamp) -> bool {
        rotation_due(expiry, now)
    }
}

/// [`ROTATE_AT_PERCENT`] of the way from `issued_at` to `expires_at`
/// (`expires_at` itself for an empty or inverted lifetime: never after the
/// expiry, which the document's `validate` refuses).
pub fn rotate_at(issued_at: Timestamp, expires_at: Timestamp) -> Timestamp {
    if expires_at <= issued_at {
        return expires_at;
    }
    issued_at + (expires_at - issued_at) * ROTATE_AT_PERCENT / 100
}

/// True once `now` reached the rotation time (the expiry when none is set).
pub fn rotation_due(expiry: &CredentialsExpiry, now: Timestamp) -> bool {
    now >= expiry.rotate_at.unwrap_or(expiry.expires_at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        chrono::DateTime::UNIX_EPOCH + chrono::Duration::seconds(seconds)
    }

    fn check(id: &str, status: CapabilityStatus) -> CapabilityCheck {
        CapabilityCheck {
            capability: Capability::new(id, format!("{id} description")),
            status,
        }
    }

    #[test]
    fn a_report_fails_only_on_a_failed_capability() {
        // Proves skipped capabilities do not fail the report and failed
        // ones are listed as missing, in order.
        let mut report = RequirementsReport {
            checks: vec![
                check(
                    "a",
                    CapabilityStatus::Pass {
                        detail: "ok".into(),
                    },
                ),
                check(
                    "b",
                    CapabilityStatus::Skipped {
                        reason: "no cluster".into(),
                    },
                ),
            ],
        };
        assert!(report.passed());
        assert_eq!(report.result(), deploy::credentials::ValidationResult::Pass);
        report.checks.push(check(
            "c",
            CapabilityStatus::Fail {
                reason: "denied".into(),
                fix: "grant it".into(),
            },
        ));
        report.checks.push(check(
            "d",
            CapabilityStatus::Fail {
                reason: "denied".into(),
                fix: "grant it".into(),
            },
        ));
        assert!(!report.passed());
        assert_eq!(report.missing_capabilities(), vec!["c", "d"]);
        assert_eq!(report.result(), deploy::credentials::ValidationResult::Fail);
    }

    #[test]
    fn a_check_serializes_with_its_status_flattened() {
        // Proves the wire form: {capability:{id,description}, status, reason, fix}.
        let failed = check(
            "store-writable",
            CapabilityStatus::Fail {
                reason: "read-only".into(),
                fix: "chmod u+w".into(),
            },
        );
        let json = serde_json::to_value(&failed).expect("json");
        assert_eq!(json["capability"]["id"], "store-writable");
        assert_eq!(json["status"], "fail");
        assert_eq!(json["reason"], "read-only");
        assert_eq!(json["fix"], "chmod u+w");
        let skipped = serde_json::to_value(check(
            "x",
            CapabilityStatus::Skipped {
                reason: "why".into(),
            },
        ))
        .expect("json");
        assert_eq!(skipped["status"], "skipped");
        assert!(skipped.get("fix").is_none());
    }

    #[test]
    fn rotation_is_due_at_eighty_percent_of_the_lifetime() {
        // Proves the expiry maths: a 24 h token rotates after 19 h 12 min,
        // and rotation_due flips exactly there.
        let issued = at(0);
        let expires = at(24 * 3600);
        let rotate = rotate_at(issued, expires);
        assert_eq!(rotate, at(24 * 3600 * 80 / 100));
        assert_eq!(rotate, at(19 * 3600 + 12 * 60));
        let expiry = CredentialsExpiry {
            expires_at: expires,
            rotate_at: Some(rotate),
        };
        assert!(!rotation_due(&expiry, at(19 * 3600 + 12 * 60 - 1)));
        assert!(rotation_due(&expiry, rotate));
        // Without a rotation time, the expiry itself is the deadline.
        let bare = CredentialsExpiry {
            expires_at: expires,
            rotate_at: None,
        };
        assert!(!rotation_due(&bare, rotate));
        assert!(rotation_due(&bare, expires));
        // An empty or inverted lifetime rotates at its expiry, never after.
        assert_eq!(rotate_at(expires, issued), issued);
    }
}
