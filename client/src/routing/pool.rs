//! The servers of a client with several: one lazily connected channel each, which of them are
//! out (ejected after a failure, back after a health check), and the choice of a server per
//! call.
//!
//! Written here rather than taken from a crate: tonic's `balance_list` and `ginepro` (tower's
//! power-of-two-choices over a DNS-fed `Discover`) pick any server for any call, while affinity
//! needs the call's key at the moment of choosing and the servers in a stable, shared order.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tonic::Status;
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use super::discovery::{DnsName, Resolve, address_of};
use super::hash::{RouteKey, weight};
use super::{Dialer, Policy};
use crate::stub::Stub;

/// The first wait before a health check of an ejected server, doubled after each failed check.
const FIRST_CHECK_DELAY: Duration = Duration::from_millis(100);
/// The longest wait between two health checks of an ejected server.
const MAX_CHECK_DELAY: Duration = Duration::from_secs(5);
/// The longest a health check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// The least time between two resolutions asked for by failures.
const MIN_RESOLVE_GAP: Duration = Duration::from_secs(1);

/// One server.
#[derive(Debug, Clone)]
pub(crate) struct Replica {
    /// `host:port`, as it is hashed.
    pub(crate) address: Arc<str>,
    pub(crate) stub: Stub,
    channel: Channel,
    ejected: Arc<AtomicBool>,
}

impl Replica {
    fn is_ejected(&self) -> bool {
        self.ejected.load(Ordering::Relaxed)
    }
}

/// The servers and how calls are spread over them. Cloning shares them.
#[derive(Debug, Clone)]
pub(crate) struct Pool {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    policy: Policy,
    dialer: Dialer,
    /// Sorted by address.
    replicas: RwLock<Arc<[Replica]>>,
    /// What the last resolution of a DNS target found wrong, if it failed.
    resolve_error: RwLock<Option<String>>,
    /// Bumped after each resolution, so a call waiting for the first one wakes up.
    resolved: watch::Sender<u64>,
    /// Asks the resolving task for a resolution now.
    refresh: Arc<Notify>,
    next: AtomicUsize,
    /// `Some` for a DNS target.
    dns: Option<DnsName>,
}

impl Pool {
    /// A pool over fixed servers: `(address, channel)` each.
    pub(crate) fn fixed(
        policy: Policy,
        dialer: Dialer,
        servers: impl IntoIterator<Item = (String, Channel)>,
    ) -> Pool {
        let pool = Pool::new(policy, dialer, None);
        let replicas = servers
            .into_iter()
            .map(|(address, channel)| pool.shared.replica(address, channel))
            .collect();
        pool.shared.replace(replicas);
        pool
    }

    /// A pool over the addresses of `name`, resolved by `resolver` now and every `interval`
    /// (and soon after a server fails) for as long as the pool lives.
    pub(crate) fn resolving(
        policy: Policy,
        dialer: Dialer,
        name: DnsName,
        resolver: Arc<dyn Resolve>,
        interval: Duration,
    ) -> Pool {
        let pool = Pool::new(policy, dialer, Some(name.clone()));
        let weak = Arc::downgrade(&pool.shared);
        let refresh = Arc::clone(&pool.shared.refresh);
        tokio::spawn(resolve_forever(weak, refresh, resolver, name, interval));
        pool
    }

    fn new(policy: Policy, dialer: Dialer, dns: Option<DnsName>) -> Pool {
        Pool {
            shared: Arc::new(Shared {
                policy,
                dialer,
                replicas: RwLock::new(Arc::from(Vec::new())),
                resolve_error: RwLock::new(None),
                resolved: watch::channel(0).0,
                refresh: Arc::new(Notify::new()),
                next: AtomicUsize::new(0),
                dns,
            }),
        }
    }

    /// The servers now, in address order.
    pub(crate) fn replicas(&self) -> Arc<[Replica]> {
        Arc::clone(&self.shared.replicas.read().expect("replicas lock"))
    }

    /// What [`crate::ActivationsClient::servers`] shows.
    pub(crate) fn servers(&self) -> Vec<super::Server> {
        self.replicas()
            .iter()
            .map(|replica| super::Server {
                address: replica.address.to_string(),
                available: !replica.is_ejected(),
            })
            .collect()
    }

    /// The server for a call about `key` (`None`: about no neuron in particular). Servers that
    /// are out are skipped unless all are. Waits for the first resolution of a DNS target, up
    /// to the connect timeout.
    pub(crate) async fn pick(&self, key: Option<&RouteKey<'_>>) -> Result<Replica, Status> {
        let replicas = self.ready_replicas().await?;
        let candidates = candidates(&replicas);
        let chosen = match (self.shared.policy, key) {
            (Policy::Affinity, Some(key)) => owner_among(&candidates, key),
            _ => {
                let turn = self.shared.next.fetch_add(1, Ordering::Relaxed);
                candidates[turn % candidates.len()]
            }
        };
        Ok(chosen.clone())
    }

    /// The policy calls are spread by.
    pub(crate) fn policy(&self) -> Policy {
        self.shared.policy
    }

    /// The servers, once there is at least one.
    pub(crate) async fn ready_replicas(&self) -> Result<Arc<[Replica]>, Status> {
        // Every call comes here: no channel or timer unless there is nothing to call yet.
        let replicas = self.replicas();
        if !replicas.is_empty() {
            return Ok(replicas);
        }
        self.first_replicas().await
    }

