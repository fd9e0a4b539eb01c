//! Where loads are kept beyond the process that took them: each load's record and each job's row
//! digests in the registry's record store (on `file` or `redis`, shared by the fleet), under keys
//! made of a digest of the owner and the load's id, so a load is found only by its owner; and the
//! leases that let one replica at a time follow a load. Kept `load.retention_secs`. On the
//! `memory` backend the book keeps nothing: a load lives in the process that took it, bounded
//! as that process bounds its loads, and no one else could read it.

use std::sync::Arc;
use std::time::Duration;

use crate::loads::load::Load;
use crate::loads::record::{LoadRecord, Revived, Unreadable};
use crate::registry::{RecordStore, RegistryError};

/// The set of loads not yet ended, for replicas to sweep.
const ACTIVE: &str = "loads:active";

/// Why the book could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum BookError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Unreadable(#[from] Unreadable),
    /// Other replicas kept writing the record while this one tried.
    #[error("the load's record kept changing while it was written")]
    Busy,
    /// Another request feeds the load now: this one's view is not the record's.
    #[error("another request took this load's feeding over")]
    TakenOver,
}

impl From<BookError> for crate::pipeline::fault::Fault {
    /// A registry away is its unavailability (503 with `Retry-After`); a load another request
    /// feeds now, 409 `SFBULK_LOAD_BUSY`; anything else, the registry's failure.
    fn from(error: BookError) -> Self {
        match error {
            BookError::Registry(error) => error.into(),
            BookError::TakenOver => crate::pipeline::fault::Fault::LoadBusy(error.to_string()),
            other => crate::pipeline::fault::Fault::Registry(other.to_string()),
        }
    }
}

/// A kept load and the version it was read at.
pub struct Kept {
    pub version: u64,
    pub load: Revived,
}

/// The loads of the fleet, as the registry keeps them.
#[derive(Clone)]
pub struct Book {
    store: Arc<dyn RecordStore>,
    retention: Duration,
    /// `registry.timeout_ms`: the longest any one call to the store may take.
    timeout: Duration,
    /// This process, as a lease holder: random, its own.
    holder: Arc<str>,
    /// Whether the store outlives this process; when not, nothing is written to it.
    shared: bool,
}

/// A load's place in the book: its owner's digest and its id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Place(String);

impl Place {
    /// The place of `owner`'s load `id`; none for an id no load can have.
    pub fn of(owner: &str, id: &str) -> Option<Place> {
        use sha2::Digest;
        if !crate::loads::fields::is_load_id(id) {
            return None;
        }
        let digest = sha2::Sha256::digest(owner.as_bytes());
        Some(Place(format!(
            "{}:{id}",
            crate::common::hex::encode(&digest[..16])
        )))
    }

    /// A place read from the active set, checked as a key part.
    fn parse(member: &str) -> Option<Place> {
        let (owner, id) = member.split_once(':')?;
        let ok = owner.len() == 32
            && owner.bytes().all(|b| b.is_ascii_hexdigit())
            && crate::loads::fields::is_load_id(id);
        ok.then(|| Place(member.to_string()))
    }
}

impl Book {
    pub fn new(store: Arc<dyn RecordStore>, retention: Duration, timeout: Duration) -> Book {
        use ring::rand::SecureRandom;
        let mut bytes = [0u8; 16];
        ring::rand::SystemRandom::new()
            .fill(&mut bytes)
            .expect("the system's random source works");
        Book {
            shared: store.outlives_process(),
            store,
            retention,
            timeout,
            holder: crate::common::hex::encode(&bytes).into(),
        }
    }

    /// `call`, or the registry's unavailability once `registry.timeout_ms` passed without its
    /// answer (a paused Redis must not hold a caller, nor a follower, forever).
    async fn within<T>(
        &self,
        call: futures_util::future::BoxFuture<'_, Result<T, RegistryError>>,
    ) -> Result<T, RegistryError> {
        tokio::time::timeout(self.timeout, call)
            .await
            .unwrap_or_else(|_| {
                Err(RegistryError::unavailable(
                    "the registry did not answer within registry.timeout_ms",
                    None,
                ))
            })
    }

