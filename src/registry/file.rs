//! The file registry: one JSON file per entry under `registry.dir`, readable only by the owner,
//! replaced atomically (write a temporary file, then rename), sealed when a key is set. Entries
//! are cached in memory, read at start. Several processes on one host may share the directory: a
//! refresh holds an advisory lock (`flock`) on its lineage's `<id>.lock` file and reads the
//! lineage from disk under it, so they make one refresh per expiry between them. At most
//! `registry.max_entries` are cached, evicted as the memory registry evicts them (never one
//! holding a rotated refresh token), and an evicted entry's file is removed.
//!
//! Nothing in the directory is trusted: entries and locks are opened without following links
//! and without waiting (a FIFO never hangs a read), must be regular files, and are read up to
//! [`MAX_ENTRY_BYTES`]; the directory itself must not be a link and must be the process's own.
//! Loads' records live in its `records/` subdirectory ([`records`]), under the same rules.

mod records;

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::seal::{self, Keys};
use super::{Entry, Lease, MemoryRegistry, RegistryError, RegistryKey, TokenRegistry};

#[derive(Debug)]
pub struct FileRegistry {
    dir: PathBuf,
    cache: MemoryRegistry,
    keys: Option<Arc<Keys>>,
    /// Entries set aside as unreadable and not written since: still reported unreadable, so a
    /// refresh can tell the caller that a stored grant was lost rather than never there.
    set_aside: std::sync::Mutex<std::collections::HashSet<String>>,
    records: Arc<records::RecordDir>,
}

