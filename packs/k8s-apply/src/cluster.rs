//! The cluster of the current kubeconfig, and the one place a request is
//! sent: [`Cluster::send`] bounds its time and turns `kube`'s errors into
//! [`ClusterError`]s that say what to do.

use std::future::Future;
use std::time::Duration;

use kube::config::Kubeconfig;
use serde::Serialize;

use crate::error::{ClusterError, ConnectError};

/// How long connecting to the API server may take: a reachable server
/// accepts a connection in milliseconds, so past this it is not reachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `GET /version` may take in all: the reachability check answers
/// quickly or says the server is not there.
pub const VERSION_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one apply, list, delete or access review may take: a
/// server-side apply of a Deployment runs admission and may wait on
/// webhooks, so this is longer than the reachability bound.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A client for one API server, with where it came from for messages.
#[derive(Clone)]
pub struct Cluster {
    client: kube::Client,
    /// The API server's URL, for messages.
    server: String,
    /// The kubeconfig's current context, for the fix of a denial; `None`
    /// when the configuration came from a pod's service account.
    context: Option<String>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("server", &self.server)
            .field("context", &self.context)
            .finish_non_exhaustive()
    }
}

/// What `GET /version` answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerVersion {
    /// e.g. `v1.33.2`.
    pub git_version: String,
    pub platform: String,
}

impl Cluster {
    /// The cluster of the current kubeconfig (`KUBECONFIG`, else
    /// `~/.kube/config`), or of the pod's service account when there is no
    /// kubeconfig, as `kubectl` finds it. Makes no request.
    pub async fn infer() -> Result<Self, ConnectError> {
        let config = kube::Config::infer()
            .await
            .map_err(|error| ConnectError::NoConfig {
                reason: chain(&error),
            })?;
        // The context's name only improves messages, so a kubeconfig that
        // `infer` read but this cannot is not an error.
        let context = Kubeconfig::read()
            .ok()
            .and_then(|kubeconfig| kubeconfig.current_context);
        Self::with_config(config, context)
    }

    /// The cluster of the current context of `kubeconfig` (YAML or JSON),
    /// a kubeconfig held in memory rather than read from a file: the
    /// least-privilege one a credentials bootstrap made, or an admin's.
    /// Makes no request. The text is never part of an error.
    pub async fn from_kubeconfig_text(text: &str) -> Result<Self, ConnectError> {
        let kubeconfig = Kubeconfig::from_yaml(text).map_err(|error| ConnectError::NoConfig {
            reason: format!(
                "the kubeconfig given does not parse: {}",
                redacted_kind(&error)
            ),
        })?;
        let context = kubeconfig.current_context.clone();
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .map_err(|error| ConnectError::NoConfig {
            reason: format!(
                "the kubeconfig given cannot be used: {}",
                redacted_kind(&error)
            ),
        })?;
        Self::with_config(config, context)
    }

    fn with_config(
        mut config: kube::Config,
        context: Option<String>,
    ) -> Result<Self, ConnectError> {
        config.connect_timeout = Some(CONNECT_TIMEOUT);
        config.read_timeout = Some(REQUEST_TIMEOUT);
        // The read timeout counts from the request, not from when a pooled
        // connection went idle.
        config.reset_reader_on_write = true;
        let server = config.cluster_url.to_string();
        let server = server.trim_end_matches('/').to_owned();
        let client = kube::Client::try_from(config).map_err(|error| ConnectError::Client {
            server: server.clone(),
            reason: chain(&error),
        })?;
        Ok(Self {
            client,
            server,
            context,
        })
    }

    /// The API server's URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Who the requests are sent as, for a fix: `context NAME`, or the
    /// pod's service account.
    pub fn identity(&self) -> String {
        match &self.context {
            Some(context) => format!("context {context}"),
            None => "this pod's service account".to_owned(),
        }
    }

    /// `GET /version` within [`VERSION_TIMEOUT`]: is the server there?
    pub async fn apiserver_version(&self) -> Result<ServerVersion, ClusterError> {
        let info = self
            .bounded(
                "GET /version",
                VERSION_TIMEOUT,
                self.client.apiserver_version(),
            )
            .await?;
        Ok(ServerVersion {
            git_version: info.git_version,
            platform: info.platform,
        })
    }

