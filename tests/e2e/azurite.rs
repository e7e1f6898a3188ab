//! Self-test of the Azurite helpers: containers created with Shared Key authorization, private
//! and public, data uploaded and read back through `object_store`, anonymous reads allowed only
//! from the public container. Needs the emulator: `scripts/test.sh` starts it.

use activations_e2e::{azurite::Azurite, install_tls_provider};
use base64::Engine as _;
use md5::Digest as _;

/// `bytes`' MD5 in base64, as `Content-MD5` carries it.
fn base64_md5(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(bytes))
}
use object_store::{ObjectStoreExt, path::Path as ObjectPath};

#[tokio::test]
#[ignore = "needs Azurite: run scripts/test.sh"]
async fn containers_uploads_and_public_access() {
    let azurite = Azurite::from_env();
    azurite.create_container("selftest-private", false).await;
    azurite.create_container("selftest-public", true).await;
    // Creating an existing container is fine.
    azurite.create_container("selftest-private", false).await;

    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("1")).expect("mkdir");
    std::fs::write(dir.path().join("1/1.json"), b"{\"layer\": 1}").expect("write");
    std::fs::write(dir.path().join("top.txt"), b"top").expect("write");
    for container in ["selftest-private", "selftest-public"] {
        azurite.upload_dir(container, "acts/v1", dir.path()).await;
    }
    azurite.upload_dir("selftest-private", "", dir.path()).await;

    let store = azurite.store("selftest-private");
    for (key, expected) in [
        ("acts/v1/1/1.json", &b"{\"layer\": 1}"[..]),
        ("acts/v1/top.txt", b"top"),
        ("1/1.json", b"{\"layer\": 1}"),
    ] {
        let data = store
            .get(&ObjectPath::from(key))
            .await
            .unwrap_or_else(|e| panic!("reading {key}: {e}"))
            .bytes()
            .await
            .expect("body");
        assert_eq!(data, expected, "{key}");
    }
    let missing = store.get(&ObjectPath::from("acts/v1/2.json")).await;
    assert!(
        matches!(missing, Err(object_store::Error::NotFound { .. })),
        "{missing:?}"
    );

    install_tls_provider();
    let anonymous = reqwest::Client::new();
    let public = anonymous
        .get(format!(
            "{}/acts/v1/1/1.json",
            azurite.container_url("selftest-public")
        ))
        .send()
        .await
        .expect("anonymous GET");
    assert_eq!(public.status(), 200);
    // Azure gives a whole blob's MD5, which the server checks every body against.
    let md5 = public
        .headers()
        .get("content-md5")
        .expect("a Content-MD5")
        .to_str()
        .unwrap()
        .to_string();
    let body = public.bytes().await.expect("body");
    assert_eq!(body, &b"{\"layer\": 1}"[..]);
    assert_eq!(md5, base64_md5(&body));
    let private = anonymous
        .get(format!(
            "{}/acts/v1/1/1.json",
            azurite.container_url("selftest-private")
        ))
        .send()
        .await
        .expect("anonymous GET");
    assert!(!private.status().is_success(), "{}", private.status());
}
