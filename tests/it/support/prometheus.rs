//! Prometheus' two texts as the tests read them: the exposition `/metrics` serves, parsed into
//! families and samples, and the metric and label names a PromQL expression (a dashboard's, an
//! alerting rule's) uses.

use std::collections::{BTreeMap, BTreeSet};

/// One sample line: `name{label="value",...} value`.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
}

/// An exposition: each family (as `# TYPE` declares it) with its kind and its samples.
#[derive(Debug, Default)]
pub struct Exposition {
    pub families: BTreeMap<String, (String, Vec<Sample>)>,
}

impl Exposition {
    /// Parses OpenMetrics text; panics on a line it cannot read, which a test should see.
    pub fn parse(text: &str) -> Exposition {
        let mut exposition = Exposition::default();
        let mut current: Option<String> = None;
        for line in text.lines() {
            if let Some(declared) = line.strip_prefix("# TYPE ") {
                let (name, kind) = declared.split_once(' ').expect("# TYPE name kind");
                exposition
                    .families
                    .insert(name.to_string(), (kind.to_string(), Vec::new()));
                current = Some(name.to_string());
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let sample = parse_sample(line);
            let family = current.as_ref().expect("a sample after its # TYPE");
            assert!(
                sample.name.starts_with(family.as_str()),
                "{line} is not of family {family}"
            );
            exposition
                .families
                .get_mut(family)
                .expect("declared")
                .1
                .push(sample);
        }
        exposition
    }

    /// Every sample name exposed (`sfbulk_requests_total`, `..._bucket`).
    pub fn sample_names(&self) -> BTreeSet<String> {
        self.samples().map(|s| s.name.clone()).collect()
    }

    /// Every label name any sample carries.
    pub fn label_names(&self) -> BTreeSet<String> {
        self.samples()
            .flat_map(|s| s.labels.iter().map(|(name, _)| name.clone()))
            .collect()
    }

    /// The samples whose name is `name`.
    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples().filter(move |s| s.name == name)
    }

    fn samples(&self) -> impl Iterator<Item = &Sample> {
        self.families.values().flat_map(|(_, samples)| samples)
    }
}

fn parse_sample(line: &str) -> Sample {
    let name_end = line
        .find(['{', ' '])
        .unwrap_or_else(|| panic!("no value: {line}"));
    let name = line[..name_end].to_string();
    let mut labels = Vec::new();
    if line[name_end..].starts_with('{') {
        let mut rest = &line[name_end + 1..];
        loop {
            if let Some(after) = rest.strip_prefix('}') {
                assert!(after.starts_with(' '), "no value: {line}");
                break;
            }
            let (label, after) = rest
                .split_once("=\"")
                .unwrap_or_else(|| panic!("a label: {line}"));
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next() {
                    Some((_, '\\')) => value.extend(chars.next().map(|(_, c)| c)),
                    Some((at, '"')) => break at,
                    Some((_, c)) => value.push(c),
                    None => panic!("an unclosed value: {line}"),
                }
            };
            labels.push((label.to_string(), value));
            rest = after[end + 1..].trim_start_matches(',');
        }
    }
    Sample { name, labels }
}

/// The metric names and label names a PromQL expression uses.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Names {
    pub metrics: BTreeSet<String>,
    pub labels: BTreeSet<String>,
}

/// Words of PromQL that name neither a metric nor a label: the aggregations (which may come
/// before their `by` clause rather than their parenthesis), clause keywords, set operators and
/// literals. Functions are told by the `(` that follows them.
const KEYWORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "atan2",
    "inf",
    "nan",
];

/// The keywords whose parenthesised list names labels.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

fn is_word_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b':'
}

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b':'
}

/// The index after the string literal opening at `at` (`"…"`, `'…'` with escapes; `` `…` ``
/// raw).
fn after_string(text: &[u8], at: usize) -> usize {
    let quote = text[at];
    let mut i = at + 1;
    while i < text.len() {
        match text[i] {
            b'\\' if quote != b'`' => i += 2,
            c if c == quote => return i + 1,
            _ => i += 1,
        }
    }
    text.len()
}

