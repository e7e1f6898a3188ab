//! Every dataset of a server, and how each is opened: a dataset whose store cannot be read at
//! startup does not stop the server. It is served as unavailable (its calls answered
//! `UNAVAILABLE` with `RetryInfo` and the cause, its health `NOT_SERVING`) while a task of its
//! own keeps trying to open it, with exponential backoff, until it opens.
//!
//! Only a configuration error ([`ConfigError::is_store_fault`] false: a bad URI, an unknown
//! setting, a directory that does not exist, a root without neuron files) stops the startup.

use std::{
    fmt,
    sync::{Arc, Mutex, OnceLock, Weak},
    time::{Duration, Instant},
};

use backon::BackoffBuilder;
use tokio::sync::{oneshot, watch};

use crate::{
    dataset::{ConfigError, Dataset, DatasetSpec, MAX_DATASET_NAME_BYTES, OpenOptions},
    error::{ServiceError, excerpt},
    location::{BUNDLED_NAME, BUNDLED_URI},
    metrics::Metrics,
    redact::redact,
};

/// The prefix of a dataset's name in the health service: `dataset/xl` is `SERVING` once the
/// dataset `xl` is open, `NOT_SERVING` while its store cannot be read.
pub const HEALTH_PREFIX: &str = "dataset/";

/// How long startup waits for each dataset's first attempt to open before it serves the others
/// without it (the attempt goes on).
pub const STARTUP_WAIT: Duration = Duration::from_secs(10);

/// The delays between the attempts to open a dataset whose store is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reopen {
    /// The first delay; each next one doubles, with jitter.
    pub first_delay: Duration,
    /// The longest delay.
    pub max_delay: Duration,
}

impl Reopen {
    pub const DEFAULT: Reopen = Reopen {
        first_delay: Duration::from_secs(1),
        max_delay: Duration::from_secs(60),
    };

    fn delays(&self) -> impl Iterator<Item = Duration> + Send + use<> {
        backon::ExponentialBuilder::new()
            .with_min_delay(self.first_delay)
            .with_max_delay(self.max_delay.max(self.first_delay))
            .with_jitter()
            .without_max_times()
            .build()
    }
}

impl Default for Reopen {
    fn default() -> Self {
        Reopen::DEFAULT
    }
}

/// One dataset of a server, open or not yet.
struct Slot {
    name: String,
    /// Its URI as it may be shown (see [`redact`]).
    uri: String,
    open: OnceLock<Arc<Dataset>>,
    /// Why it is not open yet, and when it is tried next.
    down: Mutex<Down>,
}

#[derive(Debug, Clone)]
struct Down {
    cause: String,
    /// What failed, without the figures of the attempt (see [`ConfigError::store_fault`]).
    fault: String,
    next_attempt: Instant,
}

impl Slot {
    fn dataset(&self) -> Result<&Arc<Dataset>, ServiceError> {
        self.open.get().ok_or_else(|| {
            let down = self.down.lock().expect("a dataset's state").clone();
            ServiceError::DatasetUnavailable {
                name: self.name.clone(),
                cause: down.cause,
                retry_after: down
                    .next_attempt
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_secs(1)),
            }
        })
    }

    /// Records why it is down; whether the fault is new.
    fn set_down(&self, cause: String, fault: String, next_attempt: Instant) -> bool {
        let mut down = self.down.lock().expect("a dataset's state");
        let changed = down.fault != fault;
        *down = Down {
            cause,
            fault,
            next_attempt,
        };
        changed
    }
}

/// What a dataset's state is, as [`Datasets::states`] reports it.
#[derive(Debug, Clone)]
pub enum DatasetState {
    Open(Arc<Dataset>),
    /// Not open yet: why.
    Unavailable {
        name: String,
        uri: String,
        cause: String,
    },
}

impl DatasetState {
    pub fn name(&self) -> &str {
        match self {
            DatasetState::Open(dataset) => &dataset.name,
            DatasetState::Unavailable { name, .. } => name,
        }
    }
}

