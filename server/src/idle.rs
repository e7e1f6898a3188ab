//! The idle bound: a response whose client stops reading it is ended after a set time, and what
//! it held (its slot, the stream producing its messages and that stream's storage reads) is
//! freed.
//!
//! While a client reads nothing, HTTP/2 flow control stops the server's connection task from
//! taking frames from the response body: it holds the last frame until the client's window
//! opens, and polls the body no more. Nothing inside the body can act then, so a sweeper task
//! outside it looks at every watched body on a coarse clock (a quarter of the bound) and ends
//! the ones that have been handed out a frame and not been polled since, for the whole bound.
//! A body waiting on its own producer (a slow storage read) is not idle: the client is not the
//! one holding it up.
//!
//! The clock is a tick counter the sweeper advances, so a body marks its progress with two
//! atomic stores, without reading the time.

use std::{
    sync::{
        Arc, Mutex, OnceLock, PoisonError, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use slab::Slab;

/// The bound's sweeper and the bodies it watches; cheap to clone.
#[derive(Clone)]
pub(crate) struct IdleBound {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for IdleBound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdleBound")
            .field("timeout", &self.shared.timeout)
            .finish_non_exhaustive()
    }
}

struct Shared {
    timeout: Duration,
    /// The sweeper's period: a quarter of the bound, so a body is ended between 1 and 1.25
    /// times the bound after its last progress.
    period: Duration,
    /// Periods since the sweeper started.
    tick: AtomicU64,
    watched: Mutex<Slab<Weak<dyn Idle>>>,
    sweeper: OnceLock<()>,
    /// Called once for each body ended.
    on_end: Box<dyn Fn() + Send + Sync>,
}

/// A body the sweeper can end.
pub(crate) trait Idle: Send + Sync {
    /// The tick of the body's last frame handed out, plus one; 0 while it is not waiting for
    /// its client (polled, working, or ended).
    fn waiting_since(&self) -> &AtomicU64;
    /// Ends the body: drops what it holds, and makes it end with the idle status.
    fn end_idle(&self, idle: Duration);
}

/// A body's place among the watched ones: dropping it stops the watch.
pub(crate) struct Watched {
    shared: Arc<Shared>,
    key: usize,
}

impl Drop for Watched {
    fn drop(&mut self) {
        let mut watched = self
            .shared
            .watched
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        watched.try_remove(self.key);
    }
}

impl Watched {
    /// Marks that the body was just polled: whatever it waits for now, it is not its client.
    pub(crate) fn polled(state: &AtomicU64) {
        state.store(0, Ordering::Relaxed);
    }

    /// Marks that the body handed a frame out: until it is polled again, it waits on its
    /// client.
    pub(crate) fn handed_out(&self, state: &AtomicU64) {
        let now = self.shared.tick.load(Ordering::Relaxed);
        state.store(now + 1, Ordering::Relaxed);
    }
}

impl IdleBound {
    /// A bound of `timeout`; `on_end` is called for each body it ends (a metric).
    pub(crate) fn new(timeout: Duration, on_end: impl Fn() + Send + Sync + 'static) -> IdleBound {
        let period = (timeout / 4).max(Duration::from_millis(1));
        IdleBound {
            shared: Arc::new(Shared {
                timeout,
                period,
                tick: AtomicU64::new(0),
                watched: Mutex::new(Slab::new()),
                sweeper: OnceLock::new(),
                on_end: Box::new(on_end),
            }),
        }
    }

    /// Watches `body` until the returned guard is dropped. Starts the sweeper on the first
    /// call, on the current tokio runtime.
    pub(crate) fn watch(&self, body: Weak<dyn Idle>) -> Watched {
        self.shared.sweeper.get_or_init(|| {
            tokio::spawn(sweep(Arc::downgrade(&self.shared), self.shared.period));
        });
        let key = self
            .shared
            .watched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(body);
        Watched {
            shared: self.shared.clone(),
            key,
        }
    }
}

/// Advances the clock every `period` and ends the bodies idle for the whole bound; returns when
/// the bound is dropped.
async fn sweep(shared: Weak<Shared>, period: Duration) {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await;
    loop {
        interval.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let now = shared.tick.fetch_add(1, Ordering::Relaxed) + 1;
        // Ticks are a quarter of the bound: idle for the bound means four whole ticks.
        let bound = (shared.timeout.as_nanos() / shared.period.as_nanos()).max(1) as u64;
        let idle: Vec<Arc<dyn Idle>> = shared
            .watched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter_map(|(_, body)| body.upgrade())
            .filter(|body| {
                let since = body.waiting_since().load(Ordering::Relaxed);
                since != 0 && now - (since - 1) > bound
            })
            .collect();
        // Ended outside the lock: ending drops a stream and its reads.
        for body in idle {
            body.end_idle(shared.timeout);
            (shared.on_end)();
        }
    }
}
