#!/usr/bin/env bash
# Rewrites the sha256 pins in examples/plugins.toml from the component files its
# entries point at (the bundled components in host/plugin-host/bundled/), and prints what
# changed. Review the diff before committing: a pin says "this exact file is the
# plugin I reviewed". `cargo test --test plugin examples` fails while one is
# stale.
#
#   examples/update-pins.sh
set -euo pipefail
cd "$(dirname "$0")"
manifest=plugins.toml
tmp=$(mktemp "$manifest.XXXXXX")
trap 'rm -f "$tmp"' EXIT
path=""
while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in
        "[[plugin]]"*) path="" ;;
        path\ =*) path=$(printf '%s\n' "$line" | sed -E 's/^path = "([^"]*)".*/\1/') ;;
        sha256\ =*)
            if [ -n "$path" ]; then
                new=$(sha256sum "$path" | cut -d' ' -f1)
                old=$(printf '%s\n' "$line" | sed -E 's/^sha256 = "([^"]*)".*/\1/')
                [ "$old" = "$new" ] || echo "$path: $old -> $new" >&2
                line="sha256 = \"$new\""
            fi
            ;;
    esac
    printf '%s\n' "$line"
done < "$manifest" > "$tmp"
mv "$tmp" "$manifest"
trap - EXIT