/// Every dataset of a server; the first is the default.
#[derive(Clone)]
pub struct Datasets {
    slots: Arc<[Arc<Slot>]>,
    /// Bumped whenever a dataset opens or its cause changes.
    changes: Arc<watch::Sender<()>>,
}

impl fmt::Debug for Datasets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.slots.iter().map(|slot| &slot.name))
            .finish()
    }
}

/// What a dataset's first attempt to open gave.
enum First {
    Opened,
    Down,
    Refused(ConfigError),
}

impl Datasets {
    /// Opens each spec in order; with none, the bundled sample. The cache budget is shared
    /// out evenly between the datasets. A dataset whose store cannot be read is served as
    /// unavailable and opened again in the background (see the module's documentation).
    pub async fn open(specs: &[DatasetSpec], options: &OpenOptions) -> Result<Self, ConfigError> {
        Self::open_all(specs, options, Reopen::DEFAULT, None).await
    }

    /// [`Datasets::open`], each dataset recording its storage and cache figures into
    /// `metrics`, and retrying a dataset whose store is down after `reopen`'s delays.
    pub async fn open_observed(
        specs: &[DatasetSpec],
        options: &OpenOptions,
        reopen: Reopen,
        metrics: Option<&Metrics>,
    ) -> Result<Self, ConfigError> {
        Self::open_all(specs, options, reopen, metrics).await
    }

    async fn open_all(
        specs: &[DatasetSpec],
        options: &OpenOptions,
        reopen: Reopen,
        metrics: Option<&Metrics>,
    ) -> Result<Self, ConfigError> {
        let bundled = [DatasetSpec {
            name: BUNDLED_NAME.to_string(),
            uri: BUNDLED_URI.to_string(),
        }];
        let specs = if specs.is_empty() {
            &bundled[..]
        } else {
            specs
        };
        distinct(specs.iter().map(|spec| spec.name.as_str()))?;
        let mut options = *options;
        options.cache.max_bytes /= specs.len() as u64;
        let (changes, _) = watch::channel(());
        let changes = Arc::new(changes);
        let mut slots = Vec::with_capacity(specs.len());
        let mut firsts = Vec::with_capacity(specs.len());
        for spec in specs {
            let slot = Arc::new(Slot {
                name: spec.name.clone(),
                uri: redact(&spec.uri),
                open: OnceLock::new(),
                down: Mutex::new(Down {
                    cause: format!(
                        "its store is being opened; the first attempt has not finished within \
                         {STARTUP_WAIT:?}"
                    ),
                    fault: String::new(),
                    next_attempt: Instant::now(),
                }),
            });
            let (first, first_outcome) = oneshot::channel();
            tokio::spawn(keep_opening(
                Arc::downgrade(&slot),
                spec.clone(),
                options,
                reopen,
                metrics.cloned(),
                changes.clone(),
                first,
            ));
            slots.push(slot);
            firsts.push(tokio::time::timeout(STARTUP_WAIT, first_outcome));
        }
        for first in futures::future::join_all(firsts).await {
            match first {
                Ok(Ok(First::Refused(error))) => return Err(error),
                Ok(Ok(First::Opened | First::Down)) => {}
                // Still trying, or gone: it is served as unavailable meanwhile.
                Ok(Err(_)) | Err(_) => {}
            }
        }
        Ok(Datasets {
            slots: slots.into(),
            changes,
        })
    }

    /// The given datasets, open; the first is the default. At least one is required.
    pub fn new(entries: Vec<Dataset>) -> Result<Self, ConfigError> {
        if entries.is_empty() {
            return Err(ConfigError::NoDatasets);
        }
        distinct(entries.iter().map(|dataset| dataset.name.as_str()))?;
        let slots: Vec<Arc<Slot>> = entries
            .into_iter()
            .map(|dataset| {
                Arc::new(Slot {
                    name: dataset.name.clone(),
                    uri: dataset.uri.clone(),
                    open: OnceLock::from(Arc::new(dataset)),
                    down: Mutex::new(Down {
                        cause: String::new(),
                        fault: String::new(),
                        next_attempt: Instant::now(),
                    }),
                })
            })
            .collect();
        Ok(Datasets {
            slots: slots.into(),
            changes: Arc::new(watch::channel(()).0),
        })
    }

