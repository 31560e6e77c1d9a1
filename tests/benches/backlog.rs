//! Benchmark (not a test): the host's resident memory while its spool's
//! backlog grows. One `returner-host serve` (release) with an etcd returner
//! whose etcd is not there, so nothing is delivered; 8 clients write small
//! real Salt returns, each with a jid of its own, until the spool holds
//! `BACKLOG` of them (default 1,000,000). Every tenth of the way it prints
//! the backlog, the spool file's size and the daemon's resident set.
//!
//! `cargo bench -p returner-host --bench backlog` (see BENCHMARKS.md);
//! `BACKLOG=100000` for a shorter run.

use std::path::Path;
use std::time::Instant;

use returner_host_tests::{Daemon, free_port, guest, rss_kib, salt_fixture_lines, temp_dir, toml_path};
use serde_json::Value;

const CLIENTS: usize = 8;

fn main() {
    let backlog: u64 = std::env::var("BACKLOG").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let dir = temp_dir();
    // Nothing listens there: every delivery fails and the spool holds it all.
    let config = format!(
        "[profiles.main]\nkind = \"etcd\"\nendpoints = [\"http://127.0.0.1:{port}\"]\n\n\
         [returners.etcd]\nmodule = {module}\n\
         grants.etcd = {{ profile = \"main\", root = \"/salt/return\", ops = [\"read\", \"write\"] }}\n",
        port = free_port(),
        module = toml_path(&guest("returner-etcd")),
    );
    let daemon = Daemon::with_config(Path::new(env!("CARGO_BIN_EXE_returner-host")), dir.path(), "", &config);
    let returns: Vec<Value> = salt_fixture_lines("minion-returns.jsonl").into_iter().filter(|r| r.to_string().len() < 1000).collect();
    let sizes: Vec<usize> = returns.iter().map(|r| r.to_string().len()).collect();
    println!("returner-host spool backlog benchmark: {backlog} returns of {} real shapes ({:?} bytes), {CLIENTS} clients", returns.len(), sizes);
    println!("{:>10} {:>12} {:>14} {:>10} {:>12}", "backlog", "spool MiB", "resident MiB", "acks/s", "elapsed s");
    let rss = |pid: u32| rss_kib(pid) as f64 / 1024.0;
    println!("{:>10} {:>12} {:>14.1} {:>10} {:>12}", 0, "-", rss(daemon.pid()), "-", 0);

    let started = Instant::now();
    let step = backlog / 10;
    daemon.write_returns("etcd", &returns, 0, backlog, CLIENTS, |n| {
        if (n + 1) % step == 0 {
            let file = std::fs::metadata(dir.path().join("var/spool/spool.redb")).map_or(0, |m| m.len());
            let elapsed = started.elapsed().as_secs_f64();
            println!(
                "{:>10} {:>12.1} {:>14.1} {:>10.0} {:>12.1}",
                n + 1,
                file as f64 / 1048576.0,
                rss(daemon.pid()),
                (n + 1) as f64 / elapsed,
                elapsed
            );
        }
    });
    let queue = daemon.queue("etcd");
    println!("spool status of etcd at the end: {queue}");
    assert_eq!(queue["items"].as_u64(), Some(backlog), "the spool holds every acknowledged return");
}
