//! [`ObservedStore`]: counts and times the reads of the store it wraps.

use std::sync::Arc;

use activations_proto::wire;
use async_trait::async_trait;

use activations_format::neuron::NeuronKey;

use super::{StorageMetrics, StorageOperation};
use crate::store::{NeuronStore, StoreError};

/// Records every call to `inner` into [`StorageMetrics`]: a `neuron` call is a `read`,
/// `neuron_exists` an `exists`, `layers` and `neurons` a `list`. It sits directly on the
/// storage, below the cache, so it sees exactly the reads that reach storage.
#[derive(Debug)]
pub struct ObservedStore {
    inner: Arc<dyn NeuronStore>,
    metrics: StorageMetrics,
}

impl ObservedStore {
    pub fn new(inner: Arc<dyn NeuronStore>, metrics: StorageMetrics) -> Self {
        ObservedStore { inner, metrics }
    }
}

#[async_trait]
impl NeuronStore for ObservedStore {
    async fn neuron(&self, key: NeuronKey) -> Result<Arc<wire::NeuronRecord>, StoreError> {
        self.metrics
            .observe(StorageOperation::Read, self.inner.neuron(key))
            .await
    }

    async fn neuron_exists(&self, key: NeuronKey) -> Result<bool, StoreError> {
        self.metrics
            .observe(StorageOperation::Exists, self.inner.neuron_exists(key))
            .await
    }

    async fn layers(&self) -> Result<Vec<u32>, StoreError> {
        self.metrics
            .observe(StorageOperation::List, self.inner.layers())
            .await
    }

    async fn neurons(&self, layer: u32) -> Result<Vec<u32>, StoreError> {
        self.metrics
            .observe(StorageOperation::List, self.inner.neurons(layer))
            .await
    }
}
