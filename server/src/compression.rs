//! Which responses are compressed: those of calls whose request came compressed, in the
//! request's own encoding, as grpc-go's servers answer.
//!
//! tonic compresses a response whenever the request's `grpc-accept-encoding` lists an encoding
//! the server sends. But every grpcio client lists gzip there whether or not it wants it, so a
//! plain Python stub got every response gzipped: a cached `GetNeuronRecord` (135 KB) took 6.0 ms
//! that way against 0.9 ms uncompressed, on this service's usual networks (a cluster, a
//! machine) a loss on both sides. A client that compresses its request asks for compression
//! (the SDK's and the Python package's `compression` setting do both); one that does not gets
//! the message as it is.

use http::{HeaderMap, HeaderValue};

use crate::grpc_headers::{GRPC_ACCEPT_ENCODING, GRPC_ENCODING};

/// Leaves in `headers` only the response encoding this rule allows: the request's encoding if it
/// was compressed, else none (tonic then sends the response uncompressed).
pub fn respond_as_requested(headers: &mut HeaderMap) {
    match headers.get(&GRPC_ENCODING).cloned() {
        Some(encoding) if encoding != HeaderValue::from_static("identity") => {
            headers.insert(GRPC_ACCEPT_ENCODING.clone(), encoding);
        }
        _ => {
            headers.remove(&GRPC_ACCEPT_ENCODING);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepted(request: &[(&'static str, &'static str)]) -> Option<String> {
        let mut headers = HeaderMap::new();
        for (name, value) in request {
            headers.insert(*name, HeaderValue::from_static(value));
        }
        respond_as_requested(&mut headers);
        headers
            .get("grpc-accept-encoding")
            .map(|v| v.to_str().unwrap().to_string())
    }

    #[test]
    fn a_response_is_compressed_only_as_its_request_was() {
        // grpcio's defaults: accepts gzip, sends plain.
        assert_eq!(
            accepted(&[("grpc-accept-encoding", "identity,deflate,gzip")]),
            None
        );
        assert_eq!(
            accepted(&[
                ("grpc-accept-encoding", "identity,deflate,gzip"),
                ("grpc-encoding", "identity")
            ]),
            None
        );
        assert_eq!(
            accepted(&[
                ("grpc-accept-encoding", "zstd,gzip"),
                ("grpc-encoding", "gzip")
            ]),
            Some("gzip".to_string())
        );
        assert_eq!(
            accepted(&[("grpc-encoding", "zstd")]),
            Some("zstd".to_string())
        );
        assert_eq!(accepted(&[]), None);
    }
}
