//! SIGKILL the real `gtc` binary in the middle of mutations, repeatedly.
//!
//! Each round starts `gtc op bundles add` for the next bundle and kills it
//! after a varying delay (often mid-write). After every kill the store must
//! load and validate through the binary, verify its audit chain, and hold
//! every change whose process exited 0, with only attempted bundles present.

mod common;

use std::time::Duration;

use common::Home;
use serde_json::json;

/// Rounds of start-and-kill.
const ROUNDS: u64 = 40;

#[test]
fn sigkill_during_gtc_mutations_never_corrupts_the_store() {
    let home = Home::new();
    assert_eq!(home.gtc(&["op", "env", "init"]).code, 0);
    let mut acknowledged: Vec<String> = Vec::new();
    let mut attempted: Vec<String> = Vec::new();
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    for round in 0..ROUNDS {
        let bundle = format!("b{round}");
        attempted.push(bundle.clone());
        let answers = home.write(
            &format!("{bundle}.json"),
            &json!({"environment_id": "local", "bundle_id": bundle, "route_binding": {"path_prefixes": [format!("/{bundle}")]}})
                .to_string(),
        );
        let mut child = home
            .command()
            .args([
                "op",
                "bundles",
                "add",
                "--answers",
                answers.to_str().expect("path"),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn gtc");
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_micros(seed % 12_000));
        let _ = child.kill();
        let status = child.wait().expect("reap");
        if status.success() {
            acknowledged.push(bundle);
        }

        let listed = home.gtc(&["op", "bundles", "list", "local"]);
        assert_eq!(
            listed.code, 0,
            "round {round}: store must load: {}",
            listed.stderr
        );
        let stored: Vec<String> = listed.stdout["result"]["bundles"]
            .as_array()
            .expect("bundles")
            .iter()
            .map(|b| b["bundle_id"].as_str().expect("id").to_owned())
            .collect();
        for bundle in &acknowledged {
            assert!(
                stored.contains(bundle),
                "round {round}: acknowledged {bundle} lost"
            );
        }
        for bundle in &stored {
            assert!(
                attempted.contains(bundle),
                "round {round}: {bundle} was never attempted"
            );
        }
        let doctor = home.gtc(&["op", "env", "doctor", "local"]);
        assert_eq!(
            doctor.stdout["result"]["audit"]["chain"], "ok",
            "round {round}: {}",
            doctor.stdout
        );
        assert_eq!(
            doctor.stdout["result"]["validate"]["status"], "ok",
            "round {round}"
        );
    }
    eprintln!(
        "{ROUNDS} rounds: {} acknowledged, {} killed before acknowledging",
        acknowledged.len(),
        ROUNDS as usize - acknowledged.len()
    );
}
