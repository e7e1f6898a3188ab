//! The S3 emulator (moto's server), as `scripts/test.sh` runs it (installed by
//! `scripts/tools.sh`, started by `scripts/emulator.sh s3` on a free port, in memory): buckets
//! created with a plain PUT, data uploaded through `object_store`.

use std::{path::Path, sync::Arc};

use object_store::{ObjectStore, aws::AmazonS3Builder};

use crate::install_tls_provider;

/// The environment variable holding the emulator's endpoint.
pub const URL_ENV: &str = "S3_EMULATOR_URL";
/// The emulator accepts any credentials; these are the ones the tests sign with.
const ACCESS_KEY_ID: &str = "testing";
const SECRET_ACCESS_KEY: &str = "testing";
const REGION: &str = "us-east-1";

/// A running S3 emulator.
#[derive(Debug, Clone)]
pub struct S3Emulator {
    /// `http://127.0.0.1:PORT`
    pub url: String,
}

impl S3Emulator {
    /// The emulator that `scripts/test.sh` started, from `S3_EMULATOR_URL`.
    ///
    /// # Panics
    /// When the variable is not set.
    pub fn from_env() -> S3Emulator {
        let url = std::env::var(URL_ENV).unwrap_or_else(|_| {
            panic!(
                "{URL_ENV} is not set: this test needs the S3 emulator; run scripts/test.sh, \
                 which installs and starts it (or start one with \
                 `eval \"$(scripts/emulator.sh s3 start)\"` and stop it with \
                 `scripts/emulator.sh s3 stop`)"
            )
        });
        S3Emulator {
            url: url.trim_end_matches('/').to_string(),
        }
    }

    /// Creates a bucket; an existing one is left as it is.
    ///
    /// # Panics
    /// When the emulator refuses or cannot be reached.
    pub async fn create_bucket(&self, name: &str) {
        install_tls_provider();
        let response = reqwest::Client::new()
            .put(format!("{}/{name}", self.url))
            .send()
            .await
            .unwrap_or_else(|e| panic!("creating bucket {name}: {e}"));
        let status = response.status();
        if !status.is_success() && status.as_u16() != 409 {
            let body = response.text().await.unwrap_or_default();
            panic!("creating bucket {name}: {status}: {body}");
        }
    }

    /// An `object_store` client of one bucket (for writing test data).
    ///
    /// # Panics
    /// When the builder fails.
    pub fn store(&self, bucket: &str) -> Arc<dyn ObjectStore> {
        install_tls_provider();
        let store = AmazonS3Builder::new()
            .with_endpoint(&self.url)
            .with_allow_http(true)
            .with_region(REGION)
            .with_access_key_id(ACCESS_KEY_ID)
            .with_secret_access_key(SECRET_ACCESS_KEY)
            .with_bucket_name(bucket)
            .build()
            .unwrap_or_else(|e| panic!("object_store client of bucket {bucket}: {e}"));
        Arc::new(store)
    }

    /// Uploads every file below `dir` to `{prefix}/...` in `bucket`, which must exist.
    pub async fn upload_dir(&self, bucket: &str, prefix: &str, dir: &Path) {
        crate::upload_dir(self.store(bucket).as_ref(), prefix, dir).await;
    }

    /// The dataset URI of `s3://{bucket}/{prefix}` on this emulator, its settings in the query
    /// as a user would pass them.
    pub fn uri(&self, bucket: &str, prefix: &str) -> String {
        format!(
            "s3://{bucket}/{prefix}?endpoint={}&region={REGION}&access_key_id={ACCESS_KEY_ID}\
             &secret_access_key={SECRET_ACCESS_KEY}",
            self.url
        )
    }
}
