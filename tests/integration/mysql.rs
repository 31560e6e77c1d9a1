//! The mysql returner and the MySQL capability against a real MariaDB: the
//! real Salt payloads land column by column as Salt's returner writes them,
//! every read answers Salt's shapes, and hostile SQL is denied, audited and
//! changes nothing.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use returner_host_tests::mariadb::{MariaDb, TestDb};
use returner_host_tests::{Daemon, good_returner_toml, guest, salt_fixture_lines, temp_dir};
use serde_json::{Value, json};

use super::hostile::GoodTraffic;
use super::{config_daemon, toml_path};

pub(crate) const SCHEMA: &str = include_str!("../../returners/mysql/schema.sql");

/// Verbs the shipped returner needs, archive tables included.
pub(crate) const RETURNER_TABLES: &str = r#"{ jids = ["select", "insert", "delete"], salt_returns = ["select", "insert", "delete"], salt_events = ["select", "insert", "delete"], jids_archive = ["create", "insert"], salt_returns_archive = ["create", "insert"], salt_events_archive = ["create", "insert"] }"#;

/// The shipped mysql returner as `[returners.mysql]` on `profile`, with
/// every table it needs and a call deadline of `deadline_ms`.
pub(crate) fn mysql_returner_toml(profile: &str, deadline_ms: u64) -> String {
    format!(
        "[returners.mysql]\nmodule = {}\nlimits = {{ deadline_ms = {deadline_ms} }}\n\
         [returners.mysql.grants.mysql]\nprofile = \"{profile}\"\ntables = {RETURNER_TABLES}\n",
        toml_path(&guest("returner-mysql"))
    )
}

pub(crate) fn database() -> TestDb {
    let db = MariaDb::shared().database();
    db.sql(SCHEMA);
    db
}

/// A server of its own, for a test that stops it, adds triggers or reads
/// its global counters, and a database on it with the returner's schema.
fn own_database() -> (MariaDb, TestDb) {
    let server = MariaDb::start();
    let db = server.database();
    db.sql(SCHEMA);
    (server, db)
}

/// A daemon serving the shipped returner as `mysql` (and as `mysql_archive`
/// with `archive_jobs`), the hostile `escaper` with a narrow grant, and
/// `nogrant` with none.
fn daemon(dir: &Path, db: &TestDb) -> Daemon {
    let profile = db.profile_toml("salt_db", &dir.join("mysql.pass"));
    let mysql = toml_path(&guest("returner-mysql"));
    let escaper = toml_path(&guest("fixture-sql-escaper"));
    let good = good_returner_toml(&dir.join("good"));
    config_daemon(
        dir,
        "",
        &format!(
            r#"
{profile}
[returners.mysql]
module = {mysql}
options = {{ master_id = "master1" }}
limits = {{ deadline_ms = 10000 }}
[returners.mysql.grants.mysql]
profile = "salt_db"
tables = {RETURNER_TABLES}

[returners.mysql_archive]
module = {mysql}
options = {{ archive_jobs = true, keep_jobs_seconds = 3600 }}
limits = {{ deadline_ms = 10000 }}
[returners.mysql_archive.grants.mysql]
profile = "salt_db"
tables = {RETURNER_TABLES}

[returners.escaper]
module = {escaper}
limits = {{ deadline_ms = 10000 }}
[returners.escaper.grants.mysql]
profile = "salt_db"
tables = {{ jids = ["select", "insert"], salt_events = ["insert"] }}

[returners.nogrant]
module = {escaper}
{good}"#
        ),
    )
}

/// What Python's `json.dumps` (Salt's `salt.utils.json.dumps`) writes for
/// each value: the oracle for the stored JSON columns.
fn python_dumps(values: &[Value]) -> Vec<String> {
    let mut child = Command::new("python3")
        .args(["-c", "import json, sys\nfor v in json.load(sys.stdin):\n    print(json.dumps(json.dumps(v)))"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 is needed as the oracle of Salt's JSON: apt-get install python3");
    child.stdin.take().unwrap().write_all(Value::Array(values.to_vec()).to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<String>(l).unwrap())
        .collect()
}

fn audit_lines(d: &Daemon) -> usize {
    d.log_text().lines().filter(|l| l.contains("returner_host::audit")).count()
}

#[test]
fn minion_returns_land_in_salt_returns_column_by_column() {
    let dir = temp_dir();
    let db = database();
    let d = daemon(dir.path(), &db);
    let rets = salt_fixture_lines("minion-returns.jsonl");
    for ret in &rets {
        assert_eq!(d.write("mysql", "returner", &json!({ "ret": ret })).result(), &Value::Null);
    }
    let rows = db.sql("SELECT fun, jid, `return`, id, success, full_ret FROM salt_returns ORDER BY jid, alter_time");
    assert_eq!(rows.len(), rets.len(), "one row per return, as Salt writes");
    let returns = python_dumps(&rets.iter().map(|r| r["return"].clone()).collect::<Vec<_>>());
    let fulls = python_dumps(&rets);
    let mut want: Vec<Vec<String>> = rets
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let success = match &r["success"] {
                Value::Bool(true) => "1".to_owned(),
                Value::Bool(false) => "0".to_owned(),
                _ => "None".to_owned(),
            };
            vec![
                r["fun"].as_str().unwrap().to_owned(),
                r["jid"].as_str().unwrap().to_owned(),
                returns[i].clone(),
                r["id"].as_str().unwrap().to_owned(),
                success,
                fulls[i].clone(),
            ]
        })
        .collect();
    want.sort_by(|a, b| a[1].cmp(&b[1]));
    let mut got = rows.clone();
    got.sort_by(|a, b| a[1].cmp(&b[1]).then(a[5].cmp(&b[5])));
    want.sort_by(|a, b| a[1].cmp(&b[1]).then(a[5].cmp(&b[5])));
    assert_eq!(got, want);

    // get_jid: minion id to its full return.
    let first = &rets[0];
    let jid = first["jid"].as_str().unwrap();
    assert_eq!(d.call("mysql", "get_jid", &json!({ "jid": jid })).result(), &json!({ "m1": first }));
    assert_eq!(d.call("mysql", "get_jid", &json!({ "jid": "20000101000000000000" })).result(), &json!({}));
    // get_minions: the distinct ids.
    assert_eq!(d.call("mysql", "get_minions", &json!({})).result(), &json!(["m1"]));
    // get_fun: each minion's latest return of the function (Salt: its full return).
    let latest_run = rets.iter().filter(|r| r["fun"] == "cmd.run").max_by_key(|r| r["jid"].as_str().unwrap()).unwrap();
    assert_eq!(d.call("mysql", "get_fun", &json!({ "fun": "cmd.run" })).result(), &json!({ "m1": latest_run }));
    assert_eq!(d.call("mysql", "get_fun", &json!({ "fun": "no.such" })).result(), &json!({}));
}

