//! Request-driven autoscaling on a real node (`gtc node run`) running real
//! instances of the example service: scale from zero under concurrent
//! requests, back to zero when idle, the hold queue's bounds, a scale-down
//! that lets in-flight requests finish, and `revisions scale`'s refusals.

mod common;

use std::time::{Duration, Instant};

use common::{
    Home, Node, children, get, header, lifecycle, service_bundle, set_split, setup, stage_and_warm,
    wait_generation, wait_until,
};
use serde_json::json;

/// A bundle of the example service that scales with `scaling` (a JSON
/// object, which is YAML); `mode` is its `DEMO_MODE`, if any.
fn scaling_bundle(
    home: &Home,
    name: &str,
    scaling: serde_json::Value,
    mode: Option<&str>,
) -> std::path::PathBuf {
    let env = mode.map_or_else(String::new, |mode| {
        format!("  env:\n    DEMO_MODE: \"{mode}\"\n")
    });
    service_bundle(
        home,
        name,
        "shop",
        &format!("{env}  startup_timeout_seconds: 10\n  instances: 1\n  scaling: {scaling}\n"),
    )
}

/// Stages and warms `bundle`, waits until it is ready and sends it all of
/// `deployment`'s traffic; its revision id.
fn serve(home: &Home, node: &Node, deployment: &str, bundle: &std::path::Path) -> String {
    let revision = stage_and_warm(home, deployment, bundle);
    wait_until("ready", Duration::from_secs(20), || {
        lifecycle(home, &revision) == "ready"
    });
    let generation = set_split(
        home,
        deployment,
        &format!("all-to-{revision}"),
        json!([{"revision_id": revision, "weight_percent": 100}]),
    );
    wait_generation(node, generation);
    revision
}

/// The value of the first `/metrics` line that starts with `series`.
fn metric(node: &Node, series: &str) -> Option<f64> {
    let (_, _, text) = get(node.admin, "/metrics", None).ok()?;
    text.lines()
        .find(|line| line.starts_with(series))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

/// Fast settings: a 6 s stable window (the shortest), no grace.
fn quick(max: u32, target: u32) -> serde_json::Value {
    json!({
        "min_instances": 0,
        "max_instances": max,
        "target_concurrency": target,
        "stable_window_seconds": 6,
        "panic_window_seconds": 2,
        "scale_to_zero_grace_seconds": 0,
        "queue_size": 100,
        "queue_wait_seconds": 20,
    })
}

#[test]
fn a_revision_scales_from_zero_under_concurrent_requests_and_back_to_zero_when_idle() {
    // Proves: an idle revision with min_instances 0 runs no instance once
    // its stable window passed; 20 concurrent requests sent then are all
    // answered 200 after a cold start that starts at most
    // ceil(held / target) = 2 instances (no panic overshoot), measured in
    // gtc_router_cold_start_seconds; the decisions are audited as the
    // autoscaler's; and the revision is back at 0 after its idle window,
    // its next request answered again.
    let (home, node, deployment) = setup();
    let bundle = scaling_bundle(&home, "scaled", quick(5, 10), None);
    let revision = serve(&home, &node, &deployment, &bundle);
    wait_until("scale to zero while idle", Duration::from_secs(30), || {
        children(node.pid()).is_empty()
    });
    let ready = format!("gtc_instances_ready{{revision=\"{revision}\"}}");
    assert_eq!(metric(&node, &ready), Some(0.0));

    let addr = node.addr;
    let started = Instant::now();
    let clients: Vec<_> = (0..20)
        .map(|_| std::thread::spawn(move || get(addr, "/", None)))
        .collect();
    for client in clients {
        let (status, headers, body) = client.join().expect("client").expect("answer");
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            header(&headers, "x-greentic-revision"),
            Some(revision.as_str())
        );
    }
    let cold = started.elapsed();
    let running = children(node.pid()).len();
    assert!(
        (1..=2).contains(&running),
        "a cold start for 20 held requests at a target of 10 starts 1 or 2 instances, not {running}"
    );
    assert!(cold < Duration::from_secs(10), "cold start took {cold:?}");
    let measured = metric(&node, "gtc_router_cold_start_seconds_count");
    assert!(
        measured.is_some_and(|count| count >= 1.0),
        "held requests are measured: {measured:?}"
    );
    let audit = home.audit_lines("local");
    let decisions: Vec<&String> = audit
        .iter()
        .filter(|line| line.contains(&format!("autoscaler:{revision}")))
        .collect();
    assert!(
        decisions.iter().any(|line| line.contains("from-zero")),
        "the cold start is an audited decision of the autoscaler: {decisions:#?}"
    );

    wait_until("back to zero when idle", Duration::from_secs(30), || {
        children(node.pid()).is_empty()
    });
    let (status, _, body) = get(node.addr, "/", None).expect("after idle");
    assert_eq!(status, 200, "{body}");
}

