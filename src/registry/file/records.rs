//! The file registry's records, leases and sets, for loads: one file each in the `records/`
//! subdirectory of `registry.dir` (made owner-only on first use), named by a digest of its key,
//! never by the key, which is kept inside and checked on read, as is the instant it lapses.
//!
//! Processes sharing the directory change a file one at a time: under an `flock` on one of 256
//! stripe lock files (`<2 hex>.lock`, chosen by the digest, never removed), the current file is
//! read and its replacement renamed into place. Renames are atomic, so reads take no lock.
//! Lapsed records and leases are removed by a sweep, at most once a minute after a change.

use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::super::records::{
    check_name, check_value, next_version, sealed_to, ttl_ms, MAX_RECORD_BYTES,
};
use super::super::seal::{self, Keys};
use super::super::{digest, now_ms, Record, RecordStore, RegistryError};
use super::{open_untrusted, prepare_dir, read_bounded, write_atomically, FileRegistry, Untrusted};

/// How often lapsed files are looked for, at most.
const SWEEP_EVERY_MS: u64 = 60_000;

/// A temporary file older than this is a write that was interrupted, not one under way.
const STRANDED_TMP_MS: u64 = 10 * 60_000;

/// The longest first line of a record file (its header): a key of 256 bytes and two numbers.
const MAX_HEADER_BYTES: u64 = 1024;

/// The largest record file read: a header and a value of [`MAX_RECORD_BYTES`], sealed.
const MAX_RECORD_FILE_BYTES: u64 = MAX_RECORD_BYTES as u64 + 4096;

/// The largest lease file read.
const MAX_LEASE_FILE_BYTES: u64 = 4096;

#[derive(Debug)]
pub(super) struct RecordDir {
    /// `<registry.dir>/records`.
    dir: PathBuf,
    keys: Option<Arc<Keys>>,
    /// Whether the directory was made (or checked) owner-only.
    prepared: AtomicBool,
    swept_at_ms: AtomicU64,
}

/// The three kinds of file, told apart by their extension.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Record,
    Lease,
    Set,
}

impl Kind {
    fn extension(self) -> &'static str {
        match self {
            Kind::Record => "rec",
            Kind::Lease => "lease",
            Kind::Set => "set",
        }
    }
}

/// A record file's first line; the value, sealed, follows it.
#[derive(Serialize, Deserialize)]
struct Header {
    key: String,
    version: u64,
    expires_at_ms: u64,
}

#[derive(Serialize, Deserialize)]
struct LeaseFile {
    name: String,
    holder: String,
    expires_at_ms: u64,
}

#[derive(Serialize, Deserialize)]
struct SetFile {
    name: String,
    members: BTreeSet<String>,
}

/// A file that is there but cannot be used: refused (a link, a FIFO, too large), or not what
/// its name says. Never quotes the file's content.
fn unreadable(why: impl std::fmt::Display) -> RegistryError {
    RegistryError::unreadable("a load record file", Some(why.to_string().into()))
}

fn failure(doing: &str, error: std::io::Error) -> RegistryError {
    RegistryError::failure(
        format!("cannot {doing} a load record file"),
        Some(error.into()),
    )
}

/// A file read, `None` when there is none.
fn read_file(path: &Path, max: u64) -> Result<Option<Vec<u8>>, RegistryError> {
    match read_bounded(path, max) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(Untrusted::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(Untrusted::Io(e)) => Err(failure("read", e)),
        Err(refused) => Err(unreadable(refused)),
    }
}

/// A record file's header and the sealed value after it, checked to be `key`'s.
fn split<'b>(key: &str, bytes: &'b [u8]) -> Result<(Header, &'b [u8]), RegistryError> {
    let end = bytes
        .iter()
        .take(MAX_HEADER_BYTES as usize)
        .position(|b| *b == b'\n')
        .ok_or_else(|| unreadable("no header"))?;
    let header: Header =
        serde_json::from_slice(&bytes[..end]).map_err(|_| unreadable("its header is corrupt"))?;
    if header.key != key {
        return Err(unreadable("it holds another key"));
    }
    Ok((header, &bytes[end + 1..]))
}

