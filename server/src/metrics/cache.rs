//! The cache's figures, read from each dataset's [`CachedStore`] when Prometheus scrapes.
//!
//! The cache already counts its hits and misses ([`CacheStats`]); copying them into counters on
//! every call would count twice. A collector asks for the stats at scrape time instead.

use std::sync::{Arc, Mutex, Weak};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
};

use crate::store::{CacheStats, CachedStore};

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DatasetLabels {
    dataset: String,
}

/// The caches of a server's datasets, held weakly: a dataset that is dropped stops reporting.
#[derive(Debug, Default)]
pub(super) struct CacheCollector {
    caches: Mutex<Vec<(String, Weak<CachedStore>)>>,
}

impl CacheCollector {
    pub(super) fn watch(&self, dataset: &str, cache: &Arc<CachedStore>) {
        self.caches
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push((dataset.to_string(), Arc::downgrade(cache)));
    }

    fn snapshot(&self) -> Vec<(String, CacheStats, u64)> {
        self.caches
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .filter_map(|(dataset, cache)| {
                let cache = cache.upgrade()?;
                Some((dataset.clone(), cache.stats(), cache.config().max_bytes))
            })
            .collect()
    }
}

/// One counter or gauge per dataset: name, help, and how to read it from the stats.
type Reading = (&'static str, &'static str, fn(&CacheStats, u64) -> u64);

const COUNTERS: [Reading; 3] = [
    (
        "cache_hits",
        "Neuron reads answered with a cached record (or by sharing another caller's read), by \
         dataset.",
        |stats, _| stats.hits,
    ),
    (
        "cache_misses",
        "Neuron reads that went to storage (one per group of concurrent callers), by dataset.",
        |stats, _| stats.misses,
    ),
    (
        "cache_not_found_hits",
        "Reads answered from a remembered missing file, by dataset.",
        |stats, _| stats.not_found_hits,
    ),
];

const GAUGES: [Reading; 3] = [
    (
        "cache_entries",
        "Records and missing-file markers held, by dataset (as of the cache's last \
         maintenance).",
        |stats, _| stats.entries,
    ),
    (
        "cache_weighted_bytes",
        "Memory the held entries weigh, in bytes, by dataset (as of the cache's last \
         maintenance).",
        |stats, _| stats.weighted_bytes,
    ),
    (
        "cache_capacity_bytes",
        "The cache's budget, in bytes, by dataset (0: no cache).",
        |_, max_bytes| max_bytes,
    ),
];

impl Collector for CacheCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = self.snapshot();
        let labels = |dataset: &str| DatasetLabels {
            dataset: dataset.to_string(),
        };
        for (name, help, read) in COUNTERS {
            let family = Family::<DatasetLabels, Counter>::default();
            for (dataset, stats, max_bytes) in &snapshot {
                family
                    .get_or_create(&labels(dataset))
                    .inc_by(read(stats, *max_bytes));
            }
            family.encode(encoder.encode_descriptor(name, help, None, family.metric_type())?)?;
        }
        for (name, help, read) in GAUGES {
            let family = Family::<DatasetLabels, Gauge>::default();
            for (dataset, stats, max_bytes) in &snapshot {
                let value = i64::try_from(read(stats, *max_bytes)).unwrap_or(i64::MAX);
                family.get_or_create(&labels(dataset)).set(value);
            }
            family.encode(encoder.encode_descriptor(name, help, None, family.metric_type())?)?;
        }
        Ok(())
    }
}
