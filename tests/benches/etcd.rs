//! Benchmark (not a test): Salt job returns per second into one freshly
//! started etcd, in one run, by three writers storing the same real returns
//! (from host/src/testkit/salt) in Salt's layout:
//! - **host**: the release `returner-host serve` binary running the shipped
//!   etcd returner, called over its unix socket with kept-alive connections:
//!   returns acknowledged per second (durable in the spool, fsync on), and
//!   delivered per second, counting until every acknowledged one is in etcd;
//! - **native**: Rust with `etcd-client` directly, doing the same work per
//!   return (parse the request, `json.dumps` each field, one lease, one
//!   transaction of the same keys and values), from each client;
//! - **native batched**: the same, from one task in the batches the spool
//!   delivers (256 returns, one lease, transactions of whole returns up to
//!   etcd's 128 operations and 1 MiB, sent 16 at a time), as the returner
//!   packs and sends them;
//! - **salt**: Salt 3007's own `etcd_return` (v3 API through etcd3-py, one
//!   round trip and one lease per key) in Python processes, one per client.
//!
//! Each writer runs with 1 client, then with 8 at once; every return gets a
//! lease of one hour. Host and native then run again without the one large
//! return (126 KiB of `cmd.run` output), which shows what the host adds when
//! the JSON is small.
//!
//! `cargo bench -p returner-host --bench etcd` (see BENCHMARKS.md);
//! `-- no-salt` leaves Salt's leg out; `-- drain` runs only the drain phase
//! (delivery alone, from a backlog built while etcd is down).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use returner_host::caps::etcd::BATCHES_IN_FLIGHT;
use returner_host_tests::etcd::EtcdServer;
use returner_host_tests::salt::venv_3007;
use returner_host_tests::{Daemon, HttpConn, guest, salt_fixture_lines, temp_dir, toml_path};
use returner_sdk::salt::json_dumps;
use serde_json::{Value, json};

/// How long each writer runs at a time, and how many times host and native
/// take turns (the median counts).
const PHASE: Duration = Duration::from_secs(3);
const ROUNDS: usize = 3;
/// How long Salt's writer runs (it is slow enough to be steady).
const SALT_PHASE: Duration = Duration::from_secs(5);
/// Clients at once: one (each return waits for the previous), then several.
const CONCURRENCY: [usize; 2] = [1, 8];
/// The lease of every return, in seconds.
const TTL: u32 = 3600;
/// A return under this size is "small" for the second round.
const SMALL_BYTES: usize = 10_000;
/// The root every writer writes under (Salt's default `etcd.returner_root`).
const ROOT: &str = "/salt/return";
/// Returns per delivery call: the spool's default `batch_max_items`.
const DELIVERY_BATCH: usize = 256;
/// etcd's default `--max-txn-ops`, and the bytes the returner puts in one
/// transaction at most.
const MAX_TXN_OPS: usize = 128;
const MAX_TXN_BYTES: usize = 1024 * 1024;

