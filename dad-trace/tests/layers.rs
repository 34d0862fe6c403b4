//! The layout's rules, checked on the sources (README, Layout): dependencies between the
//! stages point one way, and no two modules import each other, directly or in a ring.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// What each top-level module may use (besides itself). Leaves use nothing.
const ALLOWED: &[(&str, &[&str])] = &[
    ("error", &[]),
    ("files", &[]),
    ("hist", &[]),
    ("text", &[]),
    ("kernel", &["error"]),
    ("node", &["error", "files", "kernel", "text"]),
    ("session", &["files", "kernel"]),
    (
        "record",
        &["error", "files", "hist", "kernel", "node", "session", "text"],
    ),
    (
        "output",
        &["error", "files", "hist", "kernel", "node", "record", "session", "text"],
    ),
    (
        "tracer",
        &[
            "error", "files", "hist", "kernel", "node", "output", "record", "session", "text",
        ],
    ),
    ("report", &["error", "files", "hist", "session", "text"]),
    (
        "scenario",
        &[
            "error", "files", "hist", "kernel", "node", "output", "record", "report", "session", "text", "tracer",
        ],
    ),
    (
        "cli",
        &[
            "error", "files", "hist", "kernel", "node", "output", "record", "report", "scenario", "session", "text",
            "tracer",
        ],
    ),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every source file with its module path (`record::enrich::namespaces`).
fn modules() -> BTreeMap<String, String> {
    fn walk(dir: &Path, prefix: &[String], out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).expect("src readable").flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                let mut inner = prefix.to_vec();
                inner.push(name);
                walk(&path, &inner, out);
            } else if let Some(stem) = name.strip_suffix(".rs") {
                let mut module = prefix.to_vec();
                if !matches!(stem, "mod" | "lib" | "main") {
                    module.push(stem.to_string());
                }
                let text = std::fs::read_to_string(&path).expect("source readable");
                // Test modules may reach anywhere: they are not the layout.
                let code = text.split("#[cfg(test)]").next().unwrap_or_default().to_string();
                out.insert(module.join("::"), code);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&src(), &[], &mut out);
    out
}

/// The paths a `use` tree names, braces expanded: `crate::{a, b::{c, d}}` → `crate::a`, ...
fn expand(tree: &str) -> Vec<String> {
    let tree: String = tree.split_whitespace().collect();
    let Some(open) = tree.find('{') else {
        return vec![tree];
    };
    let prefix = &tree[..open];
    let close = tree.rfind('}').filter(|close| *close > open).unwrap_or(tree.len());
    let inner = &tree[open + 1..close];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|part| !part.is_empty())
        .flat_map(|part| expand(&format!("{prefix}{part}")))
        .collect()
}

/// The module (among `known`) a path in `module` refers to, resolving `crate`, `super`, `self`.
fn resolve(module: &str, path: &str, known: &BTreeMap<String, String>) -> Option<String> {
    let mut base: Vec<&str> = if module.is_empty() {
        Vec::new()
    } else {
        module.split("::").collect()
    };
    let mut segments = path.split("::").peekable();
    match segments.peek().copied() {
        Some("crate") => {
            base.clear();
            segments.next();
        }
        Some("super") => {
            while segments.peek() == Some(&"super") {
                segments.next();
                base.pop();
            }
        }
        Some("self") => {
            segments.next();
        }
        _ => return None,
    }
    let mut found = None;
    let mut candidate = base.iter().map(ToString::to_string).collect::<Vec<_>>();
    for segment in segments {
        candidate.push(segment.trim_start_matches('{').to_string());
        let name = candidate.join("::");
        if known.contains_key(&name) {
            found = Some(name);
        }
    }
    found
}

/// Where the next `use` statement's tree starts (after `use `, at the start of a line).
fn find_use(code: &str) -> Option<usize> {
    let mut offset = 0;
    for line in code.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        for prefix in ["use ", "pub use ", "pub(crate) use ", "pub(super) use "] {
            if trimmed.starts_with(prefix) {
                return Some(offset + indent + prefix.len());
            }
        }
        offset += line.len();
    }
    None
}

/// File-level edges: module → modules it uses.
fn edges() -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules();
    let mut edges = BTreeMap::new();
    for (module, code) in &modules {
        let mut targets = BTreeSet::new();
        let mut paths = Vec::new();
        // Comments say anything; code is what imports.
        let code: String = code
            .lines()
            .map(|line| line.split("//").next().unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n");
        let mut rest = code.as_str();
        while let Some(start) = find_use(rest) {
            let statement = &rest[start..];
            let end = statement.find(';').unwrap_or(statement.len());
            paths.extend(expand(&statement[..end]));
            rest = &statement[end..];
        }
        for word in code.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')) {
            if word.starts_with("crate::") || word.starts_with("super::") {
                paths.push(word.trim_end_matches(':').to_string());
            }
        }
        for path in paths {
            if let Some(target) = resolve(module, &path, &modules)
                && &target != module
                && !target.is_empty()
            {
                targets.insert(target);
            }
        }
        edges.insert(module.clone(), targets);
    }
    edges
}

fn top(module: &str) -> &str {
    module.split("::").next().unwrap_or(module)
}

#[test]
fn stages_depend_one_way() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut violations = Vec::new();
    for (module, targets) in edges() {
        let from = top(&module);
        if from.is_empty() {
            continue; // lib.rs and main.rs
        }
        let rules = allowed
            .get(from)
            .unwrap_or_else(|| panic!("module {from} has no rule in ALLOWED"));
        for target in targets {
            let to = top(&target);
            if to != from && !rules.contains(&to) {
                violations.push(format!("{module} uses {target}"));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "dependencies against the layout:\n{}",
        violations.join("\n")
    );
}

#[test]
fn no_import_cycles_between_files() {
    // Depth-first search for a back edge; the cycle is printed when found.
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            // A module may use its own submodules and they their parent's items: that is
            // one file tree, not a cycle between stages. Only siblings and strangers count.
            if next.starts_with(&format!("{node}::")) || node.starts_with(&format!("{next}::")) {
                continue;
            }
            if let Some(cycle) = visit(next, edges, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let edges = edges();
    let mut done = BTreeSet::new();
    for node in edges.keys() {
        if let Some(cycle) = visit(node, &edges, &mut Vec::new(), &mut done) {
            panic!("import cycle: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn the_checker_sees_real_edges() {
    let edges = edges();
    // Known edges, so a broken parser cannot pass the rules by seeing nothing.
    for (from, to) in [
        ("record::recorder", "record::track"),
        ("record::enrich", "record::recorder"),
        ("report::html", "report::compare"),
        ("scenario::gates", "report::gate"),
        ("kernel::loader", "kernel::probes"),
    ] {
        assert!(edges[from].contains(to), "{from} -> {to} not seen: {:?}", edges[from]);
    }
    assert_eq!(
        expand("crate::{a, b::{c, d}}"),
        ["crate::a", "crate::b::c", "crate::b::d"]
    );
}
