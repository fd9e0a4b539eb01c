//! Envelopes as WSO2 flows send them, and reading answers.

/// The `createJob` fields of a CSV insert job on Contact.
pub const CSV_INSERT_JOB: &[(&str, &str)] = &[
    ("operation", "insert"),
    ("object", "Contact"),
    ("contentType", "CSV"),
];

/// A WSO2 envelope with root `operation` and the given fields, pretty-printed as flows send them.
pub fn envelope(operation: &str, fields: &[(&str, &str)]) -> String {
    let mut xml = format!("<{operation}>\n");
    for (name, value) in fields {
        xml.push_str(&format!("   <{name}>{value}</{name}>\n"));
    }
    xml.push_str(&format!("</{operation}>"));
    xml
}

/// The text of the first `<name>` element in `xml`.
pub fn element(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(xml[start..end].to_string())
}
