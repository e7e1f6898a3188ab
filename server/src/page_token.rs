//! Page tokens of `ListNeurons` (AIP-158): opaque to clients, checked by the server.
//!
//! A token records the dataset and layer it was issued for and the last neuron index served, so
//! the next page starts after it even if files were added in between, and a token replayed
//! against another request is refused instead of silently paging the wrong listing.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};

use crate::error::excerpt;

/// Page size when the request gives 0 (or the maximum, if smaller).
pub const DEFAULT_PAGE_SIZE: usize = 1000;
/// The default maximum page size (`--max-page-size`): larger requested sizes are lowered to it.
pub const MAX_PAGE_SIZE: usize = 10_000;

/// Where the next page of one layer's listing starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageToken {
    pub dataset: String,
    pub layer: u32,
    /// The last neuron index already served.
    pub after: u32,
}

impl PageToken {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!(
            "v1\n{}\n{}\n{}",
            self.dataset, self.layer, self.after
        ))
    }

    /// Decodes a token, checking that it was issued for this dataset and layer.
    pub fn decode(token: &str, dataset: &str, layer: u32) -> Result<PageToken, String> {
        let malformed = || "is not a page token issued by this service".to_string();
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| malformed())?;
        let text = String::from_utf8(bytes).map_err(|_| malformed())?;
        let mut parts = text.split('\n');
        let (Some("v1"), Some(token_dataset), Some(token_layer), Some(after), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(malformed());
        };
        let token = PageToken {
            dataset: token_dataset.to_string(),
            layer: token_layer.parse().map_err(|_| malformed())?,
            after: after.parse().map_err(|_| malformed())?,
        };
        if token.dataset != dataset || token.layer != layer {
            return Err(format!(
                "was issued for dataset {} layer {}, not dataset {} layer {layer}",
                excerpt(&token.dataset),
                token.layer,
                excerpt(dataset)
            ));
        }
        Ok(token)
    }
}

/// The effective page size for a request's `page_size` under the server's maximum `max`
/// (AIP-158: 0 means the default, larger than the maximum is lowered to it, negative is an
/// error).
pub fn page_size(requested: i32, max: usize) -> Result<usize, String> {
    let max = max.max(1);
    match requested {
        0 => Ok(DEFAULT_PAGE_SIZE.min(max)),
        n if n < 0 => Err(format!("must not be negative, got {n}")),
        n => Ok((n as usize).min(max)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn tokens_round_trip(dataset in "[a-z0-9._-]{1,20}", layer in any::<u32>(), after in any::<u32>()) {
            let token = PageToken { dataset: dataset.clone(), layer, after };
            prop_assert_eq!(PageToken::decode(&token.encode(), &dataset, layer), Ok(token));
        }

        #[test]
        fn garbage_tokens_are_refused_not_panicked_on(token in ".{0,40}") {
            if let Ok(decoded) = PageToken::decode(&token, "d", 0) {
                prop_assert_eq!(decoded.dataset, "d");
            }
        }
    }

    #[test]
    fn a_token_for_another_layer_is_refused() {
        let token = PageToken {
            dataset: "d".into(),
            layer: 1,
            after: 5,
        }
        .encode();
        let err = PageToken::decode(&token, "d", 2).unwrap_err();
        assert!(err.contains("layer 1"), "{err}");
        assert!(PageToken::decode(&token, "e", 1).is_err());
        assert!(PageToken::decode("bm90IGEgdG9rZW4", "d", 1).is_err());
    }

    #[test]
    fn page_size_follows_aip_158() {
        assert_eq!(page_size(0, MAX_PAGE_SIZE), Ok(DEFAULT_PAGE_SIZE));
        assert_eq!(page_size(7, MAX_PAGE_SIZE), Ok(7));
        assert_eq!(page_size(i32::MAX, MAX_PAGE_SIZE), Ok(MAX_PAGE_SIZE));
        assert!(page_size(-1, MAX_PAGE_SIZE).is_err());
        // A server configured with a smaller maximum lowers the default too.
        assert_eq!(page_size(0, 50), Ok(50));
        assert_eq!(page_size(60, 50), Ok(50));
        assert_eq!(page_size(5, 0), Ok(1));
    }
}
