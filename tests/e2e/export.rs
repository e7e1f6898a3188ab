//! `activations export`, run in process against a real server: neurons come out byte for byte
//! as the files they were served from, failed neurons are reported while the others are
//! written, an interrupted export resumes (files and JSONL), and progress is reported.

use activations_webstore::{Fault, FaultyHttpServer};
use std::{collections::HashMap, path::Path, process::ExitCode, time::Duration};

use activations_cli::{self as cli, Cli, RunError};
use activations_e2e::{
    TestServer, conformance,
    fixtures::{REAL_NEURON, neuron, to_json, write_neuron},
    serve_dir, serve_uris,
};
use activations_server::location::StorageOptions;
use bytes::Bytes;
use clap::Parser;

/// What one run of the command left.
struct Run {
    result: Result<(), RunError>,
    /// What it wrote to its output: the summary line.
    out: String,
    /// What it wrote besides: progress lines and failed neurons.
    stderr: String,
}

impl Run {
    fn ok(&self) -> &Self {
        if let Err(error) = &self.result {
            panic!("export failed: {error}\nstderr:\n{}", self.stderr);
        }
        self
    }

    /// The error line and exit code `activations` would end with.
    fn reported(self) -> (ExitCode, String) {
        let mut stderr = Vec::new();
        let code = cli::report(self.result, &mut stderr);
        (code, String::from_utf8(stderr).unwrap())
    }
}

/// `activations --server URL export --out DIR ARGS...`, its progress captured.
async fn export(server: &TestServer, dir: &Path, args: &[&str]) -> Run {
    export_from(&server.url(), dir, args).await
}

async fn export_from(url: &str, dir: &Path, args: &[&str]) -> Run {
    let mut argv = vec![
        "activations",
        "--server",
        url,
        "export",
        "--out",
        dir.to_str().unwrap(),
    ];
    argv.extend_from_slice(args);
    let cli = Cli::parse_from(argv);
    let (mut out, mut stderr) = (Vec::new(), Vec::new());
    let result = cli::run_with_stderr(cli, &mut out, &mut stderr).await;
    Run {
        result,
        out: String::from_utf8(out).unwrap(),
        stderr: String::from_utf8(stderr).unwrap(),
    }
}

/// The synthetic neurons of [`synthetic_dataset`], besides the real one at 1/1.
const SYNTHETIC: [(u32, u32); 5] = [(0, 0), (0, 1), (1, 0), (1, 2), (2, 7)];

/// Layers 0..3: the real public file at 1/1 and synthetic neurons (other record counts, NaN,
/// null and infinite moments, escapes and non-ASCII tokens) elsewhere.
fn synthetic_dataset(root: &Path) {
    write_neuron(root, false, 1, 1, REAL_NEURON);
    for (layer, neuron_index) in SYNTHETIC {
        let record = neuron(
            u64::from(layer * 1000 + neuron_index),
            layer,
            neuron_index,
            4 + neuron_index as usize,
            3,
        );
        write_neuron(root, false, layer, neuron_index, &to_json(&record));
    }
}

fn source_file(root: &Path, layer: u32, neuron: u32) -> Vec<u8> {
    std::fs::read(root.join(format!("{layer}/{neuron}.json"))).unwrap()
}

fn output_file(dir: &Path, layer: u32, neuron: u32) -> Option<Vec<u8>> {
    std::fs::read(dir.join(format!("{layer}/{neuron}.json"))).ok()
}

/// Every file below `dir`, relative, sorted.
fn files_below(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, found);
            } else {
                let relative = path.strip_prefix(root).unwrap();
                found.push(relative.to_str().unwrap().replace('\\', "/"));
            }
        }
    }
    let mut found = Vec::new();
    walk(dir, dir, &mut found);
    found.sort();
    found
}

fn assert_summary(run: &Run, exported: u64, dir: &Path, skipped: u64, failed: u64) {
    let noun = if exported == 1 { "neuron" } else { "neurons" };
    let expected = format!(
        "exported {exported} {noun} to {} ({skipped} skipped, {failed} failed) in ",
        dir.display()
    );
    assert!(
        run.out.starts_with(&expected) && run.out.ends_with("s\n") && run.out.lines().count() == 1,
        "expected {expected:?}..., got {:?}",
        run.out
    );
}

