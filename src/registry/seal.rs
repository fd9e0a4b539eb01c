//! How an entry is written down, for the file and Redis backends alike: JSON, sealed with
//! AES-256-GCM when `registry.encryption_key` is set, so a copy of the store holds no usable
//! token. The sealed text is bound to its entry's id, so it cannot be moved to another key. A
//! load's record value is sealed the same way, bound to its record key.

use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use serde::{Deserialize, Serialize};

use super::{Entry, RegistryKey};
use crate::common::secret::Secret;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The sealing keys: the current one first, then older ones that still open entries.
pub struct Keys {
    current: Key,
    previous: Vec<Key>,
}

/// The length of a key's id: 16 hex digits.
const KEY_ID_LEN: usize = 16;

struct Key {
    /// A short hash of the key, stored beside what it sealed so the right key is tried; it
    /// reveals nothing of the key.
    id: String,
    key: LessSafeKey,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("current", &self.current.id)
            .field(
                "previous",
                &self.previous.iter().map(|k| &k.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Key {
    fn parse(setting: &str, raw: &Secret) -> Result<Key, String> {
        let bytes = B64
            .decode(raw.expose().trim())
            .map_err(|_| format!("{setting} is not base64"))?;
        if bytes.len() != 32 {
            return Err(format!(
                "{setting} must be base64 of 32 bytes, not {}",
                bytes.len()
            ));
        }
        let id = super::digest(&["sfbulk-seal-key-v1", &crate::common::hex::encode(&bytes)])
            [..KEY_ID_LEN]
            .to_string();
        let key =
            UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| format!("{setting} is unusable"))?;
        Ok(Key {
            id,
            key: LessSafeKey::new(key),
        })
    }
}

impl Keys {
    /// `registry.encryption_key` and `registry.encryption_previous_keys`; `None` when the first
    /// is empty (then the second must be too).
    pub fn from_settings(current: &Secret, previous: &[Secret]) -> Result<Option<Keys>, String> {
        if current.expose().trim().is_empty() {
            return if previous.is_empty() {
                Ok(None)
            } else {
                Err("registry.encryption_previous_keys needs registry.encryption_key".into())
            };
        }
        Ok(Some(Keys {
            current: Key::parse("registry.encryption_key", current)?,
            previous: previous
                .iter()
                .map(|k| Key::parse("registry.encryption_previous_keys", k))
                .collect::<Result<_, _>>()?,
        }))
    }

    fn find(&self, id: &str) -> Option<&Key> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == id)
    }
}

/// An entry as written down, without seal.
#[derive(Serialize, Deserialize)]
struct Plain {
    registry_path: String,
    access_token: String,
    instance_url: String,
    stored_at_ms: u64,
    refresh_token: Option<String>,
    #[serde(default)]
    version: u64,
    #[serde(default)]
    secret_check: Option<String>,
}

/// An entry sealed: only the registry path (for operators) and the key's id are readable.
#[derive(Serialize, Deserialize)]
struct Sealed {
    registry_path: String,
    key_id: String,
    nonce: String,
    sealed: String,
}

/// Either layout; told apart by their fields.
#[derive(Deserialize)]
#[serde(untagged)]
enum Stored {
    Sealed(Sealed),
    Plain(Plain),
}

/// Why a stored entry could not be read back; never quotes its content.
#[derive(Debug, thiserror::Error)]
pub enum Unreadable {
    #[error("not a registry entry")]
    Corrupt,
    #[error("sealed with key {0}, which is neither registry.encryption_key nor one of registry.encryption_previous_keys")]
    UnknownKey(String),
    #[error(
        "sealed with key {0}, but it does not open with it (altered, or moved from another key)"
    )]
    DoesNotOpen(String),
}

/// `entry` written down for `key`, sealed with the current key when there is one.
pub fn encode(key: &RegistryKey, entry: &Entry, keys: Option<&Keys>) -> Vec<u8> {
    let plain = Plain {
        registry_path: key.registry_path.to_string(),
        access_token: entry.access_token.expose().to_string(),
        instance_url: entry.instance_url.clone(),
        stored_at_ms: entry.stored_at_ms,
        refresh_token: entry.refresh_token.as_ref().map(|t| t.expose().to_string()),
        version: entry.version,
        secret_check: entry.secret_check.clone(),
    };
    let json = serde_json::to_vec(&plain).expect("an entry serialises");
    let Some(keys) = keys else {
        return json;
    };
    let mut nonce = [0u8; NONCE_LEN];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
        .expect("the system's random source works");
    let mut sealed = json;
    keys.current
        .key
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(key.id().as_bytes()),
            &mut sealed,
        )
        .expect("AES-GCM seals any entry");
    serde_json::to_vec(&Sealed {
        registry_path: key.registry_path.to_string(),
        key_id: keys.current.id.clone(),
        nonce: B64.encode(nonce),
        sealed: B64.encode(sealed),
    })
    .expect("a sealed entry serialises")
}