/// The header of `key`'s record file alone (a compare-and-set needs only its version), lapsed
/// or not; `None` when there is none.
fn read_header(path: &Path, key: &str) -> Result<Option<Header>, RegistryError> {
    let file = match open_untrusted(path, std::fs::OpenOptions::new().read(true)) {
        Ok(file) => file,
        Err(Untrusted::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(Untrusted::Io(e)) => return Err(failure("read", e)),
        Err(refused) => return Err(unreadable(refused)),
    };
    let mut head = Vec::new();
    file.take(MAX_HEADER_BYTES)
        .read_to_end(&mut head)
        .map_err(|e| failure("read", e))?;
    split(key, &head).map(|(header, _)| Some(header))
}

/// The lease in `path`, if it is `name`'s; one that cannot be read counts as none, since a lease
/// holds nothing but who holds it.
fn read_lease(path: &Path, name: &str) -> Option<LeaseFile> {
    let bytes = read_bounded(path, MAX_LEASE_FILE_BYTES).ok()?;
    serde_json::from_slice::<LeaseFile>(&bytes)
        .ok()
        .filter(|lease| lease.name == name)
}

fn read_set(path: &Path, name: &str) -> Result<BTreeSet<String>, RegistryError> {
    let Some(bytes) = read_file(path, MAX_RECORD_FILE_BYTES)? else {
        return Ok(BTreeSet::new());
    };
    let set: SetFile =
        serde_json::from_slice(&bytes).map_err(|_| unreadable("the set is corrupt"))?;
    if set.name != name {
        return Err(unreadable("it holds another set"));
    }
    Ok(set.members)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), RegistryError> {
    write_atomically(path, bytes).map_err(|e| failure("write", e))
}

fn remove_file(path: &Path) -> Result<(), RegistryError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(failure("remove", e)),
        _ => Ok(()),
    }
}

/// When something given `ttl` now lapses, in the registry's clock (shared by processes).
fn lapses(ttl: Duration) -> u64 {
    now_ms().saturating_add(ttl_ms(ttl))
}

impl RecordDir {
    pub(super) fn new(registry_dir: &Path, keys: Option<Arc<Keys>>) -> RecordDir {
        RecordDir {
            dir: registry_dir.join("records"),
            keys,
            prepared: AtomicBool::new(false),
            swept_at_ms: AtomicU64::new(0),
        }
    }

