//! Where the servers are: a fixed list, or a DNS name resolved again and again (a Kubernetes
//! headless Service lists one address per ready pod).

use std::fmt;
use std::io;
use std::net::SocketAddr;

use futures::future::BoxFuture;

/// Resolves a DNS name to the addresses of its servers. The client resolves a `dns:///` target
/// with [`SystemResolver`] unless [`ClientBuilder::resolver`](crate::ClientBuilder::resolver)
/// gives another (tests give one whose answer they change).
///
/// # Examples
///
/// ```
/// use activations_client::routing::Resolve;
/// use futures::future::{BoxFuture, FutureExt};
/// use std::net::SocketAddr;
///
/// /// Always the same two servers, whatever the name.
/// #[derive(Debug)]
/// struct Two;
///
/// impl Resolve for Two {
///     fn resolve(&self, _host: &str, port: u16) -> BoxFuture<'static, std::io::Result<Vec<SocketAddr>>> {
///         let addresses = vec![([10, 0, 0, 5], port).into(), ([10, 0, 0, 6], port).into()];
///         async move { Ok(addresses) }.boxed()
///     }
/// }
/// ```
pub trait Resolve: Send + Sync + fmt::Debug + 'static {
    /// The addresses of `host`, each with `port`.
    fn resolve(&self, host: &str, port: u16) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>>;
}

/// The operating system's resolver (`getaddrinfo`, through Tokio).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, host: &str, port: u16) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>> {
        let host = host.to_owned();
        Box::pin(async move { Ok(tokio::net::lookup_host((host, port)).await?.collect()) })
    }
}

/// A `dns:///host:port` target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DnsName {
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl DnsName {
    /// `Some` for a `dns:` target (`dns:///host:port`, or `dns://authority/host:port`, whose
    /// DNS server authority is not supported), with why it cannot be used if so.
    pub(crate) fn parse(target: &str) -> Option<Result<DnsName, String>> {
        let rest = target.strip_prefix("dns:")?;
        let Some(name) = rest.strip_prefix("///") else {
            return Some(Err(format!(
                "{target}: a DNS target is written dns:///host:port (choosing the DNS server, \
                 dns://server/host:port, is not supported)"
            )));
        };
        let parsed = match name.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() => match port.parse::<u16>() {
                Ok(port) if port > 0 => Ok(DnsName {
                    host: host
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_owned(),
                    port,
                }),
                _ => Err(format!("{target}: {port:?} is not a port")),
            },
            _ => Err(format!(
                "{target}: a DNS target needs a host and a port, such as \
                 dns:///activations-headless.default.svc.cluster.local:50051"
            )),
        };
        Some(parsed)
    }
}

impl fmt::Display for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "dns:///{}:{}", self.host, self.port)
    }
}

/// The address a server is dialed at and hashed by (see [`super::hash`]): `ip:port`, IPv6 in
/// brackets, as `SocketAddr` prints it.
pub(crate) fn address_of(socket: SocketAddr) -> String {
    socket.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_targets_parse_or_say_what_is_wrong() {
        assert_eq!(DnsName::parse("http://a:1"), None);
        assert_eq!(
            DnsName::parse("dns:///activations-headless.ns.svc:50051"),
            Some(Ok(DnsName {
                host: "activations-headless.ns.svc".into(),
                port: 50051
            }))
        );
        assert_eq!(
            DnsName::parse("dns:///[::1]:7"),
            Some(Ok(DnsName {
                host: "::1".into(),
                port: 7
            }))
        );
        for bad in [
            "dns://8.8.8.8/name:1",
            "dns:///name",
            "dns:///name:",
            "dns:///name:0",
            "dns:///:1",
        ] {
            let error = DnsName::parse(bad).unwrap().unwrap_err();
            assert!(error.starts_with(bad), "{error}");
        }
        let name = DnsName::parse("dns:///h:9").unwrap().unwrap();
        assert_eq!(name.to_string(), "dns:///h:9");
    }

    #[tokio::test]
    async fn the_system_resolver_resolves_an_address_literal() {
        let addresses = SystemResolver.resolve("127.0.0.1", 5).await.unwrap();
        assert_eq!(addresses, vec![SocketAddr::from(([127, 0, 0, 1], 5))]);
        assert_eq!(address_of(addresses[0]), "127.0.0.1:5");
        assert_eq!(
            address_of(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 5))),
            "[::1]:5"
        );
    }
}
