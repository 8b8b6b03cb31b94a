//! Bundle deployments: the billing and routing anchor a revision belongs to.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::Timestamp;
use crate::canonical::to_canonical_json;
use crate::ids::{BundleId, CustomerId, DeploymentId, EnvId, PackId, PartyId, RevisionId};

/// Schema discriminator of a bundle deployment.
pub const BUNDLE_DEPLOYMENT_SCHEMA: &str = "greentic.bundle-deployment.v1";

/// Config-override caps: bounded so one deployment cannot bloat the
/// replicated state.
pub const CONFIG_OVERRIDE_PACKS_MAX: usize = 32;
/// Most keys per pack in `config_overrides`.
pub const CONFIG_OVERRIDE_KEYS_MAX: usize = 64;
/// Largest canonical JSON size of all `config_overrides` together.
pub const CONFIG_OVERRIDE_BYTES_MAX: usize = 16 * 1024;
/// Most hosts or path prefixes in one route binding.
pub const ROUTE_ENTRIES_MAX: usize = 64;

/// Whether a deployment takes part in routing and rollouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeploymentStatus {
    Active,
    Paused,
    Archived,
}

/// Selects a tenant and team inside a bundle for requests on this route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantSelector {
    pub tenant: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
}

/// Which requests reach a deployment: hosts and path prefixes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteBinding {
    /// Host names (lowercase, no port). Empty means any host. `host` (the
    /// original platform's spelling, one name or a list) is accepted too.
    #[serde(default, alias = "host", deserialize_with = "one_or_many")]
    pub hosts: Vec<String>,
    /// Path prefixes starting with `/`. Empty means `/`. `path_prefix` (one
    /// prefix or a list) is accepted too.
    #[serde(default, alias = "path_prefix", deserialize_with = "one_or_many")]
    pub path_prefixes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_selector: Option<TenantSelector>,
}

/// A list of strings, or one string standing for a list of one (the
/// original platform's `host: "a.example"` spelling).
fn one_or_many<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    match OneOrMany::deserialize(deserializer)
        .map_err(|_| serde::de::Error::custom("expected a string or a list of strings"))?
    {
        OneOrMany::One(one) => Ok(vec![one]),
        OneOrMany::Many(many) => Ok(many),
    }
}

/// One share of a deployment's revenue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RevenueShare {
    pub party_id: PartyId,
    pub basis_points: u32,
}

/// Metering endpoint of a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Usage {
    pub meter_endpoint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_at: Option<Timestamp>,
}

/// Per-pack configuration overrides: pack id → key → JSON value.
pub type ConfigOverrides = BTreeMap<PackId, BTreeMap<String, serde_json::Value>>;

/// One bundle deployed for one customer in one environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BundleDeployment {
    pub schema: String,
    pub deployment_id: DeploymentId,
    pub env_id: EnvId,
    pub bundle_id: BundleId,
    pub customer_id: CustomerId,
    pub status: DeploymentStatus,
    /// Revisions that are not archived, oldest first.
    #[serde(default)]
    pub current_revisions: Vec<RevisionId>,
    pub route_binding: RouteBinding,
    pub revenue_share: Vec<RevenueShare>,
    pub revenue_policy_ref: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    pub created_at: Timestamp,
    pub authorization_ref: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config_overrides: ConfigOverrides,
}

