//! The crates' module graphs: the proxy's layers are its folders and depend only downward, and
//! neither crate has modules that depend on each other in a loop.
//!
//! A file depends on every module its code names: each path (in a `use`, groups and nested groups
//! included, in ordinary code, or as the string of an attribute such as serde's `with`) is
//! resolved from the file as the compiler does, `crate::` from the crate root, `super::` from the
//! parent module, `self::` from the file's own module, and a bare path from the child module or
//! the `use` that gives its first name; paths outside the crate (`std::`, other crates) and local
//! names name nothing. An item that a module only imports (`pub use org::Org;`, or a private
//! `use` its children reach through `super::`) counts as the module that defines it, and a glob
//! import as the module globbed. Comments, string literals and the `#[cfg(test)] mod tests`
//! part of a file do not count; `main.rs`, a crate of its own, is left out.
//!
//! The rules: in the proxy, each folder names only itself and the folders after it in
//! [`LAYERS`] (the outbound client, the registry and the shared values know nothing of the proxy
//! above them; only `app` sees every layer; no layer below the pipeline names its `fault`); and in
//! both crates no modules depend on each other in a loop: not the folders, not the files and
//! folders inside one folder, not any two files. A parent module (a `mod.rs`, or `lib.rs` for the
//! crate root) declares its children and may use them while they use what it defines, Rust's
//! usual shape: so the dependencies of a module on its own direct children are left out when
//! looking for loops, and every other dependency counts, a child's on its parent included.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The proxy's folders from the top down; each may depend only on folders after it, and the
/// folders of one entry do not depend on each other.
const LAYERS: &[&[&str]] = &[
    &["app"],
    &["config"],
    &["edge"],
    &["exports"],
    &["loads"],
    &["pipeline"],
    &["governor"],
    &["session"],
    &["observe"],
    &["registry", "salesforce"],
    &["common"],
];

/// The crate root (`lib.rs`) in a graph.
const ROOT: &str = "crate";

/// Module (its path below the crate, `pipeline::fault`) → each module it names → where: the
/// first `file:line` naming it.
type Graph = BTreeMap<String, BTreeMap<String, String>>;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Ident,
    Punct,
    Str,
}

struct Token {
    kind: Kind,
    text: String,
    line: usize,
}

/// The code's identifiers, punctuation (`::` as one) and string literals (their text), with
/// comments, numbers, characters and lifetimes dropped.
fn tokens(code: &str) -> Vec<Token> {
    let chars: Vec<char> = code.chars().collect();
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    let starts_ident = |c: char| c.is_alphabetic() || c == '_';
    let in_ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    let mut push = |kind, text: String, line| out.push(Token { kind, text, line });
    while i < chars.len() {
        let (c, next) = (chars[i], at(i + 1));
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && next == '/' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == '*' {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    line += usize::from(chars[i] == '\n');
                    i += 1;
                }
            }
        } else if c == '"' {
            let start = line;
            let (text, end) = string(&chars, i + 1, None, &mut line);
            push(Kind::Str, text, start);
            i = end;
        } else if c == '\'' {
            if next == '\\' {
                i += 3;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if at(i + 2) == '\'' {
                i += 3;
            } else {
                // A lifetime or a label: its name follows as an identifier, naming nothing.
                i += 1;
            }
        } else if starts_ident(c) {
            let start = i;
            while i < chars.len() && in_ident(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            if (word == "r" || word == "br") && (at(i) == '"' || at(i) == '#') {
                let hashes = (i..).take_while(|&j| at(j) == '#').count();
                if at(i + hashes) == '"' {
                    let first = line;
                    let (text, end) = string(&chars, i + hashes + 1, Some(hashes), &mut line);
                    push(Kind::Str, text, first);
                    i = end;
                    continue;
                }
                if word == "r" && hashes == 1 && starts_ident(at(i + 1)) {
                    // A raw identifier, `r#type`.
                    let start = i + 1;
                    i = start;
                    while i < chars.len() && in_ident(chars[i]) {
                        i += 1;
                    }
                    push(Kind::Ident, chars[start..i].iter().collect(), line);
                    continue;
                }
            }
            if word == "b" && at(i) == '"' {
                let first = line;
                let (text, end) = string(&chars, i + 1, None, &mut line);
                push(Kind::Str, text, first);
                i = end;
                continue;
            }
            if word == "b" && at(i) == '\'' {
                continue;
            }
            push(Kind::Ident, word, line);
        } else if c.is_ascii_digit() {
            while i < chars.len() && in_ident(chars[i]) {
                i += 1;
            }
        } else if c == ':' && next == ':' {
            push(Kind::Punct, "::".to_string(), line);
            i += 2;
        } else {
            push(Kind::Punct, c.to_string(), line);
            i += 1;
        }
    }
    out
}

