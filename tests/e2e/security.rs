//! TLS, mutual TLS and bearer tokens, end to end: certificates made at test time, a real
//! server, the SDK, tonic's health and reflection clients, stock grpcurl, and what the server
//! logs.

use std::{
    io::Write,
    process::{Command, Output},
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use activations_client::{
    ActivationsClient, Code, Error, RetryPolicy, Selection, Split, Tls, neuron_id,
};
use activations_e2e::{
    TcpProxy, TestServer,
    certs::{SERVER_NAME, TestPki},
    fixtures, open_datasets, start_server,
    tools::grpcurl,
};
use activations_format::layout::LayoutChoice;
use activations_server::{
    Datasets, ServeConfig,
    bulk::BulkSettings,
    config::Config,
    dataset::OpenOptions,
    security::{AuthPolicy, AuthTokens, Security, ServerTls},
    service::ActivationsService,
};
use clap::Parser;
use futures::TryStreamExt;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

const TOKEN: &str = "tok-7f3a9c1e5b";

fn tls(pki: &TestPki, client_ca: bool) -> ServerTls {
    activations_e2e::install_tls_provider();
    ServerTls::from_files(
        &pki.path("server.pem"),
        &pki.path("server.key"),
        client_ca.then(|| pki.path("ca.pem")).as_deref(),
    )
    .expect("the test certificates are valid")
}

fn auth(tokens: &[&str], reflection_requires_auth: bool) -> AuthPolicy {
    let mut accepted = AuthTokens::default();
    for token in tokens {
        accepted
            .add(&token.parse().unwrap(), String::new)
            .expect("a valid token");
    }
    AuthPolicy::new(accepted, reflection_requires_auth)
}

async fn bundled() -> ActivationsService {
    let datasets = Datasets::open(&[], &OpenOptions::default())
        .await
        .expect("the bundled sample");
    ActivationsService::new(datasets)
}

async fn serve(security: Security) -> TestServer {
    start_server(ServeConfig {
        security,
        ..ServeConfig::new(bundled().await)
    })
    .await
}

/// A client that tries once, so a refused connection fails at once.
fn builder(url: String) -> activations_client::ClientBuilder {
    ActivationsClient::builder()
        .endpoint(url)
        .retry(RetryPolicy::NONE)
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(20))
}

fn trusting(pki: &TestPki) -> Tls {
    Tls::new().ca_certificate_pem(pki.read("ca.pem"))
}

