//! Where a dataset lives: parsing a dataset URI and opening the `object_store` backend for it.
//!
//! | URI | Backend |
//! | --- | --- |
//! | `/path`, `relative/path`, `file:///path` | local directory |
//! | `az://ACCOUNT/CONTAINER/prefix`, `https://ACCOUNT.blob.core.windows.net/CONTAINER/prefix` | Azure Blob |
//! | `s3://BUCKET/prefix` | Amazon S3 (or compatible) |
//! | `gs://BUCKET/prefix` | Google Cloud Storage |
//! | `http://host/prefix`, `https://host/prefix` | any web server: GET and HEAD, no listing |
//! | `bundled:gpt2-xl-sample` | the sample compiled into the server |
//!
//! A query string carries per-dataset settings: `layers` and `neurons` declare the shape (see
//! [`activations_format::shape`]), `layout` fixes the layout, `links=follow` lets a local
//! directory serve symbolic links that lead outside it (see [`LocalDir`]), and any other key is a configuration key of
//! the backend, as `object_store` names it (for Azure, `use_emulator=true`,
//! `skip_signature=true`, `access_key=...`; for S3, `endpoint=...`, `region=...`, ...). Backend
//! settings also come from the backend's usual environment variables (`AZURE_*`, `AWS_*`,
//! `GOOGLE_*`); the URI wins.
//!
//! Azure without any credential configured reads anonymously, as the public `openaipublic`
//! account must be read; `AZURE_STORAGE_USE_EMULATOR=true` (or `?use_emulator=true`) points
//! Azure locations at the Azurite emulator named by `AZURITE_BLOB_STORAGE_URL`.

use std::{fmt, path::PathBuf, sync::Arc, time::Duration};

use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig,
    aws::{AmazonS3Builder, AmazonS3ConfigKey},
    azure::{AzureConfigKey, MicrosoftAzureBuilder},
    gcp::{GoogleCloudStorageBuilder, GoogleConfigKey},
    http::HttpBuilder,
    memory::InMemory,
    path::Path,
};
use url::Url;

use activations_format::{
    layout::{Layout, LayoutChoice},
    shape::Shape,
};

use crate::{
    integrity::Checksums,
    metrics::StorageHttpConnector,
    redact::redact,
    store::{Links, LocalDir},
};

/// A parsed dataset URI.
#[derive(Debug, Clone, PartialEq)]
pub struct Location {
    pub backend: Backend,
    /// The dataset's root inside the backend.
    pub prefix: Path,
    /// The shape declared by `?layers=L&neurons=N`.
    pub shape: Option<Shape>,
    /// The layout fixed by `?layout=`.
    pub layout: Option<Layout>,
    /// Whether a local directory serves links leading outside it (`?links=`).
    pub links: Links,
}

/// The storage service a [`Location`] is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// The sample compiled into the server.
    Bundled,
    /// A local directory (not yet checked to exist).
    Local(PathBuf),
    Azure {
        account: String,
        container: String,
        options: Vec<(String, String)>,
    },
    S3 {
        bucket: String,
        options: Vec<(String, String)>,
    },
    Gcs {
        bucket: String,
        options: Vec<(String, String)>,
    },
    /// A plain web server; `base` is the dataset's root URL, with no trailing slash.
    Http { base: Url },
}

impl Backend {
    /// Whether the backend can list directories. Plain web servers cannot; blob stores can
    /// unless their credentials forbid it, which only a listing tells.
    pub fn can_list(&self) -> bool {
        !matches!(self, Backend::Http { .. })
    }
}

/// Name of the dataset served when no `--dataset` is given.
pub const BUNDLED_NAME: &str = "gpt2-xl-sample";
/// URI of the bundled sample: the public GPT-2 XL file of layer 1, neuron 1, compiled into the
/// server so it runs anywhere without data.
pub const BUNDLED_URI: &str = "bundled:gpt2-xl-sample";
const BUNDLED_FILES: &[(&str, &[u8])] = &[(
    "1/1.json",
    include_bytes!("../../data/gpt2-xl-sample/collated-activations/1/1.json"),
)];

