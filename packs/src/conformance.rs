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

use crate::deployer::{
    Deployer, DeployerError, INSTANCES_MAX, InstanceSlot, RevisionPhase, RevisionSpec, SplitEntry,
};

/// Chunks of the in-flight response in the drain check (~400 ms of streaming).
const DRAIN_CHUNKS: usize = 40;
/// Grace the drain check gives; the streamed response needs far less.
const DRAIN_GRACE: Duration = Duration::from_secs(10);
/// Chunks of the in-flight response in the shrink check (~1.5 s of
/// streaming, well inside the test service's own 5 s drain after SIGTERM):
/// long enough that a shrink which waited for its instance to stop would
/// return only after the response ended.
const SHRINK_CHUNKS: usize = 150;
/// How long an instance a shrink removed may take to be gone from the
/// provider's listing.
const SHRINK_SETTLE: Duration = Duration::from_secs(15);

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
    scale_up_and_down(factory(), fixture).await;
    warm_at_zero_then_scale_up(factory(), fixture).await;
    shrink_lets_in_flight_finish(factory(), fixture).await;
    reload_signals_without_restarting(factory(), fixture).await;
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

/// Polls the provider's listing until it holds `expected` instances of
/// `spec`, for at most `within`; panics with the last count otherwise.
async fn wait_provider_count(
    deployer: &dyn Deployer,
    spec: &RevisionSpec,
    expected: usize,
    within: Duration,
) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let count = provider_count(deployer, spec).await;
        if count == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}: the provider still lists {count} instances, not {expected}, after {within:?}",
            deployer.descriptor_path()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The provider's ids of `spec`'s instances, sorted.
async fn provider_ids(deployer: &dyn Deployer, spec: &RevisionSpec) -> Vec<String> {
    let mut ids: Vec<String> = deployer
        .provider_instances(spec)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{}: listing instances failed: {e}",
                deployer.descriptor_path()
            )
        })
        .into_iter()
        .map(|instance| instance.id)
        .collect();
    ids.sort();
    ids
}

/// The provider's id of instance `index` of `spec` (a pid, a container id).
async fn provider_id(deployer: &dyn Deployer, spec: &RevisionSpec, index: u32) -> Option<String> {
    deployer
        .provider_instances(spec)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{}: listing instances failed: {e}",
                deployer.descriptor_path()
            )
        })
        .into_iter()
        .find(|instance| instance.index == Some(index))
        .map(|instance| instance.id)
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

    let mut too_many = fixture.revision(1);
    too_many.instances = INSTANCES_MAX + 1;
    let refused = deployer.stage_revision(&too_many).await;
    assert!(
        matches!(
            refused,
            Err(DeployerError::InvalidSpec {
                field: "instances",
                ..
            })
        ),
        "{name}: more than {INSTANCES_MAX} instances accepted: {refused:?}"
    );
    assert!(
        matches!(
            deployer.warm_revision(&too_many).await,
            Err(DeployerError::InvalidSpec { .. })
        ),
        "{name}: warm of an invalid spec not refused"
    );
    assert!(
        matches!(
            deployer.scale_revision(&too_many, 1, Duration::ZERO).await,
            Err(DeployerError::InvalidSpec { .. })
        ),
        "{name}: scale of an invalid spec not refused"
    );
    assert_eq!(provider_count(deployer.as_ref(), &too_many).await, 0);

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

