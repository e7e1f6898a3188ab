//! The Azure Blob Storage emulator Azurite, as `scripts/test.sh` runs it (installed by
//! `scripts/tools.sh`, started by `scripts/emulator.sh azurite` on a free port, in memory): containers
//! created through the Blob REST API with Shared Key authorization, data uploaded through
//! `object_store`.

use std::{path::Path, sync::Arc, time::SystemTime};

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use hmac::{Hmac, KeyInit, Mac};
use object_store::{ObjectStore, azure::MicrosoftAzureBuilder};
use sha2::Sha256;

use crate::install_tls_provider;

/// The emulator's one account.
pub const ACCOUNT: &str = "devstoreaccount1";
/// The emulator's well-known account key (public, the same in every Azurite).
pub const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// The environment variable holding the emulator's blob endpoint, as `object_store` reads it.
pub const URL_ENV: &str = "AZURITE_BLOB_STORAGE_URL";
/// The Blob service REST API version the requests of this module declare.
const API_VERSION: &str = "2021-08-06";

/// A running Azurite blob service.
#[derive(Debug, Clone)]
pub struct Azurite {
    /// `http://127.0.0.1:PORT`, without the account (Azurite takes it as the first path segment).
    pub blob_url: String,
}

impl Azurite {
    /// The Azurite that `scripts/test.sh` started, from `AZURITE_BLOB_STORAGE_URL`.
    ///
    /// # Panics
    /// When the variable is not set.
    pub fn from_env() -> Azurite {
        let blob_url = std::env::var(URL_ENV).unwrap_or_else(|_| {
            panic!(
                "{URL_ENV} is not set: this test needs the Azurite emulator; run scripts/test.sh, \
                 which installs and starts Azurite (or start one with \
                 `eval \"$(scripts/emulator.sh azurite start)\"` and stop it with `scripts/emulator.sh azurite stop`)"
            )
        });
        Azurite {
            blob_url: blob_url.trim_end_matches('/').to_string(),
        }
    }

    /// `{blob_url}/devstoreaccount1/{container}`: the container's URL, under which a blob `p` is
    /// at `{container_url}/{p}`.
    pub fn container_url(&self, container: &str) -> String {
        format!("{}/{ACCOUNT}/{container}", self.blob_url)
    }

    /// Creates a container; an existing one is left as it is. With `public_blobs`, anyone may
    /// read its blobs without credentials (public access level `blob`).
    ///
    /// # Panics
    /// When Azurite refuses or cannot be reached.
    pub async fn create_container(&self, name: &str, public_blobs: bool) {
        install_tls_provider();
        let date = httpdate::fmt_http_date(SystemTime::now());
        let mut ms_headers = vec![("x-ms-date", date.as_str()), ("x-ms-version", API_VERSION)];
        if public_blobs {
            ms_headers.push(("x-ms-blob-public-access", "blob"));
        }
        let resource = format!("/{ACCOUNT}/{ACCOUNT}/{name}\nrestype:container");
        let authorization = shared_key_authorization("PUT", &ms_headers, &resource);

        let mut request = reqwest::Client::new()
            .put(format!("{}?restype=container", self.container_url(name)))
            .header("authorization", authorization)
            .header("content-length", "0");
        for (header, value) in &ms_headers {
            request = request.header(*header, *value);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("creating container {name} in Azurite: {e}"));
        let status = response.status();
        let error_code = response
            .headers()
            .get("x-ms-error-code")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if status.is_success() || (status.as_u16() == 409 && error_code == "ContainerAlreadyExists")
        {
            return;
        }
        let body = response.text().await.unwrap_or_default();
        panic!("creating container {name} in Azurite: {status} {error_code}: {body}");
    }

    /// An `object_store` client of one container, with the emulator's account and key (for
    /// writing test data). Like any `object_store` emulator client it reads the endpoint from
    /// `AZURITE_BLOB_STORAGE_URL`.
    ///
    /// # Panics
    /// When that variable does not match `self.blob_url`, or the builder fails.
    pub fn store(&self, container: &str) -> Arc<dyn ObjectStore> {
        install_tls_provider();
        let from_env = std::env::var(URL_ENV).unwrap_or_default();
        assert_eq!(
            from_env.trim_end_matches('/'),
            self.blob_url,
            "object_store's Azure emulator client reads {URL_ENV}; set it to this Azurite's URL"
        );
        let store = MicrosoftAzureBuilder::new()
            .with_use_emulator(true)
            .with_account(ACCOUNT)
            .with_access_key(ACCOUNT_KEY)
            .with_container_name(container)
            .build()
            .unwrap_or_else(|e| {
                panic!("object_store client of Azurite container {container}: {e}")
            });
        Arc::new(store)
    }

    /// Uploads every file below `dir` (recursively) to `{prefix}/{path relative to dir}` in
    /// `container`, which must exist; an empty `prefix` uploads to the container's root.
    ///
    /// # Panics
    /// On any read or upload error.
    pub async fn upload_dir(&self, container: &str, prefix: &str, dir: &Path) {
        crate::upload_dir(self.store(container).as_ref(), prefix, dir).await;
    }
}

/// `SharedKey devstoreaccount1:SIGNATURE` for a request without body, content headers or
/// conditions: the Blob service's "Authorize with Shared Key" string-to-sign, from the verb, the
/// `x-ms-*` headers and the canonicalized resource.
fn shared_key_authorization(verb: &str, ms_headers: &[(&str, &str)], resource: &str) -> String {
    let mut headers: Vec<(String, &str)> = ms_headers
        .iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value.trim()))
        .collect();
    headers.sort();
    let canonicalized_headers: String = headers
        .iter()
        .map(|(name, value)| format!("{name}:{value}\n"))
        .collect();
    // VERB, then Content-Encoding, Content-Language, Content-Length (empty when 0), Content-MD5,
    // Content-Type, Date, If-Modified-Since, If-Match, If-None-Match, If-Unmodified-Since, Range:
    // all empty here.
    let string_to_sign = format!(
        "{verb}\n{}{canonicalized_headers}{resource}",
        "\n".repeat(11)
    );
    let key = BASE64
        .decode(ACCOUNT_KEY)
        .expect("the emulator key is base64");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
    mac.update(string_to_sign.as_bytes());
    let signature = BASE64.encode(mac.finalize().into_bytes());
    format!("SharedKey {ACCOUNT}:{signature}")
}
