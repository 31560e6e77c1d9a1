//! Unit tests of the statement check: what the shipped returners send
//! passes, every way out of a grant found so far is refused (regression
//! tests named after each), and a property test holds the printer and the
//! parser to each other on hostile input.

use super::*;

fn grant() -> BTreeMap<String, Vec<SqlVerb>> {
    use SqlVerb::*;
    BTreeMap::from([
        ("jids".to_owned(), vec![Select, Insert, Delete]),
        ("salt_returns".to_owned(), vec![Select, Insert, Delete]),
        ("salt_events".to_owned(), vec![Insert]),
        ("jids_archive".to_owned(), vec![Create, Insert]),
    ])
}

fn run(sql: &str, function: Function) -> Result<String, Denial> {
    let tables = grant();
    check(sql, function, Access { tables: &tables, database: "salt" }).map_err(|refusal| match refusal {
        Refusal::Denied(denial) => denial,
        Refusal::Misplaced(m) => panic!("{sql}: misplaced, not denied: {m}"),
    })
}

fn ok_query(sql: &str) -> String {
    run(sql, Function::Query).unwrap_or_else(|d| panic!("{sql}: {d:?}"))
}

fn ok_exec(sql: &str) -> String {
    run(sql, Function::Execute).unwrap_or_else(|d| panic!("{sql}: {d:?}"))
}

fn denied_query(sql: &str) -> Denial {
    run(sql, Function::Query).expect_err(sql)
}

fn denied_exec(sql: &str) -> Denial {
    run(sql, Function::Execute).expect_err(sql)
}

#[test]
fn the_mysql_returners_statements_pass() {
    ok_exec("INSERT INTO `salt_returns` (`fun`, `jid`, `return`, `id`, `success`, `full_ret`) VALUES (?, ?, ?, ?, ?, ?)");
    ok_exec("INSERT IGNORE INTO `jids` (`jid`, `load`) VALUES (?, ?)");
    ok_query("SELECT `load` FROM `jids` WHERE `jid` = ?");
    ok_query("SELECT id, full_ret FROM salt_returns WHERE jid = ?");
    ok_query(
        "SELECT s.id, s.full_ret, s.jid FROM salt_returns s \
         JOIN (SELECT MAX(`jid`) AS jid FROM salt_returns GROUP BY fun, id) max ON s.jid = max.jid \
         WHERE s.fun = ?",
    );
    ok_query("SELECT jid, `load` FROM jids ORDER BY jid DESC LIMIT ?");
    ok_query("SELECT DISTINCT id FROM salt_returns");
    ok_exec("INSERT INTO salt_events (tag, data, master_id) VALUES (?, ?, ?), (?, ?, ?)");
    ok_exec("DELETE FROM salt_returns WHERE alter_time < DATE_SUB(NOW(), INTERVAL ? SECOND)");
    ok_exec("CREATE TABLE IF NOT EXISTS jids_archive LIKE jids");
    ok_exec("INSERT INTO jids_archive SELECT * FROM jids WHERE jid IN (SELECT DISTINCT jid FROM salt_returns WHERE alter_time < ?)");
    ok_query("SELECT 1");
    ok_query("SELECT jid FROM salt.jids");
    ok_query("WITH recent AS (SELECT jid FROM jids) SELECT jid FROM recent");
}

/// The mysql returner's look-up of returns stored already (a redelivery), at
/// its largest: one `(jid = ? AND id = ?)` per return of a batch, 64 of them.
#[test]
fn the_mysql_returners_lookup_of_stored_returns_passes() {
    let wanted = vec!["(`jid` = ? AND `id` = ?)"; 64].join(" OR ");
    let sent = ok_query(&format!("SELECT `jid`, `id`, `full_ret` FROM `salt_returns` WHERE {wanted}"));
    assert_eq!(sent.matches('?').count(), 128);
}

#[test]
fn the_statement_sent_is_the_one_checked() {
    assert_eq!(ok_query("select   jid from jids where jid = ?"), "SELECT jid FROM jids WHERE jid = ?");
}

#[test]
fn an_ungranted_table_is_denied_by_name_and_verb() {
    let d = denied_query("SELECT * FROM secret");
    assert_eq!(d.reason, "table `secret` is not granted `select`");
    assert_eq!(d.target, "table secret (select)");
}

