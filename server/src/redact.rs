//! One rule for showing a dataset's location without its secrets, used wherever a location is
//! shown: `ListDatasets`, error messages and their `ErrorInfo`, logs, the CLI.
//!
//! A URI keeps what a person needs to recognise the dataset (scheme, host, bucket or account,
//! path, and the settings that are not credentials) and loses, each replaced by [`MARK`]:
//!
//! - its user info (`http://user:password@host/` shows as `http://***@host/`), and any in the
//!   value of a setting (a proxy URL);
//! - the value of every setting that is not known to be harmless. The service's own settings
//!   (`layers`, `neurons`, `layout`, `links`) are shown. A storage backend's setting is shown
//!   only if the backend knows its name and that name, as the backend spells it canonically,
//!   has no word of a credential (`key`, `secret`, `token`, `sas`, `password`, `credential`,
//!   `credentials`): the list of secret settings comes from the backends' own configuration
//!   keys (`AzureConfigKey`, `AmazonS3ConfigKey`, `GoogleConfigKey` and their client keys),
//!   every alias included. A setting the backend does not know (a SAS URL's `sig`) and every
//!   setting of a plain web server's URI are hidden.

use std::str::FromStr;

use object_store::{aws::AmazonS3ConfigKey, azure::AzureConfigKey, gcp::GoogleConfigKey};
use url::form_urlencoded;

/// What replaces a secret.
pub const MARK: &str = "***";

/// Words of a backend setting's canonical name that make it a credential.
const CREDENTIAL_WORDS: [&str; 7] = [
    "key",
    "secret",
    "token",
    "sas",
    "password",
    "credential",
    "credentials",
];

/// The service's own settings of a location, never secret.
const OWN_SETTINGS: [&str; 4] = ["layers", "neurons", "layout", "links"];

/// Which settings a URI's query can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settings {
    Azure,
    S3,
    Gcs,
    /// A local directory, a plain web server, or a scheme not known: no backend settings.
    None,
}

/// `uri` as it may be shown anywhere: see the [module](self).
pub fn redact(uri: &str) -> String {
    let uri = uri.trim();
    if uri.starts_with("bundled:") {
        return uri.to_string();
    }
    let (base, query) = match uri.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (uri, None),
    };
    let base = without_user_info(base);
    let Some(query) = query else {
        return base;
    };
    let settings = settings_of(&base);
    let mut shown = form_urlencoded::Serializer::new(String::new());
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        if is_shown(settings, &key) {
            shown.append_pair(&key, &without_user_info(&value));
        } else {
            shown.append_pair(&key, MARK);
        }
    }
    format!("{base}?{}", shown.finish())
}

