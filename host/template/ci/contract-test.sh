#!/usr/bin/env bash
# Build the returner and run returner-host's contract suite on it: what CI
# runs (any CI: it needs rustup and a returner-host binary). Writes the JUnit
# report to $CARGO_TARGET_DIR/contract-junit.xml (default target/) and fails
# when the returner breaks a rule of the contract.
#
#   RETURNER_HOST   the returner-host binary (default: returner-host on PATH)
#   TEST_CONFIG     a host config giving grants and options (default: none, so
#                   the suite grants a fresh temporary directory at /data)
set -euo pipefail
cd "$(dirname "$0")/.."

host="${RETURNER_HOST:-returner-host}"
if ! command -v "$host" >/dev/null; then
    echo "contract-test: no returner-host binary ($host); install it (cargo install --git <returner-host repository> returner-host) or set RETURNER_HOST" >&2
    exit 2
fi
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

cargo build --release --target wasm32-wasip2
target_dir="${CARGO_TARGET_DIR:-target}"
module="$target_dir/wasm32-wasip2/release/{{crate_name}}.wasm"

args=(test "$module" --format junit)
[ -n "${TEST_CONFIG:-}" ] && args+=(--config "$TEST_CONFIG")
"$host" "${args[@]}" > "$target_dir/contract-junit.xml"
echo "contract-test: $module passes; report in $target_dir/contract-junit.xml" >&2
