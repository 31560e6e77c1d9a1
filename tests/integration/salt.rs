//! Real Salt through the shim (salt/_returners/wasm.py) into the host:
//! `salt-call --return`, a master's `master_job_cache` and `event_return`
//! read back by the jobs runner, Salt's own mysql and etcd returners reading
//! what ours wrote and the other way round, and the host going away.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use returner_host_tests::etcd::EtcdServer;
use returner_host_tests::mariadb::TestDb;
use returner_host_tests::salt::{
    LocalMinion, MINION_ID, SaltLine, SaltMaster, salt_returner_calls, salt_returner_outcomes, shim_dir, venv, venv_3007,
};
use returner_host_tests::{Daemon, guest, salt_fixture_lines, temp_dir};
use serde_json::{Value, json};

use super::etcd::{etcd_profile_toml, etcd_returner_toml};
use super::mysql::{RETURNER_TABLES, database};
use super::{bin, config_daemon, tcp_daemon, toml_path};

/// The host config: `local_cache` and `local_cache_alt` (job caches in
/// `dir/jobs` and `dir/jobs-alt`), plus `etcd` and `mysql` when given.
fn host_config(dir: &Path, etcd: Option<&EtcdServer>, db: Option<&TestDb>) -> String {
    let mut toml = String::new();
    for (name, jobs) in [("local_cache", "jobs"), ("local_cache_alt", "jobs-alt")] {
        let jobs = dir.join(jobs);
        std::fs::create_dir_all(&jobs).unwrap();
        toml += &format!(
            "[returners.{name}]\nmodule = \"builtin:local-cache\"\n[returners.{name}.grants.fs]\ndir = {}\nmode = \"rw\"\n\n",
            toml_path(&jobs)
        );
    }
    if let Some(etcd) = etcd {
        toml += &format!(
            "\n{}{}",
            etcd_profile_toml("etcd_main", etcd),
            etcd_returner_toml("etcd_main")
        );
    }
    if let Some(db) = db {
        toml += &db.profile_toml("salt_db", &dir.join("mysql.pass"));
        toml += &format!(
            r#"
[returners.mysql]
module = {}
options = {{ master_id = "master1" }}
limits = {{ deadline_ms = 10000 }}
[returners.mysql.grants.mysql]
profile = "salt_db"
tables = {RETURNER_TABLES}
"#,
            toml_path(&guest("returner-mysql"))
        );
    }
    toml
}

/// Start (or start again) the host of `host_config` in `dir`.
pub(super) fn start_host(dir: &Path, etcd: Option<&EtcdServer>, db: Option<&TestDb>) -> Daemon {
    config_daemon(dir, "", &host_config(dir, etcd, db))
}