    /// Makes the directory owner-only on first use (a registry without loads gets none).
    fn ready(&self) -> Result<(), RegistryError> {
        if !self.prepared.load(Ordering::Acquire) {
            prepare_dir(&self.dir)?;
            self.prepared.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// The file of `name` (of `kind`) and its digest: the name is never a path.
    fn path(&self, kind: Kind, name: &str) -> (PathBuf, Arc<str>) {
        let id = digest(&["sfbulk-record-file-v1", kind.extension(), name]);
        let path = self
            .dir
            .join(format!("{id}.{extension}", extension = kind.extension()));
        (path, id)
    }

    /// Holds the stripe lock of the file with digest `id` until the returned file is dropped,
    /// waiting for another process's change to end (each is a read and a rename).
    fn lock(&self, id: &str) -> Result<std::fs::File, RegistryError> {
        let path = self.dir.join(format!("{}.lock", &id[..2]));
        let file = open_untrusted(
            &path,
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600),
        )
        .map_err(|refused| match refused {
            Untrusted::Io(e) => failure("lock", e),
            refused => unreadable(format_args!("its lock file is refused: {refused}")),
        })?;
        file.lock().map_err(|e| failure("lock", e))?;
        Ok(file)
    }

    fn read(&self, key: &str) -> Result<Option<Record>, RegistryError> {
        check_name("key", key)?;
        self.ready()?;
        let (path, _) = self.path(Kind::Record, key);
        let Some(bytes) = read_file(&path, MAX_RECORD_FILE_BYTES)? else {
            return Ok(None);
        };
        let (header, sealed) = split(key, &bytes)?;
        if header.expires_at_ms <= now_ms() {
            return Ok(None);
        }
        let value =
            seal::open_value(&sealed_to(key), sealed, self.keys.as_deref()).map_err(unreadable)?;
        Ok(Some(Record {
            version: header.version,
            value,
        }))
    }

    fn write(
        &self,
        key: &str,
        value: &[u8],
        expected: Option<u64>,
        ttl: Duration,
    ) -> Result<Option<u64>, RegistryError> {
        check_name("key", key)?;
        check_value(value)?;
        self.ready()?;
        let sealed = seal::seal_value(&sealed_to(key), value, self.keys.as_deref());
        let (path, id) = self.path(Kind::Record, key);
        let _locked = self.lock(&id)?;
        let current = read_header(&path, key)?
            .filter(|header| header.expires_at_ms > now_ms())
            .map(|header| header.version);
        if current != expected {
            return Ok(None);
        }
        let version = next_version(expected);
        let header = Header {
            key: key.to_string(),
            version,
            expires_at_ms: lapses(ttl),
        };
        let mut bytes = serde_json::to_vec(&header).expect("a header serialises");
        bytes.push(b'\n');
        bytes.extend_from_slice(&sealed);
        write_file(&path, &bytes)?;
        Ok(Some(version))
    }

    fn take_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, RegistryError> {
        check_name("lease name", name)?;
        check_name("lease holder", holder)?;
        self.ready()?;
        let (path, id) = self.path(Kind::Lease, name);
        let _locked = self.lock(&id)?;
        let held_by_another = read_lease(&path, name)
            .is_some_and(|lease| lease.holder != holder && lease.expires_at_ms > now_ms());
        if held_by_another {
            return Ok(false);
        }
        let lease = LeaseFile {
            name: name.to_string(),
            holder: holder.to_string(),
            expires_at_ms: lapses(ttl),
        };
        write_file(
            &path,
            &serde_json::to_vec(&lease).expect("a lease serialises"),
        )?;
        Ok(true)
    }

    fn release_lease(&self, name: &str, holder: &str) -> Result<(), RegistryError> {
        check_name("lease name", name)?;
        check_name("lease holder", holder)?;
        self.ready()?;
        let (path, id) = self.path(Kind::Lease, name);
        let _locked = self.lock(&id)?;
        if read_lease(&path, name).is_some_and(|lease| lease.holder == holder) {
            remove_file(&path)?;
        }
        Ok(())
    }

    /// Adds (`true`) or removes `member`; an emptied set's file is removed.
    fn change_set(&self, set: &str, member: &str, add: bool) -> Result<(), RegistryError> {
        check_name("set name", set)?;
        check_name("set member", member)?;
        self.ready()?;
        let (path, id) = self.path(Kind::Set, set);
        let _locked = self.lock(&id)?;
        let mut members = read_set(&path, set)?;
        let changed = if add {
            members.insert(member.to_string())
        } else {
            members.remove(member)
        };
        if !changed {
            return Ok(());
        }
        if members.is_empty() {
            return remove_file(&path);
        }
        let file = SetFile {
            name: set.to_string(),
            members,
        };
        write_file(&path, &serde_json::to_vec(&file).expect("a set serialises"))
    }

    fn set_members(&self, set: &str) -> Result<Vec<String>, RegistryError> {
        check_name("set name", set)?;
        self.ready()?;
        let (path, _) = self.path(Kind::Set, set);
        Ok(read_set(&path, set)?.into_iter().collect())
    }

    /// Removes lapsed records and leases, and temporary files of interrupted writes, unless
    /// that was done in the last [`SWEEP_EVERY_MS`] (by this process). Best effort: what it
    /// cannot remove now, the next sweep finds again.
    fn sweep(&self) {
        let now = now_ms();
        let last = self.swept_at_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) < SWEEP_EVERY_MS
            || self
                .swept_at_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let Ok(listing) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for found in listing.flatten() {
            let name = found.file_name();
            let name = name.to_string_lossy();
            let Some((id, extension)) = name.split_once('.') else {
                continue;
            };
            if extension.starts_with("tmp") {
                let stranded = found
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|at| at.elapsed().ok())
                    .is_some_and(|age| age > Duration::from_millis(STRANDED_TMP_MS));
                if stranded {
                    let _ = std::fs::remove_file(found.path());
                }
                continue;
            }
            if id.len() != 64 || !matches!(extension, "rec" | "lease") {
                continue;
            }
            let lapsed = |path: &Path| -> Option<bool> {
                let at = if extension == "rec" {
                    let mut head = Vec::new();
                    open_untrusted(path, std::fs::OpenOptions::new().read(true))
                        .ok()?
                        .take(MAX_HEADER_BYTES)
                        .read_to_end(&mut head)
                        .ok()?;
                    let end = head.iter().position(|b| *b == b'\n')?;
                    serde_json::from_slice::<Header>(&head[..end])
                        .ok()?
                        .expires_at_ms
                } else {
                    serde_json::from_slice::<LeaseFile>(
                        &read_bounded(path, MAX_LEASE_FILE_BYTES).ok()?,
                    )
                    .ok()?
                    .expires_at_ms
                };
                Some(at <= now_ms())
            };
            let path = found.path();
            if lapsed(&path) != Some(true) {
                continue;
            }
            // Checked again under the lock: another process may have written it since.
            if let Ok(_locked) = self.lock(id) {
                if lapsed(&path) == Some(true) {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
    }

    /// Runs `change` (a write) in a blocking task, then the sweep when it is due.
    async fn changing<T: Send + 'static>(
        self: &Arc<Self>,
        change: impl FnOnce(&RecordDir) -> Result<T, RegistryError> + Send + 'static,
    ) -> Result<T, RegistryError> {
        let dir = self.clone();
        tokio::task::spawn_blocking(move || {
            let done = change(&dir);
            dir.sweep();
            done
        })
        .await
        .map_err(|e| RegistryError::failure("a load record task failed", Some(e.into())))?
    }

    /// Runs `look` (a read) in a blocking task.
    async fn reading<T: Send + 'static>(
        self: &Arc<Self>,
        look: impl FnOnce(&RecordDir) -> Result<T, RegistryError> + Send + 'static,
    ) -> Result<T, RegistryError> {
        let dir = self.clone();
        tokio::task::spawn_blocking(move || look(&dir))
            .await
            .map_err(|e| RegistryError::failure("a load record task failed", Some(e.into())))?
    }
}

