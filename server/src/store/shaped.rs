//! [`ShapedStore`]: answers listings from a declared [`Shape`] when the store cannot list.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use tokio::sync::OnceCell;

use activations_proto::wire;
use async_trait::async_trait;

use super::{NeuronStore, StoreError};
use activations_format::{neuron::NeuronKey, shape::Shape};

/// Reads neurons from `inner`, and lists them from it too while it can list; once it says it
/// cannot (a web server, an anonymous blob container, a refused listing), lists layers and
/// neurons from a declared shape (`?layers=&neurons=` or `manifest.json`). So a store that can
/// list is never contradicted by a stale manifest: listing, existence and reads agree. The
/// shape is trusted where it is used: a neuron it declares may still be missing, and reading
/// it is then `NotFound` as usual.
#[derive(Debug)]
pub struct ShapedStore {
    inner: Arc<dyn NeuronStore>,
    shape: Shape,
    /// Set once `inner` has said it cannot list: it is not asked again.
    unlistable: AtomicBool,
    /// Whether the shape's first neuron is missing, found out on the first missing file (and
    /// then the note for every missing file's error): a missing first neuron most likely
    /// means a wrong root.
    first_missing: OnceCell<Option<(NeuronKey, String)>>,
}

impl ShapedStore {
    pub fn new(inner: Arc<dyn NeuronStore>, shape: Shape) -> Self {
        ShapedStore {
            inner,
            shape,
            unlistable: AtomicBool::new(false),
            first_missing: OnceCell::new(),
        }
    }

    /// The shape's first neuron and its path, if it is missing: asked of the store once, on the
    /// first missing file, so a dataset whose files are there costs no request.
    async fn first_missing(&self) -> Option<&(NeuronKey, String)> {
        self.first_missing
            .get_or_init(|| async {
                let (layer, neuron) = self.shape.first_neuron()?;
                let first = NeuronKey::new(layer, neuron);
                match self.inner.neuron(first).await {
                    Err(StoreError::NotFound { path }) => {
                        tracing::warn!(
                            first = %path,
                            "the declared shape's first neuron is missing: the dataset's root \
                             or layout is most likely wrong"
                        );
                        Some((first, path))
                    }
                    _ => None,
                }
            })
            .await
            .as_ref()
    }

    /// Marks `inner` as a store known not to list (a web server): the shape is used from the
    /// start.
    pub fn unlistable(self) -> Self {
        self.unlistable.store(true, Ordering::Relaxed);
        self
    }

    /// `inner`'s listing, or `None` if it cannot list (and then never asks it again).
    async fn listed<T>(
        &self,
        listing: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<Option<T>, StoreError> {
        if self.unlistable.load(Ordering::Relaxed) {
            return Ok(None);
        }
        match listing.await {
            Ok(listed) => Ok(Some(listed)),
            Err(StoreError::ListingUnavailable { .. } | StoreError::Denied { .. }) => {
                self.unlistable.store(true, Ordering::Relaxed);
                Ok(None)
            }
            Err(other) => Err(other),
        }
    }

    fn in_shape(&self, key: NeuronKey) -> bool {
        self.shape.contains(key.layer, key.neuron)
    }
}

#[async_trait]
impl NeuronStore for ShapedStore {
    async fn neuron(&self, key: NeuronKey) -> Result<Arc<wire::NeuronRecord>, StoreError> {
        match self.inner.neuron(key).await {
            // A missing file the shape (in use: the store cannot list) does not declare, or a
            // dataset whose shape looked wrong when it was opened: say so.
            Err(StoreError::NotFound { path }) if self.unlistable.load(Ordering::Relaxed) => {
                let mut path = path;
                if !self.in_shape(key) {
                    path = format!(
                        "{path} (not in the dataset's declared shape: {})",
                        self.shape
                    );
                }
                if let Some((first, first_path)) = self.first_missing().await {
                    let which = if *first == key {
                        "it is the declared shape's first neuron".to_string()
                    } else {
                        format!("the declared shape's first neuron is missing too, {first_path}")
                    };
                    path = format!(
                        "{path} ({which}: the dataset's root or layout is most likely wrong; \
                         check its URI)"
                    );
                }
                Err(StoreError::NotFound { path })
            }
            read => read,
        }
    }

    async fn neuron_exists(&self, key: NeuronKey) -> Result<bool, StoreError> {
        self.inner.neuron_exists(key).await
    }

    async fn layers(&self) -> Result<Vec<u32>, StoreError> {
        match self.listed(self.inner.layers()).await? {
            Some(listed) => Ok(listed),
            None => Ok(self.shape.layers()),
        }
    }

    async fn neurons(&self, layer: u32) -> Result<Vec<u32>, StoreError> {
        if let Some(listed) = self.listed(self.inner.neurons(layer)).await? {
            return Ok(listed);
        }
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
        let shaped =
            ShapedStore::new(Arc::new(unlistable), Shape::uniform(2, 3).unwrap()).unlistable();
        assert_eq!(shaped.layers().await.unwrap(), vec![0, 1]);
        assert_eq!(shaped.neurons(1).await.unwrap(), vec![0, 1, 2]);
        let missing_layer = shaped.neurons(2).await.unwrap_err();
        assert!(
            missing_layer.to_string().contains("layer 2"),
            "{missing_layer}"
        );
        let missing_file = shaped.neuron(NeuronKey::new(0, 0)).await.unwrap_err();
        assert!(
            matches!(&missing_file, StoreError::NotFound { path }
                if path.starts_with("http://example.org/data/0/0.json (it is the declared shape's first neuron: the dataset's root or layout is most likely wrong")),
            "{missing_file}"
        );
        let outside = shaped.neuron(NeuronKey::new(1, 7)).await.unwrap_err();
        assert!(
            outside
                .to_string()
                .contains("not in the dataset's declared shape: 2 layers of 3"),
            "{outside}"
        );
    }

    #[tokio::test]
    async fn a_store_that_can_list_is_listed_whatever_the_shape() {
        let store = Arc::new(InMemory::new());
        for file in ["0/0.json", "0/1.json", "0/2.json"] {
            object_store::ObjectStoreExt::put(
                store.as_ref(),
                &Path::from(file),
                object_store::PutPayload::from_static(b"{}"),
            )
            .await
            .unwrap();
        }
        let listable = ObjectNeuronStore::new(store, Path::default(), Layout::Flat);
        // A stale manifest that knows only two of the three files.
        let shaped = ShapedStore::new(Arc::new(listable), Shape::uniform(1, 2).unwrap());
        assert_eq!(shaped.neurons(0).await.unwrap(), vec![0, 1, 2]);
        assert_eq!(shaped.layers().await.unwrap(), vec![0]);
    }
}
