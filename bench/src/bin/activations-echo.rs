//! `activations-echo`: the warm ceiling as a process of its own; see `--help`.

use activations_server::Ready;
use std::{io::Read, net::SocketAddr, process::ExitCode};

use activations_bench::echo::{self, EchoService};
use clap::Parser;
use tokio::net::TcpListener;

/// The same allocator as the server's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Answers every `StreamActivationRecords` call with the same messages, read once from stdin
/// (length-delimited `SplitActivationRecord`s, as `activations-load` writes them), replayed as
/// bytes. Prints the server's ready line on stdout once it accepts calls; serves until
/// killed.
#[derive(Debug, Parser)]
#[command(name = "activations-echo", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut input = Vec::new();
    if let Err(error) = std::io::stdin().read_to_end(&mut input) {
        eprintln!("error: reading the messages from stdin: {error}");
        return ExitCode::FAILURE;
    }
    let service = match EchoService::from_delimited(&input) {
        Ok(service) => service,
        Err(error) => {
            eprintln!("error: the messages on stdin: {error}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let served = runtime.block_on(async {
        let listener = TcpListener::bind(args.listen).await?;
        let ready = Ready {
            address: listener.local_addr()?,
            metrics_address: None,
        };
        println!("{}", ready.line());
        echo::serve(listener, service, std::future::pending())
            .await
            .map_err(std::io::Error::other)
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
