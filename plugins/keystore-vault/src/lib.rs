//! `keystore-vault`: keyward keys in HashiCorp Vault or OpenBao K/V, laid out
//! exactly as MinIO KES's Vault keystore lays them out, so KES and keyward
//! can serve the same keys. See README.md for configuration, layout, token
//! handling and consistency.
//!
//! Modules: [`config`] (the `[keystore.config]` table), [`http`] (one
//! exchange over `wasi:http`), [`vault`] (headers, retries, consistency
//! index), [`auth`] and [`state`] (the token shared by all instances through
//! `state_dir`), [`kv`] (paths and value encoding), [`transit`] (optional
//! wrapping), [`errors`] (the WIT error cases).

mod auth;
mod config;
mod errors;
mod http;
mod kv;
mod state;
mod transit;
mod vault;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use keyward_sdk::{log, Error, Keystore, Page};
use serde_json::{json, Value};
use waki::bindings::wasi::http::types::Method;

use crate::config::{Config, KvVersion};
use crate::errors::{internal, invalid, unavailable, vault_errors};
use crate::http::Request;
use crate::kv::{check_name, from_stored, is_transit, read_answer, to_stored, Found};
use crate::vault::{Ns, Vault};

/// The largest listing answer read (KES reads up to 32 MiB; an instance has
/// 64 MiB by default, and the names are copied once more).
const MAX_LIST_BODY: usize = 16 << 20;

/// `sys/health` with every state answered 2xx, so the body tells which.
const HEALTH_QUERY: &str = "uninitcode=299&sealedcode=299&standbycode=299&performancestandbycode=299&\
drsecondarycode=299&removedcode=299&haunhealthycode=299";

struct VaultKeystore {
    vault: Vault,
}

/// Whether the key exists, from the answer to a read: `None` when Vault
/// would not say (403: a policy may allow deleting but not reading).
fn present(config: &Config, name: &str, reply: &vault::Reply) -> Result<Option<bool>, Error> {
    match reply.status {
        200 => Ok(Some(true)),
        403 => Ok(None),
        // A v2 key whose version 1 was deleted still has its metadata.
        404 if config.version == KvVersion::V2 && reply.json["data"]["metadata"].is_object() => Ok(Some(true)),
        _ => match read_answer(config, name, reply)? {
            Found::Missing => Ok(Some(false)),
            Found::Value(_) => Ok(Some(true)),
        },
    }
}

impl VaultKeystore {
    fn config(&self) -> &Config {
        &self.vault.config
    }

    /// The string to store for `value`: transit ciphertext or the value itself.
    fn stored(&self, value: &[u8], deadline: Instant) -> Result<String, Error> {
        match &self.config().transit {
            Some(transit) => self.vault.seal(transit, value, deadline),
            None => Ok(to_stored(value)),
        }
    }

    fn put(&self, name: &str, body: &Value, deadline: Instant) -> Result<vault::Reply, Error> {
        let path = self.config().secret_path(name);
        self.vault.authed(
            || {
                let mut request = Request::new(Method::Put, path.clone());
                request.body = Some(body.to_string().into_bytes());
                request
            },
            deadline,
        )
    }

    /// Reads a key; a miss on a standby is read again on the active node.
    /// OpenBao (2.5 and later) answers reads on a standby from its own copy,
    /// which trails the active node by the latest writes, so a key another
    /// keyward has just created may not be there yet. Only misses pay the
    /// extra requests; the active node must be among the granted `hosts`.
    fn read(&self, name: &str, deadline: Instant) -> Result<vault::Reply, Error> {
        let reply = self.vault.authed(|| self.config().read_request(name), deadline)?;
        if !matches!(read_answer(self.config(), name, &reply), Ok(Found::Missing)) {
            return Ok(reply);
        }
        let Some(active) = self.vault.active_node(deadline) else { return Ok(reply) };
        let on_active = || {
            let mut request = self.config().read_request(name);
            request.node = Some(active.clone());
            request
        };
        match self.vault.authed(on_active, deadline) {
            Ok(again) => Ok(again),
            Err(e) => {
                static WARNED: AtomicBool = AtomicBool::new(false);
                if !WARNED.swap(true, Ordering::Relaxed) {
                    log::warn(&format!(
                        "vault: a key missing on the standby could not be read on the active node {active} ({}); \
                         keys just created by another keyward may not be found for a moment",
                        auth::text(&e)
                    ));
                }
                Ok(reply)
            }
        }
    }

