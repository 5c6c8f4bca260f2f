#!/usr/bin/env bash
# Builds the JavaScript keystore example (app.js) into a WebAssembly component
# implementing the `keystore` world of wit/ (keyward:plugin@0.1.0), with
# ComponentizeJS.
#
#   examples/js-keystore/build.sh [OUT_DIR]
#   examples/js-keystore/build.sh --check   # exit 0 if the pinned tools are installed, 127 if not
#
# Writes OUT_DIR/keystore_js.wasm (default OUT_DIR: target/js-plugin at the
# repository root, or in the project `keyward plugin new` made) and prints its sha256, the pin for a plugins.toml entry.
# Needs node and npm; the tools themselves (@bytecodealliance/componentize-js
# and @bytecodealliance/jco, at the versions pinned in package.json and
# package-lock.json) are installed into node_modules/ next to this file by
# `npm ci` when they are missing there.
#
# The output is not bit-for-bit reproducible (ComponentizeJS snapshots a
# running engine), so pin the file you actually deploy, not a rebuild.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# Where wit/ and target/ are: the project when this script was copied into one
# by `keyward plugin new` (wit/ beside it), else the repository of the example.
if [ -d "$here/wit" ]; then
    root=$here
else
    root=$(cd "$here/../.." && pwd)
fi
out=${1:-$root/target/js-plugin}

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "build.sh: node and npm are needed (e.g. apt-get install nodejs npm)" >&2
    exit 127
fi

# Whether node_modules holds exactly the versions package.json pins.
installed() {
    (cd "$here" && node -e '
        const pinned = require("./package.json").devDependencies;
        for (const [name, version] of Object.entries(pinned)) {
            let found;
            try { found = require(`./node_modules/${name}/package.json`).version; } catch { process.exit(1); }
            if (found !== version) process.exit(1);
        }' 2>/dev/null)
}

if [ "$out" = "--check" ]; then
    if installed; then exit 0; fi
    echo "build.sh: the pinned tools are not installed; run: (cd examples/js-keystore && npm ci)" >&2
    exit 127
fi

if ! installed; then
    echo "build.sh: installing the pinned tools (npm ci in examples/js-keystore)" >&2
    if ! (cd "$here" && npm ci --no-audit --no-fund --loglevel=error >&2) || ! installed; then
        echo "build.sh: npm ci failed in $here" >&2
        exit 127
    fi
fi

# The WIT to build against: the one world file beside this script
# (keystore-js.wit here; audit-lines-js.wit in a `plugin new --kind
# audit-sink` project), with keyward:plugin from the repository and the WASI
# packages it uses from the WIT jco ships. The world is named as its file,
# the component after the world.
worlds=("$here"/*-js.wit)
if [ "${#worlds[@]}" -ne 1 ] || [ ! -f "${worlds[0]}" ]; then
    echo "build.sh: expected exactly one *-js.wit world file in $here" >&2
    exit 1
fi
world=$(basename "${worlds[0]}" .wit)
file="${world//-/_}.wasm"
wasi_wit="$here/node_modules/@bytecodealliance/jco/lib/wit/builtin/0.2.12"
mkdir -p "$out"
work=$(mktemp -d)
# Build into a temporary name and rename, so a reader never sees half a file.
tmp="$out/$file.tmp.$$"
trap 'rm -rf "$work" "$tmp"' EXIT
mkdir -p "$work/wit/deps/keyward-plugin"
cp "${worlds[0]}" "$work/wit/"
cp "$root/wit/keyward-plugin@0.1.0/"*.wit "$work/wit/deps/keyward-plugin/"
for package in io clocks filesystem; do
    mkdir "$work/wit/deps/wasi-$package"
    cp "$wasi_wit/wasi-$package/package.wit" "$work/wit/deps/wasi-$package/"
done

# --disable http fetch-event: no fetch() and no incoming-handler, so the
# component does not import wasi:http (which the host links only for plugins
# granted hosts). stdio (uncaught errors on stderr, which the host logs),
# random (crypto.getRandomValues) and clocks (Date.now) stay.
# Run from the scratch directory: ComponentizeJS may leave files in its cwd.
(cd "$work" && "$here/node_modules/.bin/componentize-js" "$here/app.js" \
    --wit wit --world-name "$world" --disable http fetch-event -o "$tmp" >&2)
mv "$tmp" "$out/$file"
trap 'rm -rf "$work"' EXIT
sha256sum "$out/$file"