/// Replays what a Salt master sent its master_job_cache and event_return.
fn replay_master(d: &Daemon) -> Vec<Value> {
    let calls = salt_fixture_lines("master-job-cache-calls.jsonl");
    for c in &calls {
        let mut args = c.clone();
        let call = args.as_object_mut().unwrap().remove("call").unwrap();
        let r = d.outcome("mysql", call.as_str().unwrap(), &args);
        assert_eq!(r.result(), &Value::Null, "{call}");
    }
    calls
}

#[test]
fn master_job_cache_and_events_round_trip() {
    let dir = temp_dir();
    let db = database();
    let d = daemon(dir.path(), &db);
    let calls = replay_master(&d);

    // jids: the first load of each job, as Salt's json.dumps writes it.
    let mut first_loads: Vec<(String, Value)> = Vec::new();
    for c in calls.iter().filter(|c| c["call"] == "save_load") {
        let jid = c["jid"].as_str().unwrap().to_owned();
        if !first_loads.iter().any(|(j, _)| *j == jid) {
            first_loads.push((jid, c["load"].clone()));
        }
    }
    first_loads.sort_by(|a, b| a.0.cmp(&b.0));
    let dumped = python_dumps(&first_loads.iter().map(|(_, l)| l.clone()).collect::<Vec<_>>());
    let want: Vec<Vec<String>> = first_loads.iter().zip(&dumped).map(|((j, _), l)| vec![j.clone(), l.clone()]).collect();
    assert_eq!(db.sql("SELECT jid, `load` FROM jids ORDER BY jid"), want);

    // save_load of a known jid: no error, the first load stays.
    let (ping, ping_load) = first_loads.iter().find(|(_, l)| l["fun"] == "test.ping").unwrap().clone();
    let again = d.write("mysql", "save_load", &json!({ "jid": ping, "load": { "fun": "other" }, "minions": null }));
    assert_eq!(again.result(), &Value::Null);
    assert_eq!(d.call("mysql", "get_load", &json!({ "jid": ping })).result(), &ping_load);
    assert_eq!(d.call("mysql", "get_load", &json!({ "jid": "19990101000000000000" })).result(), &json!({}));

    // get_jids: {jid: summary} for every job.
    let jids = d.call("mysql", "get_jids", &json!({}));
    let jids = jids.result().as_object().unwrap();
    assert_eq!(jids.keys().cloned().collect::<BTreeSet<_>>(), first_loads.iter().map(|(j, _)| j.clone()).collect());
    assert_eq!(
        jids[&ping],
        json!({ "Function": "test.ping", "Arguments": [], "Target": "n1", "Target-type": "glob",
                "User": "root", "StartTime": "2026, Nov 23 08:43:32.485602" })
    );

    // get_jids_filter: the newest `count`, oldest first, with JID.
    let newest = d.call("mysql", "get_jids_filter", &json!({ "count": 3, "filter_find_job": false }));
    let got: Vec<&str> = newest.result().as_array().unwrap().iter().map(|j| j["JID"].as_str().unwrap()).collect();
    let all: Vec<&str> = first_loads.iter().map(|(j, _)| j.as_str()).collect();
    assert_eq!(got, &all[all.len() - 3..]);
    assert!(newest.result()[0]["StartTime"].as_str().unwrap().starts_with("2026, Nov 23 08:43:"));
    let none = d.call("mysql", "get_jids_filter", &json!({ "count": 0, "filter_find_job": true }));
    assert_eq!(none.result(), &json!([]));

    // salt_events: tag, Salt's JSON of the data, master_id, in order.
    let events: Vec<Value> = calls
        .iter()
        .filter(|c| c["call"] == "event_return")
        .flat_map(|c| c["events"].as_array().unwrap().clone())
        .collect();
    let data = python_dumps(&events.iter().map(|e| e["data"].clone()).collect::<Vec<_>>());
    let want: Vec<Vec<String>> = events
        .iter()
        .zip(&data)
        .map(|(e, d)| vec![e["tag"].as_str().unwrap().to_owned(), d.clone(), "master1".to_owned()])
        .collect();
    assert_eq!(db.sql("SELECT tag, data, master_id FROM salt_events ORDER BY id"), want);
}

