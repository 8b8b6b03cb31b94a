//! Real processes on loopback: the `demo-service` binary (and small shell
//! scripts) started, checked and stopped through `local_process`.
//!
//! # How these tests find `demo-service`
//!
//! `env!("CARGO_BIN_EXE_demo-service")` only exists inside the demo-service
//! crate, so this file locates the binary itself:
//!
//! 1. `$DEMO_SERVICE_BIN`, if set, is used as is;
//! 2. otherwise `<target>/<profile>/demo-service`, derived from this test
//!    binary's own path (`<target>/<profile>/deps/instances-<hash>`), which
//!    works whatever `CARGO_TARGET_DIR` is.
//!
//! `cargo test --workspace` builds that binary (the demo-service crate has an
//! integration test, which makes cargo build its binary). With
//! `cargo test -p local_process` alone, run `cargo build -p demo-service` first.
//! A missing binary fails every test that needs it with that instruction; it
//! never skips.

use std::collections::BTreeMap;
use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use local_process::{
    CommandProblem, FAILED_START_GRACE, InstanceSpec, RunningInstance, StartError, StopOutcome,
    start,
};
use nix::sys::signal::kill;
use nix::unistd::Pid;
use tempfile::TempDir;

/// Revision label every test instance carries.
const REVISION: &str = "rev-test-1";
/// Startup timeout for specs expected to fail health; short to keep tests fast.
const SHORT_STARTUP: Duration = Duration::from_millis(1000);
/// Tries of [`settle`] before giving up (with [`SETTLE_PAUSE`]: about 2 s).
const SETTLE_ATTEMPTS: u32 = 100;
/// Pause between two tries of [`settle`].
const SETTLE_PAUSE: Duration = Duration::from_millis(20);
/// Slack allowed on top of a timeout for process start/stop on a busy machine.
const SLACK: Duration = Duration::from_secs(3);

fn demo_binary() -> PathBuf {
    let bin = match std::env::var_os("DEMO_SERVICE_BIN") {
        Some(path) => PathBuf::from(path),
        None => {
            let exe = std::env::current_exe().expect("path of the running test binary");
            let profile_dir = exe
                .parent()
                .and_then(Path::parent)
                .expect("test binary lives in <target>/<profile>/deps/");
            profile_dir.join("demo-service")
        }
    };
    assert!(
        bin.is_file(),
        "demo-service binary not found at {}: run `cargo build -p demo-service` first \
         (or `cargo test --workspace`, which builds it), or set DEMO_SERVICE_BIN",
        bin.display()
    );
    bin
}

/// A temporary extracted bundle and log folder.
struct Bundle {
    _tmp: TempDir,
    root: PathBuf,
    logs: PathBuf,
}

impl Bundle {
    fn empty() -> Self {
        let tmp = TempDir::new().expect("temp dir");
        let root = tmp.path().join("bundle");
        fs::create_dir_all(root.join("bin")).expect("create bundle/bin");
        let logs = tmp.path().join("logs");
        Self {
            _tmp: tmp,
            root,
            logs,
        }
    }

    /// A bundle shipping the demo service as `bin/server` (mode 0755).
    fn with_demo() -> Self {
        let bundle = Self::empty();
        let server = bundle.root.join("bin/server");
        fs::copy(demo_binary(), &server).expect("copy demo-service into the bundle");
        set_mode(&server, 0o755);
        settle(&server);
        bundle
    }

    /// Adds an executable shell script at `bin/<name>`.
    fn script(&self, name: &str, body: &str) {
        let path = self.root.join("bin").join(name);
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
        set_mode(&path, 0o755);
    }

    fn spec(&self, command: &str) -> InstanceSpec {
        InstanceSpec {
            bundle_root: self.root.clone(),
            command: vec![command.to_owned()],
            env: BTreeMap::new(),
            port_env: "PORT".to_owned(),
            host: std::net::IpAddr::from([127, 0, 0, 1]),
            health_path: "/healthz".to_owned(),
            startup_timeout: Duration::from_secs(10),
            health_timeout: Duration::from_secs(1),
            log_dir: self.logs.clone(),
            index: 0,
            labels: BTreeMap::from([
                ("GREENTIC_REVISION".to_owned(), REVISION.to_owned()),
                ("GREENTIC_INSTANCE".to_owned(), "0".to_owned()),
            ]),
            secrets: packs::deployer::SecretMaterial::default(),
            config_dir: None,
        }
    }