/// The text of a string literal whose opening quote is just before `from` (raw, closed by `"`
/// and `hashes` hashes, when `hashes` is given), and the index after it.
fn string(chars: &[char], from: usize, hashes: Option<usize>, line: &mut usize) -> (String, usize) {
    let mut i = from;
    while i < chars.len() {
        match (chars[i], hashes) {
            ('"', Some(n)) if (1..=n).all(|k| chars.get(i + k) == Some(&'#')) => {
                return (chars[from..i].iter().collect(), i + 1 + n);
            }
            ('"', None) => return (chars[from..i].iter().collect(), i + 1),
            ('\\', None) => {
                *line += usize::from(chars.get(i + 1) == Some(&'\n'));
                i += 2;
            }
            (c, _) => {
                *line += usize::from(c == '\n');
                i += 1;
            }
        }
    }
    (chars[from..].iter().collect(), chars.len())
}

/// A path the code names, in the module (the file's, or an inline `mod` in it) where it appears.
struct Named {
    scope: Vec<String>,
    path: Vec<String>,
    line: usize,
    /// For a `use`: the name it binds (`None` for `_` and globs), and whether it is a glob.
    binds: Option<String>,
    glob: bool,
    is_use: bool,
}

/// What one file's code names, and the inline modules and items it declares.
#[derive(Default)]
struct Scan {
    named: Vec<Named>,
    inline: Vec<Vec<String>>,
    defined: Vec<(Vec<String>, String)>,
}

/// The paths of one `use` tree starting at `i` below `prefix`; the index after the tree.
fn use_tree(
    t: &[Token],
    mut i: usize,
    mut path: Vec<String>,
    scope: &[String],
    out: &mut Vec<Named>,
) -> usize {
    let is = |i: usize, text: &str| t.get(i).is_some_and(|tok| tok.text == text);
    if is(i, "::") {
        if path.is_empty() {
            // `::name`: another crate.
            path.push("::".to_string());
        }
        i += 1;
    }
    let leaf = |path: Vec<String>, binds, glob, line| Named {
        scope: scope.to_vec(),
        path,
        line,
        binds,
        glob,
        is_use: true,
    };
    loop {
        match t.get(i) {
            Some(tok) if tok.kind == Kind::Ident => {
                path.push(tok.text.clone());
                let line = tok.line;
                i += 1;
                if is(i, "::") {
                    i += 1;
                    continue;
                }
                if path.last().is_some_and(|last| last == "self") {
                    path.pop();
                }
                let mut binds = path.last().cloned();
                if is(i, "as") {
                    binds = t.get(i + 1).map(|t| t.text.clone()).filter(|b| b != "_");
                    i += 2;
                }
                out.push(leaf(path, binds, false, line));
                return i;
            }
            Some(tok) if tok.text == "*" => {
                out.push(leaf(path, None, true, tok.line));
                return i + 1;
            }
            Some(tok) if tok.text == "{" => {
                i += 1;
                while t.get(i).is_some_and(|tok| tok.text != "}") {
                    let before = i;
                    i = use_tree(t, i, path.clone(), scope, out);
                    if is(i, ",") || i == before {
                        i += 1;
                    }
                }
                return i + 1;
            }
            _ => return i,
        }
    }
}

