//! Benchmarks of the neuron activation service.
//!
//! # Layout
//!
//! - [`datagen`]: realistic datasets of any size, shaped like the public GPT-2 XL files and
//!   written by the server's own writer (`activations-datagen`).

pub mod datagen;
