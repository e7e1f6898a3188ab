//! Rendezvous (highest-random-weight) hashing of neurons over servers.
//!
//! Every call about a neuron goes to the server that gives the neuron's key the highest weight;
//! when that server is out, to the next one in weight order. Any client that computes the same
//! weights routes the same way, so the rule is spelled out here exactly:
//!
//! - **key**: the dataset name as the request carries it (UTF-8; empty for the server's
//!   default), the layer index and the neuron index;
//! - **server**: its address `host:port` as the client dials it: the authority of its URL,
//!   lower-cased (`10.0.0.5:50051`, `replica-0.activations:50051`), or for a `dns:///` target
//!   each resolved `ip:port` (IPv6 in brackets: `[fd00::5]:50051`);
//! - **weight**: the 8-byte unkeyed BLAKE2b digest (RFC 7693, `digest_size=8`, no key, salt or
//!   personalization) of `server || 0x00 || dataset || 0x00 || layer || neuron`, the two indices
//!   as 4-byte big-endian unsigned integers, read as a big-endian unsigned 64-bit integer;
//! - **order**: servers by descending weight, ties by ascending server address.
//!
//! In Python, with the standard library only:
//!
//! ```python
//! import hashlib
//!
//! def weight(server: str, dataset: str, layer: int, neuron: int) -> int:
//!     message = (server.encode() + b"\0" + dataset.encode() + b"\0"
//!                + layer.to_bytes(4, "big") + neuron.to_bytes(4, "big"))
//!     return int.from_bytes(hashlib.blake2b(message, digest_size=8).digest(), "big")
//!
//! def owner(servers: list[str], dataset: str, layer: int, neuron: int) -> str:
//!     return min(servers, key=lambda s: (-weight(s, dataset, layer, neuron), s))
//! ```
//!
//! Adding or removing a server moves only the keys it wins or held: about 1/N of them.

use blake2::{Blake2bVar, digest::Update, digest::VariableOutput};

use crate::pb::NeuronId;

/// What a call is about, for routing: one neuron of one dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteKey<'a> {
    /// The dataset name as requests carry it; empty for the server's default.
    pub dataset: &'a str,
    pub layer_index: u32,
    pub neuron_index: u32,
}

impl<'a> RouteKey<'a> {
    /// The key of neuron `id` of `dataset`.
    pub fn new(dataset: &'a str, id: NeuronId) -> Self {
        RouteKey {
            dataset,
            layer_index: id.layer_index,
            neuron_index: id.neuron_index,
        }
    }
}

/// The weight `server` gives `key` (see the [module documentation](self)).
///
/// # Examples
///
/// ```
/// use activations_client::routing::{RouteKey, weight};
///
/// let key = RouteKey { dataset: "gpt2-xl", layer_index: 1, neuron_index: 1 };
/// assert_eq!(weight("10.0.0.5:50051", &key), weight("10.0.0.5:50051", &key));
/// assert_ne!(weight("10.0.0.5:50051", &key), weight("10.0.0.6:50051", &key));
/// ```
pub fn weight(server: &str, key: &RouteKey<'_>) -> u64 {
    let mut hasher = Blake2bVar::new(8).expect("8 bytes is a valid BLAKE2b digest size");
    hasher.update(server.as_bytes());
    hasher.update(&[0]);
    hasher.update(key.dataset.as_bytes());
    hasher.update(&[0]);
    hasher.update(&key.layer_index.to_be_bytes());
    hasher.update(&key.neuron_index.to_be_bytes());
    let mut digest = [0u8; 8];
    hasher
        .finalize_variable(&mut digest)
        .expect("the buffer has the digest's size");
    u64::from_be_bytes(digest)
}

