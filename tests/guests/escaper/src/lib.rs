//! A hostile fixture that tries to reach past its grants and reports what
//! happened, so a test can assert that every attempt was refused:
//! - `get_jid(path)` reads the file `path`: `{"read": true, "content": ...}`,
//!   or the I/O error as the call's error;
//! - `returner(ret)` writes `ret.full` to the file named by `ret.id`;
//! - `get_fun(name)` reads the environment variable `name`: `{"value": ...}`;
//! - `get_minions()` calls etcd and MySQL and answers their two error
//!   messages (or what went through).

use returner_sdk::{JobReturn, Result, Returner, Value, etcd, json, mysql};

struct Escaper;

impl Returner for Escaper {
    fn get_jid(path: &str) -> Result<Value> {
        let content = std::fs::read_to_string(path)?;
        Ok(json!({ "read": true, "content": content }))
    }

    fn returner(ret: JobReturn) -> Result<()> {
        std::fs::write(&ret.id, ret.full.to_string())?;
        Ok(())
    }

    fn get_fun(name: &str) -> Result<Value> {
        Ok(json!({ "value": std::env::var(name).ok() }))
    }

    fn get_minions() -> Result<Vec<String>> {
        let etcd = match etcd::get("x") {
            Ok(value) => format!("etcd get went through: {value:?}"),
            Err(err) => err.to_string(),
        };
        let mysql = match mysql::query("SELECT 1", &[]) {
            Ok(rows) => format!("mysql query went through: {rows:?}"),
            Err(err) => err.to_string(),
        };
        Ok(vec![etcd, mysql])
    }
}

returner_sdk::export_returner!(Escaper);
