//! The crates' own source files, for the tests that read the code itself (its module graph, its
//! log targets).

use std::path::{Path, PathBuf};

/// Every Rust source file below `dir`, with its code: what comes before its tests module (a
/// `#[cfg(test)]` item elsewhere counts, which only makes the checks stricter).
pub fn rust_files(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            pending.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else if path.extension().is_some_and(|e| e == "rs") {
            let source = std::fs::read_to_string(&path).unwrap();
            let code = source
                .split("#[cfg(test)]\nmod tests")
                .next()
                .unwrap()
                .to_string();
            found.push((path, code));
        }
    }
    found
}