#[test]
fn an_ungranted_verb_is_denied() {
    assert_eq!(denied_exec("UPDATE jids SET `load` = ? WHERE jid = ?").reason, "table `jids` is not granted `update`");
    assert_eq!(denied_query("SELECT * FROM salt_events").reason, "table `salt_events` is not granted `select`");
    assert_eq!(denied_exec("DELETE FROM salt_events").reason, "table `salt_events` is not granted `delete`");
    assert_eq!(denied_exec("CREATE TABLE jids2 LIKE jids").reason, "table `jids2` is not granted `create`");
    assert!(denied_exec("REPLACE INTO salt_events (tag) VALUES (?)").reason.contains("`delete`"));
    assert!(denied_exec("INSERT INTO jids (jid) VALUES (?) ON DUPLICATE KEY UPDATE jid = ?").reason.contains("`update`"));
}

#[test]
fn reads_hidden_in_subqueries_joins_unions_and_ctes_are_checked() {
    for sql in [
        "SELECT jid FROM jids WHERE jid IN (SELECT jid FROM secret)",
        "SELECT j.jid FROM jids j JOIN secret s ON s.jid = j.jid",
        "SELECT j.jid FROM jids j, secret",
        "SELECT jid FROM jids UNION SELECT password FROM secret",
        "SELECT * FROM (SELECT * FROM secret) AS d",
        "WITH x AS (SELECT * FROM secret) SELECT * FROM x",
        "SELECT (SELECT MAX(a) FROM secret) FROM jids",
        "SELECT jid FROM jids WHERE EXISTS (SELECT 1 FROM secret)",
    ] {
        assert_eq!(denied_query(sql).reason, "table `secret` is not granted `select`", "{sql}");
    }
    for sql in [
        "INSERT INTO jids SELECT * FROM secret",
        "INSERT INTO jids (jid, `load`) VALUES ((SELECT a FROM secret), ?)",
        "DELETE FROM jids WHERE jid IN (SELECT jid FROM secret)",
        "CREATE TABLE jids_archive LIKE secret",
        "DELETE jids FROM jids JOIN secret ON secret.jid = jids.jid",
    ] {
        assert!(denied_exec(sql).reason.contains("table `secret` is not granted"), "{sql}");
    }
    // Every table of a multi-table UPDATE needs `update`.
    let tables = BTreeMap::from([("jids".to_owned(), vec![SqlVerb::Update]), ("secret".to_owned(), vec![SqlVerb::Select])]);
    let access = Access { tables: &tables, database: "salt" };
    let d = check("UPDATE jids j JOIN secret s ON s.a = j.jid SET j.jid = s.a", Function::Execute, access).unwrap_err();
    assert!(matches!(d, Refusal::Denied(d) if d.reason == "table `secret` is not granted `update`"));
}

#[test]
fn a_write_target_read_again_needs_select() {
    assert_eq!(
        denied_exec("INSERT INTO salt_events (tag) SELECT tag FROM salt_events").reason,
        "table `salt_events` is not granted `select`"
    );
    ok_exec("INSERT INTO salt_events (tag, data) VALUES (?, ?)");
}

#[test]
fn a_cte_name_does_not_hide_a_real_table_in_a_cte_body() {
    assert!(denied_query("WITH secret AS (SELECT * FROM secret) SELECT * FROM secret").reason.contains("`secret`"));
    assert!(denied_query("SELECT * FROM (WITH s AS (SELECT 1) SELECT * FROM s) d").reason.contains("WITH"));
    assert!(denied_exec("INSERT INTO jids WITH s AS (SELECT * FROM jids) SELECT * FROM s").reason.contains("WITH"));
}

#[test]
fn exactly_one_statement() {
    assert!(denied_query("SELECT 1; SELECT 2").reason.contains("exactly one statement"));
    assert!(denied_exec("INSERT INTO jids (jid) VALUES (?); DROP TABLE jids").reason.contains("exactly one"));
    assert!(denied_query("").reason.contains("no statement"));
    ok_query("SELECT 1;");
}