    /// The load kept at `place`, if any.
    pub async fn read(&self, place: &Place) -> Result<Option<Kept>, BookError> {
        if !self.shared {
            return Ok(None);
        }
        let Some(record) = self
            .within(self.store.read(&format!("load:{}", place.0)))
            .await?
        else {
            return Ok(None);
        };
        if record.value.is_empty() {
            // Forgotten, lapsing.
            return Ok(None);
        }
        let load = LoadRecord::from_bytes(&record.value)?;
        Ok(Some(Kept {
            version: record.version,
            load,
        }))
    }

    /// Writes `record` at `place` if it is still at `expected` (`None`: not kept yet); its new
    /// version, or `None` when another replica wrote it first.
    pub async fn write(
        &self,
        place: &Place,
        record: &LoadRecord,
        expected: Option<u64>,
    ) -> Result<Option<u64>, BookError> {
        Ok(self
            .within(self.store.write(
                &format!("load:{}", place.0),
                record.to_bytes(),
                expected,
                self.retention,
            ))
            .await?)
    }

    /// Whether the book outlives this process: on the `memory` backend a load lives and dies
    /// with the process, and its row digests stay in their files here.
    pub fn outlives_process(&self) -> bool {
        self.shared
    }

    /// Keeps the row digests of the load's job `job` (its position in the load), once: 8 bytes
    /// a row, little-endian, in row order.
    pub async fn write_rows(
        &self,
        place: &Place,
        job: usize,
        digests: Vec<u8>,
    ) -> Result<(), BookError> {
        if !self.shared {
            return Ok(());
        }
        let key = format!("loadrows:{}:{job}", place.0);
        self.within(self.store.write_once(&key, digests, self.retention))
            .await?;
        Ok(())
    }

    /// The row digests of the load's job `job`, in row order, if kept.
    pub async fn read_rows(
        &self,
        place: &Place,
        job: usize,
    ) -> Result<Option<Vec<u64>>, BookError> {
        let Some(record) = self
            .within(self.store.read(&format!("loadrows:{}:{job}", place.0)))
            .await?
        else {
            return Ok(None);
        };
        if record.value.len() % 8 != 0 {
            return Err(Unreadable::new("a job's row digests are not whole").into());
        }
        Ok(Some(
            record
                .value
                .chunks_exact(8)
                .map(|b| u64::from_le_bytes(b.try_into().expect("chunks of 8")))
                .collect(),
        ))
    }

    /// Takes (or keeps) the right to follow the load at `place` for `lease`; whether this
    /// process has it.
    pub async fn follow_lease(&self, place: &Place, lease: Duration) -> Result<bool, BookError> {
        if !self.shared {
            return Ok(true);
        }
        Ok(self
            .within(self.store.take_lease(
                &format!("loadlease:poll:{}", place.0),
                &self.holder,
                lease,
            ))
            .await?)
    }

    /// Takes (or keeps) the right to feed the load's input for `lease`: one request of the
    /// fleet at a time; whether this process has it.
    pub async fn feed_lease(&self, place: &Place, lease: Duration) -> Result<bool, BookError> {
        if !self.shared {
            return Ok(true);
        }
        Ok(self
            .within(self.store.take_lease(
                &format!("loadlease:feed:{}", place.0),
                &self.holder,
                lease,
            ))
            .await?)
    }

    /// Gives the right to feed the load's input up.
    pub async fn fed(&self, place: &Place) -> Result<(), BookError> {
        if !self.shared {
            return Ok(());
        }
        Ok(self
            .within(
                self.store
                    .release_lease(&format!("loadlease:feed:{}", place.0), &self.holder),
            )
            .await?)
    }

