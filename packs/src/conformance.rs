//! The conformance suite every [`Deployer`] must pass (feature
//! `conformance`): each check takes a deployer from the caller's factory
//! and revisions from its [`ConformanceFixture`], drives the contract
//! through the trait only, and panics with what broke.
//!
//! The fixture's revisions must run a service that answers `GET /healthz`
//! with 2xx and `GET /stream?chunks=N` with N KiB streamed over about
//! N×10 ms, and that finishes in-flight requests after its stop signal
//! (the workspace's `demo-service` does).

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;

use crate::deployer::{Deployer, DeployerError, RevisionPhase, RevisionSpec, SplitEntry};

/// Chunks of the in-flight response in the drain check (~400 ms of streaming).
const DRAIN_CHUNKS: usize = 40;
/// Grace the drain check gives; the streamed response needs far less.
const DRAIN_GRACE: Duration = Duration::from_secs(10);

/// Where the suite gets revisions.
pub trait ConformanceFixture: Send + Sync {
    /// A new revision (fresh id, its own log folder) with `instances`
    /// instances of the test service, ready to be staged.
    fn revision(&self, instances: u32) -> RevisionSpec;
}

/// Makes a fresh deployer for one check.
pub type DeployerFactory<'a> = &'a (dyn Fn() -> Box<dyn Deployer> + Sync);

/// Runs every check in turn.
pub async fn run_all(factory: DeployerFactory<'_>, fixture: &dyn ConformanceFixture) {
    idempotent_calls(factory(), fixture).await;
    preconditions_before_side_effects(factory(), fixture).await;
    invalid_split_refused(factory(), fixture).await;
    drain_lets_in_flight_finish(factory(), fixture).await;
    archive_leaves_nothing_running(factory(), fixture).await;
}

async fn provider_count(deployer: &dyn Deployer, spec: &RevisionSpec) -> usize {
    deployer
        .provider_instances(spec)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{}: listing instances failed: {e}",
                deployer.descriptor_path()
            )
        })
        .len()
}

async fn health(addr: SocketAddr) -> Option<StatusCode> {
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    let request = Request::get("/healthz")
        .header("host", addr.to_string())
        .body(Empty::<Bytes>::new())
        .ok()?;
    Some(sender.send_request(request).await.ok()?.status())
}

/// Every call made twice answers the same and starts nothing more.
pub async fn idempotent_calls(deployer: Box<dyn Deployer>, fixture: &dyn ConformanceFixture) {
    let name = deployer.descriptor_path().to_owned();
    let spec = fixture.revision(2);
    let first = deployer.stage_revision(&spec).await.expect("stage");
    let second = deployer.stage_revision(&spec).await.expect("stage again");
    assert_eq!(first, second, "{name}: a second stage answered differently");

    let warm = deployer.warm_revision(&spec).await.expect("warm");
    let addrs = warm.instances.borrow().ready();
    assert_eq!(
        addrs.len(),
        2,
        "{name}: warm is ready only with every instance"
    );
    let again = deployer.warm_revision(&spec).await.expect("warm again");
    assert_eq!(
        again.instances.borrow().ready(),
        addrs,
        "{name}: a second warm changed the instances"
    );
    assert_eq!(
        provider_count(deployer.as_ref(), &spec).await,
        2,
        "{name}: a second warm started duplicates"
    );
    for addr in &addrs {
        assert!(
            health(*addr).await.is_some_and(|s| s.is_success()),
            "{name}: a ready instance at {addr} does not answer its health path"
        );
    }

    let split = [SplitEntry {
        revision_id: spec.revision_id,
        weight_bps: 10_000,
    }];
    deployer.apply_traffic_split(&split).await.expect("split");
    deployer
        .apply_traffic_split(&split)
        .await
        .expect("split again");
    let report = deployer.report_runtime_config();
    assert_eq!(report.split, split.to_vec(), "{name}: split not reported");
    assert_eq!(
        report.revisions.get(&spec.revision_id).map(|r| r.phase),
        Some(RevisionPhase::Warm)
    );

    deployer
        .drain_revision(&spec, Duration::from_secs(5))
        .await
        .expect("drain");
    deployer
        .drain_revision(&spec, Duration::from_secs(5))
        .await
        .expect("drain again");
    assert_eq!(
        deployer
            .report_runtime_config()
            .revisions
            .get(&spec.revision_id)
            .map(|r| r.phase),
        Some(RevisionPhase::Drained)
    );
    deployer.archive_revision(&spec).await.expect("archive");
    deployer
        .archive_revision(&spec)
        .await
        .expect("archive again");
    assert_eq!(provider_count(deployer.as_ref(), &spec).await, 0);
    assert!(
        !deployer
            .report_runtime_config()
            .revisions
            .contains_key(&spec.revision_id),
        "{name}: an archived revision is still reported"
    );
}