fn main() {
    // `cargo bench --bench etcd -- no-salt` leaves Salt's leg out.
    let with_salt = !std::env::args().any(|a| a == "no-salt");
    let etcd = EtcdServer::start();
    let fixtures = salt_storable_fixtures();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "returner-host etcd benchmark ({cores} cores, etcd {}; host and native: median of {ROUNDS} turns of {} s; salt: one of {} s)",
        etcd_version(),
        PHASE.as_secs(),
        SALT_PHASE.as_secs()
    );
    println!(
        "returns: {} of the {} real Salt minion returns (Salt 3007's etcd_return cannot store the others), {} to {} bytes",
        fixtures.len(),
        salt_fixture_lines("minion-returns.jsonl").len(),
        fixtures.iter().map(|f| f.to_string().len()).min().unwrap_or(0),
        fixtures.iter().map(|f| f.to_string().len()).max().unwrap_or(0),
    );
    // On a disk every commit waits for etcd's fsync; on tmpfs (TMPDIR=/dev/shm) it does not.
    println!("etcd data dir: {} ({})", etcd.dir().display(), filesystem(etcd.dir()));

    let dir = temp_dir();
    let daemon = host_daemon(dir.path(), &etcd);
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(cores).enable_all().build().unwrap();
    let native_client = tokio.block_on(etcd_client::Client::connect([etcd.endpoint()], None)).expect("connecting to etcd");

    // Warm up each writer (compile caches, connections, etcd's first pages).
    host_rate(&daemon, &fixtures, 1, "9000", Duration::from_millis(500));
    tokio.block_on(native_rate(&native_client, &fixtures, 1, "9001", Duration::from_millis(500)));
    same_keys_and_values(&etcd);

    // Whatever else runs on the machine weighs on both: alternate them and take medians.
    let compare = |set: &[Value], clients: usize, tag: &str| -> (HostRates, f64, f64) {
        let (mut acked, mut delivered, mut native, mut batched) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            let host = host_rate(&daemon, set, clients, &format!("{tag}{round}0"), PHASE);
            acked.push(host.acked);
            delivered.push(host.delivered);
            native.push(tokio.block_on(native_rate(&native_client, set, clients, &format!("{tag}{round}1"), PHASE)));
            batched.push(tokio.block_on(native_batched_rate(&native_client, set, &format!("{tag}{round}2"), PHASE)));
        }
        (HostRates { acked: median(acked), delivered: median(delivered) }, median(native), median(batched))
    };
    let mut lines = Vec::new();
    // `-- drain` runs only the drain phases below.
    let concurrency: &[usize] = if std::env::args().any(|a| a == "drain") { &[] } else { &CONCURRENCY };
    for (run, &clients) in concurrency.iter().enumerate() {
        let (host, native, batched) = compare(&fixtures, clients, &format!("1{run}"));
        let salt = if with_salt { salt_rate(&etcd, &fixtures, clients, &format!("1{run}99")) } else { f64::NAN };
        println!(
            "{clients} client(s):  host {:>6.0} acknowledged/s {:>6.0} delivered/s   native {native:>6.0}/s   native batched {batched:>6.0}/s   salt {salt:>6.1}/s",
            host.acked, host.delivered
        );
        lines.push(format!(
            "{clients} client(s):  host delivered / native batched {:.3}   host delivered / salt {:.1}   host acknowledged / salt {:.1}",
            host.delivered / batched,
            host.delivered / salt,
            host.acked / salt
        ));
    }
    // Without the one large return: what the host adds per return when JSON is small.
    let small: Vec<Value> = fixtures.iter().filter(|f| f.to_string().len() < SMALL_BYTES).cloned().collect();
    println!("the {} returns under {SMALL_BYTES} bytes:", small.len());
    for (run, &clients) in concurrency.iter().enumerate() {
        let (host, native, batched) = compare(&small, clients, &format!("2{run}"));
        println!(
            "{clients} client(s):  host {:>6.0} acknowledged/s {:>6.0} delivered/s   native {native:>6.0}/s   native batched {batched:>6.0}/s",
            host.acked, host.delivered
        );
        lines.push(format!("{clients} client(s), small returns:  host delivered / native batched {:.3}", host.delivered / batched));
    }
    // Delivery alone: a backlog acknowledged while etcd is down, then the
    // rate the spool delivers it at once etcd is back, against the native
    // batched writer on the same returns right after. Each into an etcd of
    // its own: the phases above leave the first one near its 2 GiB quota.
    drop((daemon, native_client, etcd));
    for (name, set, count) in [("real", &fixtures, 8_000), ("small", &small, 20_000)] {
        let mut etcd = EtcdServer::start();
        let dir = temp_dir();
        let daemon = host_daemon(dir.path(), &etcd);
        let native_client = tokio.block_on(etcd_client::Client::connect([etcd.endpoint()], None)).expect("connecting to etcd");
        let drained = drain_rate(&daemon, &mut etcd, set, count);
        let batched = tokio.block_on(native_batched_rate(&native_client, set, &format!("3{}00", count / 1000 % 10), PHASE));
        println!("drain     host, a backlog of {count} {name} returns: {drained:>6.0} delivered/s   native batched {batched:>6.0}/s");
        lines.push(format!("drain, {name} returns:  host delivered / native batched {:.3}", drained / batched));
    }
    println!();
    for line in lines {
        println!("ratios    {line}");
    }
}

