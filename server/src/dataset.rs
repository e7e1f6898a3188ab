//! The datasets a server serves: named neuron stores, opened from `NAME=URI` settings.

use std::{fmt, path::PathBuf, str::FromStr, sync::Arc};

use object_store::{ObjectStore, ObjectStoreExt, path::Path};

use activations_format::{
    layout::{Layout, LayoutChoice},
    neuron::NeuronKey,
    shape::{MANIFEST_FILE, Shape},
};

use crate::{
    error::excerpt,
    location::{self, Backend, Location, StorageOptions},
    metrics::{Metrics, ObservedStore, StorageMetrics},
    redact::redact,
    store::{
        CacheConfig, CachedStore, DEFAULT_MAX_NEURON_FILE_BYTES, NeuronStore, ObjectNeuronStore,
        ShapedStore, StoreError, below,
    },
};

/// One `--dataset NAME=URI` setting. Its URI may carry credentials: it is shown only as
/// [`redact`] shows it, its `Debug` included.
#[derive(Clone, PartialEq, Eq)]
pub struct DatasetSpec {
    pub name: String,
    pub uri: String,
}

impl fmt::Debug for DatasetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatasetSpec")
            .field("name", &self.name)
            .field("uri", &redact(&self.uri))
            .finish()
    }
}

/// The longest dataset name, in bytes: a request naming a longer one is refused before
/// anything else is done with it.
pub const MAX_DATASET_NAME_BYTES: usize = 128;

/// Whether `name` can name a dataset: 1 to [`MAX_DATASET_NAME_BYTES`] ASCII letters, digits,
/// `-`, `_` and `.`.
pub fn is_dataset_name(name: &str) -> bool {
    (1..=MAX_DATASET_NAME_BYTES).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl FromStr for DatasetSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, uri) = s
            .split_once('=')
            .ok_or_else(|| format!("expected NAME=URI, got {s:?}"))?;
        if !is_dataset_name(name) {
            return Err(format!(
                "dataset name {} must be 1 to {MAX_DATASET_NAME_BYTES} letters, digits, '-', \
                 '_' and '.'",
                excerpt(name)
            ));
        }
        if uri.is_empty() {
            return Err(format!("dataset {name:?} has an empty URI"));
        }
        Ok(DatasetSpec {
            name: name.to_string(),
            uri: uri.to_string(),
        })
    }
}

/// Why the datasets could not be opened at startup.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("a server needs at least one dataset")]
    NoDatasets,
    #[error("dataset {name:?} is given twice")]
    DuplicateName { name: String },
    #[error("dataset {name:?}: {uri:?} is not a supported location ({reason})")]
    UnsupportedUri {
        name: String,
        uri: String,
        reason: String,
    },
    #[error("dataset {name:?}: directory {path} cannot be opened: {reason}")]
    Directory {
        name: String,
        path: PathBuf,
        reason: String,
    },
    #[error("dataset {name:?}: {uri:?} cannot be opened: {reason}")]
    Backend {
        name: String,
        uri: String,
        reason: String,
    },
    #[error("dataset {name:?}: {reason}")]
    Manifest { name: String, reason: String },
    #[error(
        "dataset {name:?}: no neuron file was found below {uri} (looked for {looked_for}){hint}"
    )]
    NoNeurons {
        name: String,
        uri: String,
        looked_for: String,
        hint: String,
    },
    #[error("listing {uri} failed: {source}")]
    Listing {
        uri: String,
        #[source]
        source: StoreError,
    },
    /// Not a configuration error: the store could not be read. The server starts without the
    /// dataset, answers its calls `UNAVAILABLE`, and keeps trying to open it.
    #[error("dataset {name:?}: {doing} failed: {cause}")]
    Unreachable {
        name: String,
        doing: String,
        cause: String,
    },
}

impl ConfigError {
    /// Whether the store, rather than the configuration, is at fault: it could not be reached
    /// or refused to answer. Such a dataset is opened again later; every other error is the
    /// configuration's, and stops the server's startup.
    pub fn is_store_fault(&self) -> bool {
        matches!(self, ConfigError::Unreachable { .. })
    }

