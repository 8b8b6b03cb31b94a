//! The runtime config channel (issue #14 item 4) on a real node running the
//! example service: a deployment's `config_overrides` become per-pack
//! `greentic.pack-config.v1` files pinned by each revision when it is
//! staged, given to its instances in `GTC_CONFIG_DIR`; a change reaches a
//! pinned revision only through a new revision (and a node restart starts
//! the old revision with its own configuration again), while a revision
//! whose bundle declares `reload: signal` has its files rewritten and its
//! running instances sent SIGHUP (same process, reloaded). The node keeps
//! `<env>/runtime-config.json` (`greentic.runtime-config.v1`) current with
//! the splits; a ref to another environment is refused with nothing
//! changed.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{
    Home, children, get, lifecycle, service_bundle, set_split, setup, stage_and_warm,
    wait_generation, wait_until,
};
use serde_json::{Value, json};

fn bundle(home: &Home, name: &str, extra: &str) -> std::path::PathBuf {
    service_bundle(
        home,
        name,
        "shop",
        &format!("  startup_timeout_seconds: 10\n  instances: 1\n{extra}"),
    )
}

fn set_greeting(home: &Home, deployment: &str, greeting: &str) {
    home.ok(
        "bundles",
        "update",
        json!({"environment_id": "local", "deployment_id": deployment,
               "config_overrides": {"app": {"greeting": greeting, "token": "secret://local/app/token"}}}),
    );
}

/// The variables of process `pid`.
fn environ(pid: i32) -> Vec<(String, String)> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter_map(|entry| {
            let text = String::from_utf8_lossy(entry).into_owned();
            text.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        })
        .collect()
}

/// (pid, address, GTC_CONFIG_DIR) of the running instance of `revision`.
fn instance(node_pid: i32, revision: &str) -> Option<(i32, SocketAddr, String)> {
    children(node_pid).into_iter().find_map(|pid| {
        let env = environ(pid);
        let var = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        if var("GREENTIC_REVISION").as_deref() != Some(revision) {
            return None;
        }
        let port: u16 = var("PORT")?.parse().ok()?;
        Some((
            pid,
            SocketAddr::from(([127, 0, 0, 1], port)),
            var("GTC_CONFIG_DIR")?,
        ))
    })
}

/// What the instance at `addr` says it loaded (`GET /config`).
fn loaded(addr: SocketAddr) -> Value {
    let (status, _, body) = get(addr, "/config", None).expect("instance answers");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("json")
}

fn greeting(config: &Value) -> &Value {
    &config["packs"]["app.pack.json"]["non_secret"]["greeting"]
}

