//! What the server's dependencies say only in the text of their errors. Everywhere else an
//! error is classified by its type; these facts (an HTTP status inside an `object_store` error,
//! which refusal a status of tonic's own is) have no type to match, so they are read here. The
//! tests below provoke the `object_store` ones and tonic's oversize refusal from the real
//! dependencies, and the end-to-end error sweep (`tests/e2e/errors.rs`) provokes every one of
//! tonic's refusals from a real server, so that an upgrade that rewords a message fails a test
//! instead of misclassifying errors.

use tonic::{Code, Status};

/// The HTTP status an `object_store` error reports, if any. `object_store` maps 401, 403 and
/// 404 to their own variants for reads but not for listings, and its error type that carries
/// the status cannot be named outside the crate; the status is in its message, in the form
/// "status code: 403 Forbidden".
pub fn object_store_http_status(error: &(dyn std::error::Error + 'static)) -> Option<u16> {
    const MARKER: &str = "status code: ";
    let mut current = Some(error);
    while let Some(error) = current {
        let message = error.to_string();
        if let Some(at) = message.find(MARKER) {
            let digits = message[at + MARKER.len()..].get(..3)?;
            return digits.parse().ok();
        }
        current = error.source();
    }
    None
}

/// Whether `status` is tonic's refusal of a request message above the server's
/// `max_decoding_message_size`: `OUT_OF_RANGE` with a terse message, and no type of its own.
/// What a status tonic made itself, not the service, says: tonic's own refusals have no type,
/// only a code and a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TonicRefusal {
    /// A request message above the decoding limit, as sent or once decompressed.
    RequestTooLarge,
    /// A response message above the encoding limit: `size` bytes as framed.
    ResponseTooLarge { size: usize },
    /// A request that is not a message of the method's type: bytes that do not decode, a bad
    /// compression flag, a body that cannot be decompressed, a message cut short or missing.
    Malformed,
    /// A request compressed with an encoding the server does not accept.
    UnsupportedCompression,
    /// A path with no method behind it: tonic answers `UNIMPLEMENTED` with no message.
    UnknownMethod,
}

/// Which of tonic's own refusals `status` is, if it is one.
pub fn tonic_refusal(status: &Status) -> Option<TonicRefusal> {
    let message = status.message();
    let starts = |prefix: &str| message.starts_with(prefix);
    match status.code() {
        Code::OutOfRange if starts("Error, decoded message length too large") => {
            Some(TonicRefusal::RequestTooLarge)
        }
        Code::ResourceExhausted if starts("Error decompressing: size limit") => {
            Some(TonicRefusal::RequestTooLarge)
        }
        Code::OutOfRange if starts("Error, encoded message length too large") => {
            // "... found {len} bytes, the limit is: {limit} bytes"
            let size = message
                .split("found ")
                .nth(1)
                .and_then(|rest| rest.split(' ').next())
                .and_then(|digits| digits.parse().ok())
                .unwrap_or(0);
            Some(TonicRefusal::ResponseTooLarge { size })
        }
        Code::Internal
            if starts("failed to decode Protobuf message")
                || starts("protocol error:")
                || starts("Error decompressing:")
                || starts("Unexpected EOF decoding stream")
                || starts("Missing request message") =>
        {
            Some(TonicRefusal::Malformed)
        }
        Code::Unimplemented if starts("Content is compressed with") => {
            Some(TonicRefusal::UnsupportedCompression)
        }
        Code::Unimplemented if message.is_empty() => Some(TonicRefusal::UnknownMethod),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use activations_proto::{
        pb::{self, activation_service_client::ActivationServiceClient},
        wire::activation_service_server::ActivationServiceServer,
    };
    use bytes::Bytes;
    use futures::StreamExt as _;
    use http_body_util::Full;
    use hyper::{server::conn::http1, service::service_fn};
    use hyper_util::rt::TokioIo;
    use object_store::{ClientOptions, ObjectStore, http::HttpBuilder};
    use tokio::net::TcpListener;
    use tokio_stream::wrappers::TcpListenerStream;

    use super::*;
    use crate::{dataset::OpenOptions, datasets::Datasets, service::ActivationsService};

    /// An HTTP server on 127.0.0.1:0 that answers every request with `status`.
    async fn answering(status: u16) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let service = service_fn(move |_request| async move {
                    let mut response = http::Response::new(Full::new(Bytes::new()));
                    *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
                    Ok::<_, Infallible>(response)
                });
                tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
            }
        });
        url
    }

    #[tokio::test]
    async fn object_store_listing_failures_carry_their_http_status_in_the_text() {
        crate::location::install_tls_provider();
        let mut read_from_text = 0;
        for status in [401, 403, 503] {
            let store = HttpBuilder::new()
                .with_url(answering(status).await)
                .with_client_options(ClientOptions::new().with_allow_http(true))
                .with_retry(object_store::RetryConfig {
                    max_retries: 0,
                    ..Default::default()
                })
                .build()
                .unwrap();
            let listed = store.list(None).next().await.expect("one item");
            let error = listed.expect_err("the server refuses the listing");
            if let object_store::Error::Generic { .. } = error {
                assert_eq!(object_store_http_status(&error), Some(status), "{error}");
                read_from_text += 1;
            } else {
                // A variant of its own needs no reading of the text.
                assert!(matches!(
                    error,
                    object_store::Error::NotFound { .. }
                        | object_store::Error::PermissionDenied { .. }
                        | object_store::Error::Unauthenticated { .. }
                ));
            }
        }
        assert!(
            read_from_text > 0,
            "listings report some statuses only in their text"
        );
        let io = std::io::Error::other("connection reset by peer");
        assert_eq!(object_store_http_status(&io), None);
    }

    #[tokio::test]
    async fn tonic_refuses_an_oversized_request_with_the_message_read_here() {
        let datasets = Datasets::open(&[], &OpenOptions::default()).await.unwrap();
        let server = ActivationServiceServer::new(ActivationsService::new(datasets))
            .max_decoding_message_size(16);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(server)
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        let mut client = ActivationServiceClient::connect(url).await.unwrap();
        let status = client
            .get_neuron_record(pb::GetNeuronRecordRequest {
                dataset: "a dataset name longer than sixteen bytes".to_string(),
                neuron_id: None,
            })
            .await
            .expect_err("above the limit");
        assert_eq!(
            tonic_refusal(&status),
            Some(TonicRefusal::RequestTooLarge),
            "{status:?}"
        );
        assert_eq!(tonic_refusal(&Status::out_of_range("page 9 of 3")), None);
    }
}
