//! OTLP span export of the router's hop, end to end: a real `gtc node run`
//! with `--otlp-endpoint` pointing at a loopback OTLP/HTTP receiver written
//! here (it decodes the protobuf bodies with `opentelemetry-proto`), a real
//! instance of the example service, and a request carrying a known
//! `traceparent`. Also: without the flag nothing is sent, and a bad
//! endpoint is refused at startup with exit code 2.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Home, Node, example_bundle, id, lifecycle, stage_and_warm, wait_until};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use serde_json::json;

/// The caller's trace context every test request carries.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";

/// What the receiver got: the path of every POST and the spans decoded
/// from the bodies.
#[derive(Default)]
struct Received {
    paths: Vec<String>,
    spans: Vec<Span>,
}

/// A loopback OTLP/HTTP receiver: answers every POST with 200 and keeps
/// what it decoded.
fn otlp_receiver() -> (SocketAddr, Arc<Mutex<Received>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind receiver");
    let addr = listener.local_addr().expect("receiver addr");
    let received = Arc::new(Mutex::new(Received::default()));
    let shared = Arc::clone(&received);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || serve_otlp(stream, &shared));
        }
    });
    (addr, received)
}

/// Serves keep-alive HTTP/1.1 requests on one connection until it closes.
fn serve_otlp(stream: TcpStream, received: &Mutex<Received>) {
    let mut writer = stream.try_clone().expect("clone stream");
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let path = request_line
            .split(' ')
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().expect("content-length");
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).expect("body");
        let request = ExportTraceServiceRequest::decode(body.as_slice()).expect("otlp protobuf");
        {
            let mut received = received.lock().expect("lock");
            received.paths.push(path);
            for resource_spans in request.resource_spans {
                for scope_spans in resource_spans.scope_spans {
                    received.spans.extend(scope_spans.spans);
                }
            }
        }
        let answer =
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

/// One GET through the router with the test's `traceparent`: (status, the
/// revision that answered).
fn get_traced(addr: SocketAddr) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect router");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET /traced HTTP/1.1\r\nHost: otlp.test\r\ntraceparent: 00-{TRACE_ID}-{PARENT_SPAN_ID}-01\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let head = response.split("\r\n\r\n").next().unwrap_or_default();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let revision = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("x-greentic-revision"))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    (status, revision)
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .map(|value| match value {
            AnyValue::StringValue(s) => s.clone(),
            AnyValue::IntValue(i) => i.to_string(),
            other => format!("{other:?}"),
        })
}

/// A node serving one ready revision of the example service (its
/// deployment answers any host), started with `extra` flags; returns the revision too.
fn node_with_one_revision(home: &Home, extra: &[&str]) -> (Node, String, String) {
    home.gtc(&["op", "env", "init"]);
    let deployment = id(
        &home.ok(
            "bundles",
            "add",
            json!({"environment_id": "local", "bundle_id": "otlp"}),
        ),
        "deployment_id",
    );
    let node = Node::start_with(home, extra);
    let bundle = example_bundle(home, "v1", "otlp");
    let revision = stage_and_warm(home, &deployment, &bundle);
    wait_until("the revision to be ready", Duration::from_secs(20), || {
        lifecycle(home, &revision) == "ready"
    });
    let run = home.mutate("traffic", "set", json!({"environment_id": "local", "deployment_id": deployment, "idempotency_key": "otlp", "entries": [{"revision_id": revision, "weight_percent": 100}]}));
    assert_eq!(run.code, 0, "{}", run.stderr);
    wait_until(
        "the router to serve the split",
        Duration::from_secs(10),
        || get_traced(node.addr).0 == 200,
    );
    (node, deployment, revision)
}

