//! NetworkPolicies: nothing moves in the namespace unless a policy below
//! allows it. Policies add up, so each allowance is its own small object.
//!
//! Allowed: anyone to the router on 8080; the router to workers on 8080
//! (egress on the router's side, ingress on the workers'); every pod to DNS
//! on port 53. Kubelet probes come from the node, which the common CNIs
//! (Calico, Cilium) let through whatever the policies say.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::names::{any_worker_selector, router_selector};
use crate::objects::{HTTP_PORT, Scope, match_labels};

/// The DNS port. Any destination: clusters run DNS as kube-dns, CoreDNS
/// under other labels, or a node-local cache on a link-local address, so a
/// narrower peer would break name resolution on some of them.
pub const DNS_PORT: i32 = 53;

/// Every policy, in apply order: the default deny first.
pub fn policies(scope: &Scope) -> Vec<NetworkPolicy> {
    vec![
        default_deny(scope),
        router_ingress(scope),
        router_to_workers(scope),
        workers_from_router(scope),
        dns_egress(scope),
    ]
}

fn policy(
    scope: &Scope,
    name: &str,
    pods: LabelSelector,
    ingress: Option<Vec<NetworkPolicyIngressRule>>,
    egress: Option<Vec<NetworkPolicyEgressRule>>,
) -> NetworkPolicy {
    let mut policy_types = Vec::new();
    if ingress.is_some() {
        policy_types.push("Ingress".to_owned());
    }
    if egress.is_some() {
        policy_types.push("Egress".to_owned());
    }
    NetworkPolicy {
        metadata: scope.meta(name, BTreeMap::new()),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(pods),
            policy_types: Some(policy_types),
            ingress,
            egress,
        }),
    }
}

fn tcp(port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".to_owned()),
        ..NetworkPolicyPort::default()
    }
}

fn pods(labels: BTreeMap<String, String>) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(match_labels(labels)),
        ..NetworkPolicyPeer::default()
    }
}

/// Every pod: no ingress, no egress (empty rule lists deny all).
fn default_deny(scope: &Scope) -> NetworkPolicy {
    policy(
        scope,
        "gtc-default-deny",
        LabelSelector::default(),
        Some(Vec::new()),
        Some(Vec::new()),
    )
}

/// The router: ingress on 8080 from any source.
fn router_ingress(scope: &Scope) -> NetworkPolicy {
    let rule = NetworkPolicyIngressRule {
        ports: Some(vec![tcp(HTTP_PORT)]),
        ..NetworkPolicyIngressRule::default()
    };
    policy(
        scope,
        "gtc-router-ingress",
        match_labels(router_selector()),
        Some(vec![rule]),
        None,
    )
}

/// The router: egress to the workers on 8080.
fn router_to_workers(scope: &Scope) -> NetworkPolicy {
    let rule = NetworkPolicyEgressRule {
        to: Some(vec![pods(any_worker_selector())]),
        ports: Some(vec![tcp(HTTP_PORT)]),
    };
    policy(
        scope,
        "gtc-router-egress-workers",
        match_labels(router_selector()),
        None,
        Some(vec![rule]),
    )
}

/// The workers: ingress on 8080 from the router only.
fn workers_from_router(scope: &Scope) -> NetworkPolicy {
    let rule = NetworkPolicyIngressRule {
        from: Some(vec![pods(router_selector())]),
        ports: Some(vec![tcp(HTTP_PORT)]),
    };
    policy(
        scope,
        "gtc-workers-ingress-router",
        match_labels(any_worker_selector()),
        Some(vec![rule]),
        None,
    )
}

/// Every pod: egress to port 53, UDP and TCP.
fn dns_egress(scope: &Scope) -> NetworkPolicy {
    let udp = NetworkPolicyPort {
        protocol: Some("UDP".to_owned()),
        ..tcp(DNS_PORT)
    };
    let rule = NetworkPolicyEgressRule {
        ports: Some(vec![udp, tcp(DNS_PORT)]),
        ..NetworkPolicyEgressRule::default()
    };
    policy(
        scope,
        "gtc-dns-egress",
        LabelSelector::default(),
        None,
        Some(vec![rule]),
    )
}
