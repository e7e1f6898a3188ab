//! Settings of `activations-server`, from flags or the environment.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;

use activations_format::layout::LayoutChoice;

use crate::{
    bulk::BulkSettings,
    dataset::{DatasetSpec, OpenOptions},
    datasets::Reopen,
    limits::Limits,
    location::StorageOptions,
    security::{AuthPolicy, CredentialFiles, Security, SecurityError, Token},
    server::ServerSettings,
    store::CacheConfig,
    telemetry::LogFormat,
};

/// Serves neuron-explainer activation records over gRPC.
///
/// Each setting can also come from the environment variable named in its help; a flag wins
/// over the environment.
#[derive(Debug, Clone, Parser)]
#[command(name = "activations-server", version)]
pub struct Config {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "ACTIVATIONS_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// A dataset to serve, as NAME=URI; repeat for more. The first is the default. URI is a
    /// local directory (/path or file:///path), az://ACCOUNT/CONTAINER/prefix,
    /// https://ACCOUNT.blob.core.windows.net/CONTAINER/prefix, s3://BUCKET/prefix,
    /// gs://BUCKET/prefix, http(s)://host/prefix (any web server), or
    /// `bundled:gpt2-xl-sample`. `?layers=L&neurons=N` declares the shape of a store that
    /// cannot be listed; `?layout=` fixes the layout. With none, the bundled sample is
    /// served. In the environment, separate datasets with commas.
    // The URIs are examples of a form, not links; this text is also `--help`'s.
    #[allow(rustdoc::bare_urls)]
    #[arg(
        long = "dataset",
        value_name = "NAME=URI",
        env = "ACTIVATIONS_DATASETS",
        value_delimiter = ','
    )]
    pub datasets: Vec<DatasetSpec>,

    /// File layout of the datasets: `flat` ({root}/{layer}/{neuron}.json), `neurons`
    /// ({root}/neurons/{layer}/{neuron}.json), or `auto` to detect it from the root.
    #[arg(
        long,
        env = "ACTIVATIONS_LAYOUT",
        default_value = "auto",
        value_name = "auto|flat|neurons"
    )]
    pub layout: LayoutChoice,

    /// Memory for parsed neurons, in bytes (suffixes K, M, G, Ki, Mi, Gi accepted), shared
    /// out evenly between the datasets. 0 disables the cache.
    #[arg(long, env = "ACTIVATIONS_CACHE_BYTES", default_value = "1GiB", value_parser = parse_bytes)]
    pub cache_bytes: u64,

    /// How long a missing neuron file is remembered before storage is asked again.
    #[arg(long, env = "ACTIVATIONS_CACHE_NOT_FOUND_TTL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub cache_not_found_ttl: Duration,

    /// How long a listing of layers or of a layer's neurons is reused before the store is
    /// listed again. 0 lists every time.
    #[arg(long, env = "ACTIVATIONS_CACHE_LISTING_TTL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub cache_listing_ttl: Duration,

    /// Bound on one request to remote storage, body included.
    #[arg(long, env = "ACTIVATIONS_STORAGE_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub storage_timeout: Duration,

    /// Bound on connecting to remote storage.
    #[arg(long, env = "ACTIVATIONS_STORAGE_CONNECT_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub storage_connect_timeout: Duration,

    /// Retries of a transient storage failure (5xx, 429, timeout, connection reset), with
    /// exponential backoff and jitter.
    #[arg(long, env = "ACTIVATIONS_STORAGE_RETRIES", default_value_t = 5)]
    pub storage_retries: usize,

    /// No storage retry starts later than this after the first attempt; the caller then gets
    /// UNAVAILABLE.
    #[arg(long, env = "ACTIVATIONS_STORAGE_RETRY_BUDGET", default_value = "20s", value_parser = humantime::parse_duration)]
    pub storage_retry_budget: Duration,

    /// The longest wait between two attempts to open a dataset whose store could not be read
    /// (the first wait is 1s, each next one twice as long). The server serves its other
    /// datasets meanwhile, and answers this one's calls UNAVAILABLE.
    #[arg(long, env = "ACTIVATIONS_DATASET_REOPEN_MAX_DELAY", default_value = "60s", value_parser = humantime::parse_duration)]
    pub dataset_reopen_max_delay: Duration,

    /// Neurons a `StreamNeuronSplits` call reads ahead of its client, at least: the window
    /// grows from there while the client waits on storage (see --bulk-read-ahead-bytes).
    #[arg(long, env = "ACTIVATIONS_BULK_READ_AHEAD", default_value_t = BulkSettings::DEFAULT.read_ahead)]
    pub bulk_read_ahead: usize,

    /// Memory for read-ahead, over every `StreamNeuronSplits` call together: neurons being
    /// read and neurons read but not yet sent. Beside --cache-bytes, not part of it.
    #[arg(long, env = "ACTIVATIONS_BULK_READ_AHEAD_BYTES", default_value = "128MiB", value_parser = parse_bytes)]
    pub bulk_read_ahead_bytes: u64,

    /// Most neurons a `StreamNeuronSplits` request may list explicitly.
    #[arg(long, env = "ACTIVATIONS_BULK_MAX_LISTED", default_value_t = BulkSettings::DEFAULT.max_listed_neurons)]
    pub bulk_max_listed: usize,

    /// Serve TLS with this certificate chain (PEM, the server's certificate first); needs
    /// --tls-key. Without it the server speaks plain text.
    #[arg(
        long,
        env = "ACTIVATIONS_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        env = "ACTIVATIONS_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// Mutual TLS: require every client to present a certificate signed by one of these CA
    /// certificates (PEM). Needs --tls-cert.
    #[arg(
        long,
        env = "ACTIVATIONS_TLS_CLIENT_CA",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_client_ca: Option<PathBuf>,

    /// Require `authorization: Bearer <token>` on every call (health checks excepted), with a
    /// token from this file: one per line, blank lines and lines starting with # ignored.
    #[arg(long, env = "ACTIVATIONS_AUTH_TOKENS_FILE", value_name = "FILE")]
    pub auth_tokens_file: Option<PathBuf>,

    /// Accepted bearer tokens, comma-separated, in addition to --auth-tokens-file. Prefer the
    /// environment variable or the file: a command line is visible to the machine's other
    /// users.
    #[arg(
        long,
        env = "ACTIVATIONS_AUTH_TOKENS",
        value_name = "TOKEN,...",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub auth_tokens: Vec<Token>,

    /// With tokens, close server reflection too (by default it stays open, so grpcurl can
    /// list and describe without a token, while every call of the service needs one).
    #[arg(long, env = "ACTIVATIONS_REFLECTION_REQUIRES_AUTH")]
    pub reflection_requires_auth: bool,
    /// Calls running at once, streams until their last message; more are refused at once with
    /// RESOURCE_EXHAUSTED and a retry delay. Health checks and reflection are not counted.
    #[arg(long, env = "ACTIVATIONS_MAX_CONCURRENT_REQUESTS", default_value_t = Limits::DEFAULT.max_concurrent_requests)]
    pub max_concurrent_requests: usize,

    /// Calls one connection may have open at once (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS,
    /// advertised to the client): keep it below --max-concurrent-requests, so that one
    /// connection cannot take every slot.
    #[arg(long, env = "ACTIVATIONS_MAX_STREAMS_PER_CONNECTION", default_value_t = Limits::DEFAULT.max_streams_per_connection, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_streams_per_connection: u32,

    /// How long a response may wait for its client to read anything before the server ends it
    /// (ABORTED, reason STREAM_IDLE) and frees its slot, its stream and its storage reads. A
    /// client that reads, however slowly, is never ended; `0s` turns the bound off.
    #[arg(long, env = "ACTIVATIONS_STREAM_IDLE_TIMEOUT", default_value = "120s", value_parser = humantime::parse_duration)]
    pub stream_idle_timeout: Duration,

    /// The largest request message accepted (suffixes as for --cache-bytes); larger ones are
    /// refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "ACTIVATIONS_MAX_REQUEST_BYTES", default_value = "4MiB", value_parser = parse_bytes)]
    pub max_request_bytes: u64,

    /// The largest neuron file read (suffixes as for --cache-bytes): a larger one is refused
    /// from its size, without being read, with FAILED_PRECONDITION. The public GPT-2 XL files
    /// are about 230 KB each.
    #[arg(long, env = "ACTIVATIONS_MAX_NEURON_FILE_BYTES", default_value = "64MiB", value_parser = parse_bytes)]
    pub max_neuron_file_bytes: u64,

    /// The largest response message sent; a larger one (a huge neuron record) fails its call
    /// with OUT_OF_RANGE.
    #[arg(long, env = "ACTIVATIONS_MAX_RESPONSE_BYTES", default_value = "64MiB", value_parser = parse_bytes)]
    pub max_response_bytes: u64,

    /// The largest ListNeurons page; larger requested page sizes are lowered to it.
    #[arg(long, env = "ACTIVATIONS_MAX_PAGE_SIZE", default_value_t = Limits::DEFAULT.max_page_size)]
    pub max_page_size: usize,

    /// On SIGTERM or SIGINT, how long running calls may go on: the server refuses new calls at
    /// once, and ends the calls still running after this with UNAVAILABLE.
    #[arg(long, env = "ACTIVATIONS_SHUTDOWN_GRACE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,

    /// Log filter, in `tracing` EnvFilter syntax (e.g. `info`, `activations_server=debug`).
    /// `info,activations_server::requests=debug` adds one line per completed call.
    #[arg(long, env = "ACTIVATIONS_LOG", default_value = "info")]
    pub log: String,

    /// How log lines are written: `text` for people, `json` for one JSON object per line.
    #[arg(
        long,
        env = "ACTIVATIONS_LOG_FORMAT",
        default_value = "text",
        value_name = "text|json"
    )]
    pub log_format: LogFormat,

    /// Address of the Prometheus scrape endpoint (`GET http://ADDR/metrics`), on a port of its
    /// own. Without it, no metrics are kept.
    #[arg(long, env = "ACTIVATIONS_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
}

