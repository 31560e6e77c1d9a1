//! Benchmark (not a test): Salt job returns and events per second into one
//! freshly started MariaDB, with the real payloads of host/src/testkit/salt,
//! three ways in the same run:
//! - through the host: the `returner-host serve` binary of this build (release
//!   under `cargo bench`) over its unix socket, the shipped mysql returner
//!   behind the spool (fsync on): returns acknowledged per second (on disk in
//!   the spool), their acknowledgement latency, and returns delivered per
//!   second until every acknowledged one is in MariaDB;
//! - natively: a Rust writer doing the same INSERTs with `mysql_async` and the
//!   pool settings the host uses for the profile, one per return, and in the
//!   batches the spool's delivery makes (the same look-up of what is stored,
//!   then one transaction of the same multi-row INSERTs), from one task as
//!   delivery does;
//! - Salt's own mysql returner (`saltext.mysql` with PyMySQL, from the Salt
//!   venv), called in a loop by Python processes through Salt's loader;
//!
//! and what the SQL grant check costs per statement, alone, against the time
//! a statement takes to run.
//!
//! `cargo bench -p returner-host --bench mysql` (see BENCHMARKS.md); `-- host`
//! runs the host's phases alone; `-- durable` runs every phase against a
//! server with MariaDB's own durability (each commit flushed to disk) and
//! buffer pool instead of the tests' faster settings.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mysql_async::prelude::Queryable;
use mysql_async::{OptsBuilder, Pool, PoolConstraints, PoolOpts, TxOpts};
use returner_host::caps::mysql::sql::{self, Access, Function};
use returner_host::caps::mysql::{DEFAULT_POOL_SIZE, SqlVerb};
use returner_host_tests::mariadb::{MariaDb, TestDb};
use returner_host_tests::{Daemon, HttpConn, guest, salt_fixture_lines, temp_dir, toml_path};
use serde_json::{Value, json};

/// How long each phase runs.
const PHASE: Duration = Duration::from_secs(5);
/// Writers at once in the concurrent phases (connections, clients or processes).
const WRITERS: usize = 8;
/// Events per `event_return` call in the event phases.
const EVENT_BATCH: usize = 100;

const SCHEMA: &str = include_str!("../../returners/mysql/schema.sql");
/// The statements of the shipped returner's `returner` and `event_return`.
const INSERT_RETURNS: &str = "INSERT INTO `salt_returns` (`fun`, `jid`, `return`, `id`, `success`, `full_ret`)";
const INSERT_EVENTS: &str = "INSERT INTO `salt_events` (`tag`, `data`, `master_id`)";
const INSERT_RETURN: &str =
    "INSERT INTO `salt_returns` (`fun`, `jid`, `return`, `id`, `success`, `full_ret`) VALUES (?, ?, ?, ?, ?, ?)";

