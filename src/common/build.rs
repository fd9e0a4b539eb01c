//! The running build: its version and the source revision it was built from (set by the crate's
//! `build.rs`), as `--version` prints them and `sfbulk_build_info` labels them.

/// The crate's version, `0.1.0`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The revision built: `SFBULK_GIT_REVISION` at build time, else the checkout's
/// `git rev-parse --short=12 HEAD`, else `unknown`.
pub const REVISION: &str = env!("SFBULK_REVISION");

/// What `--version` prints after the program's name: `0.1.0 (revision 1a2b3c4d5e6f)`.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (revision ",
    env!("SFBULK_REVISION"),
    ")"
);
