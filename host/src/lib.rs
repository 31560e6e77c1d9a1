//! returner-host: runs SaltStack returners as sandboxed WebAssembly
//! components. See DESIGN.md for the architecture; the binary in `main.rs`
//! only parses the command line and calls [`cli`].
#![deny(missing_docs)]

#[allow(missing_docs)]
pub mod bindings;
pub mod audit_log;
pub mod builtin;
pub mod caps;
pub mod cli;
pub mod config;
pub mod dispatch;
pub mod error;
pub mod guest_text;
pub mod ingest;
pub mod reload;
pub mod metrics;
pub mod runtime;
pub mod spool;
pub mod salt_shim;
pub mod template;
pub mod testkit;
