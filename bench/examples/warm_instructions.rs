//! Warm split calls with client and server on one thread, for counting instructions.
//!
//! On two shared cores, runs of the load generator differ by more than a change of a few
//! percent in what a call costs; under `valgrind --tool=callgrind` this does the same work every
//! time. It serves the benchmark dataset from a server in this process (the server's whole stack
//! of layers, an `info` log to stderr), warms a hot set of 64 neurons, then makes CALLS
//! `StreamActivationRecords` calls (valid split, n=5) from `--concurrency` callers over real
//! TCP, to the service or to the echo ceiling. The client reads each message as raw bytes, so
//! what differs between the two is the server's. Instructions per call are the difference
//! between two runs over the difference in calls, which cancels the setup:
//!
//! ```sh
//! scripts/bench.sh                     # once, for target/bench-data
//! cargo build --release -p activations-bench --example warm_instructions
//! for calls in 2000 6000; do
//!   valgrind --tool=callgrind --callgrind-out-file=target/cg.service.$calls \
//!     target/release/examples/warm_instructions service $calls 2>&1 | grep Collected
//! done
//! ```

use std::{path::PathBuf, sync::Arc};

use activations_bench::{
    echo::EchoService,
    launcher::{DATASET_NAME, Launcher},
    load::{Delivered, closed_loop},
};
use activations_client::{ActivationsClient, Split, neuron_id};
use activations_proto::pb;
use bytes::{Buf, Bytes};
use clap::{Parser, ValueEnum};
use futures::TryStreamExt;
use prost::Message;
use tonic::{
    Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    codegen::http::uri::PathAndQuery,
};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const METHOD: &str = "/neuron_explainer.activations.v1.ActivationService/StreamActivationRecords";

#[derive(Debug, Parser)]
struct Args {
    /// The server the calls go to.
    target: Target,
    /// Calls to make after the warm-up.
    calls: usize,
    /// Callers, each making one call at a time.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Neurons the calls cycle over (the benchmark's warm scenario uses 64).
    #[arg(long, default_value_t = 64)]
    hot_neurons: u32,
    /// The dataset `scripts/bench.sh` generates.
    #[arg(long, default_value = "target/bench-data")]
    dataset_dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Target {
    Service,
    Echo,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    activations_server::telemetry::init_logging("info", Default::default());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let server = Launcher::InProcess
        .start(&args.dataset_dir, 1 << 30)
        .await?;
    let sdk = ActivationsClient::builder()
        .endpoint(server.url.clone())
        .dataset(DATASET_NAME)
        .connect()
        .await?;
    let hot: Arc<[_]> = (0..args.hot_neurons.max(1))
        .map(|i| neuron_id(0, i))
        .collect();
    for &id in hot.iter() {
        sdk.activation_records(id, Split::Valid, Some(5)).await?;
    }
    let captured: Vec<_> = sdk
        .stream_activation_records(hot[0], Split::Valid, Some(5))
        .await?
        .try_collect()
        .await?;
    let echo = match args.target {
        Target::Echo => Some(
            Launcher::InProcess
                .start_echo(EchoService::new(&captured))
                .await?,
        ),
        Target::Service => None,
    };
    let url = echo.as_ref().unwrap_or(&server).url.clone();
    let channel = tonic::transport::Endpoint::from_shared(url)?
        .connect()
        .await?;
    let started = std::time::Instant::now();
    let measurement = closed_loop(args.concurrency, args.calls, move |i| {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        let request = pb::StreamActivationRecordsRequest {
            dataset: DATASET_NAME.to_string(),
            neuron_id: Some(hot[i % hot.len()]),
            split: pb::Split::Valid.into(),
            slice_params: Some(pb::ActivationRecordSliceParams {
                n_examples_per_split: Some(5),
            }),
        };
        async move {
            grpc.ready()
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            let path = PathAndQuery::from_static(METHOD);
            let request = tonic::Request::new(request);
            let mut messages = grpc
                .server_streaming(request, path, RawCodec)
                .await?
                .into_inner();
            let mut delivered = Delivered::default();
            while let Some(message) = messages.message().await? {
                delivered.records += 1;
                delivered.bytes += message.len() as u64;
            }
            Ok(delivered)
        }
    })
    .await?;
    eprintln!(
        "{} calls to the {:?} in {:.2?}: {} records, {} bytes",
        args.calls,
        args.target,
        started.elapsed(),
        measurement.delivered.records,
        measurement.delivered.bytes
    );
    Ok(())
}

/// Encodes the request with prost; hands each response message over as its bytes.
#[derive(Debug, Clone, Copy)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = pb::StreamActivationRecordsRequest;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = pb::StreamActivationRecordsRequest;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let len = src.remaining();
        Ok(Some(src.copy_to_bytes(len)))
    }
}