/// Whether `text` is a path of two names or more (`crate::common::setting::millis`).
fn path_in(text: &str) -> Option<Vec<String>> {
    let parts: Vec<String> = text.split("::").map(str::to_string).collect();
    let name = |p: &String| {
        p.chars()
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_')
            && p.chars().all(|c| c.is_alphanumeric() || c == '_')
    };
    (parts.len() > 1 && parts.iter().all(name)).then_some(parts)
}

/// The paths the code of the file of `module` names.
fn scan(code: &str, module: &[String]) -> Scan {
    let t = tokens(code);
    let is = |i: usize, text: &str| t.get(i).is_some_and(|tok| tok.text == text);
    let ident = |i: usize| t.get(i).is_some_and(|tok| tok.kind == Kind::Ident);
    let mut found = Scan::default();
    let mut scope = module.to_vec();
    // The brace depth inside each inline module we are in, and the bracket depth an attribute
    // opened at.
    let mut inline_at: Vec<usize> = Vec::new();
    let (mut braces, mut brackets) = (0usize, 0usize);
    let mut attribute: Option<usize> = None;
    let mut i = 0;
    while i < t.len() {
        let tok = &t[i];
        match (tok.kind, tok.text.as_str()) {
            (Kind::Ident, "use") => {
                i = use_tree(&t, i + 1, Vec::new(), &scope, &mut found.named);
                while i < t.len() && !is(i, ";") {
                    i += 1;
                }
            }
            (Kind::Ident, "mod") if ident(i + 1) && is(i + 2, "{") => {
                scope.push(t[i + 1].text.clone());
                found.inline.push(scope.clone());
                inline_at.push(braces + 1);
                i += 1;
            }
            (
                Kind::Ident,
                "fn" | "struct" | "enum" | "union" | "trait" | "type" | "const" | "static",
            ) if ident(i + 1) => {
                // The name is left to the next turn: `const fn name` defines `name`.
                found.defined.push((scope.clone(), t[i + 1].text.clone()));
            }
            (Kind::Ident, "macro_rules") if is(i + 1, "!") && ident(i + 2) => {
                found.defined.push((scope.clone(), t[i + 2].text.clone()));
                i += 2;
            }
            (Kind::Ident, _) => {
                // A path: names joined by `::`; one after `::` (`::std`, `<T>::new`) is not
                // the crate's.
                let outside = i > 0 && is(i - 1, "::");
                let mut path = vec![tok.text.clone()];
                while is(i + 1, "::") && ident(i + 2) {
                    path.push(t[i + 2].text.clone());
                    i += 2;
                }
                if path.len() > 1 && !outside {
                    found.named.push(Named {
                        scope: scope.clone(),
                        path,
                        line: tok.line,
                        binds: None,
                        glob: false,
                        is_use: false,
                    });
                }
            }
            (Kind::Punct, "{") => braces += 1,
            (Kind::Punct, "}") => {
                if inline_at.last() == Some(&braces) {
                    inline_at.pop();
                    scope.pop();
                }
                braces = braces.saturating_sub(1);
            }
            (Kind::Punct, "#") if is(i + 1, "[") || (is(i + 1, "!") && is(i + 2, "[")) => {
                attribute = Some(brackets);
            }
            (Kind::Punct, "[") => brackets += 1,
            (Kind::Punct, "]") => {
                brackets = brackets.saturating_sub(1);
                if attribute == Some(brackets) {
                    attribute = None;
                }
            }
            (Kind::Str, text) if attribute.is_some() => {
                // `#[serde(with = "crate::common::setting::millis")]` names a module.
                if let Some(path) = path_in(text) {
                    found.named.push(Named {
                        scope: scope.clone(),
                        path,
                        line: tok.line,
                        binds: None,
                        glob: false,
                        is_use: false,
                    });
                }
            }
            _ => {}
        }
        i += 1;
    }
    found
}