    /// The fault of an [`ConfigError::Unreachable`] store: its message without the figures
    /// of the attempt (the words that begin with a digit: how long it took, how many retries),
    /// so that it is the same from one attempt to the next while the store fails the same way.
    pub fn store_fault(&self) -> Option<String> {
        match self {
            ConfigError::Unreachable { .. } => Some(
                self.to_string()
                    .split_whitespace()
                    .filter(|word| !word.starts_with(|c: char| c.is_ascii_digit()))
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            _ => None,
        }
    }

    pub(crate) fn unreachable(
        name: &str,
        doing: impl Into<String>,
        cause: impl fmt::Display,
    ) -> Self {
        ConfigError::Unreachable {
            name: name.to_string(),
            doing: doing.into(),
            cause: cause.to_string(),
        }
    }
}

/// Settings that apply to every dataset a server opens.
#[derive(Debug, Clone, Copy)]
pub struct OpenOptions {
    /// The `--layout` flag; a dataset's `?layout=` wins over it.
    pub layout: LayoutChoice,
    /// The in-memory cache of parsed neurons, shared out evenly between the datasets.
    pub cache: CacheConfig,
    /// Timeouts and retries for remote stores.
    pub storage: StorageOptions,
    /// `--max-neuron-file-bytes`: larger neuron files are refused without being read whole.
    pub max_neuron_file_bytes: u64,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            layout: LayoutChoice::default(),
            cache: CacheConfig::default(),
            storage: StorageOptions::default(),
            max_neuron_file_bytes: DEFAULT_MAX_NEURON_FILE_BYTES,
        }
    }
}

/// A named neuron store.
#[derive(Debug)]
pub struct Dataset {
    pub name: String,
    /// Its URI as it may be shown: credentials replaced (see [`redact`]).
    pub uri: String,
    pub layout: Layout,
    pub store: Arc<dyn NeuronStore>,
}

impl Dataset {
    /// Opens `spec.uri` (see [`crate::location`] for the URIs), finds its shape and layout,
    /// and stacks the store: storage, then the cache, then the declared shape if any.
    ///
    /// The shape comes from the URI or else a `manifest.json` at the root. The layout comes
    /// from the URI's `?layout=`, else a fixed `--layout`, else the manifest, else detection:
    /// a listing of the root, or where the store cannot list, a probe for the shape's first
    /// neuron in each layout; failing all, flat, the layout `load_neuron` reads.
    pub async fn open(spec: &DatasetSpec, options: &OpenOptions) -> Result<Dataset, ConfigError> {
        Self::open_with(spec, options, true, None).await
    }

    pub(crate) async fn open_with(
        spec: &DatasetSpec,
        options: &OpenOptions,
        use_declared_shape: bool,
        metrics: Option<&Metrics>,
    ) -> Result<Dataset, ConfigError> {
        let storage_metrics = metrics.map(|m| m.storage(&spec.name));
        let shown = redact(&spec.uri);
        let location =
            Location::parse(&spec.uri).map_err(|reason| ConfigError::UnsupportedUri {
                name: spec.name.clone(),
                uri: shown.clone(),
                reason,
            })?;
        let remote = !matches!(location.backend, Backend::Bundled | Backend::Local(_));
        let store = match &location.backend {
            Backend::Bundled => location::open_bundled().await,
            Backend::Local(path) => {
                location::open_local(path, location.links).map_err(|reason| {
                    ConfigError::Directory {
                        name: spec.name.clone(),
                        path: path.clone(),
                        reason,
                    }
                })?
            }
            backend => location::open_remote_with(
                backend,
                &options.storage,
                storage_metrics
                    .as_ref()
                    .map(StorageMetrics::http_connector)
                    .unwrap_or_default(),
            )
            .map_err(|reason| ConfigError::Backend {
                name: spec.name.clone(),
                uri: shown.clone(),
                reason,
            })?,
        };
        let root = location.prefix.clone();
        let (shape, manifest_layout) = match location.shape.clone() {
            _ if !use_declared_shape => (None, None),
            Some(shape) => (Some(shape), None),
            None => match read_manifest(store.as_ref(), &root).await {
                Ok(Some((shape, layout))) => (Some(shape), layout),
                Ok(None) => (None, None),
                Err(ManifestError::Invalid(reason)) => {
                    return Err(ConfigError::Manifest {
                        name: spec.name.clone(),
                        reason,
                    });
                }
                Err(ManifestError::Unreadable { path, cause }) => {
                    return Err(ConfigError::unreachable(
                        &spec.name,
                        format!("reading {path}"),
                        &cause,
                    ));
                }
            },
        };
        let fixed = match options.layout {
            LayoutChoice::Fixed(layout) => Some(layout),
            LayoutChoice::Auto => None,
        };
        let chosen = location.layout.or(fixed).or(manifest_layout);
        let layout = match chosen {
            Some(layout) => layout,
            None => {
                detect_layout(&spec.name, &location, store.as_ref(), &root, shape.as_ref()).await?
            }
        };
        if location.backend.can_list() {
            let looked_for = match chosen {
                Some(layout) => vec![layout],
                None => vec![Layout::Flat, Layout::Neurons],
            };
            check_not_empty(&spec.name, &shown, layout, &looked_for, &store, &root).await?;
        }
        let mut object = ObjectNeuronStore::new(store, root, layout)
            .with_location(&shown)
            .with_max_file_bytes(options.max_neuron_file_bytes);
        if remote {
            object = object.with_read_deadline(options.storage.read_deadline());
        } else {
            object = object.with_local_reads();
        }
        if !location.backend.can_list() {
            object = object.without_listing("a plain web server cannot list its files");
        }
        tracing::info!(
            dataset = %spec.name,
            backend = %location.backend,
            prefix = %location.prefix,
            %layout,
            listing = %shape.as_ref().map_or_else(
                || "from the store".to_string(),
                |shape| format!("from the store, else the declared shape ({shape})"),
            ),
            "dataset opened"
        );
        let neurons = store_stack(
            &spec.name,
            object,
            shape,
            options.cache,
            storage_metrics.zip(metrics),
        );
        Ok(Dataset {
            name: spec.name.clone(),
            uri: shown,
            layout,
            store: neurons,
        })
    }
}

