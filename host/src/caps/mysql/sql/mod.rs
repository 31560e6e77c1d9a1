//! The statement check: parse a guest's SQL with a real parser (MySQL
//! dialect), print it back, parse the printed text again and require the
//! same tree, then decide on that tree, table by table and verb by verb,
//! whether the grant allows it. What the server runs is the printed text:
//! the text whose tree was checked, so the check holds by construction.
//!
//! - `lexical`: the token rules and the caps on a statement's size.
//! - `shape`: the statements, clauses, table sources and functions allowed.
//! - here: the pipeline and the tables each statement needs, with verbs.

mod lexical;
mod shape;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;

use sqlparser::ast::{
    CreateTableLikeKind, FromTable, ObjectName, ObjectNamePart, OnInsert, Statement, TableFactor, TableObject,
    TableWithJoins, Visit, visit_relations,
};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;

use super::SqlVerb;

pub use lexical::{MAX_OPERATORS, MAX_TOKENS, is_plain_name, printable};
pub use shape::ALLOWED_FUNCTIONS;

/// Longest SQL text checked. Stops a guest from making the host parse
/// megabytes per call; a returner's statements are a few hundred bytes.
pub const MAX_SQL_BYTES: usize = 64 * 1024;

/// Deepest nesting the parser follows. Stops a guest from exhausting the
/// host's stack with `((((...))))` or subqueries nested thousands deep.
const MAX_NESTING: usize = 64;

/// Which host function the guest called.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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

/// Check `sql` for `function` against `access`. On success, the text to
/// send to the server: the statement printed back, whose own parse is the
/// tree every rule below was checked on.
///
/// Runs on a thread with a stack sized for the caps (see
/// `super::checker`); the caps bound its time, the caller bounds its wait.
pub fn check(sql: &str, function: Function, access: Access<'_>) -> Result<String, Refusal> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(Refusal::Denied(Denial {
            target: "statement".into(),
            reason: format!("the statement is {} bytes, over the most, {MAX_SQL_BYTES}", sql.len()),
        }));
    }
    lexical::check(sql)?;
    let parsed = parse_one(sql)?;
    let sent = parsed.to_string();
    // The text sent is held to every rule on its own: its tokens, and a
    // parse equal to the one of the guest's text. A printer that wrote a
    // name or a clause the server reads otherwise is refused here, not run.
    lexical::check(&sent)?;
    let statement = parse_one(&sent)?;
    if statement != parsed {
        return Err(Refusal::Denied(Denial {
            target: "statement".into(),
            reason: "the statement does not print back to itself; it is refused rather than sent as something else".into(),
        }));
    }
    drop(parsed);
    shape::check(&statement, function)?;
    let mut needs = Needs::default();
    needs.statement(&statement, access)?;
    for (table, verb) in &needs.required {
        let granted = access.tables.get(table).is_some_and(|verbs| verbs.contains(verb));
        if !granted {
            return Err(Refusal::Denied(Denial {
                target: format!("table {table} ({})", verb.as_str()),
                reason: format!("table `{table}` is not granted `{}`", verb.as_str()),
            }));
        }
    }
    Ok(sent)
}

fn parse_one(sql: &str) -> Result<Statement, Denial> {
    let mut statements = Parser::new(&MySqlDialect {})
        .with_recursion_limit(MAX_NESTING)
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_statements())
        .map_err(|e| Denial {
            target: "statement".into(),
            reason: format!("the statement does not parse: {}", printable(&e.to_string())),
        })?;
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
    fn statement(&mut self, statement: &Statement, access: Access<'_>) -> Result<(), Denial> {
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
                for name in &delete.tables {
                    table_name(name, access)?;
                }
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
                if let Some(CreateTableLikeKind::Plain(like) | CreateTableLikeKind::Parenthesized(like)) = &create.like {
                    let source = table_name(&like.name, access)?;
                    self.need(&source, SqlVerb::Select);
                }
            }
            // Refused by the shape check before this runs.
            _ => return deny("statement", "statement not allowed"),
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
