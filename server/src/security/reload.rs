//! Credentials reloaded without a restart: the TLS certificate, key and client CA, and the
//! token file are read again when they change on disk (as cert-manager and Kubernetes Secret
//! volumes rotate them, by swapping a symbolic link in their directory) or when the process gets
//! SIGHUP. New handshakes use the new certificate at once (connections already open keep the
//! old one), and every call after the reload is checked against the new tokens, so an old token
//! is refused from then on.
//!
//! Files that cannot be used (half written, a key that is not the certificate's) change
//! nothing: the server goes on with the credentials it has and logs why at ERROR, and tries
//! again at the next change or signal.

use std::{
    path::{Path, PathBuf},
    sync::Mutex,
    time::Duration,
};

use notify::Watcher as _;
use ring::digest;
use tokio::sync::mpsc;

use super::{AuthPolicy, AuthTokens, SecurityError, ServerTls, Token};

/// How long after a change on disk the files are read: a rotation writes several files.
const SETTLE: Duration = Duration::from_millis(200);

/// Where the credentials come from.
#[derive(Debug, Clone, Default)]
pub struct CredentialFiles {
    /// `--tls-cert`, `--tls-key` and `--tls-client-ca`.
    pub tls: Option<(PathBuf, PathBuf, Option<PathBuf>)>,
    /// `--auth-tokens-file`.
    pub tokens_file: Option<PathBuf>,
    /// `--auth-tokens`, kept beside the file's tokens at every reload.
    pub tokens: Vec<Token>,
}

impl CredentialFiles {
    fn paths(&self) -> Vec<&Path> {
        let mut paths = Vec::new();
        if let Some((cert, key, ca)) = &self.tls {
            paths.extend([cert.as_path(), key.as_path()]);
            paths.extend(ca.as_deref());
        }
        paths.extend(self.tokens_file.as_deref());
        paths
    }

    /// The accepted tokens: the file's and the listed ones.
    pub fn tokens(&self) -> Result<AuthTokens, SecurityError> {
        let mut tokens = AuthTokens::default();
        if let Some(file) = &self.tokens_file {
            tokens.add_file(file)?;
        }
        for (index, token) in self.tokens.iter().enumerate() {
            tokens.add(token, || {
                format!(
                    "token {} of --auth-tokens/ACTIVATIONS_AUTH_TOKENS",
                    index + 1
                )
            })?;
        }
        Ok(tokens)
    }

    /// The TLS settings the files hold, if TLS is on.
    pub fn tls(&self) -> Result<Option<ServerTls>, SecurityError> {
        self.tls
            .as_ref()
            .map(|(cert, key, ca)| ServerTls::from_files(cert, key, ca.as_deref()))
            .transpose()
    }

    /// A digest of every file's content: what tells a change from a touch.
    fn fingerprint(&self) -> Vec<u8> {
        let mut context = digest::Context::new(&digest::SHA256);
        for path in self.paths() {
            context.update(path.as_os_str().as_encoded_bytes());
            context.update(&std::fs::read(path).unwrap_or_default());
        }
        context.finish().as_ref().to_vec()
    }
}

/// What a reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reloaded {
    /// The files are as they were.
    Unchanged,
    /// New credentials are in use: TLS settings if TLS is on, and this many tokens if tokens
    /// are required.
    Changed { tls: bool, tokens: Option<usize> },
}

/// Reads the credential files again and puts what they hold in use.
#[derive(Debug)]
pub struct Reloader {
    files: CredentialFiles,
    tls: Option<ServerTls>,
    auth: Option<AuthPolicy>,
    fingerprint: Mutex<Vec<u8>>,
}

impl Reloader {
    /// Reloads into `tls` and `auth` (the very settings the server serves with: they share
    /// their state with it) from `files`. `None` if no file can change (TLS off and tokens from
    /// the environment only).
    pub fn new(
        files: CredentialFiles,
        tls: Option<ServerTls>,
        auth: Option<AuthPolicy>,
    ) -> Option<Reloader> {
        if files.paths().is_empty() {
            return None;
        }
        let fingerprint = Mutex::new(files.fingerprint());
        Some(Reloader {
            files,
            tls,
            auth,
            fingerprint,
        })
    }

    /// Reads the files; if they changed and hold usable credentials, uses them from now on.
    pub fn reload(&self) -> Result<Reloaded, SecurityError> {
        let fingerprint = self.files.fingerprint();
        let mut last = self.fingerprint.lock().expect("the reloader's fingerprint");
        if *last == fingerprint {
            return Ok(Reloaded::Unchanged);
        }
        // Everything is read and checked before anything is replaced.
        let tls = self.files.tls()?;
        let tokens = match &self.auth {
            Some(_) => {
                let tokens = self.files.tokens()?;
                if tokens.is_empty() {
                    // Tokens were required at startup; a reload never turns them off.
                    return Err(SecurityError::NoTokens {
                        path: self.files.tokens_file.clone().unwrap_or_default(),
                    });
                }
                Some(tokens)
            }
            None => None,
        };
        if let (Some(serving), Some(new)) = (&self.tls, &tls) {
            serving.replace(new);
        }
        let count = tokens.as_ref().map(AuthTokens::len);
        if let (Some(auth), Some(tokens)) = (&self.auth, tokens) {
            auth.replace_tokens(tokens);
        }
        *last = fingerprint;
        Ok(Reloaded::Changed {
            tls: tls.is_some(),
            tokens: count,
        })
    }

