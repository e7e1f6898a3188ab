//! The warm ceiling: a gRPC server that answers `StreamActivationRecords` with the messages of
//! one real response, encoded once and replayed as bytes.
//!
//! It does no storage read, no cache lookup, no split arithmetic and no per-request protobuf
//! encoding: what is left is tonic, HTTP/2 and TCP moving the same bytes, the most the service
//! could reach on this machine with this transport. Its messages are captured from the real
//! service, so a response is exactly as large and split into exactly as many messages.

use std::{convert::Infallible, future::Future, sync::Arc};

use activations_proto::pb;
use bytes::{BufMut, Bytes};
use futures::stream;
use prost::Message;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::{
    Status,
    codec::{Codec, EncodeBuf, Encoder},
    codegen::{Body, BoxFuture, Context, Poll, Service, StdError, http},
    server::{NamedService, ServerStreamingService},
    transport::server::TcpIncoming,
};
use tonic_prost::ProstDecoder;

const STREAM_ACTIVATION_RECORDS: &str =
    "/neuron_explainer.activations.v1.ActivationService/StreamActivationRecords";

/// Answers every `StreamActivationRecords` call with the same pre-encoded messages; other
/// methods are `UNIMPLEMENTED`.
#[derive(Debug, Clone)]
pub struct EchoService {
    messages: Arc<[Bytes]>,
}

impl EchoService {
    /// Replays `records`, encoded here once.
    pub fn new(records: &[pb::SplitActivationRecord]) -> Self {
        EchoService {
            messages: records
                .iter()
                .map(|record| Bytes::from(record.encode_to_vec()))
                .collect(),
        }
    }

    /// Replays the length-delimited messages of `input` (as [`EchoService::to_delimited`]
    /// writes them).
    ///
    /// # Errors
    ///
    /// `input` is not a sequence of length-delimited `SplitActivationRecord`s.
    pub fn from_delimited(mut input: &[u8]) -> Result<Self, prost::DecodeError> {
        let mut records = Vec::new();
        while !input.is_empty() {
            records.push(pb::SplitActivationRecord::decode_length_delimited(
                &mut input,
            )?);
        }
        Ok(EchoService::new(&records))
    }

    /// The messages, each preceded by its length, for [`EchoService::from_delimited`].
    pub fn to_delimited(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for message in self.messages.iter() {
            prost::encoding::encode_varint(message.len() as u64, &mut out);
            out.extend_from_slice(message);
        }
        out
    }

    /// Bytes of one response's messages, without gRPC framing.
    pub fn response_bytes(&self) -> u64 {
        self.messages.iter().map(|m| m.len() as u64).sum()
    }
}

impl NamedService for EchoService {
    const NAME: &'static str = "neuron_explainer.activations.v1.ActivationService";
}

impl<B> Service<http::Request<B>> for EchoService
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != STREAM_ACTIVATION_RECORDS {
            let response = Status::unimplemented("the echo server answers one method").into_http();
            return Box::pin(async move { Ok(response) });
        }
        let replay = Replay(Arc::clone(&self.messages));
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(PreEncodedCodec);
            Ok(grpc.server_streaming(replay, request).await)
        })
    }
}

/// The handler: the request is decoded (as the real service decodes it) and ignored.
struct Replay(Arc<[Bytes]>);

impl ServerStreamingService<pb::StreamActivationRecordsRequest> for Replay {
    type Response = Bytes;
    type ResponseStream = stream::Iter<std::vec::IntoIter<Result<Bytes, Status>>>;
    type Future = std::future::Ready<Result<tonic::Response<Self::ResponseStream>, Status>>;

    fn call(
        &mut self,
        _request: tonic::Request<pb::StreamActivationRecordsRequest>,
    ) -> Self::Future {
        // Cloning `Bytes` bumps a reference count; the messages themselves are not copied.
        let messages: Vec<_> = self.0.iter().cloned().map(Ok).collect();
        std::future::ready(Ok(tonic::Response::new(stream::iter(messages))))
    }
}

/// Decodes requests with prost; encodes responses by copying bytes encoded beforehand.
#[derive(Debug, Clone, Copy)]
struct PreEncodedCodec;

impl Codec for PreEncodedCodec {
    type Encode = Bytes;
    type Decode = pb::StreamActivationRecordsRequest;
    type Encoder = PreEncoded;
    type Decoder = ProstDecoder<pb::StreamActivationRecordsRequest>;

    fn encoder(&mut self) -> Self::Encoder {
        PreEncoded
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::default()
    }
}

#[derive(Debug, Clone, Copy)]
struct PreEncoded;

impl Encoder for PreEncoded {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

/// An echo server on `127.0.0.1:0`, stopped when dropped.
#[derive(Debug)]
pub struct EchoServer {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    _shutdown: oneshot::Sender<()>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EchoServer {
    /// Serves `service` on `127.0.0.1:0` with the transport settings of the real server
    /// (`TCP_NODELAY`).
    ///
    /// # Errors
    ///
    /// The port cannot be bound.
    pub async fn start(service: EchoService) -> std::io::Result<EchoServer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let (shutdown, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, service, async {
            let _ = stopped.await;
        }));
        Ok(EchoServer {
            url,
            _shutdown: shutdown,
            task,
        })
    }
}

/// Serves `service` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    service: EchoService,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use activations_client::{ActivationsClient, Split, neuron_id};

    #[test]
    fn delimited_messages_come_back_as_they_were() {
        let records: Vec<_> = (0..3)
            .map(|i| pb::SplitActivationRecord {
                source_index: i,
                ..Default::default()
            })
            .collect();
        let service = EchoService::new(&records);
        let again = EchoService::from_delimited(&service.to_delimited()).unwrap();
        assert_eq!(again.messages, service.messages);
        assert_eq!(
            EchoService::from_delimited(&[]).unwrap().response_bytes(),
            0
        );
        // A length running past the end.
        assert!(EchoService::from_delimited(&[5, 8, 1]).is_err());
    }

    #[tokio::test]
    async fn echo_replays_the_captured_records_to_the_sdk() {
        let records: Vec<_> = (0..3)
            .map(|i| pb::SplitActivationRecord {
                record: Some(pb::ActivationRecord {
                    tokens: vec![format!("token {i}")],
                    activations: vec![i as f32],
                    ..Default::default()
                }),
                source: pb::RecordSource::Random.into(),
                source_index: i,
            })
            .collect();
        let service = EchoService::new(&records);
        let expected_bytes: u64 = records.iter().map(|r| r.encoded_len() as u64).sum();
        assert_eq!(service.response_bytes(), expected_bytes);
        let server = EchoServer::start(service).await.unwrap();
        let client = ActivationsClient::connect(server.url.clone())
            .await
            .unwrap();
        for _ in 0..2 {
            let got = client
                .activation_records(neuron_id(0, 0), Split::Valid, Some(5))
                .await
                .unwrap();
            let want: Vec<_> = records.iter().filter_map(|r| r.record.clone()).collect();
            assert_eq!(got, want);
        }
        let other = client.neuron_summary(neuron_id(0, 0)).await.unwrap_err();
        assert_eq!(other.code(), Some(tonic::Code::Unimplemented));
    }
}
