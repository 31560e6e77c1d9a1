//! The one `bindgen!` site: Rust types and traits for the `salt:returner` WIT
//! package, with WASI mapped onto `wasmtime_wasi`'s own bindings.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "returner-component",
    imports: {
        "salt:returner/etcd": async | trappable,
        "salt:returner/mysql": async | trappable,
        "salt:returner/http": async | trappable,
        default: trappable,
    },
    exports: { default: async },
    with: {
        "wasi": wasmtime_wasi::p2::bindings,
    },
});

pub use exports::salt::returner::returner as export;
pub use salt::returner::types::{Error as GuestError, Event, JobReturn};

/// The WIT package's interface name of the exported returner interface,
/// without version.
pub const RETURNER_INTERFACE: &str = "salt:returner/returner";

/// The WIT package's interface name of the optional batch export, without
/// version. Not part of the world bound here: a module may or may not
/// export it, so the runtime looks it up on each module (`runtime::module`).
pub const BATCH_INTERFACE: &str = "salt:returner/batch";

/// The function of [`BATCH_INTERFACE`], as the WIT names it.
pub const BATCH_FUNCTION: &str = "returner-batch";

/// Version of the `salt:returner` WIT package this host implements.
pub const WIT_VERSION: &str = "0.1.4";
