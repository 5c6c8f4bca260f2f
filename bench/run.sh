#!/usr/bin/env bash
# keyward benchmarks (see BENCHMARKS.md).
#
#   bench/run.sh [compare options]        build (dist profile) and run `keyward-bench compare`
#   bench/run.sh --pgo [compare options]  the same with profile-guided builds (bench/pgo-build)
#   bench/run.sh micro [filter]           run the criterion micro-benchmarks
#
# Builds take the shared cargo lock (/tmp/keyward-cargo.lock) when flock exists,
# so they never run alongside another build on a shared machine.
set -euo pipefail
cd "$(dirname "$0")/.."

locked() {
    if command -v flock >/dev/null; then
        flock /tmp/keyward-cargo.lock "$@"
    else
        "$@"
    fi
}

if [[ "${1:-}" == "micro" ]]; then
    shift
    locked cargo bench --manifest-path bench/Cargo.toml --target-dir target -- --warm-up-time 1 --measurement-time 2 "$@"
    exit
fi

if [[ "${1:-}" == "--pgo" ]]; then
    shift
    locked bench/pgo-build
    exec target/pgo/dist/keyward-bench compare "$@"
fi

locked cargo build --profile dist -p keyward
locked cargo build --profile dist --manifest-path bench/Cargo.toml --target-dir target
exec target/dist/keyward-bench compare "$@"
