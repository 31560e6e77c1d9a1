//! A broken fixture: `get_load` of a jid it never saw answers `not-found`,
//! where Salt's jobs runner needs `{}`.
//! `returner-host test` must fail it on the rule `get-load-unknown-jid`.

use returner_sdk::{Error, Result, Returner, Value};

struct BrokenGetLoad;

impl Returner for BrokenGetLoad {
    fn get_load(jid: &str) -> Result<Value> {
        Err(Error::NotFound(format!("no job {jid}")))
    }
}

returner_sdk::export_returner!(BrokenGetLoad);
