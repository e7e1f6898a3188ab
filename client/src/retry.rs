//! How calls retry and keep their deadlines: which failures are transient, the waits between
//! attempts, and the deadline of a call (see [`RetryPolicy`] and
//! [`ClientBuilder::timeout`](crate::ClientBuilder::timeout)).

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::stream::{self, BoxStream, Stream, StreamExt};
use tokio::time::Instant;
use tonic::{Code, Request, Response, Status};

use crate::error::{Error, Result};
use crate::settings::{CallSettings, RetryPolicy};

/// Whether a failure is worth another attempt: `UNAVAILABLE`, `RESOURCE_EXHAUSTED` with a
/// `RetryInfo` (an overloaded server saying when to come back), or a failure of the connection.
pub(crate) fn is_retryable(error: &Error) -> bool {
    match error {
        Error::Connect { .. } => true,
        Error::Status(status) => {
            is_retryable_status(status.status())
                || status.code() == Code::ResourceExhausted
                    && status.details().retry_info().is_some()
        }
        _ => false,
    }
}

/// `UNAVAILABLE` (sent by the server, or made by tonic when it cannot connect), or a status tonic
/// made from a failure of the connection itself (reset, closed, an HTTP/2 error): those carry the
/// failure as their `source`, which a status received from the server never has.
pub(crate) fn is_retryable_status(status: &Status) -> bool {
    match status.code() {
        Code::Unavailable => true,
        Code::Unknown | Code::Internal | Code::Cancelled => {
            std::error::Error::source(status).is_some()
        }
        _ => false,
    }
}

/// The `RetryInfo.retry_delay` the server attached to the error.
fn server_retry_delay(error: &Error) -> Option<Duration> {
    error
        .status()?
        .details()
        .retry_info()
        .and_then(|info| info.retry_delay)
}

/// The upper bound of the wait after `failures` consecutive failures (1 for the first):
/// `min(max_backoff, initial_backoff * 2^(failures - 1))`.
pub(crate) fn backoff_ceiling(policy: &RetryPolicy, failures: u32) -> Duration {
    let factor = 1u32
        .checked_shl(failures.saturating_sub(1))
        .unwrap_or(u32::MAX);
    policy
        .initial_backoff
        .saturating_mul(factor)
        .min(policy.max_backoff)
}

/// A uniformly random duration in `0..=ceiling` ("full jitter").
pub(crate) fn full_jitter(ceiling: Duration) -> Duration {
    ceiling.mul_f64(random_unit())
}

/// A random number in `[0, 1)`, from the standard library's randomly keyed hasher: jitter needs
/// no better randomness than that.
fn random_unit() -> f64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// How long to wait before the next attempt, after `failures` consecutive failures of which
/// `error` is the last; `None` to give up with `error`: it is not transient, the attempts are
/// used up, or the wait would reach the deadline.
pub(crate) fn next_delay(
    policy: &RetryPolicy,
    failures: u32,
    error: &Error,
    deadline: Option<Instant>,
) -> Option<Duration> {
    if !is_retryable(error) || failures >= policy.max_attempts.max(1) {
        return None;
    }
    let mut wait = full_jitter(backoff_ceiling(policy, failures));
    if let Some(delay) = server_retry_delay(error) {
        wait = wait.max(delay);
    }
    if let Some(deadline) = deadline {
        let resumes = Instant::now().checked_add(wait);
        if resumes.is_none_or(|resumes| resumes >= deadline) {
            return None;
        }
    }
    Some(wait)
}

/// The consecutive failures of one call (or, in a bulk stream, since the last neuron delivered),
/// and the waits they earn: the one place the client sleeps before trying again.
#[derive(Debug)]
pub(crate) struct Backoff {
    policy: RetryPolicy,
    deadline: Option<Instant>,
    failures: u32,
}

impl Backoff {
    /// No failure yet; no wait will reach past `deadline`.
    pub(crate) fn new(policy: RetryPolicy, deadline: Option<Instant>) -> Backoff {
        Backoff {
            policy,
            deadline,
            failures: 0,
        }
    }

