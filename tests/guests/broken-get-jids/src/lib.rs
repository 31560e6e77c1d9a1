//! A broken fixture: `get_jids` answers a list of jids, where Salt's
//! jobs runner iterates a dict `{jid: job}`. `returner-host test` must fail
//! it on the rule `get-jids-shape`.

use returner_sdk::{Result, Returner, Value, json};

struct BrokenGetJids;

impl Returner for BrokenGetJids {
    fn get_jids() -> Result<Value> {
        Ok(json!(["20261123084300320186"]))
    }
}

returner_sdk::export_returner!(BrokenGetJids);
