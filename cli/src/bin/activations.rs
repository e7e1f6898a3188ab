//! `activations`: the command-line client. Everything but process setup lives in
//! [`activations_cli`].

use std::io::{self, BufWriter, Write};
use std::process::ExitCode;

use activations_cli::{self as cli, Cli, RunError};
use clap::Parser;

/// mimalloc: decoding responses allocates a string per token, which glibc's malloc makes
/// about a third dearer (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut out = BufWriter::new(io::stdout().lock());
    let result = cli::run(cli, &mut out).await;
    // What the command printed (an export's summary) comes before the error that ends it.
    let flushed = out.flush().map_err(RunError::Output);
    cli::report(result.and(flushed), &mut io::stderr())
}
