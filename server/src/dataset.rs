//! The datasets a server serves: named neuron stores, opened from `NAME=URI` settings.

use std::{fmt, path::PathBuf, str::FromStr, sync::Arc};

use object_store::{ObjectStore, local::LocalFileSystem, memory::InMemory, path::Path};

use crate::{
    error::ServiceError,
    layout::{Layout, LayoutChoice},
    store::{NeuronStore, ObjectNeuronStore, StoreError},
};

/// Name of the dataset served when no `--dataset` is given.
pub const BUNDLED_NAME: &str = "gpt2-xl-sample";
/// URI of the bundled sample: the public GPT-2 XL file of layer 1, neuron 1, compiled into the
/// server so it runs anywhere without data.
pub const BUNDLED_URI: &str = "bundled:gpt2-xl-sample";
const BUNDLED_FILES: &[(&str, &[u8])] = &[(
    "1/1.json",
    include_bytes!("../../data/gpt2-xl-sample/collated-activations/1/1.json"),
)];

/// One `--dataset NAME=URI` setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetSpec {
    pub name: String,
    pub uri: String,
}

impl FromStr for DatasetSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, uri) = s
            .split_once('=')
            .ok_or_else(|| format!("expected NAME=URI, got {s:?}"))?;
        let valid_name = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid_name {
            return Err(format!(
                "dataset name {name:?} must be non-empty and use only letters, digits, '-', '_' and '.'"
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
    #[error("dataset {name:?}: listing its root to detect the layout failed: {source}")]
    Detect {
        name: String,
        #[source]
        source: StoreError,
    },
}

/// A named neuron store.
#[derive(Debug)]
pub struct Dataset {
    pub name: String,
    pub uri: String,
    pub layout: Layout,
    pub store: Arc<dyn NeuronStore>,
}

impl Dataset {
    /// Opens `spec.uri`: a local directory (`/path`, `relative/path`, `file:///path`) or the
    /// bundled sample. `LayoutChoice::Auto` lists the root once to tell the layouts apart and
    /// falls back to flat, the layout `load_neuron` reads.
    pub async fn open(spec: &DatasetSpec, layout: LayoutChoice) -> Result<Dataset, ConfigError> {
        let store = object_store_for(spec).await?;
        let root = Path::default();
        let layout = match layout {
            LayoutChoice::Fixed(layout) => layout,
            LayoutChoice::Auto => ObjectNeuronStore::detect_layout(store.as_ref(), &root)
                .await
                .map_err(|source| ConfigError::Detect {
                    name: spec.name.clone(),
                    source,
                })?
                .unwrap_or_else(|| {
                    tracing::warn!(
                        dataset = %spec.name,
                        "no layer directories found below the root; assuming the flat layout"
                    );
                    Layout::Flat
                }),
        };
        Ok(Dataset {
            name: spec.name.clone(),
            uri: spec.uri.clone(),
            layout,
            store: Arc::new(ObjectNeuronStore::new(store, root, layout)),
        })
    }
}

async fn object_store_for(spec: &DatasetSpec) -> Result<Arc<dyn ObjectStore>, ConfigError> {
    let unsupported = |reason: &str| ConfigError::UnsupportedUri {
        name: spec.name.clone(),
        uri: spec.uri.clone(),
        reason: reason.to_string(),
    };
    let uri = spec.uri.as_str();
    if uri == BUNDLED_URI {
        let store = InMemory::new();
        for (path, bytes) in BUNDLED_FILES {
            object_store::ObjectStoreExt::put(
                &store,
                &Path::from(*path),
                object_store::PutPayload::from_static(bytes),
            )
            .await
            .expect("an in-memory put cannot fail");
        }
        return Ok(Arc::new(store));
    }
    let directory = if uri.starts_with("file:") {
        url::Url::parse(uri)
            .ok()
            .and_then(|url| url.to_file_path().ok())
            .ok_or_else(|| unsupported("expected file:///absolute/path"))?
    } else if uri.contains("://") {
        return Err(unsupported(
            "this server reads local directories (/path or file:///path) and the bundled sample",
        ));
    } else {
        PathBuf::from(uri)
    };
    let directory_error = |reason: String| ConfigError::Directory {
        name: spec.name.clone(),
        path: directory.clone(),
        reason,
    };
    let canonical = directory
        .canonicalize()
        .map_err(|e| directory_error(e.to_string()))?;
    if !canonical.is_dir() {
        return Err(directory_error("not a directory".to_string()));
    }
    let store =
        LocalFileSystem::new_with_prefix(&canonical).map_err(|e| directory_error(e.to_string()))?;
    Ok(Arc::new(store))
}

/// Every dataset of a server; the first is the default.
#[derive(Debug, Clone)]
pub struct Datasets {
    entries: Arc<[Arc<Dataset>]>,
}

impl Datasets {
    /// Opens each spec in order; with none, the bundled sample.
    pub async fn open(specs: &[DatasetSpec], layout: LayoutChoice) -> Result<Self, ConfigError> {
        let bundled = [DatasetSpec {
            name: BUNDLED_NAME.to_string(),
            uri: BUNDLED_URI.to_string(),
        }];
        let specs = if specs.is_empty() {
            &bundled[..]
        } else {
            specs
        };
        let mut entries = Vec::with_capacity(specs.len());
        for spec in specs {
            entries.push(Dataset::open(spec, layout).await?);
        }
        Self::new(entries)
    }

    /// The given datasets; the first is the default. At least one is required.
    pub fn new(entries: Vec<Dataset>) -> Result<Self, ConfigError> {
        if entries.is_empty() {
            return Err(ConfigError::NoDatasets);
        }
        for (i, dataset) in entries.iter().enumerate() {
            if entries[..i].iter().any(|d| d.name == dataset.name) {
                return Err(ConfigError::DuplicateName {
                    name: dataset.name.clone(),
                });
            }
        }
        Ok(Datasets {
            entries: entries.into_iter().map(Arc::new).collect(),
        })
    }

    /// The dataset a request names; the empty name is the default dataset.
    pub fn get(&self, name: &str) -> Result<&Arc<Dataset>, ServiceError> {
        if name.is_empty() {
            return Ok(self.default());
        }
        self.entries
            .iter()
            .find(|d| d.name == name)
            .ok_or_else(|| ServiceError::UnknownDataset {
                name: name.to_string(),
                known: self.entries.iter().map(|d| d.name.clone()).collect(),
            })
    }

    pub fn default(&self) -> &Arc<Dataset> {
        &self.entries[0]
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Dataset>> {
        self.entries.iter()
    }
}

impl fmt::Display for Datasets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}={} ({} layout)", d.name, d.uri, d.layout)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::neuron::NeuronKey;

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
    async fn no_dataset_serves_the_bundled_sample() {
        let datasets = Datasets::open(&[], LayoutChoice::Auto).await.unwrap();
        let sample = datasets.get("").unwrap();
        assert_eq!(sample.name, BUNDLED_NAME);
        assert_eq!(sample.layout, Layout::Flat);
        assert_eq!(sample.store.layers().await.unwrap(), vec![1]);
        let record = sample.store.neuron(NeuronKey::new(1, 1)).await.unwrap();
        assert_eq!(record.random_sample.len(), 50);
    }

    #[tokio::test]
    async fn local_directories_open_by_path_and_file_url_with_detected_layout() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("neurons/3")).unwrap();
        let path = dir.path().to_str().unwrap();
        let by_path = Dataset::open(&spec("a", path), LayoutChoice::Auto)
            .await
            .unwrap();
        assert_eq!(by_path.layout, Layout::Neurons);
        let by_url = Dataset::open(&spec("b", &format!("file://{path}")), LayoutChoice::Auto)
            .await
            .unwrap();
        assert_eq!(by_url.store.layers().await.unwrap(), vec![3]);
        let forced = Dataset::open(&spec("c", path), LayoutChoice::Fixed(Layout::Flat))
            .await
            .unwrap();
        assert_eq!(forced.layout, Layout::Flat);
    }

    #[tokio::test]
    async fn bad_locations_fail_at_startup_naming_the_dataset() {
        let missing = Dataset::open(&spec("gone", "/no/such/dir"), LayoutChoice::Auto)
            .await
            .unwrap_err();
        assert!(
            matches!(missing, ConfigError::Directory { .. }),
            "{missing}"
        );
        assert!(missing.to_string().contains("\"gone\""), "{missing}");
        let scheme = Dataset::open(&spec("x", "ftp://host/data"), LayoutChoice::Auto)
            .await
            .unwrap_err();
        assert!(
            matches!(scheme, ConfigError::UnsupportedUri { .. }),
            "{scheme}"
        );
    }

    #[tokio::test]
    async fn unknown_dataset_lists_the_known_ones() {
        let datasets = Datasets::open(&[], LayoutChoice::Auto).await.unwrap();
        let err = datasets.get("nope").unwrap_err();
        assert!(err.to_string().contains(BUNDLED_NAME), "{err}");
    }

    #[tokio::test]
    async fn duplicate_dataset_names_are_refused() {
        let same = [spec("a", BUNDLED_URI), spec("a", BUNDLED_URI)];
        let err = Datasets::open(&same, LayoutChoice::Auto).await.unwrap_err();
        assert!(matches!(err, ConfigError::DuplicateName { .. }), "{err}");
    }
}