/// The entry `bytes` hold for `key`, opened with whichever of `keys` sealed it.
pub fn decode(key: &RegistryKey, bytes: &[u8], keys: Option<&Keys>) -> Result<Entry, Unreadable> {
    let plain = match serde_json::from_slice::<Stored>(bytes).map_err(|_| Unreadable::Corrupt)? {
        Stored::Plain(plain) => plain,
        Stored::Sealed(sealed) => {
            let key_id = sealed.key_id;
            let Some(with) = keys.and_then(|k| k.find(&key_id)) else {
                return Err(Unreadable::UnknownKey(key_id));
            };
            let nonce: [u8; NONCE_LEN] = B64
                .decode(&sealed.nonce)
                .ok()
                .and_then(|n| n.try_into().ok())
                .ok_or(Unreadable::Corrupt)?;
            let mut data = B64
                .decode(&sealed.sealed)
                .map_err(|_| Unreadable::Corrupt)?;
            let opened = with
                .key
                .open_in_place(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(key.id().as_bytes()),
                    &mut data,
                )
                .map_err(|_| Unreadable::DoesNotOpen(key_id.clone()))?;
            serde_json::from_slice(opened).map_err(|_| Unreadable::Corrupt)?
        }
    };
    Ok(Entry {
        access_token: Secret::new(plain.access_token),
        instance_url: plain.instance_url,
        stored_at_ms: plain.stored_at_ms,
        refresh_token: plain.refresh_token.map(Secret::new),
        version: plain.version,
        secret_check: plain.secret_check,
    })
}

/// A record's value as stored: `P` and the value when no key is set, or `S`, the current key's id,
/// the nonce and the value sealed, bound to `aad`. Binary, not JSON: a value may be megabytes.
pub fn seal_value(aad: &[u8], value: &[u8], keys: Option<&Keys>) -> Vec<u8> {
    let Some(keys) = keys else {
        let mut stored = Vec::with_capacity(1 + value.len());
        stored.push(b'P');
        stored.extend_from_slice(value);
        return stored;
    };
    let mut nonce = [0u8; NONCE_LEN];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
        .expect("the system's random source works");
    let id = keys.current.id.as_bytes();
    let mut stored = Vec::with_capacity(1 + id.len() + NONCE_LEN + value.len() + 16);
    stored.push(b'S');
    stored.extend_from_slice(id);
    stored.extend_from_slice(&nonce);
    let start = stored.len();
    stored.extend_from_slice(value);
    let tag = keys
        .current
        .key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut stored[start..],
        )
        .expect("AES-GCM seals any record");
    stored.extend_from_slice(tag.as_ref());
    stored
}

