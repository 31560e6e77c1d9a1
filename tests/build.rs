//! Builds the fixture guests (tests/guests/*) and the shipped returners to
//! wasm32-wasip2 components; tests find them through RETURNER_GUESTS_DIR.

use std::path::PathBuf;

/// Fixture guest packages and shipped returners the tests load as files.
const GUESTS: &[&str] = &[
    "returner-local-cache",
    "returner-etcd",
    "returner-mysql",
    "returner-splunk",
    "returner-webhook",
    "returner-elasticsearch",
    "fixture-noop",
    "fixture-spin",
    "fixture-memhog",
    "fixture-trapper",
    "fixture-escaper",
    "fixture-sockets",
    "fixture-sql-escaper",
    "fixture-etcd-escaper",
    "fixture-http-escaper",
    "fixture-wit-0-1-2",
    "fixture-abuser",
    "fixture-filler",
    "fixture-broken-get-load",
    "fixture-broken-save-load",
    "fixture-broken-get-jids",
];

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    guest_build::watch(&root.join("guests"));
    guest_build::watch(&root.join("../returners"));
    let built = guest_build::build(GUESTS);
    let dir = built[0].parent().expect("a built guest has a directory");
    println!("cargo:rustc-env=RETURNER_GUESTS_DIR={}", dir.display());
}
