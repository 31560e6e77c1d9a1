//! Hostile SQL through the daemon against the real MariaDB, with the grant
//! a careless admin gives (the database user has ALL on the returner's
//! database and on a second one): every escape is refused or bounded, the
//! ungranted tables are unchanged and unread, nothing of the guest runs on
//! after its deadline, the host stays up, and a well-behaved returner on
//! the same profile keeps serving.

use std::path::Path;
use std::time::{Duration, Instant};

use returner_host_tests::mariadb::TestDb;
use returner_host_tests::{Daemon, guest, temp_dir};
use serde_json::{Value, json};

use super::hostile::GoodTraffic;
use super::mysql::{RETURNER_TABLES, database};
use super::{config_daemon, toml_path};

/// The escaper's deadline: a runaway statement must be gone 1 s after it.
const DEADLINE_MS: u64 = 2_000;

/// `mysql`, the shipped returner, and `escaper`, the hostile fixture, with
/// the grant the shipped returner's README documents (and `create`), on one
/// profile of `pool_size` connections.
fn daemon(dir: &Path, db: &TestDb, pool_size: usize) -> Daemon {
    let profile = db.profile_toml("salt_db", &dir.join("mysql.pass"));
    let mysql = toml_path(&guest("returner-mysql"));
    let escaper = toml_path(&guest("fixture-sql-escaper"));
    config_daemon(
        dir,
        "",
        &format!(
            r#"
{profile}pool_size = {pool_size}

[returners.mysql]
module = {mysql}
limits = {{ deadline_ms = 10000 }}
[returners.mysql.grants.mysql]
profile = "salt_db"
tables = {RETURNER_TABLES}

[returners.escaper]
module = {escaper}
limits = {{ deadline_ms = {DEADLINE_MS}, max_concurrency = 64 }}
[returners.escaper.grants.mysql]
profile = "salt_db"
tables = {{ jids = ["select", "insert", "delete", "create"], salt_returns = ["select", "insert", "delete"], salt_events = ["select", "insert", "delete"], jids_archive = ["select", "create", "insert"] }}
"#
        ),
    )
}

/// Every table of both databases with its checksum, but `salt_returns`,
/// where the well-behaved returner writes meanwhile.
fn snapshot(db: &TestDb, other: &str) -> Vec<Vec<String>> {
    let mut all = Vec::new();
    for schema in [db.name.as_str(), other] {
        for table in db.sql(&format!("SHOW TABLES FROM `{schema}`")) {
            if table[0] == "salt_returns" {
                continue;
            }
            all.extend(db.sql(&format!("CHECKSUM TABLE `{schema}`.`{}`", table[0])));
        }
    }
    all.push(db.sql(&format!("SELECT next_not_cached_value FROM `{other}`.seq")).concat());
    all
}

fn call(d: &Daemon, function: &str, sql: &str) -> returner_host_tests::Response {
    let arg = if function == "get_fun" { "fun" } else { "jid" };
    d.outcome("escaper", function, &json!({ arg: sql }))
}

/// The guest's statements are gone from the server within 1 s of `since`
/// plus the deadline.
fn nothing_left_running(db: &TestDb, since: Instant, what: &str) {
    let by = since + Duration::from_millis(DEADLINE_MS) + Duration::from_secs(1);
    std::thread::sleep(by.saturating_duration_since(Instant::now()));
    assert_eq!(db.running_queries(), Vec::<String>::new(), "{what}: still running 1 s after the deadline");
}