/// Refused calls (bad spec, not staged, split naming a cold revision)
/// leave nothing on the provider and change nothing in the report.
pub async fn preconditions_before_side_effects(
    deployer: Box<dyn Deployer>,
    fixture: &dyn ConformanceFixture,
) {
    let name = deployer.descriptor_path().to_owned();
    let spec = fixture.revision(1);
    let refused = deployer.warm_revision(&spec).await;
    assert!(
        matches!(refused, Err(DeployerError::NotStaged { .. })),
        "{name}: warm before stage was not refused with NotStaged: {refused:?}"
    );
    assert_eq!(
        provider_count(deployer.as_ref(), &spec).await,
        0,
        "{name}: a refused warm started something"
    );

    let mut zero = fixture.revision(1);
    zero.instances = 0;
    let refused = deployer.stage_revision(&zero).await;
    assert!(
        matches!(
            refused,
            Err(DeployerError::InvalidSpec {
                field: "instances",
                ..
            })
        ),
        "{name}: zero instances accepted: {refused:?}"
    );
    assert!(
        matches!(
            deployer.warm_revision(&zero).await,
            Err(DeployerError::InvalidSpec { .. })
        ),
        "{name}: warm of an invalid spec not refused"
    );
    assert_eq!(provider_count(deployer.as_ref(), &zero).await, 0);

    let before = deployer.report_runtime_config();
    deployer.stage_revision(&spec).await.expect("stage");
    let cold = [SplitEntry {
        revision_id: spec.revision_id,
        weight_bps: 10_000,
    }];
    let refused = deployer.apply_traffic_split(&cold).await;
    assert!(
        matches!(refused, Err(DeployerError::RevisionNotWarm { .. })),
        "{name}: a split to a revision that is only staged was accepted: {refused:?}"
    );
    assert_eq!(
        deployer.report_runtime_config().split,
        before.split,
        "{name}: a refused split changed the split"
    );
    assert_eq!(provider_count(deployer.as_ref(), &spec).await, 0);
    deployer.archive_revision(&spec).await.expect("archive");
}

/// A split not summing to 10000 is refused with `InvalidSplit`, whatever runs.
pub async fn invalid_split_refused(deployer: Box<dyn Deployer>, fixture: &dyn ConformanceFixture) {
    let name = deployer.descriptor_path().to_owned();
    let spec = fixture.revision(1);
    deployer.stage_revision(&spec).await.expect("stage");
    deployer.warm_revision(&spec).await.expect("warm");
    let good = [SplitEntry {
        revision_id: spec.revision_id,
        weight_bps: 10_000,
    }];
    deployer
        .apply_traffic_split(&good)
        .await
        .expect("a valid split");
    for weight_bps in [0, 9_999, 10_001] {
        let bad = [SplitEntry {
            revision_id: spec.revision_id,
            weight_bps,
        }];
        let refused = deployer.apply_traffic_split(&bad).await;
        assert!(
            matches!(refused, Err(DeployerError::InvalidSplit { .. })),
            "{name}: a split of {weight_bps} bps was not refused with InvalidSplit: {refused:?}"
        );
    }
    assert_eq!(deployer.report_runtime_config().split, good.to_vec());
    deployer.archive_revision(&spec).await.expect("archive");
}

/// A request in flight when the drain starts finishes whole; afterwards
/// nothing of the revision runs.
pub async fn drain_lets_in_flight_finish(
    deployer: Box<dyn Deployer>,
    fixture: &dyn ConformanceFixture,
) {
    let name = deployer.descriptor_path().to_owned();
    let spec = fixture.revision(1);
    deployer.stage_revision(&spec).await.expect("stage");
    let warm = deployer.warm_revision(&spec).await.expect("warm");
    let addr = warm.instances.borrow().ready()[0];
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let request = Request::get(format!("/stream?chunks={DRAIN_CHUNKS}"))
        .header("host", addr.to_string())
        .body(Empty::<Bytes>::new())
        .expect("request");
    // Once the head is here the request is in flight.
    let response = sender.send_request(request).await.expect("response head");
    assert_eq!(response.status(), StatusCode::OK);
    let (drained, body) = tokio::join!(
        deployer.drain_revision(&spec, DRAIN_GRACE),
        response.into_body().collect()
    );
    drained.expect("drain");
    let body = body.unwrap_or_else(|e| panic!("{name}: the in-flight response was cut: {e}"));
    assert_eq!(
        body.to_bytes().len(),
        DRAIN_CHUNKS * 1024,
        "{name}: the in-flight response was cut short by the drain"
    );
    assert_eq!(
        provider_count(deployer.as_ref(), &spec).await,
        0,
        "{name}: instances left after drain"
    );
    deployer.archive_revision(&spec).await.expect("archive");
}

/// After archive nothing of the revision runs: the provider lists nothing,
/// the addresses answer nothing, and the report forgets it.
pub async fn archive_leaves_nothing_running(
    deployer: Box<dyn Deployer>,
    fixture: &dyn ConformanceFixture,
) {
    let name = deployer.descriptor_path().to_owned();
    let spec = fixture.revision(2);
    deployer.stage_revision(&spec).await.expect("stage");
    let warm = deployer.warm_revision(&spec).await.expect("warm");
    let addrs = warm.instances.borrow().ready();
    assert_eq!(provider_count(deployer.as_ref(), &spec).await, 2);
    // Archive straight from warm: no drain first.
    deployer.archive_revision(&spec).await.expect("archive");
    assert_eq!(
        provider_count(deployer.as_ref(), &spec).await,
        0,
        "{name}: instances left after archive"
    );
    for addr in addrs {
        assert!(
            health(addr).await.is_none(),
            "{name}: {addr} still answers after archive"
        );
    }
    assert!(
        !deployer
            .report_runtime_config()
            .revisions
            .contains_key(&spec.revision_id)
    );
    let refused = deployer.warm_revision(&spec).await;
    assert!(
        matches!(refused, Err(DeployerError::NotStaged { .. })),
        "{name}: an archived revision warmed without a new stage: {refused:?}"
    );
}