/// Connects and reads the train split of the bundled neuron: 5 records if all went well.
async fn read_train(client: activations_client::Result<ActivationsClient>) -> Result<usize, Error> {
    let client = client?;
    let records = client
        .train_activation_records(neuron_id(1, 1), Some(5))
        .await?;
    Ok(records.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_over_tls_reads_a_real_record_verifying_the_server_name() {
    let pki = TestPki::new();
    let server = serve(Security {
        tls: Some(tls(&pki, false)),
        auth: None,
    })
    .await;

    // The certificate names 127.0.0.1, the address connected to.
    let client = builder(server.tls_url())
        .tls(trusting(&pki))
        .connect()
        .await;
    assert_eq!(read_train(client).await.unwrap(), 5);
    // An address without a scheme is https:// once TLS settings are given.
    let client = builder(server.addr.to_string())
        .tls(trusting(&pki))
        .connect()
        .await;
    assert_eq!(read_train(client).await.unwrap(), 5);
    // The name verified can be overridden: the certificate's name passes, another fails.
    let client = builder(server.tls_url())
        .tls(trusting(&pki).domain_name(SERVER_NAME))
        .connect()
        .await;
    assert_eq!(read_train(client).await.unwrap(), 5);
    let client = builder(server.tls_url())
        .tls(trusting(&pki).domain_name("elsewhere.test"))
        .connect()
        .await;
    assert!(
        read_train(client).await.is_err(),
        "a name the certificate lacks"
    );
    // A client that does not trust the test CA (only the system's roots) is refused.
    let client = builder(server.tls_url()).connect().await;
    assert!(
        read_train(client).await.is_err(),
        "an untrusted certificate"
    );

    server.stop().await;
}

#[test]
fn a_key_that_is_not_the_certificate_s_stops_the_server_naming_both_files() {
    let pki = TestPki::new();
    activations_e2e::install_tls_provider();
    let error = ServerTls::from_files(&pki.path("server.pem"), &pki.path("client.key"), None)
        .expect_err("the client's key with the server's certificate");
    let text = error.to_string();
    assert!(
        text.contains("server.pem") && text.contains("client.key"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_text_to_a_tls_port_fails_quickly_and_the_server_keeps_serving() {
    let pki = TestPki::new();
    let server = serve(Security {
        tls: Some(tls(&pki, false)),
        auth: None,
    })
    .await;

    let started = Instant::now();
    let error = read_train(builder(server.url()).connect().await)
        .await
        .expect_err("plain text to a TLS port");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "failed after {:?}: {error}",
        started.elapsed()
    );
    // hyper reports the TLS port closing the connection as UNAVAILABLE or, when the close
    // races the request, as CANCELLED ("connection closed"): both are failures of the
    // connection, not answers of the server.
    assert!(
        matches!(error, Error::Connect { .. })
            || matches!(
                error.code(),
                Some(Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled)
            ),
        "{error:?}"
    );
    // A raw plain-text peer that never finishes a handshake does not hold up the others.
    let _silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();

    let client = builder(server.tls_url())
        .tls(trusting(&pki))
        .connect()
        .await;
    assert_eq!(read_train(client).await.unwrap(), 5);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_accepts_only_a_client_certificate_from_the_configured_ca() {
    let pki = TestPki::new();
    let server = serve(Security {
        tls: Some(tls(&pki, true)),
        auth: None,
    })
    .await;

    let without = builder(server.tls_url())
        .tls(trusting(&pki))
        .connect()
        .await;
    // A refusal says what was refused and why, not "transport error" alone. A call made at
    // once on the new connection may meet its closing before the alert that says why: it then
    // says that a refused client certificate is the likely cause.
    let said_why = |refused: &str, why: &[&str]| {
        let hedged = "when it refuses this client's certificate (none sent, or not from a CA it \
                      trusts for clients)";
        assert!(
            why.iter().all(|said| refused.contains(said)) || refused.contains(hedged),
            "{refused}"
        );
    };
    let refused = read_train(without)
        .await
        .expect_err("no client certificate")
        .to_string();
    said_why(
        &refused,
        &[
            "CertificateRequired",
            "requires a client certificate",
            "--tls-cert",
        ],
    );

    let foreign =
        trusting(&pki).identity_pem(pki.read("other-client.pem"), pki.read("other-client.key"));
    let foreign = builder(server.tls_url()).tls(foreign).connect().await;
    let refused = read_train(foreign)
        .await
        .expect_err("a certificate of another CA")
        .to_string();
    said_why(
        &refused,
        &[
            "refused this client's certificate",
            "not signed by a CA the server trusts",
        ],
    );

    let right = trusting(&pki).identity_pem(pki.read("client.pem"), pki.read("client.key"));
    let right = builder(server.tls_url()).tls(right).connect().await;
    assert_eq!(read_train(right).await.unwrap(), 5);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_need_a_valid_token_and_are_told_how_to_send_one() {
    let server = serve(Security {
        tls: None,
        auth: Some(auth(&[TOKEN, "another-token"], false)),
    })
    .await;

    let error = read_train(builder(server.url()).connect().await)
        .await
        .expect_err("no token");
    assert_eq!(error.code(), Some(Code::Unauthenticated), "{error}");
    let status = error.status().unwrap();
    assert_eq!(status.reason(), Some("MISSING_BEARER_TOKEN"));
    assert!(
        status.message().contains("authorization: Bearer <token>"),
        "{}",
        status.message()
    );

    let wrong = format!("{TOKEN}x");
    let error = read_train(builder(server.url()).bearer_token(&wrong).connect().await)
        .await
        .expect_err("a wrong token");
    assert_eq!(error.code(), Some(Code::Unauthenticated), "{error}");
    assert_eq!(
        error.status().unwrap().reason(),
        Some("INVALID_BEARER_TOKEN")
    );
    assert!(
        !error.to_string().contains(&wrong),
        "the token is not echoed: {error}"
    );

    for token in [TOKEN, "another-token"] {
        let client = builder(server.url()).bearer_token(token).connect().await;
        assert_eq!(read_train(client).await.unwrap(), 5, "{token}");
    }

    // Health checks need no token.
    let mut health = HealthClient::new(channel(&server).await);
    let response = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health is open");
    assert_eq!(
        response.into_inner().status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    server.stop().await;
}

/// A plain channel to the server, for tonic's own health and reflection clients.
async fn channel(server: &TestServer) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .expect("connecting")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reads_over_mutual_tls_with_a_token_file() {
    use activations_cli::{self as cli, Cli};

    let pki = TestPki::new();
    let server = serve(Security {
        tls: Some(tls(&pki, true)),
        auth: Some(auth(&[TOKEN], false)),
    })
    .await;
    let token_file = pki.path("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let path = |name: &str| pki.path(name).to_str().unwrap().to_owned();
    let run = |token_args: Vec<String>| {
        let mut args = vec![
            "activations".to_owned(),
            "--server".to_owned(),
            server.addr.to_string(),
            "--tls-ca".to_owned(),
            path("ca.pem"),
            "--tls-cert".to_owned(),
            path("client.pem"),
            "--tls-key".to_owned(),
            path("client.key"),
        ];
        args.extend(token_args);
        args.push("layers".to_owned());
        async move {
            let mut out = Vec::new();
            cli::run(Cli::parse_from(args), &mut out)
                .await
                .map(|()| String::from_utf8(out).unwrap())
        }
    };
    let token_file = token_file.to_str().unwrap().to_owned();
    assert_eq!(
        run(vec!["--token-file".to_owned(), token_file])
            .await
            .unwrap(),
        "1\n"
    );
    let refused = run(vec!["--token".to_owned(), "wrong".to_owned()]).await;
    let error = refused.expect_err("a wrong token").to_string();
    assert!(error.starts_with("UNAUTHENTICATED: "), "{error}");
    server.stop().await;
}

/// Lists the services through reflection v1, with `token` if given.
async fn list_services(
    server: &TestServer,
    token: Option<&str>,
) -> Result<Vec<String>, tonic::Status> {
    let mut client = ServerReflectionClient::new(channel(server).await);
    let mut request = tonic::Request::new(futures::stream::iter([ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    }]));
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let mut responses = client.server_reflection_info(request).await?.into_inner();
    let response = responses.message().await?.expect("one response");
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            Ok(list.service.into_iter().map(|s| s.name).collect())
        }
        other => panic!("unexpected reflection response {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_is_open_by_default_and_closed_by_the_flag() {
    let open = serve(Security {
        tls: None,
        auth: Some(auth(&[TOKEN], false)),
    })
    .await;
    let services = list_services(&open, None)
        .await
        .expect("reflection is open");
    assert!(
        services
            .iter()
            .any(|s| s == "neuron_explainer.activations.v1.ActivationService"),
        "{services:?}"
    );
    open.stop().await;

    let closed = serve(Security {
        tls: None,
        auth: Some(auth(&[TOKEN], true)),
    })
    .await;
    let refused = list_services(&closed, None)
        .await
        .expect_err("reflection is closed");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    let refused = list_services(&closed, Some("wrong"))
        .await
        .expect_err("a wrong token");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    assert!(
        !list_services(&closed, Some(TOKEN))
            .await
            .unwrap()
            .is_empty()
    );
    closed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_stream_resumed_on_a_new_connection_still_carries_the_token() {
    const NEURONS: u32 = 30;
    let dir = tempfile::tempdir().unwrap();
    for neuron in 0..NEURONS {
        let record = fixtures::neuron(9000 + u64::from(neuron), 0, neuron, 200, 150);
        fixtures::write_neuron(dir.path(), false, 0, neuron, &fixtures::to_json(&record));
    }
    let serve_dir = || async {
        let datasets = open_datasets(&[("d", dir.path())], LayoutChoice::Auto).await;
        let service = ActivationsService::new(datasets).with_bulk_settings(BulkSettings {
            message_bytes: 8 * 1024,
            ..BulkSettings::DEFAULT
        });
        let security = Security {
            tls: None,
            auth: Some(auth(&[TOKEN], false)),
        };
        start_server(ServeConfig {
            security,
            ..ServeConfig::new(service)
        })
        .await
    };
    let (first, second) = (serve_dir().await, serve_dir().await);
    let proxy = TcpProxy::start(first.addr).await;
    let client = ActivationsClient::builder()
        .endpoint(proxy.url())
        .bearer_token(TOKEN)
        .retry(RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(500),
        })
        .connect()
        .await
        .unwrap();
    let selection = Selection::Range {
        layers: 0..1,
        neurons: Some(0..NEURONS),
    };
    let mut stream = client.neuron_splits(selection, &[Split::Valid], None);
    let mut neurons = Vec::new();
    for _ in 0..3 {
        neurons.push(stream.try_next().await.unwrap().unwrap());
    }
    proxy.set_target(second.addr);
    proxy.cut();
    tokio::time::timeout(Duration::from_secs(10), first.stop())
        .await
        .expect("the first server stops");
    while let Some(neuron) = stream.try_next().await.expect("resumed with the token") {
        neurons.push(neuron);
    }
    assert!(proxy.accepted() >= 2, "{} connections", proxy.accepted());
    let served: Vec<u32> = neurons.iter().map(|n| n.neuron_id.neuron_index).collect();
    assert_eq!(served, (0..NEURONS).collect::<Vec<_>>());
    assert!(neurons.iter().all(|n| n.splits.is_ok()));
    second.stop().await;
}

/// While a capture is alive, everything logged in this process, at every level, by every crate.
///
/// The tests share one process, so the subscriber is installed once and records only while a
/// capture is alive (the other tests' servers log through it meanwhile, which these checks
/// tolerate: no test's token may be logged).
fn captured_logs() -> Capture {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    let logs = LOGS
        .get_or_init(|| {
            use tracing_subscriber::{Layer as _, filter::filter_fn, layer::SubscriberExt as _};
            let logs = Arc::new(Mutex::new(Vec::new()));
            let sink = logs.clone();
            let layer = tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(move || LogSink(sink.clone()))
                .with_filter(filter_fn(|_| CAPTURES.load(Ordering::SeqCst) > 0));
            tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
                .expect("the only subscriber of the test process");
            logs
        })
        .clone();
    CAPTURES.fetch_add(1, Ordering::SeqCst);
    Capture { logs }
}

/// How many captures are alive.
static CAPTURES: AtomicUsize = AtomicUsize::new(0);

/// The logs recorded so far; recording stops when the last capture is dropped.
struct Capture {
    logs: Arc<Mutex<Vec<u8>>>,
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.logs.lock().unwrap()).into_owned()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        CAPTURES.fetch_sub(1, Ordering::SeqCst);
    }
}

struct LogSink(Arc<Mutex<Vec<u8>>>);

impl Write for LogSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_never_appear_in_logs_or_in_the_config() {
    let logs = captured_logs();
    let secret = "log-secret-5d21e8";
    let wrong = "log-wrong-9b7c4a";
    let pki = TestPki::new();
    let server = serve(Security {
        tls: Some(tls(&pki, false)),
        auth: Some(auth(&[secret], true)),
    })
    .await;
    let client = builder(server.tls_url())
        .tls(trusting(&pki))
        .bearer_token(secret)
        .connect()
        .await;
    assert_eq!(read_train(client).await.unwrap(), 5);
    let refused = builder(server.tls_url())
        .tls(trusting(&pki))
        .bearer_token(wrong)
        .connect()
        .await;
    assert!(read_train(refused).await.is_err());
    server.stop().await;

    let config = Config::try_parse_from([
        "activations-server",
        "--auth-tokens",
        &format!("{secret},{wrong}"),
        "--reflection-requires-auth",
    ])
    .unwrap();
    let security = config.security().unwrap();
    let logged = logs.text();
    assert!(
        logged.contains("INVALID_BEARER_TOKEN"),
        "the refusal is logged, so the logs were captured"
    );
    for text in [logged, format!("{config:?}"), format!("{security:?}")] {
        for token in [secret, wrong] {
            assert!(!text.contains(token), "{token} shown in:\n{text}");
        }
    }
}

/// `grpcurl -cacert ca.pem FLAGS... 127.0.0.1:PORT COMMAND...`
fn grpcurl_tls(server: &TestServer, pki: &TestPki, flags: &[&str], command: &[&str]) -> Output {
    Command::new(grpcurl())
        .arg("-cacert")
        .arg(pki.path("ca.pem"))
        .args(flags)
        .arg(server.addr.to_string())
        .args(command)
        .output()
        .expect("running grpcurl")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs grpcurl in .venv; run by scripts/test.sh"]
async fn grpcurl_over_tls_with_a_token() {
    let pki = TestPki::new();
    let server = serve(Security {
        tls: Some(tls(&pki, false)),
        auth: Some(auth(&[TOKEN], false)),
    })
    .await;
    let header = format!("authorization: Bearer {TOKEN}");
    let list_layers = "neuron_explainer.activations.v1.ActivationService/ListLayers";

    let listed = grpcurl_tls(&server, &pki, &[], &["list"]);
    assert!(listed.status.success(), "{listed:?}");
    assert!(String::from_utf8_lossy(&listed.stdout).contains("ActivationService"));

    let layers = grpcurl_tls(&server, &pki, &["-H", &header], &[list_layers]);
    assert!(layers.status.success(), "{layers:?}");
    let layers: serde_json::Value = serde_json::from_slice(&layers.stdout).unwrap();
    assert_eq!(layers["layerIndices"], serde_json::json!([1]));

    let refused = grpcurl_tls(&server, &pki, &[], &[list_layers]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("Code: Unauthenticated"), "{stderr}");
    assert!(stderr.contains("authorization: Bearer <token>"), "{stderr}");

    let health = grpcurl_tls(
        &server,
        &pki,
        &["-d", r#"{"service":""}"#],
        &["grpc.health.v1.Health/Check"],
    );
    assert!(health.status.success(), "{health:?}");
    assert!(String::from_utf8_lossy(&health.stdout).contains("SERVING"));
    server.stop().await;
}
