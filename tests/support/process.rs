//! `activations-server` as an operator runs it: the real binary in a child process, found by
//! [`server_binary`], on `127.0.0.1:0`.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use activations_server::Ready;

use crate::tools::server_binary;

/// How long the server may take to print its ready line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// `activations-server` running as a child process; killed when dropped (a failed test
/// included).
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    /// `http://127.0.0.1:PORT`, from its ready line.
    pub url: String,
    /// `http://ADDR` of its metrics endpoint, with `--metrics-listen`.
    pub metrics_url: Option<String>,
    log: Arc<Mutex<Vec<String>>>,
}

impl ServerProcess {
    /// Starts the binary with `--listen 127.0.0.1:0` and `args`, and waits for its ready line.
    ///
    /// # Panics
    /// When it cannot be run or exits before it is ready.
    pub fn start(args: &[String]) -> ServerProcess {
        ServerProcess::start_on("127.0.0.1:0", args)
    }

    /// Starts the binary with `--listen listen` (such as `127.0.0.3:0`, a replica's own
    /// loopback address) and `args`, and waits for its ready line.
    ///
    /// # Panics
    /// When it cannot be run or exits before it is ready.
    pub fn start_on(listen: &str, args: &[String]) -> ServerProcess {
        let mut child = Command::new(server_binary())
            .args(["--listen", listen])
            .args(args)
            .env_remove("ACTIVATIONS_LOG")
            .env_remove("ACTIVATIONS_DATASETS")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running activations-server");
        let lines = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
        // Keep reading the log, so the server never blocks on a full pipe.
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let ready = stdout
                .lines()
                .map_while(Result::ok)
                .find_map(|line| Ready::parse(&line));
            let _ = tx.send(ready);
        });
        let Ok(Some(ready)) = rx.recv_timeout(STARTUP_TIMEOUT) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "activations-server exited, or printed no ready line within {STARTUP_TIMEOUT:?}; \
                 its log:\n{}",
                log.lock().unwrap().join("\n")
            );
        };
        ServerProcess {
            child,
            url: format!("http://{}", ready.address),
            metrics_url: ready
                .metrics_address
                .map(|address| format!("http://{address}")),
            log,
        }
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Sends it SIGTERM.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Sends it a signal, by name (`TERM`, `HUP`, `KILL`).
    pub fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{name}");
    }

    /// Waits for the process to exit, at most `limit`.
    pub async fn exit_status(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not exit within {limit:?}; its log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
