//! The fake org's data: records by object, what a batch does to them, and queries over them.
//!
//! Per-record results carry Salesforce's error strings; queries include generated records for
//! results as large as a benchmark needs.

use std::collections::HashMap;

use super::ids::{checksum, IdGenerator};
use crate::xml::read_document;

/// One record: field name → value, `Id` included.
pub type Record = Vec<(String, String)>;

/// Key prefixes of the standard objects (the first three characters of their ids).
const KEY_PREFIXES: &[(&str, &str)] = &[
    ("Account", "001"),
    ("Asset", "02i"),
    ("Campaign", "701"),
    ("Case", "500"),
    ("Contact", "003"),
    ("Contract", "800"),
    ("Event", "00U"),
    ("Lead", "00Q"),
    ("Note", "002"),
    ("Opportunity", "006"),
    ("Order", "801"),
    ("Pricebook2", "01s"),
    ("Product2", "01t"),
    ("Task", "00T"),
    ("User", "005"),
];

/// Fields an insert must set, by object, as Salesforce requires them.
const REQUIRED_FIELDS: &[(&str, &[&str])] = &[
    ("Account", &["Name"]),
    ("Contact", &["LastName"]),
    ("Lead", &["LastName", "Company"]),
    ("Opportunity", &["Name", "StageName", "CloseDate"]),
];

/// The object whose generated records the emulator adds to query results.
pub const GENERATED_OBJECT: &str = "Contact";

pub fn key_prefix(object: &str) -> &'static str {
    KEY_PREFIXES
        .iter()
        .find(|(o, _)| *o == object)
        .map(|(_, p)| *p)
        .unwrap_or("a00")
}

/// The outcome of one record of an ingest batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordResult {
    pub id: String,
    pub success: bool,
    pub created: bool,
    pub error: String,
}

impl RecordResult {
    fn failed(error: String) -> RecordResult {
        RecordResult {
            id: String::new(),
            success: false,
            created: false,
            error,
        }
    }
}

/// The org's stored records.
#[derive(Default)]
pub struct Store {
    records: HashMap<String, Vec<Record>>,
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
            .map(|row| self.apply_one(ids, object, operation, external_id, row))
            .collect()
    }

    fn apply_one(
        &mut self,
        ids: &IdGenerator,
        object: &str,
        operation: &str,
        external_id: Option<&str>,
        row: Record,
    ) -> RecordResult {
        let value = |name: &str| {
            row.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
                .filter(|v| !v.is_empty())
        };
        let stored = self.records.entry(object.to_string()).or_default();
        match operation {
            "insert" => insert(ids, object, stored, row),
            "update" | "delete" | "hardDelete" => {
                let Some(id) = value("Id") else {
                    return RecordResult::failed(format!(
                        "MISSING_ARGUMENT:Id not specified in an {operation} call:--"
                    ));
                };
                let position = stored
                    .iter()
                    .position(|r| field(r, "Id") == Some(id.as_str()));
                let Some(position) = position else {
                    return RecordResult::failed(
                        "INVALID_CROSS_REFERENCE_KEY:invalid cross reference id:--".into(),
                    );
                };
                if operation == "update" {
                    merge(&mut stored[position], row);
                } else {
                    stored.remove(position);
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
                let Some(key) = value(external_field) else {
                    return RecordResult::failed(format!(
                        "MISSING_ARGUMENT:{external_field} not specified:--"
                    ));
                };
                match stored
                    .iter()
                    .position(|r| field(r, external_field) == Some(key.as_str()))
                {
                    Some(position) => {
                        merge(&mut stored[position], row);
                        RecordResult {
                            id: field(&stored[position], "Id")
                                .unwrap_or_default()
                                .to_string(),
                            success: true,
                            created: false,
                            error: String::new(),
                        }
                    }
                    None => insert(ids, object, stored, row),
                }
            }
            other => RecordResult::failed(format!(
                "INVALID_OPERATION:{other} is not an ingest operation:--"
            )),
        }
    }

    /// A copy of the stored records of `object`.
    pub fn snapshot(&self, object: &str) -> Vec<Record> {
        self.records.get(object).cloned().unwrap_or_default()
    }
}

fn insert(
    ids: &IdGenerator,
    object: &str,
    stored: &mut Vec<Record>,
    mut row: Record,
) -> RecordResult {
    let required = REQUIRED_FIELDS
        .iter()
        .find(|(o, _)| *o == object)
        .map(|(_, f)| *f)
        .unwrap_or_default();
    let missing: Vec<&str> = required
        .iter()
        .copied()
        .filter(|name| field(&row, name).is_none_or(str::is_empty))
        .collect();
    if !missing.is_empty() {
        return RecordResult::failed(format!(
            "REQUIRED_FIELD_MISSING:Required fields are missing: [{}]:{} --",
            missing.join(", "),
            missing.join(" ")
        ));
    }
    let id = ids.next(key_prefix(object));
    row.retain(|(k, _)| !k.eq_ignore_ascii_case("Id"));
    row.insert(0, ("Id".into(), id.clone()));
    stored.push(row);
    RecordResult {
        id,
        success: true,
        created: true,
        error: String::new(),
    }
}