    /// Whether the key is there, by reading it: `None` if Vault will not say.
    fn exists(&self, name: &str, deadline: Instant) -> Result<Option<bool>, Error> {
        let reply = self.vault.authed(|| self.config().read_request(name), deadline)?;
        present(self.config(), name, &reply)
    }
}

impl Keystore for VaultKeystore {
    fn init(config: &str) -> Result<Self, Error> {
        let env_token = std::env::var("VAULT_TOKEN").ok();
        let config = Config::parse(config, env_token)?;
        let vault = Vault::new(config);
        vault.store.check().map_err(invalid)?;
        let deadline = vault.deadline();
        match vault.token(deadline) {
            Ok(_) => vault.check_mount(deadline).map_err(|e| invalid(auth::text(&e)))?,
            // Wrong credentials stop the start, as with KES; an unreachable
            // Vault does not: cached keys can be served meanwhile.
            Err(f) if f.refused => return Err(invalid(f.message)),
            Err(f) => log::warn(&format!("vault: {}; trying again when a key is needed", f.message)),
        }
        Ok(VaultKeystore { vault })
    }

    /// v1 as KES: read first, then write. v2 writes with `cas: 0` at once:
    /// Vault refuses it when the name is taken, so of two creators racing
    /// only one succeeds, without a read before every create. A refused write (a
    /// check-and-set mismatch, or 403 from a policy granting `create` but
    /// not `update`) is read back: the name is taken, unless by this very
    /// create (an attempt whose answer was lost, then retried; values hold
    /// fresh random key material, so the same string means it was ours).
    fn create(&self, name: &str, value: &[u8]) -> Result<(), Error> {
        check_name(name)?;
        let deadline = self.vault.deadline();
        if self.config().version == KvVersion::V1 && self.exists(name, deadline)? == Some(true) {
            return Err(Error::Exists);
        }
        let stored = self.stored(value, deadline)?;
        let body = match self.config().version {
            KvVersion::V1 => json!({ name: stored }),
            KvVersion::V2 => json!({"data": { name: stored }, "options": {"cas": 0}}),
        };
        let reply = self.put(name, &body, deadline)?;
        let location = self.config().location(name);
        let conflict = match reply.status {
            // v1 answers 204, v2 200 with the version; a v1 mount given a v2
            // write answers 204 too.
            200 => false,
            204 if self.config().version == KvVersion::V1 => false,
            204 => {
                return Err(internal(format!(
                    "writing '{location}': the engine answered as a K/V version 1 mount, but version = \"v2\" is configured"
                )))
            }
            400 => vault_errors(&reply.json).contains("check-and-set"),
            403 => true,
            _ => return Err(reply.error(&format!("writing '{location}'"))),
        };
        if !conflict {
            return if reply.ok() { Ok(()) } else { Err(reply.error(&format!("writing '{location}'"))) };
        }
        let again = self.read(name, deadline)?;
        match read_answer(self.config(), name, &again) {
            Ok(Found::Value(s)) if s == stored => Ok(()),
            _ if present(self.config(), name, &again).ok().flatten() == Some(true) => Err(Error::Exists),
            _ => Err(reply.error(&format!("writing '{location}'"))),
        }
    }

