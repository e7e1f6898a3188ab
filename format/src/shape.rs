//! A dataset's declared shape: which layers exist and which neurons each holds.
//!
//! Anonymous readers of the public container cannot list it, and a plain web server cannot list
//! at all, yet `ListLayers` and `ListNeurons` must answer. A dataset therefore may declare its
//! shape, either in its URI (`?layers=48&neurons=6400`: layers `0..48`, each with neurons
//! `0..6400`) or in a `manifest.json` at its root:
//!
//! ```json
//! {
//!   "manifest_version": 1,
//!   "layout": "flat",
//!   "layers": [
//!     {"layer": 0, "neuron_count": 6400},
//!     {"layer": 1, "neurons": [0, 1, 5]}
//!   ]
//! }
//! ```
//!
//! A layer lists either `neuron_count` (neurons `0..count`) or the explicit `neurons` it holds;
//! `layout` is optional. `activations manifest URI` writes this file by listing a store.

use std::{collections::BTreeMap, fmt};

use serde::{Deserialize, Serialize};

use crate::layout::{Layout, LayoutChoice};

/// Name of the manifest file at a dataset's root.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The only manifest version this server reads and writes.
pub const MANIFEST_VERSION: u32 = 1;

/// The layers of a dataset and the neurons of each, all sorted ascending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    layers: BTreeMap<u32, Neurons>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Neurons {
    /// Neurons `0..count`.
    Count(u32),
    /// Exactly these neurons, ascending and distinct.
    Indices(Vec<u32>),
}

impl Shape {
    /// Layers `0..layers`, each with neurons `0..neurons`.
    pub fn uniform(layers: u32, neurons: u32) -> Result<Shape, ShapeError> {
        if layers == 0 || neurons == 0 {
            return Err(ShapeError(format!(
                "layers={layers}&neurons={neurons}: both counts must be at least 1"
            )));
        }
        Ok(Shape {
            layers: (0..layers).map(|l| (l, Neurons::Count(neurons))).collect(),
        })
    }

    /// The shape of listed layers, each with the neuron indices found in it (any order,
    /// duplicates allowed). A layer whose neurons are exactly `0..n` is stored as a count.
    pub fn from_listing(layers: impl IntoIterator<Item = (u32, Vec<u32>)>) -> Shape {
        let layers = layers
            .into_iter()
            .map(|(layer, mut neurons)| {
                neurons.sort_unstable();
                neurons.dedup();
                let contiguous = neurons.iter().enumerate().all(|(i, &n)| n as usize == i);
                let neurons = match u32::try_from(neurons.len()) {
                    Ok(count) if contiguous => Neurons::Count(count),
                    _ => Neurons::Indices(neurons),
                };
                (layer, neurons)
            })
            .collect();
        Shape { layers }
    }

    /// Layer indices, ascending.
    pub fn layers(&self) -> Vec<u32> {
        self.layers.keys().copied().collect()
    }

    /// Whether the shape declares neuron `neuron` of layer `layer` (without listing the layer).
    pub fn contains(&self, layer: u32, neuron: u32) -> bool {
        match self.layers.get(&layer) {
            Some(Neurons::Count(count)) => neuron < *count,
            Some(Neurons::Indices(indices)) => indices.binary_search(&neuron).is_ok(),
            None => false,
        }
    }

    /// Neuron indices of `layer`, ascending; `None` if the layer is not in the shape.
    pub fn neurons(&self, layer: u32) -> Option<Vec<u32>> {
        self.layers.get(&layer).map(|neurons| match neurons {
            Neurons::Count(count) => (0..*count).collect(),
            Neurons::Indices(indices) => indices.clone(),
        })
    }

    /// The first neuron of the first non-empty layer: a file that must exist if the shape is
    /// right, used to tell the layouts apart without listing.
    pub fn first_neuron(&self) -> Option<(u32, u32)> {
        self.layers
            .iter()
            .find_map(|(&layer, neurons)| match neurons {
                Neurons::Count(0) => None,
                Neurons::Count(_) => Some((layer, 0)),
                Neurons::Indices(indices) => indices.first().map(|&n| (layer, n)),
            })
    }

