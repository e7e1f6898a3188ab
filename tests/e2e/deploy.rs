//! The deployment files, checked offline: the `Containerfile` and `deploy/image.sh`, the
//! kustomize base (`deploy/base/`) and example overlay (`deploy/overlays/example/`), and the
//! examples of `deploy/examples/`. kustomize (`kubectl kustomize`) renders the base and the
//! overlay; `kubernetes-validate --strict` checks every object against the API schemas of a
//! pinned Kubernetes version; then the settings a safe rollout rests on are read back from what
//! was rendered: a grace period that covers the drain, gRPC probes of the right health entries,
//! memory for the cache budget, Services and a disruption budget that select the server's pods,
//! Secrets rather than credentials, and an export Job with one shard per completion index.
//!
//! `scripts/test.sh` installs kubernetes-validate into `.venv/` (with PyYAML, which reads the
//! rendered manifests here), and kubectl there too where the machine has none; `KUBECTL` and
//! `KUBERNETES_VALIDATE` override them. The Containerfile's checks need neither.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use activations_e2e::tools::{python, workspace_root};
use serde_json::Value;

/// The Kubernetes version whose API schemas the manifests must satisfy: the newest that the
/// kubernetes-validate release pinned in `scripts/tools.sh` carries.
const KUBERNETES_VERSION: &str = "1.37.0";

/// The server's peak RSS per byte of its cache budget (`--cache-bytes`): 313 MiB at a 256 MiB
/// cache (README, "Cache, timeouts and retries"; BENCHMARKS.md), plus a constant under 1 MiB.
const PEAK_RSS_PER_CACHE_BYTE: f64 = 1.22;

/// How long the server keeps connections open after its calls have ended or been cut at the
/// shutdown grace, for a client that stopped reading (README, "Shutdown", step 4).
const CONNECTION_CLOSE_SECONDS: u64 = 5;

const BASE: &str = "deploy/base";
const OVERLAY: &str = "deploy/overlays/example";
const EXPORT_JOB: &str = "deploy/examples/export-job.yaml";

const DEPLOYMENT: &str = "activations-server";
const HEADLESS_SERVICE: &str = "activations-headless";
const SERVICE: &str = "activations";
const GRPC_PORT: u64 = 50051;
const METRICS_PORT: u64 = 9090;

// --- tools --------------------------------------------------------------------------------

/// `KUBECTL`, else the kubectl `scripts/tools.sh` put into `.venv/bin` (on a machine without
/// one), else the machine's.
fn kubectl() -> PathBuf {
    if let Some(path) = std::env::var_os("KUBECTL") {
        return PathBuf::from(path);
    }
    let in_venv = workspace_root().join(".venv/bin/kubectl");
    if in_venv.exists() {
        in_venv
    } else {
        PathBuf::from("kubectl")
    }
}

/// `KUBERNETES_VALIDATE`, else `.venv/bin/kubernetes-validate`.
fn kubernetes_validate() -> PathBuf {
    if let Some(path) = std::env::var_os("KUBERNETES_VALIDATE") {
        return PathBuf::from(path);
    }
    let in_venv = workspace_root().join(".venv/bin/kubernetes-validate");
    assert!(
        in_venv.exists(),
        "kubernetes-validate not found at {}: run scripts/tools.sh (it installs it), or set \
         KUBERNETES_VALIDATE",
        in_venv.display()
    );
    in_venv
}

fn run(command: &mut Command) -> Output {
    let shown = format!("{command:?}");
    command.output().unwrap_or_else(|error| {
        panic!(
            "cannot run {shown}: {error} (scripts/tools.sh installs the tools; KUBECTL and \
                 KUBERNETES_VALIDATE name others)"
        )
    })
}

