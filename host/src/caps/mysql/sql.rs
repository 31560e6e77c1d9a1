//! The statement check: parse a guest's SQL with a real parser (MySQL
//! dialect) and decide, table by table and verb by verb, whether its grant
//! allows it. What runs on the server is the parsed statement printed back,
//! so the server executes exactly what was checked.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;

use sqlparser::ast::{
    CreateTableLikeKind, Expr, FromTable, ObjectName, ObjectNamePart, OnInsert, Query, SetExpr, Statement,
    TableFactor, TableObject, TableWithJoins, Value, Visit, Visitor, visit_relations,
};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer, Whitespace};

use super::SqlVerb;

/// Longest SQL text checked. Stops a guest from making the host parse
/// megabytes per call; a returner's statements are a few hundred bytes.
pub const MAX_SQL_BYTES: usize = 64 * 1024;

/// Deepest nesting the parser follows. Stops a guest from exhausting the
/// host's stack with `((((...))))` or subqueries nested thousands deep.
const MAX_NESTING: usize = 64;

/// Functions refused wherever they appear: they read host files, hold the
/// server (sleep, locks, replication waits) or run code outside SQL.
const DENIED_FUNCTIONS: &[&str] = &[
    "load_file",
    "sleep",
    "benchmark",
    "get_lock",
    "release_lock",
    "release_all_locks",
    "is_free_lock",
    "is_used_lock",
    "master_pos_wait",
    "master_gtid_wait",
    "source_pos_wait",
    "sys_exec",
    "sys_eval",
];

/// Which host function the guest called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Function {
    /// `query`: SELECT only.
    Query,
    /// `execute`: INSERT, UPDATE, DELETE, CREATE TABLE.
    Execute,
    /// One statement of `transaction`: INSERT, UPDATE, DELETE.
    Transaction,
}

impl Function {
    /// The WIT name.
    pub fn as_str(self) -> &'static str {
        match self {
            Function::Query => "query",
            Function::Execute => "execute",
            Function::Transaction => "transaction",
        }
    }
}

impl SqlVerb {
    /// The lowercase name used in grants and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            SqlVerb::Select => "select",
            SqlVerb::Insert => "insert",
            SqlVerb::Update => "update",
            SqlVerb::Delete => "delete",
            SqlVerb::Create => "create",
        }
    }
}

/// What a grant allows: verbs per table of one database.
#[derive(Clone, Copy, Debug)]
pub struct Access<'a> {
    /// Table name to the verbs allowed on it.
    pub tables: &'a BTreeMap<String, Vec<SqlVerb>>,
    /// The profile's database; `db.table` names must use it.
    pub database: &'a str,
}

/// A refused statement: what was refused (for the audit event) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    /// The refused target, e.g. `table secret (select)` or `statement`.
    pub target: String,
    /// A sentence saying what was refused and why.
    pub reason: String,
}

fn deny<T>(target: impl Into<String>, reason: impl Into<String>) -> Result<T, Denial> {
    Err(Denial { target: target.into(), reason: reason.into() })
}

/// Why a statement does not run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Outside the grant, or never allowed: `denied`, and an audit event.
    Denied(Denial),
    /// A statement the grant may allow, sent to the wrong function (SELECT
    /// or CREATE TABLE in a transaction): `invalid`, the returner's bug.
    Misplaced(String),
}

impl From<Denial> for Refusal {
    fn from(denial: Denial) -> Self {
        Refusal::Denied(denial)
    }
}

/// Check `sql` for `function` against `access`. On success, the statement
/// to send to the server (the parsed statement printed back).
pub fn check(sql: &str, function: Function, access: Access<'_>) -> Result<String, Refusal> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(Refusal::Denied(Denial {
            target: "statement".into(),
            reason: format!("the statement is {} bytes, over the most, {MAX_SQL_BYTES}", sql.len()),
        }));
    }
    check_tokens(sql)?;
    let statement = parse_one(sql)?;
    if function == Function::Transaction && matches!(statement, Statement::Query(_) | Statement::CreateTable(_)) {
        return Err(Refusal::Misplaced(
            "a transaction runs INSERT, UPDATE and DELETE only: run SELECT with `query` and CREATE TABLE with `execute`, outside it"
                .into(),
        ));
    }
    let mut needs = Needs::default();
    needs.statement(&statement, function, access)?;
    check_expressions(&statement)?;
    for (table, verb) in &needs.required {
        let granted = access.tables.get(table).is_some_and(|verbs| verbs.contains(verb));
        if !granted {
            return Err(Refusal::Denied(Denial {
                target: format!("table {table} ({})", verb.as_str()),
                reason: format!("table `{table}` is not granted `{}`", verb.as_str()),
            }));
        }
    }
    Ok(statement.to_string())
}

