//! Plain HTTP servers to serve datasets from: the stock Python `http.server` over a directory, and
//! an in-process server over an in-memory file map that injects faults on demand (error
//! statuses, delays, truncated or corrupted bodies, dropped connections).

use std::{
    collections::{HashMap, VecDeque},
    convert::Infallible,
    net::SocketAddr,
    ops::Range,
    path::Path,
    process::Stdio,
    sync::{Arc, Mutex, MutexGuard},
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
use sha2::{Digest, Sha256};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    net::{TcpListener, TcpStream},
    process::{Child, Command},
    task::{JoinHandle, JoinSet},
};

/// How long a server may take to start listening.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The stock Python file server, `python3 -m http.server`, serving a directory on
/// `127.0.0.1` on a free port. Killed when dropped.
#[derive(Debug)]
pub struct StaticHttpServer {
    child: Child,
    port: u16,
    /// Where the server's stderr (its access log) goes.
    log: tempfile::NamedTempFile,
}

impl StaticHttpServer {
    /// Starts `python3 -m http.server --bind 127.0.0.1 --directory DIR 0` and waits until it
    /// accepts connections.
    ///
    /// # Panics
    /// When python3 cannot be run or the server does not come up.
    pub async fn start(dir: &Path) -> StaticHttpServer {
        let log = tempfile::NamedTempFile::new().expect("temp file for the server log");
        let mut child = Command::new("python3")
            // Unbuffered: the line announcing the port must reach the pipe at once.
            .args([
                "-u",
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(dir)
            .arg("0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log.reopen().expect("reopening the server log"))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("running python3 -m http.server: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        // "Serving HTTP on 127.0.0.1 port 40123 (http://127.0.0.1:40123/) ..."
        let port = tokio::time::timeout(STARTUP_TIMEOUT, async {
            while let Some(line) = lines.next_line().await.ok().flatten() {
                if let Some(port) = line
                    .split_once(" port ")
                    .and_then(|(_, rest)| rest.split_whitespace().next())
                    .and_then(|port| port.parse::<u16>().ok())
                {
                    return Some(port);
                }
            }
            None
        })
        .await
        .ok()
        .flatten();
        let Some(port) = port else {
            let _ = child.start_kill();
            let log = std::fs::read_to_string(log.path()).unwrap_or_default();
            panic!("python3 -m http.server did not announce its port; its stderr:\n{log}");
        };
        wait_until_listening(SocketAddr::from(([127, 0, 0, 1], port))).await;
        StaticHttpServer { child, port, log }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// What the server wrote to stderr so far: one access-log line per request.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

impl Drop for StaticHttpServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn wait_until_listening(addr: SocketAddr) {
    let deadline = tokio::time::Instant::now() + STARTUP_TIMEOUT;
    while TcpStream::connect(addr).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing accepts connections on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A fault [`FaultyHttpServer`] injects into a `GET` or `HEAD` of a path.
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

/// An HTTP/1.1 server in this process, on `127.0.0.1` on a free port, serving an in-memory map of
/// files the way a static web or blob server does (`GET` and `HEAD`, `Content-Length`, a strong
/// `ETag`, `Last-Modified`, single byte ranges, conditional requests, 404 for unknown paths, 405
/// for other methods), and injecting [`Fault`]s on demand. Stopped when dropped.
///
/// Paths are relative to the server's root: `"1/1.json"` is served at `{url}/1/1.json` (a leading
/// `/` is ignored, and request paths are percent-decoded).
#[derive(Debug)]
pub struct FaultyHttpServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

#[derive(Debug, Default)]
struct State {
    files: HashMap<String, File>,
    queued: HashMap<String, VecDeque<Fault>>,
    always: HashMap<String, Fault>,
    requests: HashMap<String, usize>,
    abandoned: HashMap<String, usize>,
}

#[derive(Debug, Clone)]
struct File {
    data: Bytes,
    etag: String,
    last_modified: SystemTime,
}

impl File {
    fn new(data: Bytes) -> File {
        let digest = Sha256::digest(&data);
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        // Whole seconds: the precision of an HTTP date.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        File {
            data,
            etag: format!("\"{hex}\""),
            last_modified: UNIX_EPOCH + Duration::from_secs(now),
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
            .map(|(path, data)| (normalize(&path), File::new(data)))
            .collect();
        let state = Arc::new(Mutex::new(State {
            files,
            ..State::default()
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
        self.lock().files.insert(normalize(path), File::new(data));
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

async fn handle(
    state: Arc<Mutex<State>>,
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
    let (fault, file) = {
        let mut state = state.lock().expect("server state lock");
        *state.requests.entry(path.clone()).or_default() += 1;
        let fault = match state.queued.get_mut(&path).and_then(VecDeque::pop_front) {
            Some(fault) => Some(fault),
            None => state.always.get(&path).cloned(),
        };
        (fault, state.files.get(&path).cloned())
    };
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
    let (mut served, range) = serve_file(&file, request.headers());
    let Some(range) = range.filter(|_| method == Method::GET) else {
        return Ok(served);
    };
    let mut body = file.data.slice(range);
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
        Some(Fault::Truncate(n)) if n < body.len() => {
            *served.body_mut() = truncated(body.slice(..n));
            return Ok(served);
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
    *served.body_mut() = full(body);
    Ok(served)
}

/// The response to a `GET` or `HEAD` of `file`, with an empty body, and for a 200 or 206 the byte
/// range of `file` its body is to hold (none for a 304, 412 or 416).
fn serve_file(file: &File, headers: &HeaderMap) -> (Response<Body>, Option<Range<usize>>) {
    let len = file.data.len();
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
