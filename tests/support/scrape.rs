//! Servers that keep metrics, their scrape endpoint, and a reader of the text exposition.

use std::{collections::BTreeMap, net::SocketAddr};

use activations_server::{
    DatasetSpec, Datasets, dataset::OpenOptions, datasets::Reopen, location::StorageOptions,
    metrics::Metrics, service::ActivationsService,
};
use tokio::{net::TcpListener, task::JoinHandle};

use crate::{TestServer, install_tls_provider, start_server};

/// The scrape endpoint of a [`Metrics`], on `127.0.0.1:0`, as `--metrics-listen` serves it.
/// Stopped when dropped.
#[derive(Debug)]
pub struct MetricsEndpoint {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl MetricsEndpoint {
    pub async fn start(metrics: Metrics) -> MetricsEndpoint {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(activations_server::metrics::serve(listener, metrics));
        MetricsEndpoint { addr, task }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `GET /metrics`, read as Prometheus reads it.
    ///
    /// # Panics
    /// Unless the endpoint answers 200 with the OpenMetrics content type.
    pub async fn scrape(&self) -> Scrape {
        Scrape::fetch(&self.url()).await
    }
}

impl Scrape {
    /// `GET {url}/metrics`, read as Prometheus reads it.
    ///
    /// # Panics
    /// Unless the endpoint answers 200 with the OpenMetrics content type.
    pub async fn fetch(url: &str) -> Scrape {
        crate::install_tls_provider();
        let response = reqwest::get(format!("{url}/metrics"))
            .await
            .expect("GET /metrics");
        assert_eq!(response.status(), 200);
        let content_type = response.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .expect("ASCII content type")
            .to_string();
        assert!(
            content_type.starts_with("application/openmetrics-text"),
            "{content_type}"
        );
        Scrape::parse(&response.text().await.expect("metrics body"))
    }
}

impl Drop for MetricsEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `(name, uri)` datasets (the bundled sample when there are none) with fresh
/// [`Metrics`], as `activations-server --metrics-listen` does, and their scrape endpoint.
pub async fn serve_observed(
    specs: &[(&str, &str)],
    storage: StorageOptions,
) -> (TestServer, MetricsEndpoint) {
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
    let metrics = Metrics::new();
    let datasets = Datasets::open_observed(&specs, &options, Reopen::DEFAULT, Some(&metrics))
        .await
        .unwrap_or_else(|e| panic!("opening {specs:?}: {e}"));
    let server =
        start_server(ActivationsService::new(datasets).with_metrics(metrics.clone())).await;
    (server, MetricsEndpoint::start(metrics).await)
}

/// The samples of one scrape: `name{labels} value` lines, comments skipped.
#[derive(Debug, Clone)]
pub struct Scrape {
    pub text: String,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Scrape {
    /// # Panics
    /// On a sample line that is not `name{k="v",...} value` or `name value`.
    pub fn parse(text: &str) -> Scrape {
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.is_empty())
            .map(|line| {
                let (series, value) = line.rsplit_once(' ').expect("a value");
                let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
                let (name, labels) = match series.split_once('{') {
                    None => (series, BTreeMap::new()),
                    Some((name, rest)) => {
                        let rest = rest.strip_suffix('}').expect("labels end with }");
                        let labels = rest
                            .split("\",")
                            .filter(|pair| !pair.is_empty())
                            .map(|pair| {
                                let (key, value) = pair.split_once("=\"").expect("k=\"v\"");
                                (key.to_string(), value.trim_end_matches('"').to_string())
                            })
                            .collect();
                        (name, labels)
                    }
                };
                (name.to_string(), labels, value)
            })
            .collect();
        Scrape {
            text: text.to_string(),
            samples,
        }
    }

    /// The value of the sample `name` whose labels include `labels`, summed over the samples
    /// that match (0 when none does).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|(sample, sample_labels, _)| {
                sample == name
                    && labels
                        .iter()
                        .all(|(k, v)| sample_labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, value)| value)
            .sum()
    }
}
