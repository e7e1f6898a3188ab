//! Benchmarks of the neuron activation service: realistic data, a load generator, and the
//! ceilings its figures are compared with. See `BENCHMARKS.md` for how to run them.
//!
//! # Layout
//!
//! - [`datagen`]: realistic datasets of any size, shaped like the public GPT-2 XL files and
//!   written by the server's own writer (`activations-datagen`).
//! - [`launcher`]: the server under test, a release binary started per scenario, a task of this
//!   process, or a server already running; [`process_memory`] reads its resident memory.
//! - [`load`]: the closed-loop driver: N concurrent callers, a latency histogram.
//! - [`echo`]: the warm ceiling, a gRPC server replaying pre-encoded responses (run as the
//!   `activations-echo` process).
//! - [`scenarios`]: cold, warm, bulk and memory, and the ceilings, against any server address;
//!   [`remote`]: bulk and cold reads from the web store at a set latency and bandwidth, against
//!   their limit and the Python loader; [`replicas`]: several servers behind the SDK's routing,
//!   the cache hits of a second pass with affinity and round robin, and the cost of a failover.
//! - [`report`]: the markdown table, the target ratios and the JSON; [`chart`]: the SVG.
//! - [`soak`]: the soak: the release server behind an `activations-webstore` store that fails a share
//!   of its requests, hundreds of checked callers, the server's process watched for leaks.
//! - [`error`]: why a run stopped.
//!
//! `src/bin/` holds the thin binaries, `activations-datagen`, `activations-load`,
//! `activations-echo` and `activations-soak`; `examples/warm_instructions.rs` runs warm calls
//! with client and server on one thread, to count what a call costs under callgrind.

pub mod chart;
pub mod datagen;
pub mod echo;
pub mod error;
pub mod launcher;
pub mod load;
pub mod process_memory;
pub mod remote;
pub mod replicas;
pub mod report;
pub mod scenarios;
pub mod soak;
