//! Calls over several servers: which server each call goes to.
//!
//! A client with one server sends it everything. With several (a list, or a `dns:///` name
//! whose addresses are resolved again every [`resolve_interval`](crate::ClientBuilder::resolve_interval)
//! and soon after a server fails), each call goes to one of them per the [`Policy`]:
//!
//! - [`Policy::Affinity`] (the default): every call about a neuron goes to the server that
//!   owns it by rendezvous hashing ([`hash`], documented byte for byte so other clients route
//!   the same way), so each server reads and caches its own share of the neurons. Calls about
//!   no neuron in particular (listings) go round robin.
//! - [`Policy::RoundRobin`]: every call to the next server in turn.
//!
//! Bulk streams ([`neuron_splits`](crate::ActivationsClient::neuron_splits)) with affinity cut
//! their selection by owner: each server streams its share, and the shares are merged back into
//! selection order ([`neuron_splits_unordered`](crate::ActivationsClient::neuron_splits_unordered):
//! as they arrive). A server lost midway hands its undelivered neurons to their next owners.
//!
//! A server whose connection fails (refused, reset, `UNAVAILABLE` other than a dataset's own
//! outage) is taken out: its calls go to the next server in their order, the call is retried
//! there per the [`RetryPolicy`](crate::RetryPolicy), and the server comes back only once a gRPC
//! health check of it answers SERVING. Changing the servers moves only the neurons whose
//! owner changed: about 1/N of them.

pub mod discovery;
pub mod hash;
pub(crate) mod pool;

use std::future::Future;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::ErrorReason;
use crate::security::{Credentials, Tls};
use crate::settings::Compression;
use crate::stub::{self, Stub};

pub use discovery::{Resolve, SystemResolver};
pub use hash::{RouteKey, owner, preference, weight};
pub(crate) use pool::Pool;

/// How a client with several servers chooses one per call (see the [module documentation](self)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Policy {
    /// Calls about a neuron to its owner by rendezvous hashing; others round robin.
    #[default]
    Affinity,
    /// Every call to the next server in turn.
    RoundRobin,
}

/// One server of a client, as [`ActivationsClient::servers`](crate::ActivationsClient::servers)
/// shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// `host:port`, as calls are routed by it (see [`hash`]).
    pub address: String,
    /// Whether it takes calls: false from a failure of its connection until a health check of
    /// it passes.
    pub available: bool,
}

/// The default of [`ClientBuilder::resolve_interval`](crate::ClientBuilder::resolve_interval).
pub const DEFAULT_RESOLVE_INTERVAL: Duration = Duration::from_secs(30);

/// How the client opens a channel to a server and wraps it in a stub: the settings every server
/// of a client shares.
#[derive(Debug, Clone)]
pub(crate) struct Dialer {
    pub(crate) credentials: Credentials,
    pub(crate) compression: Option<Compression>,
    pub(crate) max_decoding_message_size: usize,
    pub(crate) max_encoding_message_size: usize,
    pub(crate) connect_timeout: Duration,
    /// TLS, for `https://` servers; with a DNS target, the name checked is the target's host
    /// unless the settings name one.
    pub(crate) tls: Option<Tls>,
    /// The host of a DNS target, whose addresses are dialed.
    pub(crate) dns_host: Option<String>,
}

impl Dialer {
    pub(crate) fn stub(&self, channel: Channel) -> Stub {
        stub::new(
            channel,
            self.credentials.clone(),
            self.compression,
            self.max_decoding_message_size,
            self.max_encoding_message_size,
        )
    }

    /// A lazily connected channel to `address` (`ip:port`), found by resolving a DNS target.
    pub(crate) fn channel_to(&self, address: &str) -> Result<Channel, String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{address}");
        let endpoint = Endpoint::from_shared(url.clone())
            .map_err(|error| format!("{url}: {error}"))?
            .connect_timeout(self.connect_timeout);
        let endpoint = match &self.tls {
            None => endpoint,
            Some(tls) => {
                let mut tls = tls.clone();
                if let Some(host) = &self.dns_host {
                    tls = tls.default_domain_name(host);
                }
                let config = tls.client_config().map_err(|error| error.to_string())?;
                endpoint
                    .tls_config(config)
                    .map_err(|error| format!("{url}: {error}"))?
            }
        };
        Ok(endpoint.connect_lazy())
    }
}

/// Where a client's calls go: its one server, or a pool of them.
#[derive(Debug, Clone)]
pub(crate) enum Route {
    /// Boxed: a stub is ten times the size of a pool's handle.
    One(Box<Stub>),
    Pool(Pool),
}

impl Route {
    /// One attempt of a call about `key` (`None`: about no neuron): `call` gets the stub of the
    /// chosen server, which is taken out if the attempt fails with its connection.
    pub(crate) async fn attempt<R, F, Fut>(
        &self,
        key: Option<RouteKey<'_>>,
        call: F,
    ) -> Result<R, Status>
    where
        F: FnOnce(Stub) -> Fut,
        Fut: Future<Output = Result<R, Status>>,
    {
        match self {
            Route::One(stub) => call(Stub::clone(stub)).await,
            Route::Pool(pool) => {
                let replica = pool.pick(key.as_ref()).await?;
                let result = call(replica.stub.clone()).await;
                if let Err(status) = &result
                    && is_server_failure(status)
                {
                    pool.eject(&replica);
                }
                result
            }
        }
    }
}

/// Whether `status` says the server itself is out (refused or dropped connection, shutting
/// down), not that one of its datasets is: a dataset whose storage is down is down on every
/// server, so taking servers out for it would only empty the pool.
pub(crate) fn is_server_failure(status: &Status) -> bool {
    if !crate::retry::is_retryable_status(status) {
        return false;
    }
    if status.code() != Code::Unavailable {
        return true;
    }
    let reason = status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone());
    reason.as_deref() != Some(ErrorReason::DatasetUnavailable.as_str())
}
