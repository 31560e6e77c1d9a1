//! A hostile fixture that sends the SQL a test gives it, so the test can
//! try every way out of a MySQL grant:
//! - `get_jid(sql)` runs `mysql::query(sql)` and answers the rows as JSON;
//! - `get_fun(sql)` runs `mysql::execute(sql)` and answers the result;
//! - `get_load(sql)` runs `mysql::execute(sql, ["';DROP TABLE jids;--"])`,
//!   an injection payload bound as a parameter;
//! - `get_endtime(json)` runs `mysql::transaction` of a JSON array of
//!   `[sql, [params...]]` (strings, integers or null) and answers the
//!   outcomes as a JSON array of `{affected_rows, last_insert_id}`;
//! - `event_return(events)` runs several steps in one call, in order, each
//!   event one step by its tag: `query` and `execute` with data
//!   `[sql, [params...]]`, `transaction` with data as `get_endtime`'s, and
//!   `trap`, which panics. A step's error does not stop the next steps;
//!   the first one is the call's error. The host spools `event_return`
//!   (a write), so a test that needs the call's own answer uses
//! - `prep_jid(passed_jid = json)`, which runs the same steps from a JSON
//!   array of `{"tag", "data"}` and answers `ran`.
//!
//! Errors (denied, backend) are the call's error, as the host reported them.

use returner_sdk::mysql::{self, Statement, Value as Sql};
use returner_sdk::{Error, Event, Result, Returner, Value, json};

struct SqlEscaper;

fn value(v: &Sql) -> Value {
    match v {
        Sql::Null => Value::Null,
        Sql::Int(n) => json!(n),
        Sql::Uint(n) => json!(n),
        Sql::Double(n) => json!(n),
        Sql::Text(s) => json!(s),
        Sql::Bytes(b) => json!(b),
    }
}

impl Returner for SqlEscaper {
    fn get_jid(sql: &str) -> Result<Value> {
        let rows = mysql::query(sql, &[])?;
        let rows: Vec<Value> = rows.rows.iter().map(|r| Value::Array(r.iter().map(value).collect())).collect();
        Ok(json!({ "rows": rows }))
    }

    fn get_fun(sql: &str) -> Result<Value> {
        let done = mysql::execute(sql, &[])?;
        Ok(json!({ "affected_rows": done.affected_rows, "last_insert_id": done.last_insert_id }))
    }

    fn get_load(sql: &str) -> Result<Value> {
        let done = mysql::execute(sql, &["x'); DROP TABLE jids; -- ".into(), "{\"a\": \"' OR 1=1 --\"}".into()])?;
        Ok(json!({ "affected_rows": done.affected_rows }))
    }

    fn get_endtime(statements: &str) -> Result<Option<String>> {
        let list: Vec<Value> = returner_sdk::serde_json::from_str(statements)?;
        let statements = list.iter().map(statement).collect::<Result<Vec<_>>>()?;
        let done = mysql::transaction(&statements)?;
        let done: Vec<Value> =
            done.iter().map(|d| json!({ "affected_rows": d.affected_rows, "last_insert_id": d.last_insert_id })).collect();
        Ok(Some(Value::Array(done).to_string()))
    }

    fn event_return(events: Vec<Event>) -> Result<()> {
        run_steps(events.iter().map(|e| (e.tag.as_str(), &e.data)))
    }

    fn prep_jid(_nocache: bool, passed_jid: Option<String>) -> Result<String> {
        let steps: Vec<Value> = returner_sdk::serde_json::from_str(passed_jid.as_deref().unwrap_or("[]"))?;
        run_steps(steps.iter().map(|s| (s["tag"].as_str().unwrap_or(""), &s["data"])))?;
        Ok("ran".into())
    }
}

/// Run each `(tag, data)` step in order; the first error, after all ran.
fn run_steps<'a>(steps: impl Iterator<Item = (&'a str, &'a Value)>) -> Result<()> {
    let mut first_error = None;
    for (tag, data) in steps {
        let outcome = match tag {
            "query" => statement(data).and_then(|s| mysql::query(&s.sql, &s.params).map(drop)),
            "execute" => statement(data).and_then(|s| mysql::execute(&s.sql, &s.params).map(drop)),
            "transaction" => data
                .as_array()
                .ok_or_else(|| Error::Invalid("a transaction's data is a list of statements".into()))
                .and_then(|list| list.iter().map(statement).collect::<Result<Vec<_>>>())
                .and_then(|statements| mysql::transaction(&statements).map(drop)),
            "trap" => panic!("the escaper traps, as asked"),
            other => Err(Error::Invalid(format!("no step `{other}`"))),
        };
        if let Err(e) = outcome {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

fn param(v: &Value) -> Result<Sql> {
    match v {
        Value::Null => Ok(Sql::Null),
        Value::String(s) => Ok(s.as_str().into()),
        Value::Number(n) => n.as_i64().map(Sql::Int).ok_or_else(|| Error::Invalid(format!("not an integer: {n}"))),
        other => Err(Error::Invalid(format!("not a parameter: {other}"))),
    }
}

fn statement(v: &Value) -> Result<Statement> {
    let (Some(sql), Some(params)) = (v[0].as_str(), v[1].as_array()) else {
        return Err(Error::Invalid(format!("expected [sql, [params...]], got {v}")));
    };
    Ok(Statement::new(sql, params.iter().map(param).collect::<Result<_>>()?))
}

returner_sdk::export_returner!(SqlEscaper);
