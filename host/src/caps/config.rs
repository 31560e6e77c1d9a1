//! The `config` capability: the returner's non-secret options from the host
//! config, read-only. Every returner has it; secrets never go here (they are
//! read from files by the host and stay host-side).

use std::sync::Arc;

use wasmtime::component::{HasData, Linker};

use crate::bindings::salt::returner::config;

/// Options of one returner, as a JSON object.
#[derive(Clone, Debug, Default)]
pub struct OptionsCtx {
    options: Arc<serde_json::Map<String, serde_json::Value>>,
}

impl OptionsCtx {
    /// Options handed to the guest as they are.
    pub fn new(options: Arc<serde_json::Map<String, serde_json::Value>>) -> Self {
        Self { options }
    }
}

impl config::Host for OptionsCtx {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.options.get(&key).map(|v| v.to_string()))
    }

    fn get_all(&mut self) -> wasmtime::Result<String> {
        Ok(serde_json::Value::Object((*self.options).clone()).to_string())
    }
}

struct HasOptions;
impl HasData for HasOptions {
    type Data<'a> = &'a mut OptionsCtx;
}

/// Link `salt:returner/config` with options taken from the store's state.
pub fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut OptionsCtx,
) -> wasmtime::Result<()> {
    config::add_to_linker::<T, HasOptions>(linker, get)
}
