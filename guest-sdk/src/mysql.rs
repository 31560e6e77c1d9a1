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