#[tokio::test]
async fn neurons_export_byte_identical_to_the_files_they_were_served_from() {
    let source = tempfile::tempdir().unwrap();
    synthetic_dataset(source.path());
    let server = serve_dir("synthetic", source.path()).await;
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("copy");

    let run = export(&server, &dir, &["--layers", "0..2", "--concurrency", "3"]).await;
    run.ok();
    assert_summary(&run, 5, &dir, 0, 0);

    assert_eq!(output_file(&dir, 1, 1).unwrap(), REAL_NEURON);
    for (layer, neuron) in SYNTHETIC.into_iter().filter(|&(layer, _)| layer < 2) {
        assert_eq!(
            output_file(&dir, layer, neuron).unwrap(),
            source_file(source.path(), layer, neuron),
            "{layer}/{neuron}"
        );
    }
    // Layer 2 is outside 0..2, and no partial file is left behind.
    assert_eq!(
        files_below(&dir),
        ["0/0.json", "0/1.json", "1/0.json", "1/1.json", "1/2.json"]
    );

    // One layer given as a single index.
    let single = out.path().join("single");
    let run = export(&server, &single, &["--layers", "2"]).await;
    run.ok();
    assert_summary(&run, 1, &single, 0, 0);
    assert_eq!(files_below(&single), ["2/7.json"]);
    assert_eq!(
        output_file(&single, 2, 7).unwrap(),
        source_file(source.path(), 2, 7)
    );
    server.stop().await;
}

#[tokio::test]
async fn missing_and_corrupt_neurons_are_reported_and_the_others_written() {
    let source = tempfile::tempdir().unwrap();
    conformance::write_dataset(source.path(), false);
    let server = serve_dir("conformance", source.path()).await;
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("copy");

    // Neurons 0..4 of layers 0..2: 3 does not exist, 0/2 is corrupt.
    let run = export(
        &server,
        &dir,
        &[
            "--layers",
            "0..2",
            "--neurons",
            "0..4",
            "--concurrency",
            "2",
        ],
    )
    .await;
    assert!(
        matches!(
            run.result,
            Err(RunError::ExportIncomplete {
                failed: 3,
                selected: 8
            })
        ),
        "{:?}",
        run.result
    );
    assert_summary(&run, 5, &dir, 0, 3);
    let failures: Vec<&str> = run
        .stderr
        .lines()
        .filter(|line| line.starts_with("neuron "))
        .collect();
    assert_eq!(failures.len(), 3, "{}", run.stderr);
    assert!(
        failures[0].starts_with("neuron 0/2: DATA_LOSS: "),
        "{}",
        failures[0]
    );
    assert!(
        failures[0].contains("CORRUPT_NEURON_FILE"),
        "{}",
        failures[0]
    );
    assert!(
        failures[1].starts_with("neuron 0/3: NOT_FOUND: "),
        "{}",
        failures[1]
    );
    assert!(failures[1].contains("NEURON_NOT_FOUND"), "{}", failures[1]);
    assert!(
        failures[2].starts_with("neuron 1/3: NOT_FOUND: "),
        "{}",
        failures[2]
    );
    assert_eq!(
        files_below(&dir),
        ["0/0.json", "0/1.json", "1/0.json", "1/1.json", "1/2.json"]
    );
    assert_eq!(output_file(&dir, 1, 1).unwrap(), REAL_NEURON);
    assert_eq!(
        output_file(&dir, 0, 1).unwrap(),
        source_file(source.path(), 0, 1)
    );

    let (code, said) = run.reported();
    assert_eq!(code, ExitCode::FAILURE);
    assert_eq!(
        said,
        "error: 3 of 8 neurons could not be exported (each is reported above)\n"
    );

    // Listed rather than named, only the corrupt one fails; the rest was written already.
    let run = export(&server, &dir, &["--layers", "0..2"]).await;
    assert!(
        matches!(
            run.result,
            Err(RunError::ExportIncomplete {
                failed: 1,
                selected: 6
            })
        ),
        "{:?}",
        run.result
    );
    assert_summary(&run, 0, &dir, 5, 1);
    server.stop().await;
}

