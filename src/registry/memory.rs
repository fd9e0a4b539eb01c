//! The in-memory registry: entries last as long as the process.

use std::collections::HashMap;
use std::sync::RwLock;

use futures_util::future::BoxFuture;

use super::{Entry, RegistryError, RegistryKey, TokenRegistry};

#[derive(Debug, Default)]
pub struct MemoryRegistry {
    entries: RwLock<HashMap<String, Entry>>,
}

impl MemoryRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    pub(super) fn get_now(&self, key: &RegistryKey) -> Option<Entry> {
        self.entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key.id())
            .cloned()
    }

    pub(super) fn put_now(&self, key: &RegistryKey, entry: Entry) {
        self.entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.id().to_string(), entry);
    }
}

impl TokenRegistry for MemoryRegistry {
    fn get<'a>(
        &'a self,
        key: &'a RegistryKey,
    ) -> BoxFuture<'a, Result<Option<Entry>, RegistryError>> {
        Box::pin(async move { Ok(self.get_now(key)) })
    }

    fn put<'a>(
        &'a self,
        key: &'a RegistryKey,
        entry: Entry,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move {
            self.put_now(key, entry);
            Ok(())
        })
    }
}