/// Resizing a warm revision: growing starts ready instances beside the
/// ones running (which keep their address and provider instance),
/// the same count changes nothing, shrinking removes the highest slots at
/// once and the provider's instances soon after, 0 and back work, and a
/// scale of a revision not staged or not warm is refused before anything
/// starts.
pub async fn scale_up_and_down(deployer: Box<dyn Deployer>, fixture: &dyn ConformanceFixture) {
    let name = deployer.descriptor_path().to_owned();
    let spec = fixture.revision(1);
    deployer.stage_revision(&spec).await.expect("stage");
    let warm = deployer.warm_revision(&spec).await.expect("warm");
    let first = warm.instances.borrow().ready();
    assert_eq!(first.len(), 1, "{name}: warm of 1 instance: {first:?}");
    let first = first[0];
    let first_id = provider_id(deployer.as_ref(), &spec, 0).await;
    assert!(first_id.is_some(), "{name}: instance 0 not listed");

    let up = deployer
        .scale_revision(&spec, 3, DRAIN_GRACE)
        .await
        .expect("scale to 3");
    let addrs = up.instances.borrow().ready();
    assert_eq!(addrs.len(), 3, "{name}: scale to 3 answered {addrs:?}");
    assert_eq!(
        addrs[0], first,
        "{name}: growing moved the instance that was running"
    );
    let indexes: Vec<u32> = up
        .instances
        .borrow()
        .slots
        .iter()
        .map(|s| s.index)
        .collect();
    assert_eq!(indexes, [0, 1, 2], "{name}: slots not index-ordered");
    assert_eq!(
        warm.instances.borrow().ready(),
        addrs,
        "{name}: the receiver warm answered does not see the new instances"
    );
    for addr in &addrs {
        assert!(
            health(*addr).await.is_some_and(|s| s.is_success()),
            "{name}: a scaled-up instance at {addr} does not answer its health path"
        );
    }
    assert_eq!(
        provider_id(deployer.as_ref(), &spec, 0).await,
        first_id,
        "{name}: growing restarted instance 0"
    );

    let again = deployer
        .scale_revision(&spec, 3, DRAIN_GRACE)
        .await
        .expect("scale to 3 again");
    assert_eq!(
        again.instances.borrow().ready(),
        addrs,
        "{name}: a second scale to the same count changed the instances"
    );
    assert_eq!(
        provider_count(deployer.as_ref(), &spec).await,
        3,
        "{name}: a second scale to 3 started duplicates"
    );

    let down = deployer
        .scale_revision(&spec, 1, DRAIN_GRACE)
        .await
        .expect("scale to 1");
    assert_eq!(
        down.instances.borrow().slots,
        [InstanceSlot {
            index: 0,
            addr: Some(first)
        }],
        "{name}: a shrink to 1 did not leave exactly the original slot at once"
    );
    wait_provider_count(deployer.as_ref(), &spec, 1, SHRINK_SETTLE).await;
    assert_eq!(
        provider_id(deployer.as_ref(), &spec, 0).await,
        first_id,
        "{name}: shrinking stopped the instance that stays"
    );
    assert!(
        health(first).await.is_some_and(|s| s.is_success()),
        "{name}: the instance that stays does not answer after the shrink"
    );

    let zero = deployer
        .scale_revision(&spec, 0, DRAIN_GRACE)
        .await
        .expect("scale to 0");
    assert!(
        zero.instances.borrow().slots.is_empty(),
        "{name}: scale to 0 left slots: {:?}",
        zero.instances.borrow().slots
    );
    wait_provider_count(deployer.as_ref(), &spec, 0, SHRINK_SETTLE).await;
    let report = deployer.report_runtime_config();
    let runtime = report.revisions.get(&spec.revision_id);
    assert_eq!(
        runtime.map(|r| (r.phase, r.instances.len())),
        Some((RevisionPhase::Warm, 0)),
        "{name}: a revision scaled to 0 is not reported warm with no instances"
    );

    let back = deployer
        .scale_revision(&spec, 1, DRAIN_GRACE)
        .await
        .expect("scale from 0 to 1");
    let ready = back.instances.borrow().ready();
    assert_eq!(
        ready.len(),
        1,
        "{name}: scale from 0 to 1 answered {ready:?}"
    );
    assert!(
        health(ready[0]).await.is_some_and(|s| s.is_success()),
        "{name}: the instance started from 0 does not answer its health path"
    );
    assert_eq!(provider_count(deployer.as_ref(), &spec).await, 1);
    assert_eq!(
        back.instances.borrow().exits_total,
        0,
        "{name}: instances a shrink stopped were counted as unexpected exits"
    );

    let never_staged = fixture.revision(1);
    let refused = deployer.scale_revision(&never_staged, 2, DRAIN_GRACE).await;
    assert!(
        matches!(refused, Err(DeployerError::NotStaged { .. })),
        "{name}: scale of a revision never staged was not refused with NotStaged: {refused:?}"
    );
    assert_eq!(provider_count(deployer.as_ref(), &never_staged).await, 0);

    let cold = fixture.revision(1);
    deployer.stage_revision(&cold).await.expect("stage cold");
    let refused = deployer.scale_revision(&cold, 2, DRAIN_GRACE).await;
    assert!(
        matches!(
            refused,
            Err(DeployerError::NotWarm {
                phase: RevisionPhase::Staged,
                ..
            })
        ),
        "{name}: scale of a revision only staged was not refused with NotWarm: {refused:?}"
    );
    assert_eq!(
        provider_count(deployer.as_ref(), &cold).await,
        0,
        "{name}: a refused scale started something"
    );
    deployer
        .archive_revision(&cold)
        .await
        .expect("archive cold");

    deployer
        .drain_revision(&spec, DRAIN_GRACE)
        .await
        .expect("drain");
    let refused = deployer.scale_revision(&spec, 2, DRAIN_GRACE).await;
    assert!(
        matches!(
            refused,
            Err(DeployerError::NotWarm {
                phase: RevisionPhase::Drained,
                ..
            })
        ),
        "{name}: scale of a drained revision was not refused with NotWarm: {refused:?}"
    );
    assert_eq!(
        provider_count(deployer.as_ref(), &spec).await,
        0,
        "{name}: a scale after drain started something"
    );
    deployer.archive_revision(&spec).await.expect("archive");
    assert_eq!(
        provider_count(deployer.as_ref(), &spec).await,
        0,
        "{name}: instances left after archive"
    );
    assert!(
        !deployer
            .report_runtime_config()
            .revisions
            .contains_key(&spec.revision_id),
        "{name}: an archived revision is still reported"
    );
}

