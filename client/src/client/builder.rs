//! [`ClientBuilder`]: the settings of a client, and connecting it to its servers.

use std::sync::Arc;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use super::ActivationsClient;
use crate::error::{Chain, Error, Result};
use crate::retry::Backoff;
use crate::routing::discovery::DnsName;
use crate::routing::{
    DEFAULT_RESOLVE_INTERVAL, Dialer, Policy, Pool, Resolve, Route, SystemResolver,
};
use crate::security::{BearerToken, Credentials, Tls};
use crate::settings::{
    CallSettings, Compression, DEFAULT_CONNECT_TIMEOUT, MAX_DECODING_MESSAGE_SIZE,
    MAX_ENCODING_MESSAGE_SIZE, RetryPolicy,
};

/// Settings of an [`ActivationsClient`], from [`ActivationsClient::builder`]; see the
/// [module documentation](crate::settings) for a table of them.
///
/// # Examples
///
/// ```no_run
/// use activations_client::{ActivationsClient, Compression, RetryPolicy};
/// use std::time::Duration;
///
/// # async fn example() -> activations_client::Result<()> {
/// let client = ActivationsClient::builder()
///     .endpoints(["http://10.0.0.5:50051", "http://10.0.0.6:50051"])
///     .dataset("gpt2-xl")
///     .timeout(Duration::from_secs(30))
///     .connect_timeout(Duration::from_secs(2))
///     .retry(RetryPolicy { max_attempts: 5, ..RetryPolicy::DEFAULT })
///     .compression(Some(Compression::Gzip))
///     .max_decoding_message_size(16 << 20)
///     .connect()
///     .await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `connect` is called"]
pub struct ClientBuilder {
    endpoints: Vec<String>,
    dataset: String,
    calls: CallSettings,
    connect_timeout: Duration,
    compression: Option<Compression>,
    max_decoding_message_size: usize,
    tls: Option<Tls>,
    bearer_token: Option<BearerToken>,
    max_encoding_message_size: usize,
    policy: Policy,
    resolve_interval: Duration,
    resolver: Arc<dyn Resolve>,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            endpoints: Vec::new(),
            dataset: String::new(),
            calls: CallSettings::DEFAULT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            compression: None,
            max_decoding_message_size: MAX_DECODING_MESSAGE_SIZE,
            tls: None,
            bearer_token: None,
            max_encoding_message_size: MAX_ENCODING_MESSAGE_SIZE,
            policy: Policy::Affinity,
            resolve_interval: DEFAULT_RESOLVE_INTERVAL,
            resolver: Arc::new(SystemResolver),
        }
    }
}

