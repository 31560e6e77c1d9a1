//! A hostile fixture that abuses the host in the ways a trap or a loop do not:
//! - `get_load` recurses without end, to exhaust the stack;
//! - `get_jid(megabytes)` answers a JSON string of that many MiB;
//! - `get_fun` calls host functions (config, log) as fast as it can, for ever;
//! - `get_jids` makes 100,000 etcd reads it has no grant for, each denied;
//! - `get_endtime(megabytes)` logs, then answers as its error, a text that
//!   forges a host log line and then runs on for that many MiB.

use std::hint::black_box;

use returner_sdk::{Error, Result, Returner, Value, config, etcd, json, log};

/// Denied host calls `get_jids` makes in one call.
const DENIED_CALLS: u32 = 100_000;

/// What a guest would like the host's log to show on a line of its own.
const FORGED_LINE: &str = "\n2026-11-30T00:00:00.000000Z  WARN returner_host::audit: capability denied returner=\"good\" outcome=\"forged\"\n";

struct Abuser;

/// Recursion the optimiser cannot turn into a loop: each frame keeps a
/// buffer live across the call.
#[inline(never)]
fn descend(depth: u64) -> u64 {
    let frame = black_box([depth; 32]);
    let below = descend(black_box(depth + 1));
    black_box(frame[(depth % 32) as usize]).wrapping_add(below)
}

impl Returner for Abuser {
    fn get_load(_jid: &str) -> Result<Value> {
        Ok(Value::from(descend(0)))
    }

    fn get_jid(megabytes: &str) -> Result<Value> {
        let mib: usize = megabytes.parse().map_err(|e| Error::invalid("jid", e))?;
        Ok(Value::String("x".repeat(mib * 1024 * 1024)))
    }

    fn get_fun(_fun: &str) -> Result<Value> {
        let mut calls: u64 = 0;
        loop {
            calls += 1;
            black_box(config::get("flood"));
            log::info(&format!("host call {calls}"));
        }
    }

    fn get_jids() -> Result<Value> {
        let denied = (0..DENIED_CALLS).filter(|_| matches!(etcd::get("flood"), Err(Error::Denied(_)))).count();
        Ok(json!({ "denied": denied }))
    }

    fn get_endtime(megabytes: &str) -> Result<Option<String>> {
        let mib: usize = megabytes.parse().map_err(|e| Error::invalid("jid", e))?;
        log::warn(&format!("before{FORGED_LINE}after"));
        let mut message = format!("forged{FORGED_LINE}");
        message.push_str(&"x".repeat(mib * 1024 * 1024));
        Err(Error::Backend(message))
    }
}

returner_sdk::export_returner!(Abuser);
