//! TLS for the server: its certificate and key, and optionally the CA that client certificates
//! must be signed by (mutual TLS), read from PEM files and checked at startup.

use std::{fmt, path::Path, time::Duration};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use super::SecurityError;

/// How long a connection may take to finish its TLS handshake. Handshakes run beside the
/// accept loop, one task per connection, so a slow or silent peer holds only its own task,
/// and only this long.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The server's TLS settings, checked: the certificate chain and key parse, belong together,
/// and the client CA (if any) holds a certificate.
#[derive(Clone)]
pub struct ServerTls {
    config: ServerTlsConfig,
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
        check_certificates(cert_name, cert)?;
        if let Err(error) = PrivateKeyDer::from_pem_slice(key) {
            return Err(SecurityError::Pem {
                path: key_name.to_path_buf(),
                expected: "a private key (PKCS#8, PKCS#1 or SEC1)",
                reason: error.to_string(),
            });
        }
        let mut config = ServerTlsConfig::new()
            .identity(Identity::from_pem(cert, key))
            .timeout(TLS_HANDSHAKE_TIMEOUT);
        if let Some((ca_name, ca)) = client_ca {
            check_certificates(ca_name, ca)?;
            config = config.client_ca_root(Certificate::from_pem(ca));
        }
        // tonic builds its rustls configuration only when the server starts; building it now
        // turns a key that does not match its certificate into a startup error naming the files.
        crate::location::install_tls_provider();
        if let Err(error) = tonic::transport::Server::builder().tls_config(config.clone()) {
            return Err(SecurityError::TlsConfig {
                cert: cert_name.to_path_buf(),
                key: key_name.to_path_buf(),
                reason: error_chain(&error),
            });
        }
        Ok(ServerTls {
            config,
            mutual: client_ca.is_some(),
        })
    }

    /// Whether clients must present a certificate.
    pub fn is_mutual(&self) -> bool {
        self.mutual
    }

    /// The configuration tonic's server takes.
    pub fn server_config(&self) -> ServerTlsConfig {
        self.config.clone()
    }
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

fn check_certificates(path: &Path, pem: &[u8]) -> Result<(), SecurityError> {
    let invalid = |reason: String| SecurityError::Pem {
        path: path.to_path_buf(),
        expected: "PEM certificates (-----BEGIN CERTIFICATE-----)",
        reason,
    };
    let mut count = 0;
    for certificate in CertificateDer::pem_slice_iter(pem) {
        certificate.map_err(|error| invalid(error.to_string()))?;
        count += 1;
    }
    if count == 0 {
        return Err(invalid("no certificate found".to_string()));
    }
    Ok(())
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
