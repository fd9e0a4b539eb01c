//! No module cycles, in the proxy or in the emulator: a module that names another
//! (`crate::other`, or in the emulator's flat layout `super::other`) depends on it, and the
//! dependencies must form no loop, so each layer can be read, and changed, on its own. Test code
//! and comments do not count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module → the modules its code names, for the crate whose sources are in `dir`.
fn dependencies(dir: &Path, sibling_prefix: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut files = vec![dir.to_path_buf()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let relative = path.strip_prefix(dir).unwrap();
        let module = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        let source = std::fs::read_to_string(&path).unwrap();
        let code = source.split("#[cfg(test)]").next().unwrap();
        let named = graph.entry(module.clone()).or_default();
        for line in code.lines() {
            let line = line.split("//").next().unwrap();
            for prefix in ["crate::", sibling_prefix] {
                for (at, _) in line.match_indices(prefix) {
                    let rest = &line[at + prefix.len()..];
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit())
                        .collect();
                    let exists =
                        dir.join(format!("{name}.rs")).exists() || dir.join(&name).is_dir();
                    if !name.is_empty() && name != module && exists {
                        named.insert(name);
                    }
                }
            }
        }
    }
    graph
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

#[test]
fn the_proxys_modules_depend_on_each_other_without_a_cycle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let graph = dependencies(&root.join("src"), "crate::");
    assert!(graph.len() > 20, "the modules were found: {graph:?}");
    assert_eq!(a_cycle(&graph), None);
    // Layers below the edge report their own errors; only the pipeline maps them to faults.
    for layer in [
        "salesforce",
        "registry",
        "envelope",
        "credentials",
        "operation",
    ] {
        assert!(
            !graph[layer].contains("fault"),
            "{layer} names the edge's fault: {:?}",
            graph[layer]
        );
    }
}

#[test]
fn the_emulators_modules_depend_on_each_other_without_a_cycle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let graph = dependencies(&root.join("emulator/src"), "super::");
    assert!(
        graph.contains_key("jobs") && graph["batches"].contains("jobs"),
        "{graph:?}"
    );
    assert_eq!(a_cycle(&graph), None);
}