/// Why a bundle deployment or its route binding was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BundleError {
    #[error("bundle deployment schema is {found:?}; expected {BUNDLE_DEPLOYMENT_SCHEMA:?}")]
    SchemaMismatch { found: String },
    #[error(
        "revenue_share is empty; give at least one party, e.g. [{{\"party_id\":\"greentic\",\"basis_points\":10000}}]"
    )]
    RevenueShareEmpty,
    #[error("revenue_share[{index}] has {basis_points} basis points; the maximum is 10000")]
    RevenueShareEntryTooLarge { index: usize, basis_points: u32 },
    #[error("revenue_share sums to {sum} basis points; it must sum to exactly 10000")]
    RevenueShareSum { sum: u64 },
    #[error("config_overrides names {count} packs; the limit is {CONFIG_OVERRIDE_PACKS_MAX}")]
    TooManyOverridePacks { count: usize },
    #[error(
        "config_overrides[{pack_id}] has {count} keys; the limit is {CONFIG_OVERRIDE_KEYS_MAX}"
    )]
    TooManyOverrideKeys { pack_id: String, count: usize },
    #[error("config_overrides[{pack_id}] has an empty key")]
    EmptyOverrideKey { pack_id: String },
    #[error(
        "config_overrides is {bytes} bytes as canonical JSON; the limit is {CONFIG_OVERRIDE_BYTES_MAX}"
    )]
    OverridesTooLarge { bytes: usize },
    #[error("route_binding.hosts[{index}] {host:?} is not a host name: {reason}")]
    InvalidHost {
        index: usize,
        host: String,
        reason: &'static str,
    },
    #[error("route_binding.path_prefixes[{index}] {prefix:?} is not a path prefix: {reason}")]
    InvalidPathPrefix {
        index: usize,
        prefix: String,
        reason: &'static str,
    },
    #[error("route_binding.{field} has {count} entries; the limit is {ROUTE_ENTRIES_MAX}")]
    TooManyRouteEntries { field: &'static str, count: usize },
    #[error("route_binding.{field} lists {value:?} twice")]
    DuplicateRouteEntry { field: &'static str, value: String },
    #[error(
        "route_binding.tenant_selector needs at least one host or path prefix to select on; add route_binding.hosts or route_binding.path_prefixes"
    )]
    TenantSelectorWithoutRoute,
}

/// Schema discriminator of a revenue policy document.
pub const REVENUE_POLICY_SCHEMA: &str = "greentic.revenue-policy.v1";

/// Folder (relative to the environment's folder) of the revenue policies.
pub const REVENUE_POLICIES_DIR: &str = "billing-policies";

/// One path component for an opaque id: ASCII letters, digits, `_`, `-`
/// and `.` (not leading) are kept, every other byte is `%XX`, so an id like
/// `../x` or `a/b` can never leave or nest inside its folder.
fn path_component(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for (index, byte) in id.bytes().enumerate() {
        let keep = byte.is_ascii_alphanumeric()
            || byte == b'_'
            || byte == b'-'
            || (byte == b'.' && index > 0);
        if keep {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `billing-policies/<bundle>/<customer>/v<version>.json`, the spec's
/// layout, with each id made a safe path component.
pub fn revenue_policy_ref(bundle_id: &BundleId, customer_id: &CustomerId, version: u32) -> String {
    format!(
        "{REVENUE_POLICIES_DIR}/{}/{}/v{version}.json",
        path_component(bundle_id.as_str()),
        path_component(customer_id.as_str())
    )
}

/// The version `vN.json` of a revenue policy reference, if it has one.
pub fn revenue_policy_version(reference: &str) -> Option<u32> {
    reference
        .rsplit('/')
        .next()?
        .strip_prefix('v')?
        .strip_suffix(".json")?
        .parse()
        .ok()
}

impl BundleDeployment {
    /// The revenue policy document `revenue_policy_ref` names: the
    /// deployment's revenue share at that version. Derived from the
    /// committed state alone, so every store that holds the state writes
    /// the same bytes.
    pub fn revenue_policy(&self) -> serde_json::Value {
        serde_json::json!({
            "schema": REVENUE_POLICY_SCHEMA,
            "env_id": self.env_id,
            "deployment_id": self.deployment_id,
            "bundle_id": self.bundle_id,
            "customer_id": self.customer_id,
            "version": revenue_policy_version(&self.revenue_policy_ref),
            "revenue_share": self.revenue_share,
        })
    }

    /// Checks the schema, revenue shares, config-override caps and routes.
    pub fn validate(&self) -> Result<(), BundleError> {
        if self.schema != BUNDLE_DEPLOYMENT_SCHEMA {
            return Err(BundleError::SchemaMismatch {
                found: self.schema.clone(),
            });
        }
        validate_revenue_share(&self.revenue_share)?;
        validate_config_overrides(&self.config_overrides)?;
        self.route_binding.validate()
    }
}

/// Each share at most 10000 bps and the sum exactly 10000.
pub fn validate_revenue_share(shares: &[RevenueShare]) -> Result<(), BundleError> {
    if shares.is_empty() {
        return Err(BundleError::RevenueShareEmpty);
    }
    for (index, share) in shares.iter().enumerate() {
        if share.basis_points > 10_000 {
            return Err(BundleError::RevenueShareEntryTooLarge {
                index,
                basis_points: share.basis_points,
            });
        }
    }
    let sum: u64 = shares.iter().map(|s| u64::from(s.basis_points)).sum();
    if sum != 10_000 {
        return Err(BundleError::RevenueShareSum { sum });
    }
    Ok(())
}

/// The config-override caps.
pub fn validate_config_overrides(overrides: &ConfigOverrides) -> Result<(), BundleError> {
    if overrides.len() > CONFIG_OVERRIDE_PACKS_MAX {
        return Err(BundleError::TooManyOverridePacks {
            count: overrides.len(),
        });
    }
    for (pack_id, keys) in overrides {
        if keys.len() > CONFIG_OVERRIDE_KEYS_MAX {
            return Err(BundleError::TooManyOverrideKeys {
                pack_id: pack_id.to_string(),
                count: keys.len(),
            });
        }
        if keys.keys().any(String::is_empty) {
            return Err(BundleError::EmptyOverrideKey {
                pack_id: pack_id.to_string(),
            });
        }
    }
    let json = serde_json::to_value(overrides).unwrap_or(serde_json::Value::Null);
    let bytes = to_canonical_json(&json).len();
    if bytes > CONFIG_OVERRIDE_BYTES_MAX {
        return Err(BundleError::OverridesTooLarge { bytes });
    }
    Ok(())
}

fn host_problem(host: &str) -> Option<&'static str> {
    let name = host.strip_prefix("*.").unwrap_or(host);
    if name.is_empty() || host.len() > 253 {
        return Some("it must be 1 to 253 characters");
    }
    if host.chars().any(|c| c.is_ascii_uppercase()) {
        return Some("write it in lowercase");
    }
    if host.contains(':') {
        return Some("leave out the port; routes match on the host name only");
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Some("each dot-separated label must be 1 to 63 characters");
        }
        if !label
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Some("only a-z, 0-9, '-' and '.' are allowed (a leading '*.' for wildcards)");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Some("a label may not start or end with '-'");
        }
    }
    None
}

