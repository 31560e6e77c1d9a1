//! Every function of the embedded local-cache returner through the HTTP API,
//! on the real Salt payloads.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use returner_host_tests::{salt_fixture_lines, temp_dir};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::default_daemon;

/// Salt's jid directory: sha256 of the jid, split after two hex digits.
pub(crate) fn jid_dir(jobs: &Path, jid: &str) -> PathBuf {
    let h = hex::encode(Sha256::digest(jid.as_bytes()));
    jobs.join(&h[..2]).join(&h[2..])
}

/// What Salt's local_cache get_jid gives for one minion's return.
fn expected_minion_entry(ret: &Value) -> Value {
    let mut entry = serde_json::Map::new();
    for key in ["return", "retcode", "success"] {
        if let Some(v) = ret.get(key) {
            entry.insert(key.into(), v.clone());
        }
    }
    if let Some(out) = ret.get("out") {
        entry.insert("out".into(), out.clone());
    }
    Value::Object(entry)
}

#[test]
fn minion_returns_round_trip_byte_for_byte() {
    let dir = temp_dir();
    let d = default_daemon(dir.path());
    let returns = salt_fixture_lines("minion-returns.jsonl");
    let largest = returns.iter().map(|r| r["return"].to_string().len()).max().unwrap();
    assert!(largest > 128_000, "the fixtures include a return over 128 KB ({largest} bytes)");

    for ret in &returns {
        assert_eq!(d.write("local_cache", "returner", &json!({ "ret": ret })).result(), &Value::Null);
    }
    for ret in &returns {
        let jid = ret["jid"].as_str().unwrap();
        let id = ret["id"].as_str().unwrap();
        let got = d.call("local_cache", "get_jid", &json!({ "jid": jid }));
        let entry = &got.result()[id];
        assert_eq!(entry, &expected_minion_entry(ret), "get_jid {jid}");
        // Byte for byte: the serialized return is the same text.
        assert_eq!(entry["return"].to_string(), ret["return"].to_string());
    }

    // Stored where Salt's local_cache stores it, as JSON, unicode intact.
    let unicode = returns.iter().find(|r| r["fun"] == "test.arg").unwrap();
    let file = jid_dir(&dir.path().join("var/jobs"), unicode["jid"].as_str().unwrap()).join("m1/return.p");
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let stored: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(stored["return"], unicode["return"]);
    assert!(text.contains("unicodé ✓ 日本"), "unicode is stored as is: {text}");
}

/// Replay what a Salt 3008 master did with its job cache: prep_jid and
/// save_load at publish, save_load again and returner per return.
fn replay_master(d: &returner_host_tests::Daemon) -> Vec<Value> {
    let calls = salt_fixture_lines("master-job-cache-calls.jsonl");
    for c in &calls {
        match c["call"].as_str().unwrap() {
            "save_load" => {
                let jid = &c["jid"];
                let prep = d.call("local_cache", "prep_jid", &json!({ "nocache": false, "passed_jid": jid }));
                assert_eq!(prep.result(), jid, "prep_jid adopts the passed jid");
                let args = json!({ "jid": jid, "load": c["load"], "minions": c["minions"] });
                assert_eq!(d.write("local_cache", "save_load", &args).result(), &Value::Null);
            }
            "returner" => {
                assert_eq!(d.write("local_cache", "returner", &json!({ "ret": c["ret"] })).result(), &Value::Null);
            }
            "event_return" => {
                let r = d.write("local_cache", "event_return", &json!({ "events": c["events"] }));
                assert_eq!(r.status, 501, "{:?}", r.json);
                assert_eq!(r.error().0, "unsupported");
                assert!(r.error().1.contains("'local_cache.event_return' is not available."), "{:?}", r.json);
            }
            other => panic!("unexpected recorded call {other}"),
        }
    }
    calls
}

