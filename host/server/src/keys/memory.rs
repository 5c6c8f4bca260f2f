//! An in-memory keystore: for tests and for `keyward server` runs that need no
//! persistence. Everything is lost when the process exits.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;

use keyward_core::keystore::{Keystore, Page, StoreError};

/// Keys in a sorted map behind a mutex.
#[derive(Debug, Default)]
pub struct MemoryStore {
    entries: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>>, StoreError> {
        self.entries.lock().map_err(|_| StoreError::Internal("memory store lock poisoned".into()))
    }
}

#[async_trait]
impl Keystore for MemoryStore {
    async fn create(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        let mut map = self.lock()?;
        if map.contains_key(name) {
            return Err(StoreError::Exists);
        }
        map.insert(name.to_string(), value.to_vec());
        Ok(())
    }

    async fn get(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        self.lock()?.get(name).cloned().ok_or(StoreError::NotFound)
    }

    async fn delete(&self, name: &str) -> Result<(), StoreError> {
        self.lock()?.remove(name).map(|_| ()).ok_or(StoreError::NotFound)
    }

    async fn list(&self, prefix: &str, continue_at: &str, limit: u32) -> Result<Page, StoreError> {
        let map = self.lock()?;
        let start = if continue_at > prefix { continue_at } else { prefix };
        let mut names = Vec::new();
        let mut next = String::new();
        for name in map.range::<str, _>((std::ops::Bound::Included(start), std::ops::Bound::Unbounded)).map(|(k, _)| k)
        {
            if !name.starts_with(prefix) {
                break;
            }
            if limit > 0 && names.len() >= limit as usize {
                next = name.clone();
                break;
            }
            names.push(name.clone());
        }
        Ok(Page { names, next })
    }

    async fn status(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn create_is_exclusive_and_list_pages_in_order() {
        let s = MemoryStore::new();
        for n in ["b", "a", "ab", "c"] {
            s.create(n, n.as_bytes()).await.unwrap();
        }
        assert_eq!(s.create("a", b"x").await, Err(StoreError::Exists));
        assert_eq!(s.get("a").await.unwrap(), b"a");
        let p = s.list("a", "", 1).await.unwrap();
        assert_eq!((p.names, p.next.as_str()), (vec!["a".to_string()], "ab"));
        let p = s.list("", "ab", 10).await.unwrap();
        assert_eq!(p.names, vec!["ab", "b", "c"]);
        assert_eq!(p.next, "");
        s.delete("a").await.unwrap();
        assert_eq!(s.get("a").await, Err(StoreError::NotFound));
        assert_eq!(s.delete("a").await, Err(StoreError::NotFound));
    }
}