fn main() {
    println!("returner-host MySQL benchmark ({} cores)", std::thread::available_parallelism().map_or(1, |n| n.get()));
    let durable = std::env::args().any(|a| a == "durable");
    let mut server = if durable { MariaDb::start_durable() } else { MariaDb::start() };
    let db = server.database();
    db.sql(SCHEMA);
    let version = server.root_sql("", "SELECT VERSION()").map(|r| r[0][0].clone()).unwrap_or_default();
    let settings = server
        .root_sql("", "SELECT @@innodb_flush_log_at_trx_commit, @@innodb_buffer_pool_size DIV 1048576")
        .map(|r| format!("innodb_flush_log_at_trx_commit={}, innodb_buffer_pool_size={} MiB", r[0][0], r[0][1]))
        .unwrap_or_default();
    println!("server    MariaDB {version}, fresh, {settings}, on loopback TCP");

    let returns = salt_fixture_lines("minion-returns.jsonl");
    let events: Vec<Value> = salt_fixture_lines("master-job-cache-calls.jsonl")
        .iter()
        .filter(|c| c["call"] == "event_return")
        .flat_map(|c| c["events"].as_array().unwrap().clone())
        .collect();
    let batch: Vec<Value> = (0..EVENT_BATCH).map(|i| events[i % events.len()].clone()).collect();
    println!("payloads  {} real job returns, {} real events (batches of {EVENT_BATCH})", returns.len(), events.len());
    println!();

    let dir = temp_dir();
    let host = host_daemon(dir.path(), &db);
    let host1 = host_phase(&db, &host, "returner", &returns, 1, "salt_returns");
    let hostn = host_phase(&db, &host, "returner", &returns, WRITERS, "salt_returns");
    if std::env::args().any(|a| a == "host") {
        // `-- host`: the host's phases alone, e.g. under a profiler.
        for (clients, rates) in [(1, host1), (WRITERS, hostn)] {
            println!("returns   host, {clients} client(s): {:>8.0} acknowledged/s, {:>8.0} delivered/s; ack p50 {:.2} ms, p99 {:.2} ms", rates.acked, rates.delivered, rates.p50_ms, rates.p99_ms);
        }
        println!("drain     host, a backlog of 8,000 real returns: {:>8.0} delivered/s", drain_phase(&mut server, &db, &host, &returns, 8_000));
        return;
    }

    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let pool = native_pool(&db);
    let native1 = tokio.block_on(native_phase(&db, &pool, &returns, 1));
    let nativen = tokio.block_on(native_phase(&db, &pool, &returns, WRITERS));
    let native_batched = tokio.block_on(native_batched_phase(&db, &pool, &returns));

    let salt1 = salt_phase(&db, "returner", &returns, 1, "salt_returns", SaltConnection::Kept);
    let saltn = salt_phase(&db, "returner", &returns, WRITERS, "salt_returns", SaltConnection::Kept);
    let salt_fresh1 = salt_phase(&db, "returner", &returns, 1, "salt_returns", SaltConnection::Fresh);
    let salt_freshn = salt_phase(&db, "returner", &returns, WRITERS, "salt_returns", SaltConnection::Fresh);

    let events_host = host_phase(&db, &host, "event_return", &[json!(batch)], WRITERS, "salt_events").scaled(EVENT_BATCH as f64);
    let events_native = tokio.block_on(native_events_phase(&db, &pool, &batch, WRITERS)) * EVENT_BATCH as f64;
    let events_salt = salt_phase(&db, "event_return", &[json!(batch)], WRITERS, "salt_events", SaltConnection::Kept) * EVENT_BATCH as f64;
    tokio.block_on(pool.disconnect()).ok();

    let check = check_cost(&db);
    let statement = 1e6 / native1;

    println!("returns   host, 1 client:                  {:>8.0} acknowledged/s, {:>8.0} delivered/s; ack p50 {:.2} ms, p99 {:.2} ms", host1.acked, host1.delivered, host1.p50_ms, host1.p99_ms);
    println!("returns   native mysql_async, 1 task:      {native1:>8.0} returns/s (one INSERT each)");
    println!("returns   native mysql_async, batched:     {native_batched:>8.0} returns/s (1 task, batches of {DELIVERY_BATCH}: look-up, multi-row INSERTs in one transaction)");
    println!("returns   Salt's returner, 1 process:      {salt1:>8.0} returns/s (connection kept)");
    println!("returns   Salt's returner, 1 process:      {salt_fresh1:>8.0} returns/s (a connection per return)");
    println!("returns   host, {WRITERS} clients:                 {:>8.0} acknowledged/s, {:>8.0} delivered/s; ack p50 {:.2} ms, p99 {:.2} ms", hostn.acked, hostn.delivered, hostn.p50_ms, hostn.p99_ms);
    println!("returns   native mysql_async, {WRITERS} tasks:     {nativen:>8.0} returns/s (one INSERT each)");
    println!("returns   Salt's returner, {WRITERS} processes:    {saltn:>8.0} returns/s (connection kept)");
    println!("returns   Salt's returner, {WRITERS} processes:    {salt_freshn:>8.0} returns/s (a connection per return)");
    println!("events    host, {WRITERS} clients:                 {:>8.0} acknowledged/s, {:>8.0} delivered/s", events_host.acked, events_host.delivered);
    println!("events    native mysql_async, {WRITERS} tasks:     {events_native:>8.0} events/s (multi-row INSERTs, one transaction per batch)");
    println!("events    Salt's returner, {WRITERS} processes:    {events_salt:>8.0} events/s (one transaction per batch)");
    println!("check     grant check of the returner's INSERT: {check:.1} µs; one INSERT run natively: {statement:.0} µs ({:.1}%)", 100.0 * check / statement);
    println!();
    println!("ratios    host delivered / native batched, {WRITERS} clients: {:.3}", hostn.delivered / native_batched);
    println!("ratios    host acknowledged / Salt, {WRITERS} writers:        {:.1} (connection kept), {:.1} (a connection per return)", hostn.acked / saltn, hostn.acked / salt_freshn);
    println!("ratios    host delivered / Salt, {WRITERS} writers:           {:.1} (connection kept), {:.1} (a connection per return)", hostn.delivered / saltn, hostn.delivered / salt_freshn);
    println!("ratios    host delivered / native, {WRITERS} writers:         {:.3} (native: one INSERT per return)", hostn.delivered / nativen);
    println!("ratios    host delivered / Salt, events:          {:.2}", events_host.delivered / events_salt);

    // Delivery alone: a backlog written while MariaDB is down, then the
    // rate it drains at once the server is back, against the native writer
    // of the same batches.
    let drain_real = drain_phase(&mut server, &db, &host, &returns, 8_000);
    let small: Vec<Value> = returns.iter().filter(|r| r.to_string().len() < 1000).cloned().collect();
    let drain_small = drain_phase(&mut server, &db, &host, &small, 40_000);
    println!();
    println!("drain     host, a backlog of 8,000 real returns:    {drain_real:>8.0} delivered/s ({:.3} of native batched)", drain_real / native_batched);
    println!("drain     host, a backlog of 40,000 small returns:  {drain_small:>8.0} delivered/s");

    // Without the one large return (126 KiB of output, a quarter of a MiB
    // per row): what each writer costs per return when the JSON is small.
    let host_small = host_phase(&db, &host, "returner", &small, WRITERS, "salt_returns");
    let pool = native_pool(&db);
    let native_small = tokio.block_on(native_batched_phase(&db, &pool, &small));
    tokio.block_on(pool.disconnect()).ok();
    let salt_small = salt_phase(&db, "returner", &small, WRITERS, "salt_returns", SaltConnection::Kept);
    println!();
    println!("the {} returns under 1000 bytes:", small.len());
    println!("returns   host, {WRITERS} clients:                 {:>8.0} acknowledged/s, {:>8.0} delivered/s; ack p50 {:.2} ms, p99 {:.2} ms", host_small.acked, host_small.delivered, host_small.p50_ms, host_small.p99_ms);
    println!("returns   native mysql_async, batched:     {native_small:>8.0} returns/s");
    println!("returns   Salt's returner, {WRITERS} processes:    {salt_small:>8.0} returns/s (connection kept)");
    println!("ratios    host delivered / native batched:     {:.3}", host_small.delivered / native_small);
    println!("ratios    host drain / native batched:         {:.3}", drain_small / native_small);
    println!("ratios    host acknowledged / Salt:            {:.1}", host_small.acked / salt_small);
    println!("ratios    host delivered / Salt:               {:.1}", host_small.delivered / salt_small);
}