impl FileRegistry {
    /// Opens (creating, owner-only) the directory and reads the entries in it, oldest first,
    /// removing those beyond `max_entries` and temporary files an interrupted write left behind,
    /// and setting aside entries that cannot be read.
    pub fn open(
        dir: &Path,
        max_entries: usize,
        keys: Option<Arc<Keys>>,
    ) -> Result<FileRegistry, RegistryError> {
        prepare_dir(dir)?;
        let registry = FileRegistry {
            dir: dir.to_path_buf(),
            cache: MemoryRegistry::new(max_entries),
            records: Arc::new(records::RecordDir::new(dir, keys.clone())),
            keys,
            set_aside: Default::default(),
        };
        let listing = std::fs::read_dir(dir).map_err(|e| {
            RegistryError::failure(format!("cannot list {}", dir.display()), Some(e.into()))
        })?;
        let mut found = Vec::new();
        for file in listing.flatten() {
            let path = file.path();
            let name = file.file_name();
            let name = name.to_string_lossy();
            match name.strip_suffix(".json") {
                Some(id) if is_entry_id(id) => {
                    let key = RegistryKey::stored(id);
                    match read_entry(dir, &key, registry.keys.as_deref()) {
                        Ok(Some(entry)) => found.push((id.to_string(), entry)),
                        Ok(None) => {}
                        Err(RegistryError::Unreadable { .. }) => registry.set_aside(id, true),
                        Err(error) => {
                            tracing::warn!(error = %error.detail(), "skipping a registry entry")
                        }
                    }
                }
                _ if name.contains(".tmp") => {
                    // A write that was interrupted: it may hold a token, and nothing reads it.
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

    fn path_of(&self, id: &str, extension: &str) -> PathBuf {
        path_of(&self.dir, id, extension)
    }

    fn remove_files(&self, ids: &[String]) {
        for id in ids {
            if let Err(error) = std::fs::remove_file(self.path_of(id, "json")) {
                tracing::warn!(%error, entry.id = %id, "an evicted registry entry's file could not be removed");
            }
        }
    }

    /// Marks `id` as set aside (`true`) or written again (`false`).
    fn set_aside(&self, id: &str, aside: bool) {
        let mut set = self.set_aside.lock().unwrap_or_else(|e| e.into_inner());
        if aside {
            set.insert(id.to_string());
        } else if !set.is_empty() {
            set.remove(id);
        }
    }

    async fn read_fresh(&self, key: &RegistryKey) -> Result<Option<Entry>, RegistryError> {
        let (dir, owned, keys) = (self.dir.clone(), key.clone(), self.keys.clone());
        let read = tokio::task::spawn_blocking(move || read_entry(&dir, &owned, keys.as_deref()))
            .await
            .map_err(|e| RegistryError::failure("reading the entry", Some(e.into())))?;
        let loaded = match read {
            Err(unreadable @ RegistryError::Unreadable { .. }) => {
                self.set_aside(key.id(), true);
                return Err(unreadable);
            }
            Ok(None)
                if self
                    .set_aside
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains(key.id()) =>
            {
                return Err(RegistryError::unreadable(
                    "set aside as unreadable, and not written since",
                    None,
                ))
            }
            other => other?,
        };
        if let Some(entry) = &loaded {
            let evicted = self.cache.put_now(key, entry.clone());
            self.remove_files(&evicted);
        }
        Ok(loaded)
    }

    async fn write_entry(&self, key: &RegistryKey, entry: Entry) -> Result<(), RegistryError> {
        let path = self.path_of(key.id(), "json");
        let bytes = seal::encode(key, &entry, self.keys.as_deref());
        let id = key.id().to_string();
        tokio::task::spawn_blocking(move || write_atomically(&path, &bytes))
            .await
            .map_err(|e| RegistryError::failure("writing the entry", Some(e.into())))?
            .map_err(|e| {
                RegistryError::failure(format!("cannot write registry entry {id}"), Some(e.into()))
            })?;
        let evicted = self.cache.put_now(key, entry);
        self.remove_files(&evicted);
        Ok(())
    }
}

/// The entry on disk. One that cannot be opened is logged, set aside (so the next refresh writes
/// a good one) and reported [`RegistryError::Unreadable`].
fn read_entry(
    dir: &Path,
    key: &RegistryKey,
    keys: Option<&Keys>,
) -> Result<Option<Entry>, RegistryError> {
    let path = path_of(dir, key.id(), "json");
    let bytes = match read_untrusted(&path) {
        Ok(bytes) => bytes,
        Err(Untrusted::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(Untrusted::Io(e)) => {
            return Err(RegistryError::failure(
                format!("cannot read registry entry {}", key.id()),
                Some(e.into()),
            ))
        }
        Err(refused) => return Err(set_aside(dir, key, &path, refused.to_string())),
    };
    seal::decode(key, &bytes, keys)
        .map(Some)
        .map_err(|error| set_aside(dir, key, &path, error.to_string()))
}

/// Moves an entry that cannot be opened out of the way, logging why and where it went, and
/// reports it unreadable.
fn set_aside(dir: &Path, key: &RegistryKey, path: &Path, error: String) -> RegistryError {
    let aside = path_of(
        dir,
        key.id(),
        &format!("unreadable-{}-{}", super::now_ms(), fastrand::u32(..)),
    );
    let moved = std::fs::rename(path, &aside);
    tracing::warn!(
        entry.id = key.id(),
        %error,
        path = %path.display(),
        set_aside_as = %aside.display(),
        set_aside = moved.is_ok(),
        "a registry entry cannot be opened; it is set aside and treated as absent"
    );
    RegistryError::unreadable("", Some(error.into()))
}

/// The most bytes an entry file is read for: an entry is under 2 KiB, sealed or not.
pub const MAX_ENTRY_BYTES: u64 = 64 * 1024;

/// Why a file of the directory was not read.
#[derive(Debug, thiserror::Error)]
enum Untrusted {
    #[error("{0}")]
    Io(std::io::Error),
    #[error("it is a symbolic link, which the registry never follows")]
    Link,
    #[error("it is not a regular file (a FIFO, a device or a directory)")]
    NotRegular,
    #[error("it is larger than {0} bytes")]
    TooLarge(u64),
}

/// Opens `path` without following a link and without waiting (a FIFO opens at once, and is then
/// refused as not a regular file).
fn open_untrusted(
    path: &Path,
    options: &mut std::fs::OpenOptions,
) -> Result<std::fs::File, Untrusted> {
    let file = options
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => Untrusted::Link,
            // A FIFO opened for writing without a reader, without waiting.
            Some(libc::ENXIO) => Untrusted::NotRegular,
            _ => Untrusted::Io(e),
        })?;
    if !file
        .metadata()
        .map_err(Untrusted::Io)?
        .file_type()
        .is_file()
    {
        return Err(Untrusted::NotRegular);
    }
    Ok(file)
}

/// An entry file's bytes, read only if it is a regular file of at most [`MAX_ENTRY_BYTES`].
fn read_untrusted(path: &Path) -> Result<Vec<u8>, Untrusted> {
    read_bounded(path, MAX_ENTRY_BYTES)
}

/// A file's bytes, read only if it is a regular file of at most `max` bytes.
fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, Untrusted> {
    use std::io::Read;
    let file = open_untrusted(path, std::fs::OpenOptions::new().read(true))?;
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(Untrusted::Io)?;
    if bytes.len() as u64 > max {
        return Err(Untrusted::TooLarge(max));
    }
    Ok(bytes)
}

fn path_of(dir: &Path, id: &str, extension: &str) -> PathBuf {
    dir.join(format!("{id}.{extension}"))
}

/// Creates the directory owner-only, or tightens an existing one to 0700: entries are tokens.
/// The directory itself must not be a symbolic link (its parents may be, as systemd's
/// `StateDirectory=` with `DynamicUser=` makes them) and must be owned by the process's
/// effective user; each refusal names the path and what to do.
fn prepare_dir(dir: &Path) -> Result<(), RegistryError> {
    let refused = |problem: String| {
        RegistryError::failure(format!("registry.dir {}: {problem}", dir.display()), None)
    };
    match std::fs::symlink_metadata(dir) {
        Ok(found) if found.file_type().is_symlink() => {
            return Err(refused(
                "is a symbolic link; set registry.dir to the directory it points to (the \
                 registry never follows a link at its last step)"
                    .into(),
            ))
        }
        Ok(found) if !found.is_dir() => {
            return Err(refused(
                "is not a directory; remove it or choose another registry.dir".into(),
            ))
        }
        Ok(_) => {}
        // Absent (or a parent is not a directory, which creating it reports).
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                || e.raw_os_error() == Some(libc::ENOTDIR) =>
        {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| {
                    RegistryError::failure(
                        format!("cannot create {}", dir.display()),
                        Some(e.into()),
                    )
                })?;
        }
        Err(e) => {
            return Err(RegistryError::failure(
                format!("cannot read {}", dir.display()),
                Some(e.into()),
            ))
        }
    }
    // Opened without following a link, so the checks and the chmod are of this directory.
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY)
        .open(dir)
        .map_err(|e| {
            RegistryError::failure(format!("cannot open {}", dir.display()), Some(e.into()))
        })?;
    let found = opened.metadata().map_err(|e| {
        RegistryError::failure(format!("cannot read {}", dir.display()), Some(e.into()))
    })?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if found.uid() != me {
        return Err(refused(format!(
            "is owned by uid {}, not by this process's user (uid {me}): another user could \
             read or plant entries; chown it to the service's user, or choose a directory of \
             its own",
            found.uid()
        )));
    }
    let mode = found.permissions().mode();
    if mode & 0o077 != 0 {
        opened
            .set_permissions(std::fs::Permissions::from_mode(0o700))
            .map_err(|e| {
                RegistryError::failure(
                    format!(
                        "{} is open to others (mode {:o}) and cannot be made owner-only",
                        dir.display(),
                        mode & 0o777
                    ),
                    Some(e.into()),
                )
            })?;
        tracing::warn!(
            dir = %dir.display(),
            was = format!("{:o}", mode & 0o777),
            "the registry directory was open to others; it is now 0700"
        );
    }
    Ok(())
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
            self.read_fresh(key).await
        })
    }

    fn get_fresh<'a>(
        &'a self,
        key: &'a RegistryKey,
    ) -> BoxFuture<'a, Result<Option<Entry>, RegistryError>> {
        Box::pin(self.read_fresh(key))
    }

    fn put<'a>(
        &'a self,
        key: &'a RegistryKey,
        entry: Entry,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(self.write_entry(key, entry))
    }

    fn lock<'a>(
        &'a self,
        key: &'a RegistryKey,
        _lease: std::time::Duration,
    ) -> BoxFuture<'a, Result<Option<Box<dyn Lease + 'a>>, RegistryError>> {
        Box::pin(async move {
            let path = self.path_of(key.id(), "lock");
            let at = path.clone();
            let locked = tokio::task::spawn_blocking(move || try_flock(&at))
                .await
                .map_err(|e| RegistryError::failure("locking the entry", Some(e.into())))?
                .map_err(|e| {
                    RegistryError::failure(
                        format!("cannot lock registry entry {}", key.id()),
                        Some(e.into()),
                    )
                })?;
            Ok(locked.map(|file| {
                let lease: Box<dyn Lease + 'a> = Box::new(FileLease {
                    registry: self,
                    key,
                    path,
                    file: Some(file),
                });
                lease
            }))
        })
    }
}

