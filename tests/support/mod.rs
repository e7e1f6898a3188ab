//! Shared helpers of the end-to-end tests: a real server on `127.0.0.1:0`, datasets written to
//! temporary directories, and the external tools (grpcurl, the Python reference loader).

pub mod fixtures;
pub mod tools;

use std::{net::SocketAddr, path::Path};

use activations_client::ActivationsClient;
use activations_server::{DatasetSpec, Datasets, layout::LayoutChoice, server::ServeError};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

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

/// Serves `datasets` on `127.0.0.1:0`.
pub async fn start_server(datasets: Datasets) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(activations_server::run(listener, datasets, async {
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
    Datasets::open(&specs, layout).await.expect("open datasets")
}

/// Serves the bundled sample, as `activations-server` does without `--dataset`.
pub async fn serve_bundled() -> TestServer {
    start_server(
        Datasets::open(&[], LayoutChoice::Auto)
            .await
            .expect("open the bundled sample"),
    )
    .await
}

/// Serves one directory as the default dataset, layout detected.
pub async fn serve_dir(name: &str, dir: &Path) -> TestServer {
    start_server(open_datasets(&[(name, dir)], LayoutChoice::Auto).await).await
}