/// What the host did in one phase.
struct HostRates {
    /// Calls acknowledged per second while the clients sent.
    acked: f64,
    /// Calls delivered per second: acknowledged calls over the time from the
    /// first until every one's rows were in the table.
    delivered: f64,
    /// Acknowledgement latency, median and 99th percentile.
    p50_ms: f64,
    p99_ms: f64,
}

impl HostRates {
    fn scaled(self, k: f64) -> Self {
        Self { acked: self.acked * k, delivered: self.delivered * k, ..self }
    }
}

fn rows(db: &TestDb, table: &str) -> u64 {
    db.sql(&format!("SELECT COUNT(*) FROM `{table}`"))[0][0].parse().unwrap()
}

fn host_daemon(dir: &Path, db: &TestDb) -> Daemon {
    let profile = db.profile_toml("salt_db", &dir.join("mysql.pass"));
    let config = format!(
        "{profile}\n[returners.mysql]\nmodule = {}\noptions = {{ master_id = \"bench\" }}\n\
         limits = {{ max_concurrency = 32, deadline_ms = 30000 }}\n[returners.mysql.grants.mysql]\nprofile = \"salt_db\"\n\
         tables = {{ salt_returns = [\"select\", \"insert\"], salt_events = [\"insert\"] }}\n",
        toml_path(&guest("returner-mysql"))
    );
    Daemon::with_config(Path::new(env!("CARGO_BIN_EXE_returner-host")), dir, "", &config)
}

