//! Measures warm → ready of a revision of 2 instances on the Docker
//! engine: the time `warm_revision` takes (create, start, publish, health
//! gate of both containers), over a few revisions, after staging each.
//!
//! `cargo run -p docker-deployer --example warm_ready [--release] [-- RUNS]`
//! Needs the engine and a static demo-service (see `tests/support`).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use packs::conformance::ConformanceFixture;
use packs::deployer::Deployer;

#[tokio::main]
async fn main() -> Result<(), String> {
    let runs: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse().map_err(|e| format!("RUNS: {e}")))
        .transpose()?
        .unwrap_or(5);
    let binary = support::static_demo_service()?;
    let docker = support::engine().await?;
    let image_id = support::build_image(&docker, &binary).await?;
    let fixture = support::Fixture::new(&image_id);
    let deployer = docker_deployer::docker_deployer(support::socket());
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let spec = fixture.revision(2);
        deployer
            .stage_revision(&spec)
            .await
            .map_err(|e| e.to_string())?;
        let started = Instant::now();
        let warm = deployer
            .warm_revision(&spec)
            .await
            .map_err(|e| e.to_string())?;
        let elapsed = started.elapsed();
        assert_eq!(warm.instances.borrow().ready().len(), 2);
        samples.push(elapsed);
        deployer
            .archive_revision(&spec)
            .await
            .map_err(|e| e.to_string())?;
    }
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let all: Vec<String> = samples.iter().map(|d| format!("{:.0}", ms(*d))).collect();
    println!(
        "docker warm -> ready, 2 instances, {runs} runs: median {:.0} ms, max {:.0} ms (all: {} ms)",
        ms(samples[samples.len() / 2]),
        ms(samples[samples.len() - 1]),
        all.join(", ")
    );
    Ok(())
}
