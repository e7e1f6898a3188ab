//! [`NeuronStore`] over an `object_store` backend.

use std::{sync::Arc, time::Duration};

use activations_proto::wire;
use async_trait::async_trait;
use object_store::{ListResult, ObjectStore, ObjectStoreExt, path::Path};

use activations_format::{
    layout::{self, Layout},
    neuron::NeuronKey,
};

use super::{NeuronStore, StoreError, readers};

/// `relative` (a layout's `/`-separated path, such as `12/345.json`) below `root`.
pub fn below(root: &Path, relative: &str) -> Path {
    root.parts().chain(Path::from(relative).parts()).collect()
}

/// Neuron files below `root` in an object store, arranged in `layout`.
#[derive(Debug, Clone)]
pub struct ObjectNeuronStore {
    store: Arc<dyn ObjectStore>,
    root: Path,
    layout: Layout,
    /// Names the store in errors (the dataset's URI).
    location: String,
    /// Where the dataset's files are, as errors name them: a file's path in an error is given
    /// below it (`/data/xl/1/1.json`, not `1/1.json`), so a wrong root shows. `None`: paths
    /// inside the store.
    shown_root: Option<String>,
    /// Why listing is impossible, for stores that cannot list (plain web servers).
    no_listing: Option<String>,
    /// Bound on one read, retries included.
    read_deadline: Option<Duration>,
    /// The store is a local `LocalFileSystem`: its files are read on the reader threads.
    local: bool,
    /// Larger neuron files are refused without being read whole.
    max_file_bytes: u64,
}

impl ObjectNeuronStore {
    pub fn new(store: Arc<dyn ObjectStore>, root: Path, layout: Layout) -> Self {
        let location = format!("/{root}");
        ObjectNeuronStore {
            store,
            root,
            layout,
            location,
            shown_root: None,
            no_listing: None,
            read_deadline: None,
            local: false,
            max_file_bytes: super::DEFAULT_MAX_NEURON_FILE_BYTES,
        }
    }

    /// Marks the store as local files (`LocalFileSystem`), read where they are parsed: one
    /// hand-off to a reader thread for opening, reading and parsing a file (see the store's
    /// `readers` module).
    pub fn with_local_reads(mut self) -> Self {
        self.local = true;
        self
    }

    /// Refuses neuron files larger than `max_bytes`, from their size, before reading them.
    pub fn with_max_file_bytes(mut self, max_bytes: u64) -> Self {
        self.max_file_bytes = max_bytes;
        self
    }

    /// Names the store as `location` (the dataset's URI, as it may be shown) in errors, and
    /// gives the paths of files in errors below it.
    pub fn with_location(mut self, location: impl Into<String>) -> Self {
        self.location = location.into();
        let base = self.location.split('?').next().unwrap_or_default();
        self.shown_root = Some(base.trim_end_matches('/').to_string());
        self
    }

    /// `error` with its path below the dataset's location, when there is one.
    fn locate(&self, error: StoreError) -> StoreError {
        let Some(shown_root) = &self.shown_root else {
            return error;
        };
        let root = self.root.as_ref();
        error.map_path(|path| {
            let relative = match path.strip_prefix(root) {
                Some(rest) if !root.is_empty() => rest.trim_start_matches('/'),
                _ => path.as_str(),
            };
            format!("{shown_root}/{relative}")
        })
    }

    /// Marks the store as unable to list: `layers` and `neurons` then fail with
    /// [`StoreError::ListingUnavailable`] giving `reason`, without asking the store.
    pub fn without_listing(mut self, reason: impl Into<String>) -> Self {
        self.no_listing = Some(reason.into());
        self
    }

    /// Whether the store can be asked for listings (a plain web server cannot).
    pub fn can_list(&self) -> bool {
        self.no_listing.is_none()
    }

    /// Fails a neuron read that takes longer than `deadline` as unavailable.
    pub fn with_read_deadline(mut self, deadline: Duration) -> Self {
        self.read_deadline = Some(deadline);
        self
    }

    /// Detects the layout by listing the root: `None` if the root has neither numeric layer
    /// directories nor a `neurons` directory.
    pub async fn detect_layout(
        store: &dyn ObjectStore,
        root: &Path,
    ) -> Result<Option<Layout>, StoreError> {
        let listing = list_dir(store, root).await?;
        Ok(Layout::detect(
            listing.common_prefixes.iter().filter_map(|p| p.filename()),
        ))
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }
}

async fn list_dir(store: &dyn ObjectStore, dir: &Path) -> Result<ListResult, StoreError> {
    // An empty path lists the store's top level.
    let prefix = (!dir.as_ref().is_empty()).then_some(dir);
    store
        .list_with_delimiter(prefix)
        .await
        .map_err(|e| StoreError::from_object_store(dir, e))
}

