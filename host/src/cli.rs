//! The `keyward` command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A KES-compatible key-management server with WebAssembly plugins.
#[derive(Debug, Parser)]
#[command(name = "keyward", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    ///
    /// Example: keyward server --config keyward.toml
    ///          keyward server --dev
    Server(ServerArgs),
    /// Work with identities (hashes of client certificates' public keys).
    #[command(subcommand)]
    Identity(IdentityCommand),
}

#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// The TOML configuration file.
    #[arg(long, value_name = "FILE", conflicts_with = "dev", required_unless_present = "dev")]
    pub config: Option<PathBuf>,
    /// Run with an embedded default configuration, fresh certificates and an
    /// in-process keystore: nothing needs to exist on disk.
    #[arg(long)]
    pub dev: bool,
    /// Listen address (overrides the config's `address`).
    #[arg(long, value_name = "ADDR")]
    pub addr: Option<SocketAddr>,
}

#[derive(Debug, Subcommand)]
pub enum IdentityCommand {
    /// Print the identity of a certificate.
    ///
    /// Example: keyward identity of client.crt
    Of {
        /// PEM or DER certificate file.
        cert: PathBuf,
    },
}

/// Runs a parsed command line and returns the process exit code:
/// 0 success, 1 the server (or the file) said no, 2 usage.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Server(args) => crate::server::run_from_cli(args),
        Command::Identity(IdentityCommand::Of { cert }) => match std::fs::read(&cert) {
            Ok(bytes) => match crate::tls::identity_of_cert(&bytes) {
                Some(id) => {
                    println!("{id}");
                    ExitCode::SUCCESS
                }
                None => {
                    eprintln!("keyward: '{}' is not a certificate", cert.display());
                    ExitCode::from(1)
                }
            },
            Err(e) => {
                eprintln!("keyward: cannot read '{}': {e}", cert.display());
                ExitCode::from(1)
            }
        },
    }
}
