//! A static web server over a directory that fails a random fraction of its requests, the way a
//! flaky blob store does: `503`, a long delay, a connection reset, or a body cut short after
//! its full `Content-Length` was announced. The soak serves its dataset through it, so the
//! service's retries, and its handling of a read that fails midway, run all the time.
//!
//! It answers `GET` and `HEAD` like a blob server (`Content-Length`, a strong `ETag`,
//! `Last-Modified`, one byte range, `If-Match`/`If-None-Match`), 404 for unknown paths, 405 for
//! other methods. Files are read from disk on every request, so the soak's memory stays small.

use std::{
    collections::HashMap,
    convert::Infallible,
    hash::{DefaultHasher, Hash, Hasher},
    net::SocketAddr,
    ops::Range,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Empty, Full, StreamBody, combinators::BoxBody};
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Frame, Incoming},
    header::{self, HeaderMap, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::{
    net::TcpListener,
    task::{JoinHandle, JoinSet},
};

/// A fault the server injects into one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `503 Service Unavailable` with an empty body.
    Unavailable,
    /// Waits this long, then answers normally.
    Delay(Duration),
    /// Closes the connection without answering.
    Reset,
    /// Announces the full `Content-Length`, sends half the body, closes the connection.
    Truncate,
}

/// How many faults of each kind were injected, and how many requests were served.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FaultCounts {
    pub requests: u64,
    pub unavailable: u64,
    pub delay: u64,
    pub reset: u64,
    pub truncate: u64,
}

impl FaultCounts {
    /// Faults of every kind.
    pub fn total(&self) -> u64 {
        self.unavailable + self.delay + self.reset + self.truncate
    }
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    unavailable: AtomicU64,
    delay: AtomicU64,
    reset: AtomicU64,
    truncate: AtomicU64,
}

/// A file's identity, taken once when the server starts.
#[derive(Debug, Clone)]
struct FileMeta {
    etag: String,
    last_modified: SystemTime,
}

#[derive(Debug)]
struct State {
    root: PathBuf,
    files: HashMap<String, FileMeta>,
    /// Faulty requests per million.
    fault_ppm: AtomicU32,
    max_delay: Duration,
    counters: Counters,
    rng: Mutex<u64>,
}

