//! Hot reload while serving: a module file replaced under load is swapped in
//! with no call failed or lost; calls in flight finish on the old module; a
//! broken replacement and a hash mismatch are refused, audited and counted,
//! and the old module keeps serving; SIGHUP takes a new pin, and narrowed
//! grants, from the config, and refuses whole a config that needs a restart.

use std::path::Path;
use std::time::{Duration, Instant};

use returner_host_tests::{Daemon, guest, temp_dir};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::hostile::GoodTraffic;
use super::{config_daemon, toml_path};

/// `bytes` with a custom section appended: the same component, another sha256.
fn variant(bytes: &[u8], tag: &str) -> Vec<u8> {
    fn leb128(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let name = b"returner-host-test";
    let mut payload = Vec::new();
    leb128(name.len(), &mut payload);
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.as_bytes());
    let mut out = bytes.to_vec();
    out.push(0); // custom section id
    leb128(payload.len(), &mut out);
    out.extend_from_slice(&payload);
    out
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Replace `path` the way an admin should: write beside it, then rename.
fn replace(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("wasm.new");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The sha256 `returner` serves with now, from `GET /v1/returners`.
fn serving(d: &Daemon, returner: &str) -> String {
    let r = returner_host_tests::http_unix(&d.socket, "GET", "/v1/returners", &[], b"");
    assert_eq!(r.status, 200, "{:?}", r.json);
    r.json["returners"][returner]["sha256"].as_str().unwrap().to_owned()
}

/// Wait until `check` holds, for at most a minute (a reload compiles).
fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < Duration::from_secs(60), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Audit events with `outcome = "refused"` for `returner`'s module (a last
/// line the daemon's audit writer has not finished is left for the next look).
fn refusals(audit_log: &Path, returner: &str) -> Vec<Value> {
    std::fs::read_to_string(audit_log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["fields"]["returner"] == returner && e["fields"]["outcome"] == "refused")
        .collect()
}

/// A daemon serving `module` (copied to `dir/hot.wasm`) as `hot` with a job
/// cache grant, watching module files every 100 ms; `pin` goes in `sha256`.
fn hot_daemon(dir: &Path, module: &[u8], pin: Option<&str>, limits: &str) -> Daemon {
    std::fs::write(dir.join("hot.wasm"), module).unwrap();
    let jobs = dir.join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    config_daemon(
        dir,
        &format!("watch_interval_ms = 100\naudit_log = {}", toml_path(&dir.join("audit.jsonl"))),
        &hot_config(dir, pin, limits),
    )
}

fn hot_config(dir: &Path, pin: Option<&str>, limits: &str) -> String {
    let pin = pin.map(|p| format!("sha256 = \"{p}\"\n")).unwrap_or_default();
    format!(
        "[returners.hot]\nmodule = {}\n{pin}limits = {{ {limits} }}\n[returners.hot.grants.fs]\ndir = {}\nmode = \"rw\"\n",
        toml_path(&dir.join("hot.wasm")),
        toml_path(&dir.join("jobs"))
    )
}

#[test]
fn swaps_under_load_lose_no_call_and_broken_modules_are_refused() {
    let dir = temp_dir();
    let original = std::fs::read(guest("returner-local-cache")).unwrap();
    let d = hot_daemon(dir.path(), &original, None, "deadline_ms = 5000");
    assert_eq!(serving(&d, "hot"), sha256(&original));
    let traffic = GoodTraffic::start(d.socket.clone(), "hot");

    for n in 1..=3 {
        let next = variant(&original, &format!("v{n}"));
        replace(&dir.path().join("hot.wasm"), &next);
        wait_for(&format!("v{n} to serve"), || serving(&d, "hot") == sha256(&next));
    }
    let last = serving(&d, "hot");

    // Not a component at all, then a core module: each refused, the last good one serves on.
    let audit_log = dir.path().join("audit.jsonl");
    for (n, broken) in [b"this is not wasm".to_vec(), b"\0asm\x01\0\0\0".to_vec()].into_iter().enumerate() {
        replace(&dir.path().join("hot.wasm"), &broken);
        wait_for("the refusal to be audited", || refusals(&audit_log, "hot").len() == n + 1);
        let refused = refusals(&audit_log, "hot");
        let e = &refused[n];
        assert_eq!(e["fields"]["module_sha256"], sha256(&broken), "{e}");
        assert_eq!(e["fields"]["capability"], "module", "{e}");
        assert!(e["fields"]["message"].as_str().unwrap().contains("hot.wasm"), "the message names the file: {e}");
        assert_eq!(serving(&d, "hot"), last, "the old module keeps serving");
    }
    // Let the traffic run a while on the module that survived.
    std::thread::sleep(Duration::from_millis(300));
    let round_trips = traffic.finish();
    assert!(round_trips > 10, "{round_trips} round trips across the swaps");

    let m = d.metrics();
    assert_eq!(m[r#"returner_host_module_reloads_total{returner="hot",outcome="swapped"}"#], 3.0);
    assert_eq!(m[r#"returner_host_module_reloads_total{returner="hot",outcome="refused"}"#], 2.0);
    assert_eq!(
        m[r#"returner_host_calls_total{returner="hot",function="returner",outcome="ok"}"#],
        round_trips as f64,
        "every return was stored"
    );
    assert!(d.log_text().contains("new module refused; the old one keeps serving"));
}

#[test]
fn a_call_in_flight_finishes_on_the_module_it_started_on() {
    let dir = temp_dir();
    let original = std::fs::read(guest("fixture-noop")).unwrap();
    let d = hot_daemon(dir.path(), &original, None, "deadline_ms = 30000");
    let socket = d.socket.clone();
    let slow = std::thread::spawn(move || {
        let args = json!({ "fun": "sleep:6000" }).to_string();
        returner_host_tests::http_unix(&socket, "POST", "/v1/returners/hot/get_fun", &[], args.as_bytes())
    });
    std::thread::sleep(Duration::from_millis(200));
    let next = variant(&original, "next");
    replace(&dir.path().join("hot.wasm"), &next);
    wait_for("the new module to serve", || serving(&d, "hot") == sha256(&next));
    assert!(!slow.is_finished(), "the slow call is still running on the old module");
    assert_eq!(d.call("hot", "get_load", &json!({ "jid": "1" })).result(), &json!({}), "new calls are served");
    let r = slow.join().unwrap();
    assert_eq!((r.status, r.json["result"].clone()), (200, json!({})), "{:?}", r.json);
}

#[test]
fn a_pin_mismatch_is_refused_until_sighup_brings_the_new_pin() {
    let dir = temp_dir();
    let original = std::fs::read(guest("fixture-noop")).unwrap();
    let pinned = sha256(&original);
    let d = hot_daemon(dir.path(), &original, Some(&pinned), "deadline_ms = 5000");
    let audit_log = dir.path().join("audit.jsonl");

    let next = variant(&original, "next");
    replace(&dir.path().join("hot.wasm"), &next);
    wait_for("the pin mismatch to be refused", || refusals(&audit_log, "hot").len() == 1);
    let e = &refusals(&audit_log, "hot")[0];
    assert_eq!(e["fields"]["module_sha256"], sha256(&next), "{e}");
    assert!(e["fields"]["message"].as_str().unwrap().contains(&format!("sha256 pins {pinned}")), "{e}");
    assert_eq!(serving(&d, "hot"), pinned);
    assert_eq!(d.call("hot", "get_load", &json!({ "jid": "1" })).result(), &json!({}));

    // The admin pins the new module and sends SIGHUP.
    let hangup = |d: &Daemon| {
        let status = std::process::Command::new("kill").args(["-HUP", &d.pid().to_string()]).status().unwrap();
        assert!(status.success());
    };
    let host_toml = dir.path().join("host.toml");
    let text = std::fs::read_to_string(&host_toml).unwrap();
    std::fs::write(&host_toml, text.replace(&pinned, &sha256(&next))).unwrap();
    hangup(&d);
    wait_for("the newly pinned module to serve", || serving(&d, "hot") == sha256(&next));

    // A config whose pin matches no file: refused on SIGHUP, the module serves on.
    let text = std::fs::read_to_string(&host_toml).unwrap();
    std::fs::write(&host_toml, text.replace(&sha256(&next), &"0".repeat(64))).unwrap();
    hangup(&d);
    wait_for("the wrong pin to be refused", || refusals(&audit_log, "hot").len() == 2);
    assert_eq!(serving(&d, "hot"), sha256(&next));
    assert_eq!(d.call("hot", "get_load", &json!({ "jid": "1" })).result(), &json!({}));
    let mut d = d;
    assert!(d.is_running(), "SIGHUP does not end the host");
}

fn hangup(d: &Daemon) {
    let status = std::process::Command::new("kill").args(["-HUP", &d.pid().to_string()]).status().unwrap();
    assert!(status.success());
}

fn job_return(jid: &str) -> Value {
    json!({ "ret": { "id": "m1", "jid": jid, "fun": "test.ping", "return": true, "retcode": 0, "success": true } })
}

/// Store a job return with a fresh jid through `returner` until one is
/// refused (a reload applies within a moment of the signal); that answer.
fn first_refused_return(d: &Daemon, returner: &str) -> returner_host_tests::Response {
    let started = Instant::now();
    let mut n = 1u64;
    loop {
        n += 1;
        let r = d.write(returner, "returner", &job_return(&format!("2026113000{n:010}")));
        if r.status != 200 {
            return r;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{returner} still stores returns a minute after SIGHUP");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sighup_applies_a_narrowed_fs_grant_to_the_next_call() {
    let dir = temp_dir();
    let original = std::fs::read(guest("returner-local-cache")).unwrap();
    let d = hot_daemon(dir.path(), &original, None, "deadline_ms = 5000");
    assert_eq!(d.write("hot", "returner", &job_return("20261130000000000001")).status, 200);

    // rw to ro: the next write is denied, reads go on.
    let host_toml = dir.path().join("host.toml");
    let text = std::fs::read_to_string(&host_toml).unwrap();
    std::fs::write(&host_toml, text.replace("mode = \"rw\"", "mode = \"ro\"")).unwrap();
    hangup(&d);
    let r = first_refused_return(&d, "hot");
    assert_eq!((r.status, r.error().0), (403, "denied"), "{:?}", r.json);
    let back = d.call("hot", "get_jid", &json!({ "jid": "20261130000000000001" }));
    assert_eq!(back.result()["m1"]["return"], json!(true), "what was written before stays readable");

    // No grant at all: not even a read.
    let text = std::fs::read_to_string(&host_toml).unwrap();
    let without = text.split("[returners.hot.grants.fs]").next().unwrap().to_owned();
    std::fs::write(&host_toml, without).unwrap();
    hangup(&d);
    wait_for("the revoked grant to apply", || d.call("hot", "get_jid", &json!({ "jid": "20261130000000000001" })).status != 200);
    assert!(d.log_text().contains("grants, limits and options applied to new calls"), "{}", d.log_text());
    let mut d = d;
    assert!(d.is_running());
}

#[test]
fn sighup_applies_a_revoked_etcd_op_to_the_next_call() {
    use returner_host_tests::etcd::EtcdServer;
    let etcd = EtcdServer::start();
    let dir = temp_dir();
    let d = config_daemon(
        dir.path(),
        "",
        &format!("{}\n{}", super::etcd::etcd_profile_toml("main", &etcd), super::etcd::etcd_returner_toml("main")),
    );
    assert_eq!(d.write("etcd", "returner", &job_return("20261130000000000001")).status, 200);

    let host_toml = dir.path().join("host.toml");
    let text = std::fs::read_to_string(&host_toml).unwrap();
    let narrowed = text.replace(r#"ops = ["read", "write", "delete"]"#, r#"ops = ["read"]"#);
    assert_ne!(narrowed, text, "the grant's ops are in the config");
    std::fs::write(&host_toml, narrowed).unwrap();
    hangup(&d);
    let r = first_refused_return(&d, "etcd");
    assert_eq!((r.status, r.error().0), (403, "denied"), "{:?}", r.json);
    assert!(r.error().1.contains("etcd"), "names the capability: {:?}", r.json);
    let back = d.call("etcd", "get_jid", &json!({ "jid": "20261130000000000001" }));
    assert_eq!(back.result()["m1"]["return"], json!(true), "reads are still granted");
}

#[test]
fn sighup_refuses_whole_a_config_that_needs_a_restart() {
    let dir = temp_dir();
    let original = std::fs::read(guest("returner-local-cache")).unwrap();
    let d = hot_daemon(dir.path(), &original, None, "deadline_ms = 5000");

    // A narrowed grant together with a new returner, a new profile and another body limit.
    let host_toml = dir.path().join("host.toml");
    let text = std::fs::read_to_string(&host_toml).unwrap();
    let text = text.replace("mode = \"rw\"", "mode = \"ro\"").replace("[server]\n", "[server]\nmax_body_bytes = 4096\ninstance_slots = 7\n");
    let added = "[returners.extra]\nmodule = \"builtin:local-cache\"\n[profiles.spare]\nkind = \"etcd\"\nendpoints = [\"http://127.0.0.1:1\"]\n";
    std::fs::write(&host_toml, format!("{text}\n{added}")).unwrap();
    hangup(&d);
    wait_for("the refusal to be logged", || d.log_text().contains("only a restart applies; nothing changed"));
    let log = d.log_text();
    let line = log.lines().find(|l| l.contains("only a restart applies")).unwrap();
    for change in ["returner `extra` added", "profile `spare` added", "server.max_body_bytes changed", "server.instance_slots changed"] {
        assert!(line.contains(change), "names `{change}`: {line}");
    }
    // Nothing changed: the grant is still rw.
    assert_eq!(d.write("hot", "returner", &job_return("20261130000000000001")).status, 200);
}

#[test]
fn sighup_after_removing_a_table_from_a_mysql_grant_denies_the_next_call() {
    use super::mysql::{RETURNER_TABLES, database};
    let db = database();
    let dir = temp_dir();
    let profile = db.profile_toml("salt_db", &dir.path().join("mysql.pass"));
    let module = toml_path(&guest("returner-mysql"));
    let d = config_daemon(
        dir.path(),
        "",
        &format!("{profile}\n[returners.mysql]\nmodule = {module}\n[returners.mysql.grants.mysql]\nprofile = \"salt_db\"\ntables = {RETURNER_TABLES}\n"),
    );
    // The statement passes and is remembered as checked under this grant.
    for jid in ["20261130000000000001", "20261130000000000002"] {
        assert_eq!(d.write("mysql", "returner", &job_return(jid)).status, 200);
    }

    let host_toml = dir.path().join("host.toml");
    let text = std::fs::read_to_string(&host_toml).unwrap();
    let narrowed = text.replace(r#"salt_returns = ["select", "insert", "delete"], "#, "");
    assert_ne!(narrowed, text, "salt_returns is in the grant");
    std::fs::write(&host_toml, narrowed).unwrap();
    hangup(&d);
    let r = first_refused_return(&d, "mysql");
    assert_eq!((r.status, r.error().0), (403, "denied"), "{:?}", r.json);
    // The returner reads salt_returns before it inserts (a redelivered return
    // is not stored twice): the read is the first statement refused.
    assert!(r.error().1.contains("table `salt_returns` is not granted `select`"), "{:?}", r.json);
    let stored = db.sql("SELECT COUNT(*) FROM salt_returns");
    let again = d.write("mysql", "returner", &job_return("20261130000000000003"));
    assert_eq!(again.error().0, "denied", "every call after the reload: {:?}", again.json);
    assert_eq!(db.sql("SELECT COUNT(*) FROM salt_returns"), stored, "a denied call stored nothing");
}