/// The recorded master's jobs and events, replayed through `d`, then the
/// returns of the first job and the first five events made two days old:
/// past the default keep_jobs_seconds (a day) and the archive returner's
/// hour. The old job's jid.
fn master_jobs_with_an_old_one(d: &Daemon, db: &TestDb) -> &'static str {
    replay_master(d);
    let old_jid = "20261123084332485602";
    db.sql(&format!(
        "UPDATE salt_returns SET alter_time = NOW() - INTERVAL 2 DAY WHERE jid = '{old_jid}'; \
         UPDATE salt_events SET alter_time = NOW() - INTERVAL 2 DAY WHERE id <= 5;"
    ));
    old_jid
}

#[test]
fn clean_old_jobs_purges_and_archives() {
    let dir = temp_dir();
    let db = database();
    let d = daemon(dir.path(), &db);
    let old_jid = master_jobs_with_an_old_one(&d, &db);
    let new_jid = "20261123084333091357";
    let returns = count(&db, "SELECT COUNT(*) FROM salt_returns");
    let old_returns = db.sql(&format!("SELECT COUNT(*) FROM salt_returns WHERE jid = '{old_jid}'"))[0][0].parse::<usize>().unwrap();
    let events = db.sql("SELECT COUNT(*) FROM salt_events")[0][0].parse::<usize>().unwrap();

    assert_eq!(d.call("mysql_archive", "clean_old_jobs", &json!({})).result(), &Value::Null);
    let count = |sql: &str| db.sql(sql)[0][0].parse::<usize>().unwrap();
    assert_eq!(count("SELECT COUNT(*) FROM salt_returns"), returns - old_returns);
    assert_eq!(count(&format!("SELECT COUNT(*) FROM jids WHERE jid = '{old_jid}'")), 0);
    assert_eq!(count(&format!("SELECT COUNT(*) FROM jids WHERE jid = '{new_jid}'")), 1);
    assert_eq!(count("SELECT COUNT(*) FROM salt_events"), events - 5);
    // Archived: the same rows, column for column.
    assert_eq!(count("SELECT COUNT(*) FROM salt_returns_archive"), old_returns);
    assert_eq!(db.sql("SELECT jid FROM jids_archive"), vec![vec![old_jid.to_owned()]]);
    assert_eq!(db.sql("SELECT id FROM salt_events_archive ORDER BY id"), (1..=5).map(|i| vec![i.to_string()]).collect::<Vec<_>>());

    // Without archive_jobs: rows just go.
    db.sql(&format!("UPDATE salt_returns SET alter_time = NOW() - INTERVAL 2 DAY WHERE jid = '{new_jid}'"));
    assert_eq!(d.call("mysql", "clean_old_jobs", &json!({})).result(), &Value::Null);
    assert_eq!(count(&format!("SELECT COUNT(*) FROM salt_returns WHERE jid = '{new_jid}'")), 0);
    assert_eq!(count(&format!("SELECT COUNT(*) FROM jids WHERE jid = '{new_jid}'")), 0);
    assert_eq!(count(&format!("SELECT COUNT(*) FROM salt_returns_archive WHERE jid = '{new_jid}'")), 0);
}

/// Everything in the database, to prove a denied statement changed nothing.
fn snapshot(db: &TestDb) -> Vec<Vec<String>> {
    let mut all = db.sql("SHOW TABLES");
    for table in all.clone() {
        all.extend(db.sql(&format!("CHECKSUM TABLE `{}`", table[0])));
    }
    all
}

/// Salt's tables and a `secret` table no grant names.
fn database_with_secret() -> TestDb {
    let db = database();
    db.sql("CREATE TABLE secret (password varchar(64)); INSERT INTO secret VALUES ('hunter2');");
    db
}

