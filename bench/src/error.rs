//! Why a benchmark run stopped.

use std::path::PathBuf;

use crate::load::RequestFailed;

/// A benchmark run that could not finish; figures from a partial run would mislead.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cannot run the server binary {binary}: {source}")]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the server did not start: {0}")]
    ServerStart(String),
    #[error("cannot reach the server: {0}")]
    Connect(#[source] activations_client::Error),
    #[error("a call failed: {0}")]
    Call(#[from] activations_client::Error),
    #[error(transparent)]
    Request(#[from] RequestFailed),
    #[error("reading neuron files for the ceiling: {0}")]
    Ceiling(String),
    #[error("the echo server failed: {0}")]
    Echo(#[from] tonic::transport::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
