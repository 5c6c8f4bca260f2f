#!/usr/bin/env bash
# Builds {{name}} (app.py) into a WebAssembly component implementing the
# `keystore` world of wit/keyward-plugin@0.1.0.
#
#   ./build.sh [OUT_DIR]      # writes OUT_DIR/{{crate}}.wasm (default: out/)
#
# Needs componentize-py (python3 -m pip install componentize-py==0.25.1).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/out}
if command -v componentize-py >/dev/null 2>&1; then
    cpy() { componentize-py "$@"; }
elif python3 -c 'import componentize_py' >/dev/null 2>&1; then
    cpy() { python3 -c 'import sys, componentize_py; sys.argv[0] = "componentize-py"; componentize_py.script()' "$@"; }
else
    echo "build.sh: componentize-py is not installed; run: python3 -m pip install componentize-py==0.25.1" >&2
    exit 127
fi
mkdir -p "$out"
tmp="$out/{{crate}}.wasm.tmp.$$"
trap 'rm -f "$tmp"' EXIT
cpy -q -d "$here/wit/keyward-plugin@0.1.0" -w keystore componentize -p "$here" app -o "$tmp"
mv "$tmp" "$out/{{crate}}.wasm"
trap - EXIT
sha256sum "$out/{{crate}}.wasm"
