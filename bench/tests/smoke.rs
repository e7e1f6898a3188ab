//! Every scenario of `activations-load`, tiny, against servers in this process: the table has
//! each row with a positive throughput and the chart is drawn.

use activations_bench::{
    chart,
    datagen::{DatasetSpec, write_dataset},
    launcher::Launcher,
    report,
    scenarios::{Plan, run_all, run_cold},
};
use activations_format::layout::Layout;

fn tiny_plan(dataset_dir: std::path::PathBuf) -> Plan {
    Plan {
        dataset_dir,
        dataset: String::new(),
        layers: 2,
        neurons: 8,
        n_examples: 5,
        cold_neurons: 16,
        cold_concurrency: 4,
        cold_cache_bytes: 0,
        ceiling_threads: 2,
        hot_neurons: 4,
        warm_requests: 20,
        warm_concurrency: vec![1, 4, 16],
        warm_cache_bytes: 64 << 20,
        bulk_neurons: 16,
        bulk_cache_bytes: 64 << 20,
        memory_cache_bytes: 2 << 20,
        memory_passes: 2,
        repeat: 2,
    }
}

fn tiny_dataset() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let spec = DatasetSpec {
        layers: 2,
        neurons: 8,
        seed: 1,
        layout: Layout::Flat,
    };
    write_dataset(dir.path(), &spec, 2).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_reports_a_positive_throughput_and_the_chart_is_drawn() {
    let dir = tiny_dataset();
    let plan = tiny_plan(dir.path().to_path_buf());

    let results = run_all(&plan, &Launcher::InProcess).await.unwrap();
    let table = report::markdown(&results, "test machine");

    let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("| ")).collect();
    for scenario in [
        "cold: ",
        "cold ceiling: ",
        "warm: ",
        "warm ceiling: ",
        "bulk: range, 4 splits, uncompressed",
        "bulk: range, 4 splits, zstd",
        "memory: pass 1",
        "memory: pass 2",
        "memory: peak",
    ] {
        assert!(
            rows.iter()
                .any(|row| row.starts_with(&format!("| {scenario}"))),
            "no {scenario:?} row in\n{table}"
        );
    }
    // Every throughput cell (4th column) of a measured row is a positive number.
    for row in rows.iter().skip(2).filter(|row| !row.contains("peak")) {
        let throughput = row.split('|').nth(4).unwrap().trim();
        let value: f64 = throughput
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(value > 0.0, "{row}");
    }
    assert_eq!(results.warm.len(), 3);
    assert_eq!(results.cold.neurons, 16);
    assert!(results.bulk.iter().all(|run| run.figures.neurons == 16));
    assert!(
        results
            .bulk
            .iter()
            .all(|run| run.figures.records == 16 * 35)
    );
    assert!(table.contains("cold vs in-process read+parse ceiling:"));
    assert!(table.contains("warm req/s vs echo ceiling at c=16:"));

    let svg = chart::latency_svg(&results.warm, &results.warm_ceiling);
    assert!(svg.starts_with("<svg"));
    assert_eq!(svg.matches("<polyline").count(), 6);
}

/// What `activations-load --cold-only` prints, and `scripts/bench-compare.sh` reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cold_run_alone_reads_every_neuron_once_on_both_sides() {
    let dir = tiny_dataset();
    let plan = tiny_plan(dir.path().to_path_buf());

    let results = run_cold(&plan, &Launcher::InProcess).await.unwrap();

    assert!(results.fresh_servers);
    assert_eq!(results.cold.requests, 16);
    assert_eq!(results.cold.neurons, 16);
    assert_eq!(results.cold.records, 16 * 35);
    assert_eq!(results.cold_ceiling.neurons, 16);
    assert!(results.cold.neurons_per_second > 0.0);
    assert!(results.cold_ceiling.neurons_per_second > 0.0);
    let json: serde_json::Value = serde_json::to_value(&results).unwrap();
    for path in [
        "/cold/neurons_per_second",
        "/cold_ceiling/neurons_per_second",
    ] {
        assert!(
            json.pointer(path).is_some_and(serde_json::Value::is_f64),
            "{path} in {json}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replicas_scenario_finds_every_second_pass_neuron_cached_with_affinity() {
    use activations_bench::replicas::{ReplicasPlan, markdown, run_replicas};

    let dir = tiny_dataset();
    let plan = tiny_plan(dir.path().to_path_buf());
    let replicas = ReplicasPlan {
        replicas: 3,
        cache_bytes: 2 << 20,
        working_set: 0.5,
        first_byte: std::time::Duration::ZERO,
        concurrency: 4,
    };
    let results = run_replicas(&plan, &replicas, &Launcher::InProcess)
        .await
        .unwrap();
    assert!(
        results.neurons > 0 && results.neurons <= 16,
        "{}",
        results.neurons
    );
    let [affinity, round_robin] = &results.runs[..] else {
        panic!("{:?}", results.runs);
    };
    assert_eq!(affinity.policy, "Affinity");
    assert_eq!(affinity.first.storage_reads, results.neurons);
    assert_eq!(affinity.second.storage_reads, 0);
    assert!((affinity.second.hit_ratio - 1.0).abs() < f64::EPSILON);
    assert_eq!(round_robin.policy, "RoundRobin");
    assert!(round_robin.second.storage_reads > 0);
    // Servers of this process cannot be killed as a crash would: no failover figure.
    assert!(results.failover.is_none());
    let table = markdown(&results);
    assert!(table.contains("| Affinity |"), "{table}");
    assert!(table.contains("Failover: not measured"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_remote_scenario_measures_bulk_and_the_read_path_against_the_limit() {
    use activations_bench::remote::{RemotePlan, markdown, run_remote};

    let dir = tiny_dataset();
    let plan = tiny_plan(dir.path().to_path_buf());
    let remote = RemotePlan {
        first_byte: vec![std::time::Duration::from_millis(5)],
        per_connection: 50 << 20,
        total: 500 << 20,
        bulk_neurons: 16,
        cold_neurons: 8,
        python: None,
    };
    let results = run_remote(&plan, &remote, &Launcher::InProcess, 1_000.0)
        .await
        .unwrap();
    let [run] = &results.runs[..] else {
        panic!("{:?}", results.runs);
    };
    // The read path reads every bulk neuron once, through the server's own store.
    assert_eq!(run.read_path.neurons, 16);
    assert!(run.read_path.neurons_per_second > 0.0);
    assert_eq!(run.bulk.neurons, 16);
    assert!(results.bytes_per_neuron > 0.0);
    let table = markdown(&results);
    let row = table.lines().find(|l| l.starts_with("| 5 ms |")).unwrap();
    assert_eq!(row.matches('|').count(), 11, "{row}");
}