/// Refusals visible in the tokens: comments (MySQL runs the text of
/// `/*! ... */`, which a parser treats as a comment), quoted literals
/// (values travel as bound parameters), and placeholders other than `?`.
fn check_tokens(sql: &str) -> Result<(), Denial> {
    let tokens = Tokenizer::new(&MySqlDialect {}, sql)
        .tokenize()
        .map_err(|e| Denial { target: "statement".into(), reason: format!("the statement does not parse: {e}") })?;
    for token in tokens {
        match token {
            Token::Whitespace(Whitespace::SingleLineComment { .. } | Whitespace::MultiLineComment(_)) => {
                return deny("comment", "comments are not allowed in a statement");
            }
            Token::Placeholder(p) if p != "?" => {
                return deny("statement", format!("placeholder `{p}`: only `?` placeholders are allowed"));
            }
            Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::TripleSingleQuotedString(_)
            | Token::TripleDoubleQuotedString(_)
            | Token::DollarQuotedString(_)
            | Token::SingleQuotedByteStringLiteral(_)
            | Token::DoubleQuotedByteStringLiteral(_)
            | Token::TripleSingleQuotedByteStringLiteral(_)
            | Token::TripleDoubleQuotedByteStringLiteral(_)
            | Token::SingleQuotedRawStringLiteral(_)
            | Token::DoubleQuotedRawStringLiteral(_)
            | Token::TripleSingleQuotedRawStringLiteral(_)
            | Token::TripleDoubleQuotedRawStringLiteral(_)
            | Token::NationalStringLiteral(_)
            | Token::QuoteDelimitedStringLiteral(_)
            | Token::NationalQuoteDelimitedStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::HexStringLiteral(_) => {
                return deny("literal", "quoted literals are not allowed: pass values as `?` parameters");
            }
            _ => {}
        }
    }
    Ok(())
}

fn parse_one(sql: &str) -> Result<Statement, Denial> {
    let mut statements = Parser::new(&MySqlDialect {})
        .with_recursion_limit(MAX_NESTING)
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_statements())
        .map_err(|e| Denial { target: "statement".into(), reason: format!("the statement does not parse: {e}") })?;
    match statements.len() {
        1 => Ok(statements.remove(0)),
        0 => deny("statement", "no statement"),
        n => deny("statement", format!("exactly one statement per call, got {n}")),
    }
}

/// The (table, verb) pairs a statement needs.
#[derive(Default)]
struct Needs {
    required: BTreeSet<(String, SqlVerb)>,
}