/// The scheme of the bundled sample's URI.
pub const BUNDLED_SCHEME: &str = "bundled";

impl Location {
    /// Parses a dataset URI; the error says what was expected.
    pub fn parse(uri: &str) -> Result<Location, String> {
        let uri = uri.trim();
        if let Some(name) = uri.strip_prefix("bundled:") {
            return if name == BUNDLED_NAME {
                Ok(Location::plain(Backend::Bundled, Path::default()))
            } else {
                Err(format!("the only bundled dataset is {}", BUNDLED_URI))
            };
        }
        if !uri.contains("://") {
            let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
            let mut location =
                Location::plain(Backend::Local(PathBuf::from(path)), Path::default());
            location.apply_query(query.split('&').filter(|p| !p.is_empty()).map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (k.to_string(), v.to_string())
            }))?;
            return Ok(location);
        }
        let url = Url::parse(uri).map_err(|e| format!("not a valid URL: {e}"))?;
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let host = url.host_str().unwrap_or_default().to_string();
        let path = Path::from_url_path(url.path())
            .map_err(|e| format!("invalid path {:?}: {e}", url.path()))?;
        let segments: Vec<String> = path.parts().map(|p| p.as_ref().to_string()).collect();
        let prefix_from =
            |skip: usize| Path::from_iter(segments.iter().skip(skip).map(String::as_str));
        let need_host = |what: &str| {
            if host.is_empty() {
                Err(format!("expected {}://{what}/prefix", url.scheme()))
            } else {
                Ok(host.clone())
            }
        };
        let mut location = match url.scheme() {
            "file" => {
                let mut clean = url.clone();
                clean.set_query(None);
                let path = clean
                    .to_file_path()
                    .map_err(|()| "expected file:///absolute/path".to_string())?;
                Location::plain(Backend::Local(path), Path::default())
            }
            "az" => {
                let account = need_host("ACCOUNT/CONTAINER")?;
                let container = segments
                    .first()
                    .cloned()
                    .ok_or("expected az://ACCOUNT/CONTAINER/prefix")?;
                Location::plain(
                    Backend::Azure {
                        account,
                        container,
                        options: Vec::new(),
                    },
                    prefix_from(1),
                )
            }
            "https" if host.ends_with(".blob.core.windows.net") => {
                let account = host.trim_end_matches(".blob.core.windows.net").to_string();
                let container = segments
                    .first()
                    .cloned()
                    .ok_or("expected https://ACCOUNT.blob.core.windows.net/CONTAINER/prefix")?;
                Location::plain(
                    Backend::Azure {
                        account,
                        container,
                        options: Vec::new(),
                    },
                    prefix_from(1),
                )
            }
            "s3" => Location::plain(
                Backend::S3 {
                    bucket: need_host("BUCKET")?,
                    options: Vec::new(),
                },
                prefix_from(0),
            ),
            "gs" => Location::plain(
                Backend::Gcs {
                    bucket: need_host("BUCKET")?,
                    options: Vec::new(),
                },
                prefix_from(0),
            ),
            "http" | "https" => {
                need_host("host")?;
                let mut base = url.clone();
                base.set_query(None);
                base.set_fragment(None);
                let path = base.path().trim_end_matches('/').to_string();
                base.set_path(&path);
                Location::plain(Backend::Http { base }, Path::default())
            }
            other => {
                return Err(format!(
                    "unsupported scheme {other}://; expected a local path, file://, az://, \
                     https://ACCOUNT.blob.core.windows.net/, s3://, gs://, http(s):// or {}",
                    BUNDLED_URI
                ));
            }
        };
        location.apply_query(pairs)?;
        Ok(location)
    }

    fn plain(backend: Backend, prefix: Path) -> Location {
        Location {
            backend,
            prefix,
            shape: None,
            layout: None,
            links: Links::default(),
        }
    }

    /// Takes `layers`, `neurons`, `layout` and (for a local directory) `links` from the query;
    /// other keys go to the backend.
    fn apply_query(
        &mut self,
        pairs: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), String> {
        let (mut layers, mut neurons) = (None, None);
        let count = |key: &str, value: &str| {
            value
                .parse::<u32>()
                .map_err(|_| format!("{key}={value:?}: expected a count such as {key}=48"))
        };
        for (key, value) in pairs {
            match key.as_str() {
                "layers" => layers = Some(count(&key, &value)?),
                "neurons" => neurons = Some(count(&key, &value)?),
                "layout" => match value.parse::<LayoutChoice>()? {
                    LayoutChoice::Fixed(layout) => self.layout = Some(layout),
                    LayoutChoice::Auto => self.layout = None,
                },
                "links" if matches!(self.backend, Backend::Local(_)) => {
                    self.links = value.parse()?;
                }
                _ => match &mut self.backend {
                    Backend::Azure { options, .. }
                    | Backend::S3 { options, .. }
                    | Backend::Gcs { options, .. } => options.push((key, value)),
                    Backend::Local(_) => {
                        return Err(format!(
                            "unknown setting {key:?}; a local directory accepts layers, \
                             neurons, layout and links"
                        ));
                    }
                    Backend::Http { .. } | Backend::Bundled => {
                        return Err(format!(
                            "unknown setting {key:?}; this location accepts layers, neurons \
                             and layout"
                        ));
                    }
                },
            }
        }
        self.shape = match (layers, neurons) {
            (None, None) => None,
            (Some(layers), Some(neurons)) => {
                Some(Shape::uniform(layers, neurons).map_err(|e| e.to_string())?)
            }
            _ => {
                return Err("declare the shape with both counts: ?layers=L&neurons=N".to_string());
            }
        };
        Ok(())
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backend::Bundled => f.write_str("bundled sample"),
            Backend::Local(path) => write!(f, "local directory {}", path.display()),
            Backend::Azure {
                account, container, ..
            } => write!(f, "Azure Blob account {account}, container {container}"),
            Backend::S3 { bucket, .. } => write!(f, "S3 bucket {bucket}"),
            Backend::Gcs { bucket, .. } => write!(f, "GCS bucket {bucket}"),
            Backend::Http { base } => write!(f, "web server {}", redact(base.as_str())),
        }
    }
}

