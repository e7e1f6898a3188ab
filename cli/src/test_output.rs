//! Builders shared by the output tests of the text and JSON formats.

use std::io;

use activations_client::pb::ActivationRecord;

pub(crate) fn record(tokens: &[&str], activations: &[f32]) -> ActivationRecord {
    ActivationRecord {
        tokens: tokens.iter().map(|t| t.to_string()).collect(),
        activations: activations.to_vec(),
        ..Default::default()
    }
}

/// What `write` prints, as a string.
pub(crate) fn render(write: impl FnOnce(&mut Vec<u8>) -> io::Result<()>) -> String {
    let mut out = Vec::new();
    write(&mut out).unwrap();
    String::from_utf8(out).unwrap()
}