    /// Counts `error` and waits before the next attempt, or gives `error` back when there is
    /// none (see [`next_delay`]).
    pub(crate) async fn retry_after(&mut self, error: Error) -> Result<()> {
        self.failures += 1;
        match next_delay(&self.policy, self.failures, &error, self.deadline) {
            Some(wait) => {
                tokio::time::sleep(wait).await;
                Ok(())
            }
            None => Err(error),
        }
    }

    /// A success: the next failure is the first again.
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }
}

/// The deadline of one call, if it has a timeout.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline(Option<(Instant, Duration)>);

impl Deadline {
    /// A deadline `timeout` from now (none for a timeout too large to reach).
    pub(crate) fn start(timeout: Option<Duration>) -> Deadline {
        Deadline(timeout.and_then(|timeout| {
            let deadline = Instant::now().checked_add(timeout)?;
            Some((deadline, timeout))
        }))
    }

    pub(crate) fn instant(&self) -> Option<Instant> {
        self.0.map(|(instant, _)| instant)
    }

    /// A request whose `grpc-timeout` is the time left.
    pub(crate) fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Some((deadline, _)) = self.0 {
            let left = deadline.saturating_duration_since(Instant::now());
            // grpc-timeout holds at most 8 digits of hours; tonic panics beyond.
            let most = Duration::from_secs(99_999_999 * 60);
            request.set_timeout(left.clamp(Duration::from_millis(1), most));
        }
        request
    }

    /// Runs `future` until the deadline: past it, `DEADLINE_EXCEEDED`.
    pub(crate) async fn run<T>(
        &self,
        future: impl Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        let Some((deadline, timeout)) = self.0 else {
            return future.await;
        };
        match tokio::time::timeout_at(deadline, future).await {
            Ok(result) => result.map_err(|status| deadline_status(status, timeout)),
            Err(_) => Err(deadline_exceeded(timeout)),
        }
    }

    /// The items of `stream` until the deadline; past it, one `DEADLINE_EXCEEDED` item, then
    /// the end.
    pub(crate) fn bound<T: Send + 'static>(
        &self,
        stream: impl Stream<Item = Result<T, Status>> + Send + 'static,
    ) -> BoxStream<'static, Result<T, Status>> {
        let Some((deadline, timeout)) = self.0 else {
            return stream.boxed();
        };
        let sleep = Box::pin(tokio::time::sleep_until(deadline));
        stream::unfold(Some((stream.boxed(), sleep)), move |state| async move {
            let (mut inner, mut sleep) = state?;
            tokio::select! {
                biased;
                item = inner.next() => item.map(|item| {
                    let item = item.map_err(|status| deadline_status(status, timeout));
                    (item, Some((inner, sleep)))
                }),
                () = &mut sleep => Some((Err(deadline_exceeded(timeout)), None)),
            }
        })
        .boxed()
    }
}

fn deadline_exceeded(timeout: Duration) -> Status {
    Status::deadline_exceeded(format!(
        "the call did not complete within its timeout of {timeout:?}"
    ))
}

/// tonic reports its own enforcement of `grpc-timeout` (in the client's channel or in the
/// server) as `CANCELLED: Timeout expired`; that is this call's deadline passing. The only
/// place the client reads a dependency's message: from the server only the text arrives.
fn deadline_status(status: Status, timeout: Duration) -> Status {
    if status.code() == Code::Cancelled && status.message() == "Timeout expired" {
        deadline_exceeded(timeout)
    } else {
        status
    }
}

/// A unary call with the client's deadline and retries: `call` makes one attempt.
pub(crate) async fn unary<T, R, F, Fut>(
    settings: CallSettings,
    message: T,
    mut call: F,
) -> Result<R>
where
    T: Clone,
    F: FnMut(Request<T>) -> Fut,
    Fut: Future<Output = Result<Response<R>, Status>>,
{
    let deadline = Deadline::start(settings.timeout);
    let mut backoff = Backoff::new(settings.retry, deadline.instant());
    loop {
        match deadline.run(call(deadline.request(message.clone()))).await {
            Ok(response) => return Ok(response.into_inner()),
            Err(status) => backoff.retry_after(Error::from(status)).await?,
        }
    }
}