#[test]
fn hostile_sql_with_a_careless_grant_is_refused_or_bounded_and_changes_nothing() {
    let dir = temp_dir();
    let db = database();
    db.sql("CREATE TABLE secret (password varchar(64)); INSERT INTO secret VALUES ('hunter2');");
    let other = db.careless_second_database();
    // Enough rows that a 4-way self-join runs for hours.
    db.sql("INSERT INTO jids (jid, `load`) SELECT seq, '{}' FROM seq_1_to_2000");
    let mut d = daemon(dir.path(), &db, 10);
    let before = snapshot(&db, &other);
    let traffic = GoodTraffic::start(d.socket.clone(), "mysql");

    let long_chain = format!("SELECT 1{}", "+1".repeat(32_760));
    let deep_not = format!("SELECT jid FROM jids WHERE {}jid = ?", "NOT ".repeat(2_000));
    let deep_case = format!("SELECT {}1{}", "CASE WHEN jid = ? THEN ".repeat(200), " END".repeat(200));
    let long_in = format!("SELECT jid FROM jids WHERE jid IN (?{})", ", ?".repeat(20_000));
    let attempts: Vec<(&str, String, &str)> = vec![
        // The backtick/backslash family: a name ending early let the rest run unchecked.
        ("get_jid", r"SELECT `a\`` FROM jids".into(), "names are of A-Z"),
        ("get_jid", r"SELECT jid AS `x\`, password AS `y` FROM secret".into(), "names are of A-Z"),
        ("get_jid", r"SELECT j.jid FROM jids AS `j\`` UNION SELECT password FROM secret".into(), "names are of A-Z"),
        ("get_fun", format!(r"DELETE `j\`` FROM jids AS `j\`` RIGHT JOIN `{other}`.t ON 1"), "names are of A-Z"),
        ("get_fun", r"UPDATE jids AS `j\`` SET jid = jid".into(), "names are of A-Z"),
        ("get_fun", r"INSERT INTO jids (`jid\``, `load`) SELECT password, password FROM secret".into(), "names are of A-Z"),
        ("get_fun", "INSERT INTO jids (jid, `load`) SELECT password, password FROM secret".into(), "table `secret`"),
        ("get_jid", "WITH x AS (SELECT jid FROM jids) DELETE FROM jids".into(), "SELECTs only"),
        ("get_jid", "WITH x AS (SELECT jid FROM jids) UPDATE jids SET jid = jid".into(), "SELECTs only"),
        ("get_jid", long_chain, "operators"),
        ("get_jid", deep_not, "operators"),
        ("get_jid", deep_case, "does not parse"),
        ("get_jid", long_in, "tokens"),
        ("get_jid", "WITH RECURSIVE r (n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT COUNT(*) FROM r".into(), "RECURSIVE"),
        ("get_fun", "CREATE TABLE jids_archive (v varchar(64)) ENGINE=MERGE UNION=(secret) INSERT_METHOD=LAST".into(), "CREATE TABLE takes"),
        ("get_fun", "CREATE TABLE jids_archive (v varchar(64), FOREIGN KEY (v) REFERENCES secret (password))".into(), "CREATE TABLE takes"),
        ("get_fun", "CREATE TABLE jids_archive AS SELECT password FROM secret".into(), "CREATE TABLE takes"),
        ("get_jid", format!("SELECT `{other}`.f()"), "function"),
        ("get_jid", "SELECT f()".into(), "function `f`"),
        ("get_jid", format!("SELECT NEXTVAL(`{other}`.seq)"), "function `nextval`"),
        ("get_jid", format!("SELECT SETVAL(`{other}`.seq, 100)"), "function `setval`"),
        ("get_jid", format!("SELECT * FROM `{other}`.t"), "outside the granted database"),
        ("get_jid", "SELECT LOAD_FILE(?)".into(), "function `load_file`"),
        ("get_jid", "SELECT @@datadir".into(), "variable"),
        ("get_jid", "SELECT GET_LOCK(?, 10)".into(), "function `get_lock`"),
        ("get_jid", "SELECT SLEEP(100)".into(), "function `sleep`"),
        ("get_jid", "SELECT * FROM information_schema.processlist".into(), "outside the granted database"),
        ("get_jid", "SELECT user, password FROM mysql.user".into(), "outside the granted database"),
        ("get_jid", "SELECT jid FROM jids FOR UPDATE".into(), "locking reads"),
    ];
    for (function, sql, names) in &attempts {
        let r = call(&d, function, sql);
        let shown: String = sql.chars().take(80).collect();
        assert_eq!(r.status, 403, "{shown}: {:?}", r.json);
        let (kind, message) = r.error();
        assert_eq!(kind, "denied", "{shown}");
        // sqlparser's tokenizer reads `\`` as an escape inside a name where
        // MySQL does not: such a name is refused either way.
        let unparsed_name = *names == "names are of A-Z" && message.contains("does not parse");
        assert!(message.contains(names) || unparsed_name, "{shown}: {message}");
        assert!(!r.json.to_string().contains("hunter2") && !r.json.to_string().contains("other-secret"), "{shown}");
    }
    assert!(d.is_running(), "the host is up after the refusals");

    // A cartesian join of granted tables is allowed, and bounded: it ends
    // at the call's deadline, on the server too.
    let cartesian = "SELECT COUNT(*) FROM jids a, jids b, jids c, jids d";
    let started = Instant::now();
    let r = call(&d, "get_jid", cartesian);
    assert!(matches!(r.error().0, "deadline" | "backend"), "{:?}", r.json);
    nothing_left_running(&db, started, cartesian);

    // Repeated at once, more than the pool holds: the returner gets at most
    // its share of connections, each statement ends, and the server is
    // never full.
    let started = Instant::now();
    let handles: Vec<_> = (0..24)
        .map(|_| {
            let socket = d.socket.clone();
            std::thread::spawn(move || {
                let body = json!({ "jid": cartesian }).to_string();
                returner_host_tests::http_unix(&socket, "POST", "/v1/returners/escaper/get_jid", &[], body.as_bytes()).status
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(DEADLINE_MS / 2));
    assert!(db.connections() <= 10, "more connections than the pool: {}", db.connections());
    let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(statuses.iter().all(|s| [429, 502, 504].contains(s)), "{statuses:?}");
    nothing_left_running(&db, started, "24 cartesian joins");
    db.sql("SELECT 1");

    let served = traffic.finish();
    assert!(served > 0);
    assert!(d.is_running(), "the host is up");
    assert_eq!(snapshot(&db, &other), before, "the hostile statements changed a database");
    let log = d.log_text();
    assert!(!log.contains("hunter2") && !log.contains("other-secret"), "a secret reached the log");
}

#[test]
fn a_flood_of_large_transactions_does_not_stall_other_returners() {
    let dir = temp_dir();
    let db = database();
    let d = daemon(dir.path(), &db, 10);
    let traffic = GoodTraffic::start(d.socket.clone(), "mysql");
    // Distinct ~60 KB statements: the most a statement may be, each parsed
    // in full; a transaction stops at 1 MiB of distinct SQL.
    let big = |i: usize| {
        let rows: String = (0..2_200).map(|r| format!(", ({:020}, ?)", i * 10_000 + r)).collect();
        format!("INSERT INTO jids (jid, `load`) VALUES (?, ?){rows}")
    };
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let socket = d.socket.clone();
            let statements: Vec<Value> = (0..20).map(|i| json!([big(t * 100 + i), []])).collect();
            std::thread::spawn(move || {
                let body = json!({ "jid": Value::Array(statements).to_string() }).to_string();
                returner_host_tests::http_unix(&socket, "POST", "/v1/returners/escaper/get_endtime", &[], body.as_bytes())
            })
        })
        .collect();
    let mut health = 0;
    while handles.iter().any(|h| !h.is_finished()) {
        let r = returner_host_tests::http_unix(&d.socket, "GET", "/healthz", &[], b"");
        assert_eq!(r.status, 200);
        health += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    for h in handles {
        let r = h.join().unwrap();
        assert!(matches!(r.error().0, "denied" | "deadline" | "limit"), "{:?}", r.json);
    }
    assert!(health > 0);
    traffic.finish();
    assert_eq!(db.sql("SELECT COUNT(*) FROM jids WHERE jid < 1000000"), vec![vec!["0".to_owned()]]);
}
