//! For build scripts: build guest crates of this workspace to
//! `wasm32-wasip2` components with a nested `cargo build`, in a target
//! directory of their own (so the outer build's lock is never waited on), and
//! tell cargo to rebuild when the guests, the SDK or the WIT change.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The target guests are built for.
pub const TARGET: &str = "wasm32-wasip2";

/// Build `packages` (workspace package names) in release mode and return the
/// path of each `.wasm`, in the same order. Panics with a message saying
/// how to fix the build when it fails (build scripts report by panicking).
pub fn build(packages: &[&str]) -> Vec<PathBuf> {
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir.parent().expect("crate lives inside the workspace").to_path_buf();
    let target_dir = guest_target_dir(&workspace);

    for p in ["wit", "guest-sdk", "Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", workspace.join(p).display());
    }
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.arg("build")
        .arg("--release")
        .arg("--target")
        .arg(TARGET)
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    for p in packages {
        cmd.arg("-p").arg(p);
    }
    // Settings of the outer (native) build must not leak into the guest build.
    // A build dir shared with the outer build would also wait forever for
    // the outer build's lock on it.
    for var in ["CARGO_ENCODED_RUSTFLAGS", "RUSTFLAGS", "CARGO_TARGET_DIR", "CARGO_BUILD_BUILD_DIR", "CARGO_BUILD_TARGET", "RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER", "CARGO_MAKEFLAGS", "MAKEFLAGS", "MFLAGS"] {
        cmd.env_remove(var);
    }
    let output = cmd.output().unwrap_or_else(|e| panic!("cannot run cargo for the guests: {e}"));
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let hint = if stderr.contains("may not be installed") || stderr.contains("can't find crate for `std`") {
            "\nhint: install the guest target with `rustup target add wasm32-wasip2` (scripts/setup does it)"
        } else {
            ""
        };
        panic!("building the guests {packages:?} for {TARGET} failed:\n{stderr}{hint}");
    }

    packages
        .iter()
        .map(|p| {
            let wasm = target_dir.join(TARGET).join("release").join(format!("{}.wasm", p.replace('-', "_")));
            assert!(wasm.is_file(), "the guest build did not produce {}", wasm.display());
            wasm
        })
        .collect()
}

/// Rebuild when anything under `dir` changes.
pub fn watch(dir: &Path) {
    println!("cargo:rerun-if-changed={}", dir.display());
}

/// `<target>/wasm-guests/<checkout>`, beside `debug/` and `release/`, shared
/// by every build script of one checkout. Per checkout because cargo names
/// workspace crates' artifacts without their path: two worktrees sharing one
/// CARGO_TARGET_DIR would otherwise take each other's guest SDK.
fn guest_target_dir(workspace: &Path) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    workspace.hash(&mut hasher);
    let name = workspace.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let checkout = format!("{name}-{:016x}", hasher.finish());
    guest_base_dir().join(checkout)
}

fn guest_base_dir() -> PathBuf {
    let out_dir = PathBuf::from(env("OUT_DIR"));
    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out (or with a target triple in between).
    let mut dir = out_dir.as_path();
    while let Some(parent) = dir.parent() {
        if dir.file_name().is_some_and(|n| n == "build")
            && let Some(target) = parent.parent()
        {
            return target.join("wasm-guests");
        }
        dir = parent;
    }
    out_dir.join("wasm-guests")
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is set by cargo for build scripts"))
}
