//! A hostile fixture: it sends whatever request a test spells out through
//! its http grant and reports what happened, so a test can try every way
//! out of the grant (other hosts, `..`, header injection, echoes of the
//! secret, redirects, huge and slow responses) and check the outcome, the
//! server's side and the audit log.
//! - `get_load(spec)`: `spec` is JSON `{"method", "path", "headers": [[name,
//!   value], ...], "body"}`; the answer is `{"outcome": "ok", "status",
//!   "headers", "body"}` or `{"outcome": KIND, "message"}`;
//! - `get_fun("config")`: everything the `config` interface offers.

use returner_sdk::http::{self, Method};
use returner_sdk::{Error, Result, Returner, Value, config, json};

struct HttpEscaper;

fn method(name: &str) -> Result<Method> {
    Ok(match name {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "PATCH" => Method::Patch,
        "DELETE" => Method::Delete,
        other => return Err(Error::invalid("method", format!("`{other}` is not a method the WIT has"))),
    })
}

fn outcome(result: Result<http::Response>) -> Value {
    match result {
        Ok(r) => json!({
            "outcome": "ok",
            "status": r.status,
            "headers": r.headers,
            "body": String::from_utf8_lossy(&r.body),
        }),
        Err(err) => {
            let (kind, message) = err.parts();
            json!({ "outcome": kind, "message": message })
        }
    }
}

impl Returner for HttpEscaper {
    fn get_load(spec: &str) -> Result<Value> {
        let spec: Value = returner_sdk::serde_json::from_str(spec)?;
        let m = method(spec["method"].as_str().unwrap_or("GET"))?;
        let path = spec["path"].as_str().unwrap_or_default();
        let headers: Vec<(String, String)> = spec["headers"]
            .as_array()
            .map(|hs| {
                hs.iter()
                    .map(|h| (h[0].as_str().unwrap_or_default().to_owned(), h[1].as_str().unwrap_or_default().to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let body = spec["body"].as_str().unwrap_or_default();
        Ok(outcome(http::send(m, path, &headers, body.as_bytes())))
    }

    fn get_fun(what: &str) -> Result<Value> {
        match what {
            "config" => Ok(json!({ "all": config::get_all() })),
            other => Err(Error::invalid("fun", format!("unknown request `{other}`"))),
        }
    }
}

returner_sdk::export_returner!(HttpEscaper);
