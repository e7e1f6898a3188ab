//! Where a dataset keeps its neuron files, and which listed names count as layers and neurons.
//!
//! Two layouts exist in the Python module: `load_neuron` reads `{root}/{layer}/{neuron}.json`
//! ([`Layout::Flat`]) while `neuron_exists`, `get_sorted_layers` and `get_sorted_neuron_indices`
//! use `{root}/neurons/{layer}/{neuron}.json` ([`Layout::Neurons`]). Pure path arithmetic on
//! `/`-separated relative paths, as blob stores name objects; no I/O.

use std::{fmt, str::FromStr};

use activations_proto::wire;

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
    /// The directory below the root whose subdirectories are the layers, as a relative path
    /// (empty for [`Layout::Flat`]: the root itself).
    pub fn layers_dir(self) -> &'static str {
        match self {
            Layout::Flat => "",
            Layout::Neurons => NEURONS_DIR,
        }
    }

    /// The directory of one layer's neuron files, relative to the root.
    pub fn layer_dir(self, layer: u32) -> String {
        match self {
            Layout::Flat => layer.to_string(),
            Layout::Neurons => format!("{NEURONS_DIR}/{layer}"),
        }
    }

    /// The file of one neuron, relative to the root: `12/345.json` or `neurons/12/345.json`.
    pub fn neuron_file(self, key: NeuronKey) -> String {
        format!("{}/{}.json", self.layer_dir(key.layer), key.neuron)
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
        let key = NeuronKey::new(12, 345);
        assert_eq!(Layout::Flat.neuron_file(key), "12/345.json");
        assert_eq!(Layout::Neurons.neuron_file(key), "neurons/12/345.json");
        assert_eq!(Layout::Flat.layers_dir(), "");
        assert_eq!(Layout::Neurons.layer_dir(7), "neurons/7");
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
