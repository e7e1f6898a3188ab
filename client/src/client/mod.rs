//! [`ActivationsClient`]: one method per RPC of `ActivationService`, plus the names of the
//! Python module `neuron_explainer.activations.activations`.

mod builder;

use std::future::Future;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use tonic::transport::Channel;

pub use builder::ClientBuilder;

use crate::bulk::spread::{self, Listing};
use crate::bulk::{self, NeuronSplits, NeuronSplitsStream, Selection};
use crate::error::{Error, Result};
use crate::pb::{self, NeuronId, Split};
use crate::retry;
use crate::routing::{Policy, Route, RouteKey};
use crate::security::Credentials;
use crate::settings::{
    CallSettings, Compression, MAX_DECODING_MESSAGE_SIZE, MAX_ENCODING_MESSAGE_SIZE, RetryPolicy,
};
use crate::stub;

/// A stream of the records of one split, in the Python order. See
/// [`ActivationsClient::stream_activation_records`].
pub type SplitRecordStream = BoxStream<'static, Result<pb::SplitActivationRecord>>;

/// A stream of neuron indices, fetched page by page. See
/// [`ActivationsClient::sorted_neuron_indices`].
pub type NeuronIndexStream = BoxStream<'static, Result<u32>>;

/// Builds a [`NeuronId`] from a layer index and a neuron index.
///
/// # Examples
///
/// ```
/// let id = activations_client::neuron_id(1, 2);
/// assert_eq!((id.layer_index, id.neuron_index), (1, 2));
/// ```
pub fn neuron_id(layer_index: u32, neuron_index: u32) -> NeuronId {
    NeuronId {
        layer_index,
        neuron_index,
    }
}

/// A client of the neuron activation service.
///
/// Cloning is cheap: clones share one HTTP/2 connection, so hand a clone to each task rather
/// than wrapping the client in a lock. Every request names the dataset set with
/// [`with_dataset`](Self::with_dataset) (by default the server's default dataset).
///
/// [`connect`](Self::connect) opens a client with the default settings;
/// [`builder`](Self::builder) chooses them: several servers, a deadline per call, retries,
/// compression (see [`ClientBuilder`]). Calls retry transient failures
/// (`UNAVAILABLE`, a dropped connection) per the [`RetryPolicy`], by default
/// 3 attempts in all.
///
/// # Examples
///
/// ```no_run
/// use activations_client::{ActivationsClient, neuron_id};
///
/// # async fn example() -> activations_client::Result<()> {
/// let client = ActivationsClient::connect("http://127.0.0.1:50051").await?;
/// let train = client.train_activation_records(neuron_id(1, 1), Some(5)).await?;
/// for record in &train {
///     println!("{}", record.tokens.concat());
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ActivationsClient {
    route: Route,
    dataset: String,
    calls: CallSettings,
}

