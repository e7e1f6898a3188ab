//! The server under test: a release `activations-server` process started per scenario (so
//! every scenario gets a fresh cache of the size it needs, and its memory can be read), a server
//! in this process (for tests), or one already running elsewhere; and the warm ceiling beside
//! it, an `activations-echo` process (a task of this process for tests).

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use activations_server::{
    DatasetSpec, Datasets, Ready, dataset::OpenOptions, server::ServeError, store::CacheConfig,
};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpListener,
    process::{Child, Command},
    sync::oneshot,
    task::JoinHandle,
};

use crate::{
    echo::{EchoServer, EchoService},
    error::BenchError,
};

/// Name of the benchmark dataset on the servers the launcher starts.
pub const DATASET_NAME: &str = "bench";

/// How a scenario gets its server.
#[derive(Debug, Clone)]
pub enum Launcher {
    /// Runs this `activations-server` binary per scenario, on `127.0.0.1:0`, and the
    /// `activations-echo` binary for the echo ceiling.
    Process {
        binary: PathBuf,
        echo_binary: PathBuf,
    },
    /// Serves from a task of this process per scenario, the echo ceiling too (the tests; no
    /// memory figures).
    InProcess,
    /// Uses a running server for every scenario: its cache is whatever it was started with,
    /// and its memory is read only if its process id is given. The echo ceiling is this
    /// `activations-echo` binary.
    External {
        url: String,
        pid: Option<u32>,
        echo_binary: PathBuf,
    },
}

/// A server a scenario runs against; stopped when dropped.
#[derive(Debug)]
pub struct RunningServer {
    /// `http://HOST:PORT`
    pub url: String,
    /// Its process, when its memory can be read from `/proc`.
    pub pid: Option<u32>,
    /// Whether it was started for this scenario, with the requested cache budget.
    pub fresh: bool,
    _guard: Guard,
}

#[derive(Debug)]
enum Guard {
    /// `kill_on_drop` ends the process.
    Process {
        child: Child,
    },
    Task {
        _shutdown: oneshot::Sender<()>,
        task: JoinHandle<Result<(), ServeError>>,
    },
    /// Stops when dropped.
    Echo {
        _echo: EchoServer,
    },
    None,
}

impl Drop for Guard {
    fn drop(&mut self) {
        match self {
            Guard::Process { .. } | Guard::Echo { .. } | Guard::None => {}
            Guard::Task { task, .. } => task.abort(),
        }
    }
}

impl Launcher {
    /// Starts (or, for [`Launcher::External`], names) a server of the dataset in `dataset_dir`
    /// whose cache holds `cache_bytes` of parsed neurons.
    ///
    /// # Errors
    ///
    /// The binary cannot be run, does not report its address within 60 s, or the dataset
    /// cannot be opened.
    pub async fn start(
        &self,
        dataset_dir: &Path,
        cache_bytes: u64,
    ) -> Result<RunningServer, BenchError> {
        self.start_uri(&dataset_dir.display().to_string(), cache_bytes)
            .await
    }

    /// [`Launcher::start`] with the dataset at `uri` (any URI the server reads).
    ///
    /// # Errors
    ///
    /// As [`Launcher::start`].
    pub async fn start_uri(
        &self,
        uri: &str,
        cache_bytes: u64,
    ) -> Result<RunningServer, BenchError> {
        self.start_uri_on("127.0.0.1:0", uri, cache_bytes).await
    }

    /// [`Launcher::start_uri`] listening on `listen` (such as `127.0.0.3:0`, a replica's own
    /// loopback address). A running server ([`Launcher::External`]) is used as it is.
    ///
    /// # Errors
    ///
    /// As [`Launcher::start`].
    pub async fn start_uri_on(
        &self,
        listen: &str,
        uri: &str,
        cache_bytes: u64,
    ) -> Result<RunningServer, BenchError> {
        match self {
            Launcher::Process { binary, .. } => {
                let mut command = Command::new(binary);
                command
                    .args(["--listen", listen, "--log", "info", "--dataset"])
                    .arg(dataset_arg(uri))
                    .arg("--cache-bytes")
                    .arg(cache_bytes.to_string());
                spawn(command, &[]).await
            }
            Launcher::InProcess => serve_here(listen, uri, cache_bytes).await,
            Launcher::External { url, pid, .. } => Ok(RunningServer {
                url: url.clone(),
                pid: *pid,
                fresh: false,
                _guard: Guard::None,
            }),
        }
    }