#[tokio::test]
async fn a_rerun_fetches_only_the_neurons_without_a_file() {
    let source = tempfile::tempdir().unwrap();
    synthetic_dataset(source.path());
    let server = serve_dir("synthetic", source.path()).await;
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("copy");
    export(&server, &dir, &["--layers", "0..3"]).await.ok();
    let complete = files_below(&dir);
    assert_eq!(complete.len(), 6);

    // An interrupted export: one neuron's file missing, its partial file left half-written.
    std::fs::remove_file(dir.join("1/0.json")).unwrap();
    std::fs::write(dir.join("1/0.json.partial"), b"{\"dataclass_name\": \"Neu").unwrap();
    // Files that exist are not fetched again: this one keeps its (wrong) content.
    std::fs::write(dir.join("0/0.json"), b"left alone").unwrap();

    let run = export(&server, &dir, &["--layers", "0..3"]).await;
    run.ok();
    assert_summary(&run, 1, &dir, 5, 0);
    assert_eq!(files_below(&dir), complete, "the partial file is replaced");
    assert_eq!(
        output_file(&dir, 1, 0).unwrap(),
        source_file(source.path(), 1, 0)
    );
    assert_eq!(output_file(&dir, 0, 0).unwrap(), b"left alone");

    // Nothing left to do.
    let run = export(&server, &dir, &["--layers", "0..3"]).await;
    run.ok();
    assert_summary(&run, 0, &dir, 6, 0);
    server.stop().await;
}

#[tokio::test]
async fn jsonl_is_the_files_one_per_line_and_resumes_from_a_cut_line() {
    let source = tempfile::tempdir().unwrap();
    synthetic_dataset(source.path());
    let server = serve_dir("synthetic", source.path()).await;
    let out = tempfile::tempdir().unwrap();

    let files = out.path().join("files");
    export(&server, &files, &["--layers", "0..3"]).await.ok();
    let mut expected = Vec::new();
    for (layer, neuron) in [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (2, 7)] {
        expected.extend(output_file(&files, layer, neuron).unwrap());
        expected.push(b'\n');
    }

    let jsonl = out.path().join("jsonl");
    let run = export(&server, &jsonl, &["--layers", "0..3", "--jsonl"]).await;
    run.ok();
    assert_summary(&run, 6, &jsonl, 0, 0);
    assert_eq!(files_below(&jsonl), ["neurons.jsonl"]);
    assert_eq!(
        std::fs::read(jsonl.join("neurons.jsonl")).unwrap(),
        expected
    );

    // Finished: nothing to do, nothing fetched.
    let run = export(&server, &jsonl, &["--layers", "0..3", "--jsonl"]).await;
    run.ok();
    assert!(run.out.starts_with("nothing to do: "), "{}", run.out);

    // Interrupted in the middle of the fourth line (the real neuron, 1/1).
    let third_end = expected
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b == b'\n')
        .nth(2)
        .unwrap()
        .0
        + 1;
    let resumed = out.path().join("resumed");
    std::fs::create_dir_all(&resumed).unwrap();
    std::fs::write(
        resumed.join("neurons.jsonl.partial"),
        &expected[..third_end + 1000],
    )
    .unwrap();
    let run = export(&server, &resumed, &["--layers", "0..3", "--jsonl"]).await;
    run.ok();
    assert_summary(&run, 3, &resumed, 3, 0);
    assert_eq!(files_below(&resumed), ["neurons.jsonl"]);
    assert_eq!(
        std::fs::read(resumed.join("neurons.jsonl")).unwrap(),
        expected
    );

    // Cut right after a complete line: nothing is dropped, the export goes on after it.
    let cut = out.path().join("cut");
    std::fs::create_dir_all(&cut).unwrap();
    std::fs::write(cut.join("neurons.jsonl.partial"), &expected[..third_end]).unwrap();
    let run = export(&server, &cut, &["--layers", "0..3", "--jsonl"]).await;
    run.ok();
    assert_summary(&run, 3, &cut, 3, 0);
    assert_eq!(std::fs::read(cut.join("neurons.jsonl")).unwrap(), expected);

    // A partial file from another selection is not continued into a wrong file.
    let other = out.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("neurons.jsonl.partial"), &expected[..third_end]).unwrap();
    let run = export(&server, &other, &["--layers", "2", "--jsonl"]).await;
    let (code, said) = run.reported();
    assert_eq!(code, ExitCode::FAILURE);
    assert!(
        said.contains("neurons.jsonl.partial: its last neuron, 1/0, is not among"),
        "{said}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_jsonl_rerun_retries_what_failed_and_puts_it_in_its_place() {
    let source = tempfile::tempdir().unwrap();
    conformance::write_dataset(source.path(), false);
    let server = serve_dir("conformance", source.path()).await;
    let out = tempfile::tempdir().unwrap();
    let run = export(&server, out.path(), &["--layers", "0..2", "--jsonl"]).await;
    assert!(run.result.is_err(), "the corrupt 0/2 fails");

    // The file is mended; the same command again fetches it, and only it.
    write_neuron(
        source.path(),
        false,
        0,
        2,
        &to_json(&neuron(2, 0, 2, 40, 30)),
    );
    let run = export(&server, out.path(), &["--layers", "0..2", "--jsonl"]).await;
    run.ok();
    assert!(
        run.out.starts_with(
            "retried 1 neuron listed in neurons.jsonl.failed: 1 exported into neurons.jsonl, 0 \
             failed again"
        ),
        "{}",
        run.out
    );
    assert!(!out.path().join("neurons.jsonl.failed").exists());
    // The file is what one clean run writes now.
    let clean = tempfile::tempdir().unwrap();
    export(&server, clean.path(), &["--layers", "0..2", "--jsonl"])
        .await
        .ok();
    assert_eq!(
        std::fs::read(out.path().join("neurons.jsonl")).unwrap(),
        std::fs::read(clean.path().join("neurons.jsonl")).unwrap()
    );
    let run = export(&server, out.path(), &["--layers", "0..2", "--jsonl"]).await;
    run.ok();
    assert!(run.out.starts_with("nothing to do: "), "{}", run.out);
    server.stop().await;
}

