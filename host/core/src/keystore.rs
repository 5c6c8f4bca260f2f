//! The keystore seam: the one trait every storage backend implements.
//!
//! It has exactly the shape of the WIT `keystore` world (`wit/keystore.wit`) so a
//! WebAssembly plugin, the built-in in-memory store and any future native store are
//! interchangeable. Nothing outside `keys` knows which store is in use.

use async_trait::async_trait;

/// Why a keystore operation failed. Mirrors the WIT `error` variant one to one,
/// so the host can map a plugin's answer to the right HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The named entry does not exist.
    #[error("not found")]
    NotFound,
    /// `create` found an entry of that name already (create is atomic).
    #[error("already exists")]
    Exists,
    /// The backend cannot be reached right now (network, lock, timeout).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The request was refused by the backend as malformed.
    #[error("invalid: {0}")]
    Invalid(String),
    /// Anything else: a bug or an unexpected backend state, a trapped plugin.
    #[error("internal: {0}")]
    Internal(String),
}

/// One page of names from [`Keystore::list`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// Names in ascending byte order, all starting with the requested prefix.
    pub names: Vec<String>,
    /// The first name not returned, or empty when the listing is complete.
    pub next: String,
}

/// A place where opaque key values live under names.
///
/// Values are opaque bytes: the host encodes and (optionally) seals key material
/// before it reaches the store, so a store never needs to understand it.
#[async_trait]
pub trait Keystore: Send + Sync + 'static {
    /// Stores `value` under `name`, failing with [`StoreError::Exists`] if the name
    /// is taken. Returns only after the value is durably stored.
    async fn create(&self, name: &str, value: &[u8]) -> Result<(), StoreError>;
    /// Returns the value stored under `name`.
    async fn get(&self, name: &str) -> Result<Vec<u8>, StoreError>;
    /// Removes `name`; [`StoreError::NotFound`] if there is no such entry.
    async fn delete(&self, name: &str) -> Result<(), StoreError>;
    /// Lists names starting with `prefix`, in ascending order, beginning at
    /// `continue_at` (inclusive; empty = from the start), at most `limit` names.
    async fn list(&self, prefix: &str, continue_at: &str, limit: u32) -> Result<Page, StoreError>;
    /// Reports whether the backend is reachable and healthy.
    async fn status(&self) -> Result<(), StoreError>;
}
