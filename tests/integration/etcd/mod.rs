//! The shipped etcd returner through the real daemon into a real etcd: Salt's
//! layout on the real payloads, leases, denials with audit, and etcd going away.
//! The submodules: a hostile guest's escapes, lease expiry, a cluster losing
//! its leader, and TLS.

mod cluster;
mod escapes;
mod leases;
mod partition;
mod tls;

use std::time::{Duration, Instant};

use returner_host_tests::etcd::EtcdServer;
use returner_host_tests::{Daemon, guest, salt_fixture_lines, temp_dir};
use serde_json::{Value, json};

use super::{config_daemon, toml_path};

/// A daemon serving the etcd returner as `etcd` (full grant, `ttl` lease),
/// `etcd_ro` (read-only grant), `etcd_long` (asks a TTL over the max) and
/// the embedded local cache as `local_cache`.
fn etcd_daemon(dir: &std::path::Path, etcd: &EtcdServer) -> Daemon {
    let jobs = dir.join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    let module = toml_path(&guest("returner-etcd"));
    config_daemon(
        dir,
        "",
        &format!(
            r#"
{profile}
{etcd_returner}
[returners.etcd_ro]
module = {module}
[returners.etcd_ro.grants.etcd]
profile = "main"
root = "/salt/return"
ops = ["read"]

[returners.etcd_long]
module = {module}
options = {{ ttl = 7200 }}
[returners.etcd_long.grants.etcd]
profile = "main"
root = "/salt/return"
ops = ["read", "write"]
max_ttl_seconds = 3600

[returners.local_cache]
module = "builtin:local-cache"
[returners.local_cache.grants.fs]
dir = {jobs}
mode = "rw"
"#,
            profile = etcd_profile_toml("main", etcd),
            etcd_returner = etcd_returner_toml("main"),
            jobs = toml_path(&jobs),
        ),
    )
}

/// A host whose etcd returner writes to every member of `cluster` (the
/// first endpoint first), with `server` settings and the returns' `ttl`.
fn cluster_daemon(dir: &std::path::Path, cluster: &returner_host_tests::etcd::EtcdCluster, server: &str, ttl: Option<u32>) -> Daemon {
    let endpoints = cluster.endpoints().iter().map(|e| format!("\"{e}\"")).collect::<Vec<_>>().join(", ");
    let (options, max_ttl) = match ttl {
        Some(ttl) => (format!("options = {{ ttl = {ttl} }}\n"), format!(", max_ttl_seconds = {ttl}")),
        None => (String::new(), String::new()),
    };
    config_daemon(
        dir,
        server,
        &format!(
            r#"
[profiles.cluster]
kind = "etcd"
endpoints = [{endpoints}]
connect_timeout_ms = 500
request_timeout_ms = 8000

[returners.etcd]
module = {module}
{options}limits = {{ deadline_ms = 12000 }}
grants.etcd = {{ profile = "cluster", root = "/salt/return", ops = ["read", "write"]{max_ttl} }}
"#,
            module = toml_path(&guest("returner-etcd")),
        ),
    )
}

/// `[profiles.NAME]` for `etcd`, with short timeouts so a stopped etcd
/// is an error quickly.
pub(crate) fn etcd_profile_toml(name: &str, etcd: &EtcdServer) -> String {
    format!(
        "[profiles.{name}]\nkind = \"etcd\"\nendpoints = [\"{}\"]\nrequest_timeout_ms = 800\nconnect_timeout_ms = 500\n",
        etcd.endpoint()
    )
}

/// `[returners.etcd]`: the shipped returner with every op under
/// `/salt/return` of `profile`, a 600 s lease per call.
pub(crate) fn etcd_returner_toml(profile: &str) -> String {
    format!(
        r#"[returners.etcd]
module = {}
options = {{ ttl = 600 }}
grants.etcd = {{ profile = "{profile}", root = "/salt/return", ops = ["read", "write", "delete"], max_ttl_seconds = 3600 }}
"#,
        toml_path(&guest("returner-etcd"))
    )
}