#[test]
fn comments_are_refused_whatever_they_hide() {
    // MySQL runs the text of `/*! */`; so does the dialect's tokenizer,
    // which hands it to the checks as ordinary SQL.
    assert!(denied_query("SELECT 1 /*!; DROP TABLE jids */").reason.contains("exactly one statement"));
    assert!(denied_query("SELECT 1 /*! UNION SELECT * FROM secret */").reason.contains("`secret`"));
    assert!(!denied_query("SELECT 1 /*!50000 UNION SELECT * FROM secret */").reason.is_empty());
    for sql in [
        "SELECT jid FROM jids -- WHERE x",
        "SELECT jid FROM jids # trailing",
        "SELECT /*+ MAX_EXECUTION_TIME(1) */ jid FROM jids",
        "SELECT jid FROM jids /*M!100000 UNION SELECT * FROM secret */",
    ] {
        let d = denied_query(sql);
        assert!(d.reason.contains("comments"), "{sql}: {d:?}");
    }
}

#[test]
fn other_statements_are_refused() {
    for (sql, verb) in [
        ("DROP TABLE jids", "DROP"),
        ("ALTER TABLE jids ADD COLUMN x INT", "ALTER"),
        ("GRANT ALL ON *.* TO salt", "GRANT"),
        ("SET autocommit = 0", "SET"),
        ("TRUNCATE TABLE jids", "TRUNCATE"),
        ("CALL p()", "CALL"),
        ("SHOW TABLES", "SHOW"),
        ("USE mysql", "USE"),
        ("LOCK TABLES jids READ", "LOCK"),
    ] {
        let d = denied_exec(sql);
        assert!(d.reason.contains("not allowed") || d.reason.contains("does not parse"), "{sql}: {d:?}");
        if d.reason.contains("not allowed") {
            assert_eq!(d.target, format!("statement {verb}"), "{sql}");
        }
    }
    assert!(!denied_exec("LOAD DATA INFILE ? INTO TABLE jids").reason.is_empty());
}

#[test]
fn select_into_files_or_variables_is_refused() {
    assert!(!denied_query("SELECT jid INTO OUTFILE ? FROM jids").reason.is_empty());
    assert!(!denied_query("SELECT jid FROM jids INTO DUMPFILE ?").reason.is_empty());
    assert!(!denied_query("SELECT jid INTO @x FROM jids").reason.is_empty());
    assert!(!denied_query("TABLE secret").reason.is_empty());
}

#[test]
fn other_databases_are_refused() {
    for sql in [
        "SELECT * FROM mysql.user",
        "SELECT * FROM information_schema.tables",
        "SELECT * FROM other.jids",
        "SELECT * FROM jids JOIN mysql.user",
        "SELECT * FROM a.b.c",
    ] {
        assert!(denied_query(sql).reason.contains("outside the granted database `salt`"), "{sql}");
    }
    assert!(denied_exec("INSERT INTO other.jids (jid) VALUES (?)").reason.contains("outside"));
}

#[test]
fn values_must_be_parameters() {
    for sql in [
        "SELECT jid FROM jids WHERE jid = 'x'",
        "SELECT jid FROM jids WHERE jid = \"x\"",
        "SELECT jid FROM jids WHERE jid = X'41'",
        "SELECT jid FROM jids WHERE jid = N'x'",
        "INSERT INTO jids (jid, `load`) VALUES ('1', '{}')",
    ] {
        let d = run(sql, if sql.starts_with("SELECT") { Function::Query } else { Function::Execute }).expect_err(sql);
        assert!(d.reason.contains("parameters"), "{sql}: {d:?}");
    }
    assert!(!denied_query("SELECT jid FROM jids WHERE jid = :name").reason.is_empty());
}

#[test]
fn dangerous_functions_and_variables_are_refused() {
    assert!(denied_query("SELECT LOAD_FILE(?)").reason.contains("load_file"));
    assert!(denied_query("SELECT SLEEP(100)").reason.contains("sleep"));
    assert!(denied_query("SELECT jid FROM jids WHERE BENCHMARK(1000000, MD5(?))").reason.contains("benchmark"));
    assert!(denied_query("SELECT @@datadir").reason.contains("variable"));
    assert!(denied_query("SELECT @x").reason.contains("variable"));
}

#[test]
fn query_and_execute_keep_to_their_statements() {
    assert!(denied_exec("SELECT 1").reason.contains("use `query`"));
    assert!(denied_query("INSERT INTO jids (jid) VALUES (?)").reason.contains("use `execute`"));
}

