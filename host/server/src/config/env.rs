//! `${VAR}` references in string values, replaced from the environment.

use super::file::File;
use super::secret::Secret;
use super::{invalid, ConfigError};

/// Replaces every `${VAR}` in `value` from the environment.
///
/// KES only expands a scalar that is entirely `${VAR}`; we accept references
/// anywhere in a string, which is a superset. `$` not followed by `{` is literal.
pub fn expand_env(key: &str, value: &str) -> Result<String, ConfigError> {
    expand_env_shown(key, value, true)
}

/// [`expand_env`]; `show = false` keeps `value` out of error messages.
fn expand_env_shown(key: &str, value: &str, show: bool) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(invalid(
                key,
                if show { format!("unterminated '${{' in '{value}'") } else { "unterminated '${'".to_string() },
            ));
        };
        let var = &after[..end];
        if var.is_empty() {
            return Err(invalid(key, "empty '${}' reference"));
        }
        match std::env::var(var) {
            Ok(v) => out.push_str(&v),
            Err(_) => return Err(ConfigError::MissingEnv { key: key.to_string(), var: var.to_string() }),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn expand_in_place(key: &str, value: &mut String) -> Result<(), ConfigError> {
    if value.contains("${") {
        *value = expand_env(key, value)?;
    }
    Ok(())
}

fn expand_opt(key: &str, value: &mut Option<String>) -> Result<(), ConfigError> {
    match value {
        Some(v) => expand_in_place(key, v),
        None => Ok(()),
    }
}

/// Expands `${VAR}` in a secret without echoing it in an error, replacing
/// the whole [`Secret`] so the unexpanded text is wiped on drop.
fn expand_secret(key: &str, value: &mut Option<Secret>) -> Result<(), ConfigError> {
    if let Some(v) = value {
        if v.expose().contains("${") {
            *v = Secret::new(expand_env_shown(key, v.expose(), false)?);
        }
    }
    Ok(())
}

fn expand_table(key: &str, table: &mut toml::Table) -> Result<(), ConfigError> {
    for (k, v) in table.iter_mut() {
        expand_value(&format!("{key}.{k}"), v)?;
    }
    Ok(())
}

fn expand_value(key: &str, value: &mut toml::Value) -> Result<(), ConfigError> {
    match value {
        toml::Value::String(s) => expand_in_place(key, s),
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_value(&format!("{key}[{i}]"), item)?;
            }
            Ok(())
        }
        toml::Value::Table(t) => expand_table(key, t),
        _ => Ok(()),
    }
}

impl File {
    /// Replaces `${VAR}` in every string value.
    pub fn expand_env(&mut self) -> Result<(), ConfigError> {
        expand_opt("address", &mut self.address)?;
        if let Some(admin) = &mut self.admin {
            expand_in_place("admin.identity", &mut admin.identity)?;
        }
        if let Some(tls) = &mut self.tls {
            expand_in_place("tls.key", &mut tls.key)?;
            expand_in_place("tls.cert", &mut tls.cert)?;
            expand_secret("tls.password", &mut tls.password)?;
            expand_opt("tls.ca", &mut tls.ca)?;
            expand_opt("tls.auth", &mut tls.auth)?;
        }
        let e = &mut self.cache.expiry;
        expand_opt("cache.expiry.any", &mut e.any)?;
        expand_opt("cache.expiry.unused", &mut e.unused)?;
        expand_opt("cache.expiry.offline", &mut e.offline)?;
        expand_opt("log.error", &mut self.log.error)?;
        expand_opt("log.audit", &mut self.log.audit)?;
        for (path, api) in &mut self.api {
            expand_opt(&format!("api.\"{path}\".timeout"), &mut api.timeout)?;
        }
        for (name, p) in &mut self.policy {
            for (list, field) in [(&mut p.allow, "allow"), (&mut p.deny, "deny"), (&mut p.identities, "identities")] {
                for (i, v) in list.iter_mut().enumerate() {
                    expand_in_place(&format!("policy.{name}.{field}[{i}]"), v)?;
                }
            }
        }
        for (i, k) in self.keys.iter_mut().enumerate() {
            expand_in_place(&format!("keys[{i}].name"), &mut k.name)?;
        }
        if let Some(p) = &mut self.plugins {
            expand_in_place("plugins.manifest", &mut p.manifest)?;
        }
        if let Some(ks) = &mut self.keystore {
            expand_in_place("keystore.plugin", &mut ks.plugin)?;
            expand_opt("keystore.seal", &mut ks.seal)?;
            if let Some(c) = &mut ks.config {
                expand_table("keystore.config", c)?;
            }
        }
        for (i, a) in self.audit.iter_mut().enumerate() {
            expand_in_place(&format!("audit[{i}].plugin"), &mut a.plugin)?;
            if let Some(c) = &mut a.config {
                expand_table(&format!("audit[{i}].config"), c)?;
            }
        }
        let l = &mut self.limits;
        expand_opt("limits.handshake_timeout", &mut l.handshake_timeout)?;
        expand_opt("limits.header_timeout", &mut l.header_timeout)?;
        expand_opt("limits.body_timeout", &mut l.body_timeout)?;
        expand_opt("limits.write_timeout", &mut l.write_timeout)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::{minimal, parse, ID, PW};
    use crate::config::Admin;

    #[test]
    fn env_references_are_expanded_and_missing_ones_named() {
        std::env::set_var("KEYWARD_TEST_ADMIN_ID", ID);
        let text = "[admin]\nidentity = \"${KEYWARD_TEST_ADMIN_ID}\"\n[tls]\nkey = \"${KEYWARD_TEST_UNSET_VAR}\"\ncert = \"c\"\n";
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains("KEYWARD_TEST_UNSET_VAR") && err.contains("tls.key"), "{err}");
        let text = "[admin]\nidentity = \"${KEYWARD_TEST_ADMIN_ID}\"\n[tls]\nkey = \"k\"\ncert = \"c\"\n";
        assert_eq!(parse(text).unwrap().admin, Admin::Identity(ID.into()));
    }

    #[test]
    fn password_from_env_is_expanded_and_never_echoed() {
        std::env::set_var("KEYWARD_TEST_TLS_PW", PW);
        let text = format!("{}password = \"${{KEYWARD_TEST_TLS_PW}}\"\n", minimal());
        assert_eq!(parse(&text).unwrap().tls.password.as_ref().map(Secret::expose), Some(PW));
        let text = format!("{}password = \"{PW}${{oops\"\n", minimal());
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("tls.password") && !err.contains(PW), "{err}");
    }
}