/// Takes the advisory lock on `path`, creating the file; `None` when another holds it. A holder
/// removes the file before unlocking, so a lock taken on a file that is no longer at `path` is
/// not the lock and is given up.
fn try_flock(path: &Path) -> std::io::Result<Option<std::fs::File>> {
    let file = open_untrusted(
        path,
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600),
    )
    .map_err(|refused| match refused {
        Untrusted::Io(e) => e,
        refused => std::io::Error::other(format!(
            "the lock file {} is refused: {refused}; remove it from registry.dir (the registry \
             makes its own)",
            path.file_name().unwrap_or_default().to_string_lossy()
        )),
    })?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
        Err(std::fs::TryLockError::Error(e)) => return Err(e),
    }
    match std::fs::metadata(path) {
        Ok(now) if now.ino() == file.metadata()?.ino() && now.dev() == file.metadata()?.dev() => {
            Ok(Some(file))
        }
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The flock on a lineage's lock file. The kernel drops it when the process dies, so a lease
/// never needs renewing.
struct FileLease<'a> {
    registry: &'a FileRegistry,
    key: &'a RegistryKey,
    path: PathBuf,
    file: Option<std::fs::File>,
}

impl Lease for FileLease<'_> {
    fn renew(&mut self) -> BoxFuture<'_, Result<bool, RegistryError>> {
        let held = self.file.is_some();
        Box::pin(async move { Ok(held) })
    }

    fn store(
        &mut self,
        entry: Entry,
        _seen_version: Option<u64>,
    ) -> BoxFuture<'_, Result<(), RegistryError>> {
        // Under the flock this process is the lineage's only writer; nothing to compare.
        Box::pin(self.registry.write_entry(self.key, entry))
    }

    fn release(&mut self) -> BoxFuture<'_, ()> {
        self.give_up();
        Box::pin(async {})
    }
}

