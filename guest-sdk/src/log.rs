//! Logging into the host's structured log, tagged with the returner's name.
//!
//! Built for anything but `wasm32` (native unit tests of a returner's
//! logic), records go to stderr instead.

pub use crate::wit::salt::returner::log::Level;

/// Emit one record at `level`.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    crate::wit::salt::returner::log::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message}");
}

/// Emit one record at trace level.
pub fn trace(message: &str) {
    log(Level::Trace, message);
}

/// Emit one record at debug level.
pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// Emit one record at info level.
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Emit one record at warn level.
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// Emit one record at error level.
pub fn error(message: &str) {
    log(Level::Error, message);
}
