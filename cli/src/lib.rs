//! The `activations` command line: arguments ([`Cli`]), what each command does ([`run`]) and
//! how failures end the process ([`report`]).
//!
//! Output goes through `&mut impl Write`, so tests capture it in a `Vec<u8>`. Every command
//! but `export` fetches all it needs before writing, so a failed call never leaves partial
//! output; `export` writes files as it goes, each one whole, and resumes when run again.
mod export;
mod json;
mod manifest;
#[cfg(test)]
mod test_output;
mod text;

use std::io::{self, Write};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use futures::TryStreamExt;

use activations_client::Error;
use activations_client::pb::Split;
use activations_client::{ActivationsClient, neuron_id};
use activations_client::{Tls, security::BearerToken};

/// The server [`Cli::server`] names when neither `--server` nor `ACTIVATIONS_SERVER` is given.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:50051";

/// Reads neuron activation records from an activations server.
#[derive(Debug, Parser)]
#[command(name = "activations", version)]
pub struct Cli {
    /// Server address; `http://` is assumed when no scheme is given. Several replicas: repeat
    /// it or separate with commas (`--server http://a:50051,http://b:50051`), or give one
    /// `dns:///host:port` name whose every address is a server; each neuron is then read from
    /// the replica that owns it (rendezvous hashing), and from the next one if it fails.
    #[arg(
        long,
        global = true,
        env = "ACTIVATIONS_SERVER",
        default_value = DEFAULT_SERVER,
        value_name = "URL",
        value_delimiter = ','
    )]
    pub server: Vec<String>,

    /// Dataset to read [default: the server's default dataset].
    #[arg(long, global = true, env = "ACTIVATIONS_DATASET", value_name = "NAME")]
    pub dataset: Option<String>,

    /// Connect over TLS, trusting the CA certificates of this PEM file (the system's roots are
    /// trusted for an https:// --server without it). A --server without a scheme is then
    /// taken as https://.
    #[arg(long, global = true, env = "ACTIVATIONS_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<std::path::PathBuf>,

    /// Client certificate (PEM) for a server that requires one (mutual TLS); needs --tls-key.
    #[arg(
        long,
        global = true,
        env = "ACTIVATIONS_CLIENT_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<std::path::PathBuf>,

    /// The private key (PEM) of --tls-cert.
    #[arg(
        long,
        global = true,
        env = "ACTIVATIONS_CLIENT_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<std::path::PathBuf>,

    /// Verify the server's certificate for this name instead of the --server host.
    #[arg(
        long,
        global = true,
        env = "ACTIVATIONS_TLS_DOMAIN",
        value_name = "NAME"
    )]
    pub tls_domain: Option<String>,

    /// Bearer token sent on every call, for a server started with tokens. Prefer
    /// ACTIVATIONS_TOKEN or --token-file: a command line is visible to the machine's other
    /// users.
    #[arg(
        long,
        global = true,
        env = "ACTIVATIONS_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        conflicts_with = "token_file"
    )]
    pub token: Option<BearerToken>,

    /// Read the bearer token from this file (surrounding whitespace ignored).
    #[arg(
        long,
        global = true,
        env = "ACTIVATIONS_TOKEN_FILE",
        value_name = "FILE"
    )]
    pub token_file: Option<std::path::PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// A layer or neuron index: a non-negative integer. A negative one is refused as such, rather
/// than taken for an option.
fn index(text: &str) -> Result<u32, String> {
    if text.starts_with('-') && text[1..].bytes().all(|b| b.is_ascii_digit()) && text.len() > 1 {
        return Err(format!(
            "{text} is negative: indices count from 0 (layer 0 is the first, neuron 0 the first \
             of its layer)"
        ));
    }
    text.parse::<u32>().map_err(|_| {
        format!("{text:?} is not an index: expected a non-negative integer such as 0 or 12")
    })
}

/// The server options as `manifest` sees them: hidden from its help, since it calls no
/// server, and refused with the reason when given after it. They shadow the global options of
/// the same names, which clap does not propagate to a command that has its own.
#[derive(Debug, Clone, clap::Args)]
pub struct NoServer {
    #[arg(long, hide = true, value_parser = no_server)]
    server: Option<String>,
    #[arg(long, hide = true, value_parser = no_server)]
    dataset: Option<String>,
    #[arg(long, hide = true, value_parser = no_server)]
    tls_ca: Option<String>,
    #[arg(long, hide = true, value_parser = no_server)]
    tls_cert: Option<String>,
    #[arg(long, hide = true, value_parser = no_server)]
    tls_key: Option<String>,
    #[arg(long, hide = true, value_parser = no_server)]
    tls_domain: Option<String>,
    #[arg(long, hide = true, value_parser = no_server)]
    token: Option<String>,
    #[arg(long, hide = true, value_parser = no_server)]
    token_file: Option<String>,
}