/// A crate's modules and the names its `use` declarations bring into each, to resolve paths.
#[derive(Default)]
struct Modules {
    /// The modules that are files (the crate root, `lib.rs`, is `[]`).
    files: BTreeSet<Vec<String>>,
    /// Those and the inline modules in them.
    all: BTreeSet<Vec<String>>,
    /// Module → name a `use` in it binds → that `use`'s path.
    imports: BTreeMap<Vec<String>, BTreeMap<String, Vec<String>>>,
    /// Module → the paths it imports with a glob.
    globs: BTreeMap<Vec<String>, Vec<Vec<String>>>,
    /// Module → the items it defines.
    defined: BTreeMap<Vec<String>, BTreeSet<String>>,
}

impl Modules {
    /// The module `path`, named by code in `scope`, refers to: the deepest module along it, or
    /// for an item a module imports, the module the import leads to. `None` for a path outside
    /// the crate (`std::`, another crate's) or a local name (`Self::new`, `Kind::Str`).
    fn resolve(&self, scope: &[String], path: &[String], hops: usize) -> Option<Vec<String>> {
        if hops > 16 || path.is_empty() {
            return None;
        }
        let (mut module, rest) = match path[0].as_str() {
            "crate" => (Vec::new(), &path[1..]),
            "self" => (scope.to_vec(), &path[1..]),
            "super" => {
                let ups = path.iter().take_while(|p| *p == "super").count();
                let kept = scope.len().checked_sub(ups)?;
                (scope[..kept].to_vec(), &path[ups..])
            }
            first => {
                if self.all.contains(&[scope, &[first.to_string()]].concat()) {
                    (scope.to_vec(), path)
                } else {
                    let import = self.imports.get(scope)?.get(first)?;
                    return self.resolve(scope, &[import, &path[1..]].concat(), hops + 1);
                }
            }
        };
        for (at, name) in rest.iter().enumerate() {
            let child = [module.as_slice(), std::slice::from_ref(name)].concat();
            if self.all.contains(&child) {
                module = child;
                continue;
            }
            // `name` is an item of `module`: defined there, or imported into it from elsewhere.
            let beyond = &rest[at + 1..];
            if let Some(import) = self.imports.get(&module).and_then(|i| i.get(name)) {
                let path = [import.as_slice(), beyond].concat();
                // An item of another crate that the module re-exports stays the module's.
                return self.resolve(&module, &path, hops + 1).or(Some(module));
            }
            let defined = self.defined.get(&module).is_some_and(|d| d.contains(name));
            if !defined {
                for glob in self.globs.get(&module).into_iter().flatten() {
                    let Some(target) = self.resolve(&module, glob, hops + 1) else {
                        continue;
                    };
                    if self.has(&target, name) {
                        let path =
                            [&["crate".to_string()], target.as_slice(), &rest[at..]].concat();
                        return self.resolve(&[], &path, hops + 1);
                    }
                }
            }
            break;
        }
        Some(module)
    }

    /// Whether `module` has something called `name`: a child, an item, an import.
    fn has(&self, module: &[String], name: &str) -> bool {
        self.all.contains(&[module, &[name.to_string()]].concat())
            || self.defined.get(module).is_some_and(|d| d.contains(name))
            || self
                .imports
                .get(module)
                .is_some_and(|i| i.contains_key(name))
    }

    /// The file `module` is in: itself, or the file holding the inline module.
    fn file_of(&self, module: &[String]) -> Vec<String> {
        (0..=module.len())
            .rev()
            .map(|n| module[..n].to_vec())
            .find(|m| self.files.contains(m))
            .unwrap_or_default()
    }
}

/// `a::b`, or [`ROOT`] for the crate root.
fn name_of(module: &[String]) -> String {
    if module.is_empty() {
        ROOT.to_string()
    } else {
        module.join("::")
    }
}