/// How the server talks to remote storage: timeouts and retries of transient failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageOptions {
    /// Bound on one HTTP request to the store, body included.
    pub request_timeout: Duration,
    /// Bound on opening a connection.
    pub connect_timeout: Duration,
    /// Retries of a failed request (5xx, 429, timeouts, connection errors), with exponential
    /// backoff and jitter.
    pub max_retries: usize,
    /// No retry starts later than this after the first attempt.
    pub retry_budget: Duration,
}

impl StorageOptions {
    pub const DEFAULT: StorageOptions = StorageOptions {
        request_timeout: Duration::from_secs(30),
        connect_timeout: Duration::from_secs(5),
        max_retries: 5,
        retry_budget: Duration::from_secs(20),
    };

    /// The longest one read may take, retries included: the retry budget plus one last
    /// request. A read still running then fails as unavailable.
    pub fn read_deadline(&self) -> Duration {
        self.retry_budget + self.request_timeout + self.connect_timeout
    }

    fn retry(&self) -> RetryConfig {
        RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_secs(2),
                base: 2.0,
            },
            max_retries: self.max_retries,
            retry_timeout: self.retry_budget,
        }
    }

    fn client(&self, allow_http: bool) -> ClientOptions {
        ClientOptions::new()
            .with_timeout(self.request_timeout)
            .with_connect_timeout(self.connect_timeout)
            .with_allow_http(allow_http)
    }
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions::DEFAULT
    }
}

