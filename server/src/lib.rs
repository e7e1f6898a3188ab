//! The neuron activation server: reads neuron-explainer `NeuronRecord` files from storage and
//! serves them over gRPC, cut into splits exactly as the Python `neuron_explainer` module cuts
//! them.
//!
//! # Layout
//!
//! The file format and the split rules (the JSON reader and writer, `SplitPlan`, layouts,
//! declared shapes) are the `activations-format` crate's; this crate does the I/O and serving.
//!
//! - [`page_token`]: `ListNeurons` page sizes and the refusal of a page token of another
//!   listing.
//!
//! I/O and serving:
//! - [`location`]: dataset URIs and the `object_store` backend each opens (local, Azure, S3,
//!   GCS, plain HTTP), with timeouts and retries.
//! - [`store`]: the `NeuronStore` trait, its `object_store`-backed implementation, and the
//!   wrappers that cache and answer listings from a declared shape.
//! - [`dataset`]: named datasets opened from `NAME=URI` settings; [`datasets`]: a server's
//!   datasets, a dataset whose store is down at startup served as unavailable and opened again
//!   in the background; [`redact`]: how a dataset's URI is shown everywhere, without its
//!   credentials.
//! - [`service`]: the `ActivationService` handlers; [`error`] turns failures into statuses.
//! - [`bulk`]: `StreamNeuronSplits`, many neurons' splits in one resumable stream, read ahead
//!   by [`read_ahead`]: a window that follows the storage's latency, in a server-wide byte
//!   budget.
//! - [`security`]: TLS (optionally mutual) and the bearer-token layer in front of every call.
//! - [`upstream`]: the facts the dependencies (object_store, tonic) give only as text;
//!   [`integrity`]: bodies checked against the checksums their stores give.
//! - [`routes`]: which service a call's path names (health and reflection are treated apart).
//! - [`limits`]: load shedding, deadlines, message sizes and the idle bound (`idle`), a tower
//!   layer over every call, which also applies [`compression`]'s rule (a response is compressed
//!   only as its request was); [`shutdown`]: the draining shutdown; both end streams through
//!   `call_body`. `handshake` cuts off connections that never finish opening.
//! - [`server`]: [`serve`]`(listener, config, shutdown)`, the one way to run a server (main,
//!   tests, benchmarks), and the [`Ready`] line the binary prints once it accepts calls.
//! - [`config`]: the command line and environment of `activations-server`.
//!
//! Observability:
//! - [`telemetry`]: the per-call layer (span, end-of-call log line, call metrics) and the log
//!   format.
//! - [`metrics`]: the Prometheus registry (calls, records, cache, storage) and its scrape
//!   endpoint.

pub mod bulk;
mod call_body;
pub mod compression;
pub mod config;
pub mod dataset;
pub mod datasets;
pub mod error;
mod grpc_headers;
mod handshake;
mod idle;
pub mod integrity;
pub mod limits;
pub mod location;
pub mod metrics;
pub mod page_token;
pub mod read_ahead;
pub mod redact;
pub mod routes;
pub mod security;
pub mod server;
pub mod service;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod upstream;

pub use dataset::{Dataset, DatasetSpec};
pub use datasets::Datasets;
pub use server::{Ready, ServeConfig, serve};