/// `src/a/b.rs` → `[a, b]`; `src/a/mod.rs` → `[a]`; `src/lib.rs` → `[]`, for `root` `src`.
fn module_of(root: &str, file: &str) -> Option<Vec<String>> {
    let relative = file.strip_prefix(root)?.trim_start_matches('/');
    let mut parts: Vec<String> = relative
        .trim_end_matches(".rs")
        .split('/')
        .map(str::to_string)
        .collect();
    if parts == ["lib"] || parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    Some(parts)
}

/// The graph between the files of the crate whose sources are `files` (`(path, code)`, the paths
/// below `root`); the crate's `main.rs` is left out.
fn dependencies(root: &str, files: &[(String, String)]) -> Graph {
    let mut modules = Modules::default();
    modules.files.insert(Vec::new());
    let mut scans = Vec::new();
    for (file, code) in files {
        let Some(module) = module_of(root, file).filter(|m| *m != ["main"]) else {
            continue;
        };
        let found = scan(code, &module);
        modules.files.insert(module.clone());
        modules.all.extend(found.inline.iter().cloned());
        for (scope, item) in &found.defined {
            modules
                .defined
                .entry(scope.clone())
                .or_default()
                .insert(item.clone());
        }
        for named in found.named.iter().filter(|n| n.is_use) {
            if named.glob {
                modules
                    .globs
                    .entry(named.scope.clone())
                    .or_default()
                    .push(named.path.clone());
            } else if let Some(binds) = &named.binds {
                let imports = modules.imports.entry(named.scope.clone()).or_default();
                imports
                    .entry(binds.clone())
                    .or_insert_with(|| named.path.clone());
            }
        }
        scans.push((file, module, found));
    }
    // A folder is a module even before its `mod.rs` is written.
    let folders: Vec<Vec<String>> = modules
        .files
        .iter()
        .flat_map(|m| (0..m.len()).map(|n| m[..n].to_vec()))
        .collect();
    modules.files.extend(folders);
    modules.all.extend(modules.files.iter().cloned());
    let mut graph = Graph::new();
    for (file, module, found) in scans {
        let edges = graph.entry(name_of(&module)).or_default();
        for named in found.named {
            let Some(target) = modules.resolve(&named.scope, &named.path, 0) else {
                continue;
            };
            let target = modules.file_of(&target);
            if target != module {
                let at = format!("{file}:{}", named.line);
                edges.entry(name_of(&target)).or_insert(at);
            }
        }
    }
    graph
}

/// The graph of the crate whose sources are in `root` (`src`, `emulator/src`).
fn crate_graph(root: &str) -> Graph {
    let repository = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<(String, String)> =
        crate::support::sources::rust_files(&repository.join(root))
            .into_iter()
            .map(|(path, code)| {
                let shown = path.strip_prefix(repository).unwrap().to_string_lossy();
                (shown.replace('\\', "/"), code)
            })
            .collect();
    files.sort();
    dependencies(root, &files)
}

/// The graph between the modules' first `depth` path parts (their folders, at 1).
fn at_depth(graph: &Graph, depth: usize) -> Graph {
    let cut = |m: &str| m.split("::").take(depth).collect::<Vec<_>>().join("::");
    let mut folded = Graph::new();
    for (module, named) in graph {
        let from = cut(module);
        let edges = folded.entry(from.clone()).or_default();
        for (to, at) in named {
            let to = cut(to);
            if to != from {
                edges.entry(to).or_insert_with(|| at.clone());
            }
        }
    }
    folded
}

/// `graph` without each module's dependencies on its own direct children.
fn without_children(graph: &Graph) -> Graph {
    let parent = |m: &str| m.rsplit_once("::").map_or(ROOT, |(p, _)| p).to_string();
    graph
        .iter()
        .map(|(from, named)| {
            let kept = named
                .iter()
                .filter(|(to, _)| parent(to) != *from)
                .map(|(to, at)| (to.clone(), at.clone()))
                .collect();
            (from.clone(), kept)
        })
        .collect()
}