#[test]
fn a_transaction_runs_writes_only() {
    assert_eq!(
        run("insert into salt_events (tag, data) values (?, ?)", Function::Transaction).unwrap(),
        "INSERT INTO salt_events (tag, data) VALUES (?, ?)"
    );
    run("DELETE FROM jids WHERE jid IN (SELECT jid FROM salt_returns WHERE alter_time < ?)", Function::Transaction).unwrap();
    run("INSERT INTO jids_archive SELECT * FROM jids", Function::Transaction).unwrap();
    let tables = grant();
    let access = Access { tables: &tables, database: "salt" };
    for sql in ["SELECT jid FROM jids", "CREATE TABLE IF NOT EXISTS jids_archive LIKE jids"] {
        let refusal = check(sql, Function::Transaction, access).unwrap_err();
        assert!(matches!(&refusal, Refusal::Misplaced(m) if m.contains("INSERT, UPDATE and DELETE only")), "{sql}: {refusal:?}");
    }
    // What is outside the grant stays a denial, in a transaction too.
    assert_eq!(run("DELETE FROM salt_events", Function::Transaction).unwrap_err().reason, "table `salt_events` is not granted `delete`");
    assert_eq!(run("DROP TABLE jids", Function::Transaction).unwrap_err().target, "statement DROP");
    assert!(run("INSERT INTO jids (jid) VALUES (?); DROP TABLE jids", Function::Transaction).unwrap_err().reason.contains("exactly one"));
}

#[test]
fn oversized_and_deeply_nested_statements_are_refused_without_crashing() {
    let long = format!("SELECT {}1", "1 + ".repeat(MAX_SQL_BYTES / 4));
    assert!(denied_query(&long).reason.contains("over the most"));
    let deep = format!("SELECT {}1{}", "(".repeat(5000), ")".repeat(5000));
    assert!(denied_query(&deep).reason.contains("does not parse"));
}

fn denied_any(sql: &str) -> Denial {
    let tables = grant();
    let access = Access { tables: &tables, database: "salt" };
    for function in [Function::Query, Function::Execute, Function::Transaction] {
        if let Ok(sent) = check(sql, function, access) {
            panic!("{sql}: passed as {function:?}, sending {sent}");
        }
    }
    run(sql, if sql.trim_start().to_ascii_uppercase().starts_with("SELECT") { Function::Query } else { Function::Execute })
        .expect_err(sql)
}

#[test]
fn a_backslash_before_a_backtick_cannot_end_a_name_early() {
    // sqlparser's printer left a backtick after a backslash undoubled;
    // MySQL does not treat the backslash as an escape there, so the name
    // ended early and the rest of it ran unchecked.
    for sql in [
        r"SELECT jid AS `a\`` FROM jids",
        r"SELECT `jid\`` FROM jids",
        r"SELECT j.jid FROM jids AS `j\`, secret AS s` WHERE ? = ?",
        r"SELECT 1 FROM jids AS `x\`` UNION SELECT password FROM secret",
        r"UPDATE jids AS `j\`` SET jid = ? WHERE jid = ?",
        r"INSERT INTO jids (`jid\``) VALUES (?)",
        r"INSERT INTO jids (jid) SELECT `a\`` FROM jids",
        r"DELETE `j\`` FROM jids AS `j\`` RIGHT JOIN other.t ON 1",
        "SELECT `a``b` FROM jids",
        "SELECT `a\\``b` FROM jids",
    ] {
        // sqlparser's tokenizer reads `\`` as an escape inside a name,
        // MySQL does not: either way the name is refused.
        let d = denied_any(sql);
        assert!(d.reason.contains("names are of A-Z") || d.reason.contains("does not parse"), "{sql}: {d:?}");
    }
}

#[test]
fn the_text_sent_parses_to_the_tree_checked_and_holds_no_quotes() {
    for (sql, function) in [
        ("select `jid`, `load` from `jids` where `jid` = ?", Function::Query),
        ("INSERT INTO `salt_returns` (`fun`, `jid`, `return`, `id`, `success`, `full_ret`) VALUES (?, ?, ?, ?, ?, ?)", Function::Execute),
        ("SELECT s.id FROM salt_returns s JOIN (SELECT MAX(jid) AS jid FROM salt_returns GROUP BY fun, id) m ON s.jid = m.jid", Function::Query),
    ] {
        let sent = run(sql, function).unwrap();
        assert_eq!(parse_one(&sent).unwrap(), parse_one(sql).unwrap(), "{sql}");
        assert!(!sent.contains(['\\', '\'', '"', '#']) && !sent.contains("--") && !sent.contains("/*"), "{sent}");
        assert_eq!(run(&sent, function).unwrap(), sent, "checking the sent text again changes nothing");
    }
}

