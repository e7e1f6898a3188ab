//! The neuron activation server (being assembled).
pub mod neuron_json;
