//! The end-to-end tests, one module per area, in one test binary: real servers on
//! `127.0.0.1:0` driven through the SDK, the CLI, stock grpcurl and the Python reference loader,
//! over every kind of storage. `cargo test -p activations-e2e -- MODULE::` runs one area.

mod azurite;
mod bad_input;
mod bulk;
mod deploy;
mod errors;
mod export;
mod faults;
mod grpcurl;
mod hostile;
mod http_servers;
mod limits;
mod metrics;
mod newcomer;
mod oracle;
mod outage;
mod python_client;
mod python_package;
mod rotation;
mod scale;
mod sdk;
mod secrets;
mod security;
mod service;
mod shutdown;
mod storage;