#[test]
fn minion_returns_land_in_salts_layout_under_one_lease() {
    let etcd = EtcdServer::start();
    etcd.ctl(&["put", "/salt/return2/outside", "untouched"]);
    let dir = temp_dir();
    let d = etcd_daemon(dir.path(), &etcd);
    for ret in salt_fixture_lines("minion-returns.jsonl") {
        d.write("etcd", "returner", &json!({ "ret": ret })).result();
        let (jid, id) = (ret["jid"].as_str().unwrap(), ret["id"].as_str().unwrap());
        let prefix = format!("/salt/return/jobs/{jid}/{id}/");
        let stored = etcd.dump(&prefix);
        let fields: Vec<(String, String)> = ret
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (format!("{prefix}{k}"), python_json_dumps(v)))
            .collect();
        let mut expected = fields;
        expected.sort();
        assert_eq!(stored, expected, "keys and values of {jid}/{id}");
        let leases = etcd.leases(&prefix);
        assert!(leases.iter().all(|l| *l != 0 && *l == leases[0]), "one lease per return: {leases:?}");
        let back = d.call("etcd", "get_jid", &json!({ "jid": jid }));
        assert_eq!(back.result()[id]["return"], ret["return"]);
    }
    let minions = etcd.dump("/salt/return/minions/");
    let last = salt_fixture_lines("minion-returns.jsonl").last().unwrap().clone();
    assert!(minions.contains(&(format!("/salt/return/minions/{}", last["id"].as_str().unwrap()), last["jid"].as_str().unwrap().to_owned())));
    assert_eq!(d.call("etcd", "get_minions", &json!({})).result(), &json!(minions.iter().map(|(k, _)| k.rsplit('/').next().unwrap()).collect::<Vec<_>>()));
    let fun = d.call("etcd", "get_fun", &json!({ "fun": last["fun"] }));
    assert_eq!(fun.result()[last["id"].as_str().unwrap()], last["fun"]);
    assert_eq!(etcd.dump("/salt/return2"), [("/salt/return2/outside".to_owned(), "untouched".to_owned())]);
}