    /// Starts watching the files' directories and SIGHUP now, before the caller goes on to
    /// serve, so that no change made once the server listens is missed; the future returned
    /// reloads on every change, until the process ends. Each outcome is logged: a reload at
    /// INFO, files that cannot be used at ERROR.
    pub fn watch(self) -> impl Future<Output = ()> + Send + 'static {
        let (changed, mut changes) = mpsc::unbounded_channel();
        // Kubernetes rotates a Secret volume by swapping a link in the directory, so the
        // directories are watched, not the files.
        let watcher = notify::recommended_watcher(move |_event| {
            let _ = changed.send(());
        });
        let mut watcher = match watcher {
            Ok(watcher) => Some(watcher),
            Err(error) => {
                tracing::warn!(%error, "cannot watch the credential files: SIGHUP reloads them");
                None
            }
        };
        if let Some(watcher) = &mut watcher {
            let mut directories: Vec<&Path> = self
                .files
                .paths()
                .into_iter()
                .map(|path| path.parent().filter(|p| !p.as_os_str().is_empty()))
                .map(|parent| parent.unwrap_or(Path::new(".")))
                .collect();
            directories.sort();
            directories.dedup();
            for directory in directories {
                if let Err(error) = watcher.watch(directory, notify::RecursiveMode::NonRecursive) {
                    tracing::warn!(
                        directory = %directory.display(),
                        %error,
                        "cannot watch a credential directory: SIGHUP reloads its files"
                    );
                }
            }
        }
        let mut hangup = hangups();
        async move {
            // Dropping the watcher would stop the watching.
            let _watcher = watcher;
            loop {
                let why = tokio::select! {
                    Some(()) = changes.recv() => {
                        tokio::time::sleep(SETTLE).await;
                        while changes.try_recv().is_ok() {}
                        "the files changed"
                    }
                    Some(()) = hangup.recv() => "SIGHUP",
                    else => return,
                };
                match self.reload() {
                    Ok(Reloaded::Unchanged) => {
                        tracing::debug!(why, "credential files unchanged");
                    }
                    Ok(Reloaded::Changed { tls, tokens }) => {
                        tracing::info!(why, tls, tokens, "credentials reloaded");
                    }
                    Err(error) => tracing::error!(
                        why,
                        %error,
                        "reloading the credentials failed; the server goes on with the ones it has"
                    ),
                }
            }
        }
    }
}

/// SIGHUPs, one message each (none where there are no signals).
fn hangups() -> mpsc::UnboundedReceiver<()> {
    let (hangup, hangups) = mpsc::unbounded_channel();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(mut signals) => {
                tokio::spawn(async move {
                    while signals.recv().await.is_some() {
                        if hangup.send(()).is_err() {
                            return;
                        }
                    }
                });
            }
            Err(error) => tracing::warn!(%error, "cannot handle SIGHUP"),
        }
    }
    #[cfg(not(unix))]
    drop(hangup);
    hangups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_file_reloads_only_when_it_changes_and_only_into_usable_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        std::fs::write(&file, "old-token\n").unwrap();
        let files = CredentialFiles {
            tls: None,
            tokens_file: Some(file.clone()),
            tokens: vec!["from-env".parse().unwrap()],
        };
        let policy = AuthPolicy::new(files.tokens().unwrap(), false);
        let reloader = Reloader::new(files, None, Some(policy.clone())).unwrap();
        let accepted = |token: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert(
                http::header::AUTHORIZATION,
                format!("Bearer {token}").parse().unwrap(),
            );
            policy
                .check(
                    "/neuron_explainer.activations.v1.ActivationService/ListLayers",
                    &headers,
                )
                .is_ok()
        };
        assert!(accepted("old-token") && accepted("from-env"));
        assert_eq!(reloader.reload().unwrap(), Reloaded::Unchanged);

        std::fs::write(&file, "# rotated\nnew-token\n").unwrap();
        assert_eq!(
            reloader.reload().unwrap(),
            Reloaded::Changed {
                tls: false,
                tokens: Some(2)
            }
        );
        assert!(accepted("new-token") && accepted("from-env"));
        assert!(
            !accepted("old-token"),
            "the old token is refused after the reload"
        );

        // A file without tokens changes nothing: the server keeps the ones it has.
        std::fs::write(&file, "# nothing yet\n").unwrap();
        assert!(reloader.reload().is_err());
        assert!(accepted("new-token"));
    }
}
