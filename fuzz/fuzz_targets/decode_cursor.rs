//! Fuzzes the `StreamNeuronSplits` cursor decoder: any text is either refused or read as a
//! cursor of at most one stream, which the server's own cursor for that place resumes alike.

#![no_main]

use activations_proto::{
    cursor::{Cursor, CursorError, StreamIdentity},
    pb,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let request = pb::StreamNeuronSplitsRequest::default();
    let stream = StreamIdentity::of("d", &request);
    let other = StreamIdentity::of("e", &request);
    match Cursor::inspect(text) {
        Err(CursorError::Malformed) => {
            assert_eq!(Cursor::decode(text, stream), Err(CursorError::Malformed));
        }
        Err(CursorError::OtherStream) => panic!("inspect does not know the stream"),
        Ok(inspected) => {
            // Bound to one stream at most: never to two different ones.
            let here = Cursor::decode(text, stream);
            let there = Cursor::decode(text, other);
            assert!(here.is_err() || there.is_err(), "{text:?} resumes two streams");
            if let Ok(cursor) = here {
                assert_eq!(
                    (cursor.position, cursor.layer_index, cursor.neuron_index),
                    (inspected.position, inspected.layer_index, inspected.neuron_index)
                );
                // The cursor the server would issue in its place resumes the same way.
                let reissued = Cursor::new(
                    stream,
                    cursor.position,
                    cursor.layer_index,
                    cursor.neuron_index,
                );
                assert_eq!(Cursor::decode(&reissued.encode(), stream), Ok(cursor));
            }
        }
    }
});
