//! Reading and writing the flat XML documents both sides of the proxy speak: a root element whose
//! children are named values (WSO2 envelopes, Salesforce `jobInfo` and `error` documents).

use std::borrow::Cow;
use std::ops::Range;

use quick_xml::events::Event;
use quick_xml::Reader;

/// The most children the root may have: an envelope has a few dozen fields at most, and a
/// document with more is not one.
pub const MAX_FIELDS: usize = 256;
/// The most elements a document may hold, nested ones included (an `addBatch` of XML records
/// holds many); at the envelope size limit a document of empty elements comes near it.
pub const MAX_ELEMENTS: usize = 4_000_000;
/// The deepest nesting accepted; records are a few levels deep.
pub const MAX_DEPTH: usize = 64;

/// Local names of the SOAP wrapper elements (SOAP 1.1 and 1.2 use the same names).
const SOAP_ENVELOPE: &str = "Envelope";
const SOAP_BODY: &str = "Body";

/// A document read down to its root's children. Names and texts borrow from the source; only a
/// text with entities, CDATA or comments in it is put together in a `String` of its own.
#[derive(Debug)]
pub struct Document<'a> {
    /// The root element's local name (inside a SOAP body when the document was wrapped).
    pub root: &'a str,
    /// The root's own text (not its children's), entities resolved, whitespace kept.
    pub text: Cow<'a, str>,
    /// Byte range of everything between the root's start and end tags in the source.
    pub inner: Range<usize>,
    pub children: Vec<Child<'a>>,
    /// How many reader events reading it took: the measure of its cost, which stays within the
    /// source's length (the fuzzed-parser tests hold it to that).
    pub events: usize,
}

/// One child element of the root.
#[derive(Debug)]
pub struct Child<'a> {
    /// Local name, without any namespace prefix.
    pub name: &'a str,
    /// The child's own text, entities resolved; empty for `<x/>`.
    pub text: Cow<'a, str>,
    /// Whether the child holds elements of its own (then `text` is only its loose text).
    pub has_elements: bool,
    /// Byte range of everything between the child's start and end tags in the source.
    pub inner: Range<usize>,
}

impl<'a> Document<'a> {
    /// The first child with this local name.
    pub fn child(&self, name: &str) -> Option<&Child<'a>> {
        self.children.iter().find(|c| c.name == name)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum XmlError {
    #[error("the body is not UTF-8")]
    NotUtf8,
    #[error("DTDs and entity declarations are not accepted")]
    Dtd,
    #[error("unknown entity &{0};")]
    UnknownEntity(String),
    #[error("no root element")]
    NoRoot,
    #[error("a SOAP envelope without a Body element holding the request")]
    EmptySoapBody,
    #[error("not well-formed XML: {0}")]
    Malformed(String),
    #[error("more than {MAX_FIELDS} fields")]
    TooManyFields,
    #[error("more than {MAX_ELEMENTS} elements")]
    TooManyElements,
    #[error("elements nested deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("the SOAP Body holds more than one operation")]
    SeveralOperations,
    #[error("content after the root element")]
    AfterRoot,
}

/// Reads `bytes` as XML and returns its root's children. With `unwrap_soap`, a SOAP envelope is
/// looked through: the root is then the element inside `Body`, which must hold only that one.
/// After the root, only white space, comments and processing instructions may follow. Linear
/// in the document's size, and bounded by [`MAX_FIELDS`], [`MAX_ELEMENTS`] and [`MAX_DEPTH`].
pub fn read_document(bytes: &[u8], unwrap_soap: bool) -> Result<Document<'_>, XmlError> {
    let source = std::str::from_utf8(bytes).map_err(|_| XmlError::NotUtf8)?;
    read_str(source, unwrap_soap)
}

/// [`read_document`] for a source already known to be UTF-8.
pub fn read_str(source: &str, unwrap_soap: bool) -> Result<Document<'_>, XmlError> {
    match read_plain(source, unwrap_soap) {
        Some(document) => Ok(document),
        None => read_any(source, unwrap_soap),
    }
}