impl Needs {
    fn statement(&mut self, statement: &Statement, function: Function, access: Access<'_>) -> Result<(), Denial> {
        let is_query = matches!(statement, Statement::Query(_));
        if is_query && function == Function::Execute {
            return deny("statement", "`execute` runs INSERT, UPDATE, DELETE and CREATE TABLE; use `query` for SELECT");
        }
        if !is_query && function == Function::Query {
            return deny("statement", "`query` runs SELECT only; use `execute` for other statements");
        }

        check_queries(statement)?;
        // Names the statement writes, each taken once off the names it reads.
        let mut targets: Vec<String> = Vec::new();
        let mut cte_names: BTreeSet<String> = BTreeSet::new();
        let mut reads_scope: Option<Statement> = None;
        match statement {
            Statement::Query(query) => {
                if let Some(with) = &query.with {
                    // A CTE body sees real tables only (a reference to a CTE
                    // name there must be a granted table); the main body sees
                    // the CTE names, which the top-level WITH scopes over the
                    // whole rest of the statement.
                    for cte in &with.cte_tables {
                        self.reads(&*cte.query, &BTreeSet::new(), &mut Vec::new(), access)?;
                        cte_names.insert(cte.alias.name.value.clone());
                    }
                    let mut body = (**query).clone();
                    body.with = None;
                    reads_scope = Some(Statement::Query(Box::new(body)));
                }
            }
            Statement::Insert(insert) => {
                let TableObject::TableName(name) = &insert.table else {
                    return deny("statement", "INSERT into a table function is not allowed");
                };
                let table = table_name(name, access)?;
                self.need(&table, SqlVerb::Insert);
                if insert.replace_into {
                    self.need(&table, SqlVerb::Delete);
                }
                match &insert.on {
                    None => {}
                    Some(OnInsert::DuplicateKeyUpdate(_)) => self.need(&table, SqlVerb::Update),
                    Some(_) => return deny("statement", "only MySQL's ON DUPLICATE KEY UPDATE is allowed after INSERT"),
                }
                targets.push(table);
            }
            Statement::Update(update) => {
                for table in direct_tables(std::slice::from_ref(&update.table), access)? {
                    self.need(&table, SqlVerb::Update);
                    targets.push(table);
                }
            }
            Statement::Delete(delete) => {
                let mut from = match &delete.from {
                    FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t.clone(),
                };
                from.extend(delete.using.iter().flatten().cloned());
                // Multi-table DELETE: every table it names in FROM / USING
                // needs `delete`, the simplest rule that cannot under-ask.
                for table in direct_tables(&from, access)? {
                    self.need(&table, SqlVerb::Delete);
                    targets.push(table);
                }
            }
            Statement::CreateTable(create) => {
                let table = table_name(&create.name, access)?;
                self.need(&table, SqlVerb::Create);
                targets.push(table);
                if create.clone.is_some() {
                    return deny("statement", "CREATE TABLE ... CLONE is not allowed");
                }
                if let Some(CreateTableLikeKind::Plain(like) | CreateTableLikeKind::Parenthesized(like)) = &create.like {
                    let source = table_name(&like.name, access)?;
                    self.need(&source, SqlVerb::Select);
                }
            }
            other => {
                let verb = other.to_string().split_whitespace().next().unwrap_or("").to_ascii_uppercase();
                return deny(
                    format!("statement {verb}"),
                    format!("`{verb}` statements are not allowed: only SELECT, INSERT, UPDATE, DELETE and CREATE TABLE"),
                );
            }
        }
        let scope = reads_scope.as_ref().unwrap_or(statement);
        self.reads(scope, &cte_names, &mut targets, access)
    }

    fn need(&mut self, table: &str, verb: SqlVerb) {
        self.required.insert((table.to_owned(), verb));
    }

    /// Every relation in `node` needs `select`, except one occurrence of
    /// each write target and the names of the statement's CTEs.
    fn reads<V: Visit>(
        &mut self,
        node: &V,
        cte_names: &BTreeSet<String>,
        targets: &mut Vec<String>,
        access: Access<'_>,
    ) -> Result<(), Denial> {
        let mut names = Vec::new();
        let _ = visit_relations(node, |name| {
            names.push(name.clone());
            ControlFlow::<()>::Continue(())
        });
        for name in names {
            if name.0.len() == 1 && cte_names.contains(&ident_value(&name.0[0])?) {
                continue;
            }
            let table = table_name(&name, access)?;
            if let Some(at) = targets.iter().position(|t| *t == table) {
                targets.remove(at);
                continue;
            }
            self.need(&table, SqlVerb::Select);
        }
        Ok(())
    }
}

fn ident_value(part: &ObjectNamePart) -> Result<String, Denial> {
    match part {
        ObjectNamePart::Identifier(ident) => Ok(ident.value.clone()),
        ObjectNamePart::Function(_) => deny("statement", "computed object names are not allowed"),
    }
}

/// The table a name refers to: `t`, or `db.t` where `db` is the profile's
/// database. Anything else (another database, `information_schema`,
/// `mysql.user`, three-part names) is refused.
fn table_name(name: &ObjectName, access: Access<'_>) -> Result<String, Denial> {
    let parts = name.0.iter().map(ident_value).collect::<Result<Vec<_>, _>>()?;
    match parts.as_slice() {
        [table] => Ok(table.clone()),
        [db, table] if db == access.database => Ok(table.clone()),
        _ => deny(
            format!("table {name}"),
            format!("`{name}` is outside the granted database `{}`", access.database),
        ),
    }
}