    /// Starts the echo ceiling replaying `service`'s messages: a process of its own, like the
    /// server it is compared with (so both pay the same scheduling between processes), or a
    /// task of this process for [`Launcher::InProcess`].
    ///
    /// # Errors
    ///
    /// The binary cannot be run or does not report its address within 60 s.
    pub async fn start_echo(&self, service: EchoService) -> Result<RunningServer, BenchError> {
        match self {
            Launcher::Process { echo_binary, .. } | Launcher::External { echo_binary, .. } => {
                let mut command = Command::new(echo_binary);
                command.args(["--listen", "127.0.0.1:0"]);
                spawn(command, &service.to_delimited()).await
            }
            Launcher::InProcess => {
                let echo = EchoServer::start(service).await?;
                Ok(RunningServer {
                    url: echo.url.clone(),
                    pid: None,
                    fresh: true,
                    _guard: Guard::Echo { _echo: echo },
                })
            }
        }
    }
}

impl RunningServer {
    /// Kills the server's process (SIGKILL), as a crash would; false for a server that is
    /// not a process of its own started here (a task of this process keeps its connections
    /// when stopped, so it cannot stand for a crash).
    pub fn kill(&mut self) -> bool {
        match &mut self._guard {
            Guard::Process { child } => child.start_kill().is_ok(),
            Guard::Task { .. } | Guard::Echo { .. } | Guard::None => false,
        }
    }
}

/// The `--dataset` value of the benchmark dataset.
fn dataset_arg(uri: &str) -> String {
    format!("{DATASET_NAME}={uri}")
}

/// Runs `command` with `input` on its stdin, until it prints its ready line.
async fn spawn(mut command: Command, input: &[u8]) -> Result<RunningServer, BenchError> {
    let binary = PathBuf::from(command.as_std().get_program());
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| BenchError::Spawn {
            binary: binary.clone(),
            source,
        })?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    // A child that exits before reading its input breaks the pipe: say which one.
    if let Err(error) = stdin.write_all(input).await {
        let failed = format!("{}: writing its input: {error}", binary.display());
        return Err(BenchError::ServerStart(failed));
    }
    drop(stdin);
    // Show the startup log; after that, keep reading it so a full pipe never blocks the server.
    let started = Arc::new(AtomicBool::new(false));
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut log = BufReader::new(stderr).lines();
    let quiet = started.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = log.next_line().await {
            if !quiet.load(Ordering::Relaxed) {
                eprintln!("server: {line}");
            }
        }
    });
    // Both print the ready line on stdout once they accept calls.
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    let address = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(ready) = Ready::parse(&line) {
                started.store(true, Ordering::Relaxed);
                return Ok(Some(ready.address));
            }
        }
        Ok::<_, std::io::Error>(None)
    })
    .await;
    let address = match address {
        Ok(Ok(Some(address))) => address,
        Ok(Ok(None)) => {
            let exited = format!("{} exited", binary.display());
            return Err(BenchError::ServerStart(exited));
        }
        Ok(Err(error)) => return Err(BenchError::ServerStart(error.to_string())),
        Err(_) => {
            let silent = format!("{}: no ready line within 60 s", binary.display());
            return Err(BenchError::ServerStart(silent));
        }
    };
    Ok(RunningServer {
        url: format!("http://{address}"),
        pid: child.id(),
        fresh: true,
        _guard: Guard::Process { child },
    })
}

async fn serve_here(
    listen: &str,
    uri: &str,
    cache_bytes: u64,
) -> Result<RunningServer, BenchError> {
    let spec: DatasetSpec = dataset_arg(uri).parse().map_err(BenchError::ServerStart)?;
    let options = OpenOptions {
        cache: CacheConfig {
            max_bytes: cache_bytes,
            ..CacheConfig::default()
        },
        ..OpenOptions::default()
    };
    let datasets = Datasets::open(&[spec], &options)
        .await
        .map_err(|e| BenchError::ServerStart(e.to_string()))?;
    let listener = TcpListener::bind(listen).await?;
    let address = listener.local_addr()?;
    let (shutdown, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(activations_server::serve(
        listener,
        datasets.into(),
        async {
            let _ = stopped.await;
        },
    ));
    Ok(RunningServer {
        url: format!("http://{address}"),
        pid: None,
        fresh: true,
        _guard: Guard::Task {
            _shutdown: shutdown,
            task,
        },
    })
}
