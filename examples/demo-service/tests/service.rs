//! Runs the real `demo-service` binary on loopback and talks to it.
//!
//! Having this integration test also makes `cargo test --workspace` build the
//! plain `demo-service` binary into `<target>/debug/`, where the
//! `local_process` tests look for it.

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const BIN: &str = env!("CARGO_BIN_EXE_demo-service");
/// How long a test waits for the service to accept connections.
const LISTEN_WAIT: Duration = Duration::from_secs(5);
/// Ports tried before a test gives up on starting the service.
const LAUNCH_ATTEMPTS: usize = 5;

struct Service {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port below the ephemeral range (`testkit::free_port`): the service
/// binds it a moment later, and no outgoing connection may take it first.
fn free_port() -> u16 {
    testkit::free_port()
}

fn launch(envs: &[(&str, &str)]) -> Service {
    // A port free when chosen can still be bound by another process before
    // the service binds it: the service then exits, and a connection would
    // reach the stranger. So the service must be alive once its port
    // answers; otherwise this tries another port.
    for _ in 0..LAUNCH_ATTEMPTS {
        let port = free_port();
        let mut child = Command::new(BIN)
            .env("PORT", port.to_string())
            .env("GREENTIC_REVISION", "rev-demo")
            .envs(envs.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn demo-service");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                eprintln!(
                    "demo-service exited ({status}) before listening on {port}; trying another port"
                );
                break;
            }
            if TcpStream::connect(addr).is_ok() {
                // Listening, and still ours only if it did not exit on a
                // failed bind: look once more after the connection.
                std::thread::sleep(Duration::from_millis(20));
                if child.try_wait().expect("try_wait").is_none() {
                    return Service { child, addr };
                }
                eprintln!("port {port} answered but demo-service exited; trying another port");
                break;
            }
            assert!(
                started.elapsed() < LISTEN_WAIT,
                "demo-service never listened"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!("demo-service could not get a port in {LAUNCH_ATTEMPTS} attempts");
}

fn wait_with_timeout(child: &mut Child, limit: Duration) -> ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(
            started.elapsed() < limit,
            "process did not exit within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn http1(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> (StatusCode, String, Bytes) {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "demo")
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    let served_by = resp
        .headers()
        .get("x-served-by")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, served_by, bytes)
}

fn json(bytes: &Bytes) -> serde_json::Value {
    serde_json::from_slice(bytes).expect("JSON body")
}

#[test]
fn bad_port_exits_2_with_a_clear_message() {
    // Proves a malformed PORT is reported and exits 2 instead of panicking.
    let out = Command::new(BIN)
        .env("PORT", "eighty")
        .output()
        .expect("run demo-service");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("PORT=\"eighty\" is not a port number"),
        "{stderr}"
    );
}

#[test]
fn port_env_names_another_variable() {
    // Proves PORT_ENV redirects the port lookup (an unset target is a clear error).
    let out = Command::new(BIN)
        .env("PORT_ENV", "HTTP_PORT")
        .env("PORT", "8080")
        .env_remove("HTTP_PORT")
        .output()
        .expect("run demo-service");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("HTTP_PORT must be set"));
}

#[tokio::test]
async fn answers_json_naming_revision_and_counting_the_body() {
    // Proves the JSON fields, the x-served-by header and the streamed body count.
    let svc = launch(&[("GREENTIC_INSTANCE", "7")]);
    let (status, served_by, body) = http1(svc.addr, "POST", "/echo", vec![b'a'; 100_000]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(served_by, "rev-demo");
    let v = json(&body);
    assert_eq!(v["revision"], "rev-demo");
    assert_eq!(v["instance"], "7");
    assert_eq!(v["method"], "POST");
    assert_eq!(v["path"], "/echo");
    assert_eq!(v["body_bytes"], 100_000);
    let (status, _, body) = http1(svc.addr, "GET", "/healthz", Vec::new()).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"ok"[..]));
}

#[tokio::test]
async fn speaks_http2_with_prior_knowledge() {
    // Proves the auto builder accepts an HTTP/2 connection without upgrade.
    let svc = launch(&[]);
    let stream = tokio::net::TcpStream::connect(svc.addr)
        .await
        .expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let req = Request::builder()
        .uri(format!("http://{}/over-h2", svc.addr))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    assert_eq!(resp.version(), hyper::Version::HTTP_2);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(json(&body)["path"], "/over-h2");
}

#[tokio::test]
async fn streams_chunks_over_time() {
    // Proves /stream sends N KiB spread over time (10 ms apart), not all at once.
    let svc = launch(&[]);
    let started = Instant::now();
    let (status, _, body) = http1(svc.addr, "GET", "/stream?chunks=8", Vec::new()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.len(), 8 * 1024);
    assert!(started.elapsed() >= Duration::from_millis(70));
}

#[tokio::test]
async fn unhealthy_mode_fails_healthz_only() {
    // Proves DEMO_MODE=unhealthy answers 503 on /healthz but still serves requests.
    let svc = launch(&[("DEMO_MODE", "unhealthy")]);
    let (status, _, _) = http1(svc.addr, "GET", "/healthz", Vec::new()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (status, _, _) = http1(svc.addr, "GET", "/", Vec::new()).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn fail_percent_answers_exactly_that_share_with_500_and_keeps_healthz() {
    // Proves DEMO_FAIL_PERCENT=10 fails 10 of every 100 requests, never /healthz.
    let svc = launch(&[("DEMO_FAIL_PERCENT", "10")]);
    let mut failed = 0;
    for _ in 0..200 {
        let (status, _, _) = http1(svc.addr, "GET", "/", Vec::new()).await;
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            failed += 1;
        }
    }
    assert_eq!(failed, 20);
    let (status, _, _) = http1(svc.addr, "GET", "/healthz", Vec::new()).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn sigterm_finishes_in_flight_requests_then_exits_0() {
    // Proves the drain: a request in flight at SIGTERM completes, and the exit code is 0.
    let mut svc = launch(&[]);
    let addr = svc.addr;
    let slow = tokio::spawn(async move { http1(addr, "GET", "/slow?ms=400", Vec::new()).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let pid = Pid::from_raw(i32::try_from(svc.child.id()).expect("pid fits"));
    kill(pid, Signal::SIGTERM).expect("send SIGTERM");
    let (status, _, body) = slow.await.expect("slow request task");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&body)["path"], "/slow");
    let exit = wait_with_timeout(&mut svc.child, Duration::from_secs(5));
    assert_eq!(exit.code(), Some(0));
    assert!(
        TcpStream::connect(addr).is_err(),
        "still accepting after exit"
    );
}

#[test]
fn failure_modes_exit_with_their_codes() {
    // Proves exit-immediately exits 3 with its message and crash-after-ms exits 4.
    let out = Command::new(BIN)
        .env("DEMO_MODE", "exit-immediately")
        .output()
        .expect("run demo-service");
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("demo-service: exiting as asked"));
    let mut svc = launch(&[("DEMO_MODE", "crash-after-ms=200")]);
    assert_eq!(
        wait_with_timeout(&mut svc.child, Duration::from_secs(5)).code(),
        Some(4)
    );
}
