//! `keyward identity of|new|ls|self|describe`.
//!
//! `of` and `new` work on local files only; the others ask the server.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::api::segment;
use super::apikey::{self, ApiKey};
use super::key::{print_names, with_api};
use super::output::{self, str_of};
use super::policy::{patterns, print_rules};
use super::ClientError;
use crate::cli::IdentityCommand;

pub fn run(cmd: IdentityCommand) -> Result<(), ClientError> {
    match cmd {
        IdentityCommand::Of { cert } => match cert.to_str().filter(|c| apikey::looks_like_api_key(c)) {
            Some(key) => of_api_key(key),
            None => of(&cert),
        },
        IdentityCommand::New { api_key: true, json, .. } => new_api_key(json),
        IdentityCommand::New { name, ips, dns, key, cert, force, json, .. } => {
            let mut sans: Vec<String> = dns;
            sans.extend(ips.iter().map(|ip| ip.to_string()));
            new(name.as_deref().unwrap_or_default(), sans, key, cert, force, json)
        }
        IdentityCommand::Ls { client, prefix } => {
            let json_out = client.json;
            with_api(&client, |api| async move {
                let ids = api.list("/v1/identity/list/", prefix.trim_end_matches('*'), "identities").await?;
                print_names(&ids, json_out)
            })
        }
        IdentityCommand::Self_ { client } => {
            let json_out = client.json;
            with_api(&client, |api| async move {
                let v: Value = api.get_json("/v1/identity/self/describe").await?;
                describe_self(&v, json_out)
            })
        }
        IdentityCommand::Describe { client, identity } => {
            let json_out = client.json;
            with_api(&client, |api| async move {
                let v: Value = api.get_json(&format!("/v1/identity/describe/{}", segment(&identity))).await?;
                if json_out {
                    return output::json(&v);
                }
                let admin = v.get("admin").and_then(Value::as_bool).unwrap_or(false);
                output::fields(&[
                    ("Identity", identity.clone()),
                    ("Admin", if admin { "yes".into() } else { String::new() }),
                    ("Policy", str_of(&v, "policy").to_string()),
                    ("Created", str_of(&v, "created_at").to_string()),
                    ("Created by", str_of(&v, "created_by").to_string()),
                ])
            })
        }
    }
}

/// Prints a certificate's identity: the hash a server's policies name.
fn of(cert: &Path) -> Result<(), ClientError> {
    let bytes =
        std::fs::read(cert).map_err(|e| ClientError::Failed(format!("cannot read '{}': {e}", cert.display())))?;
    match keyward_server::tls::identity_of_cert(&bytes) {
        Some(id) => output::line(&id),
        None => Err(ClientError::Failed(format!("'{}' is not a certificate", cert.display()))),
    }
}

/// Prints an API key's identity: what a policy names to let the key in.
fn of_api_key(text: &str) -> Result<(), ClientError> {
    let key = ApiKey::parse(text).map_err(|e| ClientError::Usage(e.to_string()))?;
    output::line(&key.identity())
}

/// Prints a new API key and its identity. Piped, the key alone, as `kes
/// identity new` prints it, so `export KES_API_KEY=$(keyward identity new
/// --api-key)` works; the identity can be had again with `identity of`.
fn new_api_key(json_out: bool) -> Result<(), ClientError> {
    let key = ApiKey::generate().map_err(|e| ClientError::Failed(e.to_string()))?;
    let text = key.encode();
    if json_out {
        return output::json(&json!({ "api_key": text.as_str(), "identity": key.identity() }));
    }
    if !std::io::stdout().is_terminal() {
        return output::line(&text);
    }
    output::line(&zeroize::Zeroizing::new(format!("API key:  {}", text.as_str())))?;
    output::line(&format!("Identity: {}", key.identity()))?;
    output::line("\nKeep the API key secret; the identity goes into a policy's `identities`.")
}

/// The policy name and its allow and deny rules from a self-description in
/// any generation's shape: ours and the old one put `policy_name` at the top
/// level (ours the rules too; old: `policy.Allow`), the new one nests
/// `policy: {name?, allow, deny}`.
fn self_policy(v: &Value) -> (String, Vec<String>, Vec<String>) {
    let nested = v.get("policy").filter(|p| p.is_object());
    let rules = |lower: &str, upper: &str| {
        let direct = v.get(lower).filter(|r| !r.is_null());
        let inner = nested.and_then(|p| p.get(lower).or_else(|| p.get(upper)));
        patterns(direct.or(inner))
    };
    let name = match str_of(v, "policy_name") {
        "" => nested.map(|p| str_of(p, "name")).unwrap_or_default(),
        name => name,
    };
    (name.to_string(), rules("allow", "Allow"), rules("deny", "Deny"))
}