fn stdout_of(command: &mut Command) -> String {
    let shown = format!("{command:?}");
    let output = run(command);
    assert!(
        output.status.success(),
        "{shown} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// `kubectl kustomize DIR`: the objects, as YAML.
fn render(dir: &str) -> String {
    stdout_of(
        Command::new(kubectl())
            .arg("kustomize")
            .arg(workspace_root().join(dir)),
    )
}

/// The documents of a YAML stream, read by PyYAML (which kubernetes-validate brings into .venv).
fn yaml_documents(yaml: &str) -> Vec<Value> {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut file, yaml.as_bytes()).unwrap();
    let json = stdout_of(
        Command::new(python())
            .arg("-c")
            .arg(
                "import json, sys, yaml\n\
         with open(sys.argv[1]) as f:\n    \
             docs = [d for d in yaml.safe_load_all(f) if d is not None]\n\
         json.dump(docs, sys.stdout)",
            )
            .arg(file.path()),
    );
    match serde_json::from_str(&json).expect("PyYAML's JSON") {
        Value::Array(documents) => documents,
        other => panic!("expected a list of documents, got {other}"),
    }
}

/// `kubernetes-validate --strict` of `file`, which holds `objects`: each one must pass against
/// the API schema of [`KUBERNETES_VERSION`]. A kind without a schema (a custom resource) is
/// only a warning to kubernetes-validate; here it fails, since nothing would check it.
fn validate(file: &Path, objects: &[Value]) {
    let output = run(Command::new(kubernetes_validate())
        .arg("--strict")
        .args(["--kubernetes-version", KUBERNETES_VERSION])
        .arg(file));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{} does not validate against Kubernetes {KUBERNETES_VERSION}:\n{said}",
        file.display()
    );
    let objections: Vec<&str> = said
        .lines()
        .filter(|line| !line.starts_with("INFO "))
        .collect();
    assert!(objections.is_empty(), "{}: {objections:#?}", file.display());
    for object in objects {
        let passed = format!(
            "passed for resource {}/{} against version",
            str_at(object, "/kind").to_lowercase(),
            str_at(object, "/metadata/name")
        );
        assert!(
            said.lines().any(|line| line.contains(&passed)),
            "{}: no `{passed}` in:\n{said}",
            file.display()
        );
    }
}

/// The objects kustomize renders from `dir` ([`BASE`] or [`OVERLAY`]), validated: once for all
/// the tests.
fn rendered(dir: &str) -> &'static [Value] {
    static BASE_OBJECTS: OnceLock<Vec<Value>> = OnceLock::new();
    static OVERLAY_OBJECTS: OnceLock<Vec<Value>> = OnceLock::new();
    let cell = match dir {
        BASE => &BASE_OBJECTS,
        OVERLAY => &OVERLAY_OBJECTS,
        _ => panic!("{dir} is neither the base nor the overlay"),
    };
    cell.get_or_init(|| render_and_validate(dir))
}

fn render_and_validate(dir: &str) -> Vec<Value> {
    let yaml = render(dir);
    let objects = yaml_documents(&yaml);
    assert!(!objects.is_empty(), "{dir} renders nothing");
    let scratch = tempfile::tempdir().unwrap();
    let file = scratch
        .path()
        .join(format!("{}.yaml", dir.replace('/', "-")));
    std::fs::write(&file, yaml).unwrap();
    validate(&file, &objects);
    objects
}

// --- reading the objects ------------------------------------------------------------------

fn at<'a>(value: &'a Value, pointer: &str) -> &'a Value {
    value
        .pointer(pointer)
        .unwrap_or_else(|| panic!("no {pointer} in {value:#}"))
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    at(value, pointer)
        .as_str()
        .unwrap_or_else(|| panic!("{pointer} is not a string in {value:#}"))
}

fn u64_at(value: &Value, pointer: &str) -> u64 {
    at(value, pointer)
        .as_u64()
        .unwrap_or_else(|| panic!("{pointer} is not a count in {value:#}"))
}

fn object<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} among the rendered objects"))
}

/// The one container of a pod template (a Deployment's or a Job's).
fn container(workload: &Value) -> &Value {
    let containers = at(workload, "/spec/template/spec/containers")
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 1, "one container expected");
    &containers[0]
}

/// The value of the container's environment variable `name`, if it is set by a literal.
fn env<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container["env"]
        .as_array()?
        .iter()
        .find(|var| var["name"] == name)
        .and_then(|var| var["value"].as_str())
}

fn required_env<'a>(container: &'a Value, name: &str) -> &'a str {
    env(container, name).unwrap_or_else(|| panic!("{name} is not set in {container:#}"))
}

/// The number of the container port named `name`.
fn container_port(container: &Value, name: &str) -> u64 {
    container["ports"]
        .as_array()
        .and_then(|ports| ports.iter().find(|p| p["name"] == name))
        .map(|port| u64_at(port, "/containerPort"))
        .unwrap_or_else(|| panic!("no port named {name} in {container:#}"))
}

