//! The soak: returns of the real fixture shapes, each with a jid of its
//! own, from 8 clients into a `fan_out` of mysql, etcd and local-cache, while
//! MariaDB is killed and restarted twice, the etcd member once, and the host
//! is killed with SIGKILL twice and started again. Afterwards every
//! acknowledged return is in every backend exactly once, in Salt's layout.
//!
//! `SOAK_RETURNS` sets how many (default 100,000: about nine minutes of a
//! debug build here, of which seven writing and delivering); the run is
//! bounded by `SOAK_MINUTES` (default 25) and fails past it. The local
//! cache's grant gets a quota with room for every return (see BENCHMARKS.md:
//! the default 1 GiB holds about 31,800 of these).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use returner_host_tests::etcd::EtcdServer;
use returner_host_tests::mariadb::MariaDb;
use returner_host_tests::{Daemon, count_files, guest, salt_fixture_lines, temp_dir, toml_path, try_http_unix};
use serde_json::{Value, json};

use super::config_daemon;
use super::etcd::etcd_profile_toml;
use super::mysql::SCHEMA;

const CLIENTS: u64 = 8;

/// What the local cache's quota counts of one return, at most, on average
/// over the fixtures (about 34 KB: 4 KiB for each of its job's directories
/// and files, and their bytes), with room to spare.
const QUOTA_PER_RETURN: u64 = 64 * 1024;

pub(crate) fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Return `n`: fixture `n % len`, with jid `n` of its own.
fn soak_return(fixtures: &[Value], n: u64) -> Value {
    let mut ret = fixtures[n as usize % fixtures.len()].clone();
    ret["jid"] = json!(format!("2026113005{n:010}"));
    ret
}

