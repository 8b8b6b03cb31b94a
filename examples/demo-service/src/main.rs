//! `demo-service`: the platform's example bundle and the process its tests run.
//!
//! It listens on `127.0.0.1:$PORT` (or on the variable `$PORT_ENV` names),
//! speaks HTTP/1.1 and HTTP/2 with prior knowledge, answers `/healthz`, echoes
//! who served a request as JSON, and can misbehave on purpose (`DEMO_MODE`) so
//! the instance manager's failure paths can be tested against a real process.
//! On SIGTERM it stops accepting, lets in-flight requests finish for up to
//! [`DRAIN_TIMEOUT`], and exits 0. On SIGHUP it reloads the pack configs
//! of `GTC_CONFIG_DIR` (shown at `GET /config`).

mod chunks;
mod config;
mod handler;
mod pack_config;

use std::fmt;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::{ConfigError, Identity, Mode};

/// Exit code when the listening socket cannot be bound (e.g. address in use).
const EXIT_LISTEN_FAILED: u8 = 1;
/// Exit code for a bad configuration (bad `PORT`, unknown `DEMO_MODE`).
const EXIT_BAD_CONFIG: u8 = 2;
/// Exit code of `DEMO_MODE=exit-immediately`.
const EXIT_ASKED: u8 = 3;
/// Exit code of `DEMO_MODE=crash-after-ms=N`.
const EXIT_CRASH: i32 = 4;
/// Exit code when the async runtime or the signal handler cannot be set up.
const EXIT_SETUP_FAILED: u8 = 5;
/// How long in-flight requests may run after SIGTERM before the process exits anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);
/// Sleep granularity of `never-listen` mode; the process sleeps in a loop of these.
const NEVER_LISTEN_NAP: Duration = Duration::from_secs(3600);
/// Worker threads of the runtime; a demo needs few, and many instances share a host.
const WORKER_THREADS: usize = 2;

fn main() -> ExitCode {
    let mode = match config::mode_from_env() {
        Ok(mode) => mode,
        Err(e) => return config_failure(&e),
    };
    if mode == Mode::ExitImmediately {
        log_error(format_args!("demo-service: exiting as asked"));
        return ExitCode::from(EXIT_ASKED);
    }
    let port = match config::port_from_env() {
        Ok(port) => port,
        Err(e) => return config_failure(&e),
    };
    let host = match config::host_from_env() {
        Ok(host) => host,
        Err(e) => return config_failure(&e),
    };
    if mode == Mode::NeverListen {
        never_listen();
    }
    let identity = match config::identity_from_env(mode) {
        Ok(identity) => Arc::new(identity),
        Err(e) => return config_failure(&e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            log_error(format_args!("demo-service: cannot start runtime: {e}"));
            return ExitCode::from(EXIT_SETUP_FAILED);
        }
    };
    let code = runtime.block_on(serve(SocketAddr::from((host, port)), identity, mode));
    // Connections abandoned after the drain timeout must not hold up the exit.
    runtime.shutdown_background();
    code
}

fn config_failure(e: &ConfigError) -> ExitCode {
    log_error(format_args!("demo-service: {e}"));
    ExitCode::from(EXIT_BAD_CONFIG)
}

/// `never-listen` mode: look alive, never bind. SIGTERM keeps its default action.
fn never_listen() -> ! {
    log_line(format_args!(
        "demo-service: never-listen mode, not binding any port"
    ));
    loop {
        std::thread::sleep(NEVER_LISTEN_NAP);
    }
}

/// Binds, accepts until SIGTERM/SIGINT, then drains. Returns the exit code.
async fn serve(addr: SocketAddr, identity: Arc<Identity>, mode: Mode) -> ExitCode {
    // Handlers go in before binding, so a SIGTERM right after start is still graceful.
    let (mut term, mut int, mut hangup) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(term), Ok(int), Ok(hangup)) => (term, int, hangup),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            log_error(format_args!("demo-service: cannot handle signals: {e}"));
            return ExitCode::from(EXIT_SETUP_FAILED);
        }
    };
    let reloading = Arc::clone(&identity);
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            reloading.pack_configs.reload();
            log_line(format_args!(
                "demo-service[{}]: SIGHUP: pack configs reloaded",
                reloading.revision
            ));
        }
    });
    if let Mode::SlowStartMs(ms) = mode {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    let listener = match TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(e) => {
            log_error(format_args!("demo-service: cannot listen on {addr}: {e}"));
            return ExitCode::from(EXIT_LISTEN_FAILED);
        }
    };
    log_line(format_args!(
        "demo-service[{}]: instance {} listening on http://{addr}",
        identity.revision, identity.instance
    ));
    if let Mode::CrashAfterMs(ms) = mode {
        tokio::spawn(crash_after(ms));
    }
    let (stop_tx, stop_rx) = watch::channel(());
    let conns = accept_until_signal(listener, &identity, &stop_rx, &mut term, &mut int).await;
    drain(conns, stop_tx).await
}

/// Accepts connections until a stop signal arrives; returns the live connection tasks.
async fn accept_until_signal(
    listener: TcpListener,
    identity: &Arc<Identity>,
    stop_rx: &watch::Receiver<()>,
    term: &mut Signal,
    int: &mut Signal,
) -> JoinSet<()> {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            // Reap finished connection tasks so the set does not grow forever.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    conns.spawn(serve_conn(stream, Arc::clone(identity), stop_rx.clone()));
                }
                Err(e) => {
                    log_error(format_args!("demo-service: accept failed: {e}"));
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
            },
        }
    }
    conns
}

/// Serves one connection (HTTP/1.1 or HTTP/2) until it closes or a stop is asked.
async fn serve_conn(stream: TcpStream, identity: Arc<Identity>, mut stop: watch::Receiver<()>) {
    let builder = auto::Builder::new(TokioExecutor::new());
    let service = service_fn(move |req| handler::handle(req, Arc::clone(&identity)));
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        // Any change (or the sender going away) means "stop": finish what is in flight.
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        log_error(format_args!(
            "demo-service: connection ended with error: {e}"
        ));
    }
}

/// Tells every connection to finish, waits up to [`DRAIN_TIMEOUT`], exits 0 either way.
async fn drain(mut conns: JoinSet<()>, stop_tx: watch::Sender<()>) -> ExitCode {
    log_line(format_args!(
        "demo-service: stop signal received, draining {} connection(s)",
        conns.len()
    ));
    // send fails only when no connection holds a receiver, i.e. nothing to drain.
    let _ = stop_tx.send(());
    let all_done = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(DRAIN_TIMEOUT, all_done).await.is_err() {
        log_error(format_args!(
            "demo-service: drain timed out after {DRAIN_TIMEOUT:?}; exiting anyway"
        ));
    }
    log_line(format_args!("demo-service: stopped"));
    ExitCode::SUCCESS
}

async fn crash_after(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    log_error(format_args!(
        "demo-service: crashing as asked after {ms} ms"
    ));
    std::process::exit(EXIT_CRASH);
}

/// Writes one line to stdout. A closed or full log must not take the service down,
/// so write errors are ignored (unlike `println!`, which would panic).
pub(crate) fn log_line(args: fmt::Arguments<'_>) {
    let _ = writeln!(io::stdout().lock(), "{args}");
}

/// Writes one line to stderr, ignoring write errors for the same reason as [`log_line`].
pub(crate) fn log_error(args: fmt::Arguments<'_>) {
    let _ = writeln!(io::stderr().lock(), "{args}");
}