impl ObjectNeuronStore {
    /// Lists `dir`, turning a refused listing (anonymous access, a missing container) into
    /// [`StoreError::ListingUnavailable`]: the files may still be readable one by one.
    async fn list(&self, dir: &Path) -> Result<ListResult, StoreError> {
        if let Some(reason) = &self.no_listing {
            return Err(StoreError::ListingUnavailable {
                location: self.location.clone(),
                reason: reason.clone(),
            });
        }
        list_dir(self.store.as_ref(), dir)
            .await
            .map_err(|e| match e {
                StoreError::Denied { source, .. } => StoreError::ListingUnavailable {
                    location: self.location.clone(),
                    reason: format!("the store refused to list it: {source}"),
                },
                StoreError::NotFound { .. } => StoreError::ListingUnavailable {
                    location: self.location.clone(),
                    reason: "the store answered \"not found\" to a listing; anonymous readers \
                             of a container that allows only blob access get this answer"
                        .to_string(),
                },
                other => other,
            })
    }

    /// Runs one storage call on `path`, failing it as unavailable past the read deadline.
    async fn bounded<T>(
        &self,
        path: &Path,
        call: impl Future<Output = object_store::Result<T>>,
    ) -> Result<T, StoreError> {
        let Some(deadline) = self.read_deadline else {
            return call
                .await
                .map_err(|e| StoreError::from_object_store(path, e));
        };
        match tokio::time::timeout(deadline, call).await {
            Ok(result) => result.map_err(|e| StoreError::from_object_store(path, e)),
            Err(_) => Err(StoreError::Unavailable {
                path: path.to_string(),
                source: Arc::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no complete answer within {deadline:?}"),
                )),
            }),
        }
    }
}

impl ObjectNeuronStore {
    async fn read(&self, key: NeuronKey) -> Result<Arc<wire::NeuronRecord>, StoreError> {
        let path = below(&self.root, &self.layout.neuron_file(key));
        let parsed = if self.local {
            let read = readers::read_local(self.store.clone(), path.clone(), self.max_file_bytes);
            match read.await {
                Ok(read) => Ok(read?),
                Err(failed) => Err(failed),
            }
        } else {
            let read = self
                .bounded(&path, async {
                    let found = self.store.get(&path).await?;
                    match super::too_large(found.meta.size, self.max_file_bytes) {
                        Some(reason) => Ok(Err(reason)),
                        None => Ok(Ok(found.bytes().await?)),
                    }
                })
                .await?;
            let bytes = read.map_err(|reason| StoreError::Unreadable {
                path: path.to_string(),
                reason,
            })?;
            readers::parse(bytes).await
        };
        match parsed {
            Ok(Ok(record)) => Ok(Arc::new(record)),
            Ok(Err(source)) => Err(StoreError::Corrupt {
                path: path.to_string(),
                source,
            }),
            Err(failed) => Err(StoreError::Internal {
                path: path.to_string(),
                detail: failed.to_string(),
            }),
        }
    }

    async fn exists(&self, key: NeuronKey) -> Result<bool, StoreError> {
        let path = below(&self.root, &self.layout.neuron_file(key));
        match self.bounded(&path, self.store.head(&path)).await {
            Ok(_) => Ok(true),
            Err(StoreError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn list_layers(&self) -> Result<Vec<u32>, StoreError> {
        let listing = self
            .list(&below(&self.root, self.layout.layers_dir()))
            .await?;
        let mut layers: Vec<u32> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().and_then(layout::layer_index))
            .collect();
        layers.sort_unstable();
        layers.dedup();
        Ok(layers)
    }

    async fn list_neurons(&self, layer: u32) -> Result<Vec<u32>, StoreError> {
        let dir = below(&self.root, &self.layout.layer_dir(layer));
        let listing = self.list(&dir).await?;
        if listing.objects.is_empty() && listing.common_prefixes.is_empty() {
            // The trailing slash says it is the layer's directory that is missing, not a file.
            return Err(StoreError::NotFound {
                path: format!("{dir}/"),
            });
        }
        let mut neurons: Vec<u32> = listing
            .objects
            .iter()
            .filter_map(|o| o.location.filename().and_then(layout::neuron_index))
            .collect();
        neurons.sort_unstable();
        neurons.dedup();
        Ok(neurons)
    }
}

/// The store's answers, with the paths in its errors below the dataset's location.
#[async_trait]
impl NeuronStore for ObjectNeuronStore {
    async fn neuron(&self, key: NeuronKey) -> Result<Arc<wire::NeuronRecord>, StoreError> {
        self.read(key).await.map_err(|e| self.locate(e))
    }

    async fn neuron_exists(&self, key: NeuronKey) -> Result<bool, StoreError> {
        self.exists(key).await.map_err(|e| self.locate(e))
    }

    async fn layers(&self) -> Result<Vec<u32>, StoreError> {
        self.list_layers().await.map_err(|e| self.locate(e))
    }

    async fn neurons(&self, layer: u32) -> Result<Vec<u32>, StoreError> {
        self.list_neurons(layer).await.map_err(|e| self.locate(e))
    }
}

#[cfg(test)]
mod tests {
    use object_store::{PutPayload, memory::InMemory};

    use super::*;

    const FIXTURE: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../data/gpt2-xl-sample/collated-activations/1/1.json"
    ));

