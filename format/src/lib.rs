//! The neuron-explainer file format and split rules, as pure functions: bytes in, values out.
//! No I/O and no async runtime, so the server, the command-line client, the benchmarks and the
//! fuzz targets all read and write neuron files through the same code.
//!
//! # Layout
//!
//! - [`neuron_json`]: decodes (and writes) the public JSON files, `NaN` literals and all.
//! - [`splits`]: [`SplitPlan`](splits::SplitPlan), which records of a neuron make up each split,
//!   and the split's messages built from a record.
//! - [`neuron`]: [`NeuronKey`], `max_activation` and the summary of a record.
//! - [`layout`]: where a dataset keeps each neuron's file (flat or `neurons/`), as relative paths.
//! - [`shape`]: a dataset's declared layers and neurons (`?layers=&neurons=`, `manifest.json`).

pub mod layout;
pub mod neuron;
pub mod neuron_json;
pub mod shape;
pub mod splits;

pub use neuron::NeuronKey;
