//! What the tests that run real containers share (`docker_node.rs` and
//! `docker_cluster.rs` include this file): their prerequisites (an engine
//! and a static demo-service, or a loud skip unless `GTC_REQUIRE_DOCKER=1`),
//! the `docker` CLI for the test's own setup and checks (the product talks
//! to the engine through its API, never this), and an image `FROM scratch`
//! around the static service.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Says that `test` skipped and why, or fails it when `GTC_REQUIRE_DOCKER=1`.
pub fn skip(test: &str, why: &str) {
    if std::env::var("GTC_REQUIRE_DOCKER").as_deref() == Ok("1") {
        panic!("GTC_REQUIRE_DOCKER=1 but {why}");
    }
    eprintln!("SKIPPED ({test}): {why}; set GTC_REQUIRE_DOCKER=1 to make this a failure");
}

/// The static demo-service (`GTC_STATIC_DEMO_SERVICE`) when it is there
/// and an engine answers; otherwise `None`, after [`skip`].
pub fn prerequisites(test: &str) -> Option<PathBuf> {
    let service = match std::env::var_os("GTC_STATIC_DEMO_SERVICE") {
        Some(path) if Path::new(&path).is_file() => PathBuf::from(path),
        _ => {
            skip(
                test,
                "GTC_STATIC_DEMO_SERVICE does not name a static demo-service (bash scripts/image.sh leaves one in target/image-service/demo-service)",
            );
            return None;
        }
    };
    if let Err(why) = docker(&["version", "--format", "{{.Server.Version}}"]) {
        skip(test, &format!("no Docker engine answers: {why}"));
        return None;
    }
    Some(service)
}

/// Runs `docker args`; its trimmed stdout, or what failed.
pub fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run docker: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Builds `FROM scratch` + the static service as `tag`; its image id.
pub fn build_image(service: &Path, tag: &str) -> Result<String, String> {
    let context = tempfile::tempdir().map_err(|e| e.to_string())?;
    std::fs::copy(service, context.path().join("demo-service")).map_err(|e| e.to_string())?;
    std::fs::write(
        context.path().join("Dockerfile"),
        "FROM scratch\nCOPY demo-service /demo-service\nENTRYPOINT [\"/demo-service\"]\n",
    )
    .map_err(|e| e.to_string())?;
    docker(&[
        "build",
        "--quiet",
        "-t",
        tag,
        context.path().to_str().ok_or("path")?,
    ])?;
    docker(&["image", "inspect", "--format", "{{.Id}}", tag])
}

/// Ids of the containers carrying every `key=value` label, running or not.
pub fn containers(labels: &[(&str, &str)]) -> Vec<String> {
    let mut args = vec!["ps".to_owned(), "-a".to_owned(), "-q".to_owned()];
    for (key, value) in labels {
        args.push("--filter".to_owned());
        args.push(format!("label={key}={value}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    docker(&args)
        .map(|out| out.lines().map(str::to_owned).collect())
        .unwrap_or_else(|e| panic!("{e}"))
}