/// The server; stopped when dropped.
#[derive(Debug)]
pub struct FaultyFileServer {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl FaultyFileServer {
    /// Serves every file under `root` (read now for their `ETag`s) on `127.0.0.1` on a free
    /// port, without faults until [`Self::set_fault_rate`]. Delays last up to `max_delay`.
    ///
    /// # Errors
    ///
    /// The directory cannot be read, or nothing can listen.
    pub async fn start(root: &Path, seed: u64, max_delay: Duration) -> std::io::Result<Self> {
        let mut files = HashMap::new();
        index(root, root, &mut files)?;
        let state = Arc::new(State {
            root: root.to_path_buf(),
            files,
            fault_ppm: AtomicU32::new(0),
            max_delay,
            counters: Counters::default(),
            rng: Mutex::new(seed),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(accept_loop(listener, state.clone()));
        Ok(FaultyFileServer { addr, state, task })
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Makes `fraction` (0..=1) of the following requests faulty, each fault of a kind drawn
    /// uniformly.
    pub fn set_fault_rate(&self, fraction: f64) {
        let ppm = (fraction.clamp(0.0, 1.0) * 1e6).round() as u32;
        self.state.fault_ppm.store(ppm, Ordering::Relaxed);
    }

    /// The counts so far.
    pub fn counts(&self) -> FaultCounts {
        let c = &self.state.counters;
        FaultCounts {
            requests: c.requests.load(Ordering::Relaxed),
            unavailable: c.unavailable.load(Ordering::Relaxed),
            delay: c.delay.load(Ordering::Relaxed),
            reset: c.reset.load(Ordering::Relaxed),
            truncate: c.truncate.load(Ordering::Relaxed),
        }
    }
}

impl Drop for FaultyFileServer {
    fn drop(&mut self) {
        // The connections are tasks of the accept loop's JoinSet: aborted with it.
        self.task.abort();
    }
}

/// Every file under `dir`, by its path relative to `root` with `/` separators.
fn index(root: &Path, dir: &Path, files: &mut HashMap<String, FileMeta>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            index(root, &path, files)?;
            continue;
        }
        let data = std::fs::read(&path)?;
        let mut hasher = DefaultHasher::new();
        data.hash(&mut hasher);
        let relative = path
            .strip_prefix(root)
            .expect("under the root")
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        // Whole seconds: the precision of an HTTP date.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        files.insert(
            relative,
            FileMeta {
                etag: format!("\"{:x}-{:016x}\"", data.len(), hasher.finish()),
                last_modified: UNIX_EPOCH + Duration::from_secs(now),
            },
        );
    }
    Ok(())
}

impl State {
    /// The fault for the next request, if it draws one.
    fn draw_fault(&self) -> Option<Fault> {
        let ppm = self.fault_ppm.load(Ordering::Relaxed);
        if ppm == 0 {
            return None;
        }
        let (roll, kind, delay) = {
            let mut rng = self.rng.lock().expect("rng lock");
            (
                splitmix(&mut rng) % 1_000_000,
                splitmix(&mut rng) % 4,
                splitmix(&mut rng),
            )
        };
        if roll >= u64::from(ppm) {
            return None;
        }
        let c = &self.counters;
        Some(match kind {
            0 => {
                c.unavailable.fetch_add(1, Ordering::Relaxed);
                Fault::Unavailable
            }
            1 => {
                c.delay.fetch_add(1, Ordering::Relaxed);
                let max_ms = self.max_delay.as_millis().max(1) as u64;
                Fault::Delay(Duration::from_millis(delay % max_ms))
            }
            2 => {
                c.reset.fetch_add(1, Ordering::Relaxed);
                Fault::Reset
            }
            _ => {
                c.truncate.fetch_add(1, Ordering::Relaxed);
                Fault::Truncate
            }
        })
    }
}

/// SplitMix64: small, fast and good enough to pick faults.
pub fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = BoxBody<Bytes, BoxError>;

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // Out of file descriptors, say: let connections finish.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let state = state.clone();
                connections.spawn(async move {
                    let service = service_fn(move |request| handle(state.clone(), request));
                    // Errors are the faults injected and clients going away.
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn handle(state: Arc<State>, request: Request<Incoming>) -> Result<Response<Body>, BoxError> {
    let method = request.method().clone();
    if method != Method::GET && method != Method::HEAD {
        let mut response = response(StatusCode::METHOD_NOT_ALLOWED, empty());
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Ok(response);
    }
    state.counters.requests.fetch_add(1, Ordering::Relaxed);
    let fault = state.draw_fault();
    match fault {
        Some(Fault::Reset) => return Err("injected fault: connection reset".into()),
        Some(Fault::Unavailable) => return Ok(response(StatusCode::SERVICE_UNAVAILABLE, empty())),
        Some(Fault::Delay(delay)) => tokio::time::sleep(delay).await,
        _ => {}
    }
    let path = request.uri().path().trim_start_matches('/').to_string();
    let Some(meta) = state.files.get(&path) else {
        return Ok(response(StatusCode::NOT_FOUND, empty()));
    };
    let data = match tokio::fs::read(state.root.join(&path)).await {
        Ok(data) => Bytes::from(data),
        Err(_) => return Ok(response(StatusCode::INTERNAL_SERVER_ERROR, empty())),
    };
    let (mut served, range) = serve_file(meta, data.len(), request.headers());
    let Some(range) = range.filter(|_| method == Method::GET) else {
        return Ok(served);
    };
    let body = data.slice(range);
    if fault == Some(Fault::Truncate) && body.len() > 1 {
        *served.body_mut() = truncated(body.slice(..body.len() / 2));
    } else {
        *served.body_mut() = full(body);
    }
    Ok(served)
}

/// The response to a `GET` or `HEAD` of a file of `len` bytes, with an empty body, and for a
/// 200 or 206 the byte range its body is to hold (none for a 304, 412 or 416).
fn serve_file(
    meta: &FileMeta,
    len: usize,
    headers: &HeaderMap,
) -> (Response<Body>, Option<Range<usize>>) {
    let mut response = response(StatusCode::OK, empty());
    let out = response.headers_mut();
    out.insert(header::ETAG, value(&meta.etag));
    out.insert(
        header::LAST_MODIFIED,
        value(&httpdate::fmt_http_date(meta.last_modified)),
    );
    out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));

    let etag_matches = |name: header::HeaderName| {
        headers.get(name).and_then(|v| v.to_str().ok()).map(|v| {
            v.split(',')
                .map(|tag| tag.trim().trim_start_matches("W/"))
                .any(|tag| tag == "*" || tag == meta.etag)
        })
    };
    if etag_matches(header::IF_MATCH) == Some(false) {
        *response.status_mut() = StatusCode::PRECONDITION_FAILED;
        return (response, None);
    }
    if etag_matches(header::IF_NONE_MATCH) == Some(true) {
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        return (response, None);
    }
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_range(v, len));
    let out = response.headers_mut();
    match range {
        None => {
            out.insert(header::CONTENT_LENGTH, value(&len.to_string()));
            (response, Some(0..len))
        }
        Some(None) => {
            out.insert(header::CONTENT_RANGE, value(&format!("bytes */{len}")));
            *response.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            (response, None)
        }
        Some(Some((start, end))) => {
            out.insert(header::CONTENT_LENGTH, value(&(end - start).to_string()));
            out.insert(
                header::CONTENT_RANGE,
                value(&format!("bytes {start}-{}/{len}", end - 1)),
            );
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
            (response, Some(start..end))
        }
    }
}