/// The value [`seal_value`] stored, opened with whichever of `keys` sealed it.
pub fn open_value(aad: &[u8], stored: &[u8], keys: Option<&Keys>) -> Result<Vec<u8>, Unreadable> {
    match stored.split_first() {
        Some((b'P', value)) => Ok(value.to_vec()),
        Some((b'S', sealed)) => {
            if sealed.len() < KEY_ID_LEN + NONCE_LEN {
                return Err(Unreadable::Corrupt);
            }
            let (id, rest) = sealed.split_at(KEY_ID_LEN);
            let key_id = String::from_utf8_lossy(id).into_owned();
            let Some(with) = keys.and_then(|k| k.find(&key_id)) else {
                return Err(Unreadable::UnknownKey(key_id));
            };
            let (nonce, data) = rest.split_at(NONCE_LEN);
            let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| Unreadable::Corrupt)?;
            let mut data = data.to_vec();
            let opened = with
                .key
                .open_in_place(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(aad),
                    &mut data,
                )
                .map_err(|_| Unreadable::DoesNotOpen(key_id.clone()))?
                .len();
            data.truncate(opened);
            Ok(data)
        }
        _ => Err(Unreadable::Corrupt),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(current: u8, previous: &[u8]) -> Keys {
        let b64 = |byte: u8| Secret::new(B64.encode([byte; 32]));
        Keys::from_settings(
            &b64(current),
            &previous.iter().map(|b| b64(*b)).collect::<Vec<_>>(),
        )
        .unwrap()
        .unwrap()
    }

    fn key(id: &str) -> RegistryKey {
        RegistryKey {
            registry_path: "connectors/SalesforceBulk".into(),
            id: id.into(),
        }
    }

    fn entry() -> Entry {
        Entry {
            access_token: Secret::new("00D!ACCESS-TOKEN-BYTES"),
            instance_url: "https://na1.salesforce.com".into(),
            stored_at_ms: 7,
            refresh_token: Some(Secret::new("ROTATED-REFRESH-TOKEN")),
            version: 3,
            secret_check: Some("check".into()),
        }
    }

    #[test]
    fn sealed_entries_hold_no_token_bytes_and_open_with_current_or_previous_keys() {
        let old = keys(1, &[]);
        let sealed = encode(&key("a"), &entry(), Some(&old));
        let text = String::from_utf8(sealed.clone()).unwrap();
        for secret in ["ACCESS-TOKEN", "ROTATED-REFRESH", "na1.salesforce"] {
            assert!(!text.contains(secret), "{text}");
        }
        assert!(text.contains("connectors/SalesforceBulk"));
        assert_eq!(decode(&key("a"), &sealed, Some(&old)).unwrap(), entry());
        // After the key changed, the old key still opens it.
        assert_eq!(
            decode(&key("a"), &sealed, Some(&keys(2, &[1]))).unwrap(),
            entry()
        );
        assert!(matches!(
            decode(&key("a"), &sealed, Some(&keys(2, &[]))),
            Err(Unreadable::UnknownKey(_))
        ));
        assert!(matches!(
            decode(&key("a"), &sealed, None),
            Err(Unreadable::UnknownKey(_))
        ));
        // Moved under another key's name, it does not open.
        assert!(matches!(
            decode(&key("b"), &sealed, Some(&old)),
            Err(Unreadable::DoesNotOpen(_))
        ));
    }

    #[test]
    fn plain_entries_of_earlier_versions_still_read_and_garbage_is_corrupt() {
        let plain = encode(&key("a"), &entry(), None);
        assert_eq!(
            decode(&key("a"), &plain, Some(&keys(1, &[]))).unwrap(),
            entry()
        );
        let earlier = br#"{"registry_path":"p","access_token":"t","instance_url":"https://x","stored_at_ms":1,"refresh_token":null}"#;
        assert_eq!(decode(&key("a"), earlier, None).unwrap().version, 0);
        assert!(matches!(
            decode(&key("a"), b"{\"x\":", None),
            Err(Unreadable::Corrupt)
        ));
    }

    #[test]
    fn keys_must_be_32_bytes_of_base64() {
        for bad in ["not base64!", "AAAA"] {
            assert!(Keys::from_settings(&Secret::new(bad), &[]).is_err());
        }
        assert!(Keys::from_settings(&Secret::new(""), &[Secret::new("x")]).is_err());
        assert!(Keys::from_settings(&Secret::new(""), &[])
            .unwrap()
            .is_none());
    }

    #[test]
    fn record_values_are_sealed_bound_to_their_key_and_open_with_previous_keys() {
        let value = b"row 1,ACME,secret-amount".to_vec();
        let sealed = seal_value(b"k1", &value, Some(&keys(1, &[])));
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(
            open_value(b"k1", &sealed, Some(&keys(2, &[1]))).unwrap(),
            value
        );
        assert!(matches!(
            open_value(b"k2", &sealed, Some(&keys(1, &[]))),
            Err(Unreadable::DoesNotOpen(_))
        ));
        assert!(matches!(
            open_value(b"k1", &sealed, Some(&keys(2, &[]))),
            Err(Unreadable::UnknownKey(_))
        ));
        assert!(matches!(
            open_value(b"k1", &sealed[..20], Some(&keys(1, &[]))),
            Err(Unreadable::Corrupt)
        ));
        let plain = seal_value(b"k1", &value, None);
        assert_eq!(
            open_value(b"k1", &plain, Some(&keys(1, &[]))).unwrap(),
            value
        );
        assert!(matches!(
            open_value(b"k1", b"", None),
            Err(Unreadable::Corrupt)
        ));
    }
}