/// A server-streaming call with the client's deadline, retried (per the policy) only while no
/// message has arrived: `call` makes one attempt.
pub(crate) async fn server_stream<T, R, F, Fut, S>(
    settings: CallSettings,
    message: T,
    mut call: F,
) -> Result<BoxStream<'static, Result<R>>>
where
    T: Clone,
    R: Send + 'static,
    F: FnMut(Request<T>) -> Fut,
    Fut: Future<Output = Result<Response<S>, Status>>,
    S: Stream<Item = Result<R, Status>> + Send + 'static,
{
    let deadline = Deadline::start(settings.timeout);
    let mut backoff = Backoff::new(settings.retry, deadline.instant());
    loop {
        let attempt = deadline.run(async {
            let mut stream =
                deadline.bound(call(deadline.request(message.clone())).await?.into_inner());
            let first = stream.next().await.transpose()?;
            Ok::<_, Status>((first, stream))
        });
        match attempt.await {
            Ok((first, rest)) => {
                let stream = stream::iter(first.map(Ok)).chain(rest);
                return Ok(stream.map(|item| item.map_err(Error::from)).boxed());
            }
            Err(status) => backoff.retry_after(Error::from(status)).await?,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tonic_types::{ErrorDetails, StatusExt};

    use super::*;

    const POLICY: RetryPolicy = RetryPolicy {
        max_attempts: 10,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(2),
    };

    fn status(code: Code) -> Error {
        Error::from(Status::new(code, "x"))
    }

    #[test]
    fn the_ceiling_doubles_up_to_the_maximum() {
        let ceilings: Vec<u128> = (1..=8)
            .map(|n| backoff_ceiling(&POLICY, n).as_millis())
            .collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1600, 2000, 2000, 2000]);
        assert_eq!(backoff_ceiling(&POLICY, 0).as_millis(), 100);
        assert_eq!(backoff_ceiling(&POLICY, 40), POLICY.max_backoff);
        assert_eq!(backoff_ceiling(&POLICY, u32::MAX), POLICY.max_backoff);
        let huge = RetryPolicy {
            initial_backoff: Duration::MAX,
            max_backoff: Duration::MAX,
            ..POLICY
        };
        assert_eq!(backoff_ceiling(&huge, 3), Duration::MAX);
    }

    #[test]
    fn waits_stay_within_zero_and_the_ceiling_and_vary() {
        let unavailable = status(Code::Unavailable);
        for failures in 1..POLICY.max_attempts {
            let ceiling = backoff_ceiling(&POLICY, failures);
            let waits: Vec<Duration> = (0..200)
                .map(|_| next_delay(&POLICY, failures, &unavailable, None).unwrap())
                .collect();
            assert!(waits.iter().all(|w| *w <= ceiling), "{failures}: {waits:?}");
            let (min, max) = (waits.iter().min().unwrap(), waits.iter().max().unwrap());
            // Full jitter: spread over the whole range, not clustered at the ceiling.
            assert!(
                *min < ceiling / 4 && *max > ceiling * 3 / 4,
                "{failures}: {min:?}..{max:?}"
            );
        }
    }

    #[test]
    fn a_server_retry_delay_is_the_least_wait() {
        let details = ErrorDetails::with_retry_info(Some(Duration::from_secs(1)));
        let error = Error::from(Status::with_error_details(
            Code::Unavailable,
            "busy",
            details,
        ));
        for _ in 0..50 {
            let wait = next_delay(&POLICY, 1, &error, None).unwrap();
            assert_eq!(wait, Duration::from_secs(1));
        }
        let wait = next_delay(&POLICY, 7, &error, None).unwrap();
        assert!(wait >= Duration::from_secs(1) && wait <= Duration::from_secs(2));
    }

    #[test]
    fn attempts_run_out() {
        let policy = RetryPolicy {
            max_attempts: 3,
            ..POLICY
        };
        let unavailable = status(Code::Unavailable);
        assert!(next_delay(&policy, 1, &unavailable, None).is_some());
        assert!(next_delay(&policy, 2, &unavailable, None).is_some());
        assert!(next_delay(&policy, 3, &unavailable, None).is_none());
        for never in [
            RetryPolicy::NONE,
            RetryPolicy {
                max_attempts: 0,
                ..POLICY
            },
        ] {
            assert!(next_delay(&never, 1, &unavailable, None).is_none());
        }
    }

    #[tokio::test]
    async fn no_retry_reaches_past_the_deadline() {
        let unavailable = status(Code::Unavailable);
        let soon = Instant::now() + Duration::from_millis(1);
        let policy = RetryPolicy {
            initial_backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(10),
            ..POLICY
        };
        // A wait below 1 ms is (almost) impossible to draw from 0..=10 s: check a few draws.
        let given_up = (0..5)
            .filter(|_| next_delay(&policy, 1, &unavailable, Some(soon)).is_none())
            .count();
        assert!(given_up >= 4, "{given_up}");
        let far = Instant::now() + Duration::from_secs(60);
        assert!(next_delay(&policy, 1, &unavailable, Some(far)).is_some());
    }

    #[test]
    fn final_statuses_are_not_retried() {
        for code in [
            Code::InvalidArgument,
            Code::NotFound,
            Code::FailedPrecondition,
            Code::DataLoss,
            Code::DeadlineExceeded,
            Code::PermissionDenied,
            Code::Internal,
            Code::Unknown,
            Code::Cancelled,
        ] {
            assert!(!is_retryable(&status(code)), "{code:?}");
            assert!(
                next_delay(&POLICY, 1, &status(code), None).is_none(),
                "{code:?}"
            );
        }
        assert!(!is_retryable(&Error::MalformedResponse { what: "x" }));
        assert!(!is_retryable(&Error::NoEndpoint));
    }

    #[test]
    fn resource_exhausted_is_retried_only_with_retry_info_after_its_delay() {
        let details = ErrorDetails::with_retry_info(Some(Duration::from_millis(700)));
        let overloaded = Error::from(Status::with_error_details(
            Code::ResourceExhausted,
            "busy",
            details,
        ));
        assert!(is_retryable(&overloaded));
        for _ in 0..20 {
            let wait = next_delay(&POLICY, 1, &overloaded, None).unwrap();
            assert!(wait >= Duration::from_millis(700), "{wait:?}");
        }
        let too_large = status(Code::ResourceExhausted);
        assert!(!is_retryable(&too_large));
        assert!(next_delay(&POLICY, 1, &too_large, None).is_none());
    }

    #[test]
    fn unavailable_and_local_transport_failures_are_retried() {
        assert!(is_retryable(&status(Code::Unavailable)));
        for code in [Code::Unknown, Code::Internal, Code::Cancelled] {
            let mut local = Status::new(code, "h2 protocol error: connection reset");
            local.set_source(Arc::new(std::io::Error::from(
                std::io::ErrorKind::ConnectionReset,
            )));
            assert!(is_retryable(&Error::from(local)), "{code:?}");
        }
    }

    #[test]
    fn the_tonic_timeout_status_becomes_deadline_exceeded() {
        let timeout = Duration::from_millis(300);
        // The status tonic makes of its own timeout error (client or server side): its text is
        // all that crosses the wire, so this provokes it from tonic rather than restating it.
        let expired = Status::from_error(Box::new(tonic::TimeoutExpired(())));
        let status = deadline_status(expired, timeout);
        assert_eq!(status.code(), Code::DeadlineExceeded);
        assert!(status.message().contains("300ms"), "{}", status.message());
        let other = deadline_status(Status::cancelled("client went away"), timeout);
        assert_eq!(other.code(), Code::Cancelled);
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_ends_a_stream_with_deadline_exceeded() {
        let deadline = Deadline::start(Some(Duration::from_millis(50)));
        let slow = stream::iter([Ok::<u32, Status>(1)]).chain(stream::pending());
        let items: Vec<Result<u32, Status>> = deadline.bound(slow).collect().await;
        assert_eq!(items.len(), 2);
        assert_eq!(*items[0].as_ref().unwrap(), 1);
        assert_eq!(
            items[1].as_ref().unwrap_err().code(),
            Code::DeadlineExceeded
        );

        let endless = Deadline::start(Some(Duration::MAX));
        assert!(endless.instant().is_none());
        let millennia = Deadline::start(Some(Duration::from_secs(400_000 * 365 * 86_400)));
        assert!(
            millennia
                .request(())
                .metadata()
                .get("grpc-timeout")
                .is_some()
        );
        let huge = RetryPolicy {
            initial_backoff: Duration::MAX,
            max_backoff: Duration::MAX,
            ..POLICY
        };
        let soon = Some(Instant::now() + Duration::from_secs(1));
        let unavailable = status(Code::Unavailable);
        assert!((0..5).any(|_| next_delay(&huge, 1, &unavailable, soon).is_none()));

        let none = Deadline::start(None);
        let items: Vec<_> = none
            .bound(stream::iter([Ok::<u32, Status>(1)]))
            .collect()
            .await;
        assert_eq!(items.len(), 1);
        assert!(none.request(()).metadata().get("grpc-timeout").is_none());
        assert!(
            deadline
                .request(())
                .metadata()
                .get("grpc-timeout")
                .is_some()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn unary_calls_retry_transient_failures_only() {
        let settings = CallSettings {
            timeout: None,
            retry: RetryPolicy {
                max_attempts: 4,
                initial_backoff: Duration::from_millis(1),
                max_backoff: Duration::from_millis(2),
            },
        };
        let mut attempts = 0;
        let result = unary(settings, (), |_| {
            attempts += 1;
            let outcome = if attempts < 3 {
                Err(Status::unavailable("later"))
            } else {
                Ok(Response::new(attempts))
            };
            async move { outcome }
        })
        .await;
        assert_eq!(result.unwrap(), 3);

        let mut attempts = 0;
        let result: Result<()> = unary(settings, (), |_| {
            attempts += 1;
            async { Err(Status::not_found("gone")) }
        })
        .await;
        assert_eq!(result.unwrap_err().code(), Some(Code::NotFound));
        assert_eq!(attempts, 1);

        let mut attempts = 0;
        let result: Result<()> = unary(settings, (), |_| {
            attempts += 1;
            async { Err(Status::unavailable("down")) }
        })
        .await;
        assert_eq!(result.unwrap_err().code(), Some(Code::Unavailable));
        assert_eq!(attempts, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn streams_retry_only_before_their_first_message() {
        let settings = CallSettings {
            timeout: None,
            retry: RetryPolicy {
                max_attempts: 3,
                initial_backoff: Duration::from_millis(1),
                max_backoff: Duration::from_millis(2),
            },
        };
        type Items = Vec<Result<u32, Status>>;
        // First attempt: the stream fails before its first message; second: one message, then
        // a failure, which is the stream's last item rather than a retry.
        let mut attempts = 0;
        let stream = server_stream(settings, (), |_| {
            attempts += 1;
            let items: Items = if attempts == 1 {
                vec![Err(Status::unavailable("storage"))]
            } else {
                vec![Ok(7), Err(Status::unavailable("dropped"))]
            };
            async move { Ok(Response::new(stream::iter(items))) }
        })
        .await
        .unwrap();
        let items: Vec<Result<u32>> = stream.collect().await;
        assert_eq!(attempts, 2);
        assert_eq!(*items[0].as_ref().unwrap(), 7);
        assert_eq!(
            items[1].as_ref().unwrap_err().code(),
            Some(Code::Unavailable)
        );
        assert_eq!(items.len(), 2);

        let stream = server_stream(settings, (), |_| async {
            Ok(Response::new(stream::iter(Items::new())))
        })
        .await
        .unwrap();
        assert_eq!(stream.count().await, 0);
    }
}
