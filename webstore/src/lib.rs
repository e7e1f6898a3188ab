//! A web server that serves files the way a static web or blob server does, and fails on
//! demand: the storage the end-to-end tests and the soak serve datasets from.
//!
//! [`FaultyHttpServer`] is an HTTP/1.1 server in this process on `127.0.0.1` on a free port. It
//! answers `GET` and `HEAD` (`Content-Length`, a strong `ETag`, `Last-Modified`, a whole body's
//! `Content-MD5` as Azure Blob sends it, one byte range,
//! `If-Match`/`If-None-Match`/`If-(Un)Modified-Since`), 404 for unknown paths and 405 for other
//! methods. Its files come from memory ([`FaultyHttpServer::start`]) or from a directory read on
//! every request, so that a large dataset costs no memory ([`FaultyHttpServer::start_dir`]).
//!
//! It injects [`Fault`]s two ways: scripted per path ([`FaultyHttpServer::inject`],
//! [`FaultyHttpServer::inject_always`]) for tests that need one failure at one place, and at
//! random, a fraction of all requests ([`FaultyHttpServer::set_fault_rate`]), for the soak.
//! [`FaultyHttpServer::counts`] says how many of each were injected.
//!
//! It can also answer as a store far away does ([`FaultyHttpServer::set_network`]): each
//! response waits a time to first byte, and bodies are paced to a bandwidth per connection and
//! one over all connections, for the benchmark of remote storage.

use std::{
    collections::{HashMap, VecDeque},
    convert::Infallible,
    hash::{DefaultHasher, Hash, Hasher},
    net::SocketAddr,
    ops::Range,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::Engine as _;
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
use md5::Digest as _;
use serde::Serialize;
use tokio::{
    net::TcpListener,
    task::{JoinHandle, JoinSet},
};

/// How the store's network behaves ([`FaultyHttpServer::set_network`]). The default is this
/// machine's loopback: no wait, no cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Network {
    /// Waited before each response (time to first byte), as a blob store's GET waits.
    pub first_byte: Duration,
    /// Bytes a second of one connection's response bodies; `None`: no cap.
    pub per_connection: Option<u64>,
    /// Bytes a second of every response body together; `None`: no cap.
    pub total: Option<u64>,
}

/// A bandwidth cap: a rate limiter whose cells are [`PACE_UNIT`] bytes.
type Limiter = governor::DefaultDirectRateLimiter;

/// The bytes one cell of a [`Limiter`] stands for.
const PACE_UNIT: usize = 1024;

/// Paced bodies are sent in pieces of this many bytes.
const PACE_PIECE: usize = 16 * PACE_UNIT;

/// A cap of `bytes_per_second`, empty at first. Its burst is 5 ms of its rate (at least four
/// pieces): a timer wakes a paced body about once a millisecond, so a burst of a few pieces
/// would hold a fast cap far below its rate.
fn limiter(bytes_per_second: u64) -> Arc<Limiter> {
    let cells = u32::try_from(bytes_per_second / PACE_UNIT as u64)
        .unwrap_or(u32::MAX)
        .max(1);
    let burst = (cells / 200).max((4 * PACE_PIECE / PACE_UNIT) as u32);
    let burst = std::num::NonZeroU32::new(burst).expect("not 0");
    let quota = governor::Quota::per_second(std::num::NonZeroU32::new(cells).expect("at least 1"))
        .allow_burst(burst);
    let limiter = governor::RateLimiter::direct(quota);
    // A new connection does not start with a burst in hand.
    let _ = limiter.check_n(burst);
    Arc::new(limiter)
}

/// The caps a body is paced by: its connection's and the total.
#[derive(Clone, Default)]
struct Pacing {
    caps: Vec<Arc<Limiter>>,
}

/// A fault injected into a `GET` or `HEAD` of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Responds with this status and an empty body.
    Status(u16),
    /// Waits this long, then responds normally.
    Delay(Duration),
    /// Sends the normal status and headers (with the full `Content-Length`), then only the first
    /// N bytes of the body, then closes the connection: the client sees an incomplete body.
    /// A `HEAD`, or N not below the body's length, is served normally.
    Truncate(usize),
    /// [`Fault::Truncate`] after half the body (a body of one byte or none is served normally).
    TruncateHalf,
    /// Responds normally but with some bytes in the middle of the body flipped (same length and
    /// headers). A `HEAD` or an empty body is served normally.
    Corrupt,
    /// Closes the connection without responding.
    Reset,
    /// Sends the normal status and headers, then the body in 64 pieces with this pause before
    /// each: a slow read. A body dropped before its end (the client went away) is counted by
    /// [`FaultyHttpServer::abandoned`]. A `HEAD` is served normally.
    Drip(Duration),
}

