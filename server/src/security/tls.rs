//! TLS for the server: its certificate and key, and optionally the CA that client certificates
//! must be signed by (mutual TLS), read from PEM files and checked at startup; and the
//! acceptor that runs each connection's handshake.
//!
//! The server runs its handshakes itself (tokio-rustls, with the `ring` provider) rather than
//! through tonic's TLS option, so that the bound on a connection's opening
//! (the server's `handshake` module) counts the HTTP/2 bytes inside TLS, not the TLS records.

use std::{
    fmt, io,
    path::Path,
    sync::{Arc, PoisonError, RwLock},
    time::Duration,
};

use futures::{Stream, StreamExt};
use rustls::{
    RootCertStore, ServerConfig,
    crypto::ring,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};
use tokio::{net::TcpStream, task::JoinSet};
use tokio_rustls::{TlsAcceptor, server::TlsStream};

use super::SecurityError;

/// How long a connection may take to finish its TLS handshake. Handshakes run beside the
/// accept loop, one task per connection, so a slow or silent peer holds only its own task,
/// and only this long.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The server's TLS settings, checked: the certificate chain and key parse, belong together,
/// and the client CA (if any) holds a certificate. Clones share their settings, which
/// [`ServerTls::replace`] swaps for every handshake after it (reloaded files).
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<RwLock<Arc<ServerConfig>>>,
    mutual: bool,
}

impl ServerTls {
    /// Reads the certificate chain and private key (PEM files, as `--tls-cert` and `--tls-key`
    /// name them) and, for mutual TLS, the CA certificates client certificates must chain to
    /// (`--tls-client-ca`). With a client CA, a client without a certificate signed by it is
    /// refused during the handshake.
    pub fn from_files(
        cert: &Path,
        key: &Path,
        client_ca: Option<&Path>,
    ) -> Result<ServerTls, SecurityError> {
        let client_ca = match client_ca {
            Some(path) => Some((path, read(path)?)),
            None => None,
        };
        Self::from_pem(
            (cert, &read(cert)?),
            (key, &read(key)?),
            client_ca
                .as_ref()
                .map(|(path, pem)| (*path, pem.as_slice())),
        )
    }

    /// [`from_files`](Self::from_files) with the files' contents; each comes with the name
    /// its errors give it.
    pub fn from_pem(
        (cert_name, cert): (&Path, &[u8]),
        (key_name, key): (&Path, &[u8]),
        client_ca: Option<(&Path, &[u8])>,
    ) -> Result<ServerTls, SecurityError> {
        let chain = certificates(cert_name, cert)?;
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|error| SecurityError::Pem {
            path: key_name.to_path_buf(),
            expected: "a private key (PKCS#8, PKCS#1 or SEC1)",
            reason: error.to_string(),
        })?;
        let refused = |reason: String| SecurityError::TlsConfig {
            cert: cert_name.to_path_buf(),
            key: key_name.to_path_buf(),
            reason,
        };
        let provider = Arc::new(ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|error| refused(error_chain(&error)))?;
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some((ca_name, ca)) => {
                let mut roots = RootCertStore::empty();
                for certificate in certificates(ca_name, ca)? {
                    roots
                        .add(certificate)
                        .map_err(|error| refused(error_chain(&error)))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|error| refused(error_chain(&error)))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        // Checks that the key is the certificate's: a mismatch is a startup error naming the
        // files.
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|error| refused(error_chain(&error)))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(ServerTls {
            config: Arc::new(RwLock::new(Arc::new(config))),
            mutual: client_ca.is_some(),
        })
    }

    /// Uses `other`'s certificate, key and client CA for the handshakes from now on;
    /// connections already open keep theirs.
    pub fn replace(&self, other: &ServerTls) {
        let config = other.current();
        *self.config.write().unwrap_or_else(PoisonError::into_inner) = config;
    }

    fn current(&self) -> Arc<ServerConfig> {
        self.config
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether clients must present a certificate.
    pub fn is_mutual(&self) -> bool {
        self.mutual
    }

    /// The connections of `incoming` once their TLS handshakes succeed, in the order they
    /// finish. Each handshake runs in a task of its own, bounded by [`TLS_HANDSHAKE_TIMEOUT`];
    /// one that fails or times out is dropped (logged at DEBUG), and the listener goes on.
    pub fn handshakes<S>(&self, incoming: S) -> impl Stream<Item = io::Result<TlsStream<TcpStream>>>
    where
        S: Stream<Item = io::Result<TcpStream>> + Unpin + Send + 'static,
    {
        let state = (incoming, JoinSet::new(), self.clone());
        futures::stream::unfold(state, |(mut incoming, mut running, acceptor)| async move {
            loop {
                tokio::select! {
                    accepted = incoming.next() => match accepted {
                        None => return None,
                        Some(Err(error)) => return Some((Err(error), (incoming, running, acceptor))),
                        Some(Ok(stream)) => {
                            // The settings of the moment: reloaded files apply from the next
                            // connection on.
                            let acceptor = TlsAcceptor::from(acceptor.current());
                            let handshake = acceptor.accept(stream).into_fallible();
                            let handshake = async move {
                                handshake.await.map_err(|(error, io)| {
                                    tokio::spawn(linger(io));
                                    error
                                })
                            };
                            running.spawn(tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, handshake));
                        }
                    },
                    Some(finished) = running.join_next(), if !running.is_empty() => {
                        match finished {
                            Ok(Ok(Ok(stream))) => {
                                return Some((Ok(stream), (incoming, running, acceptor)));
                            }
                            Ok(Ok(Err(error))) => {
                                tracing::debug!(%error, "a TLS handshake failed");
                            }
                            Ok(Err(_)) => tracing::debug!(
                                timeout = ?TLS_HANDSHAKE_TIMEOUT,
                                "a TLS handshake did not finish in time"
                            ),
                            Err(error) => tracing::debug!(%error, "a TLS handshake task failed"),
                        }
                    }
                }
            }
        })
    }
}

/// How long a connection whose handshake failed is kept open for its client to read why.
const LINGER: Duration = Duration::from_secs(1);

/// Closes a connection whose TLS handshake failed the way web servers close one they refuse
/// ("lingering close"): the alert that says why (a client certificate missing, or not from a
/// trusted CA) has been sent; the write side is shut, and what the client still sends is read
/// and dropped for up to [`LINGER`]. Closed at once, the socket would answer the client's next
/// bytes (it sends its first HTTP/2 frames as soon as its side of the handshake is done) with a
/// reset, and the client would see a broken pipe instead of the alert.
async fn linger(mut io: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let _ = io.shutdown().await;
    let mut discard = [0u8; 4096];
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(1..) = io.read(&mut discard).await {}
    })
    .await;
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key stays out of every log line.
        f.debug_struct("ServerTls")
            .field("mutual", &self.mutual)
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, SecurityError> {
    std::fs::read(path).map_err(|source| SecurityError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The certificates of a PEM file: at least one, each parsed.
fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, SecurityError> {
    let invalid = |reason: String| SecurityError::Pem {
        path: path.to_path_buf(),
        expected: "PEM certificates (-----BEGIN CERTIFICATE-----)",
        reason,
    };
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| invalid(error.to_string()))?;
    if certificates.is_empty() {
        return Err(invalid("no certificate found".to_string()));
    }
    Ok(certificates)
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
