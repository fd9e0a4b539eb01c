//! npm packages the tests run (real clients, the browser driver), installed under the target
//! directory on first use from the npm registry.

use std::path::PathBuf;
use std::process::Command;

/// `node_modules` holding `package` (`name@VERSION`, installed as the folder `name`), made
/// once per target directory in the folder `prefix`.
pub fn node_modules_with(prefix: &str, package: &str, name: &str) -> PathBuf {
    let prefix = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(prefix);
    let modules = prefix.join("node_modules");
    let version = package.rsplit('@').next().unwrap();
    let installed_version = std::fs::read_to_string(modules.join(name).join("package.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|json| json["version"].as_str().map(str::to_string));
    if installed_version.as_deref() == Some(version) {
        return modules;
    }
    let installed = Command::new("npm")
        .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
        .arg(&prefix)
        .arg(package)
        .status();
    assert!(
        installed.is_ok_and(|s| s.success()),
        "could not install {package} from the npm registry"
    );
    modules
}