/// A dataset's stack of stores, from the top: [`ShapedStore`] (listings from a declared shape, if
/// there is one), [`CachedStore`], [`ObservedStore`] (storage metrics, with metrics) and
/// `object`, the files themselves. The observer sits below the cache, so it counts exactly the
/// reads that reach storage.
fn store_stack(
    name: &str,
    object: ObjectNeuronStore,
    shape: Option<Shape>,
    cache: CacheConfig,
    metrics: Option<(StorageMetrics, &Metrics)>,
) -> Arc<dyn NeuronStore> {
    let (storage, metrics) = metrics.unzip();
    let listable = object.can_list();
    let object: Arc<dyn NeuronStore> = match storage {
        Some(storage) => Arc::new(ObservedStore::new(Arc::new(object), storage)),
        None => Arc::new(object),
    };
    let cache = Arc::new(CachedStore::new(object, cache));
    if let Some(metrics) = metrics {
        metrics.watch_cache(name, &cache);
    }
    match shape {
        Some(shape) if listable => Arc::new(ShapedStore::new(cache, shape)),
        Some(shape) => Arc::new(ShapedStore::new(cache, shape).unlistable()),
        None => cache,
    }
}

/// Lists the store at `uri` and returns its shape and layout, as `manifest.json` records them.
/// A shape that the URI or an existing manifest declares is ignored: listing is the point.
pub async fn list_shape(uri: &str, options: &OpenOptions) -> Result<(Shape, Layout), ConfigError> {
    use futures::{StreamExt, TryStreamExt};

    let spec = DatasetSpec {
        name: "manifest".to_string(),
        uri: uri.to_string(),
    };
    let dataset = Dataset::open_with(&spec, options, false, None).await?;
    let listing_failed = |source| ConfigError::Listing {
        uri: redact(uri),
        source,
    };
    let layers = dataset.store.layers().await.map_err(listing_failed)?;
    let store = &dataset.store;
    let listed: Vec<(u32, Vec<u32>)> = futures::stream::iter(layers)
        .map(|layer| async move { Ok((layer, store.neurons(layer).await?)) })
        .buffered(8)
        .try_collect()
        .await
        .map_err(listing_failed)?;
    Ok((Shape::from_listing(listed), dataset.layout))
}

/// Why `manifest.json` gave no shape.
enum ManifestError {
    /// It is not a manifest: the configuration's fault.
    Invalid(String),
    /// It could not be read: the store's.
    Unreadable {
        path: Path,
        cause: object_store::Error,
    },
}

/// Reads `manifest.json` at the root: `Ok(None)` if there is none.
async fn read_manifest(
    store: &dyn ObjectStore,
    root: &Path,
) -> Result<Option<(Shape, Option<Layout>)>, ManifestError> {
    let path = root.clone().join(MANIFEST_FILE);
    let bytes = match store.get(&path).await {
        Ok(found) => found.bytes().await,
        Err(e) => Err(e),
    };
    match bytes {
        Ok(bytes) => Shape::from_manifest(&bytes)
            .map(Some)
            .map_err(|e| ManifestError::Invalid(format!("{path}: {e}"))),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(cause) => Err(ManifestError::Unreadable { path, cause }),
    }
}