/// `returner-host salt-returner NAME --returner RETURNER`, written to
/// `dir/returners/NAME.py`; the directory.
fn generate_shim(dir: &Path, name: &str, returner: &str) -> PathBuf {
    let out_dir = dir.join("returners");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = Command::new(bin()).args(["salt-returner", name, "--returner", returner]).output().unwrap();
    assert!(out.status.success(), "salt-returner: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(out_dir.join(format!("{name}.py")), &out.stdout).unwrap();
    out_dir
}

/// Every job of a local-cache `jobs` dir: its jid (from its `jid` file, so
/// the test does not repeat the returner's hashing) and its directory.
fn local_cache_jobs(jobs: &Path) -> Vec<(String, PathBuf)> {
    let dirs = |p: &Path| std::fs::read_dir(p).into_iter().flatten().flatten().map(|e| e.path()).collect::<Vec<_>>();
    dirs(jobs)
        .iter()
        .flat_map(|top| dirs(top))
        .filter_map(|job| Some((std::fs::read_to_string(job.join("jid")).ok()?.trim().to_owned(), job)))
        .collect()
}

/// The job directory of `jid` in a local-cache `jobs` dir.
fn local_cache_job(jobs: &Path, jid: &str) -> Option<PathBuf> {
    local_cache_jobs(jobs).into_iter().find(|(j, _)| j == jid).map(|(_, dir)| dir)
}

/// The `return.p` of `MINION_ID` for `jid` in a local-cache dir, as JSON.
fn local_cache_return(jobs: &Path, jid: &str) -> Value {
    let job = local_cache_job(jobs, jid).unwrap_or_else(|| panic!("no job {jid} in {}", jobs.display()));
    let text = std::fs::read_to_string(job.join(MINION_ID).join("return.p")).expect("the minion's return.p");
    serde_json::from_str(&text).unwrap()
}

/// Poll `f` until it gives `Some`, for what Salt does after answering.
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "not within 30 s: {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn salt_call_returns_land_in_every_backend() {
    let etcd = EtcdServer::start();
    let db = database();
    let dir = temp_dir();
    let host = start_host(dir.path(), Some(&etcd), Some(&db));
    generate_shim(dir.path(), "wasm_etcd", "etcd");
    let generated = generate_shim(dir.path(), "wasm_mysql", "mysql");
    // `wasm.returner` is the name `wasm`'s alone: wasm_etcd and wasm_mysql keep theirs.
    let minion = LocalMinion::new(
        dir.path(),
        &[&shim_dir(), &generated],
        &format!("wasm.url: {}\nwasm.returner: local_cache\n", host.socket.display()),
    );
    let managed = dir.path().join("hello.txt");
    std::fs::write(
        minion.states().join("hello.sls"),
        format!("hello_file:\n  file.managed:\n    - name: {}\n    - contents: hello from salt\n", managed.display()),
    )
    .unwrap();

    let cases: [(&[&str], i64); 4] = [
        (&["test.ping"], 0),
        (&["cmd.run", "echo out; echo err >&2"], 0),
        (&["state.apply", "hello"], 0),
        (&["cmd.run", "echo failing; exit 3"], 3),
    ];
    for (args, retcode) in cases {
        let mut all = vec!["--return", "wasm,wasm_etcd,wasm_mysql"];
        all.extend_from_slice(args);
        let out = minion.call(&all);
        assert!(!out.stderr.contains("returner-host"), "{args:?}: the shim complained: {out:?}");
        let shown = out.json()["local"].clone();
        let fun = args[0];
        // salt-call --local prints no jid; MySQL's newest row of the function names it.
        let rows = db.sql(&format!("SELECT jid, success FROM salt_returns WHERE fun = '{fun}' ORDER BY jid DESC LIMIT 1"));
        let [jid, success] = rows.first().map(Vec::as_slice).unwrap_or_else(|| panic!("{args:?}: no row in salt_returns"))
        else {
            panic!("{rows:?}")
        };
        assert_eq!(success, "1", "{args:?}: salt-call marks every return a success");
        for returner in ["local_cache", "etcd", "mysql"] {
            let stored = host.call(returner, "get_jid", &json!({ "jid": jid }));
            assert_eq!(stored.result()[MINION_ID]["return"], shown, "{args:?} through the host's {returner}");
        }
        // Directly in each backend.
        let cached = local_cache_return(&dir.path().join("jobs"), jid);
        assert_eq!((&cached["return"], &cached["retcode"]), (&shown, &json!(retcode)), "{args:?} in the local cache");
        let keys = etcd.dump(&format!("/salt/return/jobs/{jid}/{MINION_ID}/"));
        let key = |field: &str| -> Value {
            let k = format!("/salt/return/jobs/{jid}/{MINION_ID}/{field}");
            let (_, v) = keys.iter().find(|(key, _)| *key == k).unwrap_or_else(|| panic!("{args:?}: no {k} in {keys:?}"));
            serde_json::from_str(v).unwrap()
        };
        assert_eq!((key("return"), key("retcode"), key("fun")), (shown.clone(), json!(retcode), json!(fun)), "{args:?} in etcd");
        let row = db.sql(&format!("SELECT `return`, full_ret FROM salt_returns WHERE jid = '{jid}'"));
        let stored: Value = serde_json::from_str(&row[0][0]).unwrap();
        let full: Value = serde_json::from_str(&row[0][1]).unwrap();
        assert_eq!((stored, &full["retcode"], &full["id"]), (shown.clone(), &json!(retcode), &json!(MINION_ID)), "{args:?} in MySQL");
        match fun {
            "test.ping" => assert_eq!(shown, json!(true)),
            "cmd.run" if retcode == 0 => assert_eq!(shown, json!("out\nerr")),
            "cmd.run" => assert_eq!(shown, json!("failing")),
            _ => {
                let state = shown.as_object().and_then(|s| s.values().next()).expect("one state's result");
                assert_eq!(state["result"], json!(true), "{shown}");
                assert_eq!(std::fs::read_to_string(&managed).unwrap().trim(), "hello from salt");
            }
        }
    }

    // The host goes away: salt-call still runs the job and shows its result;
    // the error names the host's address.
    let socket = host.socket.clone();
    drop(host);
    let out = minion.call(&["--return", "wasm", "cmd.run", "echo still here"]);
    assert_eq!((out.code, &out.json()["local"]), (0, &json!("still here")), "{out:?}");
    assert!(
        out.stderr.contains(&format!("returner-host at {} (local_cache.returner): the host is unreachable", socket.display())),
        "{out:?}"
    );
}

/// Jobs through a master whose `master_job_cache` is `cache` (served by the
/// host's `returner`), read back by the jobs runner; the jids of a
/// `test.ping` and a `cmd.run`.
fn jobs_round_trip(salt: &SaltMaster, host: &Daemon, returner: &str) -> (String, String) {
    let (ping, out) = salt.job(&[MINION_ID, "test.ping"]);
    assert_eq!(out, json!({ MINION_ID: true }));
    let (run, out) = salt.job(&[MINION_ID, "cmd.run", "echo hello from the job"]);
    assert_eq!(out, json!({ MINION_ID: "hello from the job" }));

    let looked_up = salt.run(&["jobs.lookup_jid", &run]).json();
    assert_eq!(looked_up, json!({ MINION_ID: "hello from the job" }));
    let job = salt.run(&["jobs.list_job", &run]).json();
    assert_eq!(job["jid"], json!(run));
    assert_eq!(job["Function"], json!("cmd.run"));
    assert_eq!(job["Arguments"], json!(["echo hello from the job"]));
    assert_eq!(job["Target"], json!(MINION_ID));
    assert_eq!(job["Result"][MINION_ID]["return"], json!("hello from the job"));
    let jobs = salt.run(&["jobs.list_jobs"]).json();
    assert_eq!(jobs[&ping]["Function"], json!("test.ping"), "{jobs}");
    assert_eq!(jobs[&run]["Function"], json!("cmd.run"), "{jobs}");
    assert_eq!(jobs[&run]["Target"], json!(MINION_ID), "{jobs}");
    let newest = salt.run(&["jobs.list_jobs_filter", "50"]).json();
    let listed: Vec<&str> = newest.as_array().expect("a list").iter().filter_map(|j| j["JID"].as_str()).collect();
    assert!(listed.windows(2).all(|w| w[0] < w[1]), "oldest first: {newest}");
    let job = newest.as_array().unwrap().iter().find(|j| j["JID"] == json!(run)).unwrap_or_else(|| panic!("{newest}"));
    assert_eq!(job["Function"], json!("cmd.run"));

    // What the runner read is what the host's returner holds.
    let load = host.call(returner, "get_load", &json!({ "jid": run }));
    assert_eq!(load.result()["fun"], json!("cmd.run"));
    let returns = host.call(returner, "get_jid", &json!({ "jid": run }));
    assert_eq!(returns.result()[MINION_ID]["return"], json!("hello from the job"));
    (ping, run)
}