    /// The dataset a request names; the empty name is the default dataset. A dataset that is
    /// not open yet is `UNAVAILABLE`, with the cause and when it is tried next.
    pub fn get(&self, name: &str) -> Result<&Arc<Dataset>, ServiceError> {
        let slot = if name.is_empty() {
            &self.slots[0]
        } else {
            if !crate::dataset::is_dataset_name(name) {
                return Err(ServiceError::invalid(
                    "dataset",
                    format!(
                        "{} is not a dataset name: a name is 1 to {MAX_DATASET_NAME_BYTES} \
                         letters, digits, '-', '_' and '.' (ListDatasets lists this server's)",
                        excerpt(name)
                    ),
                ));
            }
            self.slots
                .iter()
                .find(|slot| slot.name == name)
                .ok_or_else(|| ServiceError::UnknownDataset {
                    name: name.to_string(),
                    known: self.slots.iter().map(|slot| slot.name.clone()).collect(),
                })?
        };
        slot.dataset()
    }

    /// Whether every dataset has been opened or has failed an attempt to open: what the server
    /// reports as ready (a dataset still on its first attempt is not known to be servable or not).
    pub fn settled(&self) -> bool {
        self.slots.iter().all(|slot| {
            slot.open.get().is_some()
                || !slot
                    .down
                    .lock()
                    .expect("a dataset's state")
                    .fault
                    .is_empty()
        })
    }

    /// The name of the default dataset, the one a request with an empty name reads.
    pub fn default_name(&self) -> &str {
        &self.slots[0].name
    }

    /// Every dataset's state, in order.
    pub fn states(&self) -> Vec<DatasetState> {
        self.slots
            .iter()
            .map(|slot| match slot.open.get() {
                Some(dataset) => DatasetState::Open(dataset.clone()),
                None => DatasetState::Unavailable {
                    name: slot.name.clone(),
                    uri: slot.uri.clone(),
                    cause: slot.down.lock().expect("a dataset's state").cause.clone(),
                },
            })
            .collect()
    }

    /// Changes whenever a dataset opens or the cause that keeps it closed changes.
    pub fn changes(&self) -> watch::Receiver<()> {
        self.changes.subscribe()
    }
}

impl fmt::Display for Datasets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, state) in self.states().iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            match state {
                DatasetState::Open(d) => write!(f, "{}={} ({} layout)", d.name, d.uri, d.layout)?,
                DatasetState::Unavailable { name, uri, .. } => {
                    write!(f, "{name}={uri} (unavailable)")?;
                }
            }
        }
        Ok(())
    }
}

/// Refuses a name given twice.
fn distinct<'a>(names: impl Iterator<Item = &'a str>) -> Result<(), ConfigError> {
    let mut seen = std::collections::HashSet::new();
    for name in names {
        if !seen.insert(name) {
            return Err(ConfigError::DuplicateName {
                name: name.to_string(),
            });
        }
    }
    Ok(())
}