/// Opens the `object_store` backend of a remote location, with the backend's environment
/// settings, then the URI's, then these timeouts and retries. Local and bundled locations are
/// opened by the dataset, which checks the directory.
pub fn open_remote(
    backend: &Backend,
    options: &StorageOptions,
) -> Result<Arc<dyn ObjectStore>, String> {
    open_remote_with(backend, options, StorageHttpConnector::default())
}

/// [`open_remote`], making the backend's HTTP requests through `http` (which may count them).
pub fn open_remote_with(
    backend: &Backend,
    options: &StorageOptions,
    http: StorageHttpConnector,
) -> Result<Arc<dyn ObjectStore>, String> {
    install_tls_provider();
    let built = |e: object_store::Error| e.to_string();
    let store: Arc<dyn ObjectStore> = match backend {
        Backend::Azure {
            account,
            container,
            options: settings,
        } => {
            let builder = MicrosoftAzureBuilder::from_env()
                .with_account(account)
                .with_container_name(container);
            let builder = with_settings(builder, settings, |b, k: AzureConfigKey, v| {
                b.with_config(k, v)
            })?;
            let skip_signature = !azure_has_credentials(&builder)
                || is_true(builder.get_config_value(&AzureConfigKey::SkipSignature));
            let emulator = is_true(builder.get_config_value(&AzureConfigKey::UseEmulator));
            Arc::new(
                builder
                    .with_skip_signature(skip_signature)
                    .with_retry(options.retry())
                    .with_client_options(options.client(emulator))
                    .with_http_connector(http)
                    .build()
                    .map_err(built)?,
            )
        }
        Backend::S3 {
            bucket,
            options: settings,
        } => {
            let builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
            let builder = with_settings(builder, settings, |b, k: AmazonS3ConfigKey, v| {
                b.with_config(k, v)
            })?;
            let allow_http = builder
                .get_config_value(&AmazonS3ConfigKey::Endpoint)
                .is_some_and(|e| e.starts_with("http://"));
            Arc::new(
                builder
                    .with_retry(options.retry())
                    .with_client_options(options.client(allow_http))
                    .with_http_connector(http.with_checksums(Checksums::S3))
                    .build()
                    .map_err(built)?,
            )
        }
        Backend::Gcs {
            bucket,
            options: settings,
        } => {
            let builder = GoogleCloudStorageBuilder::from_env().with_bucket_name(bucket);
            let builder = with_settings(builder, settings, |b, k: GoogleConfigKey, v| {
                b.with_config(k, v)
            })?;
            Arc::new(
                builder
                    .with_retry(options.retry())
                    .with_client_options(options.client(false))
                    .with_http_connector(http)
                    .build()
                    .map_err(built)?,
            )
        }
        Backend::Http { base } => {
            let (base, authorization) = basic_auth(base);
            let mut client = options.client(base.scheme() == "http");
            if let Some(authorization) = authorization {
                client = client.with_default_headers(http::HeaderMap::from_iter([(
                    http::header::AUTHORIZATION,
                    authorization,
                )]));
            }
            Arc::new(
                HttpBuilder::new()
                    .with_url(base.as_str())
                    .with_retry(options.retry())
                    .with_client_options(client)
                    .with_http_connector(http)
                    .build()
                    .map_err(built)?,
            )
        }
        Backend::Local(_) | Backend::Bundled => {
            return Err(format!("{backend} is not a remote location"));
        }
    };
    Ok(store)
}

