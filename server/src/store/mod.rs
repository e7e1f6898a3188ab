//! Reading neurons from storage.
//!
//! [`NeuronStore`] is the one trait the service reads through. [`ObjectNeuronStore`] implements
//! it over any `object_store` backend (local disk today; Azure, S3, GCS and HTTP are backends of
//! the same crate). Wrappers such as a cache implement the same trait, so the service never
//! knows which it has; the one that records storage metrics is
//! [`ObservedStore`](crate::metrics::ObservedStore), beside the metrics it records.

mod cache;
mod local;
mod object;
mod readers;
mod shaped;

use std::sync::Arc;

use activations_proto::wire;
use async_trait::async_trait;

use activations_format::{neuron::NeuronKey, neuron_json::ParseError};

use crate::{integrity::ChecksumMismatch, upstream};

pub use cache::{CacheConfig, CacheStats, CachedStore, heap_bytes};
pub use local::{Links, LocalDir};
pub use object::{ObjectNeuronStore, below};
pub use readers::saturated as readers_saturated;
pub use shaped::ShapedStore;

/// The default of `--max-neuron-file-bytes`: the public GPT-2 XL files are about 230 KB each,
/// so this leaves room for far larger records while bounding what one read may take.
pub const DEFAULT_MAX_NEURON_FILE_BYTES: u64 = 64 << 20;

/// Why a file of `size` bytes is not read under a limit of `max` bytes, if it is not.
pub(crate) fn too_large(size: u64, max: u64) -> Option<String> {
    (size > max).then(|| {
        format!(
            "it is {size} bytes, above this server's limit of {max} bytes (--max-neuron-file-bytes)"
        )
    })
}

/// A source of neuron records, addressed by layer and neuron index.
#[async_trait]
pub trait NeuronStore: Send + Sync + std::fmt::Debug + 'static {
    /// The parsed record of one neuron. Shared, because it is large and read-only.
    async fn neuron(&self, key: NeuronKey) -> Result<Arc<wire::NeuronRecord>, StoreError>;

    /// Whether the neuron's file exists. A missing file is `Ok(false)`, not an error.
    async fn neuron_exists(&self, key: NeuronKey) -> Result<bool, StoreError>;

    /// Layer indices, ascending.
    async fn layers(&self) -> Result<Vec<u32>, StoreError>;

    /// Neuron indices of one layer, ascending. A layer with no neuron files is `NotFound`.
    async fn neurons(&self, layer: u32) -> Result<Vec<u32>, StoreError>;
}

/// An error from below the store (network, I/O), shared so that every caller waiting on one
/// read gets the same error.
pub type SharedError = Arc<dyn std::error::Error + Send + Sync>;

/// Why a store could not answer, by category. `path` is the location inside the store.
///
/// Cloneable: a cache hands one read's outcome to every caller that waited for it.
#[derive(Debug, Clone, thiserror::Error)]
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

    /// The store could not be read in time (I/O error, network, 5xx, timeout), after retries.
    /// Trying again later may work.
    #[error("reading {path} failed: {source}")]
    Unavailable {
        path: String,
        #[source]
        source: SharedError,
    },

    /// The store refused the server's credentials (HTTP 401/403). Retrying will not help;
    /// the server's storage settings must change.
    #[error("the storage refused access to {path}: {source}")]
    Denied {
        path: String,
        #[source]
        source: SharedError,
    },

    /// The store cannot list its contents (a plain web server, an anonymous blob container)
    /// and the dataset declares no shape.
    #[error(
        "{location} cannot be listed ({reason}); declare the dataset's shape with \
         ?layers=L&neurons=N in its URI, or put a manifest.json at its root"
    )]
    ListingUnavailable { location: String, reason: String },

    /// A bug in this server, not a property of the data or the store.
    #[error("reading {path} failed: {detail}")]
    Internal { path: String, detail: String },

    /// Something that is not a neuron file to read: not a regular file (a FIFO, which would
    /// block the reader, a directory, a device), or larger than the server's limit. Refused
    /// from its metadata, without opening or reading it.
    #[error("{path} cannot be read as a neuron file: {reason}")]
    Unreadable { path: String, reason: String },

    /// The body the store returned did not match the checksum it gave for it, in two reads
    /// (see [`crate::integrity`]). Never served, never cached.
    #[error("reading {path}: {source}, in two reads")]
    Mismatch {
        path: String,
        #[source]
        source: ChecksumMismatch,
    },
}

impl StoreError {
    /// This error with its path rewritten by `rewrite` (a listing's error, which names a
    /// location, not a path, is left as it is).
    pub(crate) fn map_path(mut self, rewrite: impl FnOnce(String) -> String) -> StoreError {
        match &mut self {
            StoreError::NotFound { path }
            | StoreError::Corrupt { path, .. }
            | StoreError::Unavailable { path, .. }
            | StoreError::Denied { path, .. }
            | StoreError::Internal { path, .. }
            | StoreError::Unreadable { path, .. }
            | StoreError::Mismatch { path, .. } => *path = rewrite(std::mem::take(path)),
            StoreError::ListingUnavailable { .. } => {}
        }
        self
    }

    pub(crate) fn from_object_store(
        path: &object_store::path::Path,
        error: object_store::Error,
    ) -> Self {
        let path = path.to_string();
        if let Some(refused @ local::Refused::NotRegular(_)) = local::Refused::of(&error) {
            return StoreError::Unreadable {
                path,
                reason: refused.to_string(),
            };
        }
        if let Some(mismatch) = mismatch_in(&error) {
            return StoreError::Mismatch {
                path,
                source: mismatch,
            };
        }
        match error {
            object_store::Error::NotFound { .. } => StoreError::NotFound { path },
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => StoreError::Denied {
                path,
                source: Arc::new(error),
            },
            // Some requests (listings) report every HTTP failure as `Generic`.
            source => match upstream::object_store_http_status(&source) {
                Some(401 | 403) => StoreError::Denied {
                    path,
                    source: Arc::new(source),
                },
                Some(404) => StoreError::NotFound { path },
                _ => StoreError::Unavailable {
                    path,
                    source: Arc::new(source),
                },
            },
        }
    }
}

/// The checksum mismatch somewhere in `error`'s causes, if it is one.
fn mismatch_in(error: &(dyn std::error::Error + 'static)) -> Option<ChecksumMismatch> {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(mismatch) = error.downcast_ref::<ChecksumMismatch>() {
            return Some(mismatch.clone());
        }
        cause = error.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generic(message: &str) -> object_store::Error {
        object_store::Error::Generic {
            store: "MicrosoftAzure",
            source: message.into(),
        }
    }

    #[test]
    fn listing_failures_are_classified_by_their_http_status() {
        let path = object_store::path::Path::from("data");
        let classify = |message: &str| StoreError::from_object_store(&path, generic(message));
        let forbidden = "Error performing list request: Error performing GET http://h/c in 3ms - \
                         Server returned non-2xx status code: 403 Forbidden: <Error/>";
        assert!(matches!(classify(forbidden), StoreError::Denied { .. }));
        let missing = "Server returned non-2xx status code: 404 Not Found: ";
        assert!(matches!(classify(missing), StoreError::NotFound { .. }));
        let busy = "Server returned non-2xx status code: 503 Service Unavailable: ";
        assert!(matches!(classify(busy), StoreError::Unavailable { .. }));
        let reset = "error sending request: connection reset by peer";
        assert!(matches!(classify(reset), StoreError::Unavailable { .. }));
    }
}
