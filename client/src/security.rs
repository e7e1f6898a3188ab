//! Who the client is to the server and whom it trusts: [`Tls`] settings (the CA to trust, a
//! client certificate for mutual TLS, the name to verify) and the bearer token sent on every
//! call, both set on a [`ClientBuilder`](crate::ClientBuilder).

use std::fmt;

use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::error::{Error, Result};

/// TLS settings of a client, for [`ClientBuilder::tls`](crate::ClientBuilder::tls).
///
/// Endpoints given as `https://` (or without a scheme, once TLS settings are given) are
/// connected over TLS. The server's certificate is verified against the CA certificates given
/// here, or, when none is given, against the system's trusted roots; the name verified is the
/// endpoint's host unless [`domain_name`](Self::domain_name) overrides it.
///
/// # Examples
///
/// ```no_run
/// use activations_client::{ActivationsClient, Tls};
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let tls = Tls::new()
///     .ca_certificate_pem(std::fs::read("ca.pem")?)
///     // Mutual TLS: the certificate and key this client presents.
///     .identity_pem(std::fs::read("client.pem")?, std::fs::read("client.key")?);
/// let client = ActivationsClient::builder()
///     .endpoint("https://activations.internal:50051")
///     .tls(tls)
///     .bearer_token(std::env::var("ACTIVATIONS_TOKEN")?)
///     .connect()
///     .await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Default)]
pub struct Tls {
    ca_certificates: Vec<Vec<u8>>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
    domain_name: Option<String>,
}

impl Tls {
    /// No settings yet: the system's trusted roots, no client certificate, the endpoint's host
    /// as the name to verify.
    ///
    /// # Examples
    ///
    /// ```
    /// let tls = activations_client::Tls::new();
    /// # let _ = tls;
    /// ```
    pub fn new() -> Tls {
        Tls::default()
    }

    /// Trusts the CA certificates of this PEM text (one or more `BEGIN CERTIFICATE` blocks)
    /// instead of the system's roots. Call it again to trust more.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn example() -> std::io::Result<()> {
    /// let tls = activations_client::Tls::new().ca_certificate_pem(std::fs::read("ca.pem")?);
    /// # Ok(())
    /// # }
    /// ```
    pub fn ca_certificate_pem(mut self, pem: impl Into<Vec<u8>>) -> Tls {
        self.ca_certificates.push(pem.into());
        self
    }

    /// Presents this certificate chain and private key (PEM) to a server that requires client
    /// certificates (mutual TLS).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn example() -> std::io::Result<()> {
    /// let tls = activations_client::Tls::new()
    ///     .identity_pem(std::fs::read("client.pem")?, std::fs::read("client.key")?);
    /// # Ok(())
    /// # }
    /// ```
    pub fn identity_pem(mut self, certificate: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Tls {
        self.identity = Some((certificate.into(), key.into()));
        self
    }

    /// Verifies the server's certificate for this name rather than the endpoint's host, for a
    /// server reached by an address its certificate does not name.
    ///
    /// # Examples
    ///
    /// ```
    /// let tls = activations_client::Tls::new().domain_name("activations.internal");
    /// # let _ = tls;
    /// ```
    pub fn domain_name(mut self, name: impl Into<String>) -> Tls {
        self.domain_name = Some(name.into());
        self
    }

    /// These settings, checking the certificate against `host` unless they name a domain.
    pub(crate) fn default_domain_name(mut self, host: &str) -> Tls {
        self.domain_name.get_or_insert_with(|| host.to_owned());
        self
    }

    /// tonic's configuration for these settings, once each PEM text is checked: tonic would
    /// take a CA file without certificates as trusting no one, and fail every connection later
    /// with a less helpful error.
    pub(crate) fn client_config(&self) -> Result<ClientTlsConfig> {
        let mut config = ClientTlsConfig::new();
        if self.ca_certificates.is_empty() {
            config = config.with_native_roots();
        }
        for pem in &self.ca_certificates {
            check_certificates("CA certificate", pem)?;
            config = config.ca_certificate(Certificate::from_pem(pem));
        }
        if let Some((certificate, key)) = &self.identity {
            check_certificates("client certificate", certificate)?;
            if let Err(error) = PrivateKeyDer::from_pem_slice(key) {
                return Err(Error::Tls {
                    reason: format!("the client key is not a PEM private key: {error}"),
                });
            }
            config = config.identity(Identity::from_pem(certificate, key));
        }
        if let Some(name) = &self.domain_name {
            config = config.domain_name(name.clone());
        }
        Ok(config)
    }
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The private key is never printed.
        f.debug_struct("Tls")
            .field("ca_certificates", &self.ca_certificates.len())
            .field("client_identity", &self.identity.is_some())
            .field("domain_name", &self.domain_name)
            .finish()
    }
}

