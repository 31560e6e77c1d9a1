//! The returner's non-secret options, as the admin wrote them under
//! `options = { ... }` in the host config.

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::wit::salt::returner::config as host;

/// One option, or `None` when it is not set.
///
/// An option the host sends as malformed JSON (a host bug) is logged and
/// treated as unset; use [`get_as`] to see that as an error instead.
pub fn get(key: &str) -> Option<Value> {
    let raw = host::get(key)?;
    match serde_json::from_str(&raw) {
        Ok(value) => Some(value),
        Err(err) => {
            crate::log::error(&format!("option `{key}` is not valid JSON: {err}"));
            None
        }
    }
}

/// All options as a JSON object (`{}` when there are none or the host sent
/// malformed JSON, which is logged).
pub fn get_all() -> Value {
    match serde_json::from_str(&host::get_all()) {
        Ok(value) => value,
        Err(err) => {
            crate::log::error(&format!("the options are not valid JSON: {err}"));
            Value::Object(Default::default())
        }
    }
}

/// One option deserialized into `T`, `Ok(None)` when it is not set, and
/// [`Error::Invalid`] naming the option when it has the wrong shape.
///
/// ```no_run
/// let ttl: u32 = returner_sdk::config::get_as("ttl")?.unwrap_or(3600);
/// # Ok::<(), returner_sdk::Error>(())
/// ```
pub fn get_as<T: DeserializeOwned>(key: &str) -> Result<Option<T>> {
    let Some(raw) = host::get(key) else {
        return Ok(None);
    };
    serde_json::from_str(&raw)
        .map(Some)
        .map_err(|err| Error::invalid(&format!("option `{key}`"), err))
}
