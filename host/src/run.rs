//! `keyward server`: from the command line to a running server. The wiring
//! the binary adds around `keyward_server`: `--dev`'s throw-away files, a
//! KES config passed by mistake, the log set-up and the start-up summary.

use keyward_server::config::Settings;
use keyward_server::server::Server;

async fn run_server(args: crate::cli::ServerArgs) -> Result<(), String> {
    if args.dev {
        let files = crate::dev::prepare().map_err(|e| e.to_string())?;
        let address = args.addr.unwrap_or_else(|| ([127, 0, 0, 1], 7373).into());
        let settings = crate::dev::settings(&files, address);
        // The directory holds the admin's private key: it goes when the
        // server does, however it stops short of a crash.
        let result = serve(settings, None, Some(&files)).await;
        if let Err(e) = std::fs::remove_dir_all(&files.dir) {
            eprintln!("keyward: cannot remove the dev directory {}: {e}", files.dir.display());
        }
        return result;
    }
    let path = args.config.ok_or(
        "keyward server needs --config FILE (a keyward TOML file), or --dev for a throw-away server \
         on 127.0.0.1:7373 with fresh certificates",
    )?;
    let mut settings = Settings::load(&path).map_err(|e| match crate::kesconf::looks_like_kes_config(&path) {
        true => format!(
            "{} looks like a KES configuration (YAML); convert it with:\n  \
             keyward config import {} > keyward.toml\nthen start with --config keyward.toml",
            path.display(),
            path.display()
        ),
        false => e.to_string(),
    })?;
    if let Some(addr) = args.addr {
        settings.address = addr;
    }
    serve(settings, Some(path), None).await
}

/// Builds and runs a server; for `--dev`, prints how to use it once its
/// port is bound.
async fn serve(
    settings: Settings,
    path: Option<std::path::PathBuf>,
    dev: Option<&crate::dev::DevFiles>,
) -> Result<(), String> {
    keyward_server::logging::init(settings.log.error).map_err(|e| e.to_string())?;
    let summary = Summary::of(&settings);
    let server = Server::build(settings, path).await.map_err(|e| e.to_string())?;
    let listener = server.bind().await.map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    if let Some(files) = dev {
        eprint!("{}", crate::dev::banner(files, addr));
    }
    tracing::info!(
        %addr,
        admin = %summary.admin,
        keystore = %summary.keystore,
        policies = summary.policies,
        audit = %summary.audit,
        "listening"
    );
    server.run(listener).await.map_err(|e| e.to_string())
}

/// What the start-up line tells an operator about the config in force.
struct Summary {
    admin: String,
    keystore: String,
    policies: usize,
    audit: String,
}

impl Summary {
    fn of(settings: &Settings) -> Summary {
        Summary {
            admin: match &settings.admin {
                keyward_server::config::Admin::Identity(id) => id.clone(),
                keyward_server::config::Admin::Disabled => "disabled".to_string(),
            },
            keystore: match &settings.keystore {
                Some(k) if k.seal.is_some() => format!("{} (sealed)", k.plugin),
                Some(k) => k.plugin.clone(),
                None => "memory (keys are lost at exit)".to_string(),
            },
            policies: settings.policies.len(),
            audit: if settings.audit.is_empty() {
                "none".to_string()
            } else {
                settings.audit.iter().map(|a| a.plugin.as_str()).collect::<Vec<_>>().join(", ")
            },
        }
    }
}

/// `keyward server`: runs until SIGTERM; exit code 1 if it cannot start.
pub fn run_from_cli(args: crate::cli::ServerArgs) -> std::process::ExitCode {
    // Key files written by keystore plugins (through WASI) and by dev mode
    // must be readable by this user only, as KES writes them (0600).
    #[cfg(unix)]
    // SAFETY: umask only changes this process's file-creation mask.
    unsafe {
        libc::umask(0o077);
    }
    let runtime = match keyward_server::server::runtime() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("keyward: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run_server(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keyward: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