fn check_certificates(what: &str, pem: &[u8]) -> Result<()> {
    let mut count = 0;
    for certificate in CertificateDer::pem_slice_iter(pem) {
        if let Err(error) = certificate {
            return Err(Error::Tls {
                reason: format!("the {what} PEM is not valid: {error}"),
            });
        }
        count += 1;
    }
    if count == 0 {
        return Err(Error::Tls {
            reason: format!("the {what} PEM holds no -----BEGIN CERTIFICATE----- block"),
        });
    }
    Ok(())
}

/// A bearer token, as [`ClientBuilder::bearer_token`](crate::ClientBuilder::bearer_token) and
/// the command line hold it: its `Debug` never shows it.
///
/// # Examples
///
/// ```
/// use activations_client::security::BearerToken;
///
/// let token: BearerToken = "s3cret".parse().unwrap();
/// assert_eq!(format!("{token:?}"), "BearerToken(<redacted>)");
/// assert_eq!(token.expose(), "s3cret");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(pub(crate) String);

impl BearerToken {
    /// The token itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for BearerToken {
    // Never fails, so that no parse error can print a token.
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> std::result::Result<Self, Self::Err> {
        Ok(BearerToken(text.to_string()))
    }
}

impl From<String> for BearerToken {
    fn from(token: String) -> Self {
        BearerToken(token)
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

/// Adds `authorization: Bearer <token>` to every request, retries and resumed streams
/// included, since they all go through the one intercepted client.
#[derive(Clone, Default)]
pub(crate) struct Credentials {
    authorization: Option<MetadataValue<Ascii>>,
}

impl Credentials {
    /// Credentials sending `token`; fails for a token that cannot be a header value.
    pub(crate) fn bearer(token: &BearerToken) -> Result<Credentials> {
        let token = token.0.trim();
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::InvalidToken);
        }
        let mut value: MetadataValue<Ascii> = format!("Bearer {token}")
            .parse()
            .map_err(|_| Error::InvalidToken)?;
        // Kept out of HPACK's dynamic table, and printed as "Sensitive" by `Debug`.
        value.set_sensitive(true);
        Ok(Credentials {
            authorization: Some(value),
        })
    }
}

impl Interceptor for Credentials {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field(
                "bearer_token",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_goes_into_the_authorization_header_of_every_request() {
        let mut credentials = Credentials::bearer(&BearerToken("t0ken".into())).unwrap();
        for _ in 0..2 {
            let request = credentials.call(tonic::Request::new(())).unwrap();
            assert_eq!(
                request
                    .metadata()
                    .get("authorization")
                    .unwrap()
                    .to_str()
                    .unwrap(),
                "Bearer t0ken"
            );
        }
        let request = Credentials::default()
            .call(tonic::Request::new(()))
            .unwrap();
        assert!(request.metadata().get("authorization").is_none());
    }

    #[test]
    fn unsendable_tokens_are_refused_and_no_debug_shows_a_secret() {
        for bad in ["", "two words", "caf\u{e9}"] {
            let error = Credentials::bearer(&BearerToken(bad.into())).unwrap_err();
            assert!(matches!(error, Error::InvalidToken), "{bad:?}");
        }
        let credentials = Credentials::bearer(&BearerToken("hunter2".into())).unwrap();
        let tls = Tls::new().identity_pem("cert", "hunter2-key");
        let printed = format!(
            "{credentials:?} {:?} {tls:?}",
            BearerToken("hunter2".into())
        );
        assert!(!printed.contains("hunter2"), "{printed}");
    }
}
