//! Storage conformance: the same dataset, read through every kind of location a server
//! accepts, answers exactly as it does from local disk. Plain web servers and local disk run
//! everywhere; the Azurite cases need the emulator that `scripts/test.sh` starts.

use std::path::Path;

use activations_cli::{self as cli, Cli};
use activations_e2e::{
    TestServer,
    azurite::Azurite,
    conformance::{self, SHAPE_QUERY},
    http::StaticHttpServer,
    s3::S3Emulator,
    serve_dir, serve_uris,
};
use activations_format::shape::MANIFEST_FILE;
use activations_server::location::StorageOptions;
use clap::Parser;

/// One dataset directory in each layout, and a server reading the flat one from local disk:
/// the reference every other backend must match.
struct Fixture {
    flat: tempfile::TempDir,
    nested: tempfile::TempDir,
    reference: TestServer,
}

async fn fixture() -> Fixture {
    let flat = tempfile::tempdir().unwrap();
    conformance::write_dataset(flat.path(), false);
    let nested = tempfile::tempdir().unwrap();
    conformance::write_dataset(nested.path(), true);
    let reference = serve_dir("reference", flat.path()).await;
    Fixture {
        flat,
        nested,
        reference,
    }
}

async fn check(label: &str, uri: &str, listable: bool, fixture: &Fixture) {
    let server = serve_uris(&[("under-test", uri)], StorageOptions::DEFAULT).await;
    conformance::assert_conforms(
        label,
        &server.client().await,
        &fixture.reference.client().await,
        listable,
    )
    .await;
    server.stop().await;
}

/// `activations manifest URI --out FILE`, as a user runs it.
async fn write_manifest(uri: &str, file: &Path) -> String {
    let cli = Cli::parse_from([
        "activations",
        "manifest",
        uri,
        "--out",
        file.to_str().unwrap(),
    ]);
    let mut out = Vec::new();
    cli::run(cli, &mut out)
        .await
        .unwrap_or_else(|e| panic!("activations manifest {uri}: {e}"));
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn local_disk_in_the_neurons_layout_conforms() {
    let fixture = fixture().await;
    let nested = fixture.nested.path().to_str().unwrap();
    check("local neurons layout", nested, true, &fixture).await;
    check(
        "file:// URL",
        &format!("file://{}", fixture.flat.path().display()),
        true,
        &fixture,
    )
    .await;
}

#[tokio::test]
async fn a_plain_web_server_conforms_with_a_declared_shape_or_a_manifest() {
    let fixture = fixture().await;
    let web = StaticHttpServer::start(fixture.flat.path()).await;
    let nested_web = StaticHttpServer::start(fixture.nested.path()).await;

    // Without a shape it still reads neurons, but cannot list.
    let server = serve_uris(&[("web", &web.url())], StorageOptions::DEFAULT).await;
    conformance::assert_unlistable("web server, no shape", &server.client().await).await;
    server.stop().await;

    let declared = format!("{}/?{SHAPE_QUERY}", web.url());
    check("web server, ?layers&neurons", &declared, true, &fixture).await;
    // The layout is found by probing for the shape's first neuron.
    let declared = format!("{}?{SHAPE_QUERY}", nested_web.url());
    check("web server, neurons layout", &declared, true, &fixture).await;

    // `activations manifest` lists the directory; the web server then serves the manifest.
    let said = write_manifest(
        fixture.nested.path().to_str().unwrap(),
        &fixture.nested.path().join(MANIFEST_FILE),
    )
    .await;
    assert!(
        said.contains("2 layers of 3 neurons (6 in all), neurons layout"),
        "{said}"
    );
    check(
        "web server, manifest.json",
        &nested_web.url(),
        true,
        &fixture,
    )
    .await;
}

#[tokio::test]
async fn a_bad_manifest_stops_the_server_from_starting_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(MANIFEST_FILE), r#"{"manifest_version": 1}"#).unwrap();
    let spec = activations_server::DatasetSpec {
        name: "broken".into(),
        uri: dir.path().to_str().unwrap().into(),
    };
    let err = activations_server::Datasets::open(&[spec], &Default::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"broken\"") && err.contains("layers"),
        "{err}"
    );
}

// Azurite. Each test uploads to its own prefix, so tests and reruns never meet.

const PRIVATE: &str = "conformance-private";
const PUBLIC: &str = "conformance-public";

async fn upload(azurite: &Azurite, fixture: &Fixture, test: &str) -> String {
    azurite.create_container(PRIVATE, false).await;
    azurite.create_container(PUBLIC, true).await;
    let prefix = format!("{test}-{}", std::process::id());
    for container in [PRIVATE, PUBLIC] {
        azurite
            .upload_dir(container, &format!("{prefix}/flat"), fixture.flat.path())
            .await;
        azurite
            .upload_dir(
                container,
                &format!("{prefix}/nested"),
                fixture.nested.path(),
            )
            .await;
    }
    prefix
}