#[tokio::test]
async fn jsonl_leaves_out_failed_neurons() {
    let source = tempfile::tempdir().unwrap();
    conformance::write_dataset(source.path(), false);
    // A copy of the real file (neuron 1/1) as neuron 0/3: its line would say 1/1.
    write_neuron(source.path(), false, 0, 3, REAL_NEURON);
    let server = serve_dir("conformance", source.path()).await;
    let out = tempfile::tempdir().unwrap();

    let run = export(&server, out.path(), &["--layers", "0..2", "--jsonl"]).await;
    assert!(
        matches!(
            run.result,
            Err(RunError::ExportIncomplete {
                failed: 2,
                selected: 7
            })
        ),
        "{:?}",
        run.result
    );
    assert_summary(&run, 5, out.path(), 0, 2);
    let failed = std::fs::read_to_string(out.path().join("neurons.jsonl.failed")).unwrap();
    let failed: Vec<&str> = failed.lines().collect();
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(failed[0].starts_with("0/2: DATA_LOSS: "), "{}", failed[0]);
    assert!(
        failed[1].starts_with("0/3: the record served names neuron 1/1"),
        "{}",
        failed[1]
    );
    assert!(
        run.stderr.contains(
            "neuron 0/3: the record served names neuron 1/1 in its neuron_id; left out of \
             neurons.jsonl"
        ),
        "{}",
        run.stderr
    );
    let jsonl = std::fs::read(out.path().join("neurons.jsonl")).unwrap();
    let mut expected = Vec::new();
    for (layer, neuron) in [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)] {
        expected.extend(source_file(source.path(), layer, neuron));
        expected.push(b'\n');
    }
    assert_eq!(jsonl, expected);
    // A rerun retries the neurons that failed: they fail again, stay listed, and the file
    // is unchanged.
    let run = export(&server, out.path(), &["--layers", "0..2", "--jsonl"]).await;
    assert!(
        matches!(
            run.result,
            Err(RunError::ExportIncomplete {
                failed: 2,
                selected: 2
            })
        ),
        "{:?}",
        run.result
    );
    assert!(
        run.out.starts_with(
            "retried 2 neurons listed in neurons.jsonl.failed: 0 exported into neurons.jsonl, \
             2 failed again"
        ),
        "{}",
        run.out
    );
    assert_eq!(
        std::fs::read(out.path().join("neurons.jsonl")).unwrap(),
        jsonl
    );
    let failed = std::fs::read_to_string(out.path().join("neurons.jsonl.failed")).unwrap();
    assert_eq!(failed.lines().count(), 2, "{failed}");

    // Ends of the lines 0/0, 0/1, 1/0, 1/1, 1/2.
    let ends: Vec<usize> = (0..jsonl.len()).filter(|&i| jsonl[i] == b'\n').collect();
    let resume = |name: &str, cut: usize| {
        let dir = out.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("neurons.jsonl.partial"), &jsonl[..cut]).unwrap();
        std::fs::copy(
            out.path().join("neurons.jsonl.failed"),
            dir.join("neurons.jsonl.failed"),
        )
        .unwrap();
        dir
    };
    let assert_resumed = |run: &Run, dir: &Path, exported, skipped| {
        assert!(
            matches!(
                run.result,
                Err(RunError::ExportIncomplete { failed: 2, .. })
            ),
            "{:?}",
            run.result
        );
        assert_summary(run, exported, dir, skipped, 2);
        assert_eq!(std::fs::read(dir.join("neurons.jsonl")).unwrap(), expected);
        let failed = std::fs::read_to_string(dir.join("neurons.jsonl.failed")).unwrap();
        assert_eq!(failed.lines().count(), 2, "{failed}");
    };

    // Interrupted in the line of 1/1, after the failures of 0/2 and 0/3: a rerun does not
    // fetch them again, but still counts and reports them.
    let after = resume("after", ends[2] + 1000);
    let run = export(&server, &after, &["--layers", "0..2", "--jsonl"]).await;
    assert_resumed(&run, &after, 2, 3);
    assert!(
        run.stderr
            .lines()
            .any(|line| line.starts_with("neuron 0/2: DATA_LOSS: ")
                && line.ends_with(" (in an earlier run)")),
        "{}",
        run.stderr
    );
    // Interrupted in the line of 0/1, before them: they are fetched, and fail, again.
    let before = resume("before", ends[0] + 1000);
    let run = export(&server, &before, &["--layers", "0..2", "--jsonl"]).await;
    assert_resumed(&run, &before, 4, 1);
    assert!(!run.stderr.contains("earlier run"), "{}", run.stderr);
    server.stop().await;
}

