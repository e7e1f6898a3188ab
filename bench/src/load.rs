//! The closed-loop driver every scenario uses: `concurrency` workers each issue one request at a
//! time until `requests` have been made, and each request's latency goes into a histogram.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;

/// What one request delivered, for the throughput columns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivered {
    /// Neurons served (bulk and cold scenarios), 0 otherwise.
    pub neurons: u64,
    /// Activation records received.
    pub records: u64,
    /// Response bytes, as protobuf (before any compression on the wire).
    pub bytes: u64,
}

impl std::ops::AddAssign for Delivered {
    fn add_assign(&mut self, other: Delivered) {
        self.neurons += other.neurons;
        self.records += other.records;
        self.bytes += other.bytes;
    }
}

/// The outcome of one closed-loop run.
#[derive(Debug, Clone)]
pub struct Measurement {
    pub concurrency: usize,
    pub requests: u64,
    pub elapsed: Duration,
    pub delivered: Delivered,
    /// Latency of each request, in microseconds.
    pub latency_us: Histogram<u64>,
}

impl Measurement {
    /// Requests per second.
    pub fn requests_per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    /// Neurons per second.
    pub fn neurons_per_second(&self) -> f64 {
        self.delivered.neurons as f64 / self.elapsed.as_secs_f64()
    }

    /// Records per second.
    pub fn records_per_second(&self) -> f64 {
        self.delivered.records as f64 / self.elapsed.as_secs_f64()
    }

    /// Response megabytes (10^6 bytes) per second.
    pub fn megabytes_per_second(&self) -> f64 {
        self.delivered.bytes as f64 / 1e6 / self.elapsed.as_secs_f64()
    }

    /// The latency at `quantile` (0..=1), in milliseconds.
    pub fn latency_ms(&self, quantile: f64) -> f64 {
        self.latency_us.value_at_quantile(quantile) as f64 / 1000.0
    }
}

/// A failed request stops the run: a benchmark that skips failures would report the speed of
/// failing.
#[derive(Debug, thiserror::Error)]
#[error("request {index} failed: {source}")]
pub struct RequestFailed {
    pub index: usize,
    #[source]
    pub source: activations_client::Error,
}

/// Runs `requests` calls of `request(i)` (`i` in `0..requests`) from `concurrency` workers,
/// each starting its next call when its previous one finished.
///
/// # Errors
///
/// The first failed request.
pub async fn closed_loop<F, Fut>(
    concurrency: usize,
    requests: usize,
    request: F,
) -> Result<Measurement, RequestFailed>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = activations_client::Result<Delivered>> + Send + 'static,
{
    let request = Arc::new(request);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency.clamp(1, requests.max(1)))
        .map(|_| {
            let request = Arc::clone(&request);
            let next = Arc::clone(&next);
            tokio::spawn(async move {
                let mut latency_us = new_histogram();
                let mut delivered = Delivered::default();
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= requests {
                        return Ok((latency_us, delivered));
                    }
                    let start = Instant::now();
                    delivered += request(index)
                        .await
                        .map_err(|source| RequestFailed { index, source })?;
                    latency_us.saturating_record(start.elapsed().as_micros() as u64);
                }
            })
        })
        .collect();
    let mut latency_us = new_histogram();
    let mut delivered = Delivered::default();
    for worker in workers {
        let (worker_latency, worker_delivered) = worker.await.expect("a load worker panicked")?;
        latency_us
            .add(worker_latency)
            .expect("histograms of the same bounds add up");
        delivered += worker_delivered;
    }
    Ok(Measurement {
        concurrency,
        requests: requests as u64,
        elapsed: started.elapsed(),
        delivered,
        latency_us,
    })
}

/// Microseconds from 1 µs to 10 minutes, 3 significant digits.
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_request_is_made_once_and_counted() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let measurement = closed_loop(4, 10, move |i| {
            log.lock().unwrap().push(i);
            async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                Ok(Delivered {
                    neurons: 1,
                    records: 2,
                    bytes: 3,
                })
            }
        })
        .await
        .unwrap();
        let mut seen = seen.lock().unwrap().clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        assert_eq!(measurement.requests, 10);
        assert_eq!(measurement.latency_us.len(), 10);
        assert_eq!(
            measurement.delivered,
            Delivered {
                neurons: 10,
                records: 20,
                bytes: 30
            }
        );
        assert!(measurement.latency_ms(0.5) >= 1.0);
    }

    #[tokio::test]
    async fn a_failed_request_fails_the_run() {
        let result = closed_loop(2, 5, |i| async move {
            if i == 3 {
                Err(activations_client::Error::NoEndpoint)
            } else {
                Ok(Delivered::default())
            }
        })
        .await;
        assert!(matches!(result, Err(RequestFailed { index: 3, .. })));
    }
}