fn describe_self(v: &Value, json_out: bool) -> Result<(), ClientError> {
    let (policy, allow, deny) = self_policy(v);
    let admin = v.get("admin").and_then(Value::as_bool).unwrap_or(false);
    if json_out {
        return output::json(&json!({
            "identity": str_of(v, "identity"),
            "admin": admin,
            "policy": policy,
            "allow": allow,
            "deny": deny,
            "created_at": str_of(v, "created_at"),
            "created_by": str_of(v, "created_by"),
        }));
    }
    output::fields(&[
        ("Identity", str_of(v, "identity").to_string()),
        ("Admin", if admin { "yes".into() } else { "no".into() }),
        ("Policy", policy),
        ("Created", str_of(v, "created_at").to_string()),
        ("Created by", str_of(v, "created_by").to_string()),
    ])?;
    print_rules("Allow", &allow)?;
    print_rules("Deny", &deny)
}

/// Default file names next to the working directory: only for a name that
/// is a plain file name, so `identity new ../x` cannot write elsewhere.
fn default_path(name: &str, ext: &str) -> Result<PathBuf, ClientError> {
    let plain = !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\']);
    if !plain {
        return Err(ClientError::Usage(format!(
            "'{name}' cannot be used as a file name; choose the files with --key FILE --cert FILE"
        )));
    }
    Ok(PathBuf::from(format!("{name}.{ext}")))
}

/// Writes `contents` readable only by the owner. Without `force` the file
/// must not exist (checked atomically by the open), so nothing is lost.
fn write_private(path: &Path, contents: &[u8], force: bool) -> Result<(), ClientError> {
    let fail = |e: std::io::Error| ClientError::Failed(format!("cannot write '{}': {e}", path.display()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true);
    if force {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(fail)?;
    // An overwritten file keeps its old mode; tighten it.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
    }
    f.write_all(contents).map_err(fail)?;
    f.sync_all().map_err(fail)
}

fn new(
    name: &str,
    sans: Vec<String>,
    key: Option<PathBuf>,
    cert: Option<PathBuf>,
    force: bool,
    json_out: bool,
) -> Result<(), ClientError> {
    if name.trim().is_empty() {
        return Err(ClientError::Usage("the identity name is empty".into()));
    }
    let key_path = match key {
        Some(k) => k,
        None => default_path(name, "key")?,
    };
    let cert_path = match cert {
        Some(c) => c,
        None => default_path(name, "crt")?,
    };
    if key_path == cert_path {
        return Err(ClientError::Usage("--key and --cert name the same file".into()));
    }
    if !force {
        for p in [&key_path, &cert_path] {
            if p.symlink_metadata().is_ok() {
                return Err(ClientError::Failed(format!("'{}' exists; use --force to overwrite it", p.display())));
            }
        }
    }
    let (cert_pem, key_pem) = crate::dev::self_signed(name, sans, true)
        .map_err(|e| ClientError::Failed(format!("cannot create the certificate: {e}")))?;
    let key_pem = zeroize::Zeroizing::new(key_pem);
    let identity = keyward_server::tls::identity_of_cert(cert_pem.as_bytes())
        .ok_or_else(|| ClientError::Failed("cannot compute the identity of the new certificate".into()))?;
    write_private(&key_path, key_pem.as_bytes(), force)?;
    write_private(&cert_path, cert_pem.as_bytes(), force)?;
    if json_out {
        return output::json(&json!({
            "identity": identity,
            "key": key_path.display().to_string(),
            "cert": cert_path.display().to_string(),
        }));
    }
    output::line(&identity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_paths_refuse_path_like_names() {
        assert_eq!(default_path("app", "crt").unwrap(), PathBuf::from("app.crt"));
        assert!(default_path("../app", "crt").is_err());
        assert!(default_path("..", "key").is_err());
    }

    #[test]
    fn self_descriptions_of_every_generation_are_read() {
        let ours = json!({"identity": "ab", "admin": false, "policy_name": "p", "allow": {"/v1/status": {}}});
        let new = json!({"identity": "ab", "policy": {"name": "p", "allow": {"/v1/status": {}}}});
        let old = json!({"identity": "ab", "admin": false, "policy_name": "p", "policy": {"Allow": ["/v1/status"], "Deny": null}});
        for v in [ours, new, old] {
            let (name, allow, deny) = self_policy(&v);
            assert_eq!((name.as_str(), allow, deny), ("p", vec!["/v1/status".to_string()], vec![]), "{v}");
        }
    }
}