#[test]
fn hostile_sql_is_denied_audited_and_changes_nothing() {
    let dir = temp_dir();
    let db = database_with_secret();
    let mut d = daemon(dir.path(), &db);
    let before = snapshot(&db);
    let traffic = GoodTraffic::start(d.socket.clone(), "good");

    // (host function, SQL, what the denial must name)
    let attempts: &[(&str, &str, &str)] = &[
        ("get_jid", "SELECT * FROM secret", "table `secret` is not granted `select`"),
        ("get_fun", "DELETE FROM jids", "table `jids` is not granted `delete`"),
        ("get_fun", "UPDATE jids SET jid = jid", "table `jids` is not granted `update`"),
        ("get_jid", "SELECT * FROM salt_events", "table `salt_events` is not granted `select`"),
        ("get_jid", "SELECT 1; DROP TABLE jids", "exactly one statement"),
        ("get_fun", "INSERT INTO jids (jid, `load`) VALUES (?, ?); DELETE FROM jids", "exactly one statement"),
        ("get_jid", "SELECT jid FROM jids /*!; DROP TABLE jids */", "exactly one statement"),
        ("get_jid", "SELECT jid FROM jids -- ; DROP TABLE jids", "comments"),
        ("get_jid", "SELECT jid FROM jids UNION SELECT password FROM secret", "table `secret` is not granted `select`"),
        ("get_jid", "SELECT jid FROM jids WHERE jid IN (SELECT password FROM secret)", "table `secret`"),
        ("get_jid", "SELECT j.jid FROM jids j JOIN secret s ON s.password = j.jid", "table `secret`"),
        ("get_jid", "WITH s AS (SELECT password FROM secret) SELECT * FROM s", "table `secret`"),
        ("get_jid", "SELECT * FROM (SELECT password FROM secret) AS d", "table `secret`"),
        ("get_fun", "INSERT INTO jids (jid, `load`) SELECT password, password FROM secret", "table `secret`"),
        ("get_jid", "SELECT jid FROM jids INTO OUTFILE '/tmp/x'", "not allowed"),
        ("get_jid", "SELECT jid INTO OUTFILE ? FROM jids", "not"),
        ("get_fun", "LOAD DATA INFILE ? INTO TABLE jids", "LOAD"),
        ("get_fun", "SET GLOBAL general_log = 1", "SET"),
        ("get_fun", "GRANT ALL ON *.* TO CURRENT_USER", "GRANT"),
        ("get_fun", "DROP TABLE jids", "DROP"),
        ("get_fun", "ALTER TABLE jids ADD COLUMN x INT", "ALTER"),
        ("get_fun", "CALL mysql.some_proc()", "CALL"),
        ("get_fun", "TRUNCATE TABLE jids", "TRUNCATE"),
        ("get_fun", "CREATE TABLE jids_archive LIKE jids", "table `jids_archive` is not granted `create`"),
        ("get_jid", "SELECT * FROM information_schema.tables", "outside the granted database"),
        ("get_jid", "SELECT user, password FROM mysql.user", "outside the granted database"),
        ("get_jid", "SELECT jid FROM jids WHERE jid = 'x' OR 1=1", "parameters"),
        ("get_jid", "SELECT LOAD_FILE(?)", "load_file"),
        ("get_jid", "SELECT @@datadir", "variable"),
        ("get_fun", "SELECT 1", "use `query`"),
        ("get_jid", "INSERT INTO jids (jid, `load`) VALUES (?, ?)", "use `execute`"),
    ];
    for (function, sql, names) in attempts {
        let audits = audit_lines(&d);
        let arg = if *function == "get_fun" { "fun" } else { "jid" };
        let r = d.outcome("escaper", function, &json!({ arg: sql }));
        assert_eq!(r.status, 403, "{sql}: {:?}", r.json);
        let (kind, message) = r.error();
        assert_eq!(kind, "denied", "{sql}");
        assert!(message.contains(names), "{sql}: {message}");
        assert_eq!(audit_lines(&d), audits + 1, "{sql}: exactly one audit event");
    }
    assert_eq!(snapshot(&db), before, "denied statements changed the database");
    traffic.finish();
    assert!(d.is_running(), "the host is up");

    // No grant: everything denied, audited.
    let audits = audit_lines(&d);
    let r = d.call("nogrant", "get_jid", &json!({ "jid": "SELECT 1" }));
    assert_eq!(r.error().0, "denied");
    assert!(r.error().1.contains("no mysql grant"), "{:?}", r.json);
    assert_eq!(audit_lines(&d), audits + 1);

    // What the grant allows goes through; injection payloads bound as
    // parameters land as data.
    let ok = d.call("escaper", "get_jid", &json!({ "jid": "SELECT COUNT(*) FROM jids" }));
    assert_eq!(ok.result(), &json!({ "rows": [[0]] }));
    let injected = d.call("escaper", "get_load", &json!({ "jid": "INSERT INTO jids (jid, `load`) VALUES (?, ?)" }));
    assert_eq!(injected.result(), &json!({ "affected_rows": 1 }));
    assert_eq!(
        db.sql("SELECT jid, `load` FROM jids"),
        vec![vec!["x'); DROP TABLE jids; -- ".to_owned(), "{\"a\": \"' OR 1=1 --\"}".to_owned()]]
    );
    assert!(db.sql("SHOW TABLES").contains(&vec!["jids".to_owned()]));

    // The password never shows.
    assert!(!d.log_text().contains(&db.password), "the password is in the daemon log");
}

#[test]
fn a_wrong_password_is_a_clear_backend_error_that_never_shows_a_password() {
    let dir = temp_dir();
    let db = database();
    let profile = db.profile_toml("salt_db", &dir.path().join("mysql.pass"));
    std::fs::write(dir.path().join("mysql.pass"), "Wr0ng-Passw0rd-Guess\n").unwrap();
    let d = config_daemon(
        dir.path(),
        "",
        &format!("{profile}\n{}", mysql_returner_toml("salt_db", 10_000)),
    );
    let r = d.call("mysql", "get_minions", &json!({}));
    let (kind, message) = r.error();
    assert_eq!(kind, "backend", "{:?}", r.json);
    assert!(message.contains("Access denied"), "{message}");
    for secret in ["Wr0ng-Passw0rd-Guess", db.password.as_str()] {
        assert!(!message.contains(secret), "{message}");
        assert!(!d.log_text().contains(secret), "a password is in the daemon log");
    }
}

