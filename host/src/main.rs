//! The `keyward` binary: server and client in one.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    keyward::cli::run(keyward::cli::Cli::parse())
}