/// Salt's `json.dumps` text of `v`, independently of the returner's code.
fn python_json_dumps(v: &Value) -> String {
    let out = std::process::Command::new("python3")
        .args(["-c", "import json,sys; print(json.dumps(json.loads(sys.stdin.read()), ensure_ascii=False), end='')"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(v.to_string().as_bytes())?;
            c.wait_with_output()
        })
        .expect("python3 for json.dumps");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn master_job_cache_replay_reads_back_in_salt_shapes() {
    let etcd = EtcdServer::start();
    let dir = temp_dir();
    let d = etcd_daemon(dir.path(), &etcd);
    let mut jids = Vec::new();
    for call in salt_fixture_lines("master-job-cache-calls.jsonl") {
        let function = call["call"].as_str().unwrap();
        let mut args = call.as_object().unwrap().clone();
        args.remove("call");
        if function == "save_load" {
            jids.push(args["jid"].as_str().unwrap().to_owned());
        }
        d.outcome("etcd", function, &Value::Object(args)).result();
    }
    let jid = &jids[0];
    let load = d.call("etcd", "get_load", &json!({ "jid": jid }));
    assert_eq!(load.result()["jid"], json!(jid));
    let stored = etcd.dump(&format!("/salt/return/jobs/{jid}/.load.p"));
    assert_eq!(stored.len(), 1);
    // First write wins.
    d.write("etcd", "save_load", &json!({ "jid": jid, "load": { "fun": "other" } })).result();
    assert_eq!(etcd.dump(&format!("/salt/return/jobs/{jid}/.load.p")), stored);
    assert_eq!(d.call("etcd", "get_load", &json!({ "jid": "19990101000000000000" })).result(), &json!({}));
    let all = d.call("etcd", "get_jids", &json!({}));
    let all = all.result().as_object().unwrap();
    for jid in &jids {
        let job = &all[jid];
        for key in ["Function", "Arguments", "Target", "Target-type", "User", "StartTime"] {
            assert!(job.get(key).is_some(), "{key} missing in {job}");
        }
    }
    let filtered = d.call("etcd", "get_jids_filter", &json!({ "count": 2 }));
    let filtered = filtered.result().as_array().unwrap();
    assert_eq!(filtered.len(), 2);
    assert!(filtered[0]["JID"].as_str().unwrap() < filtered[1]["JID"].as_str().unwrap());
    assert!(!etcd.dump("/salt/return/events/").is_empty(), "events stored");
    d.write("etcd", "update_endtime", &json!({ "jid": jid, "time": "2026, Nov 23 08:43:01.000000" })).result();
    assert_eq!(d.call("etcd", "get_endtime", &json!({ "jid": jid })).result(), &json!("2026, Nov 23 08:43:01.000000"));
    d.call("etcd", "clean_old_jobs", &json!({})).result();
}

#[test]
fn denials_are_audited_and_write_nothing() {
    let etcd = EtcdServer::start();
    let dir = temp_dir();
    let d = etcd_daemon(dir.path(), &etcd);
    let ret = json!({ "id": "n1", "jid": "20261123084300320186", "fun": "test.ping", "return": true });
    let r = d.write("etcd_ro", "returner", &json!({ "ret": ret }));
    assert_eq!(r.error().0, "denied", "{:?}", r.json);
    assert!(r.error().1.contains("put-many") && r.error().1.contains("write"), "{:?}", r.json);
    let r = d.write("etcd_long", "returner", &json!({ "ret": ret }));
    assert_eq!(r.error().0, "denied", "{:?}", r.json);
    assert!(r.error().1.contains("7200"), "{:?}", r.json);
    assert!(etcd.dump("/salt").is_empty(), "nothing written");
    let log = d.log_text();
    let audited = |outcome: &str| log.lines().filter(|l| l.contains("returner_host::audit") && l.contains(outcome)).count();
    assert_eq!(audited("outcome=\"denied\""), 2, "{log}");
    assert_eq!(audited("outcome=\"dead_letter\""), 2, "each refused write is kept as a dead letter: {log}");
    assert_eq!(log.matches("returner_host::audit").count(), 4, "{log}");
}

#[test]
fn etcd_down_holds_returns_and_delivers_them_after_restart() {
    let mut etcd = EtcdServer::start();
    let dir = temp_dir();
    let d = etcd_daemon(dir.path(), &etcd);
    let ret = |n: u32| json!({ "ret": { "id": "n1", "jid": format!("2026112308430032{n:04}"), "fun": "test.ping", "return": true } });
    d.write("etcd", "returner", &ret(1)).result();
    etcd.stop();
    d.call("etcd", "returner", &ret(2)).result();
    d.write("local_cache", "returner", &ret(3)).result();
    let held = Instant::now();
    loop {
        let q = d.queue("etcd");
        if let Some(error) = q["last_error"].as_str() {
            assert!(error.contains(&etcd.endpoint()), "names the endpoint: {q}");
            break;
        }
        assert!(held.elapsed() < Duration::from_secs(30), "delivery never reported etcd down: {q}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(d.metrics()[r#"returner_host_backend_errors_total{returner="etcd",capability="etcd"}"#] >= 1.0);
    etcd.restart();
    d.write("etcd", "returner", &ret(4)).result();
    for jid in ["20261123084300320002", "20261123084300320004"] {
        assert_eq!(d.call("etcd", "get_jid", &json!({ "jid": jid })).result()["n1"]["return"], json!(true), "{jid}");
    }
}

#[test]
fn password_file_authenticates_and_never_reaches_the_guest_or_the_log() {
    let mut etcd = EtcdServer::start();
    let password = "s3cret-etcd-pw-4711";
    etcd.enable_auth(password);
    let dir = temp_dir();
    std::fs::write(dir.path().join("good.pass"), format!("{password}\n")).unwrap();
    std::fs::write(dir.path().join("bad.pass"), "wrong-password-0815").unwrap();
    let module = toml_path(&guest("returner-etcd"));
    let d = config_daemon(
        dir.path(),
        "",
        &format!(
            r#"
[profiles.good]
kind = "etcd"
endpoints = ["{endpoint}"]
username = "root"
password_file = "good.pass"
[profiles.bad]
kind = "etcd"
"etcd.host" = "127.0.0.1"
"etcd.port" = {port}
"etcd.username" = "root"
password_file = "bad.pass"

[returners.etcd]
module = {module}
options = {{ ttl = 600 }}
[returners.etcd.grants.etcd]
profile = "good"
root = "/salt/return"
ops = ["read", "write"]
max_ttl_seconds = 600

[returners.etcd_bad]
module = {module}
[returners.etcd_bad.grants.etcd]
profile = "bad"
root = "/salt/return"
ops = ["read", "write"]
"#,
            endpoint = etcd.endpoint(),
            port = etcd.endpoint().rsplit(':').next().unwrap(),
        ),
    );
    let ret = json!({ "ret": { "id": "n1", "jid": "20261123084300320186", "fun": "test.ping", "return": true } });
    d.write("etcd", "returner", &ret).result();
    assert_eq!(etcd.dump("/salt/return/minions/"), [("/salt/return/minions/n1".to_owned(), "20261123084300320186".to_owned())]);
    let r = d.call("etcd_bad", "get_jid", &json!({ "jid": "20261123084300320186" }));
    assert_eq!(r.error().0, "backend", "{:?}", r.json);
    assert!(r.error().1.contains("authentication failed"), "a clear error: {:?}", r.json);
    assert!(!r.error().1.contains("wrong-password"), "{:?}", r.json);
    d.call("etcd_bad", "returner", &ret).result();
    let held = d.delivery_error("etcd_bad", Duration::from_secs(30));
    assert!(held.contains("authentication failed") && !held.contains("wrong-password"), "{held}");
    let log = d.log_text();
    assert!(!log.contains(password) && !log.contains("wrong-password"), "a password reached the log:\n{log}");
}

#[test]
fn a_return_over_etcds_request_limit_is_invalid_and_etcd_keeps_serving() {
    let etcd = EtcdServer::start();
    let dir = temp_dir();
    let d = etcd_daemon(dir.path(), &etcd);
    let big = "x".repeat(3 * 1024 * 1024);
    let r = d.write("etcd", "returner", &json!({ "ret": { "id": "n1", "jid": "20261123084300320186", "fun": "cmd.run", "return": big } }));
    assert_eq!(r.error().0, "invalid", "{:?}", r.error());
    assert!(r.error().1.contains("too large"), "{:?}", r.error());
    d.write("etcd", "returner", &json!({ "ret": { "id": "n1", "jid": "20261123084300320187", "fun": "test.ping", "return": true } })).result();
}