impl ActivationsClient {
    /// Connects to the server at `url`, such as `http://127.0.0.1:50051`, with the default
    /// settings: `ActivationsClient::builder().endpoint(url).connect()` (see
    /// [`ClientBuilder`]). An address without a scheme, such as
    /// `127.0.0.1:50051`, is taken as `http://`.
    ///
    /// Fails with [`Error::InvalidEndpoint`] when `url` is not a URI, and with
    /// [`Error::Connect`] when the server cannot be reached (after the default 3 attempts).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use activations_client::ActivationsClient;
    ///
    /// # async fn example() -> activations_client::Result<()> {
    /// let client = ActivationsClient::connect("127.0.0.1:50051").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(url: impl Into<String>) -> Result<Self> {
        Self::builder().endpoint(url).connect().await
    }

    /// Wraps an existing channel, for custom transports or TLS, with the default settings of
    /// [`ClientBuilder`] (change them with
    /// [`with_timeout`](Self::with_timeout) and [`with_retry`](Self::with_retry)).
    ///
    /// The client accepts gzip- and zstd-compressed responses, decodes messages of up to
    /// [`MAX_DECODING_MESSAGE_SIZE`] bytes and sends requests of up to
    /// [`MAX_ENCODING_MESSAGE_SIZE`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use activations_client::ActivationsClient;
    /// use std::time::Duration;
    /// use tonic::transport::Endpoint;
    ///
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let channel = Endpoint::from_static("http://127.0.0.1:50051")
    ///     .timeout(Duration::from_secs(30))
    ///     .connect()
    ///     .await?;
    /// let client = ActivationsClient::new(channel);
    /// # Ok(())
    /// # }
    /// ```
    pub fn new(channel: Channel) -> Self {
        Self::configured(
            channel,
            Credentials::default(),
            CallSettings::DEFAULT,
            None,
            MAX_DECODING_MESSAGE_SIZE,
            MAX_ENCODING_MESSAGE_SIZE,
        )
    }

    /// A client over `channel` with these settings.
    pub(crate) fn configured(
        channel: Channel,
        credentials: Credentials,
        calls: CallSettings,
        compression: Option<Compression>,
        max_decoding_message_size: usize,
        max_encoding_message_size: usize,
    ) -> Self {
        ActivationsClient::routed(
            Route::One(Box::new(stub::new(
                channel,
                credentials,
                compression,
                max_decoding_message_size,
                max_encoding_message_size,
            ))),
            calls,
        )
    }

    /// A client whose calls go where `route` sends them.
    pub(crate) fn routed(route: Route, calls: CallSettings) -> Self {
        ActivationsClient {
            route,
            dataset: String::new(),
            calls,
        }
    }

    /// Names the dataset every request of the returned client reads. The empty string (the
    /// default) means the server's default dataset.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use activations_client::ActivationsClient;
    ///
    /// # async fn example() -> activations_client::Result<()> {
    /// let client = ActivationsClient::connect("127.0.0.1:50051").await?;
    /// let small = client.clone().with_dataset("gpt2-small");
    /// println!("{:?}", small.sorted_layers().await?);
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_dataset(mut self, dataset: impl Into<String>) -> Self {
        self.dataset = dataset.into();
        self
    }

    /// The dataset requests name; empty for the server's default.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use activations_client::ActivationsClient;
    ///
    /// # async fn example() -> activations_client::Result<()> {
    /// let client = ActivationsClient::connect("127.0.0.1:50051").await?;
    /// assert_eq!(client.with_dataset("gpt2-xl").dataset(), "gpt2-xl");
    /// # Ok(())
    /// # }
    /// ```
    pub fn dataset(&self) -> &str {
        &self.dataset
    }

    /// The servers of a client with several (a list, or every address of a `dns:///` name as
    /// last resolved), in address order, each with whether it takes calls now (a server whose
    /// connection failed is out until a health check passes). Empty for a client with one server.
    ///
    /// # Examples
    ///
    /// ```
    /// use activations_client::ActivationsClient;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> activations_client::Result<()> {
    /// let client = ActivationsClient::builder()
    ///     .endpoints(["127.0.0.1:50051", "127.0.0.1:50052"])
    ///     .connect_lazy()?;
    /// let servers = client.servers();
    /// assert_eq!(servers[0].address, "127.0.0.1:50051");
    /// assert!(servers.iter().all(|server| server.available));
    /// # Ok(())
    /// # }
    /// ```
    pub fn servers(&self) -> Vec<crate::routing::Server> {
        match &self.route {
            Route::One(_) => Vec::new(),
            Route::Pool(pool) => pool.servers(),
        }
    }

    /// The whole neuron file (`GetNeuronRecord`).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use activations_client::{ActivationsClient, neuron_id};
    ///
    /// # async fn example() -> activations_client::Result<()> {
    /// let client = ActivationsClient::connect("127.0.0.1:50051").await?;
    /// let record = client.get_neuron_record(neuron_id(1, 1)).await?;
    /// println!("{} random records", record.random_sample.len());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_neuron_record(&self, id: NeuronId) -> Result<pb::NeuronRecord> {
        let request = pb::GetNeuronRecordRequest {
            dataset: self.dataset.clone(),
            neuron_id: Some(id),
        };
        let route = &self.route;
        let key = Some(RouteKey::new(&self.dataset, id));
        retry::unary(self.calls, request, |request| {
            route.attempt(key, |mut stub| async move {
                stub.get_neuron_record(request).await
            })
        })
        .await
    }

    /// The records of one split as they arrive (`StreamActivationRecords`), each with the list
    /// it comes from and its position there. `n` is `n_examples_per_split`; `None` takes as
    /// many as each source allows, like Python's `ActivationRecordSliceParams(None)`.
    ///
    /// An error before the first record (an unknown neuron, an invalid split) is returned
    /// directly, after retrying a transient one per the [`RetryPolicy`]; an
    /// error later on is the stream's last item, never retried, so no record is ever repeated.
    /// The client's [timeout](crate::ClientBuilder::timeout) covers the whole stream.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use activations_client::{ActivationsClient, Split, neuron_id};
    /// use futures::TryStreamExt;
    ///
    /// # async fn example() -> activations_client::Result<()> {
    /// let client = ActivationsClient::connect("127.0.0.1:50051").await?;
    /// let mut records = client
    ///     .stream_activation_records(neuron_id(1, 1), Split::Valid, None)
    ///     .await?;
    /// while let Some(item) = records.try_next().await? {
    ///     println!("{:?} #{}", item.source(), item.source_index);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn stream_activation_records(
        &self,
        id: NeuronId,
        split: Split,
        n: Option<u32>,
    ) -> Result<SplitRecordStream> {
        let request = pb::StreamActivationRecordsRequest {
            dataset: self.dataset.clone(),
            neuron_id: Some(id),
            split: split.into(),
            slice_params: Some(pb::ActivationRecordSliceParams {
                n_examples_per_split: n,
            }),
        };
        let route = &self.route;
        let key = Some(RouteKey::new(&self.dataset, id));
        retry::server_stream(self.calls, request, |request| {
            route.attempt(key, |mut stub| async move {
                stub.stream_activation_records(request).await
            })
        })
        .await
    }

    /// The records of one split, collected: what `NeuronRecord.<split>_activation_records`
    /// returns in Python. A stream that ends with an error returns that error, never a partial
    /// list.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use activations_client::{ActivationsClient, Split, neuron_id};
    ///
    /// # async fn example() -> activations_client::Result<()> {
    /// let client = ActivationsClient::connect("127.0.0.1:50051").await?;
    /// let test = client.activation_records(neuron_id(1, 1), Split::Test, Some(5)).await?;
    /// assert_eq!(test.len(), 10);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn activation_records(
        &self,
        id: NeuronId,
        split: Split,
        n: Option<u32>,
    ) -> Result<Vec<pb::ActivationRecord>> {
        self.stream_activation_records(id, split, n)
            .await?
            .and_then(|item| async move {
                item.record.ok_or(Error::MalformedResponse {
                    what: "SplitActivationRecord without a record",
                })
            })
            .try_collect()
            .await
    }

    /// Moments, quantile boundaries, max activation and record counts, without the records
    /// (`GetNeuronSummary`).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use activations_client::{ActivationsClient, neuron_id};
    ///
    /// # async fn example() -> activations_client::Result<()> {
    /// let client = ActivationsClient::connect("127.0.0.1:50051").await?;
    /// let summary = client.neuron_summary(neuron_id(1, 1)).await?;
    /// println!("max activation {:?}", summary.max_activation);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn neuron_summary(&self, id: NeuronId) -> Result<pb::NeuronSummary> {
        let request = pb::GetNeuronSummaryRequest {
            dataset: self.dataset.clone(),
            neuron_id: Some(id),
        };
        let route = &self.route;
        let key = Some(RouteKey::new(&self.dataset, id));
        retry::unary(self.calls, request, |request| {
            route.attempt(key, |mut stub| async move {
                stub.get_neuron_summary(request).await
            })
        })
        .await
    }

    /// Whether the neuron's file exists (`neuron_exists` in Python). A missing neuron is
    /// `Ok(false)`, not an error.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use activations_client::{ActivationsClient, neuron_id};
    ///
    /// # async fn example() -> activations_client::Result<()> {
    /// let client = ActivationsClient::connect("127.0.0.1:50051").await?;
    /// if client.neuron_exists(neuron_id(47, 6399)).await? {
    ///     println!("the last neuron of GPT-2 XL is there");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn neuron_exists(&self, id: NeuronId) -> Result<bool> {
        let request = pb::NeuronExistsRequest {
            dataset: self.dataset.clone(),
            neuron_id: Some(id),
        };
        let route = &self.route;
        let key = Some(RouteKey::new(&self.dataset, id));
        let response = retry::unary(self.calls, request, |request| {
            route.attempt(
                key,
                |mut stub| async move { stub.neuron_exists(request).await },
            )
        })
        .await?;
        Ok(response.exists)
    }

    /// The dataset's layer indices in ascending numeric order (`ListLayers`).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use activations_client::ActivationsClient;
    ///
    /// # async fn example() -> activations_client::Result<()> {
    /// let client = ActivationsClient::connect("127.0.0.1:50051").await?;
    /// let layers = client.list_layers().await?;
    /// println!("{} layers", layers.len());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn list_layers(&self) -> Result<Vec<u32>> {
        let request = pb::ListLayersRequest {
            dataset: self.dataset.clone(),
        };
        let route = &self.route;
        let key = None;
        let response = retry::unary(self.calls, request, |request| {
            route.attempt(
                key,
                |mut stub| async move { stub.list_layers(request).await },
            )
        })
        .await?;
        Ok(response.layer_indices)
    }

    /// One page of a layer's neuron indices (`ListNeurons`). `page_size` 0 asks for the
    /// server's default page size; `page_token` is empty for the first page, else the previous
    /// response's `next_page_token`. [`sorted_neuron_indices`](Self::sorted_neuron_indices)
    /// does the paging for you.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use activations_client::ActivationsClient;
    ///
    /// # async fn example() -> activations_client::Result<()> {
    /// let client = ActivationsClient::connect("127.0.0.1:50051").await?;
    /// let mut token = String::new();
    /// loop {
    ///     let page = client.list_neurons(1, 500, token).await?;
    ///     println!("{:?}", page.neuron_indices);
    ///     if page.next_page_token.is_empty() {
    ///         break;
    ///     }
    ///     token = page.next_page_token;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn list_neurons(
        &self,
        layer_index: u32,
        page_size: u32,
        page_token: impl Into<String>,
    ) -> Result<pb::ListNeuronsResponse> {
        let request = pb::ListNeuronsRequest {
            dataset: self.dataset.clone(),
            layer_index,
            // The server caps page sizes at 10000, so saturating loses nothing.
            page_size: i32::try_from(page_size).unwrap_or(i32::MAX),
            page_token: page_token.into(),
        };
        let route = &self.route;
        let key = None;
        retry::unary(self.calls, request, |request| {
            route.attempt(
                key,
                |mut stub| async move { stub.list_neurons(request).await },
            )
        })
        .await
    }

    /// The datasets the server serves (`ListDatasets`).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use activations_client::ActivationsClient;
    ///
    /// # async fn example() -> activations_client::Result<()> {
    /// let client = ActivationsClient::connect("127.0.0.1:50051").await?;
    /// for dataset in client.datasets().await? {
    ///     println!("{} at {}", dataset.name, dataset.uri);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn datasets(&self) -> Result<Vec<pb::DatasetInfo>> {
        let request = pb::ListDatasetsRequest {};
        let route = &self.route;
        let key = None;
        let response = retry::unary(self.calls, request, |request| {
            route.attempt(
                key,
                |mut stub| async move { stub.list_datasets(request).await },
            )
        })
        .await?;
        Ok(response.datasets)
    }

    /// The train split: top-activating records only (`train_activation_records`).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use activations_client::{ActivationsClient, neuron_id};
    ///
    /// # async fn example() -> activations_client::Result<()> {
    /// let client = ActivationsClient::connect("127.0.0.1:50051").await?;
    /// let train = client.train_activation_records(neuron_id(1, 1), Some(5)).await?;
    /// assert_eq!(train.len(), 5);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn train_activation_records(
        &self,
        id: NeuronId,
        n: Option<u32>,
    ) -> Result<Vec<pb::ActivationRecord>> {
        self.activation_records(id, Split::Train, n).await
    }

    /// The calibration split: top-activating then random records
    /// (`calibration_activation_records`).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use activations_client::{ActivationsClient, neuron_id};
    ///
    /// # async fn example() -> activations_client::Result<()> {
    /// let client = ActivationsClient::connect("127.0.0.1:50051").await?;
    /// let calibration = client.calibration_activation_records(neuron_id(1, 1), None).await?;
    /// println!("{} records", calibration.len());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn calibration_activation_records(
        &self,
        id: NeuronId,
        n: Option<u32>,
    ) -> Result<Vec<pb::ActivationRecord>> {
        self.activation_records(id, Split::Calibration, n).await
    }

    /// The valid split: top-activating then random records (`valid_activation_records`).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use activations_client::{ActivationsClient, neuron_id};
    ///
    /// # async fn example() -> activations_client::Result<()> {
    /// let client = ActivationsClient::connect("127.0.0.1:50051").await?;
    /// let valid = client.valid_activation_records(neuron_id(1, 1), None).await?;
    /// let activations: Vec<f32> = valid.iter().flat_map(|r| r.activations.clone()).collect();
    /// println!("{} activations to score against", activations.len());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn valid_activation_records(
        &self,
        id: NeuronId,
        n: Option<u32>,
    ) -> Result<Vec<pb::ActivationRecord>> {
        self.activation_records(id, Split::Valid, n).await
    }

    /// The test split: top-activating then random records (`test_activation_records`).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use activations_client::{ActivationsClient, neuron_id};
    ///
    /// # async fn example() -> activations_client::Result<()> {
    /// let client = ActivationsClient::connect("127.0.0.1:50051").await?;
    /// let test = client.test_activation_records(neuron_id(1, 1), Some(5)).await?;
    /// assert_eq!(test.len(), 10);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn test_activation_records(
        &self,
        id: NeuronId,
        n: Option<u32>,
    ) -> Result<Vec<pb::ActivationRecord>> {
        self.activation_records(id, Split::Test, n).await
    }

    /// The dataset's layer indices in ascending numeric order (`get_sorted_layers`; numbers
    /// rather than Python's strings).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use activations_client::ActivationsClient;
    ///
    /// # async fn example() -> activations_client::Result<()> {
    /// let client = ActivationsClient::connect("127.0.0.1:50051").await?;
    /// let layers = client.sorted_layers().await?;
    /// assert!(layers.is_sorted());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn sorted_layers(&self) -> Result<Vec<u32>> {
        self.list_layers().await
    }

    /// A layer's neuron indices in ascending numeric order (`get_sorted_neuron_indices`),
    /// fetched lazily one page of the server's default size at a time.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use activations_client::ActivationsClient;
    /// use futures::TryStreamExt;
    ///
    /// # async fn example() -> activations_client::Result<()> {
    /// let client = ActivationsClient::connect("127.0.0.1:50051").await?;
    /// let neurons: Vec<u32> = client.sorted_neuron_indices(1).try_collect().await?;
    /// println!("{} neurons in layer 1", neurons.len());
    /// # Ok(())
    /// # }
    /// ```
    pub fn sorted_neuron_indices(&self, layer_index: u32) -> NeuronIndexStream {
        self.neuron_indices_paged(layer_index, 0)
    }

    /// Like [`sorted_neuron_indices`](Self::sorted_neuron_indices), with `page_size` indices
    /// per request (0 for the server's default).
    ///
    /// Nothing is requested until the stream is polled; the next page is requested when the
    /// previous one has been consumed.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use activations_client::ActivationsClient;
    /// use futures::{StreamExt, TryStreamExt};
    ///
    /// # async fn example() -> activations_client::Result<()> {
    /// let client = ActivationsClient::connect("127.0.0.1:50051").await?;
    /// // Only the first page of 100 is requested.
    /// let first_ten: Vec<u32> = client.neuron_indices_paged(1, 100).take(10).try_collect().await?;
    /// println!("{first_ten:?}");
    /// # Ok(())
    /// # }
    /// ```
    pub fn neuron_indices_paged(&self, layer_index: u32, page_size: u32) -> NeuronIndexStream {
        let client = self.clone();
        // `None` once the last page has been fetched; `Some("")` before the first.
        stream::try_unfold(Some(String::new()), move |token| {
            let client = client.clone();
            async move {
                let Some(token) = token else {
                    return Ok::<_, Error>(None);
                };
                let page = client.list_neurons(layer_index, page_size, token).await?;
                let next = Some(page.next_page_token).filter(|token| !token.is_empty());
                Ok(Some((page.neuron_indices, next)))
            }
        })
        .map_ok(|page| stream::iter(page.into_iter().map(Ok::<u32, Error>)))
        .try_flatten()
        .boxed()
    }

    /// The whole record of one neuron, like Python's `load_neuron(layer, neuron)`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use activations_client::ActivationsClient;
    ///
    /// # async fn example() -> activations_client::Result<()> {
    /// let client = ActivationsClient::connect("127.0.0.1:50051").await?;
    /// let record = client.load_neuron(1, 1).await?;
    /// println!("mean {:?}", record.mean);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn load_neuron(
        &self,
        layer_index: u32,
        neuron_index: u32,
    ) -> Result<pb::NeuronRecord> {
        self.get_neuron_record(neuron_id(layer_index, neuron_index))
            .await
    }

    /// Starts the settings of a client; see [`ClientBuilder`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use activations_client::ActivationsClient;
    /// use std::time::Duration;
    ///
    /// # async fn example() -> activations_client::Result<()> {
    /// let client = ActivationsClient::builder()
    ///     .endpoint("127.0.0.1:50051")
    ///     .timeout(Duration::from_secs(10))
    ///     .connect()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// The same client with another [deadline](ClientBuilder::timeout) for its calls; `None`
    /// for none. Clones share the connection, so this is cheap: for example, one client
    /// without a timeout for bulk streams and one with a short timeout for lookups.
    ///
    /// # Examples
    ///
    /// ```
    /// use activations_client::ActivationsClient;
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> activations_client::Result<()> {
    /// let client = ActivationsClient::builder()
    ///     .endpoint("127.0.0.1:50051")
    ///     .timeout(Duration::from_secs(5))
    ///     .connect_lazy()?;
    /// let bulk = client.clone().with_timeout(None);
    /// assert_eq!(client.timeout(), Some(Duration::from_secs(5)));
    /// assert_eq!(bulk.timeout(), None);
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.calls.timeout = timeout;
        self
    }

    /// The same client with another [retry policy](RetryPolicy).
    ///
    /// # Examples
    ///
    /// ```
    /// use activations_client::{ActivationsClient, RetryPolicy};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> activations_client::Result<()> {
    /// let client = ActivationsClient::builder().endpoint("127.0.0.1:50051").connect_lazy()?;
    /// let impatient = client.with_retry(RetryPolicy::NONE);
    /// assert_eq!(impatient.retry_policy(), RetryPolicy::NONE);
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.calls.retry = policy;
        self
    }

    /// The deadline of each call; `None` for none.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> activations_client::Result<()> {
    /// let client = activations_client::ActivationsClient::builder()
    ///     .endpoint("127.0.0.1:50051")
    ///     .connect_lazy()?;
    /// assert_eq!(client.timeout(), None);
    /// # Ok(())
    /// # }
    /// ```
    pub fn timeout(&self) -> Option<Duration> {
        self.calls.timeout
    }

    /// The retry policy of the client's calls.
    ///
    /// # Examples
    ///
    /// ```
    /// use activations_client::RetryPolicy;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> activations_client::Result<()> {
    /// let client = activations_client::ActivationsClient::builder()
    ///     .endpoint("127.0.0.1:50051")
    ///     .connect_lazy()?;
    /// assert_eq!(client.retry_policy(), RetryPolicy::DEFAULT);
    /// # Ok(())
    /// # }
    /// ```
    pub fn retry_policy(&self) -> RetryPolicy {
        self.calls.retry
    }

    /// The requested splits of every neuron of `selection`, one item per neuron, in selection
    /// order (`StreamNeuronSplits`). `n` is `n_examples_per_split` for every split; `None`
    /// takes as many as each source allows.
    ///
    /// A neuron that cannot be served is an item whose [`splits`](NeuronSplits::splits) holds
    /// its error, and the stream goes on. A failure of the stream itself ends it with an
    /// `Err` item, unless it is transient (`UNAVAILABLE`, a dropped connection, or the stream
    /// ending in the middle of a neuron): the stream then resumes after the last neuron it
    /// delivered, per the client's [`RetryPolicy`], whose attempts count
    /// the failures since that neuron. Nothing is lost or repeated: a neuron the server sends in
    /// several messages is delivered whole, once, and the parts of a neuron interrupted midway
    /// are read again from the start.
    ///
    /// With several servers (and the [affinity policy](crate::routing::Policy::Affinity)), the
    /// selection is cut by owner: each server streams its own neurons (a neuron list of at most
    /// 10,000 per request), all at once, and their items are merged back into selection order.
    /// A range of listed neurons (`neurons: None`) is listed first for that. When a server
    /// fails (refused, reset, draining), the neurons it has not delivered go to their next
    /// owners and are read there: nothing is lost or repeated, and the items' cursors are
    /// those of the whole request, valid on one server or several.
    ///
    /// Nothing is requested until the stream is polled; the server reads a few neurons ahead of
    /// the consumer, so a slow consumer slows the reading rather than filling memory. The
    /// client's [timeout](crate::ClientBuilder::timeout), if any, bounds each call the stream
    /// makes (use [`with_timeout(None)`](Self::with_timeout) for long jobs).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use activations_client::{ActivationsClient, Selection, Split};
    /// use futures::TryStreamExt;
    ///
    /// # async fn example() -> activations_client::Result<()> {
    /// let client = ActivationsClient::connect("127.0.0.1:50051").await?;
    /// let layers = Selection::Range { layers: 0..48, neurons: None };
    /// let mut neurons = client.neuron_splits(layers, &[Split::Train, Split::Valid], None);
    /// let mut cursor = String::new();
    /// while let Some(neuron) = neurons.try_next().await? {
    ///     println!("{:?}: {}", neuron.neuron_id, if neuron.splits.is_ok() { "ok" } else { "error" });
    ///     cursor = neuron.cursor; // Save it to continue tomorrow with `neuron_splits_from`.
    /// }
    /// # let _ = cursor;
    /// # Ok(())
    /// # }
    /// ```
    pub fn neuron_splits(
        &self,
        selection: Selection,
        splits: &[Split],
        n: Option<u32>,
    ) -> NeuronSplitsStream {
        self.neuron_splits_from(selection, splits, n, String::new())
    }

    /// [`neuron_splits`](Self::neuron_splits), continuing after the neuron whose
    /// [`cursor`](NeuronSplits::cursor) this is (empty to start), for example in a job that
    /// was stopped. The dataset, selection, splits and `n` must be those of the stream the
    /// cursor came from: otherwise the stream's first item is an `INVALID_ARGUMENT` error.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use activations_client::{ActivationsClient, Selection, Split};
    /// use futures::TryStreamExt;
    ///
    /// # async fn example() -> activations_client::Result<()> {
    /// let client = ActivationsClient::connect("127.0.0.1:50051").await?;
    /// let selection = || Selection::Range { layers: 0..48, neurons: Some(0..6400) };
    /// let cursor = std::fs::read_to_string("progress.cursor").unwrap_or_default();
    /// let mut rest = client.neuron_splits_from(selection(), &[Split::Valid], Some(20), cursor);
    /// while let Some(neuron) = rest.try_next().await? {
    ///     // ... process the neuron, then remember where we are:
    ///     std::fs::write("progress.cursor", &neuron.cursor).expect("saving progress");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn neuron_splits_from(
        &self,
        selection: Selection,
        splits: &[Split],
        n: Option<u32>,
        cursor: impl Into<String>,
    ) -> NeuronSplitsStream {
        let request = self.bulk_request(selection, splits, n, cursor.into());
        match &self.route {
            Route::Pool(pool) if pool.policy() == Policy::Affinity => {
                match single_neuron(&request) {
                    // One neuron (a job's per-neuron call): one stream, to its owner, with the
                    // server's own cursors.
                    Some(id) => {
                        bulk::stream_keyed(self.route.clone(), self.calls, request, false, Some(id))
                    }
                    None => spread::stream(pool.clone(), self.calls, request, true, self.listing()),
                }
            }
            route => bulk::stream(route.clone(), self.calls, request),
        }
    }

    /// [`neuron_splits`](Self::neuron_splits), each neuron yielded as soon as it arrives rather
    /// than in selection order. With several servers (and the affinity policy) each streams its
    /// own neurons, so no server waits for another; the items' cursors are then empty (a cursor
    /// resumes after every neuron before it, which no longer holds). With one server it is
    /// `neuron_splits`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use activations_client::{ActivationsClient, Selection, Split};
    /// use futures::TryStreamExt;
    ///
    /// # async fn example() -> activations_client::Result<()> {
    /// let client = ActivationsClient::builder()
    ///     .endpoint("dns:///activations-headless.default.svc.cluster.local:50051")
    ///     .connect()
    ///     .await?;
    /// let layer = Selection::Range { layers: 5..6, neurons: None };
    /// let mut neurons = client.neuron_splits_unordered(layer, &[Split::Valid], Some(5));
    /// while let Some(neuron) = neurons.try_next().await? {
    ///     println!("{:?}", neuron.neuron_id);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn neuron_splits_unordered(
        &self,
        selection: Selection,
        splits: &[Split],
        n: Option<u32>,
    ) -> NeuronSplitsStream {
        let request = self.bulk_request(selection, splits, n, String::new());
        match &self.route {
            Route::Pool(pool) if pool.policy() == Policy::Affinity => {
                spread::stream(pool.clone(), self.calls, request, false, self.listing())
            }
            route => bulk::stream(route.clone(), self.calls, request),
        }
    }

    /// This client as the bulk streams over several servers list through it.
    fn listing(&self) -> std::sync::Arc<dyn Listing> {
        std::sync::Arc::new(self.clone())
    }

    fn bulk_request(
        &self,
        selection: Selection,
        splits: &[Split],
        n: Option<u32>,
        cursor: String,
    ) -> pb::StreamNeuronSplitsRequest {
        pb::StreamNeuronSplitsRequest {
            dataset: self.dataset.clone(),
            selection: Some(selection.into()),
            splits: splits.iter().map(|&split| i32::from(split)).collect(),
            slice_params: Some(pb::ActivationRecordSliceParams {
                n_examples_per_split: n,
            }),
            cursor,
        }
    }

    /// Runs `f` on every neuron of [`neuron_splits`](Self::neuron_splits)`(selection, splits,
    /// n)`, up to `concurrency` calls of `f` at once (0 counts as 1), while the stream reads
    /// ahead.
    ///
    /// `f` returns `Result<(), E>` for any error type `E` that an SDK [`Error`] converts into
    /// (the SDK's own [`Error`], `Box<dyn std::error::Error>`, `anyhow::Error`, ...). The first
    /// error, of the stream (after its retries) or of a callback, is returned: no further
    /// neuron is read and the calls of `f` still running are dropped. A neuron that cannot be
    /// served is not an error here: `f` receives it with its error in
    /// [`splits`](NeuronSplits::splits) and decides. Callbacks may finish out of order; to
    /// checkpoint a job, record the [`cursor`](NeuronSplits::cursor)s of finished neurons and
    /// resume from one before which every neuron finished.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use activations_client::{ActivationsClient, NeuronSplits, Selection, Split, max_activation};
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    ///
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = ActivationsClient::connect("127.0.0.1:50051").await?;
    /// let failed = AtomicUsize::new(0);
    /// let selection = Selection::Range { layers: 0..2, neurons: Some(0..100) };
    /// client
    ///     .for_each_neuron(selection, &[Split::Train], Some(5), 8, |neuron: NeuronSplits| {
    ///         let failed = &failed;
    ///         async move {
    ///             let Some(train) = neuron.records(Split::Train) else {
    ///                 failed.fetch_add(1, Ordering::Relaxed);
    ///                 return Ok(());
    ///             };
    ///             let records: Vec<_> = train.iter().filter_map(|r| r.record.clone()).collect();
    ///             println!("{:?}: max {:?}", neuron.neuron_id, max_activation(&records));
    ///             Ok::<(), Box<dyn std::error::Error>>(())
    ///         }
    ///     })
    ///     .await?;
    /// println!("{} neurons could not be served", failed.into_inner());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn for_each_neuron<F, Fut, E>(
        &self,
        selection: Selection,
        splits: &[Split],
        n: Option<u32>,
        concurrency: usize,
        f: F,
    ) -> std::result::Result<(), E>
    where
        F: FnMut(NeuronSplits) -> Fut,
        Fut: Future<Output = std::result::Result<(), E>>,
        E: From<Error>,
    {
        self.neuron_splits(selection, splits, n)
            .map_err(E::from)
            .try_for_each_concurrent(concurrency.max(1), f)
            .await
    }
}

