//! Self-tests of the HTTP servers datasets are served from in the end-to-end tests: the stock
//! Python file server and the fault-injecting in-process server, observed with `reqwest`.

use activations_webstore::{Fault, FaultyHttpServer};
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use activations_e2e::{http::StaticHttpServer, install_tls_provider};
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NEURON: &str = "1/1.json";

fn content() -> Bytes {
    Bytes::from(
        (0..1000)
            .map(|i| format!("{i:04}"))
            .collect::<String>()
            .into_bytes(),
    )
}

fn client() -> reqwest::Client {
    install_tls_provider();
    reqwest::Client::new()
}

fn faulty() -> FaultyHttpServer {
    FaultyHttpServer::start(HashMap::from([(NEURON.to_string(), content())]))
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .expect("ASCII header")
        .to_string()
}

#[tokio::test]
async fn static_server_serves_a_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("1")).expect("mkdir");
    std::fs::write(dir.path().join("1/1.json"), b"{\"a\": 1}").expect("write");
    let server = StaticHttpServer::start(dir.path()).await;
    assert!(server.url().starts_with("http://127.0.0.1:"));

    let client = client();
    let response = client
        .get(format!("{}/1/1.json", server.url()))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.expect("body"), &b"{\"a\": 1}"[..]);
    let response = client
        .get(format!("{}/1/2.json", server.url()))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), 404);
    assert!(server.log().contains("GET /1/2.json"), "{}", server.log());
}

#[tokio::test]
async fn static_server_dies_with_its_handle() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = StaticHttpServer::start(dir.path()).await;
    let url = server.url();
    drop(server);
    let client = client();
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.get(&url).send().await.is_ok() {
        assert!(Instant::now() < deadline, "still serving after drop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn faulty_server_serves_like_a_web_server() {
    let server = faulty();
    let url = format!("{}/{NEURON}", server.url());
    let client = client();

    let get = client.get(&url).send().await.expect("GET");
    assert_eq!(get.status(), 200);
    assert_eq!(header(&get, "content-length"), "4000");
    assert_eq!(header(&get, "accept-ranges"), "bytes");
    let etag = header(&get, "etag");
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2,
        "{etag}"
    );
    let last_modified = header(&get, "last-modified");
    httpdate::parse_http_date(&last_modified).expect("an HTTP date");
    assert_eq!(get.bytes().await.expect("body"), content());

    let head = client.head(&url).send().await.expect("HEAD");
    assert_eq!(head.status(), 200);
    assert_eq!(header(&head, "content-length"), "4000");
    assert_eq!(header(&head, "etag"), etag);
    assert_eq!(header(&head, "last-modified"), last_modified);
    assert!(head.bytes().await.expect("body").is_empty());

    let range = client
        .get(&url)
        .header("range", "bytes=4-11")
        .send()
        .await
        .expect("GET range");
    assert_eq!(range.status(), 206);
    assert_eq!(header(&range, "content-range"), "bytes 4-11/4000");
    assert_eq!(range.bytes().await.expect("body"), &b"00010002"[..]);

    let open = client
        .get(&url)
        .header("range", "bytes=3990-")
        .send()
        .await
        .expect("GET open range");
    assert_eq!(open.status(), 206);
    assert_eq!(header(&open, "content-range"), "bytes 3990-3999/4000");
    assert_eq!(open.bytes().await.expect("body"), &b"9709980999"[..]);

    let suffix = client
        .get(&url)
        .header("range", "bytes=-4")
        .send()
        .await
        .expect("GET suffix range");
    assert_eq!(suffix.status(), 206);
    assert_eq!(suffix.bytes().await.expect("body"), &b"0999"[..]);

    let past_end = client
        .get(&url)
        .header("range", "bytes=4000-")
        .send()
        .await
        .expect("GET range past the end");
    assert_eq!(past_end.status(), 416);
    assert_eq!(header(&past_end, "content-range"), "bytes */4000");

    let unchanged = client
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("conditional GET");
    assert_eq!(unchanged.status(), 304);
    let changed = client
        .get(&url)
        .header("if-match", "\"something else\"")
        .send()
        .await
        .expect("conditional GET");
    assert_eq!(changed.status(), 412);

    let missing = client
        .get(format!("{}/1/2.json", server.url()))
        .send()
        .await
        .expect("GET");
    assert_eq!(missing.status(), 404);
    let propfind = client
        .request(
            reqwest::Method::from_bytes(b"PROPFIND").expect("method"),
            &url,
        )
        .send()
        .await
        .expect("PROPFIND");
    assert_eq!(propfind.status(), 405);

    // GET, HEAD and the GETs above (ranges and conditionals included); not PROPFIND.
    assert_eq!(server.requests(NEURON), 8);
    assert_eq!(server.requests("/1/1.json"), 8);
    assert_eq!(server.requests("1/2.json"), 1);
    assert_eq!(server.requests("1/3.json"), 0);

    server.put("1/1.json", Bytes::from_static(b"new"));
    let replaced = client.get(&url).send().await.expect("GET");
    assert_ne!(header(&replaced, "etag"), etag);
    assert_eq!(replaced.bytes().await.expect("body"), &b"new"[..]);
    server.remove(NEURON);
    assert_eq!(client.get(&url).send().await.expect("GET").status(), 404);
}