fn prefix_problem(prefix: &str) -> Option<&'static str> {
    if !prefix.starts_with('/') {
        return Some("it must start with '/'");
    }
    if prefix.len() > 1024 {
        return Some("it must be at most 1024 characters");
    }
    if prefix
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#'))
    {
        return Some("no whitespace, control characters, '?' or '#'");
    }
    if prefix
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return Some("no '.' or '..' segments");
    }
    if prefix.len() > 1 && prefix.ends_with('/') {
        return Some("leave out the trailing '/'; /api matches /api and /api/...");
    }
    None
}

impl RouteBinding {
    /// Checks hosts, prefixes and the tenant selector.
    pub fn validate(&self) -> Result<(), BundleError> {
        for (field, values) in [
            ("hosts", &self.hosts),
            ("path_prefixes", &self.path_prefixes),
        ] {
            if values.len() > ROUTE_ENTRIES_MAX {
                return Err(BundleError::TooManyRouteEntries {
                    field,
                    count: values.len(),
                });
            }
            for (index, value) in values.iter().enumerate() {
                if values[..index].contains(value) {
                    return Err(BundleError::DuplicateRouteEntry {
                        field,
                        value: value.clone(),
                    });
                }
            }
        }
        for (index, host) in self.hosts.iter().enumerate() {
            if let Some(reason) = host_problem(host) {
                return Err(BundleError::InvalidHost {
                    index,
                    host: host.clone(),
                    reason,
                });
            }
        }
        for (index, prefix) in self.path_prefixes.iter().enumerate() {
            if let Some(reason) = prefix_problem(prefix) {
                return Err(BundleError::InvalidPathPrefix {
                    index,
                    prefix: prefix.clone(),
                    reason,
                });
            }
        }
        if self.tenant_selector.is_some() && self.hosts.is_empty() && self.path_prefixes.is_empty()
        {
            return Err(BundleError::TenantSelectorWithoutRoute);
        }
        Ok(())
    }