/// Tells the layouts apart by listing the root, or by probing for the shape's first neuron
/// where listing is refused.
async fn detect_layout(
    name: &str,
    location: &Location,
    store: &dyn ObjectStore,
    root: &Path,
    shape: Option<&Shape>,
) -> Result<Layout, ConfigError> {
    if location.backend.can_list() {
        match ObjectNeuronStore::detect_layout(store, root).await {
            Ok(Some(layout)) => return Ok(layout),
            Ok(None) => {}
            Err(StoreError::NotFound { .. } | StoreError::Denied { .. }) => {}
            Err(cause) => {
                return Err(ConfigError::unreachable(
                    name,
                    "listing its root to detect the layout",
                    &cause,
                ));
            }
        }
    }
    if let Some((layer, neuron)) = shape.and_then(Shape::first_neuron) {
        let key = NeuronKey::new(layer, neuron);
        for layout in [Layout::Flat, Layout::Neurons] {
            let path = below(root, &layout.neuron_file(key));
            match store.head(&path).await {
                Ok(_) => return Ok(layout),
                Err(object_store::Error::NotFound { .. }) => {}
                // A store that does not answer must not make the guess below.
                Err(cause) => {
                    return Err(ConfigError::unreachable(
                        name,
                        format!("looking for {path} to detect the layout"),
                        &cause,
                    ));
                }
            }
        }
    }
    // A store that can be listed is then refused as empty, by `check_not_empty`; for one that
    // cannot, its reads of missing files say so (see `ShapedStore`).
    Ok(Layout::Flat)
}

/// Refuses a dataset whose store can be listed and holds no neuron file in `layout`: most
/// often a root one directory too high or too low. The refusal names the root, the layouts
/// `looked_for`, and the directories below the root that do hold neuron files, if any.
async fn check_not_empty(
    name: &str,
    shown: &str,
    layout: Layout,
    looked_for: &[Layout],
    store: &Arc<dyn ObjectStore>,
    root: &Path,
) -> Result<(), ConfigError> {
    let files = ObjectNeuronStore::new(store.clone(), root.clone(), layout);
    let store = store.as_ref();
    let layers = match files.layers().await {
        Ok(layers) => layers,
        Err(cause @ StoreError::Unavailable { .. }) => {
            return Err(ConfigError::unreachable(name, "listing its layers", &cause));
        }
        // Whether it is empty cannot be told; its calls will say what is wrong.
        Err(_) => return Ok(()),
    };
    if let Some(&first) = layers.first()
        && files.neurons(first).await.is_ok_and(|n| !n.is_empty())
    {
        return Ok(());
    }
    let base = shown
        .split('?')
        .next()
        .unwrap_or_default()
        .trim_end_matches('/');
    let below_root = list_directories(store, root).await;
    let mut holding = Vec::new();
    for directory in below_root.iter().take(20) {
        let path = below(root, directory);
        if let Ok(Some(found)) = ObjectNeuronStore::detect_layout(store, &path).await {
            holding.push(format!("{base}/{directory} (the {found} layout)"));
        }
    }
    let hint = if let Ok(Some(other)) = ObjectNeuronStore::detect_layout(store, root).await
        && other != layout
    {
        format!(
            "; the root holds the {other} layout, but this dataset's layout is set to {layout} \
             (by ?layout= or --layout)"
        )
    } else if !holding.is_empty() {
        format!(
            "; neuron files are below {}: point the dataset there, e.g. --dataset {name}={}",
            holding.join(", "),
            holding[0].split(' ').next().unwrap_or_default()
        )
    } else if below_root.is_empty() {
        "; it holds no directory at all".to_string()
    } else {
        let shown: Vec<&str> = below_root.iter().take(10).map(String::as_str).collect();
        format!("; the directories below it are: {}", shown.join(", "))
    };
    Err(ConfigError::NoNeurons {
        name: name.to_string(),
        uri: base.to_string(),
        looked_for: looked_for
            .iter()
            .map(|layout| match layout.layers_dir() {
                "" => format!("{base}/LAYER/NEURON.json"),
                dir => format!("{base}/{dir}/LAYER/NEURON.json"),
            })
            .collect::<Vec<_>>()
            .join(" and "),
        hint,
    })
}

