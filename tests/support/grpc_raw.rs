//! Raw gRPC requests: bytes a generated client would never send, for the tests that probe what
//! the server does with them.

use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::BodyExt;
use tonic::{Status, transport::Channel};

/// A gRPC frame: the compressed flag, the length the header claims, and the bytes.
pub fn frame(flag: u8, claimed: usize, bytes: &[u8]) -> Bytes {
    let mut framed = BytesMut::new();
    framed.put_u8(flag);
    framed.put_u32(u32::try_from(claimed).unwrap());
    framed.put_slice(bytes);
    framed.freeze()
}

/// Sends `body` to `path` as a gRPC request with `headers`, and returns the status the call
/// ended with: from the response's headers, or else from its trailers.
///
/// # Panics
/// When the channel fails or the response carries no status.
pub async fn raw_call(
    channel: &Channel,
    path: &str,
    headers: &[(&'static str, &str)],
    body: Bytes,
) -> Status {
    use tower_service::Service;

    let mut request = http::Request::builder()
        .method("POST")
        .uri(format!("http://server{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(tonic::body::Body::new(http_body_util::Full::new(body)))
        .unwrap();
    let mut channel = channel.clone();
    futures::future::poll_fn(|cx| channel.poll_ready(cx))
        .await
        .unwrap();
    let response = channel.call(request).await.unwrap();
    if let Some(status) = Status::from_header_map(response.headers()) {
        return status;
    }
    let collected = response.into_body().collect().await.unwrap();
    Status::from_header_map(collected.trailers().expect("trailers")).expect("a status")
}
