# Sourced by the scripts: one build directory outside the checkout, shared by
# every clone, so a fresh clone does not rebuild wasmtime from scratch.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/returner-host/target}"