#[test]
fn mariadb_stopped_mid_stream_holds_returns_and_delivers_them_when_back() {
    let dir = temp_dir();
    let (mut server, db) = own_database();
    let d = daemon(dir.path(), &db);
    let ret = |n: u32| json!({ "ret": { "id": "m1", "jid": format!("202611230843{n:08}"), "fun": "test.ping", "return": true, "success": true } });
    assert_eq!(d.write("mysql", "returner", &ret(1)).result(), &Value::Null);

    server.stop();
    // Accepted at once, whatever the backend: the spool holds them.
    for n in 2..=4 {
        assert_eq!(d.call("mysql", "returner", &ret(n)).result(), &Value::Null);
    }
    let held = Instant::now();
    loop {
        let q = d.queue("mysql");
        if q["last_error"].is_string() {
            assert_eq!(q["items"], 3, "{q}");
            break;
        }
        assert!(held.elapsed() < Duration::from_secs(30), "delivery never reported the backend down: {q}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(d.metrics()[r#"returner_host_backend_errors_total{returner="mysql",capability="mysql"}"#] >= 1.0);
    // A read waits for the writes before it, then says what holds them.
    let r = d.call("mysql", "get_jid", &json!({ "jid": "20261123084300000002" }));
    assert_eq!((r.status, r.error().0), (503, "pending"), "{:?}", r.json);
    assert!(r.error().1.contains("3 earlier writes") && r.error().1.contains("failing"), "{:?}", r.json);
    assert_eq!(returner_host_tests::http_unix(&d.socket, "GET", "/healthz", &[], b"").status, 200);

    server.run();
    // The pool drops its dead connections and opens new ones; delivery
    // retries until it gets through, in order, and the read sees it all.
    d.settle("mysql", Duration::from_secs(60));
    assert_eq!(db.sql("SELECT COUNT(*) FROM salt_returns WHERE jid LIKE '202611230843%'")[0][0], "4");
    assert_eq!(d.call("mysql", "get_jid", &json!({ "jid": "20261123084300000004" })).result()["m1"]["return"], json!(true));
    assert!(d.dead_letters("mysql").is_empty());
    let log = d.log_text();
    assert!(log.contains("cannot deliver; holding writes") && log.contains("delivering again"), "{log}");
}

/// Every event of the recorded master calls, as `event_return` receives them.
fn fixture_events() -> Vec<Value> {
    salt_fixture_lines("master-job-cache-calls.jsonl")
        .iter()
        .filter(|c| c["call"] == "event_return")
        .flat_map(|c| c["events"].as_array().unwrap().clone())
        .collect()
}

fn count(db: &TestDb, sql: &str) -> usize {
    db.sql(sql)[0][0].parse().unwrap()
}

#[test]
fn an_event_batch_is_stored_whole_or_not_at_all() {
    let dir = temp_dir();
    let db = database();
    let d = daemon(dir.path(), &db);
    let events = fixture_events();

    // The last event's tag is over salt_events.tag's 255 characters: the
    // server refuses that INSERT after accepting the others of the batch.
    let mut batch = events.clone();
    batch.push(json!({ "tag": format!("salt/job/{}", "9".repeat(300)), "data": {} }));
    // A server refusing the data is not worth a retry: the write goes to
    // dead letters at once, and the next write is delivered.
    let r = d.write("mysql", "event_return", &json!({ "events": batch }));
    let (kind, message) = r.error();
    assert_eq!((r.status, kind), (422, "invalid"), "{:?}", r.json);
    assert!(message.starts_with("MySQL error 1406 "), "{message}");
    // The events go in multi-row INSERTs of a power of two of rows each
    // (16, 8, 4, 1 for 29): the last statement holds the bad one.
    let statements = batch.len().count_ones();
    assert!(message.contains(&format!("statement {statements} of {statements}; the transaction was rolled back")), "{message}");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM salt_events"), 0, "a failed batch stored some of its events");

    // A batch far larger than one statement carries (64 rows) lands whole,
    // in order.
    let big: Vec<Value> = (0..7000).map(|i| json!({ "tag": format!("bulk/{i}"), "data": events[i % events.len()]["data"] })).collect();
    assert_eq!(d.write("mysql", "event_return", &json!({ "events": big })).result(), &Value::Null);
    let tags: Vec<String> = db.sql("SELECT tag FROM salt_events ORDER BY id").into_iter().map(|r| r[0].clone()).collect();
    assert_eq!(tags, (0..7000).map(|i| format!("bulk/{i}")).collect::<Vec<_>>());
}

/// `get_endtime` of the escaper runs its argument as a transaction.
fn transaction(d: &Daemon, statements: Value) -> returner_host_tests::Response {
    d.call("escaper", "get_endtime", &json!({ "jid": statements.to_string() }))
}

#[test]
fn a_transaction_commits_every_statement_or_none() {
    let dir = temp_dir();
    let db = database_with_secret();
    let d = daemon(dir.path(), &db);
    let load = "INSERT INTO jids (jid, `load`) VALUES (?, ?)";
    let event = "INSERT INTO salt_events (tag, data, master_id) VALUES (?, ?, ?)";

    let done = transaction(&d, json!([[load, ["j1", "{}"]], [event, ["e1", "x'); DROP TABLE jids; --", "m"]], [event, ["e2", "{}", "m"]]]));
    let outcomes: Value = serde_json::from_str(done.result().as_str().unwrap()).unwrap();
    assert_eq!(outcomes[0], json!({ "affected_rows": 1, "last_insert_id": null }));
    assert_eq!(outcomes[1]["affected_rows"], 1);
    let ids: Vec<u64> = db.sql("SELECT id FROM salt_events ORDER BY id").iter().map(|r| r[0].parse().unwrap()).collect();
    assert_eq!([&outcomes[1]["last_insert_id"], &outcomes[2]["last_insert_id"]], [&json!(ids[0]), &json!(ids[1])]);
    assert_eq!(db.sql("SELECT data FROM salt_events WHERE tag = 'e1'"), [["x'); DROP TABLE jids; --"]]);
    let before = snapshot(&db);

    // A server error in the last statement (j1 exists) undoes the first two.
    let r = transaction(&d, json!([[load, ["j2", "{}"]], [event, ["e3", "{}", "m"]], [load, ["j1", "{}"]]]));
    let (kind, message) = r.error();
    assert_eq!(kind, "invalid", "a duplicate key fails the same way every time: {:?}", r.json);
    assert!(message.starts_with("MySQL error 1062 "), "{message}");
    assert!(message.contains("(statement 3 of 3; the transaction was rolled back)"), "{message}");
    assert_eq!(snapshot(&db), before, "a failed transaction left rows behind");

    // Refused before anything runs: a statement outside the grant (denied,
    // audited once), a SELECT or CREATE TABLE (invalid), too many statements (limit).
    let refusals = [
        (json!([[load, ["j3", "{}"]], ["INSERT INTO secret (password) VALUES (?)", ["x"]]]), 403, "denied", "statement 2: table `secret` is not granted `insert`", 1),
        (json!([[load, ["j3", "{}"]], ["DROP TABLE jids", []]]), 403, "denied", "statement 2: `DROP` statements are not allowed", 1),
        (json!([[load, ["j3", "{}"]], ["SELECT password FROM secret", []]]), 422, "invalid", "statement 2: a transaction runs INSERT, UPDATE and DELETE only", 0),
        (json!([["CREATE TABLE jids_archive LIKE jids", []]]), 422, "invalid", "statement 1: a transaction runs INSERT, UPDATE and DELETE only", 0),
        (Value::Array(vec![json!([event, ["e", "{}", "m"]]); 1001]), 429, "limit", "a transaction of 1001 statements is over the most, 1000", 0),
    ];
    for (statements, status, want_kind, names, audits) in refusals {
        let audited = audit_lines(&d);
        let r = transaction(&d, statements);
        assert_eq!((r.status, r.error().0), (status, want_kind), "{names}: {:?}", r.json);
        assert!(r.error().1.contains(names), "{names}: {}", r.error().1);
        assert_eq!(audit_lines(&d), audited + audits, "{names}: audit events");
    }
    assert_eq!(snapshot(&db), before, "a refused transaction changed the database");

    // Without a grant nothing runs either.
    let r = d.call("nogrant", "get_endtime", &json!({ "jid": json!([[load, ["j4", "{}"]]]).to_string() }));
    assert!(r.error().1.contains("no mysql grant"), "{:?}", r.json);
    let empty = transaction(&d, json!([]));
    assert_eq!(empty.result(), &json!("[]"));
    assert_eq!(snapshot(&db), before);
}

#[test]
fn clean_old_jobs_archives_and_deletes_in_one_transaction() {
    let dir = temp_dir();
    let db = database();
    let d = daemon(dir.path(), &db);
    let old_jid = master_jobs_with_an_old_one(&d, &db);
    let old_returns = db.sql(&format!("SELECT fun, jid, `return`, id, success, full_ret, alter_time FROM salt_returns WHERE jid = '{old_jid}' ORDER BY full_ret"));
    let old_events = db.sql("SELECT id, tag, data, alter_time, master_id FROM salt_events WHERE id <= 5 ORDER BY id");
    let old_load = db.sql(&format!("SELECT jid, `load` FROM jids WHERE jid = '{old_jid}'"));
    assert!(!old_returns.is_empty() && old_events.len() == 5 && old_load.len() == 1);

    // An archive table the copy cannot fill (another shape): the copies
    // made before it are undone and nothing is deleted.
    db.sql("CREATE TABLE jids_archive LIKE jids; CREATE TABLE salt_returns_archive LIKE salt_returns; CREATE TABLE salt_events_archive (id BIGINT);");
    let live = snapshot(&db);
    let r = d.call("mysql_archive", "clean_old_jobs", &json!({}));
    let (kind, message) = r.error();
    assert_eq!(kind, "invalid", "{:?}", r.json);
    assert!(message.starts_with("MySQL error 1136 "), "{message}");
    assert!(message.contains("(statement 3 of 6; the transaction was rolled back)"), "{message}");
    assert_eq!(snapshot(&db), live, "a failed clean_old_jobs archived or deleted part of the old jobs");

    db.sql("DROP TABLE salt_events_archive");
    assert_eq!(d.call("mysql_archive", "clean_old_jobs", &json!({})).result(), &Value::Null);
    // The archive holds exactly the deleted rows, column for column.
    assert_eq!(db.sql("SELECT fun, jid, `return`, id, success, full_ret, alter_time FROM salt_returns_archive ORDER BY full_ret"), old_returns);
    assert_eq!(db.sql("SELECT id, tag, data, alter_time, master_id FROM salt_events_archive ORDER BY id"), old_events);
    assert_eq!(db.sql("SELECT jid, `load` FROM jids_archive"), old_load);
    assert_eq!(count(&db, &format!("SELECT COUNT(*) FROM salt_returns WHERE jid = '{old_jid}'")), 0);
    assert_eq!(count(&db, &format!("SELECT COUNT(*) FROM jids WHERE jid = '{old_jid}'")), 0);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM salt_events WHERE id <= 5"), 0);
    // Again: nothing old is left, so nothing more is archived.
    let archived = snapshot(&db);
    assert_eq!(d.call("mysql_archive", "clean_old_jobs", &json!({})).result(), &Value::Null);
    assert_eq!(snapshot(&db), archived);
}

#[test]
fn a_query_result_over_max_result_bytes_is_refused_naming_the_limit() {
    let dir = temp_dir();
    let db = database();
    db.sql(&format!("INSERT INTO jids VALUES ('a', '{0}'), ('b', '{0}'), ('c', '{0}')", "x".repeat(2000)));
    let profile = db.profile_toml("small", &dir.path().join("mysql.pass"));
    let d = config_daemon(
        dir.path(),
        "",
        &format!(
            "{profile}max_result_bytes = 4096\n[returners.escaper]\nmodule = {}\n[returners.escaper.grants.mysql]\nprofile = \"small\"\ntables = {{ jids = [\"select\"] }}\n",
            toml_path(&guest("fixture-sql-escaper"))
        ),
    );
    let r = d.call("escaper", "get_jid", &json!({ "jid": "SELECT `load` FROM jids" }));
    assert_eq!((r.status, r.error().0), (429, "limit"), "{:?}", r.json);
    assert!(r.error().1.contains("over max_result_bytes (4096 bytes) of MySQL profile `small`"), "{:?}", r.json);
    // Under the limit: answered whole.
    let r = d.call("escaper", "get_jid", &json!({ "jid": "SELECT `load` FROM jids LIMIT 1" }));
    assert_eq!(r.result()["rows"][0][0].as_str().map(str::len), Some(2000));
    let r = d.call("escaper", "get_jid", &json!({ "jid": "SELECT jid, LENGTH(`load`) FROM jids ORDER BY jid" }));
    assert_eq!(r.result(), &json!({ "rows": [["a", 2000], ["b", 2000], ["c", 2000]] }));
}

/// The server's count of `name` (`SHOW GLOBAL STATUS`).
fn server_status(server: &MariaDb, name: &str) -> u64 {
    let rows = server.root_sql("", &format!("SHOW GLOBAL STATUS LIKE '{name}'")).unwrap();
    rows[0][1].parse().unwrap()
}

/// The escaper's steps (for `prep_jid`): `n` SELECTs, then `n` INSERTs,
/// each naming `marker` in its parameters.
fn marked_steps(marker: &str, n: usize) -> Value {
    let select = (0..n).map(|i| json!({ "tag": "query", "data": ["SELECT COUNT(*) FROM jids WHERE jid = ?", [format!("{marker}-{i}")]] }));
    let insert = (0..n).map(|i| json!({ "tag": "execute", "data": ["INSERT INTO jids (jid, `load`) VALUES (?, ?)", [format!("{marker}-{i}"), "{}"]] }));
    Value::Array(select.chain(insert).collect())
}

#[test]
fn a_call_runs_its_statements_on_one_connection_and_prepares_each_once() {
    // A server of its own: its global counters see this test only.
    let (server, db) = own_database();
    let dir = temp_dir();
    let d = daemon(dir.path(), &db);
    assert_eq!(d.call("escaper", "get_jid", &json!({ "jid": "SELECT COUNT(*) FROM jids" })).result(), &json!({ "rows": [[0]] }));
    server.root_sql("", "SET GLOBAL log_output = 'TABLE'; SET GLOBAL general_log = 1").unwrap();
    let (prepared, executed) = (server_status(&server, "Com_stmt_prepare"), server_status(&server, "Com_stmt_execute"));

    // Two calls at once, twenty statements each (two texts).
    std::thread::scope(|s| {
        for marker in ["call-a", "call-b"] {
            let d = &d;
            // prep_jid runs the steps within the call (event_return is spooled).
            let steps = marked_steps(marker, 10).to_string();
            s.spawn(move || assert_eq!(d.call("escaper", "prep_jid", &json!({ "passed_jid": steps })).result(), &json!("ran")));
        }
    });
    server.root_sql("", "SET GLOBAL general_log = 0").unwrap();

    assert_eq!(server_status(&server, "Com_stmt_execute") - executed, 40, "every statement ran");
    // Each text is prepared once per connection, and again at most once
    // when the call's time left crosses a step of the time limit put in
    // front of it; a connection reset between statements (or a connection
    // per statement) would prepare all forty.
    let prepares = server_status(&server, "Com_stmt_prepare") - prepared;
    assert!(prepares <= 8, "{prepares} statements prepared for two calls of two texts");
    for marker in ["call-a", "call-b"] {
        let threads = server
            .root_sql(
                "",
                &format!("SELECT DISTINCT thread_id FROM mysql.general_log WHERE command_type = 'Execute' AND argument LIKE '%{marker}-%'"),
            )
            .unwrap();
        assert_eq!(threads.len(), 1, "{marker}'s statements ran on the server connections {threads:?}");
    }
    let stored = count(&db, "SELECT COUNT(*) FROM jids WHERE jid LIKE 'call-%'");
    assert_eq!(stored, 20);
}

#[test]
fn a_transaction_a_call_leaves_never_reaches_the_next_call() {
    let dir = temp_dir();
    let db = database();
    // One connection per profile, so the next call gets the same one.
    let profile = |name: &str, extra: &str| format!("{}pool_size = 1\n{extra}", db.profile_toml(name, &dir.path().join(format!("{name}.pass"))));
    let escaper = toml_path(&guest("fixture-sql-escaper"));
    let returner = |name: &str, profile: &str, deadline_ms: u32| {
        let grant = r#"{ jids = ["select", "insert"], salt_events = ["select", "insert"] }"#;
        format!("[returners.{name}]\nmodule = {escaper}\nlimits = {{ deadline_ms = {deadline_ms} }}\n[returners.{name}.grants.mysql]\nprofile = \"{profile}\"\ntables = {grant}\n")
    };
    let d = config_daemon(
        dir.path(),
        "",
        &format!(
            "{}{}{}{}",
            profile("short", "statement_timeout_ms = 1000\n"),
            profile("long", ""),
            returner("trapper", "short", 10_000),
            returner("late", "long", 1_500),
        ),
    );
    let event = |tag: &str| json!(["INSERT INTO salt_events (tag, data, master_id) VALUES (?, ?, ?)", [tag, "{}", "m"]]);
    let blocked = json!(["INSERT INTO jids (jid, `load`) VALUES (?, ?)", ["locked", "{}"]]);
    // A guest whose transaction fails at its time limit and which then
    // traps; a guest whose transaction runs into the call's deadline.
    let cases = [
        ("trapper", json!([{ "tag": "transaction", "data": [event("left-by-trapper"), blocked] }, { "tag": "trap", "data": null }])),
        ("late", json!([{ "tag": "transaction", "data": [event("left-by-late"), blocked] }])),
    ];
    std::thread::scope(|s| {
        // Another session holds the row the guests' transactions want, so
        // their second statement waits until a time limit ends it.
        let holder = s.spawn(|| db.sql("START TRANSACTION; INSERT INTO jids (jid, `load`) VALUES ('locked', '{}'); DO SLEEP(6); ROLLBACK;"));
        let holding = format!("SELECT COUNT(*) FROM information_schema.processlist WHERE db = '{}' AND info LIKE 'DO SLEEP%'", db.name);
        let started = Instant::now();
        while count(&db, &holding) == 0 {
            assert!(started.elapsed() < Duration::from_secs(5), "the lock is not held");
            std::thread::sleep(Duration::from_millis(50));
        }
        for (returner, steps) in cases {
            // prep_jid runs the steps and answers (event_return is spooled).
            let r = d.call(returner, "prep_jid", &json!({ "passed_jid": steps.to_string() }));
            assert_ne!(r.status, 200, "{returner}: {:?}", r.json);
            // The returner's next call, on the profile's one connection: its
            // write is its own, committed when the call answers.
            let next = json!([{ "tag": "execute", "data": event(&format!("after-{returner}")) }]);
            assert_eq!(d.call(returner, "prep_jid", &json!({ "passed_jid": next.to_string() })).result(), &json!("ran"));
            let tags = db.sql("SELECT tag FROM salt_events ORDER BY id");
            assert_eq!(tags.last().map(|t| t[0].clone()), Some(format!("after-{returner}")), "{returner}: {tags:?}");
            assert!(!tags.iter().any(|t| t[0].starts_with("left-by")), "{returner}: {tags:?}");
        }
        holder.join().unwrap();
    });
    assert_eq!(db.sql("SELECT tag FROM salt_events ORDER BY id"), [["after-trapper"], ["after-late"]]);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM jids"), 0);
}

#[test]
fn a_batch_too_slow_for_the_statement_time_limit_is_delivered_in_halves() {
    let dir = temp_dir();
    let (mut server, db) = own_database();
    // Each row costs MariaDB 50 ms: the batch's INSERT of 32 rows runs past
    // the profile's 1 s limit however often it is tried; one of 8 rows does not.
    server
        .root_sql(&db.name, "CREATE TRIGGER slow_rows BEFORE INSERT ON salt_returns FOR EACH ROW SET @slept = SLEEP(0.05)")
        .unwrap();
    let profile = db.profile_toml("salt_db", &dir.path().join("mysql.pass")) + "statement_timeout_ms = 1000\n";
    let d = config_daemon(dir.path(), "[server.spool]\nretry_max_ms = 500", &format!("{profile}\n{}", mysql_returner_toml("salt_db", 30_000)));
    // 40 returns held while the server is down, so they go as one batch.
    server.stop();
    let ret = |n: u32| json!({ "ret": { "id": "m1", "jid": format!("202611301700{n:08}"), "fun": "test.ping", "return": true, "success": true } });
    for n in 0..40 {
        assert_eq!(d.call("mysql", "returner", &ret(n)).result(), &Value::Null);
    }
    server.run();
    d.settle("mysql", Duration::from_secs(180));
    assert_eq!(db.sql("SELECT COUNT(*), COUNT(DISTINCT jid, id) FROM salt_returns")[0], ["40", "40"], "every return, once");
    assert!(d.dead_letters("mysql").is_empty(), "{:#?}", d.dead_letters("mysql"));
    let log = d.log_text();
    assert!(log.contains("delivering it in two halves"), "{log}");
    assert!(log.contains("max_statement_time") || log.contains("time limit"), "the log says why: {log}");
}

#[test]
fn a_write_held_by_the_server_holds_every_write_queued_after_it() {
    // Delivery starts a group's call while the group ahead of it is still
    // being stored. A group that fails must still hold back every later
    // one: none of their rows may reach the server before its own.
    let dir = temp_dir();
    let (server, db) = own_database();
    db.sql("CREATE TABLE hold (tag varchar(255) PRIMARY KEY)");
    db.sql("INSERT INTO hold VALUES ('e057')");
    // A held event fails as a lock wait timeout does (1205): worth a retry.
    server
        .root_sql(
            &db.name,
            "DELIMITER //\nCREATE TRIGGER hold_events BEFORE INSERT ON salt_events FOR EACH ROW \
             IF EXISTS (SELECT 1 FROM hold WHERE tag = NEW.tag) THEN \
             SIGNAL SQLSTATE 'HY000' SET MYSQL_ERRNO = 1205, MESSAGE_TEXT = 'held by the test'; END IF//\n",
        )
        .unwrap();
    let profile = db.profile_toml("salt_db", &dir.path().join("mysql.pass"));
    let spool = "[server.spool]\nbatch_max_items = 5\nretry_max_ms = 200";
    let d = config_daemon(dir.path(), spool, &format!("{profile}\n{}", mysql_returner_toml("salt_db", 30_000)));
    let tags: Vec<String> = (0..200).map(|n| format!("e{n:03}")).collect();
    for tag in &tags {
        let args = json!({ "events": [{ "tag": tag, "data": { "n": tag } }] });
        assert_eq!(d.call("mysql", "event_return", &args).result(), &Value::Null);
    }
    let stored = || -> Vec<String> { db.sql("SELECT tag FROM salt_events ORDER BY id").into_iter().map(|r| r[0].clone()).collect() };
    // Delivery reaches the held event and keeps failing on it.
    let until = Instant::now() + Duration::from_secs(60);
    while !d.log_text().contains("held by the test") {
        assert!(Instant::now() < until, "delivery never reached the held event: {}", d.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    for _ in 0..20 {
        let now = stored();
        assert!(now.len() <= 57 && now[..] == tags[..now.len()], "only events ahead of the held one, in order: {now:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    db.sql("DELETE FROM hold");
    d.settle("mysql", Duration::from_secs(60));
    assert_eq!(stored(), tags, "every event once, in the order it was accepted");
    assert!(d.dead_letters("mysql").is_empty(), "{:#?}", d.dead_letters("mysql"));
}