/// The index of the `close` that ends what opened just before `from`, strings skipped.
fn closing(text: &[u8], from: usize, close: u8) -> usize {
    let mut i = from;
    while i < text.len() {
        match text[i] {
            b'"' | b'\'' | b'`' => i = after_string(text, i),
            c if c == close => return i,
            _ => i += 1,
        }
    }
    panic!(
        "unclosed {} in {}",
        close as char,
        String::from_utf8_lossy(text)
    )
}

/// The words of `text` outside its string literals: the label names of a matcher list or of a
/// `by (...)` clause.
fn words_outside_strings(text: &[u8]) -> BTreeSet<String> {
    let mut words = BTreeSet::new();
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'"' | b'\'' | b'`' => i = after_string(text, i),
            c if is_word_start(c) => {
                let end = (i..text.len())
                    .find(|&j| !is_word(text[j]))
                    .unwrap_or(text.len());
                words.insert(String::from_utf8_lossy(&text[i..end]).into_owned());
                i = end;
            }
            _ => i += 1,
        }
    }
    words
}

/// The metric and label names of the PromQL `expr`. Grafana's variables (`$job`,
/// `$__rate_interval`, `${datasource}`) are skipped, and so are numbers, durations and whatever
/// a range's brackets hold; a matcher list's words are labels, and so are a `by`, `without`,
/// `on`, `ignoring` or `group_left` list's; any other word not followed by `(` nor a keyword is
/// a metric.
pub fn promql_names(expr: &str) -> Names {
    let text = expr.as_bytes();
    let mut names = Names::default();
    let mut i = 0;
    while i < text.len() {
        let c = text[i];
        match c {
            b'"' | b'\'' | b'`' => i = after_string(text, i),
            b'[' => i = closing(text, i + 1, b']') + 1,
            b'{' => {
                let end = closing(text, i + 1, b'}');
                names
                    .labels
                    .extend(words_outside_strings(&text[i + 1..end]));
                i = end + 1;
            }
            b'$' if text.get(i + 1) == Some(&b'{') => i = closing(text, i + 2, b'}') + 1,
            b'$' => {
                i += 1;
                while i < text.len() && is_word(text[i]) {
                    i += 1;
                }
            }
            // Numbers and durations: 0.99, 1e3, 0x1f, 5m, 1h30m.
            c if c.is_ascii_digit() || c == b'.' => {
                while i < text.len() && (text[i].is_ascii_alphanumeric() || text[i] == b'.') {
                    i += 1;
                }
            }
            c if is_word_start(c) => {
                let end = (i..text.len())
                    .find(|&j| !is_word(text[j]))
                    .unwrap_or(text.len());
                let word = &expr[i..end];
                let next = expr[end..].trim_start();
                let open = text.len() - next.len();
                if LABEL_LISTS.contains(&word) && next.starts_with('(') {
                    let close = closing(text, open + 1, b')');
                    names
                        .labels
                        .extend(words_outside_strings(&text[open + 1..close]));
                    i = close + 1;
                    continue;
                }
                if !KEYWORDS.contains(&word) && !next.starts_with('(') {
                    names.metrics.insert(word.to_string());
                }
                i = end;
            }
            _ => i += 1,
        }
    }
    names
}

/// The names a Grafana variable's query uses: `label_values(metric, label)` (or
/// `label_values(label)`), else PromQL.
pub fn grafana_query_names(query: &str) -> Names {
    let Some(inner) = query
        .trim()
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
    else {
        return promql_names(query);
    };
    match inner.rsplit_once(',') {
        Some((selector, label)) => {
            let mut names = promql_names(selector);
            names.labels.insert(label.trim().to_string());
            names
        }
        None => Names {
            metrics: BTreeSet::new(),
            labels: BTreeSet::from([inner.trim().to_string()]),
        },
    }
}