/// The names of the directories right below `root` (none if it cannot be listed).
async fn list_directories(store: &dyn ObjectStore, root: &Path) -> Vec<String> {
    let prefix = (!root.as_ref().is_empty()).then_some(root);
    match store.list_with_delimiter(prefix).await {
        Ok(listing) => listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(layout: Layout) -> OpenOptions {
        OpenOptions {
            layout: LayoutChoice::Fixed(layout),
            ..OpenOptions::default()
        }
    }

    fn spec(name: &str, uri: &str) -> DatasetSpec {
        DatasetSpec {
            name: name.into(),
            uri: uri.into(),
        }
    }

    #[test]
    fn dataset_spec_parses_name_and_uri() {
        assert_eq!(
            "xl=file:///data/a=b".parse(),
            Ok(spec("xl", "file:///data/a=b"))
        );
        assert!("no-equals-sign".parse::<DatasetSpec>().is_err());
        assert!("=/data".parse::<DatasetSpec>().is_err());
        assert!("bad name=/data".parse::<DatasetSpec>().is_err());
        assert!("x=".parse::<DatasetSpec>().is_err());
    }

    #[tokio::test]
    async fn local_directories_open_by_path_and_file_url_with_detected_layout() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("neurons/3")).unwrap();
        std::fs::write(dir.path().join("neurons/3/0.json"), b"{}").unwrap();
        let path = dir.path().to_str().unwrap();
        let by_path = Dataset::open(&spec("a", path), &OpenOptions::default())
            .await
            .unwrap();
        assert_eq!(by_path.layout, Layout::Neurons);
        let by_url = Dataset::open(
            &spec("b", &format!("file://{path}")),
            &OpenOptions::default(),
        )
        .await
        .unwrap();
        assert_eq!(by_url.store.layers().await.unwrap(), vec![3]);
        // A layout forced on files of the other is refused, saying so.
        let forced = Dataset::open(&spec("c", path), &fixed(Layout::Flat))
            .await
            .unwrap_err()
            .to_string();
        assert!(forced.contains("layout is set to flat"), "{forced}");
    }

    #[tokio::test]
    async fn a_listable_dataset_without_neuron_files_is_refused_naming_where_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("collated-activations/5");
        std::fs::create_dir_all(&nested).unwrap();
        std::fs::write(nested.join("1.json"), b"{}").unwrap();
        let root = dir.path().to_str().unwrap();
        let refused = Dataset::open(&spec("xl", root), &OpenOptions::default())
            .await
            .unwrap_err()
            .to_string();
        for said in [
            format!("no neuron file was found below {root}"),
            format!("{root}/LAYER/NEURON.json and {root}/neurons/LAYER/NEURON.json"),
            format!("--dataset xl={root}/collated-activations"),
        ] {
            assert!(refused.contains(&said), "{said} missing: {refused}");
        }
        let empty = tempfile::tempdir().unwrap();
        let refused = Dataset::open(
            &spec("e", empty.path().to_str().unwrap()),
            &OpenOptions::default(),
        )
        .await
        .unwrap_err();
        assert!(
            refused.to_string().contains("no directory at all"),
            "{refused}"
        );
    }

    #[test]
    fn a_store_fault_is_the_same_from_one_attempt_to_the_next() {
        let attempt = |took: &str, status: u16| ConfigError::Unreachable {
            name: "xl".into(),
            doing: "reading x/manifest.json".into(),
            cause: format!(
                "Error performing GET http://127.0.0.1:9000/x/manifest.json in {took}, after 1 \
                 retries - status code: {status}"
            ),
        };
        let fault = |error: ConfigError| error.store_fault().unwrap();
        assert_eq!(fault(attempt("52.1ms", 503)), fault(attempt("1.002s", 500)));
        assert!(fault(attempt("52ms", 503)).contains("http://127.0.0.1:9000/x/manifest.json"));
        let other = ConfigError::unreachable("xl", "listing its layers", "status code: 503");
        assert_ne!(fault(attempt("52ms", 503)), fault(other));
        let config = ConfigError::NoDatasets;
        assert!(!config.is_store_fault() && config.store_fault().is_none());
    }

    #[tokio::test]
    async fn bad_locations_fail_at_startup_naming_the_dataset() {
        let missing = Dataset::open(&spec("gone", "/no/such/dir"), &OpenOptions::default())
            .await
            .unwrap_err();
        assert!(
            matches!(missing, ConfigError::Directory { .. }),
            "{missing}"
        );
        assert!(missing.to_string().contains("\"gone\""), "{missing}");
        let scheme = Dataset::open(&spec("x", "ftp://host/data"), &OpenOptions::default())
            .await
            .unwrap_err();
        assert!(
            matches!(scheme, ConfigError::UnsupportedUri { .. }),
            "{scheme}"
        );
    }
}
