//! The `ttl` option through the daemon: one lease per return (not per key),
//! holding exactly that return's keys, and keys that really expire.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use returner_host_tests::etcd::EtcdServer;
use returner_host_tests::{guest, salt_fixture_lines, temp_dir};
use serde_json::{Value, json};

use super::super::{config_daemon, toml_path};

/// The short lease: etcd's smallest with its default election timeout is 2 s.
const SHORT_TTL: i64 = 3;
/// How long expired keys may take to go: etcd checks leases every 500 ms,
/// and a loaded machine may be slower.
const EXPIRY_WAIT: Duration = Duration::from_secs(30);

/// The real Salt returns, each with a jid of its own: `jid_prefix` and six digits.
fn returns(jid_prefix: &str) -> Vec<Value> {
    salt_fixture_lines("minion-returns.jsonl")
        .into_iter()
        .enumerate()
        .map(|(i, mut ret)| {
            ret["jid"] = json!(format!("{jid_prefix}{i:06}"));
            ret
        })
        .collect()
}

/// The keys a return writes under `/salt/return`.
fn keys_of(ret: &Value, with_minion: bool) -> BTreeSet<String> {
    let (jid, id) = (ret["jid"].as_str().unwrap(), ret["id"].as_str().unwrap());
    let mut keys: BTreeSet<String> =
        ret.as_object().unwrap().keys().map(|field| format!("/salt/return/jobs/{jid}/{id}/{field}")).collect();
    if with_minion {
        keys.insert(format!("/salt/return/minions/{id}"));
    }
    keys
}

#[test]
fn one_lease_per_return_holds_its_keys_and_they_expire() {
    let etcd = EtcdServer::start();
    let dir = temp_dir();
    let module = toml_path(&guest("returner-etcd"));
    let d = config_daemon(
        dir.path(),
        "",
        &format!(
            r#"
{profile}
[returners.etcd]
module = {module}
options = {{ ttl = 600 }}
grants.etcd = {{ profile = "main", root = "/salt/return", ops = ["read", "write"], max_ttl_seconds = 600 }}

[returners.etcd_short]
module = {module}
options = {{ "etcd.ttl" = {SHORT_TTL} }}
grants.etcd = {{ profile = "main", root = "/salt/return", ops = ["read", "write"], max_ttl_seconds = 600 }}
"#,
            profile = super::etcd_profile_toml("main", &etcd),
        ),
    );
    assert!(etcd.lease_list().is_empty(), "a fresh etcd holds no lease");

    // Long leases: one per return and one per saved load, each holding exactly its keys.
    let long = returns("20261123100000");
    for ret in &long {
        d.write("etcd", "returner", &json!({ "ret": ret })).result();
    }
    let jid = long[0]["jid"].as_str().unwrap();
    d.write("etcd", "save_load", &json!({ "jid": jid, "load": { "fun": "test.ping", "jid": jid } })).result();
    let leases = etcd.lease_list();
    assert_eq!(leases.len(), long.len() + 1, "one lease per return and one per load, not one per key: {leases:?}");
    let mut held: BTreeMap<BTreeSet<String>, i64> = BTreeMap::new();
    for lease in &leases {
        let (ttl, keys) = etcd.lease_keys(lease);
        held.insert(keys.into_iter().collect(), ttl);
    }
    // Every return is of minion m1: `minions/m1` moved to the last return's lease.
    let mut expected: BTreeMap<BTreeSet<String>, i64> =
        long.iter().enumerate().map(|(i, ret)| (keys_of(ret, i == long.len() - 1), 600)).collect();
    expected.insert(BTreeSet::from([format!("/salt/return/jobs/{jid}/.load.p")]), 600);
    assert_eq!(held, expected, "each lease holds exactly one return's keys");

    // Short leases: the keys are there, then gone; the long ones stay.
    let short = returns("20261123110000");
    for ret in &short[..3] {
        d.write("etcd_short", "returner", &json!({ "ret": ret })).result();
    }
    let prefix = |ret: &Value| format!("/salt/return/jobs/{}/", ret["jid"].as_str().unwrap());
    for ret in &short[..3] {
        let leases = etcd.leases(&prefix(ret));
        assert!(!leases.is_empty() && leases.iter().all(|l| *l == leases[0]), "one lease: {leases:?}");
        assert_eq!(etcd.lease_keys(&format!("{:x}", leases[0])).0, SHORT_TTL);
    }
    let started = Instant::now();
    while short[..3].iter().any(|ret| !etcd.dump(&prefix(ret)).is_empty()) {
        assert!(started.elapsed() < EXPIRY_WAIT, "keys under a {SHORT_TTL} s lease still there after {EXPIRY_WAIT:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(etcd.lease_list().len(), long.len() + 1, "the short leases expired, the long ones did not");
    for ret in &long {
        assert!(!etcd.dump(&prefix(ret)).is_empty(), "a return under a 600 s lease expired");
    }
    let back = d.call("etcd", "get_jid", &json!({ "jid": short[0]["jid"] }));
    assert_eq!(back.result(), &json!({}), "an expired return is gone for readers too");
}

#[test]
fn a_thousand_ttl_puts_in_one_call_make_one_lease() {
    let etcd = EtcdServer::start();
    let dir = temp_dir();
    let d = config_daemon(
        dir.path(),
        "",
        &format!(
            r#"
{profile}
[returners.flood]
module = {module}
options = {{ max_ttl = 600 }}
limits = {{ deadline_ms = 60000 }}
grants.etcd = {{ profile = "main", root = "/salt/return", ops = ["read", "write"], max_ttl_seconds = 600 }}
"#,
            profile = super::etcd_profile_toml("main", &etcd),
            module = toml_path(&guest("fixture-etcd-escaper")),
        ),
    );
    assert!(etcd.lease_list().is_empty(), "a fresh etcd holds no lease");
    let answer = d.call("flood", "get_fun", &json!({ "fun": "lease-flood" }));
    assert_eq!(answer.result(), &json!({ "puts": 1000 }));

    let leases = etcd.lease_list();
    assert_eq!(leases.len(), 1, "a thousand puts with one TTL in one call make one lease: {leases:?}");
    let (ttl, keys) = etcd.lease_keys(&leases[0]);
    assert_eq!((ttl, keys.len()), (600, 1000), "the lease has the TTL asked and holds every key");
    let on_keys = etcd.leases("/salt/return/flood/");
    assert_eq!(on_keys.len(), 1000);
    assert!(on_keys.iter().all(|l| format!("{l:016x}") == leases[0]), "every key carries the one lease");

    // The next call makes a lease of its own: the sharing ends with the call.
    d.call("flood", "get_fun", &json!({ "fun": "lease-flood" })).result();
    assert_eq!(etcd.lease_list().len(), 2, "one lease per call");
}
