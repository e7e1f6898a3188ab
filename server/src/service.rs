//! `ActivationService`: the gRPC handlers. Each validates its request, asks the dataset's
//! [`NeuronStore`](crate::store::NeuronStore), and converts the answer; errors become statuses
//! in one place ([`crate::error`]).

use std::{pin::Pin, sync::Arc};

use activations_proto::wire::{self, activation_service_server::ActivationService};
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use activations_format::{
    neuron::{self, NeuronKey},
    splits::{self, Split, SplitPlan},
};

use crate::{
    bulk::BulkSettings,
    dataset::Dataset,
    datasets::{DatasetState, Datasets},
    error::{ServiceError, Subject},
    metrics::Metrics,
    page_token::{self, PageToken},
    read_ahead::Budget,
    telemetry,
};

/// The service over a set of datasets.
#[derive(Debug, Clone)]
pub struct ActivationsService {
    datasets: Datasets,
    bulk: BulkSettings,
    /// The bulk streams' read-ahead budget, shared by all of them.
    budget: Budget,
    metrics: Option<Metrics>,
    max_page_size: usize,
    max_response_bytes: usize,
}

impl ActivationsService {
    pub fn new(datasets: Datasets) -> Self {
        ActivationsService {
            datasets,
            bulk: BulkSettings::DEFAULT,
            budget: Budget::new(BulkSettings::DEFAULT.read_ahead_bytes),
            metrics: None,
            max_page_size: page_token::MAX_PAGE_SIZE,
            max_response_bytes: crate::limits::Limits::DEFAULT.max_response_bytes,
        }
    }

    /// Records into `metrics`: the records streamed here, and every call when served by
    /// [`crate::server::serve`].
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The metrics this service records into, if any.
    pub fn metrics(&self) -> Option<&Metrics> {
        self.metrics.as_ref()
    }

    /// Sets the largest `ListNeurons` page (at least 1).
    pub fn with_max_page_size(mut self, max_page_size: usize) -> Self {
        self.max_page_size = max_page_size.max(1);
        self
    }

    /// Sets the largest response message, checked on the message the service builds, before
    /// any compression.
    pub fn with_max_response_bytes(mut self, max_response_bytes: usize) -> Self {
        self.max_response_bytes = max_response_bytes;
        self
    }

    /// Refuses a response message above the limit, whatever compression would make of it: the
    /// limit applies to the message the server builds.
    fn check_size(
        &self,
        message: &impl prost::Message,
        what: impl FnOnce() -> String,
    ) -> Result<(), ServiceError> {
        let size = message.encoded_len();
        if size <= self.max_response_bytes {
            return Ok(());
        }
        Err(ServiceError::ResponseTooLarge {
            what: what(),
            size,
            limit: self.max_response_bytes,
        })
    }

    /// Sets the limits of `StreamNeuronSplits`.
    /// The datasets it serves.
    pub fn datasets(&self) -> &Datasets {
        &self.datasets
    }

    pub fn with_bulk_settings(mut self, bulk: BulkSettings) -> Self {
        self.bulk = bulk;
        self.budget = Budget::new(bulk.read_ahead_bytes);
        self
    }

    async fn load(
        &self,
        dataset: &str,
        neuron_id: Option<wire::NeuronId>,
    ) -> Result<(Arc<Dataset>, NeuronKey, Arc<wire::NeuronRecord>), ServiceError> {
        telemetry::record_dataset(self.dataset_name(dataset));
        let dataset = self.datasets.get(dataset)?.clone();
        let key = neuron_key(neuron_id)?;
        telemetry::record_neuron(key);
        let record = dataset
            .store
            .neuron(key)
            .await
            .map_err(|e| ServiceError::store(&dataset.name, Subject::Neuron(key), e))?;
        Ok((dataset, key, record))
    }

    /// The name of the dataset a request names: the default's for the empty name.
    fn dataset_name<'a>(&'a self, requested: &'a str) -> &'a str {
        match requested {
            "" => self.datasets.default_name(),
            name => name,
        }
    }
}

fn neuron_key(neuron_id: Option<wire::NeuronId>) -> Result<NeuronKey, ServiceError> {
    neuron_id
        .as_ref()
        .map(NeuronKey::from)
        .ok_or_else(|| ServiceError::invalid("neuron_id", "is required"))
}

/// The records of one split: a lazy stream over the shared neuron record, so nothing is copied
/// before the client asks for it and a client that goes away stops the work.
type RecordStream = Pin<Box<dyn Stream<Item = Result<wire::SplitActivationRecord, Status>> + Send>>;

