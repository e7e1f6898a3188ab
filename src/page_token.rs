//! Page tokens of `ListNeurons` (AIP-158): opaque to clients, checked by the server.
//!
//! A token records the dataset and layer it was issued for and the last neuron index served, so
//! the next page starts after it even if files were added in between, and a token replayed
//! against another request is refused instead of silently paging the wrong listing.

use std::fmt;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};

/// Where the next page of one layer's listing starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageToken {
    pub dataset: String,
    pub layer: u32,
    /// The last neuron index already served.
    pub after: u32,
}

/// Why a page token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageTokenError {
    /// Not a page token this service issued (or a damaged copy of one).
    Malformed,
    /// A token of another listing: issued for `dataset` and `layer`.
    Foreign { dataset: String, layer: u32 },
}

impl fmt::Display for PageTokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PageTokenError::Malformed => f.write_str("is not a page token issued by this service"),
            PageTokenError::Foreign { .. } => {
                f.write_str("was issued for the listing of another dataset or layer")
            }
        }
    }
}

impl std::error::Error for PageTokenError {}

impl PageToken {
    /// The text sent as `next_page_token`.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!(
            "v1\n{}\n{}\n{}",
            self.dataset, self.layer, self.after
        ))
    }

    /// Decodes a token, checking that it was issued for `dataset` and `layer`.
    pub fn decode(token: &str, dataset: &str, layer: u32) -> Result<PageToken, PageTokenError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| PageTokenError::Malformed)?;
        let text = String::from_utf8(bytes).map_err(|_| PageTokenError::Malformed)?;
        let mut parts = text.split('\n');
        let (Some("v1"), Some(token_dataset), Some(token_layer), Some(after), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(PageTokenError::Malformed);
        };
        let token = PageToken {
            dataset: token_dataset.to_string(),
            layer: token_layer.parse().map_err(|_| PageTokenError::Malformed)?,
            after: after.parse().map_err(|_| PageTokenError::Malformed)?,
        };
        if token.dataset != dataset || token.layer != layer {
            return Err(PageTokenError::Foreign {
                dataset: token.dataset,
                layer: token.layer,
            });
        }
        Ok(token)
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
    fn a_token_for_another_listing_is_refused() {
        let token = PageToken {
            dataset: "d".into(),
            layer: 1,
            after: 5,
        }
        .encode();
        let foreign = PageToken::decode(&token, "d", 2).unwrap_err();
        assert_eq!(
            foreign,
            PageTokenError::Foreign {
                dataset: "d".into(),
                layer: 1
            }
        );
        assert!(PageToken::decode(&token, "e", 1).is_err());
        assert_eq!(
            PageToken::decode("bm90IGEgdG9rZW4", "d", 1),
            Err(PageTokenError::Malformed)
        );
    }
}