#[test]
fn configuration_is_pinned_per_revision_unless_the_bundle_asks_for_signal_reloads() {
    let (home, node, deployment) = setup();
    set_greeting(&home, &deployment, "hello");
    let pinned = bundle(&home, "pinned", "");
    let signalled = bundle(&home, "signalled", "  reload: signal\n");
    let v1 = stage_and_warm(&home, &deployment, &pinned);
    let s1 = stage_and_warm(&home, &deployment, &signalled);
    for revision in [&v1, &s1] {
        wait_until("ready", Duration::from_secs(20), || {
            lifecycle(&home, revision) == "ready"
        });
    }
    let (v1_pid, v1_addr, v1_dir) = instance(node.pid(), &v1).expect("v1's instance");
    let (s1_pid, s1_addr, _) = instance(node.pid(), &s1).expect("s1's instance");
    let first = loaded(v1_addr);
    assert_eq!(greeting(&first), "hello", "{first}");
    assert_eq!(first["reloads"], 0);
    let file = &first["packs"]["app.pack.json"];
    assert_eq!(file["schema"], "greentic.pack-config.v1");
    assert_eq!(file["revision_id"], v1.as_str());
    assert_eq!(file["secret_refs"]["token"], "secret://local/app/token");
    assert!(file["non_secret"].get("token").is_none(), "{file}");
    assert_eq!(greeting(&loaded(s1_addr)), "hello");
    // The spec's pinned copy, where the revision's pack_config_refs point.
    let env_dir = home.root().join("local");
    let pinned_copy = env_dir.join(format!("revisions/{v1}/pack-configs/app.pack.json"));
    assert!(pinned_copy.is_file(), "{}", pinned_copy.display());

    // A change: the signal revision's instance reloads in place; the pinned
    // revision's instance keeps what it was staged with.
    set_greeting(&home, &deployment, "bye");
    let took = wait_until("s1 reloaded", Duration::from_secs(15), || {
        let now = loaded(s1_addr);
        greeting(&now) == "bye" && now["reloads"].as_u64() >= Some(1)
    });
    eprintln!("the signal revision's instance reloaded {took:?} after the change was committed");
    assert_eq!(
        instance(node.pid(), &s1).map(|(pid, ..)| pid),
        Some(s1_pid),
        "the same process reloaded; it was not restarted"
    );
    let kept = loaded(v1_addr);
    assert_eq!(
        (greeting(&kept), &kept["reloads"]),
        (&json!("hello"), &json!(0))
    );
    let on_disk = std::fs::read_to_string(std::path::Path::new(&v1_dir).join("app.pack.json"))
        .expect("v1's file");
    assert!(on_disk.contains("hello"), "{on_disk}");

    // A new revision carries the new configuration.
    let v2 = stage_and_warm(&home, &deployment, &pinned);
    wait_until("v2 ready", Duration::from_secs(20), || {
        lifecycle(&home, &v2) == "ready"
    });
    let (_, v2_addr, _) = instance(node.pid(), &v2).expect("v2's instance");
    assert_eq!(greeting(&loaded(v2_addr)), "bye");

    // The runtime config the node materializes follows the splits.
    let generation = set_split(
        &home,
        &deployment,
        "v1-v2",
        json!([{"revision_id": v1, "weight_percent": 90}, {"revision_id": v2, "weight_percent": 10}]),
    );
    wait_generation(&node, generation);
    let runtime_config = env_dir.join("runtime-config.json");
    wait_until("runtime-config.json", Duration::from_secs(10), || {
        std::fs::read_to_string(&runtime_config)
            .ok()
            .and_then(|text| serde_json::from_str::<Value>(&text).ok())
            .is_some_and(|doc| doc["revisions"].as_array().is_some_and(|r| r.len() == 2))
    });
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(&runtime_config).expect("runtime-config.json"),
    )
    .expect("json");
    assert_eq!(doc["schema"], "greentic.runtime-config.v1");
    let entry = doc["revisions"]
        .as_array()
        .and_then(|r| r.iter().find(|e| e["revision_id"] == v1.as_str()))
        .cloned()
        .expect("v1's entry");
    assert_eq!(entry["weight_bps"], 9000);
    assert_eq!(
        entry["pack_config_refs"],
        json!([format!("revisions/{v1}/pack-configs/app.pack.json")])
    );

    // A restart starts v1 again from the committed state: with its own
    // configuration, not the deployment's current one.
    drop(node);
    let node = common::Node::start(&home);
    wait_until("v1's new instance", Duration::from_secs(20), || {
        instance(node.pid(), &v1).is_some_and(|(pid, ..)| pid != v1_pid)
    });
    let (_, v1_addr, _) = instance(node.pid(), &v1).expect("v1 again");
    wait_until("v1 answers", Duration::from_secs(10), || {
        get(v1_addr, "/healthz", None).is_ok_and(|(status, ..)| status == 200)
    });
    assert_eq!(greeting(&loaded(v1_addr)), "hello");
}

#[test]
fn a_config_ref_to_another_environment_or_malformed_is_refused_with_nothing_changed() {
    let home = Home::new();
    assert_eq!(home.gtc(&["op", "env", "init"]).code, 0);
    let deployment = common::id(
        &home.ok(
            "bundles",
            "add",
            json!({"environment_id": "local", "bundle_id": "shop"}),
        ),
        "deployment_id",
    );
    let before = home.snapshot();
    for (value, expect) in [
        ("secret://prod/web/token", "prod"),
        ("secret://local/../token", ".."),
    ] {
        let run = home.mutate(
            "bundles",
            "update",
            json!({"environment_id": "local", "deployment_id": deployment,
                   "config_overrides": {"web": {"token": value}}}),
        );
        assert_ne!(run.code, 0, "{value}: {}", run.stdout);
        let message = run.error_message();
        assert!(
            message.contains("web") && message.contains(expect),
            "{message}"
        );
    }
    let after = home.snapshot();
    let changed: Vec<_> = after
        .iter()
        .filter(|(path, bytes)| before.get(*path) != Some(*bytes))
        .map(|(path, _)| path.display().to_string())
        .filter(|path| !path.contains("audit"))
        .collect();
    assert!(changed.is_empty(), "changed: {changed:?}");
}
