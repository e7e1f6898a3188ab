//! What a hostile client can send a real `activations-server` process, and what it gets:
//! never more than the request asks for, never a replay, always a clear refusal.

use activations_client::{Code, ErrorReason, StatusError, neuron_id, pb};
use activations_e2e::{fixtures::REAL_NEURON, process::ServerProcess};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use futures::StreamExt;
use pb::activation_service_client::ActivationServiceClient;
use tonic::{Status, transport::Channel};

/// Neurons 0/0..0/4 and 1/0..1/4, each the real public file.
fn dataset() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for layer in 0..2 {
        std::fs::create_dir_all(dir.path().join(layer.to_string())).unwrap();
        for neuron in 0..5 {
            let path = dir.path().join(format!("{layer}/{neuron}.json"));
            std::fs::write(path, REAL_NEURON).unwrap();
        }
    }
    dir
}

/// The binary serving `dir` as dataset `local`, with `flags`.
fn serve(dir: &tempfile::TempDir, flags: &[&str]) -> ServerProcess {
    let mut args = vec![
        "--dataset".to_string(),
        format!("local={}", dir.path().display()),
    ];
    args.extend(flags.iter().map(|flag| flag.to_string()));
    ServerProcess::start(&args)
}

async fn raw(server: &ServerProcess) -> ActivationServiceClient<Channel> {
    ActivationServiceClient::connect(server.url.clone())
        .await
        .unwrap()
        .max_decoding_message_size(64 << 20)
}

/// The neurons a stream delivers, in order, and the status that ended it if it failed.
async fn neurons(
    client: &mut ActivationServiceClient<Channel>,
    request: pb::StreamNeuronSplitsRequest,
) -> (Vec<((u32, u32), String)>, Option<Status>) {
    let mut stream = match client.stream_neuron_splits(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return (Vec::new(), Some(status)),
    };
    let mut delivered = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(message) => {
                let id = message.neuron_id.unwrap();
                delivered.push(((id.layer_index, id.neuron_index), message.cursor));
            }
            Err(status) => return (delivered, Some(status)),
        }
    }
    (delivered, None)
}

/// A `StreamNeuronSplits` request for 2,000 neurons of [`dataset`]: far more than HTTP/2 lets
/// through to a client that reads nothing.
fn a_long_stream() -> pb::StreamNeuronSplitsRequest {
    let ids: Vec<pb::NeuronId> = (0..2000).map(|i| neuron_id(i % 2, i % 5)).collect();
    pb::StreamNeuronSplitsRequest {
        selection: Some(pb::NeuronSelection {
            selection: Some(pb::neuron_selection::Selection::Neurons(pb::NeuronIdList {
                neuron_ids: ids,
            })),
        }),
        splits: vec![pb::Split::Train as i32, pb::Split::Valid as i32],
        ..Default::default()
    }
}

/// `cursor` with its fields (version, fingerprint, position, layer, neuron) edited by `edit`,
/// re-encoded as the service encodes cursors: what anyone can forge from a cursor they hold.
fn forged(cursor: &str, edit: impl FnOnce(&mut Vec<String>)) -> String {
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).unwrap()).unwrap();
    let mut fields: Vec<String> = text.split('\n').map(String::from).collect();
    edit(&mut fields);
    URL_SAFE_NO_PAD.encode(fields.join("\n"))
}