/// The document most callers send and Salesforce answers, read without the general reader: an
/// optional declaration, a root (its attributes passed over) whose children are `<name>text</name>`
/// or `<name/>`, unprefixed, the texts free of entities and markup, and nothing but white space
/// around. `None` for anything else (a prefix, a comment, an entity, CDATA, a nested element, a
/// SOAP envelope, an attribute on a child, more than [`MAX_FIELDS`] children, a malformed tag):
/// [`read_any`] reads that, and reports what is wrong. What this returns is what [`read_any`]
/// returns for the same source (the tests below hold the two to that); it reads each byte once or
/// twice, where the general reader took some 260 instructions an event (a getJob envelope's
/// parse was about 12,600 instructions of the proxy's 107,000 a request; this reader takes a few
/// thousand).
fn read_plain(source: &str, unwrap_soap: bool) -> Option<Document<'_>> {
    let bytes = source.as_bytes();
    let mut at = 0;
    let mut events = 0;
    // A declaration only at the very start, as XML has it.
    if bytes.starts_with(b"<?xml ") {
        let end = bytes.windows(2).position(|w| w == b"?>")?;
        if bytes[1..end].iter().any(|&b| b == b'<' || b == b'>') {
            return None;
        }
        events += 1;
        at = end + 2;
    }
    at = skip_white(bytes, at);
    if bytes.get(at) != Some(&b'<') {
        return None;
    }
    let (root, after_name) = name_at(source, at + 1)?;
    if unwrap_soap && root == SOAP_ENVELOPE {
        return None;
    }
    // The root's attributes, if any, up to the first `>` outside quotes; never read.
    let mut close = after_name;
    let mut quote = None;
    loop {
        let b = *bytes.get(close)?;
        match (quote, b) {
            (_, b'<') => return None,
            (None, b'>') => break,
            (None, b'"' | b'\'') => quote = Some(b),
            (Some(q), _) if q == b => quote = None,
            _ => {}
        }
        close += 1;
    }
    if close > after_name && !is_white(bytes[after_name]) || bytes[close - 1] == b'/' {
        return None;
    }
    events += 1;
    let inner_start = close + 1;
    let mut at = inner_start;
    let mut text = Cow::Borrowed("");
    let mut children: Vec<Child> = Vec::with_capacity(16);
    let inner_end = loop {
        let lt = at + memchr::memchr(b'<', &bytes[at..])?;
        if lt > at {
            let loose = plain_text(source, at..lt)?;
            events += 1;
            if text.is_empty() {
                text = Cow::Borrowed(loose);
            } else {
                text.to_mut().push_str(loose);
            }
        }
        if bytes.get(lt + 1) == Some(&b'/') {
            at = end_tag(source, lt, root)?;
            events += 1;
            break lt;
        }
        let (name, after) = name_at(source, lt + 1)?;
        if children.len() == MAX_FIELDS {
            return None;
        }
        match bytes.get(after..after + 2)? {
            [b'/', b'>'] => {
                events += 1;
                at = after + 2;
                children.push(Child {
                    name,
                    text: Cow::Borrowed(""),
                    has_elements: false,
                    inner: at..at,
                });
            }
            [b'>', _] => {
                let start = after + 1;
                let end = start + memchr::memchr(b'<', &bytes[start..])?;
                let own = plain_text(source, start..end)?;
                at = end_tag(source, end, name)?;
                events += 2 + usize::from(end > start);
                children.push(Child {
                    name,
                    text: Cow::Borrowed(own),
                    has_elements: false,
                    inner: start..end,
                });
            }
            _ => return None,
        }
    };
    if !bytes[at..].iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    Some(Document {
        root,
        text,
        inner: inner_start..inner_end,
        children,
        events: events + 1,
    })
}