/// A revision warmed with 0 instances is warm with an empty set and
/// nothing on the provider, and scales up from there.
pub async fn warm_at_zero_then_scale_up(
    deployer: Box<dyn Deployer>,
    fixture: &dyn ConformanceFixture,
) {
    let name = deployer.descriptor_path().to_owned();
    let spec = fixture.revision(0);
    deployer
        .stage_revision(&spec)
        .await
        .expect("stage 0 instances");
    let warm = deployer
        .warm_revision(&spec)
        .await
        .expect("warm 0 instances");
    assert!(
        warm.instances.borrow().slots.is_empty(),
        "{name}: warm of 0 instances answered slots"
    );
    assert_eq!(provider_count(deployer.as_ref(), &spec).await, 0);
    assert_eq!(
        deployer
            .report_runtime_config()
            .revisions
            .get(&spec.revision_id)
            .map(|r| r.phase),
        Some(RevisionPhase::Warm),
        "{name}: a revision warmed with 0 instances is not reported warm"
    );
    let up = deployer
        .scale_revision(&spec, 2, DRAIN_GRACE)
        .await
        .expect("scale from 0 to 2");
    assert_eq!(up.instances.borrow().ready().len(), 2);
    assert_eq!(
        warm.instances.borrow().ready(),
        up.instances.borrow().ready(),
        "{name}: the receiver warm answered does not see the new instances"
    );
    assert_eq!(provider_count(deployer.as_ref(), &spec).await, 2);
    deployer.archive_revision(&spec).await.expect("archive");
    assert_eq!(
        provider_count(deployer.as_ref(), &spec).await,
        0,
        "{name}: instances left after archive"
    );
}