/// The loops of `graph`: each group of modules that depend on each other (a strongly connected
/// component of more than one), as the dependencies inside it and where they are named.
fn loops(graph: &Graph) -> Vec<String> {
    struct Walk<'g> {
        graph: &'g Graph,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        groups: Vec<BTreeSet<&'g str>>,
    }
    impl<'g> Walk<'g> {
        fn visit(&mut self, module: &'g str) {
            let index = self.index.len();
            self.index.insert(module, index);
            self.low.insert(module, index);
            self.stack.push(module);
            let graph = self.graph;
            for next in graph.get(module).into_iter().flat_map(|n| n.keys()) {
                if !self.index.contains_key(next.as_str()) {
                    self.visit(next);
                    let low = self.low[module].min(self.low[next.as_str()]);
                    self.low.insert(module, low);
                } else if self.stack.contains(&next.as_str()) {
                    let low = self.low[module].min(self.index[next.as_str()]);
                    self.low.insert(module, low);
                }
            }
            if self.low[module] == index {
                let at = self.stack.iter().rposition(|m| *m == module).unwrap();
                let group: BTreeSet<&str> = self.stack.drain(at..).collect();
                if group.len() > 1 {
                    self.groups.push(group);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        groups: Vec::new(),
    };
    for module in graph.keys() {
        if !walk.index.contains_key(module.as_str()) {
            walk.visit(module);
        }
    }
    let mut found: Vec<String> = walk
        .groups
        .iter()
        .map(|group| {
            let inside: Vec<String> = group
                .iter()
                .flat_map(|from| {
                    graph[*from]
                        .iter()
                        .filter(|(to, _)| group.contains(to.as_str()))
                        .map(move |(to, at)| format!("{from} -> {to} ({at})"))
                })
                .collect();
            let modules: Vec<&str> = group.iter().copied().collect();
            format!("{{{}}}:\n    {}", modules.join(", "), inside.join("\n    "))
        })
        .collect();
    found.sort();
    found
}

/// Every loop between modules, at every depth (folders, the files and folders inside them, …),
/// once, at the shallowest depth it shows; a module's dependencies on its own children do not
/// count.
fn every_loop(graph: &Graph) -> Vec<String> {
    let graph = without_children(graph);
    let deepest = graph
        .keys()
        .map(|m| m.split("::").count())
        .max()
        .unwrap_or(1);
    let mut seen = BTreeSet::new();
    let mut found = Vec::new();
    for depth in 1..=deepest {
        for group in loops(&at_depth(&graph, depth)) {
            if seen.insert(group.clone()) {
                found.push(format!("a loop at depth {depth}, among {group}"));
            }
        }
    }
    found
}

/// Where `folder` is in [`LAYERS`], from 0 at the top.
fn layer(folder: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&folder))
}

/// Every dependency of `folders` (the graph between folders) that runs sideways or up
/// [`LAYERS`], as `from -> to (where)`. The crate root is above every layer.
fn upward(folders: &Graph) -> Vec<String> {
    let rank = |folder: &str| match folder {
        ROOT => Some(0),
        _ => layer(folder).map(|l| l + 1),
    };
    let mut wrong = Vec::new();
    for (from, named) in folders {
        for (to, at) in named {
            match (rank(from), rank(to)) {
                (Some(a), Some(b)) if a < b => {}
                _ => wrong.push(format!("{from} -> {to} ({at})")),
            }
        }
    }
    wrong
}

