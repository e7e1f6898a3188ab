//! [`ShapedStore`]: answers listings from a declared [`Shape`] instead of the store.

use std::sync::Arc;

use activations_proto::wire;
use async_trait::async_trait;

use super::{NeuronStore, StoreError};
use activations_format::{neuron::NeuronKey, shape::Shape};

/// Reads neurons from `inner`, but lists layers and neurons from a declared shape, so stores
/// that cannot be listed (anonymous blob containers, web servers) still answer `ListLayers`
/// and `ListNeurons`. The shape is trusted: a neuron it declares may still be missing, and
/// reading it is then `NotFound` as usual.
#[derive(Debug)]
pub struct ShapedStore {
    inner: Arc<dyn NeuronStore>,
    shape: Shape,
}

impl ShapedStore {
    pub fn new(inner: Arc<dyn NeuronStore>, shape: Shape) -> Self {
        ShapedStore { inner, shape }
    }
}

#[async_trait]
impl NeuronStore for ShapedStore {
    async fn neuron(&self, key: NeuronKey) -> Result<Arc<wire::NeuronRecord>, StoreError> {
        self.inner.neuron(key).await
    }

    async fn neuron_exists(&self, key: NeuronKey) -> Result<bool, StoreError> {
        self.inner.neuron_exists(key).await
    }

    async fn layers(&self) -> Result<Vec<u32>, StoreError> {
        Ok(self.shape.layers())
    }

    async fn neurons(&self, layer: u32) -> Result<Vec<u32>, StoreError> {
        self.shape
            .neurons(layer)
            .ok_or_else(|| StoreError::NotFound {
                path: format!("layer {layer} of the declared shape ({})", self.shape),
            })
    }
}

#[cfg(test)]
mod tests {
    use object_store::{memory::InMemory, path::Path};

    use super::*;
    use crate::store::ObjectNeuronStore;
    use activations_format::layout::Layout;

    #[tokio::test]
    async fn listings_come_from_the_shape_and_reads_from_the_store() {
        let unlistable =
            ObjectNeuronStore::new(Arc::new(InMemory::new()), Path::default(), Layout::Flat)
                .with_location("http://example.org/data")
                .without_listing("a web server cannot list");
        let err = unlistable.layers().await.unwrap_err();
        assert!(
            matches!(err, StoreError::ListingUnavailable { .. }),
            "{err}"
        );
        let shaped = ShapedStore::new(Arc::new(unlistable), Shape::uniform(2, 3).unwrap());
        assert_eq!(shaped.layers().await.unwrap(), vec![0, 1]);
        assert_eq!(shaped.neurons(1).await.unwrap(), vec![0, 1, 2]);
        let missing_layer = shaped.neurons(2).await.unwrap_err();
        assert!(
            missing_layer.to_string().contains("layer 2"),
            "{missing_layer}"
        );
        let missing_file = shaped.neuron(NeuronKey::new(0, 0)).await.unwrap_err();
        assert!(matches!(missing_file, StoreError::NotFound { path } if path == "0/0.json"));
    }
}
