//! The neuron activation server: reads neuron-explainer `NeuronRecord` files from storage and
//! serves them over gRPC, cut into splits exactly as the Python `neuron_explainer` module cuts
//! them.
//!
//! # Layout
//!
//! Pure logic, no I/O, tested in place:
//! - [`neuron_json`]: decodes (and writes) the public JSON files, `NaN` literals and all.
//! - [`splits`]: `SplitPlan`, which records of a neuron make up each split.
//! - [`neuron`]: `NeuronKey`, `max_activation` and the summary of a record.
//! - [`layout`]: where a dataset keeps each neuron's file (flat or `neurons/`).
//! - [`page_token`]: the opaque `ListNeurons` page tokens.
//! - [`shape`]: a dataset's declared layers and neurons (`?layers=&neurons=`, `manifest.json`).
//!
//! I/O and serving:
//! - [`location`]: dataset URIs and the `object_store` backend each opens (local, Azure, S3,
//!   GCS, plain HTTP), with timeouts and retries.
//! - [`store`]: the `NeuronStore` trait, its `object_store`-backed implementation, and the
//!   wrappers that cache and answer listings from a declared shape.
//! - [`dataset`]: named datasets opened from `NAME=URI` settings.
//! - [`service`]: the `ActivationService` handlers; [`error`] turns failures into statuses.
//! - [`bulk`]: `StreamNeuronSplits`, many neurons' splits in one resumable, read-ahead stream.
//! - [`security`]: TLS (optionally mutual) and the bearer-token layer in front of every call.
//! - [`limits`]: load shedding, deadlines and message sizes, a tower layer over every call;
//!   [`shutdown`]: the draining shutdown; both end streams through `call_body`.
//! - [`server`]: `run(listener, datasets, shutdown)`, shared by `main` and the tests.
//! - [`config`]: the command line and environment of `activations-server`.
//!
//! Observability:
//! - [`telemetry`]: the per-call layer (span, end-of-call log line, call metrics) and the log
//!   format.
//! - [`metrics`]: the Prometheus registry (calls, records, cache, storage) and its scrape
//!   endpoint.

pub mod bulk;
mod call_body;
pub mod config;
pub mod dataset;
pub mod error;
pub mod layout;
pub mod limits;
pub mod location;
pub mod metrics;
pub mod neuron;
pub mod neuron_json;
pub mod page_token;
pub mod security;
pub mod server;
pub mod service;
pub mod shape;
pub mod shutdown;
pub mod splits;
pub mod store;
pub mod telemetry;

pub use dataset::{Dataset, DatasetSpec, Datasets};
pub use server::run;
