//! Storage faults, injected by a web server in this process that serves the real neuron file:
//! transient faults are retried into correct answers, persistent ones end in UNAVAILABLE with
//! retry info within the retry budget, a body that does not match its Content-MD5 is read again
//! and then DATA_LOSS, and no call ever gets a wrong or partial record. Also: concurrent calls
//! share one storage read.

use activations_webstore::{Fault, FaultyHttpServer};
use std::{collections::HashMap, time::Duration};

use activations_client::{ActivationsClient, Code};
use activations_e2e::{TestServer, fixtures::REAL_NEURON, serve_bundled, serve_uris};
use activations_server::location::StorageOptions;
use bytes::Bytes;
use prost::Message;

/// Neurons `0/0.json` .. `0/{NEURONS-1}.json`, each the real public file.
const NEURONS: u32 = 16;

/// Short timeouts and budgets, so persistent faults fail fast.
const STORAGE: StorageOptions = StorageOptions {
    request_timeout: Duration::from_millis(800),
    connect_timeout: Duration::from_secs(1),
    max_retries: 3,
    retry_budget: Duration::from_secs(3),
};

fn path(neuron: u32) -> String {
    format!("0/{neuron}.json")
}

struct Setup {
    web: FaultyHttpServer,
    server: TestServer,
    client: ActivationsClient,
    /// The real record, encoded, as the bundled sample serves it.
    expected: Vec<u8>,
}

async fn setup() -> Setup {
    let files: HashMap<String, Bytes> = (0..NEURONS)
        .map(|n| (path(n), Bytes::from_static(REAL_NEURON)))
        .collect();
    let web = FaultyHttpServer::start(files);
    let uri = format!("{}?layers=1&neurons={NEURONS}&layout=flat", web.url());
    let server = serve_uris(&[("faulty", &uri)], STORAGE).await;
    // Without client retries, each call shows exactly what the server did.
    let client = server
        .client()
        .await
        .with_retry(activations_client::RetryPolicy::NONE);
    let bundled = serve_bundled().await;
    let expected = bundled
        .client()
        .await
        .load_neuron(1, 1)
        .await
        .unwrap()
        .encode_to_vec();
    bundled.stop().await;
    Setup {
        web,
        server,
        client,
        expected,
    }
}

fn code(error: &activations_client::Error) -> Code {
    error
        .code()
        .unwrap_or_else(|| panic!("expected a status, got {error}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_faults_are_retried_into_the_correct_record() {
    let s = setup().await;
    let cases = [
        ("two 500s", vec![Fault::Status(500), Fault::Status(500)]),
        ("503", vec![Fault::Status(503)]),
        ("429", vec![Fault::Status(429)]),
        ("connection reset", vec![Fault::Reset]),
        ("truncated body", vec![Fault::Truncate(100_000)]),
        (
            "truncated twice",
            vec![Fault::Truncate(10), Fault::Truncate(200_000)],
        ),
        (
            "slower than the request timeout",
            vec![Fault::Delay(Duration::from_secs(2))],
        ),
    ];
    for (neuron, (label, faults)) in (0u32..).zip(cases) {
        let attempts = faults.len() + 1;
        s.web.inject(&path(neuron), faults);
        let record = s
            .client
            .load_neuron(0, neuron)
            .await
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_eq!(record.encode_to_vec(), s.expected, "{label}: wrong record");
        assert!(
            s.web.requests(&path(neuron)) >= attempts,
            "{label}: {} requests",
            s.web.requests(&path(neuron))
        );
    }
    s.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_faults_end_in_unavailable_with_retry_info() {
    let s = setup().await;
    for (neuron, fault) in [
        (10, Fault::Status(500)),
        (11, Fault::Reset),
        (12, Fault::Truncate(50_000)),
        (13, Fault::Delay(Duration::from_secs(30))),
    ] {
        s.web.inject_always(&path(neuron), fault.clone());
        let started = std::time::Instant::now();
        let err = s.client.load_neuron(0, neuron).await.unwrap_err();
        let elapsed = started.elapsed();
        assert_eq!(code(&err), Code::Unavailable, "{fault:?}: {err}");
        let status = err.status().unwrap();
        assert_eq!(status.reason(), Some("STORAGE_UNAVAILABLE"), "{fault:?}");
        assert!(
            status.details().retry_info().is_some(),
            "{fault:?}: no retry info"
        );
        // Retried, but not forever: the budget bounds the attempts and the time.
        let requests = s.web.requests(&path(neuron));
        assert!(
            (2..=STORAGE.max_retries + 1).contains(&requests),
            "{fault:?}: {requests} requests"
        );
        assert!(
            elapsed <= STORAGE.read_deadline() + Duration::from_secs(2),
            "{fault:?}: answered after {elapsed:?}"
        );
        // Once the store recovers, the next call reads again: failures are not cached.
        s.web.clear_faults(&path(neuron));
        let record = s.client.load_neuron(0, neuron).await.unwrap();
        assert_eq!(
            record.encode_to_vec(),
            s.expected,
            "{fault:?}: after recovery"
        );
    }
    s.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_does_not_match_its_checksum_is_read_again_and_never_served() {
    let s = setup().await;
    // The store sends each whole body's Content-MD5, as Azure Blob does. Bytes changed once on
    // the way: the body is read again, and the intact one served.
    s.web.inject(&path(3), vec![Fault::Corrupt]);
    let record = s.client.load_neuron(0, 3).await.unwrap();
    assert_eq!(record.encode_to_vec(), s.expected);
    assert_eq!(s.web.requests(&path(3)), 2, "read once more");
    // Changed twice: DATA_LOSS, saying which file and which checksum, never a wrong record.
    s.web.inject(&path(4), vec![Fault::Corrupt, Fault::Corrupt]);
    let err = s.client.load_neuron(0, 4).await.unwrap_err();
    assert_eq!(code(&err), Code::DataLoss, "{err}");
    let status = err.status().unwrap();
    assert_eq!(
        status.error_reason(),
        Some(activations_client::ErrorReason::ChecksumMismatch)
    );
    for said in ["0/4.json", "Content-MD5", "in two reads"] {
        assert!(err.to_string().contains(said), "{said} missing: {err}");
    }
    // Not cached either: the next read is served from the intact file.
    let record = s.client.load_neuron(0, 4).await.unwrap();
    assert_eq!(record.encode_to_vec(), s.expected);
    s.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_for_one_neuron_share_one_storage_read() {
    let s = setup().await;
    // Slow the read down so that every call arrives while it is in flight.
    s.web
        .inject(&path(5), vec![Fault::Delay(Duration::from_millis(300))]);
    let calls = (0..32).map(|_| {
        let client = s.client.clone();
        async move { client.load_neuron(0, 5).await }
    });
    for result in futures::future::join_all(calls).await {
        assert_eq!(result.unwrap().encode_to_vec(), s.expected);
    }
    assert_eq!(s.web.requests(&path(5)), 1);
    // Cached: more calls, split streams and summaries cost no further read.
    s.client.load_neuron(0, 5).await.unwrap();
    s.client
        .neuron_summary(activations_client::neuron_id(0, 5))
        .await
        .unwrap();
    assert_eq!(s.web.requests(&path(5)), 1);

    // A missing file is remembered for a while too.
    for _ in 0..3 {
        let err = s.client.load_neuron(0, 99).await.unwrap_err();
        assert_eq!(code(&err), Code::NotFound, "{err}");
    }
    assert_eq!(s.web.requests(&path(99)), 1);
    s.server.stop().await;
}
