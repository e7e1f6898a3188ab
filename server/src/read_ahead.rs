//! How far a bulk stream reads ahead of its client: a window of reads in flight that adapts to
//! what the storage gives, bounded by a byte budget the whole server shares.
//!
//! Latency, not CPU, bounds a stream over a remote store: with `w` reads in flight each taking
//! `L`, a stream gets at most `w / L` neurons a second (Little's law); 16 reads at 45 ms give
//! 355 a second whatever the machine could do. So the window follows the bandwidth-delay
//! product, found by probing: it grows by half each time the client asks for the next neuron
//! and that neuron is not read yet, unless the reader threads already have a backlog (reads
//! then wait on CPU, and more of them in flight would only hold more memory). It shrinks by an
//! eighth after each full window of neurons the client took without waiting, which is what a
//! client slower than the store, or a window larger than the latency needs, looks like.
//!
//! Every read in flight, and every neuron read but not yet taken by the client, holds its
//! estimated size of the server's budget ([`Budget`], `--bulk-read-ahead-bytes`), so the window
//! of every stream together never holds more than the budget; a stream whose client stops
//! reading holds at most its window, until the idle bound ends it. A stream with nothing in
//! flight may always start one read, budget or not: no stream waits forever on another's client.
//!
//! Hand-written rather than `buffered(n)`: `buffered` has a fixed limit, and no combinator of
//! `futures` or `tokio-stream` takes a limit that changes or a budget shared between streams.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use futures::{
    FutureExt, Stream, StreamExt,
    future::BoxFuture,
    stream::{BoxStream, FuturesOrdered},
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::store::readers_saturated;

/// The most reads one stream may have in flight, whatever the budget: far above what a store's
/// latency calls for (3,000 neurons a second at 100 ms is 300).
pub const MAX_WINDOW: usize = 4096;

/// The size assumed for a neuron before any is read: about a public GPT-2 XL neuron's splits.
const FIRST_ESTIMATE: usize = 256 << 10;

/// The bytes of read-ahead the whole server may hold: reads in flight and neurons read but
/// not yet sent, over every bulk stream.
#[derive(Debug, Clone)]
pub struct Budget {
    bytes: usize,
    semaphore: Arc<Semaphore>,
}

impl Budget {
    pub fn new(bytes: u64) -> Budget {
        let bytes = usize::try_from(bytes)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        Budget {
            bytes,
            semaphore: Arc::new(Semaphore::new(bytes)),
        }
    }

    /// The bytes held now.
    pub fn in_use(&self) -> usize {
        self.bytes - self.semaphore.available_permits()
    }
}

/// A neuron's read and its share of the budget, if it has one.
type Held<T> = (T, Option<OwnedSemaphorePermit>);

/// The items of `keys`, each turned by `read` into a future, run up to an adaptive window
/// ahead of the consumer and yielded in order (see the module's documentation).
pub struct ReadAhead<K, T> {
    keys: BoxStream<'static, K>,
    keys_done: bool,
    read: Box<dyn FnMut(K) -> BoxFuture<'static, T> + Send>,
    /// The bytes an item holds while it waits to be sent.
    weigh: fn(&T) -> usize,
    in_flight: FuturesOrdered<BoxFuture<'static, Held<T>>>,
    budget: Budget,
    /// Waiting for budget for the next read.
    acquiring: Option<BoxFuture<'static, Option<OwnedSemaphorePermit>>>,
    /// Budget obtained while `keys` had no next key ready.
    held: Option<Option<OwnedSemaphorePermit>>,
    window: usize,
    min_window: usize,
    /// The size of the items read so far, on average (exponentially weighted).
    estimate: usize,
    /// Whether the consumer found the next item unread since it last took one.
    waited: bool,
    taken_without_waiting: usize,
}

impl<K: Send + 'static, T: Send + 'static> ReadAhead<K, T> {
    /// Reads `keys` with `read`, at least `min_window` ahead (when the budget allows).
    pub fn new<F>(
        keys: impl Stream<Item = K> + Send + 'static,
        min_window: usize,
        budget: Budget,
        weigh: fn(&T) -> usize,
        mut read: impl FnMut(K) -> F + Send + 'static,
    ) -> Self
    where
        F: Future<Output = T> + Send + 'static,
    {
        let min_window = min_window.clamp(1, MAX_WINDOW);
        ReadAhead {
            keys: keys.boxed(),
            keys_done: false,
            read: Box::new(move |key| read(key).boxed()),
            weigh,
            in_flight: FuturesOrdered::new(),
            budget,
            acquiring: None,
            held: None,
            window: min_window,
            min_window,
            estimate: FIRST_ESTIMATE,
            waited: false,
            taken_without_waiting: 0,
        }
    }

