//! The Prometheus-facing counters carry the documented names and labels.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use metrics::{
    Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use transport::TransportClient;
use transport::pki::CLUSTER_SAN;
use transport::rpc::quinn_client_config;
use transport::wire::WIRE_VERSION;

/// Counts every counter by `name{label="value",...}`.
#[derive(Default)]
struct CountingRecorder {
    counters: Mutex<HashMap<String, Arc<Value>>>,
}

#[derive(Default)]
struct Value(AtomicU64);

impl CounterFn for Value {
    fn increment(&self, amount: u64) {
        self.0.fetch_add(amount, Ordering::SeqCst);
    }
    fn absolute(&self, value: u64) {
        self.0.store(value, Ordering::SeqCst);
    }
}

impl CountingRecorder {
    fn get(&self, series: &str) -> u64 {
        let counters = self.counters.lock().expect("lock");
        counters
            .get(series)
            .map_or(0, |value| value.0.load(Ordering::SeqCst))
    }
}

impl Recorder for CountingRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let labels: Vec<String> = key
            .labels()
            .map(|label| format!("{}=\"{}\"", label.key(), label.value()))
            .collect();
        let series = format!("{}{{{}}}", key.name(), labels.join(","));
        let mut counters = self.counters.lock().expect("lock");
        Counter::from_arc(counters.entry(series).or_default().clone())
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_are_named_and_labelled_as_documented() {
    let recorder: &'static CountingRecorder = Box::leak(Box::default());
    metrics::set_global_recorder(recorder).expect("first recorder in this test binary");

    let ca = cluster_ca();
    let server = start_server(
        loopback(),
        &identity(&ca, "node-a"),
        test_config(),
        Default::default(),
    );
    let client =
        TransportClient::bind(loopback(), &identity(&ca, "node-b"), test_config()).expect("client");
    let _: TestResponse = client
        .call(server.local_addr(), &TestRequest::WhoAmI)
        .await
        .expect("call");

    let endpoint = quinn::Endpoint::client(loopback()).expect("endpoint");
    let config = quinn_client_config(&identity(&ca, "node-x"), &test_config()).expect("config");
    let connection = endpoint
        .connect_with(config, server.local_addr(), CLUSTER_SAN)
        .expect("connect")
        .await
        .expect("handshake");
    let (mut send, _recv) = connection.open_bi().await.expect("stream");
    send.write_all(&[0, 0, 0, 2, WIRE_VERSION, 9])
        .await
        .expect("write");
    send.finish().expect("finish");
    connection.closed().await;

    assert_eq!(
        recorder.get(r#"gtc_transport_requests_total{direction="outbound"}"#),
        1
    );
    assert_eq!(
        recorder.get(r#"gtc_transport_requests_total{direction="inbound"}"#),
        1
    );
    assert_eq!(
        recorder.get(r#"gtc_transport_connections_total{result="established"}"#),
        1
    );
    assert_eq!(
        recorder.get(r#"gtc_transport_frames_rejected_total{reason="malformed"}"#),
        1
    );
    let stats = server.stats();
    wait_until("both connections are counted", || {
        stats.snapshot().connections_accepted == 2
    })
    .await;
    assert_eq!(
        recorder.get(r#"gtc_transport_connections_total{result="accepted"}"#),
        2
    );
}