    #[test]
    fn layout_paths_are_placed_below_the_root() {
        let key = NeuronKey::new(12, 345);
        let root = Path::from("data/collated-activations");
        assert_eq!(
            below(&root, &Layout::Neurons.neuron_file(key)).as_ref(),
            "data/collated-activations/neurons/12/345.json"
        );
        assert_eq!(
            below(&root, Layout::Flat.layers_dir()).as_ref(),
            "data/collated-activations"
        );
        assert_eq!(
            below(
                &Path::default(),
                &Layout::Flat.neuron_file(NeuronKey::new(0, 1))
            )
            .as_ref(),
            "0/1.json",
            "an empty root places files at the top"
        );
    }

    async fn store_with(files: &[&str]) -> Arc<InMemory> {
        let store = Arc::new(InMemory::new());
        for file in files {
            store
                .put(&Path::from(*file), PutPayload::from_static(FIXTURE))
                .await
                .unwrap();
        }
        store
    }

    #[tokio::test]
    async fn lists_numeric_layers_and_neurons_in_numeric_order() {
        let store = store_with(&[
            "root/10/2.json",
            "root/9/10.json",
            "root/9/9.json",
            "root/9/notes.txt",
            "root/tmp/1.json",
        ])
        .await;
        let neurons = ObjectNeuronStore::new(store, Path::from("root"), Layout::Flat);
        assert_eq!(neurons.layers().await.unwrap(), vec![9, 10]);
        assert_eq!(neurons.neurons(9).await.unwrap(), vec![9, 10]);
        assert!(matches!(
            neurons.neurons(11).await,
            Err(StoreError::NotFound { path }) if path == "root/11/"
        ));
    }

    #[tokio::test]
    async fn reads_and_checks_neurons_in_the_neurons_layout() {
        let store = store_with(&["neurons/1/1.json"]).await;
        let detected = ObjectNeuronStore::detect_layout(store.as_ref(), &Path::default())
            .await
            .unwrap();
        assert_eq!(detected, Some(Layout::Neurons));
        let neurons = ObjectNeuronStore::new(store, Path::default(), Layout::Neurons);
        let record = neurons.neuron(NeuronKey::new(1, 1)).await.unwrap();
        assert_eq!(record.most_positive_activation_records.len(), 50);
        assert!(neurons.neuron_exists(NeuronKey::new(1, 1)).await.unwrap());
        assert!(!neurons.neuron_exists(NeuronKey::new(1, 2)).await.unwrap());
        assert!(matches!(
            neurons.neuron(NeuronKey::new(1, 2)).await,
            Err(StoreError::NotFound { path }) if path == "neurons/1/2.json"
        ));
    }

    #[tokio::test]
    async fn a_file_that_is_not_a_neuron_record_is_corrupt_with_its_position() {
        let store = Arc::new(InMemory::new());
        store
            .put(
                &Path::from("0/0.json"),
                PutPayload::from_static(&FIXTURE[..1000]),
            )
            .await
            .unwrap();
        let neurons = ObjectNeuronStore::new(store, Path::default(), Layout::Flat);
        let err = neurons.neuron(NeuronKey::new(0, 0)).await.unwrap_err();
        let StoreError::Corrupt { path, source } = &err else {
            panic!("expected Corrupt, got {err:?}");
        };
        assert_eq!(path, "0/0.json");
        assert!(
            source.offset <= 1000,
            "the position is inside the file: {source}"
        );
    }

    /// Local files take their own path (opened, read and parsed on one reader thread); it
    /// gives what the store's byte stream gives.
    #[tokio::test]
    async fn local_files_read_like_any_other_store() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("0");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("0.json"), FIXTURE).unwrap();
        std::fs::write(root.join("1.json"), &FIXTURE[..1000]).unwrap();
        let local =
            Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let local = ObjectNeuronStore::new(local, Path::default(), Layout::Flat);
        let memory = store_with(&["0/0.json"]).await;
        memory
            .put(
                &Path::from("0/1.json"),
                PutPayload::from_static(&FIXTURE[..1000]),
            )
            .await
            .unwrap();
        let memory = ObjectNeuronStore::new(memory, Path::default(), Layout::Flat);

        let from_disk = local.neuron(NeuronKey::new(0, 0)).await.unwrap();
        let from_memory = memory.neuron(NeuronKey::new(0, 0)).await.unwrap();
        assert_eq!(from_disk, from_memory);
        assert_eq!(from_disk.random_sample.len(), 50);

        let corrupt = |e: StoreError| match e {
            StoreError::Corrupt { path, source } => (path, source),
            other => panic!("expected Corrupt, got {other:?}"),
        };
        assert_eq!(
            corrupt(local.neuron(NeuronKey::new(0, 1)).await.unwrap_err()),
            corrupt(memory.neuron(NeuronKey::new(0, 1)).await.unwrap_err())
        );
        assert!(matches!(
            local.neuron(NeuronKey::new(0, 2)).await,
            Err(StoreError::NotFound { path }) if path == "0/2.json"
        ));
    }
}