    /// Number of neuron files the shape declares.
    pub fn neuron_count(&self) -> u64 {
        self.layers
            .values()
            .map(|neurons| match neurons {
                Neurons::Count(count) => u64::from(*count),
                Neurons::Indices(indices) => indices.len() as u64,
            })
            .sum()
    }

    /// Reads a `manifest.json`: the shape, and the layout if the manifest names one.
    pub fn from_manifest(json: &[u8]) -> Result<(Shape, Option<Layout>), ShapeError> {
        let manifest: Manifest = serde_json::from_slice(json)
            .map_err(|e| ShapeError(format!("{MANIFEST_FILE} is not a valid manifest: {e}")))?;
        if manifest.manifest_version != MANIFEST_VERSION {
            return Err(ShapeError(format!(
                "{MANIFEST_FILE} has manifest_version {}; this server reads version {MANIFEST_VERSION}",
                manifest.manifest_version
            )));
        }
        let layout = match manifest.layout.as_deref() {
            None => None,
            Some(name) => match name.parse::<LayoutChoice>() {
                Ok(LayoutChoice::Fixed(layout)) => Some(layout),
                _ => {
                    return Err(ShapeError(format!(
                        "{MANIFEST_FILE} has layout {name:?}; expected \"flat\" or \"neurons\""
                    )));
                }
            },
        };
        let mut layers = BTreeMap::new();
        for entry in manifest.layers {
            let neurons = match (entry.neuron_count, entry.neurons) {
                (Some(count), None) => Neurons::Count(count),
                (None, Some(mut indices)) => {
                    indices.sort_unstable();
                    indices.dedup();
                    Neurons::Indices(indices)
                }
                _ => {
                    return Err(ShapeError(format!(
                        "{MANIFEST_FILE}: layer {} must have exactly one of \"neuron_count\" and \"neurons\"",
                        entry.layer
                    )));
                }
            };
            if layers.insert(entry.layer, neurons).is_some() {
                return Err(ShapeError(format!(
                    "{MANIFEST_FILE}: layer {} is listed twice",
                    entry.layer
                )));
            }
        }
        if layers.is_empty() {
            return Err(ShapeError(format!("{MANIFEST_FILE} lists no layers")));
        }
        Ok((Shape { layers }, layout))
    }

    /// This shape as a `manifest.json`, pretty-printed, ending in a newline.
    pub fn to_manifest(&self, layout: Option<Layout>) -> String {
        let manifest = Manifest {
            manifest_version: MANIFEST_VERSION,
            layout: layout.map(|l| l.name().to_string()),
            layers: self
                .layers
                .iter()
                .map(|(&layer, neurons)| match neurons {
                    Neurons::Count(count) => ManifestLayer {
                        layer,
                        neuron_count: Some(*count),
                        neurons: None,
                    },
                    Neurons::Indices(indices) => ManifestLayer {
                        layer,
                        neuron_count: None,
                        neurons: Some(indices.clone()),
                    },
                })
                .collect(),
        };
        let mut json = serde_json::to_string_pretty(&manifest)
            .expect("a manifest of integers and strings always serializes");
        json.push('\n');
        json
    }
}

/// `2 layers of 50 neurons (100 in all)` when every layer has `0..n`, else `2 layers, 100
/// neurons in all`.
impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let layers = self.layers.len();
        let total = self.neuron_count();
        let mut counts = self.layers.values();
        match counts.next() {
            Some(first @ Neurons::Count(count)) if counts.all(|other| other == first) => {
                write!(f, "{layers} layers of {count} neurons ({total} in all)")
            }
            _ => write!(f, "{layers} layers, {total} neurons in all"),
        }
    }
}