impl ClientBuilder {
    /// Adds a server to call, such as `http://10.0.0.5:50051`; an address without a scheme is
    /// taken as `http://`. Call it once per server: with several, each call goes to one of them
    /// per the [`policy`](Self::policy) (by default the neuron's owner by rendezvous hashing,
    /// see [`routing`](crate::routing)), and a server that cannot be reached is taken out until
    /// a health check passes, its calls retried on the next server.
    ///
    /// Or one DNS name, `dns:///host:port` (a Kubernetes headless Service, such as
    /// `dns:///activations-headless.default.svc.cluster.local:50051`): every address it resolves
    /// to is a server, resolved again every [`resolve_interval`](Self::resolve_interval) and soon
    /// after a server fails. With [`tls`](Self::tls), the certificates are checked against the
    /// DNS name unless [`Tls::domain_name`] says otherwise.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use activations_client::ActivationsClient;
    ///
    /// # async fn example() -> activations_client::Result<()> {
    /// let client = ActivationsClient::builder()
    ///     .endpoint("10.0.0.5:50051")
    ///     .endpoint("10.0.0.6:50051")
    ///     .connect()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoints.push(url.into());
        self
    }

    /// Adds several servers at once, as [`endpoint`](Self::endpoint) does each.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use activations_client::ActivationsClient;
    ///
    /// # async fn example() -> activations_client::Result<()> {
    /// let servers = std::env::var("ACTIVATIONS_SERVERS").unwrap_or_default();
    /// let client = ActivationsClient::builder()
    ///     .endpoints(servers.split(',').filter(|s| !s.is_empty()))
    ///     .connect()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn endpoints<I>(mut self, urls: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.endpoints.extend(urls.into_iter().map(Into::into));
        self
    }

    /// The dataset every request names, as [`ActivationsClient::with_dataset`] sets it. Empty
    /// (the default) means the server's default dataset.
    ///
    /// # Examples
    ///
    /// ```
    /// use activations_client::ActivationsClient;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> activations_client::Result<()> {
    /// let client = ActivationsClient::builder()
    ///     .endpoint("127.0.0.1:50051")
    ///     .dataset("gpt2-small")
    ///     .connect_lazy()?;
    /// assert_eq!(client.dataset(), "gpt2-small");
    /// # Ok(())
    /// # }
    /// ```
    pub fn dataset(mut self, dataset: impl Into<String>) -> Self {
        self.dataset = dataset.into();
        self
    }

    /// The deadline of every call: the time from calling a method to its last response
    /// message, retries and their waits included. It is sent to the server as the
    /// `grpc-timeout` header (so the server stops working on a call nobody waits for) and
    /// enforced by the client; a call that runs out of time fails with `DEADLINE_EXCEEDED`,
    /// which is not retried.
    ///
    /// For streams the deadline covers the whole stream: a
    /// [`stream_activation_records`](ActivationsClient::stream_activation_records) stream not
    /// finished in time ends with a `DEADLINE_EXCEEDED` item. A
    /// [`neuron_splits`](ActivationsClient::neuron_splits) stream gives each call it makes (the
    /// first, and each resumption) the whole timeout, so a bulk job longer than the timeout
    /// fails; give bulk jobs a client without one
    /// ([`ActivationsClient::with_timeout`]`(None)`).
    ///
    /// Default: none.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use activations_client::{ActivationsClient, Code, neuron_id};
    /// use std::time::Duration;
    ///
    /// # async fn example() -> activations_client::Result<()> {
    /// let client = ActivationsClient::builder()
    ///     .endpoint("127.0.0.1:50051")
    ///     .timeout(Duration::from_secs(5))
    ///     .connect()
    ///     .await?;
    /// match client.load_neuron(1, 1).await {
    ///     Err(e) if e.code() == Some(Code::DeadlineExceeded) => println!("too slow: {e}"),
    ///     other => println!("{:?}", other.map(|record| record.neuron_id)),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.calls.timeout = Some(timeout);
        self
    }

    /// Bound on opening one connection (TCP connect and HTTP/2 handshake). Default: 10 s.
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
    ///     .connect_timeout(Duration::from_millis(500))
    ///     .connect()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How transient failures are retried; see [`RetryPolicy`]. Default:
    /// [`RetryPolicy::DEFAULT`] (3 attempts, 100 ms doubling up to 2 s);
    /// [`RetryPolicy::NONE`] turns retries off.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use activations_client::{ActivationsClient, RetryPolicy};
    /// use std::time::Duration;
    ///
    /// # async fn example() -> activations_client::Result<()> {
    /// let client = ActivationsClient::builder()
    ///     .endpoint("127.0.0.1:50051")
    ///     .retry(RetryPolicy {
    ///         max_attempts: 5,
    ///         initial_backoff: Duration::from_millis(100),
    ///         max_backoff: Duration::from_secs(5),
    ///     })
    ///     .connect()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.calls.retry = policy;
        self
    }

    /// Compresses requests with this encoding and asks for responses in it; `None` (the
    /// default) sends and receives everything uncompressed. See [`Compression`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use activations_client::{ActivationsClient, Compression};
    ///
    /// # async fn example() -> activations_client::Result<()> {
    /// let client = ActivationsClient::builder()
    ///     .endpoint("127.0.0.1:50051")
    ///     .compression(Some(Compression::Gzip))
    ///     .connect()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn compression(mut self, compression: Option<Compression>) -> Self {
        self.compression = compression;
        self
    }

    /// The largest response message decoded, in bytes (after decompression); a larger one
    /// fails the call with `OUT_OF_RANGE`. Default: [`MAX_DECODING_MESSAGE_SIZE`] (64 MiB). A
    /// `NeuronSplits` message of the server is at most about 1 MiB plus one record, and a whole
    /// neuron record of the public data about 1 MB.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use activations_client::ActivationsClient;
    ///
    /// # async fn example() -> activations_client::Result<()> {
    /// let client = ActivationsClient::builder()
    ///     .endpoint("127.0.0.1:50051")
    ///     .max_decoding_message_size(256 << 20)
    ///     .connect()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn max_decoding_message_size(mut self, limit: usize) -> Self {
        self.max_decoding_message_size = limit;
        self
    }

    /// Connects over TLS with these settings: the CA certificate to trust, a client
    /// certificate for servers that require one, the name to verify (see [`Tls`]). Endpoints
    /// without a scheme are then taken as `https://`, and an `http://` endpoint is refused
    /// ([`Error::PlaintextWithTls`]). Without these settings, `https://` endpoints still use
    /// TLS, trusting the system's roots.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use activations_client::{ActivationsClient, Tls};
    ///
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = ActivationsClient::builder()
    ///     .endpoint("10.0.0.5:50051")
    ///     .tls(Tls::new()
    ///         .ca_certificate_pem(std::fs::read("ca.pem")?)
    ///         .domain_name("activations.internal"))
    ///     .connect()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn tls(mut self, tls: Tls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sends `authorization: Bearer <token>` on every call, retries and resumed bulk streams
    /// included, for servers started with tokens. Surrounding whitespace is ignored; a token
    /// that cannot be sent in a header fails [`connect`](Self::connect) with
    /// [`Error::InvalidToken`]. Over plain `http://` the token crosses the network readable:
    /// use TLS beyond a trusted network.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use activations_client::ActivationsClient;
    ///
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = ActivationsClient::builder()
    ///     .endpoint("https://activations.internal:50051")
    ///     .bearer_token(std::env::var("ACTIVATIONS_TOKEN")?)
    ///     .connect()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.bearer_token = Some(BearerToken(token.into()));
        self
    }

    /// The largest request message sent, in bytes; a larger one fails the call with
    /// `OUT_OF_RANGE` before anything is sent. Default: [`MAX_ENCODING_MESSAGE_SIZE`] (4 MiB),
    /// the server's default `--max-request-bytes`, which refuses larger requests with
    /// `RESOURCE_EXHAUSTED`. Only a long explicit neuron list of
    /// [`neuron_splits`](ActivationsClient::neuron_splits) comes near it (~7 bytes a neuron).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use activations_client::ActivationsClient;
    ///
    /// # async fn example() -> activations_client::Result<()> {
    /// // For a server started with --max-request-bytes 16MiB.
    /// let client = ActivationsClient::builder()
    ///     .endpoint("127.0.0.1:50051")
    ///     .max_encoding_message_size(16 << 20)
    ///     .connect()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn max_encoding_message_size(mut self, limit: usize) -> Self {
        self.max_encoding_message_size = limit;
        self
    }

    /// How calls are spread over several servers: [`Policy::Affinity`] (the default) or
    /// [`Policy::RoundRobin`]. With one server, it changes nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// use activations_client::{ActivationsClient, routing::Policy};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> activations_client::Result<()> {
    /// let client = ActivationsClient::builder()
    ///     .endpoints(["127.0.0.1:50051", "127.0.0.1:50052"])
    ///     .policy(Policy::RoundRobin)
    ///     .connect_lazy()?;
    /// # let _ = client;
    /// # Ok(())
    /// # }
    /// ```
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// How often a `dns:///` target is resolved again (default 30 s); it is also resolved
    /// soon after a server fails.
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
    ///     .endpoint("dns:///localhost:50051")
    ///     .resolve_interval(Duration::from_secs(5))
    ///     .connect_lazy()?;
    /// # let _ = client;
    /// # Ok(())
    /// # }
    /// ```
    pub fn resolve_interval(mut self, interval: Duration) -> Self {
        self.resolve_interval = interval;
        self
    }

    /// Resolves `dns:///` targets with `resolver` instead of the system's (see [`Resolve`]).
    pub fn resolver(mut self, resolver: impl Resolve) -> Self {
        self.resolver = Arc::new(resolver);
        self
    }

    /// Opens the client.
    ///
    /// With one endpoint, connects at once, retrying a failed connection per the
    /// [retry policy](Self::retry): fails with [`Error::Connect`] when the server cannot be
    /// reached. With several, opens a balanced channel without connecting (connecting all of
    /// them eagerly would fail the client for one server being down): each server is connected
    /// on first use and reconnected after a failure, and calls meeting a server that cannot be
    /// reached fail with `UNAVAILABLE`, which is retried.
    ///
    /// Fails with [`Error::NoEndpoint`] without an endpoint, [`Error::InvalidEndpoint`] for
    /// an address that is not a URI, [`Error::Tls`] for TLS settings that cannot be used
    /// (PEM text without a certificate or key) and
    /// [`Error::InvalidToken`] for a bearer token that cannot be sent.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use activations_client::ActivationsClient;
    ///
    /// # async fn example() -> activations_client::Result<()> {
    /// let client = ActivationsClient::builder().endpoint("127.0.0.1:50051").connect().await?;
    /// println!("{:?}", client.sorted_layers().await?);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(self) -> Result<ActivationsClient> {
        let route = match self.targets()? {
            Targets::One(url, endpoint) => {
                let channel = connect_with_retries(url, &endpoint, self.calls.retry).await?;
                Route::One(Box::new(self.dialer(None)?.stub(channel)))
            }
            targets => {
                let route = self.route(targets)?;
                if let Route::Pool(pool) = &route {
                    // A DNS name that resolves to nothing fails here rather than at the first call.
                    pool.pick(None).await.map_err(Error::from)?;
                }
                route
            }
        };
        Ok(self.client(route))
    }

    /// Opens the client without connecting: each server is connected on the first call that
    /// needs it (a server that cannot be reached is then an `UNAVAILABLE` call, retried per the
    /// policy). Fails only for a missing or invalid endpoint. Must be called within a Tokio
    /// runtime.
    ///
    /// # Examples
    ///
    /// ```
    /// use activations_client::ActivationsClient;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> activations_client::Result<()> {
    /// // Nothing listens there yet; nothing is attempted until the first call.
    /// let client = ActivationsClient::builder().endpoint("127.0.0.1:1").connect_lazy()?;
    /// # let _ = client;
    /// # Ok(())
    /// # }
    /// ```
    pub fn connect_lazy(self) -> Result<ActivationsClient> {
        let targets = self.targets()?;
        let route = self.route(targets)?;
        Ok(self.client(route))
    }

    /// The route to `targets`, every server connected lazily.
    fn route(&self, targets: Targets) -> Result<Route> {
        Ok(match targets {
            Targets::One(_, endpoint) => {
                Route::One(Box::new(self.dialer(None)?.stub(endpoint.connect_lazy())))
            }
            Targets::Fixed(endpoints) => {
                let servers = endpoints.into_iter().map(|(_, endpoint)| {
                    let address = endpoint
                        .uri()
                        .authority()
                        .map_or_else(String::new, |a| a.as_str().to_ascii_lowercase());
                    (address, endpoint.connect_lazy())
                });
                Route::Pool(Pool::fixed(self.policy, self.dialer(None)?, servers))
            }
            Targets::Dns(name) => {
                let dialer = self.dialer(Some(name.host.clone()))?;
                Route::Pool(Pool::resolving(
                    self.policy,
                    dialer,
                    name,
                    Arc::clone(&self.resolver),
                    self.resolve_interval,
                ))
            }
        })
    }

    /// What every server's stub shares.
    fn dialer(&self, dns_host: Option<String>) -> Result<Dialer> {
        if let Some(tls) = &self.tls {
            // Checks the PEM texts now, whatever the target.
            tls.client_config()?;
        }
        Ok(Dialer {
            credentials: self.credentials()?,
            compression: self.compression,
            max_decoding_message_size: self.max_decoding_message_size,
            max_encoding_message_size: self.max_encoding_message_size,
            connect_timeout: self.connect_timeout,
            tls: self.tls.clone(),
            dns_host,
        })
    }

    /// The endpoints given: one server, several, or one DNS name.
    fn targets(&self) -> Result<Targets> {
        let dns: Vec<_> = self
            .endpoints
            .iter()
            .filter_map(|url| DnsName::parse(url).map(|parsed| (url, parsed)))
            .collect();
        match dns.as_slice() {
            [] => {}
            [(url, parsed)] if self.endpoints.len() == 1 => {
                return match parsed {
                    Ok(name) => Ok(Targets::Dns(name.clone())),
                    Err(reason) => Err(Error::InvalidTarget {
                        target: (*url).clone(),
                        reason: reason.clone(),
                    }),
                };
            }
            [(url, _), ..] => {
                return Err(Error::InvalidTarget {
                    target: (*url).clone(),
                    reason: "a dns:/// target names every server: give it alone, not with other \
                             addresses"
                        .to_owned(),
                });
            }
        }
        let mut endpoints = self.parsed_endpoints()?;
        Ok(if endpoints.len() == 1 {
            let (url, endpoint) = endpoints.remove(0);
            Targets::One(url, Box::new(endpoint))
        } else {
            Targets::Fixed(endpoints)
        })
    }

    fn credentials(&self) -> Result<Credentials> {
        match &self.bearer_token {
            Some(token) => Credentials::bearer(token),
            None => Ok(Credentials::default()),
        }
    }

    fn parsed_endpoints(&self) -> Result<Vec<(String, Endpoint)>> {
        if self.endpoints.is_empty() {
            return Err(Error::NoEndpoint);
        }
        self.endpoints
            .iter()
            .map(|url| {
                let url = with_scheme_for(url.clone(), self.tls.is_some());
                let endpoint = match Endpoint::from_shared(url.clone()) {
                    Ok(endpoint) => endpoint.connect_timeout(self.connect_timeout),
                    Err(source) => return Err(Error::InvalidEndpoint { url, source }),
                };
                // `http://host:` parses, and then connects to port 80 or fails oddly.
                if endpoint
                    .uri()
                    .authority()
                    .is_some_and(|authority| authority.as_str().ends_with(':'))
                {
                    return Err(Error::MissingPort { url });
                }
                let endpoint = match (endpoint.uri().scheme_str(), &self.tls) {
                    (Some("https"), tls) => {
                        let config = tls.clone().unwrap_or_default().client_config()?;
                        match endpoint.tls_config(config) {
                            Ok(endpoint) => endpoint,
                            Err(source) => {
                                let reason = format!("{url}: {}", Chain(&source));
                                return Err(Error::Tls { reason });
                            }
                        }
                    }
                    (_, Some(_)) => return Err(Error::PlaintextWithTls { url }),
                    (_, None) => endpoint,
                };
                Ok((url, endpoint))
            })
            .collect()
    }

    fn client(self, route: Route) -> ActivationsClient {
        ActivationsClient::routed(route, self.calls).with_dataset(self.dataset)
    }
}

