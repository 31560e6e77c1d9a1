//! SQL on a MySQL/MariaDB database, checked per table and verb against the grant.
//!
//! Exactly one statement per [`query`] or [`execute`], or a list of them in
//! one [`transaction`]; values travel only as bound parameters (`?`), never
//! spliced into the SQL. Without a MySQL grant every call answers
//! [`Error::Denied`](crate::Error::Denied).
//!
//! ```no_run
//! use returner_sdk::mysql::{self, Statement, Value};
//! let jid = "20261123084300320186";
//! mysql::execute("INSERT INTO jids (jid, load) VALUES (?, ?)", &[jid.into(), "{}".into()])?;
//! let rows = mysql::query("SELECT load FROM jids WHERE jid = ?", &[jid.into()])?;
//! let load = rows.rows.first().and_then(|row| row.first()).and_then(Value::as_str);
//! // Both rows, or neither.
//! mysql::transaction(&[
//!     Statement::new("INSERT INTO salt_events (tag, data, master_id) VALUES (?, ?, ?)", vec!["a".into(), "{}".into(), "m".into()]),
//!     Statement::new("INSERT INTO salt_events (tag, data, master_id) VALUES (?, ?, ?)", vec!["b".into(), "{}".into(), "m".into()]),
//! ])?;
//! # Ok::<(), returner_sdk::Error>(())
//! ```

use crate::error::Result;
use crate::wit::salt::returner::mysql as host;

pub use host::{ExecResult, Rows, Statement, Value};

/// Most statements the host runs in one [`transaction`]; more is
/// [`Error::Limit`](crate::Error::Limit). Split larger batches.
pub const MAX_TRANSACTION_STATEMENTS: usize = 1000;

/// Run one SELECT and return its rows.
pub fn query(sql: &str, params: &[Value]) -> Result<Rows> {
    Ok(host::query(sql, params)?)
}

/// Run one INSERT, UPDATE, DELETE or CREATE TABLE.
pub fn execute(sql: &str, params: &[Value]) -> Result<ExecResult> {
    Ok(host::execute(sql, params)?)
}

/// Run INSERT, UPDATE and DELETE statements in one transaction and commit
/// them together: every statement is checked against the grant before any
/// runs, and any error rolls them all back. The outcome of each, in order.
///
/// SELECT and CREATE TABLE are [`Error::Invalid`](crate::Error::Invalid)
/// here: run them before, with [`query`] and [`execute`]. At most
/// [`MAX_TRANSACTION_STATEMENTS`]. An error message names the statement
/// that failed, counting from 1.
pub fn transaction(statements: &[Statement]) -> Result<Vec<ExecResult>> {
    Ok(host::transaction(statements)?)
}

/// Most rows [`insert_rows`] puts in one statement.
pub const MAX_INSERT_ROWS: usize = 64;

/// Most bytes of values [`insert_rows`] puts in one statement (unless one
/// row alone is larger), far under MariaDB's `max_allowed_packet` (16 MiB by
/// default).
pub const MAX_INSERT_BYTES: usize = 1024 * 1024;

/// `rows` as multi-row INSERTs for one [`transaction`]: `head` is the
/// statement up to its VALUES (`INSERT INTO t (a, b)`), each row the values
/// of one `(?, ?)`. One statement writes many rows, so a batch costs the
/// server a few statements instead of one per row.
///
/// A statement holds a power of two of rows, at most [`MAX_INSERT_ROWS`]
/// and [`MAX_INSERT_BYTES`] of values: a handful of statement texts, each
/// checked against the grant and prepared once, not one text per batch size.
/// Rows keep their order.
///
/// ```no_run
/// use returner_sdk::mysql::{self, Value};
/// let rows: Vec<Vec<Value>> = vec![vec!["a".into(), "{}".into()], vec!["b".into(), "{}".into()]];
/// mysql::transaction(&mysql::insert_rows("INSERT INTO salt_events (tag, data)", rows))?;
/// # Ok::<(), returner_sdk::Error>(())
/// ```
pub fn insert_rows(head: &str, rows: Vec<Vec<Value>>) -> Vec<Statement> {
    let mut statements = Vec::new();
    let mut rows = rows.into_iter().peekable();
    let mut pending: Vec<Vec<Value>> = Vec::new();
    while rows.peek().is_some() || !pending.is_empty() {
        while pending.len() < MAX_INSERT_ROWS {
            match rows.next() {
                Some(row) => pending.push(row),
                None => break,
            }
        }
        let mut take = 1usize;
        let mut bytes = pending[0].iter().map(value_bytes).sum::<usize>();
        for (i, row) in pending.iter().enumerate().skip(1) {
            bytes += row.iter().map(value_bytes).sum::<usize>();
            if bytes > MAX_INSERT_BYTES {
                break;
            }
            if (i + 1).is_power_of_two() {
                take = i + 1;
            }
        }
        let rest = pending.split_off(take);
        let width = pending[0].len();
        let row = format!("({})", vec!["?"; width].join(", "));
        let sql = format!("{head} VALUES {}", vec![row.as_str(); take].join(", "));
        statements.push(Statement::new(sql, std::mem::take(&mut pending).into_iter().flatten().collect()));
        pending = rest;
    }
    statements
}

