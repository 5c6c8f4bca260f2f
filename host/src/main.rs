//! The `keyward` binary: server and client in one.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc rather than glibc malloc: a request allocates and frees dozens
/// of small buffers (TLS records, headers, JSON, audit events) across two
/// worker threads, and glibc's arena locking and consolidation were ~2 µs of
/// every request in profiles (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    keyward::cli::run(keyward::cli::Cli::parse())
}