impl Config {
    /// The limits of calls and the shutdown grace period.
    pub fn server_settings(&self) -> ServerSettings {
        let bytes = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        ServerSettings {
            limits: Limits {
                max_concurrent_requests: self.max_concurrent_requests.max(1),
                max_request_bytes: bytes(self.max_request_bytes),
                max_response_bytes: bytes(self.max_response_bytes),
                max_page_size: self.max_page_size.max(1),
                max_streams_per_connection: self.max_streams_per_connection,
                stream_idle_timeout: (!self.stream_idle_timeout.is_zero())
                    .then_some(self.stream_idle_timeout),
            },
            shutdown_grace: self.shutdown_grace,
        }
    }

    /// The limits of `StreamNeuronSplits`.
    pub fn bulk_settings(&self) -> BulkSettings {
        BulkSettings {
            read_ahead: self.bulk_read_ahead.max(1),
            read_ahead_bytes: self.bulk_read_ahead_bytes,
            max_listed_neurons: self.bulk_max_listed,
            ..BulkSettings::DEFAULT
        }
    }

    /// The settings every dataset is opened with.
    pub fn open_options(&self) -> OpenOptions {
        OpenOptions {
            layout: self.layout,
            cache: CacheConfig {
                max_bytes: self.cache_bytes,
                not_found_ttl: self.cache_not_found_ttl,
                listing_ttl: self.cache_listing_ttl,
            },
            storage: StorageOptions {
                request_timeout: self.storage_timeout,
                connect_timeout: self.storage_connect_timeout,
                max_retries: self.storage_retries,
                retry_budget: self.storage_retry_budget,
            },
            max_neuron_file_bytes: self.max_neuron_file_bytes,
        }
    }