/// `reload_revision` tells every instance of a warm revision (SIGHUP, which
/// the fixture's service handles) without restarting any: the provider
/// lists the same instances afterwards, they still answer, and no exit was
/// counted. A revision never staged, only staged, or drained is refused.
pub async fn reload_signals_without_restarting(
    deployer: Box<dyn Deployer>,
    fixture: &dyn ConformanceFixture,
) {
    let name = deployer.descriptor_path().to_owned();
    let never_staged = fixture.revision(1);
    let refused = deployer.reload_revision(&never_staged).await;
    assert!(
        matches!(refused, Err(DeployerError::NotStaged { .. })),
        "{name}: reload of a revision never staged was not refused with NotStaged: {refused:?}"
    );
    let spec = fixture.revision(2);
    deployer.stage_revision(&spec).await.expect("stage");
    let refused = deployer.reload_revision(&spec).await;
    assert!(
        matches!(
            refused,
            Err(DeployerError::NotWarm {
                phase: RevisionPhase::Staged,
                ..
            })
        ),
        "{name}: reload of a revision only staged was not refused with NotWarm: {refused:?}"
    );
    let warm = deployer.warm_revision(&spec).await.expect("warm");
    let before = provider_ids(deployer.as_ref(), &spec).await;
    let told = deployer.reload_revision(&spec).await.expect("reload");
    assert_eq!(told, 2, "{name}: reload told {told} instances, not 2");
    // A restart would show as an exit and as new provider ids; give a
    // mishandled signal time to take effect.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        provider_ids(deployer.as_ref(), &spec).await,
        before,
        "{name}: reloading replaced instances"
    );
    assert_eq!(
        warm.instances.borrow().exits_total,
        0,
        "{name}: an instance exited on reload"
    );
    let ready = warm.instances.borrow().ready();
    for addr in ready {
        assert_eq!(
            health(addr).await,
            Some(StatusCode::OK),
            "{name}: an instance does not answer after reload"
        );
    }
    deployer
        .drain_revision(&spec, DRAIN_GRACE)
        .await
        .expect("drain");
    let refused = deployer.reload_revision(&spec).await;
    assert!(
        matches!(
            refused,
            Err(DeployerError::NotWarm {
                phase: RevisionPhase::Drained,
                ..
            })
        ),
        "{name}: reload of a drained revision was not refused with NotWarm: {refused:?}"
    );
    deployer.archive_revision(&spec).await.expect("archive");
}

/// A request in flight on an instance a shrink removes finishes whole; the
/// shrink itself returns without waiting for it, and the removed instance
/// is gone from the provider afterwards while the others keep serving.
pub async fn shrink_lets_in_flight_finish(
    deployer: Box<dyn Deployer>,
    fixture: &dyn ConformanceFixture,
) {
    let name = deployer.descriptor_path().to_owned();
    let spec = fixture.revision(2);
    deployer.stage_revision(&spec).await.expect("stage");
    let warm = deployer.warm_revision(&spec).await.expect("warm");
    let (kept, removed) = {
        let set = warm.instances.borrow();
        let addr_of = |index: u32| {
            set.slots
                .iter()
                .find(|slot| slot.index == index)
                .and_then(|slot| slot.addr)
                .unwrap_or_else(|| panic!("{name}: instance {index} not ready after warm"))
        };
        (addr_of(0), addr_of(1))
    };
    let stream = tokio::net::TcpStream::connect(removed)
        .await
        .expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let request = Request::get(format!("/stream?chunks={SHRINK_CHUNKS}"))
        .header("host", removed.to_string())
        .body(Empty::<Bytes>::new())
        .expect("request");
    // Once the head is here the request is in flight.
    let response = sender.send_request(request).await.expect("response head");
    assert_eq!(response.status(), StatusCode::OK);
    let body = tokio::spawn(response.into_body().collect());

    let down = deployer
        .scale_revision(&spec, 1, DRAIN_GRACE)
        .await
        .expect("scale to 1");
    assert!(
        !body.is_finished(),
        "{name}: the shrink returned only after the in-flight response ended; it must not wait"
    );
    assert_eq!(
        down.instances.borrow().ready(),
        [kept],
        "{name}: the shrink did not remove the highest slot at once"
    );
    let body = body
        .await
        .expect("body task")
        .unwrap_or_else(|e| panic!("{name}: the in-flight response was cut: {e}"));
    assert_eq!(
        body.to_bytes().len(),
        SHRINK_CHUNKS * 1024,
        "{name}: the in-flight response was cut short by the shrink"
    );
    wait_provider_count(deployer.as_ref(), &spec, 1, SHRINK_SETTLE).await;
    assert!(
        health(kept).await.is_some_and(|s| s.is_success()),
        "{name}: the instance that stays does not answer after the shrink"
    );
    deployer.archive_revision(&spec).await.expect("archive");
    assert_eq!(provider_count(deployer.as_ref(), &spec).await, 0);
}