impl RecordStore for FileRegistry {
    fn read<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Record>, RegistryError>> {
        let key = key.to_string();
        Box::pin(self.records.reading(move |dir| dir.read(&key)))
    }

    fn write<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        expected: Option<u64>,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<u64>, RegistryError>> {
        let key = key.to_string();
        Box::pin(
            self.records
                .changing(move |dir| dir.write(&key, &value, expected, ttl)),
        )
    }

    fn write_once<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, RegistryError>> {
        let key = key.to_string();
        Box::pin(self.records.changing(move |dir| {
            dir.write(&key, &value, None, ttl)
                .map(|written| written.is_some())
        }))
    }

    fn take_lease<'a>(
        &'a self,
        name: &'a str,
        holder: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, RegistryError>> {
        let (name, holder) = (name.to_string(), holder.to_string());
        Box::pin(
            self.records
                .changing(move |dir| dir.take_lease(&name, &holder, ttl)),
        )
    }

    fn release_lease<'a>(
        &'a self,
        name: &'a str,
        holder: &'a str,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        let (name, holder) = (name.to_string(), holder.to_string());
        Box::pin(
            self.records
                .changing(move |dir| dir.release_lease(&name, &holder)),
        )
    }

    fn set_add<'a>(
        &'a self,
        set: &'a str,
        member: &'a str,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        let (set, member) = (set.to_string(), member.to_string());
        Box::pin(
            self.records
                .changing(move |dir| dir.change_set(&set, &member, true)),
        )
    }

    fn set_remove<'a>(
        &'a self,
        set: &'a str,
        member: &'a str,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        let (set, member) = (set.to_string(), member.to_string());
        Box::pin(
            self.records
                .changing(move |dir| dir.change_set(&set, &member, false)),
        )
    }

    fn set_members<'a>(
        &'a self,
        set: &'a str,
    ) -> BoxFuture<'a, Result<Vec<String>, RegistryError>> {
        let set = set.to_string();
        Box::pin(self.records.reading(move |dir| dir.set_members(&set)))
    }
}
