//! A broken fixture: `save_load` writes the load whether or not the job
//! has one, so a master's second `save_load` (with a return) replaces the
//! publish load. `returner-host test` must fail it on the rule
//! `save-load-first-wins` (and on `job-cache-complete`: it implements only
//! `save_load` and `get_load`).

use std::io::ErrorKind;

use returner_sdk::{Result, Returner, Value, fs, json, serde_json};

struct BrokenSaveLoad;

fn path(jid: &str) -> std::path::PathBuf {
    fs::root().join(format!("{jid}.json"))
}

impl Returner for BrokenSaveLoad {
    fn save_load(jid: &str, load: Value, _minions: Option<Vec<String>>) -> Result<()> {
        fs::write_atomic(&path(jid), load.to_string().as_bytes())?;
        Ok(())
    }

    fn get_load(jid: &str) -> Result<Value> {
        match std::fs::read(path(jid)) {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes)?),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(json!({})),
            Err(e) => Err(e.into()),
        }
    }
}

returner_sdk::export_returner!(BrokenSaveLoad);