    /// Sends `request` within [`REQUEST_TIMEOUT`] and returns the body.
    /// The body is returned as text and never parsed by `kube`, which logs
    /// a body it cannot parse: a Secret's would carry its values.
    pub(crate) async fn send(
        &self,
        action: &str,
        request: http::Request<Vec<u8>>,
    ) -> Result<String, kube::Error> {
        match tokio::time::timeout(REQUEST_TIMEOUT, self.client.request_text(request)).await {
            Ok(answer) => answer,
            Err(_) => Err(kube::Error::Service(
                format!("{action} took longer than {} s", REQUEST_TIMEOUT.as_secs()).into(),
            )),
        }
    }

    /// Runs `request` within `limit`, mapping its error.
    async fn bounded<T>(
        &self,
        action: &str,
        limit: Duration,
        request: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, ClusterError> {
        match tokio::time::timeout(limit, request).await {
            Ok(answer) => answer.map_err(|error| self.error(action, &error, None)),
            Err(_) => Err(ClusterError::Timeout {
                server: self.server.clone(),
                action: action.to_owned(),
                seconds: limit.as_secs(),
            }),
        }
    }

    /// The [`ClusterError`] of `error` from `action`. `forbidden` names the
    /// verb, resource and namespace a 403 is about.
    pub(crate) fn error(
        &self,
        action: &str,
        error: &kube::Error,
        forbidden: Option<(&str, &str, &str)>,
    ) -> ClusterError {
        match error {
            kube::Error::Api(status) if status.code == 403 => match forbidden {
                Some((verb, resource, namespace)) => ClusterError::Forbidden {
                    verb: verb.to_owned(),
                    resource: resource.to_owned(),
                    namespace: namespace.to_owned(),
                    context: self.identity(),
                    message: status.message.clone(),
                },
                None => self.rejected(action, status),
            },
            kube::Error::Api(status) => self.rejected(action, status),
            kube::Error::HyperError(_) | kube::Error::Service(_) => {
                let reason = chain(error);
                if reason.contains("took longer than")
                    || reason.to_lowercase().contains("timed out")
                {
                    ClusterError::Timeout {
                        server: self.server.clone(),
                        action: action.to_owned(),
                        seconds: REQUEST_TIMEOUT.as_secs(),
                    }
                } else {
                    ClusterError::Unreachable {
                        server: self.server.clone(),
                        action: action.to_owned(),
                        reason,
                    }
                }
            }
            other => ClusterError::Failed {
                server: self.server.clone(),
                action: action.to_owned(),
                reason: chain(other),
            },
        }
    }

    fn rejected(&self, action: &str, status: &kube::core::Status) -> ClusterError {
        ClusterError::Rejected {
            server: self.server.clone(),
            action: action.to_owned(),
            code: status.code,
            reason: status.reason.clone(),
            message: status.message.clone(),
        }
    }
}

/// What kind of kubeconfig error `error` is, without its text past the
/// first line: a parse error of a YAML document may quote the document,
/// and an admin kubeconfig holds credentials.
fn redacted_kind(error: &kube::config::KubeconfigError) -> String {
    use kube::config::KubeconfigError as E;
    match error {
        E::Parse(_) => "it is not a YAML kubeconfig".to_owned(),
        E::CurrentContextNotSet => "it sets no current-context".to_owned(),
        E::LoadContext(name) => format!("it has no context {name}"),
        E::LoadClusterOfContext(name) => format!("it has no cluster {name}"),
        E::MissingClusterUrl => "its cluster has no server".to_owned(),
        E::ParseClusterUrl(_) => "its cluster's server is not a URL".to_owned(),
        _ => "it cannot be loaded".to_owned(),
    }
}

/// `error` and its sources, joined: `kube`'s outer messages ("client
/// error (Connect)") say little without the inner ones.
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let inner_text = inner.to_string();
        if !text.contains(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        source = inner.source();
    }
    text
}
