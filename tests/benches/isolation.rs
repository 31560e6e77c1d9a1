//! Benchmark (not a test): how much a hostile neighbour slows a well-behaved
//! returner. The local-cache returner stores the real Salt returns (from
//! host/src/testkit/salt) through the HTTP API, alone, then beside clients
//! that call the hostile suite back to back (a loop to its deadline, memory
//! growth to its cap, a trap, a panic, deep recursion, a 100 MB answer, a
//! flood of host calls, capability calls with no grant), then beside a
//! client whose every call makes 100,000 denied etcd reads (each call's
//! audit events capped, the rest counted), then alone again. Throughput and
//! latency of the good calls, and their ratio to the first phase, in the
//! same run.
//!
//! `cargo bench -p returner-host --bench isolation` (see BENCHMARKS.md).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use returner_host_tests::{Daemon, HttpConn, hostile_suite_toml, salt_fixture_lines, temp_dir};
use serde_json::{Value, json};

/// How long each phase runs.
const PHASE: Duration = Duration::from_secs(6);
/// Clients of the good returner, each with a kept-alive connection.
const GOOD_CLIENTS: usize = 2;

/// A hostile call: (returner, function, arguments, whether it answers 200).
type HostileCall = (&'static str, &'static str, Value, bool);

/// The hostile suite's calls. Only the denied capabilities answer 200 (with
/// the denials as data).
fn hostile_calls() -> Vec<HostileCall> {
    let ret = json!({ "ret": { "id": "m1", "jid": "20261123120000000001", "fun": "test.ping", "return": true } });
    vec![
        ("spin", "returner", ret.clone(), false),
        ("memhog", "returner", ret.clone(), false),
        ("trapper", "returner", ret, false),
        ("trapper", "get_load", json!({ "jid": "1" }), false),
        ("abuser", "get_load", json!({ "jid": "deep" }), false),
        ("abuser", "get_jid", json!({ "jid": "100" }), false),
        ("abuser", "get_fun", json!({ "fun": "flood" }), false),
        ("nogrant", "get_minions", json!({}), true),
    ]
}

/// 100,000 denied etcd reads per call, back to back.
fn denial_flood() -> Vec<HostileCall> {
    vec![("abuser", "get_jids", json!({}), true)]
}

struct Phase {
    calls_per_second: f64,
    p50: Duration,
    p99: Duration,
    hostile_calls: u64,
}

fn main() {
    let dir = temp_dir();
    let daemon = daemon(dir.path());
    let bodies: Vec<Vec<u8>> = salt_fixture_lines("minion-returns.jsonl")
        .into_iter()
        .map(|ret| json!({ "ret": ret }).to_string().into_bytes())
        .collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("returner-host isolation benchmark ({cores} cores, {GOOD_CLIENTS} good clients, {} s phases)", PHASE.as_secs());
    println!("good: local-cache storing the {} real Salt returns in turn over the unix socket", bodies.len());

    // Warm up: compile caches, page in the pool.
    phase(&daemon, &bodies, 0, hostile_calls);
    let alone = phase(&daemon, &bodies, 0, hostile_calls);
    report("alone", &alone, &alone);
    for hostile_clients in [1, 4] {
        let beside = phase(&daemon, &bodies, hostile_clients, hostile_calls);
        report(&format!("beside {hostile_clients} hostile client(s)"), &beside, &alone);
    }
    let flood = phase(&daemon, &bodies, 1, denial_flood);
    report("beside a flood of denials", &flood, &alone);
    let after = phase(&daemon, &bodies, 0, hostile_calls);
    report("alone again", &after, &alone);
}

fn report(name: &str, p: &Phase, alone: &Phase) {
    println!(
        "{name:<28} {:>8.0} good calls/s  p50 {:>7.2} ms  p99 {:>7.2} ms  hostile calls {:>4}  ratio to alone {:.3}",
        p.calls_per_second,
        p.p50.as_secs_f64() * 1e3,
        p.p99.as_secs_f64() * 1e3,
        p.hostile_calls,
        p.calls_per_second / alone.calls_per_second
    );
}

/// Good traffic for one phase, beside `hostile_clients` clients making `calls` in turn.
fn phase(daemon: &Daemon, bodies: &[Vec<u8>], hostile_clients: usize, calls: fn() -> Vec<HostileCall>) -> Phase {
    let stop = Arc::new(AtomicBool::new(false));
    let hostile_done = Arc::new(AtomicU64::new(0));
    let hostile: Vec<_> = (0..hostile_clients)
        .map(|i| {
            let (socket, stop, done) = (daemon.socket.clone(), stop.clone(), hostile_done.clone());
            std::thread::spawn(move || {
                let mut conn = HttpConn::connect(&socket);
                let calls = calls();
                let mut n = i;
                while !stop.load(Ordering::Relaxed) {
                    let (returner, function, args, answers) = &calls[n % calls.len()];
                    let r = conn.post(&format!("/v1/returners/{returner}/{function}"), args.to_string().as_bytes());
                    assert_eq!(r.status == 200, *answers, "{returner}.{function}: {:?}", r.json);
                    done.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                }
            })
        })
        .collect();

    let started = Instant::now();
    let good: Vec<_> = (0..GOOD_CLIENTS)
        .map(|client| {
            let socket = daemon.socket.clone();
            let bodies = bodies.to_vec();
            std::thread::spawn(move || {
                let mut conn = HttpConn::connect(&socket);
                let mut latencies = Vec::new();
                let mut n = client;
                while started.elapsed() < PHASE {
                    let t = Instant::now();
                    let r = conn.post("/v1/returners/good/returner", &bodies[n % bodies.len()]);
                    latencies.push(t.elapsed());
                    assert_eq!(r.status, 200, "a good call failed: {:?}", r.json);
                    n += 1;
                }
                latencies
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = good.into_iter().flat_map(|h| h.join().unwrap()).collect();
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for h in hostile {
        h.join().unwrap();
    }
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Phase {
        calls_per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
        hostile_calls: hostile_done.load(Ordering::Relaxed),
    }
}

fn daemon(dir: &Path) -> Daemon {
    Daemon::with_config(Path::new(env!("CARGO_BIN_EXE_returner-host")), dir, "", &hostile_suite_toml(&dir.join("jobs")))
}
