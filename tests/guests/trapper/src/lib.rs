//! A hostile fixture: `returner` executes a wasm `unreachable` trap and
//! `get_load` panics with a message.

use returner_sdk::{JobReturn, Result, Returner, Value};

struct Trapper;

impl Returner for Trapper {
    fn returner(_ret: JobReturn) -> Result<()> {
        #[cfg(target_arch = "wasm32")]
        core::arch::wasm32::unreachable();
        #[cfg(not(target_arch = "wasm32"))]
        std::process::abort();
    }

    fn get_load(jid: &str) -> Result<Value> {
        panic!("trapper panics on purpose in get_load({jid})");
    }
}

returner_sdk::export_returner!(Trapper);