fn merge(record: &mut Record, row: Record) {
    for (name, value) in row {
        if name.eq_ignore_ascii_case("Id") {
            continue;
        }
        match record
            .iter_mut()
            .find(|(k, _)| k.eq_ignore_ascii_case(&name))
        {
            Some(slot) => slot.1 = value,
            None => record.push((name, value)),
        }
    }
}

/// A field's value, the name matched without regard to case as Salesforce does.
pub fn field<'r>(record: &'r Record, name: &str) -> Option<&'r str> {
    record
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The fields of a generated Contact, in the order [`GeneratedContact::values`] gives them.
pub const GENERATED_FIELDS: [&str; 5] = ["Id", "FirstName", "LastName", "Email", "Description"];

/// Per field of `fields`, its column in [`GENERATED_FIELDS`] (without regard to case), or `None`
/// for a field generated records leave empty.
pub fn generated_columns(fields: &[String]) -> Vec<Option<usize>> {
    fields
        .iter()
        .map(|f| {
            GENERATED_FIELDS
                .iter()
                .position(|g| g.eq_ignore_ascii_case(f))
        })
        .collect()
}

/// Every generated Contact's long-text field, so a result can be large in bytes as well as rows.
const GENERATED_DESCRIPTION: &str = "Generated by the sfbulk-proxy emulator for large results: \
    a long text field, as real records carry, with a comma and no line break, to make results large.";

/// A generated Contact, written into buffers that are reused from row to row, so a result of
/// millions of rows is produced without storing them, allocating, or formatting for each.
#[derive(Debug, Default)]
pub struct GeneratedContact {
    id: String,
    first_name: String,
    last_name: String,
    email: String,
}

impl GeneratedContact {
    /// Makes this the `n`th generated Contact; the same `n` always gives the same record.
    pub fn fill(&mut self, n: u64) {
        let mut digits = [b'0'; 20];
        let mut start = digits.len();
        let mut rest = n % 1_000_000_000;
        loop {
            start -= 1;
            digits[start] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        let number = std::str::from_utf8(&digits[start..]).expect("ascii digits");
        let padded = std::str::from_utf8(&digits[digits.len() - 9..]).expect("ascii digits");

        self.id.clear();
        self.id.push_str("003GEN");
        self.id.push_str(padded);
        let sum = checksum(self.id.as_bytes());
        self.id
            .push_str(std::str::from_utf8(&sum).expect("ascii checksum"));
        for (buffer, before, after) in [
            (&mut self.first_name, "Generated", ""),
            (&mut self.last_name, "Contact", ""),
            (&mut self.email, "generated.contact", "@example.com"),
        ] {
            buffer.clear();
            buffer.push_str(before);
            buffer.push_str(number);
            buffer.push_str(after);
        }
    }

    /// The values of [`GENERATED_FIELDS`], in that order.
    pub fn values(&self) -> [&str; 5] {
        [
            &self.id,
            &self.first_name,
            &self.last_name,
            &self.email,
            GENERATED_DESCRIPTION,
        ]
    }
}

/// Reads CSV (RFC 4180: quoted fields may hold commas, quotes doubled, and line breaks) into rows.
pub fn parse_csv(text: &str) -> Result<Vec<Vec<String>>, String> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    let mut at_field_start = true;
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if at_field_start => {
                quoted = true;
                at_field_start = false;
            }
            ',' => {
                row.push(std::mem::take(&mut field));
                at_field_start = true;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
                at_field_start = true;
            }
            _ => {
                field.push(c);
                at_field_start = false;
            }
        }
    }
    if quoted {
        return Err("a quoted field is not closed".into());
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    Ok(rows)
}

/// CSV rows (the first is the header) as records.
pub fn csv_records(text: &str) -> Result<Vec<Record>, String> {
    let mut rows = parse_csv(text)?.into_iter();
    let header = rows.next().ok_or("the batch has no header row")?;
    if header.iter().any(|h| h.trim().is_empty()) {
        return Err("a header field is empty".into());
    }
    rows.enumerate()
        .map(|(i, row)| {
            if row.len() != header.len() {
                return Err(format!(
                    "row {} has {} fields, the header has {}",
                    i + 1,
                    row.len(),
                    header.len()
                ));
            }
            Ok(header.iter().cloned().zip(row).collect())
        })
        .collect()
}

