//! Benchmark (not a test): delivered returns per second from two hosts
//! into a three-node MariaDB Galera cluster and into a three-member etcd
//! cluster, against one host into one MariaDB server and one etcd member,
//! in the same run. Each host writes its share of `SCALE_RETURNS` (default
//! 20,000) real Salt returns from 4 clients, each with a jid of its own; the
//! clock stops when every host's spool is empty. The cluster members (each
//! in a network namespace of its own, so this needs root), the hosts and
//! the clients all share this machine's cores: the figures show the shape
//! and the bound, not what separate machines would do.
//!
//! `cargo bench -p returner-host --bench scale` (see BENCHMARKS.md).

use std::path::Path;
use std::time::{Duration, Instant};

use returner_host_tests::etcd::{EtcdCluster, EtcdServer};
use returner_host_tests::galera::GaleraCluster;
use returner_host_tests::mariadb::MariaDb;
use returner_host_tests::{Daemon, guest, salt_fixture_lines, temp_dir, toml_path};
use serde_json::Value;

const CLIENTS: usize = 4;
const MYSQL_TABLES: &str = r#"{ jids = ["select", "insert"], salt_returns = ["select", "insert"], salt_events = ["select", "insert"] }"#;

fn host(dir: &Path, profile: &str, returner: &str, grant: &str) -> Daemon {
    std::fs::create_dir_all(dir).unwrap();
    let module = toml_path(&guest(&format!("returner-{returner}")));
    let config = format!("{profile}\n[returners.{returner}]\nmodule = {module}\nlimits = {{ deadline_ms = 20000 }}\n{grant}\n");
    Daemon::with_config(Path::new(env!("CARGO_BIN_EXE_returner-host")), dir, "", &config)
}

fn mysql_host(dir: &Path, servers: &[String], user: &str, password: &str, database: &str) -> Daemon {
    let file = dir.join("mysql.pass");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(&file, format!("{password}\n")).unwrap();
    let hosts: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    let profile = format!(
        "[profiles.db]\nkind = \"mysql\"\nhosts = [{}]\nuser = \"{user}\"\npassword_file = {}\ndatabase = \"{database}\"\n",
        hosts.join(", "),
        toml_path(&file)
    );
    host(dir, &profile, "mysql", &format!("[returners.mysql.grants.mysql]\nprofile = \"db\"\ntables = {MYSQL_TABLES}"))
}

fn etcd_host(dir: &Path, endpoints: &[String]) -> Daemon {
    let list: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    let profile = format!("[profiles.e]\nkind = \"etcd\"\nendpoints = [{}]\nrequest_timeout_ms = 8000\n", list.join(", "));
    host(dir, &profile, "etcd", "grants.etcd = { profile = \"e\", root = \"/salt/return\", ops = [\"read\", \"write\"] }")
}

/// Every host writes its share of `total` returns (jids from `first`) at
/// once; returns delivered per second, until every spool is empty.
fn delivered_per_second(hosts: &[Daemon], returner: &str, returns: &[Value], first: u64, total: u64) -> f64 {
    let share = total / hosts.len() as u64;
    let started = Instant::now();
    std::thread::scope(|s| {
        for (i, d) in hosts.iter().enumerate() {
            s.spawn(move || d.write_returns(returner, returns, first + i as u64 * share, share, CLIENTS, |_| {}));
        }
    });
    for d in hosts {
        d.settle(returner, Duration::from_secs(3600));
    }
    (share * hosts.len() as u64) as f64 / started.elapsed().as_secs_f64()
}

/// The `n` rotations of `list`: host `i` starts at member `i`.
fn rotated(list: &[String], i: usize) -> Vec<String> {
    (0..list.len()).map(|k| list[(i + k) % list.len()].clone()).collect()
}

fn main() {
    let total: u64 = std::env::var("SCALE_RETURNS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let returns = salt_fixture_lines("minion-returns.jsonl");
    let schema = include_str!("../../returners/mysql/schema.sql");
    println!("returner-host scale benchmark: {total} returns per setup, {CLIENTS} clients per host");
    let dir = temp_dir();
    let mut rows = Vec::new();

    {
        let server = MariaDb::start();
        let db = server.database();
        db.sql(schema);
        let one = [mysql_host(&dir.path().join("mysql-one"), &[format!("127.0.0.1:{}", server.port)], &db.user, &db.password, &db.name)];
        rows.push(("MySQL", "1 host, 1 MariaDB", delivered_per_second(&one, "mysql", &returns, 0, total)));
    }
    {
        let cluster = GaleraCluster::start(3);
        cluster.database("bench-Pw1");
        cluster.root_sql(0, &format!("USE salt; {schema}")).expect("schema");
        let members = cluster.addresses();
        let two: Vec<Daemon> =
            (0..2).map(|i| mysql_host(&dir.path().join(format!("galera-{i}")), &rotated(&members, i), "salt", "bench-Pw1", "salt")).collect();
        rows.push(("MySQL", "2 hosts, 3-node Galera", delivered_per_second(&two, "mysql", &returns, 0, total)));
    }
    {
        let etcd = EtcdServer::start();
        let one = [etcd_host(&dir.path().join("etcd-one"), &[etcd.endpoint()])];
        rows.push(("etcd", "1 host, 1 member", delivered_per_second(&one, "etcd", &returns, 0, total)));
    }
    {
        let cluster = EtcdCluster::start_partitionable(3);
        let members = cluster.endpoints();
        let two: Vec<Daemon> = (0..2).map(|i| etcd_host(&dir.path().join(format!("etcd-{i}")), &rotated(&members, i))).collect();
        rows.push(("etcd", "2 hosts, 3-member cluster", delivered_per_second(&two, "etcd", &returns, 0, total)));
    }

    println!("{:<6} {:<28} {:>14} {:>8}", "store", "setup", "delivered/s", "ratio");
    for pair in rows.chunks(2) {
        let base = pair[0].2;
        for (store, setup, rate) in pair {
            println!("{store:<6} {setup:<28} {rate:>14.0} {:>8.2}", rate / base);
        }
    }
}