    /// The delays between attempts to open a dataset whose store is down.
    pub fn reopen(&self) -> Reopen {
        Reopen {
            max_delay: self.dataset_reopen_max_delay,
            ..Reopen::DEFAULT
        }
    }
}

impl Config {
    /// TLS and authentication, with the files read and checked: an unreadable or invalid file,
    /// an unusable token or a token file without tokens stops the server at startup.
    pub fn security(&self) -> Result<Security, SecurityError> {
        let files = self.credential_files();
        let tls = files.tls()?;
        let tokens = files.tokens()?;
        let auth = if tokens.is_empty() {
            if self.reflection_requires_auth {
                return Err(SecurityError::ReflectionAuthWithoutTokens);
            }
            None
        } else {
            Some(AuthPolicy::new(tokens, self.reflection_requires_auth))
        };
        Ok(Security { tls, auth })
    }

    /// Where TLS and tokens come from, for [`security`](Self::security) and for reloading
    /// them.
    pub fn credential_files(&self) -> CredentialFiles {
        CredentialFiles {
            // clap makes each of the certificate and the key require the other.
            tls: self
                .tls_cert
                .clone()
                .zip(self.tls_key.clone())
                .map(|(cert, key)| (cert, key, self.tls_client_ca.clone())),
            tokens_file: self.auth_tokens_file.clone(),
            tokens: self.auth_tokens.clone(),
        }
    }
}