/// A web server's `base` URL without its user info, and that user info as a basic
/// `Authorization` header, marked sensitive. The HTTP client would send the same header from
/// the URL itself, but it keeps the URL, password included, in its connection pool's keys,
/// which its trace log prints; a sensitive header is never printed.
fn basic_auth(base: &Url) -> (Url, Option<http::HeaderValue>) {
    use base64::{Engine as _, engine::general_purpose::STANDARD};

    if base.username().is_empty() && base.password().is_none() {
        return (base.clone(), None);
    }
    let decode = |part: &str| {
        percent_encoding::percent_decode_str(part)
            .decode_utf8_lossy()
            .into_owned()
    };
    let credentials = format!(
        "{}:{}",
        decode(base.username()),
        decode(base.password().unwrap_or_default())
    );
    let mut bare = base.clone();
    // A URL with a host can always lose its user info.
    let _ = bare.set_username("");
    let _ = bare.set_password(None);
    let header = http::HeaderValue::from_str(&format!("Basic {}", STANDARD.encode(credentials)))
        .ok()
        .map(|mut value| {
            value.set_sensitive(true);
            value
        });
    (bare, header)
}

/// Applies the URI's backend settings to `builder`; a key the backend does not know is an error
/// naming it.
fn with_settings<B, K>(
    builder: B,
    settings: &[(String, String)],
    set: impl Fn(B, K, &str) -> B,
) -> Result<B, String>
where
    K: std::str::FromStr<Err = object_store::Error>,
{
    settings.iter().try_fold(builder, |builder, (key, value)| {
        let key_parsed: K = key.parse().map_err(|e| format!("setting {key:?}: {e}"))?;
        Ok(set(builder, key_parsed, value))
    })
}

/// The bundled sample, in memory.
pub async fn open_bundled() -> Arc<dyn ObjectStore> {
    let store = InMemory::new();
    for (path, bytes) in BUNDLED_FILES {
        store
            .put(
                &Path::from(*path),
                object_store::PutPayload::from_static(bytes),
            )
            .await
            .expect("an in-memory put cannot fail");
    }
    Arc::new(store)
}

/// Opens a local directory, which must exist, serving links that lead out of it as `links`
/// says.
pub fn open_local(path: &std::path::Path, links: Links) -> Result<Arc<dyn ObjectStore>, String> {
    Ok(Arc::new(LocalDir::open(path, links)?))
}

fn is_true(value: Option<String>) -> bool {
    value.is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes" | "on"))
}

/// Whether any Azure credential is configured (in the environment or the URI). Without one,
/// `object_store` would ask the instance metadata service for a managed identity; this server
/// reads anonymously instead, as public containers require.
fn azure_has_credentials(builder: &MicrosoftAzureBuilder) -> bool {
    let set = |key: AzureConfigKey| {
        builder
            .get_config_value(&key)
            .is_some_and(|v| !v.is_empty())
    };
    [
        AzureConfigKey::AccessKey,
        AzureConfigKey::SasKey,
        AzureConfigKey::Token,
        AzureConfigKey::ClientId,
        AzureConfigKey::MsiEndpoint,
        AzureConfigKey::FederatedTokenFile,
        AzureConfigKey::CredentialType,
        AzureConfigKey::FabricSessionToken,
    ]
    .into_iter()
    .any(set)
        || is_true(builder.get_config_value(&AzureConfigKey::UseAzureCli))
        || is_true(builder.get_config_value(&AzureConfigKey::UseEmulator))
}