/// The named tables directly in a FROM list (not inside derived tables).
fn direct_tables(from: &[TableWithJoins], access: Access<'_>) -> Result<Vec<String>, Denial> {
    fn factor(f: &TableFactor, access: Access<'_>, out: &mut Vec<String>) -> Result<(), Denial> {
        match f {
            TableFactor::Table { name, .. } => out.push(table_name(name, access)?),
            TableFactor::NestedJoin { table_with_joins, .. } => {
                factor(&table_with_joins.relation, access, out)?;
                for join in &table_with_joins.joins {
                    factor(&join.relation, access, out)?;
                }
            }
            _ => {}
        }
        Ok(())
    }
    let mut out = Vec::new();
    for t in from {
        factor(&t.relation, access, &mut out)?;
        for join in &t.joins {
            factor(&join.relation, access, &mut out)?;
        }
    }
    Ok(out)
}

/// Refusals about query shapes anywhere in the statement: `SELECT ... INTO`
/// (OUTFILE, DUMPFILE, variables), `TABLE t` (names a table the relation
/// walk does not see), and WITH anywhere but at the top of a SELECT.
fn check_queries(statement: &Statement) -> Result<(), Denial> {
    struct Queries {
        with_clauses: usize,
        denial: Option<Denial>,
    }
    fn set_expr(body: &SetExpr) -> Result<(), Denial> {
        match body {
            SetExpr::Select(select) if select.into.is_some() => {
                deny("statement", "SELECT ... INTO (OUTFILE, DUMPFILE or variables) is not allowed")
            }
            SetExpr::Table(_) => deny("statement", "`TABLE name` is not allowed; use SELECT"),
            SetExpr::SetOperation { left, right, .. } => {
                set_expr(left)?;
                set_expr(right)
            }
            SetExpr::Query(q) => set_expr(&q.body),
            _ => Ok(()),
        }
    }
    impl Visitor for Queries {
        type Break = ();
        fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
            if query.with.is_some() {
                self.with_clauses += 1;
            }
            if let Err(d) = set_expr(&query.body) {
                self.denial = Some(d);
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
    }
    let mut v = Queries { with_clauses: 0, denial: None };
    let _ = statement.visit(&mut v);
    if let Some(d) = v.denial {
        return Err(d);
    }
    let top_with = matches!(statement, Statement::Query(q) if q.with.is_some());
    if v.with_clauses > usize::from(top_with) {
        return deny("statement", "WITH is allowed only at the start of a SELECT");
    }
    Ok(())
}

/// Refusals inside expressions: session and system variables (`@v`,
/// `@@datadir`), the functions in [`DENIED_FUNCTIONS`], and quoted values
/// the tokenizer did not already catch.
fn check_expressions(statement: &Statement) -> Result<(), Denial> {
    struct Exprs(Option<Denial>);
    impl Visitor for Exprs {
        type Break = ();
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            let denial = match expr {
                Expr::Identifier(ident) if ident.value.starts_with('@') => {
                    Some(format!("variable `{}`", ident.value))
                }
                Expr::CompoundIdentifier(idents) if idents.first().is_some_and(|i| i.value.starts_with('@')) => {
                    Some(format!("variable `{}`", idents[0].value))
                }
                Expr::Function(f) => {
                    let name = f.name.to_string().to_ascii_lowercase();
                    let last = name.rsplit('.').next().unwrap_or("").trim_matches('`');
                    DENIED_FUNCTIONS.contains(&last).then(|| format!("function `{last}`"))
                }
                Expr::Value(v) => match &v.value {
                    Value::Number(..) | Value::Boolean(_) | Value::Null => None,
                    Value::Placeholder(p) if p == "?" => None,
                    other => Some(format!("literal `{other}`")),
                },
                _ => None,
            };
            match denial {
                Some(what) => {
                    self.0 = Some(Denial { target: what.clone(), reason: format!("{what} is not allowed") });
                    ControlFlow::Break(())
                }
                None => ControlFlow::Continue(()),
            }
        }
    }
    let mut v = Exprs(None);
    let _ = statement.visit(&mut v);
    v.0.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
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
}