    fn get(&self, name: &str) -> Result<Vec<u8>, Error> {
        check_name(name)?;
        let deadline = self.vault.deadline();
        let reply = self.read(name, deadline)?;
        let stored = match read_answer(self.config(), name, &reply)? {
            Found::Missing => return Err(Error::NotFound),
            Found::Value(s) => s,
        };
        let location = self.config().location(name);
        if !is_transit(&stored) {
            return from_stored(&stored, &location);
        }
        match &self.config().transit {
            Some(transit) => self.vault.unseal(transit, &stored, &location, deadline),
            None => Err(internal(format!(
                "'{location}' is encrypted with a Vault transit key, but no transit key is configured"
            ))),
        }
    }

    fn delete(&self, name: &str) -> Result<(), Error> {
        check_name(name)?;
        let deadline = self.vault.deadline();
        // Vault answers a delete of nothing with 204, so ask first.
        if self.exists(name, deadline)? == Some(false) {
            return Err(Error::NotFound);
        }
        let path = self.config().delete_path(name);
        let reply = self.vault.authed(|| Request::new(Method::Delete, path.clone()), deadline)?;
        match reply.status {
            200..=299 => Ok(()),
            404 => Err(Error::NotFound),
            _ => Err(reply.error(&format!("deleting '{}'", self.config().location(name)))),
        }
    }

    fn list(&self, prefix: &str, continue_at: &str, limit: u32) -> Result<Page, Error> {
        let deadline = self.vault.deadline();
        let path = self.config().list_path();
        let reply = self.vault.authed(
            || {
                let mut request = Request::new(Method::Get, path.clone());
                request.query = "list=true".into();
                request.max_body = MAX_LIST_BODY;
                request
            },
            deadline,
        )?;
        let what = format!("listing '{}'", self.config().prefix);
        let keys = match reply.status {
            200 => reply.json["data"]["keys"]
                .as_array()
                .ok_or_else(|| internal(format!("{what}: invalid key listing format")))?,
            // An empty folder, or a K/V mix-up / missing mount (named).
            404 => {
                if reply.warnings().contains("Invalid path for a versioned K/V") {
                    return Err(internal(format!(
                        "engine '{}' is a K/V version 2 mount, but version = \"v1\" is configured",
                        self.config().engine
                    )));
                }
                if vault_errors(&reply.json).contains("no handler for route") {
                    return Err(reply.error(&what));
                }
                return Ok(Page::default());
            }
            _ => return Err(reply.error(&what)),
        };
        Ok(kv::page(keys.iter().filter_map(Value::as_str), prefix, continue_at, limit))
    }

    fn status(&self) -> Result<(), Error> {
        let deadline = self.vault.deadline();
        let mut request = Request::new(Method::Get, "sys/health".into());
        request.query = HEALTH_QUERY.into();
        let reply = self.vault.call(request, Ns::Root, None, deadline)?;
        let health = &reply.json;
        if !health.is_object() || health.get("sealed").is_none() {
            return Err(unavailable(format!("sys/health: unexpected answer (status {})", reply.status)));
        }
        if health["initialized"].as_bool() == Some(false) {
            return Err(unavailable("not initialized"));
        }
        if health["sealed"].as_bool() == Some(true) {
            return Err(unavailable("sealed"));
        }
        if health["removed_from_cluster"].as_bool() == Some(true) {
            return Err(unavailable("this node was removed from its cluster"));
        }
        if health["replication_dr_mode"].as_str() == Some("secondary") {
            return Err(unavailable("this node is a DR secondary, which serves no secrets"));
        }
        if health["standby"].as_bool() == Some(true) {
            if health["ha_connection_healthy"].as_bool() == Some(false) {
                return Err(unavailable("standby node without a healthy connection to the active node"));
            }
            let leader = self.vault.call(Request::new(Method::Get, "sys/leader".into()), Ns::Root, None, deadline)?;
            // OpenBao leaves `leader_address` out when there is none.
            if leader.ok() && leader.json["leader_address"].as_str().is_none_or(str::is_empty) {
                return Err(unavailable("standby node, and no active node is known"));
            }
        }
        // Keeps the token fresh between requests, and says so if there is none.
        self.vault.token(deadline).map_err(|f| f.error())?;
        Ok(())
    }
}

keyward_sdk::export_keystore!(VaultKeystore);