/// A byte count as the server's flags take it: a number with an optional decimal (K, M, G) or
/// binary (Ki, Mi, Gi) suffix, optionally followed by B (`512MiB`, `2G`, `1000000`).
///
/// # Errors
///
/// Anything else, or a count that does not fit in 64 bits: the message says what is expected.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let unitless = trimmed.strip_suffix(['B', 'b']).unwrap_or(trimmed);
    let split = unitless
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(unitless.len());
    let (number, unit) = unitless.split_at(split);
    let multiplier: u64 = match unit.trim() {
        "" => 1,
        "K" | "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        _ => {
            return Err(format!(
                "{text:?}: expected a byte count such as 512MiB, 2G or 1000000"
            ));
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| format!("{text:?}: expected a byte count such as 512MiB, 2G or 1000000"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use activations_format::layout::Layout;

    #[test]
    fn flags_set_listen_datasets_and_layout() {
        let config = Config::try_parse_from([
            "activations-server",
            "--listen",
            "0.0.0.0:6000",
            "--dataset",
            "a=/data/a",
            "--dataset",
            "b=file:///data/b",
            "--layout",
            "neurons",
        ])
        .unwrap();
        assert_eq!(config.listen, "0.0.0.0:6000".parse().unwrap());
        let names: Vec<_> = config.datasets.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(config.layout, LayoutChoice::Fixed(Layout::Neurons));
    }

    #[test]
    fn cache_and_storage_settings_have_defaults_and_parse_units() {
        let defaults = Config::try_parse_from(["activations-server"])
            .unwrap()
            .open_options();
        assert_eq!(defaults.cache.max_bytes, 1 << 30);
        assert_eq!(defaults.storage, StorageOptions::DEFAULT);
        let config = Config::try_parse_from([
            "activations-server",
            "--cache-bytes",
            "512MiB",
            "--storage-timeout",
            "1500ms",
            "--storage-retries",
            "0",
        ])
        .unwrap()
        .open_options();
        assert_eq!(config.cache.max_bytes, 512 << 20);
        assert_eq!(config.storage.request_timeout, Duration::from_millis(1500));
        assert_eq!(config.storage.max_retries, 0);
        for (text, bytes) in [("0", 0), ("2G", 2_000_000_000), ("3KiB", 3072), ("7b", 7)] {
            assert_eq!(parse_bytes(text), Ok(bytes), "{text}");
        }
        for bad in ["", "MiB", "1.5G", "1T", "-1", "99999999999999999999"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tokens_come_from_the_file_and_the_list_and_never_show_in_debug() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        std::fs::write(&file, "# team\nfile-token-1\n").unwrap();
        let config = Config::try_parse_from([
            "activations-server",
            "--auth-tokens-file",
            file.to_str().unwrap(),
            "--auth-tokens",
            "listed-token-2,listed-token-3",
            "--reflection-requires-auth",
        ])
        .unwrap();
        let security = config.security().unwrap();
        let policy = security.auth.as_ref().expect("tokens turn auth on");
        assert_eq!(policy.token_count(), 3);
        assert!(policy.reflection_requires_auth());
        assert_eq!(security.tls_mode(), "off");
        let printed = format!("{config:?} {security:?}");
        for token in ["file-token-1", "listed-token-2", "listed-token-3"] {
            assert!(!printed.contains(token), "{token} in {printed}");
        }
    }

    #[test]
    fn without_tokens_every_call_is_let_in_and_closing_reflection_alone_is_refused() {
        let config = Config::try_parse_from(["activations-server"]).unwrap();
        assert!(config.security().unwrap().auth.is_none());
        let config =
            Config::try_parse_from(["activations-server", "--reflection-requires-auth"]).unwrap();
        assert!(matches!(
            config.security(),
            Err(SecurityError::ReflectionAuthWithoutTokens)
        ));
    }

    #[test]
    fn tls_key_and_certificate_need_each_other_and_valid_files() {
        for lone in [["--tls-cert", "c.pem"], ["--tls-key", "k.pem"]] {
            let args = ["activations-server", lone[0], lone[1]];
            assert!(Config::try_parse_from(args).is_err(), "{lone:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        std::fs::write(&cert, "not a certificate").unwrap();
        let config = Config::try_parse_from([
            "activations-server",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            dir.path().join("missing.pem").to_str().unwrap(),
        ])
        .unwrap();
        let error = config.security().unwrap_err().to_string();
        assert!(error.contains("missing.pem"), "{error}");
    }

    #[test]
    fn metrics_are_off_and_logs_are_text_unless_asked_for() {
        let defaults = Config::try_parse_from(["activations-server"]).unwrap();
        assert_eq!(defaults.metrics_listen, None);
        assert_eq!(defaults.log_format, LogFormat::Text);
        let config = Config::try_parse_from([
            "activations-server",
            "--metrics-listen",
            "0.0.0.0:9187",
            "--log-format",
            "json",
        ])
        .unwrap();
        assert_eq!(config.metrics_listen, Some("0.0.0.0:9187".parse().unwrap()));
        assert_eq!(config.log_format, LogFormat::Json);
        assert!(Config::try_parse_from(["activations-server", "--log-format", "xml"]).is_err());
    }

    #[test]
    fn limits_and_grace_have_defaults_and_flags() {
        let defaults = Config::try_parse_from(["activations-server"]).unwrap();
        assert_eq!(defaults.server_settings(), ServerSettings::DEFAULT);
        let settings = Config::try_parse_from([
            "activations-server",
            "--max-concurrent-requests",
            "8",
            "--max-request-bytes",
            "1MiB",
            "--max-response-bytes",
            "2MiB",
            "--max-page-size",
            "100",
            "--max-streams-per-connection",
            "4",
            "--stream-idle-timeout",
            "3s",
            "--shutdown-grace",
            "5s",
        ])
        .unwrap()
        .server_settings();
        assert_eq!(
            settings,
            ServerSettings {
                limits: Limits {
                    max_concurrent_requests: 8,
                    max_request_bytes: 1 << 20,
                    max_response_bytes: 2 << 20,
                    max_page_size: 100,
                    max_streams_per_connection: 4,
                    stream_idle_timeout: Some(Duration::from_secs(3)),
                },
                shutdown_grace: Duration::from_secs(5),
            }
        );
    }

    #[test]
    fn bad_flags_are_refused_with_the_reason() {
        let err = Config::try_parse_from(["activations-server", "--dataset", "nameonly"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("NAME=URI"), "{err}");
        let err = Config::try_parse_from(["activations-server", "--layout", "deep"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("auto, flat or neurons"), "{err}");
    }
}
