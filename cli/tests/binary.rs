//! The `activations` binary as a user runs it: the usual input mistakes are refused before
//! anything is sent, saying what to write instead.

use std::process::Command;

/// `activations ARGS...` against a server that is not there: what it says on stderr, having
/// failed.
fn refused(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_activations"))
        .args(["--server", "http://127.0.0.1:1"])
        .args(args)
        .output()
        .expect("running activations");
    assert!(!output.status.success(), "{args:?} succeeded");
    String::from_utf8(output.stderr).expect("UTF-8 errors")
}

#[test]
fn a_negative_index_is_refused_as_such() {
    for args in [
        &["get", "-1", "5"][..],
        &["exists", "3", "-7"],
        &["neurons", "-2"],
    ] {
        let said = refused(args);
        assert!(said.contains("is negative: indices count from 0"), "{said}");
        assert!(!said.contains("-- -"), "clap's tip to escape it: {said}");
    }
}

#[test]
fn a_range_written_with_a_dash_is_answered_with_how_to_write_it() {
    let out = tempfile::tempdir().unwrap();
    let out = out.path().to_str().unwrap();
    let said = refused(&["export", "--layers", "0-2", "--out", out]);
    assert!(
        said.contains("write 0..=2 (both included) or 0..3 (the end excluded)"),
        "{said}"
    );
}

#[test]
fn an_out_that_is_a_file_is_refused_before_connecting() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let path = file.path().to_str().unwrap();
    let said = refused(&["export", "--layers", "0", "--out", path]);
    assert!(
        said.contains("is a file: an export writes a directory"),
        "{said}"
    );
    assert!(!said.contains("connect"), "it connected first: {said}");
}

/// `activations --server SERVER layers`: what it says on stderr, having failed.
fn layers_from(server: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_activations"))
        .args(["--server", server, "layers"])
        .output()
        .expect("running activations");
    assert!(!output.status.success(), "{server} answered");
    String::from_utf8(output.stderr).expect("UTF-8 errors")
}

#[test]
fn a_server_address_that_cannot_work_is_named_with_the_likely_cause() {
    let said = layers_from("http://127.0.0.1:");
    assert!(
        said.contains("http://127.0.0.1: has no port after its ':'"),
        "{said}"
    );
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = closed.local_addr().unwrap();
    drop(closed);
    let said = layers_from(&address.to_string());
    assert!(
        said.contains(&format!("http://{address}"))
            && said.contains("likely cause: nothing listens at that address"),
        "{said}"
    );
}

fn help(command: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_activations"))
        .args([command, "--help"])
        .output()
        .expect("running activations");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).expect("UTF-8 help")
}

#[test]
fn manifest_offers_no_server_options_and_refuses_them_saying_why() {
    let layers = help("layers");
    let manifest = help("manifest");
    // Options as the help lists them: `--server <URL>`.
    for option in ["--server <", "--dataset <", "--tls-ca <", "--token <"] {
        assert!(layers.contains(option), "layers --help lacks {option}");
        assert!(
            !manifest.contains(option),
            "manifest --help offers {option}:\n{manifest}"
        );
    }
    let output = Command::new(env!("CARGO_BIN_EXE_activations"))
        .args(["manifest", "/tmp", "--server", "http://127.0.0.1:50051"])
        .output()
        .expect("running activations");
    assert!(!output.status.success());
    let said = String::from_utf8(output.stderr).unwrap();
    assert!(
        said.contains("manifest lists the store itself and calls no server"),
        "{said}"
    );
}

#[test]
fn a_web_server_at_the_address_is_named_as_not_a_grpc_server() {
    use std::io::{Read, Write};

    // Answers every connection as an HTTP/1.1 web server: a 400, then keeps it open.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut socket in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut buffer = [0u8; 1024];
                let _ = socket.read(&mut buffer);
                let _ = socket.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
                while socket.read(&mut buffer).is_ok_and(|n| n > 0) {}
            });
        }
    });
    let said = layers_from(&address.to_string());
    assert!(
        said.contains(&address.to_string())
            && said.contains("likely cause: something answered, but not as a gRPC server"),
        "{said}"
    );
}
