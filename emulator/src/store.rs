//! The org's stored records ([`Store`]), kept compact, and what one ingest row does to them.
//!
//! A load of millions of rows is stored at about its own size: a record's field names are shared
//! with the other rows of its upload, its values packed in one allocation, its id inline. Lookups
//! by `Id` or an external id are indexed once first asked for, so inserts pay nothing for them and
//! updates and upserts of a large load do not scan the object's records for each row.

use std::collections::HashMap;
use std::sync::Arc;

use crate::ids::IdGenerator;
use crate::records::{
    key_prefix, required_fields, Record, RecordResult, FAIL_MARKER, VALIDATION_ERROR,
};

/// One ingest row: its field names (shared by the rows of one upload) and their values.
pub struct Row {
    pub names: Arc<[Box<str>]>,
    pub values: Vec<String>,
}

impl Row {
    /// A record's fields as a row of its own.
    fn of(record: Record) -> Row {
        let (names, values): (Vec<Box<str>>, Vec<String>) = record
            .into_iter()
            .map(|(name, value)| (name.into_boxed_str(), value))
            .unzip();
        Row {
            names: names.into(),
            values,
        }
    }

    /// A field's value when it is set, the name matched without regard to case.
    fn value(&self, name: &str) -> Option<&str> {
        self.names
            .iter()
            .position(|n| n.eq_ignore_ascii_case(name))
            .map(|i| self.values[i].as_str())
            .filter(|v| !v.is_empty())
    }
}

/// The org's stored records, by object.
#[derive(Default)]
pub struct Store {
    tables: HashMap<String, Table>,
}

/// One object's records.
#[derive(Default)]
struct Table {
    /// In the order they were inserted; `None` once deleted.
    rows: Vec<Option<Stored>>,
    /// Per field looked up by value (lower case, `id` for `Id`), each value's first row: made on
    /// the first lookup by that field, then kept up to date.
    indexes: HashMap<String, HashMap<Box<str>, usize>>,
}

/// A stored record.
struct Stored {
    /// Always one the org made: 18 ASCII characters.
    id: [u8; 18],
    /// The names of its fields (any named `Id` is shadowed by `id`).
    names: Arc<[Box<str>]>,
    /// Their values, packed: each its length (4 bytes, little-endian), then its UTF-8.
    values: Box<[u8]>,
}

impl Stored {
    fn id(&self) -> &str {
        std::str::from_utf8(&self.id).unwrap_or_default()
    }

    /// Every value, in the order of `names`.
    fn values(&self) -> impl Iterator<Item = &str> {
        let mut rest = &self.values[..];
        std::iter::from_fn(move || {
            let (length, after) = rest.split_first_chunk::<4>()?;
            let (value, after) = after.split_at(u32::from_le_bytes(*length) as usize);
            rest = after;
            Some(std::str::from_utf8(value).unwrap_or_default())
        })
    }

    /// The fields but `Id`, as (name, value).
    fn fields(&self) -> impl Iterator<Item = (&str, &str)> {
        self.names
            .iter()
            .map(|n| &**n)
            .zip(self.values())
            .filter(|(name, _)| !name.eq_ignore_ascii_case("Id"))
    }

    /// A field's value, `Id` included, the name matched without regard to case.
    fn get(&self, name: &str) -> Option<&str> {
        if name.eq_ignore_ascii_case("Id") {
            return Some(self.id());
        }
        self.fields()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    fn record(&self) -> Record {
        std::iter::once(("Id".to_string(), self.id().to_string()))
            .chain(self.fields().map(|(n, v)| (n.to_string(), v.to_string())))
            .collect()
    }
}

fn pack<'v>(values: impl IntoIterator<Item = &'v str>) -> Box<[u8]> {
    let mut packed = Vec::new();
    for value in values {
        packed.extend_from_slice(&(value.len() as u32).to_le_bytes());
        packed.extend_from_slice(value.as_bytes());
    }
    packed.into_boxed_slice()
}

impl Table {
    /// The row whose `field` (lower case) is `value`, by the field's index.
    fn find(&mut self, field: &str, value: &str) -> Option<usize> {
        let rows = &self.rows;
        let index = self.indexes.entry(field.to_string()).or_insert_with(|| {
            let mut index = HashMap::new();
            for (i, stored) in rows.iter().enumerate() {
                if let Some(v) = stored.as_ref().and_then(|s| s.get(field)) {
                    if !v.is_empty() {
                        index.entry(v.into()).or_insert(i);
                    }
                }
            }
            index
        });
        index.get(value).copied()
    }

