//! Benchmark (not a test): no-op returner calls per second through the
//! runtime alone (a fresh store per call) and through the HTTP API over the
//! unix socket, against a native baseline in the same run; and the daemon's
//! resident memory idle and with 64 calls in flight.
//!
//! `cargo bench -p returner-host --bench throughput` (see BENCHMARKS.md).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use returner_host::config::{Limits, ModuleSource};
use returner_host::dispatch::{parse_call, sandbox_config};
use returner_host::runtime::{Returner, Runtime, RuntimeOptions};
use returner_host_tests::{Daemon, HttpConn, guest, rss_kib, temp_dir, toml_path};
use serde_json::json;

/// How long each throughput phase runs.
const PHASE: Duration = Duration::from_secs(3);

const RET: &str = r#"{"ret": {"id": "m1", "jid": "20261123084300320186", "fun": "test.ping", "fun_args": [], "return": true, "retcode": 0, "success": true}}"#;

fn main() {
    // `cargo bench --bench throughput -- runtime` runs only the runtime phases.
    let only_runtime = std::env::args().any(|a| a == "runtime");
    let noop = guest("fixture-noop");
    println!("returner-host throughput benchmark ({} cores)", std::thread::available_parallelism().map_or(1, |n| n.get()));

    let baseline = native_baseline();
    println!("baseline  parse Salt args + build call, native, 1 thread: {baseline:>10.0} calls/s");

    let probe = Runtime::new(RuntimeOptions::default()).unwrap();
    println!("instance slots reset by: {}", if probe.resets_with_pagemap_scan() { "PAGEMAP_SCAN + memset" } else { "madvise" });
    drop(probe);

    let tokio1 = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let one = tokio1.block_on(runtime_calls(&noop, 1));
    println!("runtime   fresh store per call, 1 task on 1 thread:       {one:>10.0} calls/s");
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let tokio_n = tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build().unwrap();
    let many = tokio_n.block_on(runtime_calls(&noop, threads * 4));
    println!("runtime   fresh store per call, {} tasks on {threads} threads:     {many:>10.0} calls/s ({:.0} per core)", threads * 4, many / threads as f64);

    if only_runtime {
        return;
    }

    let dir = temp_dir();
    let daemon = bench_daemon(dir.path(), &noop);
    let http1 = http_calls(&daemon, 1);
    println!("http      unix socket, keep-alive, 1 client:              {http1:>10.0} calls/s");
    let http4 = http_calls(&daemon, 4);
    println!("http      unix socket, keep-alive, 4 clients:             {http4:>10.0} calls/s");

    let idle = rss_kib(daemon.pid());
    let peak = rss_in_flight(&daemon, 64);
    let per_call = (peak.saturating_sub(idle)) as f64 / 64.0;
    println!("memory    daemon RSS idle: {:.1} MiB; with 64 calls in flight: {:.1} MiB; {:.0} KiB per call in flight", idle as f64 / 1024.0, peak as f64 / 1024.0, per_call);

    println!();
    println!("ratios    runtime 1 thread / native baseline: {:.3}", one / baseline);
    println!("ratios    http 1 client / runtime 1 thread:   {:.3}", http1 / one);
}

/// What the host does per call without wasm: parse Salt's arguments.
fn native_baseline() -> f64 {
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < PHASE {
        for _ in 0..1000 {
            std::hint::black_box(parse_call("returner", std::hint::black_box(RET.as_bytes())).unwrap());
        }
        n += 1000;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

async fn runtime_calls(noop: &Path, tasks: usize) -> f64 {
    let runtime = Arc::new(Runtime::new(RuntimeOptions { instance_slots: tasks as u32 + 8, ..Default::default() }).unwrap());
    let module = runtime.load_module_file(noop).unwrap();
    let mut config = sandbox_config("noop", ModuleSource::File(noop.to_path_buf()));
    config.limits = Limits { max_concurrency: tasks as u32, ..Limits::default() };
    let returner = Arc::new(Returner::new(config, module, Default::default()));
    let call = parse_call("returner", RET.as_bytes()).unwrap();
    // Warm up: first instantiation maps the pool.
    returner.call(&runtime, &call).await.unwrap();

    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let (runtime, returner, call) = (runtime.clone(), returner.clone(), call.clone());
        handles.push(tokio::spawn(async move {
            let mut n = 0u64;
            while started.elapsed() < PHASE {
                returner.call(&runtime, &call).await.unwrap();
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for h in handles {
        total += h.await.unwrap();
    }
    total as f64 / started.elapsed().as_secs_f64()
}

fn bench_daemon(dir: &Path, noop: &Path) -> Daemon {
    let returner = format!(
        "[returners.noop]\nmodule = {}\nlimits = {{ max_concurrency = 64, deadline_ms = 10000 }}\n",
        toml_path(noop)
    );
    Daemon::with_config(Path::new(env!("CARGO_BIN_EXE_returner-host")), dir, "", &returner)
}

fn http_calls(daemon: &Daemon, clients: usize) -> f64 {
    let started = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let socket = daemon.socket.clone();
            std::thread::spawn(move || {
                let mut conn = HttpConn::connect(&socket);
                let mut n = 0u64;
                while started.elapsed() < PHASE {
                    let r = conn.post("/v1/returners/noop/returner", RET.as_bytes());
                    assert_eq!(r.status, 200, "{:?}", r.json);
                    n += 1;
                }
                n
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    total as f64 / started.elapsed().as_secs_f64()
}

/// Peak RSS while `n` calls that each sleep in the guest are in flight.
fn rss_in_flight(daemon: &Daemon, n: usize) -> u64 {
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let socket = daemon.socket.clone();
            std::thread::spawn(move || {
                let mut conn = HttpConn::connect(&socket);
                let r = conn.post("/v1/returners/noop/get_fun", json!({ "fun": "sleep:1500" }).to_string().as_bytes());
                assert_eq!(r.status, 200, "{:?}", r.json);
            })
        })
        .collect();
    let started = Instant::now();
    let mut peak = 0;
    while started.elapsed() < Duration::from_millis(1200) {
        peak = peak.max(rss_kib(daemon.pid()));
        std::thread::sleep(Duration::from_millis(50));
    }
    for h in handles {
        h.join().unwrap();
    }
    peak
}