#[test]
fn requests_past_the_hold_queue_bounds_get_a_clear_503_with_retry_after() {
    // Proves: while a revision cold-starts (its service takes 3 s to
    // listen), the router holds at most queue_size requests and no longer
    // than queue_wait_seconds: the others get 503 hold-queue-full, the
    // held ones 503 hold-timeout, both with Retry-After, and nothing hangs.
    let (home, node, deployment) = setup();
    let mut settings = quick(2, 10);
    settings["queue_size"] = json!(2);
    settings["queue_wait_seconds"] = json!(1);
    let bundle = scaling_bundle(&home, "slow", settings, Some("slow-start-ms=3000"));
    serve(&home, &node, &deployment, &bundle);
    wait_until("scale to zero while idle", Duration::from_secs(30), || {
        children(node.pid()).is_empty()
    });
    let addr = node.addr;
    let clients: Vec<_> = (0..6)
        .map(|_| std::thread::spawn(move || get(addr, "/", None)))
        .collect();
    let mut kinds = Vec::new();
    for client in clients {
        let (status, headers, body) = client.join().expect("client").expect("answer");
        assert_eq!(status, 503, "{body}");
        assert!(header(&headers, "retry-after").is_some(), "{headers:?}");
        let kind =
            serde_json::from_str::<serde_json::Value>(&body).expect("json body")["error"]["kind"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
        kinds.push(kind);
    }
    kinds.sort();
    assert_eq!(
        kinds.iter().filter(|k| *k == "hold-timeout").count(),
        2,
        "two held, then timed out: {kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| *k == "hold-queue-full").count(),
        4,
        "the rest refused at once: {kinds:?}"
    );
}

#[test]
fn a_scale_down_lets_in_flight_requests_finish() {
    // Proves: lowering max_instances with `revisions scale` (an audited
    // command, not a redeploy) resizes the running revision from 2 to 1
    // instance while slow requests are in flight on both: every one of them
    // is answered 200, and the instance that stays is the one that ran.
    let (home, node, deployment) = setup();
    let mut settings = quick(4, 10);
    settings["min_instances"] = json!(2);
    let bundle = scaling_bundle(&home, "two", settings.clone(), None);
    let revision = serve(&home, &node, &deployment, &bundle);
    wait_until("two instances", Duration::from_secs(20), || {
        children(node.pid()).len() == 2
    });
    let before = children(node.pid());
    let addr = node.addr;
    let slow: Vec<_> = (0..6)
        .map(|_| std::thread::spawn(move || get(addr, "/slow?ms=2500", None)))
        .collect();
    let in_flight =
        format!("gtc_router_in_flight_requests{{revision=\"{revision}\",state=\"served\"}}");
    wait_until("six requests in flight", Duration::from_secs(5), || {
        metric(&node, &in_flight) == Some(6.0)
    });
    settings["min_instances"] = json!(1);
    settings["max_instances"] = json!(1);
    let scaled = home.mutate(
        "revisions",
        "scale",
        json!({"environment_id": "local", "revision_id": revision, "scaling": settings}),
    );
    assert_eq!(scaled.code, 0, "{}", scaled.stderr);
    for request in slow {
        let (status, _, body) = request.join().expect("client").expect("answer");
        assert_eq!(status, 200, "{body}");
    }
    wait_until("one instance", Duration::from_secs(20), || {
        children(node.pid()).len() == 1
    });
    let after = children(node.pid());
    assert!(
        before.contains(&after[0]),
        "the instance that stays kept running: {before:?} → {after:?}"
    );
    assert!(
        home.audit_lines("local")
            .iter()
            .any(|line| line.contains("\"scale\"") && line.contains(&revision)),
        "`revisions scale` is audited"
    );
}

#[test]
fn bad_scaling_answers_are_refused_by_field_and_change_nothing() {
    // Proves: min above max, a target of 0, a window out of range and a
    // queue bound of 0 are each refused with the field named and a
    // non-zero exit, and the state does not move.
    let home = Home::new();
    home.gtc(&["op", "env", "init"]);
    let deployment = common::id(
        &home.ok(
            "bundles",
            "add",
            json!({"environment_id": "local", "bundle_id": "shop"}),
        ),
        "deployment_id",
    );
    let bundle = common::example_bundle(&home, "fixed", "shop");
    let staged = home.ok(
        "revisions",
        "stage",
        json!({"environment_id": "local", "deployment_id": deployment, "bundle_path": bundle}),
    );
    let revision = common::id(&staged, "revision_id");
    let before = home.snapshot();
    for (scaling, field) in [
        (
            json!({"min_instances": 3, "max_instances": 2}),
            "scaling.min_instances",
        ),
        (
            json!({"target_concurrency": 0}),
            "scaling.target_concurrency",
        ),
        (
            json!({"stable_window_seconds": 3601}),
            "scaling.stable_window_seconds",
        ),
        (json!({"queue_size": 0}), "scaling.queue_size"),
        (json!({"max_instance": 3}), "scaling"),
    ] {
        let run = home.mutate(
            "revisions",
            "scale",
            json!({"environment_id": "local", "revision_id": revision, "scaling": scaling}),
        );
        assert_ne!(run.code, 0, "{scaling} was accepted");
        let text = format!("{}{}", run.stderr, run.stdout);
        assert!(
            text.contains(field),
            "{scaling}: the error names {field}: {text}"
        );
    }
    let changed: Vec<_> = home
        .snapshot()
        .into_iter()
        .filter(|(path, bytes)| {
            !path.to_string_lossy().contains("audit") && before.get(path) != Some(bytes)
        })
        .map(|(path, _)| path)
        .collect();
    assert!(changed.is_empty(), "refusals changed {changed:?}");
    let schema = home.gtc(&["op", "revisions", "scale", "--schema"]);
    assert_eq!(schema.code, 0);
    assert!(
        schema
            .stdout
            .to_string()
            .contains("min_instances_while_active"),
        "{}",
        schema.stdout
    );
}
