//! A hostile fixture that tries every way out of an etcd grant and reports
//! each attempt, so a test can check that every escape was denied, what
//! landed in etcd, and the audit log:
//! - `get_jids()` runs every escape (key shapes, range reads and deletes
//!   leaving the root, a lease over the grant's maximum) mixed with
//!   operations that are allowed and must stay inside the root;
//! - `clean_old_jobs()` deletes `2` and then everything under the root;
//! - `get_fun("writes")` writes and deletes well-formed keys (a read-only grant);
//! - `get_fun("every-op")` calls every operation on a well-formed key (no grant);
//! - `get_fun("config")` answers everything the `config` interface offers;
//! - `get_fun("lease-flood")` puts `flood/0` to `flood/999` one by one, each
//!   with the TTL `max_ttl`, to see how many leases that makes;
//! - `get_load(key)` writes `key` and reads it back: the control.
//!
//! Each attempt is `{"op", "key", "outcome", "message"}` (outcome `ok` with
//! a `value`, or the error's kind). The option `max_ttl` is the grant's
//! `max_ttl_seconds`, so the fixture can ask for one second more.

use returner_sdk::etcd::{self, KeyValue};
use returner_sdk::{Error, Result, Returner, Value, config, json};

struct EtcdEscaper;

/// What one call answered, as JSON the test can read.
fn attempt(op: &str, key: &str, result: Result<Value>) -> Value {
    match result {
        Ok(value) => json!({ "op": op, "key": key, "outcome": "ok", "value": value }),
        Err(err) => {
            let (kind, message) = err.parts();
            json!({ "op": op, "key": key, "outcome": kind, "message": message })
        }
    }
}

fn kv(key: &str) -> KeyValue {
    KeyValue { key: key.to_owned(), value: b"escaped".to_vec() }
}

fn text(value: Option<Vec<u8>>) -> Value {
    value.map_or(Value::Null, |v| Value::String(String::from_utf8_lossy(&v).into_owned()))
}

fn listed(pairs: Vec<KeyValue>) -> Value {
    pairs.into_iter().map(|kv| Value::String(kv.key)).collect()
}

/// Every single-key operation on `key`, with `ttl` on the writes.
fn single_key_ops(out: &mut Vec<Value>, key: &str, ttl: Option<u32>) {
    out.push(attempt("get", key, etcd::get(key).map(text)));
    out.push(attempt("put", key, etcd::put(key, b"escaped", ttl).map(|()| Value::Null)));
    out.push(attempt("put-many", key, etcd::put_many(&[kv(key)], ttl).map(|()| Value::Null)));
    out.push(attempt("put-batches", key, etcd::put_batches(&[vec![kv(key)]], ttl).map(|()| Value::Null)));
    out.push(attempt("put-if-absent", key, etcd::put_if_absent(key, b"escaped", ttl).map(Value::Bool)));
    out.push(attempt("delete", key, etcd::delete(key, false).map(Value::from)));
}

/// Both range operations on `prefix`.
fn range_ops(out: &mut Vec<Value>, prefix: &str) {
    out.push(attempt("get-prefix", prefix, etcd::get_prefix(prefix, 1000).map(listed)));
    out.push(attempt("delete-prefix", prefix, etcd::delete(prefix, true).map(Value::from)));
}

/// Keys that would leave the root, or that no etcd key should look like.
const BAD_KEYS: &[&str] = &[
    "",
    "\0",
    "a\0b",
    "jobs/1\0/../../../return2/x",
    "a\nb",
    "a\rb",
    "a\tb",
    "\x1b[2Jx",
    "a\x7fb",
    "a\u{85}b",
    "/",
    "/abs",
    "//x",
    "/salt/return2/x",
    ".",
    "..",
    "./a",
    "a/.",
    "a/./b",
    "../return2/x",
    "jobs/../../return2/x",
    "a//b",
    "a/",
];

/// Prefixes whose range would leave the root.
const BAD_PREFIXES: &[&str] =
    &["/", "//", ".", "./", "..", "../", "../return2", "a/..", "a/../..", "a//", "\0", "x\0", "/salt/return2"];

/// Keys that look odd but are inside the root, where they must land.
const ODD_INSIDE_KEYS: &[&str] = &["2/x", "%2e%2e/x", "a..b", "...", "x/\u{2028}", "é/ü"];