/// `function` calls through the host with `args` (each a `returner`'s
/// `ret` or an `event_return`'s `events`) in turn, from `clients` clients
/// for a phase: acknowledged per second, and delivered per second counting
/// until every acknowledged call's rows are in `table`.
fn host_phase(db: &TestDb, host: &Daemon, function: &str, args: &[Value], clients: usize, table: &str) -> HostRates {
    let key = if function == "returner" { "ret" } else { "events" };
    // Each return with a jid of its own: the returner stores a return
    // delivered again only once, and the phase counts rows.
    let unique = std::sync::atomic::AtomicU64::new(0);
    let body = |n: usize| {
        let mut arg = args[n % args.len()].clone();
        if function == "returner" {
            let u = unique.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            arg["jid"] = json!(format!("2026{:016}", u + UNIQUE_JIDS.fetch_add(0, std::sync::atomic::Ordering::Relaxed)));
        }
        json!({ key: arg }).to_string().into_bytes()
    };
    let per_call = args[0].as_array().map_or(1, |a| a.len() as u64);
    let path = format!("/v1/returners/mysql/{function}");
    let mut warm = HttpConn::connect(&host.socket);
    assert_eq!(warm.post(&path, &body(0)).status, 200);
    host.settle("mysql", Duration::from_secs(600));
    let before = rows(db, table);
    let started = Instant::now();
    let latencies: Vec<Vec<Duration>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                s.spawn(|| {
                    let mut conn = HttpConn::connect(&host.socket);
                    let mut took = Vec::new();
                    while started.elapsed() < PHASE {
                        let sent = Instant::now();
                        let b = body(took.len());
                        let r = conn.post(&path, &b);
                        took.push(sent.elapsed());
                        assert_eq!(r.status, 200, "{:?}", r.json);
                    }
                    took
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let sent = started.elapsed();
    let mut all: Vec<Duration> = latencies.into_iter().flatten().collect();
    let calls = all.len() as u64;
    host.settle("mysql", Duration::from_secs(600));
    let drained = started.elapsed();
    assert_eq!(rows(db, table) - before, calls * per_call, "every acknowledged call's rows are stored, once");
    UNIQUE_JIDS.fetch_add(unique.load(std::sync::atomic::Ordering::Relaxed), std::sync::atomic::Ordering::Relaxed);
    all.sort();
    let at = |q: f64| all[((all.len() - 1) as f64 * q) as usize].as_secs_f64() * 1000.0;
    HostRates {
        acked: calls as f64 / sent.as_secs_f64(),
        delivered: calls as f64 / drained.as_secs_f64(),
        p50_ms: at(0.50),
        p99_ms: at(0.99),
    }
}

/// Returns per second the host delivers from a backlog: `count` returns
/// (each of `returns` in turn, with jids of their own) acknowledged from
/// [`WRITERS`] clients while MariaDB is down, then the rate from the first
/// row to the last once it is back.
fn drain_phase(server: &mut MariaDb, db: &TestDb, host: &Daemon, returns: &[Value], count: u64) -> f64 {
    use std::sync::atomic::Ordering::Relaxed;
    host.settle("mysql", Duration::from_secs(600));
    let before = rows(db, "salt_returns");
    server.stop();
    let first = UNIQUE_JIDS.fetch_add(count, Relaxed);
    host.write_returns("mysql", returns, first, count, WRITERS, |_| {});
    server.run();
    let rate = host.drain_rate("mysql", count);
    assert_eq!(rows(db, "salt_returns") - before, count, "every acknowledged return is stored, once");
    rate
}

/// Jids the host phases have used, so the next phase's are new.
static UNIQUE_JIDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Returns per delivery call: the spool's default `batch_max_items`.
const DELIVERY_BATCH: usize = 256;
/// Returns the mysql returner looks up per SELECT before inserting.
const LOOKUP_RETURNS: usize = 64;

/// Returns per second written natively as the spool's delivery writes them
/// through the mysql returner: from one task, in batches, each batch looked
/// up (is a return stored already?) 64 at a time, then inserted in one
/// transaction of the returner's multi-row INSERTs. Each return gets a jid of its own, as in the host phase's
/// traffic, where most returns are new.
async fn native_batched_phase(db: &TestDb, pool: &Pool, returns: &[Value]) -> f64 {
    let returns = Arc::new(returns.to_vec());
    native_tasks(db, "salt_returns", DELIVERY_BATCH as u64, 1, |started| {
        let (pool, returns) = (pool.clone(), returns.clone());
        async move {
            let mut n = 0u64;
            let mut conn = pool.get_conn().await.unwrap();
            while started.elapsed() < PHASE {
                let batch: Vec<Vec<mysql_async::Value>> = (0..DELIVERY_BATCH)
                    .map(|i| {
                        let mut params = return_params(&returns[i % returns.len()]);
                        params[1] = format!("2027{:016}", n as usize * DELIVERY_BATCH + i).into();
                        params
                    })
                    .collect();
                for chunk in batch.chunks(LOOKUP_RETURNS) {
                    let wanted = vec!["(`jid` = ? AND `id` = ?)"; chunk.len()].join(" OR ");
                    let params: Vec<mysql_async::Value> = chunk.iter().flat_map(|p| [p[1].clone(), p[3].clone()]).collect();
                    let _: Vec<(String, String, String)> = conn
                        .exec(format!("SELECT `jid`, `id`, `full_ret` FROM `salt_returns` WHERE {wanted}"), params)
                        .await
                        .unwrap();
                }
                let mut tx = conn.start_transaction(TxOpts::default()).await.unwrap();
                for (sql, params) in insert_rows(INSERT_RETURNS, batch) {
                    tx.exec_drop(sql, params).await.unwrap();
                }
                tx.commit().await.unwrap();
                n += 1;
            }
            n
        }
    })
    .await
        * DELIVERY_BATCH as f64
}

/// A pool as the host builds one for the profile (`caps/mysql/client.rs`):
/// connections back in the pool without a reset, so each keeps the
/// statements it prepared.
fn native_pool(db: &TestDb) -> Pool {
    let constraints = PoolConstraints::new(0, DEFAULT_POOL_SIZE).unwrap();
    Pool::new(
        OptsBuilder::default()
            .user(Some(db.user.clone()))
            .pass(Some(db.password.clone()))
            .db_name(Some(db.name.clone()))
            .ip_or_hostname("127.0.0.1")
            .tcp_port(db.port)
            .prefer_socket(false)
            .init(vec!["SET autocommit = 1".to_owned()])
            .pool_opts(PoolOpts::default().with_constraints(constraints).with_reset_connection(false))
            .stmt_cache_size(64),
    )
}

/// `rows` in the multi-row INSERTs the shipped returner makes of them: the
/// SDK's own `insert_rows`, so the statements are the same.
fn insert_rows(head: &str, rows: Vec<Vec<mysql_async::Value>>) -> Vec<(String, Vec<mysql_async::Value>)> {
    use returner_sdk::mysql::Value as Sdk;
    let rows = rows
        .into_iter()
        .map(|row| row.into_iter().map(|v| if let mysql_async::Value::Bytes(b) = v { Sdk::Bytes(b) } else { unreachable!("text only") }).collect())
        .collect();
    returner_sdk::mysql::insert_rows(head, rows)
        .into_iter()
        .map(|s| (s.sql, s.params.into_iter().map(|v| if let Sdk::Bytes(b) = v { mysql_async::Value::Bytes(b) } else { unreachable!("text only") }).collect()))
        .collect()
}

/// What the shipped returner binds for one return (JSON as compact text).
fn return_params(ret: &Value) -> Vec<mysql_async::Value> {
    let text = |s: String| mysql_async::Value::Bytes(s.into_bytes());
    let success = match ret.get("success") {
        Some(Value::Bool(b)) => if *b { "1" } else { "0" }.to_owned(),
        _ => "None".to_owned(),
    };
    vec![
        text(ret["fun"].as_str().unwrap_or_default().to_owned()),
        text(ret["jid"].as_str().unwrap_or_default().to_owned()),
        text(ret["return"].to_string()),
        text(ret["id"].as_str().unwrap_or_default().to_owned()),
        text(success),
        text(ret.to_string()),
    ]
}

fn event_params(event: &Value) -> Vec<mysql_async::Value> {
    let text = |s: String| mysql_async::Value::Bytes(s.into_bytes());
    vec![text(event["tag"].as_str().unwrap_or_default().to_owned()), text(event["data"].to_string()), text("bench".to_owned())]
}

async fn native_tasks<F, Fut>(db: &TestDb, table: &str, per_call: u64, tasks: usize, task: F) -> f64
where
    F: Fn(Instant) -> Fut,
    Fut: std::future::Future<Output = u64> + Send + 'static,
{
    let before = rows(db, table);
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks).map(|_| tokio::spawn(task(started))).collect();
    let mut calls = 0;
    for h in handles {
        calls += h.await.unwrap();
    }
    let rate = calls as f64 / started.elapsed().as_secs_f64();
    assert_eq!(rows(db, table) - before, calls * per_call, "every call's rows are stored");
    rate
}

/// Returns per second written natively, one INSERT per return, as the host does.
async fn native_phase(db: &TestDb, pool: &Pool, returns: &[Value], tasks: usize) -> f64 {
    let returns = Arc::new(returns.to_vec());
    native_tasks(db, "salt_returns", 1, tasks, |started| {
        let (pool, returns) = (pool.clone(), returns.clone());
        async move {
            let mut n = 0u64;
            while started.elapsed() < PHASE {
                let mut conn = pool.get_conn().await.unwrap();
                let ret = &returns[n as usize % returns.len()];
                conn.exec_drop(INSERT_RETURN, return_params(ret)).await.unwrap();
                n += 1;
            }
            n
        }
    })
    .await
}

/// Batches per second written natively, each in one transaction of the
/// multi-row INSERTs the returner makes.
async fn native_events_phase(db: &TestDb, pool: &Pool, batch: &[Value], tasks: usize) -> f64 {
    let batch = Arc::new(batch.to_vec());
    native_tasks(db, "salt_events", batch.len() as u64, tasks, |started| {
        let (pool, batch) = (pool.clone(), batch.clone());
        async move {
            let mut n = 0u64;
            while started.elapsed() < PHASE {
                let mut conn = pool.get_conn().await.unwrap();
                let mut tx = conn.start_transaction(TxOpts::default()).await.unwrap();
                for (sql, params) in insert_rows(INSERT_EVENTS, batch.iter().map(event_params).collect()) {
                    tx.exec_drop(sql, params).await.unwrap();
                }
                tx.commit().await.unwrap();
                n += 1;
            }
            n
        }
    })
    .await
}

/// Salt's mysql returner in a loop: `returner(ret)` or `event_return(events)`
/// with each argument in turn until `end`; prints the calls made. Its
/// connection lives in the loader's `__context__`: kept and pinged before
/// each call as in a long-lived master, or, with `fresh`, closed after each
/// call, as a minion's job process (forked per job) ends with it.
const SALT_DRIVER: &str = r#"
import json, sys, time
import salt.config, salt.loader
request = json.load(sys.stdin)
opts = salt.config.minion_config(None)
opts.update(request["opts"])
context = {}
function = salt.loader.returners(opts, {}, context=context)["mysql." + request["function"]]
args = request["args"]
while time.time() < request["start"]:
    time.sleep(0.001)
n = 0
while time.time() < request["end"]:
    function(args[n % len(args)])
    if request["fresh"]:
        context.pop("mysql_returner_conn").close()
    n += 1
print(n)
"#;

/// How Salt's returner holds its connection between calls.
#[derive(Clone, Copy, PartialEq)]
enum SaltConnection {
    /// One connection per process, pinged before each call (a master).
    Kept,
    /// A new connection per call (a minion's job process).
    Fresh,
}

/// `function` calls per second of Salt's own returner in `processes` Python
/// processes at once (imports done before the clock starts).
fn salt_phase(db: &TestDb, function: &str, args: &[Value], processes: usize, table: &str, connection: SaltConnection) -> f64 {
    let venv = returner_host_tests::salt::venv();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    // Salt's imports take a few seconds per process, more with several starting at once.
    let start = now + 5.0 + processes as f64;
    let request = json!({
        "opts": {
            "mysql.host": "127.0.0.1", "mysql.port": db.port, "mysql.user": db.user,
            "mysql.pass": db.password, "mysql.db": db.name, "id": "bench",
        },
        "function": function,
        "args": args,
        "start": start,
        "end": start + PHASE.as_secs_f64(),
        "fresh": connection == SaltConnection::Fresh,
    })
    .to_string();
    let per_call = args[0].as_array().map_or(1, |a| a.len() as u64);
    let before = rows(db, table);
    let children: Vec<_> = (0..processes)
        .map(|_| {
            let mut child = Command::new(venv.join("bin/python"))
                .args(["-c", SALT_DRIVER])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("running the Salt venv's python");
            child.stdin.take().unwrap().write_all(request.as_bytes()).unwrap();
            child
        })
        .collect();
    let mut calls = 0u64;
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "Salt's returner failed");
        calls += String::from_utf8_lossy(&out.stdout).trim().parse::<u64>().expect("the driver prints its count");
    }
    assert_eq!(rows(db, table) - before, calls * per_call, "every call's rows are stored");
    calls as f64 / PHASE.as_secs_f64()
}

/// Microseconds per grant check of the returner's INSERT (the host checks
/// every `execute`; a transaction checks each distinct SQL text once).
fn check_cost(db: &TestDb) -> f64 {
    let tables = [("salt_returns".to_owned(), vec![SqlVerb::Insert]), ("salt_events".to_owned(), vec![SqlVerb::Insert])].into();
    let access = Access { tables: &tables, database: &db.name };
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < Duration::from_secs(2) {
        for _ in 0..100 {
            std::hint::black_box(sql::check(std::hint::black_box(INSERT_RETURN), Function::Execute, access).unwrap());
        }
        n += 100;
    }
    started.elapsed().as_secs_f64() * 1e6 / n as f64
}