/// A shape declaration that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ShapeError(String);

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    manifest_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    layout: Option<String>,
    layers: Vec<ManifestLayer>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestLayer {
    layer: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    neuron_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    neurons: Option<Vec<u32>>,
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn uniform_shape_lists_every_layer_and_neuron() {
        let shape = Shape::uniform(3, 4).unwrap();
        assert_eq!(shape.layers(), vec![0, 1, 2]);
        assert_eq!(shape.neurons(2), Some(vec![0, 1, 2, 3]));
        assert_eq!(shape.neurons(3), None);
        assert_eq!(shape.neuron_count(), 12);
        assert_eq!(shape.first_neuron(), Some((0, 0)));
        assert!(Shape::uniform(0, 4).is_err());
        assert!(Shape::uniform(4, 0).is_err());
    }

    proptest! {
        #[test]
        fn contains_agrees_with_the_listed_neurons(
            layers in proptest::collection::vec((0u32..5, proptest::collection::vec(0u32..20, 0..10)), 0..5),
            layer in 0u32..6,
            neuron in 0u32..22,
        ) {
            let shape = Shape::from_listing(layers);
            let listed = shape.neurons(layer).is_some_and(|n| n.contains(&neuron));
            prop_assert_eq!(shape.contains(layer, neuron), listed);
        }
    }

    #[test]
    fn listing_with_gaps_keeps_the_exact_indices() {
        let shape = Shape::from_listing([(5, vec![2, 0, 1]), (7, vec![9, 3, 3])]);
        assert_eq!(shape.neurons(5), Some(vec![0, 1, 2]));
        assert_eq!(shape.neurons(7), Some(vec![3, 9]));
        assert_eq!(shape.first_neuron(), Some((5, 0)));
        let json = shape.to_manifest(Some(Layout::Neurons));
        assert!(json.contains("\"neuron_count\": 3"), "{json}");
        assert!(json.contains("\"neurons\": ["), "{json}");
    }

    #[test]
    fn bad_manifests_say_what_is_wrong() {
        let cases = [
            (r#"{"layers": []}"#, "manifest_version"),
            (r#"{"manifest_version": 2, "layers": []}"#, "version 1"),
            (r#"{"manifest_version": 1, "layers": []}"#, "no layers"),
            (
                r#"{"manifest_version": 1, "layers": [{"layer": 0}]}"#,
                "exactly one of",
            ),
            (
                r#"{"manifest_version": 1, "layers": [{"layer": 0, "neuron_count": 1}, {"layer": 0, "neuron_count": 2}]}"#,
                "twice",
            ),
            (
                r#"{"manifest_version": 1, "layout": "deep", "layers": [{"layer": 0, "neuron_count": 1}]}"#,
                "\"flat\" or \"neurons\"",
            ),
            (
                r#"{"manifest_version": 1, "layer": [{"layer": 0, "neuron_count": 1}]}"#,
                "unknown field",
            ),
        ];
        for (json, expected) in cases {
            let err = Shape::from_manifest(json.as_bytes()).unwrap_err();
            assert!(err.to_string().contains(expected), "{json}: {err}");
        }
    }

    fn listing() -> impl Strategy<Value = Vec<(u32, Vec<u32>)>> {
        prop::collection::vec((0u32..100, prop::collection::vec(0u32..50, 0..40)), 1..8)
    }

    proptest! {
        #[test]
        fn a_manifest_reads_back_as_the_listing_it_was_built_from(
            listed in listing(),
            layout in prop::option::of(prop_oneof![Just(Layout::Flat), Just(Layout::Neurons)]),
        ) {
            let shape = Shape::from_listing(listed.clone());
            let (read, read_layout) = Shape::from_manifest(shape.to_manifest(layout).as_bytes()).unwrap();
            prop_assert_eq!(read_layout, layout);
            let mut expected: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
            for (layer, neurons) in listed {
                // Later listings of a layer replace earlier ones, as in from_listing.
                let mut neurons = neurons;
                neurons.sort_unstable();
                neurons.dedup();
                expected.insert(layer, neurons);
            }
            prop_assert_eq!(read.layers(), expected.keys().copied().collect::<Vec<_>>());
            for (layer, neurons) in expected {
                prop_assert_eq!(read.neurons(layer), Some(neurons));
            }
        }
    }
}