    fn demo_spec(&self, mode: Option<&str>) -> InstanceSpec {
        let mut spec = self.spec("bin/server");
        if let Some(mode) = mode {
            spec.env.insert("DEMO_MODE".to_owned(), mode.to_owned());
        }
        spec
    }
}

/// Waits until a freshly copied executable can be exec'd.
///
/// While the copy was being written, other test threads forked children; each
/// briefly holds a duplicate of the write handle until it execs, and exec'ing
/// the copy then fails with ETXTBSY ("Text file busy"). A script exec'ing the
/// copy has no retry, so this fixture runs it once (exiting at once) until that
/// works: after one successful exec no writer can reappear, as our own handle
/// is closed.
fn settle(executable: &Path) {
    for _ in 0..SETTLE_ATTEMPTS {
        match std::process::Command::new(executable)
            .env("DEMO_MODE", "exit-immediately")
            .output()
        {
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ETXTBSY as i32) => {
                std::thread::sleep(SETTLE_PAUSE);
            }
            Err(e) => panic!("cannot run {}: {e}", executable.display()),
            Ok(_) => return,
        }
    }
    panic!("{} stayed busy", executable.display());
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

async fn start_ok(spec: &InstanceSpec) -> RunningInstance {
    match start(spec).await {
        Ok(instance) => instance,
        Err(e) => panic!("start failed: {e}"),
    }
}

async fn start_err(spec: &InstanceSpec) -> StartError {
    match start(spec).await {
        Ok(instance) => {
            let pid = instance.pid();
            instance.stop(Duration::ZERO).await;
            panic!("start unexpectedly succeeded (pid {pid})")
        }
        Err(e) => e,
    }
}

/// GET over HTTP/1.1; returns status and body.
async fn get(addr: SocketAddr, path: &str) -> (StatusCode, Bytes) {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", addr.to_string())
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    let status = resp.status();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, body)
}

/// `kill(pid, 0)`: true while the pid exists (a zombie still counts).
fn pid_exists(pid: u32) -> bool {
    kill(Pid::from_raw(i32::try_from(pid).expect("pid fits")), None).is_ok()
}

/// True while the process runs: exists and is not a zombie. For processes this
/// test does not reap itself (grandchildren are reaped by init, eventually).
fn is_running(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state letter follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')),
        Err(_) => false,
    }
}