/// Whether `target` (a Service's targetPort, a probe's port) is the container's port `name`,
/// by name or by number.
fn is_port(container: &Value, target: &Value, name: &str) -> bool {
    target == name || target.as_u64() == Some(container_port(container, name))
}

/// Whether the label selector `selector` (`matchLabels`, no expressions) matches `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let wanted = selector.as_object().expect("a selector");
    !wanted.is_empty()
        && wanted
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value))
}

/// The port of `host:port`.
fn port_of(address: &str) -> u64 {
    address
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or_else(|| panic!("{address} has no port"))
}

/// A Kubernetes quantity of bytes: `1536Mi`, `2Gi`, `1G`, `1000`.
fn quantity_bytes(quantity: &str) -> u64 {
    let split = quantity
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(quantity.len());
    let (number, unit) = quantity.split_at(split);
    let multiplier: u64 = match unit {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => panic!("{quantity}: not a quantity of bytes this test reads"),
    };
    number.parse::<u64>().expect("a number of bytes") * multiplier
}

/// A byte count as the server reads it (`--cache-bytes`): `1GiB`, `512MiB`, `2G`, `1000`.
fn server_bytes(text: &str) -> u64 {
    activations_server::config::parse_bytes(text).unwrap_or_else(|e| panic!("{e}"))
}

/// A duration as the server reads it, in whole seconds: `30s`, `2m`, `1m30s`.
fn seconds(text: &str) -> u64 {
    humantime::parse_duration(text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .as_secs()
}

/// The Deployment's pod-template labels.
fn pod_labels(deployment: &Value) -> &Value {
    at(deployment, "/spec/template/metadata/labels")
}

/// The mount path of the volume, mounted whole (no subPath: a subPath mount is never updated
/// when its Secret changes), whose path holds `file`; and the Secret it mounts.
fn secret_volume_holding<'a>(workload: &'a Value, file: &str) -> (&'a str, &'a str) {
    let spec = at(workload, "/spec/template/spec");
    let container = container(workload);
    let mount = container["volumeMounts"]
        .as_array()
        .and_then(|mounts| {
            mounts.iter().find(|m| {
                file.starts_with(&format!(
                    "{}/",
                    str_at(m, "/mountPath").trim_end_matches('/')
                ))
            })
        })
        .unwrap_or_else(|| panic!("{file} is on no volume mounted in {container:#}"));
    assert!(
        mount.get("subPath").is_none() && mount.get("subPathExpr").is_none(),
        "{file} is mounted with a subPath, which Secret updates never reach: {mount:#}"
    );
    assert_eq!(mount["readOnly"], true, "{mount:#}");
    let volume_name = str_at(mount, "/name");
    let volume = spec["volumes"]
        .as_array()
        .and_then(|volumes| volumes.iter().find(|v| v["name"] == volume_name))
        .unwrap_or_else(|| panic!("no volume {volume_name}"));
    let secret = str_at(volume, "/secret/secretName");
    if let Some(items) = volume["secret"]["items"].as_array() {
        let relative = &file[str_at(mount, "/mountPath").trim_end_matches('/').len() + 1..];
        assert!(
            items.iter().any(|item| item["path"] == relative),
            "{file}: no item of Secret {secret} is written to {relative}"
        );
    }
    (str_at(mount, "/mountPath"), secret)
}

/// No credential is written in a workload: every environment variable whose name says it holds
/// one comes from a Secret (`secretKeyRef`) or names a file on a mounted Secret, and no dataset
/// URI carries one (in its query or user info, by the server's own redaction rule).
fn assert_no_credential_literal(workload: &Value) {
    const CREDENTIAL_WORDS: [&str; 6] = ["KEY", "SECRET", "TOKEN", "PASSWORD", "SAS", "CREDENTIAL"];
    let container = container(workload);
    for var in container["env"].as_array().into_iter().flatten() {
        let name = str_at(var, "/name");
        if !CREDENTIAL_WORDS.iter().any(|word| name.contains(word)) {
            continue;
        }
        match var["value"].as_str() {
            None => assert!(
                var.pointer("/valueFrom/secretKeyRef").is_some(),
                "{name} must come from a Secret: {var:#}"
            ),
            Some(path) => {
                secret_volume_holding(workload, path);
            }
        }
    }
    if let Some(datasets) = env(container, "ACTIVATIONS_DATASETS") {
        for dataset in datasets.split(',') {
            // The server's own rule for what in a URI is secret: nothing to hide, nothing there.
            let uri = dataset.split_once('=').map_or(dataset, |(_, uri)| uri);
            assert_eq!(
                activations_server::redact::redact(uri),
                uri,
                "a credential in a dataset's URI: {dataset}"
            );
        }
    }
}