fn no_server(_: &str) -> Result<String, String> {
    Err(
        "manifest lists the store itself and calls no server: give it the dataset's URI, \
         with the storage settings in its query"
            .to_string(),
    )
}

/// The subcommands of `activations`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the datasets the server serves: name, URI, layout, and `(default)` on the default.
    Datasets,
    /// List the dataset's layer indices, one per line.
    Layers,
    /// List every neuron index of a layer, one per line.
    Neurons {
        /// Layer index.
        #[arg(allow_hyphen_values = true, value_parser = index)]
        layer: u32,
        /// Indices per request; 0 uses the server's default.
        #[arg(long, default_value_t = 0, value_name = "N")]
        page_size: u32,
    },
    /// Print `true` if the neuron exists, else `false` (exit code 0 either way).
    Exists {
        /// Layer index.
        #[arg(allow_hyphen_values = true, value_parser = index)]
        layer: u32,
        /// Neuron index within the layer.
        #[arg(allow_hyphen_values = true, value_parser = index)]
        neuron: u32,
    },
    /// Print a neuron's whole record, or with --split the records of one split.
    Get {
        /// Layer index.
        #[arg(allow_hyphen_values = true, value_parser = index)]
        layer: u32,
        /// Neuron index within the layer.
        #[arg(allow_hyphen_values = true, value_parser = index)]
        neuron: u32,
        /// Print only this split's records, in the Python order.
        #[arg(long, value_enum)]
        split: Option<SplitName>,
        /// Records per split taken from each source (n_examples_per_split) [default: as many as
        /// the sources allow].
        #[arg(short = 'n', requires = "split", value_name = "K")]
        n: Option<u32>,
        /// Print JSON: one object per record (JSONL) with --split, else one object laid out like
        /// the Python neuron file. Non-finite numbers are written as the strings "NaN",
        /// "Infinity" and "-Infinity".
        #[arg(long)]
        json: bool,
    },
    /// Print a neuron's moments, quantile boundaries, max activation and counts.
    Summary {
        /// Layer index.
        #[arg(allow_hyphen_values = true, value_parser = index)]
        layer: u32,
        /// Neuron index within the layer.
        #[arg(allow_hyphen_values = true, value_parser = index)]
        neuron: u32,
    },
    /// Build a dataset's manifest.json by listing its store, without a server: its layers,
    /// their neurons and its layout. Copy it to the root of a store that cannot be listed
    /// (an anonymous blob container, a web server) so a server can list that dataset.
    Manifest {
        /// The dataset's location, as `activations-server --dataset NAME=URI` takes it
        /// (a directory, az://, s3://, gs://, ...), with the same storage settings.
        uri: String,
        /// Write the manifest to this file instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<std::path::PathBuf>,
        /// The layout to record: auto detects it from the listing.
        #[arg(long, default_value = "auto", value_name = "auto|flat|neurons")]
        layout: activations_format::layout::LayoutChoice,
        /// The server options, hidden here: `manifest` calls no server.
        #[command(flatten)]
        no_server: NoServer,
    },
    /// Print the splits of many neurons, one JSON object per line and neuron (its id, each
    /// split's records in the Python order, and the cursor to continue after it), read in one
    /// stream (StreamNeuronSplits) that resumes by itself after a transient failure. A neuron
    /// the server cannot serve is a line with its error, and the command ends with exit code 1.
    Splits {
        /// Layers: START..END (END excluded, like 0..48) or one index (5).
        #[arg(long, value_name = "A..B", value_parser = export::parse_range)]
        layers: std::ops::Range<u32>,
        /// Neurons of each layer (START..END or one index) [default: every neuron of the layer].
        #[arg(long, value_name = "C..D", value_parser = export::parse_range)]
        neurons: Option<std::ops::Range<u32>>,
        /// The splits to read, in this order (repeat it, or separate with commas).
        #[arg(long = "split", value_enum, value_delimiter = ',', required = true)]
        splits: Vec<SplitName>,
        /// Records per split taken from each source (n_examples_per_split) [default: as many as
        /// the sources allow].
        #[arg(short = 'n', value_name = "K")]
        n: Option<u32>,
        /// Continue after the neuron whose `cursor` this is (from the last line of an earlier
        /// run with the same options).
        #[arg(long, value_name = "CURSOR", default_value = "")]
        from: String,
    },
    /// Copy neurons from the server into files laid out and formatted like the public data
    /// (DIR/{layer}/{neuron}.json, byte for byte), or into one JSONL file. Run it again to
    /// resume an interrupted export: finished files are skipped without being fetched.
    ///
    /// A neuron the server cannot serve (missing, corrupt) is reported on stderr and the
    /// export goes on, ending with exit code 1; any other error stops it.
    Export {
        /// Layers to export: START..END (END excluded, like 0..48) or one index (5); only the
        /// layers the server lists, unless --neurons is given.
        #[arg(long, value_name = "A..B", value_parser = export::parse_range)]
        layers: std::ops::Range<u32>,
        /// Export exactly these neurons of every layer of --layers (START..END or one index),
        /// without listing; a missing one is reported as failed [default: every neuron the
        /// server lists].
        #[arg(long, value_name = "C..D", value_parser = export::parse_range)]
        neurons: Option<std::ops::Range<u32>>,
        /// Directory to write into (created if needed).
        #[arg(long, value_name = "DIR", value_parser = export::parse_out_dir)]
        out: std::path::PathBuf,
        /// Write DIR/neurons.jsonl, one neuron per line, instead of one file per neuron.
        #[arg(long)]
        jsonl: bool,
        /// Requests in flight at once.
        #[arg(
            long,
            default_value_t = 8,
            value_name = "N",
            value_parser = clap::value_parser!(u32).range(1..)
        )]
        concurrency: u32,
        /// Export only part I of N (I from 0 to N-1) of the selection, for N workers that each
        /// take one (a Kubernetes Indexed Job: --shard $JOB_COMPLETION_INDEX/N): contiguous
        /// blocks of the selection's neurons, disjoint, together the whole selection, the same
        /// block on every run.
        #[arg(long, value_name = "I/N", value_parser = export::parse_shard)]
        shard: Option<(u32, u32)>,
    },
}