/// Waits up to `limit` for `pid` to stop running.
async fn gone_within(pid: u32, limit: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if !is_running(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    !is_running(pid)
}

fn assert_lines_contain(lines: &[String], needle: &str) {
    assert!(
        lines.iter().any(|l| l.contains(needle)),
        "expected a log line containing {needle:?}, got {lines:#?}"
    );
}

#[tokio::test]
async fn starts_demo_from_bundle_and_serves_the_labelled_revision() {
    // Proves a bundle's demo service starts healthy, answers JSON naming the label's revision, and logs to files.
    let bundle = Bundle::with_demo();
    let spec = bundle.demo_spec(None);
    let instance = start_ok(&spec).await;
    assert_eq!(instance.addr().ip().to_string(), "127.0.0.1");
    assert!(instance.check_health(Duration::from_secs(1)).await);

    let (status, body) = get(instance.addr(), "/hello?x=1").await;
    assert_eq!(status, StatusCode::OK);
    let json: serde_json::Value = serde_json::from_slice(&body).expect("JSON body");
    assert_eq!(json["revision"], REVISION);
    assert_eq!(json["instance"], "0");
    assert_eq!(json["path"], "/hello");

    assert_eq!(
        instance.stdout_log(),
        bundle.logs.join("instance-0.stdout.log")
    );
    assert_eq!(
        instance.stderr_log(),
        bundle.logs.join("instance-0.stderr.log")
    );
    assert!(instance.stderr_log().is_file());
    let stdout = fs::read_to_string(instance.stdout_log()).expect("stdout log");
    assert!(
        stdout.contains("listening on http://127.0.0.1:"),
        "{stdout}"
    );
    assert!(stdout.contains("GET /hello?x=1 -> 200"), "{stdout}");
    assert!(matches!(
        instance.stop(Duration::from_secs(5)).await,
        StopOutcome::Terminated(status) if status.success()
    ));
}

#[tokio::test]
async fn child_environment_is_cleared_down() {
    // Proves the child sees only PATH/HOME/LANG, spec env, labels and the port, not the manager's variables.
    assert!(
        std::env::var_os("CARGO_MANIFEST_DIR").is_some(),
        "cargo sets CARGO_MANIFEST_DIR for tests; this test relies on it as a stand-in secret"
    );
    let bundle = Bundle::with_demo();
    bundle.script("env-then-serve", "env\nexec ./bin/server");
    let mut spec = bundle.spec("bin/env-then-serve");
    spec.port_env = "HTTP_PORT".to_owned();
    spec.env
        .insert("PORT_ENV".to_owned(), "HTTP_PORT".to_owned());
    let instance = start_ok(&spec).await;
    let stdout = fs::read_to_string(instance.stdout_log()).expect("stdout log");
    let port_line = format!("HTTP_PORT={}", instance.addr().port());
    instance.stop(Duration::from_secs(5)).await;

    let names: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .filter(|k| k.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .collect();
    assert!(stdout.lines().any(|l| l == port_line), "{stdout}");
    assert!(stdout.contains(&format!("GREENTIC_REVISION={REVISION}")));
    assert!(stdout.lines().any(|l| l == "HOST=127.0.0.1"), "{stdout}");
    // The shell itself may add PWD, SHLVL, OLDPWD and `_`; nothing else is allowed.
    let allowed = [
        "PATH",
        "HOME",
        "LANG",
        "HTTP_PORT",
        "HOST",
        "PORT_ENV",
        "GREENTIC_REVISION",
        "GREENTIC_INSTANCE",
        "PWD",
        "SHLVL",
        "OLDPWD",
        "_",
    ];
    let leaked: Vec<&&str> = names.iter().filter(|n| !allowed.contains(n)).collect();
    assert!(
        leaked.is_empty(),
        "variables leaked into the child: {leaked:?}"
    );
}

#[tokio::test]
async fn exit_immediately_is_reported_with_its_log_lines() {
    // Proves a process dying before health gives Exited with its status and stderr message.
    let bundle = Bundle::with_demo();
    let err = start_err(&bundle.demo_spec(Some("exit-immediately"))).await;
    match err {
        StartError::Exited {
            status,
            last_log_lines,
        } => {
            assert!(status.contains('3'), "status {status:?}");
            assert_lines_contain(&last_log_lines, "demo-service: exiting as asked");
        }
        other => panic!("expected Exited, got {other:?}"),
    }
}

#[tokio::test]
async fn never_listening_process_times_out() {
    // Proves a process that never binds yields HealthTimeout within the startup timeout.
    let bundle = Bundle::with_demo();
    let mut spec = bundle.demo_spec(Some("never-listen"));
    spec.startup_timeout = SHORT_STARTUP;
    let started = Instant::now();
    let err = start_err(&spec).await;
    let took = started.elapsed();
    match err {
        StartError::HealthTimeout {
            after,
            last_log_lines,
        } => {
            assert_eq!(after, SHORT_STARTUP);
            assert_lines_contain(&last_log_lines, "never-listen");
        }
        other => panic!("expected HealthTimeout, got {other:?}"),
    }
    assert!(took >= SHORT_STARTUP, "gave up early: {took:?}");
    assert!(took < SHORT_STARTUP + SLACK, "took {took:?}");
}

#[tokio::test]
async fn unhealthy_process_times_out() {
    // Proves a process answering 503 on its health path yields HealthTimeout, and is stopped.
    let bundle = Bundle::with_demo();
    let mut spec = bundle.demo_spec(Some("unhealthy"));
    spec.startup_timeout = SHORT_STARTUP;
    let started = Instant::now();
    let err = start_err(&spec).await;
    assert!(
        matches!(err, StartError::HealthTimeout { .. }),
        "expected HealthTimeout, got {err:?}"
    );
    assert!(started.elapsed() < SHORT_STARTUP + FAILED_START_GRACE + SLACK);
    let stdout = fs::read_to_string(bundle.logs.join("instance-0.stdout.log")).expect("log");
    // The failed instance was stopped (gracefully: it logged its drain).
    assert!(stdout.contains("GET /healthz -> 503"), "{stdout}");
    assert!(stdout.contains("demo-service: stopped"), "{stdout}");
}

#[tokio::test]
async fn commands_outside_the_bundle_are_refused() {
    // Proves '..', absolute paths and symlinks leading out of the bundle are all refused.
    let bundle = Bundle::with_demo();
    std::os::unix::fs::symlink("/bin/sh", bundle.root.join("bin/escape")).expect("symlink");
    for command in [
        "../bundle/bin/server",
        "bin/../../x",
        "/bin/sh",
        "bin/escape",
    ] {
        let err = start_err(&bundle.spec(command)).await;
        assert!(
            matches!(&err, StartError::CommandOutsideBundle { command: c } if c == command),
            "{command}: expected CommandOutsideBundle, got {err:?}"
        );
    }
    let err = start_err(&InstanceSpec {
        command: Vec::new(),
        ..bundle.spec("unused")
    })
    .await;
    assert!(matches!(err, StartError::EmptyCommand), "{err:?}");
}

#[tokio::test]
async fn missing_or_unrunnable_programs_are_reported() {
    // Proves a missing file, a non-executable file and a folder each give CommandMissing saying which.
    let bundle = Bundle::empty();
    fs::write(bundle.root.join("bin/plain"), "#!/bin/sh\n").expect("write");
    set_mode(&bundle.root.join("bin/plain"), 0o644);
    let cases = [
        ("bin/nope", CommandProblem::NotFound),
        ("bin/plain", CommandProblem::NotExecutable),
        ("bin", CommandProblem::NotAFile),
    ];
    for (command, expected) in cases {
        match start_err(&bundle.spec(command)).await {
            StartError::CommandMissing { path, problem } => {
                assert_eq!(problem, expected, "{command}");
                assert!(path.ends_with(command), "{command}: {}", path.display());
            }
            other => panic!("{command}: expected CommandMissing, got {other:?}"),
        }
    }
    let message = start_err(&bundle.spec("bin/plain")).await.to_string();
    assert!(message.contains("execute bit"), "{message}");
}

#[tokio::test]
async fn stop_drains_in_flight_requests_and_the_process_is_gone() {
    // Proves stop() sends SIGTERM, lets an in-flight request finish, reaps the process (kill(pid, 0) fails).
    let bundle = Bundle::with_demo();
    let instance = start_ok(&bundle.demo_spec(None)).await;
    let (pid, addr) = (instance.pid(), instance.addr());
    // A response that streams for about 400 ms: once its head has arrived
    // the request is in flight, with no guess about how long that takes.
    const CHUNKS: usize = 40;
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let request = Request::get(format!("/stream?chunks={CHUNKS}"))
        .header("host", addr.to_string())
        .body(Empty::<Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("response head");
    assert_eq!(response.status(), StatusCode::OK);
    let (outcome, body) = tokio::join!(
        instance.stop(Duration::from_secs(5)),
        response.into_body().collect()
    );
    assert!(
        matches!(outcome, StopOutcome::Terminated(s) if s.success()),
        "{outcome:?}"
    );
    let body = body.expect("the in-flight body finished").to_bytes();
    assert_eq!(
        body.len(),
        CHUNKS * 1024,
        "the in-flight response was cut short"
    );
    assert!(!pid_exists(pid), "pid {pid} still exists after stop");
}

#[tokio::test]
async fn a_process_ignoring_sigterm_is_killed_after_the_grace() {
    // Proves the SIGKILL fallback after the grace, for the whole group (a forked `sleep` dies too).
    let bundle = Bundle::with_demo();
    bundle.script(
        "stubborn",
        "trap '' TERM\nsleep 100 &\necho $! > sleep.pid\n./bin/server &\nwait",
    );
    let instance = start_ok(&bundle.spec("bin/stubborn")).await;
    let pid = instance.pid();
    let sleep_pid: u32 = fs::read_to_string(bundle.root.join("sleep.pid"))
        .expect("sleep.pid written before the server became healthy")
        .trim()
        .parse()
        .expect("pid number");
    assert!(is_running(sleep_pid));

    let grace = Duration::from_millis(300);
    let started = Instant::now();
    let outcome = instance.stop(grace).await;
    let took = started.elapsed();
    assert!(
        matches!(outcome, StopOutcome::Killed(s) if s.signal() == Some(9)),
        "{outcome:?}"
    );
    assert!(took >= grace, "killed before the grace ran out: {took:?}");
    assert!(took < grace + SLACK, "took {took:?}");
    assert!(!pid_exists(pid), "leader {pid} still exists");
    assert!(
        gone_within(sleep_pid, Duration::from_secs(2)).await,
        "group member {sleep_pid} survived"
    );
}

#[tokio::test]
async fn a_crash_is_seen_by_wait_exit() {
    // Proves wait_exit() returns the crash's non-zero status, and try_exited() agrees afterwards.
    let bundle = Bundle::with_demo();
    let mut instance = start_ok(&bundle.demo_spec(Some("crash-after-ms=300"))).await;
    assert_eq!(instance.try_exited(), None);
    let status = tokio::time::timeout(Duration::from_secs(5), instance.wait_exit())
        .await
        .expect("exited within 5 s");
    assert_eq!(status.code(), Some(4));
    assert_eq!(instance.try_exited(), Some(status));
    assert_eq!(
        instance.stop(Duration::from_secs(1)).await,
        StopOutcome::AlreadyExited(status)
    );
}

#[tokio::test]
async fn two_instances_of_one_spec_get_different_ports() {
    // Proves each start picks its own free port and both instances serve.
    let bundle = Bundle::with_demo();
    let spec = bundle.demo_spec(None);
    let first = start_ok(&spec).await;
    let second = start_ok(&spec).await;
    assert_ne!(first.addr(), second.addr());
    assert_ne!(first.pid(), second.pid());
    assert!(first.check_health(Duration::from_secs(1)).await);
    assert!(second.check_health(Duration::from_secs(1)).await);
    first.stop(Duration::from_secs(5)).await;
    second.stop(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn dropping_the_handle_kills_the_process() {
    // Proves a dropped RunningInstance does not leak its process.
    let bundle = Bundle::with_demo();
    let instance = start_ok(&bundle.demo_spec(None)).await;
    let pid = instance.pid();
    drop(instance);
    assert!(
        gone_within(pid, Duration::from_secs(2)).await,
        "pid {pid} survived its handle"
    );
}

#[tokio::test]
async fn address_in_use_is_retried_once_with_a_new_port() {
    // Proves the port-race retry: one "Address already in use" death is retried, a second is not.
    let bundle = Bundle::with_demo();
    bundle.script(
        "flaky-bind",
        "echo try >> tries\n\
         [ \"$(wc -l < tries)\" -ge 2 ] && exec ./bin/server\n\
         echo 'bind: Address already in use (os error 98)' >&2\nexit 1",
    );
    let instance = start_ok(&bundle.spec("bin/flaky-bind")).await;
    instance.stop(Duration::from_secs(5)).await;

    bundle.script(
        "never-binds",
        "echo try >> tries-2\necho 'Address already in use' >&2\nexit 1",
    );
    let err = start_err(&bundle.spec("bin/never-binds")).await;
    assert!(matches!(err, StartError::Exited { .. }), "{err:?}");
    let tries = fs::read_to_string(bundle.root.join("tries-2")).expect("tries-2");
    assert_eq!(tries.lines().count(), 2, "expected exactly one retry");
}