#[test]
fn the_proxys_folders_are_its_layers_and_depend_only_downward_without_a_loop() {
    let graph = crate_graph("src");
    assert!(graph.len() > 40, "the modules were found: {graph:?}");
    assert!(
        graph["session"].contains_key("session::refresh")
            && graph["edge::settings"].contains_key("common::setting"),
        "bare child paths and attribute paths count: {graph:#?}"
    );
    let folders = at_depth(&without_children(&graph), 1);
    let listed: BTreeSet<&str> = LAYERS.iter().flat_map(|l| l.iter().copied()).collect();
    let found: BTreeSet<&str> = folders
        .keys()
        .map(String::as_str)
        .filter(|f| *f != ROOT)
        .collect();
    let mut wrong: Vec<String> = found
        .symmetric_difference(&listed)
        .map(|folder| format!("{folder} is a folder or a layer, not both"))
        .collect();
    wrong.extend(upward(&folders));
    wrong.extend(every_loop(&graph));
    // Below the pipeline, each layer reports errors of its own; only the pipeline's fault
    // table turns them into answers.
    for (module, named) in &graph {
        let folder = module.split("::").next().unwrap();
        let below = layer(folder).is_none_or(|l| l > layer("pipeline").unwrap());
        if let Some(at) = named.get("pipeline::fault").filter(|_| below) {
            wrong.push(format!("{module} names the pipeline's fault ({at})"));
        }
    }
    assert!(
        wrong.is_empty(),
        "dependencies up the layers or in a loop:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_emulators_modules_depend_on_each_other_without_a_loop() {
    let graph = crate_graph("emulator/src");
    assert!(
        graph["batches"].contains_key("jobs")
            && graph["v2::ingest"].contains_key("v2::lifecycle")
            && graph["v2::ingest"].contains_key("org"),
        "{graph:#?}"
    );
    let wrong = every_loop(&graph);
    assert!(
        wrong.is_empty(),
        "modules that depend on each other:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn a_dependency_up_the_layers_is_found() {
    // The check itself can fail: the outbound client naming the pipeline is caught.
    let at = |s: &str| s.to_string();
    let folders = Graph::from([
        (
            at("salesforce"),
            BTreeMap::from([(at("pipeline"), at("a.rs:1")), (at("common"), at("a.rs:2"))]),
        ),
        (
            at("pipeline"),
            BTreeMap::from([(at("salesforce"), at("b.rs:1"))]),
        ),
    ]);
    assert_eq!(upward(&folders), ["salesforce -> pipeline (a.rs:1)"]);
    assert_eq!(
        every_loop(&folders),
        [concat!(
            "a loop at depth 1, among {pipeline, salesforce}:\n",
            "    pipeline -> salesforce (b.rs:1)\n",
            "    salesforce -> pipeline (a.rs:1)"
        )]
    );
}

/// The graph of a crate of in-memory files, `(path below src/, code)`.
fn graph_of(files: &[(&str, &str)]) -> Graph {
    let files: Vec<(String, String)> = files
        .iter()
        .map(|(path, code)| (format!("src/{path}"), code.to_string()))
        .collect();
    dependencies("src", &files)
}

#[test]
fn a_path_up_through_super_super_is_a_dependency_up_the_layers() {
    let graph = graph_of(&[
        ("lib.rs", "pub mod edge;\npub mod salesforce;\n"),
        ("edge/mod.rs", "pub mod routes;\n"),
        ("edge/routes.rs", "pub fn route() {}\n"),
        ("salesforce/mod.rs", "mod client;\n"),
        (
            "salesforce/client.rs",
            "fn call() {\n    super::super::edge::routes::route();\n}\n",
        ),
    ]);
    assert_eq!(
        graph["salesforce::client"],
        BTreeMap::from([(
            "edge::routes".to_string(),
            "src/salesforce/client.rs:2".to_string()
        )])
    );
    assert_eq!(
        upward(&at_depth(&without_children(&graph), 1)),
        ["salesforce -> edge (src/salesforce/client.rs:2)"]
    );
}

#[test]
fn every_path_of_a_use_group_is_a_dependency_even_nested_across_lines() {
    let graph = graph_of(&[
        ("a/mod.rs", "pub mod b;\n"),
        ("a/b.rs", "pub struct B;\n"),
        ("c.rs", ""),
        ("e/mod.rs", "pub mod f;\n"),
        ("e/f.rs", "pub struct F;\n"),
        (
            "d.rs",
            "use crate::{\n    a::{self, b::B},\n    c,\n};\npub(crate) use crate::e::{f::F as G};\n",
        ),
        ("g.rs", "use crate::{a::b, c};\n"),
    ]);
    let at = |to: &str, at: &str| (to.to_string(), at.to_string());
    assert_eq!(
        graph["d"],
        BTreeMap::from([
            at("a", "src/d.rs:2"),
            at("a::b", "src/d.rs:2"),
            at("c", "src/d.rs:3"),
            at("e::f", "src/d.rs:5"),
        ])
    );
    assert_eq!(
        graph["g"],
        BTreeMap::from([at("a::b", "src/g.rs:1"), at("c", "src/g.rs:1")])
    );
}

#[test]
fn paths_in_code_count_and_comments_and_strings_do_not() {
    let graph = graph_of(&[
        (
            "session/mod.rs",
            concat!(
                "mod refresh;\nmod store;\n",
                "// crate::edge::x in a comment\n",
                "const NOT_A_PATH: &str = \"crate::edge::x\";\n",
                "fn f() {\n",
                "    refresh::Refresh::new();\n",
                "    self::store::open();\n",
                "    crate::common::request_id::current_request_id();\n",
                "}\n",
                "#[serde(with = \"crate::common::millis\")]\n",
                "struct S;\n",
                "mod inner {\n    fn g() { super::super::common::hex::encode(); }\n}\n",
            ),
        ),
        ("session/refresh.rs", ""),
        ("session/store.rs", ""),
        ("edge/x.rs", ""),
        ("common/request_id.rs", ""),
        ("common/millis.rs", ""),
        ("common/hex.rs", ""),
    ]);
    let named: Vec<&str> = graph["session"].keys().map(String::as_str).collect();
    assert_eq!(
        named,
        [
            "common::hex",
            "common::millis",
            "common::request_id",
            "session::refresh",
            "session::store"
        ]
    );
}

#[test]
fn a_reexported_item_is_a_dependency_on_the_module_that_defines_it() {
    let graph = graph_of(&[
        ("lib.rs", "mod org;\nmod v2;\nmod s;\npub use org::Org;\n"),
        ("org.rs", "pub struct Org;\n"),
        ("v2/mod.rs", "mod ingest;\nuse crate::Org;\n"),
        ("v2/ingest.rs", "fn f(org: &super::super::Org) {}\n"),
        (
            "s/mod.rs",
            "mod a;\nmod b;\npub(crate) use a::{A, B as C};\n",
        ),
        ("s/a.rs", "pub struct A;\npub struct B;\n"),
        ("s/b.rs", "use super::C;\n"),
    ]);
    let named = |m: &str| graph[m].keys().cloned().collect::<Vec<_>>();
    assert_eq!(named("v2"), ["org"]);
    assert_eq!(named("v2::ingest"), ["org"]);
    assert_eq!(named("s::b"), ["s::a"]);
}

#[test]
fn a_loop_between_sibling_files_is_found_even_through_their_folders_reexport() {
    let graph = graph_of(&[
        ("f/mod.rs", "mod a;\nmod b;\npub use a::A;\n"),
        ("f/a.rs", "pub struct A;\nfn g() { super::b::h(); }\n"),
        ("f/b.rs", "use super::A;\npub fn h() {}\n"),
    ]);
    assert_eq!(
        every_loop(&graph),
        [concat!(
            "a loop at depth 2, among {f::a, f::b}:\n",
            "    f::a -> f::b (src/f/a.rs:2)\n",
            "    f::b -> f::a (src/f/b.rs:1)"
        )]
    );
}

#[test]
fn a_folder_and_its_own_files_may_name_each_other() {
    let graph = graph_of(&[
        ("f/mod.rs", "mod a;\npub use a::A;\npub struct P;\n"),
        ("f/a.rs", "use super::P;\npub struct A;\n"),
    ]);
    assert!(graph["f"].contains_key("f::a") && graph["f::a"].contains_key("f"));
    assert_eq!(every_loop(&graph), Vec::<String>::new());
}