/// How many requests were served and how many faults of each kind injected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FaultCounts {
    pub requests: u64,
    /// [`Fault::Status`] (the random faults answer `503 Service Unavailable`).
    pub unavailable: u64,
    pub delay: u64,
    pub reset: u64,
    /// [`Fault::Truncate`] and [`Fault::TruncateHalf`].
    pub truncate: u64,
    pub corrupt: u64,
    pub drip: u64,
}

impl FaultCounts {
    /// Faults of every kind.
    pub fn total(&self) -> u64 {
        self.unavailable + self.delay + self.reset + self.truncate + self.corrupt + self.drip
    }

    fn count(&mut self, fault: &Fault) {
        match fault {
            Fault::Status(_) => self.unavailable += 1,
            Fault::Delay(_) => self.delay += 1,
            Fault::Truncate(_) | Fault::TruncateHalf => self.truncate += 1,
            Fault::Corrupt => self.corrupt += 1,
            Fault::Reset => self.reset += 1,
            Fault::Drip(_) => self.drip += 1,
        }
    }
}

/// The random faults: which fraction of requests gets one, drawn how.
#[derive(Debug)]
struct RandomFaults {
    /// Faulty requests per million.
    ppm: u32,
    rng: u64,
    max_delay: Duration,
}

impl RandomFaults {
    /// The fault for the next request, if it draws one: `503`, a delay below `max_delay`, a
    /// reset, a body cut in half or a body with bytes changed, each as likely.
    fn draw(&mut self) -> Option<Fault> {
        if self.ppm == 0 {
            return None;
        }
        let roll = splitmix(&mut self.rng) % 1_000_000;
        let kind = splitmix(&mut self.rng) % 5;
        let delay = splitmix(&mut self.rng);
        if roll >= u64::from(self.ppm) {
            return None;
        }
        Some(match kind {
            0 => Fault::Status(503),
            1 => {
                let max_ms = u64::try_from(self.max_delay.as_millis()).unwrap_or(u64::MAX);
                Fault::Delay(Duration::from_millis(delay % max_ms.max(1)))
            }
            2 => Fault::Reset,
            3 => Fault::TruncateHalf,
            _ => Fault::Corrupt,
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

/// The server; stopped when dropped.
///
/// Paths are relative to the server's root: `"1/1.json"` is served at `{url}/1/1.json` (a leading
/// `/` is ignored, and request paths are percent-decoded).
#[derive(Debug)]
pub struct FaultyHttpServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

#[derive(Debug)]
struct State {
    files: HashMap<String, File>,
    queued: HashMap<String, VecDeque<Fault>>,
    always: HashMap<String, Fault>,
    random: RandomFaults,
    counts: FaultCounts,
    requests: HashMap<String, usize>,
    abandoned: HashMap<String, usize>,
    network: Network,
    /// The cap over all connections, per [`Network::total`].
    total_cap: Option<Arc<Limiter>>,
}

/// A file's content (or where to read it) and its identity.
#[derive(Debug, Clone)]
struct File {
    content: Content,
    etag: String,
    /// The content's MD5, in base64, as `Content-MD5` carries it.
    md5: String,
    last_modified: SystemTime,
}

#[derive(Debug, Clone)]
enum Content {
    Memory(Bytes),
    Disk(PathBuf),
}

impl File {
    fn new(content: Content, data: &[u8]) -> File {
        let mut hasher = DefaultHasher::new();
        data.hash(&mut hasher);
        // Whole seconds: the precision of an HTTP date.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(data));
        File {
            content,
            etag: format!("\"{:x}-{:016x}\"", data.len(), hasher.finish()),
            md5,
            last_modified: UNIX_EPOCH + Duration::from_secs(now),
        }
    }

    async fn data(&self) -> std::io::Result<Bytes> {
        match &self.content {
            Content::Memory(data) => Ok(data.clone()),
            Content::Disk(path) => tokio::fs::read(path).await.map(Bytes::from),
        }
    }
}

impl FaultyHttpServer {
    /// Serves `files` (path → content). Must be called within a Tokio runtime.
    ///
    /// # Panics
    /// When it cannot listen.
    pub fn start(files: HashMap<String, Bytes>) -> FaultyHttpServer {
        let files = files
            .into_iter()
            .map(|(path, data)| {
                let file = File::new(Content::Memory(data.clone()), &data);
                (normalize(&path), file)
            })
            .collect();
        Self::serve(files)
    }

    /// Serves every file under `root`, each read from disk on every request (read once now, for
    /// its `ETag`). Must be called within a Tokio runtime.
    ///
    /// # Errors
    /// The directory cannot be read.
    ///
    /// # Panics
    /// When it cannot listen.
    pub fn start_dir(root: &Path) -> std::io::Result<FaultyHttpServer> {
        let mut files = HashMap::new();
        index(root, root, &mut files)?;
        Ok(Self::serve(files))
    }

    fn serve(files: HashMap<String, File>) -> FaultyHttpServer {
        let state = Arc::new(Mutex::new(State {
            files,
            queued: HashMap::new(),
            always: HashMap::new(),
            random: RandomFaults {
                ppm: 0,
                rng: 0,
                max_delay: Duration::from_millis(1),
            },
            counts: FaultCounts::default(),
            requests: HashMap::new(),
            abandoned: HashMap::new(),
            network: Network::default(),
            total_cap: None,
        }));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("local addr");
        let listener = TcpListener::from_std(listener).expect("within a Tokio runtime");
        let task = tokio::spawn(accept_loop(listener, state.clone()));
        FaultyHttpServer { addr, state, task }
    }

    /// Answers from now on as a store behind `network`: each response first waits
    /// `first_byte`, and bodies are paced to the caps (a connection's cap applies to the
    /// connections opened after this call).
    pub fn set_network(&self, network: Network) {
        let mut state = self.lock();
        state.total_cap = network.total.map(limiter);
        state.network = network;
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queues faults for `path`: each of the following `GET`/`HEAD` requests to it consumes one,
    /// in order; once they are used up (and without a persistent fault) the path is served
    /// normally. Appends to faults already queued.
    ///
    /// # Panics
    /// On a `Fault::Status` that is not a valid HTTP status code.
    pub fn inject(&self, path: &str, faults: Vec<Fault>) {
        faults.iter().for_each(check_fault);
        self.lock()
            .queued
            .entry(normalize(path))
            .or_default()
            .extend(faults);
    }

    /// Injects `fault` into every `GET`/`HEAD` of `path` (once the queued faults are used up),
    /// until [`Self::clear_faults`]. Replaces an earlier persistent fault of the path.
    ///
    /// # Panics
    /// On a `Fault::Status` that is not a valid HTTP status code.
    pub fn inject_always(&self, path: &str, fault: Fault) {
        check_fault(&fault);
        self.lock().always.insert(normalize(path), fault);
    }

    /// Removes the queued and persistent faults of `path`.
    pub fn clear_faults(&self, path: &str) {
        let path = normalize(path);
        let mut state = self.lock();
        state.queued.remove(&path);
        state.always.remove(&path);
    }

    /// Makes `fraction` (0..=1) of the following requests of any path faulty (those without a
    /// scripted fault), each with a fault of a kind drawn uniformly from a `503`, a delay below
    /// `max_delay`, a reset, a body cut in half and a body with bytes changed (which its
    /// `Content-MD5` then gives away). The draws follow from `seed`.
    pub fn set_fault_rate(&self, fraction: f64, seed: u64, max_delay: Duration) {
        let ppm = (fraction.clamp(0.0, 1.0) * 1e6).round() as u32;
        self.lock().random = RandomFaults {
            ppm,
            rng: seed,
            max_delay,
        };
    }

    /// The requests served and faults injected so far.
    pub fn counts(&self) -> FaultCounts {
        self.lock().counts
    }

    /// How many `GET` and `HEAD` requests reached `path` so far (faulted ones included).
    pub fn requests(&self, path: &str) -> usize {
        self.lock()
            .requests
            .get(&normalize(path))
            .copied()
            .unwrap_or(0)
    }

    /// How many dripping bodies of `path` ([`Fault::Drip`]) the server stopped sending because
    /// the client closed the connection before their end.
    pub fn abandoned(&self, path: &str) -> usize {
        self.lock()
            .abandoned
            .get(&normalize(path))
            .copied()
            .unwrap_or(0)
    }

    /// Adds or replaces a file (with a new `ETag` and `Last-Modified`).
    pub fn put(&self, path: &str, data: Bytes) {
        let file = File::new(Content::Memory(data.clone()), &data);
        self.lock().files.insert(normalize(path), file);
    }

    /// Removes a file: it is a 404 from now on.
    pub fn remove(&self, path: &str) {
        self.lock().files.remove(&normalize(path));
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("server state lock")
    }
}

impl Drop for FaultyHttpServer {
    fn drop(&mut self) {
        // The connections are tasks of the accept loop's JoinSet: aborted with it.
        self.task.abort();
    }
}

/// Every file under `dir`, by its path relative to `root` with `/` separators.
fn index(root: &Path, dir: &Path, files: &mut HashMap<String, File>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            index(root, &path, files)?;
            continue;
        }
        let data = std::fs::read(&path)?;
        let relative = path
            .strip_prefix(root)
            .expect("under the root")
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        files.insert(relative, File::new(Content::Disk(path), &data));
    }
    Ok(())
}

fn check_fault(fault: &Fault) {
    if let Fault::Status(code) = fault {
        assert!(
            (200..=599).contains(code) && StatusCode::from_u16(*code).is_ok(),
            "Fault::Status({code}): not a final HTTP status code"
        );
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = BoxBody<Bytes, BoxError>;

async fn accept_loop(listener: TcpListener, state: Arc<Mutex<State>>) {
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
                let connection_cap = state
                    .lock()
                    .expect("server state lock")
                    .network
                    .per_connection
                    .map(limiter);
                connections.spawn(async move {
                    let service = service_fn(move |request| {
                        handle(state.clone(), connection_cap.clone(), request)
                    });
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

async fn handle(
    state: Arc<Mutex<State>>,
    connection_cap: Option<Arc<Limiter>>,
    request: Request<Incoming>,
) -> Result<Response<Body>, BoxError> {
    let method = request.method().clone();
    if method != Method::GET && method != Method::HEAD {
        let mut response = response(StatusCode::METHOD_NOT_ALLOWED, empty());
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Ok(response);
    }
    let path = normalize(&percent_decode(request.uri().path()));
    let answer = {
        let mut state = state.lock().expect("server state lock");
        *state.requests.entry(path.clone()).or_default() += 1;
        state.counts.requests += 1;
        let scripted = match state.queued.get_mut(&path).and_then(VecDeque::pop_front) {
            Some(fault) => Some(fault),
            None => state.always.get(&path).cloned(),
        };
        let fault = scripted.or_else(|| state.random.draw());
        if let Some(fault) = &fault {
            state.counts.count(fault);
        }
        let pacing = Pacing {
            caps: connection_cap
                .into_iter()
                .chain(state.total_cap.clone())
                .collect(),
        };
        (
            fault,
            state.files.get(&path).cloned(),
            state.network.first_byte,
            pacing,
        )
    };
    let (fault, file, first_byte, pacing) = answer;
    if !first_byte.is_zero() {
        tokio::time::sleep(first_byte).await;
    }
    match fault {
        Some(Fault::Reset) => return Err("injected fault: connection reset".into()),
        Some(Fault::Status(code)) => {
            let status = StatusCode::from_u16(code).expect("a valid HTTP status code");
            return Ok(response(status, empty()));
        }
        Some(Fault::Delay(delay)) => tokio::time::sleep(delay).await,
        _ => {}
    }
    let Some(file) = file else {
        return Ok(response(StatusCode::NOT_FOUND, empty()));
    };
    let Ok(data) = file.data().await else {
        return Ok(response(StatusCode::INTERNAL_SERVER_ERROR, empty()));
    };
    let (mut served, range) = serve_file(&file, data.len(), request.headers());
    let Some(range) = range.filter(|_| method == Method::GET) else {
        return Ok(served);
    };
    let mut body = data.slice(range);
    let cut = match fault {
        Some(Fault::Truncate(n)) => Some(n),
        Some(Fault::TruncateHalf) if body.len() > 1 => Some(body.len() / 2),
        _ => None,
    };
    if let Some(n) = cut.filter(|&n| n < body.len()) {
        *served.body_mut() = truncated(body.slice(..n));
        return Ok(served);
    }
    match fault {
        Some(Fault::Corrupt) if !body.is_empty() => {
            let mut bytes = body.to_vec();
            let middle = bytes.len() / 2;
            let end = (middle + 4).min(bytes.len());
            for byte in &mut bytes[middle.saturating_sub(4)..end] {
                *byte ^= 0xff;
            }
            body = Bytes::from(bytes);
        }
        Some(Fault::Drip(pause)) => {
            *served.body_mut() = dripping(
                body,
                pause,
                Abandoned {
                    state,
                    path,
                    sent: false,
                },
            );
            return Ok(served);
        }
        _ => {}
    }
    *served.body_mut() = if pacing.caps.is_empty() {
        full(body)
    } else {
        paced(body, pacing)
    };
    Ok(served)
}

/// `data` sent in pieces, each waiting until every cap of `pacing` lets it through.
fn paced(data: Bytes, pacing: Pacing) -> Body {
    let pieces: Vec<Bytes> = (0..data.len())
        .step_by(PACE_PIECE)
        .map(|start| data.slice(start..(start + PACE_PIECE).min(data.len())))
        .collect();
    let stream = futures::stream::iter(pieces).then(move |piece| {
        let caps = pacing.caps.clone();
        async move {
            let cells = u32::try_from(piece.len().div_ceil(PACE_UNIT))
                .ok()
                .and_then(std::num::NonZeroU32::new)
                .expect("a piece holds 1 to 16 cells");
            for cap in &caps {
                cap.until_n_ready(cells)
                    .await
                    .expect("a piece is within the burst");
            }
            Ok::<_, BoxError>(Frame::data(piece))
        }
    });
    BodyExt::boxed(StreamBody::new(stream))
}

/// The response to a `GET` or `HEAD` of `file` (of `len` bytes), with an empty body, and for a
/// 200 or 206 the byte range of the file its body is to hold (none for a 304, 412 or 416).
fn serve_file(
    file: &File,
    len: usize,
    headers: &HeaderMap,
) -> (Response<Body>, Option<Range<usize>>) {
    let last_modified = httpdate::fmt_http_date(file.last_modified);
    let mut response = response(StatusCode::OK, empty());
    let out = response.headers_mut();
    out.insert(header::ETAG, value(&file.etag));
    out.insert(header::LAST_MODIFIED, value(&last_modified));
    out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));

    let etag_matches = |name: header::HeaderName| {
        headers.get(name).and_then(|v| v.to_str().ok()).map(|v| {
            v.split(',')
                .map(|tag| tag.trim().trim_start_matches("W/"))
                .any(|tag| tag == "*" || tag == file.etag)
        })
    };
    let date = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
    };
    if etag_matches(header::IF_MATCH) == Some(false)
        || date(header::IF_UNMODIFIED_SINCE).is_some_and(|since| file.last_modified > since)
    {
        *response.status_mut() = StatusCode::PRECONDITION_FAILED;
        return (response, None);
    }
    let not_modified = match etag_matches(header::IF_NONE_MATCH) {
        Some(matches) => matches,
        None => date(header::IF_MODIFIED_SINCE).is_some_and(|since| file.last_modified <= since),
    };
    if not_modified {
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
            // As Azure Blob does for a whole blob: the MD5 of what the body should be.
            out.insert("content-md5", value(&file.md5));
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

/// A `Range` header over a body of `len` bytes: `None` when it is absent in effect (malformed, not
/// bytes, or several ranges: the whole body is served), `Some(None)` when unsatisfiable, else the
/// range `[start, end)`. Forms: `bytes=a-b`, `bytes=a-`, `bytes=-n`.
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

/// Counts a dripping body of `path` as abandoned when dropped before its end.
struct Abandoned {
    state: Arc<Mutex<State>>,
    path: String,
    sent: bool,
}

impl Drop for Abandoned {
    fn drop(&mut self) {
        if self.sent {
            return;
        }
        if let Ok(mut state) = self.state.lock() {
            *state.abandoned.entry(self.path.clone()).or_default() += 1;
        }
    }
}

/// `data` in 64 pieces, each after `pause`; `abandoned` is defused once the last is sent.
fn dripping(data: Bytes, pause: Duration, abandoned: Abandoned) -> Body {
    let piece = data.len().div_ceil(64).max(1);
    let pieces: Vec<Bytes> = (0..data.len())
        .step_by(piece)
        .map(|start| data.slice(start..(start + piece).min(data.len())))
        .collect();
    let count = pieces.len();
    let mut abandoned = Some(abandoned);
    let stream = futures::stream::iter(pieces.into_iter().enumerate()).then(move |(i, piece)| {
        let done = (i + 1 == count).then(|| abandoned.take()).flatten();
        async move {
            tokio::time::sleep(pause).await;
            if let Some(mut done) = done {
                done.sent = true;
            }
            Ok::<_, BoxError>(Frame::data(piece))
        }
    });
    BodyExt::boxed(StreamBody::new(stream))
}

/// A body that sends `prefix`, then fails: hyper then closes the connection mid-body. The pause
/// before failing lets hyper flush the head and `prefix` to the socket first.
fn truncated(prefix: Bytes) -> Body {
    let data = (!prefix.is_empty()).then(|| Ok(Frame::data(prefix)));
    let failure = futures::stream::once(async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        Err::<Frame<Bytes>, BoxError>("injected fault: truncated body".into())
    });
    BodyExt::boxed(StreamBody::new(futures::stream::iter(data).chain(failure)))
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

fn normalize(path: &str) -> String {
    path.trim_start_matches('/').to_string()
}

/// Decodes `%XX` escapes (invalid ones are kept as they are).
fn percent_decode(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((high * 16 + low) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// The status line of the answer to `GET /path`, or `None` for a connection closed
    /// without one.
    async fn get(server: &FaultyHttpServer, path: &str) -> Option<String> {
        let mut stream = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
        let request = format!("GET /{path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        let answer = String::from_utf8_lossy(&answer);
        answer.lines().next().map(str::to_string)
    }

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
    async fn a_directory_is_served_from_disk_with_scripted_and_random_faults() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("0")).unwrap();
        std::fs::write(dir.path().join("0/1.json"), b"{}").unwrap();
        let server = FaultyHttpServer::start_dir(dir.path()).unwrap();
        assert_eq!(
            get(&server, "0/1.json").await.as_deref(),
            Some("HTTP/1.1 200 OK")
        );
        assert_eq!(
            get(&server, "0/2.json").await.as_deref(),
            Some("HTTP/1.1 404 Not Found")
        );
        server.inject("0/1.json", vec![Fault::Status(500)]);
        assert_eq!(
            get(&server, "0/1.json").await.as_deref(),
            Some("HTTP/1.1 500 Internal Server Error")
        );
        assert_eq!(server.counts().total(), 1);

        server.set_fault_rate(1.0, 7, Duration::from_millis(1));
        for _ in 0..40 {
            let status = get(&server, "0/1.json").await;
            assert_ne!(status.as_deref(), Some("HTTP/1.1 404 Not Found"));
        }
        let counts = server.counts();
        assert_eq!(counts.requests, 43);
        assert_eq!(counts.total(), 41, "{counts:?}");
        assert!(counts.unavailable > 1 && counts.delay > 0 && counts.reset > 0);
        assert!(counts.truncate > 0, "{counts:?}");

        server.set_fault_rate(0.0, 7, Duration::from_millis(1));
        assert_eq!(
            get(&server, "0/1.json").await.as_deref(),
            Some("HTTP/1.1 200 OK")
        );
        assert_eq!(server.counts().total(), 41);
        assert_eq!(server.requests("0/1.json"), 43);
    }

    #[tokio::test]
    async fn a_far_store_waits_before_each_answer_and_paces_its_bodies() {
        let body = Bytes::from(vec![b'x'; 512 * 1024]);
        let server = FaultyHttpServer::start(HashMap::from([("big".to_string(), body)]));
        let timed = |server: &FaultyHttpServer| {
            let addr = server.addr();
            async move {
                let started = std::time::Instant::now();
                let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
                let request = "GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
                stream.write_all(request.as_bytes()).await.unwrap();
                let mut answer = Vec::new();
                stream.read_to_end(&mut answer).await.unwrap();
                assert!(answer.len() > 512 * 1024, "{}", answer.len());
                started.elapsed()
            }
        };
        let near = timed(&server).await;
        server.set_network(Network {
            first_byte: Duration::from_millis(200),
            ..Network::default()
        });
        let far = timed(&server).await;
        assert!(far >= Duration::from_millis(200) && far > near, "{far:?}");
        // 512 KiB at 1 MiB/s per connection: about half a second (less the burst).
        server.set_network(Network {
            per_connection: Some(1 << 20),
            ..Network::default()
        });
        let paced = timed(&server).await;
        assert!(paced >= Duration::from_millis(400), "{paced:?}");
        // Two connections at once under a total cap of 1 MiB/s: about a second for both.
        server.set_network(Network {
            total: Some(1 << 20),
            ..Network::default()
        });
        let started = std::time::Instant::now();
        futures::future::join(timed(&server), timed(&server)).await;
        assert!(
            started.elapsed() >= Duration::from_millis(900),
            "{:?}",
            started.elapsed()
        );
    }
}