/// A split, as the command line names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SplitName {
    /// Top-activating records only.
    Train,
    /// Top-activating then random records.
    Calibration,
    /// Top-activating then random records.
    Valid,
    /// Top-activating then random records.
    Test,
}

impl From<SplitName> for Split {
    fn from(split: SplitName) -> Self {
        match split {
            SplitName::Train => Split::Train,
            SplitName::Calibration => Split::Calibration,
            SplitName::Valid => Split::Valid,
            SplitName::Test => Split::Test,
        }
    }
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// Connecting or a call failed.
    #[error(transparent)]
    Client(#[from] Error),
    /// A call failed in the connection to the server (not an answer of the server's): named
    /// with the server's address, which the error itself does not know.
    #[error("calling {server}: {source}")]
    Transport {
        /// The `--server` called.
        server: String,
        /// The failure.
        source: Error,
    },
    /// Writing the output failed.
    #[error("cannot write output: {0}")]
    Output(#[from] io::Error),
    /// A file named by a TLS or token option could not be read.
    #[error("cannot read {}: {source}", .path.display())]
    ReadFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Listing a store for `activations manifest` failed.
    #[error(transparent)]
    Manifest(#[from] activations_server::dataset::ConfigError),
    /// `activations export` met an error that is not one neuron's own (the server or the
    /// connection failed) and stopped; what it wrote stays, and a rerun resumes.
    #[error(
        "export stopped at neuron {layer}/{neuron}: {source}; run the same command again to \
         resume"
    )]
    ExportStopped {
        /// Layer of the neuron being fetched.
        layer: u32,
        /// Index of the neuron being fetched.
        neuron: u32,
        /// The error.
        source: Error,
    },
    /// `activations export` wrote every neuron it could, but the server could not serve some
    /// (each one was reported on stderr).
    /// `activations export` selected no neuron: nothing to export is a mistake, not a success.
    #[error(
        "the selection matches no neuron: --layers {layers}, and the dataset's layers are \
         {served}; choose --layers among them (`activations layers` lists them)"
    )]
    NothingSelected {
        /// The `--layers` asked for.
        layers: String,
        /// The layers the dataset has, summarized.
        served: String,
    },
    /// `activations splits` read every neuron it could, but the server could not serve some.
    #[error("{failed} of {read} neurons could not be read (each has its error on its line)")]
    SplitsIncomplete {
        /// Neurons that failed.
        failed: u64,
        /// Neurons read, failed ones included.
        read: u64,
    },
    #[error("{failed} of {selected} neurons could not be exported (each is reported above)")]
    ExportIncomplete {
        /// Neurons that failed.
        failed: u64,
        /// Neurons selected.
        selected: u64,
    },
    /// `activations export --jsonl` found a partial file it cannot continue.
    #[error("cannot resume from {}: {reason}", .path.display())]
    ExportResume {
        /// The partial JSONL file.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
}

