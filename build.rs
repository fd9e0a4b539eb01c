//! Names the source revision the binary is built from, as `SFBULK_REVISION` for
//! `src/common/build.rs`: `SFBULK_GIT_REVISION` when set (a Docker build context has no `.git`,
//! so the Dockerfile passes it as a build argument), else `git rev-parse --short=12 HEAD` in the
//! checkout, else `unknown`. Cargo runs this again only when that variable, the checkout's
//! `HEAD`, or the branch `HEAD` names moves, not on every build.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The longest revision taken from `SFBULK_GIT_REVISION`: a full SHA-256 commit id is 64.
const MAX_REVISION_LEN: usize = 64;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SFBULK_GIT_REVISION");
    let given = std::env::var("SFBULK_GIT_REVISION").unwrap_or_default();
    let given = given.trim();
    let revision = if given.is_empty() {
        let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
        watch_head(&dir);
        git(&dir, &["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into())
    } else {
        // It becomes a label value and part of `--version`: a revision's characters only.
        let plain = given.len() <= MAX_REVISION_LEN
            && given
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-+".contains(&b));
        assert!(
            plain,
            "SFBULK_GIT_REVISION must be at most {MAX_REVISION_LEN} letters, digits or . _ - +"
        );
        given.to_string()
    };
    println!("cargo:rustc-env=SFBULK_REVISION={revision}");
}

/// One line `git` prints in `dir`, or `None` when there is no git or no repository.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let line = text.trim();
    (output.status.success() && !line.is_empty()).then(|| line.to_string())
}

/// Asks Cargo to run this again when `HEAD` moves: the checkout's `HEAD` file (another branch,
/// or a detached commit), and the branch it names (a commit). Only files that exist are named:
/// Cargo reruns a script on every build for a missing one.
fn watch_head(dir: &Path) {
    let Some(git_dir) = git(dir, &["rev-parse", "--absolute-git-dir"]) else {
        return;
    };
    let git_dir = PathBuf::from(git_dir);
    watch(&git_dir.join("HEAD"));
    // A linked worktree keeps its HEAD apart and its branches in the common directory.
    // (Printed relative to `dir`, unless absolute.)
    let common = git(dir, &["rev-parse", "--git-common-dir"])
        .map(|c| dir.join(c))
        .unwrap_or_else(|| git_dir.clone());
    let Some(branch) = git(dir, &["symbolic-ref", "-q", "HEAD"]) else {
        return;
    };
    let loose = common.join(&branch);
    if loose.is_file() {
        watch(&loose);
    } else {
        // Only packed: the next commit writes the loose file, in a folder that exists.
        watch(&common.join("packed-refs"));
        if let Some(folder) = loose.ancestors().skip(1).find(|a| a.is_dir()) {
            watch(folder);
        }
    }
    // Git's reftable format keeps every ref in one folder.
    watch(&common.join("reftable"));
}

fn watch(path: &Path) {
    if path.exists() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