#[test]
fn master_job_cache_replay_reads_back_in_salt_shapes() {
    let dir = temp_dir();
    let d = default_daemon(dir.path());
    let calls = replay_master(&d);

    // The publish load survives the second save_load of every job, with the minion list.
    let ping = "20261123084332485602";
    let load = d.call("local_cache", "get_load", &json!({ "jid": ping }));
    let publish = calls.iter().find(|c| c["call"] == "save_load" && c["jid"] == ping).unwrap();
    let mut want = publish["load"].clone();
    want["Minions"] = json!(["n1"]);
    assert_eq!(load.result(), &want);

    // get_jid: the minion's return; the second return of test.arg (a replay) is dropped.
    let jid = d.call("local_cache", "get_jid", &json!({ "jid": ping }));
    assert_eq!(jid.result(), &json!({ "n1": { "return": true, "retcode": 0, "success": true } }));
    let state = d.call("local_cache", "get_jid", &json!({ "jid": "20261123084342159497" }));
    assert_eq!(state.result()["n1"]["out"], "highstate");

    // get_jids: Salt's jobs-runner shape, keyed by jid.
    let jids = d.call("local_cache", "get_jids", &json!({}));
    let jids = jids.result().as_object().unwrap().clone();
    let saved: std::collections::BTreeSet<&str> =
        calls.iter().filter(|c| c["call"] == "save_load").map(|c| c["jid"].as_str().unwrap()).collect();
    assert_eq!(jids.keys().map(String::as_str).collect::<std::collections::BTreeSet<_>>(), saved);
    assert_eq!(
        jids[ping],
        json!({
            "Function": "test.ping",
            "Arguments": [],
            "Target": "n1",
            "Target-type": "glob",
            "User": "root",
            "StartTime": "2026, Nov 23 08:43:32.485602",
        })
    );

    // get_jids_filter: the newest `count`, oldest first, with JID.
    let filtered = d.call("local_cache", "get_jids_filter", &json!({ "count": 3, "filter_find_job": true }));
    let list = filtered.result().as_array().unwrap();
    let mut newest: Vec<&str> = saved.iter().copied().collect();
    newest.sort();
    let newest = &newest[newest.len() - 3..];
    assert_eq!(list.iter().map(|j| j["JID"].as_str().unwrap()).collect::<Vec<_>>(), newest);
    assert_eq!(list[2]["Function"], "cmd.run");
    assert_eq!(list[2]["StartTime"], "2026, Nov 23 08:43:43.740861");

    // get_fun and get_minions read the same store.
    let fun = d.call("local_cache", "get_fun", &json!({ "fun": "test.ping" }));
    assert_eq!(fun.result(), &json!({ "n1": true }));
    let minions = d.call("local_cache", "get_minions", &json!({}));
    assert_eq!(minions.result(), &json!(["n1", "vm_master"]));

    // An unknown jid: {} as Salt's runners need, not an error.
    assert_eq!(d.call("local_cache", "get_load", &json!({ "jid": "20000101000000000001" })).result(), &json!({}));
    assert_eq!(d.call("local_cache", "get_jid", &json!({ "jid": "20000101000000000001" })).result(), &json!({}));
}

#[test]
fn save_load_first_write_wins_and_minions_merge_syndics() {
    let dir = temp_dir();
    let d = default_daemon(dir.path());
    let jid = "20261123090000000001";
    let first = json!({ "fun": "test.ping", "tgt": "*", "tgt_type": "glob", "jid": jid, "arg": [] });
    let second = json!({ "fun": "cmd.run", "tgt": "other", "jid": jid });
    assert_eq!(d.write("local_cache", "save_load", &json!({ "jid": jid, "load": first })).result(), &Value::Null);
    assert_eq!(d.write("local_cache", "save_load", &json!({ "jid": jid, "load": second })).result(), &Value::Null);
    assert_eq!(d.call("local_cache", "get_load", &json!({ "jid": jid })).result(), &first);

    let r = d.write("local_cache", "save_minions", &json!({ "jid": jid, "minions": ["b", "a"] }));
    assert_eq!(r.result(), &Value::Null);
    let r = d.write("local_cache", "save_minions", &json!({ "jid": jid, "minions": ["c", "a"], "syndic_id": "syn1" }));
    assert_eq!(r.result(), &Value::Null);
    let load = d.call("local_cache", "get_load", &json!({ "jid": jid }));
    assert_eq!(load.result()["Minions"], json!(["a", "b", "c"]));
    assert_eq!(load.result()["fun"], "test.ping");
}