// --- the Containerfile --------------------------------------------------------------------

/// The Containerfile's instructions, as (KEYWORD, arguments): comments dropped, continued
/// lines joined.
fn containerfile() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(workspace_root().join("Containerfile")).unwrap();
    let mut instructions = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && pending.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(start) => {
                pending.push_str(start);
                pending.push(' ');
            }
            None => {
                pending.push_str(trimmed);
                let (keyword, args) = pending.split_once(char::is_whitespace).unwrap();
                instructions.push((keyword.to_uppercase(), args.trim().to_string()));
                pending.clear();
            }
        }
    }
    assert!(
        pending.is_empty(),
        "the Containerfile ends inside a continued line"
    );
    instructions
}

/// The Containerfile's final stage: the instructions after its last FROM, and that FROM's
/// image.
fn final_stage(instructions: &[(String, String)]) -> (&str, &[(String, String)]) {
    let last_from = instructions
        .iter()
        .rposition(|(keyword, _)| keyword == "FROM")
        .expect("a FROM");
    (&instructions[last_from].1, &instructions[last_from + 1..])
}

/// The user ID the image runs as (USER of the final stage), which must be a number.
fn image_user_id() -> u64 {
    let instructions = containerfile();
    let (_, stage) = final_stage(&instructions);
    let user = stage
        .iter()
        .rev()
        .find(|(keyword, _)| keyword == "USER")
        .map(|(_, user)| user.as_str())
        .expect("the final stage sets USER: without it the image runs as root");
    let uid = user.split(':').next().unwrap();
    uid.parse()
        .unwrap_or_else(|_| panic!("USER {user}: a numeric user, which runAsNonRoot can check"))
}