impl Listing for ActivationsClient {
    fn default_dataset(&self) -> BoxFuture<'_, Result<String>> {
        Box::pin(async move {
            Ok(self
                .datasets()
                .await?
                .into_iter()
                .find(|dataset| dataset.is_default)
                .map(|dataset| dataset.name)
                .unwrap_or_default())
        })
    }

    fn layers(&self) -> BoxFuture<'_, Result<Vec<u32>>> {
        Box::pin(self.sorted_layers())
    }

    fn neurons(&self, layer: u32) -> BoxFuture<'_, Result<Vec<u32>>> {
        Box::pin(
            self.neuron_indices_paged(layer, LIST_PAGE_SIZE)
                .try_collect(),
        )
    }
}

/// Neuron ids per `ListNeurons` page when a bulk stream lists a range.
const LIST_PAGE_SIZE: u32 = 10_000;

/// The neuron of a selection that lists exactly one.
fn single_neuron(request: &pb::StreamNeuronSplitsRequest) -> Option<NeuronId> {
    match request.selection.as_ref()?.selection.as_ref()? {
        pb::neuron_selection::Selection::Neurons(list) if list.neuron_ids.len() == 1 => {
            list.neuron_ids.first().copied()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use tonic::transport::Endpoint;

    use super::*;

    #[tokio::test]
    async fn connect_rejects_an_invalid_address() {
        let error = ActivationsClient::connect("http://exa mple:1")
            .await
            .unwrap_err();
        assert!(
            matches!(&error, Error::InvalidEndpoint { url, .. } if url == "http://exa mple:1"),
            "{error:?}"
        );
        assert!(
            error
                .to_string()
                .starts_with("invalid server URL \"http://exa mple:1\": ")
        );
    }

    #[tokio::test]
    async fn connect_reports_an_unreachable_server() {
        // Bind then drop a listener so the port is (almost certainly) closed.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);

        let error = ActivationsClient::connect(address.to_string())
            .await
            .unwrap_err();
        let url = format!("http://{address}");
        assert!(
            matches!(&error, Error::Connect { url: u, .. } if *u == url),
            "{error:?}"
        );
        let text = error.to_string();
        assert!(
            text.starts_with(&format!("cannot connect to {url}: transport error")),
            "{text}"
        );
        assert!(
            text.contains("likely cause: nothing listens at that address"),
            "{text}"
        );
    }

    /// A server on 127.0.0.1 that answers every connection as an HTTP/1.1 web server would: a
    /// 400 to whatever it is sent.
    async fn a_web_server() -> std::net::SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buffer = [0u8; 1024];
                    let _ = socket.read(&mut buffer).await;
                    let answer = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
                    let _ = socket.write_all(answer).await;
                    // Open until the client gives up, as a web server keeping the connection.
                    while socket.read(&mut buffer).await.is_ok_and(|n| n > 0) {}
                });
            }
        });
        address
    }

    #[tokio::test]
    async fn a_server_that_is_not_grpc_or_not_tls_is_named_as_the_likely_cause() {
        let address = a_web_server().await;
        // Plain HTTP/2 to a web server.
        let client = ActivationsClient::connect(address.to_string()).await;
        let text = match client {
            Err(error) => error.to_string(),
            Ok(client) => client.list_layers().await.unwrap_err().to_string(),
        };
        assert!(
            text.contains("likely cause: something answered, but not as a gRPC server"),
            "{text}"
        );
        // TLS to a server that answers in plain text.
        let client = ActivationsClient::builder()
            .endpoint(address.to_string())
            .tls(crate::Tls::new())
            .connect()
            .await;
        let text = match client {
            Err(error) => error.to_string(),
            Ok(client) => client.list_layers().await.unwrap_err().to_string(),
        };
        assert!(
            text.contains("likely cause: the server does not speak TLS"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn lazy_channel_turns_transport_failure_into_unavailable_status() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let channel = Endpoint::from_shared(format!("http://{address}"))
            .unwrap()
            .connect_lazy();

        let error = ActivationsClient::new(channel)
            .list_layers()
            .await
            .unwrap_err();
        assert_eq!(error.code(), Some(tonic::Code::Unavailable), "{error}");
    }
}