#[tokio::test]
async fn faulty_server_decodes_percent_escapes() {
    let server = FaultyHttpServer::start(HashMap::from([(
        "a b/c.json".to_string(),
        Bytes::from_static(b"x"),
    )]));
    let response = client()
        .get(format!("{}/a%20b/c.json", server.url()))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), 200);
    assert_eq!(server.requests("a b/c.json"), 1);
}

#[tokio::test]
async fn status_faults_are_served_in_order_then_normal_service() {
    let server = faulty();
    server.inject(NEURON, vec![Fault::Status(503), Fault::Status(500)]);
    let url = format!("{}/{NEURON}", server.url());
    let client = client();
    assert_eq!(client.get(&url).send().await.expect("GET").status(), 503);
    assert_eq!(client.head(&url).send().await.expect("HEAD").status(), 500);
    let ok = client.get(&url).send().await.expect("GET");
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.bytes().await.expect("body"), content());
    assert_eq!(server.requests(NEURON), 3);
}

#[tokio::test]
async fn persistent_faults_last_until_cleared() {
    let server = faulty();
    server.inject_always(NEURON, Fault::Status(500));
    server.inject(NEURON, vec![Fault::Status(429)]);
    let url = format!("{}/{NEURON}", server.url());
    let client = client();
    assert_eq!(client.get(&url).send().await.expect("GET").status(), 429);
    for _ in 0..3 {
        assert_eq!(client.get(&url).send().await.expect("GET").status(), 500);
    }
    server.clear_faults(NEURON);
    assert_eq!(client.get(&url).send().await.expect("GET").status(), 200);
    assert_eq!(server.requests(NEURON), 5);
}

#[tokio::test]
async fn delay_delays_then_serves() {
    let server = faulty();
    server.inject(NEURON, vec![Fault::Delay(Duration::from_millis(300))]);
    let url = format!("{}/{NEURON}", server.url());
    let client = client();
    let started = Instant::now();
    let response = client.get(&url).send().await.expect("GET");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.expect("body"), content());
    let started = Instant::now();
    client.get(&url).send().await.expect("GET");
    assert!(started.elapsed() < Duration::from_millis(300));
}

#[tokio::test]
async fn truncate_breaks_off_the_body() {
    let server = faulty();
    server.inject(NEURON, vec![Fault::Truncate(100), Fault::Truncate(0)]);
    let url = format!("{}/{NEURON}", server.url());
    let client = client();
    for _ in 0..2 {
        let response = client
            .get(&url)
            .send()
            .await
            .expect("status and headers arrive");
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "content-length"), "4000");
        let error = response.bytes().await.expect_err("an incomplete body");
        assert!(error.is_body() || error.is_decode(), "{error:?}");
    }
    assert_eq!(
        client
            .get(&url)
            .send()
            .await
            .expect("GET")
            .bytes()
            .await
            .expect("body"),
        content()
    );
}

#[tokio::test]
async fn truncate_sends_exactly_the_head_and_n_bytes() {
    let server = faulty();
    server.inject(NEURON, vec![Fault::Truncate(100)]);
    let mut stream = tokio::net::TcpStream::connect(server.addr())
        .await
        .expect("connect");
    stream
        .write_all(format!("GET /{NEURON} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
        .await
        .expect("send the request");
    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut received))
        .await
        .expect("the server closes the connection")
        .ok();
    let text = String::from_utf8(received).expect("ASCII");
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete head");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("content-length: 4000"),
        "{head}"
    );
    assert_eq!(body.as_bytes(), &content()[..100]);
}

#[tokio::test]
async fn corrupt_keeps_the_length_and_changes_the_bytes() {
    let server = faulty();
    server.inject(NEURON, vec![Fault::Corrupt, Fault::Corrupt]);
    let url = format!("{}/{NEURON}", server.url());
    let client = client();
    let response = client.get(&url).send().await.expect("GET");
    assert_eq!(response.status(), 200);
    let body = response.bytes().await.expect("a complete body");
    assert_eq!(body.len(), content().len());
    assert_ne!(body, content());
    let range = client
        .get(&url)
        .header("range", "bytes=0-99")
        .send()
        .await
        .expect("GET range");
    assert_eq!(range.status(), 206);
    let body = range.bytes().await.expect("a complete body");
    assert_eq!(body.len(), 100);
    assert_ne!(body, content().slice(..100));
    assert_eq!(
        client
            .get(&url)
            .send()
            .await
            .expect("GET")
            .bytes()
            .await
            .expect("body"),
        content()
    );
}

#[tokio::test]
async fn reset_drops_the_connection() {
    let server = faulty();
    server.inject(NEURON, vec![Fault::Reset]);
    let url = format!("{}/{NEURON}", server.url());
    let client = client();
    let error = client.get(&url).send().await.expect_err("no response");
    assert!(error.is_request(), "{error:?}");
    assert_eq!(client.get(&url).send().await.expect("GET").status(), 200);
    assert_eq!(server.requests(NEURON), 2);
}

#[tokio::test]
async fn faulty_server_stops_when_dropped() {
    let server = faulty();
    let addr = server.addr();
    drop(server);
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still listening after drop");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