/// `<sObjects><sObject><Field>value</Field>...</sObject>...</sObjects>` as records.
pub fn xml_records(body: &[u8]) -> Result<Vec<Record>, String> {
    let doc = read_document(body).map_err(|e| e.to_string())?;
    if doc.root != "sObjects" {
        return Err(format!(
            "the root element is <{}>, not <sObjects>",
            doc.root
        ));
    }
    let source = std::str::from_utf8(body).map_err(|e| e.to_string())?;
    doc.children
        .iter()
        .filter(|c| c.name == "sObject")
        .map(|c| {
            let inner = format!("<sObject>{}</sObject>", &source[c.inner.clone()]);
            let record = read_document(inner.as_bytes()).map_err(|e| e.to_string())?;
            Ok(record
                .children
                .into_iter()
                .map(|f| (f.name, f.text))
                .collect())
        })
        .collect()
}

/// A JSON array of objects as records.
pub fn json_records(body: &[u8]) -> Result<Vec<Record>, String> {
    let rows: Vec<serde_json::Map<String, serde_json::Value>> =
        serde_json::from_slice(body).map_err(|e| e.to_string())?;
    Ok(rows
        .into_iter()
        .map(|row| {
            row.into_iter()
                .filter(|(k, _)| k != "attributes")
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => (k, s),
                    serde_json::Value::Null => (k, String::new()),
                    other => (k, other.to_string()),
                })
                .collect()
        })
        .collect())
}

/// The SOQL the emulator understands: `SELECT f1, f2 FROM Object [LIMIT n]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub fields: Vec<String>,
    pub object: String,
    pub limit: Option<u64>,
}

impl Query {
    pub fn parse(soql: &str) -> Result<Query, String> {
        let words: Vec<&str> = soql.split_whitespace().collect();
        let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
        let malformed = || {
            format!("MALFORMED_QUERY: the emulator understands SELECT fields FROM object [LIMIT n], not: {soql}")
        };
        if upper.first().map(String::as_str) != Some("SELECT") {
            return Err(malformed());
        }
        let from = upper
            .iter()
            .position(|w| w == "FROM")
            .ok_or_else(malformed)?;
        let fields: Vec<String> = words[1..from]
            .join(" ")
            .split(',')
            .map(|f| f.trim().to_string())
            .filter(|f| !f.is_empty())
            .collect();
        let object = words.get(from + 1).ok_or_else(malformed)?.to_string();
        let limit = match &upper[from + 2..] {
            [] => None,
            [limit, n] if limit == "LIMIT" => Some(n.parse().map_err(|_| malformed())?),
            _ => return Err(malformed()),
        };
        if fields.is_empty() {
            return Err(malformed());
        }
        Ok(Query {
            fields,
            object,
            limit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_keeps_quoted_commas_quotes_and_line_breaks() {
        let rows =
            parse_csv("Name,Note\r\n\"Smith, J\",\"said \"\"hi\"\"\nthen left\"\nLee,\n").unwrap();
        assert_eq!(
            rows,
            [
                vec!["Name", "Note"],
                vec!["Smith, J", "said \"hi\"\nthen left"],
                vec!["Lee", ""]
            ]
        );
        assert!(parse_csv("a\n\"open").is_err());
    }

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
        assert_eq!(store.snapshot("Contact").len(), 1);
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
        assert_eq!(field(&store.snapshot("Contact")[0], "LastName"), Some("B"));
    }

    #[test]
    fn generated_contacts_are_stable_and_have_valid_ids() {
        let mut contact = GeneratedContact::default();
        contact.fill(42);
        let [id, first, last, email, _] = contact.values();
        assert_eq!(id, super::super::ids::with_checksum("003GEN000000042"));
        assert_eq!(
            (first, last, email),
            (
                "Generated42",
                "Contact42",
                "generated.contact42@example.com"
            )
        );
        contact.fill(7);
        assert_eq!(contact.values()[1], "Generated7");
    }

    #[test]
    fn soql_subset_parses_and_anything_else_is_malformed() {
        assert_eq!(
            Query::parse("select Id, LastName from Contact limit 5").unwrap(),
            Query {
                fields: vec!["Id".into(), "LastName".into()],
                object: "Contact".into(),
                limit: Some(5)
            }
        );
        assert!(Query::parse("SELECT Id FROM Contact WHERE Name = 'x'").is_err());
        assert!(Query::parse("DELETE Contact").is_err());
    }

    #[test]
    fn xml_and_json_batches_become_records() {
        let xml = b"<sObjects xmlns=\"x\"><sObject><LastName>A&amp;B</LastName></sObject><sObject><LastName>C</LastName></sObject></sObjects>";
        let records = xml_records(xml).unwrap();
        assert_eq!(
            records[0],
            vec![("LastName".to_string(), "A&B".to_string())]
        );
        assert_eq!(records.len(), 2);
        let json = br#"[{"attributes":{"type":"Contact"},"LastName":"D","Age":3}]"#;
        assert_eq!(
            json_records(json).unwrap()[0],
            vec![
                ("LastName".to_string(), "D".to_string()),
                ("Age".to_string(), "3".to_string())
            ],
            "the fields in the order sent"
        );
    }
}