#[tokio::test]
async fn without_a_terminal_there_is_no_bar_and_one_summary_line() {
    let source = tempfile::tempdir().unwrap();
    conformance::write_dataset(source.path(), false);
    let server = serve_dir("conformance", source.path()).await;
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("copy");
    export(&server, &dir, &["--layers", "1"]).await.ok();
    std::fs::remove_file(dir.join("1/2.json")).unwrap();

    let run = export(&server, &dir, &["--layers", "0..2"]).await;
    // No bar (no cursor movement, no carriage return), the failed neuron on stderr, and one
    // summary line on stdout agreeing with the counts.
    assert!(
        !run.stderr.contains('\r') && !run.stderr.contains('\u{1b}'),
        "{:?}",
        run.stderr
    );
    assert_eq!(run.out.lines().count(), 1, "{}", run.out);
    assert!(
        run.out.starts_with("exported 3 neurons to ") && run.out.contains("(2 skipped, 1 failed)"),
        "{}",
        run.out
    );
    assert!(
        run.stderr
            .lines()
            .any(|line| line.starts_with("neuron 0/2: DATA_LOSS")),
        "{}",
        run.stderr
    );
    server.stop().await;
}

/// Storage that fails for good on one neuron: every read of it ends in UNAVAILABLE.
const STORAGE: StorageOptions = StorageOptions {
    request_timeout: Duration::from_millis(800),
    connect_timeout: Duration::from_secs(1),
    max_retries: 1,
    retry_budget: Duration::from_secs(1),
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unavailable_neuron_stops_the_export_and_a_rerun_resumes() {
    let files: HashMap<String, Bytes> = (0..8)
        .map(|n| (format!("0/{n}.json"), Bytes::from_static(REAL_NEURON)))
        .collect();
    let web = FaultyHttpServer::start(files);
    web.inject_always("0/5.json", Fault::Status(503));
    let uri = format!("{}?layers=1&neurons=8&layout=flat", web.url());
    let server = serve_uris(&[("faulty", &uri)], STORAGE).await;
    let out = tempfile::tempdir().unwrap();

    let run = export(
        &server,
        out.path(),
        &["--layers", "0", "--concurrency", "2"],
    )
    .await;
    assert!(run.out.is_empty(), "{}", run.out);
    let (code, said) = run.reported();
    assert_eq!(code, ExitCode::FAILURE);
    assert!(
        said.starts_with("error: export stopped at neuron 0/5: UNAVAILABLE: ")
            && said.ends_with("; run the same command again to resume\n"),
        "{said}"
    );
    // What came before it in order was written; nothing after it.
    assert_eq!(
        files_below(out.path()),
        ["0/0.json", "0/1.json", "0/2.json", "0/3.json", "0/4.json"]
    );

    web.clear_faults("0/5.json");
    let run = export(&server, out.path(), &["--layers", "0"]).await;
    run.ok();
    assert_summary(&run, 3, out.path(), 5, 0);
    assert_eq!(files_below(out.path()).len(), 8);
    assert_eq!(output_file(out.path(), 0, 7).unwrap(), REAL_NEURON);
    server.stop().await;
}

#[tokio::test]
async fn errors_of_the_whole_dataset_stop_the_export() {
    let source = tempfile::tempdir().unwrap();
    synthetic_dataset(source.path());
    let server = serve_dir("synthetic", source.path()).await;
    let out = tempfile::tempdir().unwrap();
    // Named neurons are not listed first, so the unknown dataset shows in the first fetch.
    let run = export(
        &server,
        out.path(),
        &["--layers", "0..2", "--neurons", "0..2", "--dataset", "nope"],
    )
    .await;
    let (code, said) = run.reported();
    assert_eq!(code, ExitCode::FAILURE);
    assert!(
        said.starts_with("error: export stopped at neuron 0/0: NOT_FOUND: "),
        "{said}"
    );
    server.stop().await;
}

/// Runs `program ARGS...` under a pseudo terminal 120 columns wide (Python's `pty`, from the
/// standard library) and returns everything it wrote there, stdout and stderr together.
fn under_a_terminal(program: &Path, args: &[&str]) -> String {
    const RUN_IN_PTY: &str = r#"
import fcntl, os, pty, struct, sys, termios
pid, fd = pty.fork()
if pid == 0:
    fcntl.ioctl(1, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    os.execv(sys.argv[1], sys.argv[1:])
seen = b""
while True:
    try:
        chunk = os.read(fd, 65536)
    except OSError:
        break
    if not chunk:
        break
    seen += chunk
os.waitpid(pid, 0)
sys.stdout.buffer.write(seen)
"#;
    let output = std::process::Command::new("python3")
        .args(["-c", RUN_IN_PTY])
        .arg(program)
        .args(args)
        .output()
        .expect("python3 runs");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The lines a terminal would show: split at newlines, each line's text after its last
/// carriage return, without escape sequences.
fn shown_lines(raw: &str) -> Vec<String> {
    let without_escapes = {
        let mut text = String::new();
        let mut chars = raw.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                // CSI: ESC [ parameters final-byte.
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if c.is_ascii_alphabetic() {
                            break;
                        }
                    }
                }
                continue;
            }
            text.push(c);
        }
        text
    };
    without_escapes
        .split('\n')
        .map(|line| {
            line.trim_end_matches('\r')
                .rsplit('\r')
                .next()
                .unwrap_or_default()
        })
        .map(|line| line.trim_end().to_string())
        .filter(|line| !line.is_empty())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_terminal_the_bar_ends_with_its_last_frame_then_the_summary_on_its_own_line() {
    let source = tempfile::tempdir().unwrap();
    conformance::write_dataset(source.path(), false);
    let server = activations_e2e::process::ServerProcess::start(&[
        "--dataset".to_string(),
        format!("conformance={}", source.path().display()),
    ]);
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("copy");
    export_from(&server.url, &dir, &["--layers", "1"]).await;
    std::fs::remove_file(dir.join("1/2.json")).unwrap();

    let raw = under_a_terminal(
        &activations_e2e::tools::cli_binary(),
        &[
            "--server",
            &server.url,
            "export",
            "--layers",
            "0..2",
            "--out",
            dir.to_str().unwrap(),
        ],
    );
    let lines = shown_lines(&raw);
    let last_frame = lines
        .iter()
        .position(|line| line.starts_with("done 6/6 neurons (3 exported, 1 failed, 2 skipped;"))
        .unwrap_or_else(|| panic!("no last frame in {lines:#?}"));
    assert!(lines[last_frame].ends_with("ETA 0s"), "{lines:#?}");
    let summary = &lines[last_frame + 1];
    assert!(
        summary.starts_with("exported 3 neurons to ") && summary.contains("(2 skipped, 1 failed)"),
        "{lines:#?}"
    );
    assert!(
        lines[last_frame + 2].starts_with("error: 1 of 6 neurons could not be exported"),
        "{lines:#?}"
    );
    // The bar's first frame already has its counts.
    assert!(!raw.contains("(, ") && !raw.contains(", )"), "{raw:?}");
}