#[test]
fn with_delete_and_with_update_are_refused() {
    for sql in [
        "WITH x AS (SELECT jid FROM jids) DELETE FROM jids",
        "WITH x AS (SELECT jid FROM jids) UPDATE jids SET jid = ?",
        "WITH x AS (SELECT jid FROM jids) INSERT INTO jids (jid) VALUES (?)",
    ] {
        denied_any(sql);
    }
}

#[test]
fn a_flat_chain_of_32k_terms_is_refused_before_it_is_parsed() {
    // The parser builds the chain in a loop, so its nesting limit never
    // counted it; walking, printing and dropping the tree recursed past
    // the stack of an async worker and aborted the host.
    let sql = format!("SELECT 1{}", "+1".repeat(32_760));
    assert!(sql.len() < MAX_SQL_BYTES);
    assert!(denied_query(&sql).reason.contains("operators"));
    let sql = format!("SELECT jid FROM jids WHERE jid = ?{}", " OR jid = ?".repeat(MAX_OPERATORS));
    assert!(denied_query(&sql).reason.contains("operators"));
}

#[test]
fn deep_not_case_and_in_lists_are_bounded() {
    let nots = format!("SELECT 1 FROM jids WHERE {}jid = ?", "NOT ".repeat(500));
    assert!(denied_query(&nots).reason.contains("does not parse"), "the nesting limit stops it");
    let case = format!("SELECT {}1{}", "CASE WHEN ? THEN ".repeat(100), " END".repeat(100));
    assert!(!denied_query(&case).reason.is_empty());
    let long_in = format!("SELECT jid FROM jids WHERE jid IN (?{})", ", ?".repeat(MAX_TOKENS / 2));
    assert!(denied_query(&long_in).reason.contains("tokens"));
    // A flat list under the caps is fine: a batch of parameters.
    ok_query(&format!("SELECT jid FROM jids WHERE jid IN (?{})", ", ?".repeat(1_000)));
}

#[test]
fn stored_functions_sequences_and_server_information_are_refused() {
    for (sql, name) in [
        ("SELECT other.f()", "other.f"),
        ("SELECT salt.f()", "salt.f"),
        ("SELECT f(jid) FROM jids", "f"),
        ("SELECT NEXTVAL(other.seq)", "nextval"),
        ("SELECT SETVAL(seq, 1)", "setval"),
        ("SELECT LASTVAL(seq)", "lastval"),
        ("SELECT USER()", "user"),
        ("SELECT VERSION()", "version"),
        ("SELECT DATABASE()", "database"),
        ("SELECT GET_LOCK(?, 10)", "get_lock"),
        ("SELECT RELEASE_ALL_LOCKS()", "release_all_locks"),
        ("SELECT LOAD_FILE(?)", "load_file"),
        ("SELECT SLEEP(?)", "sleep"),
        ("SELECT jid FROM jids WHERE BENCHMARK(1000000, MD5(?))", "benchmark"),
        ("SELECT COUNT(*) OVER () FROM jids", "count"),
    ] {
        let d = denied_query(sql);
        assert!(d.target.contains(&format!("function `{name}`")), "{sql}: {d:?}");
    }
    assert!(!denied_query("SELECT NEXT VALUE FOR seq").reason.is_empty());
    assert!(!denied_exec("INSERT INTO jids (jid) VALUES (NEXTVAL(seq))").reason.is_empty());
    ok_query("SELECT COUNT(*), MAX(jid), DATE_SUB(NOW(), INTERVAL ? SECOND), COALESCE(jid, ?) FROM jids");
}

