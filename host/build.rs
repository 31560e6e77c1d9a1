//! Builds the embedded returners (`returners/local-cache`) to wasm32-wasip2
//! components and puts them in OUT_DIR for `include_bytes!`.

use std::path::PathBuf;

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("..");
    guest_build::watch(&root.join("returners/local-cache"));
    let built = guest_build::build(&["returner-local-cache"]);
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("returner_local_cache.wasm");
    std::fs::copy(&built[0], &out).expect("copying the local-cache component into OUT_DIR");
}
