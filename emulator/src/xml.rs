//! The emulator's own reader of XML request bodies (jobInfo, sObjects).
//!
//! It gives the root's name and its child elements, each with its text and where its content
//! lies in the source. Salesforce refuses DTDs and unknown entities; so does this.

use std::ops::Range;

use quick_xml::events::Event;
use quick_xml::Reader;

/// The deepest nesting taken; request bodies are two or three levels deep.
const MAX_DEPTH: usize = 32;

/// A body's root element and its children.
#[derive(Debug)]
pub struct Document {
    pub root: String,
    pub children: Vec<Child>,
}

/// One child element of the root.
#[derive(Debug)]
pub struct Child {
    pub name: String,
    /// Its text, entities resolved (text inside grandchildren included).
    pub text: String,
    /// Byte range of its content (between its tags) in the source.
    pub inner: Range<usize>,
}

/// Reads `bytes` as one XML document.
pub fn read_document(bytes: &[u8]) -> Result<Document, String> {
    let source = std::str::from_utf8(bytes).map_err(|_| "the body is not UTF-8".to_string())?;
    let mut reader = Reader::from_str(source);
    reader.config_mut().check_end_names = true;
    let mut root: Option<String> = None;
    let mut children: Vec<Child> = Vec::new();
    let mut depth = 0usize;
    let mut closed = false;
    loop {
        let before = reader.buffer_position() as usize;
        let event = reader.read_event().map_err(|e| e.to_string())?;
        let after = reader.buffer_position() as usize;
        match event {
            Event::Start(start) | Event::Empty(start) if closed => {
                let _ = start;
                return Err("content after the root element".into());
            }
            Event::Start(start) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err("nested too deeply".into());
                }
                let name = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
                match depth {
                    1 => root = Some(name),
                    2 => children.push(Child {
                        name,
                        text: String::new(),
                        inner: after..after,
                    }),
                    _ => {}
                }
            }
            Event::Empty(start) => {
                let name = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
                match depth {
                    0 => {
                        root = Some(name);
                        closed = true;
                    }
                    1 => children.push(Child {
                        name,
                        text: String::new(),
                        inner: after..after,
                    }),
                    _ => {}
                }
            }
            Event::End(_) => {
                if depth == 2 {
                    if let Some(child) = children.last_mut() {
                        child.inner.end = before;
                    }
                }
                depth -= 1;
                closed = depth == 0;
            }
            Event::Text(text) if depth >= 2 => {
                let text = text.decode().map_err(|e| e.to_string())?;
                push_text(&mut children, &text);
            }
            Event::CData(data) if depth >= 2 => {
                let text = data.decode().map_err(|e| e.to_string())?;
                push_text(&mut children, &text);
            }
            Event::GeneralRef(reference) => {
                let resolved = match reference.resolve_char_ref().map_err(|e| e.to_string())? {
                    Some(c) => c.to_string(),
                    None => match reference.decode().map_err(|e| e.to_string())?.as_ref() {
                        "amp" => "&".into(),
                        "lt" => "<".into(),
                        "gt" => ">".into(),
                        "quot" => "\"".into(),
                        "apos" => "'".into(),
                        other => return Err(format!("unknown entity &{other};")),
                    },
                };
                if depth >= 2 {
                    push_text(&mut children, &resolved);
                }
            }
            Event::Text(text) if !text.iter().all(u8::is_ascii_whitespace) => {
                return Err("text outside the elements".into());
            }
            Event::DocType(_) => return Err("DOCTYPE is not allowed".into()),
            Event::Eof => break,
            _ => {}
        }
    }
    match root {
        Some(root) if closed => Ok(Document { root, children }),
        _ => Err("no root element".into()),
    }
}

fn push_text(children: &mut [Child], text: &str) {
    if let Some(child) = children.last_mut() {
        child.text.push_str(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_their_texts_and_content_ranges() {
        let body = "<?xml version=\"1.0\"?><sObjects xmlns=\"urn\">\n <sObject><Name>A &amp; B</Name></sObject>\n <x/></sObjects>";
        let doc = read_document(body.as_bytes()).unwrap();
        assert_eq!(doc.root, "sObjects");
        let names: Vec<_> = doc.children.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["sObject", "x"]);
        assert_eq!(
            &body[doc.children[0].inner.clone()],
            "<Name>A &amp; B</Name>"
        );
        assert_eq!(doc.children[0].text, "A & B");
    }

    #[test]
    fn dtds_unknown_entities_and_trailing_content_are_refused() {
        for bad in [
            "<!DOCTYPE x [<!ENTITY e \"boom\">]><x><y>&e;</y></x>",
            "<x><y>&nope;</y></x>",
            "<x/><y/>",
            "<x><y></x>",
            "",
        ] {
            assert!(read_document(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
