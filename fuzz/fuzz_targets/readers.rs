//! Every reader a stranger feeds, on the fuzzer's bytes: the first byte picks the reader, the
//! rest is its input. A panic, or a reading that costs more events than the input has bytes,
//! is a finding.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sfbulk_proxy::pipeline::envelope::{Envelope, QueryFields};
use sfbulk_proxy::pipeline::operation::unindent_csv;
use sfbulk_proxy::common::xml::read_document;

fuzz_target!(|data: &[u8]| {
    let Some((&which, input)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => {
            if let Ok(envelope) = Envelope::parse(None, Bytes::copy_from_slice(input), "getJob") {
                let text = String::from_utf8_lossy(input);
                for name in envelope.names() {
                    assert!(text.contains(name), "invented field {name:?}");
                }
                let document = read_document(input, true).expect("accepted as an envelope");
                assert!(
                    document.events <= input.len() + 2,
                    "{} events",
                    document.events
                );
            }
        }
        1 => {
            let _ = Envelope::parse(
                Some("application/json"),
                Bytes::copy_from_slice(input),
                "getJob",
            );
        }
        2 => {
            if let Ok(query) = std::str::from_utf8(input) {
                let _ = QueryFields::parse(Some(query));
            }
        }
        _ => {
            if let Ok(text) = std::str::from_utf8(input) {
                assert!(unindent_csv(text).len() <= text.len());
            }
        }
    }
});