    /// The window now: how many reads it may have in flight.
    pub fn window(&self) -> usize {
        self.window
    }

    /// The budget one more read takes: its estimated size, at least a byte, at most the whole
    /// budget (so that it can be granted).
    fn share(&self) -> u32 {
        let bytes = self.estimate.min(self.budget.bytes).max(1);
        u32::try_from(bytes).unwrap_or(u32::MAX)
    }

    /// Budget for the next read: `Ready(None)` to go without (nothing in flight, and the budget
    /// spent by others).
    fn permit(&mut self, cx: &mut Context<'_>) -> Poll<Option<OwnedSemaphorePermit>> {
        let semaphore = self.budget.semaphore.clone();
        if self.in_flight.is_empty() {
            self.acquiring = None;
            return Poll::Ready(semaphore.try_acquire_many_owned(self.share()).ok());
        }
        let share = self.share();
        let acquiring = self
            .acquiring
            .get_or_insert_with(|| semaphore.acquire_many_owned(share).map(Result::ok).boxed());
        let permit = acquiring.poll_unpin(cx);
        if permit.is_ready() {
            self.acquiring = None;
        }
        permit
    }

    /// Starts reads until the window is full, the budget is spent or no key is ready.
    fn fill(&mut self, cx: &mut Context<'_>) {
        while !self.keys_done && self.in_flight.len() < self.window {
            let permit = match self.held.take() {
                Some(permit) => permit,
                None => match self.permit(cx) {
                    Poll::Ready(permit) => permit,
                    Poll::Pending => return,
                },
            };
            match self.keys.poll_next_unpin(cx) {
                Poll::Ready(Some(key)) => {
                    let read = (self.read)(key);
                    self.in_flight
                        .push_back(read.map(move |item| (item, permit)).boxed());
                }
                Poll::Ready(None) => self.keys_done = true,
                Poll::Pending => {
                    self.held = Some(permit);
                    return;
                }
            }
        }
    }

    /// Adapts the window to the item just taken (see the module's documentation).
    fn taken(&mut self, weight: usize) {
        self.estimate = (self.estimate * 7 + weight) / 8;
        if std::mem::take(&mut self.waited) {
            self.taken_without_waiting = 0;
            if !readers_saturated() {
                let most = (self.budget.bytes / self.estimate.max(1)).clamp(1, MAX_WINDOW);
                let grown = self.window + self.window.div_ceil(2);
                self.window = grown.min(most).max(1);
            }
        } else {
            self.taken_without_waiting += 1;
            if self.taken_without_waiting >= self.window {
                self.taken_without_waiting = 0;
                self.window = (self.window - self.window.div_ceil(8)).max(self.min_window);
            }
        }
    }
}

impl<K, T> Drop for ReadAhead<K, T> {
    fn drop(&mut self) {
        tracing::debug!(
            window = self.window,
            estimate = self.estimate,
            "read-ahead of the stream at its end"
        );
    }
}

impl<K, T> std::fmt::Debug for ReadAhead<K, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadAhead")
            .field("window", &self.window)
            .field("in_flight", &self.in_flight.len())
            .field("estimate", &self.estimate)
            .field("keys_done", &self.keys_done)
            .finish_non_exhaustive()
    }
}

