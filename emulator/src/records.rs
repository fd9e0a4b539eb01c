//! The fake org's data as requests carry it: the objects' fields, records read from CSV, XML and
//! JSON, per-record results, and queries (the records themselves are kept by `store`).
//!
//! Per-record results carry Salesforce's error strings ([`FAIL_MARKER`] fails a row on purpose);
//! queries include generated records for results as large as a benchmark needs.

use super::ids::checksum;
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

/// The fields of the objects the fake org describes, as a developer org's are: the standard ones,
/// the sample custom fields Salesforce puts in such an org, and `Ext__c`, the fake org's own
/// external id field. An upload naming anything else fails (see [`unknown_field`]); objects not
/// listed here take any well-formed field name.
const FIELDS: &[(&str, &[&str])] = &[
    (
        "Account",
        &[
            "Id",
            "IsDeleted",
            "MasterRecordId",
            "Name",
            "Type",
            "ParentId",
            "BillingStreet",
            "BillingCity",
            "BillingState",
            "BillingPostalCode",
            "BillingCountry",
            "BillingStateCode",
            "BillingCountryCode",
            "BillingLatitude",
            "BillingLongitude",
            "BillingGeocodeAccuracy",
            "ShippingStreet",
            "ShippingCity",
            "ShippingState",
            "ShippingPostalCode",
            "ShippingCountry",
            "ShippingStateCode",
            "ShippingCountryCode",
            "ShippingLatitude",
            "ShippingLongitude",
            "ShippingGeocodeAccuracy",
            "Phone",
            "Fax",
            "AccountNumber",
            "Website",
            "PhotoUrl",
            "Sic",
            "Industry",
            "AnnualRevenue",
            "NumberOfEmployees",
            "Ownership",
            "TickerSymbol",
            "Description",
            "Rating",
            "Site",
            "OwnerId",
            "CreatedDate",
            "CreatedById",
            "LastModifiedDate",
            "LastModifiedById",
            "SystemModstamp",
            "LastActivityDate",
            "LastViewedDate",
            "LastReferencedDate",
            "Jigsaw",
            "JigsawCompanyId",
            "CleanStatus",
            "AccountSource",
            "DunsNumber",
            "Tradestyle",
            "NaicsCode",
            "NaicsDesc",
            "YearStarted",
            "SicDesc",
            "DandbCompanyId",
            "OperatingHoursId",
            "CustomerPriority__c",
            "SLA__c",
            "Active__c",
            "NumberofLocations__c",
            "UpsellOpportunity__c",
            "SLASerialNumber__c",
            "SLAExpirationDate__c",
            "Ext__c",
        ],
    ),
    (
        "Contact",
        &[
            "Id",
            "IsDeleted",
            "MasterRecordId",
            "AccountId",
            "LastName",
            "FirstName",
            "Salutation",
            "MiddleName",
            "Suffix",
            "Name",
            "OtherStreet",
            "OtherCity",
            "OtherState",
            "OtherPostalCode",
            "OtherCountry",
            "OtherStateCode",
            "OtherCountryCode",
            "OtherLatitude",
            "OtherLongitude",
            "OtherGeocodeAccuracy",
            "MailingStreet",
            "MailingCity",
            "MailingState",
            "MailingPostalCode",
            "MailingCountry",
            "MailingStateCode",
            "MailingCountryCode",
            "MailingLatitude",
            "MailingLongitude",
            "MailingGeocodeAccuracy",
            "Phone",
            "Fax",
            "MobilePhone",
            "HomePhone",
            "OtherPhone",
            "AssistantPhone",
            "ReportsToId",
            "Email",
            "Title",
            "Department",
            "AssistantName",
            "LeadSource",
            "Birthdate",
            "Description",
            "OwnerId",
            "HasOptedOutOfEmail",
            "HasOptedOutOfFax",
            "DoNotCall",
            "CreatedDate",
            "CreatedById",
            "LastModifiedDate",
            "LastModifiedById",
            "SystemModstamp",
            "LastActivityDate",
            "LastCURequestDate",
            "LastCUUpdateDate",
            "LastViewedDate",
            "LastReferencedDate",
            "EmailBouncedReason",
            "EmailBouncedDate",
            "IsEmailBounced",
            "PhotoUrl",
            "Jigsaw",
            "JigsawContactId",
            "IndividualId",
            "Pronouns",
            "GenderIdentity",
            "Level__c",
            "Languages__c",
            "Ext__c",
        ],
    ),
    (
        "Lead",
        &[
            "Id",
            "IsDeleted",
            "MasterRecordId",
            "LastName",
            "FirstName",
            "Salutation",
            "MiddleName",
            "Suffix",
            "Name",
            "Title",
            "Company",
            "Street",
            "City",
            "State",
            "PostalCode",
            "Country",
            "StateCode",
            "CountryCode",
            "Latitude",
            "Longitude",
            "GeocodeAccuracy",
            "Phone",
            "MobilePhone",
            "Fax",
            "Email",
            "Website",
            "PhotoUrl",
            "Description",
            "LeadSource",
            "Status",
            "Industry",
            "Rating",
            "AnnualRevenue",
            "NumberOfEmployees",
            "OwnerId",
            "HasOptedOutOfEmail",
            "IsConverted",
            "ConvertedDate",
            "ConvertedAccountId",
            "ConvertedContactId",
            "ConvertedOpportunityId",
            "IsUnreadByOwner",
            "CreatedDate",
            "CreatedById",
            "LastModifiedDate",
            "LastModifiedById",
            "SystemModstamp",
            "LastActivityDate",
            "DoNotCall",
            "HasOptedOutOfFax",
            "LastViewedDate",
            "LastReferencedDate",
            "LastTransferDate",
            "Jigsaw",
            "JigsawContactId",
            "CleanStatus",
            "CompanyDunsNumber",
            "DandbCompanyId",
            "EmailBouncedReason",
            "EmailBouncedDate",
            "IndividualId",
            "Pronouns",
            "GenderIdentity",
            "SICCode__c",
            "ProductInterest__c",
            "Primary__c",
            "CurrentGenerators__c",
            "NumberofLocations__c",
            "Ext__c",
        ],
    ),
];