    /// Gives the right to follow the load up.
    pub async fn leave(&self, place: &Place) -> Result<(), BookError> {
        if !self.shared {
            return Ok(());
        }
        Ok(self
            .within(
                self.store
                    .release_lease(&format!("loadlease:poll:{}", place.0), &self.holder),
            )
            .await?)
    }

    /// Marks the load at `place` running (to be swept by the fleet) or not.
    pub async fn mark_active(&self, place: &Place, active: bool) -> Result<(), BookError> {
        if !self.shared {
            return Ok(());
        }
        if active {
            self.within(self.store.set_add(ACTIVE, &place.0)).await?;
        } else {
            self.within(self.store.set_remove(ACTIVE, &place.0)).await?;
        }
        Ok(())
    }

    /// The places of the loads not yet ended (members that are not places are skipped).
    pub async fn active(&self) -> Result<Vec<Place>, BookError> {
        if !self.shared {
            return Ok(Vec::new());
        }
        Ok(self
            .within(self.store.set_members(ACTIVE))
            .await?
            .iter()
            .filter_map(|m| Place::parse(m))
            .collect())
    }
}

/// What writing a load's record came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Keeping {
    /// Written, at this version.
    Kept,
    /// Another replica ended it first (an abort): the load here took its state and jobs.
    EndedElsewhere,
}

impl Book {
    /// Writes the first record of a new `load`; `false` when one is kept already (another
    /// request of the fleet took a load of that id first).
    pub async fn create(&self, load: &Load) -> Result<bool, BookError> {
        if !self.shared {
            return Ok(true);
        }
        let Some(place) = Place::of(&load.owner, &load.id) else {
            return Ok(true);
        };
        let (record, _) = LoadRecord::now(load);
        let Some(version) = self.write(&place, &record, None).await? else {
            return Ok(false);
        };
        load.update(|progress| progress.kept_version = Some(version));
        Ok(true)
    }

    /// Forgets `load`, refused before anything of it was processed: its `loadId` is free again.
    /// The store has no deletion; its record is written to lapse at once (every backend keeps
    /// to a time to live), and only if nobody wrote it since this process did.
    pub async fn forget(&self, load: &Load) -> Result<(), BookError> {
        if !self.shared {
            return Ok(());
        }
        let (Some(place), Some(version)) = (
            Place::of(&load.owner, &load.id),
            load.progress().kept_version,
        ) else {
            return Ok(());
        };
        let key = format!("load:{}", place.0);
        self.within(
            self.store
                .write(&key, Vec::new(), Some(version), Duration::from_millis(1)),
        )
        .await?;
        Ok(())
    }

    /// Writes `load`'s record as its feeding goes: only over the version this request last
    /// wrote. Another version means another request took the feeding over (this process stood
    /// still past its lease): nothing is written over it.
    pub async fn keep_fed(&self, load: &Load) -> Result<(), BookError> {
        use std::sync::atomic::Ordering;
        if load.taken_over.load(Ordering::SeqCst) {
            return Err(BookError::TakenOver);
        }
        let Some(place) = Place::of(&load.owner, &load.id).filter(|_| self.shared) else {
            return Ok(());
        };
        let (record, expected) = LoadRecord::now(load);
        match self.write(&place, &record, expected).await? {
            Some(version) => {
                load.update(|progress| progress.kept_version = Some(version));
                Ok(())
            }
            None => {
                load.taken_over.store(true, Ordering::SeqCst);
                Err(BookError::TakenOver)
            }
        }
    }