#[test]
fn create_table_takes_columns_keys_and_innodb_only() {
    for sql in [
        "CREATE TABLE jids_archive (v int) ENGINE=MERGE UNION=(secret) INSERT_METHOD=LAST",
        "CREATE TABLE jids_archive (v int) ENGINE=MERGE",
        "CREATE TABLE jids_archive (v int) ENGINE=FEDERATED",
        "CREATE TABLE jids_archive (v int, FOREIGN KEY (v) REFERENCES secret (v))",
        "CREATE TABLE jids_archive (v int REFERENCES secret (v))",
        "CREATE TABLE jids_archive (v int, CONSTRAINT c FOREIGN KEY (v) REFERENCES jids (jid) ON DELETE CASCADE)",
        "CREATE TABLE jids_archive AS SELECT * FROM jids",
        "CREATE TABLE jids_archive (v int) AS SELECT jid FROM jids",
        "CREATE TABLE jids_archive (v int) PARTITION BY HASH (v)",
        "CREATE TABLE jids_archive (v int, w int AS (v + 1))",
        "CREATE TEMPORARY TABLE jids_archive (v int)",
        "CREATE OR REPLACE TABLE jids_archive (v int)",
    ] {
        let d = denied_exec(sql);
        assert!(
            d.reason.contains("CREATE TABLE takes") || d.reason.contains("does not parse") || d.reason.contains("not allowed"),
            "{sql}: {d:?}"
        );
    }
    let schema = include_str!("../../../../../returners/mysql/schema.sql");
    let tables = BTreeMap::from([
        ("jids".to_owned(), vec![SqlVerb::Create]),
        ("salt_returns".to_owned(), vec![SqlVerb::Create]),
        ("salt_events".to_owned(), vec![SqlVerb::Create]),
    ]);
    let access = Access { tables: &tables, database: "salt" };
    let statements: Vec<&str> = schema
        .split(';')
        .map(|s| s.lines().filter(|l| !l.trim_start().starts_with("--")).collect::<Vec<_>>().join("\n"))
        .filter(|s| !s.trim().is_empty())
        .map(|s| &*Box::leak(s.into_boxed_str()))
        .collect();
    assert_eq!(statements.len(), 3);
    for sql in statements {
        check(sql, Function::Execute, access).unwrap_or_else(|r| panic!("{sql}: {r:?}"));
    }
    ok_exec("CREATE TABLE IF NOT EXISTS `jids_archive` LIKE `jids`");
    ok_exec("CREATE TABLE jids_archive (jid varchar(255) NOT NULL, n BIGINT NOT NULL AUTO_INCREMENT, PRIMARY KEY (n), KEY jid (jid)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin");
}

#[test]
fn locking_reads_modifiers_and_recursive_ctes_are_refused() {
    for sql in [
        "SELECT jid FROM jids FOR UPDATE",
        "SELECT jid FROM jids LOCK IN SHARE MODE",
        "SELECT STRAIGHT_JOIN jid FROM jids",
        "SELECT SQL_CALC_FOUND_ROWS jid FROM jids",
        "SELECT HIGH_PRIORITY jid FROM jids",
        "WITH RECURSIVE r (n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT n FROM r",
        "SELECT jid FROM jids PARTITION (p0)",
        "SELECT jid FROM jids FORCE INDEX (jid)",
        "VALUES (1)",
        "SELECT * FROM (VALUES (1)) AS v",
    ] {
        assert!(!denied_query(sql).reason.is_empty(), "{sql}");
    }
    assert!(!denied_exec("INSERT DELAYED INTO jids (jid) VALUES (?)").reason.is_empty());
    assert!(!denied_exec("INSERT INTO jids (jid) VALUES (?) RETURNING jid").reason.is_empty());
    // A cartesian join of granted tables is allowed: the server's time
    // limit bounds it (see the client), not the check.
    ok_query("SELECT COUNT(*) FROM jids a, jids b, jids c, jids d");
}

#[test]
fn the_shipped_returners_batches_and_deletes_pass() {
    run("INSERT INTO salt_events (tag, data, master_id) VALUES (?, ?, ?)", Function::Transaction).unwrap();
    run("INSERT IGNORE INTO `jids` (`jid`, `load`) VALUES (?, ?)", Function::Transaction).unwrap();
    run("DELETE FROM `jids` WHERE `jid` IN (SELECT DISTINCT `jid` FROM `salt_returns` WHERE `alter_time` < ?)", Function::Transaction)
        .unwrap();
    run("INSERT INTO `jids_archive` SELECT * FROM `jids` WHERE `jid` = ?", Function::Transaction).unwrap();
    ok_query("SELECT DATE_SUB(NOW(), INTERVAL ? SECOND) AS stamp");
}

