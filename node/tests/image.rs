//! The container image (`make image`): a static `gtc` FROM scratch, under
//! issue #7's 30 MB, that runs as uid/gid 65532, holds no shell, and turns
//! healthy through its own HEALTHCHECK (`gtc node health`). Skipped with a message where no Docker
//! engine is present or the image was not built, unless
//! `GTC_REQUIRE_IMAGE=1` (CI sets it after building the image).

use std::process::Command;
use std::time::{Duration, Instant};

fn docker(args: &[&str]) -> Option<String> {
    let output = Command::new("docker").args(args).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Issue #7's bound on the image: 30 MB.
const IMAGE_BYTES_MAX: u64 = 30_000_000;

/// Removes the container when the test ends, whatever happens.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

#[test]
fn the_image_runs_as_a_non_root_user_without_a_shell_and_turns_healthy() {
    let image = std::env::var("GTC_IMAGE").unwrap_or_else(|_| "gtc:dev".to_owned());
    let required = std::env::var_os("GTC_REQUIRE_IMAGE").is_some();
    if docker(&["version", "--format", "{{.Server.Version}}"]).is_none() {
        assert!(
            !required,
            "GTC_REQUIRE_IMAGE is set but no Docker engine answers"
        );
        eprintln!("skipped: no Docker engine on this machine");
        return;
    }
    if docker(&["image", "inspect", &image]).is_none() {
        assert!(
            !required,
            "GTC_REQUIRE_IMAGE is set but {image} was not built"
        );
        eprintln!("skipped: image {image} is not built (run `make image`)");
        return;
    }
    let bytes: u64 = docker(&["image", "inspect", "--format", "{{.Size}}", &image])
        .expect("inspect")
        .parse()
        .expect("the image's size is a number of bytes");
    assert!(
        bytes < IMAGE_BYTES_MAX,
        "{image} is {bytes} bytes; the target is under {IMAGE_BYTES_MAX} \
         (BENCHMARKS.md says where the bytes are)"
    );
    let user =
        docker(&["image", "inspect", "--format", "{{.Config.User}}", &image]).expect("inspect");
    assert_eq!(user, "65532:65532", "the image's user");

    let id = docker(&["run", "-d", &image]).expect("docker run");
    let container = Container(id);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let health = docker(&[
            "inspect",
            "--format",
            "{{.State.Health.Status}}",
            &container.0,
        ])
        .unwrap_or_default();
        if health == "healthy" {
            break;
        }
        let logs = Command::new("docker")
            .args(["logs", &container.0])
            .output()
            .map(|o| {
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                )
            });
        assert!(
            Instant::now() < deadline,
            "the container never turned healthy (last: {health}); logs:\n{}",
            logs.unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The node process runs as 65532:65532 (read by the host's ps).
    // (`docker top` needs the pid column to map processes to the container.)
    let processes = docker(&["top", &container.0, "-eo", "pid,uid,gid,comm"]).expect("docker top");
    let node = processes
        .lines()
        .find(|line| line.contains("gtc"))
        .unwrap_or_else(|| panic!("no gtc process in:\n{processes}"));
    let ids: Vec<&str> = node.split_whitespace().skip(1).take(2).collect();
    assert_eq!(ids, ["65532", "65532"], "{processes}");
    // Nothing but the binary and the data folder: no shell to exec into.
    let files = Command::new("sh")
        .arg("-c")
        .arg(format!("docker export {} | tar -t", container.0))
        .output()
        .expect("export");
    let files = String::from_utf8_lossy(&files.stdout);
    assert!(files.lines().any(|f| f == "gtc"), "{files}");
    assert!(
        !files
            .lines()
            .any(|f| f == "bin/sh" || f.starts_with("usr/")),
        "{files}"
    );
}