fn is_white(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn skip_white(bytes: &[u8], from: usize) -> usize {
    from + bytes[from..].iter().take_while(|&&b| is_white(b)).count()
}

/// An unprefixed ASCII element name starting at `start`, and where it ends.
fn name_at(source: &str, start: usize) -> Option<(&str, usize)> {
    let bytes = source.as_bytes();
    let first = *bytes.get(start)?;
    if !(first.is_ascii_alphabetic() || first == b'_') {
        return None;
    }
    let len = bytes[start..]
        .iter()
        .take_while(|&&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        .count();
    Some((&source[start..start + len], start + len))
}

/// Text with no entity in it, as it stands in the source.
fn plain_text(source: &str, span: Range<usize>) -> Option<&str> {
    let text = &source[span];
    memchr::memchr(b'&', text.as_bytes())
        .is_none()
        .then_some(text)
}

/// `</name>` at `at`, and where it ends.
fn end_tag(source: &str, at: usize, name: &str) -> Option<usize> {
    let end = at + 2 + name.len();
    let tag = source.as_bytes().get(at..=end)?;
    (tag.starts_with(b"</")
        && &tag[2..tag.len() - 1] == name.as_bytes()
        && tag[tag.len() - 1] == b'>')
        .then_some(end + 1)
}

/// [`read_str`] by the general reader: any well-formed document.
fn read_any(source: &str, unwrap_soap: bool) -> Result<Document<'_>, XmlError> {
    let mut reader = Reader::from_str(source);
    reader.config_mut().check_end_names = true;

    // Depth of the element that is the document's root for our purposes (2 inside a SOAP body).
    let mut root_depth: Option<usize> = None;
    let mut root = "";
    let mut root_text = Cow::Borrowed("");
    let mut root_inner = 0..0;
    let mut in_soap = false;
    let mut children: Vec<Child> = Vec::with_capacity(16);
    let mut depth = 0usize;
    let mut elements = 0usize;
    let mut events = 0usize;

    loop {
        let before = reader.buffer_position() as usize;
        let event = reader
            .read_event()
            .map_err(|e| XmlError::Malformed(e.to_string()))?;
        events += 1;
        match event {
            Event::DocType(_) => return Err(XmlError::Dtd),
            Event::Start(ref start) | Event::Empty(ref start) => {
                let is_empty = matches!(event, Event::Empty(_));
                elements += 1;
                if elements > MAX_ELEMENTS {
                    return Err(XmlError::TooManyElements);
                }
                if depth >= MAX_DEPTH {
                    return Err(XmlError::TooDeep);
                }
                let name = borrowed(source, start.local_name().as_ref())?;
                match root_depth {
                    None if unwrap_soap && depth == 0 && name == SOAP_ENVELOPE => in_soap = true,
                    None if in_soap && depth == 1 && name != SOAP_BODY => {
                        if !is_empty {
                            reader
                                .read_to_end(start.name())
                                .map_err(|e| XmlError::Malformed(e.to_string()))?;
                        }
                        continue;
                    }
                    None if in_soap && depth == 1 => {}
                    None => {
                        root_depth = Some(depth);
                        root = name;
                        let at = reader.buffer_position() as usize;
                        root_inner = at..at;
                        if is_empty {
                            break;
                        }
                    }
                    Some(r) if depth == r + 1 => {
                        if children.len() == MAX_FIELDS {
                            return Err(XmlError::TooManyFields);
                        }
                        let at = reader.buffer_position() as usize;
                        children.push(Child {
                            name,
                            text: Cow::Borrowed(""),
                            has_elements: false,
                            inner: at..at,
                        });
                        if is_empty {
                            continue;
                        }
                    }
                    Some(r) if depth > r + 1 => {
                        if let Some(child) = children.last_mut() {
                            child.has_elements = true;
                        }
                    }
                    Some(_) => {}
                }
                if !is_empty {
                    depth += 1;
                }
            }
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                match root_depth {
                    Some(r) if depth == r => {
                        root_inner.end = before;
                        break;
                    }
                    Some(r) if depth == r + 1 => {
                        if let Some(child) = children.last_mut() {
                            child.inner.end = before;
                        }
                    }
                    None if in_soap && depth == 0 => return Err(XmlError::EmptySoapBody),
                    _ => {}
                }
            }
            Event::Text(ref text) => {
                let text = Cow::Borrowed(borrowed(source, text)?);
                append_text(&mut root_text, &mut children, root_depth, depth, text);
            }
            Event::CData(ref data) => {
                let text = Cow::Borrowed(borrowed(source, data)?);
                append_text(&mut root_text, &mut children, root_depth, depth, text);
            }
            Event::GeneralRef(ref reference) => {
                let resolved = resolve_reference(reference)?;
                append_text(&mut root_text, &mut children, root_depth, depth, resolved);
            }
            Event::Eof => {
                return Err(match root_depth {
                    Some(_) => XmlError::Malformed("the document ends inside an element".into()),
                    None if in_soap => XmlError::EmptySoapBody,
                    None => XmlError::NoRoot,
                });
            }
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
        }
    }
    let root_depth = root_depth.unwrap_or_default();
    events += read_after_root(&mut reader, source, root_depth)?;
    Ok(Document {
        root,
        text: root_text,
        inner: root_inner,
        children,
        events,
    })
}