#[test]
fn a_proxied_request_arrives_at_the_collector_as_a_span_of_the_callers_trace() {
    // Proves: with --otlp-endpoint, the router exports a server span per
    // request to <endpoint>/v1/traces with the caller's trace id, the
    // caller's span as parent, and the revision that answered.
    let (receiver, received) = otlp_receiver();
    let home = Home::new();
    let endpoint = format!("http://{receiver}");
    let (node, deployment, _revision) =
        node_with_one_revision(&home, &["--otlp-endpoint", &endpoint]);
    let (status, answered) = get_traced(node.addr);
    assert_eq!(status, 200);
    assert!(!answered.is_empty(), "the answer names its revision");
    let trace_id = u128::from_str_radix(TRACE_ID, 16)
        .expect("hex")
        .to_be_bytes()
        .to_vec();
    let parent_span_id = u64::from_str_radix(PARENT_SPAN_ID, 16)
        .expect("hex")
        .to_be_bytes()
        .to_vec();
    wait_until(
        "a span of the test's trace at the receiver",
        Duration::from_secs(15),
        || {
            received
                .lock()
                .expect("lock")
                .spans
                .iter()
                .any(|s| s.trace_id == trace_id)
        },
    );
    let received = received.lock().expect("lock");
    assert!(
        received.paths.iter().all(|p| p == "/v1/traces"),
        "{:?}",
        received.paths
    );
    let span = received
        .spans
        .iter()
        .find(|s| s.trace_id == trace_id)
        .expect("span of the trace");
    assert_eq!(span.name, "gtc.route");
    assert_eq!(span.kind, SpanKind::Server as i32);
    assert_eq!(
        span.parent_span_id, parent_span_id,
        "the caller's span is the parent"
    );
    assert_eq!(span.span_id.len(), 8);
    assert_ne!(
        span.span_id, parent_span_id,
        "the router's hop is a span of its own"
    );
    assert_eq!(
        attribute(span, "gtc.revision").as_deref(),
        Some(answered.as_str())
    );
    assert_eq!(
        attribute(span, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(
        attribute(span, "http.request.method").as_deref(),
        Some("GET")
    );
    assert_eq!(attribute(span, "url.path").as_deref(), Some("/traced"));
    assert_eq!(
        attribute(span, "server.address").as_deref(),
        Some("otlp.test")
    );
    assert_eq!(attribute(span, "gtc.deployment"), Some(deployment));
    assert!(attribute(span, "gtc.instance").is_some_and(|i| i.parse::<SocketAddr>().is_ok()));
    assert!(attribute(span, "gtc.node").is_some_and(|n| !n.is_empty()));
    assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
}

#[test]
fn without_the_flag_nothing_is_sent() {
    // Proves: export is off by default: a node given no endpoint (and
    // GTC_OTLP_ENDPOINT unset) sends nothing, even to the standard port.
    let (receiver, received) = otlp_receiver();
    let home = Home::new();
    let (node, _, _) = node_with_one_revision(&home, &[]);
    for _ in 0..20 {
        assert_eq!(get_traced(node.addr).0, 200);
    }
    // The exporter would flush within a second; give it three.
    std::thread::sleep(Duration::from_secs(3));
    let received = received.lock().expect("lock");
    assert!(
        received.paths.is_empty() && received.spans.is_empty(),
        "{receiver} got {:?}",
        received.paths
    );
    let metrics = {
        let mut stream = TcpStream::connect(node.admin).expect("admin");
        write!(
            stream,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .expect("send");
        let mut text = String::new();
        stream.read_to_string(&mut text).expect("read");
        text
    };
    assert!(!metrics.contains("gtc_trace_spans"), "{metrics}");
}

#[test]
fn a_bad_endpoint_is_refused_at_startup_with_exit_code_2() {
    // Proves: a malformed or unsupported --otlp-endpoint (flag or
    // GTC_OTLP_ENDPOINT) stops `gtc node run` before it binds anything,
    // naming the problem.
    let home = Home::new();
    for (flag, env, needle) in [
        (Some("127.0.0.1:4318"), None, "no scheme"),
        (Some("https://collector:4318"), None, "plain http only"),
        (None, Some("not a url"), "is not a URL"),
    ] {
        let mut command = home.command();
        command.args([
            "node",
            "run",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ]);
        if let Some(flag) = flag {
            command.args(["--otlp-endpoint", flag]);
        }
        if let Some(env) = env {
            command.env("GTC_OTLP_ENDPOINT", env);
        }
        let output = command.output().expect("run gtc");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flag:?} {env:?}: {stderr}");
        assert!(stderr.contains(needle), "{flag:?} {env:?}: {stderr}");
        assert!(stderr.contains("--otlp-endpoint"), "{stderr}");
    }
}