    /// Indexes row `i`'s values, or takes them out of the indexes (`keep` false).
    fn reindex(&mut self, i: usize, keep: bool) {
        let Some(stored) = &self.rows[i] else {
            return;
        };
        for (field, index) in &mut self.indexes {
            match stored.get(field).filter(|v| !v.is_empty()) {
                Some(v) if keep => {
                    index.entry(v.into()).or_insert(i);
                }
                Some(v) if index.get(v) == Some(&i) => {
                    index.remove(v);
                }
                _ => {}
            }
        }
    }

    fn push(&mut self, stored: Stored) {
        self.rows.push(Some(stored));
        self.reindex(self.rows.len() - 1, true);
    }

    /// Sets row `i`'s fields from `row`'s (all but `Id`), adding those it lacked.
    fn merge(&mut self, i: usize, row: &Row) {
        self.reindex(i, false);
        let Some(stored) = &mut self.rows[i] else {
            return;
        };
        let mut names: Vec<Box<str>> = stored.names.to_vec();
        let mut values: Vec<String> = stored.values().map(str::to_string).collect();
        let before = names.len();
        for (name, value) in row.names.iter().zip(&row.values) {
            if name.eq_ignore_ascii_case("Id") {
                continue;
            }
            let slot = names
                .iter()
                .position(|n| n.eq_ignore_ascii_case(name) && !n.eq_ignore_ascii_case("Id"));
            match slot {
                Some(slot) => values[slot] = value.clone(),
                None => {
                    names.push(name.clone());
                    values.push(value.clone());
                }
            }
        }
        if names.len() != before {
            stored.names = names.into();
        }
        stored.values = pack(values.iter().map(String::as_str));
        self.reindex(i, true);
    }

    fn remove(&mut self, i: usize) {
        self.reindex(i, false);
        self.rows[i] = None;
    }
}

impl Store {
    /// Applies one ingest operation to `rows`, returning a result per row in order.
    pub fn apply(
        &mut self,
        ids: &IdGenerator,
        object: &str,
        operation: &str,
        external_id: Option<&str>,
        rows: Vec<Record>,
    ) -> Vec<RecordResult> {
        rows.into_iter()
            .map(|row| self.apply_row(ids, object, operation, external_id, Row::of(row)))
            .collect()
    }

    /// Applies one ingest operation to one row.
    pub fn apply_row(
        &mut self,
        ids: &IdGenerator,
        object: &str,
        operation: &str,
        external_id: Option<&str>,
        row: Row,
    ) -> RecordResult {
        if row.values.iter().any(|v| v.contains(FAIL_MARKER)) {
            return RecordResult::failed(VALIDATION_ERROR.into());
        }
        let table = self.tables.entry(object.to_string()).or_default();
        match operation {
            "insert" => insert(ids, object, table, row),
            "update" | "delete" | "hardDelete" => {
                let Some(id) = row.value("Id").map(str::to_string) else {
                    return RecordResult::failed(format!(
                        "MISSING_ARGUMENT:Id not specified in an {operation} call:--"
                    ));
                };
                let Some(i) = table.find("id", &id) else {
                    return RecordResult::failed(
                        "INVALID_CROSS_REFERENCE_KEY:invalid cross reference id:--".into(),
                    );
                };
                if operation == "update" {
                    table.merge(i, &row);
                } else {
                    table.remove(i);
                }
                RecordResult {
                    id,
                    success: true,
                    created: false,
                    error: String::new(),
                }
            }
            "upsert" => {
                let external_field = external_id.unwrap_or("Id");
                let Some(key) = row.value(external_field).map(str::to_string) else {
                    return RecordResult::failed(format!(
                        "MISSING_ARGUMENT:{external_field} not specified:--"
                    ));
                };
                match table.find(&external_field.to_ascii_lowercase(), &key) {
                    Some(i) => {
                        table.merge(i, &row);
                        RecordResult {
                            id: table.rows[i]
                                .as_ref()
                                .map(|s| s.id().to_string())
                                .unwrap_or_default(),
                            success: true,
                            created: false,
                            error: String::new(),
                        }
                    }
                    None => insert(ids, object, table, row),
                }
            }
            other => RecordResult::failed(format!(
                "INVALID_OPERATION:{other} is not an ingest operation:--"
            )),
        }
    }

    /// A copy of the stored records of `object`, `Id` first in each.
    pub fn snapshot(&self, object: &str) -> Vec<Record> {
        self.tables
            .get(object)
            .map(|t| t.rows.iter().flatten().map(Stored::record).collect())
            .unwrap_or_default()
    }
}