/// The servers a builder names.
enum Targets {
    /// One server: `(url, endpoint)`.
    One(String, Box<Endpoint>),
    /// Several.
    Fixed(Vec<(String, Endpoint)>),
    /// Every address of a DNS name.
    Dns(DnsName),
}

/// Connects to one endpoint, retrying failed connections per `policy`.
async fn connect_with_retries(
    url: String,
    endpoint: &Endpoint,
    policy: RetryPolicy,
) -> Result<Channel> {
    let mut backoff = Backoff::new(policy, None);
    loop {
        match endpoint.connect().await {
            Ok(channel) => return Ok(channel),
            Err(source) => {
                let url = url.clone();
                backoff.retry_after(Error::Connect { url, source }).await?;
            }
        }
    }
}

/// Adds `https://` (with `tls`) or `http://` to an address given without a scheme
/// (`127.0.0.1:50051`).
fn with_scheme_for(url: String, tls: bool) -> String {
    if url.contains("://") {
        url
    } else if tls {
        format!("https://{url}")
    } else {
        format!("http://{url}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_without_scheme_gets_http_or_with_tls_https() {
        assert_eq!(
            with_scheme_for("127.0.0.1:50051".to_owned(), false),
            "http://127.0.0.1:50051"
        );
        assert_eq!(
            with_scheme_for("127.0.0.1:50051".to_owned(), true),
            "https://127.0.0.1:50051"
        );
        assert_eq!(
            with_scheme_for("https://example.com".to_owned(), false),
            "https://example.com"
        );
        assert_eq!(
            with_scheme_for("http://example.com".to_owned(), true),
            "http://example.com"
        );
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let builder = ClientBuilder::default();
        assert_eq!(builder.calls.timeout, None);
        assert_eq!(
            builder.calls.retry,
            RetryPolicy {
                max_attempts: 3,
                initial_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(2),
            }
        );
        assert_eq!(builder.connect_timeout, Duration::from_secs(10));
        assert_eq!(builder.compression, None);
        assert_eq!(builder.max_decoding_message_size, 64 * 1024 * 1024);
        assert_eq!(builder.max_encoding_message_size, 4 * 1024 * 1024);
    }

    #[tokio::test]
    async fn a_builder_without_endpoint_is_refused() {
        let error = ActivationsClient::builder().connect().await.unwrap_err();
        assert!(matches!(error, Error::NoEndpoint), "{error:?}");
        let error = ActivationsClient::builder().connect_lazy().unwrap_err();
        assert!(matches!(error, Error::NoEndpoint), "{error:?}");
    }

    #[tokio::test]
    async fn every_endpoint_is_checked() {
        let error = ActivationsClient::builder()
            .endpoints(["127.0.0.1:1", "http://exa mple:1"])
            .connect_lazy()
            .unwrap_err();
        assert!(
            matches!(&error, Error::InvalidEndpoint { url, .. } if url == "http://exa mple:1"),
            "{error:?}"
        );
        let error = ActivationsClient::builder()
            .endpoint("127.0.0.1:")
            .connect_lazy()
            .unwrap_err();
        assert!(
            matches!(&error, Error::MissingPort { url } if url == "http://127.0.0.1:"),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn tls_turns_addresses_into_https_and_refuses_plain_http() {
        let client = ActivationsClient::builder()
            .endpoint("127.0.0.1:1")
            .tls(Tls::new())
            .connect_lazy();
        assert!(client.is_ok(), "{client:?}");
        let error = ActivationsClient::builder()
            .endpoint("http://127.0.0.1:1")
            .tls(Tls::new())
            .connect_lazy()
            .unwrap_err();
        assert!(
            matches!(&error, Error::PlaintextWithTls { url } if url == "http://127.0.0.1:1"),
            "{error:?}"
        );
        let error = ActivationsClient::builder()
            .endpoint("https://127.0.0.1:1")
            .tls(Tls::new().ca_certificate_pem("not a certificate"))
            .connect_lazy()
            .unwrap_err();
        assert!(matches!(&error, Error::Tls { .. }), "{error:?}");
    }

    #[tokio::test]
    async fn an_unsendable_token_fails_the_connection_without_showing_it() {
        let builder = ActivationsClient::builder()
            .endpoint("127.0.0.1:1")
            .bearer_token("secret with spaces");
        assert!(!format!("{builder:?}").contains("secret"));
        let error = builder.connect_lazy().unwrap_err();
        assert!(matches!(error, Error::InvalidToken), "{error:?}");
        assert!(!error.to_string().contains("secret"));
    }

    #[tokio::test]
    async fn settings_reach_the_client() {
        let client = ActivationsClient::builder()
            .endpoints(["127.0.0.1:1", "127.0.0.1:2"])
            .dataset("d")
            .timeout(Duration::from_millis(1500))
            .retry(RetryPolicy::NONE)
            .compression(Some(Compression::Zstd))
            .connect()
            .await
            .expect("several endpoints connect lazily");
        assert_eq!(client.dataset(), "d");
        assert_eq!(client.timeout(), Some(Duration::from_millis(1500)));
        assert_eq!(client.retry_policy(), RetryPolicy::NONE);
    }
}
