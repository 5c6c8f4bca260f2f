//! The `keyward` command line: clap definitions and dispatch.
//!
//! One binary is both server and client, as with KES: `keyward server` runs
//! the server, every other command talks to a running server (ours or KES)
//! or works on local files. The client commands live in [`crate::client`].

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A KES-compatible key-management server with WebAssembly plugins.
///
/// Client commands find the server and their credentials in flags or in the
/// environment: KEYWARD_SERVER, KEYWARD_CLIENT_CERT, KEYWARD_CLIENT_KEY,
/// KEYWARD_API_KEY, KEYWARD_CACERT, or the KES names KES_SERVER,
/// KES_CLIENT_CERT, KES_CLIENT_KEY, KES_API_KEY and MINIO_KES_SERVER,
/// MINIO_KES_CERT_FILE, MINIO_KES_KEY_FILE, MINIO_KES_API_KEY, so existing
/// KES setups work unchanged.
///
/// Exit codes: 0 success, 1 the server (or a file) said no, 2 usage.
#[derive(Debug, Parser)]
#[command(name = "keyward", version, about, long_about)]
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
    ///
    /// Environment:
    ///   KEYWARD_LOG         which log lines to write to stderr: a level (trace, debug,
    ///                       info, warn, error, off; default info), optionally with
    ///                       target=level directives, e.g. info,keyward=debug
    ///   KEYWARD_LOG_FORMAT  text (default) or json (one JSON object per line)
    ///   KEYWARD_CACHE_DIR   where compiled plugins are cached (default ~/.cache/keyward)
    #[command(verbatim_doc_comment, about = "Run the server")]
    Server(ServerArgs),
    /// Create, use and remove cryptographic keys.
    ///
    /// Example: keyward key create my-key
    #[command(subcommand)]
    Key(KeyCommand),
    /// Show the server's policies.
    ///
    /// Example: keyward policy ls
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Work with identities (hashes of client certificates' public keys).
    ///
    /// Example: keyward identity new my-app
    #[command(subcommand)]
    Identity(IdentityCommand),
    /// Show the server's version, uptime and keystore health.
    ///
    /// Example: keyward status
    Status(StatusArgs),
    /// Print the server's Prometheus metrics.
    ///
    /// Example: keyward metrics | grep kes_http_request_success
    Metrics(MetricsArgs),
    /// Follow the server's audit or error log.
    ///
    /// Example: keyward log audit
    #[command(subcommand)]
    Log(LogCommand),
    /// Convert configuration files.
    ///
    /// Example: keyward config import kes-config.yml > keyward.toml
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Inspect plugin components and check plugin manifests.
    ///
    /// Example: keyward plugin inspect keystore_fs.wasm
    ///          keyward plugin check plugins.toml
    #[command(subcommand, verbatim_doc_comment)]
    Plugin(PluginCommand),
    /// Print a shell completion script.
    ///
    /// Example: keyward completions bash > /etc/bash_completion.d/keyward
    ///          keyward completions zsh > ~/.zfunc/_keyward
    ///          keyward completions fish > ~/.config/fish/completions/keyward.fish
    #[command(verbatim_doc_comment, about = "Print a shell completion script")]
    Completions {
        /// The shell to generate completions for.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// The TOML configuration file.
    #[arg(long, value_name = "FILE", conflicts_with = "dev")]
    pub config: Option<PathBuf>,
    /// Run with an embedded default configuration, fresh certificates and an
    /// in-process keystore: nothing needs to exist on disk.
    #[arg(long)]
    pub dev: bool,
    /// Listen address (overrides the config's `address`).
    #[arg(long, value_name = "ADDR")]
    pub addr: Option<SocketAddr>,
}

/// How a client command reaches the server. Each flag falls back to the
/// environment (KEYWARD_* first, then the KES names, then the `kes` CLI's
/// MINIO_KES_* names) so scripts written for the `kes` CLI keep working.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientArgs {
    /// Server URL; several separated by commas are tried in turn while they cannot be reached
    /// [env: KEYWARD_SERVER, KES_SERVER or MINIO_KES_SERVER] [default: https://127.0.0.1:7373]
    #[arg(long, short = 's', value_name = "URL")]
    pub server: Option<String>,
    /// Client certificate (PEM) [env: KEYWARD_CLIENT_CERT, KES_CLIENT_CERT or MINIO_KES_CERT_FILE]
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Client private key (PEM) [env: KEYWARD_CLIENT_KEY, KES_CLIENT_KEY or MINIO_KES_KEY_FILE]
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// A `kes:v1:` API key instead of --cert and --key
    /// [env: KEYWARD_API_KEY, KES_API_KEY or MINIO_KES_API_KEY]
    #[arg(long, value_name = "KEY", conflicts_with_all = ["cert", "key"])]
    pub api_key: Option<String>,
    /// CA certificate(s) to verify the server with, instead of the system roots [env: KEYWARD_CACERT]
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// Do not verify the server's certificate (testing only).
    #[arg(long, short = 'k')]
    pub insecure: bool,
    /// Print machine-readable JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create new keys; fails if a key of that name exists.
    ///
    /// Example: keyward key create my-key
    Create {
        #[command(flatten)]
        client: ClientArgs,
        /// Names of the keys to create.
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
    /// Import existing key material (32 bytes, base64) under a new name.
    ///
    /// Example: keyward key import my-key "$(head -c 32 /dev/urandom | base64)"
    Import {
        #[command(flatten)]
        client: ClientArgs,
        /// Name of the new key.
        name: String,
        /// The key: 32 bytes in base64; `-` reads it from standard input.
        #[arg(value_name = "KEY")]
        material: String,
        /// Cipher the key is used with.
        #[arg(long, default_value = "AES256", value_parser = ["AES256", "ChaCha20"])]
        cipher: String,
    },
    /// Show a key's algorithm, creation time and creator.
    ///
    /// Example: keyward key describe my-key
    Describe {
        #[command(flatten)]
        client: ClientArgs,
        /// Name of the key.
        name: String,
    },
    /// List keys whose names start with PREFIX (all keys by default).
    ///
    /// Example: keyward key ls my-app-
    Ls {
        #[command(flatten)]
        client: ClientArgs,
        /// Only list names starting with this prefix.
        #[arg(default_value = "")]
        prefix: String,
    },
    /// Delete keys. Data encrypted with them can no longer be decrypted.
    ///
    /// Example: keyward key rm my-key
    Rm {
        #[command(flatten)]
        client: ClientArgs,
        /// Names of the keys to delete.
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
    /// Encrypt a (small) plaintext; prints the ciphertext in base64, as
    /// JSON `{"ciphertext":…}` when the output is not a terminal (as `kes`).
    ///
    /// Example: keyward key encrypt my-key 'my secret' --context app=billing
    ///          keyward key encrypt my-key 'my secret' | jq -r .ciphertext
    #[command(verbatim_doc_comment, about = "Encrypt a (small) plaintext; prints the ciphertext in base64")]
    Encrypt {
        #[command(flatten)]
        client: ClientArgs,
        /// Name of the key.
        name: String,
        /// The plaintext; read from standard input if absent or `-`.
        plaintext: Option<String>,
        /// Associated data that must be given again to decrypt.
        #[arg(long, value_name = "TEXT")]
        context: Option<String>,
    },
    /// Decrypt a base64 ciphertext; prints the plaintext as is.
    ///
    /// Example: keyward key decrypt my-key "$CIPHERTEXT" --context app=billing
    ///          keyward key decrypt my-key "$CIPHERTEXT" YXBwPWJpbGxpbmc=
    #[command(verbatim_doc_comment, about = "Decrypt a base64 ciphertext; prints the plaintext as is")]
    Decrypt {
        #[command(flatten)]
        client: ClientArgs,
        /// Name of the key.
        name: String,
        /// The ciphertext in base64; read from standard input if absent or `-`.
        ciphertext: Option<String>,
        /// The associated data in base64, as `kes key decrypt` takes it.
        #[arg(value_name = "CONTEXT", conflicts_with = "context")]
        context_b64: Option<String>,
        /// The associated data given when encrypting, as text.
        #[arg(long, value_name = "TEXT")]
        context: Option<String>,
    },
    /// Generate a data encryption key: a fresh 32-byte key in plaintext and
    /// encrypted with the named key (both base64), as JSON
    /// `{"plaintext":…,"ciphertext":…}` when the output is not a terminal.
    ///
    /// Example: keyward key dek my-key
    ///          keyward key dek my-key YXBwPWJpbGxpbmc= | jq -r .ciphertext
    #[command(verbatim_doc_comment, about = "Generate a data encryption key (plaintext and encrypted copy)")]
    Dek {
        #[command(flatten)]
        client: ClientArgs,
        /// Name of the key.
        name: String,
        /// Associated data in base64 bound to the encrypted copy, as `kes key dek` takes it.
        #[arg(value_name = "CONTEXT", conflicts_with = "context")]
        context_b64: Option<String>,
        /// Associated data bound to the encrypted copy, as text.
        #[arg(long, value_name = "TEXT")]
        context: Option<String>,
    },
    /// Compute HMAC-SHA-256 of a message with the key; prints it in hex.
    ///
    /// Example: keyward key hmac my-key 'message to authenticate'
    Hmac {
        #[command(flatten)]
        client: ClientArgs,
        /// Name of the key.
        name: String,
        /// The message; read from standard input if absent or `-`.
        message: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// List policies whose names start with PREFIX (all by default).
    ///
    /// Example: keyward policy ls
    Ls {
        #[command(flatten)]
        client: ClientArgs,
        /// Only list names starting with this prefix.
        #[arg(default_value = "")]
        prefix: String,
    },
    /// Show a policy's allow and deny rules.
    ///
    /// Example: keyward policy show my-app
    Show {
        #[command(flatten)]
        client: ClientArgs,
        /// Name of the policy.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum IdentityCommand {
    /// Print the identity of a certificate or of a `kes:v1:` API key.
    ///
    /// Example: keyward identity of client.crt
    ///          keyward identity of "$KES_API_KEY"
    #[command(verbatim_doc_comment)]
    Of {
        /// PEM or DER certificate file, or an API key.
        #[arg(value_name = "CERT|API_KEY")]
        cert: PathBuf,
    },
    /// Create a private key and a self-signed client certificate.
    ///
    /// Prints the new identity, to put into a policy's `identities`. Files
    /// are written readable only by their owner. Without --key/--cert they
    /// are NAME.key and NAME.crt in the current directory.
    ///
    /// With --api-key it writes no files and prints a new `kes:v1:` API key
    /// and its identity instead (piped: the API key alone, as `kes identity
    /// new`); clients use it with --api-key or KES_API_KEY.
    ///
    /// Example: keyward identity new my-app
    ///          keyward identity new --key app.key --cert app.crt --dns app.internal my-app
    ///          keyward identity new --api-key
    #[command(
        verbatim_doc_comment,
        about = "Create a private key and a self-signed client certificate, or an API key"
    )]
    New {
        /// The certificate's common name.
        #[arg(required_unless_present = "api_key")]
        name: Option<String>,
        /// Print a new API key and its identity instead of writing files.
        #[arg(long, conflicts_with_all = ["name", "ips", "dns", "key", "cert", "force"])]
        api_key: bool,
        /// An IP address to put into the certificate (repeatable).
        #[arg(long = "ip", value_name = "IP")]
        ips: Vec<IpAddr>,
        /// A DNS name to put into the certificate (repeatable).
        #[arg(long = "dns", value_name = "NAME")]
        dns: Vec<String>,
        /// Where to write the private key.
        #[arg(long, value_name = "FILE", requires = "cert")]
        key: Option<PathBuf>,
        /// Where to write the certificate.
        #[arg(long, value_name = "FILE", requires = "key")]
        cert: Option<PathBuf>,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
        /// Print the identity and file names as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List identities known to the server (with PREFIX: those starting with it).
    ///
    /// Example: keyward identity ls
    Ls {
        #[command(flatten)]
        client: ClientArgs,
        /// Only list identities starting with this prefix.
        #[arg(default_value = "")]
        prefix: String,
    },
    /// Show the identity you connect as, and its policy.
    ///
    /// Example: keyward identity self
    #[command(name = "self")]
    Self_ {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show an identity's policy (or that it is the admin).
    ///
    /// Example: keyward identity describe 3ecfcdf38fcbe141ae26a1030f81e96b753365a46760ae6b578698a97c59fd22
    Describe {
        #[command(flatten)]
        client: ClientArgs,
        /// The identity (hex).
        identity: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, clap::Args)]
pub struct MetricsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum LogCommand {
    /// Follow the audit log: one line per request (Ctrl-C to stop).
    ///
    /// Example: keyward log audit
    ///          keyward log audit --json | jq .request.path
    #[command(verbatim_doc_comment, about = "Follow the audit log: one line per request (Ctrl-C to stop)")]
    Audit {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Follow the error log (Ctrl-C to stop).
    ///
    /// Example: keyward log error
    Error {
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Convert a KES YAML server config to a keyward TOML config (on stdout).
    ///
    /// `${VAR}` references are kept as they are; keyward expands them at
    /// start-up. KES keystores without a keyward plugin are refused with
    /// their name.
    ///
    /// Example: keyward config import kes-config.yml > keyward.toml
    Import {
        /// The KES config file; `-` reads standard input.
        file: PathBuf,
    },
}

/// Runs a parsed command line and returns the process exit code:
/// 0 success, 1 the server (or the file) said no, 2 usage.
/// `keyward plugin ...`
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Print a component's sha256 (its manifest pin), world and WIT version,
    /// imports and exports.
    ///
    /// Example: keyward plugin inspect plugins/keystore_fs.wasm
    #[command(verbatim_doc_comment)]
    Inspect {
        /// The `.wasm` component.
        file: PathBuf,
    },
    /// Check a manifest: every entry is pinned, its pin matches the file, it
    /// compiles, implements its declared world, and its granted dirs exist.
    ///
    /// Example: keyward plugin check examples/plugins.toml
    #[command(verbatim_doc_comment)]
    Check {
        /// The `plugins.toml` manifest.
        manifest: PathBuf,
    },
    /// Add a component to a manifest: fetch it (a local file, an https://
    /// URL or an oci:// artifact), check it implements a world this host
    /// runs, pin its sha256 and write a `[[plugin]]` entry with exactly the
    /// grants given (none by default). A tag is resolved to the digest it
    /// names, and the entry's source records that digest. The manifest keeps
    /// its comments and order; on any failure it is left as it was.
    ///
    /// Registry access comes from the environment: KEYWARD_OCI_TOKEN, or
    /// KEYWARD_OCI_USERNAME and KEYWARD_OCI_PASSWORD, else docker's
    /// config.json (DOCKER_CONFIG); KEYWARD_OCI_CA_FILE adds trusted CA
    /// certificates; KEYWARD_OCI_PLAIN_HTTP lists host:port registries
    /// reached over plain HTTP.
    ///
    /// Example: keyward plugin add ./etcd.wasm --manifest plugins.toml --grant-host https://etcd:2379
    ///          keyward plugin add oci://registry.example/keyward/etcd:1.0 --grant-host https://etcd:2379
    #[command(verbatim_doc_comment)]
    Add {
        /// A `.wasm` file, an `https://` URL, or `oci://REGISTRY/REPOSITORY[:TAG][@sha256:DIGEST]`.
        source: String,
        /// The manifest to edit (created if missing).
        #[arg(long, default_value = "plugins.toml")]
        manifest: PathBuf,
        /// The entry's name (default: the file name without `.wasm`).
        #[arg(long)]
        name: Option<String>,
        /// Where a downloaded component is saved (default: the manifest's directory).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Grant a directory, HOST:GUEST (e.g. /var/lib/keyward/keys:/data). Repeatable.
        #[arg(long = "grant-dir", value_name = "HOST:GUEST")]
        grant_dir: Vec<String>,
        /// Grant outbound HTTP to an origin (e.g. https://vault:8200). Repeatable.
        #[arg(long = "grant-host", value_name = "ORIGIN")]
        grant_host: Vec<String>,
        /// Pass an environment variable through. Repeatable.
        #[arg(long = "grant-env", value_name = "NAME")]
        grant_env: Vec<String>,
        /// Memory limit per instance (e.g. 64MiB).
        #[arg(long)]
        memory: Option<String>,
        /// Time limit per call (e.g. 2s).
        #[arg(long)]
        call_timeout: Option<String>,
    },
    /// Remove an entry from a manifest (its file is left in place).
    Rm {
        /// The entry's name.
        name: String,
        #[arg(long, default_value = "plugins.toml")]
        manifest: PathBuf,
    },
    /// List a manifest's entries: name, kind, file, pin, and whether the file
    /// is there, matches its pin and implements a world this host runs.
    Ls {
        #[arg(long, default_value = "plugins.toml")]
        manifest: PathBuf,
    },
    /// Start a plugin project: NAME/ with the WIT it implements, a working
    /// implementation and a README with the build command.
    ///
    /// Example: keyward plugin new --lang rust --kind keystore my-store
    #[command(verbatim_doc_comment)]
    New {
        /// The project's (and plugin's) name.
        name: String,
        /// The language: rust, python or js.
        #[arg(long, default_value = "rust")]
        lang: String,
        /// The world: keystore or audit-sink (a sink writing each batch to its standard error).
        #[arg(long, default_value = "keystore")]
        kind: String,
        /// Where to create NAME/.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Run the keystore contract against a component: every rule of the
    /// `keystore` world (create never overwrites, not-found/exists, opaque
    /// values, listings and paging, concurrent creates with one winner), with
    /// pooled instances, in a fresh directory granted as /data unless
    /// --grant-dir says otherwise.
    ///
    /// Example: keyward plugin test target/wasm32-wasip2/release/my_store.wasm
    #[command(verbatim_doc_comment)]
    Test {
        /// The `.wasm` component (a keystore).
        file: PathBuf,
        /// Grant a directory, HOST:GUEST, instead of a fresh one as /data. Repeatable.
        #[arg(long = "grant-dir", value_name = "HOST:GUEST")]
        grant_dir: Vec<String>,
        /// Grant outbound HTTP to an origin. Repeatable.
        #[arg(long = "grant-host", value_name = "ORIGIN")]
        grant_host: Vec<String>,
        /// The `init` configuration as JSON (default: {"path": "/data"}).
        #[arg(long)]
        config: Option<String>,
        /// Time limit per call (e.g. 5s for a Python or JavaScript plugin).
        #[arg(long)]
        call_timeout: Option<String>,
    },
    /// Fetch again every entry that has a `source` URL, into its `path`,
    /// when what is served still matches the pin.
    Pull {
        #[arg(long, default_value = "plugins.toml")]
        manifest: PathBuf,
    },
    /// Publish a component to an OCI registry as a WebAssembly artifact
    /// (the layout `wkg oci push` writes, which `wkg oci pull` and
    /// `keyward plugin add` read). Credentials and TLS as for `plugin add`.
    ///
    /// Example: keyward plugin push target/wasm32-wasip2/release/my_store.wasm oci://registry.example/keyward/my-store:1.0
    #[command(verbatim_doc_comment)]
    Push {
        /// The component (`.wasm`).
        file: PathBuf,
        /// Where to: `oci://REGISTRY/REPOSITORY:TAG`.
        target: String,
    },
}

fn plugin_command(cmd: PluginCommand) -> ExitCode {
    use crate::plugins;
    let result = match cmd {
        PluginCommand::Inspect { file } => keyward_plugin_host::tools::inspect(&file).map_err(|e| e.to_string()),
        PluginCommand::Check { manifest } => keyward_plugin_host::tools::check(&manifest).map_err(|e| e.to_string()),
        PluginCommand::Add { source, manifest, name, dir, grant_dir, grant_host, grant_env, memory, call_timeout } => {
            plugins::add(&plugins::AddRequest {
                source,
                manifest,
                name,
                dir,
                grant_dirs: grant_dir,
                grant_hosts: grant_host,
                grant_env,
                memory,
                call_timeout,
            })
            .map_err(|e| e.to_string())
        }
        PluginCommand::Rm { name, manifest } => plugins::rm(&manifest, &name).map_err(|e| e.to_string()),
        PluginCommand::Ls { manifest } => plugins::ls(&manifest).map_err(|e| e.to_string()),
        PluginCommand::Pull { manifest } => plugins::pull(&manifest).map_err(|e| e.to_string()),
        PluginCommand::Push { file, target } => plugins::push(&file, &target).map_err(|e| e.to_string()),
        PluginCommand::Test { file, grant_dir, grant_host, config, call_timeout } => {
            plugins::test(&plugins::TestRequest {
                file,
                grant_dirs: grant_dir,
                grant_hosts: grant_host,
                config,
                call_timeout,
            })
            .map_err(|e| e.to_string())
        }
        PluginCommand::New { name, lang, kind, dir } => plugins::new(&lang, &kind, &name, &dir)
            .map(|dir| format!("created {} (see its README.md for the build command)\n", dir.display()))
            .map_err(|e| e.to_string()),
    };
    match result {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("keyward: {e}");
            ExitCode::from(1)
        }
    }
}

pub fn run(cli: Cli) -> ExitCode {
    use crate::client;
    match cli.command {
        Command::Server(args) => crate::run::run_from_cli(args),
        Command::Key(cmd) => client::finish(client::key::run(cmd)),
        Command::Policy(cmd) => client::finish(client::policy::run(cmd)),
        Command::Identity(cmd) => client::finish(client::identity::run(cmd)),
        Command::Status(args) => client::finish(client::status::status(args.client)),
        Command::Metrics(args) => client::finish(client::status::metrics(args.client)),
        Command::Log(cmd) => client::finish(client::log::run(cmd)),
        Command::Plugin(cmd) => plugin_command(cmd),
        Command::Config(ConfigCommand::Import { file }) => client::finish(client::config_import(&file)),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "keyward", &mut script);
            client::finish(client::output::raw(&script))
        }
    }
}