/// The server of `servers` that owns `key`: the highest weight, ties to the smallest address.
/// `None` for no server.
///
/// # Examples
///
/// ```
/// use activations_client::routing::{RouteKey, owner};
///
/// let servers = ["10.0.0.5:50051", "10.0.0.6:50051", "10.0.0.7:50051"];
/// let key = RouteKey { dataset: "", layer_index: 0, neuron_index: 42 };
/// let first = owner(servers, &key).unwrap();
/// // Without a server that does not own the key, the owner stays.
/// let others: Vec<_> = servers.into_iter().filter(|s| *s == first || *s != servers[0]).collect();
/// assert_eq!(owner(others, &key), Some(first));
/// ```
pub fn owner<'s, I>(servers: I, key: &RouteKey<'_>) -> Option<&'s str>
where
    I: IntoIterator<Item = &'s str>,
{
    servers
        .into_iter()
        .map(|server| (weight(server, key), server))
        .max_by(|(wa, sa), (wb, sb)| wa.cmp(wb).then_with(|| sb.cmp(sa)))
        .map(|(_, server)| server)
}

/// `servers` in `key`'s preference order: the owner first, then where its neurons go when the
/// owner is out, and so on.
///
/// # Examples
///
/// ```
/// use activations_client::routing::{RouteKey, owner, preference};
///
/// let servers = ["a:1", "b:1", "c:1"];
/// let key = RouteKey { dataset: "d", layer_index: 3, neuron_index: 7 };
/// let order = preference(servers, &key);
/// assert_eq!(order.len(), 3);
/// assert_eq!(Some(order[0]), owner(servers, &key));
/// ```
pub fn preference<'s, I>(servers: I, key: &RouteKey<'_>) -> Vec<&'s str>
where
    I: IntoIterator<Item = &'s str>,
{
    let mut weighted: Vec<(u64, &str)> = servers
        .into_iter()
        .map(|server| (weight(server, key), server))
        .collect();
    weighted.sort_unstable_by(|(wa, sa), (wb, sb)| wb.cmp(wa).then_with(|| sa.cmp(sb)));
    weighted.into_iter().map(|(_, server)| server).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    fn key(dataset: &str, layer_index: u32, neuron_index: u32) -> RouteKey<'_> {
        RouteKey {
            dataset,
            layer_index,
            neuron_index,
        }
    }

    #[test]
    fn the_weight_is_the_documented_blake2b_of_the_documented_bytes() {
        // The same digest computed by a BLAKE2b written from RFC 7693 in the test, over the
        // bytes the documentation lists: a change of either side breaks other clients.
        let message = b"10.0.0.5:50051\0gpt2-xl\0\x00\x00\x00\x01\x00\x00\x00\x02";
        let expected = u64::from_be_bytes(reference_blake2b_8(message));
        assert_eq!(weight("10.0.0.5:50051", &key("gpt2-xl", 1, 2)), expected);
    }

    /// BLAKE2b with an 8-byte digest and no key, from RFC 7693 section 3, for messages of at
    /// most one block.
    fn reference_blake2b_8(message: &[u8]) -> [u8; 8] {
        const IV: [u64; 8] = [
            0x6a09e667f3bcc908,
            0xbb67ae8584caa73b,
            0x3c6ef372fe94f82b,
            0xa54ff53a5f1d36f1,
            0x510e527fade682d1,
            0x9b05688c2b3e6c1f,
            0x1f83d9abfb41bd6b,
            0x5be0cd19137e2179,
        ];
        const SIGMA: [[usize; 16]; 10] = [
            [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
            [14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3],
            [11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4],
            [7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8],
            [9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13],
            [2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9],
            [12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11],
            [13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10],
            [6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5],
            [10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0],
        ];
        assert!(message.len() <= 128);
        let mut block = [0u8; 128];
        block[..message.len()].copy_from_slice(message);
        let m: Vec<u64> = block
            .chunks(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let mut h = IV;
        h[0] ^= 0x0101_0000 ^ 8;
        let mut v = [0u64; 16];
        v[..8].copy_from_slice(&h);
        v[8..].copy_from_slice(&IV);
        v[12] ^= message.len() as u64;
        v[14] = !v[14];
        let g = |v: &mut [u64; 16], a: usize, b: usize, c: usize, d: usize, x: u64, y: u64| {
            v[a] = v[a].wrapping_add(v[b]).wrapping_add(x);
            v[d] = (v[d] ^ v[a]).rotate_right(32);
            v[c] = v[c].wrapping_add(v[d]);
            v[b] = (v[b] ^ v[c]).rotate_right(24);
            v[a] = v[a].wrapping_add(v[b]).wrapping_add(y);
            v[d] = (v[d] ^ v[a]).rotate_right(16);
            v[c] = v[c].wrapping_add(v[d]);
            v[b] = (v[b] ^ v[c]).rotate_right(63);
        };
        for round in 0..12 {
            let s = SIGMA[round % 10];
            g(&mut v, 0, 4, 8, 12, m[s[0]], m[s[1]]);
            g(&mut v, 1, 5, 9, 13, m[s[2]], m[s[3]]);
            g(&mut v, 2, 6, 10, 14, m[s[4]], m[s[5]]);
            g(&mut v, 3, 7, 11, 15, m[s[6]], m[s[7]]);
            g(&mut v, 0, 5, 10, 15, m[s[8]], m[s[9]]);
            g(&mut v, 1, 6, 11, 12, m[s[10]], m[s[11]]);
            g(&mut v, 2, 7, 8, 13, m[s[12]], m[s[13]]);
            g(&mut v, 3, 4, 9, 14, m[s[14]], m[s[15]]);
        }
        (h[0] ^ v[0] ^ v[8]).to_le_bytes()
    }

    fn servers(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{i}:50051")).collect()
    }

    #[test]
    fn neurons_spread_evenly_over_the_servers() {
        let servers = servers(3);
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for neuron in 0..30_000 {
            let key = key("gpt2-xl", neuron / 6400, neuron % 6400);
            *counts
                .entry(owner(servers.iter().map(String::as_str), &key).unwrap())
                .or_default() += 1;
        }
        for (server, count) in counts {
            // 10,000 expected; 5 standard deviations is about 400.
            assert!((9_500..=10_500).contains(&count), "{server}: {count}");
        }
    }

    proptest! {
        #[test]
        fn removing_a_server_moves_only_its_neurons(
            n in 2usize..8,
            removed in 0usize..8,
            dataset in "[a-z0-9-]{0,12}",
            layer in 0u32..48,
            neuron in 0u32..6400,
        ) {
            let all = servers(n);
            let removed = &all[removed % n];
            let key = key(&dataset, layer, neuron);
            let before = owner(all.iter().map(String::as_str), &key).unwrap();
            let rest = all.iter().map(String::as_str).filter(|s| s != removed);
            let after = owner(rest, &key).unwrap();
            if before != removed {
                prop_assert_eq!(after, before);
            } else {
                // The neuron goes to the next server in its preference order.
                let order = preference(all.iter().map(String::as_str), &key);
                prop_assert_eq!(after, order[1]);
            }
        }

        #[test]
        fn adding_a_server_moves_neurons_only_to_it(
            n in 1usize..8,
            layer in 0u32..48,
            neuron in 0u32..6400,
        ) {
            let all = servers(n + 1);
            let key = key("", layer, neuron);
            let before = owner(all[..n].iter().map(String::as_str), &key).unwrap();
            let after = owner(all.iter().map(String::as_str), &key).unwrap();
            prop_assert!(after == before || after == all[n]);
        }

        #[test]
        fn the_order_of_the_list_does_not_matter(
            n in 1usize..8,
            seed in any::<u64>(),
            layer in 0u32..48,
            neuron in 0u32..6400,
        ) {
            let all = servers(n);
            let mut shuffled = all.clone();
            // A rotation and a reversal chosen by the seed.
            shuffled.rotate_left((seed as usize) % n);
            if seed & 1 == 1 {
                shuffled.reverse();
            }
            let key = key("d", layer, neuron);
            prop_assert_eq!(
                preference(all.iter().map(String::as_str), &key),
                preference(shuffled.iter().map(String::as_str), &key)
            );
        }
    }
}
