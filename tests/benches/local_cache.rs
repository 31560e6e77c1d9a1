//! Benchmark (not a test): Salt job returns delivered per second by the
//! embedded local-cache returner, through the spool, into a job cache that
//! already holds 0, 10,000 and 50,000 jobs.
//!
//! Each phase starts the `returner-host serve` binary of this build (release
//! under `cargo bench`) on a fresh cache, filled beforehand (natively, in
//! Salt's layout: a job directory with its `jid` file and one minion's
//! `return.p`), then sends returns of the real payloads
//! (host/src/testkit/salt), each with a jid of its own as in the soak, from
//! 8 clients. It counts them delivered per second from the first sent until
//! every one is delivered, and, apart, the rate at which the backlog left
//! once the clients were done drained (delivery alone, nothing else running
//! in the host); then it checks that every one is a `return.p` in the cache.
//! The grant's quota is set large (`LOCAL_CACHE_BENCH_QUOTA_MIB`, default
//! 16384) so that what is measured is the write path, not a full quota.
//!
//! `cargo bench -p returner-host --bench local_cache [-- 0 10000 50000]`
//! (the cache sizes; `LOCAL_CACHE_BENCH_RETURNS` returns per phase, default
//! 4000). See BENCHMARKS.md.

use std::path::Path;
use std::time::{Duration, Instant};

use returner_host_tests::{Daemon, count_files, salt_fixture_lines, temp_dir, toml_path};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// Clients sending at once, as in the soak.
const CLIENTS: usize = 8;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let sizes: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() { vec![0, 10_000, 50_000] } else { sizes };
    let returns = env_or("LOCAL_CACHE_BENCH_RETURNS", 4000);
    let quota_mib = env_or("LOCAL_CACHE_BENCH_QUOTA_MIB", 16384);
    let fixtures = salt_fixture_lines("minion-returns.jsonl");
    println!(
        "returner-host local-cache benchmark ({} cores): {returns} returns per phase from {CLIENTS} clients, quota {quota_mib} MiB",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    for jobs in sizes {
        let (filled, rates) = phase(&fixtures, jobs, returns, quota_mib);
        println!(
            "cache of {jobs:>6} jobs (filled in {:>5.1} s): {:>6.0} acknowledged/s, {:>5.0} delivered/s, backlog drained at {:>5.0}/s",
            filled.as_secs_f64(),
            rates.acked,
            rates.delivered,
            rates.drained
        );
    }
}

/// The job directory of `jid` under `root`: Salt's `jid_dir` with sha256.
fn job_dir(root: &Path, jid: &str) -> std::path::PathBuf {
    let hex = hex::encode(Sha256::digest(jid.as_bytes()));
    root.join(&hex[..2]).join(&hex[2..])
}

/// `jobs` jobs in Salt's layout under `root`, each with one minion's return.
fn fill(root: &Path, jobs: u64) {
    for n in 0..jobs {
        let jid = format!("2025{n:016}");
        let minion = job_dir(root, &jid).join("m1");
        std::fs::create_dir_all(&minion).unwrap();
        std::fs::write(minion.parent().unwrap().join("jid"), &jid).unwrap();
        std::fs::write(minion.join("return.p"), br#"{"return":true,"retcode":0,"success":true}"#).unwrap();
    }
}

/// Returns per second in one phase.
struct Rates {
    /// Acknowledged (on disk in the spool) while the clients sent.
    acked: f64,
    /// Delivered, from the first sent until the last delivered.
    delivered: f64,
    /// Delivered once the clients were done: the backlog left then, over
    /// the time it took to drain.
    drained: f64,
}

/// One phase on a cache of `jobs` jobs: how long filling took, and the rates.
fn phase(fixtures: &[Value], jobs: u64, returns: u64, quota_mib: u64) -> (Duration, Rates) {
    let dir = temp_dir();
    let root = dir.path().join("jobs");
    std::fs::create_dir_all(&root).unwrap();
    let filling = Instant::now();
    fill(&root, jobs);
    let filled = filling.elapsed();
    let config = format!(
        "[returners.local_cache]\nmodule = \"builtin:local-cache\"\nlimits = {{ deadline_ms = 30000 }}\n\
         grants.fs = {{ dir = {}, mode = \"rw\", quota_mib = {quota_mib} }}\n",
        toml_path(&root)
    );
    let host = Daemon::with_config(Path::new(env!("CARGO_BIN_EXE_returner-host")), dir.path(), "", &config);
    if jobs > 0 {
        // The filled jobs are in the layout the returner reads.
        let got = host.call("local_cache", "get_jid", &json!({ "jid": format!("2025{:016}", jobs - 1) }));
        assert_eq!(got.result(), &json!({"m1": {"return": true, "retcode": 0, "success": true}}), "the filled cache");
    }
    let started = Instant::now();
    host.write_returns("local_cache", fixtures, 0, returns, CLIENTS, |_| {});
    let sent = started.elapsed();
    let backlog = host.queue("local_cache")["items"].as_u64().unwrap();
    let backlog_at = started.elapsed();
    host.settle("local_cache", Duration::from_secs(3600));
    let drained = started.elapsed();
    assert!(host.dead_letters("local_cache").is_empty(), "dead letters: {:?}", host.dead_letters("local_cache"));
    assert_eq!(count_files(&root, "return.p"), jobs + returns, "every return delivered is a return.p in the cache");
    let rates = Rates {
        acked: returns as f64 / sent.as_secs_f64(),
        delivered: returns as f64 / drained.as_secs_f64(),
        drained: backlog as f64 / (drained - backlog_at).as_secs_f64(),
    };
    (filled, rates)
}