/// Reads what follows the root element (at `depth`, 1 in a SOAP Body) to the end: white space,
/// comments and processing instructions, and the end tags of the SOAP wrapper. Another element
/// or text would be read differently by whoever looks at the document next.
/// The events it read are counted.
fn read_after_root(
    reader: &mut Reader<&[u8]>,
    source: &str,
    depth: usize,
) -> Result<usize, XmlError> {
    let mut depth = depth;
    let mut events = 0;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| XmlError::Malformed(e.to_string()))?;
        events += 1;
        match event {
            Event::Start(_) | Event::Empty(_) if depth == 2 => {
                return Err(XmlError::SeveralOperations)
            }
            Event::Start(_) | Event::Empty(_) | Event::CData(_) | Event::GeneralRef(_) => {
                return Err(XmlError::AfterRoot)
            }
            Event::Text(ref text) if !borrowed(source, text)?.trim().is_empty() => {
                return Err(XmlError::AfterRoot)
            }
            Event::DocType(_) => return Err(XmlError::Dtd),
            Event::End(_) => depth = depth.saturating_sub(1),
            Event::Eof if depth == 0 => return Ok(events),
            Event::Eof => {
                return Err(XmlError::Malformed(
                    "the document ends inside an element".into(),
                ))
            }
            Event::Text(_) | Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
        }
    }
}

/// Adds text to the root's or the current child's text when the reader stands directly inside.
fn append_text<'a>(
    root_text: &mut Cow<'a, str>,
    children: &mut [Child<'a>],
    root_depth: Option<usize>,
    depth: usize,
    text: Cow<'a, str>,
) {
    let into = match root_depth {
        Some(r) if depth == r + 1 => root_text,
        Some(r) if depth == r + 2 => match children.last_mut() {
            Some(child) => &mut child.text,
            None => return,
        },
        _ => return,
    };
    if into.is_empty() {
        *into = text;
    } else {
        into.to_mut().push_str(&text);
    }
}

/// Where `part` lies in `source`, when it is a slice of it (the reader lends names and texts that
/// are; so do [`Document`]'s borrowed strings).
pub fn span_in(source: &str, part: &[u8]) -> Option<Range<usize>> {
    let start = (part.as_ptr() as usize).checked_sub(source.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    (end <= source.len()).then_some(start..end)
}

/// `part`, a slice of `source` that the reader lends (a name, a text), as the `&str` it is in
/// `source`: no copy, and no second UTF-8 check.
fn borrowed<'a>(source: &'a str, part: &[u8]) -> Result<&'a str, XmlError> {
    span_in(source, part)
        .and_then(|span| source.get(span))
        .ok_or_else(|| XmlError::Malformed("the reader lent text from outside the source".into()))
}

fn resolve_reference<'a>(
    reference: &quick_xml::events::BytesRef<'_>,
) -> Result<Cow<'a, str>, XmlError> {
    if reference.is_char_ref() {
        return match reference.resolve_char_ref() {
            Ok(Some(c)) => Ok(Cow::Owned(c.to_string())),
            _ => Err(XmlError::Malformed("invalid character reference".into())),
        };
    }
    let name = reference
        .decode()
        .map_err(|e| XmlError::Malformed(e.to_string()))?;
    quick_xml::escape::resolve_predefined_entity(&name)
        .map(Cow::Borrowed)
        .ok_or_else(|| XmlError::UnknownEntity(name.into_owned()))
}

/// The Bulk API's XML namespace, of every document it reads and writes.
pub const ASYNC_API_NAMESPACE: &str = "http://www.force.com/2009/06/asyncapi/dataload";

/// Starts a document in the layout Salesforce writes, byte for byte as recorded: the declaration
/// and the root's name on one line, its namespace on the next. Children go on lines of their own
/// ([`push_element`], [`push_line`]), indented one space per level; [`end_document`] closes the
/// root with no line break after it.
pub fn start_document(root: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><{root}\n   xmlns=\"{}\">\n",
        ASYNC_API_NAMESPACE
    )
}