#[test]
fn endtime_round_trip() {
    let dir = temp_dir();
    let d = default_daemon(dir.path());
    let jid = "20261123090000000002";
    assert_eq!(d.call("local_cache", "get_endtime", &json!({ "jid": jid })).result(), &json!(false));
    let time = "2026, Nov 23 09:00:01.123456";
    assert_eq!(d.write("local_cache", "update_endtime", &json!({ "jid": jid, "time": time })).result(), &Value::Null);
    assert_eq!(d.call("local_cache", "get_endtime", &json!({ "jid": jid })).result(), &json!(time));
}

#[test]
fn prep_jid_generates_salt_jids_and_is_idempotent() {
    let dir = temp_dir();
    let d = default_daemon(dir.path());
    let r = d.call("local_cache", "prep_jid", &json!({}));
    let jid = r.result().as_str().unwrap().to_owned();
    assert_eq!(jid.len(), 20, "{jid}");
    assert!(jid.chars().all(|c| c.is_ascii_digit()), "{jid}");
    assert!(jid.starts_with("20"), "{jid}");
    for _ in 0..2 {
        let again = d.call("local_cache", "prep_jid", &json!({ "passed_jid": jid }));
        assert_eq!(again.result(), &json!(jid));
    }
    assert!(jid_dir(&dir.path().join("var/jobs"), &jid).join("jid").is_file());
}

#[test]
fn clean_old_jobs_removes_old_jobs_and_keeps_new_ones() {
    let dir = temp_dir();
    let d = default_daemon(dir.path());
    let jobs = dir.path().join("var/jobs");
    let (old, new) = ("20261120000000000001", "20261123000000000002");
    for jid in [old, new] {
        let load = json!({ "fun": "test.ping", "tgt": "n1", "jid": jid });
        assert_eq!(d.call("local_cache", "prep_jid", &json!({ "passed_jid": jid })).result(), &json!(jid));
        assert_eq!(d.write("local_cache", "save_load", &json!({ "jid": jid, "load": load })).result(), &Value::Null);
        let ret = json!({ "id": "n1", "jid": jid, "fun": "test.ping", "return": true, "retcode": 0, "success": true });
        assert_eq!(d.write("local_cache", "returner", &json!({ "ret": ret })).result(), &Value::Null);
    }
    // Age the old job past the default retention of 86400 s, as time would.
    let two_days_ago = SystemTime::now() - Duration::from_secs(2 * 86400);
    let jid_file = jid_dir(&jobs, old).join("jid");
    std::fs::File::options().write(true).open(&jid_file).unwrap().set_modified(two_days_ago).unwrap();

    assert_eq!(d.call("local_cache", "clean_old_jobs", &json!({})).result(), &Value::Null);

    assert!(!jid_dir(&jobs, old).exists(), "the old job's directory is removed");
    assert_eq!(d.call("local_cache", "get_load", &json!({ "jid": old })).result(), &json!({}));
    assert_eq!(d.call("local_cache", "get_jid", &json!({ "jid": old })).result(), &json!({}));
    assert_eq!(d.call("local_cache", "get_load", &json!({ "jid": new })).result()["fun"], "test.ping");
    assert_eq!(d.call("local_cache", "get_jid", &json!({ "jid": new })).result()["n1"]["return"], true);
    let jids = d.call("local_cache", "get_jids", &json!({}));
    assert_eq!(jids.result().as_object().unwrap().keys().collect::<Vec<_>>(), vec![new]);
}

#[test]
fn socket_is_private_and_health_lists_returners() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = temp_dir();
    let d = default_daemon(dir.path());
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket mode {mode:o}");
    let health = returner_host_tests::http_unix(&d.socket, "GET", "/healthz", &[], b"");
    assert_eq!(health.status, 200);
    assert_eq!(health.json, json!({ "status": "ok", "returners": ["local_cache"] }));
}

