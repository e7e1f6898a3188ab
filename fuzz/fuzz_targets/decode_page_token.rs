//! Fuzzes the `ListNeurons` page-token decoder: any text is either refused, or read as a token
//! of the listing it was checked against that encodes back to the same token.

#![no_main]

use activations_proto::page_token::{PageToken, PageTokenError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match PageToken::decode(text, "d", 3) {
        Ok(token) => {
            assert_eq!((token.dataset.as_str(), token.layer), ("d", 3));
            assert_eq!(PageToken::decode(&token.encode(), "d", 3), Ok(token));
        }
        Err(PageTokenError::Foreign { dataset, layer }) => {
            assert!(dataset != "d" || layer != 3);
            // It is a token, of the listing it names.
            assert!(PageToken::decode(text, &dataset, layer).is_ok());
        }
        Err(PageTokenError::Malformed) => {}
    }
});
