//! Returner components embedded in the host binary, built from this
//! workspace by the build script.

/// Salt's local job cache (`returners/local-cache`): the embedded default.
pub const LOCAL_CACHE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/returner_local_cache.wasm"));

/// The embedded module called `name` (as in `builtin:NAME`).
pub fn module(name: &str) -> Option<&'static [u8]> {
    match name {
        "local-cache" => Some(LOCAL_CACHE),
        _ => None,
    }
}
