//! Credentials rotated without a restart, as cert-manager rotates a Kubernetes Secret volume:
//! the real `activations-server` binary reads its certificate, key and token file through links
//! into a versioned directory, and a rotation swaps the `..data` link. Under load, every call
//! with the old token succeeds until the rotation and is refused after it, every call with the
//! new one succeeds, and new connections get the new certificate. SIGHUP reloads files changed
//! where no watch sees them.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use activations_client::{ActivationsClient, Code, RetryPolicy, Tls, neuron_id};
use activations_e2e::{certs::TestPki, process::ServerProcess};

/// A Secret volume: `tls.crt`, `tls.key` and `tokens` are links into `..data/`, itself a link
/// to the current version's directory.
struct SecretVolume {
    dir: tempfile::TempDir,
    version: usize,
}

impl SecretVolume {
    fn new(cert: &[u8], key: &[u8], tokens: &str) -> SecretVolume {
        let mut volume = SecretVolume {
            dir: tempfile::tempdir().unwrap(),
            version: 0,
        };
        volume.rotate(cert, key, tokens);
        for name in ["tls.crt", "tls.key", "tokens"] {
            std::os::unix::fs::symlink(format!("..data/{name}"), volume.path(name)).unwrap();
        }
        volume
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a new version and swaps `..data` to it in one rename, as the kubelet does.
    fn rotate(&mut self, cert: &[u8], key: &[u8], tokens: &str) {
        self.version += 1;
        let version = format!("..v{}", self.version);
        let target = self.path(&version);
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("tls.crt"), cert).unwrap();
        std::fs::write(target.join("tls.key"), key).unwrap();
        std::fs::write(target.join("tokens"), tokens).unwrap();
        let staged = self.path("..data_tmp");
        std::os::unix::fs::symlink(&version, &staged).unwrap();
        std::fs::rename(&staged, self.path("..data")).unwrap();
    }

    /// The server binary, reading its certificate, key and tokens from this volume; its
    /// `https://` URL.
    fn serve(&self) -> (ServerProcess, String) {
        let path = |name: &str| self.path(name).display().to_string();
        let server = ServerProcess::start(&[
            "--tls-cert".into(),
            path("tls.crt"),
            "--tls-key".into(),
            path("tls.key"),
            "--auth-tokens-file".into(),
            path("tokens"),
        ]);
        let url = server.url.replace("http://", "https://");
        (server, url)
    }

    /// Rewrites the current version's token file in place: no link changes in the watched
    /// directory.
    fn rewrite_tokens(&self, tokens: &str) {
        let current = self.path(&format!("..v{}", self.version));
        std::fs::write(current.join("tokens"), tokens).unwrap();
    }
}

/// A new connection to the server, trusting `cas`, sending `token`, reading one split.
async fn call(url: &str, cas: &[&[u8]], token: &str) -> activations_client::Result<usize> {
    let tls = cas
        .iter()
        .fold(Tls::new(), |tls, ca| tls.ca_certificate_pem(ca.to_vec()));
    let client = ActivationsClient::builder()
        .endpoint(url.to_string())
        .tls(tls)
        .bearer_token(token)
        .retry(RetryPolicy::NONE)
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(20))
        .connect()
        .await?;
    Ok(client
        .train_activation_records(neuron_id(1, 1), Some(5))
        .await?
        .len())
}

fn refused_token(error: &activations_client::Error) -> bool {
    error.code() == Some(Code::Unauthenticated)
        && error
            .status()
            .is_some_and(|s| s.reason() == Some("INVALID_BEARER_TOKEN"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_and_tokens_rotate_under_load_without_a_restart() {
    let pki = TestPki::new();
    let (ca, other_ca) = (pki.read("ca.pem"), pki.read("other-ca.pem"));
    let mut volume = SecretVolume::new(
        &pki.read("server.pem"),
        &pki.read("server.key"),
        "old-token\n",
    );
    let (server, url) = volume.serve();
    assert_eq!(call(&url, &[&ca], "old-token").await.unwrap(), 5);

    // Load: callers that trust both CAs, each on new connections, with the old token until it
    // is refused, then with the new one.
    let rotated = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let (url, rotated, calls) = (url.clone(), rotated.clone(), calls.clone());
            let cas = [ca.clone(), other_ca.clone()];
            tokio::spawn(async move {
                let cas: Vec<&[u8]> = cas.iter().map(Vec::as_slice).collect();
                let mut token = "old-token";
                let mut new_calls = 0;
                while new_calls < 25 {
                    match call(&url, &cas, token).await {
                        Ok(5) => {
                            calls.fetch_add(1, Ordering::Relaxed);
                            if token == "new-token" {
                                new_calls += 1;
                            }
                        }
                        Err(error) if token == "old-token" && refused_token(&error) => {
                            assert!(
                                rotated.load(Ordering::SeqCst),
                                "the old token was refused before the rotation: {error}"
                            );
                            token = "new-token";
                        }
                        other => panic!("with {token}: {other:?}"),
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    rotated.store(true, Ordering::SeqCst);
    volume.rotate(
        &pki.read("other-server.pem"),
        &pki.read("other-server.key"),
        "# rotated\nnew-token\n",
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    for caller in callers {
        tokio::time::timeout_at(deadline.into(), caller)
            .await
            .expect("the load finished")
            .unwrap();
    }
    assert!(calls.load(Ordering::Relaxed) >= 100);

    // New connections get the new certificate: trusting only the old CA no longer works.
    assert_eq!(call(&url, &[&other_ca], "new-token").await.unwrap(), 5);
    assert!(call(&url, &[&ca], "new-token").await.is_err());
    let refused = call(&url, &[&other_ca], "old-token").await.unwrap_err();
    assert!(refused_token(&refused), "{refused}");

    // A change no watch sees (in place, inside the version directory): SIGHUP reloads it.
    volume.rewrite_tokens("third-token\n");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(call(&url, &[&other_ca], "new-token").await.unwrap(), 5);
    server.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while call(&url, &[&other_ca], "third-token").await.is_err() {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload: {}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused = call(&url, &[&other_ca], "new-token").await.unwrap_err();
    assert!(refused_token(&refused), "{refused}");
    let log = server.log();
    assert!(
        log.contains("credentials reloaded") && log.contains("SIGHUP"),
        "{log}"
    );
}

/// Files that cannot be used change nothing: the server goes on with what it has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_files_leave_the_credentials_in_use() {
    let pki = TestPki::new();
    let ca = pki.read("ca.pem");
    let mut volume = SecretVolume::new(
        &pki.read("server.pem"),
        &pki.read("server.key"),
        "a-token\n",
    );
    let (server, url) = volume.serve();
    let key = volume.path("tls.key");
    // A key that is not the certificate's, and a token file without tokens.
    volume.rotate(
        &pki.read("server.pem"),
        &pki.read("other-server.key"),
        "# none\n",
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.log().contains("reloading the credentials failed") {
        assert!(Instant::now() < deadline, "{}", server.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(call(&url, &[&ca], "a-token").await.unwrap(), 5);
    assert!(key.exists());
}