#[test]
fn the_containerfile_builds_both_binaries_and_runs_the_server_as_non_root() {
    let instructions = containerfile();
    let images: Vec<&str> = instructions
        .iter()
        .filter(|(keyword, _)| keyword == "FROM")
        .map(|(_, args)| args.split_whitespace().next().unwrap())
        .collect();
    assert!(images.len() >= 2, "a multi-stage build: {images:?}");
    for image in &images {
        let name = image.rsplit('/').next().unwrap();
        let tag = name.split_once(':').map(|(_, tag)| tag);
        assert!(
            image.contains("@sha256:") || tag.is_some_and(|tag| tag != "latest"),
            "{image}: base images are pinned by tag"
        );
    }
    assert!(
        images[0].contains("/rust:") || images[0].starts_with("rust:"),
        "the builder is an official Rust image: {}",
        images[0]
    );

    let build = instructions
        .iter()
        .find(|(keyword, args)| keyword == "RUN" && args.contains("cargo build"))
        .map(|(_, args)| args.as_str())
        .expect("a RUN of cargo build");
    for part in [
        "--release",
        "--locked",
        "-p activations-server",
        "-p activations-cli",
    ] {
        assert!(build.contains(part), "cargo build without {part}: {build}");
    }

    let (runtime, stage) = final_stage(&instructions);
    assert!(
        !runtime.contains("/rust:"),
        "the runtime is a small image, not the builder: {runtime}"
    );
    let all = |keyword: &str| -> String {
        stage
            .iter()
            .filter(|(k, _)| k == keyword)
            .map(|(_, args)| args.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let copied = all("COPY");
    for binary in ["activations-server", "activations "] {
        assert!(
            format!("{copied} ").contains(binary),
            "{binary}is not copied into the image: {copied}"
        );
    }
    let env = all("ENV");
    for setting in [
        "ACTIVATIONS_LISTEN=0.0.0.0:50051",
        "ACTIVATIONS_METRICS_LISTEN=0.0.0.0:9090",
    ] {
        assert!(env.contains(setting), "ENV without {setting}: {env}");
    }
    assert!(
        !env.contains("ACTIVATIONS_DATASETS"),
        "no dataset in the image: it serves the bundled sample until one is configured"
    );
    let exposed = all("EXPOSE");
    let exposed: Vec<&str> = exposed.split_whitespace().collect();
    assert!(
        exposed.contains(&"50051") && exposed.contains(&"9090"),
        "EXPOSE {exposed:?}"
    );
    let entrypoint: Vec<String> = serde_json::from_str(&all("ENTRYPOINT"))
        .expect("ENTRYPOINT in the exec (JSON) form, so the server is PID 1 and gets SIGTERM");
    assert_eq!(
        entrypoint,
        ["/usr/local/bin/activations-server"],
        "the server, configured by its environment only (no flags)"
    );
    assert_ne!(image_user_id(), 0, "the image runs as root");
}

#[test]
fn image_sh_configures_its_image_as_the_containerfile_does() {
    let script = std::fs::read_to_string(workspace_root().join("deploy/image.sh")).unwrap();
    let uid = image_user_id();
    for expected in [
        "buildah from scratch".to_string(),
        "--env ACTIVATIONS_LISTEN=0.0.0.0:50051".to_string(),
        "--env ACTIVATIONS_METRICS_LISTEN=0.0.0.0:9090".to_string(),
        "--port 50051".to_string(),
        "--port 9090".to_string(),
        format!("user_id={uid}\n"),
        "--entrypoint '[\"/usr/local/bin/activations-server\"]'".to_string(),
        "localhost/activations-server:dev".to_string(),
    ] {
        assert!(
            script.contains(&expected),
            "deploy/image.sh lacks {expected:?}"
        );
    }
    assert!(
        !script.contains("buildah pull") && !script.contains("buildah from docker"),
        "deploy/image.sh pulls no base image"
    );
}

// --- the manifests ------------------------------------------------------------------------

#[test]
#[ignore = "needs kubernetes-validate in .venv and kubectl; run by scripts/test.sh"]
fn the_base_and_the_example_overlay_render_and_validate() {
    for dir in [BASE, OVERLAY] {
        let objects = rendered(dir);
        for (kind, name) in [
            ("Deployment", DEPLOYMENT),
            ("Service", HEADLESS_SERVICE),
            ("Service", SERVICE),
            ("PodDisruptionBudget", DEPLOYMENT),
        ] {
            object(objects, kind, name);
        }
    }
}

#[test]
#[ignore = "needs kubernetes-validate in .venv and kubectl; run by scripts/test.sh"]
fn every_example_validates() {
    let dir = workspace_root().join("deploy/examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no example in {}", dir.display());
    for file in files {
        let objects = yaml_documents(&std::fs::read_to_string(&file).unwrap());
        assert!(!objects.is_empty(), "{} holds no object", file.display());
        validate(&file, &objects);
    }
}

#[test]
#[ignore = "needs kubernetes-validate in .venv and kubectl; run by scripts/test.sh"]
fn the_grace_period_covers_the_pre_stop_sleep_and_the_drain() {
    for dir in [BASE, OVERLAY] {
        let objects = rendered(dir);
        let deployment = object(objects, "Deployment", DEPLOYMENT);
        let container = container(deployment);
        let grace = seconds(required_env(container, "ACTIVATIONS_SHUTDOWN_GRACE"));
        let pre_stop = container
            .pointer("/lifecycle/preStop/sleep/seconds")
            .and_then(Value::as_u64)
            .expect("a preStop sleep, so the endpoints go before the drain starts");
        assert!(pre_stop > 0);
        let termination = u64_at(
            deployment,
            "/spec/template/spec/terminationGracePeriodSeconds",
        );
        assert!(
            termination > pre_stop + grace + CONNECTION_CLOSE_SECONDS,
            "{dir}: terminationGracePeriodSeconds {termination} must exceed the preStop sleep \
             ({pre_stop} s) + ACTIVATIONS_SHUTDOWN_GRACE ({grace} s) + the connections' close \
             ({CONNECTION_CLOSE_SECONDS} s), or SIGKILL cuts the drain"
        );
    }
}

#[test]
#[ignore = "needs kubernetes-validate in .venv and kubectl; run by scripts/test.sh"]
fn the_probes_check_the_grpc_health_on_the_grpc_port() {
    let base = container(object(rendered(BASE), "Deployment", DEPLOYMENT));
    let overlay = container(object(rendered(OVERLAY), "Deployment", DEPLOYMENT));
    let container = base;
    let grpc_port = container_port(container, "grpc");
    assert_eq!(grpc_port, GRPC_PORT);
    assert_eq!(
        port_of(required_env(container, "ACTIVATIONS_LISTEN")),
        grpc_port
    );
    // Readiness: the overall health (no service name), NOT_SERVING until the datasets are open
    // and while draining. Liveness: the `liveness` entry, SERVING while the process lives.
    for (probe, service) in [
        ("readinessProbe", ""),
        ("livenessProbe", "liveness"),
        ("startupProbe", "liveness"),
    ] {
        let Some(probe_spec) = container.get(probe) else {
            assert_ne!(probe, "readinessProbe", "a readiness probe is needed");
            assert_ne!(probe, "livenessProbe", "a liveness probe is needed");
            continue;
        };
        let grpc = probe_spec
            .get("grpc")
            .unwrap_or_else(|| panic!("{probe} is not a gRPC probe: {probe_spec:#}"));
        assert_eq!(u64_at(grpc, "/port"), grpc_port, "{probe}: {probe_spec:#}");
        assert_eq!(
            grpc["service"].as_str().unwrap_or(""),
            service,
            "{probe} checks the wrong health entry: {probe_spec:#}"
        );
    }

    // Under TLS, the kubelet's gRPC probe (plain text only) cannot pass: the overlay probes the
    // same health in plain HTTP on the metrics port (/readyz, /livez).
    let container = overlay;
    assert!(env(container, "ACTIVATIONS_TLS_CERT").is_some());
    for (probe, path) in [
        ("readinessProbe", "/readyz"),
        ("livenessProbe", "/livez"),
        ("startupProbe", "/livez"),
    ] {
        let probe_spec = at(container, &format!("/{probe}"));
        assert!(
            probe_spec.get("grpc").is_none(),
            "{OVERLAY}: {probe} is a plain-text gRPC probe of a TLS port: {probe_spec:#}"
        );
        let port = probe_spec
            .pointer("/httpGet/port")
            .unwrap_or_else(|| panic!("{OVERLAY}: {probe}: {probe_spec:#}"));
        assert!(
            is_port(container, port, "metrics"),
            "{probe}: {probe_spec:#}"
        );
        assert_eq!(
            probe_spec.pointer("/httpGet/path").and_then(|p| p.as_str()),
            Some(path),
            "{probe}: {probe_spec:#}"
        );
    }
}

#[test]
#[ignore = "needs kubernetes-validate in .venv and kubectl; run by scripts/test.sh"]
fn memory_covers_the_peak_rss_of_the_cache_budget() {
    for dir in [BASE, OVERLAY] {
        let objects = rendered(dir);
        let container = container(object(objects, "Deployment", DEPLOYMENT));
        let cache = server_bytes(required_env(container, "ACTIVATIONS_CACHE_BYTES"));
        assert_eq!(cache, 1 << 30, "{dir}: the cache is 1 GiB");
        let request = quantity_bytes(str_at(container, "/resources/requests/memory"));
        let limit = quantity_bytes(str_at(container, "/resources/limits/memory"));
        let peak = PEAK_RSS_PER_CACHE_BYTE * cache as f64;
        assert!(
            request as f64 >= peak,
            "{dir}: a memory request of {request} bytes is below the peak RSS of a {cache}-byte \
             cache ({peak:.0} bytes)"
        );
        assert!(
            limit >= request,
            "{dir}: memory limit {limit} < request {request}"
        );
        assert_eq!(str_at(container, "/resources/requests/cpu"), "1");
    }
}

#[test]
#[ignore = "needs kubernetes-validate in .venv and kubectl; run by scripts/test.sh"]
fn the_services_and_the_disruption_budget_select_the_server_pods() {
    for dir in [BASE, OVERLAY] {
        let objects = rendered(dir);
        let deployment = object(objects, "Deployment", DEPLOYMENT);
        assert_eq!(u64_at(deployment, "/spec/replicas"), 3);
        let labels = pod_labels(deployment);
        let container = container(deployment);
        assert!(
            selects(at(deployment, "/spec/selector/matchLabels"), labels),
            "{dir}: the Deployment's selector does not match its pods"
        );

        let headless = object(objects, "Service", HEADLESS_SERVICE);
        assert_eq!(
            str_at(headless, "/spec/clusterIP"),
            "None",
            "{dir}: {HEADLESS_SERVICE} must be headless, for the SDK's DNS routing"
        );
        let service = object(objects, "Service", SERVICE);
        assert_ne!(
            service["spec"]["clusterIP"], "None",
            "{SERVICE} has a cluster IP"
        );
        assert!(matches!(
            service["spec"]["type"].as_str(),
            None | Some("ClusterIP")
        ));
        for service in [headless, service] {
            let name = str_at(service, "/metadata/name");
            assert!(
                selects(at(service, "/spec/selector"), labels),
                "{dir}: Service {name} does not select the server's pods"
            );
            let ports = at(service, "/spec/ports").as_array().unwrap();
            let grpc = ports
                .iter()
                .find(|p| p["name"] == "grpc")
                .unwrap_or_else(|| panic!("{dir}: Service {name} has no port named grpc"));
            assert_eq!(u64_at(grpc, "/port"), GRPC_PORT, "{name}");
            let target = grpc.get("targetPort").unwrap_or(&grpc["port"]);
            assert!(is_port(container, target, "grpc"), "{name}: {grpc:#}");
        }

        let budget = object(objects, "PodDisruptionBudget", DEPLOYMENT);
        assert_eq!(u64_at(budget, "/spec/maxUnavailable"), 1);
        assert!(budget.pointer("/spec/selector/matchExpressions").is_none());
        assert!(
            selects(at(budget, "/spec/selector/matchLabels"), labels),
            "{dir}: the disruption budget does not select the server's pods"
        );
        assert_eq!(
            at(budget, "/spec/selector/matchLabels"),
            at(deployment, "/spec/selector/matchLabels"),
            "{dir}: the budget covers exactly the Deployment's pods"
        );
    }
}

#[test]
#[ignore = "needs kubernetes-validate in .venv and kubectl; run by scripts/test.sh"]
fn the_pods_run_unprivileged_and_are_scraped_by_prometheus() {
    let image_uid = image_user_id();
    for dir in [BASE, OVERLAY] {
        let objects = rendered(dir);
        let deployment = object(objects, "Deployment", DEPLOYMENT);
        let pod = at(deployment, "/spec/template/spec");
        let container = container(deployment);
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{dir}");
        let uid = pod["securityContext"]["runAsUser"]
            .as_u64()
            .unwrap_or(image_uid);
        assert_ne!(uid, 0, "{dir}: runs as root");
        assert_eq!(uid, image_uid, "{dir}: not the image's user");
        let security = at(container, "/securityContext");
        assert_eq!(security["allowPrivilegeEscalation"], false, "{dir}");
        assert_eq!(security["readOnlyRootFilesystem"], true, "{dir}");
        assert_eq!(
            security["capabilities"]["drop"],
            serde_json::json!(["ALL"]),
            "{dir}"
        );
        assert_ne!(security["privileged"], true, "{dir}");

        let annotations = at(deployment, "/spec/template/metadata/annotations");
        assert_eq!(annotations["prometheus.io/scrape"], "true", "{dir}");
        assert_eq!(annotations["prometheus.io/path"], "/metrics", "{dir}");
        let port: u64 = str_at(annotations, "/prometheus.io~1port").parse().unwrap();
        assert_eq!(port, METRICS_PORT);
        assert_eq!(container_port(container, "metrics"), port, "{dir}");
        assert_eq!(
            port_of(required_env(container, "ACTIVATIONS_METRICS_LISTEN")),
            port,
            "{dir}: the server serves metrics elsewhere"
        );
        assert_no_credential_literal(deployment);
    }
}

#[test]
#[ignore = "needs kubernetes-validate in .venv and kubectl; run by scripts/test.sh"]
fn the_example_overlay_takes_tls_and_tokens_from_mounted_secrets() {
    let objects = rendered(OVERLAY);
    let namespace = str_at(
        object(objects, "Namespace", "activations"),
        "/metadata/name",
    );
    for object in objects.iter().filter(|o| o["kind"] != "Namespace") {
        assert_eq!(
            object["metadata"]["namespace"], namespace,
            "{OVERLAY}: everything in namespace {namespace}: {object:#}"
        );
    }
    let deployment = object(objects, "Deployment", DEPLOYMENT);
    let container = container(deployment);
    let image = str_at(container, "/image");
    let tag = image.rsplit('/').next().unwrap().split_once(':');
    assert!(
        tag.is_some_and(|(_, tag)| tag != "latest" && tag != "dev"),
        "{OVERLAY}: a released tag: {image}"
    );

    let (tls_dir, tls_secret) =
        secret_volume_holding(deployment, required_env(container, "ACTIVATIONS_TLS_CERT"));
    let (key_dir, key_secret) =
        secret_volume_holding(deployment, required_env(container, "ACTIVATIONS_TLS_KEY"));
    assert_eq!(
        (tls_dir, tls_secret),
        (key_dir, key_secret),
        "the certificate and its key come from one kubernetes.io/tls Secret"
    );
    assert!(required_env(container, "ACTIVATIONS_TLS_CERT").ends_with("/tls.crt"));
    assert!(required_env(container, "ACTIVATIONS_TLS_KEY").ends_with("/tls.key"));
    let (_, tokens_secret) = secret_volume_holding(
        deployment,
        required_env(container, "ACTIVATIONS_AUTH_TOKENS_FILE"),
    );
    assert_ne!(tokens_secret, tls_secret);
    assert!(
        env(container, "ACTIVATIONS_AUTH_TOKENS").is_none(),
        "tokens by file only, so that they are reloaded"
    );
    assert_no_credential_literal(deployment);
}

#[test]
#[ignore = "needs kubernetes-validate in .venv and kubectl; run by scripts/test.sh"]
fn the_export_job_runs_one_shard_per_completion_index_through_the_headless_service() {
    let overlay = rendered(OVERLAY);
    let server = container(object(overlay, "Deployment", DEPLOYMENT));
    let headless = object(overlay, "Service", HEADLESS_SERVICE);
    let namespace = str_at(headless, "/metadata/namespace");

    let path = workspace_root().join(EXPORT_JOB);
    let objects = yaml_documents(&std::fs::read_to_string(&path).unwrap());
    validate(&path, &objects);
    let job = objects
        .iter()
        .find(|o| o["kind"] == "Job")
        .expect("a Job in the export example");
    assert_eq!(str_at(job, "/metadata/namespace"), namespace);
    assert_eq!(str_at(job, "/spec/completionMode"), "Indexed");
    let shards = u64_at(job, "/spec/completions");
    assert!(shards > 1);
    assert_eq!(u64_at(job, "/spec/parallelism"), shards);

    let container = container(job);
    assert_eq!(str_at(container, "/image"), str_at(server, "/image"));
    assert_eq!(
        at(container, "/command"),
        &serde_json::json!(["activations"])
    );
    let args: Vec<&str> = at(container, "/args")
        .as_array()
        .unwrap()
        .iter()
        .map(|arg| arg.as_str().expect("string arguments"))
        .collect();
    let value_of = |option: &str| -> &str {
        args.iter()
            .position(|arg| *arg == option)
            .and_then(|i| args.get(i + 1))
            .unwrap_or_else(|| panic!("no {option} VALUE in {args:?}"))
    };
    assert_eq!(
        value_of("--server"),
        format!("dns:///{HEADLESS_SERVICE}.{namespace}.svc.cluster.local:{GRPC_PORT}")
    );
    assert!(args.contains(&"export"), "{args:?}");
    assert_eq!(
        value_of("--shard"),
        format!("$(JOB_COMPLETION_INDEX)/{shards}")
    );
    let out = value_of("--out");
    if args.contains(&"--jsonl") {
        assert!(
            out.contains("$(JOB_COMPLETION_INDEX)"),
            "each shard writes a neurons.jsonl of its own: --out {out}"
        );
    }
    let mounts = at(container, "/volumeMounts").as_array().unwrap();
    let mount = mounts
        .iter()
        .find(|m| out.starts_with(str_at(m, "/mountPath")))
        .unwrap_or_else(|| panic!("--out {out} is on no volume"));
    assert_ne!(mount["readOnly"], true);
    assert_eq!(
        str_at(job, "/spec/template/spec/restartPolicy"),
        "Never",
        "a failed pod is replaced, and its shard resumed"
    );
    // Under the overlay's TLS, the job trusts the servers' CA and sends a token.
    if env(server, "ACTIVATIONS_TLS_CERT").is_some() {
        secret_volume_holding(job, required_env(container, "ACTIVATIONS_TLS_CA"));
    }
    if env(server, "ACTIVATIONS_AUTH_TOKENS_FILE").is_some() {
        secret_volume_holding(job, required_env(container, "ACTIVATIONS_TOKEN_FILE"));
    }
    assert_no_credential_literal(job);
    let pod = at(job, "/spec/template/spec");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
}
