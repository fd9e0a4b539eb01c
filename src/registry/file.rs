//! The file registry: one JSON file per entry under `registry.dir`, readable only by the owner,
//! replaced atomically (write a temporary file, then rename). Every entry is cached in memory,
//! read at start; this process is the directory's only writer. At most `registry.max_entries`
//! are kept, evicted as the memory registry evicts them (never one holding a rotated refresh
//! token), and an evicted entry's file is removed.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::{Entry, MemoryRegistry, RegistryError, RegistryKey, TokenRegistry};
use crate::secret::Secret;

#[derive(Debug)]
pub struct FileRegistry {
    dir: PathBuf,
    cache: MemoryRegistry,
}

/// The file's layout; the registry path is kept so an operator can tell entries apart.
#[derive(Serialize, Deserialize)]
struct StoredEntry {
    registry_path: String,
    access_token: String,
    instance_url: String,
    stored_at_ms: u64,
    refresh_token: Option<String>,
}

impl FileRegistry {
    /// Opens (creating, owner-only) the directory and reads the entries in it, oldest first,
    /// removing those beyond `max_entries` and temporary files a crash left behind.
    pub fn open(dir: &Path, max_entries: usize) -> Result<FileRegistry, RegistryError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| RegistryError(format!("cannot create {}: {e}", dir.display())))?;
        let registry = FileRegistry {
            dir: dir.to_path_buf(),
            cache: MemoryRegistry::new(max_entries),
        };
        let listing = std::fs::read_dir(dir)
            .map_err(|e| RegistryError(format!("cannot list {}: {e}", dir.display())))?;
        let mut found = Vec::new();
        for file in listing.flatten() {
            let path = file.path();
            let name = file.file_name();
            let name = name.to_string_lossy();
            match name.strip_suffix(".json") {
                Some(id) if is_entry_id(id) => match read_entry(&path) {
                    Ok(Some(entry)) => found.push((id.to_string(), entry)),
                    Ok(None) => {}
                    Err(error) => tracing::warn!(%error, "skipping an unreadable registry entry"),
                },
                _ if name.contains(".tmp") => {
                    let _ = std::fs::remove_file(&path);
                }
                _ => {}
            }
        }
        found.sort_by_key(|(_, entry)| entry.stored_at_ms);
        for (id, entry) in found {
            let evicted = registry.cache.put_id(&id, entry);
            registry.remove_files(&evicted);
        }
        Ok(registry)
    }

    fn path_of(&self, key: &RegistryKey) -> PathBuf {
        self.dir.join(format!("{}.json", key.id()))
    }

    fn remove_files(&self, ids: &[String]) {
        for id in ids {
            let path = self.dir.join(format!("{id}.json"));
            if let Err(error) = std::fs::remove_file(&path) {
                tracing::warn!(%error, "an evicted registry entry's file could not be removed");
            }
        }
    }
}

impl TokenRegistry for FileRegistry {
    fn get<'a>(
        &'a self,
        key: &'a RegistryKey,
    ) -> BoxFuture<'a, Result<Option<Entry>, RegistryError>> {
        Box::pin(async move {
            if let Some(entry) = self.cache.get_now(key) {
                return Ok(Some(entry));
            }
            let path = self.path_of(key);
            let loaded = tokio::task::spawn_blocking(move || read_entry(&path))
                .await
                .map_err(|e| RegistryError(e.to_string()))??;
            if let Some(entry) = &loaded {
                let evicted = self.cache.put_now(key, entry.clone());
                self.remove_files(&evicted);
            }
            Ok(loaded)
        })
    }

    fn put<'a>(
        &'a self,
        key: &'a RegistryKey,
        entry: Entry,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move {
            let path = self.path_of(key);
            let stored = StoredEntry {
                registry_path: key.registry_path.clone(),
                access_token: entry.access_token.expose().to_string(),
                instance_url: entry.instance_url.clone(),
                stored_at_ms: entry.stored_at_ms,
                refresh_token: entry.refresh_token.as_ref().map(|t| t.expose().to_string()),
            };
            tokio::task::spawn_blocking(move || write_entry(&path, &stored))
                .await
                .map_err(|e| RegistryError(e.to_string()))??;
            let evicted = self.cache.put_now(key, entry);
            self.remove_files(&evicted);
            Ok(())
        })
    }
}

/// Whether a file name's stem is an entry id (64 lower-case hex digits), not something else an
/// operator left in the directory.
fn is_entry_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn read_entry(path: &Path) -> Result<Option<Entry>, RegistryError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(RegistryError(format!(
                "cannot read {}: {e}",
                path.display()
            )))
        }
    };
    let stored: StoredEntry = serde_json::from_slice(&bytes)
        .map_err(|e| RegistryError(format!("{} is not a registry entry: {e}", path.display())))?;
    Ok(Some(Entry {
        access_token: Secret::new(stored.access_token),
        instance_url: stored.instance_url,
        stored_at_ms: stored.stored_at_ms,
        refresh_token: stored.refresh_token.map(Secret::new),
    }))
}

fn write_entry(path: &Path, stored: &StoredEntry) -> Result<(), RegistryError> {
    let fail = |e: std::io::Error| RegistryError(format!("cannot write {}: {e}", path.display()));
    let temporary = path.with_extension(format!("tmp{}", fastrand::u64(..)));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(fail)?;
    let written = serde_json::to_vec(stored)
        .map_err(std::io::Error::other)
        .and_then(|bytes| file.write_all(&bytes))
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&temporary, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(fail(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::RefreshGrant;
    use crate::domain::IntervalTime;
    use crate::origin::AllowList;
    use std::os::unix::fs::PermissionsExt;

    fn key() -> RegistryKey {
        let allow = AllowList::parse(&["https://*.salesforce.com".to_string()]).unwrap();
        RegistryKey::for_grant(&RefreshGrant {
            registry_path: "connectors/SalesforceBulk".into(),
            refresh_token: Secret::new("rt"),
            client_id: "cid".into(),
            client_secret: None,
            token_endpoint: allow.admit("https://login.salesforce.com").unwrap(),
            interval: IntervalTime::DEFAULT,
        })
    }

    #[tokio::test]
    async fn entries_survive_a_new_registry_on_the_same_dir_and_are_owner_only() {
        let dir = std::env::temp_dir().join(format!("sfbulk-registry-test-{}", fastrand::u64(..)));
        let entry = Entry {
            access_token: Secret::new("at"),
            instance_url: "https://na1.salesforce.com".into(),
            stored_at_ms: 42,
            refresh_token: Some(Secret::new("rt-2")),
        };
        FileRegistry::open(&dir, 10)
            .unwrap()
            .put(&key(), entry.clone())
            .await
            .unwrap();

        let reopened = FileRegistry::open(&dir, 10).unwrap();
        assert_eq!(reopened.get(&key()).await.unwrap(), Some(entry));
        let file = dir.join(format!("{}.json", key().id()));
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "no temporary files left"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
