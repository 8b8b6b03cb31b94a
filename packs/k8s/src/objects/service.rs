//! ClusterIP Services: the router's and one per worker, each on 8080.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::objects::{HTTP_PORT, HTTP_PORT_NAME, Scope};

/// A ClusterIP Service `name` over the pods `selector` matches, port 8080
/// to their named HTTP port. Exposing the router outside the cluster (a
/// LoadBalancer, an Ingress or a Gateway) is the operator's choice, not
/// the render's.
pub fn cluster_ip(
    scope: &Scope,
    name: &str,
    labels: BTreeMap<String, String>,
    selector: BTreeMap<String, String>,
) -> Service {
    Service {
        metadata: scope.meta(name, labels),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some(HTTP_PORT_NAME.to_owned()),
                port: HTTP_PORT,
                protocol: Some("TCP".to_owned()),
                target_port: Some(IntOrString::String(HTTP_PORT_NAME.to_owned())),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}
