#!/usr/bin/env bash
# Builds the Python keystore example (app.py) into a WebAssembly component
# implementing the `keystore` world of wit/ (keyward:plugin@0.1.0); in a
# project of `keyward plugin new --kind audit-sink`, whose app.py implements
# `AuditLinesApi`, the `audit-lines` world.
#
#   examples/python-keystore/build.sh [OUT_DIR]
#   examples/python-keystore/build.sh --check   # exit 0 if componentize-py is usable, 127 if not
#
# Writes OUT_DIR/keystore_py.wasm, or audit_lines_py.wasm (default OUT_DIR: target/python-plugin at the
# repository root, or in the project `keyward plugin new` made) and prints its sha256, the pin for a plugins.toml entry.
# Needs componentize-py (on PATH, or importable by python3):
#
#   python3 -m pip install componentize-py==0.25.1
#
# The output is not bit-for-bit reproducible (componentize-py snapshots a
# running interpreter), so pin the file you actually deploy, not a rebuild.
set -euo pipefail

# The version CI installs (.ci/run) and this example was written against.
TESTED_VERSION=0.25.1

here=$(cd "$(dirname "$0")" && pwd)
# Where wit/ and target/ are: the project when this script was copied into one
# by `keyward plugin new` (wit/ beside it), else the repository of the example.
if [ -d "$here/wit" ]; then
    root=$here
else
    root=$(cd "$here/../.." && pwd)
fi
out=${1:-$root/target/python-plugin}

# componentize-py on PATH, or the installed module when pip put its script in
# a directory that is not on PATH (e.g. a --user install).
if command -v componentize-py >/dev/null 2>&1; then
    cpy() { componentize-py "$@"; }
elif python3 -c 'import componentize_py' >/dev/null 2>&1; then
    cpy() { python3 -c 'import sys, componentize_py; sys.argv[0] = "componentize-py"; componentize_py.script()' "$@"; }
else
    echo "build.sh: componentize-py is not installed; run: python3 -m pip install componentize-py==$TESTED_VERSION" >&2
    exit 127
fi
if [ "$out" = "--check" ]; then
    exit 0
fi
version=$(cpy --version | awk '{print $2}')
if [ "$version" != "$TESTED_VERSION" ]; then
    echo "build.sh: warning: componentize-py $version, this example is tested with $TESTED_VERSION" >&2
fi

# The world app.py implements, and the file it becomes.
world=keystore
if grep -q '^class AuditLinesApi' "$here/app.py"; then
    world=audit-lines
fi
file="${world//-/_}_py.wasm"

mkdir -p "$out"
# Build into a temporary name and rename, so a reader never sees half a file.
tmp="$out/$file.tmp.$$"
trap 'rm -f "$tmp"' EXIT
# -d: our WIT package; -w: the world to implement; -p: where `app` lives.
cpy -q -d "$root/wit/keyward-plugin@0.1.0" -w "$world" \
    componentize -p "$here" app -o "$tmp"
mv "$tmp" "$out/$file"
trap - EXIT
sha256sum "$out/$file"
