//! Paging of `ListNeurons` (AIP-158): page sizes under the server's maximum, and page tokens
//! (encoded by [`activations_proto::page_token`]) checked against the request, with a refusal a
//! person can act on.

pub use activations_proto::page_token::PageToken;
use activations_proto::page_token::PageTokenError;

use crate::error::excerpt;

/// Page size when the request gives 0 (or the maximum, if smaller).
pub const DEFAULT_PAGE_SIZE: usize = 1000;
/// The default maximum page size (`--max-page-size`): larger requested sizes are lowered to it.
pub const MAX_PAGE_SIZE: usize = 10_000;

/// `token` decoded for the listing of `dataset`'s `layer`, or why not, for a person: a token of
/// another listing names it, its dataset name cut short.
pub fn decode(token: &str, dataset: &str, layer: u32) -> Result<PageToken, String> {
    PageToken::decode(token, dataset, layer).map_err(|error| match error {
        PageTokenError::Malformed => error.to_string(),
        PageTokenError::Foreign {
            dataset: issued_for,
            layer: issued_layer,
        } => format!(
            "was issued for dataset {} layer {issued_layer}, not dataset {} layer {layer}",
            excerpt(&issued_for),
            excerpt(dataset)
        ),
    })
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

    #[test]
    fn a_token_for_another_listing_is_refused_naming_it() {
        let token = PageToken {
            dataset: "d".into(),
            layer: 1,
            after: 5,
        }
        .encode();
        let err = decode(&token, "d", 2).unwrap_err();
        assert!(err.contains("layer 1"), "{err}");
        let long = PageToken {
            dataset: "x".repeat(100_000),
            layer: 1,
            after: 5,
        }
        .encode();
        assert!(decode(&long, "d", 1).unwrap_err().len() < 200);
        assert!(decode("bm90IGEgdG9rZW4", "d", 1).is_err());
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
