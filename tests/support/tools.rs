//! External tools the end-to-end tests drive: stock grpcurl and the Python reference loader.
//! `scripts/test.sh` installs both into `.venv/`; an environment variable overrides each.

use std::path::PathBuf;

/// The workspace root (the parent of `tests/`).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn tool(env_var: &str, venv_name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env_var) {
        return PathBuf::from(path);
    }
    let in_venv = workspace_root().join(".venv/bin").join(venv_name);
    assert!(
        in_venv.exists(),
        "{venv_name} not found at {}: run scripts/test.sh (it installs it), or set {env_var}",
        in_venv.display()
    );
    in_venv
}

/// The grpcurl binary (`GRPCURL`, else `.venv/bin/grpcurl`).
pub fn grpcurl() -> PathBuf {
    tool("GRPCURL", "grpcurl")
}

/// A Python with `automated-interpretability` installed (`ACTIVATIONS_PYTHON`, else
/// `.venv/bin/python`).
pub fn python() -> PathBuf {
    tool("ACTIVATIONS_PYTHON", "python")
}

/// The `activations-server` binary of this build (`ACTIVATIONS_SERVER_BIN` overrides it): next to
/// the test executable's `deps/` directory, where `cargo test --workspace` builds it (the server
/// crate's own tests need it). Run alone, build it first: `cargo build -p activations-server`.
pub fn server_binary() -> PathBuf {
    workspace_binary("activations-server", "ACTIVATIONS_SERVER_BIN")
}

/// The `activations` command-line binary of this build (`ACTIVATIONS_CLI_BIN` overrides it),
/// found as [`server_binary`] is (the CLI crate's own tests build it).
pub fn cli_binary() -> PathBuf {
    workspace_binary("activations", "ACTIVATIONS_CLI_BIN")
}

fn workspace_binary(name: &str, env_var: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env_var) {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("tests run from target/<profile>/deps");
    let binary = profile_dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.exists(),
        "{} is not built: run `cargo build --workspace` (or the whole workspace's tests), or set \
         {env_var}",
        binary.display()
    );
    binary
}