/// Makes rustls use the `ring` provider. Idempotent; called before any HTTPS client is built.
pub fn install_tls_provider() {
    // An error means a provider is already installed, which is all this needs.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn azure(location: &Location) -> (&str, &str) {
        match &location.backend {
            Backend::Azure {
                account, container, ..
            } => (account, container),
            other => panic!("expected Azure, got {other:?}"),
        }
    }

    #[test]
    fn az_and_blob_endpoint_urls_reach_the_same_place() {
        let az = Location::parse("az://openaipublic/neuron-explainer/data/collated-activations")
            .unwrap();
        let https = Location::parse(
            "https://openaipublic.blob.core.windows.net/neuron-explainer/data/collated-activations/",
        )
        .unwrap();
        assert_eq!(az, https);
        assert_eq!(azure(&az), ("openaipublic", "neuron-explainer"));
        assert_eq!(az.prefix.as_ref(), "data/collated-activations");
    }

    #[test]
    fn query_declares_shape_and_layout_and_passes_backend_settings() {
        let location = Location::parse(
            "az://devstoreaccount1/c/p?layers=2&neurons=3&layout=neurons&use_emulator=true",
        )
        .unwrap();
        assert_eq!(location.shape, Some(Shape::uniform(2, 3).unwrap()));
        assert_eq!(location.layout, Some(Layout::Neurons));
        let Backend::Azure { options, .. } = &location.backend else {
            panic!()
        };
        assert_eq!(options, &[("use_emulator".to_string(), "true".to_string())]);
    }

    #[test]
    fn buckets_web_servers_and_local_paths() {
        let s3 = Location::parse("s3://bucket/a/b?region=eu-west-1").unwrap();
        assert!(
            matches!(&s3.backend, Backend::S3 { bucket, options } if bucket == "bucket" && options.len() == 1)
        );
        assert_eq!(s3.prefix.as_ref(), "a/b");
        let gs = Location::parse("gs://bucket").unwrap();
        assert!(matches!(&gs.backend, Backend::Gcs { bucket, .. } if bucket == "bucket"));
        assert_eq!(gs.prefix.as_ref(), "");
        let web = Location::parse("http://127.0.0.1:8000/data/xl/?layers=1&neurons=2").unwrap();
        let Backend::Http { base } = &web.backend else {
            panic!()
        };
        assert_eq!(base.as_str(), "http://127.0.0.1:8000/data/xl");
        assert!(web.shape.is_some());
        assert!(!web.backend.can_list());
        let local = Location::parse("/data/xl?layout=flat").unwrap();
        assert_eq!(local.backend, Backend::Local("/data/xl".into()));
        assert_eq!(local.layout, Some(Layout::Flat));
        assert_eq!(local.links, Links::Inside);
        let file = Location::parse("file:///data/xl?layers=1&neurons=1&links=follow").unwrap();
        assert_eq!(file.backend, Backend::Local("/data/xl".into()));
        assert!(file.shape.is_some());
        assert_eq!(file.links, Links::Follow);
    }

    #[test]
    fn bad_uris_say_what_was_expected() {
        let cases = [
            ("ftp://host/x", "unsupported scheme"),
            ("az://account", "az://ACCOUNT/CONTAINER/prefix"),
            ("https://acct.blob.core.windows.net/", "CONTAINER"),
            ("http://host/x?layers=4", "both counts"),
            ("http://host/x?layers=four&neurons=1", "expected a count"),
            ("http://host/x?layers=0&neurons=1", "at least 1"),
            ("http://host/x?use_emulator=true", "unknown setting"),
            ("/data?layout=deep", "auto, flat or neurons"),
            ("/data?links=yes", "links=follow"),
            ("http://host/x?links=follow", "unknown setting"),
            ("bundled:other", "bundled:gpt2-xl-sample"),
        ];
        for (uri, expected) in cases {
            let err = Location::parse(uri).unwrap_err();
            assert!(err.contains(expected), "{uri}: {err}");
        }
    }

    #[test]
    fn unknown_backend_settings_are_refused_when_opening() {
        let location = Location::parse("az://acct/c?no_such_setting=1").unwrap();
        let err = open_remote(&location.backend, &StorageOptions::DEFAULT).unwrap_err();
        assert!(err.contains("no_such_setting"), "{err}");
    }

    #[test]
    fn azure_without_credentials_reads_anonymously() {
        let builder = MicrosoftAzureBuilder::new().with_account("openaipublic");
        assert!(!azure_has_credentials(&builder));
        assert!(azure_has_credentials(
            &builder.clone().with_access_key("a2V5")
        ));
        assert!(azure_has_credentials(&builder.with_use_emulator(true)));
        let location = Location::parse("az://openaipublic/neuron-explainer").unwrap();
        assert!(open_remote(&location.backend, &StorageOptions::DEFAULT).is_ok());
    }
}