/// The first of `names` (an upload's header) that `object` has no field of, as Salesforce names it
/// in `Field name not found : <name>`. A name that is no field name at all (a byte-order mark
/// before it, a space) is unknown on any object; `Relationship.Field` is taken when the object
/// has the lookup (`AccountId` for `Account.`, `Thing__c` for `Thing__r.`).
pub fn unknown_field<'n>(object: &str, names: &'n [Box<str>]) -> Option<&'n str> {
    let fields = FIELDS.iter().find(|(o, _)| *o == object).map(|(_, f)| *f);
    let well_formed = |name: &str| {
        name.starts_with(|c: char| c.is_ascii_alphabetic())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
    };
    let has = |fields: &[&str], name: &str| match name.split_once('.') {
        None => fields.iter().any(|f| f.eq_ignore_ascii_case(name)),
        Some((relationship, _)) => {
            let relationship = relationship.to_ascii_lowercase();
            fields.iter().any(|f| {
                let f = f.to_ascii_lowercase();
                f.strip_suffix("id")
                    .is_some_and(|stem| !stem.is_empty() && stem == relationship)
                    || f.strip_suffix("__c")
                        .is_some_and(|stem| relationship.strip_suffix("__r") == Some(stem))
            })
        }
    };
    names
        .iter()
        .map(|n| &**n)
        .find(|name| !well_formed(name) || fields.is_some_and(|f| !has(f, name)))
}

/// The fields an insert of `object` must set.
pub fn required_fields(object: &str) -> &'static [&'static str] {
    REQUIRED_FIELDS
        .iter()
        .find(|(o, _)| *o == object)
        .map(|(_, f)| *f)
        .unwrap_or_default()
}

/// What a test puts in any value of a row to have the row fail, on purpose, as a validation rule
/// of the org would fail it (on Bulk API 1.0 and 2.0 alike): with [`VALIDATION_ERROR`].
pub const FAIL_MARKER: &str = "SFBULK_FAIL";

/// The error of a row holding [`FAIL_MARKER`], in the form of Salesforce's per-record errors.
pub const VALIDATION_ERROR: &str =
    "FIELD_CUSTOM_VALIDATION_EXCEPTION:rejected by the emulator's validation rule:--";

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
    pub fn failed(error: String) -> RecordResult {
        RecordResult {
            id: String::new(),
            success: false,
            created: false,
            error,
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