#[tonic::async_trait]
impl ActivationService for ActivationsService {
    async fn get_neuron_record(
        &self,
        request: Request<wire::GetNeuronRecordRequest>,
    ) -> Result<Response<wire::NeuronRecord>, Status> {
        let request = request.into_inner();
        let (_, key, record) = self.load(&request.dataset, request.neuron_id).await?;
        self.check_size(record.as_ref(), || format!("the record of {key}"))?;
        Ok(Response::new(Arc::unwrap_or_clone(record)))
    }

    type StreamActivationRecordsStream = RecordStream;

    async fn stream_activation_records(
        &self,
        request: Request<wire::StreamActivationRecordsRequest>,
    ) -> Result<Response<RecordStream>, Status> {
        let request = request.into_inner();
        let split = Split::try_from(request.split)
            .map_err(|e| ServiceError::invalid("split", e.to_string()))?;
        let n = request.slice_params.and_then(|p| p.n_examples_per_split);
        let (dataset, key, record) = self.load(&request.dataset, request.neuron_id).await?;
        let plan = SplitPlan::for_record(split, n, &record).map_err(|detail| {
            ServiceError::NotEnoughRecords {
                dataset: dataset.name.clone(),
                neuron: key,
                detail,
            }
        })?;
        tracing::debug!(dataset = %dataset.name, neuron = %key, %split, records = plan.len(), "streaming split");
        let records = SplitRecords {
            record,
            key,
            entries: plan.entries(),
            limit: self.max_response_bytes,
            ended: false,
        };
        Ok(Response::new(match &self.metrics {
            Some(metrics) => {
                Box::pin(metrics.count_records(records, "StreamActivationRecords", |_| 1))
            }
            None => Box::pin(records),
        }))
    }

    type StreamNeuronSplitsStream = crate::bulk::NeuronSplitsStream;

    async fn stream_neuron_splits(
        &self,
        request: Request<wire::StreamNeuronSplitsRequest>,
    ) -> Result<Response<Self::StreamNeuronSplitsStream>, Status> {
        let request = request.into_inner();
        telemetry::record_dataset(self.dataset_name(&request.dataset));
        if let Some(selection) = &request.selection {
            telemetry::record_selection(telemetry::SelectionSummary(selection));
        }
        let stream = crate::bulk::stream(&self.datasets, &self.bulk, &self.budget, request).await?;
        let named = stream.map(|item| {
            item.map(|message| {
                let id = message
                    .neuron_id
                    .map(|id| (id.layer_index, id.neuron_index));
                (message, id)
            })
        });
        let stream = within_limit(named, self.max_response_bytes, |id| match id {
            Some((layer, neuron)) => format!("the message of neuron {layer}/{neuron}'s splits"),
            None => "the message of a neuron's splits".to_string(),
        });
        let stream: crate::bulk::NeuronSplitsStream = Box::pin(stream);
        Ok(Response::new(match &self.metrics {
            Some(metrics) => Box::pin(metrics.count_records(stream, "StreamNeuronSplits", |m| {
                m.splits.iter().map(|s| s.records.len()).sum()
            })),
            None => stream,
        }))
    }

    async fn get_neuron_summary(
        &self,
        request: Request<wire::GetNeuronSummaryRequest>,
    ) -> Result<Response<wire::NeuronSummary>, Status> {
        let request = request.into_inner();
        let (_, _, record) = self.load(&request.dataset, request.neuron_id).await?;
        Ok(Response::new(neuron::summary(&record)))
    }

    async fn neuron_exists(
        &self,
        request: Request<wire::NeuronExistsRequest>,
    ) -> Result<Response<wire::NeuronExistsResponse>, Status> {
        let request = request.into_inner();
        telemetry::record_dataset(self.dataset_name(&request.dataset));
        let dataset = self.datasets.get(&request.dataset)?;
        let key = neuron_key(request.neuron_id)?;
        telemetry::record_neuron(key);
        let exists = dataset
            .store
            .neuron_exists(key)
            .await
            .map_err(|e| ServiceError::store(&dataset.name, Subject::Neuron(key), e))?;
        Ok(Response::new(wire::NeuronExistsResponse { exists }))
    }

    async fn list_layers(
        &self,
        request: Request<wire::ListLayersRequest>,
    ) -> Result<Response<wire::ListLayersResponse>, Status> {
        telemetry::record_dataset(self.dataset_name(&request.get_ref().dataset));
        let dataset = self.datasets.get(&request.get_ref().dataset)?;
        let layer_indices = dataset
            .store
            .layers()
            .await
            .map_err(|e| ServiceError::store(&dataset.name, Subject::Layers, e))?;
        Ok(Response::new(wire::ListLayersResponse { layer_indices }))
    }