#[tokio::test]
async fn forged_cursors_are_refused_and_never_replay_or_skip_neurons() {
    let dir = dataset();
    let server = serve(&dir, &[]);
    let mut client = raw(&server).await;
    let list = pb::NeuronSelection {
        selection: Some(pb::neuron_selection::Selection::Neurons(pb::NeuronIdList {
            neuron_ids: [(0, 1), (1, 3), (0, 1), (0, 4)]
                .map(|(l, n)| neuron_id(l, n))
                .to_vec(),
        })),
    };
    let block = pb::NeuronSelection {
        selection: Some(pb::neuron_selection::Selection::Range(pb::NeuronRange {
            layer_start: 0,
            layer_end: 2,
            neuron_start: 1,
            neuron_end: Some(4),
        })),
    };
    for selection in [list, block] {
        let full = pb::StreamNeuronSplitsRequest {
            selection: Some(selection),
            splits: vec![pb::Split::Valid as i32],
            slice_params: Some(pb::ActivationRecordSliceParams {
                n_examples_per_split: Some(2),
            }),
            ..Default::default()
        };
        let (all, failure) = neurons(&mut client, full.clone()).await;
        assert!(failure.is_none(), "{failure:?}");
        let cursor = all[1].1.clone();
        let resume = |cursor: String| pb::StreamNeuronSplitsRequest {
            cursor,
            ..full.clone()
        };

        // The cursor as issued resumes exactly after its neuron.
        let (rest, failure) = neurons(&mut client, resume(cursor.clone())).await;
        assert!(failure.is_none(), "{failure:?}");
        assert_eq!(rest, all[2..]);

        let total = all.len() as u64;
        let forgeries = [
            // The last position wraps to the first neuron if added to unchecked.
            forged(&cursor, |f| f[2] = u64::MAX.to_string()),
            // A position that disagrees with the neuron named: skips or replays.
            forged(&cursor, |f| f[2] = "0".to_string()),
            forged(&cursor, |f| f[2] = "2".to_string()),
            forged(&cursor, |f| f[2] = total.to_string()),
            // A neuron the position does not hold.
            forged(&cursor, |f| f[4] = "0".to_string()),
            forged(&cursor, |f| f[3] = "7".to_string()),
            // Not a number, a version that does not exist, a field too many.
            forged(&cursor, |f| f[2] = "-1".to_string()),
            forged(&cursor, |f| f[0] = "c9".to_string()),
            forged(&cursor, |f| f.push("1".to_string())),
        ];
        for forgery in forgeries {
            let (delivered, failure) = neurons(&mut client, resume(forgery.clone())).await;
            let status = failure.unwrap_or_else(|| panic!("{forgery} delivered {delivered:?}"));
            assert!(delivered.is_empty(), "{forgery}: {delivered:?}");
            assert_eq!(
                status.code(),
                Code::InvalidArgument,
                "{forgery}: {status:?}"
            );
            assert!(status.message().contains("cursor"), "{}", status.message());
        }
    }
}

/// Checks that `status` is a refusal with `code` whose message says `phrase`, and that the
/// message and encoded details together stay under `max_bytes` of trailers.
fn assert_short(status: &Status, code: Code, phrase: &str, max_bytes: usize) {
    assert_eq!(status.code(), code, "{status:?}");
    assert!(status.message().contains(phrase), "{}", status.message());
    let bytes = status.message().len() + status.details().len();
    assert!(bytes < max_bytes, "{bytes} bytes of trailers");
}

