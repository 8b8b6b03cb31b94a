//! A peer process that is SIGKILLed and started again on the same address, or
//! frozen and thawed, is reached again at once: its old connection is reset or
//! dropped, never kept until the idle timeout (issue #12).
//!
//! The peer runs in a child process (this test binary, re-executed into the
//! ignored `serve_in_child` helper), because only a real crash leaves the
//! client holding a connection its peer never closed.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{TestRequest, TestResponse, cluster_ca, identity, loopback, start_server};
use transport::{NodeIdentity, RpcError, TransportClient, TransportConfig};

const CHILD_DIR: &str = "TRANSPORT_TEST_CHILD_DIR";
const CHILD_ADDR: &str = "TRANSPORT_TEST_CHILD_ADDR";

/// The client's settings: the idle timeout is far above every bound asserted
/// here, so a pass cannot come from the idle timeout closing the connection.
fn client_config() -> TransportConfig {
    TransportConfig {
        idle_timeout: Duration::from_secs(60),
        keep_alive_interval: Duration::from_secs(20),
        connect_timeout: Duration::from_secs(3),
        call_timeout: Duration::from_secs(2),
        ..TransportConfig::default()
    }
}

#[test]
#[ignore = "helper process of the restart tests, started by them"]
fn serve_in_child() {
    let (Ok(dir), Ok(addr)) = (std::env::var(CHILD_DIR), std::env::var(CHILD_ADDR)) else {
        panic!("serve_in_child runs only as the restart tests' child process");
    };
    let addr: SocketAddr = addr.parse().expect("child address");
    let identity = NodeIdentity::load_from_dir(Path::new(&dir)).expect("child identity");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        let _server = start_server(addr, &identity, client_config(), Default::default());
        println!("ready");
        std::future::pending::<()>().await;
    });
}

struct Peer(Child);

impl Peer {
    fn start(dir: &Path, addr: SocketAddr) -> Peer {
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", "serve_in_child", "--ignored", "--nocapture"])
            .env(CHILD_DIR, dir)
            .env(CHILD_ADDR, addr.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the peer process");
        let stdout = child.stdout.take().expect("peer stdout");
        let mut lines = BufReader::new(stdout).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.trim() == "ready" => break,
                Some(Ok(_)) => continue,
                _ => panic!("the peer process exited before it was ready"),
            }
        }
        Peer(child)
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.0.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {signal} failed");
        if signal == "-STOP" {
            self.wait_stopped();
        }
    }

    /// `kill` returns once the signal is queued, not once the process
    /// stopped: a thread already running on another core goes on until it
    /// next enters the kernel, and under load the peer was seen answering a
    /// request sent after `kill -STOP` returned (its state still `R`).
    /// Waits until every thread of the peer is stopped (`T`).
    fn wait_stopped(&self) {
        let pid = self.0.id();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let states: Vec<char> = std::fs::read_dir(format!("/proc/{pid}/task"))
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|task| std::fs::read_to_string(task.path().join("stat")).ok())
                // The state follows the command name's closing parenthesis.
                .filter_map(|stat| {
                    stat.rsplit_once(')')
                        .and_then(|(_, rest)| rest.trim_start().chars().next())
                })
                .collect();
            if !states.is_empty() && states.iter().all(|state| matches!(state, 'T' | 't')) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "peer {pid} did not stop within 5 s: thread states {states:?}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn crash(mut self) {
        self.0.kill().expect("SIGKILL the peer");
        self.0.wait().expect("reap the peer");
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port below the ephemeral range: the restarted peer binds it again,
/// and an outgoing connection must not take it meanwhile.
fn free_udp_addr() -> SocketAddr {
    testkit::free_udp()
}

fn peer_dir(name: &str) -> (tempfile::TempDir, NodeIdentity) {
    let ca = cluster_ca();
    let dir = tempfile::tempdir().expect("temp dir");
    identity(&ca, name)
        .write_to_dir(dir.path())
        .expect("write the peer identity");
    (dir, identity(&ca, "caller"))
}