/// A `Range` header over a body of `len` bytes: `None` when it is absent in effect (malformed,
/// not bytes, or several ranges: the whole body is served), `Some(None)` when unsatisfiable,
/// else the range `[start, end)`. Forms: `bytes=a-b`, `bytes=a-`, `bytes=-n`.
fn parse_range(header: &str, len: usize) -> Option<Option<(usize, usize)>> {
    let spec = header.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.trim().split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        let suffix: usize = last.parse().ok()?;
        if suffix == 0 || len == 0 {
            return Some(None);
        }
        return Some(Some((len - suffix.min(len), len)));
    }
    let first: usize = first.parse().ok()?;
    let last: Option<usize> = if last.is_empty() {
        None
    } else {
        Some(last.parse().ok()?)
    };
    if last.is_some_and(|last| last < first) {
        return None;
    }
    if first >= len {
        return Some(None);
    }
    let end = last.map_or(len, |last| (last + 1).min(len));
    Some(Some((first, end)))
}

/// A body that sends `prefix`, then fails: hyper then closes the connection mid-body. The
/// pause before failing lets hyper flush the head and `prefix` to the socket first.
fn truncated(prefix: Bytes) -> Body {
    let data = futures::stream::iter([Ok(Frame::data(prefix))]);
    let failure = futures::stream::once(async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        Err::<Frame<Bytes>, BoxError>("injected fault: truncated body".into())
    });
    BodyExt::boxed(StreamBody::new(data.chain(failure)))
}

fn response(status: StatusCode, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
}

fn empty() -> Body {
    Empty::new()
        .map_err(|never: Infallible| match never {})
        .boxed()
}

fn full(data: Bytes) -> Body {
    Full::new(data)
        .map_err(|never: Infallible| match never {})
        .boxed()
}

fn value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).expect("a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_read_as_blob_servers_read_them() {
        assert_eq!(parse_range("bytes=0-9", 100), Some(Some((0, 10))));
        assert_eq!(parse_range("bytes=90-", 100), Some(Some((90, 100))));
        assert_eq!(parse_range("bytes=-5", 100), Some(Some((95, 100))));
        assert_eq!(parse_range("bytes=100-", 100), Some(None));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
    }

    #[tokio::test]
    async fn every_request_is_faulty_at_rate_one_and_none_at_rate_zero() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("0")).unwrap();
        std::fs::write(dir.path().join("0/1.json"), b"{}").unwrap();
        let server = FaultyFileServer::start(dir.path(), 7, Duration::from_millis(1))
            .await
            .unwrap();
        let state = &server.state;
        assert!((0..100).all(|_| state.draw_fault().is_none()));
        server.set_fault_rate(1.0);
        assert!((0..100).all(|_| state.draw_fault().is_some()));
        let counts = server.counts();
        assert_eq!(counts.total(), 100);
        assert!(counts.unavailable > 0 && counts.delay > 0 && counts.reset > 0);
        assert!(counts.truncate > 0);
        assert!(state.files.contains_key("0/1.json"));
    }
}
