//! Who may connect and call: TLS (optionally mutual) on the listener, and bearer tokens on
//! every call but health checks (and reflection, unless it is closed too).
//!
//! - [`tls`]: [`ServerTls`], the certificate, key and client CA from PEM files.
//! - [`auth`]: [`AuthTokens`] compared in constant time, [`AuthPolicy`] (which calls need a
//!   token) and [`AuthLayer`], the tower layer that enforces it in front of every service.
//! - [`reload`]: [`Reloader`], which reads the certificate, key, client CA and token files
//!   again when they change or on SIGHUP, and puts them in use without a restart.
//!
//! Without a certificate the server speaks plain text; without tokens every call is let in.

pub mod auth;
pub mod reload;
pub mod tls;

use std::path::PathBuf;

pub use auth::{AuthLayer, AuthPolicy, AuthTokens, Token};
pub use reload::{CredentialFiles, Reloaded, Reloader};
pub use tls::ServerTls;

/// The security settings of a server; the default is plain text without authentication.
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// TLS on every connection, or plain text for `None`.
    pub tls: Option<ServerTls>,
    /// Bearer tokens required on calls, or every call let in for `None`.
    pub auth: Option<AuthPolicy>,
}

impl Security {
    /// `off`, `on` or `mutual`, for the startup log.
    pub fn tls_mode(&self) -> &'static str {
        match &self.tls {
            None => "off",
            Some(tls) if tls.is_mutual() => "mutual",
            Some(_) => "on",
        }
    }
}

/// Security settings that cannot be used; each names the file or setting at fault, never a
/// token.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} does not hold {expected}: {reason}", path.display())]
    Pem {
        path: PathBuf,
        expected: &'static str,
        reason: String,
    },
    #[error(
        "the TLS certificate {} and key {} cannot be used together: {reason}",
        cert.display(),
        key.display()
    )]
    TlsConfig {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error(
        "{} holds no token: put one token per line (blank lines and lines starting with # \
         are ignored)",
        path.display()
    )]
    NoTokens { path: PathBuf },
    #[error(
        "{origin} cannot be sent as a bearer token: use visible ASCII characters only, \
         without spaces"
    )]
    InvalidToken { origin: String },
    #[error(
        "--reflection-requires-auth needs tokens: give them with --auth-tokens-file or \
         ACTIVATIONS_AUTH_TOKENS"
    )]
    ReflectionAuthWithoutTokens,
}
