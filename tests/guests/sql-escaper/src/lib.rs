//! A hostile fixture that sends the SQL a test gives it, so the test can
//! try every way out of a MySQL grant:
//! - `get_jid(sql)` runs `mysql::query(sql)` and answers the rows as JSON;
//! - `get_fun(sql)` runs `mysql::execute(sql)` and answers the result;
//! - `get_load(sql)` runs `mysql::execute(sql, ["';DROP TABLE jids;--"])`,
//!   an injection payload bound as a parameter.
//!
//! Errors (denied, backend) are the call's error, as the host reported them.

use returner_sdk::mysql::{self, Value as Sql};
use returner_sdk::{Result, Returner, Value, json};

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
}

returner_sdk::export_returner!(SqlEscaper);