/// About what a value weighs on the wire.
fn value_bytes(value: &Value) -> usize {
    match value {
        Value::Text(text) => text.len(),
        Value::Bytes(bytes) => bytes.len(),
        _ => 8,
    }
}

impl Statement {
    /// One statement of a [`transaction`] with its parameters.
    pub fn new(sql: impl Into<String>, params: Vec<Value>) -> Self {
        Statement { sql: sql.into(), params }
    }
}

impl Value {
    /// The text of a `Text` value, or of `Bytes` that are UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(text) => Some(text),
            Value::Bytes(bytes) => std::str::from_utf8(bytes).ok(),
            _ => None,
        }
    }

    /// The number of an `Int`, or of a `Uint` that fits in an `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::Int(n) => Some(n),
            Value::Uint(n) => i64::try_from(n).ok(),
            _ => None,
        }
    }
}

impl From<&str> for Value {
    fn from(text: &str) -> Self {
        Value::Text(text.to_owned())
    }
}

impl From<String> for Value {
    fn from(text: String) -> Self {
        Value::Text(text)
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Self {
        Value::Int(n)
    }
}

impl From<u64> for Value {
    fn from(n: u64) -> Self {
        Value::Uint(n)
    }
}

impl From<f64> for Value {
    fn from(n: f64) -> Self {
        Value::Double(n)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Int(i64::from(b))
    }
}

impl From<Vec<u8>> for Value {
    fn from(bytes: Vec<u8>) -> Self {
        Value::Bytes(bytes)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(value: Option<T>) -> Self {
        value.map_or(Value::Null, Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(sizes: &[usize]) -> Vec<Vec<Value>> {
        sizes.iter().enumerate().map(|(i, &n)| vec![Value::Int(i as i64), Value::Text("x".repeat(n))]).collect()
    }

    /// The rows of each statement, and every row once, in order.
    fn shapes(statements: &[Statement]) -> Vec<usize> {
        let mut next = 0;
        statements
            .iter()
            .map(|s| {
                let n = s.params.len() / 2;
                assert_eq!(s.sql.matches("(?, ?)").count(), n, "{}", s.sql);
                for row in s.params.chunks(2) {
                    assert_eq!(row[0], Value::Int(next));
                    next += 1;
                }
                n
            })
            .collect()
    }

    #[test]
    fn rows_go_in_statements_of_a_power_of_two_up_to_the_most() {
        let statements = insert_rows("INSERT INTO t (a, b)", rows(&[10; 200]));
        assert_eq!(shapes(&statements), [64, 64, 64, 8]);
        assert!(statements[0].sql.starts_with("INSERT INTO t (a, b) VALUES (?, ?), (?, ?)"), "{}", statements[0].sql);
        assert_eq!(shapes(&insert_rows("INSERT INTO t (a, b)", rows(&[10; 7]))), [4, 2, 1]);
        assert!(insert_rows("INSERT INTO t (a, b)", Vec::new()).is_empty());
    }

    #[test]
    fn large_rows_split_statements_by_bytes() {
        let big = MAX_INSERT_BYTES / 3;
        assert_eq!(shapes(&insert_rows("INSERT INTO t (a, b)", rows(&[big, big, big, big, 10]))), [2, 2, 1]);
        // A row over the most alone still goes, alone.
        assert_eq!(shapes(&insert_rows("INSERT INTO t (a, b)", rows(&[10, MAX_INSERT_BYTES * 2, 10]))), [1, 1, 1]);
    }
}
