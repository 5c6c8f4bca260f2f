//! The `keyward` binary: server and client in one.

use std::process::ExitCode;

use clap::Parser;
use keyward::cli::{Cli, Command, IdentityCommand, ServerArgs};
use keyward::config::Settings;
use keyward::server::Server;

fn init_tracing(enabled: bool) {
    let filter = if enabled {
        tracing_subscriber::EnvFilter::try_from_env("KEYWARD_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    } else {
        tracing_subscriber::EnvFilter::new("off")
    };
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

async fn run_server(args: ServerArgs) -> Result<(), String> {
    let (mut settings, path) = if args.dev {
        let files = keyward::dev::prepare().map_err(|e| e.to_string())?;
        let address = args.addr.unwrap_or_else(|| ([127, 0, 0, 1], 7373).into());
        eprint!("{}", keyward::dev::banner(&files, address));
        (keyward::dev::settings(&files, address), None)
    } else {
        let path = args.config.ok_or("--config FILE or --dev is required")?;
        (Settings::load(&path).map_err(|e| e.to_string())?, Some(path))
    };
    if let Some(addr) = args.addr {
        settings.address = addr;
    }
    init_tracing(settings.log.error);
    let server = Server::build(settings, path).await.map_err(|e| e.to_string())?;
    let listener = server.bind().await.map_err(|e| e.to_string())?;
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "listening");
    }
    server.run(listener).await.map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Server(args) => {
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("keyward: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(run_server(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("keyward: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Identity(IdentityCommand::Of { cert }) => match std::fs::read(&cert) {
            Ok(bytes) => match keyward::tls::identity_of_cert(&bytes) {
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
