//! The `keyward` command line.

use std::net::SocketAddr;
use std::path::PathBuf;

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
