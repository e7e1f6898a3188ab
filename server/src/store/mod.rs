//! Reading neurons from storage.
//!
//! [`NeuronStore`] is the one trait the service reads through. [`ObjectNeuronStore`] implements
//! it over any `object_store` backend (local disk today; Azure, S3, GCS and HTTP are backends of
//! the same crate). Wrappers such as a cache implement the same trait, so the service never
//! knows which it has.

mod object;

use std::sync::Arc;

use activations_proto::pb;
use async_trait::async_trait;

use crate::{neuron::NeuronKey, neuron_json::ParseError};

pub use object::ObjectNeuronStore;

/// A source of neuron records, addressed by layer and neuron index.
#[async_trait]
pub trait NeuronStore: Send + Sync + std::fmt::Debug + 'static {
    /// The parsed record of one neuron. Shared, because it is large and read-only.
    async fn neuron(&self, key: NeuronKey) -> Result<Arc<pb::NeuronRecord>, StoreError>;

    /// Whether the neuron's file exists. A missing file is `Ok(false)`, not an error.
    async fn neuron_exists(&self, key: NeuronKey) -> Result<bool, StoreError>;

    /// Layer indices, ascending.
    async fn layers(&self) -> Result<Vec<u32>, StoreError>;

    /// Neuron indices of one layer, ascending. A layer with no neuron files is `NotFound`.
    async fn neurons(&self, layer: u32) -> Result<Vec<u32>, StoreError>;
}

/// Why a store could not answer, by category. `path` is the location inside the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Nothing stored there.
    #[error("{path} does not exist")]
    NotFound { path: String },

    /// The file is there but is not a neuron record.
    #[error("{path} is not a valid neuron file: {source}")]
    Corrupt {
        path: String,
        #[source]
        source: ParseError,
    },

    /// The store could not be read (I/O error, network, service down).
    #[error("reading {path} failed: {source}")]
    Unavailable {
        path: String,
        #[source]
        source: object_store::Error,
    },

    /// A bug in this server, not a property of the data or the store.
    #[error("reading {path} failed: {detail}")]
    Internal { path: String, detail: String },
}

impl StoreError {
    fn from_object_store(path: &object_store::path::Path, error: object_store::Error) -> Self {
        match error {
            object_store::Error::NotFound { .. } => StoreError::NotFound {
                path: path.to_string(),
            },
            source => StoreError::Unavailable {
                path: path.to_string(),
                source,
            },
        }
    }
}
