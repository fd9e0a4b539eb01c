//! One record of the fleet's budgets, read as JSON and changed by compare-and-set: the one loop
//! the org's budget, its batches, its slots and the teams' shares all change their records with.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::registry::{RecordStore, RegistryError};

/// Compare-and-set tries before a change counts as the registry's failure.
pub const TRIES: usize = 8;

/// What a change of a record makes of it, and what it answers.
pub enum Change<R> {
    /// The record as changed is written.
    Write(R),
    /// The record is left as it is.
    Keep(R),
}

/// Reads `key` (its default when absent or unreadable), lets `change` decide, and writes the
/// record back unless another writer came first, then tries again: `what` names the record in
/// the error of too many tries.
pub async fn update<T, R>(
    store: &dyn RecordStore,
    key: &str,
    ttl: Duration,
    what: &str,
    mut change: impl FnMut(&mut T) -> Change<R>,
) -> Result<R, RegistryError>
where
    T: Serialize + DeserializeOwned + Default,
{
    for _ in 0..TRIES {
        let (mut value, version) = match store.read(key).await? {
            Some(record) => (
                serde_json::from_slice(&record.value).unwrap_or_default(),
                Some(record.version),
            ),
            None => (T::default(), None),
        };
        match change(&mut value) {
            Change::Keep(answer) => return Ok(answer),
            Change::Write(answer) => {
                let bytes = serde_json::to_vec(&value).unwrap_or_default();
                if store.write(key, bytes, version, ttl).await?.is_some() {
                    return Ok(answer);
                }
            }
        }
    }
    Err(RegistryError::failure(
        format!("{what} changed under {TRIES} tries in a row"),
        None,
    ))
}
