#!/usr/bin/env bash
# Rewrites the sha256 pins in examples/plugins.toml from the component files its
# entries point at (built by `cargo build` into target/plugins/...), and prints
# what changed. Review the diff before committing: a pin says "this exact file
# is the plugin I reviewed". The plugin build is reproducible (host/build.rs),
# so the pins hold for every checkout built with the same toolchain, CI's
# included; `cargo test --test plugin examples` fails while one is stale.
#
#   cargo build && examples/update-pins.sh
#
# With CARGO_TARGET_DIR set, the files are read from there instead of ../target.
set -euo pipefail
target_dir=${CARGO_TARGET_DIR:+$(realpath -m "$CARGO_TARGET_DIR")}
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
                file=$path
                case "$file" in
                    ../target/*) [ -z "$target_dir" ] || file="$target_dir/${file#../target/}" ;;
                esac
                new=$(sha256sum "$file" | cut -d' ' -f1)
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
