//! The proxy's layers are its folders, and their dependencies run one way: a module that names
//! another (`crate::layer::module`, or in the emulator's flat layout `super::other`) depends on
//! it, and those dependencies form no loop, between folders or between the files inside them.
//! Each folder may name only the folders below it in [`LAYERS`]: the outbound client, the
//! registry and the shared values know nothing of the proxy above them; only `app` sees every
//! layer; no layer below the pipeline names its `fault`. Test code and comments do not count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The proxy's folders from the top down; each may depend only on folders after it, and the
/// folders of one entry do not depend on each other.
const LAYERS: &[&[&str]] = &[
    &["app"],
    &["config"],
    &["edge"],
    &["pipeline"],
    &["session"],
    &["observe"],
    &["registry", "salesforce"],
    &["common"],
];

/// Module (its path below the crate, `pipeline::fault`) → the modules its code names, for the
/// crate whose sources are in `dir`; `sibling_prefix` is how the crate names its modules.
fn dependencies(dir: &Path, sibling_prefix: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, code) in crate::support::sources::rust_files(dir) {
        let module = module_of(path.strip_prefix(dir).unwrap());
        if module == "lib" || module == "main" {
            continue;
        }
        let named = graph.entry(module.clone()).or_default();
        for line in code.lines() {
            let line = line.split("//").next().unwrap();
            for (at, _) in line.match_indices(sibling_prefix) {
                let rest = &line[at + sibling_prefix.len()..];
                let path: Vec<String> = rest
                    .split("::")
                    .map(|part| {
                        part.chars()
                            .take_while(|c| {
                                c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit()
                            })
                            .collect::<String>()
                    })
                    .take_while(|part| !part.is_empty())
                    .collect();
                // The longest prefix of the path that is a module of the crate.
                let found = (1..=path.len())
                    .rev()
                    .map(|n| path[..n].join("::"))
                    .find(|candidate| exists(dir, candidate));
                if let Some(found) = found.filter(|f| *f != module) {
                    named.insert(found);
                }
            }
        }
    }
    graph
}

/// `a/b.rs` → `a::b`; `a/mod.rs` → `a`.
fn module_of(relative: &Path) -> String {
    let mut parts: Vec<String> = relative
        .components()
        .map(|c| {
            c.as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string()
        })
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.join("::")
}

/// Whether `module` (`a::b`) is a file or a folder of the crate in `dir`.
fn exists(dir: &Path, module: &str) -> bool {
    let path = dir.join(module.replace("::", "/"));
    path.with_extension("rs").exists() || path.is_dir()
}

/// The graph between the modules' first `depth` path parts (their folders, at 1).
fn at_depth(
    graph: &BTreeMap<String, BTreeSet<String>>,
    depth: usize,
) -> BTreeMap<String, BTreeSet<String>> {
    let cut = |m: &str| m.split("::").take(depth).collect::<Vec<_>>().join("::");
    let mut folded: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, named) in graph {
        let from = cut(module);
        let to = folded.entry(from.clone()).or_default();
        to.extend(named.iter().map(|n| cut(n)).filter(|n| *n != from));
    }
    folded
}

/// A cycle in `graph`, if there is one, as the modules along it.
fn a_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        module: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|m| m == module) {
            let mut cycle = path[at..].to_vec();
            cycle.push(module.to_string());
            return Some(cycle);
        }
        if done.contains(module) {
            return None;
        }
        path.push(module.to_string());
        for next in graph.get(module).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(module.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|module| visit(module, graph, &mut Vec::new(), &mut done))
}

/// Every dependency of `folders` (the graph between folders) that runs sideways or up
/// [`LAYERS`], as `from -> to`.
fn upward(folders: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let rank = |folder: &str| LAYERS.iter().position(|layer| layer.contains(&folder));
    let mut wrong = Vec::new();
    for (from, named) in folders {
        for to in named {
            match (rank(from), rank(to)) {
                (Some(a), Some(b)) if a < b => {}
                _ => wrong.push(format!("{from} -> {to}")),
            }
        }
    }
    wrong
}

#[test]
fn the_proxys_folders_are_its_layers_and_depend_only_downward_without_a_cycle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let graph = dependencies(&root.join("src"), "crate::");
    assert!(graph.len() > 40, "the modules were found: {graph:?}");
    let folders = at_depth(&graph, 1);
    let listed: BTreeSet<&str> = LAYERS.iter().flat_map(|l| l.iter().copied()).collect();
    let found: BTreeSet<&str> = folders.keys().map(String::as_str).collect();
    assert_eq!(found, listed, "every folder is a layer of LAYERS");
    assert_eq!(upward(&folders), Vec::<String>::new(), "{folders:#?}");
    // No cycle at any depth: between folders, and between the files inside them.
    for depth in 1..=3 {
        assert_eq!(a_cycle(&at_depth(&graph, depth)), None, "at depth {depth}");
    }
    // Below the pipeline, each layer reports errors of its own; only the pipeline's fault
    // table turns them into answers.
    for (module, named) in &graph {
        if !module.starts_with("pipeline")
            && !module.starts_with("edge")
            && !module.starts_with("app")
        {
            assert!(
                !named.contains("pipeline::fault"),
                "{module} names the pipeline's fault"
            );
        }
    }
}

#[test]
fn a_dependency_up_the_layers_is_found() {
    // The check itself can fail: the outbound client naming the pipeline is caught.
    let mut folders = BTreeMap::new();
    folders.insert(
        "salesforce".to_string(),
        BTreeSet::from(["pipeline".to_string(), "common".to_string()]),
    );
    folders.insert(
        "pipeline".to_string(),
        BTreeSet::from(["salesforce".to_string()]),
    );
    assert_eq!(upward(&folders), ["salesforce -> pipeline"]);
    assert!(a_cycle(&folders).is_some());
}

#[test]
fn the_emulators_modules_depend_on_each_other_without_a_cycle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let graph = at_depth(&dependencies(&root.join("emulator/src"), "super::"), 1);
    assert!(
        graph.contains_key("jobs") && graph["batches"].contains("jobs"),
        "{graph:?}"
    );
    assert_eq!(a_cycle(&graph), None);
}