fn insert(ids: &IdGenerator, object: &str, table: &mut Table, row: Row) -> RecordResult {
    let missing: Vec<&str> = required_fields(object)
        .iter()
        .copied()
        .filter(|name| row.value(name).is_none())
        .collect();
    if !missing.is_empty() {
        return RecordResult::failed(format!(
            "REQUIRED_FIELD_MISSING:Required fields are missing: [{}]:{} --",
            missing.join(", "),
            missing.join(" ")
        ));
    }
    let id = ids.next(key_prefix(object));
    table.push(Stored {
        id: <[u8; 18]>::try_from(id.as_bytes()).expect("the org's ids are 18 characters"),
        values: pack(row.values.iter().map(String::as_str)),
        names: row.names,
    });
    RecordResult {
        id,
        success: true,
        created: true,
        error: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{csv_records, field};

    #[test]
    fn inserts_check_required_fields_like_salesforce() {
        let ids = IdGenerator::default();
        let mut store = Store::default();
        let rows = csv_records("FirstName,LastName\nAda,Lovelace\nNo,\n").unwrap();
        let results = store.apply(&ids, "Contact", "insert", None, rows);
        assert!(results[0].success && results[0].created && results[0].id.starts_with("003"));
        assert_eq!(
            results[1].error,
            "REQUIRED_FIELD_MISSING:Required fields are missing: [LastName]:LastName --"
        );
        let stored = store.snapshot("Contact");
        assert_eq!(stored.len(), 1);
        assert_eq!(
            stored[0],
            vec![
                ("Id".to_string(), results[0].id.clone()),
                ("FirstName".to_string(), "Ada".to_string()),
                ("LastName".to_string(), "Lovelace".to_string())
            ]
        );
    }

    #[test]
    fn upsert_updates_by_external_id_and_inserts_otherwise() {
        let ids = IdGenerator::default();
        let mut store = Store::default();
        let first = store.apply(
            &ids,
            "Contact",
            "upsert",
            Some("Ext__c"),
            csv_records("Ext__c,LastName\n1,A\n").unwrap(),
        );
        let second = store.apply(
            &ids,
            "Contact",
            "upsert",
            Some("Ext__c"),
            csv_records("Ext__c,LastName\n1,B\n2,C\n").unwrap(),
        );
        assert!(first[0].created);
        assert_eq!(
            (second[0].created, second[0].id.clone()),
            (false, first[0].id.clone())
        );
        assert!(second[1].created);
        let third = store.apply(
            &ids,
            "Contact",
            "upsert",
            Some("Ext__c"),
            csv_records("Ext__c,LastName\n2,D\n").unwrap(),
        );
        assert_eq!(third[0].id, second[1].id, "an inserted row is indexed");
        assert_eq!(field(&store.snapshot("Contact")[0], "LastName"), Some("B"));
        assert_eq!(field(&store.snapshot("Contact")[1], "LastName"), Some("D"));
    }

    #[test]
    fn updates_add_fields_and_deletes_find_by_id_once_indexed() {
        let ids = IdGenerator::default();
        let mut store = Store::default();
        let inserted = store.apply(
            &ids,
            "Contact",
            "insert",
            None,
            csv_records("LastName\nA\nB\n").unwrap(),
        );
        let (a, b) = (&inserted[0].id, &inserted[1].id);
        let updated = store.apply(
            &ids,
            "Contact",
            "update",
            None,
            csv_records(&format!("Id,Email\n{b},b@example.com\nnope,x\n")).unwrap(),
        );
        assert!(updated[0].success);
        assert_eq!(
            updated[1].error,
            "INVALID_CROSS_REFERENCE_KEY:invalid cross reference id:--"
        );
        let deleted = store.apply(
            &ids,
            "Contact",
            "delete",
            None,
            csv_records(&format!("Id\n{a}\n{a}\n")).unwrap(),
        );
        assert!(deleted[0].success && !deleted[1].success, "{deleted:?}");
        assert_eq!(
            store.snapshot("Contact"),
            [vec![
                ("Id".to_string(), b.clone()),
                ("LastName".to_string(), "B".to_string()),
                ("Email".to_string(), "b@example.com".to_string())
            ]]
        );
    }

    #[test]
    fn a_row_holding_the_fail_marker_fails_as_a_validation_rule_would() {
        let ids = IdGenerator::default();
        let mut store = Store::default();
        let results = store.apply(
            &ids,
            "Contact",
            "insert",
            None,
            csv_records("LastName,Description\nA,x SFBULK_FAIL y\nB,ok\n").unwrap(),
        );
        assert_eq!(results[0].error, VALIDATION_ERROR);
        assert!(!results[0].success && results[1].success);
        assert_eq!(store.snapshot("Contact").len(), 1);
    }
}
