//! A hostile fixture that abuses the host in the ways a trap or a loop do not:
//! - `get_load` recurses without end, to exhaust the stack;
//! - `get_jid(megabytes)` answers a JSON string of that many MiB;
//! - `get_fun` calls host functions (config, log) as fast as it can, for ever.

use std::hint::black_box;

use returner_sdk::{Error, Result, Returner, Value, config, log};

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
}

returner_sdk::export_returner!(Abuser);