/// A line `<name>text</name>` at `depth`, the text escaped.
pub fn push_element(out: &mut String, depth: usize, name: &str, text: &str) {
    push_line(out, depth, &format!("<{name}>{}</{name}>", escape(text)));
}

/// A line of markup at `depth`.
pub fn push_line(out: &mut String, depth: usize, markup: &str) {
    out.extend(std::iter::repeat_n(' ', depth));
    out.push_str(markup);
    out.push('\n');
}

pub fn end_document(out: &mut String, root: &str) {
    out.push_str(&format!("</{root}>"));
}

/// Whether XML 1.0 allows `c` in a document.
fn allowed(c: char) -> bool {
    match c {
        '\t' | '\n' | '\r' => true,
        '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' => true,
        _ => c >= '\u{10000}',
    }
}

/// Escapes text for use inside an element: `&`, `<` and `>` only, as Salesforce writes text
/// (quotes and apostrophes stay as they are). A character XML 1.0 does not allow in a document
/// at all (most control characters), which no escape can carry, becomes U+FFFD: a caller's or
/// Salesforce's text never makes an answer that does not parse.
pub fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    if text.chars().all(allowed) {
        return quick_xml::escape::partial_escape(text);
    }
    let cleaned: String = text
        .chars()
        .map(|c| if allowed(c) { c } else { '\u{FFFD}' })
        .collect();
    std::borrow::Cow::Owned(quick_xml::escape::partial_escape(&cleaned).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts<'d>(doc: &'d Document) -> Vec<(&'d str, &'d str)> {
        doc.children
            .iter()
            .map(|c| (c.name, c.text.as_ref()))
            .collect()
    }

    #[test]
    fn text_with_characters_xml_cannot_carry_still_makes_a_document_that_parses() {
        let mut out = start_document("loadInfo");
        push_element(&mut out, 1, "object", "Con\u{1}tact<&>\u{FFFF}\tok");
        end_document(&mut out, "loadInfo");
        let doc = read_document(out.as_bytes(), false).unwrap();
        assert_eq!(texts(&doc), [("object", "Con\u{FFFD}tact<&>\u{FFFD}\tok")]);
        assert_eq!(escape("plain & <simple>"), "plain &amp; &lt;simple&gt;");
    }

    #[test]
    fn reads_children_by_local_name_with_entities_resolved() {
        let doc = read_document(
            b"<?xml version=\"1.0\"?><a:getJob xmlns:a=\"urn:x\"><a:jobId>750</a:jobId><q>&lt;&amp;&#65;<![CDATA[<b>]]></q><e/></a:getJob>",
            false,
        )
        .unwrap();
        assert_eq!(doc.root, "getJob");
        assert_eq!(texts(&doc), [("jobId", "750"), ("q", "<&A<b>"), ("e", "")]);
    }

    #[test]
    fn soap_envelope_is_looked_through() {
        let body = br#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">
            <soapenv:Header><x>1</x></soapenv:Header>
            <soapenv:Body><getJob><jobId>750</jobId></getJob></soapenv:Body></soapenv:Envelope>"#;
        let doc = read_document(body, true).unwrap();
        assert_eq!(doc.root, "getJob");
        assert_eq!(texts(&doc)[0], ("jobId", "750"));
    }

    #[test]
    fn the_roots_own_text_keeps_its_whitespace() {
        let body = "<values>\n  a,b\n  &quot;x&quot;,<![CDATA[<y>]]>\n</values>";
        let doc = read_document(body.as_bytes(), false).unwrap();
        assert_eq!(doc.text, "\n  a,b\n  \"x\",<y>\n");
        assert_eq!(
            &body[doc.inner.clone()],
            "\n  a,b\n  &quot;x&quot;,<![CDATA[<y>]]>\n"
        );
    }

    #[test]
    fn nested_children_keep_their_inner_source_range() {
        let body = "<addBatch><objects><values><sObject><Name>x</Name></sObject></values></objects></addBatch>";
        let doc = read_document(body.as_bytes(), false).unwrap();
        let objects = doc.child("objects").unwrap();
        assert!(objects.has_elements);
        assert_eq!(
            &body[objects.inner.clone()],
            "<values><sObject><Name>x</Name></sObject></values>"
        );
    }

    #[test]
    fn only_white_space_comments_and_instructions_may_follow_the_root() {
        assert!(read_document(b"<x/> \n<!-- c --><?pi x?>\n", false).is_ok());
        for trailing in [
            &b"<x/><y/>"[..],
            b"<x/>text",
            b"<x></x>&amp;",
            b"<x/><![CDATA[a]]>",
        ] {
            assert_eq!(
                read_document(trailing, false).unwrap_err(),
                XmlError::AfterRoot
            );
        }
    }

    #[test]
    fn a_soap_body_holds_one_operation() {
        let two = b"<Envelope><Body><getJob/><updateJob/></Body></Envelope>";
        assert_eq!(
            read_document(two, true).unwrap_err(),
            XmlError::SeveralOperations
        );
        let one =
            b"<Envelope><Body> <getJob><jobId>1</jobId></getJob> <!-- c --> </Body></Envelope>\n";
        assert_eq!(read_document(one, true).unwrap().root, "getJob");
        let after = b"<Envelope><Body><getJob/></Body></Envelope><x/>";
        assert_eq!(read_document(after, true).unwrap_err(), XmlError::AfterRoot);
    }

    #[test]
    fn fields_elements_and_depth_are_bounded() {
        let many: String = (0..=MAX_FIELDS).map(|i| format!("<f{i}/>")).collect();
        assert_eq!(
            read_document(format!("<x>{many}</x>").as_bytes(), false).unwrap_err(),
            XmlError::TooManyFields
        );
        let deep = format!(
            "{}{}",
            "<a>".repeat(MAX_DEPTH + 1),
            "</a>".repeat(MAX_DEPTH + 1)
        );
        assert_eq!(
            read_document(deep.as_bytes(), false).unwrap_err(),
            XmlError::TooDeep
        );
        let nested = format!("<x><objects>{}</objects></x>", "<r/>".repeat(100_000));
        assert_eq!(
            read_document(nested.as_bytes(), false)
                .unwrap()
                .children
                .len(),
            1
        );
    }

    #[test]
    fn dtds_unknown_entities_and_broken_documents_are_refused() {
        assert_eq!(
            read_document(b"<!DOCTYPE x [<!ENTITY a \"b\">]><x>&a;</x>", false).unwrap_err(),
            XmlError::Dtd
        );
        assert_eq!(
            read_document(b"<x><y>&a;</y></x>", false).unwrap_err(),
            XmlError::UnknownEntity("a".into())
        );
        assert!(matches!(
            read_document(b"<x><y></x>", false),
            Err(XmlError::Malformed(_))
        ));
        assert_eq!(read_document(b"   ", false).unwrap_err(), XmlError::NoRoot);
        assert_eq!(
            read_document(b"<Envelope><Body></Body></Envelope>", true).unwrap_err(),
            XmlError::EmptySoapBody
        );
        assert_eq!(
            read_document(b"\xff<x/>", false).unwrap_err(),
            XmlError::NotUtf8
        );
    }

    /// What a document reads as, for comparing the two readers (events aside).
    fn shape(doc: &Document<'_>) -> String {
        format!(
            "{} {:?} {:?} {:?}",
            doc.root,
            doc.text,
            doc.inner,
            doc.children
                .iter()
                .map(|c| (c.name, c.text.as_ref(), c.has_elements, c.inner.clone()))
                .collect::<Vec<_>>()
        )
    }

    /// The plain reader reads a document exactly as the general one does, or leaves it to it.
    fn same_as_the_general_reader(source: &str, unwrap_soap: bool) -> bool {
        let Some(plain) = read_plain(source, unwrap_soap) else {
            return false;
        };
        let any = read_any(source, unwrap_soap)
            .unwrap_or_else(|e| panic!("the plain reader took {source:?}, the general one: {e}"));
        assert_eq!(shape(&plain), shape(&any), "{source:?}");
        assert!(plain.events <= source.len() + 2);
        true
    }

    #[test]
    fn the_plain_reader_takes_envelopes_and_job_infos_as_the_general_one_reads_them() {
        let taken = [
            "<getJob><apiVersion>34.0</apiVersion><jobId>750x</jobId><e/><f></f></getJob>",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><jobInfo\n   xmlns=\"http://www.force.com/2009/06/asyncapi/dataload\">\n <id>750</id>\n <state>Open</state>\n</jobInfo>",
            "\n  <createJob a='>' b=\"'\">\n\t<object>Con > tact</object>  </createJob>\r\n",
            "<x/>",
        ];
        for source in taken {
            let plain = source != "<x/>";
            assert_eq!(
                same_as_the_general_reader(source, true),
                plain,
                "{source:?}"
            );
        }
        let left = [
            "<a:getJob xmlns:a=\"urn:x\"><a:jobId>750</a:jobId></a:getJob>",
            "<x><y>&lt;</y></x>",
            "<x><!-- c --><y>1</y></x>",
            "<x><y><![CDATA[1]]></y></x>",
            "<x><y><z>1</z></y></x>",
            "<x><y a=\"1\">1</y></x>",
            "<x><y>1</y ></x>",
            "<x><y>1</z></x>",
            "<x><y>1</y></x><z/>",
            "<x><y>1</y></x>tail",
            " <?xml version=\"1.0\"?><x/>",
            "<Envelope><Body><getJob/></Body></Envelope>",
            "<x a=\"<\"><y>1</y></x>",
            "<x a=\"1\"/>",
            "<x><y>1</y>",
            "\u{feff}<x></x>",
        ];
        for source in left {
            assert!(read_plain(source, true).is_none(), "{source:?}");
        }
        let many: String = std::iter::once("<x>".to_string())
            .chain((0..=MAX_FIELDS).map(|i| format!("<f{i}>v</f{i}>")))
            .chain(std::iter::once("</x>".to_string()))
            .collect();
        assert!(read_plain(&many, false).is_none());
        assert_eq!(read_str(&many, false).unwrap_err(), XmlError::TooManyFields);
    }

    mod fuzzed {
        use super::*;
        use proptest::prelude::*;

        /// Pieces of envelopes, well and badly formed, put together at random.
        fn piece() -> impl Strategy<Value = &'static str> {
            prop::sample::select(vec![
                "<",
                ">",
                "</",
                "/>",
                "<x>",
                "</x>",
                "<y>",
                "</y>",
                "<y/>",
                "x",
                "y",
                "getJob",
                "jobId",
                "750",
                " ",
                "\n",
                "\t",
                "\r\n",
                "&amp;",
                "&",
                ";",
                "<?xml version=\"1.0\"?>",
                "<?xml ",
                "?>",
                "<!-- c -->",
                "<![CDATA[d]]>",
                "]]>",
                "\"",
                "'",
                "=",
                ":",
                "a:",
                "Envelope",
                "Body",
                "<Envelope>",
                "<Body>",
                " a=\"1\"",
                "é",
                "\u{0}",
                "\u{feff}",
            ])
        }

        /// A well-formed flat document with odd texts, names and spacing.
        fn document() -> impl Strategy<Value = String> {
            let text = "[ a-z0-9<>&;'\"\\]\t\n\u{e9}]{0,12}";
            let name =
                prop::sample::select(vec!["a", "jobId", "x.y", "_z-1", "getJob", "Envelope"]);
            (
                prop::bool::ANY,
                name.clone(),
                "[ a-z=\"'/<>]{0,10}",
                prop::collection::vec((name, text, prop::bool::ANY, "[ \n]{0,2}"), 0..6),
                "[ \n]{0,2}",
            )
                .prop_map(|(decl, root, attributes, children, tail)| {
                    let mut out = String::new();
                    if decl {
                        out.push_str("<?xml version=\"1.0\"?>\n");
                    }
                    out.push_str(&format!("<{root}{attributes}>"));
                    for (name, text, empty, space) in children {
                        if empty {
                            out.push_str(&format!("{space}<{name}/>"));
                        } else {
                            out.push_str(&format!("{space}<{name}>{text}</{name}>"));
                        }
                    }
                    out.push_str(&format!("</{root}>{tail}"));
                    out
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            #[test]
            fn random_pieces_read_alike(pieces in prop::collection::vec(piece(), 0..24), soap in prop::bool::ANY) {
                same_as_the_general_reader(&pieces.concat(), soap);
            }

            #[test]
            fn flat_documents_read_alike(source in document(), soap in prop::bool::ANY) {
                same_as_the_general_reader(&source, soap);
            }
        }
    }
}