    /// Every `(host, prefix)` pair this binding claims; `None` host is any host.
    pub fn claims(&self) -> Vec<(Option<&str>, &str)> {
        let hosts: Vec<Option<&str>> = if self.hosts.is_empty() {
            vec![None]
        } else {
            self.hosts.iter().map(|h| Some(h.as_str())).collect()
        };
        let prefixes: Vec<&str> = if self.path_prefixes.is_empty() {
            vec!["/"]
        } else {
            self.path_prefixes.iter().map(String::as_str).collect()
        };
        hosts
            .iter()
            .flat_map(|host| prefixes.iter().map(move |prefix| (*host, *prefix)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn revenue_policy_refs_stay_inside_their_folder_and_carry_a_version() {
        let bundle: BundleId = "../etc".parse().expect("bundle id");
        let customer: CustomerId = "a/b".parse().expect("customer id");
        let reference = revenue_policy_ref(&bundle, &customer, 3);
        assert_eq!(reference, "billing-policies/%2E.%2Fetc/a%2Fb/v3.json");
        assert_eq!(revenue_policy_version(&reference), Some(3));
        let plain: BundleId = "acme.shop".parse().expect("bundle id");
        let local: CustomerId = "local-dev".parse().expect("customer id");
        assert_eq!(
            revenue_policy_ref(&plain, &local, 1),
            "billing-policies/acme.shop/local-dev/v1.json"
        );
    }

    #[test]
    fn hosts_and_prefixes_are_checked() {
        let ok = RouteBinding {
            hosts: vec!["shop.example.com".into(), "*.example.org".into()],
            path_prefixes: vec!["/".into(), "/api".into()],
            tenant_selector: None,
        };
        assert!(ok.validate().is_ok());
        for host in ["Shop.example.com", "a..b", "x:80", "-a.b", ""] {
            let binding = RouteBinding {
                hosts: vec![host.into()],
                ..Default::default()
            };
            assert!(
                matches!(binding.validate(), Err(BundleError::InvalidHost { .. })),
                "{host}"
            );
        }
        for prefix in ["api", "/a/../b", "/a b", "/api/", "/x?y"] {
            let binding = RouteBinding {
                path_prefixes: vec![prefix.into()],
                ..Default::default()
            };
            assert!(
                matches!(
                    binding.validate(),
                    Err(BundleError::InvalidPathPrefix { .. })
                ),
                "{prefix}"
            );
        }
        let selector_only = RouteBinding {
            tenant_selector: Some(TenantSelector {
                tenant: "t".into(),
                team: None,
            }),
            ..Default::default()
        };
        assert_eq!(
            selector_only.validate(),
            Err(BundleError::TenantSelectorWithoutRoute)
        );
    }

    #[test]
    fn the_status_pages_route_spellings_are_accepted() {
        // Issue 20 item 12: `host` and `path_prefix` (one value or a list)
        // mean `hosts` and `path_prefixes`; giving both spellings of one
        // field is refused naming it.
        let parse = |text: &str| serde_json::from_str::<RouteBinding>(text);
        let expected = RouteBinding {
            hosts: vec!["shop.example".into()],
            path_prefixes: vec!["/shop".into()],
            tenant_selector: None,
        };
        for text in [
            r#"{"host": "shop.example", "path_prefix": "/shop"}"#,
            r#"{"host": ["shop.example"], "path_prefix": ["/shop"]}"#,
            r#"{"hosts": ["shop.example"], "path_prefixes": ["/shop"]}"#,
            r#"{"hosts": "shop.example", "path_prefixes": "/shop"}"#,
        ] {
            assert_eq!(parse(text).expect(text), expected, "{text}");
        }
        let both =
            parse(r#"{"host": "a.example", "hosts": ["b.example"]}"#).expect_err("both spellings");
        assert!(both.to_string().contains("hosts"), "{both}");
        let typo = parse(r#"{"path": "/shop"}"#).expect_err("unknown");
        assert!(typo.to_string().contains("path_prefixes"), "{typo}");
        let wrong = parse(r#"{"hosts": 7}"#).expect_err("a number");
        assert!(
            wrong.to_string().contains("a string or a list of strings"),
            "{wrong}"
        );
    }

    #[test]
    fn claims_default_to_any_host_and_root() {
        assert_eq!(RouteBinding::default().claims(), vec![(None, "/")]);
    }

    proptest! {
        /// Revenue shares validate exactly when each is <= 10000 and they sum to 10000.
        #[test]
        fn revenue_share_matches_the_arithmetic(points in proptest::collection::vec(0u32..11_000, 1..5)) {
            let shares: Vec<_> = points.iter().enumerate().map(|(i, p)| RevenueShare {
                party_id: format!("p{i}").parse().expect("party"), basis_points: *p,
            }).collect();
            let sum: u64 = points.iter().map(|p| u64::from(*p)).sum();
            prop_assert_eq!(validate_revenue_share(&shares).is_ok(), points.iter().all(|p| *p <= 10_000) && sum == 10_000);
        }
    }
}