/// Where a command writes what is neither its output nor its final error: the progress of
/// `export` and the neurons it could not export.
enum Diagnostics<'a> {
    /// The process's stderr: a progress bar when it is a terminal, plain lines otherwise.
    Stderr,
    /// Plain lines to this writer.
    Writer(&'a mut dyn Write),
}

/// Connects to `cli.server` and runs `cli.command`, writing its output to `out`.
///
/// # Examples
///
/// ```no_run
/// use activations_cli::{self as cli, Cli};
/// use clap::Parser;
///
/// # async fn example() -> Result<(), cli::RunError> {
/// let cli = Cli::parse_from(["activations", "--server", "127.0.0.1:50051", "layers"]);
/// let mut out = Vec::new();
/// cli::run(cli, &mut out).await?;
/// println!("{}", String::from_utf8_lossy(&out));
/// # Ok(())
/// # }
/// ```
pub async fn run(cli: Cli, out: &mut impl Write) -> Result<(), RunError> {
    run_with(cli, out, Diagnostics::Stderr).await
}

/// Like [`run`], but what a command reports besides its output and its final error (the
/// progress of `export` and the neurons it could not export) goes to `stderr` as plain lines,
/// rather than to the process's standard error.
///
/// # Examples
///
/// ```no_run
/// use activations_cli::{self as cli, Cli};
/// use clap::Parser;
///
/// # async fn example() -> Result<(), cli::RunError> {
/// let cli = Cli::parse_from(["activations", "export", "--layers", "0..2", "--out", "copy"]);
/// let (mut out, mut progress) = (Vec::new(), Vec::new());
/// cli::run_with_stderr(cli, &mut out, &mut progress).await?;
/// # Ok(())
/// # }
/// ```
pub async fn run_with_stderr(
    cli: Cli,
    out: &mut impl Write,
    stderr: &mut impl Write,
) -> Result<(), RunError> {
    run_with(cli, out, Diagnostics::Writer(stderr)).await
}

async fn run_with(
    cli: Cli,
    out: &mut impl Write,
    diagnostics: Diagnostics<'_>,
) -> Result<(), RunError> {
    if let Command::Manifest {
        uri,
        out: file,
        layout,
        ..
    } = cli.command
    {
        return manifest::run(&uri, file.as_deref(), layout, out).await;
    }
    let client = client_builder(&cli)?.connect().await?;
    let server = cli.server.join(",");
    execute_with(&client, cli.command, out, diagnostics)
        .await
        .map_err(|error| match error {
            // A status tonic made from a failure of the connection carries it as its source;
            // one the server sent has none.
            RunError::Client(Error::Status(status))
                if std::error::Error::source(&*status).is_some() =>
            {
                RunError::Transport {
                    server,
                    source: Error::Status(status),
                }
            }
            other => other,
        })
}

/// The client settings the options name: server, dataset, TLS files and token.
fn client_builder(cli: &Cli) -> Result<activations_client::ClientBuilder, RunError> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|source| RunError::ReadFile {
            path: path.to_path_buf(),
            source,
        })
    };
    let mut builder = ActivationsClient::builder()
        .endpoints(cli.server.iter().map(|server| server.trim().to_string()))
        .dataset(cli.dataset.clone().unwrap_or_default());
    if cli.tls_ca.is_some() || cli.tls_cert.is_some() || cli.tls_domain.is_some() {
        let mut tls = Tls::new();
        if let Some(ca) = &cli.tls_ca {
            tls = tls.ca_certificate_pem(read(ca)?);
        }
        if let (Some(cert), Some(key)) = (&cli.tls_cert, &cli.tls_key) {
            tls = tls.identity_pem(read(cert)?, read(key)?);
        }
        if let Some(name) = &cli.tls_domain {
            tls = tls.domain_name(name.clone());
        }
        builder = builder.tls(tls);
    }
    if let Some(token) = &cli.token {
        builder = builder.bearer_token(token.expose());
    } else if let Some(file) = &cli.token_file {
        let token = String::from_utf8_lossy(&read(file)?).trim().to_string();
        builder = builder.bearer_token(token);
    }
    Ok(builder)
}