    async fn list_neurons(
        &self,
        request: Request<wire::ListNeuronsRequest>,
    ) -> Result<Response<wire::ListNeuronsResponse>, Status> {
        let request = request.into_inner();
        telemetry::record_dataset(self.dataset_name(&request.dataset));
        let dataset = self.datasets.get(&request.dataset)?;
        let layer = request.layer_index;
        let page_size = page_token::page_size(request.page_size, self.max_page_size)
            .map_err(|e| ServiceError::invalid("page_size", e))?;
        let after = match request.page_token.as_str() {
            "" => None,
            token => Some(
                page_token::decode(token, &dataset.name, layer)
                    .map_err(|e| ServiceError::invalid("page_token", e))?
                    .after,
            ),
        };
        let neurons = dataset
            .store
            .neurons(layer)
            .await
            .map_err(|e| ServiceError::store(&dataset.name, Subject::Layer(layer), e))?;
        let start = after.map_or(0, |after| neurons.partition_point(|&n| n <= after));
        let page = &neurons[start..(start + page_size).min(neurons.len())];
        let next_page_token = match page.last() {
            Some(&last) if start + page.len() < neurons.len() => PageToken {
                dataset: dataset.name.clone(),
                layer,
                after: last,
            }
            .encode(),
            _ => String::new(),
        };
        Ok(Response::new(wire::ListNeuronsResponse {
            neuron_indices: page.to_vec(),
            next_page_token,
        }))
    }

    async fn list_datasets(
        &self,
        _request: Request<wire::ListDatasetsRequest>,
    ) -> Result<Response<wire::ListDatasetsResponse>, Status> {
        let default = self.datasets.default_name();
        let datasets = self
            .datasets
            .states()
            .into_iter()
            .map(|state| match state {
                DatasetState::Open(d) => wire::DatasetInfo {
                    is_default: d.name == default,
                    name: d.name.clone(),
                    uri: d.uri.clone(),
                    layout: wire::Layout::from(d.layout).into(),
                    unavailable: String::new(),
                },
                DatasetState::Unavailable { name, uri, cause } => wire::DatasetInfo {
                    is_default: name == default,
                    name,
                    uri,
                    layout: wire::Layout::Unspecified.into(),
                    unavailable: cause,
                },
            })
            .collect();
        Ok(Response::new(wire::ListDatasetsResponse { datasets }))
    }
}

/// The records of one split of `record`, each made when the client asks for it, refused (and
/// the stream ended) if above `limit` bytes: one stream, not a chain of adapters, since a warm
/// call is mostly this stream's polling (the adapters cost 2,000 instructions a call more).
struct SplitRecords<I> {
    record: Arc<wire::NeuronRecord>,
    key: NeuronKey,
    entries: I,
    limit: usize,
    ended: bool,
}

impl<I: Iterator<Item = (splits::Source, usize)> + Unpin> Stream for SplitRecords<I> {
    type Item = Result<wire::SplitActivationRecord, Status>;

    fn poll_next(
        self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.ended {
            return std::task::Poll::Ready(None);
        }
        let Some((source, index)) = this.entries.next() else {
            this.ended = true;
            return std::task::Poll::Ready(None);
        };
        let message = splits::split_record(&this.record, source, index);
        let size = prost::Message::encoded_len(&message);
        if size > this.limit {
            // Nothing follows a refused message.
            this.ended = true;
            let key = this.key;
            return std::task::Poll::Ready(Some(Err(Status::from(
                ServiceError::ResponseTooLarge {
                    what: format!("record {index} of the {source} records of {key}"),
                    size,
                    limit: this.limit,
                },
            ))));
        }
        std::task::Poll::Ready(Some(Ok(message)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        // An entry gives a record or a refusal that ends the stream.
        match self.ended {
            true => (0, Some(0)),
            false => (0, self.entries.size_hint().1),
        }
    }
}

/// `messages` (each with what it is, for `what` to name it) as a response stream that refuses a
/// message above `limit` bytes as the server builds it, whatever compression would make of it,
/// and ends there.
fn within_limit<T, W>(
    messages: impl Stream<Item = Result<(T, W), Status>> + Send + 'static,
    limit: usize,
    what: impl Fn(W) -> String + Send + 'static,
) -> impl Stream<Item = Result<T, Status>> + Send + 'static
where
    T: prost::Message + Send + 'static,
    W: Send + 'static,
{
    let checked = messages.map(move |item| {
        let (message, which) = item?;
        let size = message.encoded_len();
        if size > limit {
            return Err(Status::from(ServiceError::ResponseTooLarge {
                what: what(which),
                size,
                limit,
            }));
        }
        Ok(message)
    });
    // Nothing follows a refused message.
    checked.scan(false, |failed, item| {
        std::future::ready((!*failed).then(|| {
            *failed = item.is_err();
            item
        }))
    })
}
