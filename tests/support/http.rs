//! The stock Python `http.server` over a directory, to serve datasets from a web server that is
//! not ours. The fault-injecting one is `activations-webstore`'s, shared with the benchmarks.

use std::{net::SocketAddr, path::Path, process::Stdio, time::Duration};

use tokio::{
    io::{AsyncBufReadExt, BufReader},
    net::TcpStream,
    process::{Child, Command},
};

/// How long a server may take to start listening.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The stock Python file server, `python3 -m http.server`, serving a directory on
/// `127.0.0.1` on a free port. Killed when dropped.
#[derive(Debug)]
pub struct StaticHttpServer {
    child: Child,
    port: u16,
    /// Where the server's stderr (its access log) goes.
    log: tempfile::NamedTempFile,
}

impl StaticHttpServer {
    /// Starts `python3 -m http.server --bind 127.0.0.1 --directory DIR 0` and waits until it
    /// accepts connections.
    ///
    /// # Panics
    /// When python3 cannot be run or the server does not come up.
    pub async fn start(dir: &Path) -> StaticHttpServer {
        let log = tempfile::NamedTempFile::new().expect("temp file for the server log");
        let mut child = Command::new("python3")
            // Unbuffered: the line announcing the port must reach the pipe at once.
            .args([
                "-u",
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(dir)
            .arg("0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log.reopen().expect("reopening the server log"))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("running python3 -m http.server: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        // "Serving HTTP on 127.0.0.1 port 40123 (http://127.0.0.1:40123/) ..."
        let port = tokio::time::timeout(STARTUP_TIMEOUT, async {
            while let Some(line) = lines.next_line().await.ok().flatten() {
                if let Some(port) = line
                    .split_once(" port ")
                    .and_then(|(_, rest)| rest.split_whitespace().next())
                    .and_then(|port| port.parse::<u16>().ok())
                {
                    return Some(port);
                }
            }
            None
        })
        .await
        .ok()
        .flatten();
        let Some(port) = port else {
            let _ = child.start_kill();
            let log = std::fs::read_to_string(log.path()).unwrap_or_default();
            panic!("python3 -m http.server did not announce its port; its stderr:\n{log}");
        };
        wait_until_listening(SocketAddr::from(([127, 0, 0, 1], port))).await;
        StaticHttpServer { child, port, log }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// What the server wrote to stderr so far: one access-log line per request.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

impl Drop for StaticHttpServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn wait_until_listening(addr: SocketAddr) {
    let deadline = tokio::time::Instant::now() + STARTUP_TIMEOUT;
    while TcpStream::connect(addr).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing accepts connections on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