/// Runs `command` with an existing client, writing its output to `out`.
///
/// # Examples
///
/// ```no_run
/// use activations_client::ActivationsClient;
/// use activations_cli::{self as cli, Command};
///
/// # async fn example() -> Result<(), cli::RunError> {
/// let client = ActivationsClient::connect("127.0.0.1:50051").await?;
/// let mut out = Vec::new();
/// cli::execute(&client, Command::Exists { layer: 1, neuron: 1 }, &mut out).await?;
/// assert!(out == b"true\n" || out == b"false\n");
/// # Ok(())
/// # }
/// ```
pub async fn execute(
    client: &ActivationsClient,
    command: Command,
    out: &mut impl Write,
) -> Result<(), RunError> {
    execute_with(client, command, out, Diagnostics::Stderr).await
}

async fn execute_with(
    client: &ActivationsClient,
    command: Command,
    out: &mut impl Write,
    diagnostics: Diagnostics<'_>,
) -> Result<(), RunError> {
    match command {
        Command::Datasets => text::write_datasets(out, &client.datasets().await?)?,
        Command::Layers => text::write_indices(out, &client.sorted_layers().await?)?,
        Command::Neurons { layer, page_size } => {
            let neurons: Vec<u32> = client
                .neuron_indices_paged(layer, page_size)
                .try_collect()
                .await?;
            text::write_indices(out, &neurons)?;
        }
        Command::Exists { layer, neuron } => {
            let exists = client.neuron_exists(neuron_id(layer, neuron)).await?;
            writeln!(out, "{exists}")?;
        }
        Command::Get {
            layer,
            neuron,
            split: Some(split),
            n,
            json,
        } => {
            let records: Vec<_> = client
                .stream_activation_records(neuron_id(layer, neuron), split.into(), n)
                .await?
                .try_collect()
                .await?;
            if json {
                json::write_split_records(out, &records)?;
            } else {
                text::write_split_records(out, &records)?;
            }
        }
        Command::Get {
            layer,
            neuron,
            split: None,
            n: _,
            json,
        } => {
            let record = client.load_neuron(layer, neuron).await?;
            if json {
                json::write_neuron_record(out, &record)?;
            } else {
                text::write_neuron_record(out, &record)?;
            }
        }
        Command::Summary { layer, neuron } => {
            let summary = client.neuron_summary(neuron_id(layer, neuron)).await?;
            text::write_summary(out, &summary)?;
        }
        Command::Manifest {
            uri,
            out: file,
            layout,
            ..
        } => {
            manifest::run(&uri, file.as_deref(), layout, out).await?;
        }
        Command::Splits {
            layers,
            neurons,
            splits,
            n,
            from,
        } => {
            let selection = activations_client::Selection::Range { layers, neurons };
            let splits: Vec<Split> = splits.into_iter().map(Split::from).collect();
            // A long stream: no per-call timeout (the client's would cut it).
            let stream = client
                .clone()
                .with_timeout(None)
                .neuron_splits_from(selection, &splits, n, from);
            let (read, failed) = json::write_neuron_splits(out, stream).await?;
            if failed > 0 {
                return Err(RunError::SplitsIncomplete { failed, read });
            }
        }
        Command::Export {
            layers,
            neurons,
            out: dir,
            jsonl,
            concurrency,
            shard,
        } => {
            let options = export::Options {
                layers,
                neurons,
                dir,
                jsonl,
                concurrency: usize::try_from(concurrency).unwrap_or(usize::MAX),
                shard,
            };
            export::run(client, options, out, diagnostics).await?;
        }
    }
    Ok(())
}

