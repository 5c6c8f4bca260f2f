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
    no_transparent_huge_pages();
    keyward::cli::run(keyward::cli::Cli::parse())
}

/// Opts the process out of transparent huge pages.
///
/// mimalloc asks for huge pages on its arena (`MADV_HUGEPAGE`), and a huge
/// page stays resident as a whole while any object on it lives. Under a mix
/// of requests and plugin calls that made RSS climb from ~45 to ~90-120 MiB
/// over half an hour (the soak in BENCHMARKS.md), most of it huge pages only
/// partly in use; without them RSS stays at ~45 MiB. Linux only; elsewhere,
/// or if the call fails, nothing changes.
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes no pointers; it only sets a flag on
    // this process's memory map.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}
