# Sourced by the scripts: one build directory outside the checkout, shared by
# every clone, so a fresh clone does not rebuild wasmtime from scratch.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/returner-host/target}"

# Tools that build the Python and JavaScript returners, pinned; scripts/setup
# installs them here, outside the checkout, and scripts/build-guests uses them.
TOOLS_DIR="${RETURNER_HOST_TOOLS:-$HOME/.cache/returner-host/tools}"
COMPONENTIZE_PY_VERSION=0.25.1
COMPONENTIZE_PY="$TOOLS_DIR/componentize-py-$COMPONENTIZE_PY_VERSION/bin/componentize-py"
# The version is pinned in returners/json-files-js/package.json (and its lock).
COMPONENTIZE_JS_VERSION=0.23.0
COMPONENTIZE_JS="$TOOLS_DIR/componentize-js-$COMPONENTIZE_JS_VERSION/node_modules/.bin/componentize-js"