/// `text` with the user info of a URL in it (`scheme://user:password@host`) replaced by
/// [`MARK`].
fn without_user_info(text: &str) -> String {
    let Some((scheme, rest)) = text.split_once("://") else {
        return text.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rfind('@') {
        Some(at) => format!("{scheme}://{MARK}@{}{path}", &authority[at + 1..]),
        None => text.to_string(),
    }
}

fn settings_of(base: &str) -> Settings {
    let Some((scheme, rest)) = base.split_once("://") else {
        return Settings::None;
    };
    let host = rest.split(['/', ':']).next().unwrap_or_default();
    match scheme.to_ascii_lowercase().as_str() {
        "az" => Settings::Azure,
        "https"
            if host
                .to_ascii_lowercase()
                .ends_with(".blob.core.windows.net") =>
        {
            Settings::Azure
        }
        "s3" => Settings::S3,
        "gs" => Settings::Gcs,
        _ => Settings::None,
    }
}

/// Whether the value of setting `key` may be shown.
fn is_shown(settings: Settings, key: &str) -> bool {
    if OWN_SETTINGS.contains(&key) {
        return true;
    }
    let canonical = match settings {
        Settings::Azure => AzureConfigKey::from_str(key).map(|k| k.as_ref().to_string()),
        Settings::S3 => AmazonS3ConfigKey::from_str(key).map(|k| k.as_ref().to_string()),
        Settings::Gcs => GoogleConfigKey::from_str(key).map(|k| k.as_ref().to_string()),
        Settings::None => return false,
    };
    canonical.is_ok_and(|name| !is_credential(&name))
}

/// Whether a backend setting's canonical name is a credential's.
fn is_credential(name: &str) -> bool {
    name.split('_').any(|word| CREDENTIAL_WORDS.contains(&word))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every setting name each backend accepts, aliases included, as `object_store` 0.14 parses
    /// them (and a few of the client settings every backend takes), with whether it must be
    /// hidden: a credential, or a setting whose name says it leads to one.
    const AZURE: &[(&str, bool)] = &[
        ("azure_storage_account_key", true),
        ("azure_storage_access_key", true),
        ("azure_storage_master_key", true),
        ("master_key", true),
        ("account_key", true),
        ("access_key", true),
        ("azure_storage_account_name", false),
        ("account_name", false),
        ("azure_storage_client_id", false),
        ("azure_client_id", false),
        ("client_id", false),
        ("azure_storage_client_secret", true),
        ("azure_client_secret", true),
        ("client_secret", true),
        ("azure_storage_tenant_id", false),
        ("azure_storage_authority_id", false),
        ("azure_tenant_id", false),
        ("azure_authority_id", false),
        ("tenant_id", false),
        ("authority_id", false),
        ("azure_storage_authority_host", false),
        ("azure_authority_host", false),
        ("authority_host", false),
        ("azure_storage_sas_key", true),
        ("azure_storage_sas_token", true),
        ("sas_key", true),
        ("sas_token", true),
        ("azure_storage_token", true),
        ("bearer_token", true),
        ("token", true),
        ("azure_storage_use_emulator", false),
        ("use_emulator", false),
        ("azure_storage_endpoint", false),
        ("azure_endpoint", false),
        ("endpoint", false),
        ("azure_msi_endpoint", false),
        ("azure_identity_endpoint", false),
        ("identity_endpoint", false),
        ("msi_endpoint", false),
        ("azure_object_id", false),
        ("object_id", false),
        ("azure_msi_resource_id", false),
        ("msi_resource_id", false),
        ("azure_federated_token_file", true),
        ("federated_token_file", true),
        ("azure_use_fabric_endpoint", false),
        ("use_fabric_endpoint", false),
        ("azure_use_azure_cli", false),
        ("use_azure_cli", false),
        ("azure_skip_signature", false),
        ("skip_signature", false),
        ("azure_container_name", false),
        ("container_name", false),
        ("azure_disable_tagging", false),
        ("disable_tagging", false),
        ("azure_fabric_token_service_url", true),
        ("fabric_token_service_url", true),
        ("azure_fabric_workload_host", false),
        ("fabric_workload_host", false),
        ("azure_fabric_session_token", true),
        ("fabric_session_token", true),
        ("azure_fabric_cluster_identifier", false),
        ("fabric_cluster_identifier", false),
        ("azure_credential_type", true),
        ("credential_type", true),
        ("azure_storage_encryption_key", true),
        ("encryption_key", true),
        ("azure_allow_http", false),
        ("allow_http", false),
        ("proxy_url", false),
        ("timeout", false),
    ];

    const S3: &[(&str, bool)] = &[
        ("aws_access_key_id", true),
        ("access_key_id", true),
        ("aws_secret_access_key", true),
        ("secret_access_key", true),
        ("aws_default_region", false),
        ("default_region", false),
        ("aws_region", false),
        ("region", false),
        ("aws_bucket", false),
        ("aws_bucket_name", false),
        ("bucket_name", false),
        ("bucket", false),
        ("aws_endpoint_url", false),
        ("aws_endpoint", false),
        ("endpoint_url", false),
        ("endpoint", false),
        ("aws_endpoint_url_s3", false),
        ("aws_session_token", true),
        ("aws_token", true),
        ("session_token", true),
        ("token", true),
        ("aws_virtual_hosted_style_request", false),
        ("virtual_hosted_style_request", false),
        ("aws_s3_express", false),
        ("s3_express", false),
        ("aws_imdsv1_fallback", false),
        ("imdsv1_fallback", false),
        ("aws_metadata_endpoint", false),
        ("metadata_endpoint", false),
        ("aws_unsigned_payload", false),
        ("unsigned_payload", false),
        ("aws_checksum_algorithm", false),
        ("checksum_algorithm", false),
        ("aws_container_credentials_relative_uri", true),
        ("container_credentials_relative_uri", true),
        ("aws_container_credentials_full_uri", true),
        ("container_credentials_full_uri", true),
        ("aws_container_authorization_token_file", true),
        ("container_authorization_token_file", true),
        ("aws_web_identity_token_file", true),
        ("web_identity_token_file", true),
        ("aws_role_arn", false),
        ("role_arn", false),
        ("aws_role_session_name", false),
        ("role_session_name", false),
        ("aws_endpoint_url_sts", false),
        ("endpoint_url_sts", false),
        ("aws_skip_signature", false),
        ("skip_signature", false),
        ("aws_copy_if_not_exists", false),
        ("copy_if_not_exists", false),
        ("aws_conditional_put", false),
        ("conditional_put", false),
        ("aws_disable_tagging", false),
        ("disable_tagging", false),
        ("aws_disable_bulk_delete", false),
        ("disable_bulk_delete", false),
        ("aws_request_payer", false),
        ("request_payer", false),
        ("aws_allow_http", false),
        ("aws_server_side_encryption", false),
        ("server_side_encryption", false),
        ("aws_sse_kms_key_id", true),
        ("sse_kms_key_id", true),
        ("aws_sse_bucket_key_enabled", true),
        ("sse_bucket_key_enabled", true),
        ("aws_sse_customer_key_base64", true),
        ("sse_customer_key_base64", true),
    ];

    const GCS: &[(&str, bool)] = &[
        ("google_service_account", false),
        ("service_account", false),
        ("google_service_account_path", false),
        ("service_account_path", false),
        ("google_service_account_key", true),
        ("service_account_key", true),
        ("google_bucket", false),
        ("google_bucket_name", false),
        ("bucket", false),
        ("bucket_name", false),
        ("google_base_url", false),
        ("base_url", false),
        ("google_application_credentials", true),
        ("application_credentials", true),
        ("google_bearer_token", true),
        ("bearer_token", true),
        ("google_skip_signature", false),
        ("skip_signature", false),
    ];

    #[test]
    fn every_backend_setting_is_shown_or_hidden_by_its_canonical_name() {
        for (scheme, keys) in [
            ("az://acct/c/p", AZURE),
            ("s3://b/p", S3),
            ("gs://b/p", GCS),
        ] {
            for (key, secret) in keys {
                let uri = format!("{scheme}?{key}=VALUE42");
                let shown = redact(&uri);
                assert_eq!(
                    !shown.contains("VALUE42"),
                    *secret,
                    "{uri} shows as {shown}"
                );
                if *secret {
                    assert!(shown.ends_with(&format!("{key}={MARK}")), "{shown}");
                }
            }
        }
    }

    #[test]
    fn user_info_unknown_settings_and_web_queries_are_hidden() {
        let cases = [
            (
                "http://user:SECRETPW@host:8080/data/xl?layers=2&neurons=3",
                "http://***@host:8080/data/xl?layers=2&neurons=3",
            ),
            (
                "https://acct.blob.core.windows.net/c/p?sv=2022&sig=abc%3D",
                "https://acct.blob.core.windows.net/c/p?sv=***&sig=***",
            ),
            (
                "az://acct/c/p?sas_key=sv%3D1%26sig%3DSECRET&use_emulator=true",
                "az://acct/c/p?sas_key=***&use_emulator=true",
            ),
            (
                "s3://bkt/p?endpoint=http://k:SECRET@127.0.0.1:9000&region=us-east-1",
                "s3://bkt/p?endpoint=http%3A%2F%2F***%40127.0.0.1%3A9000&region=us-east-1",
            ),
            ("http://host/data?token=abc", "http://host/data?token=***"),
            (
                "/data/xl?layout=flat&links=follow",
                "/data/xl?layout=flat&links=follow",
            ),
            ("/data/xl?mystery=1", "/data/xl?mystery=***"),
            ("file:///data/xl", "file:///data/xl"),
            ("bundled:gpt2-xl-sample", "bundled:gpt2-xl-sample"),
            ("ftp://u:p@host/x", "ftp://***@host/x"),
        ];
        for (uri, expected) in cases {
            assert_eq!(redact(uri), expected, "{uri}");
        }
    }
}
