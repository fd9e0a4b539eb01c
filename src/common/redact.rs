//! Caller text made fit to quote back in an answer or a log: the userinfo of any URL in it
//! (`https://user:secret@host` → `https://host`) is removed, and it is cut to a bounded length.
//! Linear in the text's length.

use std::borrow::Cow;

/// The longest quoted text, in bytes; the rest is cut and marked with `…`.
pub const MAX_QUOTED_BYTES: usize = 1024;

/// `text` without URL userinfo, cut to [`MAX_QUOTED_BYTES`].
pub fn quotable(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_QUOTED_BYTES + 4));
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + "://".len());
        out.push_str(head);
        // The authority runs to the first character that ends it; userinfo is what comes
        // before its last `@`.
        let end = tail
            .find(|c: char| {
                matches!(c, '/' | '?' | '#' | '"' | '\'' | '<' | '>') || c.is_whitespace()
            })
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(userinfo_end) => out.push_str(&authority[userinfo_end + 1..]),
            None => out.push_str(authority),
        }
        rest = &tail[end..];
        if out.len() > MAX_QUOTED_BYTES {
            break;
        }
    }
    out.push_str(rest);
    cut(&out, MAX_QUOTED_BYTES).into_owned()
}

/// `text` cut to at most `limit` bytes at a character boundary, marked with `…` when cut.
pub fn cut(text: &str, limit: usize) -> Cow<'_, str> {
    if text.len() <= limit {
        return Cow::Borrowed(text);
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned([&text[..end], "…"].concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_removed_from_every_url() {
        assert_eq!(
            quotable("\"https://user:secret@na1.salesforce.com\" is not allowed"),
            "\"https://na1.salesforce.com\" is not allowed"
        );
        assert_eq!(
            quotable("a http://u@x.example/p?q=http://v:w@y.example b"),
            "a http://x.example/p?q=http://y.example b"
        );
        assert_eq!(quotable("https://a:b@c@host:1"), "https://host:1");
        assert_eq!(
            quotable("no url, user@example.com"),
            "no url, user@example.com"
        );
    }

    #[test]
    fn long_text_is_cut_at_a_character_boundary() {
        let long = "é".repeat(MAX_QUOTED_BYTES);
        let quoted = quotable(&long);
        assert!(quoted.len() <= MAX_QUOTED_BYTES + '…'.len_utf8());
        assert!(quoted.ends_with('…'));
        let many = "http://u:p@h ".repeat(10_000);
        assert!(!quotable(&many).contains("u:p"));
    }
}
