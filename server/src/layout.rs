//! Where a dataset keeps its neuron files, and which listed names count as layers and neurons.
//!
//! Two layouts exist in the Python module: `load_neuron` reads `{root}/{layer}/{neuron}.json`
//! ([`Layout::Flat`]) while `neuron_exists`, `get_sorted_layers` and `get_sorted_neuron_indices`
//! use `{root}/neurons/{layer}/{neuron}.json` ([`Layout::Neurons`]). Pure path arithmetic, no I/O.

use std::{fmt, str::FromStr};

use activations_proto::wire;
use object_store::path::Path;

use crate::neuron::NeuronKey;

/// The directory below the root that holds the layers in the [`Layout::Neurons`] layout.
pub const NEURONS_DIR: &str = "neurons";

/// How neuron files are arranged below a dataset's root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `{root}/{layer}/{neuron}.json`
    Flat,
    /// `{root}/neurons/{layer}/{neuron}.json`
    Neurons,
}

impl Layout {
    /// The directory whose subdirectories are the layers.
    pub fn layers_dir(self, root: &Path) -> Path {
        match self {
            Layout::Flat => root.clone(),
            Layout::Neurons => root.clone().join(NEURONS_DIR),
        }
    }

    /// The directory holding one layer's neuron files.
    pub fn layer_dir(self, root: &Path, layer: u32) -> Path {
        self.layers_dir(root).join(layer.to_string())
    }

    /// The file of one neuron.
    pub fn neuron_path(self, root: &Path, key: NeuronKey) -> Path {
        self.layer_dir(root, key.layer)
            .join(format!("{}.json", key.neuron))
    }

    /// Guesses the layout from the names directly below the root: numeric directories mean
    /// flat, a `neurons` directory (and no numeric ones) means neurons. `None` when neither.
    pub fn detect<'a>(root_dirs: impl IntoIterator<Item = &'a str>) -> Option<Layout> {
        let mut has_neurons_dir = false;
        for name in root_dirs {
            if layer_index(name).is_some() {
                return Some(Layout::Flat);
            }
            has_neurons_dir |= name == NEURONS_DIR;
        }
        has_neurons_dir.then_some(Layout::Neurons)
    }

    pub fn name(self) -> &'static str {
        match self {
            Layout::Flat => "flat",
            Layout::Neurons => "neurons",
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl From<Layout> for wire::Layout {
    fn from(layout: Layout) -> Self {
        match layout {
            Layout::Flat => wire::Layout::Flat,
            Layout::Neurons => wire::Layout::Neurons,
        }
    }
}

/// The `--layout` setting: a fixed layout, or detection from a listing of the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LayoutChoice {
    #[default]
    Auto,
    Fixed(Layout),
}

impl FromStr for LayoutChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(LayoutChoice::Auto),
            "flat" => Ok(LayoutChoice::Fixed(Layout::Flat)),
            "neurons" => Ok(LayoutChoice::Fixed(Layout::Neurons)),
            other => Err(format!(
                "unknown layout {other:?}: expected auto, flat or neurons"
            )),
        }
    }
}

/// A directory name that names a layer: purely ASCII digits (Python: `name.isnumeric()`).
pub fn layer_index(dir_name: &str) -> Option<u32> {
    digits(dir_name.strip_suffix('/').unwrap_or(dir_name))
}

/// A file name that names a neuron: `{digits}.json`.
///
/// Python's `get_sorted_neuron_indices` keeps any name whose part before the first dot is
/// numeric (so `5.txt` would list neuron 5); only `.json` files can be loaded, so only they
/// count here.
pub fn neuron_index(file_name: &str) -> Option<u32> {
    digits(file_name.strip_suffix(".json")?)
}

fn digits(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn flat_and_neurons_layouts_place_files_like_the_python_module() {
        let root = Path::from("data/collated-activations");
        let key = NeuronKey::new(12, 345);
        assert_eq!(
            Layout::Flat.neuron_path(&root, key).as_ref(),
            "data/collated-activations/12/345.json"
        );
        assert_eq!(
            Layout::Neurons.neuron_path(&root, key).as_ref(),
            "data/collated-activations/neurons/12/345.json"
        );
    }

    #[test]
    fn empty_root_places_files_at_the_top() {
        let root = Path::default();
        assert_eq!(
            Layout::Flat
                .neuron_path(&root, NeuronKey::new(0, 1))
                .as_ref(),
            "0/1.json"
        );
    }

    #[test]
    fn only_numeric_names_count() {
        assert_eq!(layer_index("7"), Some(7));
        assert_eq!(layer_index("07"), Some(7));
        assert_eq!(layer_index("tmp"), None);
        assert_eq!(layer_index(""), None);
        assert_eq!(layer_index("-1"), None);
        assert_eq!(neuron_index("0.json"), Some(0));
        assert_eq!(neuron_index("notes.txt"), None);
        assert_eq!(neuron_index("5.txt"), None);
        assert_eq!(neuron_index(".json"), None);
        assert_eq!(neuron_index("1.5.json"), None);
        assert_eq!(neuron_index("99999999999.json"), None, "does not fit u32");
    }

    #[test]
    fn layout_is_detected_from_root_directories() {
        assert_eq!(Layout::detect(["0", "1", "neurons"]), Some(Layout::Flat));
        assert_eq!(
            Layout::detect(["neurons", "explanations"]),
            Some(Layout::Neurons)
        );
        assert_eq!(Layout::detect(["explanations"]), None);
        assert_eq!(Layout::detect([]), None);
    }

    #[test]
    fn layout_choice_parses_the_flag_values() {
        assert_eq!("auto".parse(), Ok(LayoutChoice::Auto));
        assert_eq!("neurons".parse(), Ok(LayoutChoice::Fixed(Layout::Neurons)));
        let err = "nested".parse::<LayoutChoice>().unwrap_err();
        assert!(err.contains("auto, flat or neurons"), "{err}");
    }

    proptest! {
        #[test]
        fn neuron_file_names_round_trip(index in any::<u32>()) {
            prop_assert_eq!(neuron_index(&format!("{index}.json")), Some(index));
            prop_assert_eq!(layer_index(&index.to_string()), Some(index));
        }

        #[test]
        fn names_with_any_non_digit_are_skipped(name in "[0-9]{0,3}[^0-9/][0-9a-z.]{0,3}") {
            prop_assert_eq!(layer_index(&name), None);
            prop_assume!(name.strip_suffix(".json").is_none_or(|stem| !stem.bytes().all(|b| b.is_ascii_digit()) || stem.is_empty()));
            prop_assert_eq!(neuron_index(&name), None);
        }
    }
}