#[test]
fn soak_every_acknowledged_return_is_in_every_backend_once_through_kills_and_restarts() {
    let _heavy = returner_host_tests::heavy_test();
    let total = env_or("SOAK_RETURNS", 100_000);
    let limit = Duration::from_secs(60 * env_or("SOAK_MINUTES", 25));
    let started = Instant::now();
    let fixtures = salt_fixture_lines("minion-returns.jsonl");
    let dir = temp_dir();
    let jobs = dir.path().join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    let mut mariadb = MariaDb::start();
    let db = mariadb.database();
    db.sql(SCHEMA);
    let mut etcd = EtcdServer::start();
    let quota_mib = (total * QUOTA_PER_RETURN).div_ceil(1024 * 1024).max(1024);
    let config = format!(
        "{mysql_profile}\n{etcd_profile}\n\
         [returners.mysql]\nmodule = {mysql}\nlimits = {{ deadline_ms = 10000 }}\n\
         grants.mysql = {{ profile = \"salt_db\", tables = {{ salt_returns = [\"select\", \"insert\"] }} }}\n\n\
         [returners.etcd]\nmodule = {etcd}\noptions = {{ ttl = 3600 }}\nlimits = {{ deadline_ms = 10000 }}\n\
         grants.etcd = {{ profile = \"main\", root = \"/salt/return\", ops = [\"read\", \"write\"], max_ttl_seconds = 3600 }}\n\n\
         [returners.local_cache]\nmodule = \"builtin:local-cache\"\nlimits = {{ deadline_ms = 10000 }}\n\
         grants.fs = {{ dir = {jobs}, mode = \"rw\", quota_mib = {quota_mib} }}\n\n\
         [returners.everything]\nfan_out = [\"mysql\", \"etcd\", \"local_cache\"]\n",
        mysql_profile = db.profile_toml("salt_db", &dir.path().join("mysql.pass")),
        etcd_profile = etcd_profile_toml("main", &etcd),
        mysql = toml_path(&guest("returner-mysql")),
        etcd = toml_path(&guest("returner-etcd")),
        jobs = toml_path(&jobs),
    );
    let host: Arc<Mutex<Option<Daemon>>> = Arc::new(Mutex::new(Some(config_daemon(dir.path(), "", &config))));
    let socket = host.lock().unwrap().as_ref().unwrap().socket.clone();

    // Clients: each sends its share in order; a return is acknowledged by a
    // 200, and one that met a dead host is sent again until it is.
    let next = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (socket, next, acked, refused, fixtures) = (socket.clone(), next.clone(), acked.clone(), refused.clone(), fixtures.clone());
            std::thread::spawn(move || {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        return;
                    }
                    let body = json!({ "ret": soak_return(&fixtures, n) }).to_string();
                    let mut tries = 0;
                    loop {
                        let r = try_http_unix(&socket, "POST", "/v1/returners/everything/returner", &[], body.as_bytes());
                        match r.as_ref().map(|r| r.status) {
                            Some(200) => {
                                acked.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            // No host (killed, starting) or shutting down: retry, as the shim does.
                            None | Some(503) => {
                                tries += 1;
                                assert!(tries < 3000, "return {n}: the host did not come back");
                                std::thread::sleep(Duration::from_millis(20));
                            }
                            Some(other) => {
                                let r = r.unwrap();
                                refused.lock().unwrap().push(format!("{n}: {other} {}", String::from_utf8_lossy(&r.body)));
                                break;
                            }
                        }
                    }
                }
            })
        })
        .collect();

    let at = |fraction: f64| {
        while (acked.load(Ordering::Relaxed) as f64) < fraction * total as f64 {
            assert!(started.elapsed() < limit, "the soak ran past {limit:?}");
            assert!(refused.lock().unwrap().is_empty(), "returns refused: {:?}", refused.lock().unwrap());
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let restart_host = |what: &str| {
        let mut h = host.lock().unwrap();
        drop(h.take()); // SIGKILL
        eprintln!("soak: host killed ({what}) at {} acknowledged", acked.load(Ordering::Relaxed));
        *h = Some(config_daemon(dir.path(), "", &config));
    };
    at(0.15);
    mariadb.stop();
    std::thread::sleep(Duration::from_secs(3));
    mariadb.run();
    at(0.30);
    restart_host("first");
    at(0.45);
    etcd.stop();
    std::thread::sleep(Duration::from_secs(3));
    etcd.restart();
    at(0.60);
    mariadb.stop();
    std::thread::sleep(Duration::from_secs(3));
    mariadb.run();
    at(0.75);
    restart_host("second");
    for c in clients {
        c.join().unwrap();
    }
    let refused = refused.lock().unwrap();
    assert!(refused.is_empty(), "{} returns refused, e.g. {:?}", refused.len(), &refused[..refused.len().min(3)]);
    assert_eq!(acked.load(Ordering::Relaxed), total);

    let h = host.lock().unwrap();
    let d = h.as_ref().unwrap();
    for returner in ["mysql", "etcd", "local_cache"] {
        let left = limit.saturating_sub(started.elapsed());
        d.settle(returner, left);
        assert!(d.dead_letters(returner).is_empty(), "{returner} has dead letters: {:?}", d.dead_letters(returner));
    }
    eprintln!("soak: {total} returns acknowledged and delivered in {:?}", started.elapsed());

    // MariaDB: one row per return, its full_ret Salt's JSON of the return.
    let rows = db.sql("SELECT `jid`, `id`, COUNT(*) FROM `salt_returns` GROUP BY `jid`, `id`");
    let counts: HashMap<(String, String), u64> =
        rows.into_iter().map(|r| ((r[0].clone(), r[1].clone()), r[2].parse().unwrap())).collect();
    assert_eq!(counts.len() as u64, total, "one (jid, id) per return in salt_returns");
    for n in 0..total {
        let ret = soak_return(&fixtures, n);
        let key = (ret["jid"].as_str().unwrap().to_owned(), ret["id"].as_str().unwrap().to_owned());
        assert_eq!(counts.get(&key), Some(&1), "return {n} in salt_returns");
    }
    // etcd: each return's `return` key, once (keys are unique by name).
    let keys: std::collections::HashSet<String> =
        etcd.keys_under("/salt/return/jobs/").into_iter().filter(|k| k.ends_with("/return")).collect();
    assert_eq!(keys.len() as u64, total, "one return key per return in etcd");
    // local-cache: each return's file.
    for n in (0..total).step_by(97) {
        let ret = soak_return(&fixtures, n);
        let got = d.call("local_cache", "get_jid", &json!({ "jid": ret["jid"] }));
        assert_eq!(got.result()[ret["id"].as_str().unwrap()]["return"], ret["return"], "return {n} in the local cache");
        let via_mysql = d.call("mysql", "get_jid", &json!({ "jid": ret["jid"] }));
        assert_eq!(via_mysql.result()[ret["id"].as_str().unwrap()]["return"], ret["return"], "return {n} read back from MariaDB");
        let via_etcd = d.call("etcd", "get_jid", &json!({ "jid": ret["jid"] }));
        assert_eq!(via_etcd.result()[ret["id"].as_str().unwrap()]["return"], ret["return"], "return {n} read back from etcd");
    }
    let files = count_files(&jobs, "return.p");
    assert_eq!(files, total, "one return file per return in the local cache");
}