#[tokio::test]
async fn request_strings_are_never_echoed_at_length() {
    let dir = dataset();
    let server = serve(&dir, &[]);
    let mut client = raw(&server).await;
    let long = "x".repeat(1 << 20);
    let strange = format!("{}\u{202e}{}", "é".repeat(300), "\n".repeat(300));
    for name in [long.as_str(), strange.as_str(), &"d".repeat(129)] {
        let refused = client
            .list_layers(pb::ListLayersRequest {
                dataset: name.to_string(),
            })
            .await
            .unwrap_err();
        assert_short(&refused, Code::InvalidArgument, "not a dataset name", 1024);
        let summary = client
            .get_neuron_summary(pb::GetNeuronSummaryRequest {
                dataset: name.to_string(),
                neuron_id: Some(neuron_id(0, 1)),
            })
            .await
            .unwrap_err();
        assert_short(&summary, Code::InvalidArgument, "not a dataset name", 1024);
    }
    // A well-formed name that no dataset has is NOT_FOUND, listing the served ones.
    let unknown = client
        .list_layers(pb::ListLayersRequest {
            dataset: "d".repeat(128),
        })
        .await
        .unwrap_err();
    assert_short(&unknown, Code::NotFound, "local", 2048);

    // A page token carrying a long dataset name of its own.
    let token = URL_SAFE_NO_PAD.encode(format!("v1\n{long}\n0\n3"));
    let refused = client
        .list_neurons(pb::ListNeuronsRequest {
            dataset: String::new(),
            layer_index: 0,
            page_size: 2,
            page_token: token,
        })
        .await
        .unwrap_err();
    assert_short(
        &refused,
        Code::InvalidArgument,
        "was issued for dataset",
        1024,
    );

    // Nothing of the long names reached the log either.
    assert!(
        server.log().len() < 64 << 10,
        "{} bytes of log",
        server.log().len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_regular_files_within_the_size_limit_are_read() {
    let dir = dataset();
    // A named pipe, which blocks whoever opens it for reading until a writer comes; a
    // directory; and a file above the limit set below.
    let fifo = dir.path().join("0/10.json");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    std::fs::create_dir(dir.path().join("0/11.json")).unwrap();
    std::fs::write(dir.path().join("0/12.json"), vec![b' '; 300 << 10]).unwrap();
    let server = serve(&dir, &["--max-neuron-file-bytes", "256KiB"]);
    let mut client = raw(&server).await;
    let summary = |neuron: u32| {
        let mut request = tonic::Request::new(pb::GetNeuronSummaryRequest {
            dataset: String::new(),
            neuron_id: Some(neuron_id(0, neuron)),
        });
        request.set_timeout(std::time::Duration::from_secs(5));
        request
    };
    // More calls than the server has reader threads: none may be left blocked.
    for _ in 0..2 {
        for (neuron, what) in [
            (10, "named pipe"),
            (11, "directory"),
            (12, "limit of 262144"),
        ] {
            let refused = client
                .get_neuron_summary(summary(neuron))
                .await
                .unwrap_err();
            assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
            assert!(refused.message().contains(what), "{}", refused.message());
            let reason = StatusError::from(refused).error_reason();
            assert_eq!(reason, Some(ErrorReason::UnreadableNeuronFile));
        }
    }
    // The readers are free: a real neuron is still served.
    let served = client.get_neuron_summary(summary(1)).await.unwrap();
    assert!(served.into_inner().max_activation.is_some());
}

#[tokio::test]
async fn the_response_limit_applies_to_the_message_not_its_compressed_form() {
    let dir = dataset();
    let server = serve(&dir, &["--max-response-bytes", "100KiB"]);
    let request = || pb::GetNeuronRecordRequest {
        dataset: String::new(),
        neuron_id: Some(neuron_id(0, 1)),
    };
    // The record's message is larger than 100 KiB; gzip makes it about a third of that.
    for encoding in [None, Some(tonic::codec::CompressionEncoding::Gzip)] {
        let mut client = raw(&server).await;
        if let Some(encoding) = encoding {
            client = client.accept_compressed(encoding);
        }
        let refused = client.get_neuron_record(request()).await.unwrap_err();
        assert_eq!(
            refused.code(),
            Code::OutOfRange,
            "{encoding:?}: {refused:?}"
        );
        assert!(
            refused.message().contains("--max-response-bytes"),
            "{}",
            refused.message()
        );
        let reason = StatusError::from(refused).error_reason();
        assert_eq!(reason, Some(ErrorReason::ResponseTooLarge));
    }
    // The same neuron, in parts, is served.
    let mut client = raw(&server).await;
    let mut stream = client
        .stream_activation_records(pb::StreamActivationRecordsRequest {
            dataset: String::new(),
            neuron_id: Some(neuron_id(0, 1)),
            split: pb::Split::Valid as i32,
            slice_params: None,
        })
        .await
        .unwrap()
        .into_inner();
    let mut records = 0;
    while let Some(record) = stream.next().await {
        record.unwrap();
        records += 1;
    }
    assert_eq!(records, 28);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_cannot_take_every_slot_of_the_server() {
    let dir = dataset();
    let server = serve(
        &dir,
        &[
            "--max-concurrent-requests",
            "32",
            "--max-streams-per-connection",
            "8",
        ],
    );
    // One connection opens as many streams as the server has slots, each far larger than
    // what HTTP/2 lets through unread, and reads none of them.
    let hog = raw(&server).await;
    let request = a_long_stream();
    let held = std::sync::Arc::new(tokio::sync::Mutex::new(Vec::new()));
    for _ in 0..32 {
        let (mut hog, request, held) = (hog.clone(), request.clone(), held.clone());
        tokio::spawn(async move {
            if let Ok(response) = hog.stream_neuron_splits(request).await {
                held.lock().await.push(response.into_inner());
            }
        });
    }
    // The server admits only as many of them as it advertised.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while held.lock().await.len() < 8 {
        assert!(
            std::time::Instant::now() < deadline,
            "the first streams never opened"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        held.lock().await.len(),
        8,
        "streams beyond the advertised limit"
    );

    // Everyone else is still served.
    let mut other = raw(&server).await;
    let layers = other
        .list_layers(pb::ListLayersRequest::default())
        .await
        .expect("a second connection is served")
        .into_inner();
    assert_eq!(layers.layer_indices, vec![0, 1]);
}

#[tokio::test]
async fn links_leading_outside_the_dataset_are_not_served_unless_allowed() {
    let dir = dataset();
    let elsewhere = tempfile::tempdir().unwrap();
    // A neuron file outside the dataset (a real one, so that serving it would succeed), a
    // layer directory outside it, and the links to them an intruder might leave: absolute,
    // relative, to a directory, to a system file. A link inside the dataset stays served.
    let secret = elsewhere.path().join("secret.json");
    std::fs::write(&secret, REAL_NEURON).unwrap();
    std::fs::create_dir(elsewhere.path().join("layer")).unwrap();
    std::fs::write(elsewhere.path().join("layer/0.json"), REAL_NEURON).unwrap();
    let data = dir.path();
    let elsewhere_name = elsewhere.path().file_name().unwrap().to_str().unwrap();
    let link = |target: &str, at: &str| std::os::unix::fs::symlink(target, data.join(at)).unwrap();
    link(secret.to_str().unwrap(), "0/98.json");
    link(&format!("../../{elsewhere_name}/secret.json"), "0/97.json");
    link("/etc/passwd", "0/96.json");
    link(elsewhere.path().join("layer").to_str().unwrap(), "5");
    link("1.json", "0/6.json");

    let server = serve(&dir, &[]);
    let mut client = raw(&server).await;
    for (layer, neuron) in [(0, 98), (0, 97), (0, 96), (5, 0)] {
        let read = client.get_neuron_record(pb::GetNeuronRecordRequest {
            dataset: String::new(),
            neuron_id: Some(neuron_id(layer, neuron)),
        });
        let Err(refused) = read.await else {
            panic!("{layer}/{neuron}, outside the dataset, was served");
        };
        assert_eq!(
            refused.code(),
            Code::NotFound,
            "{layer}/{neuron}: {refused:?}"
        );
        for leaked in [elsewhere_name, "secret", "passwd", "root"] {
            assert!(!refused.message().contains(leaked), "{}", refused.message());
        }
        let exists = client
            .neuron_exists(pb::NeuronExistsRequest {
                dataset: String::new(),
                neuron_id: Some(neuron_id(layer, neuron)),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(!exists.exists, "{layer}/{neuron} reported as existing");
    }
    let layers = client
        .list_layers(pb::ListLayersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(layers.layer_indices, vec![0, 1]);
    let listed = client
        .list_neurons(pb::ListNeuronsRequest {
            layer_index: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.neuron_indices, vec![0, 1, 2, 3, 4, 6]);
    let inside = client
        .get_neuron_summary(pb::GetNeuronSummaryRequest {
            dataset: String::new(),
            neuron_id: Some(neuron_id(0, 6)),
        })
        .await;
    assert!(inside.is_ok(), "{inside:?}");
    // The operator learns why, without the link's target.
    assert!(
        server.log().contains("leading outside the dataset"),
        "{}",
        server.log()
    );
    assert!(!server.log().contains(elsewhere_name));

    // A dataset assembled from links says so, and is served whole.
    let follow = ServerProcess::start(&[
        "--dataset".to_string(),
        format!("local={}?links=follow", data.display()),
    ]);
    let mut client = raw(&follow).await;
    for (layer, neuron) in [(0, 98), (0, 97), (5, 0)] {
        let served = client
            .get_neuron_summary(pb::GetNeuronSummaryRequest {
                dataset: String::new(),
                neuron_id: Some(neuron_id(layer, neuron)),
            })
            .await;
        assert!(served.is_ok(), "{layer}/{neuron}: {served:?}");
    }
    let layers = client
        .list_layers(pb::ListLayersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(layers.layer_indices, vec![0, 1, 5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_nobody_reads_are_ended_and_their_slots_freed() {
    use activations_e2e::scrape::Scrape;

    let dir = dataset();
    let server = serve(
        &dir,
        &[
            "--max-concurrent-requests",
            "8",
            "--max-streams-per-connection",
            "4",
            "--stream-idle-timeout",
            "1s",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
    );
    let metrics = server.metrics_url.clone().unwrap();
    // Two connections take every slot with streams far larger than HTTP/2 lets through
    // unread, and read none of them.
    let request = a_long_stream();
    let mut held = Vec::new();
    for _ in 0..2 {
        let hog = raw(&server).await;
        for _ in 0..4 {
            let mut hog = hog.clone();
            let response = hog.stream_neuron_splits(request.clone()).await.unwrap();
            held.push(response.into_inner());
        }
    }

    // The server is saturated, and says so.
    let mut other = raw(&server).await;
    let refused = other
        .list_layers(pb::ListLayersRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let scrape = Scrape::fetch(&metrics).await;
    assert_eq!(scrape.value("activations_call_slots", &[]), 8.0);
    assert_eq!(scrape.value("activations_call_slots_in_use", &[]), 8.0);

    // Past the idle bound the unread responses are ended and everyone is served again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let listed = other.list_layers(pb::ListLayersRequest::default()).await;
        match listed {
            Ok(layers) => {
                assert_eq!(layers.into_inner().layer_indices, vec![0, 1]);
                break;
            }
            Err(status) => assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the slots were never freed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let scrape = Scrape::fetch(&metrics).await;
    assert_eq!(
        scrape.value("activations_responses_idle_ended_total", &[]),
        8.0
    );
    assert_eq!(scrape.value("activations_call_slots_in_use", &[]), 0.0);

    // A client that comes back to its stream gets what was sent, then the reason it ended:
    // never a stream that looks complete.
    for mut stream in held {
        let ended = loop {
            match stream.next().await {
                Some(Ok(_)) => {}
                Some(Err(status)) => break status,
                None => panic!("an idle stream ended as if complete"),
            }
        };
        assert_eq!(ended.code(), Code::Aborted, "{ended:?}");
        assert!(
            ended.message().contains("--stream-idle-timeout"),
            "{}",
            ended.message()
        );
        let reason = StatusError::from(ended).error_reason();
        assert_eq!(reason, Some(ErrorReason::StreamIdle));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_finish_opening_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = dataset();
    let server = serve(&dir, &[]);
    let address = server.url.trim_start_matches("http://").to_string();
    // Half a preface, a few bytes of one, and nothing at all.
    let mut stalled = Vec::new();
    for i in 0..60 {
        let mut socket = tokio::net::TcpStream::connect(&address).await.unwrap();
        let sent: &[u8] = match i % 3 {
            0 => b"PRI * HTTP/2.0\r\n",
            1 => b"PRI",
            _ => b"",
        };
        socket.write_all(sent).await.unwrap();
        stalled.push(socket);
    }
    // A client that opens its connection properly is served meanwhile.
    let mut client = raw(&server).await;
    let layers = client
        .list_layers(pb::ListLayersRequest::default())
        .await
        .unwrap();
    assert_eq!(layers.into_inner().layer_indices, vec![0, 1]);

    // The server closes every stalled one (an end of stream, or a reset).
    for mut socket in stalled {
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            socket.read_to_end(&mut rest),
        )
        .await;
        assert!(closed.is_ok(), "a connection that never opened stayed open");
    }
    // And the proper client's connection, idle since, was left open.
    let again = client.list_layers(pb::ListLayersRequest::default()).await;
    assert!(again.is_ok(), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_connections_that_stall_after_their_handshake_are_closed() {
    use activations_e2e::certs::TestPki;
    use rustls::pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = dataset();
    let pki = TestPki::new();
    let server = serve(
        &dir,
        &[
            "--tls-cert",
            pki.path("server.pem").to_str().unwrap(),
            "--tls-key",
            pki.path("server.key").to_str().unwrap(),
        ],
    );
    let address = server.url.trim_start_matches("http://").to_string();
    activations_e2e::install_tls_provider();
    let mut roots = rustls::RootCertStore::empty();
    let ca = pki.read("ca.pem");
    for certificate in rustls::pki_types::CertificateDer::pem_slice_iter(&ca) {
        roots.add(certificate.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    // Each finishes its TLS handshake, then sends half a preface, or nothing.
    let mut stalled = Vec::new();
    for i in 0..20 {
        let tcp = tokio::net::TcpStream::connect(&address).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut tls = connector.connect(name, tcp).await.expect("a TLS handshake");
        if i % 2 == 0 {
            tls.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
            tls.flush().await.unwrap();
        }
        stalled.push(tls);
    }
    for mut tls in stalled {
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            tls.read_to_end(&mut rest),
        )
        .await;
        assert!(
            closed.is_ok(),
            "a TLS connection that never opened stayed open"
        );
    }
}
