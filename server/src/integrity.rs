//! End-to-end integrity of what a remote store returns: where the store gives a checksum of a
//! body, the body is checked against it before anything reads it.
//!
//! | backend | checksum | checked when |
//! | --- | --- | --- |
//! | Azure Blob | `Content-MD5` | the blob has one (Put Blob sets it; a blob uploaded in blocks without one has none) |
//! | S3 | the `ETag`, which is the body's MD5 | the object was uploaded in one part (no `-N` suffix) and is not encrypted with KMS or a customer key |
//! | GCS | `x-goog-hash: md5=` | the object has an MD5 (composite objects have only a CRC32C, not checked) |
//! | web server | `Content-MD5` | the server sends one |
//!
//! Only whole bodies (`200 OK` to a `GET`) are checked: a range's checksum would be of the whole
//! object. The check runs in `object_store`'s HTTP client ([`VerifiedClient`]), below its
//! retries: a body that does not match is fetched once more, and if the second does not match
//! either, the request fails with [`ChecksumMismatch`], which the store reports as `DATA_LOSS`.
//! A failed read is never cached.

use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::BodyExt;
use md5::{Digest, Md5};
use object_store::client::{
    HttpClient, HttpError, HttpErrorKind, HttpRequest, HttpRequestBody, HttpResponse,
    HttpResponseBody, HttpService,
};

/// Which checksums a backend's responses carry (see the module's documentation).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checksums {
    /// An `ETag` of 32 hex digits is the body's MD5 (S3).
    pub etag_is_md5: bool,
}

impl Checksums {
    /// S3's: the `ETag` too.
    pub const S3: Checksums = Checksums { etag_is_md5: true };

    /// The MD5 a response says its body has, if it says one.
    fn expected(&self, headers: &http::HeaderMap) -> Option<Expected> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        if let Some(md5) = header("content-md5").and_then(decode_base64) {
            return Some(Expected::new("Content-MD5", md5));
        }
        // `crc32c=..., md5=...`
        let goog = header("x-goog-hash").and_then(|value| {
            value
                .split(',')
                .find_map(|part| part.trim().strip_prefix("md5="))
                .and_then(decode_base64)
        });
        if let Some(md5) = goog {
            return Some(Expected::new("x-goog-hash", md5));
        }
        let encrypted = header("x-amz-server-side-encryption")
            .is_some_and(|sse| sse.starts_with("aws:kms"))
            || header("x-amz-server-side-encryption-customer-algorithm").is_some();
        if self.etag_is_md5 && !encrypted {
            let etag = header("etag")?.trim_matches('"');
            if etag.len() == 32 && etag.bytes().all(|b| b.is_ascii_hexdigit()) {
                let mut md5 = [0u8; 16];
                for (i, byte) in md5.iter_mut().enumerate() {
                    *byte = u8::from_str_radix(&etag[2 * i..2 * i + 2], 16).ok()?;
                }
                return Some(Expected::new("ETag", md5));
            }
        }
        None
    }
}

fn decode_base64(text: &str) -> Option<[u8; 16]> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()?;
    bytes.try_into().ok()
}

/// The MD5 a response promised, and the header that promised it.
#[derive(Debug, Clone, Copy)]
struct Expected {
    header: &'static str,
    md5: [u8; 16],
}

impl Expected {
    fn new(header: &'static str, md5: [u8; 16]) -> Self {
        Expected { header, md5 }
    }
}

