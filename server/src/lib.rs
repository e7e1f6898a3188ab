//! The neuron activation server (being assembled).
pub mod neuron_json;
pub mod neuron;
pub mod splits;
pub mod layout;
pub mod page_token;
pub mod store;
pub mod error;
pub mod dataset;