async fn who_am_i(client: &TransportClient, addr: SocketAddr) -> Result<TestResponse, RpcError> {
    client.call(addr, &TestRequest::WhoAmI).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_restarted_on_the_same_address_resets_the_old_connection_at_once() {
    let (dir, caller) = peer_dir("restarting-peer");
    let addr = free_udp_addr();
    let peer = Peer::start(dir.path(), addr);
    let client = TransportClient::bind(loopback(), &caller, client_config()).expect("client");
    who_am_i(&client, addr).await.expect("before the crash");
    peer.crash();
    let _restarted = Peer::start(dir.path(), addr);

    // The first call goes out on the connection of the dead process. The new
    // process must answer it with a stateless reset, so the call fails fast
    // (it may have reached the old process, so it is not retried) instead of
    // waiting out the call timeout.
    let started = Instant::now();
    let first = who_am_i(&client, addr).await;
    let first_took = started.elapsed();
    assert!(
        !matches!(first, Err(RpcError::Timeout { .. })),
        "the call on the stale connection waited for its timeout: {first:?}"
    );
    assert!(
        first_took < Duration::from_millis(1_000),
        "the stale connection took {first_took:?} to fail"
    );
    // The next call dials the new process.
    let second = who_am_i(&client, addr).await;
    assert_eq!(
        second.expect("the call after the reset"),
        TestResponse::YouAre("caller".into())
    );
    assert!(
        started.elapsed() < Duration::from_millis(1_500),
        "reaching the restarted peer took {:?}",
        started.elapsed()
    );
    assert_eq!(client.stats().snapshot().connections_established, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_times_out_drops_its_connection_and_the_next_call_dials_again() {
    let (dir, caller) = peer_dir("frozen-peer");
    let addr = free_udp_addr();
    let peer = Peer::start(dir.path(), addr);
    let client = TransportClient::bind(loopback(), &caller, client_config()).expect("client");
    who_am_i(&client, addr).await.expect("before the freeze");

    peer.signal("-STOP");
    let frozen = who_am_i(&client, addr).await;
    assert!(
        matches!(frozen, Err(RpcError::Timeout { .. })),
        "a frozen peer must time out: {frozen:?}"
    );
    assert_eq!(client.stats().snapshot().connections_dropped, 1);
    peer.signal("-CONT");

    let thawed = who_am_i(&client, addr).await.expect("after the thaw");
    assert_eq!(thawed, TestResponse::YouAre("caller".into()));
    assert_eq!(
        client.stats().snapshot().connections_established,
        2,
        "the call after the timeout must use a new connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_stuck_on_a_dead_connection_fails_as_soon_as_a_new_dial_reaches_the_peer() {
    // Proves: a call in flight on the connection to a process that died is
    // released when the client's next dial reaches the restarted process
    // (the old connection heard nothing since a call on it timed out), not
    // when QUIC's backed-off retransmission finally draws a reset.
    let (dir, caller) = peer_dir("stuck-peer");
    let addr = free_udp_addr();
    let peer = Peer::start(dir.path(), addr);
    let config = TransportConfig {
        call_timeout: Duration::from_secs(30),
        ..client_config()
    };
    let client =
        std::sync::Arc::new(TransportClient::bind(loopback(), &caller, config).expect("client"));
    who_am_i(&client, addr).await.expect("before the crash");
    peer.crash();

    // A long call goes out on the dead connection and waits.
    let stuck = {
        let client = std::sync::Arc::clone(&client);
        tokio::spawn(async move {
            let result: Result<TestResponse, RpcError> = client
                .call_within(addr, &TestRequest::WhoAmI, Duration::from_secs(30))
                .await;
            (result, Instant::now())
        })
    };
    // Long enough for QUIC's retransmissions to back off past a second.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let short: Result<TestResponse, RpcError> = client
        .call_within(addr, &TestRequest::WhoAmI, Duration::from_millis(300))
        .await;
    assert!(matches!(short, Err(RpcError::Timeout { .. })), "{short:?}");

    let _restarted = Peer::start(dir.path(), addr);
    let fresh = who_am_i(&client, addr).await.expect("the new process");
    let reached = Instant::now();
    assert_eq!(fresh, TestResponse::YouAre("caller".into()));
    let (result, failed_at) = stuck.await.expect("stuck call");
    assert!(result.is_err(), "the stuck call cannot have been answered");
    assert!(
        failed_at.saturating_duration_since(reached) < Duration::from_millis(500),
        "the stuck call was released {:?} after the new dial",
        failed_at.saturating_duration_since(reached)
    );
    assert_eq!(client.stats().snapshot().connections_closed_stale, 1);
}
