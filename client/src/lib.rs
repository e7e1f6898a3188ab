//! Rust SDK of the neuron activation service, which serves the
//! activation records of OpenAI's neuron-explainer datasets cut into train/calibration/valid/test
//! splits exactly as the Python module `neuron_explainer.activations.activations` cuts them.
//!
//! # Layout
//!
//! - [`client`]: [`ActivationsClient`], one method per RPC plus the Python names
//!   (`train_activation_records`, `sorted_layers`, `load_neuron`, ...).
//! - [`settings`]: [`ClientBuilder`] (from [`ActivationsClient::builder`]): the servers,
//!   deadlines, [`RetryPolicy`], [`Compression`].
//! - [`routing`]: several servers (a list or a `dns:///` name), each neuron's calls to its owner
//!   by rendezvous hashing (the hash documented for other clients), failed servers taken out
//!   until a health check passes.
//! - [`security`]: [`Tls`] (the CA to trust, a client certificate for mutual TLS) and the
//!   bearer token sent on every call.
//! - [`bulk`]: jobs over many neurons: [`ActivationsClient::neuron_splits`], one
//!   [`NeuronSplits`] per neuron of a [`Selection`], resumed by itself after transient failures,
//!   and [`ActivationsClient::for_each_neuron`].
//! - [`explain`]: neuron-explainer's [`max_activation`] and [`normalized_activations`], as its
//!   explainer and simulator prompts compute them.
//! - [`error`]: [`Error`], by category, and [`StatusError`], a gRPC status with its decoded rich
//!   error details.
//! - [`pb`]: the generated messages of the contract, re-exported from `activations-proto`.
//!
//! # Examples
//!
//! ```no_run
//! use activations_client::{ActivationsClient, neuron_id};
//!
//! # async fn example() -> activations_client::Result<()> {
//! let client = ActivationsClient::connect("127.0.0.1:50051").await?;
//! let id = neuron_id(1, 1);
//! // Python: load_neuron(1, 1).valid_activation_records(ActivationRecordSliceParams(None))
//! let valid = client.valid_activation_records(id, None).await?;
//! println!("{} valid records", valid.len());
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

pub mod bulk;
pub mod client;
pub mod error;
pub mod explain;
mod retry;
pub mod routing;
pub mod security;
pub mod settings;
mod stub;

pub use activations_proto::{ErrorReason, cursor::Cursor, pb};
pub use bulk::{NeuronSplits, NeuronSplitsStream, Selection, ShardError};
pub use client::{
    ActivationsClient, ClientBuilder, NeuronIndexStream, SplitRecordStream, neuron_id,
};
pub use error::{Error, Result, StatusError};
pub use explain::{max_activation, normalized_activations};
pub use pb::{NeuronId, Split};
pub use security::Tls;
pub use settings::{
    Compression, MAX_DECODING_MESSAGE_SIZE, MAX_ENCODING_MESSAGE_SIZE, RetryPolicy,
};
/// gRPC status codes, as [`Error::code`] returns them.
pub use tonic::Code;

/// Compiles the README's examples as doc tests, so they stay true.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
