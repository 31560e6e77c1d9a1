//! Write SaltStack returners in Rust as WebAssembly components for
//! returner-host.
//!
//! A returner is a type implementing [`Returner`]: one associated function
//! per function of Salt's returner interface, typed like Salt's Python ones.
//! Every function has a default answering [`Error::Unsupported`], so a
//! returner implements only what it supports. [`export_returner!`] wires the
//! type to the component's exports; `export_returner!(Type, batch)` also
//! exports the batch interface, through which the host hands the returner
//! several returns in one call ([`Returner::returner_batch`]).
//!
//! The returner reaches nothing but what the admin granted it in the host's
//! config, through the modules here: [`etcd`], [`mysql`], [`http`], files under
//! [`fs::GRANTED_DIR`] with plain [`std::fs`], its options through
//! [`config`], and the host's log through [`log`]. There are no sockets, no
//! environment variables, no arguments, and no credentials: the host holds
//! those. Each call runs in a fresh instance, so nothing survives between
//! calls except what the returner stores.
//!
//! # Example
//!
//! A returner that keeps each return in etcd, under the granted prefix:
//!
//! ```
//! use returner_sdk::{config, etcd, json, JobReturn, Result, Returner, Value};
//!
//! struct EtcdLite;
//!
//! impl Returner for EtcdLite {
//!     fn returner(ret: JobReturn) -> Result<()> {
//!         let ttl: Option<u32> = config::get_as("ttl")?;
//!         let key = format!("jobs/{}/{}", ret.jid, ret.id);
//!         etcd::put(&key, ret.full.to_string().as_bytes(), ttl)
//!     }
//!
//!     fn get_jid(jid: &str) -> Result<Value> {
//!         let mut minions = returner_sdk::serde_json::Map::new();
//!         for entry in etcd::get_prefix(&format!("jobs/{jid}/"), 10_000)? {
//!             let full: Value = returner_sdk::serde_json::from_slice(&entry.value)?;
//!             let minion = entry.key.rsplit('/').next().unwrap_or_default();
//!             minions.insert(minion.to_owned(), json!({ "return": full["return"] }));
//!         }
//!         Ok(Value::Object(minions))
//!     }
//! }
//!
//! returner_sdk::export_returner!(EtcdLite);
//! ```
//!
//! Build it as a `cdylib` with `cargo build --target wasm32-wasip2 --release`;
//! the `.wasm` in `target/wasm32-wasip2/release/` is the component to ship.
//!
//! # Errors
//!
//! Expected failures are [`Error`] values, which the host passes on to Salt
//! by kind. A panic traps: the host fails that one call as a broken guest.
//! `?` converts [`std::io::Error`] (permission denied → `Denied`, not found
//! → `NotFound`, the rest → `Backend`) and [`serde_json::Error`] (→ `Invalid`).

#![deny(missing_docs)]

mod adapter;
pub mod config;
mod error;
pub mod etcd;
pub mod fs;
pub mod http;
pub mod log;
pub mod mysql;
pub mod salt;
mod returner;

pub use error::{Error, Result};
pub use returner::{Event, JobReturn, Returner};
pub use serde_json::{self, Value, json};

/// The raw bindings generated from the WIT contract. Not a stable API: use
/// the typed modules of this crate instead.
#[doc(hidden)]
#[allow(missing_docs)]
pub mod wit {
    wit_bindgen::generate!({
        path: "../wit",
        world: "returner-component",
        // The world imports WASI filesystem; the standard library is what a
        // returner uses for files, these bindings merely satisfy the world.
        generate_all,
        additional_type_attributes: {
            "salt:returner/etcd@0.1.4/key-value": [#[derive(PartialEq, Eq)]],
            "salt:returner/mysql@0.1.4/value": [#[derive(PartialEq)]],
            "salt:returner/mysql@0.1.4/rows": [#[derive(PartialEq)]],
            "salt:returner/mysql@0.1.4/exec-result": [#[derive(PartialEq, Eq)]],
        },
        pub_export_macro: true,
        default_bindings_module: "returner_sdk::wit",
    });

    /// The optional `batch` export, apart from the world above so that only
    /// a returner that opts in exports it: wit-bindgen's export macro
    /// exports every export of its world, and `wit-component` unions the
    /// worlds of every export macro a component invokes. This world holds
    /// nothing but the batch export; its types are the ones above.
    pub mod batch_export {
        wit_bindgen::generate!({
            path: "../wit",
            inline: "
                package returner-sdk:batch;
                world batch-export {
                    export salt:returner/batch@0.1.4;
                }
            ",
            world: "returner-sdk:batch/batch-export",
            with: {
                "salt:returner/types@0.1.4": crate::wit::salt::returner::types,
            },
            pub_export_macro: true,
            default_bindings_module: "returner_sdk::wit::batch_export",
        });
    }
}

#[doc(hidden)]
pub mod __private {
    pub use crate::adapter::Adapter;

    /// Compiles only for a `Returner`; see `export_returner!`.
    pub const fn assert_returner<R: crate::Returner>() {}
}

/// Export a type implementing [`Returner`] as the component's `returner`
/// interface. Invoke it once, in the returner's `cdylib` crate. Off `wasm32`
/// it exports nothing and only checks the trait bound, so the crate still
/// builds natively for unit tests (the component's export names are not valid
/// native symbol names).
///
/// ```
/// struct Noop;
/// impl returner_sdk::Returner for Noop {}
/// returner_sdk::export_returner!(Noop);
/// ```
///
/// `export_returner!(Type, batch)` also exports the `batch` interface
/// (world `returner-batch-component`): the host then hands the returner
/// consecutive returns in one call of [`Returner::returner_batch`] rather
/// than one call of [`Returner::returner`] each. Opt in only when storing a
/// return a second time is harmless: after a failed batch the host may
/// deliver any of its returns again, those stored included.
///
/// ```
/// struct Batched;
/// impl returner_sdk::Returner for Batched {}
/// returner_sdk::export_returner!(Batched, batch);
/// ```
#[macro_export]
#[rustfmt::skip]
macro_rules! export_returner {
    ($returner:ty, batch) => {
        $crate::export_returner!($returner);
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type __ReturnerSdkBatchExport = $crate::__private::Adapter<$returner>;
            $crate::wit::batch_export::export!(__ReturnerSdkBatchExport with_types_in $crate::wit::batch_export);
        };
    };
    ($returner:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            // The generated export macro takes an identifier, not a type.
            type __ReturnerSdkExport = $crate::__private::Adapter<$returner>;
            $crate::wit::export!(__ReturnerSdkExport with_types_in $crate::wit);
        };
        // Off wasm32 nothing is exported; still check the trait bound and
        // count the type as used.
        #[cfg(not(target_arch = "wasm32"))]
        const _: () = $crate::__private::assert_returner::<$returner>();
    };
}