#[tokio::test]
#[ignore = "needs the Azurite emulator: run scripts/test.sh"]
async fn azurite_through_az_urls_conforms_in_both_layouts() {
    let azurite = Azurite::from_env();
    let fixture = fixture().await;
    let prefix = upload(&azurite, &fixture, "az").await;
    for layout in ["flat", "nested"] {
        let uri = format!("az://devstoreaccount1/{PRIVATE}/{prefix}/{layout}?use_emulator=true");
        check(&format!("Azurite az:// {layout}"), &uri, true, &fixture).await;
    }
}

#[tokio::test]
#[ignore = "needs the Azurite emulator: run scripts/test.sh"]
async fn anonymous_azurite_reads_without_listing_like_the_public_container() {
    let azurite = Azurite::from_env();
    let fixture = fixture().await;
    let prefix = upload(&azurite, &fixture, "anonymous").await;
    let anonymous = |layout: &str| {
        format!(
            "az://devstoreaccount1/{PUBLIC}/{prefix}/{layout}?use_emulator=true&skip_signature=true"
        )
    };
    // Without a shape the layout cannot be detected either: flat is assumed.
    let server = serve_uris(
        &[("anonymous", &anonymous("flat"))],
        StorageOptions::DEFAULT,
    )
    .await;
    conformance::assert_unlistable("anonymous Azurite, no shape", &server.client().await).await;
    server.stop().await;
    // With one, the layout is found by probing for the shape's first neuron.
    check(
        "anonymous Azurite, declared shape",
        &format!("{}&{SHAPE_QUERY}", anonymous("nested")),
        true,
        &fixture,
    )
    .await;
    // The blob endpoint URL, read as a plain web server would be.
    let endpoint = format!(
        "{}/{prefix}/flat?{SHAPE_QUERY}",
        azurite.container_url(PUBLIC)
    );
    check("Azurite blob endpoint URL", &endpoint, true, &fixture).await;
}

#[tokio::test]
#[ignore = "needs the Azurite emulator: run scripts/test.sh"]
async fn a_manifest_built_by_listing_azurite_lets_anonymous_readers_list() {
    let azurite = Azurite::from_env();
    let fixture = fixture().await;
    let prefix = upload(&azurite, &fixture, "manifest").await;
    let listed = format!("az://devstoreaccount1/{PRIVATE}/{prefix}/flat?use_emulator=true");
    let manifest_dir = tempfile::tempdir().unwrap();
    let manifest = manifest_dir.path().join(MANIFEST_FILE);
    let said = write_manifest(&listed, &manifest).await;
    assert!(
        said.contains("2 layers of 3 neurons (6 in all), flat layout"),
        "{said}"
    );
    // The manifest of the listed store equals the one of the same files on disk.
    let local = manifest_dir.path().join("local.json");
    write_manifest(fixture.flat.path().to_str().unwrap(), &local).await;
    assert_eq!(
        std::fs::read_to_string(&manifest).unwrap(),
        std::fs::read_to_string(&local).unwrap()
    );
    azurite
        .upload_dir(PUBLIC, &format!("{prefix}/flat"), manifest_dir.path())
        .await;
    let endpoint = format!("{}/{prefix}/flat", azurite.container_url(PUBLIC));
    check(
        "Azurite endpoint with manifest.json",
        &endpoint,
        true,
        &fixture,
    )
    .await;
}

// S3, through the moto emulator.

#[tokio::test]
#[ignore = "needs the S3 emulator: run scripts/test.sh"]
async fn s3_conforms_in_both_layouts_and_lists_into_a_manifest() {
    let s3 = S3Emulator::from_env();
    let fixture = fixture().await;
    let bucket = "conformance";
    s3.create_bucket(bucket).await;
    let prefix = format!("s3-{}", std::process::id());
    s3.upload_dir(bucket, &format!("{prefix}/flat"), fixture.flat.path())
        .await;
    s3.upload_dir(bucket, &format!("{prefix}/nested"), fixture.nested.path())
        .await;
    for layout in ["flat", "nested"] {
        let uri = s3.uri(bucket, &format!("{prefix}/{layout}"));
        check(&format!("S3 {layout}"), &uri, true, &fixture).await;
    }
    // An object uploaded in one part has its body's MD5 as its ETag, which the server checks
    // every body against.
    let key = object_store::path::Path::from(format!("{prefix}/flat/1/1.json"));
    let got = object_store::ObjectStoreExt::get(s3.store(bucket).as_ref(), &key)
        .await
        .unwrap();
    let etag = got.meta.e_tag.clone().expect("an ETag");
    let body = got.bytes().await.unwrap();
    let md5: String = <md5::Md5 as md5::Digest>::digest(&body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(etag.trim_matches('"'), md5, "{key}");
    let manifest_dir = tempfile::tempdir().unwrap();
    let listed = manifest_dir.path().join("s3.json");
    let local = manifest_dir.path().join("local.json");
    write_manifest(&s3.uri(bucket, &format!("{prefix}/nested")), &listed).await;
    write_manifest(fixture.nested.path().to_str().unwrap(), &local).await;
    assert_eq!(
        std::fs::read_to_string(&listed).unwrap(),
        std::fs::read_to_string(&local).unwrap()
    );
}
