//! The console page's files, built into the binary: nothing is fetched from anywhere else, and
//! the page's `Content-Security-Policy` allows only these.

/// `GET /ui`.
pub const HTML: &str = include_str!("assets/console.html");
/// `GET /ui/console.js`.
pub const SCRIPT: &str = include_str!("assets/console.js");
/// `GET /ui/console.css`.
pub const STYLE: &str = include_str!("assets/console.css");

/// Only the page's own script, style and JSON; no inline script, no frame, no form target.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The page's file at `path`, with its content type.
pub fn asset(path: &str) -> Option<(&'static str, &'static str)> {
    match path {
        "/ui" | "/ui/" => Some(("text/html; charset=utf-8", HTML)),
        "/ui/console.js" => Some(("text/javascript; charset=utf-8", SCRIPT)),
        "/ui/console.css" => Some(("text/css; charset=utf-8", STYLE)),
        _ => None,
    }
}