impl FileLease<'_> {
    /// Removes the lock file while still holding the lock, then unlocks (see [`try_flock`]).
    fn give_up(&mut self) {
        if let Some(file) = self.file.take() {
            let _ = std::fs::remove_file(&self.path);
            drop(file);
        }
    }
}

impl Drop for FileLease<'_> {
    fn drop(&mut self) {
        self.give_up();
    }
}

/// Whether a file name's stem is an entry id (64 lower-case hex digits), not something else an
/// operator left in the directory.
fn is_entry_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temporary = path.with_extension(format!("tmp{}", fastrand::u64(..)));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)?;
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&temporary, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::secret::Secret;
    use crate::registry::KeyParts;

    fn key() -> RegistryKey {
        RegistryKey::for_grant(&KeyParts {
            registry_path: "connectors/SalesforceBulk",
            token_endpoint: "https://login.salesforce.com",
            client_id: "cid",
            client_secret: None,
            grant: "rt",
        })
    }

    fn entry() -> Entry {
        Entry {
            access_token: Secret::new("at"),
            instance_url: "https://na1.salesforce.com".into(),
            stored_at_ms: 42,
            refresh_token: Some(Secret::new("rt-2")),
            version: 1,
            secret_check: None,
        }
    }

    fn temp_dir() -> PathBuf {
        std::env::temp_dir().join(format!("sfbulk-registry-test-{}", fastrand::u64(..)))
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_directory_that_cannot_be_made_keeps_the_io_error_as_its_source() {
        let file = std::env::temp_dir().join(format!("sfbulk-not-a-dir-{}", fastrand::u64(..)));
        std::fs::write(&file, b"").unwrap();
        let Err(error) = FileRegistry::open(&file.join("registry"), 10, None) else {
            panic!("a file is in the way");
        };
        assert!(matches!(error, RegistryError::Failure { .. }));
        let cause = std::error::Error::source(&error).expect("the io error is kept");
        assert!(cause.downcast_ref::<std::io::Error>().is_some());
        let detail = error.detail();
        assert!(detail.starts_with("cannot create "), "{detail}");
        assert!(detail.ends_with(&format!(": {cause}")), "{detail}");
        std::fs::remove_file(&file).unwrap();
    }

    #[tokio::test]
    async fn entries_survive_a_new_registry_on_the_same_dir_and_are_owner_only() {
        let dir = temp_dir();
        FileRegistry::open(&dir, 10, None)
            .unwrap()
            .put(&key(), entry())
            .await
            .unwrap();

        let reopened = FileRegistry::open(&dir, 10, None).unwrap();
        assert_eq!(reopened.get(&key()).await.unwrap(), Some(entry()));
        assert_eq!(mode(&dir.join(format!("{}.json", key().id()))), 0o600);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "no temporary files left"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn interrupted_writes_are_removed_loose_dirs_tightened_and_corrupt_entries_set_aside() {
        let dir = temp_dir();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let leftover = dir.join(format!("{}.tmp123", key().id()));
        std::fs::write(&leftover, "a token").unwrap();
        let corrupt = dir.join(format!("{}.json", key().id()));
        std::fs::write(&corrupt, "{not json").unwrap();

        let registry = FileRegistry::open(&dir, 10, None).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert!(!leftover.exists());
        assert!(!corrupt.exists(), "set aside at start");
        assert!(matches!(
            registry.get(&key()).await,
            Err(RegistryError::Unreadable { .. })
        ));

        // Corrupted while running: reported unreadable until written again.
        std::fs::write(&corrupt, "garbage").unwrap();
        for _ in 0..2 {
            assert!(matches!(
                registry.get_fresh(&key()).await,
                Err(RegistryError::Unreadable { .. })
            ));
        }
        registry.put(&key(), entry()).await.unwrap();
        assert_eq!(registry.get_fresh(&key()).await.unwrap(), Some(entry()));
        let aside = std::fs::read_dir(&dir)
            .unwrap()
            .filter(|f| {
                f.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains("unreadable")
            })
            .count();
        assert_eq!(aside, 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn one_lock_holder_per_lineage_across_registries_on_one_dir() {
        let dir = temp_dir();
        let (a, b) = (
            FileRegistry::open(&dir, 10, None).unwrap(),
            FileRegistry::open(&dir, 10, None).unwrap(),
        );
        let lease_time = std::time::Duration::from_secs(1);
        let key = key();
        let mut held = a.lock(&key, lease_time).await.unwrap().expect("free");
        assert!(b.lock(&key, lease_time).await.unwrap().is_none());
        held.store(entry(), None).await.unwrap();
        held.release().await;
        drop(held);
        assert_eq!(b.get_fresh(&key).await.unwrap(), Some(entry()));
        let again = b.lock(&key, lease_time).await.unwrap();
        assert!(again.is_some(), "free again after release");
        drop(again);
        assert!(
            !dir.join(format!("{}.lock", key.id())).exists(),
            "lock files do not pile up"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
