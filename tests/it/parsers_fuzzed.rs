//! Property tests over the parsers a stranger feeds: the XML and JSON envelope readers, SOAP
//! unwrapping, the upload query string and the CSV unindent. Arbitrary bytes and mutated real
//! envelopes never panic, never cost more than linear work (reader events counted, not
//! seconds), and never yield a field the input did not hold. `fuzz/` runs the same readers
//! under libFuzzer for longer.

use axum::body::Bytes;
use proptest::prelude::*;
use sfbulk_proxy::common::xml::read_document;
use sfbulk_proxy::pipeline::envelope::{Envelope, Fields, QueryFields};
use sfbulk_proxy::pipeline::operation::unindent_csv;

/// The envelopes the samples hold, as real flows send them.
fn samples() -> Vec<Vec<u8>> {
    let dirs = [
        concat!(env!("CARGO_MANIFEST_DIR"), "/samples/salesforce"),
        concat!(env!("CARGO_MANIFEST_DIR"), "/samples/salesforce/v2"),
    ];
    let mut found: Vec<Vec<u8>> = dirs
        .iter()
        .flat_map(|dir| std::fs::read_dir(dir).unwrap())
        .map(|f| f.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "xml"))
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    found.sort();
    assert!(found.len() >= 26, "the samples of both APIs are there");
    found
}

/// One edit to a document: a byte replaced, removed or inserted, or a stretch repeated.
#[derive(Debug, Clone)]
enum Mutation {
    Replace(usize, u8),
    Remove(usize),
    Insert(usize, u8),
    Repeat(usize, usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Mutation::Replace(at, b)),
        any::<usize>().prop_map(Mutation::Remove),
        (
            any::<usize>(),
            prop::sample::select(b"<>/&;\"'=:! \n\x00ab".to_vec())
        )
            .prop_map(|(at, b)| Mutation::Insert(at, b)),
        (any::<usize>(), 1usize..64, 1usize..50)
            .prop_map(|(at, len, times)| { Mutation::Repeat(at, len, times) }),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        if bytes.is_empty() {
            break;
        }
        let n = bytes.len();
        match *m {
            Mutation::Replace(at, b) => bytes[at % n] = b,
            Mutation::Remove(at) => {
                bytes.remove(at % n);
            }
            Mutation::Insert(at, b) => bytes.insert(at % (n + 1), b),
            Mutation::Repeat(at, len, times) => {
                let start = at % n;
                let end = (start + len).min(n);
                let stretch = bytes[start..end].to_vec();
                for _ in 0..times {
                    bytes.splice(end..end, stretch.iter().copied());
                }
            }
        }
    }
    bytes
}

/// What must hold of any envelope the reader accepts: each field it yields is named in the
/// input, and its reading took no more events than the input has bytes.
fn check_envelope(input: &[u8], content_type: Option<&str>) -> Result<(), TestCaseError> {
    let Ok(envelope) = Envelope::parse(content_type, Bytes::copy_from_slice(input), "getJob")
    else {
        return Ok(());
    };
    let text = String::from_utf8_lossy(input);
    for name in envelope.names() {
        prop_assert!(
            text.contains(name),
            "the field {name:?} is not in the input"
        );
        if let Some(value) = envelope.optional(leak(name)) {
            prop_assert!(value.len() <= input.len());
        }
    }
    prop_assert!(text.contains(envelope.operation()) || content_type.is_some());
    if content_type.is_none() {
        let document = read_document(input, true).expect("accepted above");
        prop_assert!(
            document.events <= input.len() + 2,
            "{} events for {} bytes",
            document.events,
            input.len()
        );
    }
    Ok(())
}

/// `Fields` looks names up by `&'static str`, as the operations table names them.
fn leak(name: &str) -> &'static str {
    Box::leak(name.to_string().into_boxed_str())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_nor_invent_fields(input in prop::collection::vec(any::<u8>(), 0..2048)) {
        check_envelope(&input, None)?;
        check_envelope(&input, Some("application/json"))?;
    }

    #[test]
    fn mutated_real_envelopes_never_panic_nor_invent_fields(
        which in any::<prop::sample::Index>(),
        mutations in prop::collection::vec(mutation(), 1..8),
    ) {
        let samples = samples();
        let input = mutate(samples[which.index(samples.len())].clone(), &mutations);
        check_envelope(&input, None)?;
    }

    #[test]
    fn soap_wrapping_yields_exactly_the_operation_and_its_fields(
        fields in prop::collection::btree_map("[a-z][a-zA-Z0-9]{0,12}", "[ -~&&[^<&]]{0,20}", 0..12),
        prefix in "[a-z]{1,6}",
    ) {
        let inner: String = fields.iter().map(|(k, v)| format!("<{k}>{v}</{k}>")).collect();
        let soap = format!(
            "<{prefix}:Envelope xmlns:{prefix}=\"http://schemas.xmlsoap.org/soap/envelope/\">\
             <{prefix}:Header><h>1</h></{prefix}:Header><{prefix}:Body><getJob>{inner}</getJob>\
             </{prefix}:Body></{prefix}:Envelope>"
        );
        let envelope = Envelope::parse(None, Bytes::from(soap), "getJob").unwrap();
        prop_assert_eq!(envelope.operation(), "getJob");
        let names: Vec<&str> = envelope.names().collect();
        prop_assert_eq!(names, fields.keys().map(String::as_str).collect::<Vec<_>>());
        for (name, value) in &fields {
            let trimmed = value.trim();
            prop_assert_eq!(envelope.optional(leak(name)), (!trimmed.is_empty()).then_some(trimmed));
        }
    }

    #[test]
    fn query_strings_never_panic_and_yield_only_what_they_hold(query in "[a-zA-Z0-9=&%+._~-]{0,512}") {
        if let Ok(fields) = QueryFields::parse(Some(&query)) {
            for name in ["apiUrl", "jobId", "accessToken"] {
                if fields.optional(name).is_some() {
                    prop_assert!(query.contains(name));
                }
            }
        }
    }

    #[test]
    fn the_csv_unindent_only_removes(text in "[ \t\r\na-z,\"]{0,1024}") {
        let out = unindent_csv(&text);
        prop_assert!(out.len() <= text.len());
        // Every line it keeps is the end of a line it was given.
        for line in out.split_inclusive('\n') {
            prop_assert!(text.split_inclusive('\n').any(|l| l.ends_with(line)), "{line:?}");
        }
    }
}