/// Statements built from hostile pieces: names with backticks, backslashes,
/// quotes, dots, comment markers, NUL and non-ASCII letters; string
/// literals; comments; operators; joins, subqueries and unions.
mod generated {
    use proptest::prelude::*;

    /// A name: mostly plain, sometimes hostile.
    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            8 => prop::sample::select(vec!["jid", "load", "id", "fun", "x", "jids", "salt_returns"]).prop_map(str::to_owned),
            1 => "[a-z_$][a-z0-9_$]{0,6}",
            1 => prop::collection::vec(prop::sample::select(vec!['a', 'b', '`', '\\', '\'', '"', ' ', '.', '@', '#', '-', '/', '*', ';', '\0', 'é', '\n', ')', '(']), 1..6)
                .prop_map(|cs| cs.into_iter().collect()),
        ]
    }

    /// A table: mostly granted ones, sometimes not, sometimes hostile.
    fn table() -> impl Strategy<Value = String> {
        prop_oneof![
            8 => prop::sample::select(vec!["jids", "salt_returns", "`jids`", "salt.jids", "`salt`.`salt_returns`"]).prop_map(str::to_owned),
            1 => prop::sample::select(vec!["secret", "other.t", "mysql.user", "information_schema.tables"]).prop_map(str::to_owned),
            1 => ident(),
        ]
    }

    fn ident() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => name(),
            3 => name().prop_map(|n| format!("`{n}`")),
            1 => name().prop_map(|n| format!("`{}`", n.replace('`', "``"))),
            1 => (name(), name()).prop_map(|(a, b)| format!("{a}.{b}")),
            1 => (name(), name()).prop_map(|(a, b)| format!("`{a}`.`{b}`")),
        ]
    }

    fn atom() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => ident(),
            4 => Just("?".to_owned()),
            2 => (0u32..1000).prop_map(|n| n.to_string()),
            1 => name().prop_map(|n| format!("'{n}'")),
            1 => name().prop_map(|n| format!("\"{n}\"")),
            1 => prop::sample::select(vec!["@@datadir", "@x", "0x41", "X'41'", "NULL", "TRUE"]).prop_map(str::to_owned),
        ]
    }

    fn expr() -> impl Strategy<Value = String> {
        atom().prop_recursive(3, 12, 3, |inner| {
            prop_oneof![
                6 => (inner.clone(), prop::sample::select(vec!["+", "=", "<>", "AND", "OR", "<", "*"]), inner.clone())
                    .prop_map(|(a, op, b)| format!("{a} {op} {b}")),
                1 => (inner.clone(), prop::sample::select(vec!["||", "->", "/*", "*/", "--", "#", "\\", ":=", "&"]), inner.clone())
                    .prop_map(|(a, op, b)| format!("{a} {op} {b}")),
                3 => (prop::sample::select(vec!["COUNT", "MAX", "CONCAT", "COALESCE", "LOAD_FILE", "other.f", "NEXTVAL", "f"]), inner.clone())
                    .prop_map(|(f, a)| format!("{f}({a})")),
                2 => (inner.clone(), table()).prop_map(|(a, t)| format!("(SELECT {a} FROM {t})")),
                1 => inner.prop_map(|a| format!("NOT ({a})")),
            ]
        })
    }

    pub fn statement() -> impl Strategy<Value = String> {
        let select = (expr(), ident(), table(), ident(), expr(), expr())
            .prop_map(|(e, alias, t, a2, on, w)| format!("SELECT {e} AS {alias} FROM {t} AS {a2} JOIN jids ON {on} WHERE {w}"));
        let union = (expr(), table(), expr(), table()).prop_map(|(a, t, b, u)| format!("SELECT {a} FROM {t} UNION SELECT {b} FROM {u}"));
        let insert = (table(), ident(), expr()).prop_map(|(t, c, e)| format!("INSERT INTO {t} ({c}) VALUES ({e})"));
        let insert_select = (table(), ident(), expr(), table()).prop_map(|(t, c, e, s)| format!("INSERT INTO {t} ({c}) SELECT {e} FROM {s}"));
        let update = (table(), ident(), ident(), expr()).prop_map(|(t, a, c, w)| format!("UPDATE {t} AS {a} SET {c} = ? WHERE {w}"));
        let delete = (ident(), table(), table(), expr())
            .prop_map(|(a, t, u, on)| format!("DELETE {a} FROM {t} AS {a} RIGHT JOIN {u} ON {on}"));
        let with = (ident(), expr(), table()).prop_map(|(n, e, t)| format!("WITH {n} AS (SELECT {e} FROM {t}) SELECT * FROM {n}"));
        let tail = prop_oneof![
            12 => Just(String::new()),
            2 => Just(";".to_owned()),
            1 => Just("; DROP TABLE jids".to_owned()),
            1 => Just(" -- x".to_owned()),
            1 => Just(" /*! UNION SELECT password FROM secret */".to_owned()),
        ];
        (prop_oneof![select, union, insert, insert_select, update, delete, with], tail).prop_map(|(s, t)| format!("{s}{t}"))
    }
}

