//! Shared helpers of the end-to-end tests: a real server on `127.0.0.1:0`, datasets written to
//! temporary directories, the external tools (grpcurl, the Python reference loader), and the
//! storage the datasets are served from (the Azurite emulator, plain and fault-injecting HTTP
//! servers).

pub mod azurite;
pub mod certs;
pub mod conformance;
pub mod fixtures;
pub mod grpc_raw;
pub mod http;
pub mod process;
pub mod s3;
pub mod scrape;
pub mod tools;

use std::{net::SocketAddr, path::Path};

use activations_client::ActivationsClient;
use activations_format::layout::LayoutChoice;
use activations_server::{
    DatasetSpec, Datasets, ServeConfig, dataset::OpenOptions, server::ServeError,
};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

/// Installs rustls' `ring` crypto provider as the process default, as the server does before
/// it opens a remote store: `reqwest` and `object_store` clients are built without a provider
/// of their own. Idempotent; call it before building such a client.
pub fn install_tls_provider() {
    activations_server::location::install_tls_provider();
}

/// A server running in this process on an ephemeral port.
#[derive(Debug)]
pub struct TestServer {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl TestServer {
    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `https://127.0.0.1:PORT`, for a server started with TLS.
    pub fn tls_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// An SDK client for the server's default dataset.
    pub async fn client(&self) -> ActivationsClient {
        ActivationsClient::connect(self.url())
            .await
            .expect("connecting to the test server")
    }

    /// Signals shutdown and waits for the server to finish.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        (&mut self.task)
            .await
            .expect("server task")
            .expect("server stopped cleanly");
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `config` on `127.0.0.1:0`: datasets, a service, or a whole [`ServeConfig`].
pub async fn start_server(config: impl Into<ServeConfig>) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(activations_server::serve(listener, config.into(), async {
        let _ = rx.await;
    }));
    TestServer {
        addr,
        shutdown: Some(tx),
        task,
    }
}

/// Opens `(name, directory)` pairs as a server would from `--dataset name=directory`.
pub async fn open_datasets(specs: &[(&str, &Path)], layout: LayoutChoice) -> Datasets {
    let specs: Vec<DatasetSpec> = specs
        .iter()
        .map(|(name, dir)| DatasetSpec {
            name: name.to_string(),
            uri: dir.to_str().expect("utf-8 temp path").to_string(),
        })
        .collect();
    let options = OpenOptions {
        layout,
        ..OpenOptions::default()
    };
    Datasets::open(&specs, &options)
        .await
        .expect("open datasets")
}

/// Serves the bundled sample, as `activations-server` does without `--dataset`.
pub async fn serve_bundled() -> TestServer {
    start_server(
        Datasets::open(&[], &OpenOptions::default())
            .await
            .expect("open the bundled sample"),
    )
    .await
}

/// Serves one directory as the default dataset, layout detected.
pub async fn serve_dir(name: &str, dir: &Path) -> TestServer {
    start_server(open_datasets(&[(name, dir)], LayoutChoice::Auto).await).await
}

/// Serves `(name, uri)` datasets, as `activations-server --dataset name=uri` does, with the
/// given storage timeouts and retries; the first is the default.
pub async fn serve_uris(
    specs: &[(&str, &str)],
    storage: activations_server::location::StorageOptions,
) -> TestServer {
    install_tls_provider();
    let specs: Vec<DatasetSpec> = specs
        .iter()
        .map(|(name, uri)| DatasetSpec {
            name: name.to_string(),
            uri: uri.to_string(),
        })
        .collect();
    let options = OpenOptions {
        storage,
        ..OpenOptions::default()
    };
    let datasets = Datasets::open(&specs, &options)
        .await
        .unwrap_or_else(|e| panic!("opening {specs:?}: {e}"));
    start_server(datasets).await
}

/// A TCP proxy on `127.0.0.1` in front of a server, to fail the network under a client: its
/// connections can be cut midway (as a dropped connection would be) and its target changed (as
/// when a server is replaced). Stopped when dropped.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    shared: std::sync::Arc<ProxyState>,
    task: JoinHandle<()>,
}

#[derive(Debug)]
struct ProxyState {
    target: std::sync::Mutex<SocketAddr>,
    open: std::sync::Mutex<Vec<tokio::task::AbortHandle>>,
    accepted: std::sync::atomic::AtomicUsize,
}

impl TcpProxy {
    /// Forwards every connection to `target`.
    pub async fn start(target: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let shared = std::sync::Arc::new(ProxyState {
            target: std::sync::Mutex::new(target),
            open: std::sync::Mutex::new(Vec::new()),
            accepted: std::sync::atomic::AtomicUsize::new(0),
        });
        let state = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                state
                    .accepted
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let target = *state.target.lock().expect("proxy lock");
                let connection = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                state
                    .open
                    .lock()
                    .expect("proxy lock")
                    .push(connection.abort_handle());
            }
        });
        TcpProxy { addr, shared, task }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes every connection open through the proxy, both ways; new ones are still accepted.
    pub fn cut(&self) {
        for connection in self.shared.open.lock().expect("proxy lock").drain(..) {
            connection.abort();
        }
    }

    /// Sends the connections accepted from now on to `target`.
    pub fn set_target(&self, target: SocketAddr) {
        *self.shared.target.lock().expect("proxy lock") = target;
    }

    /// How many connections the proxy accepted so far.
    pub fn accepted(&self) -> usize {
        self.shared
            .accepted
            .load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}

/// Uploads every file below `dir` (recursively) to `{prefix}/{path relative to dir}` in `store`;
/// an empty `prefix` uploads to the store's root.
///
/// # Panics
/// On any read or upload error.
pub async fn upload_dir(store: &dyn object_store::ObjectStore, prefix: &str, dir: &Path) {
    use object_store::{ObjectStoreExt, PutPayload, path::Path as ObjectPath};

    let prefix = prefix.trim_matches('/');
    for relative in files_below(dir) {
        let key = relative
            .components()
            .map(|c| c.as_os_str().to_str().expect("utf-8 file name"))
            .collect::<Vec<_>>()
            .join("/");
        let key = if prefix.is_empty() {
            key
        } else {
            format!("{prefix}/{key}")
        };
        let file = dir.join(&relative);
        let data =
            std::fs::read(&file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        store
            .put(&ObjectPath::from(key.as_str()), PutPayload::from(data))
            .await
            .unwrap_or_else(|e| panic!("uploading {} to {key} in {store}: {e}", file.display()));
    }
}

/// The files below `dir`, relative to it, sorted.
fn files_below(dir: &Path) -> Vec<std::path::PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        let entries =
            std::fs::read_dir(dir).unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.push(path.strip_prefix(root).expect("below root").to_path_buf());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}