impl Returner for EtcdEscaper {
    fn get_jids() -> Result<Value> {
        let max_ttl: u32 = config::get_as("max_ttl")?.unwrap_or(60);
        let long = "k".repeat(1025);
        let mut out = Vec::new();

        // Allowed writes first: the reads and deletes below must see them and nothing outside.
        for key in ODD_INSIDE_KEYS {
            out.push(attempt("put", key, etcd::put(key, b"inside", None).map(|()| Value::Null)));
        }
        out.push(attempt("put", "ttl/at-max", etcd::put("ttl/at-max", b"inside", Some(max_ttl)).map(|()| Value::Null)));

        for key in BAD_KEYS.iter().copied().chain([long.as_str()]) {
            single_key_ops(&mut out, key, None);
        }
        for prefix in BAD_PREFIXES.iter().copied().chain([long.as_str()]) {
            range_ops(&mut out, prefix);
        }
        // One bad key among good ones: the whole transaction is refused.
        out.push(attempt(
            "put-many",
            "../return2/x",
            etcd::put_many(&[kv("ok/before-bad"), kv("../return2/x"), kv("ok/after-bad")], None).map(|()| Value::Null),
        ));
        // One bad key in the last of several transactions: none is sent.
        out.push(attempt(
            "put-batches",
            "../return2/x",
            etcd::put_batches(&[vec![kv("ok/batch-1")], vec![kv("ok/batch-2"), kv("../return2/x")]], None).map(|()| Value::Null),
        ));
        // Leases over the grant's maximum.
        for ttl in [max_ttl + 1, u32::MAX] {
            out.push(attempt("put", "ttl/over", etcd::put("ttl/over", b"escaped", Some(ttl)).map(|()| Value::Null)));
            out.push(attempt("put-many", "ttl/over", etcd::put_many(&[kv("ttl/over")], Some(ttl)).map(|()| Value::Null)));
            out.push(attempt("put-batches", "ttl/over", etcd::put_batches(&[vec![kv("ttl/over")]], Some(ttl)).map(|()| Value::Null)));
            out.push(attempt(
                "put-if-absent",
                "ttl/over",
                etcd::put_if_absent("ttl/over", b"escaped", Some(ttl)).map(Value::Bool),
            ));
        }
        // A lease of 0 s is a mistake, not an escape: invalid, not denied.
        out.push(attempt("put", "ttl/zero", etcd::put("ttl/zero", b"escaped", Some(0)).map(|()| Value::Null)));

        // Allowed range reads, which must stay inside the root.
        out.push(attempt("get-prefix", "", etcd::get_prefix("", 1000).map(listed)));
        out.push(attempt("get-prefix", "2", etcd::get_prefix("2", 1000).map(listed)));
        Ok(Value::Array(out))
    }

    fn clean_old_jobs() -> Result<()> {
        // Allowed range deletes, which must stay inside the root.
        etcd::delete("2", true)?;
        etcd::delete("", true)?;
        Ok(())
    }

    fn get_fun(which: &str) -> Result<Value> {
        let mut out = Vec::new();
        match which {
            "writes" => {
                out.push(attempt("get", "ro/x", etcd::get("ro/x").map(text)));
                out.push(attempt("put", "ro/x", etcd::put("ro/x", b"escaped", None).map(|()| Value::Null)));
                out.push(attempt("put-many", "ro/x", etcd::put_many(&[kv("ro/x"), kv("ro/y")], None).map(|()| Value::Null)));
                out.push(attempt("put-batches", "ro/x", etcd::put_batches(&[vec![kv("ro/x")], vec![kv("ro/y")]], None).map(|()| Value::Null)));
                out.push(attempt("put-if-absent", "ro/x", etcd::put_if_absent("ro/x", b"escaped", None).map(Value::Bool)));
                out.push(attempt("delete", "ro/x", etcd::delete("ro/x", false).map(Value::from)));
                out.push(attempt("delete-prefix", "ro", etcd::delete("ro", true).map(Value::from)));
            }
            "every-op" => {
                single_key_ops(&mut out, "x", None);
                range_ops(&mut out, "");
            }
            "config" => {
                let mut probes = returner_sdk::serde_json::Map::new();
                for key in [
                    "password", "password_file", "etcd.password", "username", "etcd.username", "profile", "profiles",
                    "endpoints", "root", "grants", "ttl", "max_ttl", "",
                ] {
                    probes.insert(key.to_owned(), config::get(key).unwrap_or(Value::Null));
                }
                return Ok(json!({ "all": config::get_all(), "probes": probes }));
            }
            "lease-flood" => {
                let ttl: u32 = config::get_as("max_ttl")?.unwrap_or(60);
                for i in 0..1000 {
                    etcd::put(&format!("flood/{i}"), b"flood", Some(ttl))?;
                }
                return Ok(json!({ "puts": 1000 }));
            }
            other => {
                return Err(Error::invalid("fun", format!("`{other}` is not writes, every-op, config or lease-flood")));
            }
        }
        Ok(Value::Array(out))
    }

    fn get_load(key: &str) -> Result<Value> {
        etcd::put(key, b"inside", None)?;
        Ok(json!({ "read": text(etcd::get(key)?) }))
    }
}

returner_sdk::export_returner!(EtcdEscaper);
