//! The threads that parse neuron files, and read the local ones.
//!
//! A parse takes about half a millisecond of CPU, too long for an async worker, so it runs
//! here: on one thread per core, the most that can usefully parse at once. A local file is
//! opened and read on the same thread that parses it. `object_store`'s `LocalFileSystem` does
//! its blocking file calls in place when it runs outside a tokio runtime, as these threads
//! are, so reading and parsing a local file costs one hand-off from the async workers and back,
//! instead of one per blocking step (open, read, parse) through tokio's blocking pool. On this
//! service's cold path every hand-off is two thread switches.
//!
//! A job whose caller has gone (a cancelled call, a stream dropped) before a thread takes it is
//! skipped.

use std::{
    future::Future,
    num::NonZeroUsize,
    panic::AssertUnwindSafe,
    pin::pin,
    sync::{
        Arc, LazyLock, Mutex,
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
    task::{Context, Poll, Wake, Waker},
    thread::{self, Thread},
};

use activations_proto::wire;
use bytes::Bytes;
use object_store::{GetResult, GetResultPayload, ObjectStore, ObjectStoreExt, path::Path};
use tokio::sync::oneshot;

use activations_format::neuron_json::{self, ParseError};

use super::{StoreError, too_large};

type Job = Box<dyn FnOnce() + Send>;

/// The number of reader threads: one per core.
static THREADS: LazyLock<usize> =
    LazyLock::new(|| thread::available_parallelism().map_or(2, NonZeroUsize::get));

/// Jobs queued that no thread has taken yet.
static BACKLOG: AtomicUsize = AtomicUsize::new(0);

/// Whether the reader threads are saturated: as many jobs wait for a thread as there are
/// threads. Reads started then wait on CPU, not storage, and come no faster for being many.
pub fn saturated() -> bool {
    BACKLOG.load(Ordering::Relaxed) >= *THREADS
}

/// The job queue; one thread per core takes from it.
static QUEUE: LazyLock<mpsc::Sender<Job>> = LazyLock::new(|| {
    let (sender, receiver) = mpsc::channel::<Job>();
    let receiver = Arc::new(Mutex::new(receiver));
    for index in 0..*THREADS {
        let receiver = Arc::clone(&receiver);
        let spawned = thread::Builder::new()
            .name(format!("neuron-reader-{index}"))
            .spawn(move || {
                loop {
                    // The lock is held only while waiting for the next job, never while working.
                    let job = match receiver.lock() {
                        Ok(receiver) => receiver.recv(),
                        Err(poisoned) => poisoned.into_inner().recv(),
                    };
                    match job {
                        Ok(job) => job(),
                        Err(mpsc::RecvError) => return,
                    }
                }
            });
        if let Err(error) = spawned {
            tracing::error!(%error, "could not start a neuron reader thread");
        }
    }
    sender
});

/// Why a job gave no answer: it panicked, or no reader thread could be started.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Failed(String);

/// Runs `work` on a reader thread and waits for its answer.
async fn run<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, Failed> {
    let (answer, answered) = oneshot::channel();
    BACKLOG.fetch_add(1, Ordering::Relaxed);
    if QUEUE.send(job(work, answer)).is_err() {
        BACKLOG.fetch_sub(1, Ordering::Relaxed);
        return Err(Failed("no neuron reader thread is running".to_string()));
    }
    answered
        .await
        .unwrap_or_else(|_| Err(Failed("no neuron reader thread is running".to_string())))
}

/// `work` as a job answering on `answer`: skipped if nobody waits for the answer any more, and
/// a panic answered as a failure (the thread goes on serving).
fn job<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
    answer: oneshot::Sender<Result<T, Failed>>,
) -> Job {
    Box::new(move || {
        BACKLOG.fetch_sub(1, Ordering::Relaxed);
        if answer.is_closed() {
            return;
        }
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(work))
            .map_err(|_| Failed("reading the neuron file panicked".to_string()));
        // The caller may have gone meanwhile; then nobody needs the answer.
        let _ = answer.send(outcome);
    })
}

/// Parses a neuron file's bytes on a reader thread.
pub(super) async fn parse(bytes: Bytes) -> Result<Result<wire::NeuronRecord, ParseError>, Failed> {
    run(move || neuron_json::parse_neuron(&bytes)).await
}

/// Reads the file at `path` of a local `store` and parses it, all on one reader thread. A
/// file larger than `max_bytes` is refused from its size once opened, before it is read.
pub(super) async fn read_local(
    store: Arc<dyn ObjectStore>,
    path: Path,
    max_bytes: u64,
) -> Result<Result<Result<wire::NeuronRecord, ParseError>, StoreError>, Failed> {
    run(move || {
        let unreadable = |reason| StoreError::Unreadable {
            path: path.to_string(),
            reason,
        };
        let store_error = |e| StoreError::from_object_store(&path, e);
        let result = block_on(store.get(&path)).map_err(store_error)?;
        if let Some(reason) = too_large(result.meta.size, max_bytes) {
            return Err(unreadable(reason));
        }
        let bytes = match result.payload {
            GetResultPayload::File(file, local_path) => {
                read_range(file, &local_path, result.range).map_err(store_error)?
            }
            // Not a local file after all: collect whatever the store streams.
            GetResultPayload::Stream(stream) => {
                let collected = GetResult {
                    payload: GetResultPayload::Stream(stream),
                    ..result
                };
                block_on(collected.bytes()).map_err(store_error)?.to_vec()
            }
        };
        Ok(neuron_json::parse_neuron(&bytes))
    })
    .await
}

/// Reads `range` of an open file into a buffer of exactly its size, without zeroing it first.
fn read_range(
    mut file: std::fs::File,
    local_path: &std::path::Path,
    range: std::ops::Range<u64>,
) -> object_store::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let io_error = |source: std::io::Error| object_store::Error::Generic {
        store: "LocalFileSystem",
        source: format!("reading {}: {source}", local_path.display()).into(),
    };
    let expected = usize::try_from(range.end - range.start).unwrap_or(usize::MAX);
    file.seek(SeekFrom::Start(range.start)).map_err(io_error)?;
    let mut bytes = Vec::with_capacity(expected);
    file.take(range.end - range.start)
        .read_to_end(&mut bytes)
        .map_err(io_error)?;
    if bytes.len() != expected {
        return Err(io_error(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("the file ended after {} of {expected} bytes", bytes.len()),
        )));
    }
    Ok(bytes)
}

/// Drives `future` to completion on this thread, parking it while the future waits.
fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_off_the_runtime_and_a_panic_is_an_error() {
        let in_runtime = run(|| tokio::runtime::Handle::try_current().is_ok()).await;
        assert!(
            !in_runtime.unwrap(),
            "reader threads are outside the runtime, where LocalFileSystem reads in place"
        );
        let panicked = run(|| -> u32 { panic!("a bug") }).await;
        assert!(panicked.is_err());
        // The thread that caught the panic still serves.
        assert_eq!(run(|| 7).await.unwrap(), 7);
    }

    #[test]
    fn a_job_whose_caller_has_gone_is_skipped() {
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (answer, answered) = oneshot::channel();
        drop(answered);
        let flag = Arc::clone(&ran);
        job(
            move || flag.store(true, std::sync::atomic::Ordering::SeqCst),
            answer,
        )();
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));

        let (answer, answered) = oneshot::channel();
        job(|| 3, answer)();
        assert_eq!(answered.blocking_recv().unwrap().unwrap(), 3);
    }
}