/// A body that did not match its checksum.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the body the store returned does not match its {header} (expected MD5 {expected}, got \
     {actual})"
)]
pub struct ChecksumMismatch {
    pub header: &'static str,
    pub expected: String,
    pub actual: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `object_store`'s HTTP client, checking whole bodies against the checksums their responses
/// carry (see the module's documentation).
#[derive(Debug)]
pub struct VerifiedClient {
    pub client: HttpClient,
    pub checksums: Checksums,
}

/// A response whose body matched its checksum or had none to match, or the mismatch.
enum Checked {
    Passed(HttpResponse),
    Mismatched(ChecksumMismatch),
}

impl VerifiedClient {
    /// `request` sent once, its body checked if it carries a checksum.
    async fn fetch(&self, request: HttpRequest) -> Result<Checked, HttpError> {
        let whole_get = request.method() == http::Method::GET;
        let response = self.client.execute(request).await?;
        let expected = match self.checksums.expected(response.headers()) {
            Some(expected) if whole_get && response.status() == http::StatusCode::OK => expected,
            _ => return Ok(Checked::Passed(response)),
        };
        let (parts, body) = response.into_parts();
        let bytes: Bytes = body.collect().await?.to_bytes();
        let actual: [u8; 16] = Md5::digest(&bytes).into();
        if actual != expected.md5 {
            return Ok(Checked::Mismatched(ChecksumMismatch {
                header: expected.header,
                expected: hex(&expected.md5),
                actual: hex(&actual),
            }));
        }
        let body = HttpResponseBody::from(bytes);
        Ok(Checked::Passed(HttpResponse::from_parts(parts, body)))
    }
}

/// A copy of a `GET` request, which has no body, to send it again; `None` for other methods,
/// whose bodies are never checked.
fn again(request: &HttpRequest) -> Option<HttpRequest> {
    if request.method() != http::Method::GET {
        return None;
    }
    let mut copy = http::Request::new(HttpRequestBody::from(Bytes::new()));
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.headers_mut() = request.headers().clone();
    *copy.version_mut() = request.version();
    Some(copy)
}

#[async_trait]
impl HttpService for VerifiedClient {
    async fn call(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let retry = again(&request);
        let first = match self.fetch(request).await? {
            Checked::Passed(response) => return Ok(response),
            Checked::Mismatched(mismatch) => mismatch,
        };
        tracing::warn!(
            error = %first,
            "a body from the store does not match its checksum: reading it again"
        );
        let second = match retry {
            Some(request) => self.fetch(request).await?,
            None => Checked::Mismatched(first),
        };
        match second {
            Checked::Passed(response) => Ok(response),
            Checked::Mismatched(mismatch) => Err(HttpError::new(HttpErrorKind::Decode, mismatch)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    http::HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn each_backend_s_checksum_is_read_from_its_header() {
        // MD5 of "hello": 5d41402abc4b2a76b9719d911017c592.
        let md5 = "XUFAKrxLKna5cZ2REBfFkg==";
        let expected = |checksums: Checksums, pairs: &[(&str, &str)]| {
            checksums
                .expected(&headers(pairs))
                .map(|e| (e.header, hex(&e.md5)))
        };
        let hello = "5d41402abc4b2a76b9719d911017c592".to_string();
        let plain = Checksums::default();
        assert_eq!(
            expected(plain, &[("content-md5", md5)]),
            Some(("Content-MD5", hello.clone()))
        );
        assert_eq!(
            expected(
                plain,
                &[("x-goog-hash", &format!("crc32c=n03x6A==, md5={md5}"))]
            ),
            Some(("x-goog-hash", hello.clone()))
        );
        let etag = [("etag", "\"5d41402abc4b2a76b9719d911017c592\"")];
        assert_eq!(expected(Checksums::S3, &etag), Some(("ETag", hello)));
        // An ETag is an MD5 only for S3, only for one part, only without KMS or a customer key.
        assert_eq!(expected(plain, &etag), None);
        let multipart = [("etag", "\"5d41402abc4b2a76b9719d911017c592-3\"")];
        assert_eq!(expected(Checksums::S3, &multipart), None);
        for encryption in [
            ("x-amz-server-side-encryption", "aws:kms"),
            ("x-amz-server-side-encryption-customer-algorithm", "AES256"),
        ] {
            assert_eq!(expected(Checksums::S3, &[etag[0], encryption]), None);
        }
        assert_eq!(expected(plain, &[("etag", "\"1a-0000\"")]), None);
        assert_eq!(expected(plain, &[("content-md5", "not base64")]), None);
    }
}