impl<K: Send + 'static, T: Send + 'static> Stream for ReadAhead<K, T> {
    type Item = T;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let this = self.get_mut();
        this.fill(cx);
        match this.in_flight.poll_next_unpin(cx) {
            Poll::Ready(Some((item, permit))) => {
                // Its share of the budget goes back as it leaves for the client.
                drop(permit);
                this.taken((this.weigh)(&item));
                // Start the read that takes its place now, not at the next poll.
                this.fill(cx);
                Poll::Ready(Some(item))
            }
            Poll::Ready(None) if this.keys_done => Poll::Ready(None),
            // Nothing in flight: `fill` waits on the next key, which wakes this task.
            Poll::Ready(None) => Poll::Pending,
            Poll::Pending => {
                this.waited = true;
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::{AtomicUsize, Ordering},
        time::Duration,
    };

    use super::*;

    /// Reads that each take `latency`, counting how many run at once.
    fn reads(
        count: usize,
        latency: Duration,
        window: usize,
        budget: &Budget,
        running: &Arc<AtomicUsize>,
        most: &Arc<AtomicUsize>,
    ) -> ReadAhead<usize, usize> {
        let (running, most) = (running.clone(), most.clone());
        ReadAhead::new(
            futures::stream::iter(0..count),
            window,
            budget.clone(),
            |_| 100_000,
            move |key| {
                let (running, most) = (running.clone(), most.clone());
                // A task of its own, as the bulk stream's reads are: it goes on while the
                // consumer does not poll.
                let read = tokio::spawn(async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(latency).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    key
                });
                async move { read.await.unwrap() }
            },
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_waiting_on_slow_reads_widens_its_window_in_order() {
        let budget = Budget::new(1 << 30);
        let (running, most) = Default::default();
        let stream = reads(
            2_000,
            Duration::from_millis(50),
            16,
            &budget,
            &running,
            &most,
        );
        let started = tokio::time::Instant::now();
        let got: Vec<usize> = stream.collect().await;
        assert_eq!(got, (0..2_000).collect::<Vec<_>>(), "in order, each once");
        let took = started.elapsed();
        // With a fixed window of 16, 2,000 reads of 50 ms take 6.25 s.
        assert!(took < Duration::from_secs(2), "{took:?}");
        assert!(most.load(Ordering::SeqCst) > 64, "{most:?}");
        assert_eq!(budget.in_use(), 0, "every share is given back");
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_bounds_every_stream_together() {
        // Room for 20 items of 100,000 bytes, shared by three streams.
        let budget = Budget::new(2_000_000);
        let (running, most) = Default::default();
        let streams: Vec<_> = (0..3)
            .map(|_| reads(300, Duration::from_millis(50), 16, &budget, &running, &most))
            .collect();
        let all = futures::future::join_all(streams.into_iter().map(|s| s.collect::<Vec<_>>()));
        for got in all.await {
            assert_eq!(got, (0..300).collect::<Vec<_>>());
        }
        // The estimate starts above an item's size, and each stream may go over by one read.
        assert!(most.load(Ordering::SeqCst) <= 20 + 3, "{most:?}");
        assert_eq!(budget.in_use(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_reading_holds_at_most_its_window() {
        let budget = Budget::new(1 << 30);
        let (running, most) = Default::default();
        let mut stream = reads(
            10_000,
            Duration::from_millis(50),
            16,
            &budget,
            &running,
            &most,
        );
        for _ in 0..100 {
            stream.next().await.unwrap();
        }
        let window = stream.window();
        // The client stops: the reads in flight finish, and nothing more starts.
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(running.load(Ordering::SeqCst), 0);
        assert!(
            stream.in_flight.len() <= window,
            "{} > {window}",
            stream.in_flight.len()
        );
        assert!(budget.in_use() <= window * FIRST_ESTIMATE);
        // A client that reads again gets the rest, in order.
        let rest: Vec<usize> = stream.collect().await;
        assert_eq!(rest, (100..10_000).collect::<Vec<_>>());
    }

    #[tokio::test(start_paused = true)]
    async fn with_no_budget_left_a_stream_still_reads_one_at_a_time() {
        let budget = Budget::new(0);
        let (running, most) = Default::default();
        let got: Vec<usize> = reads(20, Duration::from_millis(10), 16, &budget, &running, &most)
            .collect()
            .await;
        assert_eq!(got, (0..20).collect::<Vec<_>>());
        assert_eq!(most.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_window_larger_than_needed_shrinks_back_to_the_least() {
        let budget = Budget::new(1 << 30);
        let (running, most) = Default::default();
        let mut stream = reads(
            100_000,
            Duration::from_millis(50),
            16,
            &budget,
            &running,
            &most,
        );
        for _ in 0..2_000 {
            stream.next().await.unwrap();
        }
        let wide = stream.window();
        assert!(wide > 16, "{wide}");
        // A client slower than the store: every neuron is read before it asks.
        for _ in 0..20_000 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            stream.next().await.unwrap();
        }
        assert!(stream.window() < wide, "{} >= {wide}", stream.window());
    }
}