    /// The servers once a DNS target's resolution has found some, up to the connect timeout.
    async fn first_replicas(&self) -> Result<Arc<[Replica]>, Status> {
        let mut resolved = self.shared.resolved.subscribe();
        let give_up = tokio::time::sleep(self.shared.dialer.connect_timeout);
        tokio::pin!(give_up);
        loop {
            let replicas = self.replicas();
            if !replicas.is_empty() {
                return Ok(replicas);
            }
            let Some(name) = &self.shared.dns else {
                return Err(Status::unavailable("the client has no server"));
            };
            tokio::select! {
                changed = resolved.changed() => if changed.is_err() {
                    return Err(Status::unavailable("the client is closing"));
                },
                () = &mut give_up => {
                    let why = self.shared.resolve_error.read().expect("error lock").clone();
                    return Err(Status::unavailable(match why {
                        Some(why) => format!("{name} cannot be resolved: {why}"),
                        None => format!("{name} resolves to no address"),
                    }));
                }
            }
        }
    }

    /// Takes `replica` out after a failure of its connection: its calls go to the next server
    /// in their order until a health check passes. A DNS target is resolved again soon.
    pub(crate) fn eject(&self, replica: &Replica) {
        if replica.ejected.swap(true, Ordering::Relaxed) {
            return;
        }
        self.shared.refresh.notify_one();
        let weak = Arc::downgrade(&self.shared);
        tokio::spawn(readmit_when_healthy(weak, replica.clone()));
    }
}

/// The servers that take calls now: those not taken out, or all of them when all are.
pub(crate) fn candidates(replicas: &[Replica]) -> Vec<&Replica> {
    let healthy: Vec<&Replica> = replicas.iter().filter(|r| !r.is_ejected()).collect();
    if healthy.is_empty() {
        replicas.iter().collect()
    } else {
        healthy
    }
}

/// The owner of `key` among `candidates` (not empty), by [`super::hash`]'s rule.
pub(crate) fn owner_among<'r>(candidates: &[&'r Replica], key: &RouteKey<'_>) -> &'r Replica {
    candidates
        .iter()
        .max_by(|a, b| {
            weight(&a.address, key)
                .cmp(&weight(&b.address, key))
                .then_with(|| b.address.cmp(&a.address))
        })
        .copied()
        .expect("a non-empty list of servers has an owner")
}

impl Shared {
    fn replica(&self, address: String, channel: Channel) -> Replica {
        Replica {
            address: Arc::from(address),
            stub: self.dialer.stub(channel.clone()),
            channel,
            ejected: Arc::new(AtomicBool::new(false)),
        }
    }

    fn replace(&self, mut replicas: Vec<Replica>) {
        replicas.sort_by(|a, b| a.address.cmp(&b.address));
        *self.replicas.write().expect("replicas lock") = Arc::from(replicas);
        self.resolved.send_modify(|generation| *generation += 1);
    }

    /// Takes a resolution's answer: servers still there keep their connection and state, new
    /// ones are added, gone ones dropped. A failed resolution keeps the servers known.
    fn apply(&self, answer: std::io::Result<Vec<std::net::SocketAddr>>) {
        let addresses = match answer {
            Ok(addresses) => {
                *self.resolve_error.write().expect("error lock") = None;
                addresses
            }
            Err(error) => {
                *self.resolve_error.write().expect("error lock") = Some(error.to_string());
                self.resolved.send_modify(|generation| *generation += 1);
                return;
            }
        };
        let current = Arc::clone(&self.replicas.read().expect("replicas lock"));
        let mut replicas = Vec::with_capacity(addresses.len());
        for socket in addresses {
            let address = address_of(socket);
            if replicas.iter().any(|r: &Replica| *r.address == *address) {
                continue;
            }
            match current.iter().find(|r| *r.address == *address) {
                Some(known) => replicas.push(known.clone()),
                None => match self.dialer.channel_to(&address) {
                    Ok(channel) => replicas.push(self.replica(address, channel)),
                    Err(error) => {
                        *self.resolve_error.write().expect("error lock") = Some(error);
                    }
                },
            }
        }
        self.replace(replicas);
    }
}

async fn resolve_forever(
    pool: Weak<Shared>,
    refresh: Arc<Notify>,
    resolver: Arc<dyn Resolve>,
    name: DnsName,
    interval: Duration,
) {
    loop {
        let answer = resolver.resolve(&name.host, name.port).await;
        match pool.upgrade() {
            Some(shared) => shared.apply(answer),
            None => return,
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = refresh.notified() => tokio::time::sleep(MIN_RESOLVE_GAP).await,
        }
        if pool.strong_count() == 0 {
            return;
        }
    }
}

/// Health-checks an ejected server until it answers SERVING (then takes it back), is no longer
/// among the servers, or the pool is gone.
async fn readmit_when_healthy(pool: Weak<Shared>, replica: Replica) {
    let mut delay = FIRST_CHECK_DELAY;
    loop {
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_CHECK_DELAY);
        let Some(shared) = pool.upgrade() else { return };
        let known = shared
            .replicas
            .read()
            .expect("replicas lock")
            .iter()
            .any(|r| Arc::ptr_eq(&r.ejected, &replica.ejected));
        drop(shared);
        if !known {
            return;
        }
        if is_serving(replica.channel.clone()).await {
            replica.ejected.store(false, Ordering::Relaxed);
            return;
        }
    }
}

/// Whether the server answers the gRPC health check of the whole server with SERVING.
pub(crate) async fn is_serving(channel: Channel) -> bool {
    let mut health = HealthClient::new(channel);
    let check = health.check(HealthCheckRequest {
        service: String::new(),
    });
    matches!(
        tokio::time::timeout(CHECK_TIMEOUT, check).await,
        Ok(Ok(response)) if response.get_ref().status() == ServingStatus::Serving
    )
}