/// Turns the outcome of [`run`] into the process exit code, printing `error: ...` to `stderr`
/// on failure: 0 on success, 1 on failure. A closed stdout (`activations neurons 0 | head`)
/// ends quietly with 0. (Usage errors exit with 2 before `run`, through clap.)
///
/// # Examples
///
/// ```no_run
/// use activations_cli::{self as cli, Cli};
/// use clap::Parser;
/// use std::process::ExitCode;
///
/// # async fn example() -> ExitCode {
/// let mut out = std::io::stdout().lock();
/// let result = cli::run(Cli::parse(), &mut out).await;
/// cli::report(result, &mut std::io::stderr())
/// # }
/// ```
pub fn report(result: Result<(), RunError>, stderr: &mut impl Write) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(RunError::Output(error)) if error.kind() == io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(error) => {
            // Nothing sensible is left to do if stderr is gone too.
            let _ = writeln!(stderr, "error: {error}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::error::ErrorKind;

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("activations").chain(args.iter().copied()))
    }

    #[test]
    fn get_with_split_n_and_json() {
        let cli = parse(&["get", "1", "2", "--split", "valid", "-n", "5", "--json"]).unwrap();
        match cli.command {
            Command::Get {
                layer: 1,
                neuron: 2,
                split: Some(SplitName::Valid),
                n: Some(5),
                json: true,
            } => {}
            other => panic!("unexpected command {other:?}"),
        }
    }

    #[test]
    fn get_without_split_reads_the_whole_record() {
        let cli = parse(&["get", "3", "4"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Get {
                layer: 3,
                neuron: 4,
                split: None,
                n: None,
                json: false
            }
        ));
    }

    #[test]
    fn n_without_split_is_a_usage_error() {
        let error = parse(&["get", "1", "2", "-n", "5"]).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::MissingRequiredArgument);
        assert_eq!(error.exit_code(), 2);
    }

    #[test]
    fn unknown_split_is_a_usage_error() {
        let error = parse(&["get", "1", "2", "--split", "holdout"]).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidValue);
    }

    #[test]
    fn negative_layer_is_a_usage_error() {
        let error = parse(&["exists", "-1", "2"]).unwrap_err();
        assert_eq!(error.exit_code(), 2);
    }

    #[test]
    fn global_options_are_accepted_after_the_subcommand() {
        let cli = parse(&[
            "neurons",
            "7",
            "--page-size",
            "100",
            "--server",
            "h:1",
            "--dataset",
            "x",
        ])
        .unwrap();
        assert_eq!(cli.server, ["h:1"]);
        assert_eq!(cli.dataset.as_deref(), Some("x"));
        assert!(matches!(
            cli.command,
            Command::Neurons {
                layer: 7,
                page_size: 100
            }
        ));
    }

    #[test]
    fn several_servers_are_repeated_or_comma_separated() {
        let cli = parse(&[
            "--server",
            "http://a:1,http://b:2",
            "--server",
            "http://c:3",
            "layers",
        ])
        .unwrap();
        assert_eq!(cli.server, ["http://a:1", "http://b:2", "http://c:3"]);
        let cli = parse(&["layers", "--server", "dns:///d:4"]).unwrap();
        assert_eq!(cli.server, ["dns:///d:4"]);
    }

    #[test]
    fn shard_is_a_part_below_its_count() {
        let export = |shard: &str| {
            parse(&["export", "--layers", "0..2", "--out", "d", "--shard", shard])
                .map(|cli| match cli.command {
                    Command::Export { shard, .. } => shard,
                    other => panic!("{other:?}"),
                })
                .map_err(|error| error.to_string())
        };
        assert_eq!(export("0/4"), Ok(Some((0, 4))));
        assert_eq!(export("3/4"), Ok(Some((3, 4))));
        for (bad, says) in [
            ("4/4", "below the count (0/4 to 3/4)"),
            ("1/0", "below the count"),
            ("x", "expected I/N, such as 0/4"),
            ("1.5/4", "expected I/N"),
        ] {
            let error = export(bad).unwrap_err();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }

    #[test]
    fn server_defaults_to_localhost() {
        // The environment wins over the default; only check the default when it is not set.
        if std::env::var_os("ACTIVATIONS_SERVER").is_none() {
            assert_eq!(parse(&["layers"]).unwrap().server, [DEFAULT_SERVER]);
        }
        if std::env::var_os("ACTIVATIONS_DATASET").is_none() {
            assert_eq!(parse(&["layers"]).unwrap().dataset, None);
        }
    }

    #[test]
    fn every_subcommand_parses() {
        for args in [
            &["datasets"][..],
            &["layers"],
            &["neurons", "0"],
            &["exists", "0", "0"],
            &["summary", "0", "0"],
            &["get", "0", "0", "--split", "train"],
            &["get", "0", "0", "--split", "calibration"],
            &["get", "0", "0", "--split", "test"],
        ] {
            assert!(parse(args).is_ok(), "{args:?}");
        }
    }
    #[test]
    fn export_takes_ranges_and_defaults() {
        let cli = parse(&["export", "--layers", "0..48", "--out", "copy"]).unwrap();
        match cli.command {
            Command::Export {
                layers,
                neurons: None,
                out,
                jsonl: false,
                concurrency: 8,
                shard: None,
            } => {
                assert_eq!(layers, 0..48);
                assert_eq!(out, std::path::Path::new("copy"));
            }
            other => panic!("unexpected command {other:?}"),
        }
        let cli = parse(&[
            "export",
            "--layers",
            "5",
            "--neurons",
            "10..20",
            "--out",
            "d",
            "--jsonl",
            "--concurrency",
            "2",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::Export {
                layers: std::ops::Range { start: 5, end: 6 },
                neurons: Some(std::ops::Range { start: 10, end: 20 }),
                jsonl: true,
                concurrency: 2,
                ..
            }
        ));
    }
    #[test]
    fn export_rejects_bad_ranges_and_zero_concurrency() {
        for (args, says) in [
            (&["--layers", "5..3"][..], "5..3 is empty"),
            (&["--layers", "a..b"], "\"a\" is not an index"),
            (&["--layers", "..4"], "the range has no start"),
            (&["--layers", "0..2", "--neurons", "3..3"], "3..3 is empty"),
            (
                &["--layers", "0..2", "--concurrency", "0"],
                "0 is not in 1..",
            ),
        ] {
            let args: Vec<&str> = ["export", "--out", "d"]
                .iter()
                .chain(args)
                .copied()
                .collect();
            let error = parse(&args).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::ValueValidation, "{args:?}");
            assert_eq!(error.exit_code(), 2);
            let text = error.to_string();
            assert!(text.contains(says), "{args:?}: {text}");
        }
        let error = parse(&["export", "--out", "d"]).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn split_names_map_to_proto_splits() {
        assert_eq!(Split::from(SplitName::Train), Split::Train);
        assert_eq!(Split::from(SplitName::Calibration), Split::Calibration);
        assert_eq!(Split::from(SplitName::Valid), Split::Valid);
        assert_eq!(Split::from(SplitName::Test), Split::Test);
    }

    #[test]
    fn tls_and_token_options_parse_and_the_token_never_shows() {
        let cli = parse(&[
            "--tls-ca",
            "ca.pem",
            "--tls-cert",
            "me.pem",
            "--tls-key",
            "me.key",
            "--token",
            "s3cret-token",
            "layers",
        ])
        .unwrap();
        assert_eq!(cli.tls_ca.as_deref(), Some(std::path::Path::new("ca.pem")));
        assert_eq!(
            cli.token.as_ref().map(BearerToken::expose),
            Some("s3cret-token")
        );
        assert!(!format!("{cli:?}").contains("s3cret"));
        assert!(parse(&["--tls-cert", "me.pem", "layers"]).is_err());
        assert!(parse(&["--token", "a", "--token-file", "f", "layers"]).is_err());
    }

    #[test]
    fn report_prints_the_error_and_fails() {
        let error = RunError::from(Error::from(tonic::Status::not_found("no neuron 1:2")));
        let mut stderr = Vec::new();
        let code = report(Err(error), &mut stderr);
        assert_eq!(code, ExitCode::FAILURE);
        assert_eq!(
            String::from_utf8(stderr).unwrap(),
            "error: NOT_FOUND: no neuron 1:2\n"
        );
    }

    #[test]
    fn report_treats_a_closed_stdout_as_success() {
        let error = RunError::from(io::Error::from(io::ErrorKind::BrokenPipe));
        let mut stderr = Vec::new();
        assert_eq!(report(Err(error), &mut stderr), ExitCode::SUCCESS);
        assert!(stderr.is_empty());
        assert_eq!(report(Ok(()), &mut stderr), ExitCode::SUCCESS);
    }
}
