//! Two hosts delivering into a three-node MariaDB Galera cluster, each
//! node in a network namespace of its own, through a `hosts = [...]`
//! profile: one node is killed and another cut off from its peers (a
//! partition, not a kill) mid-stream, then both come back. A fifth of the
//! returns reach both hosts (a minion returning to two masters). Every
//! acknowledged return is in the cluster exactly once, a job's load is the
//! first one saved through either host, and neither host was restarted.

use std::time::Duration;

use returner_host_tests::galera::GaleraCluster;
use returner_host_tests::{Daemon, salt_fixture_lines, temp_dir};

use super::mysql::mysql_returner_toml;
use super::soak::env_or;
use super::{config_daemon, toml_path};

/// A host with the mysql returner on `servers` (the profile's `hosts`, in
/// the order it tries them).
fn host(dir: &std::path::Path, servers: &[String], password: &str) -> Daemon {
    std::fs::create_dir_all(dir).unwrap();
    let password_file = dir.join("mysql.pass");
    std::fs::write(&password_file, format!("{password}\n")).unwrap();
    let hosts: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    config_daemon(
        dir,
        // Transactions of at most 1 MiB of returns, each given 20 s: a
        // cluster replicating on a busy machine commits them in time.
        "[server.spool]\nretry_max_ms = 500\nbatch_max_bytes = 1048576",
        &format!(
            r#"
[profiles.cluster]
kind = "mysql"
hosts = [{hosts}]
user = "salt"
password_file = {password_file}
database = "salt"
connect_timeout_ms = 1000
statement_timeout_ms = 20000

{returner}"#,
            hosts = hosts.join(", "),
            password_file = toml_path(&password_file),
            returner = mysql_returner_toml("cluster", 30_000),
        ),
    )
}

#[test]
fn two_hosts_lose_nothing_in_a_galera_cluster_when_one_node_dies_and_another_is_cut_off() {
    let _heavy = returner_host_tests::heavy_test();
    let total = env_or("GALERA_RETURNS", 50_000);
    let mut cluster = GaleraCluster::start(3);
    let password = format!("galera-{}-Pw", std::process::id());
    cluster.database(&password);
    cluster
        .root_sql(
            0,
            &format!(
                "USE salt; {} {}",
                include_str!("../../returners/mysql/schema.sql"),
                include_str!("../../returners/mysql/schema-several-hosts.sql")
            ),
        )
        .unwrap_or_else(|e| panic!("schema: {e}"));
    let dir = temp_dir();
    let servers = cluster.addresses();
    // Host a starts on node 0, host b on node 1: the two nodes that fail.
    let a = host(&dir.path().join("a"), &servers, &password);
    let b = host(&dir.path().join("b"), &[servers[1].clone(), servers[2].clone(), servers[0].clone()], &password);
    let fixtures = salt_fixture_lines("minion-returns.jsonl");

    // Node 2 stays up throughout: it counts what the hosts delivered.
    let delivered = |cluster: &GaleraCluster| -> u64 {
        cluster.root_sql(2, "SELECT COUNT(*) FROM salt.salt_returns").ok().and_then(|r| r[0][0].parse().ok()).unwrap_or(0)
    };
    let wait_delivered = |cluster: &GaleraCluster, n: u64, what: &str| {
        let started = std::time::Instant::now();
        while delivered(cluster) < n {
            assert!(
                started.elapsed() < Duration::from_secs(300),
                "{what}: {} of {n} returns delivered after 300 s; queues {} and {}\nhost a:\n{}\nhost b:\n{}",
                delivered(cluster),
                a.queue("mysql"),
                b.queue("mysql"),
                a.log_text(),
                b.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // Host a takes returns [0, 3/5), host b [2/5, 1): the fifth in the
    // middle reaches both, with the same payloads (the overlap starts at a
    // multiple of the fixtures' count, which picks each return's payload).
    let share = 3 * total / 5;
    let b_first = (total - share) / fixtures.len() as u64 * fixtures.len() as u64;
    let share_b = total - b_first;
    std::thread::scope(|s| {
        for (d, first, count) in [(&a, 0, share), (&b, b_first, share_b)] {
            let fixtures = &fixtures;
            s.spawn(move || d.write_returns("mysql", fixtures, first, count, 4, |_| {}));
        }
        // Mid-stream, one failure at a time, so two nodes of three always
        // keep the cluster's quorum: node 0 (host a's) dies and comes back;
        // then node 1 (host b's) is cut off from its peers and both hosts,
        // and joins again.
        wait_delivered(&cluster, total / 5, "before the kill");
        cluster.kill(0);
        wait_delivered(&cluster, 2 * total / 5, "with node 0 dead");
        cluster.restart(0, 3);
        wait_delivered(&cluster, 3 * total / 5, "after node 0 came back");
        cluster.cut(1);
        wait_delivered(&cluster, 4 * total / 5, "with node 1 cut off");
        cluster.heal(1, 3);
    });
    for d in [&a, &b] {
        d.settle("mysql", Duration::from_secs(600));
        assert!(d.dead_letters("mysql").is_empty(), "{:#?}", d.dead_letters("mysql"));
    }

    // Every acknowledged return, once, on every node.
    for node in 0..3 {
        let rows = cluster
            .root_sql(node, "SELECT COUNT(*), COUNT(DISTINCT jid, id) FROM salt.salt_returns")
            .unwrap_or_else(|e| panic!("node {node}: {e}"));
        assert_eq!(rows[0], [total.to_string(), total.to_string()], "node {node}: rows, distinct returns");
    }
    let missing = cluster
        .root_sql(2, &format!("SELECT COUNT(*) FROM salt.salt_returns WHERE jid NOT BETWEEN '2026{:016}' AND '2026{:016}'", 0, total - 1))
        .unwrap();
    assert_eq!(missing[0][0], "0", "only the jids written");
    for d in [&a, &b] {
        let log = d.log_text();
        assert!(log.contains("moving to the next"), "the host moved off the failed node:\n{log}");
    }

    // The same job's load saved through both hosts at once, on different
    // nodes: the first one wins, through the database's unique key.
    let jids: Vec<String> = (0..20).map(|n| format!("20261130150000{n:06}")).collect();
    std::thread::scope(|s| {
        for (d, master) in [(&a, "m1"), (&b, "m2")] {
            let jids = &jids;
            s.spawn(move || {
                for jid in jids {
                    let load = serde_json::json!({ "jid": jid, "fun": "test.ping", "master": master });
                    d.write("mysql", "save_load", &serde_json::json!({ "jid": jid, "load": load })).result();
                }
            });
        }
    });
    for jid in &jids {
        let rows = cluster.root_sql(2, &format!("SELECT COUNT(*) FROM salt.jids WHERE jid = '{jid}'")).unwrap();
        assert_eq!(rows[0][0], "1", "one load for {jid}");
        let through_a = a.call("mysql", "get_load", &serde_json::json!({ "jid": jid })).result().clone();
        let through_b = b.call("mysql", "get_load", &serde_json::json!({ "jid": jid })).result().clone();
        assert_eq!(through_a, through_b, "both hosts read the one load of {jid}");
        assert!(through_a["master"] == "m1" || through_a["master"] == "m2", "{through_a}");
    }

    let (mut a, mut b) = (a, b);
    assert!(a.is_running() && b.is_running(), "no host was restarted or died");
}