/// Opens `spec` into its slot, trying again after each store fault until it opens or the slot
/// is gone. The first attempt's outcome goes to `first`; a configuration error then ends it.
/// Each new cause is logged once, and the opening once.
async fn keep_opening(
    slot: Weak<Slot>,
    spec: DatasetSpec,
    options: OpenOptions,
    reopen: Reopen,
    metrics: Option<Metrics>,
    changes: Arc<watch::Sender<()>>,
    first: oneshot::Sender<First>,
) {
    let mut first = Some(first);
    let mut delays = reopen.delays();
    let available = |open: bool| {
        if let Some(metrics) = &metrics {
            metrics.dataset_available(&spec.name, open);
        }
    };
    available(false);
    let bound = options.storage.read_deadline();
    for attempt in 1u64.. {
        let opened = tokio::time::timeout(
            bound,
            Dataset::open_with(&spec, &options, true, metrics.as_ref()),
        )
        .await
        .unwrap_or_else(|_| {
            Err(ConfigError::Unreachable {
                name: spec.name.clone(),
                doing: "opening its store".to_string(),
                cause: format!("no answer within {bound:?}"),
            })
        });
        let Some(slot) = slot.upgrade() else { return };
        match opened {
            Ok(dataset) => {
                if attempt > 1 {
                    tracing::info!(
                        dataset = %spec.name,
                        attempts = attempt,
                        "dataset opened: its store answers again"
                    );
                }
                let _ = slot.open.set(Arc::new(dataset));
                available(true);
                changes.send_replace(());
                if let Some(first) = first.take() {
                    let _ = first.send(First::Opened);
                }
                return;
            }
            Err(error) if first.is_some() && !error.is_store_fault() => {
                if let Some(first) = first.take() {
                    let _ = first.send(First::Refused(error));
                }
                return;
            }
            Err(error) => {
                let delay = delays.next().unwrap_or(reopen.max_delay);
                let cause = error.to_string();
                let fault = error.store_fault().unwrap_or_else(|| cause.clone());
                if slot.set_down(cause.clone(), fault, Instant::now() + delay) {
                    tracing::warn!(
                        dataset = %spec.name,
                        %cause,
                        "dataset unavailable: the server serves the others, answers its calls \
                         UNAVAILABLE, and keeps trying to open it"
                    );
                    changes.send_replace(());
                } else {
                    tracing::debug!(dataset = %spec.name, attempt, ?delay, "dataset still unavailable");
                }
                if let Some(first) = first.take() {
                    let _ = first.send(First::Down);
                }
                drop(slot);
                tokio::time::sleep(delay).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use activations_format::{layout::Layout, neuron::NeuronKey};

    fn spec(name: &str, uri: &str) -> DatasetSpec {
        DatasetSpec {
            name: name.into(),
            uri: uri.into(),
        }
    }

    #[tokio::test]
    async fn no_dataset_serves_the_bundled_sample() {
        let datasets = Datasets::open(&[], &OpenOptions::default()).await.unwrap();
        let sample = datasets.get("").unwrap();
        assert_eq!(sample.name, BUNDLED_NAME);
        assert_eq!(sample.layout, Layout::Flat);
        assert_eq!(sample.store.layers().await.unwrap(), vec![1]);
        let record = sample.store.neuron(NeuronKey::new(1, 1)).await.unwrap();
        assert_eq!(record.random_sample.len(), 50);
    }

    #[tokio::test]
    async fn unknown_dataset_lists_the_known_ones() {
        let datasets = Datasets::open(&[], &OpenOptions::default()).await.unwrap();
        let err = datasets.get("nope").unwrap_err();
        assert!(err.to_string().contains(BUNDLED_NAME), "{err}");
    }

    #[tokio::test]
    async fn duplicate_dataset_names_are_refused() {
        let same = [spec("a", BUNDLED_URI), spec("a", BUNDLED_URI)];
        let err = Datasets::open(&same, &OpenOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(err, ConfigError::DuplicateName { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_configuration_error_stops_the_startup() {
        for uri in ["ftp://host/data", "/no/such/directory"] {
            let err = Datasets::open(
                &[spec("good", BUNDLED_URI), spec("bad", uri)],
                &OpenOptions::default(),
            )
            .await
            .unwrap_err();
            assert!(!err.is_store_fault(), "{err}");
            assert!(err.to_string().contains("\"bad\""), "{err}");
        }
    }

    #[test]
    fn reopening_waits_longer_each_time_up_to_the_longest_delay() {
        let reopen = Reopen {
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        };
        let delays: Vec<Duration> = reopen.delays().take(12).collect();
        assert_eq!(delays.len(), 12, "it never gives up");
        assert!(delays[0] >= reopen.first_delay, "{delays:?}");
        assert!(delays[11] >= reopen.max_delay, "{delays:?}");
        // Jitter adds at most one more delay's worth.
        assert!(
            delays.iter().all(|d| *d <= 2 * reopen.max_delay),
            "{delays:?}"
        );
    }
}