/// Salt 3008's `test_save_load` and the jobs runner read a job while the
/// master saves its load and minions return: 20 writers (each reading its
/// write back) and 20 readers of the same jids for a few seconds. Every read succeeds with Salt's shapes;
/// before, a reader listing a job directory while a writer renamed its
/// temporary file into place failed with `No such file or directory`.
#[test]
fn concurrent_writers_and_readers_of_one_job_never_see_a_vanished_file() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    let dir = temp_dir();
    let d = default_daemon(dir.path());
    let jids: Vec<String> = (0..4).map(|i| format!("2026113001000000{i:04}")).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let reads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut threads = Vec::new();
    for t in 0..40 {
        let (socket, jids, stop, failures, reads) = (d.socket.clone(), jids.clone(), stop.clone(), failures.clone(), reads.clone());
        threads.push(std::thread::spawn(move || {
            let call = |function: &str, args: Value| {
                let r = returner_host_tests::http_unix(&socket, "POST", &format!("/v1/returners/local_cache/{function}"), &[], args.to_string().as_bytes());
                (r.status, r.json)
            };
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let jid = &jids[(n as usize + t) % jids.len()];
                let (status, body) = if t < 20 {
                    let load = json!({ "jid": jid, "fun": "test.ping", "arg": [], "tgt": "*", "tgt_type": "glob", "user": "root" });
                    let written = match n % 3 {
                        0 => call("save_load", json!({ "jid": jid, "load": load, "minions": [format!("m{t}")] })),
                        1 => call("returner", json!({ "ret": { "id": format!("m{t}-{n}"), "jid": jid, "fun": "test.ping", "return": true, "retcode": 0, "success": true } })),
                        _ => call("save_minions", json!({ "jid": jid, "minions": [format!("m{t}")] })),
                    };
                    if written.0 != 200 {
                        written
                    } else {
                        // Read it back: the read waits for its delivery, so
                        // writers go at the pace of delivery, and their
                        // reads too run beside other writes.
                        reads.fetch_add(1, Ordering::Relaxed);
                        call("get_jid", json!({ "jid": jid }))
                    }
                } else {
                    reads.fetch_add(1, Ordering::Relaxed);
                    match n % 3 {
                        0 => call("get_load", json!({ "jid": jid })),
                        1 => call("get_jid", json!({ "jid": jid })),
                        _ => call("get_jids", json!({})),
                    }
                };
                let shaped = body["result"].is_object() || body["result"].is_null();
                if status != 200 || !shaped {
                    failures.lock().unwrap().push(format!("{status} {body}"));
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_secs(4));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(failures.is_empty(), "{} of {} calls failed, e.g. {:?}", failures.len(), reads.load(std::sync::atomic::Ordering::Relaxed), &failures[..failures.len().min(3)]);
    assert!(reads.load(std::sync::atomic::Ordering::Relaxed) > 100, "the readers ran");
    for jid in &jids {
        let load = d.call("local_cache", "get_load", &json!({ "jid": jid }));
        assert_eq!(load.result()["fun"], "test.ping");
    }
}

/// Salt 3008's `format_job_instance` (salt#68481): metadata given as
/// `state.apply ... metadata=...` rides in `arg` as a `__kwarg__` dict, and
/// `get_jids` shows it as `Metadata`, so `jobs.list_jobs search_metadata=`
/// finds the job.
#[test]
fn get_jids_shows_metadata_passed_as_a_kwarg_in_arg() {
    let dir = temp_dir();
    let d = default_daemon(dir.path());
    let jid = "20261130010203040506";
    let load = json!({ "jid": jid, "fun": "state.apply", "arg": ["web", { "metadata": { "team": "ops" }, "__kwarg__": true }],
                       "tgt": "*", "tgt_type": "glob", "user": "root" });
    d.write("local_cache", "save_load", &json!({ "jid": jid, "load": load })).result();
    let jobs = d.call("local_cache", "get_jids", &json!({}));
    assert_eq!(jobs.result()[jid]["Metadata"], json!({ "team": "ops" }));
}