    /// Writes `load`'s record as it stands. When another replica wrote it since this process
    /// last did, the record is read again: if it ended there (aborted), `load` takes that end;
    /// if not, this process's newer view of the jobs is written over it.
    pub async fn keep(&self, load: &Load) -> Result<Keeping, BookError> {
        let Some(place) = Place::of(&load.owner, &load.id).filter(|_| self.shared) else {
            return Ok(Keeping::Kept);
        };
        for _ in 0..3 {
            let (record, expected) = LoadRecord::now(load);
            if let Some(version) = self.write(&place, &record, expected).await? {
                load.update(|progress| progress.kept_version = Some(version));
                return Ok(Keeping::Kept);
            }
            let Some(stored) = self.read(&place).await? else {
                load.update(|progress| progress.kept_version = None);
                continue;
            };
            if stored.load.state.is_done() && !load.state().is_done() {
                load.update(|progress| {
                    progress.state = stored.load.state;
                    progress.jobs = stored.load.jobs;
                    progress.kept_version = Some(stored.version);
                    progress.ended = Some(std::time::Instant::now());
                });
                return Ok(Keeping::EndedElsewhere);
            }
            load.update(|progress| progress.kept_version = Some(stored.version));
        }
        Err(BookError::Busy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loads::fields::load_request;
    use crate::loads::load::{Reach, Side};
    use crate::pipeline::envelope::QueryFields;
    use crate::registry::MemoryRegistry;

    #[tokio::test]
    async fn on_the_memory_backend_a_load_leaves_nothing_in_the_record_store() {
        let store = Arc::new(MemoryRegistry::new(10));
        let book = Book::new(
            store.clone(),
            Duration::from_secs(3600),
            Duration::from_secs(1),
        );
        let fields = QueryFields::parse(Some("object=Contact&operation=insert")).unwrap();
        let spec = load_request(&fields, Side::Bulk2).unwrap().spec;
        let credentials = crate::session::Credentials {
            api_version: crate::common::values::ApiVersion::parse("59.0").unwrap(),
            own: None,
            grant: None,
            timeout: None,
        };
        let load = Load::new(
            "kept-here".into(),
            Side::Bulk2,
            "org:00D000000000001".into(),
            spec,
            Reach::Caller,
            credentials,
        );
        let place = Place::of(&load.owner, &load.id).unwrap();

        assert_eq!(book.keep(&load).await.unwrap(), Keeping::Kept);
        book.mark_active(&place, true).await.unwrap();
        assert!(book
            .follow_lease(&place, Duration::from_secs(1))
            .await
            .unwrap());

        // The process keeps its loads itself (bounded there); the store holds none of it.
        assert!(store
            .read(&format!("load:{}", place.0))
            .await
            .unwrap()
            .is_none());
        assert!(store.set_members(ACTIVE).await.unwrap().is_empty());
        assert!(book.read(&place).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_feeder_whose_load_another_request_took_over_writes_nothing_over_it() {
        let dir = std::env::temp_dir().join(format!("sfbulk-book-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let store = Arc::new(crate::registry::FileRegistry::open(&dir, 10, None).unwrap());
        let book = Book::new(store, Duration::from_secs(3600), Duration::from_secs(5));
        let fields = QueryFields::parse(Some("object=Contact&operation=insert")).unwrap();
        let load = |owner: &str| {
            let credentials = crate::session::Credentials {
                api_version: crate::common::values::ApiVersion::parse("59.0").unwrap(),
                own: None,
                grant: None,
                timeout: None,
            };
            Load::new(
                "taken".into(),
                Side::Bulk2,
                owner.into(),
                load_request(&fields, Side::Bulk2).unwrap().spec,
                Reach::Caller,
                credentials,
            )
        };
        let (first, second) = (load("org:00D000000000001"), load("org:00D000000000001"));
        assert!(book.create(&first).await.unwrap());
        // The second request takes the load on from its record, and writes it.
        let place = Place::of(&first.owner, &first.id).unwrap();
        let kept = book.read(&place).await.unwrap().unwrap();
        second.update(|p| p.kept_version = Some(kept.version));
        second.update(|p| p.total = 7);
        book.keep_fed(&second).await.unwrap();
        // The first one, back, may not write its view over the second's, and knows it.
        first.update(|p| p.total = 3);
        assert!(matches!(
            book.keep_fed(&first).await,
            Err(BookError::TakenOver)
        ));
        assert!(first.taken_over.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(book.read(&place).await.unwrap().unwrap().load.total, 7);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
