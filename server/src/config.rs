//! Settings of `activations-server`, from flags or the environment.

use std::net::SocketAddr;

use clap::Parser;

use crate::{dataset::DatasetSpec, layout::LayoutChoice};

/// Serves neuron-explainer activation records over gRPC.
///
/// Each setting can also come from the environment variable named in its help; a flag wins
/// over the environment.
#[derive(Debug, Clone, Parser)]
#[command(name = "activations-server", version)]
pub struct Config {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "ACTIVATIONS_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// A dataset to serve, as NAME=URI; repeat for more. The first is the default. URI is a
    /// local directory (/path or file:///path) or `bundled:gpt2-xl-sample`. With none, the
    /// bundled sample is served. In the environment, separate datasets with commas.
    #[arg(
        long = "dataset",
        value_name = "NAME=URI",
        env = "ACTIVATIONS_DATASETS",
        value_delimiter = ','
    )]
    pub datasets: Vec<DatasetSpec>,

    /// File layout of the datasets: `flat` ({root}/{layer}/{neuron}.json), `neurons`
    /// ({root}/neurons/{layer}/{neuron}.json), or `auto` to detect it from the root.
    #[arg(
        long,
        env = "ACTIVATIONS_LAYOUT",
        default_value = "auto",
        value_name = "auto|flat|neurons"
    )]
    pub layout: LayoutChoice,

    /// Log filter, in `tracing` EnvFilter syntax (e.g. `info`, `activations_server=debug`).
    #[arg(long, env = "ACTIVATIONS_LOG", default_value = "info")]
    pub log: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Layout;

    #[test]
    fn flags_set_listen_datasets_and_layout() {
        let config = Config::try_parse_from([
            "activations-server",
            "--listen",
            "0.0.0.0:6000",
            "--dataset",
            "a=/data/a",
            "--dataset",
            "b=file:///data/b",
            "--layout",
            "neurons",
        ])
        .unwrap();
        assert_eq!(config.listen, "0.0.0.0:6000".parse().unwrap());
        let names: Vec<_> = config.datasets.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(config.layout, LayoutChoice::Fixed(Layout::Neurons));
    }

    #[test]
    fn bad_flags_are_refused_with_the_reason() {
        let err = Config::try_parse_from(["activations-server", "--dataset", "nameonly"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("NAME=URI"), "{err}");
        let err = Config::try_parse_from(["activations-server", "--layout", "deep"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("auto, flat or neurons"), "{err}");
    }
}