/// The host stops while a job runs (for good: the configs give the shim
/// `wasm.retry_seconds: 2`): the job's result still reaches `salt`,
/// and the master's and the minion's logs name the host's address. While it
/// is down, `salt` shows an error naming the address and the master and
/// minion stay up; started again, jobs work again.
fn host_stopped_then_back(salt: &mut SaltMaster, host: Daemon, restart: impl FnOnce() -> Daemon) -> Daemon {
    let socket = host.socket.clone();
    let named = format!("returner-host at {}", socket.display());
    let job = &["--return", "wasm", MINION_ID, "cmd.run", "sleep 4; echo finished"];
    // Loads the master saved through the host: the job is published right after its save_load.
    let saved = |host: &Daemon| -> f64 {
        host.metrics()
            .iter()
            .filter(|(series, _)| {
                series.starts_with("returner_host_calls_total{")
                    && series.contains(r#"function="save_load""#)
                    && series.contains(r#"outcome="ok""#)
            })
            .map(|(_, n)| n)
            .sum()
    };
    let before = saved(&host);
    let out = std::thread::scope(|s| {
        let running = s.spawn(|| salt.salt(job));
        // Published and running on the minion, which returns after the host is gone.
        eventually("the master saves the job's load", || (saved(&host) > before).then_some(()));
        drop(host);
        running.join().unwrap()
    });
    assert_eq!(out.json(), json!({ MINION_ID: "finished" }), "the job's result reaches salt");
    eventually("the minion's --return error naming the host", || {
        salt.minion_log().lines().any(|l| l.contains("The return failed for job") && l.contains(&named)).then_some(())
    });
    eventually("the master's job cache error naming the host", || salt.master_log().contains(&named).then_some(()));

    let out = salt.salt(&[MINION_ID, "test.ping"]);
    assert!(out.stdout.contains(&named), "{out:?}");
    assert!(out.stdout.contains("unreachable"), "{out:?}");
    assert!(out.stdout.contains("(tried for 2."), "the shim tried for wasm.retry_seconds: {out:?}");
    assert!(salt.running(), "the master and the minion stay up");
    let host = restart();
    let (_, out) = salt.job(&[MINION_ID, "test.ping"]);
    assert_eq!(out, json!({ MINION_ID: true }));
    host
}

#[test]
fn every_function_of_the_shim_reaches_the_host() {
    let dir = temp_dir();
    let host = start_host(dir.path(), None, None);
    // Salt's loader as the master's job cache uses it: options from __opts__ only.
    let opts = json!({ "returner_dirs": [shim_dir()], "wasm.url": host.socket });
    let jid = "20261123100000000001";
    let (ret, load) = fixture_job(jid, 0);
    let id = ret["id"].as_str().unwrap();
    let events = json!([{ "tag": "salt/job/x/ret/m", "data": {} }]);
    let outcomes = salt_returner_outcomes(
        &venv(),
        &opts,
        &[
            json!(["wasm.prep_jid", false, null]),
            json!(["wasm.prep_jid", false, jid]),
            json!(["wasm.save_load", jid, load, [id]]),
            json!(["wasm.returner", ret]),
            json!(["wasm.get_load", jid]),
            json!(["wasm.get_jid", jid]),
            json!(["wasm.get_fun", ret["fun"]]),
            json!(["wasm.get_jids"]),
            json!(["wasm.get_jids_filter", 5, true]),
            json!(["wasm.get_minions"]),
            json!(["wasm.save_minions", jid, [id], null]),
            json!(["wasm.update_endtime", jid, "2026, Nov 23 10:00:01.000000"]),
            json!(["wasm.get_endtime", jid]),
            json!(["wasm.get_endtime", "20000101000000000000"]),
            json!(["wasm.clean_old_jobs"]),
            json!(["wasm.event_return", events]),
        ],
    );
    let ok = |i: usize| outcomes[i].clone().unwrap_or_else(|e| panic!("call {i} raised {e}"));
    let new_jid = ok(0);
    assert!(new_jid.as_str().is_some_and(|j| j.len() == 20 && j.bytes().all(|b| b.is_ascii_digit())), "a Salt jid: {new_jid}");
    assert_eq!(ok(1), json!(jid), "prep_jid keeps the passed jid");
    assert_eq!((ok(2), ok(3)), (Value::Null, Value::Null));
    assert_eq!(ok(4)["fun"], load["fun"]);
    assert_eq!(ok(5)[id]["return"], ret["return"]);
    assert_eq!(ok(6), json!({ id: ret["return"] }), "the local cache answers each minion's latest return");
    assert_eq!(ok(7)[jid]["Function"], ret["fun"]);
    assert!(ok(8).as_array().is_some_and(|jobs| jobs.iter().any(|j| j["JID"] == json!(jid))), "{}", ok(8));
    assert_eq!(ok(9), json!([id]));
    assert_eq!(ok(10), Value::Null);
    assert_eq!((ok(11), ok(12)), (Value::Null, json!("2026, Nov 23 10:00:01.000000")));
    assert_eq!(ok(13), json!(false), "an unknown job has no end time");
    assert_eq!(ok(14), Value::Null);
    // Salt's local_cache has no event_return: the KeyError Salt's loader gives.
    let unsupported = outcomes[15].clone().unwrap_err();
    assert!(unsupported.contains("KeyError"), "{unsupported}");
    assert!(unsupported.contains("(local_cache.event_return): unsupported: 'local_cache.event_return' is not available."), "{unsupported}");

    // An error answer names the host and carries the host's message.
    let wrong = json!({ "returner_dirs": [shim_dir()], "wasm.url": host.socket, "wasm.returner": "nope" });
    let err = salt_returner_outcomes(&venv(), &wrong, &[json!(["wasm.get_load", jid])]).remove(0).unwrap_err();
    let expected = format!("returner-host at {} (nope.get_load): not_found: no returner `nope`", host.socket.display());
    assert!(err.starts_with("ReturnerHostError") && err.contains(&expected), "{err}");
}

#[test]
fn salt_call_over_tcp_needs_the_token() {
    let dir = temp_dir();
    let (_host, addr) = tcp_daemon(dir.path(), "s3cret-token");
    let token = dir.path().join("token");
    let data = dir.path().join("var");
    let url = format!("http://{addr}");
    let minion = |name: &str, token_line: &str| {
        let config = dir.path().join(name);
        LocalMinion::new(&config, &[&shim_dir()], &format!("wasm.url: {url}\n{token_line}"))
    };

    let good = minion("good", &format!("wasm.token_file: {}\n", token.display()));
    let out = good.call(&["--return", "wasm", "test.echo", "over tcp"]);
    assert!(!out.stderr.contains("returner-host"), "{out:?}");
    let jobs = local_cache_jobs(&data.join("jobs"));
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(local_cache_return(&data.join("jobs"), &jobs[0].0)["return"], json!("over tcp"));

    std::fs::write(dir.path().join("wrong-token"), "not-the-token\n").unwrap();
    let wrong = minion("wrong", &format!("wasm.token_file: {}\n", dir.path().join("wrong-token").display()));
    let out = wrong.call(&["--return", "wasm", "test.echo", "refused"]);
    assert_eq!(out.json()["local"], json!("refused"), "the job itself is unaffected");
    assert!(out.stderr.contains(&format!("returner-host at {url} (local_cache.returner): unauthorized: wrong bearer token")), "{out:?}");
    let none = minion("none", "");
    let out = none.call(&["--return", "wasm", "test.echo", "refused"]);
    assert!(out.stderr.contains(&format!("returner-host at {url}: over TCP the host needs a bearer token; set wasm.token_file")), "{out:?}");
    assert_eq!(local_cache_jobs(&data.join("jobs")).len(), 1, "nothing stored without the token");
}

/// `salt-call` on the minion of `salt`, whose master's job cache is the
/// host's local cache in `jobs`: the master allocates the jid (jid "req"),
/// saves the job's load and return there, and `jobs.lookup_jid` finds it.
fn minion_salt_call_reaches_the_cache(salt: &SaltMaster, jobs: &Path) {
    let before: Vec<String> = local_cache_jobs(jobs).into_iter().map(|(j, _)| j).collect();
    let out = salt.minion_call(&["test.echo", "from salt-call"]);
    assert_eq!(out.json()["local"], json!("from salt-call"), "{out:?}");
    let (jid, job) = eventually("salt-call's job in the cache", || {
        local_cache_jobs(jobs).into_iter().find(|(j, d)| !before.contains(j) && d.join(MINION_ID).exists())
    });
    assert_eq!(local_cache_return(jobs, &jid)["return"], json!("from salt-call"));
    assert!(job.join(".load.p").is_file(), "the master saved the load of a minion's own job");
    assert_eq!(salt.run(&["jobs.lookup_jid", &jid]).json(), json!({ MINION_ID: "from salt-call" }));
}

#[test]
fn master_job_cache_on_the_local_cache_returner() {
    let dir = temp_dir();
    let host = start_host(dir.path(), None, None);
    // Short retries: the host is stopped for good below.
    let url = format!("wasm.url: {}\nwasm.retry_seconds: 2\n", host.socket.display());
    let mut salt = SaltMaster::start(
        dir.path(),
        &[&shim_dir()],
        // A maintenance loop every second, so clean_old_jobs is called while the test runs.
        &format!("master_job_cache: wasm\njob_cache_store_endtime: true\nloop_interval: 1\n{url}"),
        &format!("{url}alt.wasm.returner: local_cache_alt\n"),
    );
    let (ping, run) = jobs_round_trip(&salt, &host, "local_cache");
    let cleaned = r#"returner_host_calls_total{returner="local_cache",function="clean_old_jobs",outcome="ok"}"#;
    eventually("the master's maintenance loop calls clean_old_jobs through the shim", || {
        host.metrics().get(cleaned).copied().filter(|&n| n >= 1.0)
    });
    let job = salt.run(&["jobs.list_job", &run]).json();
    assert!(job["EndTime"].as_str().is_some_and(|t| t.starts_with("20")), "update_endtime, get_endtime: {job}");

    minion_salt_call_reaches_the_cache(&salt, &dir.path().join("jobs"));
    let jobs = dir.path().join("jobs");
    assert_eq!(local_cache_return(&jobs, &ping)["return"], json!(true));
    assert_eq!(local_cache_return(&jobs, &run)["return"], json!("hello from the job"));
    let load: Value =
        serde_json::from_str(&std::fs::read_to_string(local_cache_job(&jobs, &run).unwrap().join(".load.p")).unwrap()).unwrap();
    assert_eq!((&load["fun"], &load["arg"]), (&json!("cmd.run"), &json!(["echo hello from the job"])));

    // The minion's own --return, with an alternative config and with kwargs.
    let alt = |jid: &str| host.call("local_cache_alt", "get_jid", &json!({ "jid": jid })).result()[MINION_ID]["return"].clone();
    let (jid, _) = salt.job(&[MINION_ID, "test.echo", "via return_config", "--return", "wasm", "--return_config", "alt"]);
    assert_eq!(eventually("--return_config alt reaches local_cache_alt", || Some(alt(&jid)).filter(|v| !v.is_null())), json!("via return_config"));
    let (jid, _) = salt.job(&[MINION_ID, "test.echo", "via kwargs", "--return", "wasm", "--return_kwargs", r#"{"returner": "local_cache_alt"}"#]);
    assert_eq!(eventually("--return_kwargs reaches local_cache_alt", || Some(alt(&jid)).filter(|v| !v.is_null())), json!("via kwargs"));

    let dir_path = dir.path().to_owned();
    let _host = host_stopped_then_back(&mut salt, host, || start_host(&dir_path, None, None));
}

/// `salt-call --local --return wasm` run by Salt of `line`: each return
/// reaches the host and is stored in its local cache as salt-call showed it.
fn salt_call_returns_are_stored_on(line: SaltLine) {
    let dir = temp_dir();
    let host = start_host(dir.path(), None, None);
    let jobs = dir.path().join("jobs");
    let minion = LocalMinion::new_on(line, dir.path(), &[&shim_dir()], &format!("wasm.url: {}\n", host.socket.display()));
    let cases: [(&[&str], Value); 2] = [(&["test.ping"], json!(true)), (&["cmd.run", "echo hello"], json!("hello"))];
    for (args, shown) in cases {
        let before: Vec<String> = local_cache_jobs(&jobs).into_iter().map(|(j, _)| j).collect();
        let mut all = vec!["--return", "wasm"];
        all.extend_from_slice(args);
        let out = minion.call(&all);
        assert!(!out.stderr.contains("returner-host"), "{line:?} {args:?}: the shim complained: {out:?}");
        assert_eq!(out.json()["local"], shown, "{line:?} {args:?}: {out:?}");
        let new: Vec<String> = local_cache_jobs(&jobs).into_iter().map(|(j, _)| j).filter(|j| !before.contains(j)).collect();
        let [jid] = new.as_slice() else { panic!("{line:?} {args:?}: not one new job in the cache: {new:?} {out:?}") };
        assert_eq!(local_cache_return(&jobs, jid)["return"], shown, "{line:?} {args:?} in the local cache");
        let stored = host.call("local_cache", "get_jid", &json!({ "jid": jid }));
        assert_eq!(stored.result()[MINION_ID]["return"], shown, "{line:?} {args:?} through the host");
    }
}

/// A master and minion of Salt `line` with `master_job_cache: wasm`: jobs
/// and a minion's own `salt-call` are stored through the host, and the jobs
/// runner (`lookup_jid`, `list_job`, `list_jobs`) reads them back from it.
fn master_job_cache_on(line: SaltLine) {
    let dir = temp_dir();
    let host = start_host(dir.path(), None, None);
    let url = format!("wasm.url: {}\n", host.socket.display());
    let salt = SaltMaster::start_on(line, dir.path(), &[&shim_dir()], &format!("master_job_cache: wasm\n{url}"), &url);
    let (_, run) = jobs_round_trip(&salt, &host, "local_cache");
    assert_eq!(local_cache_return(&dir.path().join("jobs"), &run)["return"], json!("hello from the job"), "{line:?}");
    minion_salt_call_reaches_the_cache(&salt, &dir.path().join("jobs"));
}

#[test]
fn salt_3007_salt_call_returns_are_stored() {
    salt_call_returns_are_stored_on(SaltLine::V3007);
}

#[test]
fn salt_3006_salt_call_returns_are_stored() {
    salt_call_returns_are_stored_on(SaltLine::V3006);
}

#[test]
fn salt_3007_master_job_cache_and_lookup_jid() {
    master_job_cache_on(SaltLine::V3007);
}

#[test]
fn salt_3006_master_job_cache_and_lookup_jid() {
    master_job_cache_on(SaltLine::V3006);
}

/// The tags of the events stored for a job's return, from `tags`.
fn has_job_return_event(tags: &[String], jid: &str) -> bool {
    tags.iter().any(|t| t == &format!("salt/job/{jid}/ret/{MINION_ID}"))
}

/// A master whose `master_job_cache` and `event_return` are `wasm_RETURNER`,
/// made by `returner-host salt-returner`, served by the host's `returner`.
/// Only `wasm.*` is set: the generated module takes the host's address from
/// `wasm.url` (and its short retries from `wasm.retry_seconds`) and keeps
/// its own returner despite `wasm.returner`.
fn master_on_generated_shim(dir: &Path, host: &Daemon, returner: &str) -> SaltMaster {
    let name = format!("wasm_{returner}");
    let generated = generate_shim(dir, &name, returner);
    let url = format!("wasm.url: {}\nwasm.returner: local_cache\nwasm.retry_seconds: 2\n", host.socket.display());
    SaltMaster::start(
        dir,
        &[&shim_dir(), &generated],
        &format!("master_job_cache: {name}\nevent_return: {name}\n{url}"),
        &url,
    )
}

#[test]
fn master_job_cache_and_event_return_on_etcd() {
    let etcd = EtcdServer::start();
    let dir = temp_dir();
    let host = start_host(dir.path(), Some(&etcd), None);
    let mut salt = master_on_generated_shim(dir.path(), &host, "etcd");
    let (_, run) = jobs_round_trip(&salt, &host, "etcd");
    let load: Value = etcd
        .dump(&format!("/salt/return/jobs/{run}/.load.p"))
        .first()
        .map(|(_, v)| serde_json::from_str(v).unwrap())
        .expect("the job's load in etcd");
    assert_eq!(load["fun"], json!("cmd.run"));
    let ret = etcd.dump(&format!("/salt/return/jobs/{run}/{MINION_ID}/return"));
    assert_eq!(ret[0].1, "\"hello from the job\"");
    eventually("the job's return event in etcd", || {
        let tags: Vec<String> =
            etcd.dump("/salt/return/events/").into_iter().map(|(k, _)| k["/salt/return/events/".len()..].to_owned()).collect();
        has_job_return_event(&tags, &run).then_some(())
    });
    let dir_path = dir.path().to_owned();
    let _host = host_stopped_then_back(&mut salt, host, || start_host(&dir_path, Some(&etcd), None));
}

#[test]
fn master_job_cache_and_event_return_on_mysql() {
    let db = database();
    let dir = temp_dir();
    let host = start_host(dir.path(), None, Some(&db));
    let mut salt = master_on_generated_shim(dir.path(), &host, "mysql");
    let (ping, run) = jobs_round_trip(&salt, &host, "mysql");
    let rows = db.sql(&format!("SELECT fun, `return`, success FROM salt_returns WHERE jid = '{run}'"));
    assert_eq!(rows, [["cmd.run", "\"hello from the job\"", "1"]]);
    let load: Value = serde_json::from_str(&db.sql(&format!("SELECT `load` FROM jids WHERE jid = '{run}'"))[0][0]).unwrap();
    assert_eq!(load["fun"], json!("cmd.run"));
    eventually("the job's return event in salt_events", || {
        let tags: Vec<String> = db.sql("SELECT tag FROM salt_events").into_iter().map(|r| r[0].clone()).collect();
        has_job_return_event(&tags, &run).then_some(())
    });
    let master_ids = db.sql(&format!("SELECT DISTINCT master_id FROM salt_events WHERE tag = 'salt/job/{run}/ret/{MINION_ID}'"));
    assert_eq!(master_ids, [["master1"]]);

    // Salt's own mysql returner reads what the master stored through ours.
    let salt_reads = salt_returner_calls(
        &venv(),
        &salt_mysql_opts(&db),
        &[json!(["mysql.get_jid", run]), json!(["mysql.get_load", ping]), json!(["mysql.get_jids"])],
    );
    assert_eq!(salt_reads[0], host.call("mysql", "get_jid", &json!({ "jid": run })).result().clone());
    assert_eq!(salt_reads[1], host.call("mysql", "get_load", &json!({ "jid": ping })).result().clone());
    assert_eq!(salt_reads[2], host.call("mysql", "get_jids", &json!({})).result().clone());

    let dir_path = dir.path().to_owned();
    let _host = host_stopped_then_back(&mut salt, host, || start_host(&dir_path, None, Some(&db)));
}

/// Options of Salt's mysql returner (saltext.mysql) for `db`.
pub(super) fn salt_mysql_opts(db: &TestDb) -> Value {
    json!({
        "mysql.host": "127.0.0.1",
        "mysql.port": db.port,
        "mysql.user": db.user,
        "mysql.pass": db.password,
        "mysql.db": db.name,
    })
}

/// Real returns of the fixtures under jid `jid` and their publish load.
fn fixture_job(jid: &str, index: usize) -> (Value, Value) {
    let mut ret = salt_fixture_lines("minion-returns.jsonl")[index].clone();
    ret["jid"] = json!(jid);
    let load = json!({
        "fun": ret["fun"], "arg": ret["fun_args"], "tgt": ret["id"], "tgt_type": "glob",
        "jid": jid, "user": "root", "ret": "",
    });
    (ret, load)
}

/// A fixture job stored by the host's `returner` (save_load, returner).
fn stored_by_host(host: &Daemon, returner: &str, jid: &str, index: usize) -> (Value, Value) {
    let (ret, load) = fixture_job(jid, index);
    host.write(returner, "save_load", &json!({ "jid": jid, "load": load })).result();
    host.write(returner, "returner", &json!({ "ret": ret })).result();
    (ret, load)
}

/// A fixture job stored by Salt's own returner `module` in `venv`.
fn stored_by_salt(venv: &Path, opts: &Value, module: &str, jid: &str, index: usize) -> (Value, Value) {
    let (ret, load) = fixture_job(jid, index);
    salt_returner_calls(
        venv,
        opts,
        &[json!([format!("{module}.save_load"), jid, load]), json!([format!("{module}.returner"), ret])],
    );
    (ret, load)
}

/// Salt's own mysql returner of `line` (saltext.mysql on 3008, the one in
/// Salt before) and ours read what the other wrote, row for row.
fn mysql_returners_read_each_others_rows(line: SaltLine) {
    let db = database();
    let dir = temp_dir();
    let host = start_host(dir.path(), None, Some(&db));
    let opts = salt_mysql_opts(&db);
    let venv = || line.venv();

    // Ours writes; Salt's reads.
    let (ret, load) = stored_by_host(&host, "mysql", "20261123090000000001", 0);
    let id = ret["id"].as_str().unwrap();
    let reads = salt_returner_calls(
        &venv(),
        &opts,
        &[json!(["mysql.get_jid", ret["jid"]]), json!(["mysql.get_load", ret["jid"]]), json!(["mysql.get_jids"])],
    );
    assert_eq!(reads[0][id], ret, "Salt's get_jid gives back the whole return");
    assert_eq!(reads[1], load, "Salt's get_load");
    assert_eq!(reads[2][ret["jid"].as_str().unwrap()]["Function"], ret["fun"], "Salt's get_jids: {}", reads[2]);

    // Salt's writes; ours reads.
    let (theirs, their_load) = stored_by_salt(&venv(), &opts, "mysql", "20261123090000000002", 1);
    let jid = theirs["jid"].as_str().unwrap();
    let id = theirs["id"].as_str().unwrap();
    assert_eq!(host.call("mysql", "get_jid", &json!({ "jid": jid })).result()[id], theirs);
    assert_eq!(host.call("mysql", "get_load", &json!({ "jid": jid })).result(), &their_load);
    let jobs = host.call("mysql", "get_jids", &json!({}));
    assert_eq!(jobs.result()[jid]["Function"], theirs["fun"]);
    // And both readers agree on the whole table.
    let salt_jids = salt_returner_calls(&venv(), &opts, &[json!(["mysql.get_jids"])]);
    assert_eq!(&salt_jids[0], jobs.result());
}

#[test]
fn salts_mysql_returner_and_ours_read_each_others_rows() {
    mysql_returners_read_each_others_rows(SaltLine::V3008);
}

#[test]
fn salt_3007_mysql_returner_and_ours_read_each_others_rows() {
    mysql_returners_read_each_others_rows(SaltLine::V3007);
}

#[test]
fn salt_3006_mysql_returner_and_ours_read_each_others_rows() {
    mysql_returners_read_each_others_rows(SaltLine::V3006);
}

#[test]
fn salt_3007_etcd_return_and_ours_read_each_others_keys() {
    let etcd = EtcdServer::start();
    let dir = temp_dir();
    let host = start_host(dir.path(), Some(&etcd), None);
    let (host_name, port) = etcd.endpoint()["http://".len()..].split_once(':').map(|(h, p)| (h.to_owned(), p.parse::<u16>().unwrap())).unwrap();
    // Salt 3007's etcd_return on the v3 API with values as JSON text, the
    // format the shipped returner writes.
    let opts = json!({
        "etcd.returner": "returner_profile",
        "etcd.returner_root": "/salt/return",
        "returner_profile": {
            "etcd.host": host_name, "etcd.port": port,
            "etcd.require_v2": false, "etcd.encode_values": false,
        },
    });

    let (ret, load) = stored_by_host(&host, "etcd", "20261123090000000011", 0);
    let jid = ret["jid"].as_str().unwrap();
    let id = ret["id"].as_str().unwrap();
    let reads = salt_returner_calls(
        &venv_3007(),
        &opts,
        &[
            json!(["etcd.get_jid", jid]),
            json!(["etcd.get_load", jid]),
            json!(["etcd.get_fun", ret["fun"]]),
            json!(["etcd.get_jids"]),
            json!(["etcd.get_minions"]),
        ],
    );
    // Salt's etcd get_jid gives each minion's `return` only.
    assert_eq!(reads[0], json!({ id: { "return": ret["return"] } }), "Salt's get_jid");
    assert_eq!(reads[1], load, "Salt's get_load");
    assert_eq!(reads[2], json!({ id: ret["fun"] }), "Salt's get_fun");
    assert_eq!(reads[3], json!([jid]), "Salt's get_jids (a list, Salt's shape)");
    assert_eq!(reads[4], json!([id]), "Salt's get_minions");

    let (theirs, their_load) = stored_by_salt(&venv_3007(), &opts, "etcd", "20261123090000000012", 1);
    let jid = theirs["jid"].as_str().unwrap();
    let id = theirs["id"].as_str().unwrap();
    assert_eq!(host.call("etcd", "get_jid", &json!({ "jid": jid })).result(), &json!({ id: { "return": theirs["return"] } }));
    assert_eq!(host.call("etcd", "get_load", &json!({ "jid": jid })).result(), &their_load);
    assert_eq!(host.call("etcd", "get_jids", &json!({})).result()[jid]["Function"], theirs["fun"]);
}

#[test]
fn return_config_sends_a_job_to_another_mysql_profile() {
    let (db, alt_db) = (database(), database());
    let dir = temp_dir();
    // Two host returners, one module, each granted its own profile: Salt's
    // alternative configuration picks one by name and supplies no credentials.
    let mut toml = db.profile_toml("salt_db", &dir.path().join("mysql.pass"));
    toml += &alt_db.profile_toml("salt_db_alt", &dir.path().join("mysql-alt.pass"));
    for (name, profile) in [("mysql", "salt_db"), ("mysql_alt", "salt_db_alt")] {
        toml += &format!(
            "[returners.{name}]\nmodule = {}\nlimits = {{ deadline_ms = 10000 }}\n[returners.{name}.grants.mysql]\nprofile = \"{profile}\"\ntables = {RETURNER_TABLES}\n",
            toml_path(&guest("returner-mysql"))
        );
    }
    let host = config_daemon(dir.path(), "", &toml);
    let minion = format!("wasm.url: {}\nwasm.returner: mysql\nalt.wasm.returner: mysql_alt\n", host.socket.display());
    let salt = SaltMaster::start(dir.path(), &[&shim_dir()], "", &minion);
    let stored = |db: &TestDb, jid: &str| db.sql(&format!("SELECT `return` FROM salt_returns WHERE jid = '{jid}'"));

    let (alt_jid, out) = salt.job(&[MINION_ID, "test.echo", "to the alt database", "--return", "wasm", "--return_config", "alt"]);
    assert_eq!(out, json!({ MINION_ID: "to the alt database" }));
    let (main_jid, _) = salt.job(&[MINION_ID, "test.echo", "to the main database", "--return", "wasm"]);
    eventually("--return_config alt lands in the alt database", || (!stored(&alt_db, &alt_jid).is_empty()).then_some(()));
    eventually("the default config lands in the main database", || (!stored(&db, &main_jid).is_empty()).then_some(()));
    assert_eq!(stored(&alt_db, &alt_jid), [["\"to the alt database\""]]);
    assert_eq!(stored(&db, &main_jid), [["\"to the main database\""]]);
    assert!(stored(&db, &alt_jid).is_empty(), "the alt job also reached the main database");
    assert!(stored(&alt_db, &main_jid).is_empty(), "the main job also reached the alt database");
}

/// Calls `wasm.returner` through Salt's loader with the request's `opts` on
/// stdin, Python's warnings to stderr: prints `calling` just before the
/// call, then the seconds it took.
const RETURN_AND_TIME: &str = r#"
import json, logging, sys, time
import salt.config, salt.loader
logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(message)s", force=True)
request = json.load(sys.stdin)
opts = salt.config.minion_config(None)
opts.update(request["opts"])
returners = salt.loader.returners(opts, {})
print("calling", flush=True)
started = time.monotonic()
returners["wasm.returner"](request["ret"])
print(time.monotonic() - started, flush=True)
"#;

#[test]
fn a_return_made_while_the_host_is_down_waits_for_it_and_is_stored() {
    let dir = temp_dir();
    // Where the host listens once it starts; nothing is there yet.
    let socket = dir.path().join("host.sock");
    let jid = "20261123100000000042";
    let (ret, _) = fixture_job(jid, 0);
    let opts = json!({ "returner_dirs": [shim_dir()], "wasm.url": socket, "wasm.retry_seconds": 60 });
    let stderr = dir.path().join("shim.stderr");
    let mut child = Command::new(venv().join("bin/python"))
        .args(["-c", RETURN_AND_TIME])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("running the Salt venv's python");
    let request = json!({ "opts": opts, "ret": ret }).to_string();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), request.as_bytes()).unwrap();
    let mut out = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    assert_eq!(out.next().and_then(Result::ok).as_deref(), Some("calling"), "{}", std::fs::read_to_string(&stderr).unwrap_or_default());

    // The host comes up while the call is trying, as after a restart.
    std::thread::sleep(Duration::from_secs(2));
    let host = start_host(dir.path(), None, None);
    let took: f64 = out.next().and_then(Result::ok).and_then(|l| l.trim().parse().ok()).unwrap_or_else(|| {
        panic!("the call did not finish: {}", std::fs::read_to_string(&stderr).unwrap_or_default())
    });
    assert!(child.wait().unwrap().success());
    assert!(took >= 2.0, "the call returned after {took} s, before the host was up");
    assert!(local_cache_job(&dir.path().join("jobs"), jid).is_some(), "the job is in the cache");
    let id = ret["id"].as_str().unwrap();
    assert_eq!(host.call("local_cache", "get_jid", &json!({ "jid": jid })).result()[id]["return"], ret["return"], "the return is stored");

    // One warning that it waits, one that it got through, naming the host.
    let log = std::fs::read_to_string(&stderr).unwrap();
    let named = format!("returner-host at {} (local_cache.returner)", socket.display());
    let lines = |what: &str| log.lines().filter(|l| l.starts_with("WARNING") && l.contains(&named) && l.contains(what)).count();
    assert_eq!((lines("trying again for up to 60 s"), lines("reached the host after")), (1, 1), "{log}");

    // Stopped for good: a call gives up after wasm.retry_seconds, naming
    // the host and how long it tried.
    drop(host);
    let opts = json!({ "returner_dirs": [shim_dir()], "wasm.url": socket, "wasm.retry_seconds": 1 });
    let err = salt_returner_outcomes(&venv(), &opts, &[json!(["wasm.get_load", jid])]).remove(0).unwrap_err();
    assert!(err.contains(&format!("returner-host at {} (local_cache.get_load): the host is unreachable", socket.display())), "{err}");
    assert!(err.contains("(tried for 1."), "{err}");
}