/// What MySQL's own lexer would see in a sent text: backtick names hold
/// only the allowed characters, and there is nothing else a lexer could
/// read as a string, an escape or a comment. An oracle independent of
/// sqlparser's tokenizer.
fn plain_to_mysql(sent: &str) -> bool {
    let mut in_name = false;
    for c in sent.chars() {
        match (in_name, c) {
            (_, '`') => in_name = !in_name,
            (true, c) if c.is_ascii_alphanumeric() || c == '_' || c == '$' => {}
            (true, _) => return false,
            (false, c) if c.is_ascii_alphanumeric() || " _$(),.;=<>+-*/%?\n".contains(c) => {}
            (false, _) => return false,
        }
    }
    !in_name && !sent.contains("--") && !sent.contains("/*") && !sent.contains("*/")
}

/// parse(print(x)) == x for every generated statement that passes the
/// check. 3,000 cases here; a longer run:
/// `PROPTEST_CASES=1000000 cargo test -p returner-host --lib what_passes_the_check_is_sent_as_checked`
#[test]
fn what_passes_the_check_is_sent_as_checked() {
    use proptest::test_runner::{Config, TestRunner};
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(3_000);
    // The check runs on a checker thread's stack in the host; a debug
    // build's parser, and proptest's strategies, need more than a test
    // thread has.
    std::thread::Builder::new()
        .stack_size(crate::caps::mysql::checker::STACK_BYTES)
        .spawn(move || {
            let mut runner = TestRunner::new(Config { cases, ..Config::default() });
            if let Err(e) = runner.run(&generated::statement(), |sql| sent_as_checked(&sql)) {
                panic!("{e}");
            }
        })
        .unwrap()
        .join()
        .unwrap();
    // The property says something only if statements pass: the generator
    // makes enough that do, hostile pieces and all.
    let passed = PASSED.load(std::sync::atomic::Ordering::Relaxed);
    assert!(passed * 20 >= cases as usize, "only {passed} of {cases} generated statements passed the check");
}

static PASSED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn sent_as_checked(sql: &str) -> Result<(), proptest::test_runner::TestCaseError> {
    let sql = sql.to_owned();
    {
        let tables = grant();
        let access = Access { tables: &tables, database: "salt" };
        for function in [Function::Query, Function::Execute, Function::Transaction] {
            let Ok(sent) = check(&sql, function, access) else { continue };
            PASSED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // parse(print(x)) == x, for the guest's text and the sent one.
            let original = parse_one(&sql).expect("passed, so it parses");
            let again = parse_one(&sent).expect("the sent text parses");
            proptest::prop_assert_eq!(&again, &original, "{} sent as {}", sql, sent);
            proptest::prop_assert_eq!(again.to_string(), sent.clone());
            proptest::prop_assert!(plain_to_mysql(&sent), "{} sent as {}", sql, sent);
            proptest::prop_assert_eq!(check(&sent, function, access), Ok(sent.clone()));
            // Every table the sent text names is granted.
            let mut names = Vec::new();
            let _ = visit_relations(&again, |n| { names.push(n.to_string()); ControlFlow::<()>::Continue(()) });
            for n in names {
                let unquoted = n.replace('`', "");
                let bare = unquoted.strip_prefix("salt.").unwrap_or(&unquoted);
                proptest::prop_assert!(tables.contains_key(bare) || sql.contains("WITH"), "{} names {}", sent, n);
            }
        }
    }
    Ok(())
}