/// Returns per second the host delivers from a backlog of `count` returns
/// acknowledged while etcd was down (after a warm-up of 256), from its
/// first delivery after etcd restarts until the spool is empty.
fn drain_rate(daemon: &Daemon, etcd: &mut EtcdServer, fixtures: &[Value], count: u64) -> f64 {
    static FIRST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let warm_up = FIRST.fetch_add(256, std::sync::atomic::Ordering::Relaxed);
    daemon.write_returns("etcd", fixtures, warm_up, 256, 8, |_| {});
    daemon.settle("etcd", Duration::from_secs(600));
    etcd.stop();
    // One minion, as the native batched writer writes them.
    let set: Vec<Value> = fixtures
        .iter()
        .map(|f| {
            let mut ret = f.clone();
            ret["id"] = json!("bench0");
            ret
        })
        .collect();
    let first = FIRST.fetch_add(count, std::sync::atomic::Ordering::Relaxed);
    daemon.write_returns("etcd", &set, first, count, 8, |_| {});
    etcd.restart();
    daemon.drain_rate("etcd", count)
}

fn median(mut rates: Vec<f64>) -> f64 {
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

/// The fixture returns Salt 3007's `etcd_return` can store: etcd3-py
/// encodes keys and values as Latin-1 and fails on other characters.
fn salt_storable_fixtures() -> Vec<Value> {
    salt_fixture_lines("minion-returns.jsonl").into_iter().filter(|ret| json_dumps(ret).chars().all(|c| (c as u32) < 256)).collect()
}

/// The type of the filesystem holding `path` (`ext4`, `tmpfs`, ...).
fn filesystem(path: &Path) -> String {
    let out = Command::new("findmnt").args(["-n", "-o", "FSTYPE", "--target"]).arg(path).output().expect("findmnt");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn etcd_version() -> String {
    let out = Command::new("etcd").arg("--version").output().expect("etcd --version");
    String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or_default().trim_start_matches("etcd Version: ").to_owned()
}

/// The return `n` of client `client` in the run `tag`: a fixture with a jid of its own.
fn nth_return(fixtures: &[Value], tag: &str, client: usize, n: u64) -> Value {
    let mut ret = fixtures[n as usize % fixtures.len()].clone();
    ret["jid"] = json!(format!("2026112{tag}{client:02}{n:07}"));
    ret["id"] = json!(format!("bench{client}"));
    ret
}

fn host_daemon(dir: &Path, etcd: &EtcdServer) -> Daemon {
    let config = format!(
        r#"
[profiles.main]
kind = "etcd"
endpoints = ["{endpoint}"]

[returners.etcd]
module = {module}
options = {{ ttl = {TTL} }}
limits = {{ max_concurrency = 64, deadline_ms = 10000 }}
grants.etcd = {{ profile = "main", root = "{ROOT}", ops = ["read", "write"], max_ttl_seconds = {TTL} }}
"#,
        endpoint = etcd.endpoint(),
        module = toml_path(&guest("returner-etcd")),
    );
    Daemon::with_config(Path::new(env!("CARGO_BIN_EXE_returner-host")), dir, "", &config)
}

/// What the host did in one phase, in returns per second.
struct HostRates {
    /// Acknowledged while the clients sent.
    acked: f64,
    /// Acknowledged returns over the time from the first until every one
    /// was delivered.
    delivered: f64,
}

/// Returns per second through the host's HTTP API.
fn host_rate(daemon: &Daemon, fixtures: &[Value], clients: usize, tag: &str, phase: Duration) -> HostRates {
    assert_eq!(tag.len(), 4, "a tag is 4 digits of the jid");
    daemon.settle("etcd", Duration::from_secs(600));
    let started = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|client| {
            let (socket, fixtures, tag) = (daemon.socket.clone(), fixtures.to_vec(), tag.to_owned());
            std::thread::spawn(move || {
                let mut conn = HttpConn::connect(&socket);
                let mut n = 0u64;
                while started.elapsed() < phase {
                    let body = json!({ "ret": nth_return(&fixtures, &tag, client, n) }).to_string();
                    let r = conn.post("/v1/returners/etcd/returner", body.as_bytes());
                    assert_eq!(r.status, 200, "{:?}", r.json);
                    n += 1;
                }
                n
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let sent = started.elapsed();
    daemon.settle("etcd", Duration::from_secs(600));
    HostRates { acked: total as f64 / sent.as_secs_f64(), delivered: total as f64 / started.elapsed().as_secs_f64() }
}

/// Returns per second written natively as the spool's delivery writes them
/// through the etcd returner: from one task, [`DELIVERY_BATCH`] returns at a
/// time under one lease, packed whole into transactions of at most
/// [`MAX_TXN_OPS`] keys and 1 MiB.
async fn native_batched_rate(client: &etcd_client::Client, fixtures: &[Value], tag: &str, phase: Duration) -> f64 {
    use etcd_client::{PutOptions, Txn, TxnOp};
    let mut client = client.clone();
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < phase {
        let lease = client.lease_grant(i64::from(TTL), None).await.unwrap().id();
        let options = Some(PutOptions::new().with_lease(lease));
        let mut per_return: Vec<Vec<(String, String)>> = (0..DELIVERY_BATCH)
            .map(|i| return_items(json!({ "ret": nth_return(fixtures, tag, 0, n + i as u64) }).to_string().as_bytes()))
            .collect();
        n += DELIVERY_BATCH as u64;
        // A key several returns write (`minions/<id>`) is written once, with
        // the last value: a transaction may not put a key twice.
        let mut seen = std::collections::HashSet::new();
        for items in per_return.iter_mut().rev() {
            items.retain(|(k, _)| seen.insert(k.clone()));
        }
        let mut txns: Vec<(Vec<TxnOp>, usize)> = Vec::new();
        for items in per_return {
            let bytes: usize = items.iter().map(|(k, v)| k.len() + v.len()).sum();
            let ops = items.into_iter().map(|(k, v)| TxnOp::put(k, v, options.clone()));
            match txns.last_mut() {
                Some((txn, size)) if txn.len() + ops.len() <= MAX_TXN_OPS && *size + bytes <= MAX_TXN_BYTES => {
                    txn.extend(ops);
                    *size += bytes;
                }
                _ => txns.push((ops.collect(), bytes)),
            }
        }
        // Sent together, as the returner's `put-batches` sends them.
        use futures::{StreamExt as _, TryStreamExt as _};
        futures::stream::iter(txns.into_iter().map(|(ops, _)| {
            let mut client = client.clone();
            async move { client.txn(Txn::new().and_then(ops)).await }
        }))
        .buffer_unordered(BATCHES_IN_FLIGHT)
        .try_for_each(|_| async { Ok(()) })
        .await
        .unwrap();
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// Returns per second written by Rust with etcd-client: the host's work
/// without HTTP and WebAssembly.
async fn native_rate(client: &etcd_client::Client, fixtures: &[Value], clients: usize, tag: &str, phase: Duration) -> f64 {
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (mut client, fixtures, tag) = (client.clone(), fixtures.to_vec(), tag.to_owned());
            tokio::spawn(async move {
                let mut n = 0u64;
                while started.elapsed() < phase {
                    // What arrives: the request body, as text.
                    let body = json!({ "ret": nth_return(&fixtures, &tag, c, n) }).to_string();
                    store_natively(&mut client, body.as_bytes()).await;
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total as f64 / started.elapsed().as_secs_f64()
}

/// One return as the shipped returner stores it: `minions/<id>` and every
/// field under `jobs/<jid>/<id>/`, in one transaction under one new lease.
async fn store_natively(client: &mut etcd_client::Client, body: &[u8]) {
    use etcd_client::{PutOptions, Txn, TxnOp};
    let lease = client.lease_grant(i64::from(TTL), None).await.unwrap().id();
    let options = Some(PutOptions::new().with_lease(lease));
    let ops: Vec<TxnOp> = return_items(body).into_iter().map(|(k, v)| TxnOp::put(k, v, options.clone())).collect();
    client.txn(Txn::new().and_then(ops)).await.unwrap();
}

/// The keys and values of one return in Salt's layout, from the request
/// body: `minions/<id>` and every field under `jobs/<jid>/<id>/`.
fn return_items(body: &[u8]) -> Vec<(String, String)> {
    let args: Value = serde_json::from_slice(body).unwrap();
    let ret = args["ret"].as_object().unwrap();
    let (id, jid) = (ret["id"].as_str().unwrap(), ret["jid"].as_str().unwrap());
    let mut items = Vec::with_capacity(ret.len() + 1);
    items.push((format!("{ROOT}/minions/{id}"), jid.to_owned()));
    for (field, value) in ret {
        items.push((format!("{ROOT}/jobs/{jid}/{id}/{field}"), json_dumps(value)));
    }
    items
}

/// The warm-up returns of host and native hold the same keys and values
/// (but for the jid), so the two do the same work.
fn same_keys_and_values(etcd: &EtcdServer) {
    let stored = |tag: &str| -> Vec<(String, String)> {
        let prefix = format!("{ROOT}/jobs/2026112{tag}000000000/");
        // Each holds its own jid; everything else must match.
        etcd.dump(&prefix).into_iter().map(|(k, v)| (k[prefix.len()..].to_owned(), v)).filter(|(k, _)| !k.ends_with("/jid")).collect()
    };
    let (host, native) = (stored("9000"), stored("9001"));
    assert!(!host.is_empty(), "the host stored its warm-up return");
    assert_eq!(host, native, "host and native writers store the same return alike");
}

/// Returns per second by Salt 3007's `etcd_return`, `clients` Python
/// processes at once, each started and warmed up before the clock starts.
fn salt_rate(etcd: &EtcdServer, fixtures: &[Value], clients: usize, tag: &str) -> f64 {
    const DRIVER: &str = r#"
import json, sys, time
import salt.config, salt.loader
request = json.loads(sys.stdin.readline())
opts = salt.config.minion_config(None)
opts.update(request["opts"])
store = salt.loader.returners(opts, {})["etcd.returner"]
fixtures, tag, client = request["fixtures"], request["tag"], request["client"]
def ret(n):
    r = dict(fixtures[n % len(fixtures)])
    r["jid"] = "2026112%s%02d%07d" % (tag, client, n)
    r["id"] = "bench%d" % client
    return r
store(ret(9999999))
print("ready", flush=True)
sys.stdin.readline()
started, n = time.monotonic(), 0
while time.monotonic() - started < request["seconds"]:
    store(ret(n))
    n += 1
print(json.dumps({"returns": n, "seconds": time.monotonic() - started}), flush=True)
"#;
    let (host, port) = etcd.endpoint()["http://".len()..].split_once(':').map(|(h, p)| (h.to_owned(), p.to_owned())).unwrap();
    let opts = json!({
        "etcd.returner": "bench_profile",
        "etcd.returner_root": ROOT,
        "etcd.ttl": TTL,
        "bench_profile": {
            "etcd.host": host, "etcd.port": port.parse::<u16>().unwrap(),
            "etcd.require_v2": false, "etcd.encode_values": false, "etcd.ttl": TTL,
        },
    });
    let mut children: Vec<_> = (0..clients)
        .map(|client| {
            let mut child = Command::new(venv_3007().join("bin/python"))
                .args(["-c", DRIVER])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("Salt 3007's python: run scripts/setup");
            let request = json!({ "opts": opts, "fixtures": fixtures, "tag": tag, "client": client, "seconds": SALT_PHASE.as_secs_f64() });
            writeln!(child.stdin.as_mut().unwrap(), "{request}").unwrap();
            let mut out = BufReader::new(child.stdout.take().unwrap());
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            assert_eq!(line.trim(), "ready", "Salt's etcd_return did not start (see its output above)");
            (child, out)
        })
        .collect();
    for (child, _) in &mut children {
        writeln!(child.stdin.as_mut().unwrap(), "go").unwrap();
    }
    let mut rate = 0.0;
    for (mut child, mut out) in children {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let done: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("Salt's driver printed {line:?}: {e}"));
        rate += done["returns"].as_f64().unwrap() / done["seconds"].as_f64().unwrap();
        child.wait().unwrap();
    }
    rate
}
